#!/usr/bin/env bash
# The shared bus's claim (crates/tidings-postgres/src/claims.rs, `claim_shared`)
# planned from statistics taken while every delivery was claimed (what
# autovacuum's ANALYZE records in the middle of a burst), then run once the
# deliveries of the keyed bus `px` are waiting again: the plan that made the
# PostgreSQL shared rows collapse (docs/BENCHMARKS.md section 7, session 12).
# Prints each bus's execution time (pu: no keys, px: 1 000 keys).
# Usage: benches/postgres/claim_stale_stats.sh postgres://postgres@127.0.0.1:55432/postgres
# (a scratch database: it rewrites the buses px and pu, and runs ANALYZE).
set -euo pipefail
url="$1"
here="$(cd "$(dirname "$0")" && pwd)"
grep -v '^ANALYZE' "$here/claim_setup.sql" | psql "$url" -q
psql "$url" -qAt -c "UPDATE tidings_deliveries SET queued = true WHERE bus IN ('px', 'pu')" \
    -c "ANALYZE tidings_deliveries" \
    -c "UPDATE tidings_deliveries SET queued = false WHERE bus = 'px'"
python3 - "$here/../../crates/tidings-postgres/src/claims.rs" > /tmp/tidings_claim_stale.sql <<'PY'
import sys
s = open(sys.argv[1]).read()
a = s.index('"WITH RECURSIVE heads AS (')
b = s.index('ORDER BY m.seq, m.handler",', a)
q = s[a + 1:b + len('ORDER BY m.seq, m.handler')]
print("SET plan_cache_mode = force_generic_plan;")
print("PREPARE q(text, int8, uuid, int8, text[], text[]) AS")
print(q + ";")
for bus in ("pu", "px"):
    print("BEGIN;")
    print("EXPLAIN (ANALYZE, COSTS OFF) EXECUTE q('%s', 256, "
          "'00000000-0000-0000-0000-000000000001', 7, ARRAY['h'], ARRAY['activity_log']);" % bus)
    print("ROLLBACK;")
PY
psql "$url" -f /tmp/tidings_claim_stale.sql | grep -E "Execution Time"
