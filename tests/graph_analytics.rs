//! Graph analytics against networkx: every fixture in `tests/fixtures/graph/` holds a graph and
//! networkx's answers on it (made by `generate.py` there). Each measure must match within 1e-6,
//! components must be the same partition, and Louvain must reach networkx's modularity less
//! 0.01 or better. Then the edges of the domain: empty graphs, one node, self-loops, isolated
//! nodes, bad weights and graphs over the limits.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use nexus::error::ErrorCode;
use nexus::graph::analytics::{self, Algorithm, AnalyticsGraph, Limits, Options};
use serde_json::Value;

const TOLERANCE: f64 = 1e-6;
const MODULARITY_SLACK: f64 = 0.01;

struct Fixture {
    name: String,
    json: Value,
    graph: AnalyticsGraph,
}

fn fixtures() -> Vec<Fixture> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/graph");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 8, "fixtures missing in {}", dir.display());
    paths
        .into_iter()
        .map(|path| {
            let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let nodes: Vec<String> =
                json["nodes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().into()).collect();
            let edges: Vec<(String, String, Option<f64>)> = json["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e[0].as_str().unwrap().into(), e[1].as_str().unwrap().into(), e[2].as_f64()))
                .collect();
            let directed = json["directed"].as_bool().unwrap();
            let graph = AnalyticsGraph::new(directed, nodes, edges, Limits::default()).unwrap();
            Fixture { name: json["name"].as_str().unwrap().into(), json, graph }
        })
        .collect()
}

fn run(graph: &AnalyticsGraph, algorithm: Algorithm) -> BTreeMap<String, f64> {
    analytics::run(graph, algorithm, &Options { seed: 42 }).unwrap().into_iter().collect()
}

/// Asserts that every node's value is networkx's, within [`TOLERANCE`].
fn assert_matches(fixture: &Fixture, algorithm: Algorithm, key: &str) {
    let ours = run(&fixture.graph, algorithm);
    let theirs = fixture.json[key].as_object().unwrap();
    assert_eq!(ours.len(), theirs.len(), "{}: {algorithm}: node count", fixture.name);
    let mut worst = (0.0f64, String::new());
    for (id, expected) in theirs {
        let got = ours[id];
        let diff = (got - expected.as_f64().unwrap()).abs();
        if diff > worst.0 {
            worst = (diff, format!("{id}: ours {got}, networkx {expected}"));
        }
    }
    assert!(worst.0 <= TOLERANCE, "{}: {algorithm} differs from networkx by {} at {}", fixture.name, worst.0, worst.1);
}

/// The partition that `values` (a group number per node) makes, as sorted sets of ids.
fn partition(values: &BTreeMap<String, f64>) -> BTreeSet<BTreeSet<String>> {
    let mut groups: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for (id, &value) in values {
        assert!(value >= 0.0 && value.fract() == 0.0, "group number {value}");
        groups.entry(value as u64).or_default().insert(id.clone());
    }
    // Numbered from 0 without gaps.
    assert_eq!(groups.keys().copied().collect::<Vec<_>>(), (0..groups.len() as u64).collect::<Vec<_>>());
    groups.into_values().collect()
}

fn partition_of(json: &Value) -> BTreeSet<BTreeSet<String>> {
    json.as_array()
        .unwrap()
        .iter()
        .map(|group| group.as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_string()).collect())
        .collect()
}

/// A group number per node (in node order) from a partition given as sets of ids.
fn labels(graph: &AnalyticsGraph, groups: &BTreeSet<BTreeSet<String>>) -> Vec<usize> {
    graph
        .ids()
        .iter()
        .map(|id| groups.iter().position(|g| g.contains(id)).unwrap_or_else(|| panic!("{id} in no group")))
        .collect()
}

#[test]
fn pagerank_matches_networkx() {
    for fixture in fixtures() {
        assert_matches(&fixture, Algorithm::PageRank, "pagerank");
    }
}

#[test]
fn betweenness_matches_networkx() {
    for fixture in fixtures() {
        assert_matches(&fixture, Algorithm::Betweenness, "betweenness");
    }
}

#[test]
fn closeness_matches_networkx() {
    for fixture in fixtures() {
        assert_matches(&fixture, Algorithm::Closeness, "closeness");
    }
}

#[test]
fn degree_matches_networkx() {
    for fixture in fixtures() {
        assert_matches(&fixture, Algorithm::Degree, "degree");
    }
}

#[test]
fn components_are_networkx_partition() {
    for fixture in fixtures() {
        let ours = run(&fixture.graph, Algorithm::Components);
        assert_eq!(partition(&ours), partition_of(&fixture.json["components"]), "{}", fixture.name);
    }
}

#[test]
fn components_are_numbered_largest_first() {
    for fixture in fixtures() {
        let ours = run(&fixture.graph, Algorithm::Components);
        let mut sizes = vec![0usize; ours.len()];
        for &c in ours.values() {
            sizes[c as usize] += 1;
        }
        let sizes: Vec<usize> = sizes.into_iter().filter(|&s| s > 0).collect();
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{}: sizes {sizes:?}", fixture.name);
    }
}

#[test]
fn modularity_matches_networkx() {
    for fixture in fixtures() {
        let louvain = &fixture.json["louvain"];
        let theirs = labels(&fixture.graph, &partition_of(&louvain["communities"]));
        let q = analytics::modularity(&fixture.graph, &theirs);
        let expected = louvain["modularity"].as_f64().unwrap();
        assert!((q - expected).abs() <= TOLERANCE, "{}: modularity {q}, networkx {expected}", fixture.name);
    }
}

#[test]
fn communities_reach_networkx_modularity() {
    for fixture in fixtures() {
        let ours = run(&fixture.graph, Algorithm::Communities);
        let groups = partition(&ours);
        let covered: usize = groups.iter().map(|g| g.len()).sum();
        assert_eq!(covered, fixture.graph.node_count(), "{}: every node in one community", fixture.name);
        let q = analytics::modularity(&fixture.graph, &labels(&fixture.graph, &groups));
        let expected = fixture.json["louvain"]["modularity"].as_f64().unwrap();
        assert!(
            q >= expected - MODULARITY_SLACK,
            "{}: modularity {q:.4}, networkx's Louvain {expected:.4}",
            fixture.name
        );
        println!("{}: modularity {q:.4}, networkx {expected:.4}", fixture.name);
    }
}

#[test]
fn communities_depend_on_the_seed_only() {
    let fixture = fixtures().into_iter().find(|f| f.name == "les_miserables").unwrap();
    let once = analytics::communities(&fixture.graph, 3);
    assert_eq!(analytics::communities(&fixture.graph, 3), once);
    // The numbering follows the graph: largest community first.
    let mut sizes = vec![0usize; once.len()];
    for &c in &once {
        sizes[c] += 1;
    }
    let sizes: Vec<usize> = sizes.into_iter().filter(|&s| s > 0).collect();
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "sizes {sizes:?}");
}

fn build(directed: bool, nodes: &[&str], edges: &[(&str, &str, Option<f64>)]) -> AnalyticsGraph {
    AnalyticsGraph::new(directed, nodes.iter().copied(), edges.iter().copied(), Limits::default()).unwrap()
}

#[test]
fn an_empty_graph_gives_empty_results() {
    for directed in [false, true] {
        let graph = build(directed, &[], &[]);
        for algorithm in Algorithm::ALL {
            assert!(analytics::run(&graph, algorithm, &Options::default()).unwrap().is_empty(), "{algorithm}");
        }
        assert_eq!(analytics::modularity(&graph, &[]), 0.0);
    }
}

#[test]
fn a_single_node_is_its_own_everything() {
    let graph = build(true, &["only"], &[]);
    let value = |a| run(&graph, a)["only"];
    assert_eq!(value(Algorithm::PageRank), 1.0);
    assert_eq!(value(Algorithm::Betweenness), 0.0);
    assert_eq!(value(Algorithm::Closeness), 0.0);
    assert_eq!(value(Algorithm::Degree), 1.0, "networkx gives a lone node degree centrality 1");
    assert_eq!(value(Algorithm::Components), 0.0);
    assert_eq!(value(Algorithm::Communities), 0.0);
}

#[test]
fn self_loops_count_in_degree_and_pagerank_but_not_in_paths() {
    // a - b - c with a loop on b. networkx: degree centrality of b is (2 + 2) / 2 = 2; betweenness
    // of b is 1; b keeps a third of its rank through the loop.
    let looped = build(false, &[], &[("a", "b", None), ("b", "c", None), ("b", "b", None)]);
    let plain = build(false, &[], &[("a", "b", None), ("b", "c", None)]);
    assert_eq!(run(&looped, Algorithm::Degree)["b"], 2.0);
    assert_eq!(run(&looped, Algorithm::Betweenness), run(&plain, Algorithm::Betweenness));
    assert_eq!(run(&looped, Algorithm::Closeness), run(&plain, Algorithm::Closeness));
    assert!(run(&looped, Algorithm::PageRank)["b"] > run(&plain, Algorithm::PageRank)["b"]);
    let ranks: f64 = run(&looped, Algorithm::PageRank).values().sum();
    assert!((ranks - 1.0).abs() < 1e-9);
    // A graph whose only edge is a loop: one node, one community.
    let lonely = build(false, &[], &[("x", "x", Some(2.0))]);
    assert_eq!(run(&lonely, Algorithm::Communities)["x"], 0.0);
    assert_eq!(analytics::modularity(&lonely, &[0]), 0.0, "all weight inside the one community: 1 - 1");
}

#[test]
fn disconnected_graphs_and_isolated_nodes() {
    let graph = build(false, &["alone"], &[("a", "b", None), ("b", "c", None), ("x", "y", None)]);
    let components = run(&graph, Algorithm::Components);
    assert_eq!(components["a"], 0.0, "the largest component first");
    assert_eq!(components["b"], 0.0);
    assert_eq!(components["c"], 0.0);
    assert_eq!(components["x"], 1.0, "then x-y, whose smallest id sorts before `alone`");
    assert_eq!(components["y"], 1.0);
    assert_eq!(components["alone"], 2.0);
    let closeness = run(&graph, Algorithm::Closeness);
    assert_eq!(closeness["alone"], 0.0);
    // b reaches 2 of the 5 other nodes at distance 1: (2/2) × (2/5).
    assert!((closeness["b"] - 0.4).abs() < 1e-12);
    let communities = run(&graph, Algorithm::Communities);
    assert_ne!(communities["a"], communities["x"]);
    assert_ne!(communities["alone"], communities["a"]);
    // The isolated node spreads its whole rank evenly, as every dangling node does.
    let ranks = run(&graph, Algorithm::PageRank);
    assert!((ranks.values().sum::<f64>() - 1.0).abs() < 1e-9);
    assert!(ranks["b"] > ranks["a"] && ranks["alone"] < ranks["a"]);
}

#[test]
fn directed_edges_both_ways_are_one_link_for_communities() {
    let both = build(true, &[], &[("a", "b", Some(1.0)), ("b", "a", Some(3.0)), ("b", "c", Some(1.0))]);
    let one = build(false, &[], &[("a", "b", Some(3.0)), ("b", "c", Some(1.0))]);
    let labels = [0, 0, 1];
    assert_eq!(analytics::modularity(&both, &labels), analytics::modularity(&one, &labels));
}

#[test]
fn bad_weights_are_refused() {
    for weight in [-1.0, f64::NAN, f64::INFINITY] {
        let result = AnalyticsGraph::new(false, Vec::<&str>::new(), [("a", "b", Some(weight))], Limits::default());
        let error = result.unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidRequest);
        assert!(error.message.contains("weight"), "{}", error.message);
    }
}

#[test]
fn graphs_over_the_limits_are_refused_with_a_clear_error() {
    let limits = Limits { max_nodes: 10, max_edges: 5, max_all_pairs_work: 100 };
    let path: Vec<(String, String, Option<f64>)> =
        (0..20).map(|i| (format!("n{i}"), format!("n{}", i + 1), None)).collect();

    let error = AnalyticsGraph::new(false, Vec::<String>::new(), path.clone(), limits).unwrap_err();
    assert_eq!(error.code, ErrorCode::PayloadTooLarge);
    assert!(error.message.contains("more than 10 nodes"), "{}", error.message);

    let roomy = Limits { max_nodes: 100, ..limits };
    let error = AnalyticsGraph::new(false, Vec::<String>::new(), path.clone(), roomy).unwrap_err();
    assert_eq!(error.code, ErrorCode::PayloadTooLarge);
    assert!(error.message.contains("more than 5 edges"), "{}", error.message);

    // A repeated edge counts once.
    let repeated = vec![("a", "b", None); 50];
    assert_eq!(AnalyticsGraph::new(false, Vec::<&str>::new(), repeated, limits).unwrap().edge_count(), 1);

    // Within the node and edge limits, but too large to search from every node.
    let small: Vec<_> = path.into_iter().take(5).collect();
    let graph =
        AnalyticsGraph::new(false, Vec::<String>::new(), small, Limits { max_all_pairs_work: 30, ..roomy }).unwrap();
    for algorithm in [Algorithm::Betweenness, Algorithm::Closeness] {
        let error = analytics::run(&graph, algorithm, &Options::default()).unwrap_err();
        assert_eq!(error.code, ErrorCode::PayloadTooLarge);
        assert!(error.message.contains(algorithm.as_str()) && error.message.contains("limit"), "{}", error.message);
    }
    for algorithm in [Algorithm::PageRank, Algorithm::Degree, Algorithm::Components, Algorithm::Communities] {
        assert_eq!(analytics::run(&graph, algorithm, &Options::default()).unwrap().len(), 6);
    }
}
