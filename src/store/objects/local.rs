//! Object storage on the `object_store` crate. [`ObjectStoreBacked`] works over any of its
//! backends; [`ObjectStoreBacked::open`] gives it the local file system under the data directory
//! (an S3-compatible twin plugs the crate's S3 backend into the same wrapper).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};

use super::{ByteStream, ObjectInfo, ObjectStore};
use crate::error::{Error, ErrorCode, Result};
use crate::store::{StoreStats, TenantId};

/// Parts are flushed to the backend in chunks of this size while streaming.
const CHUNK: usize = 8 * 1024 * 1024;

pub struct ObjectStoreBacked {
    backend: &'static str,
    inner: Arc<dyn object_store::ObjectStore>,
}

impl ObjectStoreBacked {
    pub fn open(dir: &Path) -> Result<ObjectStoreBacked> {
        std::fs::create_dir_all(dir)?;
        let fs = LocalFileSystem::new_with_prefix(dir).map_err(|e| Error::store("open object store", e))?;
        Ok(ObjectStoreBacked { backend: "local", inner: Arc::new(fs) })
    }
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

fn map_err(key: &str) -> impl Fn(object_store::Error) -> Error + '_ {
    move |e| match e {
        object_store::Error::NotFound { .. } => Error::not_found("object", key),
        other => Error::store("object store", other),
    }
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
        let upload = self.inner.put_multipart(&path).await.map_err(map_err(key))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, CHUNK);
        let mut hasher = Sha256::new();
        while let Some(chunk) = data.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(Error::new(
                        ErrorCode::InvalidRequest,
                        format!("upload of {key:?} was interrupted: {e}"),
                    ));
                }
            };
            hasher.update(&chunk);
            writer.wait_for_capacity(4).await.map_err(map_err(key))?;
            writer.put(chunk);
        }
        writer.finish().await.map_err(map_err(key))?;
        let meta = self.inner.head(&path).await.map_err(map_err(key))?;
        Ok(info(tenant, meta, Some(hex::encode(hasher.finalize()))))
    }

    async fn get(&self, tenant: &TenantId, key: &str) -> Result<(ObjectInfo, ByteStream)> {
        let path = object_path(tenant, key)?;
        let result = self.inner.get(&path).await.map_err(map_err(key))?;
        let meta = info(tenant, result.meta.clone(), None);
        let stream = result.into_stream().map_err(std::io::Error::other).boxed();
        Ok((meta, stream))
    }

    async fn head(&self, tenant: &TenantId, key: &str) -> Result<Option<ObjectInfo>> {
        let path = object_path(tenant, key)?;
        match self.inner.head(&path).await {
            Ok(meta) => Ok(Some(info(tenant, meta, None))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_err(key)(e)),
        }
    }

    async fn delete(&self, tenant: &TenantId, key: &str) -> Result<bool> {
        if self.head(tenant, key).await?.is_none() {
            return Ok(false);
        }
        let path = object_path(tenant, key)?;
        match self.inner.delete(&path).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(map_err(key)(e)),
        }
    }

    async fn list(&self, tenant: &TenantId, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let root = ObjectPath::from(tenant.as_str());
        let metas: Vec<ObjectMeta> =
            self.inner.list(Some(&root)).try_collect().await.map_err(|e| Error::store("list objects", e))?;
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
        let metas: Vec<ObjectMeta> =
            self.inner.list(None).try_collect().await.map_err(|e| Error::store("list objects", e))?;
        Ok(StoreStats { items: metas.len() as u64, bytes: metas.iter().map(|m| m.size).sum() })
    }
}
