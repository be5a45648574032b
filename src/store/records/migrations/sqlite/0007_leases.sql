-- Work one process does at a time: held by `owner` until `until_ms`; `token` grows each time the
-- lease changes hands. One process serves a data directory, so this mirrors the cluster schema.
CREATE TABLE leases (
    name      TEXT    PRIMARY KEY,
    owner     TEXT    NOT NULL,
    until_ms  INTEGER NOT NULL,
    token     INTEGER NOT NULL
);
