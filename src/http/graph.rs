//! Graph walks over the entity/relation store.

use std::sync::Arc;

use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::error::{ApiPath, ApiQuery};
use super::tenant::Tenant;
use crate::app::App;
use crate::error::{Error, Result};
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
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct GraphPath {
    /// Node ids from `from` to `to`; absent when they are not connected.
    pub path: Option<Vec<String>>,
}

/// The fewest-edges path between two nodes.
///
/// The node ids along the path, edges taken in either direction; `path` is absent when the two
/// are not connected.
#[utoipa::path(get, path = "/api/v1/graph/path", tag = "graph", params(PathParams),
    responses((status = 200, body = GraphPath)))]
pub async fn path(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiQuery(params): ApiQuery<PathParams>,
) -> Result<axum::Json<GraphPath>> {
    Ok(axum::Json(GraphPath { path: app.stores.graph.shortest_path(&tenant, &params.from, &params.to).await? }))
}
