-- Records whose vector Nexus computes from their text (re-embedded when the embedder changes),
-- as opposed to vectors supplied by the client.
ALTER TABLE records ADD COLUMN embed INTEGER NOT NULL DEFAULT 0;
