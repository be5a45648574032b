//! Meeting search and decisions on QMSum's 20 product meetings (AMI): each meeting is replayed as
//! a live stream over `GET /api/v1/meetings/{id}/stream` of a real `nexus serve` (every turn a
//! final segment, its speakers as participants), then each of the 129 specific queries with gold
//! spans is asked through `POST /api/v1/search` (`sources: ["meetings"]`, the meeting's id as
//! filter) in keyword, semantic and hybrid modes. A query hits@k when one of its top-k results
//! overlaps one of its gold turn spans. Printed beside the dataset's baselines over single turns
//! (BM25 0.690, MiniLM 0.791, their fusion 0.806 at @5); Nexus's results are windows of
//! consecutive turns, so the mean number of turns in the top 5 is printed too. Also: the stream's
//! acknowledgement latency.
//!
//! Then every meeting is ended (`?wait=true`: its final insights made) and, for the queries that
//! ask what was decided, agreed or concluded, the bench counts how often an extracted decision
//! comes from a turn inside the query's gold span, how many decisions a meeting has, and which
//! share of them lie inside a decision query's span; beside a keyword-only baseline that takes
//! every turn saying "decide", "decided", "decision", "agree" or "agreed" as a decision.
//!
//! Ranking and the rules may be tuned on meetings 1-10 (file order) only; every figure is printed
//! for those, for the held-out meetings 11-20 and for all. `--explore` also prints fusion weight
//! (the context ranking's among them: 0 is the search without it) and query variants, and hit@5
//! after collapsing overlapping results client-side.
//!
//! ```sh
//! cargo bench --bench qmsum -- [--data PATH/test_product.jsonl] [--bin PATH] [--explore] [--reuse DIR]
//! ```
//! `--reuse DIR` keeps the replayed meetings in DIR; a later run with the same DIR skips the
//! replay (its ingest figures are then not printed) and goes straight to the queries.
//! The data is read from `../shared/datasets/qmsum`.

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

/// Meetings `0..TUNE` (in file order) are the half ranking and extraction may be tuned on; the
/// rest are reported apart as held out.
const TUNE: usize = 10;

/// A specific query with gold spans: its meeting (index in the file), its text, its spans.
type Query = (usize, String, Vec<(usize, usize)>);

/// The keyword-only decision baseline: a turn holding one of these words is a decision.
const BASELINE_DECISION_WORDS: &[&str] = &["decide", "decided", "decision", "agree", "agreed"];

/// Whether a query asks what was decided, agreed or concluded ("disagree" is not an agreement).
fn asks_for_decision(query: &str) -> bool {
    query.to_lowercase().split(|c: char| !c.is_alphanumeric()).any(|w| {
        w.starts_with("decid")
            || w.starts_with("decision")
            || w.starts_with("agree")
            || w.starts_with("conclu")
            || w.starts_with("settle")
            || w == "final"
    })
}

/// Words that describe the request rather than what was said (explored with `--explore`).
const META: &[&str] = &[
    "summarize",
    "summarise",
    "summary",
    "discuss",
    "discussed",
    "discussing",
    "discussion",
    "talk",
    "talked",
    "talking",
    "say",
    "said",
    "think",
    "thought",
    "what",
    "why",
    "how",
    "did",
    "does",
    "do",
    "the",
    "group",
    "team",
    "when",
    "about",
    "of",
    "in",
    "on",
    "was",
    "were",
    "is",
    "are",
];

fn without_meta(query: &str) -> String {
    let kept: Vec<&str> = query
        .split_whitespace()
        .filter(|w| !META.contains(&w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase().as_str()))
        .collect();
    if kept.is_empty() { query.to_string() } else { kept.join(" ") }
}

fn spans_of(q: &Value) -> Vec<(usize, usize)> {
    q["relevant_text_span"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let a = s[0].as_str()?.parse().ok()?;
            let b = s[1].as_str()?.parse().ok()?;
            Some((a, b))
        })
        .collect()
}

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
    let mut reuse: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--data" => data = PathBuf::from(args.next().unwrap()),
            "--bin" => bin = PathBuf::from(args.next().unwrap()),
            "--reuse" => reuse = Some(PathBuf::from(args.next().expect("--reuse DIR"))),
            "--bench" | "--explore" => {}
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
    let data_dir = reuse.as_ref().map_or_else(|| dir.path().join("data"), |d| d.join("data"));
    // Per meeting: its id, and each seq's turn index (kept beside a reused data directory).
    let kept = reuse.as_ref().map(|d| d.join("meetings.json"));
    let replayed: Option<Vec<(String, HashMap<u64, usize>)>> = kept
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|t| serde_json::from_str(&t).expect("the kept meetings.json"));
    let (mut child, base) = common::spawn_nexus(&bin, &data_dir, &config, &env);
    let addr = base.trim_start_matches("http://").to_string();
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(300)).build().unwrap();

    // Replay: each meeting over its stream, WINDOW segments at a time.
    let started = Instant::now();
    let mut latency = Vec::new();
    let mut ids = Vec::new(); // per meeting: its id, and each seq's turn index
    let mut turns_sent = 0usize;
    let to_replay = if replayed.is_some() { &meetings[..0] } else { &meetings[..] };
    for (m, meeting) in to_replay.iter().enumerate() {
        let transcript = meeting["meeting_transcripts"].as_array().unwrap();
        let speakers: BTreeSet<&str> = transcript.iter().filter_map(|t| t["speaker"].as_str()).collect();
        let participants: Vec<Value> = speakers.iter().map(|s| json!({"name": s})).collect();
        let created = common::post(
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
    if let Some(previous) = replayed {
        println!("reusing the meetings replayed before in {}", data_dir.display());
        ids = previous;
    } else if let Some(path) = &kept {
        std::fs::write(path, serde_json::to_string(&ids).unwrap()).unwrap();
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
    if !latency.is_empty() {
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
    }

    let explore = std::env::args().any(|a| a == "--explore");
    let ask = |query: &str, m: usize, mode: &str, fusion: &Value, top_k: usize| -> (Vec<(usize, usize)>, f64) {
        let (id, by_seq) = &ids[m];
        let mut body = json!({"query": query, "mode": mode, "top_k": top_k, "sources": ["meetings"],
                              "filters": {"meeting_id": id}});
        if !fusion.is_null() {
            body["fusion"] = fusion.clone();
        }
        let t = Instant::now();
        let found = common::post(&http, &format!("{base}/api/v1/search"), &body);
        let took = t.elapsed().as_secs_f64() * 1000.0;
        let covered = found["results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let first = by_seq.get(&r["seq_start"].as_u64()?)?;
                let last = by_seq.get(&r["seq_end"].as_u64()?)?;
                Some((*first, *last))
            })
            .collect();
        (covered, took)
    };
    // Every specific query with gold spans: (meeting, text, spans).
    let queries: Vec<Query> = meetings
        .iter()
        .enumerate()
        .flat_map(|(m, meeting)| {
            meeting["specific_query_list"].as_array().cloned().unwrap_or_default().into_iter().filter_map(move |q| {
                let spans = spans_of(&q);
                (!spans.is_empty()).then(|| (m, q["query"].as_str().unwrap_or_default().to_string(), spans))
            })
        })
        .collect();

    println!("hit@k over {} queries, split by meeting: tune = meetings 1-{TUNE}, held out = the rest", queries.len());
    println!(
        "{:<24} {:>23} {:>23} {:>15} {:>8} {:>8}",
        "mode", "hit@5 tune/held/all", "hit@10 tune/held/all", "turns in top 5", "p50 ms", "p95 ms"
    );
    let mut variants: Vec<(String, &str, Value, bool)> = vec![
        ("keyword".into(), "keyword", Value::Null, false),
        ("semantic".into(), "semantic", Value::Null, false),
        ("hybrid".into(), "hybrid", Value::Null, false),
    ];
    if explore {
        for (kw, sem, k) in
            [(0.5, 1.0, 60.0), (0.75, 1.0, 60.0), (1.0, 0.75, 60.0), (1.0, 1.0, 20.0), (1.0, 1.0, 120.0)]
        {
            variants.push((
                format!("hybrid k{kw} s{sem} rrf{k}"),
                "hybrid",
                json!({"keyword_weight": kw, "semantic_weight": sem, "rrf_k": k}),
                false,
            ));
        }
        for weight in [0.0, 0.5, 2.0] {
            let name = format!("hybrid context {weight}{}", if weight == 0.0 { " (off)" } else { "" });
            variants.push((name, "hybrid", json!({"context_weight": weight}), false));
        }
        for mode in ["keyword", "semantic", "hybrid"] {
            variants.push((format!("{mode} -meta"), mode, Value::Null, true));
        }
    }
    for (name, mode, fusion, strip) in &variants {
        // Per split: queries, hit@5, hit@10, and the same after collapsing overlapping results.
        let mut tally = [[0usize; 5]; 2];
        let mut took = Vec::new();
        for (m, query, spans) in &queries {
            let text = if *strip { without_meta(query) } else { query.clone() };
            let (covered, ms) = ask(&text, *m, mode, fusion, if explore { 30 } else { 10 });
            took.push(ms);
            let hits = |(first, last): &(usize, usize)| spans.iter().any(|(a, b)| first <= b && a <= last);
            let t = &mut tally[usize::from(*m >= TUNE)];
            t[0] += 1;
            t[1] += usize::from(covered.iter().take(5).any(hits));
            t[2] += usize::from(covered.iter().take(10).any(hits));
            t[3] += covered.iter().take(5).map(|(a, b)| b - a + 1).sum::<usize>();
            let mut kept: Vec<(usize, usize)> = Vec::new();
            for c in &covered {
                if !kept.iter().any(|k| c.0 <= k.1 && k.0 <= c.1) {
                    kept.push(*c);
                }
            }
            t[4] += usize::from(kept.iter().take(5).any(hits));
        }
        took.sort_by(f64::total_cmp);
        let rate = |i: usize| {
            let (a, b) = (tally[0][i] as f64, tally[1][i] as f64);
            let (na, nb) = (tally[0][0] as f64, tally[1][0] as f64);
            format!("{:.3}/{:.3}/{:.3}", a / na, b / nb, (a + b) / (na + nb))
        };
        let all = (tally[0][0] + tally[1][0]) as f64;
        println!(
            "{name:<24} {:>23} {:>23} {:>15.1} {:>8.1} {:>8.1}{}",
            rate(1),
            rate(2),
            (tally[0][3] + tally[1][3]) as f64 / all,
            percentile(&took, 0.5),
            percentile(&took, 0.95),
            if explore { format!("   collapsed hit@5 {}", rate(4)) } else { String::new() }
        );
    }
    println!("dataset baselines over single turns, hit@5: BM25 0.690, MiniLM 0.791, their fusion 0.806");
    println!("goal: hybrid hit@5 >= 0.90");

    // Decisions: each meeting ended (its final insights made), then for every query asking what
    // was decided or agreed, whether a decision lies inside one of its gold spans.
    let mut found: Vec<BTreeSet<usize>> = Vec::new(); // per meeting: the turns decisions came from
    let mut decisions: Vec<usize> = Vec::new(); // per meeting: how many decisions
    for (id, by_seq) in &ids {
        common::post(&http, &format!("{base}/api/v1/meetings/{id}/end?wait=true"), &json!({}));
        let insights: Value =
            http.get(format!("{base}/api/v1/meetings/{id}/insights?kind=decision")).send().unwrap().json().unwrap();
        let list = insights["insights"].as_array().cloned().unwrap_or_default();
        decisions.push(list.len());
        found.push(
            list.iter()
                .flat_map(|i| i["seqs"].as_array().cloned().unwrap_or_default())
                .filter_map(|s| by_seq.get(&s.as_u64()?).copied())
                .collect(),
        );
    }
    // The keyword-only baseline: every turn holding a decision word is a decision.
    let baseline: Vec<BTreeSet<usize>> = meetings
        .iter()
        .map(|meeting| {
            let transcript = meeting["meeting_transcripts"].as_array().cloned().unwrap_or_default();
            (0..transcript.len())
                .filter(|i| {
                    clean(transcript[*i]["content"].as_str().unwrap_or_default())
                        .to_lowercase()
                        .split(|c: char| !c.is_alphanumeric())
                        .any(|w| BASELINE_DECISION_WORDS.contains(&w))
                })
                .collect()
        })
        .collect();
    let asked: Vec<&Query> = queries.iter().filter(|(_, q, _)| asks_for_decision(q)).collect();
    println!("decision queries ({} of {}: asking what was decided, agreed or concluded)", asked.len(), queries.len());
    println!(
        "{:<26} {:>20} {:>22} {:>26}",
        "extractor", "hit tune/held/all", "decisions per meeting", "inside a decision span"
    );
    let decision_turns: Vec<Vec<(usize, usize)>> = (0..meetings.len())
        .map(|m| asked.iter().filter(|(qm, _, _)| *qm == m).flat_map(|(_, _, s)| s.clone()).collect())
        .collect();
    let decision_counts: Vec<usize> = baseline.iter().map(BTreeSet::len).collect();
    for (name, turns, counts) in
        [("rules (insights)", &found, &decisions), ("baseline: decision words", &baseline, &decision_counts)]
    {
        let (mut q, mut hit) = ([0usize; 2], [0usize; 2]);
        for (m, _, spans) in &asked {
            q[usize::from(*m >= TUNE)] += 1;
            hit[usize::from(*m >= TUNE)] +=
                usize::from(turns[*m].iter().any(|t| spans.iter().any(|(a, b)| a <= t && t <= b)));
        }
        let (mut inside, mut total) = ([0usize; 2], [0usize; 2]);
        for (m, spans) in decision_turns.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
            total[usize::from(m >= TUNE)] += turns[m].len();
            inside[usize::from(m >= TUNE)] +=
                turns[m].iter().filter(|t| spans.iter().any(|(a, b)| a <= *t && *t <= b)).count();
        }
        let split = |a: [usize; 2], b: [usize; 2]| {
            let r = |x: usize, y: usize| x as f64 / y.max(1) as f64;
            format!("{:.2}/{:.2}/{:.2}", r(a[0], b[0]), r(a[1], b[1]), r(a[0] + a[1], b[0] + b[1]))
        };
        let per = |range: std::ops::Range<usize>| {
            let n = range.len().max(1) as f64;
            counts[range].iter().sum::<usize>() as f64 / n
        };
        let n = meetings.len();
        println!(
            "{name:<26} {:>20} {:>22} {:>26}",
            split(hit, q),
            format!("{:.1}/{:.1}/{:.1}", per(0..TUNE.min(n)), per(TUNE.min(n)..n), per(0..n)),
            split(inside, total)
        );
    }
    // For scale: the share of all turns (of meetings with a decision query) inside their spans.
    let (mut inside, mut total) = (0usize, 0usize);
    for (m, spans) in decision_turns.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
        let len = meetings[m]["meeting_transcripts"].as_array().map_or(0, Vec::len);
        total += len;
        inside += (0..len).filter(|t| spans.iter().any(|(a, b)| a <= t && t <= b)).count();
    }
    println!("(a turn drawn at random lies inside a decision span {:.2} of the time)", inside as f64 / total as f64);
    let _ = child.kill();
    let _ = child.wait();
}
