//! What users see before and after `nexus migrate`: an appliance holding BEIR SciFact as documents,
//! the LoCoMo conversations as memories in two projects (the second through a project key, with
//! history from updates and deletions) and uploaded originals is moved onto the cluster stack.
//! Then every SciFact test query (keyword, semantic and hybrid) and every LoCoMo question is asked
//! of the appliance before the move and of a cluster node after it, with the same keys, and the
//! top-10 lists are compared; so are every user's memory list and every memory's history
//! (deleted ones included), field by field.
//!
//! ```sh
//! cargo bench --bench migrate_parity -- [--target cluster|postgres] [--docs N] [--appliance DIR]
//!                                       [--scifact DIR] [--locomo FILE] [--bin PATH]
//!                                       [--postgres-url URL] [--opensearch-url URL] [--qdrant-url URL]
//!                                       [--bolt-url URL] [--s3-endpoint URL]
//! ```
//! `--target cluster` (default) puts records on Postgres, vectors on Qdrant, text on
//! OpenSearch/Elasticsearch, the graph on a Bolt server and objects on S3; `postgres` puts records
//! and vectors on Postgres with node-local text and graph (see `common/profile.rs`; the servers
//! come from the flags or the `NEXUS_BENCH_*` variables). `--docs N` takes the
//! first N SciFact documents (default: all 5 183). `--appliance DIR` keeps the seeded appliance:
//! a later run finds it and goes straight to the migration. Exits 1 when the migration's own
//! verification fails or a memory list or history differs; search lists are counted and printed
//! (on `cluster`, keyword ranking is another engine's BM25).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::profile::{Profile, ServerFlags, Servers, Setup};

const MASTER: &str = "migrate-parity-master-key-0123456789";
/// The second project, whose conversations go in through a key of its own.
const TEAM: &str = "locomo-b";
/// Conversations `0..IN_DEFAULT` go into the default project, the rest into [`TEAM`].
const IN_DEFAULT: usize = 3;
/// Every n-th memory of a conversation is updated, every m-th deleted.
const UPDATE_EVERY: usize = 40;
const DELETE_EVERY: usize = 55;

struct Args {
    profile: Profile,
    docs: Option<usize>,
    appliance: Option<PathBuf>,
    scifact: PathBuf,
    locomo: PathBuf,
    bin: PathBuf,
    servers: ServerFlags,
}

fn args() -> Args {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets");
    let mut a = Args {
        profile: Profile::Cluster,
        docs: None,
        appliance: None,
        scifact: shared.join("beir-scifact"),
        locomo: shared.join("locomo/locomo-dev5.json"),
        bin: PathBuf::from(env!("CARGO_BIN_EXE_nexus")),
        servers: ServerFlags::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--target" => {
                a.profile = match it.next().expect("--target cluster|postgres").as_str() {
                    "postgres" => Profile::Postgres,
                    _ => Profile::Cluster,
                }
            }
            "--docs" => a.docs = Some(it.next().expect("--docs N").parse().expect("a number")),
            "--appliance" => a.appliance = Some(it.next().expect("--appliance DIR").into()),
            "--scifact" => a.scifact = it.next().expect("--scifact DIR").into(),
            "--locomo" => a.locomo = it.next().expect("--locomo FILE").into(),
            "--bin" => a.bin = it.next().expect("--bin PATH").into(),
            "--bench" => {}
            other if a.servers.parse(other, &mut it) => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(bin: &Path, data_dir: &Path, config: &Path) -> Server {
        let env = [("NEXUS__AUTH__MASTER_KEY".to_string(), MASTER.to_string())];
        let (child, base) = common::spawn_nexus(bin, data_dir, config, &env);
        let server = Server { child, base };
        server.settle();
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Until the node is ready and every indexer has caught up with the change log.
    fn settle(&self) {
        let http = http();
        let deadline = Instant::now() + Duration::from_secs(1800);
        loop {
            assert!(Instant::now() < deadline, "{} did not catch up", self.base);
            let ready = http.get(self.url("/ready")).send().is_ok_and(|r| r.status().is_success());
            let metrics =
                http.get(self.url("/metrics")).bearer_auth(MASTER).send().and_then(|r| r.text()).unwrap_or_default();
            let lags: Vec<f64> = metrics
                .lines()
                .filter(|l| l.starts_with("nexus_indexer_lag"))
                .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
                .collect();
            if ready && !lags.is_empty() && lags.iter().all(|lag| *lag == 0.0) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(600)).build().unwrap()
}

/// How a request authenticates: the master key, or a project key in `X-API-Key`.
#[derive(Clone, Copy)]
enum Auth<'a> {
    Master,
    Key(&'a str),
}

impl Auth<'_> {
    fn on(self, request: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        match self {
            Auth::Master => request.bearer_auth(MASTER),
            Auth::Key(key) => request.header("X-API-Key", key),
        }
    }
}

/// Sends `request`, waiting out rate limits (a project key has one), and returns its JSON.
fn call(request: reqwest::blocking::RequestBuilder, what: &str) -> Value {
    let mut response = request.try_clone().unwrap().send().unwrap_or_else(|e| panic!("{what}: {e}"));
    while response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
        let wait =
            response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).unwrap_or(1);
        std::thread::sleep(Duration::from_secs(wait));
        response = request.try_clone().unwrap().send().unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    let status = response.status();
    let value: Value = response.json().unwrap_or(Value::Null);
    assert!(status.is_success(), "{what}: {status} {value}");
    value
}

/// One LoCoMo conversation's turns as memories to add: (session, speaker, dia id, text).
fn turns(conversation: &Value) -> Vec<(usize, String, String, String)> {
    let c = conversation.as_object().unwrap();
    let mut out = Vec::new();
    for session in 1..=60 {
        let Some(list) = c.get(&format!("session_{session}")).and_then(Value::as_array) else { continue };
        for t in list {
            let mut text = t["text"].as_str().unwrap_or_default().to_string();
            if let Some(caption) = t.get("blip_caption").and_then(Value::as_str) {
                text.push_str(&format!(" [shares a photo: {caption}]"));
            }
            out.push((session, t["speaker"].as_str().unwrap().into(), t["dia_id"].as_str().unwrap().into(), text));
        }
    }
    out
}

/// What the seeding leaves to ask about later.
#[derive(serde::Serialize, serde::Deserialize)]
struct Seeded {
    team_key: String,
    /// Deleted memories (user, id): their histories must survive the move.
    deleted: Vec<(String, String)>,
}

fn seed(server: &Server, corpus: &[Value], conversations: &[Value]) -> Seeded {
    let c = http();
    call(
        Auth::Master.on(c.post(server.url("/api/v1/projects"))).json(&json!({"id": TEAM, "name": "LoCoMo team B"})),
        "create project",
    );
    let key = call(
        Auth::Master
            .on(c.post(server.url("/api/v1/keys")))
            .json(&json!({"name": "agent", "project": TEAM, "scopes": ["read", "write"]})),
        "create key",
    );
    let team_key = key["key"].as_str().unwrap().to_string();

    // SciFact, four clients at a time.
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let c = http();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(doc) = corpus.get(i) else { break };
                    let body = json!({
                        "text": doc["text"].as_str().unwrap_or_default(),
                        "source": format!("{}.txt", doc["_id"].as_str().unwrap()),
                        "title": doc["title"].as_str().unwrap_or_default(),
                        "collection": "scifact",
                    });
                    call(Auth::Master.on(c.post(server.url("/api/v1/documents/text"))).json(&body), "ingest");
                    if i > 0 && i.is_multiple_of(500) {
                        eprintln!("  {i} documents, {:.0} s", started.elapsed().as_secs_f64());
                    }
                }
            });
        }
    });
    eprintln!("SciFact: {} documents in {:.0} s", corpus.len(), started.elapsed().as_secs_f64());

    // LoCoMo: a conversation per client, its turns in order; then its history.
    let started = Instant::now();
    let deleted = Mutex::new(Vec::new());
    let team_key_ref = team_key.as_str();
    std::thread::scope(|s| {
        for (n, conversation) in conversations.iter().enumerate() {
            let deleted = &deleted;
            s.spawn(move || {
                let c = http();
                let auth = if n < IN_DEFAULT { Auth::Master } else { Auth::Key(team_key_ref) };
                let user = conversation["sample_id"].as_str().unwrap();
                let mut ids = Vec::new();
                for (session, speaker, dia, text) in turns(&conversation["conversation"]) {
                    let body = json!({
                        "messages": [{"role": "user", "content": text, "name": speaker}],
                        "user_id": user,
                        "run_id": format!("{user}-session-{session}"),
                        "infer": false,
                        "metadata": {"speaker": speaker, "session": session, "dia_id": dia},
                    });
                    let added = call(auth.on(c.post(server.url("/api/v1/memories"))).json(&body), "add");
                    ids.push(added["results"][0]["id"].as_str().unwrap().to_string());
                }
                for (i, id) in ids.iter().enumerate() {
                    if i % DELETE_EVERY == DELETE_EVERY - 1 {
                        call(auth.on(c.delete(server.url(&format!("/api/v1/memories/{id}")))), "delete");
                        deleted.lock().unwrap().push((user.to_string(), id.clone()));
                    } else if i % UPDATE_EVERY == UPDATE_EVERY - 1 {
                        let text = format!("{user} corrected this turn (number {i})");
                        call(
                            auth.on(c.put(server.url(&format!("/api/v1/memories/{id}")))).json(&json!({"text": text})),
                            "update",
                        );
                    }
                }
            });
        }
    });
    eprintln!("LoCoMo: {} conversations in {:.0} s", conversations.len(), started.elapsed().as_secs_f64());

    // Originals: files of a few sizes, one in the team's project.
    for i in 0..12usize {
        let bytes: Vec<u8> = (0..(i * 37_000 + 100)).map(|b| (b * 31 + i) as u8).collect();
        let auth = if i % 4 == 3 { Auth::Key(team_key_ref) } else { Auth::Master };
        call(auth.on(c.put(server.url(&format!("/api/v1/objects/originals/upload-{i}.bin")))).body(bytes), "upload");
    }
    let mut deleted = deleted.into_inner().unwrap();
    deleted.sort();
    Seeded { team_key, deleted }
}

/// Everything compared, as one side answers it.
#[derive(Default)]
struct Answers {
    /// (set, query) -> top-10 ids, per set: `scifact keyword`, ..., `locomo`.
    searches: HashMap<String, Vec<(String, Vec<String>)>>,
    /// user -> the memory list, each memory as JSON.
    lists: Vec<(String, Vec<Value>)>,
    /// memory id -> its history as JSON.
    histories: Vec<(String, Value)>,
    ms: HashMap<String, Vec<f64>>,
}

struct Question {
    user: String,
    conversation: usize,
    text: String,
}

fn ask(
    server: &Server,
    seeded: &Seeded,
    scifact: &[(String, String)],
    questions: &[Question],
    users: &[(String, usize)],
) -> Answers {
    let c = http();
    let mut answers = Answers::default();
    let auth_of = |conversation: usize| {
        if conversation < IN_DEFAULT { Auth::Master } else { Auth::Key(&seeded.team_key) }
    };
    for mode in ["keyword", "semantic", "hybrid"] {
        let set = format!("scifact {mode}");
        for (_, text) in scifact {
            let t = Instant::now();
            let hits = call(
                Auth::Master
                    .on(c.post(server.url("/api/v1/search")))
                    .json(&json!({"query": text, "mode": mode, "top_k": 10})),
                "search",
            );
            answers.ms.entry(set.clone()).or_default().push(t.elapsed().as_secs_f64() * 1000.0);
            let ids = hits["results"].as_array().unwrap().iter().map(|h| h["chunk_id"].as_str().unwrap().to_string());
            answers.searches.entry(set.clone()).or_default().push((text.clone(), ids.collect()));
        }
    }
    for q in questions {
        let t = Instant::now();
        let hits = call(
            auth_of(q.conversation)
                .on(c.post(server.url("/api/v1/memories/search")))
                .json(&json!({"query": q.text, "user_id": q.user, "top_k": 10})),
            "memory search",
        );
        answers.ms.entry("locomo".into()).or_default().push(t.elapsed().as_secs_f64() * 1000.0);
        let ids = hits["results"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap().to_string());
        answers.searches.entry("locomo".into()).or_default().push((format!("{}: {}", q.user, q.text), ids.collect()));
    }
    for (user, conversation) in users {
        let auth = auth_of(*conversation);
        let mut list = Vec::new();
        loop {
            let page =
                call(
                    auth.on(
                        c.get(server.url(&format!("/api/v1/memories?user_id={user}&limit=1000&offset={}", list.len())))
                    ),
                    "list",
                );
            let memories = page["memories"].as_array().unwrap();
            list.extend(memories.iter().cloned());
            if memories.is_empty() || list.len() as u64 >= page["total"].as_u64().unwrap() {
                break;
            }
        }
        let ids: Vec<String> = list.iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
        let deleted = seeded.deleted.iter().filter(|(u, _)| u == user).map(|(_, id)| id.clone());
        for id in ids.into_iter().chain(deleted) {
            let history = call(auth.on(c.get(server.url(&format!("/api/v1/memories/{id}/history")))), "history");
            answers.histories.push((id, history));
        }
        answers.lists.push((user.clone(), list));
    }
    answers
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(((sorted.len().max(1) - 1) as f64 * p).round() as usize).copied().unwrap_or(0.0)
}

fn main() {
    let mut args = args();
    let mut corpus = common::read_jsonl(&args.scifact.join("corpus.jsonl"));
    if let Some(n) = args.docs {
        corpus.truncate(n);
    }
    let queries: HashMap<String, String> = common::read_jsonl(&args.scifact.join("queries.jsonl"))
        .into_iter()
        .map(|q| (q["_id"].as_str().unwrap().to_string(), q["text"].as_str().unwrap().to_string()))
        .collect();
    let mut test: Vec<String> = std::fs::read_to_string(args.scifact.join("qrels/test.tsv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    test.sort();
    test.dedup();
    let scifact: Vec<(String, String)> = test.iter().map(|id| (id.clone(), queries[id].clone())).collect();
    let conversations: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&args.locomo).unwrap()).expect("the LoCoMo file");
    let users: Vec<(String, usize)> =
        conversations.iter().enumerate().map(|(n, c)| (c["sample_id"].as_str().unwrap().to_string(), n)).collect();
    let questions: Vec<Question> = conversations
        .iter()
        .enumerate()
        .flat_map(|(n, c)| {
            let user = c["sample_id"].as_str().unwrap().to_string();
            c["qa"].as_array().unwrap().iter().map(move |q| Question {
                user: user.clone(),
                conversation: n,
                text: q["question"].as_str().unwrap_or_default().to_string(),
            })
        })
        .filter(|q| !q.text.is_empty())
        .collect();

    let servers = Servers::for_profiles(&[args.profile], std::mem::take(&mut args.servers));
    let tmp = tempfile::tempdir().unwrap();
    let appliance = args.appliance.clone().unwrap_or_else(|| tmp.path().join("appliance"));
    let empty = tmp.path().join("appliance.toml");
    std::fs::write(&empty, "").unwrap();
    let seeded_file = appliance.join("parity-seeded.json");

    // The appliance: seeded once, then asked.
    let source = Server::start(&args.bin, &appliance, &empty);
    let seeded: Seeded = match std::fs::read_to_string(&seeded_file) {
        Ok(text) => serde_json::from_str(&text).unwrap(),
        Err(_) => {
            let seeded = seed(&source, &corpus, &conversations);
            source.settle();
            std::fs::write(&seeded_file, serde_json::to_string(&seeded).unwrap()).unwrap();
            seeded
        }
    };
    let before = ask(&source, &seeded, &scifact, &questions, &users);
    source.stop();

    // The move.
    let setup = Setup::prepare(
        args.profile,
        "migrate_parity",
        tmp.path().join("node"),
        tmp.path().join("cluster.toml"),
        false,
        false,
        &servers,
    );
    let started = Instant::now();
    let out = Command::new(&args.bin)
        .arg("--config")
        .arg(&empty)
        .arg("--data-dir")
        .arg(&appliance)
        .args(["migrate", "--json", "--to"])
        .arg(&setup.config)
        .env("NEXUS__AUTH__MASTER_KEY", MASTER)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let report = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|l| l["event"] == "report")
        .unwrap_or(Value::Null);

    // A cluster node, asked the same with the same keys.
    let node = Server::start(&args.bin, &tmp.path().join("node"), &setup.config);
    let after = ask(&node, &seeded, &scifact, &questions, &users);
    node.stop();

    println!(
        "\nmigrate parity: {} SciFact documents, {} LoCoMo conversations ({} in project {TEAM} through its key), \
         {} deleted memories, onto {}",
        corpus.len(),
        conversations.len(),
        conversations.len() - IN_DEFAULT,
        seeded.deleted.len(),
        setup.describe()
    );
    println!(
        "nexus migrate: exit {}, verification {}, {seconds:.1} s",
        out.status.code().unwrap_or(-1),
        if report["ok"] == true { "clean" } else { "FAILED" }
    );
    println!(
        "{:<18} {:>9} {:>16} {:>14} {:>16} {:>16}",
        "top-10 lists", "queries", "identical", "mean overlap", "p50 ms before", "p50 ms after"
    );
    let mut sets: Vec<&String> = before.searches.keys().collect();
    sets.sort();
    for set in sets {
        let (b, a) = (&before.searches[set], &after.searches[set]);
        let same = b.iter().zip(a).filter(|(x, y)| x.1 == y.1).count();
        let overlap: f64 = b
            .iter()
            .zip(a)
            .map(|(x, y)| {
                let common = x.1.iter().filter(|id| y.1.contains(id)).count();
                if x.1.is_empty() && y.1.is_empty() { 1.0 } else { common as f64 / x.1.len().max(y.1.len()) as f64 }
            })
            .sum::<f64>()
            / b.len() as f64;
        println!(
            "{:<18} {:>9} {:>10} {:>5.1}% {:>14.4} {:>16.1} {:>16.1}",
            set,
            b.len(),
            format!("{same}/{}", b.len()),
            100.0 * same as f64 / b.len() as f64,
            overlap,
            percentile(&before.ms[set], 0.5),
            percentile(&after.ms[set], 0.5)
        );
        for (x, y) in b.iter().zip(a).filter(|(x, y)| x.1 != y.1).take(3) {
            println!("    differs: {:.70}\n      before {:?}\n      after  {:?}", x.0, x.1, y.1);
        }
    }
    let lists_same = before.lists.iter().zip(&after.lists).filter(|(x, y)| x == y).count();
    let memories: usize = before.lists.iter().map(|(_, l)| l.len()).sum();
    let histories_same = before.histories.iter().zip(&after.histories).filter(|(x, y)| x == y).count();
    println!(
        "memory lists: {lists_same}/{} users identical ({memories} memories); histories: {histories_same}/{} identical \
         (deleted memories' included)",
        before.lists.len(),
        before.histories.len()
    );
    for ((user, x), (_, y)) in before.lists.iter().zip(&after.lists).filter(|(x, y)| x != y).take(2) {
        let first = x.iter().zip(y).find(|(a, b)| a != b);
        println!("    {user}: {} vs {} memories; first difference {first:?}", x.len(), y.len());
    }
    let ok = report["ok"] == true && lists_same == before.lists.len() && histories_same == before.histories.len();
    if !ok {
        if report["ok"] != true {
            println!("{report:#}");
        }
        std::process::exit(1);
    }
}
