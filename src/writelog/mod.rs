//! The one write path.
//!
//! A write lands in the record store together with its change-log entry, in one transaction
//! (see `RecordStore::write`); once that returns, the write is acknowledged and survives any
//! crash. Indexers (one per derived store: text, vectors, graph) then bring their store up to date
//! from the change log and remember, durably and atomically with their data, the last entry they
//! applied; on start they replay whatever they missed. `check` compares the record with every
//! derived store; `reindex` rebuilds a derived store from the record.

pub mod check;
pub mod indexer;
pub mod projection;
pub mod reembed;
pub mod reindex;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::config::{ClusterConfig, IndexerConfig};
use crate::embed::EmbedService;
use crate::error::{Error, Result};
use crate::store::records::{GraphItem, NewRecord, RecordStore, Write, WriteReceipt, embedding_text};
use crate::store::vectors::validate_vector;
use crate::store::{Stores, TenantId};
use indexer::{Indexer, IndexerSettings};
use projection::{GraphProjection, Projection, TextProjection, VectorProjection};

pub const MAX_ID_LEN: usize = 256;
pub const MAX_KIND_LEN: usize = 64;
pub const MAX_TAGS: usize = 100;

/// The outcome of a write: the record store's receipt and, when the caller asked to wait,
/// whether every derived store shows it yet.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct WriteOutcome {
    #[serde(flatten)]
    pub receipt: WriteReceipt,
    /// `true`: visible in every derived store; `false`: the wait timed out; absent: not asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indexed: Option<bool>,
}

pub struct WriteLog {
    records: Arc<dyn RecordStore>,
    embed: Arc<EmbedService>,
    vector_dimensions: usize,
    indexers: Vec<Arc<Indexer>>,
    tasks: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    shutdown: watch::Sender<bool>,
    wait_timeout: Duration,
    /// Why writes are refused, while they are (the data moved to a cluster).
    read_only: tokio::sync::RwLock<Option<String>>,
    /// The last change-log position this process wrote (followers of the log wake on it).
    written: watch::Sender<crate::store::Seq>,
}

/// The derived stores' projections, in a fixed order.
pub fn projections(stores: &Stores) -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(TextProjection(stores.text.clone())),
        Arc::new(VectorProjection(stores.vectors.clone())),
        Arc::new(GraphProjection(stores.graph.clone())),
    ]
}

impl WriteLog {
    /// Starts one indexer per derived store; with a record store other nodes write too, also a
    /// task that wakes them when those nodes commit.
    pub async fn start(
        stores: &Stores,
        config: &IndexerConfig,
        cluster: &ClusterConfig,
        embed: Arc<EmbedService>,
    ) -> Result<WriteLog> {
        let (shutdown, _) = watch::channel(false);
        let mut indexers = Vec::new();
        let mut tasks = Vec::new();
        for projection in projections(stores) {
            let settings = IndexerSettings {
                batch_size: config.batch_size,
                persist_interval: Duration::from_millis(config.persist_interval_ms),
                poll_interval: Duration::from_millis(cluster.poll_interval_ms),
                node_id: cluster.node_name(),
                lease: Duration::from_millis(cluster.lease_ms),
            };
            let (indexer, task) =
                Indexer::start(projection, stores.records.clone(), settings, shutdown.subscribe()).await?;
            indexers.push(indexer);
            tasks.push(task);
        }
        if let Some(mut events) = stores.records.change_events() {
            let (indexers, mut stop) = (indexers.clone(), shutdown.subscribe());
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        changed = events.changed() => if changed.is_err() { break },
                        _ = stop.changed() => break,
                    }
                    for indexer in &indexers {
                        indexer.wake();
                    }
                }
            }));
        }
        Ok(WriteLog {
            records: stores.records.clone(),
            embed,
            vector_dimensions: stores.vectors.dimensions(),
            indexers,
            tasks: parking_lot::Mutex::new(tasks),
            shutdown,
            wait_timeout: Duration::from_millis(config.wait_timeout_ms),
            read_only: tokio::sync::RwLock::new(None),
            written: watch::channel(0).0,
        })
    }

    /// Changes to the last change-log position this process wrote: what followers of the log
    /// (the event hub) wake on. Other nodes' writes are seen by polling the log.
    pub fn written(&self) -> watch::Receiver<crate::store::Seq> {
        self.written.subscribe()
    }

    pub fn indexers(&self) -> &[Arc<Indexer>] {
        &self.indexers
    }

    /// Every indexer has replayed what was logged before it started.
    pub fn caught_up(&self) -> bool {
        self.indexers.iter().all(|i| i.caught_up())
    }

    /// Validates and applies `writes` atomically; with `wait`, also waits until every derived
    /// store shows them (read-your-writes).
    pub async fn write(&self, tenant: &TenantId, writes: Vec<Write>, wait: bool) -> Result<WriteOutcome> {
        // Held across the write: once `set_read_only` returns, no write is still on its way in.
        let read_only = self.read_only.read().await;
        if let Some(reason) = read_only.as_ref() {
            return Err(Error::new(crate::error::ErrorCode::ReadOnly, reason.clone()));
        }
        if writes.is_empty() {
            return Err(Error::invalid("a write batch needs at least one write"));
        }
        for write in &writes {
            self.validate(write)?;
        }
        let writes = self.compute_vectors(writes).await?;
        let receipt = self.records.write(tenant, writes).await?;
        drop(read_only);
        metrics::counter!("nexus_writes_total").increment(receipt.written.len() as u64);
        for indexer in &self.indexers {
            indexer.wake();
        }
        self.written.send_if_modified(|last| {
            let newer = receipt.seq > *last;
            if newer {
                *last = receipt.seq;
            }
            newer
        });
        let indexed = if wait { Some(self.wait_indexed(receipt.seq).await) } else { None };
        Ok(WriteOutcome { receipt, indexed })
    }

    /// Refuses every later write with `read_only` and `reason` (`None`: takes writes again).
    /// Returns once the writes already under way have finished.
    pub async fn set_read_only(&self, reason: Option<String>) {
        *self.read_only.write().await = reason;
    }

    pub async fn read_only(&self) -> Option<String> {
        self.read_only.read().await.clone()
    }

    /// Waits until every derived store is visible up to `seq`; returns whether that happened in time.
    pub async fn wait_indexed(&self, seq: u64) -> bool {
        for indexer in &self.indexers {
            if !indexer.wait_visible(seq, self.wait_timeout).await {
                return false;
            }
        }
        true
    }

    /// Embeds the text of every upsert that asks for it, in one call so they share batches.
    async fn compute_vectors(&self, mut writes: Vec<Write>) -> Result<Vec<Write>> {
        let mut wanted: Vec<(usize, String)> = Vec::new();
        for (i, write) in writes.iter().enumerate() {
            if let Write::Upsert(r) = write
                && r.embed
            {
                let text = embedding_text(r.title.as_deref(), r.body.as_deref(), &r.metadata);
                if !text.trim().is_empty() {
                    wanted.push((i, text));
                }
            }
        }
        if wanted.is_empty() {
            return Ok(writes);
        }
        let texts: Vec<String> = wanted.iter().map(|(_, t)| t.clone()).collect();
        let vectors = self.embed.embed(&texts).await?;
        for ((i, _), vector) in wanted.into_iter().zip(vectors) {
            if let Write::Upsert(r) = &mut writes[i] {
                r.vector = Some(vector);
            }
        }
        Ok(writes)
    }

    fn validate(&self, write: &Write) -> Result<()> {
        match write {
            Write::Delete { id } => validate_id(id),
            Write::Upsert(record) => self.validate_record(record),
        }
    }

    fn validate_record(&self, r: &NewRecord) -> Result<()> {
        validate_id(&r.id)?;
        let kind_ok = !r.kind.is_empty()
            && r.kind.len() <= MAX_KIND_LEN
            && r.kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !kind_ok {
            return Err(Error::invalid(format!(
                "kind {:?} is invalid: use 1-{MAX_KIND_LEN} lowercase letters, digits, '_' or '-'",
                r.kind
            )));
        }
        if r.tags.len() > MAX_TAGS || r.tags.iter().any(|t| t.is_empty() || t.len() > 256) {
            return Err(Error::invalid(format!("tags: at most {MAX_TAGS}, each 1-256 bytes")));
        }
        if !r.metadata.is_object() {
            return Err(Error::invalid("metadata must be a JSON object"));
        }
        if let Some(vector) = &r.vector {
            if r.embed {
                return Err(Error::invalid("give a vector or ask for one to be computed (embed), not both"));
            }
            validate_vector(vector, self.vector_dimensions)?;
        }
        match &r.graph {
            Some(GraphItem::Node { label, name }) if label.is_empty() || name.is_empty() => {
                Err(Error::invalid("a graph node needs a non-empty label and name"))
            }
            Some(GraphItem::Edge { label, source, target })
                if label.is_empty() || source.is_empty() || target.is_empty() =>
            {
                Err(Error::invalid("a graph edge needs a non-empty label, source and target"))
            }
            _ => Ok(()),
        }
    }

    /// Stops the indexers after they persist what they applied.
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        let tasks: Vec<_> = self.tasks.lock().drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}

fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(|c| c.is_control()) {
        return Err(Error::invalid(format!(
            "id {id:?} is invalid: use 1-{MAX_ID_LEN} bytes without control characters"
        )));
    }
    Ok(())
}
