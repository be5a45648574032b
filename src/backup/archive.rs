//! The backup archive: one `tar` stream compressed with zstd (frame checksums on).
//!
//! ```text
//! NEXUS-BACKUP.json   first: what the archive is (format, Nexus version, change-log position,
//!                     embedder, the derived stores' positions, sizes)
//! data/...            the data directory's files, regular files only
//! MANIFEST.json       last: the size and SHA-256 of every `data/` file
//! ```
//!
//! Beside it, `<archive>.sha256` holds the SHA-256 of the whole file (`sha256sum` format). An
//! archive is written as `<name>.partial` and renamed once complete, so a name without that
//! suffix is a finished archive.
//!
//! Reading checks everything and refuses, each with its own message: a checksum that differs, a
//! truncated or corrupt stream, a first entry that is not the header, a format newer than this
//! build reads, an entry that is not a regular file (links, devices, directories), a path that is
//! absolute or climbs out (`..`), a file the manifest does not list or lists with another size or
//! hash, a missing manifest, anything after the manifest.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorCode, Result};
use crate::store::Trickle;

/// The archive layout this build writes and the newest it reads.
pub const ARCHIVE_FORMAT: u32 = 1;
pub const HEADER_NAME: &str = "NEXUS-BACKUP.json";
pub const MANIFEST_NAME: &str = "MANIFEST.json";
pub const DATA_PREFIX: &str = "data/";
pub const EXTENSION: &str = ".tar.zst";
pub const PARTIAL_SUFFIX: &str = ".partial";

/// What the archive is: its first entry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct BackupHeader {
    /// Always `nexus-backup`.
    pub kind: String,
    /// The archive layout ([`ARCHIVE_FORMAT`]).
    pub format: u32,
    pub nexus_version: String,
    /// The data directory layout version (`FORMAT`).
    pub data_format: u32,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub host: String,
    /// The change-log position of the record store's copy: every write acknowledged before the
    /// backup started is at or below it.
    pub seq: u64,
    /// The embedder that made the vectors (the data directory's `embedder.json`).
    #[schema(value_type = Object)]
    pub embedder: serde_json::Value,
    /// The derived stores in the archive and the position each holds (at most `seq`); empty
    /// when taken with `--no-derived` (they are rebuilt on restore).
    pub derived: BTreeMap<String, u64>,
    /// Number and total size of the `data/` files.
    pub files: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ManifestEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub files: Vec<ManifestEntry>,
}

pub fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::ArchiveInvalid, message)
}

/// Counts and hashes what passes through it (backups and dumps).
pub(crate) struct Hashing<W> {
    pub(crate) inner: W,
    pub(crate) hasher: Sha256,
    pub(crate) bytes: u64,
}

impl<T> Hashing<T> {
    pub(crate) fn new(inner: T) -> Hashing<T> {
        Hashing { inner, hasher: Sha256::new(), bytes: 0 }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

fn hashing<T>(inner: T) -> Hashing<T> {
    Hashing::new(inner)
}

/// Writes an archive: [`ArchiveWriter::create`], the header, files, then [`ArchiveWriter::finish`].
pub struct ArchiveWriter {
    tar: tar::Builder<zstd::Encoder<'static, Hashing<BufWriter<Trickle>>>>,
    partial: PathBuf,
    path: PathBuf,
    manifest: Manifest,
}

/// The finished archive.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArchiveFile {
    pub path: String,
    /// Size of the archive file.
    pub size: u64,
    pub sha256: String,
}

impl ArchiveWriter {
    /// Starts `path` (written as `path.partial` until finished) with `header` as its first entry.
    pub fn create(path: &Path, header: &BackupHeader) -> Result<ArchiveWriter> {
        let partial = partial_path(path);
        // The archive holds the master key and every record: readable by its owner only.
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            File::options().write(true).create(true).truncate(true).mode(0o600).open(&partial)?
        };
        let mut encoder = zstd::Encoder::new(hashing(BufWriter::with_capacity(1 << 20, Trickle::new(file))), 3)?;
        encoder.include_checksum(true)?;
        let mut writer = ArchiveWriter {
            tar: tar::Builder::new(encoder),
            partial,
            path: path.to_path_buf(),
            manifest: Manifest::default(),
        };
        let header = serde_json::to_vec_pretty(header).map_err(|e| Error::internal("encode the backup header", e))?;
        writer.append(HEADER_NAME, &mut header.as_slice(), header.len() as u64)?;
        Ok(writer)
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

    /// Adds the file at `source` as `data/<relative>`, hashing it on the way.
    pub fn add_file(&mut self, relative: &str, source: &Path) -> Result<u64> {
        let file = File::open(source)?;
        let size = file.metadata()?.len();
        let mut reader = hashing(BufReader::with_capacity(1 << 20, file).take(size));
        let name = format!("{DATA_PREFIX}{relative}");
        self.append(&name, &mut reader, size)?;
        if reader.bytes != size {
            return Err(Error::store("back up a file", format!("{} changed size while it was read", source.display())));
        }
        self.manifest.files.push(ManifestEntry {
            path: relative.to_string(),
            size,
            sha256: hex::encode(reader.hasher.finalize()),
        });
        Ok(size)
    }

    /// Appends the manifest, ends the stream, writes the checksum file and renames the archive
    /// into place, each made durable.
    pub fn finish(mut self) -> Result<ArchiveFile> {
        let manifest =
            serde_json::to_vec_pretty(&self.manifest).map_err(|e| Error::internal("encode the backup manifest", e))?;
        self.append(MANIFEST_NAME, &mut manifest.as_slice(), manifest.len() as u64)?;
        let encoder = self.tar.into_inner()?;
        let mut counted = encoder.finish()?;
        counted.flush()?;
        let file = counted.inner.into_inner().map_err(|e| Error::from(e.into_error()))?.into_inner();
        file.sync_all()?;
        drop(file);
        let sha256 = hex::encode(counted.hasher.finalize());
        let name = self.path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let sidecar = checksum_path(&self.path);
        let sidecar_partial = partial_path(&sidecar);
        let mut out = File::create(&sidecar_partial)?;
        writeln!(out, "{sha256}  {name}")?;
        out.sync_all()?;
        std::fs::rename(&sidecar_partial, &sidecar)?;
        std::fs::rename(&self.partial, &self.path)?;
        if let Some(parent) = self.path.parent() {
            File::open(parent)?.sync_all()?;
        }
        Ok(ArchiveFile { path: self.path.display().to_string(), size: counted.bytes, sha256 })
    }

    /// Drops an unfinished archive.
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.partial);
    }
}

pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(PARTIAL_SUFFIX);
    PathBuf::from(name)
}

pub fn checksum_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".sha256");
    PathBuf::from(name)
}

/// What a full read of an archive found.
#[derive(Clone, Debug)]
pub struct Contents {
    pub header: BackupHeader,
    pub manifest: Manifest,
    /// Whether a checksum file was there (and matched).
    pub checksum_file: bool,
}

/// Checks the archive's checksum file against the whole file, when there is one.
pub fn check_checksum_file(path: &Path) -> Result<bool> {
    let sidecar = checksum_path(path);
    let expected = match std::fs::read_to_string(&sidecar) {
        Ok(text) => text.split_whitespace().next().unwrap_or_default().to_ascii_lowercase(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    let mut file = hashing(std::io::sink());
    std::io::copy(&mut BufReader::with_capacity(1 << 20, File::open(path)?), &mut file)?;
    let actual = hex::encode(file.hasher.finalize());
    if actual != expected {
        return Err(invalid(format!(
            "{} does not match its checksum file {} (SHA-256 {actual}, expected {expected}): \
             the archive is incomplete or was changed; take another backup or fetch it again",
            path.display(),
            sidecar.display()
        )));
    }
    Ok(true)
}

/// The entry path of a data file, or why it is refused.
fn data_path(raw: &Path) -> Result<String> {
    let text = raw.to_string_lossy().to_string();
    if raw.is_absolute() || text.starts_with('/') {
        return Err(invalid(format!("the archive holds an absolute path `{text}`: refused")));
    }
    let mut parts = Vec::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().to_string()),
            Component::ParentDir => {
                return Err(invalid(format!("the archive holds a path that climbs out (`..`): `{text}`: refused")));
            }
            Component::CurDir => {}
            _ => return Err(invalid(format!("the archive holds an absolute path `{text}`: refused"))),
        }
    }
    let joined = parts.join("/");
    match joined.strip_prefix(DATA_PREFIX) {
        Some(rest) if !rest.is_empty() => Ok(rest.to_string()),
        _ => Err(invalid(format!("the archive holds `{text}`, which is not part of a Nexus backup: refused"))),
    }
}

fn stream_error(path: &Path, e: std::io::Error) -> Error {
    invalid(format!("{} is truncated or corrupt ({e}); take another backup or fetch it again", path.display()))
}

/// Reads the whole archive, checking every entry (and the checksum file unless the caller did);
/// with `extract_to`, writes the data files under that (new, empty) directory. Nothing is left
/// there on failure.
pub fn read(
    path: &Path,
    checksum_checked: Option<bool>,
    extract_to: Option<&Path>,
    mut progress: impl FnMut(u64),
) -> Result<Contents> {
    let outcome = read_inner(path, checksum_checked, extract_to, &mut progress);
    if outcome.is_err()
        && let Some(dir) = extract_to
    {
        let _ = std::fs::remove_dir_all(dir);
    }
    outcome
}

fn read_inner(
    path: &Path,
    checksum_checked: Option<bool>,
    extract_to: Option<&Path>,
    progress: &mut dyn FnMut(u64),
) -> Result<Contents> {
    let checksum_file = match checksum_checked {
        Some(found) => found,
        None => check_checksum_file(path)?,
    };
    let file = File::open(path)?;
    let decoder = zstd::Decoder::new(file).map_err(|e| stream_error(path, e))?;
    let mut archive = tar::Archive::new(decoder);
    let mut entries = archive.entries().map_err(|e| stream_error(path, e))?;
    let mut header: Option<BackupHeader> = None;
    let mut manifest: Option<Manifest> = None;
    let mut seen: Vec<ManifestEntry> = Vec::new();
    let mut done = 0u64;
    for entry in entries.by_ref() {
        let mut entry = entry.map_err(|e| stream_error(path, e))?;
        let raw = entry.path().map_err(|e| stream_error(path, e))?.into_owned();
        let kind = entry.header().entry_type();
        if manifest.is_some() {
            return Err(invalid(format!("the archive goes on after its manifest (`{}`): refused", raw.display())));
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
            return Err(invalid(format!("the archive holds {what} (`{}`): refused", raw.display())));
        }
        let name = raw.to_string_lossy().to_string();
        if header.is_none() {
            if name != HEADER_NAME {
                return Err(invalid(format!(
                    "{} is not a Nexus backup: its first entry is `{name}`, not {HEADER_NAME}",
                    path.display()
                )));
            }
            let mut text = Vec::new();
            entry.by_ref().take(1 << 20).read_to_end(&mut text).map_err(|e| stream_error(path, e))?;
            let value: serde_json::Value = serde_json::from_slice(&text)
                .map_err(|e| invalid(format!("the backup header is not valid JSON ({e}): refused")))?;
            let format = value["format"].as_u64().unwrap_or(0);
            if value["kind"] != "nexus-backup" {
                return Err(invalid(format!(
                    "{} is not a Nexus backup (its header has no `kind: nexus-backup`)",
                    path.display()
                )));
            }
            if format > u64::from(ARCHIVE_FORMAT) {
                return Err(invalid(format!(
                    "the archive has format {format}, newer than this nexus reads ({ARCHIVE_FORMAT}): \
                     restore it with Nexus {} or newer",
                    value["nexus_version"].as_str().unwrap_or("?")
                )));
            }
            header = Some(
                serde_json::from_value(value)
                    .map_err(|e| invalid(format!("the backup header is malformed ({e}): refused")))?,
            );
            continue;
        }
        if name == MANIFEST_NAME {
            let mut text = Vec::new();
            entry.by_ref().take(256 << 20).read_to_end(&mut text).map_err(|e| stream_error(path, e))?;
            manifest = Some(
                serde_json::from_slice(&text)
                    .map_err(|e| invalid(format!("the backup manifest is malformed ({e}): refused")))?,
            );
            continue;
        }
        let relative = data_path(&raw)?;
        let size = entry.header().size().map_err(|e| stream_error(path, e))?;
        let mut reader = hashing(entry.by_ref());
        match extract_to {
            Some(dir) => {
                let target = dir.join(&relative);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let mut out = File::options().write(true).create_new(true).open(&target).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        invalid(format!("the archive holds `{relative}` twice: refused"))
                    } else {
                        e.into()
                    }
                })?;
                std::io::copy(&mut reader, &mut out).map_err(|e| match e.kind() {
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => Error::from(e),
                    _ => stream_error(path, e),
                })?;
                out.sync_all()?;
            }
            None => {
                std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| stream_error(path, e))?;
            }
        }
        if reader.bytes != size {
            return Err(stream_error(path, std::io::ErrorKind::UnexpectedEof.into()));
        }
        done += size;
        progress(done);
        seen.push(ManifestEntry { path: relative, size, sha256: hex::encode(reader.hasher.finalize()) });
    }
    // Reading to the end checks the zstd frame's checksum.
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(|e| stream_error(path, e))?;
    let header = header.ok_or_else(|| invalid(format!("{} is empty or not a Nexus backup", path.display())))?;
    let manifest = manifest.ok_or_else(|| {
        invalid(format!(
            "{} has no manifest: it was cut short (an unfinished backup?); use another archive",
            path.display()
        ))
    })?;
    compare(&manifest, &seen)?;
    Ok(Contents { header, manifest, checksum_file })
}

/// Every file found must be in the manifest with the same size and hash, and the reverse.
fn compare(manifest: &Manifest, seen: &[ManifestEntry]) -> Result<()> {
    let listed: BTreeMap<&str, &ManifestEntry> = manifest.files.iter().map(|e| (e.path.as_str(), e)).collect();
    let found: BTreeMap<&str, &ManifestEntry> = seen.iter().map(|e| (e.path.as_str(), e)).collect();
    for (path, entry) in &found {
        match listed.get(path) {
            None => return Err(invalid(format!("`{path}` is in the archive but not in its manifest: refused"))),
            Some(want) if want.size != entry.size => {
                return Err(invalid(format!(
                    "`{path}` has {} bytes, its manifest says {}: the archive was changed; refused",
                    entry.size, want.size
                )));
            }
            Some(want) if want.sha256 != entry.sha256 => {
                return Err(invalid(format!(
                    "`{path}` does not match the SHA-256 in the manifest: the archive was changed or is corrupt; refused"
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(missing) = listed.keys().find(|p| !found.contains_key(*p)) {
        return Err(invalid(format!("`{missing}` is in the manifest but not in the archive: refused")));
    }
    Ok(())
}

/// Reads only the header (the first entry) of an archive, for listings.
pub fn read_header(path: &Path) -> Result<BackupHeader> {
    read_header_from(path, File::open(path)?)
}

/// The header from the start of an archive (`name` for messages): the first entry is in the
/// first compressed block, so the archive's first few hundred KiB are enough.
pub fn read_header_from(name: impl AsRef<Path>, start: impl Read) -> Result<BackupHeader> {
    let path = name.as_ref();
    let decoder = zstd::Decoder::new(start).map_err(|e| stream_error(path, e))?;
    let mut archive = tar::Archive::new(decoder);
    let mut entries = archive.entries().map_err(|e| stream_error(path, e))?;
    let mut entry = entries
        .next()
        .ok_or_else(|| invalid(format!("{} is empty", path.display())))?
        .map_err(|e| stream_error(path, e))?;
    if entry.path().map_err(|e| stream_error(path, e))?.to_string_lossy() != HEADER_NAME {
        return Err(invalid(format!("{} is not a Nexus backup", path.display())));
    }
    let mut text = Vec::new();
    entry.by_ref().take(1 << 20).read_to_end(&mut text).map_err(|e| stream_error(path, e))?;
    serde_json::from_slice(&text).map_err(|e| invalid(format!("the backup header is malformed ({e})")))
}
