//! Where archives go and come from: a directory, or a prefix in a bucket of an S3-compatible
//! service (`s3://bucket/prefix`).
//!
//! Contract:
//! - [`Target::open`] resolves a location (or `[backup] dir`, or the default directory). An S3
//!   location uses the service of `[backup.s3]` (or `[store.objects]` when that is S3): the same
//!   settings, credentials and client as the S3 object store, checked with one listing first.
//! - An archive is written whole on the data directory's filesystem, then uploaded (in parts when
//!   large; an S3 object appears only once its upload completes), then its checksum file
//!   `<name>.sha256` is put beside it. The checksum file comes last, so an archive without one is
//!   an upload that did not finish: [`Target::list`] shows only archives that have one, and
//!   retention removes such leftovers once they are a day old.
//! - [`Target::fetch`] gives an archive as a local file: the file itself in a directory; from S3,
//!   a download (archive and checksum file) into a new directory beside the data directory, on
//!   its filesystem, removed when the [`Fetched`] drops. An S3 archive without its checksum file
//!   is refused: nothing would tell a tampered or partial object from a good one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::archive::{self, ArchiveFile};
use super::{BackupArchive, schedule};
use crate::config::{Config, parse_s3};
use crate::error::{Error, ErrorCode, Result};
use crate::store::objects::ByteStream;
use crate::store::objects::s3;

/// Parts of an upload, and how many are in flight at once.
const PART: usize = 16 << 20;
const PARTS_IN_FLIGHT: usize = 4;
/// The header is in the first zstd block of an archive: at most this much is read to list one.
const HEADER_BYTES: u64 = 512 << 10;
/// An archive without a checksum file this old is an upload that did not finish.
const UNFINISHED_AFTER: chrono::Duration = chrono::Duration::days(1);

/// Whether `location` names an S3 bucket.
pub fn is_s3(location: &str) -> bool {
    location.starts_with("s3://")
}

/// `s3://bucket/prefix/NAME` as (`s3://bucket/prefix`, `NAME`).
pub fn split_archive_url(url: &str) -> Result<(String, String)> {
    let (location, name) = url.rsplit_once('/').filter(|(l, _)| l.len() > "s3://".len()).ok_or_else(|| {
        Error::invalid(format!("`{url}` does not name an archive: write s3://BUCKET/PREFIX/ARCHIVE.tar.zst"))
    })?;
    parse_s3(location)?;
    check_name(name)?;
    Ok((location.to_string(), name.to_string()))
}

/// Refuses names that are not plain archive names.
pub fn check_name(name: &str) -> Result<()> {
    let plain = !name.is_empty()
        && name.ends_with(archive::EXTENSION)
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !plain {
        return Err(Error::invalid(format!("`{name}` is not the name of a backup archive")));
    }
    Ok(())
}

/// Where backups go unless told otherwise: `[backup] dir`, else the default directory.
pub fn default_location(config: &Config) -> String {
    match &config.backup.dir {
        Some(dir) => dir.to_string_lossy().to_string(),
        None => super::default_dir(config).display().to_string(),
    }
}

#[derive(Clone, Debug)]
pub enum Target {
    Dir(PathBuf),
    S3(Bucket),
}

/// A prefix in a bucket.
#[derive(Clone, Debug)]
pub struct Bucket {
    /// The client, rooted at the prefix: archive names are its keys.
    store: Arc<dyn object_store::ObjectStore>,
    /// `s3://bucket/prefix`, without a trailing `/`.
    url: String,
    /// `bucket "b" at https://host (prefix "p")`, for errors.
    described: String,
    /// The settings section the service comes from, for errors.
    section: &'static str,
}

impl Target {
    /// The target at `location` (a directory or `s3://bucket/prefix`), or the configured one.
    pub async fn open(config: &Config, location: Option<&str>) -> Result<Target> {
        let location = location.map(str::to_string).unwrap_or_else(|| default_location(config));
        if !is_s3(&location) {
            return Ok(Target::Dir(std::path::absolute(PathBuf::from(location))?));
        }
        let (bucket, prefix) = parse_s3(&location)?;
        let (objects, section) = config.backup_s3(&bucket, &prefix)?;
        let (store, described) = s3::open_bucket(&objects, section).await?;
        let url = if prefix.is_empty() { format!("s3://{bucket}") } else { format!("s3://{bucket}/{prefix}") };
        Ok(Target::S3(Bucket { store, url, described, section }))
    }

    /// The directory, or `s3://bucket/prefix`.
    pub fn describe(&self) -> String {
        match self {
            Target::Dir(dir) => dir.display().to_string(),
            Target::S3(bucket) => bucket.url.clone(),
        }
    }

    /// Where the archive `name` is: its path, or its `s3://` URL.
    pub fn locate(&self, name: &str) -> String {
        match self {
            Target::Dir(dir) => dir.join(name).display().to_string(),
            Target::S3(bucket) => format!("{}/{name}", bucket.url),
        }
    }

    /// The finished archives, newest first.
    pub async fn list(&self) -> Result<Vec<BackupArchive>> {
        match self {
            Target::Dir(dir) => {
                let dir = dir.clone();
                crate::store::blocking(move || super::list(&dir)).await
            }
            Target::S3(bucket) => bucket.list().await,
        }
    }

    /// Removes the archives retention does not keep; returns their names.
    pub async fn prune(&self, keep_last: u32, keep_daily: u32, keep_weekly: u32) -> Result<Vec<String>> {
        match self {
            Target::Dir(dir) => {
                let dir = dir.clone();
                crate::store::blocking(move || schedule::prune(&dir, keep_last, keep_daily, keep_weekly)).await
            }
            Target::S3(bucket) => bucket.prune(keep_last, keep_daily, keep_weekly).await,
        }
    }

    /// Fails with `not_found` unless the finished archive `name` is there.
    pub async fn check_exists(&self, name: &str) -> Result<()> {
        match self {
            Target::Dir(dir) => super::archive_in(dir, name).map(|_| ()),
            Target::S3(bucket) => {
                check_name(name)?;
                bucket.head(&sidecar_name(name)).await?;
                bucket.head(name).await.map(|_| ())
            }
        }
    }

    /// The archive `name` as a local file; an S3 archive is downloaded into a new directory in
    /// `near` first (see [`scratch_near`]).
    pub async fn fetch(&self, name: &str, near: &Path) -> Result<Fetched> {
        match self {
            Target::Dir(dir) => Ok(Fetched { path: super::archive_in(dir, name)?, scratch: None }),
            Target::S3(bucket) => bucket.fetch(name, near).await,
        }
    }

    /// The archive `name` as a stream, with its size and the SHA-256 its checksum file holds.
    pub async fn read(&self, name: &str) -> Result<(u64, Option<String>, ByteStream)> {
        match self {
            Target::Dir(dir) => {
                let path = super::archive_in(dir, name)?;
                let checksum = std::fs::read_to_string(archive::checksum_path(&path))
                    .ok()
                    .and_then(|t| t.split_whitespace().next().map(str::to_string));
                let file = tokio::fs::File::open(&path).await?;
                let size = file.metadata().await?.len();
                Ok((size, checksum, file_stream(file)))
            }
            Target::S3(bucket) => bucket.read(name).await,
        }
    }

    /// Puts a finished local archive (and its checksum file) in place: nothing to do for a
    /// directory (it was written there); uploaded for S3, the checksum file last.
    pub async fn publish(&self, written: ArchiveFile) -> Result<ArchiveFile> {
        match self {
            Target::Dir(_) => Ok(written),
            Target::S3(bucket) => bucket.upload(written).await,
        }
    }
}

/// An archive as a local file, downloaded into a scratch directory (removed on drop) or not.
#[derive(Debug)]
pub struct Fetched {
    pub path: PathBuf,
    scratch: Option<PathBuf>,
}

impl Drop for Fetched {
    fn drop(&mut self) {
        if let Some(scratch) = &self.scratch {
            let _ = std::fs::remove_dir_all(scratch);
        }
    }
}

/// Where downloads go: beside the data directory (its filesystem), else inside it, else the
/// system's temporary directory, whichever is writable first.
pub fn scratch_near(config: &Config) -> PathBuf {
    let data = std::path::absolute(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());
    let candidates = [data.parent().map(Path::to_path_buf), Some(data.clone()), Some(std::env::temp_dir())];
    candidates.into_iter().flatten().find(|dir| super::restore::writable(dir)).unwrap_or_else(std::env::temp_dir)
}

fn sidecar_name(name: &str) -> String {
    format!("{name}.sha256")
}

/// A file as a stream of chunks.
pub fn file_stream(file: tokio::fs::File) -> ByteStream {
    futures::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
    .boxed()
}

impl Bucket {
    fn error(&self, context: &str, name: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::not_found("backup", &format!("{}/{name}", self.url)),
            other => s3::in_section(s3::runtime_error(&self.described, context, other), self.section),
        }
    }

    async fn head(&self, name: &str) -> Result<object_store::ObjectMeta> {
        self.store.head(&ObjectPath::from(name)).await.map_err(|e| self.error("read an archive", name, e))
    }

    async fn list(&self) -> Result<Vec<BackupArchive>> {
        let (archives, _) = self.scan().await?;
        let mut out = Vec::new();
        for meta in archives {
            let name = meta.location.to_string();
            let range = 0..meta.size.min(HEADER_BYTES);
            let head = self.store.get_range(&meta.location, range).await.map_err(|e| self.error("read", &name, e))?;
            let Ok(header) = archive::read_header_from(&name, head.as_ref()) else { continue };
            out.push(BackupArchive {
                name,
                size: meta.size,
                created_at: header.created_at,
                seq: header.seq,
                checksum_file: true,
                derived: !header.derived.is_empty(),
            });
        }
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.name.cmp(&a.name)));
        Ok(out)
    }

    /// The archives directly under the prefix that have a checksum file, and those that do not.
    async fn scan(&self) -> Result<(Vec<object_store::ObjectMeta>, Vec<object_store::ObjectMeta>)> {
        let listing = self.store.list_with_delimiter(None).await.map_err(|e| self.error("list the backups", "", e))?;
        let names: std::collections::HashSet<String> = listing.objects.iter().map(|m| m.location.to_string()).collect();
        let (finished, unfinished) = listing
            .objects
            .into_iter()
            .filter(|m| check_name(m.location.as_ref()).is_ok())
            .partition(|m| names.contains(&sidecar_name(m.location.as_ref())));
        Ok((finished, unfinished))
    }

    async fn prune(&self, keep_last: u32, keep_daily: u32, keep_weekly: u32) -> Result<Vec<String>> {
        let archives = self.list().await?;
        let kept = schedule::keep(&archives, keep_last, keep_daily, keep_weekly);
        let mut removed = Vec::new();
        for archive in archives.iter().filter(|a| !kept.contains(&a.name)) {
            // The checksum file first: an archive never stays listed without its data.
            self.delete(&sidecar_name(&archive.name)).await?;
            self.delete(&archive.name).await?;
            removed.push(archive.name.clone());
        }
        let (_, unfinished) = self.scan().await?;
        for meta in unfinished.into_iter().filter(|m| Utc::now() - m.last_modified > UNFINISHED_AFTER) {
            let name = meta.location.to_string();
            tracing::warn!(archive = %self.url, name = %name, "removing an archive whose upload did not finish");
            self.delete(&name).await?;
        }
        Ok(removed)
    }

    async fn delete(&self, name: &str) -> Result<()> {
        match self.store.delete(&ObjectPath::from(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("remove an archive", name, e)),
        }
    }

    /// Uploads the local archive, then its checksum file; removes neither local file (they are in
    /// the backup's staging directory).
    async fn upload(&self, written: ArchiveFile) -> Result<ArchiveFile> {
        let local = PathBuf::from(&written.path);
        let name = local.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let path = ObjectPath::from(name.as_str());
        let mut file = tokio::fs::File::open(&local).await?;
        let size = file.metadata().await?.len();
        let fail = |e| self.error("upload the archive", &name, e);
        if size <= PART as u64 {
            let mut data = Vec::with_capacity(size as usize);
            file.read_to_end(&mut data).await?;
            self.store.put(&path, PutPayload::from(data)).await.map_err(fail)?;
        } else {
            let upload = self.store.put_multipart(&path).await.map_err(fail)?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
            let sent: Result<()> = async {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = file.read(&mut buf).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(fail)?;
                    writer.write(&buf[..n]);
                }
            }
            .await;
            if let Err(e) = sent {
                let _ = writer.abort().await;
                return Err(e);
            }
            writer.finish().await.map_err(fail)?;
        }
        let stored = self.head(&name).await?;
        if stored.size != size {
            return Err(Error::store(
                &format!("upload {}/{name}", self.url),
                format!("the service holds {} bytes of the {size} sent", stored.size),
            ));
        }
        let sidecar = format!("{}  {name}\n", written.sha256);
        self.store
            .put(&ObjectPath::from(sidecar_name(&name)), PutPayload::from(sidecar.into_bytes()))
            .await
            .map_err(|e| self.error("upload the checksum file", &name, e))?;
        Ok(ArchiveFile { path: format!("{}/{name}", self.url), size, sha256: written.sha256 })
    }

    async fn fetch(&self, name: &str, near: &Path) -> Result<Fetched> {
        check_name(name)?;
        let url = format!("{}/{name}", self.url);
        let sidecar = match self.store.get(&ObjectPath::from(sidecar_name(name))).await {
            Ok(result) => result.bytes().await.map_err(|e| self.error("download the checksum file", name, e))?,
            Err(object_store::Error::NotFound { .. }) => {
                // Tell a missing archive from one whose upload did not finish.
                self.head(name).await?;
                return Err(archive::invalid(format!(
                    "{url} has no checksum file beside it ({name}.sha256): its upload did not finish, or the file \
                     was removed; nothing tells it from a damaged copy, so it is refused: take another backup"
                )));
            }
            Err(e) => return Err(self.error("download the checksum file", name, e)),
        };
        let meta = self.head(name).await?;
        if let Ok(available) = fs4::available_space(near)
            && available < meta.size + (64 << 20)
        {
            return Err(Error::new(
                ErrorCode::DiskFull,
                format!(
                    "not enough disk space in {} to download {url} ({} MB, {} MB free); free space and retry",
                    near.display(),
                    meta.size >> 20,
                    available >> 20
                ),
            ));
        }
        let scratch = near.join(format!(".nexus-fetch-{}", uuid::Uuid::now_v7().simple()));
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&scratch)?;
        }
        let fetched = Fetched { path: scratch.join(name), scratch: Some(scratch.clone()) };
        std::fs::write(scratch.join(sidecar_name(name)), &sidecar)?;
        let result = self.store.get(&ObjectPath::from(name)).await.map_err(|e| self.error("download", name, e))?;
        let mut stream = result.into_stream();
        let mut out = {
            let mut options = tokio::fs::OpenOptions::new();
            options.write(true).create_new(true).mode(0o600);
            options.open(&fetched.path).await?
        };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.error("download", name, e))?;
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        out.sync_all().await?;
        Ok(fetched)
    }

    async fn read(&self, name: &str) -> Result<(u64, Option<String>, ByteStream)> {
        check_name(name)?;
        let sidecar = self
            .store
            .get(&ObjectPath::from(sidecar_name(name)))
            .await
            .map_err(|e| self.error("read the checksum file", name, e))?
            .bytes()
            .await
            .map_err(|e| self.error("read the checksum file", name, e))?;
        let checksum = String::from_utf8_lossy(&sidecar).split_whitespace().next().map(str::to_string);
        let result = self.store.get(&ObjectPath::from(name)).await.map_err(|e| self.error("download", name, e))?;
        let size = result.meta.size;
        let stream = result.into_stream().map(|chunk| chunk.map_err(std::io::Error::other)).boxed();
        Ok((size, checksum, stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_locations_are_parsed_and_checked() {
        assert_eq!(parse_s3("s3://backups").unwrap(), ("backups".into(), "".into()));
        assert_eq!(parse_s3("s3://backups/nexus/prod/").unwrap(), ("backups".into(), "nexus/prod".into()));
        for bad in ["s3://", "s3:///x", "s3://Bad_Bucket/x", "s3://b/../x", "s3://b/a//b"] {
            assert_eq!(parse_s3(bad).unwrap_err().code, ErrorCode::InvalidRequest, "{bad}");
        }
        let (location, name) = split_archive_url("s3://b/p/nexus-h-20250101T000000000Z-s1.tar.zst").unwrap();
        assert_eq!((location.as_str(), name.as_str()), ("s3://b/p", "nexus-h-20250101T000000000Z-s1.tar.zst"));
        assert!(split_archive_url("s3://b/p/../x.tar.zst").is_err());
        assert!(split_archive_url("s3://b").is_err());
    }
}
