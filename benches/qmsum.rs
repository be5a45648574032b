//! Meeting search on QMSum's 20 product meetings (AMI): each meeting is replayed as a live stream
//! over `GET /api/v1/meetings/{id}/stream` of a real `nexus serve` (every turn a final segment,
//! its speakers as participants), then each of the 129 specific queries with gold spans is asked
//! through `POST /api/v1/search` (`sources: ["meetings"]`, the meeting's id as filter) in keyword,
//! semantic and hybrid modes. A query hits@k when one of its top-k results overlaps one of its
//! gold turn spans. Printed beside the dataset's baselines over single turns (BM25 0.690, MiniLM
//! 0.791, their fusion 0.806 at @5); Nexus's results are windows of consecutive turns, so the
//! mean number of turns in the top 5 is printed too. Also: the stream's acknowledgement latency.
//!
//! ```sh
//! cargo bench --bench qmsum -- [--data PATH/test_product.jsonl] [--bin PATH]
//! ```
//! The data is read from `../shared/datasets/qmsum`; nothing here is tuned on it.

use std::collections::{BTreeSet, HashMap};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

mod common;

/// Segments sent before their acknowledgements are read.
const WINDOW: usize = 16;

type Ws = tungstenite::WebSocket<TcpStream>;

/// A turn's text without AMI's transcription markers (`{disfmarker}`, `{vocalsound}`, ...).
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn post(http: &reqwest::blocking::Client, url: &str, body: &Value) -> Value {
    let response = http.post(url).json(body).send().unwrap();
    let status = response.status();
    let value: Value = response.json().unwrap_or(Value::Null);
    assert!(status.is_success(), "POST {url}: {status} {value}");
    value
}

fn connect(addr: &str, path: &str) -> Ws {
    let request = format!("ws://{addr}{path}").into_client_request().unwrap();
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let (ws, _) = tungstenite::client(request, stream).unwrap_or_else(|e| panic!("stream {path}: {e}"));
    ws
}

/// Reads until every segment id in `waiting` is acknowledged; returns each one's seq and how long
/// its acknowledgement took from `sent`.
fn acks(ws: &mut Ws, waiting: &mut HashMap<String, Instant>, seqs: &mut HashMap<String, u64>, latency: &mut Vec<f64>) {
    while !waiting.is_empty() {
        let text = match ws.read().expect("a message") {
            Message::Text(text) => text,
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        };
        let v: Value = serde_json::from_str(text.as_str()).unwrap();
        match v["type"].as_str() {
            Some("ack") => {
                let id = v["segment_id"].as_str().unwrap().to_string();
                if let Some(sent) = waiting.remove(&id) {
                    latency.push(sent.elapsed().as_secs_f64() * 1000.0);
                    seqs.insert(id, v["seq"].as_u64().unwrap());
                }
            }
            Some("error") => panic!("the stream refused a segment: {v}"),
            _ => {}
        }
    }
}

fn main() {
    let mut data = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/datasets/qmsum/test_product.jsonl"));
    let mut bin = PathBuf::from(env!("CARGO_BIN_EXE_nexus"));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--data" => data = PathBuf::from(args.next().unwrap()),
            "--bin" => bin = PathBuf::from(args.next().unwrap()),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let text = std::fs::read_to_string(&data).unwrap_or_else(|e| panic!("{}: {e}", data.display()));
    let meetings: Vec<Value> =
        text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("empty.toml");
    std::fs::write(&config, "").unwrap();
    let env = [
        ("NEXUS__LIMITS__PER_KEY_PER_SECOND".to_string(), "0".to_string()),
        ("NEXUS__LIMITS__PER_ADDRESS_PER_SECOND".to_string(), "0".to_string()),
    ];
    let (mut child, base) = common::spawn_nexus(&bin, &dir.path().join("data"), &config, &env);
    let addr = base.trim_start_matches("http://").to_string();
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(300)).build().unwrap();

    // Replay: each meeting over its stream, WINDOW segments at a time.
    let started = Instant::now();
    let mut latency = Vec::new();
    let mut ids = Vec::new(); // per meeting: its id, and each seq's turn index
    let mut turns_sent = 0usize;
    for (m, meeting) in meetings.iter().enumerate() {
        let transcript = meeting["meeting_transcripts"].as_array().unwrap();
        let speakers: BTreeSet<&str> = transcript.iter().filter_map(|t| t["speaker"].as_str()).collect();
        let participants: Vec<Value> = speakers.iter().map(|s| json!({"name": s})).collect();
        let created = post(
            &http,
            &format!("{base}/api/v1/meetings"),
            &json!({"title": format!("Product meeting {}", m + 1), "status": "live", "participants": participants}),
        );
        let id = created["id"].as_str().unwrap().to_string();
        let mut ws = connect(&addr, &format!("/api/v1/meetings/{id}/stream"));
        let (mut waiting, mut seqs) = (HashMap::new(), HashMap::new());
        for (i, turn) in transcript.iter().enumerate() {
            let text = clean(turn["content"].as_str().unwrap_or_default());
            if text.is_empty() {
                continue;
            }
            let segment = json!({"segment_id": format!("t{i}"), "speaker": turn["speaker"], "start_ms": i * 4000,
                                 "end_ms": i * 4000 + 3500, "text": text, "is_final": true});
            waiting.insert(format!("t{i}"), Instant::now());
            ws.send(Message::text(segment.to_string())).unwrap();
            turns_sent += 1;
            if waiting.len() >= WINDOW {
                acks(&mut ws, &mut waiting, &mut seqs, &mut latency);
            }
        }
        acks(&mut ws, &mut waiting, &mut seqs, &mut latency);
        let _ = ws.close(None);
        let by_seq: HashMap<u64, usize> =
            seqs.iter().map(|(segment, seq)| (*seq, segment[1..].parse::<usize>().unwrap())).collect();
        ids.push((id, by_seq));
    }
    let replay = started.elapsed().as_secs_f64();
    // Searchable: every indexer caught up.
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let status: Value = http.get(format!("{base}/api/v1/status")).send().unwrap().json().unwrap();
        let indexers = status["indexers"].as_array().cloned().unwrap_or_default();
        if !indexers.is_empty() && indexers.iter().all(|i| i["lag"].as_u64() == Some(0)) {
            break;
        }
        assert!(Instant::now() < deadline, "the indexers did not catch up: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let searchable = started.elapsed().as_secs_f64();
    latency.sort_by(f64::total_cmp);
    println!(
        "replayed {} meetings, {turns_sent} finals over WebSocket in {replay:.1} s ({:.0} finals/s), searchable after {searchable:.1} s",
        meetings.len(),
        turns_sent as f64 / replay
    );
    println!(
        "acknowledgement latency (window of {WINDOW}): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
        percentile(&latency, 0.5),
        percentile(&latency, 0.95),
        percentile(&latency, 0.99)
    );

    println!(
        "{:<10} {:>7} {:>7} {:>18} {:>10} {:>10}",
        "mode", "hit@5", "hit@10", "turns in top 5", "p50 ms", "p95 ms"
    );
    for (mode, anchor) in [("keyword", 0.690), ("semantic", 0.791), ("hybrid", 0.806)] {
        let (mut queries, mut hit5, mut hit10, mut turns5) = (0usize, 0usize, 0usize, 0usize);
        let mut took = Vec::new();
        for (meeting, (id, by_seq)) in meetings.iter().zip(&ids) {
            for q in meeting["specific_query_list"].as_array().into_iter().flatten() {
                let spans: Vec<(usize, usize)> = q["relevant_text_span"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| {
                        let a = s[0].as_str()?.parse().ok()?;
                        let b = s[1].as_str()?.parse().ok()?;
                        Some((a, b))
                    })
                    .collect();
                if spans.is_empty() {
                    continue;
                }
                queries += 1;
                let t = Instant::now();
                let found = post(
                    &http,
                    &format!("{base}/api/v1/search"),
                    &json!({"query": q["query"], "mode": mode, "top_k": 10, "sources": ["meetings"],
                            "filters": {"meeting_id": id}}),
                );
                took.push(t.elapsed().as_secs_f64() * 1000.0);
                let results = found["results"].as_array().cloned().unwrap_or_default();
                let covered: Vec<(usize, usize)> = results
                    .iter()
                    .filter_map(|r| {
                        let first = by_seq.get(&r["seq_start"].as_u64()?)?;
                        let last = by_seq.get(&r["seq_end"].as_u64()?)?;
                        Some((*first, *last))
                    })
                    .collect();
                let hits = |(first, last): &(usize, usize)| spans.iter().any(|(a, b)| first <= b && a <= last);
                hit5 += usize::from(covered.iter().take(5).any(hits));
                hit10 += usize::from(covered.iter().take(10).any(hits));
                turns5 += covered.iter().take(5).map(|(a, b)| b - a + 1).sum::<usize>();
            }
        }
        took.sort_by(f64::total_cmp);
        let n = queries as f64;
        println!(
            "{mode:<10} {:>7.3} {:>7.3} {:>18.1} {:>10.1} {:>10.1}   ({queries} queries; baseline hit@5 {anchor:.3}, ratio {:.2}x)",
            hit5 as f64 / n,
            hit10 as f64 / n,
            turns5 as f64 / n,
            percentile(&took, 0.5),
            percentile(&took, 0.95),
            (hit5 as f64 / n) / anchor
        );
    }
    println!("goal: hybrid hit@5 >= 0.90");
    let _ = child.kill();
    let _ = child.wait();
}
