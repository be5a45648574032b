//! Bulk import of memories that arrive with their vectors, computed by this data directory's
//! embedder (through `POST /api/v1/embed`, or kept from an earlier run). Each memory goes through
//! the one write path with its ADD history entry, like an `infer=false` add, but without a model
//! pass or the near-duplicate check: loading a large store should cost what the stores cost.

use super::Memories;
use super::model::Memory;
use crate::error::{Error, Result};
use crate::store::TenantId;
use crate::store::records::Write;
use crate::writelog::WriteOutcome;

/// The most memories one import call takes (one write-path transaction).
pub const MAX_IMPORT: usize = 10_000;

impl Memories {
    /// Stores `memories` as given (id, text, scope, tier, times), each with its vector.
    pub async fn import(
        &self,
        tenant: &TenantId,
        memories: Vec<(Memory, Vec<f32>)>,
        actor: &str,
    ) -> Result<WriteOutcome> {
        if memories.is_empty() || memories.len() > MAX_IMPORT {
            return Err(Error::invalid(format!("import 1-{MAX_IMPORT} memories at a time")));
        }
        let mut writes = Vec::with_capacity(memories.len() * 2);
        for (memory, vector) in memories {
            memory.scope().normalized()?.require()?;
            if memory.memory.trim().is_empty() {
                return Err(Error::invalid(format!("memory {} has no text", memory.id)));
            }
            self.check_size(&memory.memory)?;
            let [mut record, entry] = self.added(&memory, actor, None, Some("imported".into()));
            if let Write::Upsert(r) = &mut record {
                r.embed = false;
                r.vector = Some(vector); // the write path checks its dimensions
            }
            writes.extend([record, entry]);
        }
        self.writes.write(tenant, writes, false).await
    }
}
