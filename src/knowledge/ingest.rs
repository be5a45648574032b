//! The ingestion job: an uploaded file, already in the object store, becomes a document.
//! Idempotent, so the queue may run it again after a crash.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::documents::{DocumentMeta, Documents};
use crate::error::{Error, ErrorCode, Result};
use crate::jobs::{JobContext, JobHandler};
use crate::store::Stores;

pub const INGEST_JOB: &str = "ingest";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IngestPayload {
    /// Where the upload waits in the object store.
    pub upload_key: String,
    pub meta: DocumentMeta,
}

pub struct IngestHandler {
    pub stores: Stores,
    pub documents: Arc<Documents>,
}

#[async_trait]
impl JobHandler for IngestHandler {
    async fn run(&self, ctx: &JobContext) -> Result<serde_json::Value> {
        let job = ctx.job();
        let payload: IngestPayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| Error::invalid(format!("ingest job payload is malformed: {e}")))?;
        ctx.progress(0, 1).await?;
        let bytes = match self.stores.objects.get(&job.tenant, &payload.upload_key).await {
            Ok((_, mut stream)) => {
                let mut buf = Vec::new();
                while let Some(chunk) = stream.next().await {
                    buf.extend_from_slice(&chunk?);
                }
                bytes::Bytes::from(buf)
            }
            // A retried job whose upload was already consumed: the document is in place.
            Err(e) if e.code == ErrorCode::NotFound => {
                return Err(Error::new(ErrorCode::NotFound, format!("upload {} is gone", payload.upload_key)));
            }
            Err(e) => return Err(e),
        };
        let outcomes = match self.documents.ingest_bytes(&job.tenant, &payload.meta, bytes).await {
            Ok(outcomes) => outcomes,
            // A file that cannot be read will not become readable on retry: drop the upload.
            Err(e) if e.code.http_status() < 500 => {
                self.stores.objects.delete(&job.tenant, &payload.upload_key).await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        self.stores.objects.delete(&job.tenant, &payload.upload_key).await?;
        ctx.progress(1, 1).await?;
        Ok(serde_json::json!({ "documents": outcomes }))
    }
}
