//! Hybrid search and grounded answers over the knowledge base.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::error::ApiJson;
use super::tenant::Tenant;
use crate::app::App;
use crate::error::{Error, Result};
use crate::knowledge::ask::{AnswerMode, Citation, answer};
use crate::knowledge::documents::{CHUNK_KIND, metadata_filter, validate_name};
use crate::search::{Fusion, Mode, ScoreBreakdown, SearchRequest};
use crate::store::TenantId;
use crate::store::records::{RecordFilter, parse_date};
use crate::store::text::Snippet;

#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    pub collection: Option<String>,
    /// Items carrying every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Top-level metadata fields equal to these scalar values.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Inclusive, RFC 3339 or YYYY-MM-DD, on the item's date.
    pub date_from: Option<String>,
    pub date_to: Option<String>,
    /// Item kinds, instead of `sources`: `chunk` (document chunks), `memory`, `meeting_chunk`...
    pub kinds: Option<Vec<String>>,
    /// Meeting results of this meeting only.
    pub meeting_id: Option<String>,
    /// Meeting results where this speaker talks (names compared without case).
    pub speaker: Option<String>,
}

/// What a search covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Document chunks.
    Documents,
    Memories,
    /// Meeting transcripts, as windows of consecutive turns.
    Meetings,
}

impl Source {
    fn kind(self) -> &'static str {
        match self {
            Source::Documents => CHUNK_KIND,
            Source::Memories => crate::memory::MEMORY_KIND,
            Source::Meetings => crate::meetings::model::CHUNK_KIND,
        }
    }

    fn of_kind(kind: &str) -> Option<Source> {
        [Source::Documents, Source::Memories, Source::Meetings].into_iter().find(|s| s.kind() == kind)
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"query": "how many days of paid leave", "mode": "hybrid", "top_k": 5,
    "filters": {"collection": "handbook", "tags": ["hr"], "date_from": "2024-01-01"}}))]
pub struct SearchInput {
    pub query: String,
    #[serde(default)]
    pub mode: Mode,
    /// 1-100, default 10.
    pub top_k: Option<usize>,
    #[serde(default)]
    pub offset: usize,
    /// Default `["documents"]`.
    #[serde(default)]
    pub sources: Option<Vec<Source>>,
    #[serde(default)]
    pub filters: Filters,
    #[serde(default)]
    pub fusion: Option<FusionInput>,
    /// Reorder the best results by the configured reranker (`[rerank]`; default
    /// `rerank.by_default`). `true` without a reranker configured is refused.
    pub rerank: Option<bool>,
}

/// A request's ranking settings; what it leaves out comes from the configuration
/// (`knowledge.keyword_weight`, `semantic_weight`, `title_weight`, `context_weight`).
#[derive(Clone, Copy, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FusionInput {
    /// Weight of the keyword (BM25) ranking in the fusion.
    pub keyword_weight: Option<f32>,
    /// Weight of the semantic (vector) ranking in the fusion.
    pub semantic_weight: Option<f32>,
    /// The `k` of reciprocal rank fusion: larger flattens the advantage of top ranks.
    pub rrf_k: Option<f32>,
    /// How much a title match counts against a body match in the keyword ranking.
    pub title_weight: Option<f32>,
    /// Weight of the context ranking (meeting windows ranked by the passage around them) in
    /// hybrid search.
    pub context_weight: Option<f32>,
}

impl FusionInput {
    fn over(self, defaults: Fusion) -> Result<Fusion> {
        let fusion = Fusion {
            keyword_weight: self.keyword_weight.unwrap_or(defaults.keyword_weight),
            semantic_weight: self.semantic_weight.unwrap_or(defaults.semantic_weight),
            rrf_k: self.rrf_k.unwrap_or(defaults.rrf_k),
            title_weight: self.title_weight.unwrap_or(defaults.title_weight),
            context_weight: self.context_weight.unwrap_or(defaults.context_weight),
        };
        let weights = [fusion.keyword_weight, fusion.semantic_weight, fusion.title_weight, fusion.context_weight];
        if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || !fusion.rrf_k.is_finite() || fusion.rrf_k < 0.0 {
            return Err(Error::invalid("fusion weights and rrf_k must be finite and at least 0"));
        }
        Ok(fusion)
    }
}

impl SearchInput {
    /// `defaults`: the ranking used when the request gives no `fusion`.
    pub fn into_request(self, tenant: TenantId, defaults: Fusion) -> Result<SearchRequest> {
        let f = self.filters;
        let date = |d: Option<String>, key: &str| -> Result<_> {
            d.map(|d| {
                parse_date(&d).ok_or_else(|| Error::invalid(format!("filters.{key} must be RFC 3339 or YYYY-MM-DD")))
            })
            .transpose()
        };
        let mut metadata = metadata_filter(&f.metadata)?;
        if let Some(c) = f.collection {
            validate_name("collection", &c)?;
            metadata.push(("collection".into(), c));
        }
        if let Some(id) = f.meeting_id {
            metadata.push(("meeting_id".into(), id));
        }
        let mut tags = f.tags;
        if let Some(speaker) = f.speaker.filter(|s| !s.trim().is_empty()) {
            tags.push(crate::meetings::model::speaker_tag(&speaker));
        }
        let kinds = match (f.kinds, self.sources) {
            (Some(_), Some(_)) => return Err(Error::invalid("give `sources` or `filters.kinds`, not both")),
            (Some(kinds), None) => kinds,
            (None, Some(sources)) if sources.is_empty() => {
                return Err(Error::invalid("`sources` must name at least one of documents, memories, meetings"));
            }
            (None, Some(sources)) => sources.iter().map(|s| s.kind().to_string()).collect(),
            (None, None) => vec![CHUNK_KIND.to_string()],
        };
        let filter = RecordFilter {
            kinds,
            tags,
            metadata,
            date_from: date(f.date_from, "date_from")?,
            date_to: date(f.date_to, "date_to")?,
            after_key: None,
        };
        let top_k = self.top_k.unwrap_or(10);
        if !(1..=100).contains(&top_k) {
            return Err(Error::invalid("top_k must be between 1 and 100"));
        }
        Ok(SearchRequest {
            tenant,
            query: self.query,
            mode: self.mode,
            filter,
            top_k,
            offset: self.offset,
            fusion: self.fusion.unwrap_or_default().over(defaults)?,
            snippets: true,
        })
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SearchResult {
    pub document_id: Option<String>,
    pub chunk_id: String,
    pub kind: String,
    pub source: Option<String>,
    pub title: Option<String>,
    pub collection: Option<String>,
    pub score: f32,
    pub snippet: Snippet,
    pub scores: ScoreBreakdown,
    /// The whole chunk.
    pub text: Option<String>,
    /// `documents`, `memories` or `meetings`: what the result is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<Source>,
    /// A meeting result's meeting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meeting_id: Option<String>,
    /// A meeting result's main speaker (who says the most in it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
    /// Every speaker of a meeting result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speakers: Option<Vec<String>>,
    /// The `seq` of a meeting result's first and last segment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq_start: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq_end: Option<u64>,
    /// Where a meeting result starts, in milliseconds from the meeting's start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<u64>,
    /// A memory result's user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The reranker's score, when it reordered this result; results are then in its order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank_score: Option<f32>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SearchResults {
    pub results: Vec<SearchResult>,
    /// Present when the search asked for the reranker: `false` when it failed (or did not answer
    /// within `rerank.timeout_ms`) and the results keep their own order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reranked: Option<bool>,
}

/// Hybrid search over the knowledge base.
///
/// BM25 and vector rankings fused (weighted reciprocal rank fusion), with filters (collection,
/// tags, metadata, dates, kinds), a highlighted snippet and a score breakdown per result. `mode`
/// picks `hybrid` (default), `keyword` or `semantic`; `fusion` overrides the configured weights.
#[utoipa::path(post, path = "/api/v1/search", operation_id = "search_knowledge", tag = "search", request_body = SearchInput,
    responses((status = 200, body = SearchResults), (status = 400, body = super::error::ErrorBody)))]
pub async fn search(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiJson(input): ApiJson<SearchInput>,
) -> Result<axum::Json<SearchResults>> {
    let rerank = app.search.wants_rerank(input.rerank)?;
    let request = input.into_request(tenant, Fusion::for_documents(&app.config.knowledge))?;
    let (hits, reranked) = app.search.search_reranked(&request, rerank).await?;
    let results = hits
        .into_iter()
        .map(|h| {
            let m = &h.record.metadata;
            let s = |k: &str| m.get(k).and_then(|v| v.as_str()).map(str::to_string);
            let n = |k: &str| m.get(k).and_then(|v| v.as_u64());
            let domain = Source::of_kind(&h.record.kind);
            let meeting = domain == Some(Source::Meetings);
            SearchResult {
                document_id: s("document_id"),
                chunk_id: h.record.id.clone(),
                kind: h.record.kind.clone(),
                source: s("source"),
                title: h.record.title.clone(),
                collection: s("collection"),
                score: h.score,
                snippet: h.snippet,
                scores: h.breakdown,
                text: h.record.body,
                domain,
                meeting_id: s("meeting_id").filter(|_| meeting),
                speaker: s("speaker").filter(|_| meeting),
                speakers: m.get("speakers").and_then(|v| serde_json::from_value(v.clone()).ok()).filter(|_| meeting),
                seq_start: n("seq_start").filter(|_| meeting),
                seq_end: n("seq_end").filter(|_| meeting),
                start_ms: n("start_ms").filter(|_| meeting),
                user_id: s("user_id").filter(|_| domain == Some(Source::Memories)),
                rerank_score: h.rerank_score,
            }
        })
        .collect();
    Ok(axum::Json(SearchResults { results, reranked }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Answer {
    pub answer: String,
    pub mode: AnswerMode,
    pub citations: Vec<Citation>,
}

/// Answers a question from the knowledge base, with numbered citations.
///
/// Searches like `/api/v1/search` (at most 20 passages), then answers from what it found. Streamed
/// as server-sent events (`citations`, then `delta`s, then `done`) when the client accepts
/// `text/event-stream`. Without an LLM configured, the answer is extractive.
#[utoipa::path(post, path = "/api/v1/ask", tag = "search",
    request_body(content = SearchInput, example = json!({"query": "How many days of paid leave do we get?",
        "top_k": 5, "filters": {"collection": "handbook"}})),
    responses((status = 200, body = Answer, description = "JSON, or text/event-stream when accepted"),
              (status = 400, body = super::error::ErrorBody)))]
pub async fn ask(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    ApiJson(input): ApiJson<SearchInput>,
) -> Result<Response> {
    let rerank = app.search.wants_rerank(input.rerank)?;
    let mut request = input.into_request(tenant, Fusion::for_documents(&app.config.knowledge))?;
    if request.top_k > 20 {
        request.top_k = 20;
    }
    let streamed = answer(&app.search, app.llm.clone(), request, rerank).await?;
    let wants_sse =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/event-stream"));
    if !wants_sse {
        let mut text = String::new();
        let mut pieces = streamed.text;
        while let Some(piece) = pieces.next().await {
            text.push_str(&piece?);
        }
        return Ok(
            axum::Json(Answer { answer: text, mode: streamed.mode, citations: streamed.citations }).into_response()
        );
    }
    let mode = streamed.mode;
    let first = Event::default().event("citations").json_data(serde_json::json!({ "citations": streamed.citations }));
    let deltas = streamed.text.map(|piece| match piece {
        Ok(text) => Event::default().event("delta").json_data(serde_json::json!({ "text": text })),
        Err(e) => Event::default().event("error").json_data(serde_json::json!({
            "error": {"code": e.code.as_str(), "message": e.message, "type": e.code.kind()}
        })),
    });
    let done = Event::default().event("done").json_data(serde_json::json!({ "mode": mode }));
    let events = futures::stream::once(async move { first })
        .chain(deltas)
        .chain(futures::stream::once(async move { done }))
        .map(|e| Ok::<_, Infallible>(e.unwrap_or_else(|_| Event::default().event("error"))));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}
