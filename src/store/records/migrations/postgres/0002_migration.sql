-- The state of a `nexus migrate` into this database (one row while one is under way or done):
-- which source it copies, how far it got. Written after each batch it copies.
CREATE TABLE migration (
    id          integer PRIMARY KEY CHECK (id = 1),
    state       jsonb   NOT NULL,
    updated_at  bigint  NOT NULL
);
