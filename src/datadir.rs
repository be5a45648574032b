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
            Err(_) => Holder::Held(read_lock_info(&path).unwrap_or(LockInfo { pid: 0, listen: None, tls: false })),
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
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
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
        Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
    }
    write_lock_info(&mut file, &LockInfo { pid: std::process::id(), listen: None, tls: false })?;
    Ok(file)
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
