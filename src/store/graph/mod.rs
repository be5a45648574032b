//! The graph store: typed entities and relations, and the algorithms that walk them.
//!
//! Contract:
//! - Nodes and edges are keyed by record key and addressed by record id within a tenant.
//! - An edge may name a node that does not exist (yet); it is stored and joins the graph when
//!   the node appears. Walks report such endpoints by id with `node: None`.
//! - Walks never cross tenants. `neighbours` follows edges in the given direction; `k_hop`
//!   returns every node within `k` edges (either direction), nearest first; `shortest_path`
//!   returns the fewest-edges path (edges taken in either direction) or `None`; `edges_at`
//!   returns every edge at some nodes, for walks that choose their edges themselves
//!   (`visit_edges_at` lends them instead of copying); `node_keys` tells the record keys of the
//!   nodes a store holds in memory, so their records are read by key.
//! - Changes are visible at once; [`GraphStore::commit`] makes them durable together with the
//!   change-log position returned by [`GraphStore::committed_seq`].
//! - Writes carry the change-log position of their batch: the highest position among its changes
//!   (a batch holds each key's latest state). A later batch has a higher one, a replayed batch the
//!   same or a lower one; a shared store never lets a write bring back a state older than one it
//!   holds.

pub mod neo4j;
pub mod sled;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{RecordKey, Seq, StoreStats, TenantId};
use crate::error::Result;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GraphNode {
    pub key: RecordKey,
    #[schema(value_type = String)]
    pub tenant: TenantId,
    pub id: String,
    pub label: String,
    pub name: String,
    pub properties: serde_json::Value,
    /// Microseconds since the epoch.
    pub updated_at: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GraphEdge {
    pub key: RecordKey,
    #[schema(value_type = String)]
    pub tenant: TenantId,
    pub id: String,
    pub label: String,
    pub source: String,
    pub target: String,
    pub properties: serde_json::Value,
    pub updated_at: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum GraphWrite {
    Node(GraphNode),
    Edge(GraphEdge),
    Delete(RecordKey),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Out,
    In,
    Both,
}

/// A node reached by a walk: its id, its data when the node exists, and how far it is.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Reached {
    pub id: String,
    pub node: Option<GraphNode>,
    pub depth: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Neighbour {
    pub edge: GraphEdge,
    pub id: String,
    pub node: Option<GraphNode>,
}

#[async_trait]
pub trait GraphStore: Send + Sync + 'static {
    fn backend(&self) -> &'static str;
    /// Whether every node of a cluster uses this one store (one projector writes it, under a
    /// lease) rather than keeping its own.
    fn shared(&self) -> bool {
        false
    }
    /// The fencing token of the lease under which this node writes a shared store.
    fn set_fence(&self, _token: u64) {}

    /// Applies writes in order; `seq` is the change-log position of their batch (see the module doc).
    async fn apply(&self, writes: Vec<GraphWrite>, seq: Seq) -> Result<()>;

    async fn node(&self, tenant: &TenantId, id: &str) -> Result<Option<GraphNode>>;
    async fn neighbours(
        &self,
        tenant: &TenantId,
        id: &str,
        direction: Direction,
        label: Option<&str>,
    ) -> Result<Vec<Neighbour>>;
    async fn k_hop(&self, tenant: &TenantId, id: &str, k: usize, limit: usize) -> Result<Vec<Reached>>;
    /// Every edge with an end among `ids`, each once, in no particular order: one level of a
    /// walk that filters edges itself (`crate::graph::walk`).
    async fn edges_at(&self, tenant: &TenantId, ids: &[String]) -> Result<Vec<GraphEdge>> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for id in ids {
            for n in self.neighbours(tenant, id, Direction::Both, None).await? {
                if seen.insert(n.edge.key) {
                    out.push(n.edge);
                }
            }
        }
        Ok(out)
    }
    /// Every edge whose two ends are both among `ids`, each once: the relations among the
    /// outermost entities of a walk. A backend that holds the graph in memory answers without
    /// reading the other edges of those nodes.
    async fn edges_within(&self, tenant: &TenantId, ids: &[String]) -> Result<Vec<GraphEdge>> {
        let within: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut edges = self.edges_at(tenant, ids).await?;
        edges.retain(|e| within.contains(e.source.as_str()) && within.contains(e.target.as_str()));
        Ok(edges)
    }
    /// [`Self::edges_at`] for a caller that only reads the edges: `visit` sees each once. A store
    /// that holds the graph in memory lends its edges instead of copying them.
    async fn visit_edges_at(
        &self,
        tenant: &TenantId,
        ids: &[String],
        visit: &mut (dyn for<'e> FnMut(&'e GraphEdge) + Send),
    ) -> Result<()> {
        self.edges_at(tenant, ids).await?.iter().for_each(visit);
        Ok(())
    }
    /// [`Self::edges_within`], lent to `visit` as [`Self::visit_edges_at`] does.
    async fn visit_edges_within(
        &self,
        tenant: &TenantId,
        ids: &[String],
        visit: &mut (dyn for<'e> FnMut(&'e GraphEdge) + Send),
    ) -> Result<()> {
        self.edges_within(tenant, ids).await?.iter().for_each(visit);
        Ok(())
    }
    /// The record key of nodes among `ids`, as far as the store can tell without a round trip:
    /// a caller reads those records by key (one lookup each instead of two) and the others by
    /// id. A store that does not hold the nodes in memory returns none (the default).
    async fn node_keys(&self, _tenant: &TenantId, _ids: &[String]) -> Result<Vec<(String, RecordKey)>> {
        Ok(Vec::new())
    }
    async fn shortest_path(&self, tenant: &TenantId, from: &str, to: &str) -> Result<Option<Vec<String>>>;

    async fn commit(&self, seq: Seq) -> Result<()>;
    async fn committed_seq(&self) -> Result<Seq>;
    /// Puts back what writes need and the server no longer holds (the layout `open` made), and
    /// keeps the data there. A shared store's server can lose its data (restarted empty, or
    /// restored from an older copy) while Nexus runs: after a failed write the projector calls
    /// this, then compares [`Self::committed_seq`] with what it committed and replays the change
    /// log from the store's position. Nothing to do for a store a node keeps itself (the default).
    async fn restore_layout(&self) -> Result<()> {
        Ok(())
    }
    /// Copies the store's durable state (as of its last commit) into the empty directory `into`,
    /// for a backup, and returns the change-log position that state holds. `None`: the backend
    /// is a service that keeps its own data (it has its own backups). The caller makes sure
    /// nothing writes the store meanwhile ([`crate::writelog::indexer::Indexer::hold`]).
    async fn snapshot(&self, _into: &std::path::Path) -> Result<Option<Seq>> {
        Ok(None)
    }

    async fn keys(&self) -> Result<Vec<RecordKey>>;
    async fn clear(&self) -> Result<()>;
    async fn stats(&self) -> Result<StoreStats>;

    /// Whether a rebuild fills a new generation ([`Self::new_generation`]) rather than the
    /// store in place.
    fn generations(&self) -> bool {
        false
    }
    /// A rebuild's target: a new, empty generation of the store, filled while every node keeps
    /// reading (and the projector keeps writing) the live one; `None` when the store is rebuilt
    /// in place instead (the embedded stores).
    async fn new_generation(&self) -> Result<Option<Arc<dyn GraphStore>>> {
        Ok(None)
    }
    /// Called on a store [`GraphStore::new_generation`] returned: makes it the live generation for
    /// every node at once (reads and writes), then drops the generation it replaces.
    async fn make_live(&self) -> Result<()> {
        Err(crate::error::Error::internal("make_live", "only a store's new generation can be made live"))
    }
}
