//! Neighbourhoods over HTTP on a graph of a million relations: a preferential-attachment graph
//! (Barabási–Albert, each new person linked to 5 earlier ones, seed 42, as `benches/graph.rs`
//! makes it) is written as entities and `knows` relations through Nexus's write path in-process,
//! then `nexus serve` answers `GET /api/v1/graph/entities/{id}/neighbourhood?hops=H` for entities
//! drawn at random (seeded), one request at a time. Printed: p50/p95/p99 of the answers, how
//! many entities and relations they held, and how many were refused for reaching past `limit`;
//! beside the goal of a 2-hop neighbourhood within 10 ms p95.
//!
//! Entities are written without an embedding (walks do not read vectors, and embedding 200,000
//! names with the built-in model would take the load past an hour on a small machine); relations
//! carry their words for search as usual.
//!
//! ```sh
//! cargo bench --bench graph_walk -- [--edges 1000000] [--samples 1000] [--limit 1000] \
//!     [--data-dir DIR [--reuse]]
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use nexus::graph::model::{Entity, Relation, entity_id};
use nexus::store::records::Write;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

mod common;

const ATTACH: usize = 5;
const SEED: u64 = 42;
const GOAL_MS: f64 = 10.0;
const BATCH: usize = 10_000;

struct Args {
    edges: usize,
    samples: usize,
    limit: usize,
    data_dir: Option<PathBuf>,
    reuse: bool,
}

fn args() -> Args {
    let mut args = Args { edges: 1_000_000, samples: 1_000, limit: 1_000, data_dir: None, reuse: false };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut number = |flag: &str| it.next().unwrap_or_else(|| panic!("{flag} N")).parse().expect("a number");
        match a.as_str() {
            "--edges" => args.edges = number("--edges"),
            "--samples" => args.samples = number("--samples"),
            "--limit" => args.limit = number("--limit"),
            "--data-dir" => args.data_dir = Some(it.next().expect("--data-dir DIR").into()),
            "--reuse" => args.reuse = true,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn person(i: u32) -> Entity {
    let name = format!("Person {i}");
    let now = Utc::now();
    Entity {
        id: entity_id("person", &name),
        name,
        entity_type: "person".into(),
        aliases: Vec::new(),
        attributes: json!({}),
        summary: None,
        created_at: now,
        updated_at: now,
    }
}

/// Writes the entities, then the relations, through the write path, keeping the indexers close
/// behind as a server under this load would.
fn load(data: &Path, config: &Path, edges: &[(u32, u32)], nodes: u32) -> f64 {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let app = common::open_app(data, config).await;
        let tenant = nexus::store::TenantId::default_tenant();
        let started = Instant::now();
        let entities = (0..nodes).map(|i| {
            let mut record = person(i).to_record();
            record.embed = false;
            Write::Upsert(record)
        });
        let now = Utc::now();
        let relations = edges.iter().enumerate().map(|(i, &(s, t))| {
            let relation = Relation {
                id: format!("rel_bench_{i}"),
                source: entity_id("person", &format!("Person {s}")),
                relation_type: "knows".into(),
                target: entity_id("person", &format!("Person {t}")),
                fact: None,
                confidence: 1.0,
                valid_at: None,
                invalid_at: None,
                created_at: now,
                expired_at: None,
                sources: Vec::new(),
                supersedes: None,
                invalidated_by: None,
            };
            Write::Upsert(relation.to_record(format!("Person {s} knows Person {t}")))
        });
        let all: Vec<Write> = entities.chain(relations).collect();
        let mut last_report = Instant::now();
        for (n, batch) in all.chunks(BATCH).enumerate() {
            let outcome = app.writes.write(&tenant, batch.to_vec(), false).await.unwrap();
            while !app.writes.wait_indexed(outcome.receipt.seq).await {}
            if last_report.elapsed() > Duration::from_secs(30) {
                let done = (n + 1) * BATCH;
                println!("  {done} records, {:.0} records/s", done as f64 / started.elapsed().as_secs_f64());
                last_report = Instant::now();
            }
        }
        app.shutdown().await;
        started.elapsed().as_secs_f64()
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

struct Walks {
    answered_ms: Vec<f64>,
    refused_ms: Vec<f64>,
    entities: Vec<usize>,
    relations: Vec<usize>,
    bytes: Vec<usize>,
}

fn walk(http: &reqwest::blocking::Client, base: &str, hops: usize, limit: usize, picks: &[u32]) -> Walks {
    let mut out = Walks {
        answered_ms: Vec::new(),
        refused_ms: Vec::new(),
        entities: Vec::new(),
        relations: Vec::new(),
        bytes: Vec::new(),
    };
    for &i in picks {
        let url = format!("{base}/api/v1/graph/entities/{}/neighbourhood?hops={hops}&limit={limit}", person(i).id);
        let started = Instant::now();
        let response = http.get(&url).send().unwrap();
        let status = response.status().as_u16();
        // The answer's latency is the time to its last byte; reading the JSON is the client's work.
        let bytes = response.bytes().unwrap();
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        out.bytes.push(bytes.len());
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        match status {
            200 => {
                out.answered_ms.push(ms);
                out.entities.push(body["entities"].as_array().map_or(0, Vec::len));
                out.relations.push(body["relations"].as_array().map_or(0, Vec::len));
            }
            400 => out.refused_ms.push(ms),
            other => panic!("{url}: {other} {body}"),
        }
    }
    for v in [&mut out.answered_ms, &mut out.refused_ms] {
        v.sort_by(f64::total_cmp);
    }
    out.entities.sort_unstable();
    out.relations.sort_unstable();
    out.bytes.sort_unstable();
    out
}

fn main() {
    let args = args();
    let tmp = tempfile::tempdir().unwrap();
    let data = args.data_dir.clone().unwrap_or_else(|| tmp.path().join("data"));
    let config = data.with_extension("toml");
    common::profile::write_config(&config, "");
    let edges = common::preferential_attachment(args.edges, ATTACH, SEED);
    let nodes = edges.iter().map(|&(s, t)| s.max(t) + 1).max().unwrap_or(0);
    if args.reuse && data.exists() {
        println!("reusing {}", data.display());
    } else {
        println!("loading {nodes} entities and {} relations through the write path", edges.len());
        let secs = load(&data, &config, &edges, nodes);
        println!("loaded in {secs:.0} s ({:.0} records/s)", (nodes as usize + edges.len()) as f64 / secs);
    }

    let started = Instant::now();
    let (mut child, base) = common::spawn_nexus(Path::new(env!("CARGO_BIN_EXE_nexus")), &data, &config, &[]);
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    for _ in 0..600 {
        if http.get(format!("{base}/ready")).send().is_ok_and(|r| r.status().is_success()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("server ready in {:.1} s", started.elapsed().as_secs_f64());

    let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);
    let picks: Vec<u32> = (0..args.samples).map(|_| rng.random_range(0..nodes)).collect();
    walk(&http, &base, 2, args.limit, &picks[..picks.len().min(50)]); // warm the caches
    println!(
        "\ngraph_walk: {nodes} entities, {} relations; {} random entities, one request at a time, limit {}",
        edges.len(),
        picks.len(),
        args.limit
    );
    println!(
        "{:<6} {:>9} {:>9} {:>9} {:>9} {:>16} {:>16} {:>14} {:>9}",
        "hops",
        "answered",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "entities p50/p95",
        "relations p50/95",
        "KB p50/p95",
        "refused"
    );
    let mut two_hop_p95 = f64::NAN;
    for hops in [1, 2] {
        let w = walk(&http, &base, hops, args.limit, &picks);
        let p95 = percentile(&w.answered_ms, 0.95);
        if hops == 2 {
            two_hop_p95 = p95;
        }
        let sizes = |v: &[usize]| {
            let p = |q: f64| v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1))).copied();
            format!("{}/{}", p(0.5).unwrap_or(0), p(0.95).unwrap_or(0))
        };
        println!(
            "{hops:<6} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>16} {:>16} {:>14} {:>9}",
            w.answered_ms.len(),
            percentile(&w.answered_ms, 0.5),
            p95,
            percentile(&w.answered_ms, 0.99),
            sizes(&w.entities),
            sizes(&w.relations),
            sizes(&w.bytes.iter().map(|b| b / 1024).collect::<Vec<_>>()),
            w.refused_ms.len(),
        );
        if !w.refused_ms.is_empty() {
            println!("       refused (past the limit) in {:.2} ms p95", percentile(&w.refused_ms, 0.95));
        }
    }
    println!(
        "goal: a 2-hop neighbourhood within {GOAL_MS} ms p95: {:.2} ms ({:.2}× the goal)",
        two_hop_p95,
        two_hop_p95 / GOAL_MS
    );
    child.kill().ok();
    child.wait().ok();
}
