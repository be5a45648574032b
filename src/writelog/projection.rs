//! How records project into each derived store. A projection turns change-log entries into that
//! store's writes; the indexer (see `indexer.rs`) drives it, and `check.rs` uses `wants` to know
//! which keys a store should hold.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::store::graph::{GraphEdge, GraphNode, GraphStore, GraphWrite};
use crate::store::records::{Change, GraphItem, Record};
use crate::store::text::{TextDoc, TextStore};
use crate::store::vectors::{VectorPoint, VectorStore};
use crate::store::{RecordKey, Seq, StoreStats};

#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// The derived store's name: `text`, `vectors` or `graph`.
    fn name(&self) -> &'static str;
    fn backend(&self) -> &'static str;
    /// Whether `record` has a presence in this store.
    fn wants(&self, record: &Record) -> bool;
    /// Whether applied changes are invisible until committed (then the indexer commits each batch).
    fn visible_only_after_commit(&self) -> bool;
    /// Whether the store is shared by every node of a cluster (one projector writes it, under a
    /// lease) rather than kept by each node for itself.
    fn shared(&self) -> bool {
        false
    }
    /// The fencing token of the lease under which this node writes a shared store.
    fn set_fence(&self, _token: u64) {}
    /// Whether a rebuild fills a new generation rather than the store in place.
    fn generations(&self) -> bool {
        false
    }
    /// A rebuild's target: a new, empty generation of a shared store, filled while every node
    /// keeps using the live one; `None` when the store is rebuilt in place.
    async fn new_generation(&self) -> Result<Option<Arc<dyn Projection>>> {
        Ok(None)
    }
    /// On a projection [`Projection::new_generation`] returned: makes it the live generation.
    async fn make_live(&self) -> Result<()>;

    /// Applies entries in order: each record's current state is written, or removed when the
    /// record is gone or no longer projects here.
    async fn apply(&self, changes: &[Change]) -> Result<()>;
    async fn commit(&self, seq: Seq) -> Result<()>;
    /// See `TextStore::sync`: makes what is committed durable, for a store whose commits do not.
    async fn sync(&self, _closing: bool) -> Result<()> {
        Ok(())
    }
    async fn committed_seq(&self) -> Result<Seq>;
    /// See `GraphStore::restore_layout`: a shared store whose server lost its data is made
    /// writable again.
    async fn restore_layout(&self) -> Result<()> {
        Ok(())
    }
    /// See `TextStore::snapshot`: the store's durable state copied into `into` for a backup.
    async fn snapshot(&self, into: &std::path::Path) -> Result<Option<Seq>>;
    async fn keys(&self) -> Result<Vec<RecordKey>>;
    async fn clear(&self) -> Result<()>;
    async fn stats(&self) -> Result<StoreStats>;
}

/// The change-log position a batch of changes writes at: its highest.
fn batch_seq(changes: &[Change]) -> Seq {
    changes.iter().map(|c| c.seq).max().unwrap_or_default()
}

/// Splits changes into records to write and keys to remove, keeping only the last state per key.
fn partition(changes: &[Change], wants: impl Fn(&Record) -> bool) -> (Vec<&Record>, Vec<RecordKey>) {
    let mut latest: std::collections::BTreeMap<RecordKey, Option<&Record>> = Default::default();
    for change in changes {
        latest.insert(change.key, change.record.as_ref().filter(|r| wants(r)));
    }
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for (key, record) in latest {
        match record {
            Some(r) => upserts.push(r),
            None => deletes.push(key),
        }
    }
    (upserts, deletes)
}

pub struct TextProjection(pub Arc<dyn TextStore>);

pub fn text_doc(r: &Record) -> TextDoc {
    TextDoc {
        key: r.key,
        tenant: r.tenant.clone(),
        kind: r.kind.clone(),
        title: r.title.clone().unwrap_or_default(),
        body: r.body.clone().unwrap_or_default(),
        tags: r.tags.clone(),
        facets: r.facets(),
        date: r.date().timestamp_micros(),
    }
}

#[async_trait]
impl Projection for TextProjection {
    fn name(&self) -> &'static str {
        "text"
    }
    fn backend(&self) -> &'static str {
        self.0.backend()
    }
    fn shared(&self) -> bool {
        self.0.shared()
    }
    fn set_fence(&self, token: u64) {
        self.0.set_fence(token)
    }
    fn wants(&self, r: &Record) -> bool {
        r.title.as_deref().is_some_and(|t| !t.is_empty()) || r.body.as_deref().is_some_and(|b| !b.is_empty())
    }
    fn visible_only_after_commit(&self) -> bool {
        true
    }
    async fn apply(&self, changes: &[Change]) -> Result<()> {
        let (upserts, deletes) = partition(changes, |r| self.wants(r));
        if !deletes.is_empty() {
            self.0.delete(deletes, batch_seq(changes)).await?;
        }
        if !upserts.is_empty() {
            self.0.upsert(upserts.into_iter().map(text_doc).collect(), batch_seq(changes)).await?;
        }
        Ok(())
    }
    async fn commit(&self, seq: Seq) -> Result<()> {
        self.0.commit(seq).await
    }
    async fn sync(&self, closing: bool) -> Result<()> {
        self.0.sync(closing).await
    }
    async fn committed_seq(&self) -> Result<Seq> {
        self.0.committed_seq().await
    }
    async fn restore_layout(&self) -> Result<()> {
        self.0.restore_layout().await
    }
    async fn snapshot(&self, into: &std::path::Path) -> Result<Option<Seq>> {
        self.0.snapshot(into).await
    }
    async fn keys(&self) -> Result<Vec<RecordKey>> {
        self.0.keys().await
    }
    async fn clear(&self) -> Result<()> {
        self.0.clear().await
    }
    async fn stats(&self) -> Result<StoreStats> {
        self.0.stats().await
    }
    fn generations(&self) -> bool {
        self.0.generations()
    }
    async fn new_generation(&self) -> Result<Option<Arc<dyn Projection>>> {
        Ok(self.0.new_generation().await?.map(|store| Arc::new(Self(store)) as Arc<dyn Projection>))
    }
    async fn make_live(&self) -> Result<()> {
        self.0.make_live().await
    }
}

pub struct VectorProjection(pub Arc<dyn VectorStore>);

#[async_trait]
impl Projection for VectorProjection {
    fn name(&self) -> &'static str {
        "vectors"
    }
    fn backend(&self) -> &'static str {
        self.0.backend()
    }
    fn wants(&self, r: &Record) -> bool {
        r.vector.as_ref().is_some_and(|v| v.len() == self.0.dimensions())
    }
    fn visible_only_after_commit(&self) -> bool {
        false
    }
    fn shared(&self) -> bool {
        self.0.shared()
    }
    fn set_fence(&self, token: u64) {
        self.0.set_fence(token)
    }
    async fn apply(&self, changes: &[Change]) -> Result<()> {
        let (upserts, deletes) = partition(changes, |r| self.wants(r));
        if !deletes.is_empty() {
            self.0.delete(deletes, batch_seq(changes)).await?;
        }
        if !upserts.is_empty() {
            let points = upserts
                .into_iter()
                .map(|r| VectorPoint {
                    key: r.key,
                    tenant: r.tenant.clone(),
                    kind: r.kind.clone(),
                    vector: r.vector.clone().unwrap_or_default(),
                })
                .collect();
            self.0.upsert(points, batch_seq(changes)).await?;
        }
        Ok(())
    }
    async fn commit(&self, seq: Seq) -> Result<()> {
        self.0.commit(seq).await
    }
    async fn committed_seq(&self) -> Result<Seq> {
        self.0.committed_seq().await
    }
    async fn restore_layout(&self) -> Result<()> {
        self.0.restore_layout().await
    }
    async fn snapshot(&self, into: &std::path::Path) -> Result<Option<Seq>> {
        self.0.snapshot(into).await
    }
    async fn keys(&self) -> Result<Vec<RecordKey>> {
        self.0.keys().await
    }
    async fn clear(&self) -> Result<()> {
        self.0.clear().await
    }
    async fn stats(&self) -> Result<StoreStats> {
        self.0.stats().await
    }
    fn generations(&self) -> bool {
        self.0.generations()
    }
    async fn new_generation(&self) -> Result<Option<Arc<dyn Projection>>> {
        Ok(self.0.new_generation().await?.map(|store| Arc::new(Self(store)) as Arc<dyn Projection>))
    }
    async fn make_live(&self) -> Result<()> {
        self.0.make_live().await
    }
}

pub struct GraphProjection(pub Arc<dyn GraphStore>);

fn graph_write(r: &Record) -> Option<GraphWrite> {
    let updated_at = r.updated_at.timestamp_micros();
    match r.graph.as_ref()? {
        GraphItem::Node { label, name } => Some(GraphWrite::Node(GraphNode {
            key: r.key,
            tenant: r.tenant.clone(),
            id: r.id.clone(),
            label: label.clone(),
            name: name.clone(),
            properties: r.metadata.clone(),
            updated_at,
        })),
        GraphItem::Edge { label, source, target } => Some(GraphWrite::Edge(GraphEdge {
            key: r.key,
            tenant: r.tenant.clone(),
            id: r.id.clone(),
            label: label.clone(),
            source: source.clone(),
            target: target.clone(),
            properties: r.metadata.clone(),
            updated_at,
        })),
    }
}

#[async_trait]
impl Projection for GraphProjection {
    fn name(&self) -> &'static str {
        "graph"
    }
    fn backend(&self) -> &'static str {
        self.0.backend()
    }
    fn shared(&self) -> bool {
        self.0.shared()
    }
    fn set_fence(&self, token: u64) {
        self.0.set_fence(token)
    }
    fn wants(&self, r: &Record) -> bool {
        r.graph.is_some()
    }
    fn visible_only_after_commit(&self) -> bool {
        false
    }
    async fn apply(&self, changes: &[Change]) -> Result<()> {
        let (upserts, deletes) = partition(changes, |r| self.wants(r));
        let mut writes: Vec<GraphWrite> = deletes.into_iter().map(GraphWrite::Delete).collect();
        writes.extend(upserts.into_iter().filter_map(graph_write));
        if writes.is_empty() {
            return Ok(());
        }
        self.0.apply(writes, batch_seq(changes)).await
    }
    async fn commit(&self, seq: Seq) -> Result<()> {
        self.0.commit(seq).await
    }
    async fn committed_seq(&self) -> Result<Seq> {
        self.0.committed_seq().await
    }
    async fn restore_layout(&self) -> Result<()> {
        self.0.restore_layout().await
    }
    async fn snapshot(&self, into: &std::path::Path) -> Result<Option<Seq>> {
        self.0.snapshot(into).await
    }
    async fn keys(&self) -> Result<Vec<RecordKey>> {
        self.0.keys().await
    }
    async fn clear(&self) -> Result<()> {
        self.0.clear().await
    }
    async fn stats(&self) -> Result<StoreStats> {
        self.0.stats().await
    }
    fn generations(&self) -> bool {
        self.0.generations()
    }
    async fn new_generation(&self) -> Result<Option<Arc<dyn Projection>>> {
        Ok(self.0.new_generation().await?.map(|store| Arc::new(Self(store)) as Arc<dyn Projection>))
    }
    async fn make_live(&self) -> Result<()> {
        self.0.make_live().await
    }
}
