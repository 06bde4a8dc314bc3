#!/usr/bin/env python3
"""Two builds of `tidings` as worker processes on one shared PostgreSQL bus
name, for checking a rolling upgrade: every event is handled once by one
of them, and nothing is left pending.

    python3 scripts/mixed_versions.py URL OLD_BINARY,NEW_BINARY[,...] KEYS EVENTS

Each binary runs `tidings bench --scale-worker` (its handler spends 1 ms a
call); the events are written as a shared emit writes them (one delivery
row each, with `KEYS` keys in turn or none when 0, in 20 batches, each
followed by the notification), and the workers' handled counts are read
until they add up to `EVENTS`. Prints each worker's count, their sum, and
the deliveries left; deletes the bus name's rows after. Needs `psql`.
"""
import subprocess
import sys
import threading
import time
import uuid

url, bins, keys, n = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), int(sys.argv[4])
bus = "mixed-" + uuid.uuid4().hex


def psql(sql):
    return subprocess.run(["psql", url, "-Atqc", sql], check=True, capture_output=True, text=True).stdout.strip()


workers, counts = [], {}


def read(i, p):
    for line in p.stdout:
        line = line.strip()
        if line == "ready":
            counts.setdefault(i, 0)
        elif line.startswith("handled "):
            counts[i] = int(line.split()[1])


for i, b in enumerate(bins):
    p = subprocess.Popen(
        [b, "bench", "--scale-worker", url, "--scale-store", "postgres", "--scale-bus", bus],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    workers.append(p)
    threading.Thread(target=read, args=(i, p), daemon=True).start()
while len(counts) < len(bins):
    time.sleep(0.05)
start, per = time.time(), n // 20
key = "'key-' || (g %% %d)" % keys if keys else "NULL"
for b in range(20):
    psql(
        """INSERT INTO tidings_deliveries (event_id, handler, attempt, queued, shared, bus, seq, key,
                                           event_type, emitted_at_ns, data)
           SELECT gen_random_uuid(), 'scale_work', 1, true, true, '%s', nextval('tidings_events_seq_seq'),
                  %s, 'activity_log', g, '{"n": 1}' FROM generate_series(%d, %d) g ORDER BY g;
           SELECT pg_notify('tidings', '%s');"""
        % (bus, key, b * per, (b + 1) * per - 1, bus)
    )
    time.sleep(0.05)
while sum(counts.values()) < n and time.time() - start < 120:
    time.sleep(0.05)
took = time.time() - start
time.sleep(1.0)  # duplicates, if any, would show in the sum
left = psql("SELECT count(*) FROM tidings_deliveries WHERE bus = '%s'" % bus)
print("keys", keys, "handled", dict(counts), "sum", sum(counts.values()), "of", n, "in %.1f s" % took, "left", left)
for p in workers:
    p.stdin.close()
for p in workers:
    p.wait()
for table in ["tidings_deliveries", "tidings_handlers", "tidings_instances", "tidings_events"]:
    psql("DELETE FROM %s WHERE bus = '%s'" % (table, bus))
sys.exit(0 if sum(counts.values()) == n and left == "0" else 1)
