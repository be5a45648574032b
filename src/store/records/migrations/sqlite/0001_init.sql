-- The system of record. Keys are AUTOINCREMENT so a deleted record's key is never reused:
-- derived stores index by key.
CREATE TABLE records (
    key         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant      TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    title       TEXT,
    body        TEXT,
    tags        TEXT    NOT NULL DEFAULT '[]',
    metadata    TEXT    NOT NULL DEFAULT '{}',
    vector      BLOB,
    graph       TEXT,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (tenant, id)
);
CREATE INDEX records_by_kind ON records (tenant, kind, key);

-- One entry per applied write, in the same transaction as the write.
CREATE TABLE changes (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant      TEXT    NOT NULL,
    record_key  INTEGER NOT NULL,
    id          TEXT    NOT NULL,
    op          TEXT    NOT NULL CHECK (op IN ('upsert', 'delete')),
    at          INTEGER NOT NULL
);
