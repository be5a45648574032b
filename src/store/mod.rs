//! The five stores behind Nexus. Each kind has one trait in its own folder, with its contract in
//! the module doc and its implementations side by side: the embedded one now, the cluster twin
//! later. Every implementation passes the conformance suite in [`testsuite`].
//!
//! The record store is the system of record; text, vectors and graph are derived from it through
//! the change log (see `crate::writelog`). Objects hold original files.
//!
//! Tenancy: every tenant-scoped query takes a [`TenantId`]; there is no way to build one without.
//! Methods without a tenant are system-scoped (change log, rebuilds, checks) and are used only by
//! the write path and operations commands.

pub mod auth;
pub mod graph;
pub mod jobs;
pub mod objects;
pub mod postgres;
pub mod records;
pub mod testsuite;
pub mod text;
pub mod vectors;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{Config, GraphBackend, RecordsBackend, TextBackend, VectorsBackend};
use crate::datadir::DataDir;
use crate::error::{Error, ErrorCode, Result};

/// The tenant every record belongs to. Single-user installs use [`TenantId::default_tenant`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    pub const DEFAULT: &'static str = "default";

    pub fn new(id: impl Into<String>) -> Result<TenantId> {
        let id = id.into();
        let valid =
            !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(Error::invalid(format!(
                "tenant id {id:?} is invalid: use 1-64 characters of letters, digits, '-' or '_'"
            )));
        }
        Ok(TenantId(id))
    }

    pub fn default_tenant() -> TenantId {
        TenantId(Self::DEFAULT.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        TenantId::new(s)
    }
}

impl From<TenantId> for String {
    fn from(t: TenantId) -> String {
        t.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Position in the change log. Derived stores remember the last one they made durable.
pub type Seq = u64;

/// The numeric key the record store gives each record; derived stores index by it. Never reused.
pub type RecordKey = u64;

/// Size of a store, for status pages and metrics.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoreStats {
    pub items: u64,
    pub bytes: u64,
}

/// Runs blocking engine work off the async threads.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await?
}

/// Runs long background work (a backup's copy and compression) on a thread of its own at the
/// lowest CPU and I/O priority, so that requests and writes keep the cores and the disk.
pub(crate) async fn low_priority<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("nexus-background".into())
        .spawn(move || {
            // SAFETY: plain syscalls on the calling thread (tid 0 = this thread); failures only
            // leave the thread at normal priority.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, 0, 19);
                // ioprio_set(IOPRIO_WHO_PROCESS, this thread, best-effort class, lowest level 7)
                libc::syscall(libc::SYS_ioprio_set, 1, 0, (2 << 13) | 7);
            }
            let _ = tx.send(f());
        })
        .map_err(|e| crate::error::Error::internal("start a background thread", e))?;
    rx.await.map_err(|_| crate::error::Error::internal("background work", "its thread ended without an answer"))?
}

/// A file written in bulk (a backup's copy, an archive) that keeps at most [`TRICKLE_BYTES`] of
/// its data waiting in the page cache: every time that much has been written, it is flushed to
/// the disk and dropped from the cache before writing goes on. Left to the kernel, gigabytes of
/// dirty pages reach the disk in one burst, and every commit's fsync waits behind that burst.
pub(crate) struct Trickle {
    file: std::fs::File,
    pending: u64,
}

/// How much of a bulk write may wait in the page cache before it is flushed.
pub(crate) const TRICKLE_BYTES: u64 = 8 << 20;

impl Trickle {
    pub(crate) fn new(file: std::fs::File) -> Trickle {
        Trickle { file, pending: 0 }
    }

    /// Counts `bytes` written to the file (by this value or by another handle on the same file)
    /// and flushes once enough is pending.
    pub(crate) fn wrote(&mut self, bytes: u64) -> std::io::Result<()> {
        self.pending += bytes;
        if self.pending >= TRICKLE_BYTES {
            self.flush_pending()?;
        }
        Ok(())
    }

    /// Writes what is pending to the disk, waits for it, and drops it from the page cache. Only
    /// the data: the file's size and the directory are made durable by the caller's final sync.
    pub(crate) fn flush_pending(&mut self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        self.pending = 0;
        let fd = self.file.as_raw_fd();
        #[cfg(target_os = "linux")]
        {
            let flags =
                libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            // SAFETY: plain syscalls on a file descriptor this value owns.
            if unsafe { libc::sync_file_range(fd, 0, 0, flags) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        #[cfg(not(target_os = "linux"))]
        self.file.sync_data()?;
        // SAFETY: as above; advice only, its failure changes nothing.
        unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
        Ok(())
    }

    pub(crate) fn into_inner(self) -> std::fs::File {
        self.file
    }
}

impl std::io::Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.wrote(n as u64)?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Bytes used by a directory tree.
pub(crate) fn dir_size(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Puts the file `from` at `to` for a backup: a hard link when both are on one filesystem (the
/// caller only links files that are replaced by renames, never changed in place), else a copy.
pub(crate) fn link_or_copy(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(e),
        Err(_) => std::fs::copy(from, to).map(drop),
    }
}

/// All five stores, opened from configuration, and the auth store beside the record.
#[derive(Clone)]
pub struct Stores {
    pub records: Arc<dyn records::RecordStore>,
    pub auth: Arc<dyn auth::AuthStore>,
    pub text: Arc<dyn text::TextStore>,
    pub vectors: Arc<dyn vectors::VectorStore>,
    pub graph: Arc<dyn graph::GraphStore>,
    pub objects: Arc<dyn objects::ObjectStore>,
    /// The job queue lives in the record store's database.
    pub jobs: Arc<dyn jobs::JobStore>,
    /// The record store's Postgres, in cluster mode (pool metrics, operations).
    pub postgres: Option<postgres::Pg>,
}

/// The stores that hold data of their own (the derived ones are rebuilt from these).
#[derive(Clone)]
pub struct Primary {
    pub records: Arc<dyn records::RecordStore>,
    pub auth: Arc<dyn auth::AuthStore>,
    pub jobs: Arc<dyn jobs::JobStore>,
    pub objects: Arc<dyn objects::ObjectStore>,
}

/// The record store and the stores in its database.
struct RecordDatabase {
    records: Arc<dyn records::RecordStore>,
    auth: Arc<dyn auth::AuthStore>,
    jobs: Arc<dyn jobs::JobStore>,
    postgres: Option<postgres::Pg>,
}

impl RecordDatabase {
    /// pgvector's database: its own `store.vectors.url`, else the record store's pool.
    async fn vectors_pg(&self, config: &Config) -> Result<postgres::Pg> {
        let s = &config.store;
        match (&s.vectors.url, &self.postgres) {
            (Some(url), _) => {
                postgres::Pg::connect(&postgres::PgSettings::from_records("store.vectors.url", url, &s.records)).await
            }
            (None, Some(pg)) => Ok(pg.clone()),
            (None, None) => Err(Error::config("invalid configuration: `store.vectors.url` is required")),
        }
    }

    async fn open(config: &Config, root: &std::path::Path) -> Result<RecordDatabase> {
        let s = &config.store;
        Ok(match s.records.backend {
            RecordsBackend::Sqlite => {
                let records =
                    Arc::new(records::sqlite::SqliteRecordStore::open(&root.join("records"), &s.records).await?);
                let auth = Arc::new(auth::sqlite::SqliteAuthStore::new(&records));
                RecordDatabase { jobs: records.clone(), records, auth, postgres: None }
            }
            RecordsBackend::Postgres => {
                let records = records::postgres::PostgresRecordStore::open(&s.records).await?;
                let pg = records.pg().clone();
                RecordDatabase {
                    records: Arc::new(records),
                    auth: Arc::new(auth::postgres::PostgresAuthStore::new(pg.clone())),
                    jobs: Arc::new(jobs::postgres::PostgresJobStore::new(pg.clone())),
                    postgres: Some(pg),
                }
            }
        })
    }
}

impl Stores {
    pub async fn open(config: &Config, dir: &DataDir) -> Result<Stores> {
        let s = &config.store;
        let db = RecordDatabase::open(config, dir.root()).await?;
        let text: Arc<dyn text::TextStore> = match s.text.backend {
            TextBackend::Tantivy => Arc::new(text::tantivy::TantivyTextStore::open(&dir.path("text"), &s.text).await?),
            TextBackend::Elasticsearch => Arc::new(text::elasticsearch::ElasticsearchTextStore::open(&s.text).await?),
        };
        let vectors: Arc<dyn vectors::VectorStore> = match s.vectors.backend {
            VectorsBackend::Usearch => {
                Arc::new(vectors::usearch::UsearchVectorStore::open(&dir.path("vectors"), &s.vectors).await?)
            }
            VectorsBackend::Pgvector => {
                Arc::new(vectors::pgvector::PgvectorStore::open(db.vectors_pg(config).await?, &s.vectors).await?)
            }
            VectorsBackend::Qdrant => Arc::new(vectors::qdrant::QdrantVectorStore::open(&s.vectors).await?),
        };
        let graph: Arc<dyn graph::GraphStore> = match s.graph.backend {
            GraphBackend::Sled => Arc::new(graph::sled::SledGraphStore::open(&dir.path("graph")).await?),
            GraphBackend::Neo4j => Arc::new(graph::neo4j::Neo4jGraphStore::open(&s.graph).await?),
        };
        let objects = objects::open(&s.objects, &dir.path("objects")).await?;
        Ok(Stores {
            records: db.records,
            auth: db.auth,
            jobs: db.jobs,
            postgres: db.postgres,
            text,
            vectors,
            graph,
            objects,
        })
    }

    /// Drops the shared pgvector points and their typed columns (a rebuild with other dimensions
    /// follows), refused while a running node projects them.
    pub async fn discard_shared_vectors(config: &Config, dir: &DataDir) -> Result<()> {
        let db = RecordDatabase::open(config, dir.root()).await?;
        let owner = format!("reindex-{}", std::process::id());
        let lease = crate::writelog::indexer::lease_name("vectors");
        if db.records.acquire_lease(&lease, &owner, std::time::Duration::from_secs(30)).await?.is_none() {
            return Err(Error::new(
                ErrorCode::Conflict,
                "a running node projects the shared vectors store; stop every node's `nexus serve`, then run \
                 `nexus reindex` again",
            ));
        }
        vectors::pgvector::PgvectorStore::discard(&db.vectors_pg(config).await?).await
    }

    /// Only the auth store (and the record database it lives in), for offline key management.
    pub async fn open_auth(config: &Config, dir: &DataDir) -> Result<Arc<dyn auth::AuthStore>> {
        Ok(RecordDatabase::open(config, dir.root()).await?.auth)
    }

    /// The stores a migration copies (records, auth, jobs, objects) of the data directory at
    /// `root`, without its lock: the embedded record store's SQLite database is shared safely
    /// with a server running there.
    pub async fn open_primary(config: &Config, root: &std::path::Path) -> Result<Primary> {
        let db = RecordDatabase::open(config, root).await?;
        let objects = objects::open(&config.store.objects, &root.join("objects")).await?;
        Ok(Primary { records: db.records, auth: db.auth, jobs: db.jobs, objects })
    }
}
