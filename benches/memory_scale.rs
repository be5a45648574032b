//! Memory search at scale over HTTP: N memories of real text (sentences of the BEIR SciFact corpus)
//! spread over 1,000 users go in through `POST /api/v1/memories` (100 messages per add,
//! `infer=false`); then user-scoped hybrid searches at concurrency 1 and 16 report p50/p95/p99,
//! the server's resident memory, and the time from start to ready on restart.
//!
//! ```sh
//! cargo bench --bench memory_scale -- [--memories 100000] [--corpus PATH/corpus.jsonl]
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

const USERS: usize = 1000;
const PER_ADD: usize = 100;

fn start(data: &Path) -> (Child, String, Duration) {
    let config = data.with_extension("toml");
    std::fs::write(&config, "").unwrap();
    let started = Instant::now();
    let (child, base) = common::spawn_nexus(Path::new(env!("CARGO_BIN_EXE_nexus")), data, &config, &[]);
    let http = reqwest::blocking::Client::new();
    while !http.get(format!("{base}/ready")).send().is_ok_and(|r| r.status().is_success()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, base, started.elapsed())
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Sentences of the corpus, as many as needed (cycled with a counter when the corpus runs out).
fn sentences(corpus: &Path, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for line in std::fs::read_to_string(corpus).unwrap_or_else(|e| panic!("{}: {e}", corpus.display())).lines() {
        let doc: Value = serde_json::from_str(line).unwrap();
        for s in doc["text"].as_str().unwrap_or_default().split(". ") {
            if s.split_whitespace().count() >= 6 {
                out.push(s.trim().to_string());
            }
        }
    }
    let distinct = out.len();
    (0..n).map(|i| if i < distinct { out[i].clone() } else { format!("{} (note {i})", out[i % distinct]) }).collect()
}

fn percentiles(mut ms: Vec<f64>) -> (f64, f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.95), at(0.99))
}

fn searches(base: &str, queries: &[String], concurrency: usize) -> (f64, f64, f64, f64) {
    let started = Instant::now();
    let chunks: Vec<Vec<(usize, String)>> = (0..concurrency)
        .map(|c| queries.iter().enumerate().skip(c).step_by(concurrency).map(|(i, q)| (i, q.clone())).collect())
        .collect();
    let latencies: Vec<f64> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || {
                    let http = reqwest::blocking::Client::new();
                    chunk
                        .into_iter()
                        .map(|(i, q)| {
                            let body = json!({"query": q, "user_id": format!("user-{}", i % USERS), "top_k": 10, "relations": false});
                            let t = Instant::now();
                            let r = http.post(format!("{base}/api/v1/memories/search")).json(&body).send().unwrap();
                            assert!(r.status().is_success());
                            let _: Value = r.json().unwrap();
                            t.elapsed().as_secs_f64() * 1000.0
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let qps = latencies.len() as f64 / started.elapsed().as_secs_f64();
    let (p50, p95, p99) = percentiles(latencies);
    (p50, p95, p99, qps)
}

fn main() {
    let mut n = 100_000usize;
    let mut corpus =
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/datasets/beir-scifact/corpus.jsonl"));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--memories" => n = args.next().expect("--memories N").parse().expect("a number"),
            "--corpus" => corpus = args.next().expect("--corpus PATH").into(),
            _ => {}
        }
    }
    let texts = sentences(&corpus, n);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, base, _) = start(&data);
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(300)).build().unwrap();

    let started = Instant::now();
    let batches: Vec<(usize, &[String])> = texts.chunks(PER_ADD).enumerate().collect();
    let queue = std::sync::Mutex::new(batches);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let (http, base, queue) = (http.clone(), base.clone(), &queue);
            scope.spawn(move || {
                loop {
                    let Some((i, batch)) = queue.lock().unwrap().pop() else { break };
                    let messages: Vec<Value> = batch.iter().map(|t| json!({"role": "user", "content": t})).collect();
                    let body = json!({"messages": messages, "user_id": format!("user-{}", i % USERS), "infer": false});
                    let r = http.post(format!("{base}/api/v1/memories")).json(&body).send().expect("add");
                    assert!(r.status().is_success(), "add: {}", r.text().unwrap_or_default());
                }
            });
        }
    });
    let ingest = started.elapsed().as_secs_f64();
    println!("{n} memories over {USERS} users in {ingest:.0} s ({:.0} memories/s)", n as f64 / ingest);
    println!("RSS after ingest: {:.0} MB", rss_mb(child.id()));

    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
    let (mut child, base, ready) = start(&data);
    println!("restart: ready in {:.2} s", ready.as_secs_f64());
    let queries: Vec<String> = texts
        .iter()
        .step_by((n / 2000).max(1))
        .take(2000)
        .map(|t| t.split_whitespace().take(6).collect::<Vec<_>>().join(" "))
        .collect();
    for concurrency in [1, 16] {
        let (p50, p95, p99, qps) = searches(&base, &queries, concurrency);
        println!(
            "search (hybrid, one user's memories) at concurrency {concurrency:>2}: p50 {p50:.1} ms  p95 {p95:.1} ms  p99 {p99:.1} ms  ({qps:.0} searches/s)"
        );
    }
    println!("RSS after searches: {:.0} MB", rss_mb(child.id()));
    println!("goal: p95 <= 15 ms at 1M memories on 2 cores; Mem0 paper search p50 148 ms / p95 200 ms");
    let _ = child.kill();
    let _ = child.wait();
}
