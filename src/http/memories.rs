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
    pub run_async: bool,
}

/// A queued add.
#[derive(Serialize, utoipa::ToSchema)]
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

#[utoipa::path(post, path = "/api/v1/memories", tag = "memories", params(AddParams), request_body = AddRequest,
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

#[utoipa::path(get, path = "/api/v1/memories/events/{id}", tag = "memories",
    params(("id" = String, Path, description = "The event id an asynchronous add answered")),
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
    pub user_id: Option<String>,
    pub agent_id: Option<String>,
    pub app_id: Option<String>,
    pub run_id: Option<String>,
    pub tier: Option<Tier>,
    /// Memories carrying this category.
    pub category: Option<String>,
    /// Include memories past their expiration.
    #[serde(default)]
    pub show_expired: bool,
    #[serde(default)]
    pub offset: usize,
    /// 1-1000, default 100.
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
}

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
    let options = SearchOptions {
        top_k: input.top_k.unwrap_or(10),
        threshold: input.threshold,
        mode: input.mode,
        show_expired: input.show_expired,
        relations: input.relations.unwrap_or(true),
        fusion: input.fusion.unwrap_or_else(|| app.config.memory.fusion()),
        neighbour_weight: input.neighbour_weight.unwrap_or(app.config.memory.neighbour_weight),
    };
    if !(0.0..=1.0).contains(&options.neighbour_weight) {
        return Err(Error::invalid("neighbour_weight must be between 0 and 1"));
    }
    Ok(axum::Json(app.memories.search(&tenant, &input.query, &filter, &options).await?))
}

#[utoipa::path(get, path = "/api/v1/memories/{id}", tag = "memories",
    params(("id" = String, Path, description = "Memory id")),
    responses((status = 200, body = Memory), (status = 404, body = super::error::ErrorBody)))]
pub async fn get(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<axum::Json<Memory>> {
    Ok(axum::Json(app.memories.get(&tenant, &id).await?))
}

#[utoipa::path(put, path = "/api/v1/memories/{id}", tag = "memories", request_body = Update,
    params(("id" = String, Path, description = "Memory id")),
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

#[utoipa::path(delete, path = "/api/v1/memories/{id}", tag = "memories",
    params(("id" = String, Path, description = "Memory id")),
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
    pub user_id: Option<String>,
    pub agent_id: Option<String>,
    pub app_id: Option<String>,
    pub run_id: Option<String>,
}

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

#[utoipa::path(get, path = "/api/v1/memories/{id}/history", tag = "memories",
    params(("id" = String, Path, description = "Memory id")),
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

#[utoipa::path(get, path = "/api/v1/memories/scopes", tag = "memories",
    responses((status = 200, body = Scopes)))]
pub async fn scopes(State(app): State<Arc<App>>, Tenant(tenant): Tenant) -> Result<axum::Json<Scopes>> {
    Ok(axum::Json(Scopes { scopes: app.memories.scopes(&tenant).await? }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackInput {
    /// `POSITIVE`, `NEGATIVE`, `VERY_NEGATIVE`, or null to clear.
    pub feedback: Option<String>,
    pub reason: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/memories/{id}/feedback", tag = "memories", request_body = FeedbackInput,
    params(("id" = String, Path, description = "Memory id")),
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
