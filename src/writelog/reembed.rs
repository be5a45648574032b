//! `nexus reindex --store vectors` after a change of embedder: recompute every computed vector in
//! the record with the configured embedder, then rebuild the vector index from the record.
//!
//! Progress is written after each page (see `embed::identity`), so an interrupted run resumes at
//! the next page. Run while no indexer serves the vector store (the CLI holds the data directory).

use std::path::Path;
use std::sync::Arc;

use super::projection::Projection;
use super::reindex::reindex;
use crate::embed::EmbedService;
use crate::embed::identity::{self, ReembedProgress};
use crate::error::Result;
use crate::store::records::RecordStore;

const PAGE: usize = 256;

pub enum Outcome {
    /// The stored vectors were already the configured embedder's: only the index was rebuilt.
    Rebuilt { records: u64 },
    /// Records re-embedded (this run), then the index rebuilt.
    Reembedded { embedded: u64, resumed_after: u64 },
}

pub async fn reembed_and_rebuild(
    root: &Path,
    records: &dyn RecordStore,
    embed: &EmbedService,
    vectors: &Arc<dyn Projection>,
    mut progress: impl FnMut(u64),
) -> Result<Outcome> {
    let target = embed.identity().clone();
    let resume = identity::read_progress(root)?.filter(|p| p.target == target);
    let stored = identity::read(root)?;
    if resume.is_none() && stored.as_ref() == Some(&target) {
        let n = reindex(records, vectors, &mut progress).await?;
        return Ok(Outcome::Rebuilt { records: n });
    }
    let mut state = resume.unwrap_or(ReembedProgress { target: target.clone(), done_through: 0 });
    let resumed_after = state.done_through;
    identity::write_progress(root, &state)?;
    let mut embedded = 0u64;
    loop {
        let page = records.scan(state.done_through, PAGE).await?;
        let Some(last) = page.last().map(|r| r.key) else { break };
        let computed: Vec<_> = page.iter().filter(|r| r.embed).collect();
        let texts: Vec<String> = computed.iter().map(|r| r.embedding_text()).collect();
        let non_empty: Vec<String> = texts.iter().filter(|t| !t.trim().is_empty()).cloned().collect();
        let mut vectors = embed.embed(&non_empty).await?.into_iter();
        let updates = computed
            .iter()
            .zip(&texts)
            .map(|(r, text)| (r.key, if text.trim().is_empty() { None } else { vectors.next() }))
            .collect::<Vec<_>>();
        embedded += updates.len() as u64;
        records.set_vectors(updates).await?;
        state.done_through = last;
        identity::write_progress(root, &state)?;
        progress(embedded);
    }
    reindex(records, vectors, |_| {}).await?;
    identity::write(root, &target)?;
    identity::clear_progress(root)?;
    Ok(Outcome::Reembedded { embedded, resumed_after })
}
