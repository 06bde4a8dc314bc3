-- The data behind docs/BENCHMARKS.md section 7's claim plans: two buses of
-- 20 000 pending deliveries of handler h, 1 000 of them claimed; px has
-- 1 000 keys (each key's first delivery claimed), pu none. Run on a
-- database where a tidings store has made its tables.
DELETE FROM tidings_deliveries d USING tidings_events e WHERE e.id=d.event_id AND e.bus IN ('px','pu');
DELETE FROM tidings_events WHERE bus IN ('px','pu');
INSERT INTO tidings_instances (id, bus, alive_until) VALUES ('00000000-0000-0000-0000-000000000001','px', now() + interval '1 day') ON CONFLICT (id) DO UPDATE SET alive_until = EXCLUDED.alive_until;
INSERT INTO tidings_events (id, bus, event_type, key, emitted_at_ns, data)
  SELECT gen_random_uuid(), 'px', 'activity_log', 'key-' || (g % 1000), g, '{}' FROM generate_series(1, 20000) g;
INSERT INTO tidings_deliveries (event_id, handler, attempt, queued)
  SELECT id, 'h', 1, false FROM tidings_events WHERE bus='px';
UPDATE tidings_deliveries d SET queued = true FROM tidings_events e WHERE e.id = d.event_id AND e.bus='px' AND e.emitted_at_ns <= 1000;
INSERT INTO tidings_events (id, bus, event_type, key, emitted_at_ns, data)
  SELECT gen_random_uuid(), 'pu', 'activity_log', NULL, g, '{}' FROM generate_series(1, 20000) g;
INSERT INTO tidings_deliveries (event_id, handler, attempt, queued)
  SELECT id, 'h', 1, false FROM tidings_events WHERE bus='pu';
UPDATE tidings_deliveries d SET queued = true FROM tidings_events e WHERE e.id = d.event_id AND e.bus='pu' AND e.emitted_at_ns <= 1000;
ANALYZE tidings_events; ANALYZE tidings_deliveries;
