-- The system of record on Postgres: the same tables as the embedded store's SQLite database
-- (records, change log, filter index, jobs, orgs, projects, keys, audit), plus leases for work
-- that one node of a cluster does at a time. Times are microseconds since the epoch.

CREATE TABLE records (
    key         bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- never reused: derived stores index by it
    tenant      text    NOT NULL,
    id          text    NOT NULL,
    kind        text    NOT NULL,
    title       text,
    body        text,
    tags        jsonb   NOT NULL DEFAULT '[]',
    metadata    jsonb   NOT NULL DEFAULT '{}',
    vector      bytea,                                              -- little-endian f32s
    graph       jsonb,
    version     bigint  NOT NULL,
    created_at  bigint  NOT NULL,
    updated_at  bigint  NOT NULL,
    embed       boolean NOT NULL DEFAULT false,
    UNIQUE (tenant, id)
);
CREATE INDEX records_by_kind ON records (tenant, kind, key);

-- One entry per applied write, in the same transaction as the write. `seq` is the entry's
-- position: the writing transaction's id shifted left 20 bits, plus the entry's index within the
-- transaction. Readers take only entries of transactions older than every one still running
-- (`txid < nexus_log_horizon()`), so a transaction that commits late can never be stepped past.
-- Pruning keeps the newest entry, which marks the head.
CREATE TABLE changes (
    seq         bigint  PRIMARY KEY,
    txid        xid8    NOT NULL,
    tenant      text    NOT NULL,
    record_key  bigint  NOT NULL,
    id          text    NOT NULL,
    op          text    NOT NULL CHECK (op IN ('upsert', 'delete')),
    at          bigint  NOT NULL
);

-- The change log is complete below this transaction id: the oldest transaction still running in
-- the reader's snapshot (else the next id to be handed out). Transactions of other databases on
-- the same server are left out when they can be told apart (pg_stat_activity shows their xid),
-- so a long transaction elsewhere does not hold the log back; one that cannot be told apart only
-- delays readers, never makes them skip.
CREATE FUNCTION nexus_log_horizon() RETURNS xid8 LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        (SELECT min(x) FROM pg_snapshot_xip(pg_current_snapshot()) AS x
         WHERE (x::text::bigint & 4294967295) NOT IN (
             SELECT backend_xid::text::bigint FROM pg_stat_activity
             WHERE backend_xid IS NOT NULL AND datname IS DISTINCT FROM current_database())),
        pg_snapshot_xmax(pg_current_snapshot()))
$$;

-- Each record's exact-match filter terms ('k' || kind, 't' || tag, 'm' || field || chr(31) ||
-- value for top-level scalar metadata; values over 64 characters left out), written with the
-- record in the same transaction.
CREATE TABLE record_facets (
    tenant  text    NOT NULL,
    facet   text    NOT NULL,
    key     bigint  NOT NULL,
    PRIMARY KEY (tenant, facet, key)
);
CREATE INDEX record_facets_by_key ON record_facets (key);

-- A record's own date, as filters compare it: metadata `date` (RFC 3339 with its offset, or
-- YYYY-MM-DD taken as midnight UTC) when it reads as one, else the creation time.
CREATE FUNCTION nexus_record_date(metadata jsonb, created_at bigint) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    d text;
BEGIN
    IF jsonb_typeof(metadata -> 'date') IS DISTINCT FROM 'string' THEN
        RETURN created_at;
    END IF;
    d := metadata ->> 'date';
    IF d ~ '^\d{4}-\d{2}-\d{2}$' THEN
        RETURN (extract(epoch FROM (d || 'T00:00:00+00:00')::timestamptz) * 1000000)::bigint;
    ELSIF d ~ '^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:\d{2})$' THEN
        RETURN (extract(epoch FROM d::timestamptz) * 1000000)::bigint;
    END IF;
    RETURN created_at;
EXCEPTION WHEN others THEN
    RETURN created_at;
END
$$;

-- The durable job queue; claimed with FOR UPDATE SKIP LOCKED, so any node may run any job.
CREATE TABLE jobs (
    id           text    PRIMARY KEY,
    tenant       text    NOT NULL,
    kind         text    NOT NULL,
    payload      jsonb   NOT NULL,
    state        text    NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled')),
    attempts     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    progress     jsonb   NOT NULL DEFAULT '{}',
    result       jsonb,
    error        text,
    error_code   text,
    run_after    bigint  NOT NULL,
    lease_until  bigint,
    created_at   bigint  NOT NULL,
    updated_at   bigint  NOT NULL
);
CREATE INDEX jobs_due ON jobs (state, run_after);
CREATE INDEX jobs_by_tenant ON jobs (tenant, created_at);

-- Organisations contain projects; a project is a tenant.
CREATE TABLE orgs (
    id          text    PRIMARY KEY,
    name        text    NOT NULL,
    created_at  bigint  NOT NULL
);

CREATE TABLE projects (
    id          text    PRIMARY KEY,
    org_id      text    NOT NULL REFERENCES orgs (id),
    name        text    NOT NULL,
    created_at  bigint  NOT NULL
);

INSERT INTO orgs (id, name, created_at)
    VALUES ('default', 'Default', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
INSERT INTO projects (id, org_id, name, created_at)
    VALUES ('default', 'default', 'Default', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);

-- API keys: only the SHA-256 of the secret is kept.
CREATE TABLE api_keys (
    id            text    PRIMARY KEY,
    project_id    text    NOT NULL REFERENCES projects (id),
    name          text    NOT NULL,
    secret_hash   bytea   NOT NULL,
    scopes        text    NOT NULL,
    created_at    bigint  NOT NULL,
    expires_at    bigint,
    revoked_at    bigint,
    last_used_at  bigint
);
CREATE INDEX api_keys_by_project ON api_keys (project_id, created_at);

-- One audit log for every node.
CREATE TABLE audit_log (
    seq         bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          bigint  NOT NULL,
    principal   text    NOT NULL,
    key_id      text,
    tenant      text,
    method      text    NOT NULL,
    route       text    NOT NULL,
    object_id   text,
    status      integer NOT NULL,
    client      text
);
CREATE INDEX audit_by_tenant ON audit_log (tenant, seq);
CREATE INDEX audit_by_at ON audit_log (at);

-- Work one node does at a time (a shared derived store's projector): held by `owner` until
-- `until_ms`; `token` grows each time the lease changes hands, fencing out a former holder.
CREATE TABLE leases (
    name      text    PRIMARY KEY,
    owner     text    NOT NULL,
    until_ms  bigint  NOT NULL,
    token     bigint  NOT NULL
);
