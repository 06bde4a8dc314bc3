#!/usr/bin/env bash
# EXPLAIN ANALYZE of the shared bus's claim (the query in
# crates/tidings-postgres/src/claims.rs, `claim_shared`) on the data of
# claim_setup.sql, as a generic plan (as the store's connections plan it).
# Usage: benches/postgres/claim_plans.sh postgres://postgres@127.0.0.1:5432/test
set -euo pipefail
url="$1"
here="$(cd "$(dirname "$0")" && pwd)"
psql "$url" -q -f "$here/claim_setup.sql"
python3 - "$here/../../crates/tidings-postgres/src/claims.rs" > /tmp/tidings_claim_plan.sql <<'PY'
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
psql "$url" -f /tmp/tidings_claim_plan.sql | grep -E "Execution Time"
