-- The demo's own tables: the seed's order workflow. Handler tables are keyed
-- on the event id, so a redelivered event writes once.
CREATE TABLE IF NOT EXISTS products (
    sku        TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    unit_price REAL NOT NULL,
    stock      BIGINT NOT NULL
);
INSERT OR IGNORE INTO products (sku, name, unit_price, stock) VALUES
    ('KB-01', 'Mechanical keyboard', 89.00, 100),
    ('MS-02', 'Wireless mouse', 25.50, 250),
    ('MN-27', '27-inch monitor', 279.99, 40),
    ('HD-05', 'Noise-cancelling headset', 149.00, 75);

CREATE TABLE IF NOT EXISTS orders (
    order_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    BIGINT NOT NULL,
    total      REAL NOT NULL,
    items      TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS order_emails (
    event_id   TEXT PRIMARY KEY,
    order_id   BIGINT NOT NULL,
    recipient  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS inventory_updates (
    event_id   TEXT PRIMARY KEY,
    order_id   BIGINT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS warehouse_notifications (
    event_id   TEXT PRIMARY KEY,
    order_id   BIGINT NOT NULL,
    payload    TEXT NOT NULL,
    created_at TEXT NOT NULL
);
