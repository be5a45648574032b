-- An inverted index of each record's exact-match filter terms, so metadata, tag and kind filters
-- read the matching keys instead of scanning the tenant's records.

-- A record's terms: 'k' || kind; 't' || tag for every tag; 'm' || field || char(31) || value for
-- every top-level scalar field of object metadata (booleans as true/false, numbers as their
-- text, as filters compare them). Values longer than 64 characters are left out (filters on
-- them read the records).
CREATE VIEW record_facet_terms AS
SELECT r.tenant AS tenant, 'k' || r.kind AS facet, r.key AS key FROM records r
UNION ALL
SELECT r.tenant, 't' || t.value, r.key
FROM records r, json_each(r.tags) t
WHERE t.type = 'text' AND length(t.value) <= 64
UNION ALL
SELECT r.tenant, 'm' || j.key || char(31) || CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'
                                             ELSE CAST(j.atom AS TEXT) END, r.key
FROM records r, json_each(r.metadata) j
WHERE json_type(r.metadata) = 'object' AND j.type IN ('true', 'false', 'integer', 'real', 'text')
  AND length(CAST(j.atom AS TEXT)) <= 64;

CREATE TABLE record_facets (
    tenant TEXT    NOT NULL,
    facet  TEXT    NOT NULL,
    key    INTEGER NOT NULL,
    PRIMARY KEY (tenant, facet, key)
) WITHOUT ROWID;

INSERT OR IGNORE INTO record_facets (tenant, facet, key) SELECT tenant, facet, key FROM record_facet_terms;

-- Triggers keep the index in step inside the writing transaction: a record's old terms go while
-- the old row is still there, its new ones come once the new row is.
CREATE TRIGGER records_facets_insert AFTER INSERT ON records BEGIN
    INSERT OR IGNORE INTO record_facets (tenant, facet, key)
    SELECT tenant, facet, key FROM record_facet_terms WHERE key = NEW.key;
END;

CREATE TRIGGER records_facets_delete BEFORE DELETE ON records BEGIN
    DELETE FROM record_facets WHERE tenant = OLD.tenant AND key = OLD.key
        AND facet IN (SELECT facet FROM record_facet_terms WHERE key = OLD.key);
END;

CREATE TRIGGER records_facets_update_old BEFORE UPDATE OF kind, tags, metadata ON records BEGIN
    DELETE FROM record_facets WHERE tenant = OLD.tenant AND key = OLD.key
        AND facet IN (SELECT facet FROM record_facet_terms WHERE key = OLD.key);
END;

CREATE TRIGGER records_facets_update_new AFTER UPDATE OF kind, tags, metadata ON records BEGIN
    INSERT OR IGNORE INTO record_facets (tenant, facet, key)
    SELECT tenant, facet, key FROM record_facet_terms WHERE key = NEW.key;
END;
