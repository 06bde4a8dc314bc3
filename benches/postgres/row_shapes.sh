#!/usr/bin/env bash
# What a row per delivery costs at the SQL level, without the bus: two
# pgbench clients, each transaction either inserting 500 events or taking the
# oldest 500 and deleting them, for 15 s, in these shapes, run in turn:
#   two: the `connect` store's shape — an event row and a delivery row each
#        (tables and indexes as crates/tidings-postgres/src/schema.rs makes
#        them), the delivery deleted and then its event;
#   one: one row per event (its pending handlers in an array column), deleted
#        once: the raw ceiling's shape;
#   inline: one row per event in the deliveries table (the event's columns
#        in its delivery row, no event row): how a `connect` bus could write
#        an event with one handler;
#   shared: the shared store's shape — as `two`, the deliveries written
#        unclaimed, then claimed (an UPDATE of queued, owner and fence, by
#        the client's own instance id) and deleted with their events;
#   shared_inline: a shared bus writing an event with one handler in its
#        delivery's row (as `inline`), claimed by an UPDATE (as `shared`)
#        and deleted;
#   shared_held, shared_hot, inline_hot: claims that stay held, as a bus's
#        in-flight deliveries do: each take deletes (by row address) what
#        the client claimed at its previous take, then claims 500 anew, so
#        the other client's claims walk past 500 claimed rows. `shared_held`
#        claims as today; `shared_hot` (two rows) and `inline_hot` (one
#        row) with a claim that writes only columns no index names, in a
#        table kept half empty (fillfactor 50), so that PostgreSQL updates
#        the row in place (a heap-only tuple: no index entry written);
#   locked: the claim that writes nothing — one row per event, the oldest
#        500 locked by a transaction that stays open 2 ms, then deleted in it.
# Each shape takes the oldest through an index on (bus, seq), as the raw
# ceiling does, and deletes what it took by primary key or row address.
# Prints rows handled per second for each (docs/BENCHMARKS.md section 7,
# sessions 14, 18 and 19). Usage: benches/postgres/row_shapes.sh URL ROUNDS,
# where URL is a scratch server's maintenance database (it makes and drops
# database `shape`; KEEP=1 keeps it). SHAPES="a b" runs only those. Run with
# the bus's planner settings, as docs/BENCHMARKS.md does:
#   PGOPTIONS="-c enable_sort=off -c enable_seqscan=off -c enable_bitmapscan=off -c jit=off"
# (without them the planner, misled by the churning tables' statistics,
# takes a bitmap scan that reads every dead index entry of the held shapes).
set -euo pipefail
url="$1"
rounds="${2:-2}"
pgbench="$(pg_config --bindir)/pgbench"
shape="${url%/*}/shape"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
psql -q "$url" -c "DROP DATABASE IF EXISTS shape" -c "CREATE DATABASE shape"
psql -q "$shape" <<'SQL'
CREATE TABLE e (id uuid PRIMARY KEY, seq bigserial NOT NULL, bus text NOT NULL,
  event_type text NOT NULL, key text, emitted_at_ns bigint NOT NULL, data text NOT NULL, pending text[]);
CREATE INDEX e_bus_seq ON e (bus, seq);
CREATE TABLE d (event_id uuid NOT NULL, handler text NOT NULL, attempt int NOT NULL,
  queued boolean NOT NULL DEFAULT true, owner uuid, begun int NOT NULL DEFAULT 0,
  fence bigint NOT NULL DEFAULT 0, bus text, seq bigint, key text,
  event_type text, emitted_at_ns bigint, data text, PRIMARY KEY (event_id, handler));
CREATE SEQUENCE d_seq;
-- Only for the harness's take of the inline shape (the store would delete by
-- primary key, as it does now): the same kind of index as `one`'s e_bus_seq.
CREATE INDEX d_inline ON d (bus, seq) WHERE data IS NOT NULL;
CREATE INDEX d_unqueued ON d (event_id) WHERE NOT queued;
CREATE INDEX d_owner ON d (owner) WHERE owner IS NOT NULL;
CREATE INDEX d_unkeyed ON d (bus, seq) WHERE NOT queued AND key IS NULL;
CREATE INDEX d_key_order ON d (bus, handler, key, seq) WHERE key IS NOT NULL;
-- The `*_hot` shapes' deliveries: a claim writes only columns no index
-- names (owner, fence), so that PostgreSQL updates the row in place (a
-- heap-only tuple: no index entry written); pages kept half empty for it.
CREATE TABLE h (event_id uuid NOT NULL, handler text NOT NULL, attempt int NOT NULL,
  owner uuid, begun int NOT NULL DEFAULT 0, fence bigint NOT NULL DEFAULT 0,
  bus text, seq bigint, key text, event_type text, emitted_at_ns bigint, data text,
  PRIMARY KEY (event_id, handler)) WITH (fillfactor = 50);
CREATE INDEX h_unkeyed ON h (bus, seq) WHERE key IS NULL;
CREATE INDEX h_key_order ON h (bus, handler, key, seq) WHERE key IS NOT NULL;
SQL
data='{"user_id": 1, "action": "login", "_event_type": "activity_log", "_emitted_at": "2026-12-04T05:00:00Z"}'
cat > "$work/two_ins.sql" <<SQL
WITH ev AS (INSERT INTO e (id, bus, event_type, emitted_at_ns, data) SELECT gen_random_uuid(), 'b', 'activity_log', g, '$data' FROM generate_series(1, 500) g RETURNING id, bus, seq, key) INSERT INTO d (event_id, handler, attempt, bus, seq, key) SELECT id, 'h', 1, bus, seq, key FROM ev;
SQL
cat > "$work/two_del.sql" <<'SQL'
WITH picked AS (SELECT id FROM e WHERE bus = 'b' ORDER BY seq LIMIT 500 FOR UPDATE SKIP LOCKED), gone AS (DELETE FROM d WHERE (event_id, handler) IN (SELECT id, 'h' FROM picked) RETURNING event_id) DELETE FROM e WHERE id IN (SELECT event_id FROM gone);
SQL
cat > "$work/shared_ins.sql" <<SQL
WITH ev AS (INSERT INTO e (id, bus, event_type, emitted_at_ns, data) SELECT gen_random_uuid(), 'b', 'activity_log', g, '$data' FROM generate_series(1, 500) g RETURNING id, bus, seq, key) INSERT INTO d (event_id, handler, attempt, queued, bus, seq, key) SELECT id, 'h', 1, false, bus, seq, key FROM ev;
SQL
cat > "$work/shared_del.sql" <<'SQL'
WITH c AS (UPDATE d SET queued = true, owner = md5(:client_id::text)::uuid, fence = fence + 1 WHERE ctid = ANY(ARRAY(SELECT ctid FROM d WHERE bus = 'b' AND NOT queued AND key IS NULL ORDER BY seq LIMIT 500 FOR UPDATE SKIP LOCKED)) RETURNING event_id) SELECT count(*) FROM c;
WITH gone AS (DELETE FROM d WHERE ctid = ANY(ARRAY(SELECT ctid FROM d WHERE owner = md5(:client_id::text)::uuid AND queued FOR UPDATE SKIP LOCKED)) RETURNING event_id) DELETE FROM e WHERE id IN (SELECT event_id FROM gone);
SQL
cat > "$work/inline_ins.sql" <<SQL
INSERT INTO d (event_id, handler, attempt, bus, seq, event_type, emitted_at_ns, data) SELECT gen_random_uuid(), 'h', 1, 'b', nextval('d_seq'), 'activity_log', g, '$data' FROM generate_series(1, 500) g;
SQL
cat > "$work/inline_del.sql" <<'SQL'
DELETE FROM d WHERE ctid = ANY(ARRAY(SELECT ctid FROM d WHERE bus = 'b' AND data IS NOT NULL ORDER BY seq LIMIT 500 FOR UPDATE SKIP LOCKED));
SQL
cat > "$work/shared_inline_ins.sql" <<SQL
INSERT INTO d (event_id, handler, attempt, queued, bus, seq, event_type, emitted_at_ns, data) SELECT gen_random_uuid(), 'h', 1, false, 'b', nextval('d_seq'), 'activity_log', g, '$data' FROM generate_series(1, 500) g;
SQL
cat > "$work/shared_inline_del.sql" <<'SQL'
WITH c AS (UPDATE d SET queued = true, owner = md5(:client_id::text)::uuid, fence = fence + 1 WHERE ctid = ANY(ARRAY(SELECT ctid FROM d WHERE bus = 'b' AND NOT queued AND key IS NULL ORDER BY seq LIMIT 500 FOR UPDATE SKIP LOCKED)) RETURNING event_id) SELECT count(*) FROM c;
DELETE FROM d WHERE ctid = ANY(ARRAY(SELECT ctid FROM d WHERE owner = md5(:client_id::text)::uuid AND queued FOR UPDATE SKIP LOCKED));
SQL
# The claim-holding shapes: each take deletes what this client claimed at
# its previous take, then claims anew, so that each client always holds 500
# claimed rows that the other's claims walk past (as a bus's in-flight
# deliveries are): `shared_held` with today's claim, `shared_hot` and
# `inline_hot` with a claim that writes no indexed column.
cp "$work/shared_ins.sql" "$work/shared_held_ins.sql"
cat > "$work/shared_held_del.sql" <<'SQL'
WITH gone AS (DELETE FROM d WHERE ctid = ANY(':rows'::tid[]) AND owner = md5(:client_id::text)::uuid RETURNING event_id) DELETE FROM e WHERE id IN (SELECT event_id FROM gone);
WITH c AS (UPDATE d SET queued = true, owner = md5(:client_id::text)::uuid, fence = fence + 1 WHERE ctid = ANY(ARRAY(SELECT ctid FROM d WHERE bus = 'b' AND NOT queued AND key IS NULL ORDER BY seq LIMIT 500 FOR UPDATE SKIP LOCKED)) RETURNING ctid) SELECT coalesce(array_agg(ctid), '{}') AS rows FROM c \gset
SQL
cat > "$work/shared_hot_ins.sql" <<SQL
WITH ev AS (INSERT INTO e (id, bus, event_type, emitted_at_ns, data) SELECT gen_random_uuid(), 'b', 'activity_log', g, '$data' FROM generate_series(1, 500) g RETURNING id, bus, seq, key) INSERT INTO h (event_id, handler, attempt, bus, seq, key) SELECT id, 'h', 1, bus, seq, key FROM ev;
SQL
cat > "$work/shared_hot_del.sql" <<'SQL'
WITH gone AS (DELETE FROM h WHERE ctid = ANY(':rows'::tid[]) AND owner = md5(:client_id::text)::uuid RETURNING event_id) DELETE FROM e WHERE id IN (SELECT event_id FROM gone);
WITH c AS (UPDATE h SET owner = md5(:client_id::text)::uuid, fence = fence + 1 WHERE ctid = ANY(ARRAY(SELECT ctid FROM h WHERE bus = 'b' AND owner IS NULL AND key IS NULL ORDER BY seq LIMIT 500 FOR UPDATE SKIP LOCKED)) RETURNING ctid) SELECT coalesce(array_agg(ctid), '{}') AS rows FROM c \gset
SQL
cat > "$work/inline_hot_ins.sql" <<SQL
INSERT INTO h (event_id, handler, attempt, bus, seq, event_type, emitted_at_ns, data) SELECT gen_random_uuid(), 'h', 1, 'b', nextval('d_seq'), 'activity_log', g, '$data' FROM generate_series(1, 500) g;
SQL
cat > "$work/inline_hot_del.sql" <<'SQL'
DELETE FROM h WHERE ctid = ANY(':rows'::tid[]) AND owner = md5(:client_id::text)::uuid;
WITH c AS (UPDATE h SET owner = md5(:client_id::text)::uuid, fence = fence + 1 WHERE ctid = ANY(ARRAY(SELECT ctid FROM h WHERE bus = 'b' AND owner IS NULL AND key IS NULL ORDER BY seq LIMIT 500 FOR UPDATE SKIP LOCKED)) RETURNING ctid) SELECT coalesce(array_agg(ctid), '{}') AS rows FROM c \gset
SQL
# `locked`: the claim that writes nothing — one row per event (as
# `inline`), the oldest 500 locked `FOR UPDATE SKIP LOCKED` by a transaction
# that stays open 2 ms (the other client's claims walk past them meanwhile,
# as past a bus's in-flight deliveries), then deleted in it.
cp "$work/inline_ins.sql" "$work/locked_ins.sql"
cat > "$work/locked_del.sql" <<'SQL'
BEGIN;
SELECT coalesce(array_agg(ctid), '{}') AS rows FROM (SELECT ctid FROM d WHERE bus = 'b' AND data IS NOT NULL ORDER BY seq LIMIT 500 FOR UPDATE SKIP LOCKED) s \gset
\sleep 2 ms
DELETE FROM d WHERE ctid = ANY(':rows'::tid[]);
COMMIT;
SQL
cat > "$work/one_ins.sql" <<SQL
INSERT INTO e (id, bus, event_type, emitted_at_ns, data, pending) SELECT gen_random_uuid(), 'b', 'activity_log', g, '$data', '{h}' FROM generate_series(1, 500) g;
SQL
cat > "$work/one_del.sql" <<'SQL'
DELETE FROM e WHERE ctid = ANY(ARRAY(SELECT ctid FROM e WHERE bus = 'b' ORDER BY seq LIMIT 500 FOR UPDATE SKIP LOCKED));
SQL
for _ in $(seq "$rounds"); do
  for s in ${SHAPES:-two one inline shared shared_inline shared_held shared_hot inline_hot locked}; do
    psql -q "$shape" -c "TRUNCATE e, d, h" -c "CHECKPOINT" > /dev/null
    inserts=$("$pgbench" -n -c 2 -j 2 -T 15 -D rows='{}' "$shape" -f "$work/${s}_ins.sql@1" -f "$work/${s}_del.sql@1" 2>&1 \
      | grep -A2 "^SQL script 1" | grep -oE "^ - [0-9]+ transactions" | grep -oE "[0-9]+")
    left=$(psql -qtA "$shape" -c "SELECT (SELECT count(*) FROM e) + (SELECT count(*) FROM d WHERE data IS NOT NULL) + (SELECT count(*) FROM h WHERE data IS NOT NULL)")
    echo "$s: $(( (inserts * 500 - left) / 15 )) rows handled/s"
  done
done
[ -n "${KEEP:-}" ] || psql -q "$url" -c "DROP DATABASE shape"
