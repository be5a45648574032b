//! The Mem0 wire contract: what the official `mem0ai` Python client — generations 0.1.x, 1.0.x
//! and 2.x — sends when `MemoryClient(api_key=<nexus key>, host=<nexus url>)` points at Nexus, as
//! a thin layer over the memory service ([`crate::memory::Memories`]). The reference is
//! `mem0-wire.md`; `tests/mem0/clients.py` drives every client method against a live server.
//!
//! - Paths end in `/`, as the clients send them. `GET /v1/ping/` answers the key's organisation and
//!   project (the clients refuse to construct without them); 0.1.x and 1.0.x then send
//!   `org_id`/`project_id` with every call, which are ignored: the key decides the tenant.
//! - Generations differ in routes and shapes: `add` is `POST /v1/memories/` (v1.1 output, 1.0.x
//!   asynchronous by default) or `POST /v3/memories/add/` (2.x: queued unless `infer=false`);
//!   list and search answer bare lists on v1/v2 and objects on v3 (`{count, next, previous,
//!   results}` and `{results}`); v2/v3 take the filter grammar of [`crate::memory::filter`].
//! - An asynchronous add is a job; its id is the event id of `GET /v1/event/{id}/`. A synchronous
//!   v3 add is recorded as a finished job, so that its event id can be polled too.
//! - Errors on these routes are `{"detail": "...", "code": "<stable code>"}` (see
//!   [`mem0_error_bodies`], which rewrites Nexus's error body for every `/v1/`, `/v2/`, `/v3/`
//!   path, including the ones the auth middleware and the extractors produce).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::Caller;
use super::error::{ApiJson, ApiQuery};
use super::memories::actor;
use super::tenant::Tenant;
use crate::app::App;
use crate::error::{Error, ErrorCode, Result};
use crate::memory::add::{AddOutcome, AddRequest, AddResult, add_event, scope_filter};
use crate::memory::filter::{Field, Op};
use crate::memory::search::{MAX_TOP_K, ScoredMemory, SearchOptions};
use crate::memory::{ADD_JOB, Filter, HistoryEntry, ListRequest, Memory, Message, Relation, Scope, Update};
use crate::search::Mode;
use crate::store::TenantId;

/// The most memories one v1/v2 list answers when it is not paginated, and one batch may name.
const MAX_LIST: usize = 1000;
const MAX_BATCH: usize = 1000;
/// v3's page size when the client gives none.
const DEFAULT_PAGE_SIZE: usize = 100;
/// The highest page number asked for: past it, the page's first position would overflow.
const MAX_PAGE: usize = 1_000_000_000;
const QUEUED_MESSAGE: &str = "Memory processing has been queued for background execution";

// ---------------------------------------------------------------- shapes

/// Mem0's error body, with Nexus's stable code beside it.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct Mem0ErrorBody {
    /// What went wrong and what to do.
    pub detail: String,
    /// Stable, snake_case: match on this.
    pub code: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Ping {
    pub status: &'static str,
    pub org_id: String,
    pub project_id: String,
    /// Keys have no e-mail address: always null.
    pub user_email: Option<String>,
}

/// A memory in Mem0's shape (plus Nexus's `tier` and `immutable`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Mem0Memory {
    pub id: String,
    pub memory: String,
    pub user_id: Option<String>,
    pub agent_id: Option<String>,
    pub app_id: Option<String>,
    pub run_id: Option<String>,
    /// Mem0's older name for `run_id`.
    pub session_id: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub categories: Vec<String>,
    pub immutable: bool,
    /// `working`, `factual`, `episodic` or `semantic`.
    pub tier: String,
    /// When it happened (RFC 3339), if the caller said.
    pub timestamp: Option<String>,
    /// `YYYY-MM-DD`: hidden from search and list from that day.
    pub expiration_date: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// A search result: a memory and its score (0-1, higher is better).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Mem0Scored {
    #[serde(flatten)]
    pub memory: Mem0Memory,
    pub score: f32,
    /// The reranker's score, when `[rerank]` reordered the results (as Mem0's rerankers add it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank_score: Option<f32>,
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, false)
}

impl From<Memory> for Mem0Memory {
    fn from(m: Memory) -> Self {
        Mem0Memory {
            id: m.id,
            memory: m.memory,
            user_id: m.user_id,
            agent_id: m.agent_id,
            app_id: m.app_id,
            session_id: m.run_id.clone(),
            run_id: m.run_id,
            metadata: m.metadata,
            categories: m.categories,
            immutable: m.immutable,
            tier: m.tier.as_str().to_string(),
            timestamp: m.event_time.map(time),
            expiration_date: m.expiration_date.map(|d| d.format("%Y-%m-%d").to_string()),
            created_at: time(m.created_at),
            updated_at: time(m.updated_at),
        }
    }
}

impl From<ScoredMemory> for Mem0Scored {
    fn from(s: ScoredMemory) -> Self {
        Mem0Scored { memory: s.memory.into(), score: s.score.clamp(0.0, 1.0), rerank_score: s.rerank_score }
    }
}

/// One outcome of an add: `{id, memory, event}` (and `data.memory`, as older platform answers had).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Mem0AddResult {
    pub id: String,
    pub memory: String,
    /// `ADD`, `UPDATE`, `DELETE` or `NONE`.
    pub event: String,
    #[schema(value_type = Object)]
    pub data: Value,
    /// The text before an UPDATE or DELETE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_memory: Option<String>,
}

impl From<AddResult> for Mem0AddResult {
    fn from(r: AddResult) -> Self {
        Mem0AddResult {
            data: json!({"memory": r.memory}),
            id: r.id,
            memory: r.memory,
            event: r.event.as_str().to_string(),
            previous_memory: r.previous_memory,
        }
    }
}

fn add_results(outcome: AddOutcome) -> (Vec<Mem0AddResult>, Vec<Relation>) {
    (outcome.results.into_iter().map(Mem0AddResult::from).collect(), outcome.relations)
}

/// A queued v1 add.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Mem0Queued {
    pub message: &'static str,
    pub status: &'static str,
    pub event_id: String,
}

/// v1's add answer: the outcomes (v1.1), or the queued event.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum V1Added {
    Done {
        results: Vec<Mem0AddResult>,
        relations: Vec<Relation>,
    },
    Queued {
        #[schema(min_items = 1)]
        results: Vec<Mem0Queued>,
    },
    /// `output_format: "v1.0"`: the bare list.
    Legacy(Vec<Mem0AddResult>),
}

/// v3's add answer: an event id; synchronous adds (`infer=false`) carry their results.
#[derive(Serialize, utoipa::ToSchema)]
pub struct V3Added {
    pub event_id: String,
    /// `PENDING` when queued, `SUCCEEDED` when done.
    pub status: &'static str,
    pub message: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<Mem0AddResult>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relations: Option<Vec<Relation>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Mem0Event {
    pub id: String,
    pub event_id: String,
    /// `PENDING`, `RUNNING`, `SUCCEEDED` or `FAILED`.
    pub status: &'static str,
    pub results: Vec<Mem0AddResult>,
    pub relations: Vec<Relation>,
    pub error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// One page of a list.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Mem0Page {
    /// How many match in all.
    pub count: usize,
    /// The next page's URL, or null on the last page.
    pub next: Option<String>,
    pub previous: Option<String>,
    pub results: Vec<Mem0Memory>,
    /// With `enable_graph`: the relations of this page's memories.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relations: Option<Vec<Relation>>,
}

/// v1/v2 list answer: a bare list, or a page when `page` was given; with `enable_graph`,
/// `{results, relations}`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Listed {
    All(Vec<Mem0Memory>),
    Page(Mem0Page),
    Graph(Mem0Graphed),
}

/// A whole list with graph memory: the memories and their relations (nothing else, so that it
/// reads apart from a page).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Mem0Graphed {
    pub results: Vec<Mem0Memory>,
    pub relations: Vec<Relation>,
}

/// v1/v2 search answer: a bare list (v1 with `output_format: "v1.1"`: `{results}`; with
/// `enable_graph`: `{results, relations}`).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Searched {
    List(Vec<Mem0Scored>),
    Wrapped {
        results: Vec<Mem0Scored>,
        #[serde(skip_serializing_if = "Option::is_none")]
        relations: Option<Vec<Relation>>,
    },
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct V3Searched {
    pub results: Vec<Mem0Scored>,
    pub relations: Vec<Relation>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Mem0Message {
    pub message: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Mem0History {
    pub id: String,
    pub memory_id: String,
    /// The messages of an add (a list), or the fields of an update (an object).
    pub input: Value,
    pub old_memory: Option<String>,
    pub new_memory: Option<String>,
    /// `ADD`, `UPDATE`, `DELETE` or `NONE`.
    pub event: String,
    pub user_id: Option<String>,
    pub agent_id: Option<String>,
    pub app_id: Option<String>,
    pub run_id: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Who made the change: a key id, `master`, `open` or `inference`.
    pub actor: String,
    pub note: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<HistoryEntry> for Mem0History {
    fn from(h: HistoryEntry) -> Self {
        let input = match h.input {
            Some(Value::Object(mut o)) if o.get("messages").is_some_and(Value::is_array) => {
                o.remove("messages").unwrap_or_default()
            }
            Some(other) => other,
            None => Value::Array(Vec::new()),
        };
        Mem0History {
            id: h.id,
            memory_id: h.memory_id,
            input,
            old_memory: h.old_memory,
            new_memory: h.new_memory,
            event: h.event.as_str().to_string(),
            user_id: h.user_id,
            agent_id: h.agent_id,
            app_id: h.app_id,
            run_id: h.run_id,
            metadata: h.metadata,
            actor: h.actor,
            note: h.note,
            created_at: time(h.created_at),
            updated_at: time(h.created_at),
        }
    }
}

/// A user, agent, app or run that has memories.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Mem0Entity {
    /// `<type>:<name>`.
    pub id: String,
    pub name: String,
    /// `user`, `agent`, `app` or `run`.
    #[serde(rename = "type")]
    pub kind: String,
    pub total_memories: u64,
    /// Not tracked per entity: null.
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Mem0Entities {
    pub count: usize,
    pub next: Option<String>,
    pub previous: Option<String>,
    pub results: Vec<Mem0Entity>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Mem0Feedback {
    pub message: &'static str,
    pub memory_id: String,
    pub feedback: Option<String>,
    pub feedback_reason: Option<String>,
}

// ---------------------------------------------------------------- inputs

/// An add, as every generation sends it. Unknown fields are ignored.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct Mem0Add {
    #[serde(default)]
    pub messages: Vec<Message>,
    pub user_id: Option<String>,
    pub agent_id: Option<String>,
    pub app_id: Option<String>,
    pub run_id: Option<String>,
    /// 2.x: the ids, as `{"user_id": ..}`.
    #[schema(value_type = Option<Object>)]
    pub filters: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Extract facts (default) or store each message verbatim (`false`).
    pub infer: Option<bool>,
    /// v1: queue the add and answer with an event id.
    pub async_mode: Option<bool>,
    /// v1: `v1.1` (default) or `v1.0` (a bare list).
    pub output_format: Option<String>,
    /// Nexus: categories for every memory added.
    pub categories: Option<Vec<String>>,
    pub immutable: Option<bool>,
    /// `YYYY-MM-DD`.
    pub expiration_date: Option<String>,
    /// When it happened: Unix seconds or RFC 3339.
    #[schema(value_type = Option<Object>)]
    pub timestamp: Option<Value>,
    pub custom_instructions: Option<String>,
}

/// The scope ids an add names, top-level or (2.x) inside `filters`.
fn add_scope(input: &Mem0Add) -> Result<Scope> {
    let mut scope = Scope {
        user_id: input.user_id.clone(),
        agent_id: input.agent_id.clone(),
        app_id: input.app_id.clone(),
        run_id: input.run_id.clone(),
    };
    match &input.filters {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (key, value) in map {
                let slot = match key.as_str() {
                    "user_id" => &mut scope.user_id,
                    "agent_id" => &mut scope.agent_id,
                    "app_id" => &mut scope.app_id,
                    "run_id" => &mut scope.run_id,
                    other => {
                        return Err(Error::invalid(format!(
                            "filters of an add name the scope only (user_id, agent_id, app_id, run_id), not {other:?}"
                        )));
                    }
                };
                let Value::String(v) = value else {
                    return Err(Error::invalid(format!("filters.{key} of an add must be a string")));
                };
                if slot.as_ref().is_some_and(|s| s != v) {
                    return Err(Error::invalid(format!("{key} is given twice with different values")));
                }
                *slot = Some(v.clone());
            }
        }
        Some(_) => return Err(Error::invalid("filters must be a JSON object such as {\"user_id\": \"alice\"}")),
    }
    let scope = scope.normalized()?;
    scope.require()?;
    Ok(scope)
}

fn add_request(input: Mem0Add) -> Result<AddRequest> {
    let scope = add_scope(&input)?;
    if input.messages.is_empty() {
        return Err(Error::invalid("messages must be a non-empty list of {role, content}"));
    }
    Ok(AddRequest {
        messages: input.messages,
        text: None,
        user_id: scope.user_id,
        agent_id: scope.agent_id,
        app_id: scope.app_id,
        run_id: scope.run_id,
        metadata: input.metadata.filter(|m| !m.is_null()),
        infer: input.infer,
        tier: None,
        categories: input.categories.unwrap_or_default(),
        immutable: input.immutable.unwrap_or(false),
        expiration_date: input.expiration_date.filter(|d| !d.trim().is_empty()),
        ttl_seconds: None,
        timestamp: input.timestamp.filter(|t| !t.is_null()),
        provenance: None,
        custom_instructions: input.custom_instructions,
    })
}

/// A list or search body (v2/v3); unknown fields are ignored.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct Mem0Query {
    /// Search only: what to look for.
    pub query: Option<String>,
    /// The v2/v3 filter grammar: `AND`/`OR`/`NOT`, ids, times, categories, metadata, keywords.
    #[schema(value_type = Option<Object>)]
    pub filters: Option<Value>,
    /// v1/v2 only (v3 wants them in `filters`).
    pub user_id: Option<String>,
    pub agent_id: Option<String>,
    pub app_id: Option<String>,
    pub run_id: Option<String>,
    /// 1-1000, default 10.
    pub top_k: Option<usize>,
    /// Older clients' name for `top_k`.
    pub limit: Option<usize>,
    /// Drop results scoring below this (0-1). Default: v3 0.1, v2 0.3, v1 none.
    pub threshold: Option<f32>,
    /// Memories carrying any of these categories.
    pub categories: Option<Vec<String>>,
    #[serde(default)]
    pub show_expired: bool,
    /// Keyword (BM25) search only.
    #[serde(default)]
    pub keyword_search: bool,
    /// Created on or after / before (ISO 8601).
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    /// v1: `v1.1` wraps search results in `{results}`.
    pub output_format: Option<String>,
    /// Graph memory: the answer is `{results, relations}`, with the relations around the
    /// results (search) or of the listed memories (list). v3 search always carries them.
    #[serde(default)]
    pub enable_graph: bool,
    /// Search only: reorder the best results by the configured reranker (`[rerank]`); without
    /// one, ignored, as Mem0 does. Left out: `rerank.by_default`.
    pub rerank: Option<bool>,
    pub page: Option<usize>,
    pub page_size: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
    V3,
}

impl Mem0Query {
    fn filter(&self, version: Version) -> Result<Filter> {
        let ids = Scope {
            user_id: self.user_id.clone(),
            agent_id: self.agent_id.clone(),
            app_id: self.app_id.clone(),
            run_id: self.run_id.clone(),
        }
        .normalized()?;
        if version == Version::V3 && !ids.is_empty() {
            return Err(Error::invalid(
                "v3 takes user_id, agent_id, app_id and run_id inside filters, e.g. {\"filters\": {\"user_id\": \"alice\"}}",
            ));
        }
        let filters = match &self.filters {
            None => Filter::everything(),
            Some(v) => Filter::parse(v)?,
        };
        let mut filter = scope_filter(&ids).and(filters);
        if let Some(categories) = &self.categories
            && !categories.is_empty()
        {
            let wanted = categories.iter().map(|c| c.trim().to_lowercase()).collect();
            filter = filter.and(Filter::Cond(Field::Categories, Op::In(wanted)));
        }
        for (bound, gte) in [(&self.start_date, true), (&self.end_date, false)] {
            if let Some(text) = bound {
                let at = crate::memory::filter::parse_time(&Value::String(text.clone())).ok_or_else(|| {
                    Error::invalid(format!("start_date and end_date are ISO 8601 times or dates, not {text:?}"))
                })?;
                filter = filter.and(Filter::Cond(Field::CreatedAt, if gte { Op::Gte(at) } else { Op::Lte(at) }));
            }
        }
        Ok(filter)
    }

    fn search_options(&self, version: Version, memory: &crate::config::MemoryConfig) -> Result<SearchOptions> {
        let top_k = self.top_k.or(self.limit).unwrap_or(10);
        if top_k == 0 || top_k > MAX_TOP_K {
            return Err(Error::invalid(format!("top_k must be between 1 and {MAX_TOP_K}")));
        }
        let threshold = match (self.threshold, version) {
            (Some(t), _) => Some(t),
            (None, Version::V3) => Some(0.1),
            (None, Version::V2) => Some(0.3),
            (None, Version::V1) => None,
        };
        if threshold.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
            return Err(Error::invalid("threshold must be between 0 and 1"));
        }
        Ok(SearchOptions {
            top_k,
            threshold,
            mode: if self.keyword_search { Mode::Keyword } else { Mode::Hybrid },
            show_expired: self.show_expired,
            relations: version == Version::V3 || self.enable_graph,
            rerank: self.rerank,
            ..SearchOptions::configured(memory)
        })
    }

    fn query(&self) -> Result<&str> {
        match self.query.as_deref().map(str::trim) {
            Some(q) if !q.is_empty() => Ok(q),
            _ => Err(Error::invalid("query must be a non-empty string")),
        }
    }
}

/// `page` and `page_size` as query parameters (and the ids and filters of `GET`/`DELETE`).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Mem0Params {
    /// 1-based, at most 1000000000.
    #[param(minimum = 1, maximum = 1000000000, example = 1)]
    pub page: Option<usize>,
    /// 1-1000.
    #[param(minimum = 1, maximum = 1000, example = 100)]
    pub page_size: Option<usize>,
    /// Only this user's memories.
    #[param(example = "alex")]
    pub user_id: Option<String>,
    /// Only this agent's memories.
    #[param(example = "travel-agent")]
    pub agent_id: Option<String>,
    /// Only this app's memories.
    #[param(example = "trip-planner")]
    pub app_id: Option<String>,
    /// Only this run's (session's) memories.
    #[param(example = "session-42")]
    pub run_id: Option<String>,
    /// The filter grammar as JSON (2.x's `delete_all(filters=...)` sends it here).
    #[param(example = "{\"user_id\": \"alex\"}")]
    pub filters: Option<String>,
    /// Include memories past their expiration.
    #[serde(default)]
    #[param(example = false)]
    pub show_expired: bool,
    /// Graph memory: answer `{results, relations}`, with the relations of the listed memories
    /// (`true`/`True`/`1`).
    #[serde(default, deserialize_with = "loose_bool")]
    #[param(example = false)]
    pub enable_graph: bool,
}

/// A query-string flag as clients write it: `true`, `True`, `1` (and their opposites).
fn loose_bool<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    let text = String::deserialize(d)?;
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        other => Err(serde::de::Error::custom(format!("expected true or false, not {other:?}"))),
    }
}

impl Mem0Params {
    fn scope(&self) -> Result<Scope> {
        Scope {
            user_id: self.user_id.clone(),
            agent_id: self.agent_id.clone(),
            app_id: self.app_id.clone(),
            run_id: self.run_id.clone(),
        }
        .normalized()
    }
}

/// Which page to answer: `None` for the whole (bounded) list.
fn paging(page: Option<usize>, page_size: Option<usize>, always: bool) -> Result<Option<(usize, usize)>> {
    if page.is_none() && page_size.is_none() && !always {
        return Ok(None);
    }
    let page = page.unwrap_or(1);
    let size = page_size.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE).contains(&page) {
        return Err(Error::invalid(format!("page must be between 1 (the first page) and {MAX_PAGE}")));
    }
    if !(1..=MAX_LIST).contains(&size) {
        return Err(Error::invalid(format!("page_size must be between 1 and {MAX_LIST}")));
    }
    Ok(Some((page, size)))
}

/// The link to another page of the same request.
fn page_link(uri: &axum::http::Uri, page: usize, size: usize) -> String {
    let mut pairs: Vec<String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("page=") && !p.starts_with("page_size="))
        .map(str::to_string)
        .collect();
    pairs.push(format!("page={page}"));
    pairs.push(format!("page_size={size}"));
    format!("{}?{}", uri.path(), pairs.join("&"))
}

async fn list_page(
    app: &App,
    tenant: &TenantId,
    filter: Filter,
    show_expired: bool,
    paged: Option<(usize, usize)>,
    uri: &axum::http::Uri,
    graph: bool,
) -> Result<Listed> {
    let (offset, limit) = match paged {
        Some((page, size)) => ((page - 1) * size, size),
        None => (0, MAX_LIST),
    };
    let request = ListRequest { filter, show_expired, offset, limit };
    let (memories, total) = app.memories.list(tenant, &request).await?;
    let relations = if graph { Some(app.memories.relations_of(tenant, &memories).await?) } else { None };
    let results: Vec<Mem0Memory> = memories.into_iter().map(Mem0Memory::from).collect();
    Ok(match (paged, relations) {
        (None, None) => Listed::All(results),
        (None, Some(relations)) => Listed::Graph(Mem0Graphed { results, relations }),
        (Some((page, size)), relations) => Listed::Page(Mem0Page {
            count: total,
            next: (offset + results.len() < total).then(|| page_link(uri, page + 1, size)),
            previous: (page > 1).then(|| page_link(uri, page - 1, size)),
            results,
            relations,
        }),
    })
}

// ---------------------------------------------------------------- handlers

/// The constructor's check: the key's organisation and project.
///
/// What `MemoryClient(api_key=...)` calls first; any valid key may, whatever its scopes.
#[utoipa::path(get, path = "/v1/ping/", tag = "mem0", responses((status = 200, body = Ping),
    (status = "default", description = "An error: `{detail, code}`", body = Mem0ErrorBody)))]
pub async fn ping(State(app): State<Arc<App>>, Caller(ctx): Caller) -> Result<axum::Json<Ping>> {
    let project = app.auth.store.get_project(&ctx.tenant).await?;
    let org_id = project.map(|p| p.org_id).unwrap_or_else(|| "default".to_string());
    Ok(axum::Json(Ping { status: "ok", org_id, project_id: ctx.tenant.as_str().to_string(), user_email: None }))
}

/// Adds memories (0.1.x and 1.0.x).
///
/// Synchronous, or queued with `async_mode: true` (the answer then holds an event id for
/// `/v1/event/{event_id}/`). Facts are extracted from `messages` unless `infer: false`.
/// `output_format: "v1.0"` answers with a bare list, as 0.1.x expects.
#[utoipa::path(post, path = "/v1/memories/", tag = "mem0",
    request_body(content = Mem0Add, example = json!({"messages": [{"role": "user", "content": "I'm vegetarian and I live in Lisbon."}], "user_id": "alex", "metadata": {"source": "chat"}})),
    responses((status = 200, body = V1Added),
    (status = "default", description = "An error: `{detail, code}`", body = Mem0ErrorBody)))]
pub async fn add_v1(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    Caller(ctx): Caller,
    ApiJson(input): ApiJson<Mem0Add>,
) -> Result<axum::Json<V1Added>> {
    let run_async = input.async_mode.unwrap_or(false);
    let legacy = input.output_format.as_deref() == Some("v1.0");
    let request = add_request(input)?;
    if run_async {
        let job = app.memories.enqueue_add(&app.jobs, &tenant, request, &actor(&ctx)).await?;
        let queued = Mem0Queued { message: QUEUED_MESSAGE, status: "PENDING", event_id: job.id };
        return Ok(axum::Json(V1Added::Queued { results: vec![queued] }));
    }
    let (results, relations) = add_results(app.memories.add(&tenant, request, &actor(&ctx)).await?);
    Ok(axum::Json(if legacy { V1Added::Legacy(results) } else { V1Added::Done { results, relations } }))
}

/// Adds memories (2.x).
///
/// Queued, unless `infer: false` (or `async_mode: false`), which answers with the results and an
/// event id that is already `SUCCEEDED`. The scope ids go in `filters` or at the top level.
#[utoipa::path(post, path = "/v3/memories/add/", tag = "mem0",
    request_body(content = Mem0Add, example = json!({"messages": [{"role": "user",
        "content": "Book me window seats from now on."}], "filters": {"user_id": "alex"}, "infer": false})),
    responses((status = 200, body = V3Added),
    (status = "default", description = "An error: `{detail, code}`", body = Mem0ErrorBody)))]
pub async fn add_v3(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    Caller(ctx): Caller,
    ApiJson(input): ApiJson<Mem0Add>,
) -> Result<axum::Json<V3Added>> {
    let synchronous = input.infer == Some(false) || input.async_mode == Some(false);
    let request = add_request(input)?;
    if !synchronous {
        let job = app.memories.enqueue_add(&app.jobs, &tenant, request, &actor(&ctx)).await?;
        return Ok(axum::Json(V3Added {
            event_id: job.id,
            status: "PENDING",
            message: QUEUED_MESSAGE,
            results: None,
            relations: None,
        }));
    }
    let payload = json!({"request": &request, "actor": actor(&ctx)});
    let outcome = app.memories.add(&tenant, request, &actor(&ctx)).await?;
    let result = serde_json::to_value(&outcome).map_err(|e| Error::internal("encode add outcome", e))?;
    let job = app.jobs.store().record_succeeded(&tenant, ADD_JOB, payload, result).await?;
    let (results, relations) = add_results(outcome);
    Ok(axum::Json(V3Added {
        event_id: job.id,
        status: "SUCCEEDED",
        message: "Memories processed",
        results: Some(results),
        relations: Some(relations),
    }))
}

/// How an add is doing.
///
/// Poll until `SUCCEEDED` (with the add's results) or `FAILED` (with the error).
#[utoipa::path(get, path = "/v1/event/{event_id}/", tag = "mem0",
    params(("event_id" = String, Path, description = "The event id an add answered",
        example = "01947c2e-5b7a-7d3e-9f41-6a2b8c0d1e2f")),
    responses((status = 200, body = Mem0Event),
    (status = "default", description = "An error: `{detail, code}`", body = Mem0ErrorBody)))]
pub async fn event(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<axum::Json<Mem0Event>> {
    let job = app.jobs.store().get(&tenant, &id).await?.ok_or_else(|| Error::not_found("event", &id))?;
    let event = add_event(&job)?;
    Ok(axum::Json(Mem0Event {
        event_id: event.id.clone(),
        id: event.id,
        status: event.status,
        results: event.results.into_iter().map(Mem0AddResult::from).collect(),
        relations: event.relations,
        error: event.error,
        created_at: time(event.created_at),
        updated_at: time(event.updated_at),
    }))
}

/// Lists memories by id (0.1.x `get_all`).
///
/// A bare list of the scope's memories, or a page (`{count, next, previous, results}`) with
/// `page`/`page_size`.
#[utoipa::path(get, path = "/v1/memories/", tag = "mem0", params(Mem0Params),
    responses((status = 200, body = Listed),
    (status = "default", description = "An error: `{detail, code}`", body = Mem0ErrorBody)))]
pub async fn list_v1(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    uri: axum::http::Uri,
    ApiQuery(params): ApiQuery<Mem0Params>,
) -> Result<axum::Json<Listed>> {
    let mut filter = scope_filter(&params.scope()?);
    if let Some(text) = &params.filters {
        filter = filter.and(Filter::parse(&filters_param(text)?)?);
    }
    let paged = paging(params.page, params.page_size, false)?;
    let listed = list_page(&app, &tenant, filter, params.show_expired, paged, &uri, params.enable_graph).await?;
    Ok(axum::Json(listed))
}

/// Lists memories by the filter grammar (1.0.x `get_all`, 0.1.x `version="v2"`).
///
/// `filters` takes `AND`/`OR`/`NOT`, ids, times, categories, metadata and keywords. A bare list, or
/// a page with `page`/`page_size`.
#[utoipa::path(post, path = "/v2/memories/", tag = "mem0", params(Mem0Params),
    request_body(content = Mem0Query, example = json!({"filters": {"AND": [{"user_id": "alex"},
        {"created_at": {"gte": "2025-01-01"}}]}})),
    responses((status = 200, body = Listed),
    (status = "default", description = "An error: `{detail, code}`", body = Mem0ErrorBody)))]
pub async fn list_v2(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    uri: axum::http::Uri,
    ApiQuery(params): ApiQuery<Mem0Params>,
    ApiJson(input): ApiJson<Mem0Query>,
) -> Result<axum::Json<Listed>> {
    let filter = input.filter(Version::V2)?;
    let paged = paging(params.page.or(input.page), params.page_size.or(input.page_size), false)?;
    let show_expired = input.show_expired || params.show_expired;
    let graph = input.enable_graph || params.enable_graph;
    Ok(axum::Json(list_page(&app, &tenant, filter, show_expired, paged, &uri, graph).await?))
}

/// Lists memories by the filter grammar (2.x `get_all`), a page at a time.
///
/// The ids go inside `filters`; the answer is `{count, next, previous, results}`.
#[utoipa::path(post, path = "/v3/memories/", tag = "mem0", params(Mem0Params),
    request_body(content = Mem0Query, example = json!({"filters": {"user_id": "alex"}, "page": 1, "page_size": 50})),
    responses((status = 200, body = Mem0Page),
    (status = "default", description = "An error: `{detail, code}`", body = Mem0ErrorBody)))]
pub async fn list_v3(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    uri: axum::http::Uri,
    ApiQuery(params): ApiQuery<Mem0Params>,
    ApiJson(input): ApiJson<Mem0Query>,
) -> Result<axum::Json<Mem0Page>> {
    let filter = input.filter(Version::V3)?;
    let paged = paging(params.page.or(input.page), params.page_size.or(input.page_size), true)?;
    let show_expired = input.show_expired || params.show_expired;
    let graph = input.enable_graph || params.enable_graph;
    match list_page(&app, &tenant, filter, show_expired, paged, &uri, graph).await? {
        Listed::Page(page) => Ok(axum::Json(page)),
        _ => Err(Error::internal("v3 list", "a v3 list is always paginated")),
    }
}

async fn run_search(app: &App, tenant: &TenantId, input: &Mem0Query, version: Version) -> Result<V3Searched> {
    let query = input.query()?;
    let filter = input.filter(version)?;
    let options = input.search_options(version, &app.config.memory)?;
    let outcome = app.memories.search(tenant, query, &filter, &options).await?;
    Ok(V3Searched {
        results: outcome.results.into_iter().map(Mem0Scored::from).collect(),
        relations: outcome.relations,
    })
}

/// Searches memories (0.1.x).
///
/// The scope ids at the top level; a bare list of scored memories, or `{results}` with
/// `output_format: "v1.1"`.
#[utoipa::path(post, path = "/v1/memories/search/", tag = "mem0",
    request_body(content = Mem0Query, example = json!({"query": "where does alex live?", "user_id": "alex", "top_k": 5})),
    responses((status = 200, body = Searched),
    (status = "default", description = "An error: `{detail, code}`", body = Mem0ErrorBody)))]
pub async fn search_v1(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiJson(input): ApiJson<Mem0Query>,
) -> Result<axum::Json<Searched>> {
    let found = run_search(&app, &tenant, &input, Version::V1).await?;
    Ok(axum::Json(if input.enable_graph {
        Searched::Wrapped { results: found.results, relations: Some(found.relations) }
    } else if input.output_format.as_deref() == Some("v1.1") {
        Searched::Wrapped { results: found.results, relations: None }
    } else {
        Searched::List(found.results)
    }))
}

/// Searches memories by the filter grammar (1.0.x, 0.1.x `version="v2"`).
///
/// A bare list of scored memories (with `enable_graph`: `{results, relations}`); results below
/// `threshold` (default 0.3) are dropped.
#[utoipa::path(post, path = "/v2/memories/search/", tag = "mem0",
    request_body(content = Mem0Query, example = json!({"query": "food preferences",
        "filters": {"AND": [{"user_id": "alex"}]}, "top_k": 5})),
    responses((status = 200, body = Searched),
    (status = "default", description = "An error: `{detail, code}`", body = Mem0ErrorBody)))]
pub async fn search_v2(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiJson(input): ApiJson<Mem0Query>,
) -> Result<axum::Json<Searched>> {
    let found = run_search(&app, &tenant, &input, Version::V2).await?;
    Ok(axum::Json(if input.enable_graph {
        Searched::Wrapped { results: found.results, relations: Some(found.relations) }
    } else {
        Searched::List(found.results)
    }))
}

/// Searches memories by the filter grammar (2.x).
///
/// The ids go only inside `filters`; the answer is `{results, relations}`, results below
/// `threshold` (default 0.1) dropped.
#[utoipa::path(post, path = "/v3/memories/search/", tag = "mem0",
    request_body(content = Mem0Query, example = json!({"query": "seat preference", "filters": {"user_id": "alex"},
        "top_k": 5})),
    responses((status = 200, body = V3Searched),
    (status = "default", description = "An error: `{detail, code}`", body = Mem0ErrorBody)))]
pub async fn search_v3(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiJson(input): ApiJson<Mem0Query>,
) -> Result<axum::Json<V3Searched>> {
    Ok(axum::Json(run_search(&app, &tenant, &input, Version::V3).await?))
}

/// One memory (expired ones too).
///
/// In Mem0's shape: `id`, `memory`, the scope ids, `metadata`, `categories` and times.
#[utoipa::path(get, path = "/v1/memories/{memory_id}/", tag = "mem0",
    params(("memory_id" = String, Path, description = "Memory id", example = "01947c2e-6f10-7a52-8c3d-4b5e6f708192")),
    responses((status = 200, body = Mem0Memory),
    (status = "default", description = "An error: `{detail, code}`", body = Mem0ErrorBody)))]
pub async fn get(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<axum::Json<Mem0Memory>> {
    Ok(axum::Json(app.memories.get(&tenant, &id).await?.into()))
}

/// A change to one memory: `text`, `metadata`, `timestamp`, `expiration_date` (null clears it);
/// Nexus also takes `categories` and `immutable`.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct Mem0Update {
    pub text: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub timestamp: Option<Value>,
    /// `YYYY-MM-DD`, or null to clear it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub expiration_date: Option<Option<String>>,
    pub categories: Option<Vec<String>>,
    pub immutable: Option<bool>,
}

/// Tells a field given as `null` (`Some(None)`) from an absent one (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::<String>::deserialize(d)?))
}

impl Mem0Update {
    fn into_update(self) -> Result<Update> {
        let metadata = match self.metadata {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map),
            Some(_) => return Err(Error::invalid("metadata must be a JSON object")),
        };
        let update = Update {
            text: self.text,
            metadata,
            tier: None,
            categories: self.categories,
            expiration_date: self.expiration_date.map(Option::unwrap_or_default),
            timestamp: self.timestamp.filter(|t| !t.is_null()),
            immutable: self.immutable,
        };
        if update.text.is_none()
            && update.metadata.is_none()
            && update.categories.is_none()
            && update.expiration_date.is_none()
            && update.timestamp.is_none()
            && update.immutable.is_none()
        {
            return Err(Error::invalid("give at least one of text, metadata, timestamp or expiration_date"));
        }
        Ok(update)
    }
}

/// Changes a memory.
///
/// Give at least one of `text`, `metadata`, `timestamp`, `expiration_date` (null clears it),
/// `categories` or `immutable`; the rest stays as it is.
#[utoipa::path(put, path = "/v1/memories/{memory_id}/", tag = "mem0",
    request_body(content = Mem0Update, example = json!({"text": "Alex lives in Porto", "metadata": {"source": "chat"}})),
    params(("memory_id" = String, Path, description = "Memory id", example = "01947c2e-6f10-7a52-8c3d-4b5e6f708192")),
    responses((status = 200, body = Mem0Memory),
    (status = "default", description = "An error: `{detail, code}`", body = Mem0ErrorBody)))]
pub async fn update(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    Caller(ctx): Caller,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<Mem0Update>,
) -> Result<axum::Json<Mem0Memory>> {
    let update = input.into_update()?;
    Ok(axum::Json(app.memories.update(&tenant, &id, update, &actor(&ctx)).await?.into()))
}

/// Deletes a memory.
///
/// It leaves every store; its history keeps the deletion.
#[utoipa::path(delete, path = "/v1/memories/{memory_id}/", tag = "mem0",
    params(("memory_id" = String, Path, description = "Memory id", example = "01947c2e-6f10-7a52-8c3d-4b5e6f708192")),
    responses((status = 200, body = Mem0Message),
    (status = "default", description = "An error: `{detail, code}`", body = Mem0ErrorBody)))]
pub async fn delete(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    Caller(ctx): Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Mem0Message>> {
    app.memories.delete(&tenant, &id, &actor(&ctx)).await?;
    Ok(axum::Json(Mem0Message { message: "Memory deleted successfully!".into() }))
}

/// The answer of a bulk delete.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Mem0Deleted {
    pub message: String,
    /// How many memories were deleted.
    pub deleted: u64,
}

/// Deletes every memory of the given ids (and `filters`).
///
/// At least one of `user_id`, `agent_id`, `app_id` or `run_id` (as a parameter or inside
/// `filters`) is required: a whole project is never emptied by accident.
#[utoipa::path(delete, path = "/v1/memories/", tag = "mem0", params(Mem0Params),
    responses((status = 200, body = Mem0Deleted),
    (status = "default", description = "An error: `{detail, code}`", body = Mem0ErrorBody)))]
pub async fn delete_all(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    Caller(ctx): Caller,
    ApiQuery(params): ApiQuery<Mem0Params>,
) -> Result<axum::Json<Mem0Deleted>> {
    let scope = params.scope()?;
    let mut filter = scope_filter(&scope);
    let mut named = !scope.is_empty();
    if let Some(text) = &params.filters {
        let extra = Filter::parse(&filters_param(text)?)?;
        named |= extra.names_scope();
        filter = filter.and(extra);
    }
    if !named {
        return Err(Error::invalid(
            "give user_id, agent_id, app_id or run_id: deleting every memory of a project needs one of them",
        ));
    }
    let deleted = app.memories.delete_where(&tenant, &filter, &actor(&ctx)).await?;
    Ok(axum::Json(Mem0Deleted { message: "Memories deleted successfully!".into(), deleted }))
}

/// A memory's history.
///
/// Every change, oldest first: the event (`ADD`, `UPDATE`, `DELETE`), the memory before and after,
/// and when.
#[utoipa::path(get, path = "/v1/memories/{memory_id}/history/", tag = "mem0",
    params(("memory_id" = String, Path, description = "Memory id", example = "01947c2e-6f10-7a52-8c3d-4b5e6f708192")),
    responses((status = 200, body = Vec<Mem0History>),
    (status = "default", description = "An error: `{detail, code}`", body = Mem0ErrorBody)))]
pub async fn history(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<axum::Json<Vec<Mem0History>>> {
    let entries = app.memories.history(&tenant, &id).await?;
    Ok(axum::Json(entries.into_iter().map(Mem0History::from).collect()))
}

/// Every user, agent, app and run that has memories (`users()`).
///
/// Each with its type and how many memories it holds.
#[utoipa::path(get, path = "/v1/entities/", tag = "mem0",
    responses((status = 200, body = Mem0Entities),
    (status = "default", description = "An error: `{detail, code}`", body = Mem0ErrorBody)))]
pub async fn entities(State(app): State<Arc<App>>, Tenant(tenant): Tenant) -> Result<axum::Json<Mem0Entities>> {
    let results: Vec<Mem0Entity> = app
        .memories
        .scopes(&tenant)
        .await?
        .into_iter()
        .map(|s| Mem0Entity {
            id: format!("{}:{}", s.kind, s.name),
            name: s.name,
            kind: s.kind.to_string(),
            total_memories: s.memories,
            created_at: None,
            updated_at: None,
            metadata: json!({}),
        })
        .collect();
    Ok(axum::Json(Mem0Entities { count: results.len(), next: None, previous: None, results }))
}

/// Deletes a user, agent, app or run: every memory it has.
///
/// 404 `not_found` when it has none.
#[utoipa::path(delete, path = "/v2/entities/{entity_type}/{entity_id}/", tag = "mem0",
    params(("entity_type" = String, Path, description = "`user`, `agent`, `app` or `run`", example = "user"),
           ("entity_id" = String, Path, description = "The id, e.g. the user id", example = "alex")),
    responses((status = 200, body = Mem0Deleted),
    (status = "default", description = "An error: `{detail, code}`", body = Mem0ErrorBody)))]
pub async fn delete_entity(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    Caller(ctx): Caller,
    Path((kind, name)): Path<(String, String)>,
) -> Result<axum::Json<Mem0Deleted>> {
    let mut scope = Scope::default();
    let slot = match kind.as_str() {
        "user" => &mut scope.user_id,
        "agent" => &mut scope.agent_id,
        "app" => &mut scope.app_id,
        "run" => &mut scope.run_id,
        other => return Err(Error::invalid(format!("entity type must be user, agent, app or run, not {other:?}"))),
    };
    *slot = Some(name.clone());
    let scope = scope.normalized()?;
    scope.require()?;
    let deleted = app.memories.delete_where(&tenant, &scope_filter(&scope), &actor(&ctx)).await?;
    if deleted == 0 {
        return Err(Error::not_found(&kind, &name));
    }
    Ok(axum::Json(Mem0Deleted { message: "Entity deleted successfully!".into(), deleted }))
}

/// `{"memories": [{"memory_id", "text"?, "metadata"?}]}`, 1-1000 items.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"memories": [{"memory_id": "01947c2e-6f10-7a52-8c3d-4b5e6f708192",
    "text": "Alex prefers aisle seats"}]}))]
pub struct Mem0Batch {
    pub memories: Vec<Mem0BatchItem>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct Mem0BatchItem {
    pub memory_id: String,
    pub text: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// Checks a batch's size and that every memory exists in this tenant, before anything is written.
async fn check_batch(app: &App, tenant: &TenantId, batch: &Mem0Batch) -> Result<()> {
    if batch.memories.is_empty() || batch.memories.len() > MAX_BATCH {
        return Err(Error::invalid(format!(
            "a batch holds 1-{MAX_BATCH} memories, not {}; split it",
            batch.memories.len()
        )));
    }
    for item in &batch.memories {
        app.memories.get(tenant, &item.memory_id).await?;
    }
    Ok(())
}

/// Updates up to 1000 memories.
///
/// Each item names a `memory_id` and its new `text` and/or `metadata`. Every id is checked first:
/// when one is unknown, none is changed.
#[utoipa::path(put, path = "/v1/batch/", tag = "mem0", request_body = Mem0Batch,
    responses((status = 200, body = Mem0Message),
    (status = "default", description = "An error: `{detail, code}`", body = Mem0ErrorBody)))]
pub async fn batch_update(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    Caller(ctx): Caller,
    ApiJson(batch): ApiJson<Mem0Batch>,
) -> Result<axum::Json<Mem0Message>> {
    check_batch(&app, &tenant, &batch).await?;
    let mut updates = Vec::with_capacity(batch.memories.len());
    for item in batch.memories {
        let change = Mem0Update {
            text: item.text,
            metadata: item.metadata,
            timestamp: None,
            expiration_date: None,
            categories: None,
            immutable: None,
        };
        updates.push((item.memory_id, change.into_update()?));
    }
    let n = updates.len();
    for (id, update) in updates {
        app.memories.update(&tenant, &id, update, &actor(&ctx)).await?;
    }
    Ok(axum::Json(Mem0Message { message: format!("Successfully updated {n} memories") }))
}

/// Deletes up to 1000 memories.
///
/// Each item names a `memory_id`. Every id is checked first: when one is unknown, none is deleted.
#[utoipa::path(delete, path = "/v1/batch/", tag = "mem0",
    request_body(content = Mem0Batch, example = json!({"memories": [{"memory_id": "01947c2e-6f10-7a52-8c3d-4b5e6f708192"}]})),
    responses((status = 200, body = Mem0Message),
    (status = "default", description = "An error: `{detail, code}`", body = Mem0ErrorBody)))]
pub async fn batch_delete(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    Caller(ctx): Caller,
    ApiJson(batch): ApiJson<Mem0Batch>,
) -> Result<axum::Json<Mem0Message>> {
    check_batch(&app, &tenant, &batch).await?;
    let mut ids: Vec<String> = batch.memories.into_iter().map(|m| m.memory_id).collect();
    ids.sort();
    ids.dedup();
    for id in &ids {
        app.memories.delete(&tenant, id, &actor(&ctx)).await?;
    }
    Ok(axum::Json(Mem0Message { message: format!("Successfully deleted {} memories", ids.len()) }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"memory_id": "01947c2e-6f10-7a52-8c3d-4b5e6f708192", "feedback": "POSITIVE",
    "feedback_reason": "the agent used it"}))]
pub struct Mem0FeedbackInput {
    pub memory_id: String,
    /// `POSITIVE`, `NEGATIVE`, `VERY_NEGATIVE`, or null to clear it.
    pub feedback: Option<String>,
    pub feedback_reason: Option<String>,
}

/// Feedback on a memory's usefulness.
///
/// `POSITIVE`, `NEGATIVE` or `VERY_NEGATIVE` with an optional reason, kept with the memory; null
/// clears it.
#[utoipa::path(post, path = "/v1/feedback/", tag = "mem0", request_body = Mem0FeedbackInput,
    responses((status = 200, body = Mem0Feedback),
    (status = "default", description = "An error: `{detail, code}`", body = Mem0ErrorBody)))]
pub async fn feedback(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiJson(input): ApiJson<Mem0FeedbackInput>,
) -> Result<axum::Json<Mem0Feedback>> {
    let value = input.feedback.map(|f| f.trim().to_uppercase()).filter(|f| !f.is_empty());
    app.memories.feedback(&tenant, &input.memory_id, value.as_deref(), input.feedback_reason.as_deref()).await?;
    Ok(axum::Json(Mem0Feedback {
        message: "Feedback recorded",
        memory_id: input.memory_id,
        feedback: value,
        feedback_reason: input.feedback_reason,
    }))
}

// ---------------------------------------------------------------- query-string filters

/// `filters` given in a query string: JSON, or the Python literal that 2.x's `delete_all` sends
/// (`{'user_id': 'alice'}`: httpx writes a dict parameter with `str()`).
fn filters_param(text: &str) -> Result<Value> {
    serde_json::from_str(text).or_else(|_| python_literal(text)).map_err(|_| {
        Error::invalid(format!("filters must be a JSON object such as {{\"user_id\": \"alice\"}}, not {text:?}"))
    })
}

/// Rewrites a Python literal (quotes, True/False/None) as JSON and parses it.
fn python_literal(text: &str) -> std::result::Result<Value, ()> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                let mut s = String::new();
                loop {
                    match chars.next().ok_or(())? {
                        '\\' => match chars.next().ok_or(())? {
                            'n' => s.push('\n'),
                            't' => s.push('\t'),
                            other => s.push(other),
                        },
                        q if q == c => break,
                        other => s.push(other),
                    }
                }
                out.push_str(&serde_json::to_string(&s).map_err(|_| ())?);
            }
            c if c.is_ascii_alphabetic() => {
                let mut word = c.to_string();
                while let Some(&n) = chars.peek()
                    && n.is_ascii_alphanumeric()
                {
                    word.push(n);
                    chars.next();
                }
                out.push_str(match word.as_str() {
                    "True" => "true",
                    "False" => "false",
                    "None" => "null",
                    _ => return Err(()),
                });
            }
            other => out.push(other),
        }
    }
    serde_json::from_str(&out).map_err(|_| ())
}

// ---------------------------------------------------------------- error bodies

/// Whether a path is one of the Mem0 routes' (whose errors are `{"detail", "code"}`).
pub fn is_mem0_path(path: &str) -> bool {
    ["/v1/", "/v2/", "/v3/"].iter().any(|p| path.starts_with(p))
}

/// Rewrites Nexus's error body (`{"error": {"code", "message"}}`) as Mem0's (`{"detail", "code"}`)
/// on the Mem0 paths, whoever produced it: handler, extractor, auth middleware or fallback.
pub async fn mem0_error_bodies(request: Request, next: Next) -> Response {
    if !is_mem0_path(request.uri().path()) {
        return next.run(request).await;
    }
    let response = next.run(request).await;
    if !(response.status().is_client_error() || response.status().is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return Error::new(ErrorCode::Internal, "error body too large").into_response();
    };
    let rewritten = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| {
        let error = v.get("error")?.as_object()?;
        let body = Mem0ErrorBody {
            detail: error.get("message")?.as_str()?.to_string(),
            code: error.get("code")?.as_str()?.to_string(),
        };
        serde_json::to_vec(&body).ok()
    });
    match rewritten {
        Some(body) => {
            parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(body))
        }
        None => Response::from_parts(parts, Body::from(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_literals_become_json() {
        assert_eq!(
            python_literal("{'user_id': 'al\\'ice', 'x': True, 'y': None}").unwrap(),
            json!({"user_id": "al'ice", "x": true, "y": null})
        );
        assert_eq!(filters_param("{\"user_id\": \"bob\"}").unwrap(), json!({"user_id": "bob"}));
        assert!(filters_param("{'user_id': alice}").is_err(), "a bare word is not a literal");
        assert!(filters_param("{'user_id': 'alice'").is_err());
    }

    #[test]
    fn page_links_keep_the_other_parameters() {
        let uri: axum::http::Uri = "/v3/memories/?page=2&page_size=5&org_id=o".parse().unwrap();
        assert_eq!(page_link(&uri, 3, 5), "/v3/memories/?org_id=o&page=3&page_size=5");
        assert_eq!(paging(None, None, false).unwrap(), None);
        assert_eq!(paging(None, None, true).unwrap(), Some((1, DEFAULT_PAGE_SIZE)));
        assert!(paging(Some(0), Some(5), false).is_err());
        assert!(paging(Some(usize::MAX / 2), Some(1000), false).is_err(), "a page whose start would overflow");
        assert_eq!(paging(Some(MAX_PAGE), Some(1000), false).unwrap(), Some((MAX_PAGE, 1000)));
        assert!(paging(Some(1), Some(1001), false).is_err());
    }

    #[test]
    fn v3_refuses_top_level_ids_and_v2_takes_them() {
        let q: Mem0Query = serde_json::from_value(json!({"query": "x", "user_id": "alice"})).unwrap();
        assert_eq!(q.filter(Version::V3).unwrap_err().code, ErrorCode::InvalidRequest);
        let f = q.filter(Version::V2).unwrap();
        let mut m = Memory::for_tests("x");
        assert!(!f.matches(&m));
        m.user_id = Some("alice".into());
        assert!(f.matches(&m));
    }

    #[test]
    fn add_scope_reads_filters_and_top_level_ids() {
        let add = |v: Value| serde_json::from_value::<Mem0Add>(v).unwrap();
        let s = add_scope(&add(json!({"filters": {"user_id": "a"}, "agent_id": "b"}))).unwrap();
        assert_eq!((s.user_id.as_deref(), s.agent_id.as_deref()), (Some("a"), Some("b")));
        for bad in [
            json!({}),
            json!({"filters": {"colour": "red"}}),
            json!({"filters": {"user_id": 3}}),
            json!({"filters": "alice"}),
            json!({"user_id": "a", "filters": {"user_id": "b"}}),
        ] {
            assert!(add_scope(&add(bad.clone())).is_err(), "{bad} must be refused");
        }
    }
}
