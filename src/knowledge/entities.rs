//! The job that reads a document version's entities and relations into the entity graph.
//!
//! Ingestion answers once a document is searchable; reading its entities takes longer (each
//! name is resolved against the project's entities), so each new version queues this job
//! (`knowledge.graph_extraction`). It reads the version's chunks with the graph's rule-based
//! extractor ([`crate::graph::Graph::ingest`]): each relation carries the chunk it came from
//! among its `sources`. Running it again adds nothing new, so a retried job is harmless; a
//! version replaced or deleted before the job runs is skipped.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::documents::{CHUNK_KIND, DOCUMENT_KIND};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::jobs::{JobContext, JobHandler};
use crate::store::Stores;
use crate::store::records::RecordFilter;

pub const GRAPH_EXTRACT_JOB: &str = "document-entities";

/// The most chunks of one version read into the graph (a longer document's later chunks are
/// left out, and the job's result says how many were read).
const MOST_CHUNKS: usize = 2_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GraphExtractPayload {
    pub document_id: String,
    pub version: u64,
}

pub struct GraphExtractHandler {
    pub stores: Stores,
    pub graph: Arc<Graph>,
}

#[async_trait]
impl JobHandler for GraphExtractHandler {
    async fn run(&self, ctx: &JobContext) -> Result<serde_json::Value> {
        let job = ctx.job();
        let payload: GraphExtractPayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| Error::invalid(format!("document-entities job payload is malformed: {e}")))?;
        let tenant = &job.tenant;
        let current = self.stores.records.get(tenant, &payload.document_id).await?;
        let Some(document) = current.filter(|r| r.kind == DOCUMENT_KIND && r.version == payload.version) else {
            return Ok(serde_json::json!({"skipped": "the document version is gone or replaced"}));
        };
        let mut filter = RecordFilter::kinds(&[CHUNK_KIND]);
        filter.metadata.push(("document_id".into(), payload.document_id.clone()));
        let keys = self.stores.records.keys_matching(tenant, &filter, MOST_CHUNKS * 4).await?;
        let mut chunks = self.stores.records.get_by_keys(tenant, &keys).await?;
        let ordinal = |r: &crate::store::records::Record| r.metadata.get("ordinal").and_then(|v| v.as_u64());
        chunks.retain(|r| r.metadata.get("version").and_then(|v| v.as_u64()) == Some(document.version));
        chunks.sort_by_key(ordinal);
        chunks.truncate(MOST_CHUNKS);
        // The author, when given, is a person whatever the case the text writes them in.
        let known: Vec<(String, String)> = document
            .metadata
            .get("author")
            .and_then(|v| v.as_str())
            .filter(|a| !a.trim().is_empty())
            .map(|a| vec![(a.trim().to_string(), "person".to_string())])
            .unwrap_or_default();
        let texts: Vec<(String, String)> =
            chunks.iter().filter_map(|c| c.body.as_ref().map(|body| (body.clone(), c.id.clone()))).collect();
        ctx.progress(0, texts.len() as u64).await?;
        let mut read = crate::graph::Ingested::default();
        // A batch at a time, so progress moves and first names resolve within a batch.
        for (done, batch) in texts.chunks(32).enumerate() {
            let got = self.graph.ingest(tenant, batch, &known).await?;
            read.entities += got.entities;
            read.relations += got.relations;
            read.llm_batches += got.llm_batches;
            read.rule_batches += got.rule_batches;
            ctx.progress(((done + 1) * 32).min(texts.len()) as u64, texts.len() as u64).await?;
        }
        Ok(serde_json::json!({
            "document_id": payload.document_id,
            "version": payload.version,
            "chunks": texts.len(),
            "entities": read.entities,
            "relations": read.relations,
            "llm_batches": read.llm_batches,
            "rule_batches": read.rule_batches,
        }))
    }
}
