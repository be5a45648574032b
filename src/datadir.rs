//! The data directory: its layout, its format version and its exclusive lock.
//!
//! ```text
//! nexus-data/
//!   FORMAT            format version of the directory layout (a number)
//!   nexus.lock        held by the running process; holds its pid and listen address
//!   records/          system of record (SQLite: nexus.sqlite, -wal, -shm)
//!   text/             full-text index (tantivy)
//!   vectors/          vector index (usearch) and its manifest
//!   graph/            entity graph (sled)
//!   objects/          original files (object_store, local disk)
//!   master.key        the generated master key (mode 0600), when keys are on and none is configured
//!   migration.json    this directory's id as a `nexus migrate` source, once one ran
//!   migrated.json     written by `nexus migrate --cutover`: the data moved to a cluster, so
//!                     Nexus serves this directory read-only
//! ```
//!
//! A directory written by a newer Nexus is refused; an older one is brought forward by the ordered
//! list of [`MIGRATIONS`] before anything else opens it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode, Result};

/// The layout version this build writes.
pub const CURRENT_FORMAT: u32 = 1;

/// One step from `from` to `from + 1`.
pub struct Migration {
    pub from: u32,
    pub describe: &'static str,
    pub apply: fn(&Path) -> Result<()>,
}

/// Ordered migrations of the directory layout. Format 1 is the first released layout, so the list
/// is empty; a change of layout appends a step here and bumps [`CURRENT_FORMAT`].
pub const MIGRATIONS: &[Migration] = &[];

const FORMAT_FILE: &str = "FORMAT";
const MIGRATED_FILE: &str = "migrated.json";

/// What `migrated.json` says: where the data went and when.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Migrated {
    /// The cluster the data moved to, as the migration showed it (no secrets).
    pub target: String,
    pub at: chrono::DateTime<chrono::Utc>,
    /// The last change-log position copied.
    pub seq: u64,
}

impl Migrated {
    pub fn path(root: &Path) -> PathBuf {
        root.join(MIGRATED_FILE)
    }

    /// The marker in `root`, if a cutover left one.
    pub fn read(root: &Path) -> Result<Option<Migrated>> {
        let path = Migrated::path(root);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::new(
                    ErrorCode::DataDirInvalid,
                    format!("{} is corrupt ({e}); it marks a finished migration: fix or remove it", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the marker durably (a temporary file renamed into place).
    pub fn write(&self, root: &Path) -> Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| Error::internal("encode the migration marker", e))?;
        let tmp = root.join(format!("{MIGRATED_FILE}.tmp"));
        let mut file = File::create(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        fs::rename(&tmp, Migrated::path(root))?;
        Ok(())
    }

    /// Why writes are refused, for error messages.
    pub fn refusal(&self, root: &Path) -> String {
        format!(
            "this data directory moved to the cluster at {} ({}, `nexus migrate --cutover`) and takes no writes; \
             send writes to the cluster, or remove {} to write here again",
            self.target,
            self.at.format("%Y-%m-%d %H:%M UTC"),
            Migrated::path(root).display()
        )
    }
}
const LOCK_FILE: &str = "nexus.lock";

/// What the lock file says about its holder.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LockInfo {
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Whether it serves HTTPS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
}

/// An open, locked data directory. Dropping it releases the lock.
pub struct DataDir {
    root: PathBuf,
    lock: File,
}

/// Who holds a data directory, as read without taking the lock.
pub enum Holder {
    Free,
    Held(LockInfo),
}

impl DataDir {
    /// Opens (creating it if needed) and locks the data directory, migrating older formats.
    pub fn open(root: &Path) -> Result<DataDir> {
        Self::open_with(root, CURRENT_FORMAT, MIGRATIONS)
    }

    pub fn open_with(root: &Path, current: u32, migrations: &[Migration]) -> Result<DataDir> {
        // Refuse a newer format before writing anything.
        let found = read_format(root)?;
        if let Some(found) = found
            && found > current
        {
            return Err(Error::new(
                ErrorCode::DataDirFormatTooNew,
                format!(
                    "data directory {} has format {found}, but this nexus understands formats up to {current}; \
                         run a newer nexus, or restore a backup made by this version",
                    root.display()
                ),
            ));
        }
        // Owner and group only: the data is nobody else's business (`nexus doctor` warns otherwise).
        std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o750).create(root).map_err(
            |e| Error::new(ErrorCode::DataDirInvalid, format!("cannot create data directory {}: {e}", root.display())),
        )?;
        let lock = take_lock(root)?;
        let dir = DataDir { root: root.to_path_buf(), lock };
        match found {
            None => write_format(root, current)?,
            Some(mut version) => {
                while version < current {
                    let step = migrations.iter().find(|m| m.from == version).ok_or_else(|| {
                        Error::new(
                            ErrorCode::DataDirInvalid,
                            format!("no migration from data directory format {version}; this build cannot open it"),
                        )
                    })?;
                    tracing::info!(from = version, to = version + 1, what = step.describe, "migrating data directory");
                    (step.apply)(root)?;
                    version += 1;
                    write_format(root, version)?;
                }
            }
        }
        for sub in ["records", "text", "vectors", "graph", "objects"] {
            fs::create_dir_all(root.join(sub))?;
        }
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.root.join(sub)
    }

    /// Records the address the server listens on, so that CLI commands can reach it.
    pub fn announce_listen(&mut self, listen: &str, tls: bool) -> Result<()> {
        write_lock_info(&mut self.lock, &LockInfo { pid: std::process::id(), listen: Some(listen.to_string()), tls })
    }

    /// Who holds `root`, without taking or disturbing the lock.
    pub fn holder(root: &Path) -> Holder {
        let path = root.join(LOCK_FILE);
        let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else {
            return Holder::Free;
        };
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                Holder::Free
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                Holder::Held(read_lock_info(&path).unwrap_or(LockInfo { pid: 0, listen: None, tls: false }))
            }
            // A filesystem that cannot take locks at all: nobody can be found holding it, and
            // opening the directory refuses it with what to do (`lock_refused`).
            Err(std::fs::TryLockError::Error(_)) => Holder::Free,
        }
    }
}

/// The format version in `root/FORMAT`: `None` for a missing or empty directory; an error for anything else
/// that is not a nexus data directory.
pub fn read_format(root: &Path) -> Result<Option<u32>> {
    let path = root.join(FORMAT_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u32>().map(Some).map_err(|_| {
            Error::new(
                ErrorCode::DataDirInvalid,
                format!(
                    "{} does not hold a format number (found {:?}); is this a nexus data directory?",
                    path.display(),
                    text.trim()
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // An existing non-empty directory without a FORMAT file is not ours to take over.
            if root.is_dir() && fs::read_dir(root)?.next().is_some() {
                return Err(Error::new(
                    ErrorCode::DataDirInvalid,
                    format!(
                        "{} is not empty and has no FORMAT file; point --data-dir at a nexus data directory or an empty one",
                        root.display()
                    ),
                ));
            }
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

fn write_format(root: &Path, version: u32) -> Result<()> {
    let tmp = root.join(format!("{FORMAT_FILE}.tmp"));
    let mut file = File::create(&tmp)?;
    writeln!(file, "{version}")?;
    file.sync_all()?;
    fs::rename(&tmp, root.join(FORMAT_FILE))?;
    File::open(root)?.sync_all()?;
    Ok(())
}

fn take_lock(root: &Path) -> Result<File> {
    let path = root.join(LOCK_FILE);
    // Opened without truncating: a refused process must not erase the holder's details.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| unwritable(root, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = read_lock_info(&path);
            let who = match holder {
                Some(LockInfo { pid, .. }) if pid != 0 => format!("another nexus process (pid {pid})"),
                _ => "another nexus process".to_string(),
            };
            return Err(Error::new(
                ErrorCode::DataDirLocked,
                format!(
                    "data directory {} is in use by {who}; stop it first, or use another --data-dir",
                    root.display()
                ),
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(lock_refused(root, e)),
    }
    write_lock_info(&mut file, &LockInfo { pid: std::process::id(), listen: None, tls: false })?;
    Ok(file)
}

/// Why the data directory cannot be written, said so that the user knows what to change.
fn unwritable(root: &Path, e: std::io::Error) -> Error {
    let message = match e.kind() {
        std::io::ErrorKind::ReadOnlyFilesystem => format!(
            "data directory {} is on a read-only filesystem: nexus writes its lock, records and indexes there; \
             remount it read-write, or restore a backup into a writable --data-dir",
            root.display()
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "cannot write in data directory {} (permission denied): run nexus as the directory's owner \
             (the nexus user for the service) or give that user write access",
            root.display()
        ),
        _ => return e.into(),
    };
    Error::new(ErrorCode::DataDirInvalid, message)
}

/// A lock the filesystem will not take (some network and FUSE filesystems): refused, since two
/// processes could then write one data directory.
fn lock_refused(root: &Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorCode::DataDirInvalid,
        format!(
            "the filesystem holding data directory {} cannot take a file lock ({e}); without one, two nexus \
             processes could write the same data: put the data directory on a local filesystem (ext4, xfs, btrfs)",
            root.display()
        ),
    )
}

fn write_lock_info(file: &mut File, info: &LockInfo) -> Result<()> {
    let text = serde_json::to_string(info).map_err(|e| Error::internal("lock info", e))?;
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(text.as_bytes())?;
    file.sync_data()?;
    Ok(())
}

fn read_lock_info(path: &Path) -> Option<LockInfo> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No filesystem here refuses locks, so the refusal is checked on the error the kernel gives
    /// for one (ENOLCK), as `take_lock` receives it.
    #[test]
    fn a_filesystem_without_locks_is_refused_with_what_to_do() {
        let err = lock_refused(Path::new("/mnt/nfs/nexus"), std::io::Error::from_raw_os_error(libc::ENOLCK));
        assert_eq!(err.code, ErrorCode::DataDirInvalid);
        assert!(err.message.contains("cannot take a file lock"), "{}", err.message);
        assert!(err.message.contains("local filesystem"), "{}", err.message);
    }

    #[test]
    fn fresh_directory_gets_current_format() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        let dir = DataDir::open(&root).unwrap();
        assert_eq!(read_format(dir.root()).unwrap(), Some(CURRENT_FORMAT));
        assert!(root.join("records").is_dir());
    }

    #[test]
    fn newer_format_is_refused_and_nothing_written() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(FORMAT_FILE), "999\n").unwrap();
        let err = DataDir::open(tmp.path()).err().unwrap();
        assert_eq!(err.code, ErrorCode::DataDirFormatTooNew);
        assert!(err.message.contains("999"));
        let entries: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "only FORMAT may exist");
    }

    #[test]
    fn older_format_runs_migrations_in_order() {
        fn one_to_two(root: &Path) -> Result<()> {
            fs::write(root.join("step1"), "done")?;
            Ok(())
        }
        fn two_to_three(root: &Path) -> Result<()> {
            assert!(root.join("step1").exists(), "migrations run in order");
            fs::write(root.join("step2"), "done")?;
            Ok(())
        }
        let steps = [
            Migration { from: 2, describe: "second", apply: two_to_three },
            Migration { from: 1, describe: "first", apply: one_to_two },
        ];
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(FORMAT_FILE), "1\n").unwrap();
        let dir = DataDir::open_with(tmp.path(), 3, &steps).unwrap();
        assert_eq!(read_format(dir.root()).unwrap(), Some(3));
        assert!(tmp.path().join("step2").exists());
    }

    #[test]
    fn second_open_names_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = DataDir::open(tmp.path()).unwrap();
        // flock locks belong to the open file description, so a second open in-process conflicts too.
        let err = DataDir::open(tmp.path()).err().unwrap();
        assert_eq!(err.code, ErrorCode::DataDirLocked);
        assert!(err.message.contains(&format!("pid {}", std::process::id())), "{}", err.message);
    }

    #[test]
    fn foreign_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("something.txt"), "hi").unwrap();
        let err = DataDir::open(tmp.path()).err().unwrap();
        assert_eq!(err.code, ErrorCode::DataDirInvalid);
    }
}
