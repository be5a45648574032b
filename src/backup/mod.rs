//! Backups of the appliance's data directory, taken while it serves.
//!
//! How a backup stays consistent without stopping writers:
//! 1. each derived store's indexer is held between two batches for as long as the store takes
//!    to copy itself (`snapshot`: links for tantivy and usearch, whose files never change once
//!    written; a read-out for sled). Its position P is at most the record's position below;
//! 2. object deletions are held back, the record database is copied by SQLite's online backup
//!    (one read transaction: writers go on), giving its change-log position S;
//! 3. the object files are linked, and deletions go on.
//!
//! The copies sit in `.backup-<id>` inside the data directory (same filesystem, so links work)
//! and are streamed into the archive ([`archive`]) in the target directory, then removed; for an
//! S3 target ([`target`]) the archive is written in the staging directory, then uploaded. A
//! restore replays (P, S] into each derived store, as a start after a crash does.
//!
//! `restore` holds verification, restore and the trial restore; `schedule` runs backups on a
//! cron schedule with retention; `target` is where archives go (a directory or S3).

pub mod archive;
pub mod restore;
pub mod schedule;
pub mod target;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::error::{Error, ErrorCode, Result};
use archive::{ArchiveFile, ArchiveWriter, BackupHeader};
use target::Target;

/// One backup at a time in a process.
static RUNNING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where staging copies live inside the data directory.
pub const STAGING_PREFIX: &str = ".backup-";

/// The job kind of a backup taken through the API.
pub const BACKUP_JOB: &str = "backup";
/// The job kind of a verification taken through the API.
pub const VERIFY_JOB: &str = "backup-verify";

#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Where the archive goes.
    pub target: Target,
    /// Leave the derived stores out: smaller, rebuilt from the record on restore.
    pub no_derived: bool,
}

/// A step of a running backup, for progress displays.
#[derive(Clone, Debug, Serialize)]
pub struct Progress {
    pub step: &'static str,
    pub done: u64,
    pub total: u64,
}

/// What a finished backup reports.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Taken {
    #[serde(flatten)]
    pub archive: ArchiveFile,
    pub header: BackupHeader,
    /// The longest time the indexers were held (writers are never held).
    pub longest_hold_ms: u64,
    pub took_ms: u64,
}

/// Takes a backup of `app`'s data directory into `options.dir`.
pub async fn take(app: &App, options: &BackupOptions, progress: &(dyn Fn(Progress) + Send + Sync)) -> Result<Taken> {
    let Ok(_running) = RUNNING.try_lock() else {
        return Err(Error::new(ErrorCode::Conflict, "a backup is already running; wait for it to finish"));
    };
    let started = Instant::now();
    let root = app.dir.lock().root().to_path_buf();
    if let Target::Dir(dir) = &options.target
        && !dir.exists()
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::invalid(format!("cannot create the backup directory {}: {e}", dir.display())))?;
    }
    remove_stale_staging(&root);
    let staging = root.join(format!("{STAGING_PREFIX}{}", uuid::Uuid::now_v7().simple()));
    let outcome = take_into(app, options, &root, &staging, started, progress).await;
    let _ = std::fs::remove_dir_all(&staging);
    match &outcome {
        Ok(taken) => {
            metrics::counter!("nexus_backups_total", "outcome" => "ok").increment(1);
            metrics::gauge!("nexus_backup_last_success_timestamp_seconds")
                .set(taken.header.created_at.timestamp() as f64);
            metrics::gauge!("nexus_backup_last_size_bytes").set(taken.archive.size as f64);
            metrics::gauge!("nexus_backup_last_duration_seconds").set(taken.took_ms as f64 / 1000.0);
            tracing::info!(path = %taken.archive.path, bytes = taken.archive.size, seq = taken.header.seq,
                took_ms = taken.took_ms, "backup taken");
        }
        Err(e) => {
            metrics::counter!("nexus_backups_total", "outcome" => "failed").increment(1);
            tracing::error!(error = %e, "backup failed");
        }
    }
    outcome
}

async fn take_into(
    app: &App,
    options: &BackupOptions,
    root: &Path,
    staging: &Path,
    started: Instant,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Taken> {
    let data = staging.join("data");
    std::fs::create_dir_all(&data)?;
    let stores = &app.stores;
    if stores.records.backend() != "sqlite" {
        return Err(Error::invalid(format!(
            "`nexus backup` copies the appliance's embedded stores; this node keeps its records in {}, \
             which has backups of its own (use `nexus dump` for a portable copy)",
            stores.records.backend()
        )));
    }

    // 1. The derived stores, each held only while it copies itself.
    let mut derived = BTreeMap::new();
    let mut longest_hold = std::time::Duration::ZERO;
    if !options.no_derived {
        let indexers = app.writes.indexers();
        for (i, indexer) in indexers.iter().enumerate() {
            progress(Progress { step: "derived stores", done: i as u64, total: indexers.len() as u64 });
            let name = indexer.name();
            let held = indexer.hold().await;
            let hold_started = Instant::now();
            let position = indexer.projection.snapshot(&data.join(name)).await;
            drop(held);
            longest_hold = longest_hold.max(hold_started.elapsed());
            if let Some(position) = position? {
                derived.insert(name.to_string(), position);
            }
        }
    }

    // 2 and 3. The record, then the objects, with deletions held back in between.
    progress(Progress { step: "record store", done: 0, total: 1 });
    let held_deletes = stores.objects.hold_deletes().await;
    std::fs::create_dir_all(data.join("records"))?;
    let seq = stores.records.backup_into(&data.join("records").join("nexus.sqlite")).await?;
    progress(Progress { step: "objects", done: 0, total: 1 });
    stores.objects.snapshot(&data.join("objects")).await?;
    drop(held_deletes);

    // The data directory's own small files (format, embedder, master key, markers).
    for entry in std::fs::read_dir(root)?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if entry.file_type()?.is_file() && !name.starts_with('.') && name != "nexus.lock" {
            std::fs::copy(entry.path(), data.join(&name))?;
        }
    }

    // The archive.
    let files = list_files(&data)?;
    let bytes: u64 = files.iter().map(|(_, size)| size).sum();
    let header = BackupHeader {
        kind: "nexus-backup".into(),
        format: archive::ARCHIVE_FORMAT,
        nexus_version: env!("CARGO_PKG_VERSION").into(),
        data_format: crate::datadir::read_format(root)?.unwrap_or(crate::datadir::CURRENT_FORMAT),
        created_at: chrono::Utc::now(),
        host: host_name(),
        seq,
        embedder: crate::embed::identity::read(root)?
            .map(|identity| serde_json::to_value(identity).unwrap_or_default())
            .unwrap_or_default(),
        derived,
        files: files.len() as u64,
        bytes,
    };
    let path = match &options.target {
        Target::Dir(dir) => dir.join(archive_name(&header)),
        Target::S3(_) => {
            // Written whole here, then uploaded.
            std::fs::create_dir_all(staging.join("upload"))?;
            staging.join("upload").join(archive_name(&header))
        }
    };
    let (data_dir, archive_path, header_copy) = (data.clone(), path.clone(), header.clone());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let writing = crate::store::low_priority(move || {
        let mut writer = ArchiveWriter::create(&archive_path, &header_copy)?;
        let mut done = 0;
        for (relative, _) in &files {
            match writer.add_file(relative, &data_dir.join(relative)) {
                Ok(size) => done += size,
                Err(e) => {
                    writer.abandon();
                    return Err(e);
                }
            }
            let _ = tx.send(done);
        }
        writer.finish()
    });
    let forward = async {
        while let Some(done) = rx.recv().await {
            progress(Progress { step: "archive", done, total: bytes });
        }
    };
    let (written, ()) = tokio::join!(writing, forward);
    let written = written.map_err(|e| match e.code {
        ErrorCode::DiskFull => Error::disk_full(&format!("the backup {}", path.display()), "no space left"),
        _ => e,
    })?;
    if let Target::S3(_) = &options.target {
        progress(Progress { step: "upload", done: 0, total: written.size });
    }
    let written = options.target.publish(written).await?;
    Ok(Taken {
        archive: written,
        header,
        longest_hold_ms: longest_hold.as_millis() as u64,
        took_ms: started.elapsed().as_millis() as u64,
    })
}

/// Every file under `dir`, as `/`-separated relative paths with sizes, in a stable order: the
/// record first (a restore can check it before the rest arrives), then the rest by path.
fn list_files(dir: &Path) -> Result<Vec<(String, u64)>> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir).min_depth(1) {
        let entry = entry.map_err(|e| Error::store("list the backup's files", e))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let relative = entry.path().strip_prefix(dir).map_err(|e| Error::internal("backup path", e))?;
        let relative = relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
        files.push((relative, entry.metadata().map_err(|e| Error::store("read a file's size", e))?.len()));
    }
    files.sort_by(|a, b| (!a.0.starts_with("records/"), &a.0).cmp(&(!b.0.starts_with("records/"), &b.0)));
    Ok(files)
}

/// Staging folders a killed backup left behind.
fn remove_stale_staging(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let clean: String =
        raw.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    if clean.is_empty() { "nexus".into() } else { clean }
}

/// `nexus-<host>-<UTC time>-s<seq>.tar.zst`.
fn archive_name(header: &BackupHeader) -> String {
    format!(
        "nexus-{}-{}-s{}{}",
        header.host,
        header.created_at.format("%Y%m%dT%H%M%S%3fZ"),
        header.seq,
        archive::EXTENSION
    )
}

/// A finished archive in a backup directory.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct BackupArchive {
    pub name: String,
    pub size: u64,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub seq: u64,
    /// Whether its checksum file is beside it.
    pub checksum_file: bool,
    /// Whether it holds the derived stores.
    pub derived: bool,
}

/// The finished archives in `dir`, newest first (unfinished `.partial` files are never listed).
pub fn list(dir: &Path) -> Result<Vec<BackupArchive>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.ends_with(archive::EXTENSION) || !entry.file_type()?.is_file() {
            continue;
        }
        let path = entry.path();
        let Ok(header) = archive::read_header(&path) else { continue };
        out.push(BackupArchive {
            name,
            size: entry.metadata()?.len(),
            created_at: header.created_at,
            seq: header.seq,
            checksum_file: archive::checksum_path(&path).exists(),
            derived: !header.derived.is_empty(),
        });
    }
    out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.name.cmp(&a.name)));
    Ok(out)
}

/// The path of the archive `name` in `dir`, refusing names that are not plain archive names.
pub fn archive_in(dir: &Path, name: &str) -> Result<PathBuf> {
    target::check_name(name)?;
    let path = dir.join(name);
    if !path.is_file() {
        return Err(Error::not_found("backup", name));
    }
    Ok(path)
}

/// The directory backups go to unless told otherwise: `[backup] dir`, else `backups` beside the
/// data directory (see [`target::default_location`] for an S3 `[backup] dir`).
pub fn default_dir(config: &crate::config::Config) -> PathBuf {
    match &config.backup.dir {
        Some(dir) if !target::is_s3(&dir.to_string_lossy()) => dir.clone(),
        _ => {
            let data = &config.data_dir;
            let name = data.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "nexus-data".into());
            data.parent().unwrap_or(Path::new(".")).join(format!("{name}.backups"))
        }
    }
}

/// Takes and verifies backups as jobs. It reaches the app through `app`, set once the app is
/// built (the job runner is built before it).
#[derive(Default)]
pub struct BackupJobs {
    pub app: std::sync::OnceLock<std::sync::Weak<App>>,
}

#[async_trait::async_trait]
impl crate::jobs::JobHandler for BackupJobs {
    async fn run(&self, ctx: &crate::jobs::JobContext) -> Result<serde_json::Value> {
        let app: Arc<App> =
            self.app.get().and_then(|weak| weak.upgrade()).ok_or_else(|| {
                Error::new(ErrorCode::NotReady, "the server is starting or stopping; the job runs again")
            })?;
        let payload = &ctx.job().payload;
        let target = Target::open(&app.config, payload["dir"].as_str()).await?;
        match ctx.job().kind.as_str() {
            VERIFY_JOB => {
                let name = payload["name"].as_str().unwrap_or_default();
                ctx.progress(0, 1).await?;
                let report = verify_in(&app.config, &target, name).await;
                metrics::counter!("nexus_backup_verifications_total", "outcome" => if report.is_ok() { "ok" } else { "failed" })
                    .increment(1);
                let report = report?;
                ctx.progress(1, 1).await?;
                Ok(serde_json::to_value(report).unwrap_or_default())
            }
            _ => {
                let options = BackupOptions { target, no_derived: payload["no_derived"].as_bool().unwrap_or(false) };
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
                let report = move |p: Progress| {
                    let _ = tx.send(p);
                };
                let taking = take(&app, &options, &report);
                tokio::pin!(taking);
                loop {
                    tokio::select! {
                        taken = &mut taking => {
                            let taken = taken?;
                            return Ok(serde_json::to_value(taken).unwrap_or_default());
                        }
                        Some(p) = rx.recv() => {
                            if p.step == "archive" {
                                ctx.progress(p.done, p.total.max(1)).await?;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Verifies the archive `name` of `target` (downloaded first from S3), as `nexus backup verify`.
pub async fn verify_in(config: &crate::config::Config, target: &Target, name: &str) -> Result<restore::VerifyReport> {
    let fetched = target.fetch(name, &target::scratch_near(config)).await?;
    let mut report = restore::verify(config, &fetched.path).await?;
    report.archive = target.locate(name);
    Ok(report)
}
