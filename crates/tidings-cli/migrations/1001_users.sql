-- The demo's users: each with a clearance and an API token, stored as its
-- SHA-256 (hex). A conversation belongs to the user who started it.
CREATE TABLE IF NOT EXISTS users (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL UNIQUE,
    clearance  TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS conversations (
    id         TEXT PRIMARY KEY,
    user_id    BIGINT NOT NULL,
    created_at TEXT NOT NULL
);
