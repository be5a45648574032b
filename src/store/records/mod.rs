//! The record store: the system of record.
//!
//! Contract:
//! - A [`RecordStore::write`] applies a batch of upserts and deletes for one tenant and appends one
//!   change-log entry per record, all in one transaction: either every write and its entry is
//!   durable when it returns, or none is.
//! - Change-log sequence numbers strictly increase and are never reused; so are record keys.
//! - An upsert of an existing `(tenant, id)` keeps its key and `created_at` and bumps `version`.
//! - Deleting an absent id is not an error and logs nothing.
//! - [`RecordStore::changes_since`] returns entries in sequence order together with the record's
//!   current state (`None` once deleted), so replaying any suffix of the log converges.
//! - Vectors are kept here as the source of truth; [`RecordStore::nearest_exact`] searches them
//!   exactly, for small or heavily filtered sets.
//! - Tenant-scoped methods never return another tenant's records.
//! - Several processes may share a store whose [`RecordStore::shared`] is true (Postgres). Then
//!   a change-log entry becomes readable only once no entry before it can still appear, so a
//!   reader that resumes after the last position it saw never skips a write; sequence numbers
//!   of concurrent transactions are in commit order, not in the order they were taken.
//! - A lease ([`RecordStore::acquire_lease`]) is held by one owner at a time until it expires;
//!   its fencing token grows every time it changes hands and stays the same while renewed.

pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{RecordKey, Seq, StoreStats, TenantId};
use crate::error::Result;

/// What a record contributes to the graph store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum GraphItem {
    /// An entity: `label` is its type (person, project...), `name` how it is called.
    Node { label: String, name: String },
    /// A relation from record id `source` to record id `target`.
    Edge { label: String, source: String, target: String },
}

/// A stored record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Record {
    pub key: RecordKey,
    #[schema(value_type = String)]
    pub tenant: TenantId,
    pub id: String,
    pub kind: String,
    pub title: Option<String>,
    pub body: Option<String>,
    pub tags: Vec<String>,
    pub metadata: serde_json::Value,
    pub vector: Option<Vec<f32>>,
    pub graph: Option<GraphItem>,
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The vector is computed by Nexus from the text (and recomputed when the embedder changes).
    pub embed: bool,
}

impl Record {
    /// The text a computed vector is made from.
    pub fn embedding_text(&self) -> String {
        embedding_text(self.title.as_deref(), self.body.as_deref(), &self.metadata)
    }

    /// Exact-match filter terms: `key=value` for every top-level scalar metadata field.
    pub fn facets(&self) -> Vec<String> {
        let Some(map) = self.metadata.as_object() else { return Vec::new() };
        map.iter().filter_map(|(k, v)| facet_value(v).map(|v| facet(k, &v))).collect()
    }

    /// The item's own date: metadata `date` (RFC 3339 or YYYY-MM-DD) when present, else creation.
    pub fn date(&self) -> DateTime<Utc> {
        self.metadata.get("date").and_then(|d| d.as_str()).and_then(parse_date).unwrap_or(self.created_at)
    }
}

/// Longest value (in characters) the `record_facets` index holds; longer ones are filtered by
/// reading the records. The SQLite view in `0006_record_facets.sql` uses the same bound.
pub const FACET_MAX_CHARS: usize = 64;
/// Between a field and its value in a `record_facets` term. A field or value holding it could
/// make two terms equal: such filters never answer from the index alone.
pub const FACET_SEPARATOR: char = '\u{1f}';

fn short_enough(text: &str) -> bool {
    text.chars().count() <= FACET_MAX_CHARS
}

/// The `record_facets` term of a kind, a tag and a metadata equality.
pub fn kind_term(kind: &str) -> String {
    format!("k{kind}")
}

pub fn tag_term(tag: &str) -> String {
    format!("t{tag}")
}

pub fn metadata_term(field: &str, value: &str) -> String {
    format!("m{field}{FACET_SEPARATOR}{value}")
}

/// Every `record_facets` term of a record: its kind, each tag and each top-level scalar metadata
/// value no longer than [`FACET_MAX_CHARS`] (booleans as true/false, numbers as their text).
pub fn index_terms(kind: &str, tags: &[String], metadata: &serde_json::Value) -> Vec<String> {
    let mut terms = vec![kind_term(kind)];
    terms.extend(tags.iter().filter(|t| short_enough(t)).map(|t| tag_term(t)));
    if let Some(map) = metadata.as_object() {
        for (field, value) in map {
            if let Some(value) = facet_value(value).filter(|v| short_enough(v)) {
                terms.push(metadata_term(field, &value));
            }
        }
    }
    terms.sort();
    terms.dedup();
    terms
}

/// How a filter's metadata key names its field: quotes are dropped.
pub(crate) fn field_name(key: &str) -> String {
    key.replace('"', "")
}

/// A filter's `record_facets` terms (tags and metadata equalities whose value the index holds),
/// and whether they alone decide the filter's tags and metadata.
pub(crate) struct FacetTerms {
    pub terms: Vec<String>,
    pub complete: bool,
}

impl FacetTerms {
    pub fn of(filter: &RecordFilter) -> FacetTerms {
        let mut out = FacetTerms { terms: Vec::new(), complete: true };
        for tag in &filter.tags {
            if short_enough(tag) {
                out.terms.push(tag_term(tag));
            } else {
                out.complete = false;
            }
        }
        for (key, value) in &filter.metadata {
            let field = field_name(key);
            if short_enough(value) {
                out.terms.push(metadata_term(&field, value));
            }
            if !short_enough(value) || field.contains(FACET_SEPARATOR) || value.contains(FACET_SEPARATOR) {
                out.complete = false;
            }
        }
        out
    }
}

pub fn facet(key: &str, value: &str) -> String {
    format!("{key}={value}")
}

/// The text form of a scalar metadata value, as facets and filters compare it.
pub fn facet_value(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// RFC 3339 timestamps, or plain dates (taken as midnight UTC).
pub fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    let day = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc())
}

/// Metadata text embedded with a record but neither keyword-indexed nor shown: what surrounds it
/// (for a conversation turn, the turns before it).
pub const EMBED_CONTEXT: &str = "embed_context";

/// Title, body and any [`EMBED_CONTEXT`], as one text to embed.
pub fn embedding_text(title: Option<&str>, body: Option<&str>, metadata: &serde_json::Value) -> String {
    let context = metadata.get(EMBED_CONTEXT).and_then(|c| c.as_str());
    [title, body, context]
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// A record as written; the store assigns key, version and times.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewRecord {
    pub id: String,
    pub kind: String,
    pub title: Option<String>,
    pub body: Option<String>,
    pub tags: Vec<String>,
    pub metadata: serde_json::Value,
    pub vector: Option<Vec<f32>>,
    pub graph: Option<GraphItem>,
    /// Ask the write path to compute `vector` from the title and body.
    pub embed: bool,
}

#[derive(Clone, Debug, PartialEq)]
// Upserts are the common case; boxing each one would cost more than the smaller deletes save.
#[allow(clippy::large_enum_variant)]
pub enum Write {
    Upsert(NewRecord),
    Delete { id: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChangeOp {
    Upsert,
    Delete,
}

/// What one write did.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Written {
    pub id: String,
    pub key: RecordKey,
    pub op: ChangeOp,
    pub version: u64,
    pub seq: Seq,
}

/// The outcome of a batch: `seq` is the last change-log entry it appended (or the head if none).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WriteReceipt {
    pub seq: Seq,
    pub written: Vec<Written>,
}

/// A change-log entry with the record's state now.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub seq: Seq,
    pub tenant: TenantId,
    pub key: RecordKey,
    pub id: String,
    pub op: ChangeOp,
    pub record: Option<Record>,
}

#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    pub kind: Option<String>,
    /// Return records with a key greater than this (keyset pagination).
    pub after_key: Option<RecordKey>,
    pub limit: usize,
}

/// Which of a tenant's records a query considers. Empty parts do not restrict.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordFilter {
    pub kinds: Vec<String>,
    /// The record carries every one of these tags.
    pub tags: Vec<String>,
    /// Top-level metadata fields equal to these values (compared as [`facet_value`] text).
    pub metadata: Vec<(String, String)>,
    /// Bounds on [`Record::date`], inclusive.
    pub date_from: Option<DateTime<Utc>>,
    pub date_to: Option<DateTime<Utc>>,
    /// Only records with a greater key (keyset pagination).
    pub after_key: Option<RecordKey>,
}

impl RecordFilter {
    pub fn kinds(kinds: &[&str]) -> RecordFilter {
        RecordFilter { kinds: kinds.iter().map(|k| k.to_string()).collect(), ..Default::default() }
    }

    /// Whether it restricts more than kinds do (then vector search needs a key predicate).
    pub fn is_selective(&self) -> bool {
        !self.tags.is_empty() || !self.metadata.is_empty() || self.date_from.is_some() || self.date_to.is_some()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ExactHit {
    pub key: RecordKey,
    pub id: String,
    /// Cosine distance (0 = same direction).
    pub distance: f32,
}

/// Held while a [`RecordStore::exclusive`] section runs; dropping it ends the section.
pub type ExclusiveGuard = Box<dyn Send + Sync>;

#[async_trait]
pub trait RecordStore: Send + Sync + 'static {
    fn backend(&self) -> &'static str;

    /// Applies `writes` for `tenant` atomically, each with a change-log entry.
    async fn write(&self, tenant: &TenantId, writes: Vec<Write>) -> Result<WriteReceipt>;

    async fn get(&self, tenant: &TenantId, id: &str) -> Result<Option<Record>>;

    async fn get_by_keys(&self, tenant: &TenantId, keys: &[RecordKey]) -> Result<Vec<Record>>;

    /// The records of `ids` that exist, in the order asked for (one read, where the backend can).
    async fn get_many(&self, tenant: &TenantId, ids: &[String]) -> Result<Vec<Record>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.get(tenant, id).await?);
        }
        Ok(out)
    }

    async fn list(&self, tenant: &TenantId, filter: &ListFilter) -> Result<Vec<Record>>;

    async fn count(&self, tenant: &TenantId) -> Result<u64>;

    /// Exact nearest neighbours by cosine distance among the tenant's records that match
    /// `filter` and have a vector.
    async fn nearest_exact(
        &self,
        tenant: &TenantId,
        filter: &RecordFilter,
        vector: &[f32],
        k: usize,
    ) -> Result<Vec<ExactHit>>;

    /// Keys of the tenant's records that match `filter`, in key order, at most `limit`.
    async fn keys_matching(&self, tenant: &TenantId, filter: &RecordFilter, limit: usize) -> Result<Vec<RecordKey>>;

    /// How many matching records have each value of the top-level metadata field `field`.
    async fn count_by(&self, tenant: &TenantId, filter: &RecordFilter, field: &str) -> Result<Vec<(String, u64)>>;

    // --- system scope: the write path and operations only ---

    /// Up to `limit` change-log entries after `after`, in order.
    async fn changes_since(&self, after: Seq, limit: usize) -> Result<Vec<Change>>;

    /// The last sequence number in the change log (0 when empty).
    async fn head_seq(&self) -> Result<Seq>;

    /// Writes a consistent copy of the record database (records, change log, auth, jobs) to the
    /// new file `to` while writes go on, and returns the change-log position it holds. A backend
    /// that is a server keeps its own backups: it refuses.
    async fn backup_into(&self, _to: &std::path::Path) -> Result<Seq> {
        Err(crate::error::Error::invalid(format!(
            "`nexus backup` copies the embedded record store; {} has backups of its own \
             (use `nexus dump` for a portable copy of the data)",
            self.backend()
        )))
    }

    /// Records of every tenant with a key greater than `after_key`, in key order (rebuilds, checks).
    async fn scan(&self, after_key: RecordKey, limit: usize) -> Result<Vec<Record>>;

    /// Replaces vectors in place, without a new version or change-log entry: re-embedding, run
    /// while no indexer serves the vector store, which is rebuilt afterwards.
    async fn set_vectors(&self, updates: Vec<(RecordKey, Option<Vec<f32>>)>) -> Result<()>;

    /// Drops change-log entries up to and including `upto` (all derived stores have them durably).
    async fn prune_changes(&self, upto: Seq) -> Result<u64>;

    /// Whether other processes may write to this store too (a cluster's nodes).
    fn shared(&self) -> bool {
        false
    }

    /// Takes the lease `name` for `owner` for `ttl`, or renews it when `owner` holds it. Returns
    /// its fencing token, or `None` while another owner holds it.
    async fn acquire_lease(&self, name: &str, owner: &str, ttl: std::time::Duration) -> Result<Option<u64>>;

    /// Gives the lease up now, when `owner` holds it.
    async fn release_lease(&self, name: &str, owner: &str) -> Result<()>;

    /// Who holds the lease `name` now, if anyone.
    async fn lease_holder(&self, name: &str) -> Result<Option<String>>;

    /// Holds a mutex named `name` across every process sharing the store until the guard drops
    /// (a cluster's nodes); `None` for a store only this process writes, which needs none.
    async fn exclusive(&self, _name: &str) -> Result<Option<ExclusiveGuard>> {
        Ok(None)
    }

    /// Ticks when another process may have committed changes (for a shared store); `None` when
    /// this process is the only writer. Notifications can be lost: readers poll as well.
    fn change_events(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    async fn stats(&self) -> Result<StoreStats>;

    /// Copies records from another record store as they are (a migration): key, version, times
    /// and vector kept. A record under the same key is replaced; one holding the same
    /// `(tenant, id)` under another key is removed first (the source re-created that id). Each
    /// copied or removed record logs a change, so the derived stores follow. Returns the last
    /// change's position (the head when `records` is empty). Keys handed out later are above
    /// every imported one.
    async fn import(&self, records: Vec<Record>) -> Result<Seq>;

    /// Removes records by key (a migration replaying the source's deletes), logging each one
    /// that was there.
    async fn import_removals(&self, keys: Vec<RecordKey>) -> Result<Seq>;

    /// The state a migration into this store saved last (none before one starts).
    async fn migration_state(&self) -> Result<Option<serde_json::Value>>;

    async fn save_migration_state(&self, state: &serde_json::Value) -> Result<()>;
}
