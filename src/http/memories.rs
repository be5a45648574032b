//! Nexus's memory API under `/api/v1/memories` (the Mem0 routes are a layer over the same service).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::Caller;
use super::error::{ApiJson, ApiQuery};
use super::tenant::Tenant;
use crate::app::App;
use crate::auth::AuthContext;
use crate::error::{Error, Result};
use crate::memory::add::{AddEvent, AddOutcome, AddRequest, add_event, scope_filter};
use crate::memory::search::{SearchOptions, SearchOutcome};
use crate::memory::{Filter, HistoryEntry, ListRequest, Memory, Scope, ScopeCount, Tier, Update};
use crate::search::{Fusion, Mode};

/// Who a change is attributed to in the history: the key id, or `master` / `open`.
pub fn actor(ctx: &AuthContext) -> String {
    ctx.key_id().map_or_else(|| ctx.principal_name().to_string(), str::to_string)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AddParams {
    /// Queue the add and answer at once with an event id (`GET /api/v1/memories/events/{id}`).
    #[serde(default, rename = "async")]
    #[param(example = false)]
    pub run_async: bool,
}

/// A queued add.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = QueuedAdd)]
pub struct Queued {
    pub event_id: String,
    pub status: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Added {
    Done(AddOutcome),
    Queued(Queued),
}

/// Adds memories from a conversation or a text.
///
/// With `messages`, facts are extracted (by the LLM when one is configured, else by the built-in
/// extractor) and added, updated or merged with what the scope already holds; `infer: false`
/// stores the messages verbatim; `text` adds one memory. Scope it with `user_id`, `agent_id`,
/// `app_id` or `run_id`. With `async=true` the add is queued and the answer is an event id.
#[utoipa::path(post, path = "/api/v1/memories", tag = "memories", params(AddParams),
    request_body(content = AddRequest, example = json!({"messages": [
        {"role": "user", "content": "I'm Dana. I moved to Lisbon last spring and I'm allergic to peanuts."},
        {"role": "assistant", "content": "Noted, Dana!"}],
        "user_id": "dana", "metadata": {"source": "onboarding"}})),
    responses((status = 200, body = AddOutcome), (status = 202, body = Queued),
              (status = 400, body = super::error::ErrorBody), (status = 413, body = super::error::ErrorBody)))]
pub async fn add(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    Caller(ctx): Caller,
    ApiQuery(params): ApiQuery<AddParams>,
    ApiJson(request): ApiJson<AddRequest>,
) -> Result<(StatusCode, axum::Json<Added>)> {
    if params.run_async {
        let job = app.memories.enqueue_add(&app.jobs, &tenant, request, &actor(&ctx)).await?;
        return Ok((StatusCode::ACCEPTED, axum::Json(Added::Queued(Queued { event_id: job.id, status: "PENDING" }))));
    }
    let outcome = app.memories.add(&tenant, request, &actor(&ctx)).await?;
    Ok((StatusCode::OK, axum::Json(Added::Done(outcome))))
}

/// How a queued add is doing.
///
/// `PENDING`, `RUNNING`, `SUCCEEDED` (with the add's results) or `FAILED` (with the error): poll
/// until it has finished.
#[utoipa::path(get, path = "/api/v1/memories/events/{id}", tag = "memories",
    params(("id" = String, Path, description = "The event id an asynchronous add answered",
        example = "01947c2e-5b7a-7d3e-9f41-6a2b8c0d1e2f")),
    responses((status = 200, body = AddEvent), (status = 404, body = super::error::ErrorBody)))]
pub async fn event(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<axum::Json<AddEvent>> {
    let job = app.jobs.store().get(&tenant, &id).await?.ok_or_else(|| Error::not_found("event", &id))?;
    Ok(axum::Json(add_event(&job)?))
}

#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this user's memories.
    #[param(example = "dana")]
    pub user_id: Option<String>,
    /// Only this agent's memories.
    #[param(example = "support-bot")]
    pub agent_id: Option<String>,
    /// Only this app's memories.
    #[param(example = "helpdesk")]
    pub app_id: Option<String>,
    /// Only this run's (session's) memories.
    #[param(example = "session-2025-01-14")]
    pub run_id: Option<String>,
    /// Only memories of this tier.
    #[param(example = "factual")]
    pub tier: Option<Tier>,
    /// Memories carrying this category.
    #[param(example = "health")]
    pub category: Option<String>,
    /// Include memories past their expiration.
    #[serde(default)]
    #[param(example = false)]
    pub show_expired: bool,
    /// How many to skip.
    #[serde(default)]
    #[param(example = 0)]
    pub offset: usize,
    /// 1-1000, default 100.
    #[param(minimum = 1, maximum = 1000, example = 100)]
    pub limit: Option<usize>,
}

impl ListParams {
    fn scope(&self) -> Result<Scope> {
        Scope {
            user_id: self.user_id.clone(),
            agent_id: self.agent_id.clone(),
            app_id: self.app_id.clone(),
            run_id: self.run_id.clone(),
        }
        .normalized()
    }

    fn filter(&self) -> Result<Filter> {
        use crate::memory::filter::{Field, Op};
        let mut f = scope_filter(&self.scope()?);
        if let Some(tier) = self.tier {
            f = f.and(Filter::eq(Field::Tier, tier.as_str()));
        }
        if let Some(c) = &self.category {
            f = f.and(Filter::Cond(Field::Categories, Op::Contains(c.trim().to_lowercase())));
        }
        Ok(f)
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MemoryPage {
    pub memories: Vec<Memory>,
    /// How many match in all.
    pub total: usize,
    pub offset: usize,
}

fn page_limit(limit: Option<usize>) -> Result<usize> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Error::invalid("limit must be between 1 and 1000"));
    }
    Ok(limit)
}

/// Lists memories by scope, tier and category, newest first.
///
/// A page of memories with the total that match; expired ones only with `show_expired=true`. For
/// richer conditions, use `POST /api/v1/memories/list`.
#[utoipa::path(get, path = "/api/v1/memories", tag = "memories", params(ListParams),
    responses((status = 200, body = MemoryPage), (status = 400, body = super::error::ErrorBody)))]
pub async fn list(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<axum::Json<MemoryPage>> {
    let request = ListRequest {
        filter: params.filter()?,
        show_expired: params.show_expired,
        offset: params.offset,
        limit: page_limit(params.limit)?,
    };
    let (memories, total) = app.memories.list(&tenant, &request).await?;
    Ok(axum::Json(MemoryPage { memories, total, offset: request.offset }))
}

/// A list by the filter grammar.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"filters": {"AND": [{"user_id": "dana"}, {"categories": {"contains": "health"}}]},
    "limit": 20}))]
pub struct QueryInput {
    /// Mem0 v2/v3 filters: `AND`/`OR`/`NOT`, scope ids, times, categories, metadata, keywords.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub filters: Value,
    #[serde(default)]
    pub show_expired: bool,
    #[serde(default)]
    pub offset: usize,
    pub limit: Option<usize>,
}

/// Lists memories by the filter grammar.
///
/// `filters` takes Mem0's v2/v3 grammar: `AND`, `OR`, `NOT`, scope ids, times (`gte`, `lt`...),
/// categories, metadata and keywords. A page of memories with the total that match.
#[utoipa::path(post, path = "/api/v1/memories/list", tag = "memories", request_body = QueryInput,
    responses((status = 200, body = MemoryPage), (status = 400, body = super::error::ErrorBody)))]
pub async fn query(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiJson(input): ApiJson<QueryInput>,
) -> Result<axum::Json<MemoryPage>> {
    let request = ListRequest {
        filter: Filter::parse(&input.filters)?,
        show_expired: input.show_expired,
        offset: input.offset,
        limit: page_limit(input.limit)?,
    };
    let (memories, total) = app.memories.list(&tenant, &request).await?;
    Ok(axum::Json(MemoryPage { memories, total, offset: request.offset }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = MemorySearchInput, example = json!({"query": "what is Dana allergic to?", "user_id": "dana", "top_k": 5}))]
pub struct SearchInput {
    pub query: String,
    pub user_id: Option<String>,
    pub agent_id: Option<String>,
    pub app_id: Option<String>,
    pub run_id: Option<String>,
    /// Only these tiers.
    #[serde(default)]
    pub tiers: Vec<Tier>,
    /// Mem0 v2/v3 filters, ANDed with the ids above.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub filters: Value,
    /// 1-1000, default 10.
    pub top_k: Option<usize>,
    /// Drop results scoring below this (0-1).
    pub threshold: Option<f32>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub show_expired: bool,
    /// Read the relations around the results from the graph (default true).
    pub relations: Option<bool>,
    /// Weights of the keyword and semantic rankings in hybrid mode.
    pub fusion: Option<Fusion>,
    /// Share of a neighbouring turn's relevance a turn of a run gains (0-1; default
    /// `memory.neighbour_weight`).
    pub neighbour_weight: Option<f32>,
    /// Share of a candidate's relevance a memory mentioning a name it mentions gains (0-1;
    /// default `memory.hop_weight`).
    pub hop_weight: Option<f32>,
    /// Reorder the best results by the configured reranker (`[rerank]`; default
    /// `rerank.by_default`). `true` without a reranker configured is refused.
    pub rerank: Option<bool>,
}

/// Searches memories.
///
/// Hybrid (keyword and semantic) by default, within the scope ids and `filters` given, with
/// recency and tier weights; each result carries its score, and `relations` the graph's relations
/// around the results.
#[utoipa::path(post, path = "/api/v1/memories/search", tag = "memories", request_body = SearchInput,
    responses((status = 200, body = SearchOutcome), (status = 400, body = super::error::ErrorBody)))]
pub async fn search(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiJson(input): ApiJson<SearchInput>,
) -> Result<axum::Json<SearchOutcome>> {
    use crate::memory::filter::{Field, Op};
    let scope = Scope { user_id: input.user_id, agent_id: input.agent_id, app_id: input.app_id, run_id: input.run_id }
        .normalized()?;
    let mut filter = scope_filter(&scope).and(Filter::parse(&input.filters)?);
    if !input.tiers.is_empty() {
        filter =
            filter.and(Filter::Cond(Field::Tier, Op::In(input.tiers.iter().map(|t| t.as_str().to_string()).collect())));
    }
    if let Some(t) = input.threshold
        && !(0.0..=1.0).contains(&t)
    {
        return Err(Error::invalid("threshold must be between 0 and 1"));
    }
    let configured = SearchOptions::configured(&app.config.memory);
    let options = SearchOptions {
        top_k: input.top_k.unwrap_or(10),
        threshold: input.threshold,
        mode: input.mode,
        show_expired: input.show_expired,
        relations: input.relations.unwrap_or(true),
        fusion: input.fusion.unwrap_or(configured.fusion),
        neighbour_weight: input.neighbour_weight.unwrap_or(configured.neighbour_weight),
        hop_weight: input.hop_weight.unwrap_or(configured.hop_weight),
        rerank: Some(app.search.wants_rerank(input.rerank)?),
    };
    options.check()?;
    Ok(axum::Json(app.memories.search(&tenant, &input.query, &filter, &options).await?))
}

/// One memory.
///
/// Its text, scope ids, tier, categories, metadata, times and version; expired ones too.
#[utoipa::path(get, path = "/api/v1/memories/{id}", tag = "memories",
    params(("id" = String, Path, description = "Memory id", example = "01947c2e-6f10-7a52-8c3d-4b5e6f708192")),
    responses((status = 200, body = Memory), (status = 404, body = super::error::ErrorBody)))]
pub async fn get(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<axum::Json<Memory>> {
    Ok(axum::Json(app.memories.get(&tenant, &id).await?))
}

/// Changes a memory.
///
/// Fields left out stay as they are; the change is recorded in its history. An immutable memory
/// is refused with 409 `conflict`.
#[utoipa::path(put, path = "/api/v1/memories/{id}", tag = "memories",
    request_body(content = Update, example = json!({"text": "Dana lives in Porto", "categories": ["location"]})),
    params(("id" = String, Path, description = "Memory id", example = "01947c2e-6f10-7a52-8c3d-4b5e6f708192")),
    responses((status = 200, body = Memory), (status = 400, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn update(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    Caller(ctx): Caller,
    Path(id): Path<String>,
    ApiJson(update): ApiJson<Update>,
) -> Result<axum::Json<Memory>> {
    Ok(axum::Json(app.memories.update(&tenant, &id, update, &actor(&ctx)).await?))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Deleted {
    pub deleted: u64,
}

/// Deletes a memory.
///
/// It leaves every store; its history keeps the deletion.
#[utoipa::path(delete, path = "/api/v1/memories/{id}", tag = "memories",
    params(("id" = String, Path, description = "Memory id", example = "01947c2e-6f10-7a52-8c3d-4b5e6f708192")),
    responses((status = 200, body = Deleted), (status = 404, body = super::error::ErrorBody)))]
pub async fn delete(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    Caller(ctx): Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Deleted>> {
    app.memories.delete(&tenant, &id, &actor(&ctx)).await?;
    Ok(axum::Json(Deleted { deleted: 1 }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteAllParams {
    /// This user's memories.
    #[param(example = "dana")]
    pub user_id: Option<String>,
    /// This agent's memories.
    #[param(example = "support-bot")]
    pub agent_id: Option<String>,
    /// This app's memories.
    #[param(example = "helpdesk")]
    pub app_id: Option<String>,
    /// This run's (session's) memories.
    #[param(example = "session-2025-01-14")]
    pub run_id: Option<String>,
}

/// Deletes every memory of a scope.
///
/// At least one of `user_id`, `agent_id`, `app_id` or `run_id` is required; every memory that
/// matches all the given ids is deleted. Answers with how many.
#[utoipa::path(delete, path = "/api/v1/memories", tag = "memories", params(DeleteAllParams),
    responses((status = 200, body = Deleted), (status = 400, body = super::error::ErrorBody)))]
pub async fn delete_all(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    Caller(ctx): Caller,
    ApiQuery(params): ApiQuery<DeleteAllParams>,
) -> Result<axum::Json<Deleted>> {
    let scope =
        Scope { user_id: params.user_id, agent_id: params.agent_id, app_id: params.app_id, run_id: params.run_id }
            .normalized()?;
    if scope.is_empty() {
        return Err(Error::invalid(
            "give at least one of user_id, agent_id, app_id or run_id: which memories to delete",
        ));
    }
    let deleted = app.memories.delete_where(&tenant, &scope_filter(&scope), &actor(&ctx)).await?;
    Ok(axum::Json(Deleted { deleted }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct History {
    pub history: Vec<HistoryEntry>,
}

/// A memory's history.
///
/// Every change, oldest first: the event (`ADD`, `UPDATE`, `DELETE`), the text before and after,
/// who made it and when.
#[utoipa::path(get, path = "/api/v1/memories/{id}/history", tag = "memories",
    params(("id" = String, Path, description = "Memory id", example = "01947c2e-6f10-7a52-8c3d-4b5e6f708192")),
    responses((status = 200, body = History), (status = 404, body = super::error::ErrorBody)))]
pub async fn history(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<axum::Json<History>> {
    Ok(axum::Json(History { history: app.memories.history(&tenant, &id).await? }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Scopes {
    pub scopes: Vec<ScopeCount>,
}

/// The scopes that hold memories.
///
/// Every user, agent, app and run id in use, with how many memories each holds.
#[utoipa::path(get, path = "/api/v1/memories/scopes", tag = "memories",
    responses((status = 200, body = Scopes)))]
pub async fn scopes(State(app): State<Arc<App>>, Tenant(tenant): Tenant) -> Result<axum::Json<Scopes>> {
    Ok(axum::Json(Scopes { scopes: app.memories.scopes(&tenant).await? }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"feedback": "POSITIVE", "reason": "exactly what the agent needed"}))]
pub struct FeedbackInput {
    /// `POSITIVE`, `NEGATIVE`, `VERY_NEGATIVE`, or null to clear.
    pub feedback: Option<String>,
    /// Why, in a few words.
    pub reason: Option<String>,
}

/// Feedback on a memory's usefulness.
///
/// Kept with the memory (and shown with it); `null` clears it.
#[utoipa::path(post, path = "/api/v1/memories/{id}/feedback", tag = "memories", request_body = FeedbackInput,
    params(("id" = String, Path, description = "Memory id", example = "01947c2e-6f10-7a52-8c3d-4b5e6f708192")),
    responses((status = 200, body = Memory), (status = 400, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody)))]
pub async fn feedback(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<FeedbackInput>,
) -> Result<axum::Json<Memory>> {
    app.memories.feedback(&tenant, &id, input.feedback.as_deref(), input.reason.as_deref()).await?;
    Ok(axum::Json(app.memories.get(&tenant, &id).await?))
}
