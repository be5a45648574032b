//! Records: the generic items of the system of record, written through the one write path.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::error::{ApiJson, ApiPath, ApiQuery};
use super::tenant::Tenant;
use crate::app::App;
use crate::error::{Error, Result};
use crate::store::records::{GraphItem, ListFilter, NewRecord, Record, RecordFilter, Write};
use crate::store::text::{Snippet, TextQuery};
use crate::store::vectors::VectorQuery;
use crate::writelog::WriteOutcome;

const MAX_PAGE: usize = 1000;
const MAX_BATCH: usize = 1000;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": "note-42", "kind": "note", "title": "Quarterly planning",
    "body": "The team agreed to ship the importer before the March release.", "tags": ["planning"],
    "metadata": {"author": "dana"}, "graph": {"type": "node", "label": "note", "name": "note-42"}}))]
pub struct RecordInput {
    /// Omit to have one generated.
    pub id: Option<String>,
    pub kind: String,
    pub title: Option<String>,
    pub body: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    pub vector: Option<Vec<f32>>,
    pub graph: Option<GraphItem>,
    /// Compute the vector from title and body (default: when no `vector` is given).
    pub embed: Option<bool>,
}

impl RecordInput {
    fn into_new(self) -> NewRecord {
        NewRecord {
            embed: self.embed.unwrap_or(self.vector.is_none()),
            id: self.id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            kind: self.kind,
            title: self.title,
            body: self.body,
            tags: self.tags,
            metadata: self.metadata.unwrap_or_else(|| serde_json::json!({})),
            vector: self.vector,
            graph: self.graph,
        }
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitParams {
    /// Answer only once every derived store shows the write (read-your-writes).
    #[serde(default)]
    #[param(example = true)]
    pub wait: bool,
}

/// Creates or replaces one record.
///
/// The record and its change-log entry commit in one transaction; the text, vector and graph
/// stores follow from the change log (with `wait=true`, the answer waits for them). Without a
/// `vector`, one is computed from title and body. A record with the same `id` is replaced.
#[utoipa::path(post, path = "/api/v1/records", tag = "records", params(WaitParams), request_body = RecordInput,
    responses((status = 201, body = WriteOutcome), (status = 400, body = super::error::ErrorBody)))]
pub async fn put_record(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiQuery(params): ApiQuery<WaitParams>,
    ApiJson(input): ApiJson<RecordInput>,
) -> Result<(StatusCode, axum::Json<WriteOutcome>)> {
    let outcome = app.writes.write(&tenant, vec![Write::Upsert(input.into_new())], params.wait).await?;
    Ok((StatusCode::CREATED, axum::Json(outcome)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(tag = "op", rename_all = "lowercase")]
// Upserts are the common case; boxing each one would cost more than the smaller deletes save.
#[allow(clippy::large_enum_variant)]
pub enum BatchWrite {
    Upsert { record: RecordInput },
    Delete { id: String },
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"writes": [
    {"op": "upsert", "record": {"id": "note-42", "kind": "note", "title": "Quarterly planning",
        "body": "Ship the importer before the March release.", "tags": ["planning"]}},
    {"op": "delete", "id": "note-7"}]}))]
pub struct BatchInput {
    pub writes: Vec<BatchWrite>,
}

/// Applies up to 1000 upserts and deletes atomically.
///
/// Every write of the batch commits in one transaction, or none does. Each write is
/// `{"op": "upsert", "record": {...}}` or `{"op": "delete", "id": "..."}`.
#[utoipa::path(post, path = "/api/v1/records/batch", tag = "records", params(WaitParams), request_body = BatchInput,
    responses((status = 200, body = WriteOutcome), (status = 400, body = super::error::ErrorBody)))]
pub async fn batch(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiQuery(params): ApiQuery<WaitParams>,
    ApiJson(input): ApiJson<BatchInput>,
) -> Result<axum::Json<WriteOutcome>> {
    if input.writes.len() > MAX_BATCH {
        return Err(Error::invalid(format!("a batch holds at most {MAX_BATCH} writes; split it")));
    }
    let writes = input
        .writes
        .into_iter()
        .map(|w| match w {
            BatchWrite::Upsert { record } => Write::Upsert(record.into_new()),
            BatchWrite::Delete { id } => Write::Delete { id },
        })
        .collect();
    Ok(axum::Json(app.writes.write(&tenant, writes, params.wait).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetParams {
    /// Include the vector in the answer.
    #[serde(default)]
    #[param(example = false)]
    pub include_vector: bool,
}

fn shown(mut record: Record, include_vector: bool) -> Record {
    if !include_vector {
        record.vector = None;
    }
    record
}

/// Reads one record.
///
/// Its kind, title, body, tags, metadata, graph item, version and times; the vector too with
/// `include_vector=true`.
#[utoipa::path(get, path = "/api/v1/records/{id}", tag = "records",
    params(("id" = String, Path, description = "The record's id (its `id` when written)", example = "note-42"), GetParams),
    responses((status = 200, body = Record), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_record(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<GetParams>,
) -> Result<axum::Json<Record>> {
    let record = app.stores.records.get(&tenant, &id).await?.ok_or_else(|| Error::not_found("record", &id))?;
    Ok(axum::Json(shown(record, params.include_vector)))
}

/// Deletes one record from every store.
///
/// The deletion is a write like any other: the derived stores follow from the change log (with
/// `wait=true`, the answer waits for them).
#[utoipa::path(delete, path = "/api/v1/records/{id}", tag = "records",
    params(("id" = String, Path, description = "The record's id (its `id` when written)", example = "note-42"), WaitParams),
    responses((status = 200, body = WriteOutcome), (status = 404, body = super::error::ErrorBody)))]
pub async fn delete_record(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<WaitParams>,
) -> Result<axum::Json<WriteOutcome>> {
    let outcome = app.writes.write(&tenant, vec![Write::Delete { id: id.clone() }], params.wait).await?;
    if outcome.receipt.written.is_empty() {
        return Err(Error::not_found("record", &id));
    }
    Ok(axum::Json(outcome))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only records of this kind.
    #[param(example = "note")]
    pub kind: Option<String>,
    /// Continue after this key (the `next_after` of the previous page).
    #[param(example = 100)]
    pub after: Option<u64>,
    /// 1-1000, default 100.
    #[param(minimum = 1, maximum = 1000, example = 100)]
    pub limit: Option<usize>,
    /// Include each record's vector.
    #[serde(default)]
    #[param(example = false)]
    pub include_vector: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RecordPage {
    pub records: Vec<Record>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<u64>,
}

/// Lists records in key order, a page at a time.
///
/// Pass the answer's `next_after` as `after` for the next page; it is absent on the last one.
#[utoipa::path(get, path = "/api/v1/records", tag = "records", params(ListParams),
    responses((status = 200, body = RecordPage)))]
pub async fn list_records(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<axum::Json<RecordPage>> {
    let limit = params.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::invalid(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    let filter = ListFilter { kind: params.kind, after_key: params.after, limit };
    let records = app.stores.records.list(&tenant, &filter).await?;
    let next_after = if records.len() == limit { records.last().map(|r| r.key) } else { None };
    let records = records.into_iter().map(|r| shown(r, params.include_vector)).collect();
    Ok(axum::Json(RecordPage { records, next_after }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"query": "importer release", "kinds": ["note"], "top_k": 5}))]
pub struct StoreSearchInput {
    /// Full-text query (text store). Give this or `vector`.
    pub query: Option<String>,
    /// Query vector (vector store).
    pub vector: Option<Vec<f32>>,
    /// Text whose embedding is the query vector (vector store).
    pub similar_to: Option<String>,
    /// Search the record store exactly instead of the vector index (small or filtered sets).
    #[serde(default)]
    pub exact: bool,
    pub kinds: Option<Vec<String>>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// 1-100, default 10.
    pub top_k: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct StoreHit {
    pub id: String,
    pub key: u64,
    pub kind: String,
    pub title: Option<String>,
    pub score: f32,
    pub snippet: Option<Snippet>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct StoreSearchResults {
    pub hits: Vec<StoreHit>,
}

/// Low-level search of one derived store: text (BM25) or vectors (cosine).
///
/// `query` searches the text store; `vector` or `similar_to` (a text to embed) the vector store,
/// or the record store exactly with `exact: true`. For ranked results over both, use
/// `/api/v1/search`.
#[utoipa::path(post, path = "/api/v1/records/search", tag = "records", request_body = StoreSearchInput,
    responses((status = 200, body = StoreSearchResults), (status = 400, body = super::error::ErrorBody)))]
pub async fn search_records(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiJson(input): ApiJson<StoreSearchInput>,
) -> Result<axum::Json<StoreSearchResults>> {
    let k = input.top_k.unwrap_or(10);
    if !(1..=100).contains(&k) {
        return Err(Error::invalid("top_k must be between 1 and 100"));
    }
    // (key, score, snippet), best first
    let vector = match (input.vector, input.similar_to) {
        (Some(_), Some(_)) => return Err(Error::invalid("give `vector` or `similar_to`, not both")),
        (Some(v), None) => Some(v),
        (None, Some(text)) => Some(app.embed.embed_one(&text).await?),
        (None, None) => None,
    };
    let scored: Vec<(u64, f32, Option<Snippet>)> = match (input.query, vector) {
        (Some(query), None) => {
            let mut q = TextQuery::new(tenant.clone(), query, k);
            q.kinds = input.kinds;
            q.tags = input.tags;
            app.stores.text.search(q).await?.into_iter().map(|h| (h.key, h.score, Some(h.snippet))).collect()
        }
        (None, Some(vector)) if input.exact => {
            crate::store::vectors::validate_vector(&vector, app.stores.vectors.dimensions())?;
            let filter =
                RecordFilter { kinds: input.kinds.unwrap_or_default(), tags: input.tags, ..Default::default() };
            let hits = app.stores.records.nearest_exact(&tenant, &filter, &vector, k).await?;
            hits.into_iter().map(|h| (h.key, 1.0 - h.distance, None)).collect()
        }
        (None, Some(vector)) => {
            let q = VectorQuery { tenant: tenant.clone(), vector, k, kinds: input.kinds, predicate: None };
            app.stores.vectors.search(q).await?.into_iter().map(|h| (h.key, h.score, None)).collect()
        }
        _ => return Err(Error::invalid("give exactly one of `query`, `vector` and `similar_to`")),
    };
    let keys: Vec<u64> = scored.iter().map(|(k, _, _)| *k).collect();
    let records: std::collections::HashMap<u64, Record> =
        app.stores.records.get_by_keys(&tenant, &keys).await?.into_iter().map(|r| (r.key, r)).collect();
    let hits = scored
        .into_iter()
        .filter_map(|(key, score, snippet)| {
            let r = records.get(&key)?;
            Some(StoreHit { id: r.id.clone(), key, kind: r.kind.clone(), title: r.title.clone(), score, snippet })
        })
        .collect();
    Ok(axum::Json(StoreSearchResults { hits }))
}
