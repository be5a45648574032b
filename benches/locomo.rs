//! Conversational memory retrieval on LoCoMo: every turn of the conversations goes in through the
//! Mem0-compatible add route of a real `nexus serve` (`infer=false`, the speaker as the message's
//! name, the session as the run, its date as the event time), then every question of categories
//! 1-4 is asked over HTTP in keyword, semantic and hybrid modes. Prints evidence recall@5 and
//! @10 per category beside the dataset's published baselines (BM25 0.526, dense 0.508, their
//! rank fusion 0.567 at @10), and search latency p50/p95 beside the Mem0 paper's (0.148 s /
//! 0.200 s).
//!
//! ```sh
//! cargo bench --bench locomo -- [--data PATH/locomo-dev5.json] [--api mem0|nexus]
//!     [--env KEY=VALUE]... [--only TEXT]... [--reuse DIR] [--context-turns N] [--bin PATH] [--user-only]
//!     [--variant LABEL=JSON]...
//! ```
//! `--user-only` adds every turn with only its `user_id`, as many chat apps do (no `run_id`), one
//! conversation's sessions in order: Nexus then finds the sessions itself (threads, see
//! `memory.thread_gap_secs`).
//! `--env` passes a setting to the server (`NEXUS__MEMORY__SPEAKER_WEIGHT=0`: an ablation; with
//! a reranker you run, `NEXUS__RERANK__PROVIDER=tei` and `NEXUS__RERANK__URL=http://HOST:PORT`
//! rerank every retriever's searches, and `--variant 'plain={"rerank":false}'` adds one without);
//! `--only` runs the retrievers whose label contains TEXT; `--variant` adds a retriever whose
//! search body takes JSON's fields (`'wide={"mode":"hybrid","top_k":10}'`); `--reuse DIR` keeps the ingested data
//! directory in DIR and, when DIR already holds one, skips ingestion (settings that change how
//! turns are stored, such as `memory.context_turns`, need a fresh DIR); `--bin` runs another
//! `nexus` binary than the one cargo built. Each retriever also prints recall@10, overall and for
//! category 1, on the first three conversations (the half ranking may be tuned on) and on the
//! other two (held out).
//! The data is evaluation-only (CC BY-NC 4.0) and is read from `../shared/datasets/locomo`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use serde_json::{Value, json};

mod common;

struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(bin: &std::path::Path, env: &[(String, String)], data_dir: Option<&std::path::Path>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("empty.toml");
    std::fs::write(&config, "").unwrap();
    let data = data_dir.map_or_else(|| dir.path().join("data"), |d| d.join("data"));
    let (child, base) = common::spawn_nexus(bin, &data, &config, env);
    Server { child, base, _dir: dir }
}

/// "1:56 pm on 8 May, 2023" as Unix seconds.
/// Ranking may be tuned on the first `TUNE` conversations (file order) only; the rest are held
/// out, and every variant prints both halves.
const TUNE: usize = 3;

fn session_time(text: &str) -> Option<i64> {
    NaiveDateTime::parse_from_str(&text.replace(" on ", " "), "%l:%M %p %d %B, %Y")
        .or_else(|_| NaiveDateTime::parse_from_str(&text.replace(" on ", " "), "%I:%M %p %d %B, %Y"))
        .ok()
        .map(|t| t.and_utc().timestamp())
}

struct Turn {
    dia_id: String,
    speaker: String,
    text: String,
    session: usize,
    time: Option<i64>,
}

fn turns(conversation: &Value) -> Vec<Turn> {
    let c = conversation.as_object().unwrap();
    let mut out = Vec::new();
    for session in 1.. {
        let Some(list) = c.get(&format!("session_{session}")).and_then(Value::as_array) else {
            if session > 60 {
                break;
            }
            continue;
        };
        let time = c.get(&format!("session_{session}_date_time")).and_then(Value::as_str).and_then(session_time);
        for t in list {
            let mut text = t["text"].as_str().unwrap_or_default().to_string();
            // A shared photo is part of what was said: its caption travels with the turn.
            if let Some(caption) = t.get("blip_caption").and_then(Value::as_str) {
                text.push_str(&format!(" [shares a photo: {caption}]"));
            }
            out.push(Turn {
                dia_id: t["dia_id"].as_str().unwrap().to_string(),
                speaker: t["speaker"].as_str().unwrap().to_string(),
                text,
                session,
                time,
            });
        }
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let mut data = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/datasets/locomo/locomo-dev5.json"));
    let mut api = "mem0".to_string();
    let mut env: Vec<(String, String)> = Vec::new();
    let mut only: Vec<String> = Vec::new();
    let mut reuse: Option<PathBuf> = None;
    let mut bin = PathBuf::from(env!("CARGO_BIN_EXE_nexus"));
    let mut user_only = false;
    let mut extra_variants: Vec<(String, Value)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--data" => data = args.next().expect("--data PATH").into(),
            "--api" => api = args.next().expect("--api mem0|nexus"),
            "--context-turns" => {
                env.push(("NEXUS__MEMORY__CONTEXT_TURNS".into(), args.next().expect("--context-turns N")))
            }
            "--env" => {
                let kv = args.next().expect("--env KEY=VALUE");
                let (k, v) = kv.split_once('=').expect("--env KEY=VALUE");
                env.push((k.into(), v.into()));
            }
            "--only" => only.push(args.next().expect("--only TEXT")),
            "--reuse" => reuse = Some(args.next().expect("--reuse DIR").into()),
            "--bin" => bin = args.next().expect("--bin PATH").into(),
            "--user-only" => user_only = true,
            "--variant" => {
                let v = args.next().expect("--variant LABEL=JSON");
                let (label, body) = v.split_once('=').expect("--variant LABEL=JSON");
                extra_variants.push((label.into(), serde_json::from_str(body).expect("--variant's JSON")));
            }
            _ => {}
        }
    }
    let samples: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&data).unwrap_or_else(|e| panic!("{}: {e}", data.display())))
            .unwrap();
    if let Some(dir) = &reuse {
        std::fs::create_dir_all(dir).unwrap();
    }
    let ingested = reuse.as_ref().map(|d| d.join("ingested.json"));
    let server = start_server(&bin, &env, reuse.as_deref());
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let add_path = if api == "mem0" { "/v1/memories/" } else { "/api/v1/memories" };
    println!(
        "LoCoMo: {} conversations from {}; adds through {add_path}{}",
        samples.len(),
        data.display(),
        if user_only { ", user_id only (no run_id)" } else { "" }
    );

    // Ingest: sessions (runs) in parallel, each session's turns in order, as a chat app would.
    let started = Instant::now();
    let previous: Option<HashMap<String, Vec<String>>> = ingested
        .as_ref()
        .filter(|p| p.exists())
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap());
    let mut sessions: Vec<(String, Vec<Turn>)> = Vec::new();
    for sample in &samples {
        let user = sample["sample_id"].as_str().unwrap().to_string();
        let mut by_session: Vec<Vec<Turn>> = Vec::new();
        for turn in turns(&sample["conversation"]) {
            if by_session.last().is_none_or(|s: &Vec<Turn>| s[0].session != turn.session) {
                by_session.push(Vec::new());
            }
            by_session.last_mut().unwrap().push(turn);
        }
        if user_only {
            // Without runs, a conversation's turns go in in order, one conversation per worker.
            sessions.push((user.clone(), by_session.into_iter().flatten().collect()));
        } else {
            sessions.extend(by_session.into_iter().map(|s| (user.clone(), s)));
        }
    }
    let untimed = sessions.iter().filter(|(_, s)| s[0].time.is_none()).count();
    assert_eq!(untimed, 0, "every session date parses");
    if previous.is_some() {
        sessions.clear();
    }
    let queue = std::sync::Mutex::new(sessions);
    let mut memory_turns: HashMap<String, Vec<String>> = HashMap::new(); // memory id -> dia ids
    let mut total_turns = 0;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let (http, base, queue) = (http.clone(), server.base.clone(), &queue);
                scope.spawn(move || {
                    let mut ids: Vec<(String, String)> = Vec::new();
                    loop {
                        let Some((user, session)) = queue.lock().unwrap().pop() else { break };
                        for turn in session {
                            let mut body = json!({
                                "messages": [{"role": "user", "content": turn.text, "name": turn.speaker}],
                                "user_id": user,
                                "infer": false,
                                "output_format": "v1.1",
                                "timestamp": turn.time,
                                "metadata": {"speaker": turn.speaker, "session": turn.session, "dia_id": turn.dia_id},
                            });
                            if !user_only {
                                body["run_id"] = json!(format!("{user}-session-{}", turn.session));
                            }
                            let response = http.post(format!("{base}{add_path}")).json(&body).send().expect("add");
                            let status = response.status();
                            let v: Value = response.json().expect("add answer");
                            assert!(status.is_success(), "add {}: {status} {v}", turn.dia_id);
                            let id = v["results"][0]["id"].as_str().unwrap_or_else(|| panic!("{v}")).to_string();
                            ids.push((id, turn.dia_id));
                        }
                    }
                    ids
                })
            })
            .collect();
        for h in handles {
            for (id, dia) in h.join().unwrap() {
                memory_turns.entry(id).or_default().push(dia);
                total_turns += 1;
            }
        }
    });
    if let Some(previous) = previous {
        total_turns = previous.values().map(Vec::len).sum();
        memory_turns = previous;
        println!("reusing the data ingested before in {}", reuse.as_ref().unwrap().display());
    } else if let Some(path) = &ingested {
        std::fs::write(path, serde_json::to_string(&memory_turns).unwrap()).unwrap();
    }
    let ingest_secs = started.elapsed().as_secs_f64();
    println!(
        "ingested {total_turns} turns as {} memories in {ingest_secs:.1} s ({:.1} turns/s)",
        memory_turns.len(),
        total_turns as f64 / ingest_secs
    );

    // Questions of categories 1-4 whose evidence resolves.
    struct Question {
        user: String,
        text: String,
        category: u64,
        evidence: HashSet<String>,
        /// Whether ranking may be tuned on it (its conversation is one of the first [`TUNE`]).
        tune: bool,
    }
    let mut questions = Vec::new();
    for (n, sample) in samples.iter().enumerate() {
        let user = sample["sample_id"].as_str().unwrap().to_string();
        let known: HashSet<String> = turns(&sample["conversation"]).into_iter().map(|t| t.dia_id).collect();
        for qa in sample["qa"].as_array().unwrap() {
            let category = qa["category"].as_u64().unwrap_or(0);
            if !(1..=4).contains(&category) {
                continue;
            }
            let evidence: HashSet<String> = qa["evidence"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .flat_map(|e| e.split(|c: char| c == ';' || c.is_whitespace()).map(str::to_string).collect::<Vec<_>>())
                .filter(|e| known.contains(e))
                .collect();
            if evidence.is_empty() {
                continue;
            }
            questions.push(Question {
                user: user.clone(),
                text: qa["question"].as_str().unwrap().to_string(),
                category,
                evidence,
                tune: n < TUNE,
            });
        }
    }
    println!("{} questions (categories 1-4, evidence resolved)\n", questions.len());

    let baselines: HashMap<&str, [f64; 5]> = HashMap::from([
        ("BM25 (published)", [0.526, 0.225, 0.678, 0.250, 0.600]),
        ("dense MiniLM (published)", [0.508, 0.295, 0.562, 0.305, 0.581]),
        ("RRF of both (published)", [0.567, 0.305, 0.745, 0.233, 0.624]),
    ]);
    println!(
        "{:<28} {:>9} {:>9} | @10 by category: {:>6} {:>6} {:>6} {:>6} | p50 ms  p95 ms",
        "retriever", "recall@5", "recall@10", "cat1", "cat2", "cat3", "cat4"
    );
    let mut hybrid10 = 0.0;
    let mut variants: Vec<(String, Value)> = vec![
        ("Nexus keyword".into(), json!({"mode": "keyword"})),
        ("Nexus semantic".into(), json!({"mode": "semantic"})),
        ("Nexus hybrid".into(), json!({"mode": "hybrid"})),
        ("  hybrid, no neighbours".into(), json!({"mode": "hybrid", "neighbour_weight": 0.0})),
        ("  hybrid, neighbours 0.2".into(), json!({"mode": "hybrid", "neighbour_weight": 0.2})),
        ("  hybrid, semantic weight 1".into(), json!({"mode": "hybrid", "fusion": {"semantic_weight": 1.0}})),
        ("  hybrid, semantic weight 0.5".into(), json!({"mode": "hybrid", "fusion": {"semantic_weight": 0.5}})),
        ("Mem0 route /v2/.../search/".into(), json!({"route": "mem0"})),
    ];
    variants.extend(extra_variants);
    for (label, options) in &variants {
        if !only.is_empty() && !only.iter().any(|o| label.contains(o.as_str())) {
            continue;
        }
        let mut at5 = Vec::new();
        let mut at10 = Vec::new();
        let mut by_cat: HashMap<u64, Vec<f64>> = HashMap::new();
        // (tune, category 1 or not) -> recall@10
        let mut by_split: HashMap<(bool, bool), Vec<f64>> = HashMap::new();
        let mut latencies = Vec::new();
        for q in &questions {
            let mem0 = options.get("route").is_some();
            let (path, body) = if mem0 {
                // As a 1.0.x client searches; threshold 0 so that ranking alone is measured.
                let body = json!({"query": q.text, "filters": {"user_id": q.user}, "top_k": 10, "threshold": 0.0});
                ("/v2/memories/search/", body)
            } else {
                let mut body = json!({"query": q.text, "user_id": q.user, "top_k": 10, "relations": false});
                for (k, v) in options.as_object().unwrap() {
                    body[k] = v.clone();
                }
                ("/api/v1/memories/search", body)
            };
            let t = Instant::now();
            let response = http.post(format!("{}{path}", server.base)).json(&body).send().expect("search");
            let v: Value = response.json().expect("search answer");
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            let list = if mem0 { &v } else { &v["results"] };
            let ranked: Vec<String> = list
                .as_array()
                .unwrap_or_else(|| panic!("{v}"))
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_string())
                .collect();
            let found = |k: usize| {
                let dias: HashSet<&String> =
                    ranked.iter().take(k).flat_map(|id| memory_turns.get(id).into_iter().flatten()).collect();
                q.evidence.iter().filter(|e| dias.contains(e)).count() as f64 / q.evidence.len() as f64
            };
            at5.push(found(5));
            at10.push(found(10));
            by_cat.entry(q.category).or_default().push(found(10));
            by_split.entry((q.tune, q.category == 1)).or_default().push(found(10));
        }
        latencies.sort_by(f64::total_cmp);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let cat = |c: u64| mean(by_cat.get(&c).map(Vec::as_slice).unwrap_or(&[]));
        println!(
            "{:<28} {:>9.3} {:>9.3} | {:>25.3} {:>6.3} {:>6.3} {:>6.3} | {:>6.1} {:>7.1}",
            label,
            mean(&at5),
            mean(&at10),
            cat(1),
            cat(2),
            cat(3),
            cat(4),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.95)
        );
        let split = |tune: bool, cat1: Option<bool>| {
            let values: Vec<f64> = by_split
                .iter()
                .filter(|((t, c), _)| *t == tune && cat1.is_none_or(|want| *c == want))
                .flat_map(|(_, v)| v.iter().copied())
                .collect();
            mean(&values)
        };
        println!(
            "{:<28} recall@10 {:.3} / {:.3}, cat1 {:.3} / {:.3} (conversations 1-{TUNE} / the rest)",
            "",
            split(true, None),
            split(false, None),
            split(true, Some(true)),
            split(false, Some(true)),
        );
        if label == "Nexus hybrid" {
            hybrid10 = mean(&at10);
        }
    }
    for name in ["BM25 (published)", "dense MiniLM (published)", "RRF of both (published)"] {
        let b = baselines[name];
        println!("{:<28} {:>9} {:>9.3} | {:>25.3} {:>6.3} {:>6.3} {:>6.3} |", name, "-", b[0], b[1], b[2], b[3], b[4]);
    }
    println!(
        "{:<28} {:>9} {:>9} | {:>25} {:>6} {:>6} {:>6} | {:>6.1} {:>7.1}",
        "Mem0 search (paper)", "-", "-", "", "", "", "", 148.0, 200.0
    );
    println!(
        "\nhybrid recall@10 {hybrid10:.3}: {:.2}x the published fusion (goal >= 0.67)",
        hybrid10 / baselines["RRF of both (published)"][0]
    );
}
