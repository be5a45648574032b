//! The knowledge base under crashes and hostile input, over HTTP against the real binary.
//!
//! 1. Uploaders ingest BEIR SciFact documents while the server is killed with SIGKILL at random
//!    moments; after the last restart every acknowledged document is listed, found by keyword and
//!    by semantic search, and every derived store agrees with the record (`/admin/check`, then
//!    `nexus check`).
//! 2. Corrupt, empty, oversized, mistyped, non-UTF-8 and deeply nested inputs are refused with
//!    their stable error codes, nothing of them is kept, and the server keeps serving.

use crate::common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, client, nexus, run};
use rand::Rng;
use serde_json::{Value, json};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/datasets/beir-scifact/corpus.jsonl");
/// How many SciFact documents are ingested, each as its own upload. Each is a whole abstract
/// (about 200 words, two chunks); the real embedder runs, so this bounds the test's time.
const DOCS: usize = 120;
/// One in this many documents is also looked up by semantic search (each costs an embedding);
/// `/admin/check` compares every vector with the record.
const SEMANTIC_EVERY: usize = 3;
const UPLOADERS: usize = 3;
/// Rounds that end in a SIGKILL; one more, uninterrupted, ingests whatever is left.
const KILL_ROUNDS: usize = 4;

#[derive(Clone, Debug)]
struct Doc {
    id: String,
    title: String,
    text: String,
    collection: String,
}

impl Doc {
    /// A token found in no other document: it is in the title, so every chunk carries it.
    fn marker(&self) -> String {
        format!("sfdoc{}", self.id)
    }
    fn source(&self) -> String {
        format!("{}.txt", self.id)
    }
}

fn corpus() -> Vec<Doc> {
    let text = std::fs::read_to_string(CORPUS).unwrap_or_else(|e| panic!("read {CORPUS}: {e}"));
    text.lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|d| !d["text"].as_str().unwrap_or_default().trim().is_empty())
        .take(DOCS)
        .enumerate()
        .map(|(i, d)| {
            let id = d["_id"].as_str().unwrap().to_string();
            Doc {
                title: format!("sfdoc{id} {}", d["title"].as_str().unwrap_or_default()),
                text: d["text"].as_str().unwrap().to_string(),
                collection: format!("scifact-{}", i % UPLOADERS),
                id,
            }
        })
        .collect()
}

/// Acknowledged documents: SciFact id → the Nexus document id the server answered with.
type Acked = Arc<Mutex<HashMap<String, String>>>;

/// Ingests from the shared queue until it is empty or the server dies. `POST /documents/text`
/// answers 201 only after the document, its chunks and their vectors are committed in one
/// record-store transaction (`Documents::write_version` → `WriteLog::write`), so a 201 is the
/// acknowledgement. (A multipart upload's 202 only says the file was queued.)
/// Returns whether a request was cut off by the kill.
fn uploader(base: String, queue: Arc<Mutex<VecDeque<Doc>>>, acked: Acked, deadline: Instant) -> bool {
    let c = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let mut overloaded = 0;
    while Instant::now() < deadline {
        let Some(doc) = queue.lock().unwrap().pop_front() else { return false };
        let body = json!({"text": doc.text, "source": doc.source(), "collection": doc.collection,
                          "title": doc.title, "tags": ["scifact"]});
        match c.post(format!("{base}/api/v1/documents/text")).json(&body).send() {
            Ok(r) if r.status() == 201 => {
                let r: Value = r.json().unwrap();
                let outcome = &r["documents"][0];
                // "unchanged": an earlier attempt landed but its answer was lost in a kill.
                assert!(outcome["outcome"] == "created" || outcome["outcome"] == "unchanged", "{r}");
                let document_id = outcome["document"]["id"].as_str().unwrap().to_string();
                acked.lock().unwrap().insert(doc.id.clone(), document_id);
            }
            Ok(r) if r.status() == 503 && overloaded < 50 => {
                overloaded += 1;
                queue.lock().unwrap().push_back(doc);
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(r) => panic!("ingesting {} refused with {}: {:?}", doc.id, r.status(), r.text()),
            Err(_) => {
                // The server died mid-request: the document may or may not have landed. Not
                // acknowledged, so it goes again after the restart.
                queue.lock().unwrap().push_front(doc);
                return true;
            }
        }
    }
    false
}

/// Every document, a page at a time.
fn list_all(server: &Server) -> Vec<Value> {
    let c = client();
    let mut all = Vec::new();
    let mut after: Option<u64> = None;
    for _ in 0..100 {
        let url = match after {
            Some(a) => server.url(&format!("/api/v1/documents?limit=100&after={a}")),
            None => server.url("/api/v1/documents?limit=100"),
        };
        let page: Value = c.get(url).send().unwrap().json().unwrap();
        all.extend(page["documents"].as_array().unwrap_or_else(|| panic!("{page}")).iter().cloned());
        match page["next_after"].as_u64() {
            Some(a) => after = Some(a),
            None => return all,
        }
    }
    panic!("more than 100 pages of documents");
}

fn search(server: &Server, body: Value) -> Vec<Value> {
    let r = client().post(server.url("/api/v1/search")).json(&body).send().unwrap();
    assert_eq!(r.status(), 200);
    let r: Value = r.json().unwrap();
    r["results"].as_array().unwrap_or_else(|| panic!("{r}")).clone()
}

fn admin_check(server: &Server) {
    let report: Value = client().get(server.url("/api/v1/admin/check")).send().unwrap().json().unwrap();
    assert_eq!(report["ok"], true, "derived stores diverge from the record: {report:#}");
}

/// Every acknowledged document is listed and in every derived store; with `search`, each is also
/// found by keyword (all its chunks, nothing else), and one in [`SEMANTIC_EVERY`] by semantic
/// search.
fn verify(server: &Server, docs: &HashMap<String, Doc>, acked: &HashMap<String, String>, deep: bool) {
    let listed: HashMap<String, Value> =
        list_all(server).into_iter().map(|d| (d["id"].as_str().unwrap().to_string(), d)).collect();
    for (sf_id, document_id) in acked {
        let doc = &docs[sf_id];
        let listed = listed.get(document_id).unwrap_or_else(|| panic!("acknowledged document {sf_id} is not listed"));
        assert_eq!(listed["title"], doc.title.as_str());
        assert_eq!(listed["collection"], doc.collection.as_str());
        assert_eq!(listed["source"], doc.source());
        assert_eq!(listed["version"], 1, "the same bytes again never make a new version: {listed}");
    }
    admin_check(server);
    if !deep {
        return;
    }
    let mut acked: Vec<(&String, &String)> = acked.iter().collect();
    acked.sort();
    for (n, (sf_id, document_id)) in acked.into_iter().enumerate() {
        let doc = &docs[sf_id];
        let chunks = listed[document_id]["chunks"].as_u64().unwrap() as usize;
        assert!(chunks >= 1);
        let filters = json!({"collection": doc.collection});
        let hits = search(server, json!({"query": doc.marker(), "mode": "keyword", "filters": filters, "top_k": 100}));
        assert_eq!(hits.len(), chunks, "keyword search on {} finds each of its chunks once: {hits:#?}", doc.marker());
        assert!(hits.iter().all(|h| h["document_id"] == document_id.as_str()), "only {sf_id}'s chunks: {hits:#?}");
        let ordinals: HashSet<&str> = hits.iter().map(|h| h["chunk_id"].as_str().unwrap()).collect();
        assert_eq!(ordinals.len(), chunks);
        if n % SEMANTIC_EVERY != 0 {
            continue;
        }
        // The vector store: the chunk's own text finds it among its collection's nearest.
        let text = hits[0]["text"].as_str().unwrap();
        let near = search(server, json!({"query": text, "mode": "semantic", "filters": filters, "top_k": 10}));
        assert!(
            near.iter().any(|h| h["document_id"] == document_id.as_str()),
            "semantic search does not find {sf_id}: {near:#?}"
        );
        assert!(near.iter().all(|h| h["collection"] == doc.collection.as_str()));
    }
}

#[test]
fn acknowledged_documents_survive_sigkill() {
    let started = Instant::now();
    let all = corpus();
    assert_eq!(all.len(), DOCS, "the corpus has enough documents with text");
    let docs: HashMap<String, Doc> = all.iter().map(|d| (d.id.clone(), d.clone())).collect();
    let queue = Arc::new(Mutex::new(all.iter().cloned().collect::<VecDeque<_>>()));
    let acked: Acked = Arc::default();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut rng = rand::rng();
    let mut cut_off = 0;
    let deadline = started + Duration::from_secs(300);
    for round in 0..=KILL_ROUNDS {
        let server = Server::start_with(&data, |cmd| {
            // Persist often so kills land in every phase: mid-batch, mid-commit, mid-save.
            cmd.env("NEXUS__INDEXER__PERSIST_INTERVAL_MS", "50");
        });
        server.wait_ready();
        // What was acknowledged before the crash is all there, and the derived stores agree.
        verify(&server, &docs, &acked.lock().unwrap(), false);
        let before = acked.lock().unwrap().len();
        let round_started = Instant::now();
        let handles: Vec<_> = (0..UPLOADERS)
            .map(|_| {
                let (base, queue, acked) = (server.url(""), queue.clone(), acked.clone());
                std::thread::spawn(move || uploader(base, queue, acked, deadline))
            })
            .collect();
        let last = round == KILL_ROUNDS;
        let server = if last {
            Some(server)
        } else {
            // Kill while ingestion is in full swing: once this round has had a few documents
            // acknowledged, after a random extra delay.
            let target = before + rng.random_range(2..=8);
            let waited = Instant::now();
            while acked.lock().unwrap().len() < target && waited.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(rng.random_range(0..1500)));
            server.kill9();
            None
        };
        let cut: usize = handles.into_iter().map(|h| h.join().unwrap() as usize).sum();
        cut_off += cut;
        eprintln!(
            "round {round}: {} acknowledged in {:?}, {cut} requests cut off",
            acked.lock().unwrap().len() - before,
            round_started.elapsed(),
        );
        let Some(server) = server else { continue };
        assert!(queue.lock().unwrap().is_empty(), "every document was ingested in time");
        let acked = acked.lock().unwrap();
        assert_eq!(acked.len(), DOCS);
        // Once more from a fresh start, so what is checked is what a restart recovers.
        server.kill9();
        let verified = Instant::now();
        let server = Server::start(&data);
        server.wait_ready();
        verify(&server, &docs, &acked, true);
        // Nothing beyond the acknowledged documents, and each collection counts its own.
        assert_eq!(list_all(&server).len(), DOCS);
        let cols: Value = client().get(server.url("/api/v1/collections")).send().unwrap().json().unwrap();
        for i in 0..UPLOADERS {
            let name = format!("scifact-{i}");
            let expected = all.iter().filter(|d| d.collection == name).count();
            let col = cols["collections"].as_array().unwrap().iter().find(|c| c["name"] == name.as_str());
            assert_eq!(col.map(|c| c["documents"].clone()), Some(json!(expected)), "{cols}");
        }
        eprintln!("restarted and verified {DOCS} documents in {:?}", verified.elapsed());
        assert_eq!(server.stop().code(), Some(0));
    }
    assert!(cut_off > 0, "at least one kill landed while documents were being ingested");
    let out = run(nexus(&data).arg("check"));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("total {:?}", started.elapsed());
}

// -------------------------------------------------------------------------------------------------

const LIMIT: usize = 32 * 1024;
const BODY_LIMIT: usize = 256 * 1024;

fn file_form(files: &[(&str, Vec<u8>)]) -> reqwest::blocking::multipart::Form {
    let mut form = reqwest::blocking::multipart::Form::new();
    for (name, bytes) in files {
        form = form.part("file", reqwest::blocking::multipart::Part::bytes(bytes.clone()).file_name(name.to_string()));
    }
    form.text("collection", "hostile")
}

/// Asserts the status and stable code of an error answer.
fn refused(r: reqwest::blocking::Response, status: u16, code: &str) -> Value {
    let got = r.status().as_u16();
    let body: Value = r.json().unwrap_or_else(|e| panic!("a {got} answer without a JSON body: {e}"));
    assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{body}");
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    body
}

/// A multipart upload, waited for: one job per file.
fn upload(server: &Server, files: &[(&str, Vec<u8>)]) -> Vec<Value> {
    let r = client().post(server.url("/api/v1/documents?wait=true")).multipart(file_form(files)).send().unwrap();
    assert_eq!(r.status(), 202);
    let r: Value = r.json().unwrap();
    r["jobs"].as_array().unwrap().clone()
}

/// A multipart upload whose one file is read, and refused by its ingestion job with the error's
/// stable code (`unsupported_format` when the kind of file is not known, else `corrupt_document`).
fn upload_fails(server: &Server, name: &str, bytes: Vec<u8>, says: &str) {
    let jobs = upload(server, &[(name, bytes)]);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["state"], "failed", "{name}: {jobs:?}");
    let error = jobs[0]["error"].as_str().unwrap();
    assert!(error.contains(says), "{name}: {error:?} does not say {says:?}");
    let code = if says == "supported" { "unsupported_format" } else { "corrupt_document" };
    assert_eq!(jobs[0]["error_code"], code, "{name}: {jobs:?}");
}

fn post_text(server: &Server, body: Value) -> reqwest::blocking::Response {
    client().post(server.url("/api/v1/documents/text")).json(&body).send().unwrap()
}

fn post_raw(server: &Server, path: &str, content_type: &str, body: Vec<u8>) -> reqwest::blocking::Response {
    client().post(server.url(path)).header("content-type", content_type).body(body).send().unwrap()
}

fn objects(server: &Server, prefix: &str) -> usize {
    let r: Value =
        client().get(server.url(&format!("/api/v1/objects?prefix={prefix}"))).send().unwrap().json().unwrap();
    r["objects"].as_array().unwrap_or_else(|| panic!("{r}")).len()
}

/// What is stored: document ids, originals, uploads waiting for a job.
fn stored(server: &Server) -> (Vec<String>, usize, usize) {
    let ids = list_all(server).iter().map(|d| d["id"].as_str().unwrap().to_string()).collect();
    (ids, objects(server, "originals/"), objects(server, "uploads/"))
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn hostile_documents_are_refused_with_stable_codes_and_the_server_keeps_serving() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(&tmp.path().join("data"), |cmd| {
        cmd.env("NEXUS__KNOWLEDGE__MAX_UPLOAD_BYTES", LIMIT.to_string());
        cmd.env("NEXUS__SERVER__BODY_LIMIT_BYTES", BODY_LIMIT.to_string());
    });
    server.wait_ready();
    let first = upload(&server, &[("first.md", b"# Compost\n\nTurn the heap every fortnight.".to_vec())]);
    assert_eq!(first[0]["state"], "succeeded", "{first:?}");
    let baseline = stored(&server);
    assert_eq!((baseline.0.len(), baseline.1, baseline.2), (1, 1, 0));
    let unchanged = |what: &str| assert_eq!(stored(&server), baseline, "{what} left something behind");

    // Corrupt PDFs: a truncated real one, and a header followed by garbage.
    let truncated =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/documents/corrupt-truncated.pdf")).unwrap();
    upload_fails(&server, "truncated.pdf", truncated, "pdf");
    let mut garbage = b"%PDF-1.7\n".to_vec();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    garbage.extend((0..4000).map(|_| {
        // A fixed pseudo-random sequence, so a failure can be reproduced.
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 56) as u8
    }));
    upload_fails(&server, "garbage.pdf", garbage.clone(), "pdf");
    // Recognised by its magic bytes without an extension, and refused the same way.
    upload_fails(&server, "garbage", garbage, "pdf");
    refused(
        post_text(&server, json!({"text": "%PDF-1.7\n1 0 obj << /Kids [", "source": "x.pdf"})),
        422,
        "corrupt_document",
    );
    unchanged("a corrupt pdf");

    // Zero bytes.
    upload_fails(&server, "empty.txt", Vec::new(), "no extractable text");
    upload_fails(&server, "empty.pdf", Vec::new(), "pdf");
    refused(post_text(&server, json!({"text": "", "source": "empty.txt"})), 422, "corrupt_document");
    refused(post_text(&server, json!({"text": " \n\n\t ", "source": "blank.md"})), 422, "corrupt_document");
    unchanged("an empty file");

    // Over the limits: one file too large; a good file followed by one too large (the whole
    // request is refused, the good one included); a JSON body over server.body_limit_bytes.
    let big = vec![b'a'; LIMIT + 1000];
    let r = client().post(server.url("/api/v1/documents?wait=true")).multipart(file_form(&[("big.txt", big.clone())]));
    refused(r.send().unwrap(), 413, "payload_too_large");
    let both = file_form(&[("small.txt", b"a small note about mulch".to_vec()), ("big.txt", big)]);
    let r = client().post(server.url("/api/v1/documents?wait=true")).multipart(both).send().unwrap();
    refused(r, 413, "payload_too_large");
    let over_upload_limit = "word ".repeat(LIMIT / 4);
    assert!(over_upload_limit.len() > LIMIT && over_upload_limit.len() < BODY_LIMIT);
    refused(post_text(&server, json!({"text": over_upload_limit, "source": "long.txt"})), 413, "payload_too_large");
    let huge = "word ".repeat(BODY_LIMIT / 4);
    refused(post_text(&server, json!({"text": huge, "source": "huge.txt"})), 413, "payload_too_large");
    unchanged("an oversized upload");

    // Wrong content types.
    refused(
        post_raw(&server, "/api/v1/documents/text", "text/plain", br#"{"text": "hi", "source": "a.txt"}"#.to_vec()),
        400,
        "invalid_json",
    );
    refused(
        post_raw(&server, "/api/v1/documents", "application/json", br#"{"text": "hi", "source": "a.txt"}"#.to_vec()),
        400,
        "invalid_request",
    );
    refused(
        post_raw(&server, "/api/v1/documents", "multipart/form-data; boundary=XYZ", b"--XYZ\r\nnot a part".to_vec()),
        400,
        "invalid_request",
    );
    upload_fails(
        &server,
        "picture.png",
        vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13],
        "supported",
    );
    upload_fails(&server, "archive.zip", b"PK\x03\x04 not a word document".to_vec(), "supported");
    refused(post_text(&server, json!({"text": "hello", "source": "picture.png"})), 415, "unsupported_format");
    refused(post_text(&server, json!({"text": "hello", "source": "a", "content_type": "exe"})), 400, "invalid_request");
    // A good file with a bad field after it: refused as a whole.
    let form = file_form(&[("ok.txt", b"a note about leeks".to_vec())]).text("colour", "green");
    let r = client().post(server.url("/api/v1/documents?wait=true")).multipart(form).send().unwrap();
    refused(r, 400, "invalid_request");
    unchanged("a wrong content type");

    // Invalid UTF-8: a file that is mostly not text is refused; a JSON body is not JSON.
    let binary: Vec<u8> = (0..2000).map(|i| [0xC3, 0x28, 0xA0, 0xA1, 0xE2, 0x28, 0xF0, 0x80][i % 8]).collect();
    upload_fails(&server, "binary.txt", binary, "not UTF-8");
    let mut body = br#"{"text": "caf"#.to_vec();
    body.extend([0xE9, 0xFF, 0xFE]);
    body.extend(br#"", "source": "latin1.txt"}"#);
    refused(post_raw(&server, "/api/v1/documents/text", "application/json", body), 400, "invalid_json");
    unchanged("invalid UTF-8");

    // Deep nesting: 10,000 levels in a JSON body (the whole body, and inside `metadata`), in an
    // uploaded .json file and in JSON text.
    let deep = nested(10_000);
    refused(
        post_raw(&server, "/api/v1/documents/text", "application/json", deep.clone().into_bytes()),
        400,
        "invalid_json",
    );
    let body = format!(
        r#"{{"text": "deep", "source": "deep.txt", "metadata": {}{}{}}}"#,
        r#"{"a": "#.repeat(10_000),
        "1",
        "}".repeat(10_000)
    );
    refused(post_raw(&server, "/api/v1/documents/text", "application/json", body.into_bytes()), 400, "invalid_json");
    let deep_file = format!(r#"{{"text": "a record", "nested": {deep}}}"#);
    assert!(deep_file.len() < LIMIT);
    upload_fails(&server, "deep.json", deep_file.clone().into_bytes(), "invalid JSON");
    upload_fails(&server, "deep.jsonl", deep_file.clone().into_bytes(), "not valid JSON");
    refused(post_text(&server, json!({"text": deep_file, "source": "deep.json"})), 422, "corrupt_document");
    unchanged("deeply nested JSON");

    // Deeply nested markup is readable: its text is kept, its structure flattened.
    // (Within knowledge.max_upload_bytes: 2,500 levels of HTML; tests/knowledge_parse.rs goes deeper.)
    let html = format!("<html><body>{}deep hyacinth{}</body></html>", "<div>".repeat(2_500), "</div>".repeat(2_500));
    let markdown = format!("{} deep crocus\n", ">".repeat(10_000));
    for (source, text) in [("deep.html", html), ("deep.md", markdown)] {
        let r = post_text(&server, json!({"text": text, "source": source, "collection": "hostile"}));
        assert_eq!(r.status(), 201, "{source}: {:?}", r.text());
    }

    // Still serving: health, a normal upload, and both are searchable.
    assert_eq!(client().get(server.url("/health")).send().unwrap().status(), 200);
    let jobs = upload(&server, &[("after.txt", b"Rhubarb crowns are divided in late winter.".to_vec())]);
    assert_eq!(jobs[0]["state"], "succeeded", "{jobs:?}");
    // A file name that says nothing: the part's content type decides the format.
    let part = reqwest::blocking::multipart::Part::bytes(b"# Sorrel\n\nSorrel returns every spring.".to_vec())
        .file_name("README")
        .mime_str("text/markdown")
        .unwrap();
    let form = reqwest::blocking::multipart::Form::new().part("file", part).text("collection", "hostile");
    let r: Value =
        client().post(server.url("/api/v1/documents?wait=true")).multipart(form).send().unwrap().json().unwrap();
    assert_eq!(r["jobs"][0]["state"], "succeeded", "{r}");
    assert_eq!(r["jobs"][0]["result"]["documents"][0]["document"]["format"], "markdown", "{r}");
    // Invalid UTF-8 in an otherwise readable file is replaced, not refused.
    let mut latin1 = b"Leeks are blanched with earth in autumn; caf".to_vec();
    latin1.extend([0xE9]);
    latin1.extend(b" gardens grow them too.");
    let jobs = upload(&server, &[("latin1.txt", latin1)]);
    assert_eq!(jobs[0]["state"], "succeeded", "{jobs:?}");
    for (query, word) in
        [("rhubarb crowns", "Rhubarb"), ("blanched leeks", "\u{FFFD}"), ("hyacinth", "hyacinth"), ("crocus", "crocus")]
    {
        let hits = search(&server, json!({"query": query, "mode": "keyword", "filters": {"collection": "hostile"}}));
        assert!(hits.first().is_some_and(|h| h["text"].as_str().unwrap().contains(word)), "{query}: {hits:#?}");
    }
    let (ids, _, uploads) = stored(&server);
    assert_eq!(ids.len(), baseline.0.len() + 5, "only the good uploads became documents");
    assert_eq!(uploads, 0, "every upload was consumed or dropped");
    admin_check(&server);
    assert_eq!(server.stop().code(), Some(0));
    eprintln!("total {:?}", started.elapsed());
}
