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
pub mod records;
pub mod testsuite;
pub mod text;
pub mod vectors;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{Config, GraphBackend, ObjectsBackend, RecordsBackend, TextBackend, VectorsBackend};
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

fn cluster_unavailable(store: &str, backend: &str) -> Error {
    Error::new(
        ErrorCode::BackendUnavailable,
        format!(
            "store.{store}.backend = \"{backend}\" is not available in this build; \
             use the embedded backend or a build with cluster support"
        ),
    )
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
}

impl Stores {
    /// Fails early on a backend this build does not have, before anything is opened.
    pub fn check_backends(config: &Config) -> Result<()> {
        let s = &config.store;
        if s.records.backend == RecordsBackend::Postgres {
            return Err(cluster_unavailable("records", "postgres"));
        }
        if s.vectors.backend == VectorsBackend::Qdrant {
            return Err(cluster_unavailable("vectors", "qdrant"));
        }
        if s.text.backend == TextBackend::Elasticsearch {
            return Err(cluster_unavailable("text", "elasticsearch"));
        }
        if s.graph.backend == GraphBackend::Neo4j {
            return Err(cluster_unavailable("graph", "neo4j"));
        }
        if s.objects.backend == ObjectsBackend::S3 {
            return Err(cluster_unavailable("objects", "s3"));
        }
        Ok(())
    }

    pub async fn open(config: &Config, dir: &DataDir) -> Result<Stores> {
        Self::check_backends(config)?;
        let s = &config.store;
        let records = Arc::new(records::sqlite::SqliteRecordStore::open(&dir.path("records"), &s.records).await?);
        let auth = auth::sqlite::SqliteAuthStore::new(&records);
        let text = text::tantivy::TantivyTextStore::open(&dir.path("text"), &s.text).await?;
        let vectors = vectors::usearch::UsearchVectorStore::open(&dir.path("vectors"), &s.vectors).await?;
        let graph = graph::sled::SledGraphStore::open(&dir.path("graph")).await?;
        let objects = objects::local::ObjectStoreBacked::open(&dir.path("objects"))?;
        Ok(Stores {
            jobs: records.clone(),
            records,
            auth: Arc::new(auth),
            text: Arc::new(text),
            vectors: Arc::new(vectors),
            graph: Arc::new(graph),
            objects: Arc::new(objects),
        })
    }

    /// Only the auth store (and the record database it lives in), for offline key management.
    pub async fn open_auth(config: &Config, dir: &DataDir) -> Result<Arc<dyn auth::AuthStore>> {
        Self::check_backends(config)?;
        let records = records::sqlite::SqliteRecordStore::open(&dir.path("records"), &config.store.records).await?;
        Ok(Arc::new(auth::sqlite::SqliteAuthStore::new(&records)))
    }
}
