//! The embedded graph store: sled persists nodes and edges; petgraph holds each tenant's graph in
//! memory for walks.
//!
//! One sled tree holds `n<key>` -> node, `e<key>` -> edge and `seq` -> committed position. Each
//! [`GraphStore::apply`] is one atomic sled batch; [`GraphStore::commit`] records the position and
//! flushes. The in-memory graphs are rebuilt from the tree at start.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;
use petgraph::Direction as PgDirection;
use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, UndirectedAdaptor};

use super::{Direction, GraphEdge, GraphNode, GraphStore, GraphWrite, Neighbour, Reached};
use crate::error::{Error, Result};
use crate::store::{RecordKey, Seq, StoreStats, TenantId, blocking, dir_size};

const SEQ_KEY: &[u8] = b"seq";

fn node_key(key: RecordKey) -> Vec<u8> {
    let mut k = vec![b'n'];
    k.extend_from_slice(&key.to_be_bytes());
    k
}

fn edge_key(key: RecordKey) -> Vec<u8> {
    let mut k = vec![b'e'];
    k.extend_from_slice(&key.to_be_bytes());
    k
}

fn sled_err<E: std::fmt::Display>(context: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::store(context, e)
}

/// One tenant's graph: vertices are node ids (present or only named by an edge).
#[derive(Default)]
struct TenantGraph {
    graph: StableDiGraph<String, RecordKey>,
    vertex: HashMap<String, NodeIndex>,
    nodes: HashMap<String, GraphNode>,
    /// The id of each node's record key.
    node_ids: HashMap<RecordKey, String>,
    edges: HashMap<RecordKey, (EdgeIndex, GraphEdge)>,
}

impl TenantGraph {
    fn vertex_for(&mut self, id: &str) -> NodeIndex {
        if let Some(v) = self.vertex.get(id) {
            return *v;
        }
        let v = self.graph.add_node(id.to_string());
        self.vertex.insert(id.to_string(), v);
        v
    }

    /// Drops a vertex that has neither node data nor edges.
    fn prune(&mut self, id: &str) {
        let Some(&v) = self.vertex.get(id) else { return };
        let has_edges = self.graph.edges_directed(v, PgDirection::Outgoing).next().is_some()
            || self.graph.edges_directed(v, PgDirection::Incoming).next().is_some();
        if !has_edges && !self.nodes.contains_key(id) {
            self.graph.remove_node(v);
            self.vertex.remove(id);
        }
    }

    fn put_node(&mut self, node: GraphNode) {
        self.vertex_for(&node.id);
        self.node_ids.insert(node.key, node.id.clone());
        self.nodes.insert(node.id.clone(), node);
    }

    fn put_edge(&mut self, edge: GraphEdge) {
        self.remove_edge(edge.key);
        let s = self.vertex_for(&edge.source);
        let t = self.vertex_for(&edge.target);
        let index = self.graph.add_edge(s, t, edge.key);
        self.edges.insert(edge.key, (index, edge));
    }

    fn remove_edge(&mut self, key: RecordKey) -> bool {
        let Some((index, edge)) = self.edges.remove(&key) else { return false };
        self.graph.remove_edge(index);
        self.prune(&edge.source);
        self.prune(&edge.target);
        true
    }

    fn remove_node_with_key(&mut self, key: RecordKey) -> bool {
        let Some(id) = self.node_ids.remove(&key) else { return false };
        self.nodes.remove(&id);
        self.prune(&id);
        true
    }

    /// Every edge with an end among `ids`, each once, in key order.
    fn edges_at(&self, ids: &[String]) -> impl Iterator<Item = &GraphEdge> {
        // Keys first, sorted and deduplicated: cheaper than a hash set of keys.
        let mut keys = Vec::new();
        for id in ids {
            let Some(&v) = self.vertex.get(id) else { continue };
            for d in [PgDirection::Outgoing, PgDirection::Incoming] {
                keys.extend(self.graph.edges_directed(v, d).map(|e| *e.weight()));
            }
        }
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter().filter_map(|key| self.edges.get(&key).map(|(_, edge)| edge))
    }

    /// Every edge with both ends among `ids`, each once.
    fn edges_within(&self, ids: &[String]) -> impl Iterator<Item = &GraphEdge> {
        let within: HashSet<_> = ids.iter().filter_map(|id| self.vertex.get(id).copied()).collect();
        let mut keys = Vec::new();
        for &v in &within {
            // Each edge once: from its source's side (a self-loop has no other side).
            keys.extend(
                self.graph
                    .edges_directed(v, PgDirection::Outgoing)
                    .filter(|e| within.contains(&e.target()))
                    .map(|e| *e.weight()),
            );
        }
        keys.into_iter().filter_map(|key| self.edges.get(&key).map(|(_, edge)| edge))
    }

    fn reached(&self, id: &str, depth: usize) -> Reached {
        Reached { id: id.to_string(), node: self.nodes.get(id).cloned(), depth }
    }
}

#[derive(Default)]
struct Graphs {
    tenants: HashMap<TenantId, TenantGraph>,
    /// Which tenant holds each key.
    owner: HashMap<RecordKey, TenantId>,
    committed_seq: Seq,
}

impl Graphs {
    fn apply(&mut self, write: GraphWrite) {
        match write {
            GraphWrite::Node(node) => {
                self.delete(node.key);
                self.owner.insert(node.key, node.tenant.clone());
                self.tenants.entry(node.tenant.clone()).or_default().put_node(node);
            }
            GraphWrite::Edge(edge) => {
                self.delete(edge.key);
                self.owner.insert(edge.key, edge.tenant.clone());
                self.tenants.entry(edge.tenant.clone()).or_default().put_edge(edge);
            }
            GraphWrite::Delete(key) => self.delete(key),
        }
    }

    fn delete(&mut self, key: RecordKey) {
        let Some(tenant) = self.owner.remove(&key) else { return };
        if let Some(graph) = self.tenants.get_mut(&tenant)
            && !graph.remove_edge(key)
        {
            graph.remove_node_with_key(key);
        }
    }
}

pub struct SledGraphStore {
    dir: PathBuf,
    tree: sled::Db,
    graphs: Arc<RwLock<Graphs>>,
}

impl SledGraphStore {
    pub async fn open(dir: &Path) -> Result<SledGraphStore> {
        let dir = dir.to_path_buf();
        blocking(move || {
            let tree = sled::Config::new().path(dir.join("db")).open().map_err(sled_err("open graph store"))?;
            let mut graphs = Graphs::default();
            for item in tree.iter() {
                let (k, v) = item.map_err(sled_err("read graph store"))?;
                match k.first() {
                    Some(b'n') => graphs
                        .apply(GraphWrite::Node(serde_json::from_slice(&v).map_err(sled_err("decode graph node"))?)),
                    Some(b'e') => graphs
                        .apply(GraphWrite::Edge(serde_json::from_slice(&v).map_err(sled_err("decode graph edge"))?)),
                    _ if &*k == SEQ_KEY => {
                        let bytes: [u8; 8] =
                            v.as_ref().try_into().map_err(|_| Error::store("graph store", "bad seq"))?;
                        graphs.committed_seq = u64::from_be_bytes(bytes);
                    }
                    _ => {}
                }
            }
            Ok(SledGraphStore { dir, tree, graphs: Arc::new(RwLock::new(graphs)) })
        })
        .await
    }

    fn read<T>(&self, tenant: &TenantId, f: impl FnOnce(&TenantGraph) -> T) -> Option<T> {
        let graphs = self.graphs.read();
        graphs.tenants.get(tenant).map(f)
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::internal("encode graph item", e))
}

#[async_trait]
impl GraphStore for SledGraphStore {
    fn backend(&self) -> &'static str {
        "sled"
    }

    async fn apply(&self, writes: Vec<GraphWrite>, _seq: Seq) -> Result<()> {
        let tree = self.tree.clone();
        let graphs = self.graphs.clone();
        blocking(move || {
            let mut batch = sled::Batch::default();
            for write in &writes {
                match write {
                    GraphWrite::Node(node) => {
                        batch.remove(edge_key(node.key));
                        batch.insert(node_key(node.key), encode(node)?);
                    }
                    GraphWrite::Edge(edge) => {
                        batch.remove(node_key(edge.key));
                        batch.insert(edge_key(edge.key), encode(edge)?);
                    }
                    GraphWrite::Delete(key) => {
                        batch.remove(node_key(*key));
                        batch.remove(edge_key(*key));
                    }
                }
            }
            tree.apply_batch(batch).map_err(sled_err("write graph store"))?;
            let mut graphs = graphs.write();
            for write in writes {
                graphs.apply(write);
            }
            Ok(())
        })
        .await
    }

    async fn node(&self, tenant: &TenantId, id: &str) -> Result<Option<GraphNode>> {
        Ok(self.read(tenant, |g| g.nodes.get(id).cloned()).flatten())
    }

    async fn neighbours(
        &self,
        tenant: &TenantId,
        id: &str,
        direction: Direction,
        label: Option<&str>,
    ) -> Result<Vec<Neighbour>> {
        let found = self.read(tenant, |g| {
            let Some(&v) = g.vertex.get(id) else { return Vec::new() };
            let directions: &[PgDirection] = match direction {
                Direction::Out => &[PgDirection::Outgoing],
                Direction::In => &[PgDirection::Incoming],
                Direction::Both => &[PgDirection::Outgoing, PgDirection::Incoming],
            };
            let mut out = Vec::new();
            for d in directions {
                for edge_ref in g.graph.edges_directed(v, *d) {
                    let Some((_, edge)) = g.edges.get(edge_ref.weight()) else { continue };
                    if label.is_some_and(|l| l != edge.label) {
                        continue;
                    }
                    let other = if *d == PgDirection::Outgoing { edge_ref.target() } else { edge_ref.source() };
                    let other_id = g.graph[other].clone();
                    out.push(Neighbour { edge: edge.clone(), node: g.nodes.get(&other_id).cloned(), id: other_id });
                }
            }
            out.sort_by_key(|a| a.edge.key);
            out
        });
        Ok(found.unwrap_or_default())
    }

    async fn k_hop(&self, tenant: &TenantId, id: &str, k: usize, limit: usize) -> Result<Vec<Reached>> {
        let found = self.read(tenant, |g| {
            let Some(&start) = g.vertex.get(id) else { return Vec::new() };
            let mut seen = HashSet::from([start]);
            let mut queue = VecDeque::from([(start, 0usize)]);
            let mut out = Vec::new();
            while let Some((v, depth)) = queue.pop_front() {
                if depth == k {
                    continue;
                }
                let mut next: Vec<NodeIndex> = g.graph.neighbors_undirected(v).filter(|n| !seen.contains(n)).collect();
                next.sort_by(|a, b| g.graph[*a].cmp(&g.graph[*b]));
                next.dedup();
                for n in next {
                    if out.len() >= limit {
                        return out;
                    }
                    seen.insert(n);
                    out.push(g.reached(&g.graph[n], depth + 1));
                    queue.push_back((n, depth + 1));
                }
            }
            out
        });
        Ok(found.unwrap_or_default())
    }

    async fn edges_at(&self, tenant: &TenantId, ids: &[String]) -> Result<Vec<GraphEdge>> {
        let found = self.read(tenant, |g| g.edges_at(ids).cloned().collect::<Vec<_>>());
        Ok(found.unwrap_or_default())
    }

    async fn visit_edges_at(
        &self,
        tenant: &TenantId,
        ids: &[String],
        visit: &mut (dyn for<'e> FnMut(&'e GraphEdge) + Send),
    ) -> Result<()> {
        self.read(tenant, |g| g.edges_at(ids).for_each(visit));
        Ok(())
    }

    async fn edges_within(&self, tenant: &TenantId, ids: &[String]) -> Result<Vec<GraphEdge>> {
        let found = self.read(tenant, |g| g.edges_within(ids).cloned().collect::<Vec<_>>());
        Ok(found.unwrap_or_default())
    }

    async fn visit_edges_within(
        &self,
        tenant: &TenantId,
        ids: &[String],
        visit: &mut (dyn for<'e> FnMut(&'e GraphEdge) + Send),
    ) -> Result<()> {
        self.read(tenant, |g| g.edges_within(ids).for_each(visit));
        Ok(())
    }

    async fn node_keys(&self, tenant: &TenantId, ids: &[String]) -> Result<Vec<(String, RecordKey)>> {
        let found = self.read(tenant, |g| {
            ids.iter().filter_map(|id| g.nodes.get(id).map(|n| (id.clone(), n.key))).collect::<Vec<_>>()
        });
        Ok(found.unwrap_or_default())
    }

    async fn shortest_path(&self, tenant: &TenantId, from: &str, to: &str) -> Result<Option<Vec<String>>> {
        let found = self.read(tenant, |g| {
            let (Some(&a), Some(&b)) = (g.vertex.get(from), g.vertex.get(to)) else { return None };
            let undirected = UndirectedAdaptor(&g.graph);
            petgraph::algo::astar(&undirected, a, |n| n == b, |_| 1usize, |_| 0)
                .map(|(_, path)| path.into_iter().map(|v| g.graph[v].clone()).collect())
        });
        Ok(found.flatten())
    }

    async fn commit(&self, seq: Seq) -> Result<()> {
        let tree = self.tree.clone();
        let graphs = self.graphs.clone();
        blocking(move || {
            tree.insert(SEQ_KEY, &seq.to_be_bytes()).map_err(sled_err("write graph position"))?;
            tree.flush().map_err(sled_err("flush graph store"))?;
            graphs.write().committed_seq = seq;
            Ok(())
        })
        .await
    }

    async fn committed_seq(&self) -> Result<Seq> {
        Ok(self.graphs.read().committed_seq)
    }

    /// sled's files cannot be copied while it is open: the entries are read out and written
    /// into a new database, flushed before it is closed.
    async fn snapshot(&self, into: &Path) -> Result<Option<Seq>> {
        let (tree, into) = (self.tree.clone(), into.to_path_buf());
        blocking(move || {
            let copy = sled::Config::new().path(into.join("db")).open().map_err(sled_err("create the graph copy"))?;
            let mut seq = 0;
            let mut batch = sled::Batch::default();
            for (n, item) in tree.iter().enumerate() {
                let (k, v) = item.map_err(sled_err("read graph store"))?;
                if &*k == SEQ_KEY {
                    seq = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
                }
                batch.insert(k, v);
                if n % 10_000 == 9_999 {
                    copy.apply_batch(std::mem::take(&mut batch)).map_err(sled_err("write the graph copy"))?;
                }
            }
            copy.apply_batch(batch).map_err(sled_err("write the graph copy"))?;
            copy.flush().map_err(sled_err("flush the graph copy"))?;
            Ok(Some(seq))
        })
        .await
    }

    async fn keys(&self) -> Result<Vec<RecordKey>> {
        let mut keys: Vec<RecordKey> = self.graphs.read().owner.keys().copied().collect();
        keys.sort_unstable();
        Ok(keys)
    }

    async fn clear(&self) -> Result<()> {
        let tree = self.tree.clone();
        let graphs = self.graphs.clone();
        blocking(move || {
            tree.clear().map_err(sled_err("clear graph store"))?;
            tree.flush().map_err(sled_err("flush graph store"))?;
            *graphs.write() = Graphs::default();
            Ok(())
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats> {
        let items = self.graphs.read().owner.len() as u64;
        Ok(StoreStats { items, bytes: dir_size(&self.dir) })
    }
}
