//! The dump file: one `tar` stream compressed with zstd (frame checksums on), written as
//! `<file>.partial` and renamed once complete. Its first entry is the header, its last the
//! manifest with the size and SHA-256 of every other entry.
//!
//! Reading ([`unpack`]) checks everything and refuses, each with its own message: a truncated or
//! corrupt stream, a first entry that is not the header, an entry that is not a regular file
//! (links, devices, directories), a path that is absolute, climbs out (`..`) or is not plain, an
//! entry twice, an entry the manifest does not list or lists with another size or hash, an entry
//! it lists that is missing, no manifest, anything after the manifest.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use sha2::Digest;

use super::v1::{HEADER, MANIFEST, Manifest, ManifestEntry};
use crate::backup::archive::Hashing;
pub use crate::backup::archive::{PARTIAL_SUFFIX, invalid, partial_path};
use crate::error::{Error, Result};

/// The largest header or manifest read into memory.
const SMALL_ENTRY: u64 = 256 << 20;

/// Writes a dump file entry by entry; [`Writer::finish`] appends the manifest.
pub struct Writer {
    tar: tar::Builder<zstd::Encoder<'static, Hashing<BufWriter<File>>>>,
    partial: PathBuf,
    path: PathBuf,
    manifest: Manifest,
}

impl Writer {
    pub fn create(path: &Path) -> Result<Writer> {
        let partial = partial_path(path);
        // The dump holds every record and the keys' hashes: readable by its owner only.
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            File::options()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&partial)
                .map_err(|e| Error::invalid(format!("cannot write the dump file {}: {e}", partial.display())))?
        };
        let mut encoder = zstd::Encoder::new(Hashing::new(BufWriter::with_capacity(1 << 20, file)), 3)?;
        encoder.include_checksum(true)?;
        Ok(Writer { tar: tar::Builder::new(encoder), partial, path: path.to_path_buf(), manifest: Manifest::default() })
    }

    fn append(&mut self, name: &str, data: &mut dyn Read, size: u64) -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
        self.tar.append_data(&mut header, name, data)?;
        Ok(())
    }

    /// Adds `size` bytes read from `data` as the entry `name`; returns their SHA-256.
    pub fn add(&mut self, name: &str, size: u64, data: &mut dyn Read) -> Result<String> {
        let mut reader = Hashing::new(data.take(size));
        self.append(name, &mut reader, size)?;
        if reader.bytes != size {
            return Err(Error::store("write the dump", format!("`{name}` changed size while it was read")));
        }
        let sha256 = hex::encode(reader.hasher.finalize());
        self.manifest.files.push(ManifestEntry { path: name.to_string(), size, sha256: sha256.clone() });
        Ok(sha256)
    }

    pub fn add_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<String> {
        self.add(name, bytes.len() as u64, &mut &bytes[..])
    }

    pub fn add_file(&mut self, name: &str, source: &Path) -> Result<String> {
        let file = File::open(source)?;
        let size = file.metadata()?.len();
        self.add(name, size, &mut BufReader::with_capacity(1 << 20, file))
    }

    /// Appends the manifest, ends the stream and renames the file into place, each made durable.
    /// Returns the file's size and SHA-256.
    pub fn finish(mut self) -> Result<(u64, String)> {
        let manifest =
            serde_json::to_vec_pretty(&self.manifest).map_err(|e| Error::internal("encode the dump manifest", e))?;
        self.append(MANIFEST, &mut manifest.as_slice(), manifest.len() as u64)?;
        let encoder = self.tar.into_inner()?;
        let mut counted = encoder.finish()?;
        counted.flush()?;
        let file = counted.inner.into_inner().map_err(|e| Error::from(e.into_error()))?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.partial, &self.path)?;
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
        Ok((counted.bytes, hex::encode(counted.hasher.finalize())))
    }

    /// Drops an unfinished dump.
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.partial);
    }
}

fn stream_error(path: &Path, e: std::io::Error) -> Error {
    invalid(format!("{} is truncated or corrupt ({e}); make the dump again or fetch it again", path.display()))
}

/// An entry's path as plain `/`-separated segments, or why it is refused.
fn plain_path(raw: &Path) -> Result<String> {
    let text = raw.to_string_lossy().to_string();
    if raw.is_absolute() || text.starts_with('/') {
        return Err(invalid(format!("the dump holds an absolute path `{text}`: refused")));
    }
    let mut parts = Vec::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().to_string()),
            Component::ParentDir => {
                return Err(invalid(format!("the dump holds a path that climbs out (`..`): `{text}`: refused")));
            }
            Component::CurDir => {}
            _ => return Err(invalid(format!("the dump holds an absolute path `{text}`: refused"))),
        }
    }
    if parts.is_empty() {
        return Err(invalid("the dump holds an entry without a name: refused"));
    }
    Ok(parts.join("/"))
}

/// Reads the first entry, which must be the header, as JSON.
pub fn read_header(path: &Path) -> Result<serde_json::Value> {
    let file = File::open(path).map_err(|e| Error::invalid(format!("cannot read the dump {}: {e}", path.display())))?;
    let decoder = zstd::Decoder::new(file).map_err(|e| stream_error(path, e))?;
    let mut archive = tar::Archive::new(decoder);
    let mut entries = archive.entries().map_err(|e| stream_error(path, e))?;
    let mut entry = entries
        .next()
        .ok_or_else(|| invalid(format!("{} is empty: not a Nexus dump", path.display())))?
        .map_err(|e| stream_error(path, e))?;
    let name = entry.path().map_err(|e| stream_error(path, e))?.to_string_lossy().to_string();
    if name != HEADER || !entry.header().entry_type().is_file() {
        return Err(invalid(format!(
            "{} is not a Nexus dump: its first entry is `{name}`, not {HEADER}",
            path.display()
        )));
    }
    let mut text = Vec::new();
    entry.by_ref().take(SMALL_ENTRY).read_to_end(&mut text).map_err(|e| stream_error(path, e))?;
    serde_json::from_slice(&text).map_err(|e| invalid(format!("the dump's {HEADER} is not valid JSON ({e}): refused")))
}

/// Reads the whole dump and writes every entry under `into` (a new, empty directory), checking
/// each against the manifest. Nothing is left in `into` on failure. Returns the manifest.
pub fn unpack(path: &Path, into: &Path) -> Result<Manifest> {
    let outcome = unpack_inner(path, into);
    if outcome.is_err() {
        let _ = std::fs::remove_dir_all(into);
    }
    outcome
}

fn unpack_inner(path: &Path, into: &Path) -> Result<Manifest> {
    std::fs::create_dir(into)?;
    let file = File::open(path)?;
    let decoder = zstd::Decoder::new(file).map_err(|e| stream_error(path, e))?;
    let mut archive = tar::Archive::new(decoder);
    let mut entries = archive.entries().map_err(|e| stream_error(path, e))?;
    let mut manifest: Option<Manifest> = None;
    let mut seen: Vec<ManifestEntry> = Vec::new();
    for entry in entries.by_ref() {
        let mut entry = entry.map_err(|e| stream_error(path, e))?;
        let raw = entry.path().map_err(|e| stream_error(path, e))?.into_owned();
        let kind = entry.header().entry_type();
        if manifest.is_some() {
            return Err(invalid(format!("the dump goes on after its manifest (`{}`): refused", raw.display())));
        }
        if !kind.is_file() {
            let what = match kind {
                tar::EntryType::Symlink => "a symbolic link",
                tar::EntryType::Link => "a hard link",
                tar::EntryType::Char | tar::EntryType::Block => "a device",
                tar::EntryType::Fifo => "a pipe",
                tar::EntryType::Directory => "a directory entry",
                _ => "an entry that is not a regular file",
            };
            return Err(invalid(format!("the dump holds {what} (`{}`): refused", raw.display())));
        }
        let name = plain_path(&raw)?;
        if seen.is_empty() && name != HEADER {
            return Err(invalid(format!(
                "{} is not a Nexus dump: its first entry is `{name}`, not {HEADER}",
                path.display()
            )));
        }
        if name == MANIFEST {
            let mut text = Vec::new();
            entry.by_ref().take(SMALL_ENTRY).read_to_end(&mut text).map_err(|e| stream_error(path, e))?;
            manifest = Some(
                serde_json::from_slice(&text)
                    .map_err(|e| invalid(format!("the dump's manifest is malformed ({e}): refused")))?,
            );
            continue;
        }
        let size = entry.header().size().map_err(|e| stream_error(path, e))?;
        let target = into.join(&name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = File::options().write(true).create_new(true).open(&target).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                invalid(format!("the dump holds `{name}` twice: refused"))
            } else {
                e.into()
            }
        })?;
        let mut reader = Hashing::new(entry.by_ref());
        std::io::copy(&mut reader, &mut out).map_err(|e| match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => Error::from(e),
            _ => stream_error(path, e),
        })?;
        if reader.bytes != size {
            return Err(stream_error(path, std::io::ErrorKind::UnexpectedEof.into()));
        }
        seen.push(ManifestEntry { path: name, size, sha256: hex::encode(reader.hasher.finalize()) });
    }
    // Reading to the end checks the zstd frame's checksum.
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(|e| stream_error(path, e))?;
    if seen.is_empty() {
        return Err(invalid(format!("{} is empty or not a Nexus dump", path.display())));
    }
    let manifest = manifest.ok_or_else(|| {
        invalid(format!("{} has no manifest: it was cut short (an unfinished dump?); refused", path.display()))
    })?;
    compare(&manifest, &seen)?;
    Ok(manifest)
}

/// Every entry found must be in the manifest with the same size and hash, and the reverse.
fn compare(manifest: &Manifest, seen: &[ManifestEntry]) -> Result<()> {
    let listed: BTreeMap<&str, &ManifestEntry> = manifest.files.iter().map(|e| (e.path.as_str(), e)).collect();
    let found: BTreeMap<&str, &ManifestEntry> = seen.iter().map(|e| (e.path.as_str(), e)).collect();
    for (path, entry) in &found {
        match listed.get(path) {
            None => return Err(invalid(format!("`{path}` is in the dump but not in its manifest: refused"))),
            Some(want) if want.size != entry.size => {
                return Err(invalid(format!(
                    "`{path}` has {} bytes, the manifest says {}: the dump was changed; refused",
                    entry.size, want.size
                )));
            }
            Some(want) if want.sha256 != entry.sha256 => {
                return Err(invalid(format!(
                    "`{path}` does not match the SHA-256 in the manifest: the dump was changed or is corrupt; refused"
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(missing) = listed.keys().find(|p| !found.contains_key(*p)) {
        return Err(invalid(format!("`{missing}` is in the manifest but not in the dump: refused")));
    }
    Ok(())
}
