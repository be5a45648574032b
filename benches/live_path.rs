//! Latency of the live path, without an LLM: a final segment sent over a meeting's stream
//! (`GET /api/v1/meetings/{id}/stream`) of a real `nexus serve`, until (a) it is acknowledged,
//! (b) `POST /api/v1/search` (`sources: ["meetings"]`, the meeting as filter, keyword mode) on a
//! token only that segment holds finds it, polled every few milliseconds, (c) the insight the rule
//! set reads from it (decisions, action items, questions) reaches a subscriber of
//! `GET /api/v1/events?topics=meeting:{id}`, and (d) the `segment` event reaches that subscriber.
//! One clock (this process); each segment is measured from the moment it is sent. Printed beside
//! the anchor: searchable and insights pushed within 200 ms p95.
//!
//! ```sh
//! cargo bench --bench live_path -- [--segments 300] [--every-ms 250] [--bin PATH]
//! ```

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

mod common;

const ANCHOR_MS: f64 = 200.0;
/// How often search is asked again until it finds the segment.
const POLL: Duration = Duration::from_millis(2);
/// A segment not searchable after this long counts as missing.
const GIVE_UP: Duration = Duration::from_secs(10);

type Ws = tungstenite::WebSocket<TcpStream>;

/// What is said, and whether the rule set should read an insight from it.
const LINES: &[(&str, &str, bool)] = &[
    ("Ana", "Let's start with the numbers from the last sprint.", false),
    ("Ben", "The checkout service had two incidents, both during the Tuesday deploy.", false),
    ("Ana", "We decided to freeze deploys on Tuesdays until the pipeline is fixed.", true),
    ("Maria", "I'll write the postmortem for the second incident by Friday.", true),
    ("Dev", "The new caching layer cut the median page load roughly in half.", false),
    ("Ben", "What did the customers say about the new dashboard?", true),
    ("Ana", "Mostly positive, though a few people miss the old export button.", false),
    ("Ana", "Dev, can you bring back the export button before next Wednesday?", true),
    ("Dev", "Sure, that should only take a day or two.", false),
    ("Maria", "We agreed that the beta stays invite-only for another month.", true),
    ("Ben", "Marketing wants a date for the public launch, but I would rather wait for the load test.", false),
    ("Ana", "Let's go with the smaller vendor for the pilot.", true),
    ("Dev", "The contract with them runs for twelve months with an exit clause after three.", false),
    ("Maria", "Ben will update the budget spreadsheet tomorrow.", true),
    ("Ben", "The hiring plan for the platform team is still waiting on finance.", false),
    ("Ana", "We need to fix the flaky login test before the release branch is cut.", true),
    ("Dev", "It fails about once in twenty runs, only on the slower runners.", false),
    ("Maria", "How many support tickets mentioned the slow search last week?", true),
    ("Ben", "Around forty, most of them from the two largest accounts.", false),
    ("Ana", "That is all for today, thanks everyone.", false),
];

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn connect(addr: &str, path: &str) -> Ws {
    let request = format!("ws://{addr}{path}").into_client_request().unwrap();
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let (ws, _) = tungstenite::client(request, stream).unwrap_or_else(|e| panic!("{path}: {e}"));
    ws
}

/// A message, or `None` when the read timed out.
fn read(ws: &mut Ws) -> Option<Value> {
    match ws.read() {
        Ok(Message::Text(text)) => Some(serde_json::from_str(text.as_str()).unwrap()),
        Ok(_) => None,
        Err(tungstenite::Error::Io(e))
            if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
        {
            None
        }
        Err(e) => panic!("the connection failed: {e}"),
    }
}

/// When the subscriber received each seq's `segment` event and first `insight` event.
#[derive(Default)]
struct Arrivals {
    segment: HashMap<u64, Instant>,
    insight: HashMap<u64, (Instant, String)>,
}

fn line(label: &str, ms: &[f64], anchor: Option<f64>) {
    let p95 = percentile(ms, 0.95);
    let ratio = anchor.map(|a| format!("   anchor p95 <= {a} ms: ratio {:.2}x", p95 / a)).unwrap_or_default();
    println!(
        "{label:<34} {:>5} {:>8.1} {:>8.1} {:>8.1} {:>8.1}{ratio}",
        ms.len(),
        percentile(ms, 0.5),
        p95,
        percentile(ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN)
    );
}

fn main() {
    let (mut segments, mut every) = (300usize, 250u64);
    let mut bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_nexus"));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--segments" => segments = value().parse().unwrap(),
            "--every-ms" => every = value().parse().unwrap(),
            "--bin" => bin = value().into(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("empty.toml");
    std::fs::write(&config, "").unwrap();
    let (mut child, base) = common::spawn_nexus(&bin, &dir.path().join("data"), &config, &[]);
    let addr = base.trim_start_matches("http://").to_string();
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();

    let created = common::post(
        &http,
        &format!("{base}/api/v1/meetings"),
        &json!({"title": "Weekly product sync", "status": "live",
                "participants": [{"name": "Ana"}, {"name": "Ben"}, {"name": "Maria"}, {"name": "Dev"}]}),
    );
    let id = created["id"].as_str().unwrap().to_string();

    let arrivals = Arc::new(Mutex::new(Arrivals::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut viewer = connect(&addr, &format!("/api/v1/events?topics=meeting:{id}"));
    let watcher = {
        let (arrivals, stop) = (arrivals.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Some(v) = read(&mut viewer) else { continue };
                let now = Instant::now();
                let mut a = arrivals.lock().unwrap();
                match v["type"].as_str() {
                    Some("segment") => {
                        if let Some(seq) = v["data"]["seq"].as_u64() {
                            a.segment.entry(seq).or_insert(now);
                        }
                    }
                    Some("insight") => {
                        let kind = v["data"]["kind"].as_str().unwrap_or_default().to_string();
                        for seq in v["data"]["seqs"].as_array().into_iter().flatten().filter_map(Value::as_u64) {
                            a.insight.entry(seq).or_insert((now, kind.clone()));
                        }
                    }
                    _ => {}
                }
            }
        })
    };

    let mut streamer = connect(&addr, &format!("/api/v1/meetings/{id}/stream"));
    let (mut ack_ms, mut search_ms) = (Vec::new(), Vec::new());
    let mut sent: Vec<(u64, Instant, bool)> = Vec::new();
    let (mut not_found, mut searches) = (0usize, 0usize);
    let started = Instant::now();
    for n in 0..segments {
        let (speaker, text, insightful) = LINES[n % LINES.len()];
        let token = format!("nx{n}q");
        let segment = json!({"segment_id": format!("s{n}"), "speaker": speaker, "start_ms": n * 5000,
                             "end_ms": n * 5000 + 4500, "text": format!("Ref {token}. {text}"), "is_final": true});
        let t0 = Instant::now();
        streamer.send(Message::text(segment.to_string())).unwrap();
        // (a) the acknowledgement.
        let seq = loop {
            let Some(v) = read(&mut streamer) else {
                assert!(t0.elapsed() < GIVE_UP, "no acknowledgement for s{n}");
                continue;
            };
            match v["type"].as_str() {
                Some("ack") if v["segment_id"] == format!("s{n}") => break v["seq"].as_u64().unwrap(),
                Some("error") => panic!("the stream refused s{n}: {v}"),
                _ => {}
            }
        };
        ack_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        sent.push((seq, t0, insightful));
        // (b) searchable.
        let found = loop {
            let results = common::post(
                &http,
                &format!("{base}/api/v1/search"),
                &json!({"query": token, "mode": "keyword", "top_k": 5, "sources": ["meetings"],
                        "filters": {"meeting_id": id}}),
            );
            searches += 1;
            let hit = results["results"].as_array().into_iter().flatten().any(|r| {
                r["text"].as_str().is_some_and(|t| t.contains(&token))
                    && r["seq_start"].as_u64().is_some_and(|s| s <= seq)
                    && r["seq_end"].as_u64().is_some_and(|e| e >= seq)
            });
            if hit {
                break Some(t0.elapsed());
            }
            if t0.elapsed() > GIVE_UP {
                break None;
            }
            std::thread::sleep(POLL);
        };
        match found {
            Some(d) => search_ms.push(d.as_secs_f64() * 1000.0),
            None => not_found += 1,
        }
        if let Some(rest) = Duration::from_millis(every).checked_sub(t0.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    let streamed = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let _ = streamer.close(None);

    let a = arrivals.lock().unwrap();
    let (mut insight_ms, mut segment_ms, mut gap_ms) = (Vec::new(), Vec::new(), Vec::new());
    let (mut expected_insights, mut missing_insights, mut unexpected_insights, mut missing_segments) = (0, 0, 0, 0);
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for (seq, t0, insightful) in &sent {
        match a.segment.get(seq) {
            Some(at) => segment_ms.push(at.saturating_duration_since(*t0).as_secs_f64() * 1000.0),
            None => missing_segments += 1,
        }
        let got = a.insight.get(seq);
        if *insightful {
            expected_insights += 1;
            match got {
                Some((at, kind)) => {
                    insight_ms.push(at.saturating_duration_since(*t0).as_secs_f64() * 1000.0);
                    if let Some(segment_at) = a.segment.get(seq) {
                        gap_ms.push(at.saturating_duration_since(*segment_at).as_secs_f64() * 1000.0);
                    }
                    *kinds.entry(kind.clone()).or_default() += 1;
                }
                None => missing_insights += 1,
            }
        } else if let Some((_, kind)) = got {
            unexpected_insights += 1;
            *kinds.entry(format!("{kind} (unexpected)")).or_default() += 1;
        }
    }
    for v in [&mut ack_ms, &mut search_ms, &mut insight_ms, &mut segment_ms, &mut gap_ms] {
        v.sort_by(f64::total_cmp);
    }
    let mut kinds: Vec<_> = kinds.into_iter().collect();
    kinds.sort();
    println!(
        "{segments} finals over one meeting's stream, one every {every} ms or slower ({streamed:.1} s); \
         {searches} searches polled every {} ms; no LLM",
        POLL.as_millis()
    );
    println!(
        "{:<34} {:>5} {:>8} {:>8} {:>8} {:>8}",
        "from sending a final to", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"
    );
    line("(a) its acknowledgement", &ack_ms, None);
    line("(b) searchable (keyword)", &search_ms, Some(ANCHOR_MS));
    line("(c) its insight pushed", &insight_ms, Some(ANCHOR_MS));
    line("(d) its segment event pushed", &segment_ms, None);
    line("(c) after (d)", &gap_ms, None);
    println!(
        "not searchable within {} s: {not_found}; insights expected {expected_insights}, missing {missing_insights}, \
         on other segments {unexpected_insights} ({kinds:?}); segment events missing {missing_segments}",
        GIVE_UP.as_secs()
    );
    let _ = child.kill();
    let _ = child.wait();
}
