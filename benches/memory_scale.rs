//! Memory search at scale over HTTP: N memories of real text (sentences of the BEIR SciFact corpus)
//! spread over 1,000 users; then user-scoped hybrid searches at concurrency 1 and 16 report
//! p50/p95/p99, how often the memory a query was cut from comes back in the top 10, the server's
//! resident memory, and the time from start to ready.
//!
//! Two ways in:
//! - `--load http` (default): every memory through `POST /api/v1/memories` (100 messages per add,
//!   `infer=false`), each embedded by the built-in model in the server.
//! - `--load import`: for sizes whose embedding would take hours on a small machine. The corpus's
//!   distinct sentences are embedded once by the built-in model; memory i is sentence i while they
//!   last, then a pair of sentences whose vector is the normalised sum of theirs. The memories go
//!   through Nexus's write path in-process (`Memories::import`: the same records and history an
//!   add writes); searches are then served by `nexus serve` over HTTP and embed every query with
//!   the model.
//!
//! With `--data-dir DIR --reuse` a later run searches what an earlier one loaded; with
//! `--load import` it first imports whatever memories of the N are missing (an interrupted load
//! resumes; the sentences' vectors are kept in `DIR.sentences.f32`).
//!
//! `--profile` (default `embedded`) picks the stores, one profile or a comma-separated list run
//! one after the other (see `common/profile.rs`; the import opens the same configured stores):
//! `postgres` puts records on Postgres and vectors on pgvector (`--postgres-url` or
//! `NEXUS_BENCH_POSTGRES_URL`); `cluster` puts records on Postgres, vectors on Qdrant, text on
//! Elasticsearch/OpenSearch, graph on a Bolt server and objects on S3 when one is given
//! (`--qdrant-url`, `--opensearch-url`, `--bolt-url`, `--s3-endpoint`, or the `NEXUS_BENCH_*`
//! variables); `both` is embedded,postgres and `all` embedded,postgres,cluster. Embedded runs
//! first and is the reference: every other profile gets a table of its ratios to it (search
//! p50/p95/p99 and searches/s per concurrency, load rate), and postgres whether search p95 stays
//! within 2x of the embedded figure (its goal). With `--data-dir DIR`, each other profile keeps
//! its data in `DIR-PROFILE` and its database (and cluster stores) named after it, reused with it
//! by `--reuse`.
//!
//! ```sh
//! cargo bench --bench memory_scale -- [--memories 100000] [--load http|import]
//!     [--data-dir PATH [--reuse]] [--corpus PATH/corpus.jsonl]
//!     [--profile embedded|postgres|cluster|both|all[,...]] [--postgres-url URL]
//!     [--opensearch-url URL] [--qdrant-url URL] [--bolt-url URL] [--s3-endpoint URL]
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::profile::{Profile, ServerFlags, Servers, Setup, ratio};

const USERS: usize = 1000;
const PER_ADD: usize = 100;
const QUERIES: usize = 2000;

fn start(data: &Path, config: &Path) -> (Child, String, Duration) {
    let started = Instant::now();
    let (child, base) = common::spawn_nexus(Path::new(env!("CARGO_BIN_EXE_nexus")), data, config, &[]);
    let http = reqwest::blocking::Client::new();
    while !http.get(format!("{base}/ready")).send().is_ok_and(|r| r.status().is_success()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, base, started.elapsed())
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}

fn rss_mb(pid: u32) -> f64 {
    status_mb(pid, "VmRSS:")
}

/// The part of RSS that is mapped file pages (the record store's memory map), not heap.
fn file_rss_mb(pid: u32) -> f64 {
    status_mb(pid, "RssFile:")
}

fn status_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The corpus's distinct sentences of six words or more, in corpus order.
fn sentences(corpus: &Path) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in std::fs::read_to_string(corpus).unwrap_or_else(|e| panic!("{}: {e}", corpus.display())).lines() {
        let doc: Value = serde_json::from_str(line).unwrap();
        for s in doc["text"].as_str().unwrap_or_default().split(". ") {
            let s = s.trim();
            if s.split_whitespace().count() >= 6 && seen.insert(s.to_string()) {
                out.push(s.to_string());
            }
        }
    }
    out
}

/// What memory `i` is made of: one sentence while they last, then a pair (a splitmix of `i`
/// picks them, so every pair is different and the pairs spread over the corpus).
fn parts(i: usize, distinct: usize) -> (usize, Option<usize>) {
    if i < distinct {
        return (i, None);
    }
    let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let a = (z % distinct as u64) as usize;
    let b = (a + 1 + (z >> 32) as usize % (distinct - 1)) % distinct;
    (a, Some(b))
}

fn memory_text(i: usize, base: &[String]) -> String {
    match parts(i, base.len()) {
        (a, None) => base[a].clone(),
        (a, Some(b)) => format!("{}. {}", base[a], base[b]),
    }
}

/// Memory `i` belongs to the user of its add (100 consecutive memories per add).
fn owner(i: usize) -> String {
    format!("user-{}", (i / PER_ADD) % USERS)
}

/// Loads memories `0..n` through the API; returns the seconds it took.
fn load_over_http(data: &Path, config: &Path, n: usize, base_sentences: &[String]) -> f64 {
    let (child, base, _) = start(data, config);
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(300)).build().unwrap();
    let started = Instant::now();
    let batches: Vec<usize> = (0..n.div_ceil(PER_ADD)).collect();
    let queue = std::sync::Mutex::new(batches);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let (http, base, queue) = (http.clone(), base.clone(), &queue);
            scope.spawn(move || {
                loop {
                    let Some(b) = queue.lock().unwrap().pop() else { break };
                    let messages: Vec<Value> = (b * PER_ADD..((b + 1) * PER_ADD).min(n))
                        .map(|i| json!({"role": "user", "content": memory_text(i, base_sentences)}))
                        .collect();
                    let body = json!({"messages": messages, "user_id": owner(b * PER_ADD), "infer": false});
                    let r = http.post(format!("{base}/api/v1/memories")).json(&body).send().expect("add");
                    assert!(r.status().is_success(), "add: {}", r.text().unwrap_or_default());
                }
            });
        }
    });
    let ingest = started.elapsed().as_secs_f64();
    println!("{n} memories over {USERS} users over HTTP in {ingest:.0} s ({:.0} memories/s)", n as f64 / ingest);
    println!("RSS after ingest: {:.0} MB", rss_mb(child.id()));
    stop(child);
    ingest
}

fn memory_id(i: usize) -> String {
    format!("mem-{i:08}")
}

/// The built-in model's vector of every distinct sentence, kept in `cache` (beside the data
/// directory, shared by the profiles) so a resumed import or another profile does not embed them
/// again.
async fn sentence_vectors(app: &nexus::app::App, cache: &Path, base_sentences: &[String]) -> Vec<Vec<f32>> {
    let dims = app.embed.dimensions();
    if let Ok(bytes) = std::fs::read(cache)
        && bytes.len() == base_sentences.len() * dims * 4
    {
        let floats: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        return floats.chunks(dims).map(<[f32]>::to_vec).collect();
    }
    let mut vectors: Vec<Vec<f32>> = Vec::with_capacity(base_sentences.len());
    for chunk in base_sentences.chunks(256) {
        vectors.extend(app.embed.embed(chunk).await.unwrap());
    }
    let bytes: Vec<u8> = vectors.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(cache, bytes).unwrap();
    vectors
}

fn normalised_sum(a: &[f32], b: &[f32]) -> Vec<f32> {
    let sum: Vec<f32> = a.iter().zip(b).map(|(x, y)| x + y).collect();
    let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    sum.into_iter().map(|x| x / norm).collect()
}

/// Imports memories `from..n` (with `resume`, `from` is the first not yet in the data directory)
/// into the stores `config` names, opened as `nexus serve` opens them; returns how many were
/// imported and the seconds it took (without embedding the sentences).
fn load_by_import(
    data: &Path,
    config: &Path,
    cache: &Path,
    n: usize,
    base_sentences: &[String],
    resume: bool,
) -> (usize, f64) {
    use nexus::memory::{Memory, Scope, Tier};
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let app = common::open_app(data, config).await;
        let tenant = nexus::store::TenantId::default_tenant();
        let present = |i: usize| {
            let (app, tenant) = (&app, &tenant);
            async move { app.stores.records.get(tenant, &memory_id(i)).await.unwrap().is_some() }
        };
        // Memories are imported in id order, so the present ones are a prefix.
        let (mut lo, mut hi) = (0, n);
        while resume && lo < hi {
            let mid = (lo + hi) / 2;
            if present(mid).await { lo = mid + 1 } else { hi = mid }
        }
        let first = if resume { lo } else { 0 };
        if first >= n {
            println!("all {n} memories are present");
            app.shutdown().await;
            return (0, 0.0);
        }
        if first > 0 {
            println!("{first} memories present; importing {first}..{n}");
        }

        let started = Instant::now();
        let vectors = sentence_vectors(&app, cache, base_sentences).await;
        println!(
            "{} distinct sentences' vectors (built-in model) ready in {:.0} s",
            vectors.len(),
            started.elapsed().as_secs_f64()
        );

        let started = Instant::now();
        let mut last_report = Instant::now();
        for from in (first..n).step_by(5000) {
            let batch: Vec<(Memory, Vec<f32>)> = (from..(from + 5000).min(n))
                .map(|i| {
                    let (a, b) = parts(i, base_sentences.len());
                    let vector = b.map_or_else(|| vectors[a].clone(), |b| normalised_sum(&vectors[a], &vectors[b]));
                    let scope = Scope { user_id: Some(owner(i)), ..Default::default() };
                    let memory = Memory::new(memory_id(i), memory_text(i, base_sentences), Tier::Factual, scope);
                    (memory, vector)
                })
                .collect();
            let outcome = app.memories.import(&tenant, batch, "bench").await.unwrap();
            // Keep the indexers close behind, as a server under this load would.
            while !app.writes.wait_indexed(outcome.receipt.seq).await {}
            if last_report.elapsed() > Duration::from_secs(30) {
                let done = (from + 5000).min(n);
                let rate = (done - first) as f64 / started.elapsed().as_secs_f64();
                println!("  {done} memories, {rate:.0} memories/s");
                last_report = Instant::now();
            }
        }
        app.shutdown().await;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{} memories over {USERS} users imported in {secs:.0} s ({:.0} memories/s)",
            n - first,
            (n - first) as f64 / secs
        );
        (n - first, secs)
    })
}

fn percentiles(mut ms: Vec<f64>) -> (f64, f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.95), at(0.99))
}

struct Probe {
    query: String,
    user: String,
    source: String,
}

/// Runs every probe at `concurrency`; returns p50/p95/p99 (ms), searches per second, and the
/// share of probes whose source memory came back in the top 10.
fn searches(base: &str, probes: &[Probe], concurrency: usize) -> (f64, f64, f64, f64, f64) {
    let started = Instant::now();
    let results: Vec<(f64, bool)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..concurrency)
            .map(|c| {
                scope.spawn(move || {
                    let http = reqwest::blocking::Client::new();
                    probes
                        .iter()
                        .skip(c)
                        .step_by(concurrency)
                        .map(|p| {
                            let body = json!({"query": p.query, "user_id": p.user, "top_k": 10, "relations": false});
                            let t = Instant::now();
                            let r = http.post(format!("{base}/api/v1/memories/search")).json(&body).send().unwrap();
                            assert!(r.status().is_success());
                            let v: Value = r.json().unwrap();
                            let ms = t.elapsed().as_secs_f64() * 1000.0;
                            let found = v["results"]
                                .as_array()
                                .is_some_and(|hits| hits.iter().any(|h| h["memory"].as_str() == Some(&p.source)));
                            (ms, found)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let qps = results.len() as f64 / started.elapsed().as_secs_f64();
    let found = results.iter().filter(|(_, f)| *f).count() as f64 / results.len() as f64;
    let (p50, p95, p99) = percentiles(results.into_iter().map(|(ms, _)| ms).collect());
    (p50, p95, p99, qps, found)
}

/// One search pass: concurrency, p50/p95/p99 (ms), searches per second, share found in the top 10.
type Pass = (usize, f64, f64, f64, f64, f64);

/// What one profile measured.
struct ProfileRun {
    profile: Profile,
    /// Which store is where.
    stores: String,
    /// Memories loaded by this run and the seconds it took (none when all were there).
    load: Option<(usize, f64)>,
    ready_secs: f64,
    rss_ready: (f64, f64),
    rss_after: (f64, f64),
    passes: Vec<Pass>,
    database_mb: Option<f64>,
}

struct Options {
    n: usize,
    load: String,
    reuse: bool,
}

fn run_profile(options: &Options, setup: &Setup, cache: &Path, base_sentences: &[String]) -> ProfileRun {
    let (n, data, config) = (options.n, setup.data_dir.as_path(), setup.config.as_path());
    println!("\n== profile {}: data in {}", setup.profile.name(), data.display());
    let load = if setup.reused {
        println!("reusing {} (its memories were loaded by an earlier run)", data.display());
        match options.load.as_str() {
            "import" => Some(load_by_import(data, config, cache, n, base_sentences, true)).filter(|(n, _)| *n > 0),
            _ => None,
        }
    } else {
        if options.reuse {
            println!("nothing to reuse for this profile: loading");
        }
        println!("{} distinct corpus sentences; loading {n} memories ({})", base_sentences.len(), options.load);
        match options.load.as_str() {
            "http" => Some((n, load_over_http(data, config, n, base_sentences))),
            "import" => Some(load_by_import(data, config, cache, n, base_sentences, false)),
            other => panic!("--load {other}: use http or import"),
        }
    };
    let database_mb = setup.database_mb();
    if let Some(mb) = database_mb {
        println!("postgres database: {mb:.0} MiB");
    }
    println!("stores: {}", setup.describe());

    let (child, base, ready) = start(data, config);
    let rss_ready = (rss_mb(child.id()), file_rss_mb(child.id()));
    println!(
        "start to ready: {:.2} s; RSS when ready: {:.0} MB ({:.0} MB of it mapped file pages)",
        ready.as_secs_f64(),
        rss_ready.0,
        rss_ready.1
    );
    // Each probe is the first six words of a memory, searched in its owner's memories; each
    // concurrency level gets its own memories, so no query is answered from the embedding cache.
    let step = (n / QUERIES).max(2);
    let mut passes = Vec::new();
    for (pass, concurrency) in [1, 16].into_iter().enumerate() {
        let probes: Vec<Probe> = (0..QUERIES)
            .map(|q| {
                let i = (q * step + pass * step / 2) % n;
                let source = memory_text(i, base_sentences);
                let query = source.split_whitespace().take(6).collect::<Vec<_>>().join(" ");
                Probe { query, user: owner(i), source }
            })
            .collect();
        let (p50, p95, p99, qps, found) = searches(&base, &probes, concurrency);
        println!(
            "search (hybrid, one user's memories) at concurrency {concurrency:>2}: p50 {p50:.1} ms  p95 {p95:.1} ms  p99 {p99:.1} ms  ({qps:.0} searches/s; source memory in top 10: {:.1}%)",
            found * 100.0
        );
        passes.push((concurrency, p50, p95, p99, qps, found));
    }
    let rss_after = (rss_mb(child.id()), file_rss_mb(child.id()));
    println!("RSS after searches: {:.0} MB ({:.0} MB of it mapped file pages)", rss_after.0, rss_after.1);
    stop(child);
    ProfileRun {
        profile: setup.profile,
        stores: setup.describe(),
        load,
        ready_secs: ready.as_secs_f64(),
        rss_ready,
        rss_after,
        passes,
        database_mb,
    }
}

fn main() {
    let mut options = Options { n: 100_000, load: "http".to_string(), reuse: false };
    let mut keep: Option<PathBuf> = None;
    let mut profiles = vec![Profile::Embedded];
    let mut server_flags = ServerFlags::default();
    let mut corpus =
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/datasets/beir-scifact/corpus.jsonl"));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--memories" => options.n = args.next().expect("--memories N").parse().expect("a number"),
            "--load" => options.load = args.next().expect("--load http|import"),
            "--data-dir" => keep = Some(args.next().expect("--data-dir PATH").into()),
            "--reuse" => options.reuse = true,
            "--corpus" => corpus = args.next().expect("--corpus PATH").into(),
            "--profile" => profiles = Profile::parse_list(&args.next().expect(Profile::USAGE)),
            other if server_flags.parse(other, &mut args) => {}
            _ => {}
        }
    }
    assert!(matches!(options.load.as_str(), "http" | "import"), "--load {}: use http or import", options.load);
    let n = options.n;
    let base_sentences = sentences(&corpus);
    let servers = Servers::for_profiles(&profiles, server_flags);
    let tmp = tempfile::tempdir().unwrap();
    let base_dir = keep.clone().unwrap_or_else(|| tmp.path().join("data"));
    let cache = base_dir.with_extension("sentences.f32");
    let mut runs = Vec::new();
    for &profile in &profiles {
        let data = profile.data_dir(&base_dir);
        let config = data.with_extension("toml");
        let setup = Setup::prepare(profile, "memory_scale", data, config, options.reuse, keep.is_some(), &servers);
        runs.push(run_profile(&options, &setup, &cache, &base_sentences));
    }

    println!(
        "\nmemory_scale: {n} memories over {USERS} users (load: {}), {QUERIES} searches per concurrency",
        options.load
    );
    println!(
        "{:<9} {:>4} {:>8} {:>8} {:>8} {:>11} {:>10}",
        "profile", "conc", "p50 ms", "p95 ms", "p99 ms", "searches/s", "in top 10"
    );
    for run in &runs {
        for &(concurrency, p50, p95, p99, qps, found) in &run.passes {
            println!(
                "{:<9} {concurrency:>4} {p50:>8.1} {p95:>8.1} {p99:>8.1} {qps:>11.0} {:>9.1}%",
                run.profile.name(),
                found * 100.0
            );
        }
    }
    println!(
        "{:<9} {:>16} {:>9} {:>14} {:>14} {:>12}",
        "profile", "load memories/s", "ready s", "RSS ready MB", "RSS after MB", "database MB"
    );
    for run in &runs {
        let load = run.load.map(|(n, secs)| format!("{:.0}", n as f64 / secs)).unwrap_or_else(|| "-".into());
        let db = run.database_mb.map(|mb| format!("{mb:.0}")).unwrap_or_else(|| "-".into());
        println!(
            "{:<9} {load:>16} {:>9.2} {:>14.0} {:>14.0} {db:>12}",
            run.profile.name(),
            run.ready_secs,
            run.rss_ready.0,
            run.rss_after.0
        );
    }

    for run in &runs {
        println!("{:<9} stores: {}", run.profile.name(), run.stores);
    }

    if let Some(embedded) = runs.iter().find(|r| r.profile == Profile::Embedded) {
        for other in runs.iter().filter(|r| r.profile != Profile::Embedded) {
            let name = other.profile.name();
            println!("\n{name} / embedded");
            println!("{:>4} {:>8} {:>8} {:>8} {:>11}", "conc", "p50", "p95", "p99", "searches/s");
            let mut p95 = Vec::new();
            for (e, p) in embedded.passes.iter().zip(&other.passes) {
                println!(
                    "{:>4} {:>8} {:>8} {:>8} {:>11}",
                    e.0,
                    ratio(Some(p.1), Some(e.1)),
                    ratio(Some(p.2), Some(e.2)),
                    ratio(Some(p.3), Some(e.3)),
                    ratio(Some(p.4), Some(e.4))
                );
                p95.push(match other.profile {
                    Profile::Postgres => format!(
                        "concurrency {}: {} ({:.2}x)",
                        e.0,
                        if p.2 <= 2.0 * e.2 { "yes" } else { "NO" },
                        p.2 / e.2
                    ),
                    _ => format!("concurrency {}: {:.2}x", e.0, p.2 / e.2),
                });
            }
            let rate = |run: &ProfileRun| run.load.map(|(n, secs)| n as f64 / secs);
            println!("load memories/s: {}", ratio(rate(other), rate(embedded)));
            match other.profile {
                // The postgres profile's goal; the cluster's latency is reported, not judged.
                Profile::Postgres => {
                    println!("goal: HTTP search p95 within 2x of embedded at {n} memories: {}", p95.join("; "))
                }
                _ => println!("{name}: HTTP search p95 / embedded at {n} memories: {}", p95.join("; ")),
            }
        }
    }
    println!("goal: p95 <= 15 ms at 1M memories on 2 cores; Mem0 paper search p50 148 ms / p95 200 ms");
}
