//! The object store: original files (uploads, attachments, backups), streamed in and out.
//!
//! Contract:
//! - Objects live under a tenant; keys are `/`-separated paths of non-empty segments without
//!   `.` or `..`. An invalid key is refused with `invalid_request`.
//! - [`ObjectStore::put`] streams the body (never held whole in memory), replaces any object at
//!   the key atomically (a reader sees the old or the new object, never a part) and returns its
//!   size and SHA-256.
//! - [`ObjectStore::get`] of a missing key is `not_found`; [`ObjectStore::delete`] of one is `false`.
//! - [`ObjectStore::list`] returns the tenant's objects under a key prefix, sorted by key.
//! - [`open`] gives the configured backend: files under the data directory (`local`) or a bucket
//!   on an S3-compatible service (`s3`, checked for access before it is used).

pub mod local;
pub mod s3;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde::Serialize;

use super::{StoreStats, TenantId};
use crate::config::{ObjectsBackend, ObjectsConfig};
use crate::error::Result;

pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Hex SHA-256 of the content, where known without reading it (after a put).
    pub sha256: Option<String>,
    pub last_modified: DateTime<Utc>,
}

#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    fn backend(&self) -> &'static str;

    async fn put(&self, tenant: &TenantId, key: &str, data: ByteStream) -> Result<ObjectInfo>;
    async fn get(&self, tenant: &TenantId, key: &str) -> Result<(ObjectInfo, ByteStream)>;
    async fn head(&self, tenant: &TenantId, key: &str) -> Result<Option<ObjectInfo>>;
    async fn delete(&self, tenant: &TenantId, key: &str) -> Result<bool>;
    async fn list(&self, tenant: &TenantId, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// Hex SHA-256 of the stored content, read as a stream.
    async fn content_hash(&self, tenant: &TenantId, key: &str) -> Result<String>;
    async fn stats(&self) -> Result<StoreStats>;
    /// Holds deletions back until the guard drops, so that a backup's copy of the files matches
    /// its copy of the record; `None` for a remote backend (it keeps its own copies).
    async fn hold_deletes(&self) -> Option<tokio::sync::OwnedRwLockWriteGuard<()>> {
        None
    }
    /// For a backend on local disk: puts every object file into `into` (same layout) and returns
    /// true; false for a remote backend.
    async fn snapshot(&self, _into: &Path) -> Result<bool> {
        Ok(false)
    }
}

/// The object store `config` names; `local_dir` is where the `local` backend keeps its files.
pub async fn open(config: &ObjectsConfig, local_dir: &Path) -> Result<Arc<dyn ObjectStore>> {
    Ok(match config.backend {
        ObjectsBackend::Local => Arc::new(local::ObjectStoreBacked::open(local_dir)?),
        ObjectsBackend::S3 => Arc::new(s3::open(config).await?),
    })
}
