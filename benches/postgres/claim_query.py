"""Prints psql input that plans the shared bus's claim (the query of
crates/tidings-postgres/src/claims.rs, `claim_shared`) as a generic plan, as
the store's connections plan it, and runs EXPLAIN ANALYZE of it for the buses
pu (no keys) and px (1 000 keys) of claim_setup.sql, each in a rolled-back
transaction. Used by claim_plans.sh and claim_stale_stats.sh."""
import sys

s = open(sys.argv[1]).read()
a = s.index('"WITH RECURSIVE heads AS (')
b = s.index('ORDER BY m.seq, m.handler";', a)
q = s[a + 1:b + len('ORDER BY m.seq, m.handler')]
print("SET plan_cache_mode = force_generic_plan;")
# As the claimer's connection plans (`plan_for_claims` in claims.rs).
print("SET enable_sort = off;")
print("SET jit = off;")
print("PREPARE q(text, int8, uuid, int8, text[], text[]) AS")
print(q + ";")
for bus in ("pu", "px"):
    print("BEGIN;")
    print("EXPLAIN (ANALYZE, COSTS OFF) EXECUTE q('%s', 256, "
          "'00000000-0000-0000-0000-000000000001', 7, ARRAY['h'], ARRAY['activity_log']);" % bus)
    print("ROLLBACK;")
