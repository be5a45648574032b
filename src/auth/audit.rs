//! The audit log's writer: requests hand their event to a bounded channel (never waiting), and
//! one task writes what has queued up in batches, at most one every `LINGER` (or sooner when a
//! batch fills). A full channel drops events and counts them in `nexus_audit_dropped_total`
//! rather than slowing requests down.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;

use crate::store::auth::{AuditEvent, AuthStore};

const CHANNEL: usize = 10_000;
const BATCH: usize = 500;
/// Attempts to write a batch before its events are counted as dropped (about a minute).
const ATTEMPTS: u32 = 40;
/// How long a batch waits after its first event for more to join it. Every commit to the
/// embedded record store makes each of its reader connections start over: SQLite drops a
/// reader's page cache and its memory map of the database once anything was written. One commit
/// per request (a read is audited too) would make every read fault the pages it needs back in.
const LINGER: Duration = Duration::from_millis(500);

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
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            let more = BATCH - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, more)).await {
                Ok(0) | Err(_) => break, // closed, or waited long enough
                Ok(_) => {}
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RecordsConfig;
    use crate::store::auth::sqlite::SqliteAuthStore;
    use crate::store::auth::{AuditFilter, Within};
    use crate::store::records::sqlite::SqliteRecordStore;

    fn event(n: usize) -> AuditEvent {
        AuditEvent {
            at: Utc::now(),
            principal: "open".into(),
            key_id: None,
            tenant: None,
            method: "GET".into(),
            route: "/api/v1/records/{id}".into(),
            object_id: Some(format!("r{n}")),
            status: 200,
            client: None,
        }
    }

    async fn written(store: &dyn AuthStore) -> usize {
        let filter = AuditFilter::newest(Within::All, 1000);
        store.list_audit(&filter).await.unwrap().len()
    }

    /// Events that come close together are written as one batch after `LINGER`, not one commit
    /// each; a shutdown writes what is queued at once.
    #[tokio::test]
    async fn events_close_together_are_written_together_after_a_linger() {
        let tmp = tempfile::tempdir().unwrap();
        let records = SqliteRecordStore::open(&tmp.path().join("records"), &RecordsConfig::default()).await.unwrap();
        let store: Arc<dyn AuthStore> = Arc::new(SqliteAuthStore::new(&records));
        let log = AuditLog::start(store.clone());
        for n in 0..10 {
            log.record(event(n));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(written(store.as_ref()).await, 0, "still gathering the batch");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while written(store.as_ref()).await < 10 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(written(store.as_ref()).await, 10);

        for n in 10..13 {
            log.record(event(n));
        }
        let started = std::time::Instant::now();
        log.shutdown().await;
        assert!(started.elapsed() <= LINGER + Duration::from_secs(2));
        assert_eq!(written(store.as_ref()).await, 13, "a shutdown writes what is queued");
    }
}
