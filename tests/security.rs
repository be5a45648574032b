//! Keys, scopes, tenants, limits and the audit log, end to end: the real binary over real sockets.

use crate::common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{Server, client, nexus, run};
use reqwest::Method;
use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};

const MASTER: &str = "test-master-key-0123456789abcdef";
/// Put into tenant A's data, names and files; no answer to tenant B may contain it.
const MARK: &str = "alpha-secret-7731";

/// A server with keys on (the master key configured) and, unless a test says otherwise, no rate
/// limits, so that many requests from one address are judged on keys alone.
fn keyed_server(data: &std::path::Path, limits: bool) -> Server {
    let server = Server::start_with(data, |cmd| {
        cmd.env("NEXUS__AUTH__MASTER_KEY", MASTER);
        if !limits {
            cmd.env("NEXUS__LIMITS__PER_KEY_PER_SECOND", "0")
                .env("NEXUS__LIMITS__PER_ADDRESS_PER_SECOND", "0")
                .env("NEXUS__LIMITS__AUTH_FAILURES_PER_MINUTE", "0");
        }
    });
    server.wait_ready();
    server
}

struct Api<'a> {
    c: Client,
    server: &'a Server,
}

impl<'a> Api<'a> {
    fn new(server: &'a Server) -> Self {
        Api { c: client(), server }
    }

    fn send(&self, method: Method, path: &str, key: Option<&str>, body: Option<&Value>) -> Response {
        let mut request = self.c.request(method, self.server.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().unwrap()
    }

    fn json(&self, method: Method, path: &str, key: &str, body: Option<Value>) -> Value {
        let response = self.send(method.clone(), path, Some(key), body.as_ref());
        let status = response.status();
        let text = response.text().unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap()
    }

    fn project(&self, id: &str) {
        let name = if id == "tenant-a" { format!("{id} {MARK}") } else { id.to_string() };
        self.json(Method::POST, "/api/v1/projects", MASTER, Some(json!({"id": id, "name": name})));
    }

    /// A new key of `project` with `scopes`: (id, key).
    fn key(&self, project: &str, scopes: &[&str]) -> (String, String) {
        let name = if project == "tenant-a" { format!("{project} key {MARK}") } else { format!("{project} key") };
        let body = json!({"name": name, "project": project, "scopes": scopes});
        let created = self.json(Method::POST, "/api/v1/keys", MASTER, Some(body));
        (created["api_key"]["id"].as_str().unwrap().to_string(), created["key"].as_str().unwrap().to_string())
    }
}

/// What the test expects a route to need, written independently of the server's table.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Need {
    Public,
    Any,
    Read,
    Write,
    Admin,
    Operator,
}

fn expected_need(method: &Method, path: &str) -> Need {
    let reads = method == Method::GET;
    match path {
        "/health" | "/ready" => Need::Public,
        "/metrics" => Need::Admin,
        "/api/v1/whoami" => Need::Any,
        "/api/v1/records/search" | "/api/v1/search" | "/api/v1/ask" | "/api/v1/embed" => Need::Read,
        "/api/v1/memories/search" | "/api/v1/memories/list" => Need::Read,
        // MCP: every JSON-RPC call is a POST; the tools that write ask for `write` themselves.
        "/mcp" => Need::Read,
        // Mem0 compatibility: the client's constructor pings with any key; POST searches and lists read.
        "/v1/ping/" => Need::Any,
        "/v1/memories/search/" | "/v2/memories/search/" | "/v3/memories/search/" => Need::Read,
        "/v2/memories/" | "/v3/memories/" => Need::Read,
        "/api/v1/projects" if reads => Need::Admin,
        "/api/v1/projects" | "/api/v1/orgs" => Need::Operator,
        p if p.starts_with("/api/v1/admin/") => Need::Operator,
        p if p.starts_with("/api/v1/keys") || p.starts_with("/api/v1/audit") => Need::Admin,
        _ if reads => Need::Read,
        _ => Need::Write,
    }
}

/// One concrete request per documented operation, aimed at tenant A's ids.
struct Case {
    method: Method,
    template: String,
    path: String,
    body: Option<Value>,
    raw_body: Option<Vec<u8>>,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, &'static str)>,
}

const BOUNDARY: &str = "nexus-test-boundary";

fn multipart_body(name: &str, content: &str) -> Vec<u8> {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: text/plain\r\n\r\n{content}\r\n--{BOUNDARY}--\r\n"
    )
    .into_bytes()
}

/// Tenant A's ids the cases aim at.
struct Ids<'a> {
    key: &'a str,
    doc: &'a str,
    job: &'a str,
    memory: &'a str,
    event: &'a str,
    meeting: &'a str,
    /// Two entities, related.
    entities: [&'a str; 2],
}

fn cases(openapi: &Value, ids: &Ids) -> Vec<Case> {
    let Ids { key: a_key_id, doc: a_doc, job: a_job, memory: a_memory, event: a_event, meeting: a_meeting, entities } =
        *ids;
    let mut out = Vec::new();
    let mut n = 0;
    for (template, item) in openapi["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            let method: Method = method.to_uppercase().parse().unwrap();
            n += 1;
            let mut path = template
                .replace("/records/{id}", "/records/alpha-rec")
                .replace("/nodes/{id}", "/nodes/alpha-rec")
                .replace("/keys/{id}", &format!("/keys/{a_key_id}"))
                .replace("/objects/{key}", "/objects/alpha/doc.txt")
                .replace("/documents/{id}", &format!("/documents/{a_doc}"))
                .replace("/jobs/{id}", &format!("/jobs/{a_job}"))
                .replace("/memories/events/{id}", &format!("/memories/events/{a_job}"))
                .replace("/memories/{id}", &format!("/memories/{a_memory}"))
                .replace("/memories/{memory_id}/", &format!("/memories/{a_memory}/"))
                .replace("/event/{event_id}/", &format!("/event/{a_event}/"))
                .replace("/entities/{entity_type}/{entity_id}/", "/entities/user/alpha/")
                .replace("/backups/{name}", "/backups/nexus-none.tar.zst")
                .replace("/meetings/{id}", &format!("/meetings/{a_meeting}"))
                .replace("/graph/entities/{id}", &format!("/graph/entities/{}", entities[0]));
            assert!(!path.contains('{'), "no id of tenant A for {template}; add one to this test");
            if template == "/api/v1/graph/path" {
                path.push_str("?from=alpha-rec&to=alpha-rec-2");
            }
            if (template == "/api/v1/memories" || template == "/v1/memories/") && method == Method::DELETE {
                path.push_str("?user_id=alpha");
            }
            let mut content_type = None;
            let b_memory =
                json!({"messages": [{"role": "user", "content": "b's memory"}], "user_id": "b", "infer": false});
            let (body, raw_body) = match (method.as_str(), template.as_str()) {
                ("DELETE", "/v1/batch/") => (Some(json!({"memories": [{"memory_id": a_memory}]})), None),
                ("GET" | "DELETE", _) => (None, None),
                ("POST", "/v1/memories/" | "/v3/memories/add/") => (Some(b_memory), None),
                ("POST", "/v2/memories/" | "/v3/memories/") => (Some(json!({"filters": {}})), None),
                ("POST", "/v1/memories/search/" | "/v2/memories/search/" | "/v3/memories/search/") => {
                    (Some(json!({"query": "alpha secret"})), None)
                }
                ("PUT", "/v1/memories/{memory_id}/") => (Some(json!({"text": "b's edit"})), None),
                ("PUT", "/v1/batch/") => {
                    (Some(json!({"memories": [{"memory_id": a_memory, "text": "b's edit"}]})), None)
                }
                ("POST", "/v1/feedback/") => (Some(json!({"memory_id": a_memory, "feedback": "NEGATIVE"})), None),
                ("POST", "/api/v1/search" | "/api/v1/ask") => (Some(json!({"query": "alpha secret"})), None),
                ("POST", "/api/v1/embed") => (Some(json!({"texts": ["alpha"]})), None),
                ("POST", "/api/v1/documents/text") => (Some(json!({"text": "b's text", "source": "b.txt"})), None),
                ("POST", "/api/v1/documents") => {
                    content_type = Some("multipart/form-data; boundary=nexus-test-boundary");
                    (None, Some(multipart_body("b.txt", "b's upload")))
                }
                ("POST", "/api/v1/jobs/{id}/cancel")
                | ("POST", "/api/v1/admin/read-only")
                | ("POST", "/api/v1/admin/backups/{name}/verify") => (None, None),
                ("POST", "/api/v1/admin/backups") => (Some(json!({})), None),
                ("POST", "/api/v1/records") => (Some(json!({"kind": "note", "body": "b's note"})), None),
                ("POST", "/api/v1/records/batch") => {
                    (Some(json!({"writes": [{"op": "upsert", "record": {"kind": "note"}}]})), None)
                }
                ("POST", "/api/v1/records/search") => (Some(json!({"query": "alpha secret"})), None),
                ("POST", "/api/v1/memories") => {
                    (Some(json!({"text": "b's memory", "user_id": "b", "infer": false})), None)
                }
                ("POST", "/api/v1/memories/list") => (Some(json!({"filters": {}})), None),
                ("POST", "/api/v1/memories/search") => (Some(json!({"query": "alpha secret"})), None),
                ("PUT", "/api/v1/memories/{id}") => (Some(json!({"text": "b's edit"})), None),
                ("POST", "/api/v1/memories/{id}/feedback") => (Some(json!({"feedback": "POSITIVE"})), None),
                ("PUT", "/api/v1/objects/{key}") => (None, Some(b"b's file".to_vec())),
                ("POST", "/api/v1/meetings") => (Some(json!({"title": "b's meeting"})), None),
                ("PATCH", "/api/v1/meetings/{id}") => (Some(json!({"title": "b's edit"})), None),
                ("POST", "/api/v1/meetings/{id}/participants") => {
                    (Some(json!({"participants": [{"name": "b"}]})), None)
                }
                ("POST", "/api/v1/meetings/{id}/segments") => {
                    (Some(json!({"segments": [{"segment_id": "b1", "speaker": "b", "text": "b's words"}]})), None)
                }
                ("POST", "/api/v1/meetings/{id}/end") => (None, None),
                ("POST", "/api/v1/meetings/import") => {
                    content_type = Some("multipart/form-data; boundary=nexus-test-boundary");
                    (None, Some(multipart_body("b.txt", "B: b's transcript")))
                }
                ("POST", "/api/v1/graph/entities") => (Some(json!({"name": "b's entity", "type": "person"})), None),
                ("POST", "/api/v1/graph/analytics") => (Some(json!({"algorithm": "degree"})), None),
                ("POST", "/api/v1/graph/relations") => {
                    (Some(json!({"source": entities[0], "type": "knows", "target": entities[1]})), None)
                }
                ("POST", "/api/v1/keys") => (Some(json!({"name": "made by the test", "scopes": ["read"]})), None),
                ("POST", "/api/v1/projects") | ("POST", "/api/v1/orgs") => {
                    (Some(json!({"id": format!("made-{n}")})), None)
                }
                (m, t) => panic!("no request body for {m} {t}; add one to this test"),
            };
            out.push(Case {
                method,
                template: template.clone(),
                path,
                body,
                raw_body,
                content_type,
                headers: Vec::new(),
            });
        }
    }
    // `/mcp` is JSON-RPC, outside the OpenAPI description: a read, a read of A's memory, a write.
    let calls = [
        json!({"method": "tools/list", "params": {}}),
        json!({"method": "tools/call", "params": {"name": "get_memory", "arguments": {"id": a_memory}}}),
        json!({"method": "tools/call", "params": {"name": "search_memories", "arguments": {"query": "alpha secret"}}}),
        json!({"method": "resources/read", "params": {"uri": format!("nexus://memories/{a_memory}")}}),
        json!({"method": "tools/call", "params": {"name": "add_memory", "arguments": {"text": "b's", "user_id": "b"}}}),
    ];
    for (n, call) in calls.into_iter().enumerate() {
        let mut body = call;
        body["jsonrpc"] = json!("2.0");
        body["id"] = json!(n + 1);
        out.push(Case {
            method: Method::POST,
            template: "/mcp".into(),
            path: "/mcp".into(),
            body: Some(body),
            raw_body: None,
            content_type: None,
            headers: MCP_HEADERS.to_vec(),
        });
    }
    out
}

const MCP_HEADERS: [(&str, &str); 2] =
    [("Accept", "application/json, text/event-stream"), ("MCP-Protocol-Version", "2025-06-18")];

impl Api<'_> {
    fn case(&self, case: &Case, key: Option<&str>) -> (u16, String) {
        let mut request = self.c.request(case.method.clone(), self.server.url(&case.path));
        if let Some(key) = key {
            request = request.header("Authorization", format!("Token {key}"));
        }
        if let Some(body) = &case.body {
            request = request.json(body);
        }
        if let Some(raw) = &case.raw_body {
            request = request.body(raw.clone());
        }
        if let Some(content_type) = case.content_type {
            request = request.header("Content-Type", content_type);
        }
        for (name, value) in &case.headers {
            request = request.header(*name, *value);
        }
        let response = request.send().unwrap();
        (response.status().as_u16(), response.text().unwrap())
    }
}

/// The stable code of an error body: `error.code`, `code` beside Mem0's `detail`, or a JSON-RPC
/// error's `error.data.code` (on `/mcp`).
fn error_code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v["error"]["code"]
                .as_str()
                .or_else(|| v["detail"].as_str().and(v["code"].as_str()))
                .or_else(|| v["error"]["data"]["code"].as_str())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

#[test]
fn every_route_in_openapi_enforces_keys_scopes_and_tenants() {
    let tmp = tempfile::tempdir().unwrap();
    let server = keyed_server(&tmp.path().join("data"), false);
    let api = Api::new(&server);
    api.project("tenant-a");
    api.project("tenant-b");
    let (a_read_id, a_read) = api.key("tenant-a", &["read"]);
    let (_, a_write) = api.key("tenant-a", &["read", "write"]);
    let (_, a_admin) = api.key("tenant-a", &["read", "write", "admin"]);
    let (_, b_all) = api.key("tenant-b", &["read", "write", "admin"]);

    // Tenant A's data, in every store.
    let mut v = vec![0.01f32; 384];
    v[7] = 1.0;
    let seed = json!({"writes": [
        {"op": "upsert", "record": {"id": "alpha-rec", "kind": "note", "title": MARK, "body": format!("alpha secret {MARK}"),
                                    "metadata": {"m": MARK}, "vector": v, "graph": {"type": "node", "label": "person", "name": MARK}}},
        {"op": "upsert", "record": {"id": "alpha-rec-2", "kind": "note", "body": "alpha neighbour",
                                    "graph": {"type": "node", "label": "person", "name": "neighbour"}}},
        {"op": "upsert", "record": {"id": "alpha-edge", "kind": "relation",
                                    "graph": {"type": "edge", "label": "knows", "source": "alpha-rec", "target": "alpha-rec-2"}}}
    ]});
    api.json(Method::POST, "/api/v1/records/batch?wait=true", &a_write, Some(seed));
    let put = api.c.put(server.url("/api/v1/objects/alpha/doc.txt")).bearer_auth(&a_write).body(MARK).send().unwrap();
    assert_eq!(put.status(), 200);

    let doc = json!({"text": format!("alpha document {MARK}"), "source": "alpha.txt", "title": MARK});
    let doc = api.json(Method::POST, "/api/v1/documents/text", &a_write, Some(doc));
    let a_doc = doc["documents"][0]["document"]["id"].as_str().expect("tenant A's document").to_string();
    let upload = api
        .c
        .post(server.url("/api/v1/documents?wait=true"))
        .bearer_auth(&a_write)
        .header("Content-Type", "multipart/form-data; boundary=nexus-test-boundary")
        .body(multipart_body("alpha-upload.txt", MARK))
        .send()
        .unwrap();
    assert_eq!(upload.status(), 202);
    let upload: Value = upload.json().unwrap();
    let a_job = upload["jobs"][0]["job_id"].as_str().expect("tenant A's job").to_string();

    let memory = json!({"messages": [{"role": "user", "content": format!("alpha secret {MARK}")}], "user_id": "alpha", "infer": false});
    let memory = api.json(Method::POST, "/api/v1/memories", &a_write, Some(memory));
    let a_memory = memory["results"][0]["id"].as_str().expect("tenant A's memory").to_string();

    let openapi: Value = api.c.get(server.url("/openapi.json")).send().unwrap().json().unwrap();
    let event = json!({"messages": [{"role": "user", "content": "alpha event"}], "user_id": "alpha", "infer": false});
    let event = api.json(Method::POST, "/v3/memories/add/", &a_write, Some(event));
    let a_event = event["event_id"].as_str().expect("tenant A's event").to_string();
    let meeting =
        json!({"title": format!("alpha meeting {MARK}"), "participants": [{"name": "Alpha", "user_id": "alpha"}]});
    let meeting = api.json(Method::POST, "/api/v1/meetings", &a_write, Some(meeting));
    let a_meeting = meeting["id"].as_str().expect("tenant A's meeting").to_string();
    let segments =
        json!({"segments": [{"segment_id": "a1", "speaker": "Alpha", "text": format!("alpha secret {MARK}")}]});
    api.json(Method::POST, &format!("/api/v1/meetings/{a_meeting}/segments?wait=true"), &a_write, Some(segments));
    let entity = |name: &str| {
        let made = api.json(
            Method::POST,
            "/api/v1/graph/entities",
            &a_write,
            Some(json!({"name": format!("{name} {MARK}"), "type": "person"})),
        );
        made["id"].as_str().expect("tenant A's entity").to_string()
    };
    let (a_entity, a_entity_2) = (entity("alpha one"), entity("alpha two"));
    api.json(
        Method::POST,
        "/api/v1/graph/relations",
        &a_write,
        Some(
            json!({"source": a_entity, "type": "knows", "target": a_entity_2, "fact": format!("alpha secret {MARK}")}),
        ),
    );
    let ids = Ids {
        key: &a_read_id,
        doc: &a_doc,
        job: &a_job,
        memory: &a_memory,
        event: &a_event,
        meeting: &a_meeting,
        entities: [&a_entity, &a_entity_2],
    };
    let cases = cases(&openapi, &ids);
    assert!(cases.len() >= 20, "{} operations", cases.len());
    let wrong_secret = format!("nxs_{a_read_id}_{}", "0".repeat(48));
    let leaks = |body: &str| [MARK, "tenant-a", "alpha-rec-2"].iter().any(|m| body.contains(m));
    let mut seen: BTreeMap<String, u16> = BTreeMap::new();

    for case in &cases {
        let what = format!("{} {}", case.method, case.template);
        let need = expected_need(&case.method, &case.template);
        if need == Need::Public {
            assert_eq!(api.case(case, None).0, 200, "{what} is public");
            continue;
        }
        // No key, a wrong secret for a real id, a malformed key: 401, nothing else said.
        for key in [None, Some(wrong_secret.as_str()), Some("not-a-key")] {
            let (status, body) = api.case(case, key);
            assert_eq!(status, 401, "{what} with {key:?}: {body}");
            assert_eq!(error_code(&body), "unauthorized", "{what}: {body}");
            assert!(!leaks(&body), "{what}: {body}");
        }
        // A read key where more is needed: 403.
        let (status, body) = api.case(case, Some(&a_read));
        match need {
            Need::Write | Need::Admin | Need::Operator => {
                assert_eq!(status, 403, "{what} with a read key: {body}");
                assert_eq!(error_code(&body), "forbidden");
            }
            _ => assert!(status != 401 && status != 403, "{what} with a read key: {status} {body}"),
        }
        // Another tenant's key with every scope: A's ids are not found, lists hold none of A's data.
        let (status, body) = api.case(case, Some(&b_all));
        seen.insert(what.clone(), status);
        assert!(!leaks(&body), "{what} with tenant B's key leaked: {body}");
        if need == Need::Operator {
            assert_eq!(status, 403, "{what} spans tenants: {body}");
            continue;
        }
        let names_a_id = case.path.contains("alpha-rec")
            || case.path.contains("alpha/doc")
            || case.path.contains(&a_read_id)
            || case.path.contains(&a_doc)
            || case.path.contains(&a_job)
            || case.path.contains(&a_memory)
            || case.path.contains(&a_event)
            || case.path.contains(&a_meeting)
            || case.path.contains(&a_entity)
            || case.path.contains("/entities/user/alpha/");
        let mutates = matches!(case.method, Method::POST | Method::PUT);
        // Walks from a node B does not have answer with an empty list, not 404.
        let walks = ["/neighbours", "/hops", "/graph/path"].iter().any(|w| case.template.ends_with(w));
        if names_a_id && !mutates && !walks {
            assert_eq!(status, 404, "{what} with tenant B's key on A's id: {body}");
        } else if walks {
            assert_eq!(status, 200, "{what}: {body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            let empty = ["neighbours", "nodes"].iter().all(|k| v[k].as_array().is_none_or(|a| a.is_empty()));
            assert!(empty && v["path"].is_null(), "{what} with tenant B's key found A's graph: {body}");
        } else {
            assert!((200..300).contains(&status) || status == 404, "{what} with tenant B's key: {status} {body}");
        }
    }
    // The routes this test must have exercised (a renamed route fails here, not silently).
    for route in [
        "GET /api/v1/records/{id}",
        "DELETE /api/v1/keys/{id}",
        "GET /api/v1/objects/{key}",
        "GET /api/v1/audit",
        "GET /api/v1/memories/{id}",
        "POST /api/v1/memories/search",
        "GET /v1/ping/",
        "GET /v1/memories/{memory_id}/",
        "POST /v3/memories/search/",
        "DELETE /v1/batch/",
        "DELETE /v2/entities/{entity_type}/{entity_id}/",
        "POST /mcp",
        "GET /api/v1/meetings/{id}/transcript",
        "POST /api/v1/meetings/{id}/segments",
        "PATCH /api/v1/meetings/{id}",
        "POST /api/v1/meetings/import",
        "GET /api/v1/meetings/{id}/stream",
        "GET /api/v1/events",
    ] {
        assert!(seen.contains_key(route), "{route} missing from /openapi.json: {seen:?}");
    }

    // Through MCP too, a key's scopes and project apply to every tool.
    let mcp = |key: &str, name: &str, arguments: Value| -> Value {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": arguments}});
        let mut request = api.c.post(server.url("/mcp")).bearer_auth(key).json(&body);
        for (name, value) in MCP_HEADERS {
            request = request.header(name, value);
        }
        let answer: Value = request.send().unwrap().json().unwrap();
        answer["result"]["structuredContent"].clone()
    };
    let refused = mcp(&a_read, "add_memory", json!({"text": "a reader's", "user_id": "alpha"}));
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
    let memory = json!({"id": &a_memory});
    assert_eq!(mcp(&a_read, "get_memory", memory.clone())["memory"], format!("alpha secret {MARK}"));
    assert_eq!(mcp(&b_all, "get_memory", memory.clone())["error"]["code"], "not_found");
    assert_eq!(mcp(&b_all, "delete_memory", memory)["error"]["code"], "not_found");
    for (tool, query) in [("search_memories", "alpha secret"), ("search_knowledge", "alpha document")] {
        let found = mcp(&b_all, tool, json!({"query": query}));
        assert!(found["results"].is_array() && !found.to_string().contains(MARK), "{tool} with B's key: {found}");
    }

    // Tenant A's data survived tenant B's deletes and writes, and its read key still works.
    let kept = api.json(Method::GET, &format!("/api/v1/meetings/{a_meeting}/transcript"), &a_read, None);
    assert_eq!(
        kept["segments"].as_array().unwrap().len(),
        1,
        "tenant B's segments and deletes changed nothing: {kept}"
    );
    assert_eq!(kept["meeting"]["title"], format!("alpha meeting {MARK}"));
    let got = api.json(Method::GET, "/api/v1/records/alpha-rec", &a_read, None);
    assert_eq!(got["title"], MARK);
    let mem = api.json(Method::GET, &format!("/v1/memories/{a_memory}/"), &a_read, None);
    assert_eq!(mem["memory"], format!("alpha secret {MARK}"), "tenant B's edits and deletes changed nothing");
    assert_eq!(
        api.json(Method::GET, &format!("/v1/memories/{a_memory}/history/"), &a_read, None).as_array().unwrap().len(),
        1
    );
    let file = api.c.get(server.url("/api/v1/objects/alpha/doc.txt")).bearer_auth(&a_read).send().unwrap();
    assert_eq!(file.text().unwrap(), MARK);
    let hits = api.json(Method::POST, "/api/v1/records/search", &a_read, Some(json!({"query": "alpha secret"})));
    assert_eq!(hits["hits"][0]["id"], "alpha-rec");
    // Each tenant's admin sees its own keys only.
    let a_keys = api.json(Method::GET, "/api/v1/keys", &a_admin, None);
    assert!(a_keys["keys"].as_array().unwrap().iter().all(|k| k["project"] == "tenant-a"));
    let b_keys = api.json(Method::GET, "/api/v1/keys", &b_all, None);
    assert!(b_keys["keys"].as_array().unwrap().iter().all(|k| k["project"] == "tenant-b"));
    let b_projects = api.json(Method::GET, "/api/v1/projects", &b_all, None);
    assert_eq!(b_projects["projects"].as_array().unwrap().len(), 1);
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn thousand_wrong_keys_from_one_address_end_in_429() {
    let tmp = tempfile::tempdir().unwrap();
    let server = keyed_server(&tmp.path().join("data"), true);
    let api = Api::new(&server);
    let started = Instant::now();
    let mut statuses = Vec::with_capacity(1000);
    let mut first_429 = None;
    for i in 0..1000 {
        let key = format!("nxs_{:016x}_{:048x}", i, i * 7919);
        let response = api.send(Method::GET, "/api/v1/records", Some(&key), None);
        let status = response.status().as_u16();
        if status == 429 && first_429.is_none() {
            first_429 = Some((i, started.elapsed()));
            let headers = response.headers();
            let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry), "Retry-After {retry}");
            for name in ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"] {
                assert!(headers.contains_key(name), "429 lacks {name}");
            }
            assert_eq!(headers["x-ratelimit-remaining"], "0");
            assert_eq!(response.json::<Value>().unwrap()["error"]["code"], "rate_limited");
        }
        statuses.push(status);
    }
    let elapsed = started.elapsed();
    let (at, when) = first_429.expect("wrong keys were refused with 429");
    println!("1,000 wrong keys: first 429 at attempt {} after {:?}; all 1,000 in {:?}", at + 1, when, elapsed);
    assert!(statuses[..at].iter().all(|s| *s == 401), "401 before the limit");
    assert!(statuses[at..].iter().all(|s| *s == 429), "429 from then on");
    assert!(at <= 60, "the failure budget is small ({at})");

    // Blocked: even the right key from this address waits; another address is unaffected.
    assert_eq!(api.send(Method::GET, "/api/v1/records", Some(MASTER), None).status(), 429);
    let other = Client::builder().local_address(std::net::IpAddr::from([127, 0, 0, 2])).build().unwrap();
    let ok = other.get(server.url("/api/v1/records")).bearer_auth(MASTER).send().unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.headers().contains_key("x-ratelimit-remaining"));
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn per_key_rate_limit_answers_429_with_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(&tmp.path().join("data"), |cmd| {
        cmd.env("NEXUS__AUTH__MASTER_KEY", MASTER)
            .env("NEXUS__LIMITS__PER_KEY_PER_SECOND", "1")
            .env("NEXUS__LIMITS__PER_KEY_BURST", "5");
    });
    server.wait_ready();
    let api = Api::new(&server);
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let r = api.send(Method::GET, "/api/v1/records", Some(MASTER), None);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-ratelimit-limit"], "5");
        remaining.push(r.headers()["x-ratelimit-remaining"].to_str().unwrap().parse::<u32>().unwrap());
    }
    assert_eq!(remaining, vec![4, 3, 2, 1, 0]);
    let refused = api.send(Method::GET, "/api/v1/records", Some(MASTER), None);
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(api.send(Method::GET, "/api/v1/records", Some(MASTER), None).status(), 200, "the bucket refills");
}

#[test]
fn loopback_without_master_key_serves_the_default_tenant_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data);
    server.wait_ready();
    assert!(server.printed().contains("API keys are off"), "{}", server.printed());
    let api = Api::new(&server);
    // A presented key is ignored, whatever it is (the Mem0 client always sends one).
    for key in [None, Some("m0-anything"), Some(MASTER)] {
        let r = api.send(Method::POST, "/api/v1/records", key, Some(&json!({"kind": "note"})));
        assert_eq!(r.status(), 201, "{key:?}");
    }
    let me = api.json(Method::GET, "/api/v1/whoami", "ignored", None);
    assert_eq!(me["principal"], "open");
    assert_eq!(me["project"], "default");
    assert!(!data.join("master.key").exists(), "no master key is made while keys are off");
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn non_loopback_requires_keys_with_a_generated_master_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Bound to every interface; the test talks to it over 127.0.0.1 only.
    let server = Server::start_on(&data, "0.0.0.0:0", |_| {});
    let file = data.join("master.key");
    let printed = server.printed();
    assert!(printed.contains(&file.display().to_string()), "the key file's path is printed: {printed}");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let master = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(master.len() >= 32);
    let api = Api::new(&server);
    server.wait_ready();
    assert_eq!(api.send(Method::GET, "/health", None, None).status(), 200);
    for path in ["/metrics", "/api/v1/status", "/api/v1/records", "/no-such-page"] {
        assert_eq!(api.send(Method::GET, path, None, None).status(), 401, "{path}");
    }
    assert_eq!(api.send(Method::GET, "/", None, None).status(), 200, "the UI shell loads, to show its login");
    assert_eq!(api.send(Method::GET, "/api/v1/status", Some(&master), None).status(), 200);
    assert_eq!(api.send(Method::GET, "/metrics", Some(&master), None).status(), 200);
    assert_eq!(server.stop().code(), Some(0));

    // Next start: the same key, its path not printed again; /metrics public when configured.
    let server = Server::start_on(&data, "0.0.0.0:0", |cmd| {
        cmd.env("NEXUS__AUTH__PUBLIC_METRICS", "true");
    });
    assert!(!server.printed().contains("generated"), "{}", server.printed());
    let api = Api::new(&server);
    assert_eq!(api.send(Method::GET, "/metrics", None, None).status(), 200);
    assert_eq!(api.send(Method::GET, "/api/v1/records", Some(&master), None).status(), 200);
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), master);
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn keys_expire_are_revoked_and_are_managed_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Offline: a key made on the data directory before the server starts.
    let out = run(nexus(&data).args(["keys", "create", "--name", "ci", "--scopes", "read", "--json"]));
    assert!(out.status.success(), "{out:?}");
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (offline_id, offline_key) =
        (created["api_key"]["id"].as_str().unwrap().to_string(), created["key"].as_str().unwrap().to_string());
    assert_eq!(created["api_key"]["scopes"], json!(["read"]));

    let server = keyed_server(&data, false);
    let api = Api::new(&server);
    assert_eq!(api.send(Method::GET, "/api/v1/records", Some(&offline_key), None).status(), 200);
    for header in ["Authorization", "X-API-Key"] {
        let value = if header == "Authorization" { format!("Token {offline_key}") } else { offline_key.clone() };
        let r = api.c.get(server.url("/api/v1/whoami")).header(header, value).send().unwrap();
        assert_eq!(r.json::<Value>().unwrap()["key_id"], offline_id.as_str(), "{header}");
    }

    // While the server holds the directory, the command line goes through it with the master key.
    let with_master = |args: &[&str]| run(nexus(&data).env("NEXUS__AUTH__MASTER_KEY", MASTER).args(args));
    let out = with_master(&["keys", "list", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(listed["keys"].as_array().unwrap().iter().any(|k| k["id"] == offline_id.as_str()));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&offline_key[20..]), "secrets are never listed");
    let out = with_master(&["keys", "revoke", &offline_id]);
    assert!(out.status.success(), "{out:?}");
    let r = api.send(Method::GET, "/api/v1/records", Some(&offline_key), None);
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().unwrap()["error"]["code"], "key_revoked");
    let out = run(nexus(&data).args(["keys", "list"]));
    assert_eq!(out.status.code(), Some(1), "without the master key the server refuses: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("API key"), "{out:?}");

    // Expiry.
    let expires_at = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let created = api.json(
        Method::POST,
        "/api/v1/keys",
        MASTER,
        Some(json!({"name": "short", "scopes": ["read"], "expires_at": expires_at})),
    );
    let short = created["key"].as_str().unwrap();
    assert_eq!(api.send(Method::GET, "/api/v1/records", Some(short), None).status(), 200);
    std::thread::sleep(Duration::from_millis(2500));
    let r = api.send(Method::GET, "/api/v1/records", Some(short), None);
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().unwrap()["error"]["code"], "key_expired");
    // Bad requests are explained.
    for body in [
        json!({"name": "x", "scopes": []}),
        json!({"name": "", "scopes": ["read"]}),
        json!({"name": "x", "scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z"}),
    ] {
        let r = api.send(Method::POST, "/api/v1/keys", Some(MASTER), Some(&body));
        assert_eq!(r.status(), 400, "{body}");
    }
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn audit_log_records_who_what_when_and_outcome() {
    let tmp = tempfile::tempdir().unwrap();
    let server = keyed_server(&tmp.path().join("data"), false);
    let api = Api::new(&server);
    api.project("tenant-a");
    api.project("tenant-b");
    let (a_id, a_key) = api.key("tenant-a", &["read", "write", "admin"]);
    let (_, b_key) = api.key("tenant-b", &["read", "admin"]);
    let before = chrono::Utc::now();
    api.json(Method::POST, "/api/v1/records", &a_key, Some(json!({"id": "r1", "kind": "note"})));
    api.json(Method::GET, "/api/v1/records/r1", &a_key, None);
    assert_eq!(api.send(Method::GET, "/api/v1/records/nope", Some(&a_key), None).status(), 404);
    assert_eq!(api.send(Method::GET, "/api/v1/records", Some("nxs_wrong"), None).status(), 401);

    // Written off the request path: wait for it.
    let path = format!("/api/v1/audit?key_id={a_id}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let entries = loop {
        let page = api.json(Method::GET, &path, MASTER, None);
        let entries = page["entries"].as_array().unwrap().clone();
        if entries.len() >= 3 || Instant::now() > deadline {
            break entries;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(entries.len(), 3, "{entries:?}");
    let get = &entries[1];
    assert_eq!(get["principal"], "key");
    assert_eq!(get["tenant"], "tenant-a");
    assert_eq!(get["method"], "GET");
    assert_eq!(get["route"], "/api/v1/records/{id}");
    assert_eq!(get["object_id"], "r1");
    assert_eq!(get["status"], 200);
    assert_eq!(get["client"], "127.0.0.1");
    let at: chrono::DateTime<chrono::Utc> = get["at"].as_str().unwrap().parse().unwrap();
    assert!(at >= before && at <= chrono::Utc::now());
    assert_eq!(entries[0]["status"], 404);
    assert_eq!(entries[2]["method"], "POST");

    // Filters and pages.
    let not_found = api.json(Method::GET, &format!("{path}&status=404"), MASTER, None);
    assert_eq!(not_found["entries"].as_array().unwrap().len(), 1);
    let page = api.json(Method::GET, &format!("{path}&limit=2"), MASTER, None);
    let next = page["next_before"].as_u64().unwrap();
    let rest = api.json(Method::GET, &format!("{path}&limit=2&before={next}"), MASTER, None);
    assert_eq!(rest["entries"].as_array().unwrap().len(), 1);
    // The refused request's entry is queued like the others: wait for it too.
    let deadline = Instant::now() + Duration::from_secs(10);
    let anonymous = loop {
        let failed = api.json(Method::GET, "/api/v1/audit?status=401", MASTER, None);
        let found = failed["entries"].as_array().unwrap().iter().any(|e| e["principal"] == "anonymous");
        if found || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(anonymous, "the 401 is in the audit log");

    // Each tenant's admin sees its own entries only.
    let mine = api.json(Method::GET, "/api/v1/audit", &b_key, None);
    assert!(mine["entries"].as_array().unwrap().iter().all(|e| e["tenant"] == "tenant-b"), "{mine}");
    let r = api.send(Method::GET, "/api/v1/audit?project=tenant-a", Some(&b_key), None);
    assert_eq!(r.status(), 404);
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn cors_is_configurable_and_security_headers_are_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("nexus.toml");
    std::fs::write(&config, "[server]\ncors_allowed_origins = [\"https://app.example\"]\n").unwrap();
    let server = Server::start_with(&tmp.path().join("data"), |cmd| {
        cmd.arg("--config").arg(&config).env("NEXUS__AUTH__MASTER_KEY", MASTER);
    });
    server.wait_ready();
    let c = client();
    let preflight = |origin: &str| {
        c.request(Method::OPTIONS, server.url("/api/v1/records"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "authorization, content-type")
            .send()
            .unwrap()
    };
    let allowed = preflight("https://app.example");
    assert!(allowed.status().is_success(), "preflight needs no key: {}", allowed.status());
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example");
    assert!(!preflight("https://evil.example").headers().contains_key("access-control-allow-origin"));

    for path in ["/", "/api/v1/records", "/health"] {
        let r = c.get(server.url(path)).send().unwrap();
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    }
    // A key-creating answer is never cached.
    let r = c
        .post(server.url("/api/v1/keys"))
        .bearer_auth(MASTER)
        .json(&json!({"name": "n", "scopes": ["read"]}))
        .send()
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn weak_master_key_and_half_tls_config_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = run(nexus(&data).env("NEXUS__AUTH__MASTER_KEY", "short").args(["serve", "--listen", "127.0.0.1:0"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.master_key"), "{out:?}");
    let out =
        run(nexus(&data).env("NEXUS__SERVER__TLS__CERT_FILE", "/x.pem").args(["serve", "--listen", "127.0.0.1:0"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.tls"), "{out:?}");
    let out = run(nexus(&data)
        .env("NEXUS__SERVER__TLS__CERT_FILE", "/nonexistent/cert.pem")
        .env("NEXUS__SERVER__TLS__KEY_FILE", "/nonexistent/key.pem")
        .args(["serve", "--listen", "127.0.0.1:0"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cert.pem"), "{out:?}");
    assert!(!data.exists(), "refused before touching the data directory");
}
