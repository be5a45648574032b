//! How long writers pause while `nexus backup` copies a large data directory (default 1 GB),
//! beside the anchor: the same writers' longest pause over the same time without a backup.
//!
//! ```sh
//! cargo bench --bench backup -- [--gb 1.0] [--seconds 20]
//! ```
//! Builds (once, kept under target/bench-data/) a data directory of records with 10 KB bodies
//! and 384-dimension vectors, serves it, and runs two writers: one plain (`wait=false`: the
//! write is committed to the record) and one that reads its own write (`wait=true`: answered
//! once every derived store shows it). Prints each writer's longest and 99th-percentile latency
//! without a backup and during one, their ratio, the backup's duration and archive size, and
//! the longest time an indexer was held. Goal: the longest pause under 100 ms.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[allow(dead_code)]
mod common;

const DIMENSIONS: usize = 384;
const BODY_BYTES: usize = 10_000;

fn vector(seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let v: Vec<f32> = (0..DIMENSIONS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.into_iter().map(|a| a / norm).collect()
}

const WORDS: &[&str] = &[
    "archive", "ledger", "harbour", "signal", "orchard", "quartz", "meadow", "engine", "lantern", "canyon", "pixel",
    "violin", "glacier", "beacon", "saffron", "tundra", "cobalt", "walnut", "nebula", "prairie",
];

fn body(n: u64) -> String {
    let mut x = n.wrapping_mul(2_654_435_761) | 1;
    let mut out = String::with_capacity(BODY_BYTES + 16);
    while out.len() < BODY_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
        out.push(' ');
    }
    out
}

fn record(n: u64) -> Value {
    json!({"id": format!("r{n}"), "kind": "note", "title": format!("note {n}"), "body": body(n), "vector": vector(n)})
}

fn dir_size(path: &Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

fn wait_caught_up(client: &reqwest::blocking::Client, base: &str) {
    loop {
        let status: Value = client.get(format!("{base}/api/v1/status")).send().unwrap().json().unwrap();
        let lagging = status["indexers"].as_array().is_none_or(|i| i.iter().any(|i| i["lag"].as_u64() != Some(0)));
        if !lagging {
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Latencies of one writer: (when, how long).
type Samples = Arc<Mutex<Vec<(Instant, Duration)>>>;

fn writer(base: String, wait: bool, first: u64, samples: Samples, stop: Arc<AtomicBool>) {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let mut n = first;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let started = Instant::now();
        let status = client
            .post(format!("{base}/api/v1/records?wait={wait}"))
            .json(&json!({"id": format!("w{n}"), "kind": "note", "body": body(n)[..400].to_string(), "vector": vector(n)}))
            .send()
            .map(|r| r.status());
        let took = started.elapsed();
        assert!(status.as_ref().is_ok_and(|s| s.is_success()), "write failed: {status:?}");
        samples.lock().unwrap().push((started, took));
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Longest and 99th percentile of the samples that started in [from, to).
fn stats(samples: &Samples, from: Instant, to: Instant) -> (Duration, Duration, usize) {
    let mut within: Vec<Duration> =
        samples.lock().unwrap().iter().filter(|(at, _)| *at >= from && *at < to).map(|(_, d)| *d).collect();
    within.sort();
    let n = within.len();
    if n == 0 {
        return (Duration::ZERO, Duration::ZERO, 0);
    }
    (within[n - 1], within[(n * 99 / 100).min(n - 1)], n)
}

fn main() {
    let mut gb = 1.0f64;
    let mut seconds = 20u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--gb" => gb = args.next().unwrap().parse().unwrap(),
            "--seconds" => seconds = args.next().unwrap().parse().unwrap(),
            "--bench" => {}
            other => panic!("unknown flag {other}"),
        }
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_nexus"));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    let data = root.join(format!("backup-{gb}gb"));
    let config = root.join("backup-bench.toml");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(&config, "[server]\n").unwrap();
    let backups = root.join("backup-bench-archives");
    let _ = std::fs::remove_dir_all(&backups);

    let (mut child, base) = common::spawn_nexus(&bin, &data, &config, &[]);
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(600)).build().unwrap();
    let records = (gb * 1e9 / BODY_BYTES as f64) as u64;
    let have: Value = client.get(format!("{base}/api/v1/status")).send().unwrap().json().unwrap();
    let held = have["stores"][0]["items"].as_u64().unwrap_or(0);
    if held < records {
        eprintln!("building the data directory: {records} records of {BODY_BYTES} bytes (once)");
        let started = Instant::now();
        for batch in (held / 500)..records.div_ceil(500) {
            let writes: Vec<Value> = (batch * 500..((batch + 1) * 500).min(records))
                .map(|n| json!({"op": "upsert", "record": record(n)}))
                .collect();
            let status = client
                .post(format!("{base}/api/v1/records/batch"))
                .json(&json!({"writes": writes}))
                .send()
                .unwrap()
                .status();
            assert!(status.is_success(), "{status}");
            if batch % 20 == 0 {
                eprintln!("  {} records, {:.0} s", (batch + 1) * 500, started.elapsed().as_secs_f64());
            }
        }
    }
    wait_caught_up(&client, &base);
    let size = dir_size(&data);
    println!("data directory: {:.2} GB ({} records)", size as f64 / 1e9, records);

    let plain: Samples = Arc::default();
    let reading: Samples = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers =
        [(false, plain.clone(), 1u64 << 40), (true, reading.clone(), 2u64 << 40)].map(|(wait, samples, first)| {
            let (base, stop) = (base.clone(), stop.clone());
            std::thread::spawn(move || writer(base, wait, first, samples, stop))
        });
    std::thread::sleep(Duration::from_secs(2));
    let baseline_from = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let baseline_to = Instant::now();
    let out = Command::new(&bin)
        .arg("--data-dir")
        .arg(&data)
        .args(["backup", "--json", "--to"])
        .arg(&backups)
        .env("NEXUS_CONFIG", &config)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let backup_to = Instant::now();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    assert!(out.status.success(), "backup failed: {}", String::from_utf8_lossy(&out.stderr));
    let taken: Value = serde_json::from_slice(&out.stdout).unwrap();
    let took = backup_to - baseline_to;
    println!(
        "backup: {:.1} s, archive {:.2} GB ({:.0} MB/s of data), longest indexer hold {} ms",
        took.as_secs_f64(),
        taken["size"].as_u64().unwrap_or(0) as f64 / 1e9,
        size as f64 / 1e6 / took.as_secs_f64(),
        taken["longest_hold_ms"]
    );
    println!("{:<28} {:>14} {:>14} {:>14} {:>10}", "writer", "anchor max", "backup max", "backup p99", "ratio");
    for (name, samples) in [("plain (wait=false)", &plain), ("read-your-write (wait=true)", &reading)] {
        let (base_max, _, base_n) = stats(samples, baseline_from, baseline_to);
        let (max, p99, n) = stats(samples, baseline_to, backup_to);
        println!(
            "{name:<28} {:>11.1} ms {:>11.1} ms {:>11.1} ms {:>9.2}x   ({base_n} and {n} writes)",
            base_max.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            max.as_secs_f64() / base_max.as_secs_f64().max(1e-9)
        );
    }
    println!("goal: the longest pause during the backup under 100 ms");
    let _ = child.kill();
    let _ = child.wait();
}
