//! An indexer brings one derived store up to date from the change log.
//!
//! It starts from the position the store last made durable, applies entries in batches, and
//! publishes how far its store is *visible* (what searches see). Stores that need a commit to be
//! visible are committed every batch; the others are persisted every `persist_interval_ms` and
//! at shutdown — less often when persisting is slow (a large index is saved whole), so that it
//! takes at most about a tenth of the indexer's time; a crash replays the rest from the log.
//! A failed batch is retried with backoff: nothing is skipped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use super::projection::Projection;
use crate::error::Result;
use crate::store::Seq;
use crate::store::records::RecordStore;

/// Persisting waits at least this many times as long as the last persist took.
const PERSIST_SPACING: u32 = 10;

pub struct IndexerSettings {
    pub batch_size: usize,
    pub persist_interval: Duration,
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
        let mut persist_every = settings.persist_interval;
        let mut backoff = Duration::from_millis(100);
        loop {
            if *shutdown.borrow() {
                break;
            }
            match self.step(&*records, settings.batch_size).await {
                Ok(applied) => {
                    backoff = Duration::from_millis(100);
                    *self.last_error.lock() = None;
                    if self.visible_seq() >= start_head {
                        self.caught_up.store(true, Ordering::Release);
                    }
                    if applied == settings.batch_size {
                        continue; // more is waiting
                    }
                }
                Err(e) => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(store = self.name(), error = %e, "indexing failed; retrying");
                    *self.last_error.lock() = Some(e.to_string());
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
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
            let nap = persist_every.saturating_sub(last_persist.elapsed()).max(Duration::from_millis(10));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(nap) => {}
                _ = shutdown.changed() => {}
            }
        }
        // Drain what is already logged, then make it durable.
        while let Ok(n) = self.step(&*records, settings.batch_size).await {
            if n < settings.batch_size {
                break;
            }
        }
        if let Err(e) = self.persist().await {
            tracing::error!(store = self.name(), error = %e, "final persist failed; the next start replays from the change log");
        }
    }

    /// Applies one batch; returns how many entries it held.
    async fn step(&self, records: &dyn RecordStore, batch_size: usize) -> Result<usize> {
        let from = self.visible_seq();
        let changes = records.changes_since(from, batch_size).await?;
        let Some(last) = changes.last().map(|c| c.seq) else { return Ok(0) };
        self.projection.apply(&changes).await?;
        if self.projection.visible_only_after_commit() {
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
