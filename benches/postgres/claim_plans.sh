#!/usr/bin/env bash
# EXPLAIN ANALYZE of the shared bus's claim (the query in
# crates/tidings-postgres/src/claims.rs, `claim_shared`) on the data of
# claim_setup.sql, as a generic plan (as the store's connections plan it).
# Usage: benches/postgres/claim_plans.sh postgres://postgres@127.0.0.1:5432/test
set -euo pipefail
url="$1"
here="$(cd "$(dirname "$0")" && pwd)"
psql "$url" -q -f "$here/claim_setup.sql"
python3 "$here/claim_query.py" "$here/../../crates/tidings-postgres/src/claims.rs" > /tmp/tidings_claim_plan.sql
psql "$url" -f /tmp/tidings_claim_plan.sql | grep -E "Execution Time"
