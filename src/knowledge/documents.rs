//! Documents: what a user puts in, and how it becomes searchable chunks.
//!
//! A document is identified by its collection and source (a path, or an uploaded file's name),
//! so putting the same source in again is an update. Its original bytes are kept in the object
//! store, addressed by content hash. Ingesting parses the bytes, chunks the text by structure
//! and writes, in ONE write-path batch, the document record, its new chunks (embedded by the
//! write path) and the removal of the previous version's chunks — readers see the old version or
//! the new one, never a mix. Unchanged content (same hash) is skipped.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::chunk::{ChunkOptions, chunk};
use super::parse::{Format, ParseOptions, ParsedDoc, parse};
use crate::embed::EmbedService;
use crate::error::{Error, Result};
use crate::store::records::{NewRecord, Record, RecordFilter, Write, facet_value};
use crate::store::{RecordKey, Stores, TenantId};
use crate::writelog::WriteLog;

pub const DOCUMENT_KIND: &str = "document";
pub const CHUNK_KIND: &str = "chunk";
pub const DEFAULT_COLLECTION: &str = "default";
/// Metadata keys Nexus sets on chunks and documents; user metadata cannot override them.
const RESERVED: &[&str] = &[
    "collection",
    "source",
    "document_id",
    "ordinal",
    "version",
    "headings",
    "sha256",
    "format",
    "size",
    "object_key",
    "chunks",
    "file_name",
];

/// What the caller says about a document besides its bytes.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DocumentMeta {
    /// Where it came from: a path, a URL or a file name. Same collection + source = same document.
    pub source: String,
    #[serde(default)]
    pub collection: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub author: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// The document's own date (RFC 3339 or YYYY-MM-DD), used by date filters.
    #[serde(default)]
    pub date: Option<String>,
    /// Free-form; top-level scalars become filterable.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// `txt`, `md`, `html`, `pdf`, `docx`, `json`, `jsonl`; detected from the source name when absent.
    #[serde(default)]
    pub content_type: Option<String>,
    /// For JSON/JSONL: the field holding each record's text.
    #[serde(default)]
    pub text_field: Option<String>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Document {
    pub id: String,
    pub title: Option<String>,
    pub source: String,
    pub collection: String,
    pub tags: Vec<String>,
    pub format: String,
    pub size: u64,
    pub sha256: String,
    pub version: u64,
    pub chunks: u64,
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// The record key: pass as `after` for the next page.
    pub key: RecordKey,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Document {
    pub fn from_record(r: &Record) -> Document {
        let m = &r.metadata;
        let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let n = |k: &str| m.get(k).and_then(Value::as_u64).unwrap_or_default();
        Document {
            id: r.id.clone(),
            title: r.title.clone(),
            source: s("source"),
            collection: s("collection"),
            tags: r.tags.clone(),
            format: s("format"),
            size: n("size"),
            sha256: s("sha256"),
            version: r.version,
            chunks: n("chunks"),
            metadata: r.metadata.clone(),
            key: r.key,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase", tag = "outcome")]
pub enum IngestOutcome {
    Created { document: Document },
    Updated { document: Document },
    Unchanged { document: Document },
}

impl IngestOutcome {
    pub fn document(&self) -> &Document {
        match self {
            IngestOutcome::Created { document }
            | IngestOutcome::Updated { document }
            | IngestOutcome::Unchanged { document } => document,
        }
    }
}

/// The id of the document at `source` in `collection`: stable, so re-ingesting updates it.
pub fn document_id(collection: &str, source: &str) -> String {
    let digest = Sha256::digest(format!("{collection}\0{source}").as_bytes());
    format!("doc-{}", &hex::encode(digest)[..20])
}

/// Whether `id` has the shape `document_id` gives (`doc-` and 20 hex digits): how a deletion in
/// the change log, which no longer carries the record's kind, is known to be a document's.
pub fn is_document_id(id: &str) -> bool {
    id.strip_prefix("doc-").is_some_and(|hex| hex.len() == 20 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub fn object_key(sha256: &str) -> String {
    format!("originals/{sha256}")
}

pub fn chunk_id(document_id: &str, version: u64, ordinal: usize) -> String {
    format!("{document_id}:{version}:{ordinal}")
}

pub struct Documents {
    stores: Stores,
    writes: Arc<WriteLog>,
    embed: Arc<EmbedService>,
    chunking: ChunkOptions,
    /// Queue each new version's reading into the entity graph ([`super::entities`]).
    graph_extraction: bool,
}

impl Documents {
    pub fn new(
        stores: Stores,
        writes: Arc<WriteLog>,
        embed: Arc<EmbedService>,
        chunking: ChunkOptions,
        graph_extraction: bool,
    ) -> Documents {
        Documents { stores, writes, embed, chunking, graph_extraction }
    }

    pub async fn get(&self, tenant: &TenantId, id: &str) -> Result<Document> {
        match self.stores.records.get(tenant, id).await? {
            Some(r) if r.kind == DOCUMENT_KIND => Ok(Document::from_record(&r)),
            _ => Err(Error::not_found("document", id)),
        }
    }

    pub async fn list(
        &self,
        tenant: &TenantId,
        collection: Option<&str>,
        after: Option<RecordKey>,
        limit: usize,
    ) -> Result<Vec<Document>> {
        let mut filter = RecordFilter::kinds(&[DOCUMENT_KIND]);
        filter.after_key = after;
        if let Some(c) = collection {
            filter.metadata.push(("collection".into(), c.into()));
        }
        let keys = self.stores.records.keys_matching(tenant, &filter, limit).await?;
        let records = self.stores.records.get_by_keys(tenant, &keys).await?;
        Ok(records.iter().map(Document::from_record).collect())
    }

    pub async fn collections(&self, tenant: &TenantId) -> Result<Vec<(String, u64)>> {
        self.stores.records.count_by(tenant, &RecordFilter::kinds(&[DOCUMENT_KIND]), "collection").await
    }

    /// Whether the document at `source` already holds exactly these bytes.
    pub async fn is_unchanged(&self, tenant: &TenantId, collection: &str, source: &str, sha256: &str) -> Result<bool> {
        let id = document_id(collection, source);
        Ok(self.get(tenant, &id).await.is_ok_and(|d| d.sha256 == sha256))
    }

    /// Parses the bytes, keeps the original (content-addressed, once) and writes the document(s).
    /// Nothing is stored when the file cannot be read.
    pub async fn ingest_bytes(
        &self,
        tenant: &TenantId,
        meta: &DocumentMeta,
        bytes: Bytes,
    ) -> Result<Vec<IngestOutcome>> {
        if meta.source.trim().is_empty() {
            return Err(Error::invalid("a document needs a source (a path, URL or file name)"));
        }
        let collection = meta.collection.clone().unwrap_or_else(|| DEFAULT_COLLECTION.to_string());
        validate_name("collection", &collection)?;
        let format = match meta.content_type.as_deref() {
            Some(t) => Format::detect(&format!("document.{t}"), Some(t), &bytes)
                .ok_or_else(|| Error::invalid(format!("unknown content_type {t:?}")))?,
            None => Format::detect_or_error(&meta.source, None, &bytes)?,
        };
        let options = ParseOptions { json_text_field: meta.text_field.clone() };
        let parsed = {
            let bytes = bytes.clone();
            crate::store::blocking(move || parse(format, &bytes, &options)).await?
        };
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let key = object_key(&sha256);
        if self.stores.objects.head(tenant, &key).await?.is_none() {
            let body = bytes.clone();
            let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(body) });
            self.stores.objects.put(tenant, &key, Box::pin(stream)).await?;
        }
        let many = parsed.len() > 1;
        let mut outcomes = Vec::with_capacity(parsed.len());
        for (i, doc) in parsed.into_iter().enumerate() {
            // A JSON/JSONL file holds one document per record.
            let source = if many { format!("{}#{}", meta.source, i + 1) } else { meta.source.clone() };
            let target =
                Target { collection: &collection, source: &source, format, sha256: &sha256, size: bytes.len() as u64 };
            outcomes.push(self.write_version(tenant, meta, &target, doc).await?);
        }
        Ok(outcomes)
    }

    async fn write_version(
        &self,
        tenant: &TenantId,
        meta: &DocumentMeta,
        target: &Target<'_>,
        doc: ParsedDoc,
    ) -> Result<IngestOutcome> {
        let id = document_id(target.collection, target.source);
        let previous = self.stores.records.get(tenant, &id).await?.filter(|r| r.kind == DOCUMENT_KIND);
        if let Some(prev) = &previous {
            let prev = Document::from_record(prev);
            if prev.sha256 == target.sha256 {
                return Ok(IngestOutcome::Unchanged { document: prev });
            }
        }
        let version = previous.as_ref().map_or(1, |r| r.version + 1);
        let title = meta
            .title
            .clone()
            .or_else(|| doc.title.clone())
            .or_else(|| target.source.rsplit('/').next().map(str::to_string));
        let chunking = self.chunking;
        let embed = self.embed.clone();
        let chunks = {
            let doc = doc.clone();
            crate::store::blocking(move || Ok(chunk(&doc, &chunking, &|t| embed.count_tokens(t)))).await?
        };

        // Metadata shared by the document and its chunks: the file's own, the caller's, then ours.
        let mut shared: Map<String, Value> = doc.metadata.clone();
        shared.extend(meta.metadata.clone());
        if let Some(author) = &meta.author {
            shared.insert("author".into(), author.clone().into());
        }
        if let Some(date) = &meta.date {
            shared.insert("date".into(), date.clone().into());
        }
        for reserved in RESERVED {
            shared.remove(*reserved);
        }
        shared.insert("collection".into(), target.collection.into());
        shared.insert("source".into(), target.source.into());

        let mut writes = Vec::with_capacity(chunks.len() + 8);
        for c in &chunks {
            let mut m = shared.clone();
            m.insert("document_id".into(), id.clone().into());
            m.insert("ordinal".into(), (c.ordinal as u64).into());
            m.insert("version".into(), version.into());
            m.insert("headings".into(), c.heading_path.clone().into());
            writes.push(Write::Upsert(NewRecord {
                id: chunk_id(&id, version, c.ordinal),
                kind: CHUNK_KIND.into(),
                title: title.clone(),
                body: Some(c.text.clone()),
                tags: meta.tags.clone(),
                metadata: Value::Object(m),
                vector: None,
                graph: None,
                embed: true,
            }));
        }
        if let Some(prev) = &previous {
            let old = Document::from_record(prev);
            for ordinal in 0..old.chunks as usize {
                writes.push(Write::Delete { id: chunk_id(&id, prev.version, ordinal) });
            }
        }
        let mut m = shared;
        m.insert("format".into(), target.format.as_str().into());
        m.insert("size".into(), target.size.into());
        m.insert("sha256".into(), target.sha256.into());
        m.insert("object_key".into(), object_key(target.sha256).into());
        m.insert("chunks".into(), (chunks.len() as u64).into());
        if let Some(name) = meta.source.rsplit('/').next() {
            m.insert("file_name".into(), name.into());
        }
        writes.push(Write::Upsert(NewRecord {
            id: id.clone(),
            kind: DOCUMENT_KIND.into(),
            title,
            body: None,
            tags: meta.tags.clone(),
            metadata: Value::Object(m),
            vector: None,
            graph: None,
            embed: false,
        }));
        // Ingestion answers once the document is searchable (read-your-writes).
        self.writes.write(tenant, writes, true).await?;
        let document = self.get(tenant, &id).await?;
        if self.graph_extraction {
            let payload = super::entities::GraphExtractPayload { document_id: id.clone(), version: document.version };
            let payload = serde_json::to_value(payload).map_err(|e| Error::internal("document-entities job", e))?;
            // Workers poll the job store, so queuing through it needs no handle on them.
            self.stores.jobs.enqueue(tenant, super::entities::GRAPH_EXTRACT_JOB, payload, 3).await?;
        }
        match previous {
            Some(prev) => {
                let old = Document::from_record(&prev);
                self.release_original(tenant, &old.sha256).await?;
                Ok(IngestOutcome::Updated { document })
            }
            None => Ok(IngestOutcome::Created { document }),
        }
    }

    /// Removes the document, its chunks and (when no other document shares it) its original.
    pub async fn delete(&self, tenant: &TenantId, id: &str, wait: bool) -> Result<Document> {
        let doc = self.get(tenant, id).await?;
        let mut writes: Vec<Write> =
            (0..doc.chunks as usize).map(|o| Write::Delete { id: chunk_id(id, doc.version, o) }).collect();
        writes.push(Write::Delete { id: id.to_string() });
        self.writes.write(tenant, writes, wait).await?;
        self.release_original(tenant, &doc.sha256).await?;
        Ok(doc)
    }

    async fn release_original(&self, tenant: &TenantId, sha256: &str) -> Result<()> {
        let mut filter = RecordFilter::kinds(&[DOCUMENT_KIND]);
        filter.metadata.push(("sha256".into(), sha256.into()));
        if self.stores.records.keys_matching(tenant, &filter, 1).await?.is_empty() {
            self.stores.objects.delete(tenant, &object_key(sha256)).await?;
        }
        Ok(())
    }
}

/// Where one parsed document goes.
struct Target<'a> {
    collection: &'a str,
    source: &'a str,
    format: Format,
    sha256: &'a str,
    size: u64,
}

/// Collections and similar names: short, printable, no slashes.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty() && name.len() <= 128 && !name.contains('/') && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!("{what} {name:?} is invalid: 1-128 characters, no '/' or control characters")))
    }
}

/// Scalar metadata as (key, text) filter pairs.
pub fn metadata_filter(map: &Map<String, Value>) -> Result<Vec<(String, String)>> {
    map.iter()
        .map(|(k, v)| {
            facet_value(v)
                .map(|v| (k.clone(), v))
                .ok_or_else(|| Error::invalid(format!("metadata filter {k:?} must be a string, number or boolean")))
        })
        .collect()
}
