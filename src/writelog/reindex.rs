//! `nexus reindex`: rebuild a derived store from the record.
//!
//! The store is cleared, every record is replayed into it in key order, and it is committed at the
//! change-log position read before the scan, so entries logged meanwhile are replayed by its
//! indexer afterwards. Run it while no indexer serves the store (the CLI holds the data directory).

use std::sync::Arc;

use super::projection::Projection;
use crate::error::Result;
use crate::store::records::{Change, ChangeOp, RecordStore};

const PAGE: usize = 1000;

/// Rebuilds `projection`; `progress(done)` is called after each page. Returns records replayed.
pub async fn reindex(
    records: &dyn RecordStore,
    projection: &Arc<dyn Projection>,
    mut progress: impl FnMut(u64),
) -> Result<u64> {
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
        projection.apply(&changes).await?;
        progress(done);
    }
    projection.commit(head).await?;
    Ok(done)
}
