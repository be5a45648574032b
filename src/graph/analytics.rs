//! Graph analytics: centrality, components and communities of an in-memory graph of entities.
//!
//! Every measure follows networkx's definition and defaults, so a number Nexus reports is the
//! number networkx gives on the same graph; `tests/graph_analytics.rs` checks each one against
//! networkx's answers on fixed graphs (`tests/fixtures/graph/generate.py` made them):
//!
//! | [`Algorithm`] | networkx | value per entity |
//! |---|---|---|
//! | `pagerank` | `pagerank(G)`: alpha 0.85, tolerance 1e-6 × N, at most 100 iterations, dangling nodes spread uniformly, edge weights | rank; the ranks sum to 1 |
//! | `betweenness` | `betweenness_centrality(G)`: normalized, unweighted | share of shortest paths through it |
//! | `closeness` | `closeness_centrality(G)`: `wf_improved`, incoming distances when directed | reach divided by distance |
//! | `degree` | `degree_centrality(G)` | degree / (N − 1) |
//! | `components` | `weakly_connected_components(G)` | component number |
//! | `communities` | `louvain_communities(G)` on the undirected graph, edge weights | community number |
//!
//! Components and communities are numbered largest first, a tie broken by the smallest entity
//! id in each, so the numbers depend on the graph only (and, for communities, on the seed).
//!
//! **The graph** is built from node ids and edges `(source, target, weight)`; a missing weight
//! is 1. As in networkx's `Graph` and `DiGraph`: an edge named by an edge but not listed as a
//! node is added; an edge given twice is one edge and the later weight wins (in an undirected
//! graph `a–b` and `b–a` are the same edge); a self-loop is kept: it counts twice in the degree,
//! once in the node's PageRank out-weight and never in a shortest path. Weights are used by
//! PageRank and communities only (networkx's default `weight="weight"`); betweenness, closeness
//! and degree count hops. Communities see a directed graph as undirected: a pair linked both
//! ways is one edge of the larger of the two weights.
//!
//! **Bounded work.** [`Limits`] caps the nodes and edges a graph may have (the build refuses
//! more before holding them all) and, for betweenness and closeness, which search the graph from
//! every node, the work N × (N + E). Over a limit is a `payload_too_large` error naming it.
//!
//! Everything here is CPU-bound and synchronous: call it off the async threads
//! (`tokio::task::spawn_blocking`). Betweenness, closeness and PageRank use rayon's threads.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use petgraph::graph::{Graph, NodeIndex};
use petgraph::unionfind::UnionFind;
use petgraph::{Directed, EdgeType, Undirected};
use rayon::prelude::*;

use crate::error::{Error, ErrorCode, Result};

/// PageRank's damping factor (networkx's `alpha`).
pub const PAGERANK_ALPHA: f64 = 0.85;
/// PageRank stops once the ranks moved less than this, times N, in one iteration (`tol`).
pub const PAGERANK_TOLERANCE: f64 = 1.0e-6;
/// PageRank fails after this many iterations without converging (`max_iter`).
pub const PAGERANK_MAX_ITERATIONS: usize = 100;
/// Louvain stops when a level raises modularity by no more than this (`threshold`).
pub const LOUVAIN_THRESHOLD: f64 = 1.0e-7;
/// A move in Louvain's local phase is made only if it raises modularity by more than this: a
/// smaller gain is rounding noise, and refusing it makes every pass of moves strictly improve.
const LOUVAIN_MIN_GAIN: f64 = 1.0e-12;
/// Louvain's local phase ends when a pass over every node raises modularity by no more than
/// this (as the first implementation of the method does): on a million edges the last of
/// hundreds of passes each add less than a millionth.
const LOUVAIN_PASS_MIN_GAIN: f64 = 1.0e-6;
/// Betweenness and closeness search from several sources at once from this many nodes up.
const PARALLEL_THRESHOLD: usize = 64;

/// What to compute for every entity of a graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    PageRank,
    Betweenness,
    Closeness,
    Degree,
    Components,
    Communities,
}

impl Algorithm {
    pub const ALL: [Algorithm; 6] = [
        Algorithm::PageRank,
        Algorithm::Betweenness,
        Algorithm::Closeness,
        Algorithm::Degree,
        Algorithm::Components,
        Algorithm::Communities,
    ];

    /// The stable name of the algorithm, as clients spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::PageRank => "pagerank",
            Algorithm::Betweenness => "betweenness",
            Algorithm::Closeness => "closeness",
            Algorithm::Degree => "degree",
            Algorithm::Components => "components",
            Algorithm::Communities => "communities",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        Algorithm::ALL.into_iter().find(|a| a.as_str() == name).ok_or_else(|| {
            let known: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
            Error::invalid(format!("unknown graph algorithm `{name}`: use one of {}", known.join(", ")))
        })
    }
}

/// How large a graph the analytics accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most nodes a graph may have.
    pub max_nodes: usize,
    /// Most distinct edges a graph may have.
    pub max_edges: usize,
    /// Most work N × (N + E) for betweenness and closeness, which search from every node. The
    /// default, 2 × 10⁹, is some seconds on one core (e.g. 20,000 nodes and 80,000 edges).
    pub max_all_pairs_work: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_nodes: 2_000_000, max_edges: 10_000_000, max_all_pairs_work: 2_000_000_000 }
    }
}

/// How to run an algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Seeds the order in which Louvain visits nodes: one seed, one partition.
    pub seed: u64,
}

/// A graph of entities held in memory for analytics. Nodes are numbered in the order they were
/// first named; results come in that order.
#[derive(Clone, Debug)]
pub struct AnalyticsGraph {
    directed: bool,
    ids: Vec<String>,
    /// Distinct edges `(source, target, weight)` sorted by their ends; an undirected edge is
    /// stored once, with `source <= target`.
    edges: Vec<(u32, u32, f64)>,
    limits: Limits,
}

impl AnalyticsGraph {
    /// Builds a graph from its nodes and its edges `(source, target, weight)` (weight 1 when
    /// `None`). Nodes that only edges name are added after the listed ones. Fails on a weight
    /// that is negative or not finite, and as soon as the graph grows past `limits`.
    pub fn new<N, E, S>(directed: bool, nodes: N, edges: E, limits: Limits) -> Result<Self>
    where
        N: IntoIterator<Item = S>,
        E: IntoIterator<Item = (S, S, Option<f64>)>,
        S: AsRef<str>,
    {
        let mut ids: Vec<String> = Vec::new();
        let mut index: HashMap<String, u32> = HashMap::new();
        let mut intern = |id: &str| -> Result<u32> {
            if let Some(&i) = index.get(id) {
                return Ok(i);
            }
            if ids.len() >= limits.max_nodes {
                return Err(Error::new(
                    ErrorCode::PayloadTooLarge,
                    format!(
                        "the graph has more than {} nodes, the analytics limit: analyse a smaller graph or raise the limit",
                        limits.max_nodes
                    ),
                ));
            }
            let i = ids.len() as u32;
            ids.push(id.to_string());
            index.insert(id.to_string(), i);
            Ok(i)
        };
        for node in nodes {
            intern(node.as_ref())?;
        }
        let mut list: Vec<(u32, u32, f64)> = Vec::new();
        for (source, target, weight) in edges {
            let (source, target) = (source.as_ref(), target.as_ref());
            let weight = weight.unwrap_or(1.0);
            if !weight.is_finite() || weight < 0.0 {
                return Err(Error::invalid(format!(
                    "edge `{source}` -> `{target}` has weight {weight}: weights must be finite and not negative"
                )));
            }
            let (mut s, mut t) = (intern(source)?, intern(target)?);
            if !directed && s > t {
                std::mem::swap(&mut s, &mut t);
            }
            list.push((s, t, weight));
            // Repeated edges are only merged below: allow some slack before refusing.
            if list.len() > limits.max_edges.saturating_mul(2) {
                list = dedup_edges(list);
                if list.len() > limits.max_edges {
                    return Err(too_many_edges(limits.max_edges));
                }
            }
        }
        let edges = dedup_edges(list);
        if edges.len() > limits.max_edges {
            return Err(too_many_edges(limits.max_edges));
        }
        Ok(AnalyticsGraph { directed, ids, edges, limits })
    }

    pub fn is_directed(&self) -> bool {
        self.directed
    }

    pub fn node_count(&self) -> usize {
        self.ids.len()
    }

    /// Distinct edges (a repeated edge counts once).
    pub fn edge_count(&self) -> usize {
        self.edges.len()
    }

    /// Node ids in node order: the order of every result.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    fn check_all_pairs(&self, algorithm: Algorithm) -> Result<()> {
        let (n, e) = (self.ids.len() as u64, self.edges.len() as u64);
        let work = n.saturating_mul(n.saturating_add(e));
        if work > self.limits.max_all_pairs_work {
            return Err(Error::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "{algorithm} searches the graph from every node: {n} nodes and {e} edges are {work} steps, over the limit of {}; analyse a smaller graph or raise the limit",
                    self.limits.max_all_pairs_work
                ),
            ));
        }
        Ok(())
    }

    /// The graph as petgraph's, node `i` at index `i`.
    fn to_petgraph<Ty: EdgeType>(&self) -> Graph<(), (), Ty, u32> {
        let mut graph = Graph::with_capacity(self.ids.len(), self.edges.len());
        for _ in 0..self.ids.len() {
            graph.add_node(());
        }
        for &(s, t, _) in &self.edges {
            graph.add_edge(NodeIndex::new(s as usize), NodeIndex::new(t as usize), ());
        }
        graph
    }
}

fn too_many_edges(max_edges: usize) -> Error {
    Error::new(
        ErrorCode::PayloadTooLarge,
        format!(
            "the graph has more than {max_edges} edges, the analytics limit: analyse a smaller graph or raise the limit"
        ),
    )
}

/// Sorts edges by their ends and keeps the last given of each repeated edge.
fn dedup_edges(mut edges: Vec<(u32, u32, f64)>) -> Vec<(u32, u32, f64)> {
    // A stable sort keeps repeated edges in the order given; the last one wins.
    edges.sort_by_key(|&(s, t, _)| (s, t));
    let mut out: Vec<(u32, u32, f64)> = Vec::with_capacity(edges.len());
    for edge in edges {
        match out.last_mut() {
            Some(last) if (last.0, last.1) == (edge.0, edge.1) => last.2 = edge.2,
            _ => out.push(edge),
        }
    }
    out
}

/// Runs `algorithm` on `graph`: one value per entity, in node order.
pub fn run(graph: &AnalyticsGraph, algorithm: Algorithm, options: &Options) -> Result<Vec<(String, f64)>> {
    let values: Vec<f64> = match algorithm {
        Algorithm::PageRank => pagerank(graph)?,
        Algorithm::Betweenness => betweenness(graph)?,
        Algorithm::Closeness => closeness(graph)?,
        Algorithm::Degree => degree(graph),
        Algorithm::Components => components(graph).into_iter().map(|c| c as f64).collect(),
        Algorithm::Communities => communities(graph, options.seed).into_iter().map(|c| c as f64).collect(),
    };
    Ok(graph.ids.iter().cloned().zip(values).collect())
}

/// PageRank by power iteration, as networkx computes it: ranks start at 1/N; each iteration a
/// node passes `alpha` of its rank along its out-edges in proportion to their weights (an
/// undirected edge goes both ways), the rank of nodes without out-weight (dangling) is spread
/// over all nodes, and every node gets (1 − alpha)/N. Fails when the ranks have not settled
/// after [`PAGERANK_MAX_ITERATIONS`].
pub fn pagerank(graph: &AnalyticsGraph) -> Result<Vec<f64>> {
    let n = graph.ids.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    // Incoming edges grouped by target, as (source, weight); then each weight divided by its
    // source's out-weight.
    let mut out_weight = vec![0.0f64; n];
    let mut arcs: Vec<(u32, u32, f64)> = Vec::with_capacity(graph.edges.len() * if graph.directed { 1 } else { 2 });
    for &(s, t, w) in &graph.edges {
        arcs.push((s, t, w));
        out_weight[s as usize] += w;
        if !graph.directed && s != t {
            arcs.push((t, s, w));
            out_weight[t as usize] += w;
        }
    }
    let incoming = Csr::by_target(n, &arcs);
    drop(arcs);
    let share: Vec<f64> = incoming
        .neighbours
        .iter()
        .zip(&incoming.weights)
        .map(|(&s, &w)| {
            let out = out_weight[s as usize];
            if out > 0.0 { w / out } else { 0.0 }
        })
        .collect();
    let dangling: Vec<usize> = (0..n).filter(|&i| out_weight[i] == 0.0).collect();

    let uniform = 1.0 / n as f64;
    let mut rank = vec![uniform; n];
    let mut next = vec![0.0f64; n];
    for _ in 0..PAGERANK_MAX_ITERATIONS {
        let dangling_rank: f64 = dangling.iter().map(|&i| rank[i]).sum();
        let base = PAGERANK_ALPHA * dangling_rank * uniform + (1.0 - PAGERANK_ALPHA) * uniform;
        next.par_iter_mut().with_min_len(4096).enumerate().for_each(|(v, slot)| {
            let range = incoming.range(v);
            let inflow: f64 =
                incoming.neighbours[range.clone()].iter().zip(&share[range]).map(|(&u, &s)| rank[u as usize] * s).sum();
            *slot = PAGERANK_ALPHA * inflow + base;
        });
        let change: f64 = next.iter().zip(&rank).map(|(a, b)| (a - b).abs()).sum();
        std::mem::swap(&mut rank, &mut next);
        if change < n as f64 * PAGERANK_TOLERANCE {
            return Ok(rank);
        }
    }
    Err(Error::new(
        ErrorCode::Internal,
        format!("pagerank did not converge in {PAGERANK_MAX_ITERATIONS} iterations on {n} nodes"),
    ))
}

/// Betweenness centrality (Brandes' algorithm, by rustworkx-core): for each node, the share of
/// shortest paths between other pairs that pass through it, normalized by (N − 1)(N − 2).
pub fn betweenness(graph: &AnalyticsGraph) -> Result<Vec<f64>> {
    graph.check_all_pairs(Algorithm::Betweenness)?;
    let values = if graph.directed {
        rustworkx_core::centrality::betweenness_centrality(
            &graph.to_petgraph::<Directed>(),
            false,
            true,
            PARALLEL_THRESHOLD,
        )
    } else {
        rustworkx_core::centrality::betweenness_centrality(
            &graph.to_petgraph::<Undirected>(),
            false,
            true,
            PARALLEL_THRESHOLD,
        )
    };
    Ok(values.into_iter().map(|v| v.unwrap_or(0.0)).collect())
}

/// Closeness centrality (by rustworkx-core): (r − 1) / (sum of distances to the r − 1 nodes it
/// is reached from), times (r − 1)/(N − 1) so that a node of a small component does not score
/// like a hub (Wasserman and Faust's correction). In a directed graph distances run towards the
/// node, as in networkx.
pub fn closeness(graph: &AnalyticsGraph) -> Result<Vec<f64>> {
    graph.check_all_pairs(Algorithm::Closeness)?;
    let values = if graph.directed {
        rustworkx_core::centrality::closeness_centrality(&graph.to_petgraph::<Directed>(), true, PARALLEL_THRESHOLD)
    } else {
        rustworkx_core::centrality::closeness_centrality(&graph.to_petgraph::<Undirected>(), true, PARALLEL_THRESHOLD)
    };
    Ok(values.into_iter().map(|v| v.unwrap_or(0.0)).collect())
}

/// Degree centrality: the number of edge ends at a node (in + out when directed; a self-loop
/// counts twice) divided by N − 1. A graph of one node gives it 1, as networkx does.
pub fn degree(graph: &AnalyticsGraph) -> Vec<f64> {
    let n = graph.ids.len();
    if n <= 1 {
        return vec![1.0; n];
    }
    let mut ends = vec![0usize; n];
    for &(s, t, _) in &graph.edges {
        ends[s as usize] += 1;
        ends[t as usize] += 1;
    }
    let scale = 1.0 / (n - 1) as f64;
    ends.into_iter().map(|d| d as f64 * scale).collect()
}

/// Weakly connected components: nodes linked by edges in either direction share a number.
pub fn components(graph: &AnalyticsGraph) -> Vec<usize> {
    let n = graph.ids.len();
    let mut sets = UnionFind::<u32>::new(n);
    for &(s, t, _) in &graph.edges {
        sets.union(s, t);
    }
    let roots: Vec<usize> = (0..n as u32).map(|i| sets.find_mut(i) as usize).collect();
    number_groups(&graph.ids, &roots)
}

/// Renumbers groups (any labels below N) largest first, a tie broken by the smallest id in each.
fn number_groups(ids: &[String], labels: &[usize]) -> Vec<usize> {
    let n = ids.len();
    let mut size = vec![0usize; n];
    let mut smallest: Vec<Option<usize>> = vec![None; n];
    for (node, &label) in labels.iter().enumerate() {
        size[label] += 1;
        match smallest[label] {
            Some(s) if ids[s] <= ids[node] => {}
            _ => smallest[label] = Some(node),
        }
    }
    let mut order: Vec<usize> = (0..n).filter(|&l| size[l] > 0).collect();
    order.sort_by(|&a, &b| {
        size[b].cmp(&size[a]).then_with(|| ids[smallest[a].unwrap()].cmp(&ids[smallest[b].unwrap()]))
    });
    let mut number = vec![0usize; n];
    for (k, &label) in order.iter().enumerate() {
        number[label] = k;
    }
    labels.iter().map(|&l| number[l]).collect()
}

/// Communities by Louvain modularity maximisation on the undirected graph, weighted (networkx's
/// `louvain_communities` with resolution 1): every node starts alone; the local phase moves
/// nodes, visited in an order shuffled by `seed`, to the neighbouring community that raises
/// modularity most, until no move does; the aggregation phase makes each community a node; this
/// repeats while a level raises modularity by more than [`LOUVAIN_THRESHOLD`].
pub fn communities(graph: &AnalyticsGraph, seed: u64) -> Vec<usize> {
    let mut level = Level::of(graph);
    let n = graph.ids.len();
    let mut membership: Vec<usize> = (0..n).collect();
    if level.m <= 0.0 {
        return number_groups(&graph.ids, &membership);
    }
    let mut rng = SplitMix64(seed);
    let mut modularity = level.modularity(&(0..level.len()).collect::<Vec<_>>());
    loop {
        let (community, moved) = level.move_nodes(&mut rng);
        if !moved {
            break;
        }
        let (community, count) = renumber(&community);
        for c in &mut membership {
            *c = community[*c];
        }
        let next = level.modularity(&community);
        if next - modularity <= LOUVAIN_THRESHOLD {
            break;
        }
        modularity = next;
        level = level.aggregate(&community, count);
    }
    number_groups(&graph.ids, &membership)
}

/// Modularity (resolution 1) of a partition of the undirected, weighted graph, as networkx's
/// `modularity`: Σ over communities of L_c / m − (d_c / 2m)², where L_c is the weight of the
/// edges inside c, d_c the weighted degree of its nodes and m the total weight. `communities[i]`
/// is node `i`'s community, any number. A graph without weight has modularity 0.
pub fn modularity(graph: &AnalyticsGraph, communities: &[usize]) -> f64 {
    assert_eq!(communities.len(), graph.ids.len(), "one community per node");
    let level = Level::of(graph);
    if level.m <= 0.0 {
        return 0.0;
    }
    let (communities, _) = renumber(communities);
    level.modularity(&communities)
}

/// Labels renumbered densely (0, 1, ...) in order of first appearance, and how many there are.
fn renumber(labels: &[usize]) -> (Vec<usize>, usize) {
    let mut number: HashMap<usize, usize> = HashMap::new();
    let out = labels
        .iter()
        .map(|&l| {
            let next = number.len();
            *number.entry(l).or_insert(next)
        })
        .collect();
    (out, number.len())
}

/// Adjacency in compressed rows: the neighbours of `v` are `neighbours[offsets[v]..offsets[v + 1]]`.
struct Csr {
    offsets: Vec<usize>,
    neighbours: Vec<u32>,
    weights: Vec<f64>,
}

impl Csr {
    /// Rows by target: row `t` lists `(s, w)` for every arc `(s, t, w)`.
    fn by_target(n: usize, arcs: &[(u32, u32, f64)]) -> Csr {
        let mut offsets = vec![0usize; n + 1];
        for &(_, t, _) in arcs {
            offsets[t as usize + 1] += 1;
        }
        for i in 0..n {
            offsets[i + 1] += offsets[i];
        }
        let mut fill = offsets.clone();
        let mut neighbours = vec![0u32; arcs.len()];
        let mut weights = vec![0.0f64; arcs.len()];
        for &(s, t, w) in arcs {
            let at = &mut fill[t as usize];
            neighbours[*at] = s;
            weights[*at] = w;
            *at += 1;
        }
        Csr { offsets, neighbours, weights }
    }

    fn range(&self, v: usize) -> std::ops::Range<usize> {
        self.offsets[v]..self.offsets[v + 1]
    }
}

/// One level of Louvain: an undirected weighted graph whose nodes are the communities of the
/// level below (the entities at the first level).
struct Level {
    /// Links between distinct nodes, both ways.
    adjacency: Csr,
    /// Weight of the edges inside each node (its self-loops, then its merged communities).
    inner: Vec<f64>,
    /// Weighted degree of each node; an inner edge counts twice.
    degree: Vec<f64>,
    /// Total edge weight of the graph (the same at every level).
    m: f64,
}

impl Level {
    /// The first level: the graph made undirected, each node alone.
    fn of(graph: &AnalyticsGraph) -> Level {
        let n = graph.ids.len();
        let mut edges: Vec<(u32, u32, f64)> =
            graph.edges.iter().map(|&(s, t, w)| if s <= t { (s, t, w) } else { (t, s, w) }).collect();
        if graph.directed {
            // a -> b and b -> a are one undirected edge, of the larger weight.
            edges.sort_by_key(|&(s, t, _)| (s, t));
            edges.dedup_by(|later, kept| {
                let same = (later.0, later.1) == (kept.0, kept.1);
                if same {
                    kept.2 = kept.2.max(later.2);
                }
                same
            });
        }
        let mut inner = vec![0.0f64; n];
        let mut degree = vec![0.0f64; n];
        let mut arcs = Vec::with_capacity(edges.len() * 2);
        let mut m = 0.0;
        for (s, t, w) in edges {
            m += w;
            degree[s as usize] += w;
            degree[t as usize] += w;
            if s == t {
                inner[s as usize] += w;
            } else {
                arcs.push((s, t, w));
                arcs.push((t, s, w));
            }
        }
        Level { adjacency: Csr::by_target(n, &arcs), inner, degree, m }
    }

    fn len(&self) -> usize {
        self.degree.len()
    }

    /// Modularity of the partition `community` (dense numbers) of this level's nodes.
    fn modularity(&self, community: &[usize]) -> f64 {
        let mut inside = vec![0.0f64; self.len()];
        let mut total = vec![0.0f64; self.len()];
        for v in 0..self.len() {
            let c = community[v];
            inside[c] += self.inner[v];
            total[c] += self.degree[v];
            for i in self.adjacency.range(v) {
                let u = self.adjacency.neighbours[i] as usize;
                // Each link is listed from both ends: count it from the smaller.
                if u > v && community[u] == c {
                    inside[c] += self.adjacency.weights[i];
                }
            }
        }
        let two_m = 2.0 * self.m;
        inside.iter().zip(&total).map(|(&l, &d)| l / self.m - (d / two_m) * (d / two_m)).sum()
    }

    /// The local phase: starting from one community per node, moves each node (in a shuffled
    /// order) to the neighbouring community of best modularity gain, pass after pass, until a
    /// pass over every node moves nothing or raises modularity by no more than
    /// [`LOUVAIN_PASS_MIN_GAIN`]. Between such full passes a node is weighed again only
    /// when a neighbour has moved to another community than its own since it was last weighed
    /// (the pruning of Ozaki, Tezuka and Inaba, 2016): on a million edges the first level
    /// otherwise takes hundreds of full passes that each move a few nodes. Returns each node's
    /// community and whether any node moved.
    fn move_nodes(&self, rng: &mut SplitMix64) -> (Vec<usize>, bool) {
        let n = self.len();
        let mut community: Vec<usize> = (0..n).collect();
        let mut total = self.degree.clone();
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        let (m, two_m_squared) = (self.m, 2.0 * self.m * self.m);
        // Weight from the node being moved to each community.
        let mut link = WeightsTo::new(n);
        let mut moved = false;
        let mut active = vec![true; n];
        let mut full = true;
        loop {
            let (mut moves, mut gained) = (0usize, 0.0f64);
            for &v in &order {
                if !std::mem::take(&mut active[v]) {
                    continue;
                }
                let own = community[v];
                for i in self.adjacency.range(v) {
                    link.add(community[self.adjacency.neighbours[i] as usize], self.adjacency.weights[i]);
                }
                let k = self.degree[v];
                total[own] -= k;
                let remove_cost = -link.weight[own] / m + total[own] * k / two_m_squared;
                let (mut best, mut best_gain) = (own, LOUVAIN_MIN_GAIN);
                for &c in &link.touched {
                    let gain = remove_cost + link.weight[c] / m - total[c] * k / two_m_squared;
                    if gain > best_gain {
                        (best, best_gain) = (c, gain);
                    }
                }
                total[best] += k;
                if best != own {
                    community[v] = best;
                    moves += 1;
                    gained += best_gain;
                    for i in self.adjacency.range(v) {
                        let u = self.adjacency.neighbours[i] as usize;
                        if community[u] != best {
                            active[u] = true;
                        }
                    }
                }
                link.clear();
            }
            moved |= moves > 0;
            if moves == 0 || gained <= LOUVAIN_PASS_MIN_GAIN {
                if full {
                    break;
                }
                active.fill(true);
                full = true;
                continue;
            }
            full = false;
        }
        (community, moved)
    }

    /// The aggregation phase: one node per community (dense numbers below `count`), linked by
    /// the summed weights between communities; the weight inside becomes the node's inner weight.
    fn aggregate(&self, community: &[usize], count: usize) -> Level {
        let mut inner = vec![0.0f64; count];
        let mut degree = vec![0.0f64; count];
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); count];
        for (v, &c) in community.iter().enumerate() {
            inner[c] += self.inner[v];
            degree[c] += self.degree[v];
            members[c].push(v);
        }
        let mut arcs: Vec<(u32, u32, f64)> = Vec::new();
        let mut link = WeightsTo::new(count);
        for (c, nodes) in members.iter().enumerate() {
            for &v in nodes {
                for i in self.adjacency.range(v) {
                    let u = self.adjacency.neighbours[i] as usize;
                    let w = self.adjacency.weights[i];
                    let d = community[u];
                    if d == c {
                        // Listed from both ends: count it from the smaller.
                        if u > v {
                            inner[c] += w;
                        }
                    } else {
                        link.add(d, w);
                    }
                }
            }
            for &d in &link.touched {
                arcs.push((d as u32, c as u32, link.weight[d]));
            }
            link.clear();
        }
        Level { adjacency: Csr::by_target(count, &arcs), inner, degree, m: self.m }
    }
}

/// Sums of weights per community, with the communities in the order first added (the order
/// candidates are weighed in, as networkx does).
struct WeightsTo {
    weight: Vec<f64>,
    seen: Vec<bool>,
    touched: Vec<usize>,
}

impl WeightsTo {
    fn new(communities: usize) -> Self {
        WeightsTo { weight: vec![0.0; communities], seen: vec![false; communities], touched: Vec::new() }
    }

    fn add(&mut self, community: usize, weight: f64) {
        if !self.seen[community] {
            self.seen[community] = true;
            self.touched.push(community);
        }
        self.weight[community] += weight;
    }

    fn clear(&mut self) {
        for &c in &self.touched {
            self.weight[c] = 0.0;
            self.seen[c] = false;
        }
        self.touched.clear();
    }
}

/// SplitMix64: a small generator whose sequence for a seed is fixed by its definition, so a seed
/// gives the same communities in every build of Nexus.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fisher–Yates shuffle.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(directed: bool, edges: &[(&str, &str)]) -> AnalyticsGraph {
        AnalyticsGraph::new(directed, Vec::<&str>::new(), edges.iter().map(|&(s, t)| (s, t, None)), Limits::default())
            .unwrap()
    }

    #[test]
    fn repeated_edges_are_one_edge_and_the_later_weight_wins() {
        let g = AnalyticsGraph::new(
            false,
            ["a"],
            [("a", "b", Some(1.0)), ("b", "a", Some(3.0)), ("b", "c", None)],
            Limits::default(),
        )
        .unwrap();
        assert_eq!(g.edge_count(), 2);
        assert_eq!(g.edges[0], (0, 1, 3.0));
        let directed =
            AnalyticsGraph::new(true, ["a"], [("a", "b", None), ("b", "a", None)], Limits::default()).unwrap();
        assert_eq!(directed.edge_count(), 2);
    }

    #[test]
    fn groups_are_numbered_largest_first_then_by_smallest_id() {
        let ids: Vec<String> = ["d", "c", "b", "a", "e"].iter().map(|s| s.to_string()).collect();
        // Groups {d}, {c, e} and {b, a}: the pairs first, {a, b} before {c, e}.
        assert_eq!(number_groups(&ids, &[0, 1, 2, 2, 1]), vec![2, 1, 0, 0, 1]);
    }

    #[test]
    fn communities_split_two_cliques_joined_by_one_edge() {
        let mut edges = Vec::new();
        for side in ["x", "y"] {
            for i in 0..5 {
                for j in i + 1..5 {
                    edges.push((format!("{side}{i}"), format!("{side}{j}")));
                }
            }
        }
        edges.push(("x0".into(), "y0".into()));
        let g = AnalyticsGraph::new(
            false,
            Vec::<String>::new(),
            edges.iter().map(|(s, t)| (s.clone(), t.clone(), None)),
            Limits::default(),
        )
        .unwrap();
        let found = communities(&g, 7);
        let x: Vec<usize> = (0..g.node_count()).filter(|&i| g.ids()[i].starts_with('x')).map(|i| found[i]).collect();
        let y: Vec<usize> = (0..g.node_count()).filter(|&i| g.ids()[i].starts_with('y')).map(|i| found[i]).collect();
        assert!(x.iter().all(|&c| c == x[0]) && y.iter().all(|&c| c == y[0]) && x[0] != y[0], "{found:?}");
        assert_eq!(communities(&g, 7), found, "one seed, one partition");
    }

    #[test]
    fn algorithm_names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(a.as_str().parse::<Algorithm>().unwrap(), a);
        }
        assert_eq!("rank".parse::<Algorithm>().unwrap_err().code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn degree_counts_both_ends_of_a_directed_edge() {
        let g = graph(true, &[("a", "b"), ("b", "c")]);
        assert_eq!(degree(&g), vec![0.5, 1.0, 0.5]);
    }
}
