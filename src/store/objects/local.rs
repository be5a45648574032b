//! Object storage on the `object_store` crate. [`ObjectStoreBacked`] works over any of its
//! backends; [`ObjectStoreBacked::open`] gives it the local file system under the data directory,
//! and `super::s3` plugs the crate's S3 client into the same wrapper with [`ObjectStoreBacked::new`].
//!
//! Keys are stored as `{tenant}/{key}`. A body that fits in one part ([`CHUNK`]) is written in one
//! request; a larger one streams up as a multipart upload, so memory stays bounded by the part
//! size and the parts in flight. Either way the object appears whole or not at all.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};

use super::{ByteStream, ObjectInfo, ObjectStore};
use crate::error::{Error, ErrorCode, Result};
use crate::store::{StoreStats, TenantId};

/// Parts are flushed to the backend in chunks of this size while streaming (S3 wants at least
/// 5 MiB for every part but the last).
pub const CHUNK: usize = 8 * 1024 * 1024;

/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

pub struct ObjectStoreBacked {
    backend: &'static str,
    inner: Arc<dyn object_store::ObjectStore>,
    /// Where the objects are, for error messages (a directory, or a bucket at an endpoint).
    target: String,
    /// The directory of the local backend.
    local_dir: Option<std::path::PathBuf>,
    /// Deletions hold it for reading; a backup holds it for writing while it takes its copy.
    deletes: Arc<tokio::sync::RwLock<()>>,
}

impl ObjectStoreBacked {
    pub fn open(dir: &Path) -> Result<ObjectStoreBacked> {
        std::fs::create_dir_all(dir)?;
        let fs = LocalFileSystem::new_with_prefix(dir).map_err(|e| Error::store("open object store", e))?;
        let mut store = ObjectStoreBacked::new("local", Arc::new(fs), dir.display().to_string());
        store.local_dir = Some(dir.to_path_buf());
        Ok(store)
    }

    /// Any `object_store` backend; `target` says where its objects are in error messages.
    pub fn new(backend: &'static str, inner: Arc<dyn object_store::ObjectStore>, target: String) -> ObjectStoreBacked {
        ObjectStoreBacked { backend, inner, target, local_dir: None, deletes: Arc::default() }
    }

    /// Our error for a failed operation (`context`: get, head, delete, put, list) on `key` (empty
    /// for listings): a missing object is `not_found`; a service that cannot be reached or refuses us is
    /// `backend_unavailable`.
    fn error(&self, context: &str, key: &str, e: object_store::Error) -> Error {
        let lookup = matches!(context, "get" | "head" | "delete");
        if disk_full(&e) {
            return Error::disk_full(&format!("the object {key}"), &e);
        }
        match e {
            object_store::Error::NotFound { .. } if lookup => Error::not_found("object", key),
            other if self.backend == "s3" => super::s3::runtime_error(&self.target, context, other),
            other => Error::store(&format!("object store {context}"), other),
        }
    }

    fn map_err<'a>(&'a self, context: &'a str, key: &'a str) -> impl Fn(object_store::Error) -> Error + 'a {
        move |e| self.error(context, key, e)
    }

    /// Streams a body larger than one part up as a multipart upload, aborted on any error.
    async fn put_multipart(
        &self,
        path: &ObjectPath,
        key: &str,
        buffered: Vec<Bytes>,
        mut data: ByteStream,
        hasher: &mut Sha256,
    ) -> Result<()> {
        let upload = self.inner.put_multipart(path).await.map_err(self.map_err("put", key))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, CHUNK);
        for chunk in buffered {
            writer.put(chunk);
        }
        let streamed: Result<()> = async {
            while let Some(chunk) = data.next().await {
                let chunk = chunk.map_err(|e| interrupted(key, e))?;
                hasher.update(&chunk);
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(self.map_err("put", key))?;
                writer.put(chunk);
            }
            Ok(())
        }
        .await;
        if let Err(e) = streamed {
            let _ = writer.abort().await;
            return Err(e);
        }
        // On a failed part, finish aborts the upload itself.
        writer.finish().await.map_err(self.map_err("put", key))?;
        Ok(())
    }
}

fn interrupted(key: &str, e: std::io::Error) -> Error {
    Error::new(ErrorCode::InvalidRequest, format!("upload of {key:?} was interrupted: {e}"))
}

fn object_path(tenant: &TenantId, key: &str) -> Result<ObjectPath> {
    let valid = !key.is_empty()
        && key.len() <= 1024
        && key.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && !key.chars().any(|c| c.is_control());
    if !valid {
        return Err(Error::invalid(format!(
            "object key {key:?} is invalid: use `/`-separated non-empty segments without `.`, `..` or control characters"
        )));
    }
    ObjectPath::parse(format!("{}/{key}", tenant.as_str()))
        .map_err(|e| Error::invalid(format!("object key {key:?} is invalid: {e}")))
}

fn info(tenant: &TenantId, meta: ObjectMeta, sha256: Option<String>) -> ObjectInfo {
    let full = meta.location.to_string();
    let key = full.strip_prefix(&format!("{}/", tenant.as_str())).unwrap_or(&full).to_string();
    ObjectInfo { key, size: meta.size, sha256, last_modified: meta.last_modified }
}

#[async_trait]
impl ObjectStore for ObjectStoreBacked {
    fn backend(&self) -> &'static str {
        self.backend
    }

    async fn put(&self, tenant: &TenantId, key: &str, mut data: ByteStream) -> Result<ObjectInfo> {
        let path = object_path(tenant, key)?;
        let mut hasher = Sha256::new();
        // Up to one part is read first: a body that ends within it is written in one request.
        let mut buffered = Vec::new();
        let mut size = 0;
        let mut whole = false;
        while size < CHUNK {
            match data.next().await {
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    size += chunk.len();
                    buffered.push(chunk);
                }
                Some(Err(e)) => return Err(interrupted(key, e)),
                None => {
                    whole = true;
                    break;
                }
            }
        }
        if whole {
            let payload: PutPayload = buffered.into_iter().collect();
            self.inner.put(&path, payload).await.map_err(self.map_err("put", key))?;
        } else {
            self.put_multipart(&path, key, buffered, data, &mut hasher).await?;
        }
        let meta = self.inner.head(&path).await.map_err(self.map_err("put", key))?;
        Ok(info(tenant, meta, Some(hex::encode(hasher.finalize()))))
    }

    async fn get(&self, tenant: &TenantId, key: &str) -> Result<(ObjectInfo, ByteStream)> {
        let path = object_path(tenant, key)?;
        let result = self.inner.get(&path).await.map_err(self.map_err("get", key))?;
        let meta = info(tenant, result.meta.clone(), None);
        let stream = result.into_stream().map_err(std::io::Error::other).boxed();
        Ok((meta, stream))
    }

    async fn head(&self, tenant: &TenantId, key: &str) -> Result<Option<ObjectInfo>> {
        let path = object_path(tenant, key)?;
        match self.inner.head(&path).await {
            Ok(meta) => Ok(Some(info(tenant, meta, None))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("head", key, e)),
        }
    }

    async fn delete(&self, tenant: &TenantId, key: &str) -> Result<bool> {
        let _backup = self.deletes.read().await;
        if self.head(tenant, key).await?.is_none() {
            return Ok(false);
        }
        let path = object_path(tenant, key)?;
        match self.inner.delete(&path).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error("delete", key, e)),
        }
    }

    async fn hold_deletes(&self) -> Option<tokio::sync::OwnedRwLockWriteGuard<()>> {
        self.local_dir.as_ref()?;
        Some(self.deletes.clone().write_owned().await)
    }

    /// Files are written aside (`#` in their names) and renamed into place, never changed after:
    /// links make the copy.
    async fn snapshot(&self, into: &Path) -> Result<bool> {
        let Some(dir) = self.local_dir.clone() else { return Ok(false) };
        let into = into.to_path_buf();
        crate::store::blocking(move || {
            std::fs::create_dir_all(&into)?;
            for entry in walkdir::WalkDir::new(&dir).min_depth(1) {
                let entry = entry.map_err(|e| Error::store("list the object files", e))?;
                let name = entry.file_name().to_string_lossy();
                if !entry.file_type().is_file() || name.contains('#') || name == ".nexus-ready" {
                    continue;
                }
                let relative = entry.path().strip_prefix(&dir).map_err(|e| Error::internal("object path", e))?;
                match crate::store::link_or_copy(entry.path(), &into.join(relative)) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    other => other?,
                }
            }
            Ok(true)
        })
        .await
    }

    async fn list(&self, tenant: &TenantId, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let root = ObjectPath::from(tenant.as_str());
        let metas: Vec<ObjectMeta> =
            self.inner.list(Some(&root)).try_collect().await.map_err(self.map_err("list", ""))?;
        let mut out: Vec<ObjectInfo> =
            metas.into_iter().map(|m| info(tenant, m, None)).filter(|o| o.key.starts_with(prefix)).collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn content_hash(&self, tenant: &TenantId, key: &str) -> Result<String> {
        let (_, mut stream) = self.get(tenant, key).await?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = stream.next().await {
            hasher.update(&chunk?);
        }
        Ok(hex::encode(hasher.finalize()))
    }

    async fn stats(&self) -> Result<StoreStats> {
        let metas: Vec<ObjectMeta> = self.inner.list(None).try_collect().await.map_err(self.map_err("list", ""))?;
        Ok(StoreStats { items: metas.len() as u64, bytes: metas.iter().map(|m| m.size).sum() })
    }
}

/// Whether an error comes from a full disk, anywhere in its chain of causes.
fn disk_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(io.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
        {
            return true;
        }
        cause = e.source();
    }
    false
}
