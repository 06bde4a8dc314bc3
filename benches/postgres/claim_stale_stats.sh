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
python3 "$here/claim_query.py" "$here/../../crates/tidings-postgres/src/claims.rs" > /tmp/tidings_claim_stale.sql
psql "$url" -f /tmp/tidings_claim_stale.sql | grep -E "Execution Time"
