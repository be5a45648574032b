//! What a memory is, and how it is kept as a record.
//!
//! A memory is a record of kind `memory`: its text is the body (embedded by the write path, so
//! the text and vector stores index it), its categories are tags, and its metadata holds the
//! scope ids, tier and times as top-level fields — so they are facets the stores filter on — with
//! the caller's own metadata nested under `metadata` and its scalars copied as `m.<key>` facets.
//! Every change appends a `memory_history` record in the same write batch.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::META_FACET_PREFIX;
use crate::error::{Error, Result};
use crate::store::records::{EMBED_CONTEXT, Record, facet_value, parse_date};

/// The record metadata field holding [`content_key`], for duplicate lookups.
pub const CONTENT_KEY: &str = "content_key";

/// How long a memory is meant to matter, and how search weighs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// The current task or session: expires with its run or a TTL.
    Working,
    /// Stable facts about a user, agent or thing: preferences, attributes.
    Factual,
    /// Something that happened, at a time: a conversation turn, an event.
    Episodic,
    /// General knowledge, not tied to one person or moment.
    Semantic,
}

impl Tier {
    pub const ALL: [Tier; 4] = [Tier::Working, Tier::Factual, Tier::Episodic, Tier::Semantic];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Working => "working",
            Tier::Factual => "factual",
            Tier::Episodic => "episodic",
            Tier::Semantic => "semantic",
        }
    }

    pub fn parse(text: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.as_str().eq_ignore_ascii_case(text.trim()))
    }
}

/// Whose memory it is. At least one id is set on every memory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = MemoryScope)]
pub struct Scope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

pub const MAX_SCOPE_ID_LEN: usize = 256;

impl Scope {
    pub fn fields(&self) -> [(&'static str, Option<&str>); 4] {
        [
            ("user_id", self.user_id.as_deref()),
            ("agent_id", self.agent_id.as_deref()),
            ("app_id", self.app_id.as_deref()),
            ("run_id", self.run_id.as_deref()),
        ]
    }

    pub fn is_empty(&self) -> bool {
        self.fields().iter().all(|(_, v)| v.is_none())
    }

    /// Blank ids count as absent; over-long ones are refused.
    pub fn normalized(self) -> Result<Scope> {
        let clean = |v: Option<String>, name: &str| -> Result<Option<String>> {
            let v = v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
            if v.as_ref().is_some_and(|s| s.len() > MAX_SCOPE_ID_LEN) {
                return Err(Error::invalid(format!("{name} is longer than {MAX_SCOPE_ID_LEN} bytes")));
            }
            Ok(v)
        };
        Ok(Scope {
            user_id: clean(self.user_id, "user_id")?,
            agent_id: clean(self.agent_id, "agent_id")?,
            app_id: clean(self.app_id, "app_id")?,
            run_id: clean(self.run_id, "run_id")?,
        })
    }

    pub fn require(&self) -> Result<()> {
        if self.is_empty() {
            return Err(Error::invalid("give at least one of user_id, agent_id, app_id or run_id"));
        }
        Ok(())
    }

    /// Only a run: a session's working memory.
    pub fn is_run_only(&self) -> bool {
        self.run_id.is_some() && self.user_id.is_none() && self.agent_id.is_none() && self.app_id.is_none()
    }

    /// The id that owns entities extracted from this scope's memories.
    pub fn owner(&self) -> String {
        self.fields().iter().find_map(|(k, v)| v.map(|v| format!("{k}={v}"))).unwrap_or_default()
    }
}

/// One memory, as the API returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Memory {
    pub id: String,
    /// The remembered text.
    pub memory: String,
    pub tier: Tier,
    pub user_id: Option<String>,
    pub agent_id: Option<String>,
    pub app_id: Option<String>,
    pub run_id: Option<String>,
    /// The caller's metadata.
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub categories: Vec<String>,
    /// Inference never changes or deletes it.
    pub immutable: bool,
    /// When it happened (episodic memories), as given by the caller.
    pub event_time: Option<DateTime<Utc>>,
    /// The day from which it is hidden from search and list (still readable by id).
    #[schema(value_type = Option<String>, format = Date)]
    pub expiration_date: Option<NaiveDate>,
    /// The moment it expires (from `expiration_date`, a TTL, or the end of its run).
    pub expires_at: Option<DateTime<Utc>>,
    /// Where it came from: the message, document or meeting.
    #[schema(value_type = Option<Object>)]
    pub provenance: Option<Value>,
    /// Entity names found in it (linked in the graph store).
    pub entities: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Its position in its run (0 = first turn), for runs; without a run, in its thread.
    pub turn: Option<u64>,
    /// Without a run: the thread of its scope's messages it belongs to, a run Nexus found by
    /// itself (consecutive messages less than `memory.thread_gap_secs` apart in event time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// The turns before it in its run, embedded with it (not shown).
    #[serde(skip)]
    pub context: Option<String>,
}

impl Memory {
    pub fn scope(&self) -> Scope {
        Scope {
            user_id: self.user_id.clone(),
            agent_id: self.agent_id.clone(),
            app_id: self.app_id.clone(),
            run_id: self.run_id.clone(),
        }
    }

    /// Who said it: the message's name, or `speaker` metadata.
    pub fn speaker(&self) -> Option<&str> {
        ["name", "speaker"]
            .iter()
            .find_map(|k| self.metadata.get(*k).and_then(Value::as_str))
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// The memory as a line of its conversation: `speaker: text`, cut to a few hundred bytes.
    pub fn as_turn(&self) -> String {
        let mut text: String = self.memory.chars().take(300).collect();
        if let Some(speaker) = self.speaker() {
            text = format!("{speaker}: {text}");
        }
        text
    }

    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// When it happened, or else when it was stored: what recency is measured from.
    pub fn moment(&self) -> DateTime<Utc> {
        self.event_time.unwrap_or(self.created_at)
    }

    pub fn from_record(r: &Record) -> Memory {
        let m = &r.metadata;
        let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
        let time = |k: &str| m.get(k).and_then(Value::as_str).and_then(parse_date);
        Memory {
            id: r.id.clone(),
            memory: r.body.clone().unwrap_or_default(),
            tier: text("tier").as_deref().and_then(Tier::parse).unwrap_or(Tier::Factual),
            user_id: text("user_id"),
            agent_id: text("agent_id"),
            app_id: text("app_id"),
            run_id: text("run_id"),
            metadata: m.get("metadata").cloned().filter(Value::is_object).unwrap_or_else(|| json!({})),
            categories: r.tags.clone(),
            immutable: m.get("immutable").and_then(Value::as_bool).unwrap_or(false),
            event_time: time("event_time"),
            expiration_date: text("expiration_date").and_then(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok()),
            expires_at: time("expires_at"),
            provenance: m.get("provenance").cloned().filter(|v| !v.is_null()),
            entities: m
                .get("entities")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            turn: m.get("turn").and_then(Value::as_u64),
            thread: text("thread"),
            context: m.get(EMBED_CONTEXT).and_then(Value::as_str).map(str::to_string),
        }
    }

    /// The record metadata that keeps this memory (see the module documentation).
    pub fn record_metadata(&self) -> Value {
        let mut out = Map::new();
        for (key, value) in self.scope().fields() {
            if let Some(v) = value {
                out.insert(key.into(), v.into());
            }
        }
        out.insert("tier".into(), self.tier.as_str().into());
        out.insert("immutable".into(), self.immutable.into());
        if let Some(t) = self.event_time {
            out.insert("event_time".into(), t.to_rfc3339().into());
            // The record's own date: date filters and the text store's date field use it.
            out.insert("date".into(), t.to_rfc3339().into());
        }
        if let Some(d) = self.expiration_date {
            out.insert("expiration_date".into(), d.format("%Y-%m-%d").to_string().into());
        }
        if let Some(t) = self.expires_at {
            out.insert("expires_at".into(), t.to_rfc3339().into());
        }
        if let Some(p) = &self.provenance {
            out.insert("provenance".into(), p.clone());
        }
        if !self.entities.is_empty() {
            out.insert("entities".into(), json!(self.entities));
        }
        if let Some(t) = self.turn {
            out.insert("turn".into(), t.into());
        }
        if let Some(t) = &self.thread {
            out.insert("thread".into(), t.clone().into());
        }
        out.insert(CONTENT_KEY.into(), content_key(&self.memory).into());
        if let Some(c) = self.context.as_deref().filter(|c| !c.is_empty()) {
            out.insert(EMBED_CONTEXT.into(), c.into());
        }
        if let Some(user) = self.metadata.as_object() {
            for (k, v) in user {
                if let Some(text) = facet_value(v) {
                    out.insert(format!("{META_FACET_PREFIX}{k}"), text.into());
                }
            }
        }
        out.insert("metadata".into(), self.metadata.clone());
        Value::Object(out)
    }

    /// A memory of `scope` saying `text`, created now, with nothing else set.
    pub fn new(id: impl Into<String>, text: impl Into<String>, tier: Tier, scope: Scope) -> Memory {
        let now = Utc::now();
        Memory {
            id: id.into(),
            memory: text.into(),
            tier,
            user_id: scope.user_id,
            agent_id: scope.agent_id,
            app_id: scope.app_id,
            run_id: scope.run_id,
            metadata: json!({}),
            categories: Vec::new(),
            immutable: false,
            event_time: None,
            expiration_date: None,
            expires_at: None,
            provenance: None,
            entities: Vec::new(),
            created_at: now,
            updated_at: now,
            turn: None,
            thread: None,
            context: None,
        }
    }

    #[cfg(test)]
    pub fn for_tests(text: &str) -> Memory {
        Memory::new("m1", text, Tier::Factual, Scope::default())
    }
}

/// What happened to a memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Event {
    Add,
    Update,
    Delete,
    /// Nothing changed (a duplicate, or inference decided to keep what was there).
    None,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Add => "ADD",
            Event::Update => "UPDATE",
            Event::Delete => "DELETE",
            Event::None => "NONE",
        }
    }
}

/// One entry of a memory's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub id: String,
    pub memory_id: String,
    pub event: Event,
    pub old_memory: Option<String>,
    pub new_memory: Option<String>,
    /// Who made the change: an API key id, `master`, `open`, or `inference`.
    pub actor: String,
    /// What the change came from: the messages of an add, or the fields of an update.
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
    /// Why, when it is not obvious: e.g. inference fell back to the deterministic extractor.
    pub note: Option<String>,
    pub user_id: Option<String>,
    pub agent_id: Option<String>,
    pub app_id: Option<String>,
    pub run_id: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
}

impl HistoryEntry {
    pub fn from_record(r: &Record) -> HistoryEntry {
        let m = &r.metadata;
        let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
        let event = match text("event").as_deref() {
            Some("ADD") => Event::Add,
            Some("UPDATE") => Event::Update,
            Some("DELETE") => Event::Delete,
            _ => Event::None,
        };
        HistoryEntry {
            id: r.id.clone(),
            memory_id: text("memory_id").unwrap_or_default(),
            event,
            old_memory: text("old_memory"),
            new_memory: text("new_memory"),
            actor: text("actor").unwrap_or_default(),
            input: m.get("input").cloned().filter(|v| !v.is_null()),
            note: text("note"),
            user_id: text("user_id"),
            agent_id: text("agent_id"),
            app_id: text("app_id"),
            run_id: text("run_id"),
            metadata: m.get("metadata").cloned().unwrap_or_else(|| json!({})),
            created_at: r.created_at,
        }
    }

    pub fn record_metadata(&self) -> Value {
        let mut out = Map::new();
        out.insert("memory_id".into(), self.memory_id.clone().into());
        out.insert("event".into(), self.event.as_str().into());
        let scope = [
            ("user_id", &self.user_id),
            ("agent_id", &self.agent_id),
            ("app_id", &self.app_id),
            ("run_id", &self.run_id),
            ("old_memory", &self.old_memory),
            ("new_memory", &self.new_memory),
            ("note", &self.note),
        ];
        for (k, v) in scope {
            if let Some(v) = v {
                out.insert(k.into(), v.clone().into());
            }
        }
        out.insert("actor".into(), self.actor.clone().into());
        if let Some(input) = &self.input {
            out.insert("input".into(), input.clone());
        }
        out.insert("metadata".into(), self.metadata.clone());
        Value::Object(out)
    }
}

/// A relation between two entities, in Mem0's shape: `target` as the platform and the 1.x
/// clients read it, and the same again as `destination`, as the open-source graph memory names it;
/// each end's type (`person`, `organization`, `place`, or `entity` when nothing says), and in
/// search answers the relation's `score` (how well the memories it touches match the query).
#[derive(Clone, Debug, PartialEq, Deserialize, utoipa::ToSchema)]
pub struct Relation {
    pub source: String,
    #[serde(default = "unknown_type")]
    pub source_type: String,
    pub relationship: String,
    pub target: String,
    #[serde(default = "unknown_type")]
    pub target_type: String,
    #[serde(default)]
    pub score: Option<f32>,
}

/// The type of an entity nothing says more about.
pub const UNKNOWN_TYPE: &str = "entity";

fn unknown_type() -> String {
    UNKNOWN_TYPE.to_string()
}

impl Relation {
    /// A relation between entities of unknown type.
    pub fn new(source: impl Into<String>, relationship: impl Into<String>, target: impl Into<String>) -> Relation {
        Relation {
            source: source.into(),
            source_type: unknown_type(),
            relationship: relationship.into(),
            target: target.into(),
            target_type: unknown_type(),
            score: None,
        }
    }

    /// Source, relationship and target, lowercased: what makes two relations the same.
    pub fn key(&self) -> (String, String, String) {
        (self.source.to_lowercase(), self.relationship.to_lowercase(), self.target.to_lowercase())
    }
}

impl Serialize for Relation {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = serializer.serialize_struct("Relation", 7)?;
        out.serialize_field("source", &self.source)?;
        out.serialize_field("source_type", &self.source_type)?;
        out.serialize_field("relationship", &self.relationship)?;
        out.serialize_field("target", &self.target)?;
        out.serialize_field("target_type", &self.target_type)?;
        out.serialize_field("destination", &self.target)?;
        if let Some(score) = self.score {
            out.serialize_field("score", &score)?;
        }
        out.end()
    }
}

/// A message of an add: Mem0's `{role, content, name?}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Message {
    #[serde(default = "user_role")]
    pub role: String,
    /// A string, or a content-parts list / object whose `text` fields are read.
    pub content: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn user_role() -> String {
    "user".into()
}

impl Message {
    pub fn user(text: impl Into<String>) -> Message {
        Message { role: "user".into(), content: Value::String(text.into()), name: None }
    }

    /// The message's text: a string content, or the `text` parts of structured content.
    pub fn text(&self) -> String {
        fn collect(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::String(s) => out.push(s.clone()),
                Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
                Value::Object(map) => {
                    if let Some(t) = map.get("text") {
                        collect(t, out);
                    }
                }
                _ => {}
            }
        }
        let mut parts = Vec::new();
        collect(&self.content, &mut parts);
        parts.join("\n").trim().to_string()
    }
}

/// Words that do not change what a sentence says, for [`content_key`].
const FILLER: &[&str] = &["a", "an", "the", "really", "very", "so", "just", "quite", "too", "also", "oh", "well", "um"];

/// What a text says, as a key: its words, lowercased, without punctuation, filler words and
/// repeats, in sorted order, hashed. Two memories of a scope with the same key are duplicates.
pub fn content_key(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let words: std::collections::BTreeSet<String> = text_fingerprint(text)
        .split(' ')
        .filter(|w| !w.is_empty() && !FILLER.contains(w))
        .map(str::to_string)
        .collect();
    let joined = words.into_iter().collect::<Vec<_>>().join(" ");
    hex::encode(Sha256::digest(joined.as_bytes()))[..24].to_string()
}

/// A normalised form of a text, to recognise exact repeats.
pub fn text_fingerprint(text: &str) -> String {
    let folded: String = text.to_lowercase().chars().map(|c| if c.is_alphanumeric() { c } else { ' ' }).collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}
