//! Graph analytics against networkx, in one run: a preferential-attachment graph (Barabási–Albert,
//! each new node linked to 5 earlier ones, from a fixed seed) of 1,000,000 edges is written to an
//! edge-list file; Nexus and networkx each load it, then run PageRank and Louvain communities
//! (seed 42) on it. Betweenness and closeness search from every node, so they run on a smaller
//! graph of the same kind (2,000 nodes). Printed: each time, networkx's time over ours (goal:
//! 10× or more), and both modularities.
//!
//! ```sh
//! python3 -m venv target/nxvenv && target/nxvenv/bin/pip install networkx scipy numpy
//! cargo bench --bench graph -- [--edges 1000000] [--small-nodes 2000] [--python PATH] [--no-networkx]
//! ```
//!
//! networkx runs under `--python`, else `$NETWORKX_PYTHON`, else `target/nxvenv/bin/python` (or
//! under `$CARGO_TARGET_DIR`), else `python3` if it imports networkx. Without one, only Nexus's
//! numbers are printed.
//!
//! One run, release build, 2-core VM: load 0.26 s vs 3.32 s, PageRank 0.069 s vs 4.19 s (61×),
//! Louvain 5.4 s vs 2,071 s (381×; modularity 0.2428 vs 0.2405), betweenness 0.25 s vs 13.7 s
//! (54×) and closeness 0.20 s vs 2.02 s (10×) on the 2,000-node graph; networkx 3.6.1.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use nexus::graph::analytics::{self, AnalyticsGraph, Limits};
use serde_json::Value;

mod common;

const ATTACH: usize = 5;
const SEED: u64 = 42;

struct Args {
    edges: usize,
    small_nodes: usize,
    python: Option<PathBuf>,
    networkx: bool,
}

fn args() -> Args {
    let mut args = Args { edges: 1_000_000, small_nodes: 2_000, python: None, networkx: true };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--edges" => args.edges = it.next().expect("--edges N").parse().expect("a number"),
            "--small-nodes" => args.small_nodes = it.next().expect("--small-nodes N").parse().expect("a number"),
            "--python" => args.python = Some(it.next().expect("--python PATH").into()),
            "--no-networkx" => args.networkx = false,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn write_edge_list(path: &Path, edges: &[(u32, u32)]) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for (s, t) in edges {
        writeln!(file, "{s} {t}").unwrap();
    }
    file.flush().unwrap();
}

fn load(path: &Path) -> AnalyticsGraph {
    let text = std::fs::read_to_string(path).unwrap();
    let edges = text.lines().map(|line| {
        let (s, t) = line.split_once(' ').unwrap();
        (s, t, None)
    });
    AnalyticsGraph::new(false, Vec::<&str>::new(), edges, Limits::default()).unwrap()
}

fn seconds<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let started = Instant::now();
    let value = f();
    (value, started.elapsed().as_secs_f64())
}

/// The networkx side: loads both edge lists and times each call; prints one JSON object.
const NETWORKX: &str = r#"
import json, sys, time
import networkx as nx
big, small, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = {"networkx": nx.__version__}
def timed(key, f):
    started = time.perf_counter()
    value = f()
    out[key] = time.perf_counter() - started
    print(f"networkx {key}: {out[key]:.2f} s", file=sys.stderr, flush=True)
    return value
G = timed("load", lambda: nx.read_edgelist(big, nodetype=str))
timed("pagerank", lambda: nx.pagerank(G))
parts = timed("communities", lambda: nx.community.louvain_communities(G, seed=seed))
out["modularity"] = nx.community.modularity(G, parts)
out["communities_count"] = len(parts)
S = nx.read_edgelist(small, nodetype=str)
timed("betweenness", lambda: nx.betweenness_centrality(S))
timed("closeness", lambda: nx.closeness_centrality(S))
print(json.dumps(out))
"#;

fn find_python(args: &Args) -> Option<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut candidates: Vec<PathBuf> = Vec::new();
    candidates.extend(args.python.clone());
    candidates.extend(std::env::var_os("NETWORKX_PYTHON").map(PathBuf::from));
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(target).join("nxvenv/bin/python"));
    }
    candidates.push(manifest.join("target/nxvenv/bin/python"));
    candidates.push("python3".into());
    candidates.into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import networkx, scipy"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn networkx(python: &Path, big: &Path, small: &Path) -> Option<Value> {
    let out = Command::new(python)
        .args(["-c", NETWORKX])
        .arg(big)
        .arg(small)
        .arg(SEED.to_string())
        .stderr(Stdio::inherit())
        .output();
    match out {
        Ok(out) if out.status.success() => serde_json::from_slice(&out.stdout).ok(),
        Ok(out) => {
            eprintln!("networkx failed ({})", out.status);
            None
        }
        Err(e) => {
            eprintln!("cannot run {}: {e}", python.display());
            None
        }
    }
}

fn main() {
    let args = args();
    let dir = tempfile::tempdir().unwrap();
    let (big, small) = (dir.path().join("graph.edges"), dir.path().join("small.edges"));
    write_edge_list(&big, &common::preferential_attachment(args.edges, ATTACH, SEED));
    let small_edges = args.small_nodes.saturating_sub(ATTACH) * ATTACH;
    write_edge_list(&small, &common::preferential_attachment(small_edges, ATTACH, SEED));

    let (graph, load_s) = seconds(|| load(&big));
    println!(
        "graph: {} nodes, {} edges (preferential attachment, {ATTACH} links per node, seed {SEED}); rayon threads: {}",
        graph.node_count(),
        graph.edge_count(),
        rayon::current_num_threads()
    );
    println!("nexus load: {load_s:.3} s");
    let (_, pagerank_s) = seconds(|| analytics::pagerank(&graph).unwrap());
    println!("nexus pagerank: {pagerank_s:.3} s");
    let (communities, communities_s) = seconds(|| analytics::communities(&graph, SEED));
    let modularity = analytics::modularity(&graph, &communities);
    let count = communities.iter().max().map_or(0, |&c| c + 1);
    println!("nexus communities: {communities_s:.3} s, modularity {modularity:.4}");
    let small_graph = load(&small);
    let (_, betweenness_s) = seconds(|| analytics::betweenness(&small_graph).unwrap());
    let (_, closeness_s) = seconds(|| analytics::closeness(&small_graph).unwrap());
    println!("nexus betweenness: {betweenness_s:.3} s, closeness: {closeness_s:.3} s (small graph)");

    let theirs = if args.networkx {
        match find_python(&args) {
            Some(python) => {
                println!(
                    "running networkx under {} (its Louvain on a million edges takes tens of minutes)",
                    python.display()
                );
                networkx(&python, &big, &small)
            }
            None => {
                println!(
                    "networkx not found: python3 -m venv target/nxvenv && target/nxvenv/bin/pip install networkx scipy numpy"
                );
                None
            }
        }
    } else {
        None
    };
    if let Some(version) = theirs.as_ref().and_then(|t| t["networkx"].as_str()) {
        println!("networkx {version}");
    }

    let small_label = format!("{} nodes, {} edges", small_graph.node_count(), small_graph.edge_count());
    println!("{:<36} {:>10} {:>12} {:>8}", "step", "nexus s", "networkx s", "ratio");
    let rows = [
        ("load the edge list", "load", load_s),
        ("pagerank", "pagerank", pagerank_s),
        ("communities (Louvain)", "communities", communities_s),
        ("betweenness, small graph", "betweenness", betweenness_s),
        ("closeness, small graph", "closeness", closeness_s),
    ];
    for (label, key, ours) in rows {
        match theirs.as_ref().and_then(|t| t[key].as_f64()) {
            Some(other) => println!("{label:<36} {ours:>10.3} {other:>12.3} {:>7.1}×", other / ours),
            None => println!("{label:<36} {ours:>10.3} {:>12} {:>8}", "-", "-"),
        }
    }
    println!("small graph: {small_label}");
    match theirs.as_ref().and_then(|t| t["modularity"].as_f64()) {
        Some(other) => println!(
            "modularity: nexus {modularity:.4} ({count} communities), networkx {other:.4} ({} communities)",
            theirs.as_ref().unwrap()["communities_count"]
        ),
        None => println!("modularity: nexus {modularity:.4} ({count} communities)"),
    }
    println!("goal: pagerank and communities 10× networkx or faster");
}
