//! The text store: full-text search with BM25.
//!
//! Contract:
//! - Documents are keyed by record key; [`TextStore::upsert`] replaces a key's document.
//! - English text is stemmed, so "running" finds "runs"; a title match weighs `title_weight`
//!   times a body match (by default more).
//! - A search sees only the query's tenant, optionally only some kinds, documents carrying all
//!   the given tags and facets, and documents dated within a range; hits come best first with a
//!   snippet whose highlights are byte ranges into the snippet text.
//! - Facets are exact-match terms a domain derives from its records (`collection=notes`).
//! - The query language: words (any may match, more matches rank higher), "quoted phrases",
//!   `+required` and `-excluded` terms. Malformed syntax is searched as plain words, never an error.
//! - Changes are visible to search after [`TextStore::commit`], together with the change-log
//!   position returned by [`TextStore::committed_seq`]. They are durable once committed, or for
//!   a store whose commits do not wait on the disk, after [`TextStore::sync`]; such a store
//!   recovers on its own from a stop without one (it checks itself and is rebuilt if damaged).
//! - Writes carry the change-log position of their batch: the highest position among its changes
//!   (a batch holds each key's latest state). A later batch has a higher one, a replayed batch the
//!   same or a lower one; a shared store never lets a write bring back a state older than one it
//!   holds.

pub mod elasticsearch;
pub mod tantivy;
mod unsynced;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use super::{RecordKey, Seq, StoreStats, TenantId};
use crate::error::Result;

#[derive(Clone, Debug, PartialEq)]
pub struct TextDoc {
    pub key: RecordKey,
    pub tenant: TenantId,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub tags: Vec<String>,
    /// Exact-match filter terms, e.g. `collection=notes`.
    pub facets: Vec<String>,
    /// The item's date (microseconds since the epoch), for range filters.
    pub date: i64,
}

#[derive(Clone, Debug)]
pub struct TextQuery {
    pub tenant: TenantId,
    pub query: String,
    pub limit: usize,
    pub offset: usize,
    pub kinds: Option<Vec<String>>,
    pub tags: Vec<String>,
    pub facets: Vec<String>,
    /// Inclusive bounds on `date`, microseconds since the epoch.
    pub date_from: Option<i64>,
    pub date_to: Option<i64>,
    /// How much a title match counts against a body match.
    pub title_weight: f32,
    /// Whether hits carry a highlighted snippet (reading each hit's stored text to make it).
    pub snippets: bool,
}

/// A title match counts twice a body match unless a query says otherwise.
pub const DEFAULT_TITLE_WEIGHT: f32 = 2.0;

impl TextQuery {
    pub fn new(tenant: TenantId, query: impl Into<String>, limit: usize) -> TextQuery {
        TextQuery {
            tenant,
            query: query.into(),
            limit,
            offset: 0,
            kinds: None,
            tags: Vec::new(),
            facets: Vec::new(),
            date_from: None,
            date_to: None,
            title_weight: DEFAULT_TITLE_WEIGHT,
            snippets: true,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Snippet {
    pub text: String,
    /// Byte ranges `[start, end)` of matched terms within `text`.
    pub highlights: Vec<(usize, usize)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TextHit {
    pub key: RecordKey,
    pub score: f32,
    pub snippet: Snippet,
}

#[async_trait]
pub trait TextStore: Send + Sync + 'static {
    fn backend(&self) -> &'static str;
    /// Whether every node of a cluster uses this one store (one projector writes it, under a
    /// lease) rather than keeping its own.
    fn shared(&self) -> bool {
        false
    }
    /// The fencing token of the lease under which this node writes a shared store.
    fn set_fence(&self, _token: u64) {}

    /// Writes documents; `seq` is the change-log position of their batch (see the module doc).
    async fn upsert(&self, docs: Vec<TextDoc>, seq: Seq) -> Result<()>;
    async fn delete(&self, keys: Vec<RecordKey>, seq: Seq) -> Result<()>;
    async fn search(&self, query: TextQuery) -> Result<Vec<TextHit>>;
    /// Snippets of the given documents for `query` (documents without a match get their start).
    async fn snippets(&self, tenant: &TenantId, query: &str, keys: Vec<RecordKey>)
    -> Result<Vec<(RecordKey, Snippet)>>;

    /// Makes applied changes visible, up to change-log position `seq`.
    async fn commit(&self, seq: Seq) -> Result<()>;
    /// Makes what is committed durable; `closing`: the last call before the store closes.
    async fn sync(&self, _closing: bool) -> Result<()> {
        Ok(())
    }
    async fn committed_seq(&self) -> Result<Seq>;
    /// See `GraphStore::restore_layout`: puts back what writes need and the server no longer
    /// holds (for a shared store whose server lost its data), keeping the data there.
    async fn restore_layout(&self) -> Result<()> {
        Ok(())
    }
    /// Copies the store's durable state (as of its last commit) into the empty directory `into`,
    /// for a backup, and returns the change-log position that state holds. `None`: the backend
    /// is a service that keeps its own data (it has its own backups). The caller makes sure
    /// nothing writes the store meanwhile ([`crate::writelog::indexer::Indexer::hold`]).
    async fn snapshot(&self, _into: &std::path::Path) -> Result<Option<Seq>> {
        Ok(None)
    }

    async fn keys(&self) -> Result<Vec<RecordKey>>;
    async fn clear(&self) -> Result<()>;
    async fn stats(&self) -> Result<StoreStats>;

    /// Whether a rebuild fills a new generation ([`Self::new_generation`]) rather than the
    /// store in place.
    fn generations(&self) -> bool {
        false
    }
    /// A rebuild's target: a new, empty generation of the store, filled while every node keeps
    /// reading (and the projector keeps writing) the live one; `None` when the store is rebuilt
    /// in place instead (the embedded stores).
    async fn new_generation(&self) -> Result<Option<Arc<dyn TextStore>>> {
        Ok(None)
    }
    /// Called on a store [`TextStore::new_generation`] returned: makes it the live generation for
    /// every node at once (reads and writes), then drops the generation it replaces.
    async fn make_live(&self) -> Result<()> {
        Err(crate::error::Error::internal("make_live", "only a store's new generation can be made live"))
    }
}
