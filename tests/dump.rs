//! `nexus dump` and `nexus import`, end to end on the real binary:
//! - every committed fixture dump (`tests/fixtures/dumps/v<N>/`, one per format version) imports
//!   into this version with the counts, the search results and the working key it was made with;
//! - a dump of a data directory taken while its server serves and writes go on imports into a
//!   new one that `nexus check` finds clean, with every write acknowledged before the dump, the
//!   same searches and the same counts per tenant and kind; so does one of a stopped directory;
//! - refusals, each with its own message and nothing written: a newer format, another embedder,
//!   truncated files, flipped bytes, a member changed behind the manifest, path traversal, links,
//!   a non-empty target; a fresh install's empty data directory is accepted;
//! - dumps killed mid-way leave nothing that stops the next dump to the same file.
//!
//! `regenerate_fixture` (ignored) writes the fixture of the current format: see
//! tests/fixtures/dumps/README.md.

use crate::common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Server, client, nexus, run};
use serde_json::{Value, json};
use sha2::Digest;

const MASTER: &str = "dump-test-master-key-0123456789abcdef";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dumps")
}

/// `nexus` with the test's master key and a recency weight of 0, so memory rankings do not
/// depend on when the test runs.
fn cmd(data_dir: &Path) -> std::process::Command {
    let mut cmd = nexus(data_dir);
    cmd.env("NEXUS__AUTH__MASTER_KEY", MASTER).env("NEXUS__MEMORY__RECENCY_WEIGHT", "0");
    cmd
}

fn start(dir: &Path) -> Server {
    let server = Server::start_command(cmd(dir), |_| {});
    server.wait_ready();
    server
}

/// Runs a command; returns its exit code, stdout and stderr.
fn exec(command: &mut std::process::Command) -> (i32, String, String) {
    let out = run(command);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn dump(dir: &Path, to: &Path) -> Value {
    let (code, stdout, stderr) = exec(cmd(dir).args(["dump", "--json", "--to"]).arg(to));
    assert_eq!(code, 0, "dump failed: {stderr}");
    serde_json::from_str(&stdout).unwrap()
}

fn import(file: &Path, dir: &Path) -> (i32, String, String) {
    exec(cmd(dir).arg("import").arg(file).arg("--json"))
}

fn import_ok(file: &Path, dir: &Path) -> Value {
    let (code, stdout, stderr) = import(file, dir);
    assert_eq!(code, 0, "import failed: {stderr}");
    serde_json::from_str(&stdout).unwrap()
}

/// Per tenant, the number of records `nexus check` counts; and whether it passed.
fn check(dir: &Path) -> (bool, Value) {
    let (code, stdout, stderr) = exec(cmd(dir).args(["check", "--json"]));
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("check: {stdout} {stderr}"));
    (code == 0 && report["ok"] == true, report["tenants"].clone())
}

fn post(server: &Server, auth: &str, path: &str, body: Value) -> Value {
    let request = client().post(server.url(path)).json(&body);
    let request = if auth == MASTER { request.bearer_auth(auth) } else { request.header("X-API-Key", auth) };
    let response = request.send().unwrap();
    let status = response.status();
    let text = response.text().unwrap();
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// The ids a search answered, in order: chunk ids for documents, memory ids for memories.
fn ids(answer: &Value) -> Vec<String> {
    let hits = answer.as_array().or_else(|| answer["results"].as_array()).cloned().unwrap_or_default();
    hits.iter().map(|h| h["chunk_id"].as_str().or_else(|| h["id"].as_str()).unwrap_or_default().to_string()).collect()
}

const TOPICS: [&str; 4] = [
    "tidal estuaries where grey herons wade and hunt small fish at low water",
    "protein folding kinetics measured with stopped-flow fluorescence",
    "river delta sediment cores dated by radiocarbon",
    "a double-blind vaccine trial with two doses four weeks apart",
];

const ASPECTS: [&str; 6] = [
    "The field team calibrated every instrument twice before each campaign",
    "Samples were drawn across four seasons to capture variation between wet and dry months",
    "A mixed-effects model separated site effects from observer effects",
    "Funding came from a regional science council and a private foundation",
    "Limitations include the small sample and a single observer who knew the hypothesis",
    "All data are deposited in a public archive under an open licence",
];

/// Documents (several chunks each, with their original files), memories with history (an
/// update, a deletion) in two projects, and a key for the second. Returns that key.
fn seed(server: &Server) -> String {
    let c = client();
    let r = c
        .post(server.url("/api/v1/projects"))
        .bearer_auth(MASTER)
        .json(&json!({"id": "team-b", "name": "Team B"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text());
    let key = post(
        server,
        MASTER,
        "/api/v1/keys",
        json!({"name": "agent", "project": "team-b", "scopes": ["read", "write"]}),
    );
    let key = key["key"].as_str().unwrap().to_string();
    for (i, topic) in TOPICS.iter().enumerate() {
        // The topic opens the document; each section after it has wording of its own, repeated a
        // different number of times per document, so no two chunks score alike.
        let mut text = format!("Study {i} examines {topic}.\n\n");
        for (j, aspect) in ASPECTS.iter().enumerate() {
            text.push_str(&format!("Section {j}. "));
            for r in 0..(i + j) % 3 + 1 {
                text.push_str(&format!("{aspect} (study {i}, note {r}). "));
            }
            text.push_str("\n\n");
        }
        let auth = if i == 3 { key.as_str() } else { MASTER };
        post(
            server,
            auth,
            "/api/v1/documents/text",
            json!({"title": format!("Study {i}"), "source": format!("study-{i}.txt"), "text": text}),
        );
    }
    for (auth, user, facts) in [
        (
            MASTER,
            "alice",
            [
                "likes rowing on the river at dawn",
                "is allergic to peanuts",
                "works on protein folding",
                "lives near the estuary",
            ],
        ),
        (
            key.as_str(),
            "bob",
            ["plays the cello in an orchestra", "prefers green tea", "studies river deltas", "has a dog named Pixel"],
        ),
    ] {
        for fact in facts {
            post(
                server,
                auth,
                "/v1/memories/",
                json!({"messages": [{"role": "user", "content": format!("{user} {fact}")}], "user_id": user, "infer": false}),
            );
        }
        let list = client().get(server.url(&format!("/v1/memories/?user_id={user}")));
        let list = if auth == MASTER { list.bearer_auth(auth) } else { list.header("X-API-Key", auth) };
        let list: Value = list.send().unwrap().json().unwrap();
        let list = ids(&list);
        let update = client()
            .put(server.url(&format!("/v1/memories/{}/", list[0])))
            .json(&json!({"text": format!("{user} now prefers swimming")}));
        let update = if auth == MASTER { update.bearer_auth(auth) } else { update.header("X-API-Key", auth) };
        assert!(update.send().unwrap().status().is_success());
        let delete = client().delete(server.url(&format!("/v1/memories/{}/", list[1])));
        let delete = if auth == MASTER { delete.bearer_auth(auth) } else { delete.header("X-API-Key", auth) };
        assert!(delete.send().unwrap().status().is_success());
    }
    key
}

/// Each memory of `user` with its history (`event old -> new`), sorted, as `server` answers.
fn memories(server: &Server, auth: &str, user: &str) -> Value {
    let get = |path: String| {
        let request = client().get(server.url(&path));
        let request = if auth == MASTER { request.bearer_auth(auth) } else { request.header("X-API-Key", auth) };
        request.send().unwrap().json::<Value>().unwrap()
    };
    let list = get(format!("/v1/memories/?user_id={user}"));
    let mut out: Vec<Value> = list
        .as_array()
        .or_else(|| list["results"].as_array())
        .unwrap()
        .iter()
        .map(|m| {
            let id = m["id"].as_str().unwrap();
            let history = get(format!("/v1/memories/{id}/history/"));
            let events: Vec<String> = history
                .as_array()
                .unwrap()
                .iter()
                .map(|h| format!("{} {} -> {}", h["event"], h["old_memory"], h["new_memory"]))
                .collect();
            json!({"id": id, "memory": m["memory"], "history": events})
        })
        .collect();
    out.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Value::Array(out)
}

/// The fixed searches: (name, who asks, path, body). `key` is the team key.
fn searches() -> Vec<(&'static str, &'static str, &'static str, Value)> {
    // Three hits for documents, one for memories: further down come weak matches whose order
    // depends on what the keyword index still counts of deleted and replaced versions (a dump,
    // like a reindex, carries only the current ones).
    let doc = |q: &str, mode: &str| json!({"query": q, "mode": mode, "top_k": 3});
    vec![
        ("herons hybrid", "master", "/api/v1/search", doc("herons wading in estuaries", "hybrid")),
        ("protein keyword", "master", "/api/v1/search", doc("protein folding kinetics", "keyword")),
        ("sediment semantic", "master", "/api/v1/search", doc("dating mud layers in a river mouth", "semantic")),
        ("funding keyword", "master", "/api/v1/search", doc("regional science council funding", "keyword")),
        ("seasons hybrid", "master", "/api/v1/search", doc("sampling in wet and dry seasons", "hybrid")),
        ("vaccine as team", "key", "/api/v1/search", doc("vaccine doses four weeks apart", "hybrid")),
        (
            "alice sport",
            "master",
            "/v1/memories/search/",
            json!({"query": "what sport does alice do", "user_id": "alice", "top_k": 1}),
        ),
        (
            "alice work",
            "master",
            "/v1/memories/search/",
            json!({"query": "research field", "user_id": "alice", "top_k": 1}),
        ),
        (
            "bob music",
            "key",
            "/v1/memories/search/",
            json!({"query": "musical instrument", "user_id": "bob", "top_k": 1}),
        ),
        ("bob pet", "key", "/v1/memories/search/", json!({"query": "pet animal", "user_id": "bob", "top_k": 1})),
    ]
}

fn run_searches(server: &Server, key: &str) -> Vec<(String, Vec<String>)> {
    searches()
        .into_iter()
        .map(|(name, who, path, body)| {
            let auth = if who == "key" { key } else { MASTER };
            (name.to_string(), ids(&post(server, auth, path, body)))
        })
        .collect()
}

/// Writes the fixture dump of the current format and its expected results. Old formats'
/// fixtures are never regenerated: they are what those versions wrote.
#[test]
#[ignore = "writes tests/fixtures/dumps/v<current>; run on purpose (see its README)"]
fn regenerate_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    let server = start(&source);
    let key = seed(&server);
    let results = run_searches(&server, &key);
    let alice = memories(&server, MASTER, "alice");
    let bob = memories(&server, &key, "bob");
    server.stop();
    let dir = fixtures().join(format!("v{}", nexus::dump::CURRENT_FORMAT));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("dump.tar.zst");
    let _ = std::fs::remove_file(&file);
    let dumped = dump(&source, &file);
    let (ok, tenants) = check(&source);
    assert!(ok);
    let expected = json!({
        "dump_format": nexus::dump::CURRENT_FORMAT,
        "nexus_version": env!("CARGO_PKG_VERSION"),
        "key": key,
        "records_by_tenant": dumped["counts"]["records_by_tenant"],
        "tenants": tenants,
        "counts": dumped["counts"],
        "searches": results.iter().map(|(name, ids)| json!({"name": name, "ids": ids})).collect::<Vec<_>>(),
        "memories": {"alice": alice, "bob": bob},
    });
    std::fs::write(dir.join("expected.json"), serde_json::to_string_pretty(&expected).unwrap() + "\n").unwrap();
}

#[test]
fn every_fixture_imports_with_the_same_results() {
    let mut versions: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("dump.tar.zst").is_file())
        .collect();
    versions.sort();
    let names: Vec<String> = versions.iter().map(|p| p.file_name().unwrap().to_string_lossy().to_string()).collect();
    for format in 1..=nexus::dump::CURRENT_FORMAT {
        assert!(names.contains(&format!("v{format}")), "no fixture for dump format {format}: {names:?}");
    }
    for version in versions {
        let expected: Value = serde_json::from_slice(&std::fs::read(version.join("expected.json")).unwrap()).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("imported");
        let imported = import_ok(&version.join("dump.tar.zst"), &dir);
        assert_eq!(imported["dump_format"], expected["dump_format"], "{}", version.display());
        assert_eq!(imported["counts"]["records_by_tenant"], expected["records_by_tenant"], "{}", version.display());
        let (ok, tenants) = check(&dir);
        assert!(ok, "nexus check after importing {}", version.display());
        assert_eq!(tenants, expected["tenants"], "{}", version.display());
        let server = start(&dir);
        let key = expected["key"].as_str().unwrap();
        // The key still works, for its own project only.
        let own = client().get(server.url("/v1/memories/?user_id=bob")).header("X-API-Key", key).send().unwrap();
        assert_eq!(own.status(), 200);
        assert!(!ids(&own.json().unwrap()).is_empty());
        // Memories keep their ids and histories.
        assert_eq!(memories(&server, MASTER, "alice"), expected["memories"]["alice"], "{}", version.display());
        assert_eq!(memories(&server, key, "bob"), expected["memories"]["bob"], "{}", version.display());
        let results = run_searches(&server, key);
        for ((name, got), want) in results.iter().zip(expected["searches"].as_array().unwrap()) {
            assert_eq!(name, want["name"].as_str().unwrap());
            let want: Vec<String> = serde_json::from_value(want["ids"].clone()).unwrap();
            assert_eq!(got, &want, "{}: search `{name}`", version.display());
        }
        // Documents keep their original files.
        let docs: Value =
            client().get(server.url("/api/v1/documents")).bearer_auth(MASTER).send().unwrap().json().unwrap();
        let docs = docs["documents"].as_array().unwrap();
        assert_eq!(docs.len(), 3, "the default project's documents");
        for doc in docs {
            let id = doc["id"].as_str().unwrap();
            let original = client()
                .get(server.url(&format!("/api/v1/documents/{id}/content")))
                .bearer_auth(MASTER)
                .send()
                .unwrap();
            assert_eq!(original.status(), 200, "original of {id}");
            let bytes = original.bytes().unwrap();
            assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), doc["sha256"].as_str().unwrap(), "original of {id}");
        }
        server.stop();
    }
}

/// Adds memories for carol until stopped; returns the texts acknowledged so far.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(server: Arc<Server>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let thread = {
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let text = format!("carol note number {i} about kayaks");
                    post(
                        &server,
                        MASTER,
                        "/v1/memories/",
                        json!({"messages": [{"role": "user", "content": text}], "user_id": "carol", "infer": false}),
                    );
                    acked.lock().unwrap().push(text);
                    i += 1;
                }
            })
        };
        let writer = Writer { stop, acked, thread: Some(thread) };
        while writer.acked().len() < 5 {
            std::thread::sleep(Duration::from_millis(20));
        }
        writer
    }

    fn acked(&self) -> Vec<String> {
        self.acked.lock().unwrap().clone()
    }

    /// Stops; returns how many writes were acknowledged in all.
    fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.acked().len()
    }
}

/// carol's memories as `server` lists them.
fn carol(server: &Server) -> Vec<String> {
    let list: Value =
        client().get(server.url("/v1/memories/?user_id=carol")).bearer_auth(MASTER).send().unwrap().json().unwrap();
    list.as_array()
        .or_else(|| list["results"].as_array())
        .unwrap()
        .iter()
        .map(|m| m["memory"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn live_dump_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    let server = Arc::new(start(&source));
    let key = seed(&server);
    let before = run_searches(&server, &key);
    let histories = (memories(&server, MASTER, "alice"), memories(&server, &key, "bob"));

    // A writer adds memories for carol while the dump runs.
    let writer = Writer::start(server.clone());
    let acked_before = writer.acked();
    let file = tmp.path().join("live.tar.zst");
    let dumped = dump(&source, &file);
    assert_eq!(dumped["from_copy"], true, "{dumped:#}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(writer.stop() > acked_before.len(), "writes went on during the dump");

    let target = tmp.path().join("imported");
    let imported = import_ok(&file, &target);
    assert_eq!(imported["counts"], dumped["counts"]);
    let (ok, _) = check(&target);
    assert!(ok, "nexus check on the imported data directory");
    let copy = start(&target);
    // The same searches (carol's memories touch none of them) and histories; the key works.
    assert_eq!(run_searches(&copy, &key), before);
    assert_eq!((memories(&copy, MASTER, "alice"), memories(&copy, &key, "bob")), histories);
    // Every write acknowledged before the dump started is there.
    let carol: Value =
        client().get(copy.url("/v1/memories/?user_id=carol")).bearer_auth(MASTER).send().unwrap().json().unwrap();
    let carol: Vec<String> = carol
        .as_array()
        .or_else(|| carol["results"].as_array())
        .unwrap()
        .iter()
        .map(|m| m["memory"].as_str().unwrap().to_string())
        .collect();
    for text in &acked_before {
        assert!(carol.contains(text), "`{text}` was acknowledged before the dump but is missing");
    }
    copy.stop();

    // A stopped data directory: everything equal, per tenant and kind.
    let server = Arc::try_unwrap(server).ok().unwrap();
    let all_before = run_searches(&server, &key);
    server.stop();
    let (ok, source_tenants) = check(&source);
    assert!(ok);
    let file = tmp.path().join("stopped.tar.zst");
    let dumped = dump(&source, &file);
    assert_eq!(dumped["from_copy"], false);
    let target = tmp.path().join("imported-2");
    let imported = import_ok(&file, &target);
    assert_eq!(imported["counts"]["records_by_tenant"], dumped["counts"]["records_by_tenant"]);
    let (ok, tenants) = check(&target);
    assert!(ok);
    assert_eq!(tenants, source_tenants);
    let copy = start(&target);
    assert_eq!(run_searches(&copy, &key), all_before);
    copy.stop();

    // Dumps killed at several moments leave nothing that stops the next one: it clears their
    // staging and `.partial`, and completes.
    let file = tmp.path().join("killed.tar.zst");
    for round in 0..5u64 {
        let mut child = cmd(&source)
            .args(["dump", "--to"])
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(40 + 60 * round));
        let _ = child.kill();
        child.wait().unwrap();
        if file.exists() {
            std::fs::remove_file(&file).unwrap(); // it finished before the kill
        }
    }
    let dumped = dump(&source, &file);
    assert_eq!(dumped["counts"]["records_by_tenant"], imported["counts"]["records_by_tenant"]);
    let left: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|name| name.starts_with(".killed.tar.zst.dump-") || name.ends_with(".partial"))
        .collect();
    assert!(left.is_empty(), "left by killed dumps: {left:?}");
}

/// A cluster (records on Postgres, files on S3, node-local derived stores) dumps through the
/// store interfaces while its node serves, and imports into a data directory with the same
/// searches, files and working key.
#[test]
fn cluster_dump_imports_into_a_data_directory() {
    use common::cluster::{postgres, s3, secret_file};
    let tmp = tempfile::tempdir().unwrap();
    let pg = postgres();
    let database_url = pg.fresh_database("dump");
    let s3 = s3();
    let config = tmp.path().join("cluster.toml");
    std::fs::write(
        &config,
        format!(
            "[store.records]\nbackend = \"postgres\"\nurl = \"{}\"\npool_size = 4\n\
             [cluster]\npoll_interval_ms = 200\nlease_ms = 3000\n[indexer]\npersist_interval_ms = 100\n\
             [store.objects]\nbackend = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\nallow_http = true\n\
             access_key_id_file = \"{}\"\nsecret_access_key_file = \"{}\"\n",
            database_url,
            s3.endpoint,
            s3.create_bucket("dump"),
            secret_file(tmp.path(), "s3-access", &s3.access_key).display(),
            secret_file(tmp.path(), "s3-secret", &s3.secret_key).display(),
        ),
    )
    .unwrap();
    let node_dir = tmp.path().join("node-a");
    let mut node_cmd = cmd(&node_dir);
    node_cmd.arg("--config").arg(&config).env("NEXUS__CLUSTER__NODE_ID", "node-a");
    let node = Arc::new(Server::start_command(node_cmd, |_| {}));
    node.wait_ready();
    let key = seed(&node);
    let dump_to = |name: &str| {
        let file = tmp.path().join(name);
        let (code, stdout, stderr) = exec(
            cmd(&tmp.path().join("dumper")).arg("--config").arg(&config).args(["dump", "--json", "--to"]).arg(&file),
        );
        assert_eq!(code, 0, "{stderr}");
        let dumped: Value = serde_json::from_str(&stdout).unwrap();
        assert!(dumped["source"].as_str().unwrap().starts_with("cluster"), "{dumped:#}");
        assert_eq!(dumped["objects"], 4, "every document's original, from S3");
        (file, dumped)
    };

    // Under writes: a consistent snapshot holding every write acknowledged before it began.
    let writer = Writer::start(node.clone());
    let acked_before = writer.acked();
    let (file, dumped) = dump_to("cluster.tar.zst");
    writer.stop();
    let target = tmp.path().join("imported");
    let imported = import_ok(&file, &target);
    assert_eq!(imported["counts"], dumped["counts"]);
    let (ok, _) = check(&target);
    assert!(ok);
    let server = start(&target);
    let carol = carol(&server);
    for text in &acked_before {
        assert!(carol.contains(text), "`{text}` was acknowledged before the dump but is missing");
    }
    server.stop();

    // Searches: the same answers as the node gave for the same data. (Keyword statistics cover
    // the whole index, so the writes that land while a dump runs shift every score a little;
    // the comparison is made on a node that is not being written to.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status: Value =
            client().get(node.url("/api/v1/status")).bearer_auth(MASTER).send().unwrap().json().unwrap();
        if status["indexers"].as_array().unwrap().iter().all(|i| i["lag"] == 0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the node's indexers did not catch up: {status}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let before = run_searches(&node, &key);
    let (file, dumped) = dump_to("cluster-still.tar.zst");
    Arc::try_unwrap(node).ok().unwrap().stop();
    let target = tmp.path().join("imported-still");
    let imported = import_ok(&file, &target);
    assert_eq!(imported["counts"], dumped["counts"]);
    let server = start(&target);
    assert_eq!(run_searches(&server, &key), before);
    server.stop();
}

/// The entries of a dump, in order.
fn entries(file: &Path) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(zstd::Decoder::new(std::fs::File::open(file).unwrap()).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().to_string();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

/// Writes entries as a dump; with `manifest`, the manifest is recomputed to match them.
fn write_dump(file: &Path, entries: &[(String, Vec<u8>)], manifest: bool) {
    let mut builder = tar::Builder::new(zstd::Encoder::new(std::fs::File::create(file).unwrap(), 3).unwrap());
    let mut listed = Vec::new();
    for (name, bytes) in entries {
        let bytes = if manifest && name == "MANIFEST.json" {
            serde_json::to_vec(&json!({"files": listed})).unwrap()
        } else {
            bytes.clone()
        };
        if name != "MANIFEST.json" {
            listed
                .push(json!({"path": name, "size": bytes.len(), "sha256": hex::encode(sha2::Sha256::digest(&bytes))}));
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        // Bypass the builder's own path checks, to write hostile names.
        let raw = header.as_old_mut();
        raw.name = [0; 100];
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        builder.append(&header, bytes.as_slice()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
}

fn with_header(entries: &[(String, Vec<u8>)], change: impl Fn(&mut Value)) -> Vec<(String, Vec<u8>)> {
    let mut out = entries.to_vec();
    let mut header: Value = serde_json::from_slice(&out[0].1).unwrap();
    change(&mut header);
    out[0].1 = serde_json::to_vec(&header).unwrap();
    out
}

/// Imports `file` into a new directory and expects a refusal mentioning `message`, with nothing
/// left behind.
fn refused(file: &Path, message: &str, exit: i32) {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("target");
    let (code, _, stderr) = import(file, &dir);
    assert_eq!(code, exit, "{}: {stderr}", file.display());
    assert!(message.split('|').any(|m| stderr.contains(m)), "expected `{message}` in: {stderr}");
    let left: Vec<_> = std::fs::read_dir(parent.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "the refused import left {left:?}");
}

#[test]
fn broken_and_hostile_dumps_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = fixtures().join(format!("v{}", nexus::dump::CURRENT_FORMAT)).join("dump.tar.zst");
    let good = entries(&fixture);
    assert_eq!(good.first().unwrap().0, "DUMP.json");
    assert_eq!(good.last().unwrap().0, "MANIFEST.json");
    let at = |name: &str| tmp.path().join(name);

    write_dump(&at("newer"), &with_header(&good, |h| h["dump_format"] = json!(99)), true);
    refused(&at("newer"), "dump format 99, newer than this nexus reads", 1);

    write_dump(&at("embedder"), &with_header(&good, |h| h["embedder"]["model"] = json!("another-model")), true);
    refused(&at("embedder"), "configured embedder", 2);

    write_dump(&at("not-a-dump"), &with_header(&good, |h| h["kind"] = json!("something-else")), true);
    refused(&at("not-a-dump"), "not a Nexus dump", 1);

    let bytes = std::fs::read(&fixture).unwrap();
    for cut in [bytes.len() / 10, bytes.len() / 2, bytes.len() - 200, bytes.len() - 1] {
        std::fs::write(at("truncated"), &bytes[..cut]).unwrap();
        refused(&at("truncated"), "truncated or corrupt|has no manifest", 1);
    }
    for offset in [100, bytes.len() / 3, bytes.len() / 2, bytes.len() * 3 / 4, bytes.len() - 20] {
        let mut flipped = bytes.clone();
        flipped[offset] ^= 0x10;
        std::fs::write(at("flipped"), &flipped).unwrap();
        let (code, _, stderr) = import(&at("flipped"), &tmp.path().join(format!("flipped-{offset}")));
        assert_eq!(code, 1, "a byte flipped at {offset} was not noticed: {stderr}");
        assert!(!tmp.path().join(format!("flipped-{offset}")).exists());
    }

    // A member changed behind the manifest's back.
    let mut changed = good.clone();
    let records = changed.iter_mut().find(|(n, _)| n == "records.jsonl").unwrap();
    records.1 = String::from_utf8(records.1.clone()).unwrap().replace("estuar", "ESTUAR").into_bytes();
    write_dump(&at("changed"), &changed, false);
    refused(&at("changed"), "does not match the SHA-256 in the manifest", 1);

    // A missing manifest, an entry it does not list, entries after it.
    write_dump(&at("no-manifest"), &good[..good.len() - 1], false);
    refused(&at("no-manifest"), "has no manifest", 1);
    let mut extra = good.clone();
    extra.insert(2, ("objects/default/extra".into(), b"unlisted".to_vec()));
    write_dump(&at("unlisted"), &extra, false);
    refused(&at("unlisted"), "not in its manifest", 1);

    // Path traversal and absolute paths (in the manifest too, so only the path is wrong).
    for (name, message) in [("../escaped.txt", "climbs out"), ("/tmp/absolute.txt", "absolute path")] {
        let mut hostile = good.clone();
        hostile.insert(1, (name.to_string(), b"hostile".to_vec()));
        write_dump(&at("hostile"), &hostile, true);
        refused(&at("hostile"), message, 1);
    }
    assert!(!tmp.path().join("escaped.txt").exists());

    // A symbolic link.
    {
        let mut builder = tar::Builder::new(zstd::Encoder::new(std::fs::File::create(at("link")).unwrap(), 3).unwrap());
        let mut header = tar::Header::new_gnu();
        header.set_size(good[0].1.len() as u64);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o600);
        builder.append_data(&mut header, "DUMP.json", good[0].1.as_slice()).unwrap();
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        builder.append_link(&mut link, "records.jsonl", "/etc/passwd").unwrap();
        builder.into_inner().unwrap().finish().unwrap();
    }
    refused(&at("link"), "symbolic link", 1);

    // Targets: a directory holding something else, and one holding Nexus data.
    let occupied = tmp.path().join("occupied");
    std::fs::create_dir_all(&occupied).unwrap();
    std::fs::write(occupied.join("notes.txt"), "mine").unwrap();
    let (code, _, stderr) = import(&fixture, &occupied);
    assert_eq!(code, 1);
    assert!(stderr.contains("is not empty"), "{stderr}");
    assert_eq!(std::fs::read_dir(&occupied).unwrap().count(), 1);
    let full = tmp.path().join("full");
    import_ok(&fixture, &full);
    let (code, _, stderr) = import(&fixture, &full);
    assert_eq!(code, 1);
    assert!(stderr.contains("a Nexus data directory with"), "{stderr}");

    // A fresh install that started once holds no data: the import replaces it, keeping its
    // master key.
    let fresh = tmp.path().join("fresh");
    let server = Server::start(&fresh);
    server.wait_ready();
    server.stop();
    let master = std::fs::read(fresh.join("master.key")).ok();
    let imported = import_ok(&fixture, &fresh);
    assert_eq!(imported["replaced_empty_install"], true);
    assert_eq!(std::fs::read(fresh.join("master.key")).ok(), master);
    let (ok, _) = check(&fresh);
    assert!(ok);
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
