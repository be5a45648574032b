//! An indexer brings one derived store up to date from the change log.
//!
//! It starts from the position the store last made durable, applies entries in batches, and
//! publishes how far its store is *visible* (what searches see). Stores that need a commit to be
//! visible are committed every batch; the others are persisted every `persist_interval_ms` and
//! at shutdown — less often when persisting is slow (a large index is saved whole), so that it
//! takes at most about a tenth of the indexer's time; a crash replays the rest from the log.
//! A failed batch is retried with backoff: nothing is skipped. While a backend is unreachable the
//! retries stay at most a second apart, so indexing resumes soon after it is back.
//!
//! A store shared by a cluster's nodes (a cluster backend) has one projector across the cluster:
//! the node holding the store's lease applies and commits each batch with the lease's fencing
//! token (a node that lost the lease can no longer write); the others follow, publishing the
//! position the store has committed as what is visible. Every node polls the change log as well
//! as being woken, since another node's writes reach it only by notification or by polling.
//! While a rebuild of a shared store runs (it holds the store's rebuild lease), the projector
//! steps aside and hands the rebuild its lease; reads keep using the live generation meanwhile.
//! The lease is renewed between batches, so a shared store's batches must fit well inside it: a
//! batch that fails or takes more than a third of the lease halves the next one, and fast ones
//! double it back up to `batch_size`. A slow backend then gets smaller batches instead of two
//! nodes taking the lease from each other in turn without either finishing one.
//! The projector also compares the position a shared store holds with what it committed to it,
//! each time it renews its lease and after a failed batch. A server that lost data while Nexus
//! ran (restarted empty, or restored from an older copy) holds less: the store's layout is put
//! back and the change log, which keeps every entry, is projected again from the store's position.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use super::projection::Projection;
use crate::error::{ErrorCode, Result};
use crate::store::Seq;
use crate::store::records::RecordStore;

/// Persisting waits at least this many times as long as the last persist took.
const PERSIST_SPACING: u32 = 10;

/// How often a store whose commits do not wait on the disk is made durable
/// ([`Projection::sync`]); a stop without a final sync is recovered from by the store itself.
const SYNC_INTERVAL: Duration = Duration::from_secs(300);

/// The longest wait between retries of a failed batch.
const RETRY_MAX: Duration = Duration::from_secs(10);

/// The longest wait between retries while a backend is unreachable (a cheap connection attempt).
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(1);

/// The next batch size of a shared store's projector: half of `current` (at least 1) after a
/// batch that failed or took more than `budget`; twice it (at most `most`) after a full batch
/// that took less than half the budget; otherwise the same.
fn next_batch(current: usize, most: usize, took: Duration, budget: Duration, failed: bool, full: bool) -> usize {
    if failed || took > budget {
        (current / 2).max(1)
    } else if full && took < budget / 2 {
        (current * 2).min(most)
    } else {
        current
    }
}

/// The lease a shared store's projector holds.
pub fn lease_name(store: &str) -> String {
    format!("projector:{store}")
}

/// The lease a rebuild of a shared store holds; while it is held, projectors step aside.
pub fn rebuild_lease_name(store: &str) -> String {
    format!("rebuild:{store}")
}

#[derive(Default)]
struct LeaseState {
    token: Option<u64>,
    renewed: Option<Instant>,
}

pub struct IndexerSettings {
    pub batch_size: usize,
    pub persist_interval: Duration,
    /// How often to look for changes when not woken (other nodes' writes).
    pub poll_interval: Duration,
    /// Who this node is in leases, and how long a lease lasts without renewal.
    pub node_id: String,
    pub lease: Duration,
}

/// The shared face of a running indexer.
pub struct Indexer {
    pub projection: Arc<dyn Projection>,
    visible: watch::Sender<Seq>,
    committed: AtomicU64,
    wake: Notify,
    /// Set once the indexer has replayed everything that was in the log when it started.
    caught_up: AtomicBool,
    start_head: Seq,
    last_error: Mutex<Option<String>>,
    failures: AtomicU64,
    /// For a shared store: whether this node holds its projector's lease.
    leading: AtomicBool,
    /// For a shared store: a batch failed, so the store's layout and position are checked
    /// before the next one (its server may have lost its data).
    recheck: AtomicBool,
    /// Each turn of the run loop holds it for reading; [`Indexer::hold`] takes it for writing, so
    /// that the store's files stay still while a backup copies them.
    gate: tokio::sync::RwLock<()>,
}

impl Indexer {
    pub fn name(&self) -> &'static str {
        self.projection.name()
    }

    pub fn visible_seq(&self) -> Seq {
        *self.visible.borrow()
    }

    pub fn committed_seq(&self) -> Seq {
        self.committed.load(Ordering::Acquire)
    }

    pub fn caught_up(&self) -> bool {
        // `visible` is published before the run loop sets the flag; a waiter may look in between.
        self.caught_up.load(Ordering::Acquire) || self.visible_seq() >= self.start_head
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Whether this node writes the store: always for a node-local store; for a shared one, while
    /// it holds the lease.
    pub fn leading(&self) -> bool {
        !self.projection.shared() || self.leading.load(Ordering::Acquire)
    }

    /// Stops the indexer between two batches: until the guard drops, the store's files do not
    /// change (writes go on and are indexed after). A backup copies the store meanwhile.
    pub async fn hold(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.gate.write().await
    }

    /// Tells the indexer new entries may be in the log.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until the store is visible up to `seq`, or `timeout` passes; returns whether it is.
    pub async fn wait_visible(&self, seq: Seq, timeout: Duration) -> bool {
        let mut rx = self.visible.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|v| *v >= seq)).await.is_ok_and(|r| r.is_ok())
    }

    /// Starts the indexer task. It stops, after a final persist, when `shutdown` turns true.
    pub async fn start(
        projection: Arc<dyn Projection>,
        records: Arc<dyn RecordStore>,
        settings: IndexerSettings,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Arc<Indexer>, tokio::task::JoinHandle<()>)> {
        let committed = projection.committed_seq().await?;
        let start_head = records.head_seq().await?;
        let (visible, _) = watch::channel(committed);
        let indexer = Arc::new(Indexer {
            projection,
            visible,
            committed: AtomicU64::new(committed),
            wake: Notify::new(),
            caught_up: AtomicBool::new(committed >= start_head),
            start_head,
            last_error: Mutex::new(None),
            failures: AtomicU64::new(0),
            leading: AtomicBool::new(false),
            recheck: AtomicBool::new(false),
            gate: tokio::sync::RwLock::new(()),
        });
        if committed < start_head {
            tracing::info!(
                store = indexer.name(),
                from = committed,
                to = start_head,
                "replaying changes missed since last run"
            );
        }
        let task = tokio::spawn(indexer.clone().run(records, settings, start_head, shutdown));
        Ok((indexer, task))
    }

    async fn run(
        self: Arc<Self>,
        records: Arc<dyn RecordStore>,
        settings: IndexerSettings,
        start_head: Seq,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut last_persist = Instant::now();
        let mut last_sync = Instant::now();
        let mut persist_every = settings.persist_interval;
        let mut backoff = Duration::from_millis(100);
        let mut lease = LeaseState::default();
        let mut batch = settings.batch_size;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let held = self.gate.read().await;
            let started = Instant::now();
            let turn = match self.lead_or_follow(&*records, &settings, &mut lease).await {
                Ok(true) => {
                    let size = batch;
                    let applied = self.step(&*records, size).await;
                    if self.projection.shared() {
                        let budget = settings.lease / 3;
                        let full = applied.as_ref().is_ok_and(|n| *n == size);
                        let next =
                            next_batch(batch, settings.batch_size, started.elapsed(), budget, applied.is_err(), full);
                        if next < batch {
                            tracing::info!(
                                store = self.name(),
                                batch = next,
                                "smaller batches: the last one took too long or failed"
                            );
                        }
                        batch = next;
                    }
                    applied.map(|n| (n, n == size))
                }
                Ok(false) => self.follow().await.map(|_| (0, false)),
                Err(e) => Err(e),
            };
            match turn {
                Ok((_, more)) => {
                    backoff = Duration::from_millis(100);
                    *self.last_error.lock() = None;
                    if self.visible_seq() >= start_head {
                        self.caught_up.store(true, Ordering::Release);
                    }
                    if more {
                        continue; // more is waiting
                    }
                }
                Err(e) => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    if self.projection.shared() {
                        self.recheck.store(true, Ordering::Release);
                    }
                    tracing::error!(store = self.name(), error = %e, "indexing failed; retrying");
                    *self.last_error.lock() = Some(e.to_string());
                    drop(held);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    let most = if e.code == ErrorCode::BackendUnavailable { UNAVAILABLE_RETRY } else { RETRY_MAX };
                    backoff = (backoff * 2).min(most);
                    continue;
                }
            }
            if self.committed_seq() < self.visible_seq() && last_persist.elapsed() >= persist_every {
                let started = Instant::now();
                if let Err(e) = self.persist().await {
                    tracing::error!(store = self.name(), error = %e, "persisting index failed; retrying");
                }
                persist_every = settings.persist_interval.max(started.elapsed() * PERSIST_SPACING);
                last_persist = Instant::now();
            }
            if last_sync.elapsed() >= SYNC_INTERVAL {
                if let Err(e) = self.projection.sync(false).await {
                    tracing::error!(store = self.name(), error = %e, "syncing index failed; retrying");
                }
                last_sync = Instant::now();
            }
            drop(held);
            let mut nap = persist_every.saturating_sub(last_persist.elapsed()).max(Duration::from_millis(10));
            if records.shared() {
                nap = nap.min(settings.poll_interval);
                if self.visible.receiver_count() > 0 {
                    // Someone waits to read their write: look again soon.
                    nap = nap.min(Duration::from_millis(20));
                }
                if self.projection.shared() {
                    nap = nap.min(settings.lease / 3);
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(nap) => {}
                _ = shutdown.changed() => {}
            }
        }
        if !self.leading() {
            return;
        }
        // Drain what is already logged, then make it durable.
        while let Ok(n) = self.step(&*records, settings.batch_size).await {
            if n < settings.batch_size {
                break;
            }
        }
        if let Err(e) = self.persist().await {
            tracing::error!(store = self.name(), error = %e, "final persist failed; the next start replays from the change log");
        } else if let Err(e) = self.projection.sync(true).await {
            tracing::error!(store = self.name(), error = %e, "final sync failed; the next start checks the store");
        }
        if self.projection.shared() {
            let _ = records.release_lease(&lease_name(self.name()), &settings.node_id).await;
        }
    }

    /// For a shared store, takes or renews the projector's lease (renewed a third of the way
    /// through); returns whether this node writes the store now. A node that gains the lease
    /// starts from the position the store committed, wherever the previous holder left it.
    async fn lead_or_follow(
        &self,
        records: &dyn RecordStore,
        settings: &IndexerSettings,
        lease: &mut LeaseState,
    ) -> Result<bool> {
        if !self.projection.shared() {
            return Ok(true);
        }
        let fresh = lease.renewed.is_some_and(|at| at.elapsed() < settings.lease / 3);
        if fresh {
            if self.recheck.load(Ordering::Acquire) {
                self.recheck_store(true).await?;
            }
            return Ok(true);
        }
        let name = lease_name(self.name());
        if let Some(rebuilder) = records.lease_holder(&rebuild_lease_name(self.name())).await? {
            // A rebuild (`nexus reindex`) is filling a new generation: hand it the projector's
            // lease; projecting resumes from the new generation once it is live.
            if lease.token.take().is_some() {
                records.release_lease(&name, &settings.node_id).await?;
                tracing::info!(store = self.name(), node = %settings.node_id, %rebuilder,
                    "a rebuild of the shared store is running; projecting resumes after it");
            }
            lease.renewed = None;
            self.leading.store(false, Ordering::Release);
            return Ok(false);
        }
        match records.acquire_lease(&name, &settings.node_id, settings.lease).await? {
            Some(token) => {
                if lease.token != Some(token) {
                    self.projection.set_fence(token);
                    let committed = self.projection.committed_seq().await?;
                    self.visible.send_replace(committed);
                    self.committed.store(committed, Ordering::Release);
                    tracing::info!(store = self.name(), node = %settings.node_id, token, from = committed,
                        "projecting the shared store");
                } else {
                    self.recheck_store(self.recheck.load(Ordering::Acquire)).await?;
                }
                lease.token = Some(token);
                lease.renewed = Some(Instant::now());
                self.leading.store(true, Ordering::Release);
                Ok(true)
            }
            None => {
                if lease.token.take().is_some() {
                    tracing::info!(store = self.name(), node = %settings.node_id, "another node projects the shared store now");
                }
                lease.renewed = None;
                self.leading.store(false, Ordering::Release);
                Ok(false)
            }
        }
    }

    /// For a shared store this node projects: makes sure the store still holds what this node
    /// committed to it. When it holds less, its server lost data; projecting starts again from
    /// the position it holds, after its layout is put back. `restore` puts the layout back first
    /// in any case (after a failed batch: the layout may be gone with nothing committed yet).
    async fn recheck_store(&self, restore: bool) -> Result<()> {
        if restore {
            self.projection.restore_layout().await?;
        }
        let stored = self.projection.committed_seq().await?;
        let committed = self.committed_seq();
        if stored < committed {
            if !restore {
                self.projection.restore_layout().await?;
            }
            tracing::warn!(
                store = self.name(),
                stored,
                committed,
                "the shared store holds less than this node committed to it (its server lost data); \
                 projecting the change log again from the store's position"
            );
            metrics::counter!("nexus_indexer_store_resets_total", "store" => self.name()).increment(1);
            self.committed.store(stored, Ordering::Release);
            self.visible.send_replace(stored);
        }
        self.recheck.store(false, Ordering::Release);
        Ok(())
    }

    /// Publishes what the shared store's projector (another node) has committed: less than
    /// before too, when the store's server lost data and is being refilled.
    async fn follow(&self) -> Result<()> {
        let committed = self.projection.committed_seq().await?;
        self.committed.store(committed, Ordering::Release);
        if committed != self.visible_seq() {
            self.visible.send_replace(committed);
        }
        Ok(())
    }

    /// Applies one batch of at most `batch_size` entries; returns how many it held.
    async fn step(&self, records: &dyn RecordStore, batch_size: usize) -> Result<usize> {
        let from = self.visible_seq();
        let changes = records.changes_since(from, batch_size).await?;
        let Some(last) = changes.last().map(|c| c.seq) else { return Ok(0) };
        self.projection.apply(&changes).await?;
        if self.projection.visible_only_after_commit() || self.projection.shared() {
            self.projection.commit(last).await?;
            self.committed.store(last, Ordering::Release);
        }
        self.visible.send_replace(last);
        metrics::counter!("nexus_indexer_applied_total", "store" => self.name()).increment(changes.len() as u64);
        Ok(changes.len())
    }

    /// Makes everything visible durable.
    pub async fn persist(&self) -> Result<()> {
        let seq = self.visible_seq();
        if self.committed_seq() >= seq {
            return Ok(());
        }
        self.projection.commit(seq).await?;
        self.committed.store(seq, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_or_failed_batch_halves_the_next_and_fast_full_ones_grow_it_back() {
        let budget = Duration::from_secs(1);
        let ms = Duration::from_millis;
        // Too slow, or failed: half, never below one.
        assert_eq!(next_batch(512, 512, ms(1500), budget, false, true), 256);
        assert_eq!(next_batch(512, 512, ms(10), budget, true, false), 256);
        assert_eq!(next_batch(1, 512, ms(1500), budget, false, true), 1);
        // Fast and full: twice, never above the configured size.
        assert_eq!(next_batch(64, 512, ms(100), budget, false, true), 128);
        assert_eq!(next_batch(512, 512, ms(100), budget, false, true), 512);
        // Fast but not full (the log is drained), or neither fast nor slow: unchanged.
        assert_eq!(next_batch(64, 512, ms(100), budget, false, false), 64);
        assert_eq!(next_batch(64, 512, ms(700), budget, false, true), 64);
        // A backlog a slow backend takes 4 ms per entry for: batches settle where one fits.
        let mut batch = 512;
        for _ in 0..20 {
            let took = ms(4 * batch as u64);
            batch = next_batch(batch, 512, took, budget, false, true);
        }
        assert!(ms(4 * batch as u64) <= budget, "{batch}");
        assert!(batch >= 64, "{batch}");
    }
}
