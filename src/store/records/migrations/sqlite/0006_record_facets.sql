-- An inverted index of each record's exact-match filter terms, so metadata and tag filters read
-- the matching keys instead of scanning the tenant's records: 'm' || field || char(31) || value
-- for every top-level scalar metadata field (booleans as true/false, numbers as their text),
-- 't' || tag for every tag and 'k' || kind. Values longer than 64 characters are not indexed
-- (filters on them read the records). Triggers keep it in step with records inside the writing
-- transaction. Only object metadata has fields.
CREATE TABLE record_facets (
    tenant TEXT    NOT NULL,
    facet  TEXT    NOT NULL,
    key    INTEGER NOT NULL,
    PRIMARY KEY (tenant, facet, key)
) WITHOUT ROWID;

INSERT OR IGNORE INTO record_facets (tenant, facet, key)
SELECT r.tenant, 'm' || j.key || char(31) || CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'
                                             ELSE CAST(j.atom AS TEXT) END, r.key
FROM records r, json_each(r.metadata) j
WHERE json_type(r.metadata) = 'object' AND j.type IN ('true', 'false', 'integer', 'real', 'text')
  AND length(CAST(j.atom AS TEXT)) <= 64;

INSERT OR IGNORE INTO record_facets (tenant, facet, key)
SELECT r.tenant, 't' || t.value, r.key
FROM records r, json_each(r.tags) t
WHERE t.type = 'text' AND length(t.value) <= 64;

INSERT OR IGNORE INTO record_facets (tenant, facet, key) SELECT tenant, 'k' || kind, key FROM records;

CREATE TRIGGER records_facets_insert AFTER INSERT ON records BEGIN
    INSERT OR IGNORE INTO record_facets (tenant, facet, key) VALUES (NEW.tenant, 'k' || NEW.kind, NEW.key);
    INSERT OR IGNORE INTO record_facets (tenant, facet, key)
    SELECT NEW.tenant, 'm' || j.key || char(31) || CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'
                                                  ELSE CAST(j.atom AS TEXT) END, NEW.key
    FROM json_each(NEW.metadata) j
    WHERE json_type(NEW.metadata) = 'object' AND j.type IN ('true', 'false', 'integer', 'real', 'text')
      AND length(CAST(j.atom AS TEXT)) <= 64;
    INSERT OR IGNORE INTO record_facets (tenant, facet, key)
    SELECT NEW.tenant, 't' || t.value, NEW.key
    FROM json_each(NEW.tags) t
    WHERE t.type = 'text' AND length(t.value) <= 64;
END;

CREATE TRIGGER records_facets_delete AFTER DELETE ON records BEGIN
    DELETE FROM record_facets WHERE tenant = OLD.tenant AND key = OLD.key AND facet IN (
        SELECT 'k' || OLD.kind
        UNION ALL
        SELECT 'm' || j.key || char(31) || CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'
                                         ELSE CAST(j.atom AS TEXT) END
        FROM json_each(OLD.metadata) j
        WHERE j.type IN ('true', 'false', 'integer', 'real', 'text')
        UNION ALL
        SELECT 't' || t.value FROM json_each(OLD.tags) t WHERE t.type = 'text'
    );
END;

CREATE TRIGGER records_facets_update AFTER UPDATE OF kind, metadata, tags ON records BEGIN
    DELETE FROM record_facets WHERE tenant = OLD.tenant AND key = OLD.key AND facet IN (
        SELECT 'k' || OLD.kind
        UNION ALL
        SELECT 'm' || j.key || char(31) || CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'
                                         ELSE CAST(j.atom AS TEXT) END
        FROM json_each(OLD.metadata) j
        WHERE j.type IN ('true', 'false', 'integer', 'real', 'text')
        UNION ALL
        SELECT 't' || t.value FROM json_each(OLD.tags) t WHERE t.type = 'text'
    );
    INSERT OR IGNORE INTO record_facets (tenant, facet, key) VALUES (NEW.tenant, 'k' || NEW.kind, NEW.key);
    INSERT OR IGNORE INTO record_facets (tenant, facet, key)
    SELECT NEW.tenant, 'm' || j.key || char(31) || CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'
                                                  ELSE CAST(j.atom AS TEXT) END, NEW.key
    FROM json_each(NEW.metadata) j
    WHERE json_type(NEW.metadata) = 'object' AND j.type IN ('true', 'false', 'integer', 'real', 'text')
      AND length(CAST(j.atom AS TEXT)) <= 64;
    INSERT OR IGNORE INTO record_facets (tenant, facet, key)
    SELECT NEW.tenant, 't' || t.value, NEW.key
    FROM json_each(NEW.tags) t
    WHERE t.type = 'text' AND length(t.value) <= 64;
END;
