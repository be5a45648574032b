-- The durable job queue. A job is claimed with a lease; a worker that dies lets the lease
-- expire and the job is claimed again (at-least-once).
CREATE TABLE jobs (
    id           TEXT    PRIMARY KEY,
    tenant       TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    progress     TEXT    NOT NULL DEFAULT '{}',
    result       TEXT,
    error        TEXT,
    run_after    INTEGER NOT NULL,
    lease_until  INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX jobs_due ON jobs (state, run_after);
CREATE INDEX jobs_by_tenant ON jobs (tenant, created_at);
