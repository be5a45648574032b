//! A cluster's Postgres going away and coming back, under load: while it is down, requests that
//! need it answer 503 `backend_unavailable` with `Retry-After` (never a crash, never a 500),
//! `/health` stays 200 and `/ready` names the record store unreachable; once it is back the nodes
//! recover by themselves, and every acknowledged write is in the record store and in every
//! derived store of every node. Node-local derived stores (usearch) and a shared one (pgvector).
//! Then the full cluster stack: each shared derived backend frozen under writes, and the shared
//! stores' data lost (the graph server crashed and back empty, the text index and the vector
//! collection deleted), refilled from the change log.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{PrivatePg, start_node};
use common::{Server, client, nexus, note_record, run};
use reqwest::blocking::Response;
use serde_json::{Value, json};

/// How long Postgres stays down.
const OUTAGE: Duration = Duration::from_secs(10);
/// How long the nodes may take to be ready again once it is back.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);

const BEFORE: u8 = 0;
const DURING: u8 = 1;
const AFTER: u8 = 2;

fn cluster_config(dir: &Path, pg_url: &str, shared_vectors: bool) -> PathBuf {
    let vectors = if shared_vectors { "pgvector" } else { "usearch" };
    let path = dir.join(format!("nexus-{vectors}.toml"));
    std::fs::write(
        &path,
        format!(
            "[store.records]\nbackend = \"postgres\"\nurl = \"{pg_url}\"\npool_size = 8\nconnect_timeout_ms = 2000\n\
             [store.vectors]\nbackend = \"{vectors}\"\n\
             [cluster]\npoll_interval_ms = 200\nlease_ms = 3000\n\
             [indexer]\npersist_interval_ms = 100\n"
        ),
    )
    .unwrap();
    path
}

/// What the writers saw.
#[derive(Default)]
struct Ledger {
    /// Final state per id, as acknowledged: Some(body) = present, None = deleted.
    acked: HashMap<String, Option<String>>,
    /// Ids whose last write was not acknowledged (it may or may not have happened).
    uncertain: HashSet<String>,
    /// Acknowledged writes per (node, phase).
    acked_in: HashMap<(String, u8), usize>,
    /// Writes refused with 503 per (node, phase).
    refused_in: HashMap<(String, u8), usize>,
    /// Answers other than success or a proper 503, and transport failures.
    wrong: Vec<String>,
}

type Shared = Arc<Mutex<Ledger>>;

/// A 503 as a client can act on: `Retry-After` and the `backend_unavailable` code; else what was wrong.
fn unavailable_answer(r: Response) -> Result<(), String> {
    let status = r.status();
    let retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    let text = r.text().unwrap_or_default();
    let code = serde_json::from_str::<Value>(&text).ok().and_then(|b| b["error"]["code"].as_str().map(str::to_string));
    if status == 503 && retry_after.is_some() && code.as_deref() == Some("backend_unavailable") {
        Ok(())
    } else {
        Err(format!("{status} retry-after {retry_after:?}: {text}"))
    }
}

/// Writes (upserts, and deletes of its own acknowledged ids) through `base` until stopped.
fn writer(node: String, base: String, prefix: String, ledger: Shared, phase: Arc<AtomicU8>, stop: Arc<AtomicBool>) {
    let c = reqwest::blocking::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let mut mine: Vec<String> = Vec::new();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let (request, id, after) = if n.is_multiple_of(5) && !mine.is_empty() {
            let gone = mine.remove(n % mine.len());
            (c.delete(format!("{base}/api/v1/records/{gone}")), gone, None)
        } else {
            let id = format!("{prefix}-{n}");
            let body = format!("body {n} of {prefix}");
            (c.post(format!("{base}/api/v1/records")).json(&note_record(&id, &body, n)), id, Some(body))
        };
        let at = phase.load(Ordering::Relaxed);
        let outcome = request.send();
        let mut ledger = ledger.lock().unwrap();
        match outcome {
            Ok(r) if r.status().is_success() => {
                if after.is_some() {
                    mine.push(id.clone());
                }
                ledger.uncertain.remove(&id);
                ledger.acked.insert(id, after);
                *ledger.acked_in.entry((node.clone(), at)).or_default() += 1;
                drop(ledger);
                std::thread::sleep(Duration::from_millis(15));
            }
            Ok(r) => {
                let what = format!("{node} write of {id} in phase {at}");
                if let Err(wrong) = unavailable_answer(r) {
                    ledger.wrong.push(format!("{what}: {wrong}"));
                }
                *ledger.refused_in.entry((node.clone(), at)).or_default() += 1;
                ledger.uncertain.insert(id);
                drop(ledger);
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                ledger.wrong.push(format!("{node} write of {id} in phase {at}: {e}"));
                ledger.uncertain.insert(id);
                drop(ledger);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Writers through every node, recording into one ledger the phase they wrote in.
struct Writers {
    ledger: Shared,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Writers {
    /// `per_node` writers through each node, in phase [`BEFORE`].
    fn start(nodes: &[(&str, Server)], per_node: usize) -> Writers {
        let ledger: Shared = Arc::default();
        let phase = Arc::new(AtomicU8::new(BEFORE));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = nodes
            .iter()
            .flat_map(|(name, server)| {
                (0..per_node).map(move |w| (name.to_string(), format!("http://{}", server.addr), w))
            })
            .map(|(name, base, w)| {
                let (ledger, phase, stop) = (ledger.clone(), phase.clone(), stop.clone());
                std::thread::spawn(move || writer(name.clone(), base, format!("{name}-w{w}"), ledger, phase, stop))
            })
            .collect();
        Writers { ledger, phase, stop, threads }
    }

    fn enter(&self, phase: u8) {
        self.phase.store(phase, Ordering::Relaxed);
    }

    /// An id written and acknowledged so far.
    fn known_id(&self) -> String {
        let ledger = self.ledger.lock().unwrap();
        ledger.acked.iter().find(|(_, s)| s.is_some()).map(|(id, _)| id.clone()).expect("writes acknowledged")
    }

    /// Stops the writers and waits for them; returns what they saw.
    fn finish(self) -> Shared {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("a writer panicked");
        }
        self.ledger
    }
}

/// A configuration for two nodes on `stack`'s full cluster stack (records on a fresh database
/// named after `hint`). `quick_timeouts`: backends answer within 2 s or count as unreachable, for
/// a test that freezes them.
fn full_stack_config(stack: &common::cluster::PrivateStack, dir: &Path, hint: &str, quick_timeouts: bool) -> PathBuf {
    let db = stack.database(hint);
    let mut stores = stack.stores_toml(dir, &db, &hint.replace('-', ""));
    if !quick_timeouts {
        // The default time to answer, which a busy machine needs when two tests' stacks run at once.
        stores = stores.replace("\ntimeout_ms = 2000\n", "\n");
    }
    let config = dir.join("nexus-full.toml");
    std::fs::write(
        &config,
        format!("{stores}[cluster]\npoll_interval_ms = 200\nlease_ms = 3000\n[indexer]\npersist_interval_ms = 100\n"),
    )
    .unwrap();
    config
}

fn search_ids(server: &Server, query: &str) -> Vec<String> {
    let hits: Value = client()
        .post(server.url("/api/v1/records/search"))
        .json(&json!({"query": query, "top_k": 10}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    hits["hits"]
        .as_array()
        .map(|h| h.iter().map(|h| h["id"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// `/ready`'s status and body.
fn readiness(server: &Server) -> (u16, Option<String>, Value) {
    let r = client().get(server.url("/ready")).send().unwrap();
    let status = r.status().as_u16();
    let retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, retry_after, r.json().unwrap_or(Value::Null))
}

/// While Postgres is down: liveness holds, readiness names the record store, and requests that
/// need Postgres answer a proper 503.
fn probe_outage(name: &str, server: &Server, known_id: &str) {
    let c = client();
    let health = c.get(server.url("/health")).send().unwrap();
    assert_eq!(health.status(), 200, "{name}: /health during the outage");

    let (status, retry_after, body) = readiness(server);
    assert_eq!(status, 503, "{name}: /ready during the outage: {body}");
    assert!(retry_after.is_some(), "{name}: /ready's 503 has Retry-After");
    assert_eq!(body["ready"], false, "{body}");
    let backends = body["backends"].as_array().cloned().unwrap_or_default();
    let records = backends.iter().find(|b| b["store"] == "records").unwrap_or_else(|| panic!("{body}"));
    assert_eq!(records["backend"], "postgres", "{body}");
    assert_eq!(records["reachable"], false, "{name}: the record store is named unreachable: {body}");
    assert_eq!(records["error"], "backend_unavailable", "{body}");

    let requests = [
        ("read", c.get(server.url(&format!("/api/v1/records/{known_id}")))),
        ("list", c.get(server.url("/api/v1/records?limit=10"))),
        ("search", c.post(server.url("/api/v1/records/search")).json(&json!({"query": "body", "top_k": 5}))),
        ("write", c.post(server.url("/api/v1/records")).json(&note_record(&format!("probe-{name}"), "probe", 7))),
        (
            "memory",
            c.post(server.url("/api/v1/memories")).json(
                &json!({"messages": [{"role": "user", "content": "I row on the river"}], "user_id": "ana", "infer": false}),
            ),
        ),
        ("status", c.get(server.url("/api/v1/status"))),
    ];
    for (what, request) in requests {
        let answer = request.send().unwrap_or_else(|e| panic!("{name}: {what} during the outage: {e}"));
        if let Err(wrong) = unavailable_answer(answer) {
            panic!("{name}: {what} during the outage answered {wrong}");
        }
    }
}

/// Every record, in key order, through `server`'s list endpoint.
fn all_records(server: &Server) -> HashMap<String, Value> {
    let c = client();
    let mut out = HashMap::new();
    let mut after: Option<u64> = None;
    for _ in 0..1000 {
        let mut url = server.url("/api/v1/records?limit=1000");
        if let Some(after) = after {
            url.push_str(&format!("&after={after}"));
        }
        let page: Value = c.get(url).send().unwrap().json().unwrap();
        for r in page["records"].as_array().unwrap() {
            out.insert(r["id"].as_str().unwrap().to_string(), r.clone());
        }
        match page["next_after"].as_u64() {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
    panic!("more pages than expected");
}

fn postgres_stopped_under_load(shared_vectors: bool) {
    let pg = PrivatePg::start();
    let db = pg.server.fresh_database(if shared_vectors { "outage-shared" } else { "outage-local" });
    let tmp = tempfile::tempdir().unwrap();
    let config = cluster_config(tmp.path(), &db, shared_vectors);
    let nodes = [
        ("node-a", start_node(tmp.path(), "node-a", &config, None)),
        ("node-b", start_node(tmp.path(), "node-b", &config, None)),
    ];

    let writers = Writers::start(&nodes, 2);
    std::thread::sleep(Duration::from_secs(2));
    let known_id = writers.known_id();

    // The outage.
    pg.stop();
    let down = Instant::now();
    writers.enter(DURING);
    while down.elapsed() < OUTAGE - Duration::from_secs(2) {
        for (name, server) in &nodes {
            probe_outage(name, server, &known_id);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(OUTAGE.saturating_sub(down.elapsed()));
    writers.enter(AFTER);
    pg.start_again();

    // Recovery, by themselves.
    let back = Instant::now();
    for (name, server) in &nodes {
        loop {
            let (status, _, body) = readiness(server);
            if status == 200 {
                break;
            }
            assert!(
                back.elapsed() < RECOVERY_LIMIT,
                "{name} not ready {RECOVERY_LIMIT:?} after postgres came back: {body}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    eprintln!("ready again {:?} after postgres came back", back.elapsed());

    // Read-your-writes works again at once, and each node serves what the other wrote.
    for (i, (name, server)) in nodes.iter().enumerate() {
        let (other_name, other) = &nodes[1 - i];
        let id = format!("recovered-{name}");
        let words = format!("recovered{i} otter{i}");
        let started = Instant::now();
        let r = client()
            .post(server.url("/api/v1/records?wait=true"))
            .json(&note_record(&id, &words, 3 + i))
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{name}: write after recovery: {:?}", r.text());
        assert_eq!(r.json::<Value>().unwrap()["indexed"], true, "{name}: indexed after recovery");
        let indexed_in = started.elapsed();
        writers.ledger.lock().unwrap().acked.insert(id.clone(), Some(words.clone()));
        loop {
            if search_ids(other, &words) == vec![id.clone()] {
                break;
            }
            assert!(started.elapsed() < RECOVERY_LIMIT, "{other_name} does not find {id} after recovery");
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{name}: indexed in {indexed_in:?}, served by {other_name} in {:?}", started.elapsed());
        // Indexers retry at most a second apart while Postgres is away, and poll every 200 ms.
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "{other_name} took {:?} to find {id}",
            started.elapsed()
        );
    }
    let writing_again = Instant::now();
    loop {
        let ledger = writers.ledger.lock().unwrap();
        if nodes.iter().all(|(name, _)| ledger.acked_in.get(&(name.to_string(), AFTER)).copied().unwrap_or(0) >= 20) {
            break;
        }
        assert!(writing_again.elapsed() < RECOVERY_LIMIT, "writes do not succeed again: {:?}", ledger.acked_in);
        drop(ledger);
        std::thread::sleep(Duration::from_millis(100));
    }
    let ledger = writers.finish();
    let ledger = ledger.lock().unwrap();
    assert!(ledger.wrong.is_empty(), "answers other than success or 503 backend_unavailable: {:#?}", ledger.wrong);
    for (name, _) in &nodes {
        let count = |map: &HashMap<(String, u8), usize>, at| map.get(&(name.to_string(), at)).copied().unwrap_or(0);
        assert!(count(&ledger.acked_in, BEFORE) > 0, "{name}: writes before the outage");
        assert!(count(&ledger.refused_in, DURING) > 0, "{name}: writes refused during the outage");
        assert_eq!(count(&ledger.acked_in, DURING), 0, "{name}: writes acknowledged while postgres was down");
        assert!(count(&ledger.acked_in, AFTER) > 0, "{name}: writes after the outage");
    }
    eprintln!(
        "{} ids acknowledged, {} uncertain; per node and phase acked {:?}, refused {:?}",
        ledger.acked.len(),
        ledger.uncertain.len(),
        ledger.acked_in,
        ledger.refused_in
    );

    // Every acknowledged write, on both nodes, in the record store and in every derived store.
    let c = client();
    let listed: Vec<HashMap<String, Value>> = nodes.iter().map(|(_, server)| all_records(server)).collect();
    assert_eq!(listed[0], listed[1], "both nodes list the same records");
    for (name, server) in &nodes {
        let report: Value = c.get(server.url("/api/v1/admin/check")).send().unwrap().json().unwrap();
        assert_eq!(report["ok"], true, "{name}: derived stores diverge: {report:#}");
        assert_eq!(report["records"].as_u64(), Some(listed[0].len() as u64), "{name}: {report:#}");
        let stores = report["stores"].as_array().unwrap();
        let names: HashSet<&str> = stores.iter().map(|s| s["store"].as_str().unwrap()).collect();
        assert_eq!(names, HashSet::from(["text", "vectors", "graph"]), "{name}: {report:#}");
        for store in stores {
            assert_eq!(store["indexed"].as_u64(), Some(listed[0].len() as u64), "{name}: {store:#}");
        }
    }
    for (id, state) in ledger.acked.iter().filter(|(id, _)| !ledger.uncertain.contains(*id)) {
        let got: Vec<(u16, Value)> = nodes
            .iter()
            .map(|(_, server)| {
                let r = c.get(server.url(&format!("/api/v1/records/{id}"))).send().unwrap();
                (r.status().as_u16(), r.json().unwrap_or(Value::Null))
            })
            .collect();
        match state {
            Some(body) => {
                assert_eq!(got[0].0, 200, "acknowledged write of {id} lost");
                assert_eq!(got[0].1["body"].as_str(), Some(body.as_str()), "{id}");
                assert_eq!(listed[0].get(id).map(|r| &r["body"]), Some(&json!(body)), "{id} listed");
            }
            None => {
                assert_eq!(got[0].0, 404, "acknowledged delete of {id} undone");
                assert!(!listed[0].contains_key(id), "deleted {id} listed");
            }
        }
        assert_eq!(got[0], got[1], "both nodes answer the same for {id}");
    }
    drop(ledger);

    for (name, server) in nodes {
        assert_eq!(server.stop().code(), Some(0), "{name} stops cleanly");
    }
    for name in ["node-a", "node-b"] {
        let out = run(nexus(&tmp.path().join(name)).arg("--config").arg(&config).arg("check"));
        assert_eq!(out.status.code(), Some(0), "{name}: {}", String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn postgres_stopped_under_load_with_node_local_derived_stores() {
    postgres_stopped_under_load(false);
}

#[test]
fn postgres_stopped_under_load_with_a_shared_vector_store() {
    postgres_stopped_under_load(true);
}

/// `/metrics`' value of `name` for the series whose labels include `label`.
fn metric(server: &Server, name: &str, label: &str) -> Option<f64> {
    let text = client().get(server.url("/metrics")).send().unwrap().text().unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The full cluster stack (OpenSearch text, Qdrant vectors, Bolt graph, all shared): each derived
/// backend frozen for 10 s in turn under writes through two nodes. Writes go on being
/// acknowledged (they only need Postgres); the store's projector falls behind, `/ready` (503 with
/// Retry-After) and `/metrics` show the lag and the backend down; reads that need the backend
/// answer 503 `backend_unavailable`, others are served; once it is back, the projector catches up
/// and nothing is lost (`/admin/check` and `nexus check` clean on both nodes).
#[test]
fn a_shared_derived_backend_frozen_under_writes_falls_behind_and_catches_up() {
    let stack = common::cluster::PrivateStack::start();
    let tmp = tempfile::tempdir().unwrap();
    let config = full_stack_config(&stack, tmp.path(), "derived-outage", true);
    let nodes = [
        ("node-a", start_node(tmp.path(), "node-a", &config, None)),
        ("node-b", start_node(tmp.path(), "node-b", &config, None)),
    ];
    let writers = Writers::start(&nodes, 1);
    std::thread::sleep(Duration::from_secs(2));
    let known_id = writers.known_id();
    let mut v = vec![0.02f32; 384];
    v[3] = 1.0;

    for (server_name, store) in [("osmem", "text"), ("qdrant", "vectors"), ("falkordb", "graph")] {
        writers.enter(DURING);
        stack.pause(server_name);
        let down = Instant::now();
        // The projector falls behind while writes go on; /ready and /metrics say so on both nodes.
        let mut seen = [false, false];
        let mut last = [Value::Null, Value::Null];
        while seen.contains(&false) && down.elapsed() < OUTAGE - Duration::from_secs(1) {
            for (i, (_, server)) in nodes.iter().enumerate() {
                if seen[i] {
                    continue;
                }
                let (status, retry_after, body) = readiness(server);
                let backend = body["backends"].as_array().and_then(|b| b.iter().find(|b| b["store"] == store).cloned());
                let lag = body["indexers"]
                    .as_array()
                    .and_then(|i| i.iter().find(|i| i["name"] == store))
                    .and_then(|i| i["lag"].as_u64())
                    .unwrap_or(0);
                seen[i] = status == 503
                    && retry_after.is_some()
                    && backend.is_some_and(|b| b["reachable"] == false && b["error"] == "backend_unavailable")
                    && lag > 0;
                last[i] = body;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        for (i, (name, server)) in nodes.iter().enumerate() {
            assert!(seen[i], "{name}: /ready does not show {store} down and lagging: {:#}", last[i]);
            let label = format!("store=\"{store}\"");
            assert!(metric(server, "nexus_indexer_lag", &label).unwrap_or(0.0) > 0.0, "{name}: lag in /metrics");
            assert_eq!(metric(server, "nexus_backend_up", &label), Some(0.0), "{name}: {store} down in /metrics");

            // A read that needs the store answers 503; one that does not is served.
            let c = client();
            let needs = match store {
                "text" => c.post(server.url("/api/v1/records/search")).json(&json!({"query": "body", "top_k": 5})),
                "vectors" => c.post(server.url("/api/v1/records/search")).json(&json!({"vector": v, "top_k": 5})),
                _ => c.get(server.url(&format!("/api/v1/graph/nodes/{known_id}"))),
            };
            if let Err(wrong) = unavailable_answer(needs.send().unwrap()) {
                panic!("{name}: a {store} read during the outage answered {wrong}");
            }
            let record = c.get(server.url(&format!("/api/v1/records/{known_id}"))).send().unwrap();
            assert!(record.status() == 200 || record.status() == 404, "{name}: record read: {}", record.status());
        }
        std::thread::sleep(OUTAGE.saturating_sub(down.elapsed()));
        stack.resume(server_name);
        writers.enter(AFTER);
        let back = Instant::now();
        for (name, server) in &nodes {
            loop {
                let (status, _, body) = readiness(server);
                if status == 200 {
                    break;
                }
                // Any server of the stack that died (not only the one resumed) is named with its log.
                for other in common::cluster::PrivateStack::FREEZABLE {
                    if let Some(log) = stack.exited(other) {
                        panic!("{other} exited after {server_name} was resumed; the end of its log:\n{log}");
                    }
                }
                assert!(back.elapsed() < RECOVERY_LIMIT, "{name} not ready after {server_name} came back: {body}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        eprintln!("{store}: ready again {:?} after {server_name} came back", back.elapsed());
    }
    let ledger = writers.finish();
    let ledger = ledger.lock().unwrap();
    assert!(ledger.wrong.is_empty(), "answers other than success: {:#?}", ledger.wrong);
    assert!(
        ledger.refused_in.is_empty(),
        "writes refused while only a derived store was down: {:?}",
        ledger.refused_in
    );
    for (name, _) in &nodes {
        let acked = |at| ledger.acked_in.get(&(name.to_string(), at)).copied().unwrap_or(0);
        assert!(acked(DURING) > 0, "{name}: writes acknowledged during the outages");
    }
    let c = client();
    for (name, server) in &nodes {
        for (id, state) in &ledger.acked {
            let got = c.get(server.url(&format!("/api/v1/records/{id}"))).send().unwrap();
            match state {
                Some(body) => {
                    assert_eq!(got.status(), 200, "{name}: acknowledged write of {id} lost");
                    assert_eq!(got.json::<Value>().unwrap()["body"].as_str(), Some(body.as_str()));
                }
                None => assert_eq!(got.status(), 404, "{name}: acknowledged delete of {id} undone"),
            }
        }
        // Every store catches up: the check waits for the indexers, and is asked again while a
        // store's projector is still working through the backlog of the outage.
        let started = Instant::now();
        loop {
            let report: Value = c.get(server.url("/api/v1/admin/check")).send().unwrap().json().unwrap();
            if report["ok"] == true {
                break;
            }
            assert!(started.elapsed() < RECOVERY_LIMIT * 2, "{name}: derived stores diverge: {report:#}");
            std::thread::sleep(Duration::from_millis(500));
        }
        eprintln!("{name}: every store caught up {:?} after the writes stopped", started.elapsed());
    }
    for (name, server) in nodes {
        assert_eq!(server.stop().code(), Some(0), "{name}");
        let out = run(nexus(&tmp.path().join(name)).arg("--config").arg(&config).arg("check"));
        assert_eq!(out.status.code(), Some(0), "{name}: {}", String::from_utf8_lossy(&out.stdout));
    }
}

/// The full cluster stack's shared derived stores lose their data while two nodes serve: the
/// graph server crashes and comes back empty (FalkorDB keeps nothing on disk here) under writes;
/// then, with nothing written after, it crashes again while the text index and the vector
/// collection are deleted behind Nexus's back. Writes go on being acknowledged; each store's
/// projector finds it holding less than it committed (or gone), puts its layout back and
/// projects the change log again, so that every record is back in every store for both nodes,
/// without a restart and without a write to set it off.
#[test]
fn shared_derived_stores_whose_servers_lost_their_data_are_refilled_from_the_change_log() {
    let stack = common::cluster::PrivateStack::start();
    let tmp = tempfile::tempdir().unwrap();
    // Nothing here waits on a frozen server: the backends get the default time to answer.
    let config = full_stack_config(&stack, tmp.path(), "graph-lost", false);
    let nodes = [
        ("node-a", start_node(tmp.path(), "node-a", &config, None)),
        ("node-b", start_node(tmp.path(), "node-b", &config, None)),
    ];
    let writers = Writers::start(&nodes, 1);
    std::thread::sleep(Duration::from_secs(2));
    writers.enter(DURING);
    stack.crash_graph_server();
    std::thread::sleep(Duration::from_secs(3));
    writers.enter(AFTER);
    std::thread::sleep(Duration::from_secs(1));
    let ledger = writers.finish();
    let ledger = ledger.lock().unwrap();
    assert!(ledger.wrong.is_empty(), "answers other than success: {:#?}", ledger.wrong);
    assert!(
        ledger.refused_in.is_empty(),
        "writes refused while only the graph server was down: {:?}",
        ledger.refused_in
    );
    for (name, _) in &nodes {
        for at in [BEFORE, AFTER] {
            assert!(ledger.acked_in.get(&(name.to_string(), at)).copied().unwrap_or(0) > 0, "{name}: writes in {at}");
        }
    }
    let present: Vec<&String> = ledger.acked.iter().filter(|(_, s)| s.is_some()).map(|(id, _)| id).collect();
    let deleted: Vec<&String> = ledger.acked.iter().filter(|(_, s)| s.is_none()).map(|(id, _)| id).collect();
    assert!(present.len() > 20 && !deleted.is_empty(), "{} written, {} deleted", present.len(), deleted.len());

    let c = client();
    // Every graph node of an acknowledged write is there on both nodes, and no deleted one.
    let graph_matches = |server: &Server| -> Result<(), String> {
        let report: Value = c.get(server.url("/api/v1/admin/check")).send().unwrap().json().unwrap();
        if report["ok"] != true {
            return Err(format!("{report:#}"));
        }
        for id in &present {
            let got = c.get(server.url(&format!("/api/v1/graph/nodes/{id}"))).send().unwrap();
            if got.status() != 200 {
                return Err(format!("graph node {id}: {}", got.status()));
            }
        }
        for id in &deleted {
            let got = c.get(server.url(&format!("/api/v1/graph/nodes/{id}"))).send().unwrap();
            if got.status() != 404 {
                return Err(format!("deleted graph node {id}: {}", got.status()));
            }
        }
        Ok(())
    };
    let refilled = |when: &str| {
        for (name, server) in &nodes {
            let started = Instant::now();
            loop {
                match graph_matches(server) {
                    Ok(()) => break,
                    Err(why) => assert!(started.elapsed() < RECOVERY_LIMIT, "{name}, {when}: {why}"),
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            eprintln!("{name}: the graph refilled {:?} after {when}", started.elapsed());
        }
    };
    refilled("the crash under writes");
    let resets = || -> f64 {
        nodes.iter().map(|(_, s)| metric(s, "nexus_indexer_store_resets_total", "store=\"graph\"").unwrap_or(0.0)).sum()
    };
    assert!(resets() >= 1.0, "the projector counted the store it found empty");

    // Again, with nothing written after: each projector's own check finds its store empty.
    let before = resets();
    stack.crash_graph_server();
    let setting = |name: &str| {
        let toml = std::fs::read_to_string(&config).unwrap();
        let line = toml.lines().find(|l| l.starts_with(&format!("{name} = "))).unwrap().to_string();
        line.split('"').nth(1).unwrap().to_string()
    };
    // The text alias's index, and the collection behind the vectors alias, deleted.
    let opensearch = stack.var("NEXUS_TEST_OPENSEARCH_URL").to_string();
    let alias = format!("{}-text", setting("index_prefix"));
    let indices: Value = c.get(format!("{opensearch}/{alias}")).send().unwrap().json().unwrap();
    let indices: Vec<String> = indices.as_object().expect("the text alias's indices").keys().cloned().collect();
    assert_eq!(indices.len(), 1, "one index behind {alias}: {indices:?}");
    let deleted = c.delete(format!("{opensearch}/{}", indices[0])).send().unwrap();
    assert!(deleted.status().is_success(), "delete the text index: {}", deleted.status());
    let qdrant = stack.var("NEXUS_TEST_QDRANT_URL").to_string();
    let key = stack.var("NEXUS_TEST_QDRANT_API_KEY").to_string();
    let alias = format!("{}-vectors", setting("collection_prefix"));
    let aliases: Value = c.get(format!("{qdrant}/aliases")).header("api-key", &key).send().unwrap().json().unwrap();
    let collection = aliases["result"]["aliases"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["alias_name"] == alias.as_str()))
        .and_then(|a| a["collection_name"].as_str())
        .unwrap_or_else(|| panic!("no collection behind {alias}: {aliases}"))
        .to_string();
    let deleted = c.delete(format!("{qdrant}/collections/{collection}")).header("api-key", &key).send().unwrap();
    assert!(deleted.status().is_success(), "delete the vector collection: {}", deleted.status());
    refilled("the stores lost their data with no write after it");
    assert!(resets() > before, "the second reset of the graph is counted");
    for store in ["text", "vectors"] {
        let counted: f64 = nodes
            .iter()
            .map(|(_, s)| metric(s, "nexus_indexer_store_resets_total", &format!("store=\"{store}\"")).unwrap_or(0.0))
            .sum();
        assert!(counted >= 1.0, "the {store} store's reset is counted");
    }

    for (name, server) in nodes {
        assert_eq!(server.stop().code(), Some(0), "{name}");
        let out = run(nexus(&tmp.path().join(name)).arg("--config").arg(&config).arg("check"));
        assert_eq!(out.status.code(), Some(0), "{name}: {}", String::from_utf8_lossy(&out.stdout));
    }
}
