//! `nexus reindex`: rebuild a derived store from the record.
//!
//! Every record is replayed into the store in key order, and the store is committed at the
//! change-log position read before the scan, so entries logged meanwhile are replayed by its
//! indexer afterwards. An embedded store is cleared and rebuilt in place; run it while no indexer
//! serves the store (the CLI holds the data directory).
//!
//! A store shared by a cluster's nodes is rebuilt while they run. The rebuild takes the store's
//! rebuild lease, which makes the projecting node step aside and hand over the projector's lease
//! (so no node writes the store meanwhile); then, for a store with generations (Elasticsearch,
//! Qdrant, Neo4j), it fills a new generation while every node keeps reading the live one, makes
//! it live for every node at once and lets projecting resume from the position it committed.
//! Reads are never down; they see no new writes until the new generation is live. A shared store
//! without generations (pgvector) is rebuilt in place, and only while no node projects it.

use std::sync::Arc;

use std::time::{Duration, Instant};

use super::indexer::{lease_name, rebuild_lease_name};
use super::projection::Projection;
use crate::error::{Error, ErrorCode, Result};
use crate::store::records::{Change, ChangeOp, RecordStore};

const PAGE: usize = 1000;

/// How long the rebuild's leases last without renewal; renewed every third of it.
const LEASE: Duration = Duration::from_secs(30);

/// How long a rebuild waits for the projecting node to hand over (a live node does within a
/// third of its lease; a dead node's lease must run out).
const HANDOVER_WAIT: Duration = Duration::from_secs(120);

/// A lease held by this process for a rebuild and renewed as it goes.
struct HeldLease {
    name: String,
    owner: String,
    renewed: Instant,
}

impl HeldLease {
    fn owner() -> String {
        format!("reindex-{}", std::process::id())
    }

    async fn try_take(records: &dyn RecordStore, name: String) -> Result<Option<(HeldLease, u64)>> {
        let owner = Self::owner();
        Ok(records
            .acquire_lease(&name, &owner, LEASE)
            .await?
            .map(|token| (HeldLease { name, owner, renewed: Instant::now() }, token)))
    }

    async fn renew(&mut self, records: &dyn RecordStore) -> Result<()> {
        if self.renewed.elapsed() < LEASE / 3 {
            return Ok(());
        }
        match records.acquire_lease(&self.name, &self.owner, LEASE).await? {
            Some(_) => {
                self.renewed = Instant::now();
                Ok(())
            }
            None => Err(Error::new(ErrorCode::Conflict, format!("lost the lease {} during the rebuild", self.name))),
        }
    }

    async fn release(self, records: &dyn RecordStore) -> Result<()> {
        records.release_lease(&self.name, &self.owner).await
    }
}

/// The leases a shared store's rebuild holds: its rebuild lease and the projector's.
struct SharedRebuild {
    rebuild: HeldLease,
    projector: HeldLease,
    /// The projector lease's fencing token, which the rebuild writes with.
    token: u64,
}

impl SharedRebuild {
    async fn take(records: &dyn RecordStore, projection: &Arc<dyn Projection>, wait: bool) -> Result<SharedRebuild> {
        let store = projection.name();
        let busy = |what: &str| {
            Error::new(ErrorCode::Conflict, format!("{what}; wait for it to finish, then run `nexus reindex` again"))
        };
        let Some((mut rebuild, _)) = HeldLease::try_take(records, rebuild_lease_name(store)).await? else {
            return Err(busy(&format!("another rebuild of the shared {store} store is running")));
        };
        let deadline = Instant::now() + HANDOVER_WAIT;
        loop {
            if let Some((projector, token)) = HeldLease::try_take(records, lease_name(store)).await? {
                projection.set_fence(token);
                return Ok(SharedRebuild { rebuild, projector, token });
            }
            if !wait {
                rebuild.release(records).await?;
                return Err(Error::new(
                    ErrorCode::Conflict,
                    format!(
                        "a running node projects the shared {store} store, which is rebuilt in place; stop every \
                         node's `nexus serve`, then run `nexus reindex` again"
                    ),
                ));
            }
            if Instant::now() > deadline {
                rebuild.release(records).await?;
                return Err(busy(&format!("the projector of the shared {store} store did not hand over its lease")));
            }
            rebuild.renew(records).await?;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn renew(&mut self, records: &dyn RecordStore) -> Result<()> {
        self.rebuild.renew(records).await?;
        self.projector.renew(records).await
    }

    async fn release(self, records: &dyn RecordStore) -> Result<()> {
        self.projector.release(records).await?;
        self.rebuild.release(records).await
    }
}

/// Rebuilds `projection`; `progress(done)` is called after each page. Returns records replayed.
pub async fn reindex(
    records: &dyn RecordStore,
    projection: &Arc<dyn Projection>,
    mut progress: impl FnMut(u64),
) -> Result<u64> {
    let generations = projection.shared() && projection.generations();
    let mut leases =
        if projection.shared() { Some(SharedRebuild::take(records, projection, generations).await?) } else { None };
    // The new generation is made under the projector's lease, with its fencing token.
    let next = if generations {
        if let Some(leases) = &leases {
            projection.set_fence(leases.token);
        }
        match projection.new_generation().await {
            Ok(next) => next,
            Err(e) => {
                if let Some(leases) = leases.take() {
                    let _ = leases.release(records).await;
                }
                return Err(e);
            }
        }
    } else {
        None
    };
    let outcome = replay(records, projection, next.as_ref(), leases.as_mut(), &mut progress).await;
    if let Some(leases) = leases {
        // Projecting resumes either way: from the new generation, or where it was.
        let released = leases.release(records).await;
        if outcome.is_ok() {
            released?;
        }
    }
    if outcome.is_err()
        && let Some(next) = &next
    {
        let _ = next.clear().await;
    }
    outcome
}

/// Replays every record into the new generation (or the cleared store) and makes it live.
async fn replay(
    records: &dyn RecordStore,
    projection: &Arc<dyn Projection>,
    next: Option<&Arc<dyn Projection>>,
    mut leases: Option<&mut SharedRebuild>,
    mut progress: impl FnMut(u64),
) -> Result<u64> {
    let target = match next {
        Some(next) => {
            if let Some(leases) = leases.as_deref() {
                next.set_fence(leases.token);
            }
            next.clone()
        }
        None => {
            projection.clear().await?;
            projection.clone()
        }
    };
    let head = records.head_seq().await?;
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
        if let Some(leases) = leases.as_deref_mut() {
            leases.renew(records).await?;
        }
        target.apply(&changes).await?;
        progress(done);
    }
    target.commit(head).await?;
    target.sync(false).await?;
    if let Some(next) = next {
        next.make_live().await?;
    }
    Ok(done)
}
