-- Organisations contain projects; a project is a tenant (its id is the `tenant` of its records).
CREATE TABLE orgs (
    id          TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE projects (
    id          TEXT    PRIMARY KEY,
    org_id      TEXT    NOT NULL REFERENCES orgs (id),
    name        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

-- The tenant every install starts with.
INSERT INTO orgs (id, name, created_at) VALUES ('default', 'Default', CAST(unixepoch('subsec') * 1000000 AS INTEGER));
INSERT INTO projects (id, org_id, name, created_at)
    VALUES ('default', 'default', 'Default', CAST(unixepoch('subsec') * 1000000 AS INTEGER));

-- API keys: only the SHA-256 of the secret is kept; the key is shown once, at creation.
CREATE TABLE api_keys (
    id            TEXT    PRIMARY KEY,
    project_id    TEXT    NOT NULL REFERENCES projects (id),
    name          TEXT    NOT NULL,
    secret_hash   BLOB    NOT NULL,
    scopes        TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    revoked_at    INTEGER,
    last_used_at  INTEGER
);
CREATE INDEX api_keys_by_project ON api_keys (project_id, created_at);

-- Who did what, when, and how it ended. Written in batches, off the request path.
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    principal   TEXT    NOT NULL,
    key_id      TEXT,
    tenant      TEXT,
    method      TEXT    NOT NULL,
    route       TEXT    NOT NULL,
    object_id   TEXT,
    status      INTEGER NOT NULL,
    client      TEXT
);
CREATE INDEX audit_by_tenant ON audit_log (tenant, seq);
CREATE INDEX audit_by_at ON audit_log (at);
