//! Verifying and restoring archives.
//!
//! Both read the whole archive first ([`super::archive::read`]: checksum file, every entry's path
//! and type, every file's size and SHA-256 against the manifest), extracting it into a new
//! directory, then open that copy as Nexus would: SQLite's `integrity_check` and
//! `foreign_key_check`, the change-log position the header promises, the data directory's format
//! brought forward, every derived store caught up from the change log (a store the archive left
//! out, or one that does not open, is rebuilt), and `nexus check` of record against derived.
//!
//! `verify` does this in a scratch directory beside the archive and removes it. `restore` does it
//! in `.<name>.restore-<id>` beside the target data directory (same filesystem) and then swaps the
//! two directories in one `renameat2(RENAME_EXCHANGE)`: the data directory is always the old one
//! or the new one. The previous one is kept as `<name>.previous-<time>`. A restore killed before
//! the swap leaves a scratch directory holding [`IN_PROGRESS`], removed by the next restore; one
//! killed after it leaves the previous data under the scratch name, which the next restore moves to
//! `<name>.previous-<time>`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::archive::{self, BackupHeader};
use crate::app::App;
use crate::config::Config;
use crate::datadir::{DataDir, Holder};
use crate::error::{Error, ErrorCode, Result};

/// Inside a scratch directory while it is being filled: it is not a data directory yet.
pub const IN_PROGRESS: &str = "RESTORE-IN-PROGRESS";

/// What verification (or the checks of a restore) found.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct VerifyReport {
    pub archive: String,
    pub header: BackupHeader,
    /// Whether a checksum file was beside the archive (it matched, or the archive was refused).
    pub checksum_file: bool,
    pub files: u64,
    pub bytes: u64,
    /// `ok`: SQLite's integrity and foreign-key checks found nothing.
    pub integrity: String,
    /// Derived stores rebuilt from the record (left out of the archive, or not opening).
    pub rebuilt: Vec<String>,
    /// Records compared with the derived stores (`nexus check`), and whether they agree.
    pub records_checked: u64,
    pub check_ok: bool,
    pub took_ms: u64,
}

/// Checks an archive completely, with a trial restore into a scratch directory beside it.
pub async fn verify(config: &Config, path: &Path) -> Result<VerifyReport> {
    let started = Instant::now();
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let scratch_root = if writable(parent) { parent.to_path_buf() } else { std::env::temp_dir() };
    let scratch = scratch_root.join(format!(".nexus-verify-{}", uuid::Uuid::now_v7().simple()));
    let outcome = check_into(config, path, &scratch, started).await;
    let _ = std::fs::remove_dir_all(&scratch);
    outcome
}

pub(crate) fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!(".nexus-probe-{}", uuid::Uuid::now_v7().simple()));
    let ok = std::fs::File::create(&probe).is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// Reads and extracts the archive into `scratch` (a new directory), then opens and checks it.
async fn check_into(config: &Config, path: &Path, scratch: &Path, started: Instant) -> Result<VerifyReport> {
    let checked = path.to_path_buf();
    let checksum_file = crate::store::blocking(move || archive::check_checksum_file(&checked)).await?;
    let header = archive::read_header(path)?;
    if header.data_format > crate::datadir::CURRENT_FORMAT {
        return Err(archive::invalid(format!(
            "the archive holds a data directory of format {}, newer than this nexus reads ({}): \
             restore it with Nexus {} or newer",
            header.data_format,
            crate::datadir::CURRENT_FORMAT,
            header.nexus_version
        )));
    }
    ensure_space(scratch.parent().unwrap_or(Path::new(".")), header.bytes)?;
    std::fs::create_dir_all(scratch)?;
    std::fs::write(scratch.join(IN_PROGRESS), b"")?;
    let (archive_path, target) = (path.to_path_buf(), scratch.to_path_buf());
    let contents =
        crate::store::blocking(move || archive::read(&archive_path, Some(checksum_file), Some(&target), |_| {}))
            .await?;
    // read() removes the directory on failure; on success it holds the data files.
    if contents.header != header {
        return Err(archive::invalid("the archive's header changed while it was read: refused"));
    }
    let integrity = check_record_database(scratch, header.seq).await?;
    let (rebuilt, records_checked, check_ok) = open_and_check(config, scratch, &header).await?;
    let files = contents.manifest.files.len() as u64;
    let bytes = contents.manifest.files.iter().map(|f| f.size).sum();
    Ok(VerifyReport {
        archive: path.display().to_string(),
        header,
        checksum_file: contents.checksum_file,
        files,
        bytes,
        integrity,
        rebuilt,
        records_checked,
        check_ok,
        took_ms: started.elapsed().as_millis() as u64,
    })
}

/// Refuses when `dir`'s filesystem has less room than `bytes` and a margin.
fn ensure_space(dir: &Path, bytes: u64) -> Result<()> {
    let Ok(available) = fs4::available_space(dir) else { return Ok(()) };
    let needed = bytes + bytes / 10 + (64 << 20);
    if available < needed {
        return Err(Error::new(
            ErrorCode::DiskFull,
            format!(
                "not enough disk space in {}: the archive unpacks to {} MB and needs about {} MB, {} MB are free; \
                 free space or restore elsewhere",
                dir.display(),
                bytes >> 20,
                needed >> 20,
                available >> 20
            ),
        ));
    }
    Ok(())
}

/// SQLite's own checks of the restored record database, and the position the header promises.
async fn check_record_database(root: &Path, seq: u64) -> Result<String> {
    let records = root.join("records");
    // Leftovers beside a database read as a corrupt one; the archive never holds them.
    for stray in ["nexus.sqlite-wal", "nexus.sqlite-shm", "nexus.sqlite-journal"] {
        let _ = std::fs::remove_file(records.join(stray));
    }
    let db = records.join("nexus.sqlite");
    crate::store::blocking(move || {
        if !db.is_file() {
            return Err(archive::invalid("the archive holds no record database (records/nexus.sqlite): refused"));
        }
        let conn = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let corrupt =
            |e: rusqlite::Error| archive::invalid(format!("the record database does not open ({e}): refused"));
        let problems: Vec<String> = conn
            .prepare("PRAGMA integrity_check")
            .and_then(|mut stmt| stmt.query_map([], |r| r.get::<_, String>(0))?.collect())
            .map_err(corrupt)?;
        if problems != ["ok"] {
            return Err(archive::invalid(format!(
                "the record database fails SQLite's integrity check: {}",
                problems.into_iter().take(5).collect::<Vec<_>>().join("; ")
            )));
        }
        let dangling: i64 =
            conn.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0)).map_err(corrupt)?;
        if dangling > 0 {
            return Err(archive::invalid(format!(
                "the record database has {dangling} rows whose references are missing"
            )));
        }
        let head: i64 = conn
            .query_row("SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0)", [], |r| r.get(0))
            .map_err(corrupt)?;
        if head as u64 != seq {
            return Err(archive::invalid(format!(
                "the record database is at change-log position {head}, the archive's header says {seq}: refused"
            )));
        }
        Ok("ok".to_string())
    })
    .await
}

/// The configuration a restored copy is opened with: the embedded stores, no LLM (pending jobs
/// in the copy must not call out), `root` as the data directory.
fn trial_config(config: &Config, root: &Path) -> Config {
    use crate::config::{GraphBackend, LlmProvider, ObjectsBackend, RecordsBackend, TextBackend, VectorsBackend};
    let mut trial = config.clone();
    trial.data_dir = root.to_path_buf();
    trial.store.records.backend = RecordsBackend::Sqlite;
    trial.store.text.backend = TextBackend::Tantivy;
    trial.store.vectors.backend = VectorsBackend::Usearch;
    trial.store.graph.backend = GraphBackend::Sled;
    trial.store.objects.backend = ObjectsBackend::Local;
    trial.llm.provider = LlmProvider::None;
    trial.backup.schedule = String::new();
    trial
}

/// Opens the copy as Nexus (format migrations, indexers catching up from the change log), then
/// compares record and derived stores. Returns the rebuilt stores, records checked, agreement.
async fn open_and_check(config: &Config, root: &Path, header: &BackupHeader) -> Result<(Vec<String>, u64, bool)> {
    let trial = trial_config(config, root);
    let mut rebuilt: Vec<String> = ["text", "vectors", "graph"]
        .iter()
        .filter(|s| !header.derived.contains_key(**s))
        .map(|s| s.to_string())
        .collect();
    let app = match App::open(trial.clone()).await {
        Ok(app) => app,
        Err(e)
            if matches!(
                e.code,
                ErrorCode::EmbedderMismatch | ErrorCode::ConfigInvalid | ErrorCode::DataDirFormatTooNew
            ) =>
        {
            return Err(e);
        }
        Err(e) => {
            // A derived store that does not open is rebuilt from the record.
            tracing::warn!(error = %e, "the archive's derived stores do not open; rebuilding them from the record");
            for store in ["text", "vectors", "graph"] {
                let _ = std::fs::remove_dir_all(root.join(store));
            }
            rebuilt = vec!["text".into(), "vectors".into(), "graph".into()];
            App::open(trial).await?
        }
    };
    let report = app.check().await;
    app.shutdown().await;
    let report = report?;
    if !report.ok {
        return Err(archive::invalid(format!(
            "the restored data does not agree with itself (`nexus check`): {}",
            report.to_text().lines().take(6).collect::<Vec<_>>().join(" / ")
        )));
    }
    Ok((rebuilt, report.records, report.ok))
}

/// What a restore did.
#[derive(Clone, Debug, Serialize)]
pub struct Restored {
    pub data_dir: String,
    /// Where the data directory that was replaced is kept (with `--replace`).
    pub previous: Option<String>,
    #[serde(flatten)]
    pub report: VerifyReport,
}

/// Restores `path` as the data directory `target`: refused while a server holds it, and when it
/// is not empty unless `replace`.
pub async fn restore(config: &Config, path: &Path, target: &Path, replace: bool) -> Result<Restored> {
    let started = Instant::now();
    if let Holder::Held(info) = DataDir::holder(target) {
        return Err(Error::new(
            ErrorCode::DataDirLocked,
            format!("{} is in use by a running nexus (pid {}): stop it, then restore", target.display(), info.pid),
        ));
    }
    let occupied = std::fs::read_dir(target).map(|mut d| d.next().is_some()).unwrap_or(false);
    if occupied && !replace {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!(
                "{} is not empty: pass --replace to swap it for the archive's data (the current one is kept \
                 beside it as {}.previous-<time>)",
                target.display(),
                target.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default()
            ),
        ));
    }
    let (parent, name) = split(target)?;
    std::fs::create_dir_all(&parent)?;
    tidy_after_killed_restores(&parent, &name);
    let scratch = parent.join(format!(".{name}.restore-{}", uuid::Uuid::now_v7().simple()));
    let report = match check_into(config, path, &scratch, started).await {
        Ok(report) => report,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(e);
        }
    };
    // The lock file of the trial open is not part of the data.
    let _ = std::fs::remove_file(scratch.join("nexus.lock"));
    std::fs::remove_file(scratch.join(IN_PROGRESS))?;
    sync_dir(&scratch)?;
    let previous = if target.exists() {
        exchange(&scratch, target)?;
        let kept = parent.join(format!("{name}.previous-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ")));
        std::fs::rename(&scratch, &kept)?;
        Some(kept)
    } else {
        std::fs::rename(&scratch, target)?;
        None
    };
    sync_dir(&parent)?;
    Ok(Restored { data_dir: target.display().to_string(), previous: previous.map(|p| p.display().to_string()), report })
}

fn split(target: &Path) -> Result<(PathBuf, String)> {
    let absolute = std::path::absolute(target)?;
    let name = absolute
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .ok_or_else(|| Error::invalid(format!("{} cannot be a data directory", target.display())))?;
    let parent = absolute.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    Ok((parent, name))
}

/// Scratch directories of killed restores beside `name`: unfinished ones are removed; one that
/// holds the previous data (killed after the swap) is kept as `<name>.previous-<time>`.
fn tidy_after_killed_restores(parent: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    let prefix = format!(".{name}.restore-");
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let path = entry.path();
        if path.join(IN_PROGRESS).exists() {
            let _ = std::fs::remove_dir_all(&path);
        } else {
            let kept = parent.join(format!("{name}.previous-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ")));
            tracing::warn!(from = %path.display(), to = %kept.display(), "keeping the data directory a killed restore replaced");
            let _ = std::fs::rename(&path, &kept);
        }
    }
}

/// Swaps two directories atomically.
pub(crate) fn exchange(a: &Path, b: &Path) -> Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let a_c = CString::new(a.as_os_str().as_bytes()).map_err(|e| Error::internal("path", e))?;
    let b_c = CString::new(b.as_os_str().as_bytes()).map_err(|e| Error::internal("path", e))?;
    // SAFETY: both are valid NUL-terminated paths; AT_FDCWD resolves relative ones.
    let rc =
        unsafe { libc::renameat2(libc::AT_FDCWD, a_c.as_ptr(), libc::AT_FDCWD, b_c.as_ptr(), libc::RENAME_EXCHANGE) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::store(
            &format!(
                "swap {} and {} (the filesystem must support renameat2 RENAME_EXCHANGE)",
                a.display(),
                b.display()
            ),
            e,
        ));
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
