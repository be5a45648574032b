-- The vector store on pgvector, shared by every node of a cluster. The embedding columns and
-- the HNSW index depend on the configured dimensions, so they are added when the store is first
-- opened (see `vector_meta`), not here.

CREATE EXTENSION IF NOT EXISTS vector;

-- What the embedding columns hold; absent until they exist.
CREATE TABLE vector_meta (
    id            boolean PRIMARY KEY DEFAULT true CHECK (id),
    dimensions    integer NOT NULL,
    quantization  text    NOT NULL
);

-- Committed points: the state at `vector_cursor.seq`.
CREATE TABLE vector_points (
    key     bigint  PRIMARY KEY,
    tenant  text    NOT NULL,
    kind    text    NOT NULL
);
CREATE INDEX vector_points_by_tenant ON vector_points (tenant, kind);

-- Changes a writer applied and has not committed yet, under its own session number; a delete
-- has no tenant, kind or embedding. A commit moves them into `vector_points`. Rows of a session
-- that ended without committing are dropped by the next commit (and by a crash: unlogged).
CREATE UNLOGGED TABLE vector_pending (
    session  bigint  NOT NULL,
    key      bigint  NOT NULL,
    tenant   text,
    kind     text,
    PRIMARY KEY (session, key)
);

-- The change-log position the committed points reach, and the newest fencing token that wrote.
CREATE TABLE vector_cursor (
    id     boolean PRIMARY KEY DEFAULT true CHECK (id),
    seq    bigint  NOT NULL DEFAULT 0,
    token  bigint  NOT NULL DEFAULT 0
);
INSERT INTO vector_cursor DEFAULT VALUES;
