//! Documents: upload (multipart or JSON text), list, get, original content, delete; collections.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::error::{ApiJson, ApiMultipart, ApiPath, ApiQuery};
use super::tenant::Tenant;
use crate::app::App;
use crate::error::{Error, ErrorCode, Result};
use crate::knowledge::documents::{Document, DocumentMeta, IngestOutcome, object_key};
use crate::knowledge::ingest::{INGEST_JOB, IngestPayload};
use crate::knowledge::parse::Format;
use crate::store::TenantId;
use crate::store::jobs::{Job, JobState};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// Answer once ingestion has finished (up to a minute), with the documents.
    #[serde(default)]
    #[param(example = true)]
    pub wait: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct QueuedDocument {
    pub job_id: String,
    pub file_name: String,
    pub state: JobState,
    /// The finished job's documents, when `wait` was asked and it finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The stable code of `error`, e.g. `corrupt_document` or `unsupported_format`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = QueuedDocuments)]
pub struct Queued {
    pub jobs: Vec<QueuedDocument>,
}

async fn queued(app: &App, tenant: &TenantId, job: Job, file_name: String, wait: bool) -> Result<QueuedDocument> {
    let job = if wait { app.jobs.wait(tenant, &job.id, std::time::Duration::from_secs(60)).await? } else { job };
    Ok(QueuedDocument {
        job_id: job.id,
        file_name,
        state: job.state,
        result: job.result,
        error: job.error,
        error_code: job.error_code,
    })
}

/// The fields of an upload (`multipart/form-data`).
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"file": "handbook.md", "collection": "handbook", "tags": "hr,policy",
    "metadata": "{\"team\": \"people\"}"}))]
pub struct UploadForm {
    /// A file, with its file name; repeat the field for more files.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// The collection the documents join.
    pub collection: Option<String>,
    /// Tags, comma-separated.
    pub tags: Option<String>,
    /// A JSON object of metadata; its top-level scalars become filterable.
    pub metadata: Option<String>,
}

/// Uploads files to the knowledge base.
///
/// `multipart/form-data` with one or more `file` fields and optional `collection`, `tags`
/// (comma-separated) and `metadata` (a JSON object). Each file is streamed to storage and
/// ingested by a job (parsed, chunked, embedded, indexed); the answer lists the jobs, or with
/// `wait=true` their outcome. Formats: txt, md, html, pdf, docx, json, jsonl.
#[utoipa::path(post, path = "/api/v1/documents", tag = "documents", params(UploadParams),
    request_body(content_type = "multipart/form-data", content = UploadForm,
        description = "file (repeatable), collection, tags, metadata"),
    responses((status = 202, body = Queued), (status = 400, body = super::error::ErrorBody), (status = 413, body = super::error::ErrorBody)))]
pub async fn upload(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiQuery(params): ApiQuery<UploadParams>,
    ApiMultipart(mut multipart): ApiMultipart,
) -> Result<(StatusCode, axum::Json<Queued>)> {
    let limit = app.config.knowledge.max_upload_bytes;
    let bad = move |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::new(
                ErrorCode::PayloadTooLarge,
                format!("the upload is larger than knowledge.max_upload_bytes ({limit} bytes)"),
            )
        } else {
            Error::invalid(format!("malformed multipart body: {}", e.body_text()))
        }
    };
    let mut base = DocumentMeta::default();
    let mut uploads: Vec<(String, String, Option<String>)> = Vec::new(); // (upload key, file name, content type)
    // A refused request keeps nothing: the files it already stored are removed again.
    let read: Result<()> = async {
        while let Some(field) = multipart.next_field().await.map_err(bad)? {
            match field.name().unwrap_or_default() {
                "file" => {
                    let file_name =
                        field.file_name().map(str::to_string).filter(|n| !n.is_empty()).ok_or_else(|| {
                            Error::invalid("each `file` field needs a file name (Content-Disposition filename)")
                        })?;
                    let content_type = field.content_type().map(str::to_string);
                    let key = format!("uploads/{}", uuid::Uuid::now_v7());
                    // The field borrows the request; a channel hands its chunks to the store's stream.
                    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
                    let stream = futures::stream::poll_fn({
                        let mut rx = rx;
                        move |cx| rx.poll_recv(cx)
                    })
                    .boxed();
                    let mut field = field;
                    let feed = async move {
                        let mut seen = 0u64;
                        loop {
                            let next = match field.chunk().await {
                                Ok(Some(chunk)) => {
                                    seen += chunk.len() as u64;
                                    if seen > limit {
                                        Err(std::io::Error::other("over knowledge.max_upload_bytes"))
                                    } else {
                                        Ok(chunk)
                                    }
                                }
                                Ok(None) => break,
                                Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                                    Err(std::io::Error::other("over knowledge.max_upload_bytes"))
                                }
                                Err(e) => Err(std::io::Error::other(e.body_text())),
                            };
                            let stop = next.is_err();
                            if tx.send(next).await.is_err() || stop {
                                break;
                            }
                        }
                    };
                    let (stored, ()) = tokio::join!(app.stores.objects.put(&tenant, &key, stream), feed);
                    match stored {
                        Ok(_) => uploads.push((key, file_name, content_type)),
                        Err(e) if e.message.contains("max_upload_bytes") => {
                            return Err(Error::new(
                                ErrorCode::PayloadTooLarge,
                                format!("{file_name} is larger than knowledge.max_upload_bytes ({limit} bytes)"),
                            ));
                        }
                        Err(e) => return Err(e),
                    }
                }
                "collection" => base.collection = Some(field.text().await.map_err(bad)?),
                "tags" => {
                    base.tags = field
                        .text()
                        .await
                        .map_err(bad)?
                        .split(',')
                        .map(|t| t.trim().to_string())
                        .filter(|t| !t.is_empty())
                        .collect();
                }
                "metadata" => {
                    let text = field.text().await.map_err(bad)?;
                    base.metadata = serde_json::from_str(&text)
                        .map_err(|e| Error::invalid(format!("the `metadata` field must be a JSON object: {e}")))?;
                }
                other => {
                    return Err(Error::invalid(format!(
                        "unknown multipart field {other:?}; use file, collection, tags, metadata"
                    )));
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = read {
        for (key, _, _) in &uploads {
            let _ = app.stores.objects.delete(&tenant, key).await;
        }
        return Err(e);
    }
    if uploads.is_empty() {
        return Err(Error::invalid("send at least one `file` field"));
    }
    let mut jobs = Vec::new();
    for (upload_key, file_name, content_type) in uploads {
        // The part's content type decides the format only when the file name does not.
        let content_type = content_type
            .filter(|t| Format::detect(&file_name, None, b"").is_none() && Format::detect("", Some(t), b"").is_some());
        let meta = DocumentMeta { source: file_name.clone(), content_type, ..base.clone() };
        let payload =
            serde_json::to_value(IngestPayload { upload_key, meta }).map_err(|e| Error::internal("encode job", e))?;
        let job = app.jobs.enqueue(&tenant, INGEST_JOB, payload, app.config.jobs.max_attempts).await?;
        jobs.push(queued(&app, &tenant, job, file_name, params.wait).await?);
    }
    Ok((StatusCode::ACCEPTED, axum::Json(Queued { jobs })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"source": "handbook/leave.md", "collection": "handbook", "title": "Leave policy",
    "tags": ["hr"], "content_type": "md",
    "text": "# Leave policy\n\nEveryone gets 25 days of paid leave a year; unused days carry over until March."}))]
pub struct TextDocument {
    /// The document's text (Markdown and HTML are parsed as such when `content_type` says so).
    pub text: String,
    #[serde(flatten)]
    pub meta: DocumentMeta,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Ingested {
    pub documents: Vec<IngestOutcome>,
}

/// Ingests a document given as JSON text, synchronously.
///
/// The text is parsed (as Markdown or HTML when `content_type` says so), chunked, embedded and
/// indexed before the answer. The same `collection` and `source` again replace the document with
/// a new version.
#[utoipa::path(post, path = "/api/v1/documents/text", tag = "documents", request_body = TextDocument,
    responses((status = 201, body = Ingested), (status = 400, body = super::error::ErrorBody)))]
pub async fn put_text(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiJson(input): ApiJson<TextDocument>,
) -> Result<(StatusCode, axum::Json<Ingested>)> {
    let limit = app.config.knowledge.max_upload_bytes;
    if input.text.len() as u64 > limit {
        return Err(Error::new(
            ErrorCode::PayloadTooLarge,
            format!("the document is larger than knowledge.max_upload_bytes ({limit} bytes)"),
        ));
    }
    let mut meta = input.meta;
    if meta.content_type.is_none() && !meta.source.contains('.') {
        meta.content_type = Some("txt".into());
    }
    let documents = app.documents.ingest_bytes(&tenant, &meta, bytes::Bytes::from(input.text)).await?;
    Ok((StatusCode::CREATED, axum::Json(Ingested { documents })))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only documents of this collection.
    #[param(example = "handbook")]
    pub collection: Option<String>,
    /// The `next_after` of the previous page.
    #[param(example = 50)]
    pub after: Option<u64>,
    /// 1-500, default 50.
    #[param(minimum = 1, maximum = 500, example = 50)]
    pub limit: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DocumentPage {
    pub documents: Vec<Document>,
    pub next_after: Option<u64>,
}

/// Lists documents, oldest first, a page at a time.
///
/// Pass the answer's `next_after` as `after` for the next page.
#[utoipa::path(get, path = "/api/v1/documents", tag = "documents", params(ListParams), responses((status = 200, body = DocumentPage)))]
pub async fn list(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<axum::Json<DocumentPage>> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(Error::invalid("limit must be between 1 and 500"));
    }
    let documents = app.documents.list(&tenant, params.collection.as_deref(), params.after, limit).await?;
    let next_after = if documents.len() == limit { documents.last().map(|d| d.key) } else { None };
    Ok(axum::Json(DocumentPage { documents, next_after }))
}

/// One document.
///
/// Its title, source, collection, tags, metadata, format, size, SHA-256, chunk count and version.
#[utoipa::path(get, path = "/api/v1/documents/{id}", tag = "documents",
    params(("id" = String, Path, description = "The document's id, as the upload's job result or the listing gives it",
        example = "01947c2e-5b7a-7d3e-9f41-6a2b8c0d1e2f")),
    responses((status = 200, body = Document), (status = 404, body = super::error::ErrorBody)))]
pub async fn get(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<Document>> {
    Ok(axum::Json(app.documents.get(&tenant, &id).await?))
}

/// The original file.
///
/// The bytes as uploaded, with a content type guessed from the source's name.
#[utoipa::path(get, path = "/api/v1/documents/{id}/content", tag = "documents",
    params(("id" = String, Path, description = "The document's id, as the upload's job result or the listing gives it",
        example = "01947c2e-5b7a-7d3e-9f41-6a2b8c0d1e2f")),
    responses((status = 200, content_type = "*/*", body = Vec<u8>,
        description = "The file, with the content type of its format (`text/markdown`, `application/pdf`, ...)"),
        (status = 404, body = super::error::ErrorBody)))]
pub async fn content(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
) -> Result<Response> {
    let doc = app.documents.get(&tenant, &id).await?;
    let (info, stream) = app.stores.objects.get(&tenant, &object_key(&doc.sha256)).await?;
    let mime = mime_guess::from_path(&doc.source).first_or_octet_stream();
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(mime.as_ref()).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(info.size));
    Ok(response)
}

/// Deletes a document from every store, its original included.
///
/// Its chunks leave the text, vector and graph stores; answers with the document as it was.
#[utoipa::path(delete, path = "/api/v1/documents/{id}", tag = "documents",
    params(("id" = String, Path, description = "The document's id, as the upload's job result or the listing gives it",
        example = "01947c2e-5b7a-7d3e-9f41-6a2b8c0d1e2f")),
    responses((status = 200, body = Document), (status = 404, body = super::error::ErrorBody)))]
pub async fn delete(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<Document>> {
    Ok(axum::Json(app.documents.delete(&tenant, &id, true).await?))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Collection {
    pub name: String,
    pub documents: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Collections {
    pub collections: Vec<Collection>,
}

/// Collections and how many documents each holds.
///
/// Every collection of the project with its document count, by name.
#[utoipa::path(get, path = "/api/v1/collections", tag = "documents", responses((status = 200, body = Collections)))]
pub async fn collections(State(app): State<Arc<App>>, Tenant(tenant): Tenant) -> Result<axum::Json<Collections>> {
    let collections = app
        .documents
        .collections(&tenant)
        .await?
        .into_iter()
        .map(|(name, documents)| Collection { name, documents })
        .collect();
    Ok(axum::Json(Collections { collections }))
}
