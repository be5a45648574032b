//! How entities and relations are records.
//!
//! - An **entity** is a record of kind `entity`: its name as the title, its summary and aliases
//!   as the body (so hybrid search finds it by any of them, and its vector is computed from
//!   them), `{type, name, aliases, attributes, summary}` as metadata and a graph node labelled
//!   with its type. Its id is derived from its type and normalised name, so adding the same
//!   entity twice gives the same record.
//! - A **relation** is a record of kind `relation`: the fact in words as the body, a graph edge
//!   labelled with its type, and as metadata its ends, type, fact, confidence, provenance
//!   (`sources`) and four times. `valid_at`/`invalid_at` bound when it was true in the world,
//!   `created_at`/`expired_at` when Nexus held it as knowledge. Each record is one version: a
//!   version is never changed except to be expired, and a correction (a validity closed by a
//!   contradicting fact) is a new version that names the one it `supersedes`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::store::graph::GraphEdge;
use crate::store::records::{GraphItem, NewRecord, Record};

/// The record kinds of entities and relations (memory inference writes them too).
pub const ENTITY_KIND: &str = "entity";
pub const RELATION_KIND: &str = "relation";

/// 20 hex digits of the SHA-256 of `parts` (each followed by a zero byte).
pub fn short_hash(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())[..20].to_string()
}

pub const MAX_NAME_LEN: usize = 200;
pub const MAX_TYPE_LEN: usize = 64;
pub const MAX_ALIASES: usize = 50;
pub const MAX_FACT_LEN: usize = 4000;

/// An entity: a person, organisation, place, project... anything relations connect.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"id": "ent_3f0c2a9d4b1e8c7a6f50", "name": "Ana Lima", "type": "person",
    "aliases": ["Ana"], "attributes": {"team": "platform"}, "summary": "Leads the platform team.",
    "created_at": "2026-03-01T09:00:00Z", "updated_at": "2026-03-01T09:00:00Z"}))]
pub struct Entity {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub entity_type: String,
    pub aliases: Vec<String>,
    /// Free-form attributes; analytics stored on request appear here (`pagerank`, `community`...).
    #[schema(value_type = Object)]
    pub attributes: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A new entity; adding one that exists (same type and name) adds its aliases and attributes.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Ana Lima", "type": "person", "aliases": ["Ana"], "attributes": {"team": "platform"}}))]
pub struct NewEntity {
    pub name: String,
    /// `person`, `organization`, `place`, `project`... (lower-cased).
    #[serde(rename = "type")]
    pub entity_type: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: Option<Value>,
    #[serde(default)]
    pub summary: Option<String>,
}

/// A relation from one entity to another, one version of it (see the module doc).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"id": "rel_0a1b2c3d4e5f60718293", "source": "ent_3f0c2a9d4b1e8c7a6f50", "type": "works_for",
    "target": "ent_91d2e7c0b3a4f5e6d7c8", "fact": "Ana works for Acme.", "confidence": 1.0,
    "valid_at": "2024-01-01T00:00:00Z", "invalid_at": null, "created_at": "2026-03-01T09:00:00Z",
    "expired_at": null, "sources": []}))]
pub struct Relation {
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub relation_type: String,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fact: Option<String>,
    pub confidence: f64,
    /// When it became true (absent: since always, as far as Nexus knows).
    pub valid_at: Option<DateTime<Utc>>,
    /// When it stopped being true (absent: still true).
    pub invalid_at: Option<DateTime<Utc>>,
    /// When Nexus learned this version.
    pub created_at: DateTime<Utc>,
    /// When Nexus retired this version (absent: current knowledge).
    pub expired_at: Option<DateTime<Utc>>,
    /// The memories, documents or meeting segments it came from.
    pub sources: Vec<String>,
    /// The version this one replaced (its validity corrected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
    /// The relation whose fact contradicted this version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalidated_by: Option<String>,
}

/// A new relation between two entities of the project, by id.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"source": "ent_3f0c2a9d4b1e8c7a6f50", "type": "works_for", "target": "ent_91d2e7c0b3a4f5e6d7c8",
    "fact": "Ana works for Acme.", "valid_at": "2024-01-01T00:00:00Z"}))]
pub struct NewRelation {
    pub source: String,
    /// `works_for`, `reports_to`, `member_of`... (lower-cased, spaces and dashes as `_`).
    #[serde(rename = "type")]
    pub relation_type: String,
    pub target: String,
    #[serde(default)]
    pub fact: Option<String>,
    #[serde(default)]
    pub valid_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub invalid_at: Option<DateTime<Utc>>,
    /// 0-1, default 1.
    #[serde(default)]
    pub confidence: Option<f64>,
    #[serde(default)]
    pub sources: Vec<String>,
}

/// `Works For`, `works-for` and `WORKS_FOR` are one type: `works_for`.
pub fn normalise_type(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.trim().chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_string()
}

/// A name compared for identity: trimmed, lower-cased, inner whitespace collapsed.
pub fn normalise_name(raw: &str) -> String {
    raw.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

pub fn entity_id(entity_type: &str, name: &str) -> String {
    format!("ent_{}", short_hash(&["graph", entity_type, &normalise_name(name)]))
}

pub fn time_text(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn time_of(meta: &Value, field: &str) -> Option<DateTime<Utc>> {
    meta.get(field).and_then(Value::as_str).and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.to_utc())
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect()
}

impl Entity {
    /// Any record that makes a graph node reads as an entity (those memory inference makes
    /// carry less).
    pub fn from_record(r: &Record) -> Entity {
        let meta = &r.metadata;
        let (label, node_name) = match &r.graph {
            Some(GraphItem::Node { label, name }) => (label.clone(), name.clone()),
            _ => (String::new(), String::new()),
        };
        Entity {
            id: r.id.clone(),
            name: meta.get("name").and_then(Value::as_str).map(str::to_string).unwrap_or(node_name),
            entity_type: meta.get("type").and_then(Value::as_str).map(str::to_string).unwrap_or(label),
            aliases: strings(meta.get("aliases")),
            attributes: meta.get("attributes").cloned().filter(Value::is_object).unwrap_or_else(|| json!({})),
            summary: meta.get("summary").and_then(Value::as_str).map(str::to_string),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }

    pub fn to_record(&self) -> NewRecord {
        let mut body = self.summary.clone().unwrap_or_default();
        if !self.aliases.is_empty() {
            if !body.is_empty() {
                body.push('\n');
            }
            body.push_str(&format!("Also known as {}.", self.aliases.join(", ")));
        }
        NewRecord {
            id: self.id.clone(),
            kind: ENTITY_KIND.into(),
            title: Some(self.name.clone()),
            body: (!body.is_empty()).then_some(body),
            metadata: json!({
                "type": self.entity_type, "name": self.name, "aliases": self.aliases,
                "attributes": self.attributes, "summary": self.summary,
            }),
            graph: Some(GraphItem::Node { label: self.entity_type.clone(), name: self.name.clone() }),
            embed: true,
            ..Default::default()
        }
    }
}

impl Relation {
    pub fn from_metadata(id: &str, meta: &Value, fallback_created: DateTime<Utc>) -> Relation {
        let text = |field: &str| meta.get(field).and_then(Value::as_str).map(str::to_string);
        Relation {
            id: id.to_string(),
            source: text("source").unwrap_or_default(),
            relation_type: text("type").or_else(|| text("relationship")).unwrap_or_default(),
            target: text("target").unwrap_or_default(),
            fact: text("fact"),
            confidence: meta.get("confidence").and_then(Value::as_f64).unwrap_or(1.0),
            valid_at: time_of(meta, "valid_at"),
            invalid_at: time_of(meta, "invalid_at"),
            created_at: time_of(meta, "created_at").unwrap_or(fallback_created),
            expired_at: time_of(meta, "expired_at"),
            sources: strings(meta.get("sources")),
            supersedes: text("supersedes"),
            invalidated_by: text("invalidated_by"),
        }
    }

    pub fn from_record(r: &Record) -> Relation {
        let mut relation = Relation::from_metadata(&r.id, &r.metadata, r.created_at);
        if let Some(GraphItem::Edge { label, source, target }) = &r.graph {
            // The edge is what walks follow: it is authoritative for the ends.
            relation.source = source.clone();
            relation.target = target.clone();
            if relation.relation_type.is_empty() {
                relation.relation_type = label.clone();
            }
        }
        relation
    }

    /// A relation as the graph store holds it (its properties are the record's metadata).
    pub fn from_edge(edge: &GraphEdge) -> Relation {
        let fallback = DateTime::from_timestamp_micros(edge.updated_at).unwrap_or_default();
        let mut relation = Relation::from_metadata(&edge.id, &edge.properties, fallback);
        relation.source = edge.source.clone();
        relation.target = edge.target.clone();
        if relation.relation_type.is_empty() {
            relation.relation_type = edge.label.clone();
        }
        relation
    }

    /// `body`: the text the relation is found by (its fact, else its ends and type in words).
    pub fn to_record(&self, body: String) -> NewRecord {
        let mut meta = Map::new();
        meta.insert("source".into(), json!(self.source));
        meta.insert("type".into(), json!(self.relation_type));
        meta.insert("target".into(), json!(self.target));
        meta.insert("confidence".into(), json!(self.confidence));
        meta.insert("created_at".into(), json!(time_text(&self.created_at)));
        meta.insert("sources".into(), json!(self.sources));
        let mut optional = |field: &str, value: Option<String>| {
            if let Some(v) = value {
                meta.insert(field.into(), json!(v));
            }
        };
        optional("fact", self.fact.clone());
        optional("valid_at", self.valid_at.as_ref().map(time_text));
        optional("invalid_at", self.invalid_at.as_ref().map(time_text));
        optional("expired_at", self.expired_at.as_ref().map(time_text));
        optional("supersedes", self.supersedes.clone());
        optional("invalidated_by", self.invalidated_by.clone());
        NewRecord {
            id: self.id.clone(),
            kind: RELATION_KIND.into(),
            body: Some(body),
            metadata: Value::Object(meta),
            graph: Some(GraphItem::Edge {
                label: self.relation_type.clone(),
                source: self.source.clone(),
                target: self.target.clone(),
            }),
            ..Default::default()
        }
    }

    /// Whether it was true at `t` (valid time).
    pub fn valid_at_time(&self, t: DateTime<Utc>) -> bool {
        self.valid_at.is_none_or(|v| v <= t) && self.invalid_at.is_none_or(|i| t < i)
    }

    /// Whether Nexus held this version at `t` (system time); `None`: now.
    pub fn known_at_time(&self, t: Option<DateTime<Utc>>) -> bool {
        match t {
            None => self.expired_at.is_none(),
            Some(t) => self.created_at <= t && self.expired_at.is_none_or(|e| t < e),
        }
    }

    /// Whether its validity overlaps `[from, to)` (`None`: unbounded).
    pub fn overlaps(&self, from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> bool {
        let starts_before_end = match (self.valid_at, to) {
            (Some(v), Some(to)) => v < to,
            _ => true,
        };
        let ends_after_start = match (self.invalid_at, from) {
            (Some(i), Some(from)) => i > from,
            _ => true,
        };
        starts_before_end && ends_after_start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relation_types_and_names_normalise() {
        assert_eq!(normalise_type("Works For"), "works_for");
        assert_eq!(normalise_type(" WORKS-FOR "), "works_for");
        assert_eq!(normalise_type("reports_to"), "reports_to");
        assert_eq!(normalise_type("--"), "");
        assert_eq!(normalise_name("  Ana   LIMA "), "ana lima");
        assert_eq!(entity_id("person", "Ana Lima"), entity_id("person", " ana  lima"));
        assert_ne!(entity_id("person", "Acme"), entity_id("organization", "Acme"));
    }

    #[test]
    fn a_relation_survives_its_record() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let relation = Relation {
            id: "rel_1".into(),
            source: "a".into(),
            relation_type: "works_for".into(),
            target: "b".into(),
            fact: Some("A works for B".into()),
            confidence: 0.5,
            valid_at: Some(t("2020-01-01T00:00:00Z")),
            invalid_at: Some(t("2023-01-01T00:00:00Z")),
            created_at: t("2026-01-01T00:00:00Z"),
            expired_at: None,
            sources: vec!["mem_1".into()],
            supersedes: Some("rel_0".into()),
            invalidated_by: None,
        };
        let record = relation.to_record("A works for B".into());
        assert_eq!(Relation::from_metadata("rel_1", &record.metadata, t("2000-01-01T00:00:00Z")), relation);
        assert!(relation.valid_at_time(t("2020-01-01T00:00:00Z")));
        assert!(!relation.valid_at_time(t("2023-01-01T00:00:00Z")), "invalid_at is exclusive");
        assert!(!relation.known_at_time(Some(t("2025-12-31T00:00:00Z"))), "not learned yet");
        assert!(relation.overlaps(Some(t("2022-06-01T00:00:00Z")), None));
        assert!(!relation.overlaps(Some(t("2023-01-01T00:00:00Z")), None));
    }
}
