//! End-to-end: the real binary, over real sockets.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Server, client, nexus, run};
use serde_json::{Value, json};

fn vector(i: usize) -> Vec<f32> {
    let mut v = vec![0.01f32; 384];
    v[i % 384] = 1.0;
    v
}

#[test]
fn serves_ops_endpoints_and_ui() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    server.wait_ready();
    let c = client();

    let health: Value = c.get(server.url("/health")).send().unwrap().json().unwrap();
    assert_eq!(health["status"], "ok");
    let ready = c.get(server.url("/ready")).send().unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["indexers"].as_array().unwrap().len(), 3);

    let openapi: Value = c.get(server.url("/openapi.json")).send().unwrap().json().unwrap();
    let paths = openapi["paths"].as_object().unwrap();
    for path in [
        "/health",
        "/ready",
        "/metrics",
        "/api/v1/records",
        "/api/v1/records/{id}",
        "/api/v1/graph/path",
        "/api/v1/objects/{key}",
    ] {
        assert!(paths.contains_key(path), "openapi lacks {path}");
    }

    let ui = c.get(server.url("/")).send().unwrap();
    assert_eq!(ui.status(), 200);
    assert!(ui.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(ui.text().unwrap().contains("Nexus"));
    let js = c.get(server.url("/app.js")).send().unwrap();
    assert_eq!(js.status(), 200);
    assert!(js.headers()["content-type"].to_str().unwrap().contains("javascript"));

    let status: Value = c.get(server.url("/api/v1/status")).send().unwrap().json().unwrap();
    let stores: Vec<&str> = status["stores"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(stores, vec!["records", "text", "vectors", "graph", "objects"]);

    let missing = c.get(server.url("/api/v1/nothing")).send().unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().unwrap();
    assert_eq!(body["error"]["code"], "route_not_found");
    let wrong_method = c.patch(server.url("/health")).send().unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(wrong_method.json::<Value>().unwrap()["error"]["code"], "method_not_allowed");

    // Metrics: requests by route and status, store sizes, indexer lag, memory.
    let metrics = c.get(server.url("/metrics")).send().unwrap().text().unwrap();
    for name in [
        "nexus_http_requests_total",
        "nexus_http_request_duration_seconds_bucket",
        "nexus_store_items",
        "nexus_store_bytes",
        "nexus_indexer_lag",
        "nexus_process_resident_memory_bytes",
        "nexus_ready",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}:\n{metrics}");
    }
    assert!(metrics.contains("route=\"/health\""), "{metrics}");
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn serves_the_memories_page() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    server.wait_ready();
    let c = client();

    // The router links the page, and the page module is served as JavaScript under the strict CSP.
    let app = c.get(server.url("/app.js")).send().unwrap().text().unwrap();
    assert!(app.contains("'./pages/memories.js'"), "app.js does not route to the memories page");
    let page = c.get(server.url("/pages/memories.js")).send().unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert!(headers["content-type"].to_str().unwrap().contains("javascript"), "{:?}", headers["content-type"]);
    assert!(headers["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    let page = page.text().unwrap();
    assert!(page.contains("export function mount"));
    for call in ["/memories/scopes", "/memories/search", "/history"] {
        assert!(page.contains(call), "the memories page lacks {call}");
    }
    let css = c.get(server.url("/styles.css")).send().unwrap();
    assert!(css.headers()["content-type"].to_str().unwrap().starts_with("text/css"));
    assert!(css.text().unwrap().contains(".memories-layout"));

    // What the page reads: scopes and a page of memories in the shapes it expects.
    let added: Value = c
        .post(server.url("/api/v1/memories"))
        .json(&json!({"text": "Prefers tea over coffee", "user_id": "alice", "infer": false}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(added["results"][0]["event"], "ADD");
    let scopes: Value = c.get(server.url("/api/v1/memories/scopes")).send().unwrap().json().unwrap();
    assert_eq!(scopes["scopes"], json!([{"type": "user", "name": "alice", "memories": 1}]));
    let list: Value = c
        .get(server.url("/api/v1/memories?user_id=alice&show_expired=false&offset=0&limit=25"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!((list["total"].as_u64(), list["offset"].as_u64()), (Some(1), Some(0)));
    assert_eq!(list["memories"][0]["memory"], "Prefers tea over coffee");
}

/// Every file of `web/src` is served at its path, byte for byte, with a type browsers accept
/// (ES modules need a JavaScript type).
#[test]
fn the_ui_is_served_from_web_src() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/src");
    let mut stack = vec![root.clone()];
    let mut served = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
            let response = client().get(server.url(&format!("/{name}"))).send().unwrap();
            assert_eq!(response.status(), 200, "/{name}");
            let kind = response.headers()["content-type"].to_str().unwrap().to_string();
            if name.ends_with(".js") {
                assert!(kind.contains("javascript"), "/{name} is served as {kind}");
            }
            assert_eq!(response.bytes().unwrap().as_ref(), std::fs::read(&path).unwrap().as_slice(), "/{name}");
            served += 1;
        }
    }
    assert!(served >= 5, "only {served} files in web/src");
    let index = client().get(server.url("/")).send().unwrap().text().unwrap();
    assert_eq!(index, std::fs::read_to_string(root.join("index.html")).unwrap());
}

#[test]
fn writes_are_readable_searchable_and_deletable() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    server.wait_ready();
    let c = client();

    let ada = json!({"id": "ada", "kind": "entity", "title": "Ada Lovelace", "body": "Ada wrote the first published algorithm.",
                     "tags": ["person"], "vector": vector(1), "graph": {"type": "node", "label": "person", "name": "Ada"}});
    let created = c.post(server.url("/api/v1/records?wait=true")).json(&ada).send().unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().unwrap();
    assert_eq!(created["indexed"], true);
    assert_eq!(created["written"][0]["version"], 1);
    let edge = json!({"writes": [
        {"op": "upsert", "record": {"id": "babbage", "kind": "entity", "body": "Charles Babbage designed engines",
                                    "graph": {"type": "node", "label": "person", "name": "Charles Babbage"}}},
        {"op": "upsert", "record": {"id": "rel-1", "kind": "relation",
                                    "graph": {"type": "edge", "label": "worked_with", "source": "ada", "target": "babbage"}}}
    ]});
    let batch: Value =
        c.post(server.url("/api/v1/records/batch?wait=true")).json(&edge).send().unwrap().json().unwrap();
    assert_eq!(batch["written"].as_array().unwrap().len(), 2);
    assert_eq!(batch["indexed"], true);

    // Read-your-writes in every store.
    let got: Value = c.get(server.url("/api/v1/records/ada")).send().unwrap().json().unwrap();
    assert_eq!(got["title"], "Ada Lovelace");
    assert!(got["vector"].is_null(), "vectors only on request");
    let got: Value = c.get(server.url("/api/v1/records/ada?include_vector=true")).send().unwrap().json().unwrap();
    assert_eq!(got["vector"].as_array().unwrap().len(), 384);
    let text: Value = c
        .post(server.url("/api/v1/records/search"))
        .json(&json!({"query": "algorithms"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(text["hits"][0]["id"], "ada", "{text}");
    assert!(!text["hits"][0]["snippet"]["highlights"].as_array().unwrap().is_empty());
    let vec_hits: Value = c
        .post(server.url("/api/v1/records/search"))
        .json(&json!({"vector": vector(1)}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(vec_hits["hits"][0]["id"], "ada");
    let exact: Value = c
        .post(server.url("/api/v1/records/search"))
        .json(&json!({"vector": vector(1), "exact": true}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(exact["hits"][0]["id"], "ada");
    let path: Value = c.get(server.url("/api/v1/graph/path?from=ada&to=babbage")).send().unwrap().json().unwrap();
    assert_eq!(path["path"], json!(["ada", "babbage"]));
    let neighbours: Value =
        c.get(server.url("/api/v1/graph/nodes/babbage/neighbours?direction=in")).send().unwrap().json().unwrap();
    assert_eq!(neighbours["neighbours"][0]["id"], "ada");
    assert_eq!(neighbours["neighbours"][0]["node"]["name"], "Ada");

    // Listing pages.
    let page: Value = c.get(server.url("/api/v1/records?limit=2")).send().unwrap().json().unwrap();
    assert_eq!(page["records"].as_array().unwrap().len(), 2);
    let after = page["next_after"].as_u64().unwrap();
    let page2: Value =
        c.get(server.url(&format!("/api/v1/records?limit=2&after={after}"))).send().unwrap().json().unwrap();
    assert_eq!(page2["records"].as_array().unwrap().len(), 1);
    assert!(page2["next_after"].is_null());

    // Delete removes it from every store.
    let deleted = c.delete(server.url("/api/v1/records/ada?wait=true")).send().unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(c.get(server.url("/api/v1/records/ada")).send().unwrap().status(), 404);
    let text: Value = c
        .post(server.url("/api/v1/records/search"))
        .json(&json!({"query": "algorithm"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(text["hits"].as_array().unwrap().is_empty());
    let vec_hits: Value = c
        .post(server.url("/api/v1/records/search"))
        .json(&json!({"vector": vector(1)}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(vec_hits["hits"].as_array().unwrap().iter().all(|h| h["id"] != "ada"));
    assert_eq!(c.get(server.url("/api/v1/graph/nodes/ada")).send().unwrap().status(), 404);
    assert_eq!(c.delete(server.url("/api/v1/records/ada")).send().unwrap().status(), 404);

    // Objects stream in and out.
    let put: Value =
        c.put(server.url("/api/v1/objects/files/a.txt")).body("hello world").send().unwrap().json().unwrap();
    assert_eq!(put["size"], 11);
    assert_eq!(put["sha256"], "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
    let got = c.get(server.url("/api/v1/objects/files/a.txt")).send().unwrap();
    assert_eq!(got.headers()["content-type"], "text/plain");
    assert_eq!(got.text().unwrap(), "hello world");
    let listed: Value = c.get(server.url("/api/v1/objects?prefix=files/")).send().unwrap().json().unwrap();
    assert_eq!(listed["objects"][0]["key"], "files/a.txt");
    assert_eq!(c.delete(server.url("/api/v1/objects/files/a.txt")).send().unwrap().status(), 204);
    assert_eq!(c.get(server.url("/api/v1/objects/files/a.txt")).send().unwrap().status(), 404);
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn bad_input_gets_clear_errors_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(&tmp.path().join("data"), |cmd| {
        cmd.env("NEXUS__SERVER__BODY_LIMIT_BYTES", "65536");
    });
    server.wait_ready();
    let c = client();
    let ok = json!({"id": "keep", "kind": "note", "body": "kept"});
    assert_eq!(c.post(server.url("/api/v1/records?wait=true")).json(&ok).send().unwrap().status(), 201);

    let cases: Vec<(reqwest::blocking::RequestBuilder, u16, &str)> = vec![
        (
            c.post(server.url("/api/v1/records")).header("content-type", "application/json").body("{not json"),
            400,
            "invalid_json",
        ),
        (c.post(server.url("/api/v1/records")).body("{}"), 400, "invalid_json"),
        (c.post(server.url("/api/v1/records")).json(&json!({"kind": "note", "surprise": 1})), 400, "invalid_json"),
        (c.post(server.url("/api/v1/records")).json(&json!({"kind": "Bad Kind"})), 400, "invalid_request"),
        (
            c.post(server.url("/api/v1/records")).json(&json!({"kind": "note", "vector": [1.0, 2.0]})),
            400,
            "invalid_vector",
        ),
        (c.post(server.url("/api/v1/records")).json(&json!({"kind": "note", "metadata": [1]})), 400, "invalid_request"),
        (
            c.post(server.url("/api/v1/records")).json(&json!({"kind": "note", "body": "x".repeat(70_000)})),
            413,
            "payload_too_large",
        ),
        (c.get(server.url("/api/v1/records?limit=0")), 400, "invalid_request"),
        (c.get(server.url("/api/v1/records?limit=abc")), 400, "invalid_request"),
        (c.get(server.url("/api/v1/graph/nodes/x/hops?k=9")), 400, "invalid_request"),
        (c.put(server.url("/api/v1/objects/big.bin")).body(vec![0u8; 100_000]), 413, "payload_too_large"),
    ];
    for (request, status, code) in cases {
        let response = request.send().unwrap();
        assert_eq!(response.status().as_u16(), status);
        let body: Value = response.json().unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(
        c.get(server.url("/api/v1/objects/big.bin")).send().unwrap().status(),
        404,
        "a refused upload stores nothing"
    );
    let kept: Value = c.get(server.url("/api/v1/records/keep")).send().unwrap().json().unwrap();
    assert_eq!(kept["body"], "kept");
    let page: Value = c.get(server.url("/api/v1/records")).send().unwrap().json().unwrap();
    assert_eq!(page["records"].as_array().unwrap().len(), 1, "no failed write left anything behind");
}

#[test]
fn second_server_on_same_data_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let first = Server::start(&data);
    first.wait_ready();
    let out = run(nexus(&data).args(["serve", "--listen", "127.0.0.1:0"]));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("pid {}", first.child.id())), "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
    // The first is unharmed.
    let c = client();
    assert_eq!(c.get(first.url("/health")).send().unwrap().status(), 200);
    let w = c
        .post(first.url("/api/v1/records?wait=true"))
        .json(&json!({"kind": "note", "body": "still fine"}))
        .send()
        .unwrap();
    assert_eq!(w.status(), 201);
    assert_eq!(first.stop().code(), Some(0));
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    server.wait_ready();
    let body = json!({"id": "in-flight", "kind": "note", "body": "sent slowly"}).to_string();
    let (head, tail) = body.split_at(body.len() / 2);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    write!(
        stream,
        "POST /api/v1/records HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
        body.len()
    )
    .unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    server.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(tail.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let status = server.stop();
    assert_eq!(status.code(), Some(0));
    // New connections are refused after shutdown; the write survived.
    let data = tmp.path().join("data");
    let server = Server::start(&data);
    server.wait_ready();
    let got = client().get(server.url("/api/v1/records/in-flight")).send().unwrap();
    assert_eq!(got.status(), 200);
}
