//! Retrieval quality on BEIR SciFact, over HTTP against a real `nexus serve`: the corpus goes in
//! through `POST /api/v1/documents/text` (the documents pipeline: parse, chunk, embed, index),
//! then the 300 test queries run through `POST /api/v1/search` in keyword, semantic and hybrid
//! modes. Prints nDCG@10 and Recall@100 beside the published numbers (BM25 0.665,
//! all-MiniLM-L6-v2 dense 0.6451), ingest throughput (documents/s, chunks/s) and HTTP search
//! latency p50/p95/p99.
//!
//! ```sh
//! cargo bench --bench scifact -- [--data PATH_TO/beir-scifact] [--data-dir DIR] [--concurrency 8]
//!                                [--fusion [MODE@]KEYWORD_WEIGHT:SEMANTIC_WEIGHT:RRF_K[:TITLE_WEIGHT]]...
//!                                [--profile embedded|postgres|cluster|both|all[,...]]
//!                                [--postgres-url URL] [--opensearch-url URL] [--qdrant-url URL]
//!                                [--bolt-url URL] [--s3-endpoint URL]
//! ```
//! `--data-dir` keeps the ingested corpus: a second run finds every document unchanged and goes
//! straight to the queries. Each `--fusion` adds a row (hybrid unless `keyword@` or `semantic@`)
//! with those ranking settings (the
//! server's `knowledge.*` configuration gives the defaults: `NEXUS__KNOWLEDGE__TITLE_WEIGHT=...`).
//! Chunks are ranked; a document ranks where its best chunk does (trec_eval semantics: binary
//! relevance, run depth 100 documents).
//!
//! `--profile` (default `embedded`) picks the stores, one profile or a comma-separated list run
//! one after the other (see `common/profile.rs`): `postgres` puts records on Postgres and vectors
//! on pgvector (`--postgres-url` or `NEXUS_BENCH_POSTGRES_URL`); `cluster` puts records on
//! Postgres, vectors on Qdrant, text on Elasticsearch/OpenSearch, graph on a Bolt server and
//! objects on S3 when one is given (`--qdrant-url`, `--opensearch-url`, `--bolt-url`,
//! `--s3-endpoint`, or the `NEXUS_BENCH_*` variables); `both` is embedded,postgres and `all`
//! embedded,postgres,cluster. Embedded runs first and is the reference: every other profile gets
//! a table of its ratios to it (search p50/p95/p99, ingest) and its nDCG@10 and Recall@100
//! deltas, with whether nDCG@10 agrees within the parity goal: 0.01 for postgres in every mode;
//! for cluster 0.01 in semantic and hybrid, 0.02 in keyword (another BM25 implementation). With
//! `--data-dir DIR`, each other profile keeps its data in `DIR-PROFILE` and its database (and
//! cluster stores) named after it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::profile::{Profile, ServerFlags, Servers, Setup, ratio};

fn ndcg_at_10(ranking: &[String], relevant: &HashSet<String>) -> f64 {
    let dcg: f64 = ranking
        .iter()
        .take(10)
        .enumerate()
        .filter(|(_, d)| relevant.contains(*d))
        .map(|(i, _)| 1.0 / (i as f64 + 2.0).log2())
        .sum();
    let ideal: f64 = (0..relevant.len().min(10)).map(|i| 1.0 / (i as f64 + 2.0).log2()).sum();
    if ideal == 0.0 { 0.0 } else { dcg / ideal }
}

fn recall_at_100(ranking: &[String], relevant: &HashSet<String>) -> f64 {
    let found = ranking.iter().take(100).filter(|d| relevant.contains(*d)).count();
    found as f64 / relevant.len() as f64
}

/// Most pages of 100 chunks fetched per query.
const PAGES: usize = 5;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

struct Args {
    data: PathBuf,
    data_dir: Option<PathBuf>,
    concurrency: usize,
    fusions: Vec<(String, Vec<f64>)>,
    profiles: Vec<Profile>,
    servers: ServerFlags,
}

fn args() -> Args {
    let mut args = Args {
        data: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/datasets/beir-scifact")),
        data_dir: None,
        concurrency: 8,
        fusions: Vec::new(),
        profiles: vec![Profile::Embedded],
        servers: ServerFlags::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--data" => args.data = it.next().expect("--data PATH").into(),
            "--data-dir" => args.data_dir = Some(it.next().expect("--data-dir DIR").into()),
            "--concurrency" => args.concurrency = it.next().expect("--concurrency N").parse().expect("a number"),
            "--fusion" => {
                let spec = it.next().expect("--fusion KEYWORD_WEIGHT:SEMANTIC_WEIGHT:RRF_K[:TITLE_WEIGHT]");
                let (mode, spec) = spec.split_once('@').unwrap_or(("hybrid", spec.as_str()));
                let parts: Vec<f64> = spec.split(':').map(|p| p.parse().expect("numbers")).collect();
                assert!(
                    matches!(parts.len(), 3 | 4),
                    "--fusion takes KEYWORD_WEIGHT:SEMANTIC_WEIGHT:RRF_K[:TITLE_WEIGHT]"
                );
                args.fusions.push((mode.to_string(), parts));
            }
            "--profile" => args.profiles = Profile::parse_list(&it.next().expect(Profile::USAGE)),
            "--bench" => {}
            other if args.servers.parse(other, &mut it) => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn start_server(data_dir: &Path, config: &Path) -> Server {
    let (child, base) = common::spawn_nexus(Path::new(env!("CARGO_BIN_EXE_nexus")), data_dir, config, &[]);
    Server { child, base }
}

fn wait_ready(client: &reqwest::blocking::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(3600);
    while client.get(format!("{base}/ready")).send().map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
        assert!(Instant::now() < deadline, "nexus did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Puts every document in with `concurrency` clients; returns (seconds, documents created, chunks).
fn ingest(base: &str, corpus: &[Value], concurrency: usize) -> (f64, usize, u64) {
    let next = Arc::new(AtomicUsize::new(0));
    let totals = Arc::new(Mutex::new((0usize, 0u64)));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, totals, corpus, base) = (next.clone(), totals.clone(), corpus.to_vec(), base.to_string());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(600)).build().unwrap();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(doc) = corpus.get(i) else { break };
                    let body = json!({
                        "text": doc["text"].as_str().unwrap_or_default(),
                        "source": doc["_id"].as_str().unwrap(),
                        "title": doc["title"].as_str().unwrap_or_default(),
                        "collection": "scifact",
                        "content_type": "txt",
                    });
                    let r = client.post(format!("{base}/api/v1/documents/text")).json(&body).send().unwrap();
                    let status = r.status();
                    let answer: Value = r.json().unwrap();
                    assert!(status.is_success(), "ingest {}: {status} {answer}", doc["_id"]);
                    let mut t = totals.lock().unwrap();
                    for outcome in answer["documents"].as_array().unwrap() {
                        if outcome["outcome"] != "unchanged" {
                            t.0 += 1;
                            t.1 += outcome["document"]["chunks"].as_u64().unwrap_or(0);
                        }
                    }
                    if i > 0 && i % 500 == 0 {
                        eprintln!("  {i} documents sent, {:.0} s", started.elapsed().as_secs_f64());
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let client = reqwest::blocking::Client::new();
    wait_ready(&client, base);
    let (created, chunks) = *totals.lock().unwrap();
    (started.elapsed().as_secs_f64(), created, chunks)
}

struct Row {
    mode: String,
    name: String,
    ndcg: f64,
    recall: f64,
    ms: Vec<f64>,
}

fn run_queries(
    client: &reqwest::blocking::Client,
    base: &str,
    test: &[&String],
    queries: &HashMap<String, String>,
    qrels: &HashMap<String, HashSet<String>>,
    mode: &str,
    fusion: Option<&[f64]>,
) -> Row {
    let (mut ndcg, mut recall, mut ms) = (0.0, 0.0, Vec::new());
    for qid in test {
        // Pages of 100 chunks (the API's largest) until 100 documents are ranked; the first
        // page's round trip is the latency measured.
        let mut ranking: Vec<String> = Vec::new();
        for page in 0..PAGES {
            let mut body = json!({"query": queries[*qid], "mode": mode, "top_k": 100, "offset": page * 100});
            if let Some(f) = fusion {
                body["fusion"] = json!({"keyword_weight": f[0], "semantic_weight": f[1], "rrf_k": f[2]});
                if let Some(title) = f.get(3) {
                    body["fusion"]["title_weight"] = json!(title);
                }
            }
            let t = Instant::now();
            let r = client.post(format!("{base}/api/v1/search")).json(&body).send().unwrap();
            assert!(r.status().is_success(), "search: {}", r.status());
            let hits: Value = r.json().unwrap();
            if page == 0 {
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            let hits = hits["results"].as_array().unwrap();
            for h in hits {
                let source = h["source"].as_str().unwrap_or_default().to_string();
                if !ranking.contains(&source) {
                    ranking.push(source);
                }
            }
            if ranking.len() >= 100 || hits.len() < 100 {
                break;
            }
        }
        ndcg += ndcg_at_10(&ranking, &qrels[*qid]);
        recall += recall_at_100(&ranking, &qrels[*qid]);
    }
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = test.len() as f64;
    let name = match fusion {
        Some(f) => format!("{mode} {}", f.iter().map(f64::to_string).collect::<Vec<_>>().join(":")),
        None => mode.to_string(),
    };
    Row { mode: mode.to_string(), name, ndcg: ndcg / n, recall: recall / n, ms }
}

/// What one profile measured.
struct ProfileRun {
    profile: Profile,
    /// Which store is where.
    stores: String,
    rows: Vec<Row>,
    /// (seconds, documents created, chunks); none created when the corpus was already in.
    ingest: (f64, usize, u64),
    database_mb: Option<f64>,
}

fn run_profile(
    args: &Args,
    setup: &Setup,
    corpus: &[Value],
    test: &[&String],
    queries: &HashMap<String, String>,
    qrels: &HashMap<String, HashSet<String>>,
) -> ProfileRun {
    eprintln!("profile {}: data in {}", setup.profile.name(), setup.data_dir.display());
    let server = start_server(&setup.data_dir, &setup.config);
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    wait_ready(&client, &server.base);

    let (ingest_secs, created, chunks) = ingest(&server.base, corpus, args.concurrency);
    eprintln!("{} documents: {created} ingested ({chunks} chunks) in {ingest_secs:.1} s", corpus.len());

    let mut rows = Vec::new();
    for mode in ["keyword", "semantic", "hybrid"] {
        rows.push(run_queries(&client, &server.base, test, queries, qrels, mode, None));
    }
    for (mode, fusion) in &args.fusions {
        rows.push(run_queries(&client, &server.base, test, queries, qrels, mode, Some(fusion)));
    }
    let database_mb = setup.database_mb();
    drop(server);
    ProfileRun {
        profile: setup.profile,
        stores: setup.describe(),
        rows,
        ingest: (ingest_secs, created, chunks),
        database_mb,
    }
}

fn main() {
    let mut args = args();
    let corpus = common::read_jsonl(&args.data.join("corpus.jsonl"));
    let queries: HashMap<String, String> = common::read_jsonl(&args.data.join("queries.jsonl"))
        .into_iter()
        .map(|q| (q["_id"].as_str().unwrap().to_string(), q["text"].as_str().unwrap().to_string()))
        .collect();
    let mut qrels: HashMap<String, HashSet<String>> = HashMap::new();
    for line in std::fs::read_to_string(args.data.join("qrels/test.tsv")).unwrap().lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        qrels.entry(cols[0].to_string()).or_default().insert(cols[1].to_string());
    }
    let mut test: Vec<&String> = qrels.keys().collect();
    test.sort();

    let servers = Servers::for_profiles(&args.profiles, std::mem::take(&mut args.servers));
    let scratch = tempfile::tempdir().unwrap();
    let base_dir = args.data_dir.clone().unwrap_or_else(|| scratch.path().join("data"));
    let kept = args.data_dir.is_some();
    let mut runs = Vec::new();
    for &profile in &args.profiles {
        let data_dir = profile.data_dir(&base_dir);
        let config = scratch.path().join(format!("{}.toml", profile.name()));
        // A kept data directory is reused: its documents come back unchanged.
        let setup = Setup::prepare(profile, "scifact", data_dir, config, kept, kept, &servers);
        runs.push(run_profile(&args, &setup, &corpus, &test, &queries, &qrels));
    }

    println!("\nBEIR SciFact over HTTP: {} test queries, {} documents", test.len(), corpus.len());
    println!(
        "{:<9} {:<22} {:>8} {:>11} {:>8} {:>8} {:>8}  nDCG@10 vs published",
        "profile", "mode", "nDCG@10", "Recall@100", "p50 ms", "p95 ms", "p99 ms"
    );
    for run in &runs {
        for row in &run.rows {
            let (anchor, anchor_name) =
                if row.name == "semantic" { (0.6451, "all-MiniLM-L6-v2 0.645") } else { (0.665, "BM25 0.665") };
            println!(
                "{:<9} {:<22} {:>8.4} {:>11.4} {:>8.1} {:>8.1} {:>8.1}  {:.2}x {anchor_name}",
                run.profile.name(),
                row.name,
                row.ndcg,
                row.recall,
                percentile(&row.ms, 0.50),
                percentile(&row.ms, 0.95),
                percentile(&row.ms, 0.99),
                row.ndcg / anchor
            );
        }
    }
    for run in &runs {
        let (secs, created, chunks) = run.ingest;
        let size = run.database_mb.map(|mb| format!("; database {mb:.0} MiB")).unwrap_or_default();
        if created > 0 {
            println!(
                "{:<9} ingest over HTTP ({} clients): {:.1} documents/s, {:.1} chunks/s ({created} documents, {chunks} chunks, {secs:.0} s){size}",
                run.profile.name(),
                args.concurrency,
                created as f64 / secs,
                chunks as f64 / secs
            );
        } else {
            println!(
                "{:<9} ingest: every document was already in {} (unchanged){size}",
                run.profile.name(),
                run.profile.data_dir(&base_dir).display()
            );
        }
    }

    for run in &runs {
        println!("{:<9} stores: {}", run.profile.name(), run.stores);
    }

    let Some(embedded) = runs.iter().find(|r| r.profile == Profile::Embedded) else { return };
    for other in runs.iter().filter(|r| r.profile != Profile::Embedded) {
        let name = other.profile.name();
        println!("\n{name} / embedded");
        println!(
            "{:<22} {:>8} {:>8} {:>8} {:>10} {:>12}  nDCG@10 within goal",
            "mode", "p50", "p95", "p99", "nDCG@10 Δ", "Recall@100 Δ"
        );
        let mut all_within = true;
        for (e, p) in embedded.rows.iter().zip(&other.rows) {
            let at = |row: &Row, q| Some(percentile(&row.ms, q));
            let delta = p.ndcg - e.ndcg;
            let tolerance = ndcg_tolerance(other.profile, &e.mode);
            let within = delta.abs() <= tolerance;
            all_within &= within;
            println!(
                "{:<22} {:>8} {:>8} {:>8} {:>+10.4} {:>+12.4}  {} (±{tolerance})",
                e.name,
                ratio(at(p, 0.50), at(e, 0.50)),
                ratio(at(p, 0.95), at(e, 0.95)),
                ratio(at(p, 0.99), at(e, 0.99)),
                delta,
                p.recall - e.recall,
                if within { "yes" } else { "NO" }
            );
        }
        if embedded.ingest.1 > 0 && other.ingest.1 > 0 {
            let rate = |run: &ProfileRun, n: usize| Some(n as f64 / run.ingest.0);
            println!(
                "ingest: documents/s {}, chunks/s {}",
                ratio(rate(other, other.ingest.1), rate(embedded, embedded.ingest.1)),
                ratio(rate(other, other.ingest.2 as usize), rate(embedded, embedded.ingest.2 as usize))
            );
        } else {
            println!("ingest: not compared (a profile's corpus was already in)");
        }
        let worst_p95 = embedded
            .rows
            .iter()
            .zip(&other.rows)
            .map(|(e, p)| percentile(&p.ms, 0.95) / percentile(&e.ms, 0.95))
            .fold(0.0, f64::max);
        let ndcg_goal = match other.profile {
            Profile::Cluster => "nDCG@10 within 0.01 (keyword 0.02)",
            _ => "nDCG@10 equal within 0.01",
        };
        let p95 = match other.profile {
            // The postgres profile's goal; the cluster's latency is reported, not judged.
            Profile::Postgres => format!(
                "search p95 within 2x of embedded in every mode: {} (worst {worst_p95:.2}x)",
                if worst_p95 <= 2.0 { "yes" } else { "NO" }
            ),
            _ => format!("search p95 worst {worst_p95:.2}x of embedded"),
        };
        println!("{name}: {ndcg_goal} in every mode: {}; {p95}", if all_within { "yes" } else { "NO" });
    }
}

/// How far a profile's nDCG@10 may be from embedded's in a mode: 0.01, and for `cluster` in
/// keyword mode (another BM25 implementation) 0.02.
fn ndcg_tolerance(profile: Profile, mode: &str) -> f64 {
    match (profile, mode) {
        (Profile::Cluster, "keyword") => 0.02,
        _ => 0.01,
    }
}
