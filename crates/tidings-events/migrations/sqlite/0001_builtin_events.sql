-- The seed's built-in events. Every table is keyed on the event id, so a
-- redelivered event writes once.
CREATE TABLE IF NOT EXISTS activity_logs (
    event_id                 TEXT PRIMARY KEY,
    user_id                  BIGINT NOT NULL,
    incident_type            TEXT NOT NULL,
    severity                 TEXT NOT NULL,
    description              TEXT NOT NULL,
    details                  TEXT,
    user_clearance_level     TEXT,
    required_clearance_level TEXT,
    access_granted           BOOLEAN,
    user_query               TEXT,
    threat_type              TEXT,
    ip_address               TEXT,
    user_agent               TEXT,
    created_at               TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS activity_logs_user ON activity_logs (user_id, created_at);
CREATE INDEX IF NOT EXISTS activity_logs_severity ON activity_logs (severity, created_at);

CREATE TABLE IF NOT EXISTS messages (
    message_id      TEXT PRIMARY KEY,
    event_id        TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL,
    user_id         BIGINT NOT NULL,
    role            TEXT NOT NULL,
    content         TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages (conversation_id, created_at);

CREATE TABLE IF NOT EXISTS semantic_cache (
    event_id           TEXT PRIMARY KEY,
    query              TEXT NOT NULL,
    answer             TEXT NOT NULL,
    required_clearance TEXT,
    model              TEXT NOT NULL,
    embedding          BLOB NOT NULL,
    created_at         TEXT NOT NULL
);
