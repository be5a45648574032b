//! `nexus reindex`: rebuild a derived store from the record.
//!
//! The store is cleared, every record is replayed into it in key order, and it is committed at the
//! change-log position read before the scan, so entries logged meanwhile are replayed by its
//! indexer afterwards. Run it while no indexer serves the store (the CLI holds the data directory).
//! A store shared by a cluster's nodes is rebuilt under its projector's lease, so no node writes
//! it meanwhile; while a node holds that lease, the rebuild is refused.

use std::sync::Arc;

use std::time::Duration;

use super::indexer::lease_name;
use super::projection::Projection;
use crate::error::{Error, ErrorCode, Result};
use crate::store::records::{Change, ChangeOp, RecordStore};

const PAGE: usize = 1000;

/// How long the rebuild's lease lasts without renewal; renewed every third of it.
const LEASE: Duration = Duration::from_secs(30);

/// A shared store's projector lease, held by this process for a rebuild and renewed as it goes.
struct RebuildLease {
    name: String,
    owner: String,
    renewed: std::time::Instant,
}

impl RebuildLease {
    async fn take(records: &dyn RecordStore, projection: &Arc<dyn Projection>) -> Result<RebuildLease> {
        let name = lease_name(projection.name());
        let owner = format!("reindex-{}", std::process::id());
        let Some(token) = records.acquire_lease(&name, &owner, LEASE).await? else {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!(
                    "a running node projects the shared {} store; stop every node's `nexus serve`, then run \
                     `nexus reindex` again",
                    projection.name()
                ),
            ));
        };
        projection.set_fence(token);
        Ok(RebuildLease { name, owner, renewed: std::time::Instant::now() })
    }

    async fn renew(&mut self, records: &dyn RecordStore) -> Result<()> {
        if self.renewed.elapsed() < LEASE / 3 {
            return Ok(());
        }
        match records.acquire_lease(&self.name, &self.owner, LEASE).await? {
            Some(_) => {
                self.renewed = std::time::Instant::now();
                Ok(())
            }
            None => Err(Error::new(ErrorCode::Conflict, format!("lost the lease {} during the rebuild", self.name))),
        }
    }
}

/// Rebuilds `projection`; `progress(done)` is called after each page. Returns records replayed.
pub async fn reindex(
    records: &dyn RecordStore,
    projection: &Arc<dyn Projection>,
    mut progress: impl FnMut(u64),
) -> Result<u64> {
    let mut lease = if projection.shared() { Some(RebuildLease::take(records, projection).await?) } else { None };
    let head = records.head_seq().await?;
    projection.clear().await?;
    let mut after = 0;
    let mut done = 0u64;
    loop {
        let page = records.scan(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.key;
        done += page.len() as u64;
        let changes: Vec<Change> = page
            .into_iter()
            .map(|r| Change {
                seq: head,
                tenant: r.tenant.clone(),
                key: r.key,
                id: r.id.clone(),
                op: ChangeOp::Upsert,
                record: Some(r),
            })
            .collect();
        if let Some(lease) = &mut lease {
            lease.renew(records).await?;
        }
        projection.apply(&changes).await?;
        progress(done);
    }
    projection.commit(head).await?;
    if let Some(lease) = lease {
        records.release_lease(&lease.name, &lease.owner).await?;
    }
    Ok(done)
}
