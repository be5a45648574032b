//! Which embedder made the vectors in a data directory, and the state of a re-embedding.
//!
//! `embedder.json` names the embedder whose vectors the record store holds. A start with another
//! embedder is refused. `nexus reindex --store vectors` re-embeds every record in key order,
//! writing its progress to `reembed.json` after each page, so an interrupted run resumes where it
//! stopped; when done it rebuilds the vector index and records the new embedder.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::EmbedderIdentity;
use crate::error::{Error, ErrorCode, Result};
use crate::store::RecordKey;

const IDENTITY_FILE: &str = "embedder.json";
const PROGRESS_FILE: &str = "reembed.json";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReembedProgress {
    pub target: EmbedderIdentity,
    /// Records with keys up to this one hold vectors of `target`.
    pub done_through: RecordKey,
}

pub fn read(root: &Path) -> Result<Option<EmbedderIdentity>> {
    read_json(&root.join(IDENTITY_FILE))
}

pub fn write(root: &Path, identity: &EmbedderIdentity) -> Result<()> {
    write_json(root, IDENTITY_FILE, identity)
}

pub fn read_progress(root: &Path) -> Result<Option<ReembedProgress>> {
    read_json(&root.join(PROGRESS_FILE))
}

pub fn write_progress(root: &Path, progress: &ReembedProgress) -> Result<()> {
    write_json(root, PROGRESS_FILE, progress)
}

pub fn clear_progress(root: &Path) -> Result<()> {
    match std::fs::remove_file(root.join(PROGRESS_FILE)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Refuses to serve with an embedder other than the one that made the stored vectors, and a
/// directory whose re-embedding was interrupted. A new directory adopts `current`.
pub fn ensure_matches(root: &Path, current: &EmbedderIdentity) -> Result<()> {
    if let Some(progress) = read_progress(root)? {
        return Err(Error::new(
            ErrorCode::EmbedderMismatch,
            format!(
                "re-embedding with {} was interrupted; run `nexus reindex --store vectors` to finish it",
                progress.target
            ),
        ));
    }
    match read(root)? {
        None => write(root, current),
        Some(stored) if &stored == current => Ok(()),
        Some(stored) => Err(Error::new(
            ErrorCode::EmbedderMismatch,
            format!(
                "the stored vectors were made by {stored}, but the configured embedder is {current}; \
                 run `nexus reindex --store vectors` to re-embed everything with it, or configure the old one"
            ),
        )),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::new(
                ErrorCode::DataDirInvalid,
                format!("{} is corrupt ({e}); restore it from a backup", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn write_json<T: Serialize>(root: &Path, name: &str, value: &T) -> Result<()> {
    use std::io::Write;
    let tmp = root.join(format!("{name}.tmp"));
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::internal("encode", e))?;
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, root.join(name))?;
    std::fs::File::open(root)?.sync_all()?;
    Ok(())
}
