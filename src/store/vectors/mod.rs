//! The vector store: approximate nearest-neighbour search over record vectors.
//!
//! Contract:
//! - Points are keyed by record key; [`VectorStore::upsert`] replaces a key's vector, tenant and kind.
//! - Every vector has exactly [`VectorStore::dimensions`] finite components; others are refused.
//! - Similarity is cosine; hits come best first with `score = 1 - cosine distance`.
//! - A search sees only the query's tenant, optionally only some kinds and keys a predicate accepts.
//! - Applied changes are visible to search at once; [`VectorStore::commit`] makes them durable
//!   together with the change-log position they reach, which [`VectorStore::committed_seq`] returns
//!   after a restart. Replaying changes after that position is idempotent.
//! - An embedded store ([`VectorStore::shared`] false) is kept by each node for itself. A shared
//!   one (a cluster backend) is written by one projector across the cluster, under a lease: the
//!   writing node passes the lease's fencing token to [`VectorStore::set_fence`], and a write or
//!   commit by a node whose token is older than the newest one seen is refused with `conflict`.
//! - Writes carry the change-log position of their batch: the highest position among its changes
//!   (a batch holds each key's latest state). A later batch has a higher one, a replayed batch the
//!   same or a lower one; a shared store never lets a write bring back a state older than one it
//!   holds.

pub mod pgvector;
pub mod qdrant;
pub mod usearch;

use std::sync::Arc;

use async_trait::async_trait;

use super::{RecordKey, Seq, StoreStats, TenantId};
use crate::error::{Error, ErrorCode, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct VectorPoint {
    pub key: RecordKey,
    pub tenant: TenantId,
    pub kind: String,
    pub vector: Vec<f32>,
}

/// Extra filter over keys, evaluated inside the index walk.
pub type KeyPredicate = Arc<dyn Fn(RecordKey) -> bool + Send + Sync>;

#[derive(Clone)]
pub struct VectorQuery {
    pub tenant: TenantId,
    pub vector: Vec<f32>,
    pub k: usize,
    pub kinds: Option<Vec<String>>,
    pub predicate: Option<KeyPredicate>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VectorHit {
    pub key: RecordKey,
    pub score: f32,
}

#[async_trait]
pub trait VectorStore: Send + Sync + 'static {
    fn backend(&self) -> &'static str;
    fn dimensions(&self) -> usize;
    /// Whether every node of a cluster uses this one store (one projector writes it, under a
    /// lease) rather than keeping its own.
    fn shared(&self) -> bool {
        false
    }
    /// The fencing token of the lease under which this node writes a shared store; writes carry
    /// it, and once a newer token has written, older ones are refused.
    fn set_fence(&self, _token: u64) {}

    /// Writes points; `seq` is the change-log position of their batch (see the module doc).
    async fn upsert(&self, points: Vec<VectorPoint>, seq: Seq) -> Result<()>;
    async fn delete(&self, keys: Vec<RecordKey>, seq: Seq) -> Result<()>;
    async fn search(&self, query: VectorQuery) -> Result<Vec<VectorHit>>;
    /// Exact nearest neighbours among `keys` (a filter's matches, small enough to score one by
    /// one): the tenant's points with those keys, best first, at most `k`. Unknown keys and
    /// other tenants' points are skipped.
    async fn nearest_among(
        &self,
        tenant: &TenantId,
        keys: Vec<RecordKey>,
        vector: Vec<f32>,
        k: usize,
    ) -> Result<Vec<VectorHit>>;

    /// Makes everything applied so far durable, up to change-log position `seq`.
    async fn commit(&self, seq: Seq) -> Result<()>;
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

    /// Every key held, all tenants (checks).
    async fn keys(&self) -> Result<Vec<RecordKey>>;
    /// Drops everything, including the committed position (rebuilds).
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
    async fn new_generation(&self) -> Result<Option<Arc<dyn VectorStore>>> {
        Ok(None)
    }
    /// Called on a store [`VectorStore::new_generation`] returned: makes it the live generation for
    /// every node at once (reads and writes), then drops the generation it replaces.
    async fn make_live(&self) -> Result<()> {
        Err(crate::error::Error::internal("make_live", "only a store's new generation can be made live"))
    }
}

/// Cosine similarity; 0 when either vector is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na * nb) }
}

/// Refuses a vector of the wrong size or with a NaN or infinite component.
pub fn validate_vector(vector: &[f32], dimensions: usize) -> Result<()> {
    if vector.len() != dimensions {
        return Err(Error::new(
            ErrorCode::InvalidVector,
            format!(
                "vector has {} dimensions, but this store holds {dimensions}; send vectors of that size",
                vector.len()
            ),
        ));
    }
    if let Some(i) = vector.iter().position(|x| !x.is_finite()) {
        return Err(Error::new(ErrorCode::InvalidVector, format!("vector component {i} is not a finite number")));
    }
    if vector.iter().all(|x| *x == 0.0) {
        return Err(Error::new(
            ErrorCode::InvalidVector,
            "vector is all zeros, which has no direction for cosine similarity",
        ));
    }
    Ok(())
}
