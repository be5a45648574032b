//! The directory under the embedded text index: tantivy's memory-mapped directory without the
//! fsyncs on a commit's path.
//!
//! A tantivy commit is what makes documents visible to search, and the indexer commits every
//! batch. With every segment file, `meta.json` and the folder fsynced, each commit waited on the
//! disk (and made the record store's own commits wait behind it). The text index is derived:
//! the record store and its change log hold every acknowledged write. So commits here only write
//! through the page cache, like a search engine's refresh, and durability comes in two ways:
//! - [`sync_dir`] fsyncs every file of the folder and the folder itself, periodically and when
//!   the store closes cleanly (the indexer calls it);
//! - the folder holds [`UNSYNCED`] from opening until a clean close. Found at the next open, the
//!   process stopped without one (a kill leaves the page cache, and so the index, intact; a power
//!   loss may not): every file the last commit names is then checked against its checksum, and
//!   an index that fails is rebuilt from the change log.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    AntiCallToken, Directory, DirectoryLock, FileHandle, Lock, MmapDirectory, TerminatingWrite, WatchCallback,
    WatchHandle, WritePtr,
};

/// Present in the index folder while the index may hold commits that are not on the disk yet.
pub const UNSYNCED: &str = "UNSYNCED";

#[derive(Clone, Debug)]
pub struct UnsyncedDirectory {
    root: PathBuf,
    mmap: MmapDirectory,
}

impl UnsyncedDirectory {
    pub fn open(root: &Path) -> tantivy::Result<UnsyncedDirectory> {
        let mmap = MmapDirectory::open(root)?;
        Ok(UnsyncedDirectory { root: root.to_path_buf(), mmap })
    }
}

/// A file written through the page cache: finishing it flushes, never fsyncs.
struct PageCacheFile(File);

impl Write for PageCacheFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl TerminatingWrite for PageCacheFile {
    fn terminate_ref(&mut self, _: AntiCallToken) -> io::Result<()> {
        self.0.flush()
    }
}

impl Directory for UnsyncedDirectory {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        self.mmap.get_file_handle(path)
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        self.mmap.delete(path)
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        self.mmap.exists(path)
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        let file = OpenOptions::new().write(true).create_new(true).open(self.root.join(path)).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                OpenWriteError::FileAlreadyExists(path.to_path_buf())
            } else {
                OpenWriteError::wrap_io_error(e, path.to_path_buf())
            }
        })?;
        Ok(BufWriter::new(Box::new(PageCacheFile(file))))
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        self.mmap.atomic_read(path)
    }

    /// Written beside the target and renamed over it: readers see the old or the new content.
    fn atomic_write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        static STAGED: AtomicU64 = AtomicU64::new(0);
        let target = self.root.join(path);
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let staged = self.root.join(format!(".{name}.{}.staged", STAGED.fetch_add(1, Ordering::Relaxed)));
        let written = std::fs::write(&staged, data).and_then(|()| std::fs::rename(&staged, &target));
        if written.is_err() {
            let _ = std::fs::remove_file(&staged);
        }
        written
    }

    fn acquire_lock(&self, lock: &Lock) -> Result<DirectoryLock, LockError> {
        self.mmap.acquire_lock(lock)
    }

    fn watch(&self, callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        self.mmap.watch(callback)
    }

    /// Left to [`sync_dir`].
    fn sync_directory(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Makes everything in the folder durable: each file's data, then the folder's entries. Files
/// that disappear meanwhile (merged away) are skipped.
pub fn sync_dir(root: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        match File::open(entry.path()) {
            Ok(file) => file.sync_data()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    File::open(root)?.sync_all()
}

/// Creates [`UNSYNCED`] durably.
pub fn mark_unsynced(root: &Path) -> io::Result<()> {
    File::create(root.join(UNSYNCED))?.sync_all()?;
    File::open(root)?.sync_all()
}

/// After a clean close: removes [`UNSYNCED`], durably.
pub fn mark_synced(root: &Path) -> io::Result<()> {
    match std::fs::remove_file(root.join(UNSYNCED)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    File::open(root)?.sync_all()
}
