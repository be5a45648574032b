//! The graph under `/api/v1/graph`: walks over the graph store's nodes and edges, and the
//! entity graph (entities, relations in time, neighbourhoods, paths, entity search).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::{ApiJson, ApiPath, ApiQuery};
use super::tenant::Tenant;
use crate::app::App;
use crate::error::{Error, Result};
use crate::graph::{Entity, EntityHit, NewEntity, NewRelation, Relation, RelationAdded, View};
use crate::store::TenantId;
use crate::store::graph::{Direction, GraphNode, Neighbour, Reached};

/// One node.
///
/// A node of the graph store: its id (the record that made it), label and name.
#[utoipa::path(get, path = "/api/v1/graph/nodes/{id}", tag = "graph",
    params(("id" = String, Path, description = "The node's id: the id of the record that made it", example = "person-dana")),
    responses((status = 200, body = GraphNode), (status = 404, body = super::error::ErrorBody)))]
pub async fn node(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<GraphNode>> {
    let node = app.stores.graph.node(&tenant, &id).await?.ok_or_else(|| Error::not_found("graph node", &id))?;
    Ok(axum::Json(node))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NeighbourParams {
    /// `out`, `in` or `both` (default).
    #[param(example = "both")]
    pub direction: Option<Direction>,
    /// Only edges with this label.
    #[param(example = "works_on")]
    pub label: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Neighbours {
    pub neighbours: Vec<Neighbour>,
}

/// Edges at a node and the nodes at their other end.
///
/// Outgoing, incoming or both, optionally of one edge label only. An unknown node has none.
#[utoipa::path(get, path = "/api/v1/graph/nodes/{id}/neighbours", tag = "graph",
    params(("id" = String, Path, description = "The node's id: the id of the record that made it", example = "person-dana"), NeighbourParams), responses((status = 200, body = Neighbours)))]
pub async fn neighbours(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<NeighbourParams>,
) -> Result<axum::Json<Neighbours>> {
    let direction = params.direction.unwrap_or(Direction::Both);
    let neighbours = app.stores.graph.neighbours(&tenant, &id, direction, params.label.as_deref()).await?;
    Ok(axum::Json(Neighbours { neighbours }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HopParams {
    /// 1-5, default 2.
    #[param(minimum = 1, maximum = 5, example = 2)]
    pub k: Option<usize>,
    /// 1-10000, default 1000.
    #[param(minimum = 1, maximum = 10000, example = 100)]
    pub limit: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Hops {
    pub nodes: Vec<Reached>,
}

/// Every node within `k` edges, nearest first.
///
/// A breadth-first walk over edges in either direction; each node comes with its distance.
#[utoipa::path(get, path = "/api/v1/graph/nodes/{id}/hops", tag = "graph",
    params(("id" = String, Path, description = "The node's id: the id of the record that made it", example = "person-dana"), HopParams), responses((status = 200, body = Hops)))]
pub async fn hops(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<HopParams>,
) -> Result<axum::Json<Hops>> {
    let k = params.k.unwrap_or(2);
    let limit = params.limit.unwrap_or(1000);
    if !(1..=5).contains(&k) || !(1..=10_000).contains(&limit) {
        return Err(Error::invalid("k must be 1-5 and limit 1-10000"));
    }
    Ok(axum::Json(Hops { nodes: app.stores.graph.k_hop(&tenant, &id, k, limit).await? }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PathParams {
    /// The node the path starts at.
    #[param(example = "person-dana")]
    pub from: String,
    /// The node the path ends at.
    #[param(example = "project-importer")]
    pub to: String,
    /// With a view (`as_of`, `known_at`, `types`): the most entities the search may visit,
    /// 1-100000, default 10000.
    #[param(minimum = 1, maximum = 100000, example = 10000)]
    pub limit: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct GraphPath {
    /// Node ids from `from` to `to`; absent when they are not connected.
    pub path: Option<Vec<String>>,
    /// With a view: the relation taken at each step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relations: Option<Vec<Relation>>,
}

/// The fewest-edges path between two nodes.
///
/// The node ids along the path, edges taken in either direction; `path` is absent when the two
/// are not connected. With `as_of`, `known_at` or `types`, only relations in that view are
/// followed, and the answer also lists the relation taken at each step.
#[utoipa::path(get, path = "/api/v1/graph/path", tag = "graph", params(PathParams, ViewParams),
    responses((status = 200, body = GraphPath), (status = 400, body = super::error::ErrorBody)))]
pub async fn path(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiQuery(params): ApiQuery<PathParams>,
    ApiQuery(view): ApiQuery<ViewParams>,
) -> Result<axum::Json<GraphPath>> {
    if view.as_of.is_none() && view.known_at.is_none() && view.types.is_none() {
        let path = app.stores.graph.shortest_path(&tenant, &params.from, &params.to).await?;
        return Ok(axum::Json(GraphPath { path, relations: None }));
    }
    let limit = params.limit.unwrap_or(10_000);
    if !(1..=100_000).contains(&limit) {
        return Err(Error::invalid("limit must be 1-100000"));
    }
    let view = view.view()?;
    let found =
        crate::graph::walk::path(app.stores.graph.as_ref(), &tenant, &params.from, &params.to, &view, limit).await?;
    Ok(axum::Json(match found {
        Some((path, relations)) => GraphPath { path: Some(path), relations: Some(relations) },
        None => GraphPath { path: None, relations: Some(Vec::new()) },
    }))
}

// --- Entities and relations, with time ---

/// Adds an entity.
///
/// Entities are identified by type and name: adding one that exists (names compared without
/// case or extra spaces) merges the given aliases and attributes into it and answers 200 with
/// it; a new one answers 201. Its name, aliases and summary make it findable by entity search.
#[utoipa::path(post, path = "/api/v1/graph/entities", tag = "graph",
    request_body(content = NewEntity, example = json!({"name": "Ana Lima", "type": "person", "aliases": ["Ana"],
        "attributes": {"team": "platform"}, "summary": "Leads the platform team."})),
    responses((status = 201, body = Entity), (status = 200, body = Entity), (status = 400, body = super::error::ErrorBody)))]
pub async fn add_entity(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiJson(input): ApiJson<NewEntity>,
) -> Result<(StatusCode, axum::Json<Entity>)> {
    let (entity, created) = app.graph.add_entity(&tenant, input, true).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, axum::Json(entity)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EntityParams {
    /// Words to find entities by (name, alias, summary; hybrid search). Absent: list them.
    #[param(example = "ana")]
    pub query: Option<String>,
    /// Only entities of this type.
    #[param(example = "person")]
    #[serde(rename = "type")]
    pub entity_type: Option<String>,
    /// 1-1000, default 20.
    #[param(minimum = 1, maximum = 1000, example = 20)]
    pub limit: Option<usize>,
    /// When listing: the `next_after` of the previous page.
    #[param(example = "ent_3f0c2a9d4b1e8c7a6f50")]
    pub after: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Entities {
    /// Best first when searching (each with its `score`), in id order when listing.
    pub entities: Vec<EntityHit>,
    /// When listing and more may follow: pass it as `after` for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// Finds or lists entities.
///
/// With `query`, a hybrid search over entities' names, aliases and summaries, best first; without,
/// the project's entities page by page. `type` narrows both.
#[utoipa::path(get, path = "/api/v1/graph/entities", tag = "graph", params(EntityParams),
    responses((status = 200, body = Entities), (status = 400, body = super::error::ErrorBody)))]
pub async fn entities(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiQuery(params): ApiQuery<EntityParams>,
) -> Result<axum::Json<Entities>> {
    let limit = params.limit.unwrap_or(20);
    if !(1..=1000).contains(&limit) {
        return Err(Error::invalid("limit must be 1-1000"));
    }
    let kind = params.entity_type.as_deref();
    match params.query.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        Some(query) => {
            let entities = app.graph.search_entities(&tenant, query, kind, limit).await?;
            Ok(axum::Json(Entities { entities, next_after: None }))
        }
        None => {
            let listed = app.graph.list_entities(&tenant, kind, params.after.as_deref(), limit).await?;
            let next_after = (listed.len() == limit).then(|| listed.last().map(|e| e.id.clone())).flatten();
            let entities = listed.into_iter().map(|entity| EntityHit { entity, score: 0.0 }).collect();
            Ok(axum::Json(Entities { entities, next_after }))
        }
    }
}

/// One entity.
///
/// Its type, name, aliases, attributes (with analytics stored on request) and summary.
#[utoipa::path(get, path = "/api/v1/graph/entities/{id}", tag = "graph",
    params(("id" = String, Path, description = "The entity's id", example = "ent_3f0c2a9d4b1e8c7a6f50")),
    responses((status = 200, body = Entity), (status = 404, body = super::error::ErrorBody)))]
pub async fn entity(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<Entity>> {
    Ok(axum::Json(app.graph.entity(&tenant, &id).await?))
}

/// Which relations a walk sees (query parameters).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ViewParams {
    /// Only relations true at this moment (RFC 3339). A moment ahead answers from facts already
    /// known to hold then.
    #[param(example = "2025-06-01T00:00:00Z")]
    pub as_of: Option<DateTime<Utc>>,
    /// Relations as Nexus knew them at this moment (RFC 3339, not after now). Default: now.
    #[param(example = "2026-01-01T00:00:00Z")]
    pub known_at: Option<DateTime<Utc>>,
    /// Only relations of these types, comma-separated.
    #[param(example = "works_for,reports_to")]
    pub types: Option<String>,
}

impl ViewParams {
    fn view(&self) -> Result<View> {
        let view = View {
            as_of: self.as_of,
            known_at: self.known_at,
            types: self
                .types
                .iter()
                .flat_map(|t| t.split(','))
                .map(crate::graph::model::normalise_type)
                .filter(|t| !t.is_empty())
                .collect(),
        };
        view.validate(Utc::now())?;
        Ok(view)
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HoodParams {
    /// 1-10, default 2.
    #[param(minimum = 1, maximum = 10, example = 2)]
    pub hops: Option<usize>,
    /// The most entities the answer may hold, 1-10000, default 1000: a neighbourhood larger
    /// than this is refused (ask for fewer hops or a narrower view).
    #[param(minimum = 1, maximum = 10000, example = 200)]
    pub limit: Option<usize>,
}

/// An entity reached by a walk.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReachedEntity {
    pub id: String,
    /// Relations from the start.
    pub depth: usize,
    /// Absent when a relation names an entity that is not stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<Entity>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Neighbourhood {
    /// The start first, then the others nearest first.
    pub entities: Vec<ReachedEntity>,
    /// Every relation the view admits among them.
    pub relations: Vec<Relation>,
}

async fn reached(app: &App, tenant: &TenantId, ids: Vec<(String, usize)>) -> Result<Vec<ReachedEntity>> {
    let wanted: Vec<String> = ids.iter().map(|(id, _)| id.clone()).collect();
    let mut found: HashMap<String, Entity> =
        app.graph.entities(tenant, &wanted).await?.into_iter().map(|e| (e.id.clone(), e)).collect();
    Ok(ids.into_iter().map(|(id, depth)| ReachedEntity { entity: found.remove(&id), id, depth }).collect())
}

/// An entity's neighbourhood, in time.
///
/// Every entity within `hops` relations (either direction) and the relations among them, as
/// true `as_of` a moment and as known `known_at` one, optionally of some types only. A
/// neighbourhood of more than `limit` entities is refused with `invalid_request`.
#[utoipa::path(get, path = "/api/v1/graph/entities/{id}/neighbourhood", tag = "graph",
    params(("id" = String, Path, description = "The entity's id", example = "ent_3f0c2a9d4b1e8c7a6f50"), HoodParams, ViewParams),
    responses((status = 200, body = Neighbourhood), (status = 400, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody)))]
pub async fn neighbourhood(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<HoodParams>,
    ApiQuery(view): ApiQuery<ViewParams>,
) -> Result<axum::Json<Neighbourhood>> {
    let hops = params.hops.unwrap_or(2);
    let limit = params.limit.unwrap_or(1000);
    if !(1..=10).contains(&hops) || !(1..=10_000).contains(&limit) {
        return Err(Error::invalid("hops must be 1-10 and limit 1-10000"));
    }
    let view = view.view()?;
    app.graph.entity(&tenant, &id).await?;
    let walked = crate::graph::walk::neighbourhood(app.stores.graph.as_ref(), &tenant, &id, hops, &view, limit).await?;
    Ok(axum::Json(Neighbourhood {
        entities: reached(&app, &tenant, walked.reached).await?,
        relations: walked.relations,
    }))
}

/// Adds a relation between two entities, in time.
///
/// `valid_at`/`invalid_at` say when it was true. A relation of a single-valued type
/// (`works_for`, `reports_to`, `lives_in`...) that names another target than one true at the
/// same time closes the old one instead of deleting it: the answer's `closed` lists the
/// corrected versions. Adding a relation already known returns it with `created: false`.
/// Refused: a relation from an entity to itself, and ends that are not entities of this project.
#[utoipa::path(post, path = "/api/v1/graph/relations", tag = "graph",
    request_body(content = NewRelation, example = json!({"source": "ent_3f0c2a9d4b1e8c7a6f50", "type": "works_for",
        "target": "ent_91d2e7c0b3a4f5e6d7c8", "fact": "Ana joined Acme as a platform engineer.", "valid_at": "2024-01-01T00:00:00Z"})),
    responses((status = 201, body = RelationAdded), (status = 200, body = RelationAdded),
        (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn add_relation(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiJson(input): ApiJson<NewRelation>,
) -> Result<(StatusCode, axum::Json<RelationAdded>)> {
    let added = app.graph.add_relation(&tenant, input, true).await?;
    Ok((if added.created { StatusCode::CREATED } else { StatusCode::OK }, axum::Json(added)))
}

/// Which part of the graph an analysis runs on.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsFilter {
    /// Only relations true at this moment.
    pub as_of: Option<DateTime<Utc>>,
    /// Relations as Nexus knew them at this moment (not after now). Default: now.
    pub known_at: Option<DateTime<Utc>>,
    /// Only relations of these types.
    #[serde(default)]
    pub types: Vec<String>,
    /// Only entities of these types (and the relations among them).
    #[serde(default)]
    pub entity_types: Vec<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsRequest {
    /// `pagerank`, `betweenness`, `closeness`, `degree`, `components` or `communities`.
    pub algorithm: String,
    #[serde(default)]
    pub filter: Option<AnalyticsFilter>,
    /// Follow relations from source to target only. Default: `true` for `pagerank`, `false`
    /// for the others (components are then weakly connected ones).
    #[serde(default)]
    pub directed: Option<bool>,
    /// Keep each entity's value in its attributes, under the algorithm's name.
    #[serde(default)]
    pub store: bool,
    /// Answer with the first `limit` results only (1-100000).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Score {
    pub entity_id: String,
    /// The score, or the component or community number (0 is the largest).
    pub value: f64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AnalyticsResults {
    pub algorithm: String,
    /// Best first; components and communities by number.
    pub results: Vec<Score>,
    /// How many entities the analysis ran over.
    pub entities: usize,
}

/// Graph analytics: ranks and groups of entities.
///
/// PageRank, betweenness, closeness and degree centrality rank the entities; `components`
/// (weakly connected) and `communities` (Louvain) group them, numbered largest first. Each is
/// computed as networkx defines it, over the whole graph or the part `filter` selects (a
/// moment, relation types, entity types). A graph past the size limits is refused with
/// `payload_too_large`.
#[utoipa::path(post, path = "/api/v1/graph/analytics", tag = "graph",
    request_body(content = AnalyticsRequest, example = json!({"algorithm": "pagerank",
        "filter": {"as_of": "2025-06-01T00:00:00Z", "types": ["works_for", "reports_to"]}})),
    responses((status = 200, body = AnalyticsResults), (status = 400, body = super::error::ErrorBody),
        (status = 413, body = super::error::ErrorBody)))]
pub async fn analytics(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiJson(input): ApiJson<AnalyticsRequest>,
) -> Result<axum::Json<AnalyticsResults>> {
    let algorithm: crate::graph::analytics::Algorithm = input.algorithm.parse()?;
    let limit = input.limit.unwrap_or(100_000);
    if !(1..=100_000).contains(&limit) {
        return Err(Error::invalid("limit must be 1-100000"));
    }
    let filter = input.filter.unwrap_or_default();
    let view = View {
        as_of: filter.as_of,
        known_at: filter.known_at,
        types: filter.types.iter().map(|t| crate::graph::model::normalise_type(t)).collect(),
    };
    view.validate(Utc::now())?;
    let directed = input.directed.unwrap_or(algorithm == crate::graph::analytics::Algorithm::PageRank);
    let results = app.graph.analytics(&tenant, algorithm, &view, &filter.entity_types, directed, input.store).await?;
    let entities = results.len();
    Ok(axum::Json(AnalyticsResults {
        algorithm: algorithm.as_str().to_string(),
        results: results.into_iter().take(limit).map(|(entity_id, value)| Score { entity_id, value }).collect(),
        entities,
    }))
}
