//! The audit log's writer: requests hand their event to a bounded channel (never waiting), and
//! one task writes what has queued up in batches. A full channel drops events and counts them in
//! `nexus_audit_dropped_total` rather than slowing requests down.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;

use crate::store::auth::{AuditEvent, AuthStore};

const CHANNEL: usize = 10_000;
const BATCH: usize = 500;
/// Attempts to write a batch before its events are counted as dropped (about a minute).
const ATTEMPTS: u32 = 40;

pub struct AuditLog {
    tx: parking_lot::Mutex<Option<mpsc::Sender<AuditEvent>>>,
    writer: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl AuditLog {
    pub fn start(store: Arc<dyn AuthStore>) -> AuditLog {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let writer = tokio::spawn(write_batches(store, rx));
        AuditLog { tx: parking_lot::Mutex::new(Some(tx)), writer: tokio::sync::Mutex::new(Some(writer)) }
    }

    pub fn record(&self, event: AuditEvent) {
        let tx = self.tx.lock();
        let Some(tx) = tx.as_ref() else { return };
        if tx.try_send(event).is_err() {
            metrics::counter!("nexus_audit_dropped_total").increment(1);
        }
    }

    /// Writes what is queued, then stops the writer.
    pub async fn shutdown(&self) {
        drop(self.tx.lock().take());
        if let Some(writer) = self.writer.lock().await.take() {
            let _ = writer.await;
        }
    }
}

async fn write_batches(store: Arc<dyn AuthStore>, mut rx: mpsc::Receiver<AuditEvent>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut attempt = 0u32;
        loop {
            match store.append_audit(&batch).await {
                Ok(()) => break,
                // An unreachable database (a cluster's Postgres restarting) is waited out for a
                // while; events queue in the channel meanwhile.
                Err(e) if attempt < ATTEMPTS => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "writing the audit log failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(10)))).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, events = batch.len(), "writing the audit log failed; events lost");
                    metrics::counter!("nexus_audit_dropped_total").increment(batch.len() as u64);
                    break;
                }
            }
        }
        metrics::counter!("nexus_audit_written_total").increment(batch.len() as u64);
        batch.clear();
    }
}

/// Deletes entries older than the retention; `days == 0` keeps everything.
pub async fn enforce_retention(store: &dyn AuthStore, days: u32) {
    if days == 0 {
        return;
    }
    let before = Utc::now() - chrono::Duration::days(i64::from(days));
    match store.prune_audit(before).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(deleted = n, days, "audit entries past retention deleted"),
        Err(e) => tracing::warn!(error = %e, "enforcing the audit retention failed; will retry"),
    }
}
