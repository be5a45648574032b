//! The MCP server end to end: the real binary, Streamable HTTP at `/mcp` and stdio (`nexus mcp`),
//! with keys, scopes, projects and bad input. The official Python SDK drives the same server in
//! `tests/mcp/client.py` (`.ci/mcp.sh`).

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use common::{Server, client, nexus, run};
use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};

const MASTER: &str = "test-master-key-0123456789abcdef";
/// Put into project A's data; nothing project B's key sees may contain it.
const MARK: &str = "alpha-secret-4412";
const LEGACY: &str = "2025-06-18";
const MODERN: &str = "2026-07-28";

const TOOLS: [&str; 15] = [
    "add_document",
    "add_memory",
    "ask",
    "delete_memory",
    "get_document",
    "get_meeting",
    "get_meeting_transcript",
    "get_memory",
    "list_meetings",
    "list_memories",
    "memory_history",
    "search_knowledge",
    "search_meetings",
    "search_memories",
    "update_memory",
];
const READ_ONLY: [&str; 11] = [
    "ask",
    "get_document",
    "get_meeting",
    "get_meeting_transcript",
    "get_memory",
    "list_meetings",
    "list_memories",
    "memory_history",
    "search_knowledge",
    "search_meetings",
    "search_memories",
];

/// Keys on (the master key), no rate limits, small limits for the oversized-input cases.
fn keyed_server(data: &std::path::Path, customize: impl FnOnce(&mut Command)) -> Server {
    let server = Server::start_with(data, |cmd| {
        cmd.env("NEXUS__AUTH__MASTER_KEY", MASTER)
            .env("NEXUS__LIMITS__PER_KEY_PER_SECOND", "0")
            .env("NEXUS__LIMITS__PER_ADDRESS_PER_SECOND", "0")
            .env("NEXUS__LIMITS__AUTH_FAILURES_PER_MINUTE", "0")
            .env("NEXUS__MEMORY__MAX_MESSAGE_BYTES", "2048")
            .env("NEXUS__KNOWLEDGE__MAX_UPLOAD_BYTES", "8192");
        customize(cmd);
    });
    server.wait_ready();
    server
}

/// Makes a project and returns a key of it with `scopes`.
fn key(server: &Server, project: &str, scopes: &[&str]) -> String {
    let c = client();
    let _ = c.post(server.url("/api/v1/projects")).bearer_auth(MASTER).json(&json!({"id": project})).send().unwrap();
    let created: Value = c
        .post(server.url("/api/v1/keys"))
        .bearer_auth(MASTER)
        .json(&json!({"name": format!("{project} mcp"), "project": project, "scopes": scopes}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    created["key"].as_str().expect("a key").to_string()
}

/// A Streamable HTTP client: legacy (the `initialize` handshake) or modern (2026-07-28, every
/// request carrying its version).
struct Mcp {
    c: Client,
    url: String,
    key: Option<String>,
    modern: bool,
    next_id: std::cell::Cell<u64>,
}

impl Mcp {
    fn new(server: &Server, key: Option<&str>) -> Mcp {
        Mcp { c: client(), url: server.url("/mcp"), key: key.map(str::to_string), modern: false, next_id: 1.into() }
    }

    fn modern(server: &Server, key: Option<&str>) -> Mcp {
        Mcp { modern: true, ..Mcp::new(server, key) }
    }

    fn post(&self, body: &Value, headers: &[(&str, &str)]) -> Response {
        let mut request = self
            .c
            .post(&self.url)
            .header("Accept", "application/json, text/event-stream")
            .header("Content-Type", "application/json")
            .body(body.to_string());
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        if self.modern {
            request = request.header("MCP-Protocol-Version", MODERN);
            if let Some(method) = body["method"].as_str() {
                request = request.header("Mcp-Method", method);
            }
            if let Some(name) = body["params"]["name"].as_str().or(body["params"]["uri"].as_str()) {
                request = request.header("Mcp-Name", name);
            }
        } else if body["method"] != "initialize" {
            request = request.header("MCP-Protocol-Version", LEGACY);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().unwrap()
    }

    /// Sends a request and returns the JSON-RPC answer (`result` or `error`).
    fn request(&self, method: &str, mut params: Value) -> Value {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        if self.modern {
            params["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": MODERN,
                                     "io.modelcontextprotocol/clientCapabilities": {}});
        }
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let response = self.post(&body, &[]);
        let status = response.status();
        let text = response.text().unwrap();
        assert!(status.is_success() || status == 404, "{method}: {status} {text}");
        let answer = json_rpc(&text);
        assert_eq!(answer["id"], id, "{text}");
        answer
    }

    fn initialize(&self) -> Value {
        let answer = self.request(
            "initialize",
            json!({"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "nexus-test", "version": "1"}}),
        );
        let notified =
            self.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}), &[]).status().as_u16();
        assert_eq!(notified, 202);
        answer
    }

    /// `tools/call`: the result (structured content checked against the text block), or the error.
    fn call(&self, tool: &str, arguments: Value) -> Value {
        let answer = self.request("tools/call", json!({"name": tool, "arguments": arguments}));
        if let Some(result) = answer.get("result") {
            let text = result["content"][0]["text"].as_str().unwrap_or_else(|| panic!("{tool}: no text: {answer}"));
            let from_text: Value = serde_json::from_str(text).unwrap();
            assert_eq!(from_text, result["structuredContent"], "{tool}: the text block is the structured content");
        }
        answer
    }

    /// A successful tool call's structured content.
    fn ok(&self, tool: &str, arguments: Value) -> Value {
        let answer = self.call(tool, arguments);
        assert_eq!(answer["result"]["isError"], false, "{tool}: {answer}");
        answer["result"]["structuredContent"].clone()
    }

    /// A tool call that ran and failed: its `{code, message}`.
    fn tool_error(&self, tool: &str, arguments: Value) -> Value {
        let answer = self.call(tool, arguments);
        assert_eq!(answer["result"]["isError"], true, "{tool}: {answer}");
        answer["result"]["structuredContent"]["error"].clone()
    }

    /// A call refused as a JSON-RPC error: the error.
    fn rpc_error(&self, method: &str, params: Value) -> Value {
        let answer = self.request(method, params);
        assert!(answer.get("result").is_none(), "{method} must be a JSON-RPC error: {answer}");
        answer["error"].clone()
    }
}

/// The JSON-RPC message of an answer: a JSON body, or the data of an event stream.
fn json_rpc(text: &str) -> Value {
    if let Ok(value) = serde_json::from_str(text) {
        return value;
    }
    let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim).collect();
    let last = data.iter().rev().find(|d| !d.is_empty()).unwrap_or_else(|| panic!("no message in {text:?}"));
    serde_json::from_str(last).unwrap()
}

fn memories_of(server: &Server, key: &str) -> u64 {
    let page: Value =
        client().get(server.url("/api/v1/memories?limit=1000")).bearer_auth(key).send().unwrap().json().unwrap();
    page["total"].as_u64().unwrap()
}

/// A meeting put in over HTTP with two finals, searchable when this returns: its id.
fn meeting(server: &Server, key: &str, title: &str) -> String {
    let http = client();
    let created: Value = http
        .post(server.url("/api/v1/meetings?wait=true"))
        .bearer_auth(key)
        .json(&json!({"title": title, "participants": [{"name": "Dana", "user_id": "dana"}]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = created["id"].as_str().unwrap_or_else(|| panic!("{created}")).to_string();
    let segments = json!({"segments": [
        {"segment_id": "s1", "speaker": "Dana", "start_ms": 0, "end_ms": 3000,
         "text": format!("We ship the beta launch on Friday. {MARK}"), "is_final": true},
        {"segment_id": "s2", "speaker": "Lee", "start_ms": 3100, "end_ms": 5000,
         "text": "I will write the release notes by Thursday.", "is_final": true},
    ]});
    let added = http
        .post(server.url(&format!("/api/v1/meetings/{id}/segments?wait=true")))
        .bearer_auth(key)
        .json(&segments)
        .send()
        .unwrap();
    assert_eq!(added.status(), 200, "{:?}", added.text());
    id
}

fn documents_of(server: &Server, key: &str) -> usize {
    let page: Value = client().get(server.url("/api/v1/documents")).bearer_auth(key).send().unwrap().json().unwrap();
    page["documents"].as_array().unwrap().len()
}

#[test]
fn every_tool_and_resource_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let server = keyed_server(&tmp.path().join("data"), |_| {});
    let a = key(&server, "mcp-a", &["read", "write"]);
    let mcp = Mcp::new(&server, Some(&a));

    let init = mcp.initialize();
    assert_eq!(init["result"]["protocolVersion"], LEGACY, "{init}");
    assert_eq!(init["result"]["serverInfo"]["name"], "nexus");
    assert!(
        init["result"]["capabilities"]["tools"].is_object() && init["result"]["capabilities"]["resources"].is_object()
    );
    assert!(init["result"]["instructions"].as_str().unwrap().contains("search_memories"));

    let listed = mcp.request("tools/list", json!({}));
    let tools = listed["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, TOOLS);
    for tool in tools {
        let name = tool["name"].as_str().unwrap();
        assert!(tool["description"].as_str().unwrap().len() > 40, "{name} says what it does");
        assert_eq!(tool["inputSchema"]["type"], "object", "{name}");
        assert_eq!(tool["inputSchema"]["additionalProperties"], false, "{name} refuses unknown arguments");
        let hints = &tool["annotations"];
        assert_eq!(hints["readOnlyHint"], READ_ONLY.contains(&name), "{name}: {hints}");
        if !READ_ONLY.contains(&name) {
            assert!(hints["destructiveHint"].is_boolean() && hints["idempotentHint"].is_boolean(), "{name}: {hints}");
        }
    }
    let add_schema = &tools[1]["inputSchema"];
    assert_eq!(add_schema["required"], json!(["text"]));
    assert!(add_schema["properties"]["user_id"]["description"].is_string());

    // Memories.
    let added = mcp.ok(
        "add_memory",
        json!({"text": format!("Alice prefers green tea {MARK}"), "user_id": "alice",
                                            "categories": ["preferences"]}),
    );
    let id = added["results"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(added["results"][0]["event"], "ADD");
    assert_eq!(added["results"][0]["memory"], format!("Alice prefers green tea {MARK}"));
    mcp.ok("add_memory", json!({"text": "Alice lives in Lyon", "user_id": "alice", "tier": "factual"}));
    mcp.ok("add_memory", json!({"text": "Bob plays chess", "user_id": "bob"}));
    let found = mcp.ok("search_memories", json!({"query": "green tea", "user_id": "alice"}));
    assert_eq!(found["results"][0]["id"], id, "{found}");
    assert!(found["results"][0]["score"].as_f64().unwrap() > 0.0);
    assert!(found["results"].as_array().unwrap().iter().all(|r| r["user_id"] == "alice"), "{found}");
    let got = mcp.ok("get_memory", json!({"id": id}));
    assert_eq!(got["categories"], json!(["preferences"]));
    let listed = mcp.ok("list_memories", json!({"user_id": "alice"}));
    assert_eq!(listed["total"], 2);
    assert_eq!(mcp.ok("list_memories", json!({"limit": 1}))["memories"].as_array().unwrap().len(), 1);
    let updated = mcp.ok("update_memory", json!({"id": id, "text": "Alice prefers jasmine tea"}));
    assert_eq!(updated["memory"], "Alice prefers jasmine tea");
    let history = mcp.ok("memory_history", json!({"id": id}));
    let events: Vec<&str> =
        history["history"].as_array().unwrap().iter().map(|h| h["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["ADD", "UPDATE"]);

    // Resources.
    let templates = mcp.request("resources/templates/list", json!({}));
    let uris: Vec<&str> = templates["result"]["resourceTemplates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["uriTemplate"].as_str().unwrap())
        .collect();
    assert_eq!(uris, ["nexus://memories/{id}", "nexus://documents/{id}"]);
    let read = mcp.request("resources/read", json!({"uri": format!("nexus://memories/{id}")}));
    let contents = &read["result"]["contents"][0];
    assert_eq!(contents["mimeType"], "application/json");
    assert_eq!(
        serde_json::from_str::<Value>(contents["text"].as_str().unwrap()).unwrap()["memory"],
        "Alice prefers jasmine tea"
    );
    let missing = mcp.rpc_error("resources/read", json!({"uri": "nexus://memories/no-such-id"}));
    assert_eq!(missing["code"], -32002, "{missing}");
    assert_eq!(mcp.rpc_error("resources/read", json!({"uri": "file:///etc/passwd"}))["code"], -32002);

    // The knowledge base.
    let doc = mcp.ok("add_document", json!({"text": format!("# Tea\n\nJasmine tea is scented with jasmine blossoms. {MARK}"),
                                            "title": "Tea notes", "source": "tea.md", "collection": "notes", "tags": ["tea"]}));
    assert_eq!(doc["documents"][0]["outcome"], "created", "{doc}");
    let doc_id = doc["documents"][0]["document"]["id"].as_str().unwrap().to_string();
    assert_eq!(doc["documents"][0]["document"]["format"], "markdown");
    let again = mcp.ok("add_document", json!({"text": format!("# Tea\n\nJasmine tea is scented with jasmine blossoms. {MARK}"),
                                              "title": "Tea notes", "source": "tea.md", "collection": "notes", "tags": ["tea"]}));
    assert_eq!(again["documents"][0]["outcome"], "unchanged");
    let passages =
        mcp.ok("search_knowledge", json!({"query": "what is jasmine tea scented with", "collection": "notes"}));
    assert_eq!(passages["results"][0]["document_id"], doc_id.as_str(), "{passages}");
    assert!(passages["results"][0]["text"].as_str().unwrap().contains("blossoms"));
    assert_eq!(mcp.ok("search_knowledge", json!({"query": "jasmine", "tags": ["coffee"]}))["results"], json!([]));
    let answer = mcp.ok("ask", json!({"question": "What is jasmine tea scented with?"}));
    assert_eq!(answer["mode"], "extractive", "no LLM is configured: {answer}");
    assert!(answer["answer"].as_str().unwrap().contains("[1]"), "{answer}");
    assert_eq!(answer["citations"][0]["document_id"], doc_id.as_str());
    let described = mcp.ok("get_document", json!({"id": doc_id}));
    assert_eq!((described["title"].as_str(), described["collection"].as_str()), (Some("Tea notes"), Some("notes")));
    let read = mcp.request("resources/read", json!({"uri": format!("nexus://documents/{doc_id}")}));
    assert_eq!(
        serde_json::from_str::<Value>(read["result"]["contents"][0]["text"].as_str().unwrap()).unwrap()["source"],
        "tea.md"
    );

    // Meetings.
    let meeting_id = meeting(&server, &a, "Beta launch sync");
    let listed = mcp.ok("list_meetings", json!({}));
    assert_eq!(listed["meetings"][0]["id"], meeting_id.as_str(), "{listed}");
    assert_eq!(mcp.ok("list_meetings", json!({"status": "ended"}))["meetings"], json!([]));
    let found = mcp.ok("search_meetings", json!({"query": "when does the beta launch ship"}));
    assert_eq!(found["results"][0]["meeting_id"], meeting_id.as_str(), "{found}");
    assert!(found["results"][0]["text"].as_str().unwrap().contains("Friday"), "{found}");
    let by_lee = mcp.ok("search_meetings", json!({"query": "release notes", "speaker": "lee"}));
    assert!(by_lee["results"][0]["text"].as_str().unwrap().contains("release notes"), "{by_lee}");
    assert_eq!(mcp.ok("search_meetings", json!({"query": "beta", "meeting_id": "another"}))["results"], json!([]));
    let got = mcp.ok("get_meeting", json!({"id": meeting_id}));
    assert_eq!(got["meeting"]["title"], "Beta launch sync", "{got}");
    assert!(got["insights"].is_array() && got["summary"].is_object(), "{got}");
    let transcript = mcp.ok("get_meeting_transcript", json!({"id": meeting_id}));
    let text = transcript["transcript"].as_str().unwrap();
    assert!(text.contains("Dana: We ship the beta launch on Friday.") && text.contains("Lee: I will write"), "{text}");
    let vtt = mcp.ok("get_meeting_transcript", json!({"id": meeting_id, "format": "vtt"}));
    assert!(vtt["transcript"].as_str().unwrap().starts_with("WEBVTT"), "{vtt}");
    assert_eq!(mcp.tool_error("get_meeting", json!({"id": "no-such-meeting"}))["code"], "not_found");
    assert_eq!(
        mcp.rpc_error(
            "tools/call",
            json!({"name": "get_meeting_transcript",
        "arguments": {"id": meeting_id, "format": "pdf"}})
        )["code"],
        -32602
    );

    // Deleting, then what is left.
    assert_eq!(mcp.ok("delete_memory", json!({"id": id}))["deleted"], id.as_str());
    let gone = mcp.tool_error("get_memory", json!({"id": id}));
    assert_eq!(gone["code"], "not_found", "{gone}");
    assert!(gone["message"].as_str().unwrap().contains(&id));
    assert_eq!(mcp.tool_error("delete_memory", json!({"id": id}))["code"], "not_found");
    assert_eq!(mcp.ok("memory_history", json!({"id": id}))["history"].as_array().unwrap().len(), 3);
    assert_eq!(memories_of(&server, &a), 2);

    // The current protocol: no handshake, the version on every request.
    let modern = Mcp::modern(&server, Some(&a));
    let discovered = modern.request("server/discover", json!({}));
    assert!(discovered["result"]["supportedVersions"].as_array().unwrap().contains(&json!(MODERN)), "{discovered}");
    assert_eq!(modern.request("tools/list", json!({}))["result"]["tools"].as_array().unwrap().len(), TOOLS.len());
    assert_eq!(modern.ok("list_memories", json!({"user_id": "alice"}))["total"], 1);
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn keys_scopes_and_projects_apply_to_every_tool() {
    let tmp = tempfile::tempdir().unwrap();
    let server = keyed_server(&tmp.path().join("data"), |_| {});
    let a = key(&server, "mcp-a", &["read", "write"]);
    let a_read = key(&server, "mcp-a", &["read"]);
    let b = key(&server, "mcp-b", &["read", "write"]);
    let writer = Mcp::new(&server, Some(&a));
    let id =
        writer.ok("add_memory", json!({"text": format!("the vault code is {MARK}"), "user_id": "alice"}))["results"][0]
            ["id"]
            .as_str()
            .unwrap()
            .to_string();
    let doc = writer.ok("add_document", json!({"text": format!("vault manual {MARK}"), "source": "vault.txt"}));
    let doc_id = doc["documents"][0]["document"]["id"].as_str().unwrap().to_string();
    let meeting_id = meeting(&server, &a, "Vault review");

    // No key, a wrong key, a malformed key: 401 before MCP, nothing said.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                      "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let wrong = format!("{}{}", &a[..a.len() - 4], "0000");
    for key in [None, Some(wrong.as_str()), Some("not-a-key")] {
        let response = Mcp::new(&server, key).post(&init, &[]);
        assert_eq!(response.status(), 401, "{key:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"nexus\"");
        let body: Value = response.json().unwrap();
        assert_eq!((body["error"]["code"].as_i64(), body["id"].is_null()), (Some(-32600), true), "{body}");
        assert_eq!(body["error"]["data"]["code"], "unauthorized", "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("API key") && !body.to_string().contains(MARK));
    }

    // A read-only key reads, and is refused every tool that writes; nothing is written.
    let reader = Mcp::new(&server, Some(&a_read));
    assert_eq!(reader.ok("get_memory", json!({"id": id}))["memory"], format!("the vault code is {MARK}"));
    assert_eq!(
        reader.ok("search_memories", json!({"query": "vault", "user_id": "alice"}))["results"][0]["id"],
        id.as_str()
    );
    for (tool, arguments) in [
        ("add_memory", json!({"text": "a reader's memory", "user_id": "alice"})),
        ("update_memory", json!({"id": id, "text": "changed by a reader"})),
        ("delete_memory", json!({"id": id})),
        ("add_document", json!({"text": "a reader's document"})),
    ] {
        let refused = reader.tool_error(tool, arguments);
        assert_eq!(refused["code"], "forbidden", "{tool}: {refused}");
        assert!(refused["message"].as_str().unwrap().contains("`write`"), "{refused}");
    }
    assert_eq!(writer.ok("get_memory", json!({"id": id}))["memory"], format!("the vault code is {MARK}"));
    assert_eq!((memories_of(&server, &a), documents_of(&server, &a)), (1, 1));

    // Another project's key sees nothing of this one and changes none of it.
    let other = Mcp::new(&server, Some(&b));
    let mut answers = Vec::new();
    for (tool, arguments) in [
        ("get_memory", json!({"id": id})),
        ("memory_history", json!({"id": id})),
        ("update_memory", json!({"id": id, "text": "b's edit"})),
        ("delete_memory", json!({"id": id})),
        ("get_document", json!({"id": doc_id})),
        ("get_meeting", json!({"id": meeting_id})),
        ("get_meeting_transcript", json!({"id": meeting_id})),
    ] {
        let error = other.tool_error(tool, arguments);
        assert_eq!(error["code"], "not_found", "{tool}: {error}");
        answers.push(error);
    }
    for (tool, arguments, list) in [
        ("search_memories", json!({"query": "vault code", "user_id": "alice"}), "results"),
        ("search_memories", json!({"query": "vault code"}), "results"),
        ("list_memories", json!({}), "memories"),
        ("search_knowledge", json!({"query": "vault manual"}), "results"),
        ("search_meetings", json!({"query": "beta launch"}), "results"),
        ("list_meetings", json!({}), "meetings"),
        ("ask", json!({"question": "what is in the vault manual?"}), "citations"),
    ] {
        let answer = other.ok(tool, arguments);
        assert_eq!(answer[list], json!([]), "{tool} with project B's key: {answer}");
        answers.push(answer);
    }
    for uri in [format!("nexus://memories/{id}"), format!("nexus://documents/{doc_id}")] {
        let error = other.rpc_error("resources/read", json!({"uri": uri}));
        assert_eq!(error["code"], -32002, "{error}");
        answers.push(error);
    }
    for answer in &answers {
        assert!(!answer.to_string().contains(MARK), "project B saw project A's data: {answer}");
    }
    assert_eq!(writer.ok("get_memory", json!({"id": id}))["memory"], format!("the vault code is {MARK}"));
    assert_eq!(writer.ok("memory_history", json!({"id": id}))["history"].as_array().unwrap().len(), 1);
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn bad_input_is_a_json_rpc_error_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = keyed_server(&tmp.path().join("data"), |cmd| {
        cmd.env("NEXUS__SERVER__BODY_LIMIT_BYTES", "65536");
    });
    let a = key(&server, "mcp-a", &["read", "write"]);
    for mcp in [Mcp::new(&server, Some(&a)), Mcp::modern(&server, Some(&a))] {
        let unknown = mcp.rpc_error("tools/call", json!({"name": "drop_everything", "arguments": {}}));
        assert_eq!(unknown["code"], -32602, "{unknown}");
        assert!(unknown["message"].as_str().unwrap().contains("drop_everything"), "{unknown}");
        for (tool, arguments, says) in [
            ("add_memory", json!({"text": 5, "user_id": "alice"}), "invalid type"),
            ("add_memory", json!({"user_id": "alice"}), "missing field `text`"),
            ("add_memory", json!({"text": "x", "user_id": "alice", "colour": "red"}), "unknown field `colour`"),
            ("add_memory", json!({"text": "x", "user_id": "alice", "tier": "eternal"}), "unknown variant"),
            ("add_memory", json!({"text": "no scope"}), "user_id"),
            ("add_memory", json!({"text": "x".repeat(3000), "user_id": "alice"}), "memory.max_message_bytes"),
            ("add_document", json!({"text": "y".repeat(9000)}), "knowledge.max_upload_bytes"),
            ("add_document", json!({"text": "z", "format": "pdf"}), "unknown variant"),
            ("update_memory", json!({"id": "m"}), "at least one of"),
            ("search_memories", json!({"query": "q", "top_k": 0}), "top_k"),
            ("search_memories", json!({"query": "q", "filters": {"colour": "red"}}), "colour"),
            ("search_knowledge", json!({"query": "q", "collection": "a/b"}), "collection"),
            ("list_memories", json!({"limit": 5000}), "limit"),
        ] {
            let error = mcp.rpc_error("tools/call", json!({"name": tool, "arguments": arguments}));
            assert_eq!(error["code"], -32602, "{tool} {arguments}: {error}");
            assert!(error["message"].as_str().unwrap().contains(says), "{tool}: {error}");
        }
        let oversized = mcp.rpc_error(
            "tools/call",
            json!({"name": "add_memory", "arguments": {"text": "x".repeat(3000), "user_id": "alice"}}),
        );
        assert_eq!(oversized["data"]["code"], "payload_too_large", "{oversized}");
    }
    assert_eq!((memories_of(&server, &a), documents_of(&server, &a)), (0, 0), "nothing was written");

    // Not JSON-RPC at all: refused by the transport, still nothing written.
    let mcp = Mcp::new(&server, Some(&a));
    let response = mcp.post(&json!({"hello": "world"}), &[]);
    assert!(response.status().is_client_error() || json_rpc(&response.text().unwrap()).get("error").is_some());
    let huge = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                      "params": {"name": "add_memory", "arguments": {"text": "x".repeat(80_000), "user_id": "a"}}});
    assert_eq!(mcp.post(&huge, &[]).status(), 413, "over server.body_limit_bytes");
    assert_eq!(memories_of(&server, &a), 0);
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn host_and_origin_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("nexus.toml");
    std::fs::write(&config, "[mcp]\nallowed_hosts = [\"nexus.test\"]\nallowed_origins = [\"https://agent.example\"]\n")
        .unwrap();
    let server = keyed_server(&tmp.path().join("data"), |cmd| {
        cmd.arg("--config").arg(&config);
    });
    let mcp = Mcp::new(&server, Some(MASTER));
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}});
    let port = server.addr.port().to_string();
    for (headers, status) in [
        (vec![], 200),
        (vec![("Host", format!("localhost:{port}"))], 200),
        (vec![("Host", format!("nexus.test:{port}"))], 200),
        (vec![("Host", "evil.example".to_string())], 403),
        (vec![("Origin", "https://agent.example".to_string())], 200),
        (vec![("Origin", "https://evil.example".to_string())], 403),
        (vec![("Origin", "http://agent.example".to_string())], 403),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let response = mcp.post(&list, &headers);
        assert_eq!(response.status(), status, "{headers:?}: {}", response.text().unwrap());
    }
    assert_eq!(server.stop().code(), Some(0));

    // Refused at start: a malformed entry names its key.
    std::fs::write(&config, "[mcp]\nallowed_origins = [\"agent.example/path\"]\n").unwrap();
    let out = run(nexus(&tmp.path().join("data")).arg("--config").arg(&config).arg("config"));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("mcp.allowed_origins"), "{out:?}");
}

/// `nexus mcp` with its stdin and stdout, one JSON-RPC message a line.
struct StdioMcp {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    next_id: u64,
}

impl StdioMcp {
    fn start(mut cmd: Command) -> StdioMcp {
        cmd.arg("mcp").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn nexus mcp");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        StdioMcp { child, stdin, lines, next_id: 1 }
    }

    fn send(&mut self, message: &Value) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let line = self.lines.recv_timeout(Duration::from_secs(120)).expect("an answer on stdout");
            let message: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON on stdout: {line}: {e}"));
            if message["id"] == id {
                return message;
            }
        }
    }

    fn initialize(&mut self) -> Value {
        let answer = self.request(
            "initialize",
            json!({"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "nexus-test", "version": "1"}}),
        );
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        answer
    }

    fn call(&mut self, tool: &str, arguments: Value) -> Value {
        self.request("tools/call", json!({"name": tool, "arguments": arguments}))
    }

    /// Closes stdin: the process ends with this status.
    fn finish(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        common::wait_timeout(&mut self.child, Duration::from_secs(60))
    }
}

#[test]
fn stdio_on_the_data_directory_and_through_a_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");

    // Keys off (loopback, no master key): the MCP server runs in the process, on the data directory.
    let mut mcp = StdioMcp::start(nexus(&data));
    let init = mcp.initialize();
    assert_eq!(init["result"]["serverInfo"]["name"], "nexus", "{init}");
    let tools = mcp.request("tools/list", json!({}));
    assert_eq!(tools["result"]["tools"].as_array().unwrap().len(), TOOLS.len());
    let added = mcp.call("add_memory", json!({"text": "Carol likes sailing", "user_id": "carol"}));
    let id = added["result"]["structuredContent"]["results"][0]["id"].as_str().unwrap().to_string();
    let found = mcp.call("search_memories", json!({"query": "carol's hobby", "user_id": "carol"}));
    assert_eq!(found["result"]["structuredContent"]["results"][0]["id"], id.as_str(), "{found}");
    assert_eq!(mcp.call("nope", json!({}))["error"]["code"], -32602);
    assert_eq!(mcp.call("add_memory", json!({"user_id": "carol"}))["error"]["code"], -32602);
    assert!(mcp.finish().success(), "stdin closed: exit 0");

    // Keys on: projects and keys made on the data directory.
    let keys = |project: &str, scopes: &str| {
        let out = run(nexus(&data).args(["projects", "create", project]));
        assert!(out.status.success() || String::from_utf8_lossy(&out.stderr).contains("exists"), "{out:?}");
        let out = run(nexus(&data).args(["keys", "create", "--name", "mcp", "--project", project, "--scopes", scopes]));
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let a = keys("stdio-a", "read,write");
    let b = keys("stdio-b", "read");
    let keyed = |key: &str| {
        let mut cmd = nexus(&data);
        cmd.env("NEXUS__AUTH__REQUIRED", "true").env("NEXUS_API_KEY", key);
        cmd
    };
    let mut mcp = StdioMcp::start(keyed(&a));
    mcp.initialize();
    let added = mcp.call("add_memory", json!({"text": format!("Dave's locker is 12 {MARK}"), "user_id": "dave"}));
    let dave = added["result"]["structuredContent"]["results"][0]["id"].as_str().unwrap().to_string();
    assert!(mcp.finish().success());
    let mut mcp = StdioMcp::start(keyed(&b));
    mcp.initialize();
    let hidden = mcp.call("get_memory", json!({"id": dave}));
    assert_eq!(hidden["result"]["structuredContent"]["error"]["code"], "not_found", "{hidden}");
    let refused = mcp.call("add_memory", json!({"text": "b writes", "user_id": "dave"}));
    assert_eq!(refused["result"]["structuredContent"]["error"]["code"], "forbidden", "{refused}");
    assert!(mcp.finish().success());
    let out = run(keyed("nxs_wrong_key").arg("mcp"));
    assert_eq!(out.status.code(), Some(1), "a wrong key is refused at start: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("NEXUS_API_KEY"), "{out:?}");

    // While a server holds the data directory, `nexus mcp` relays to it.
    let server = keyed_server(&data, |_| {});
    let mut relayed = StdioMcp::start(keyed(&a));
    let init = relayed.initialize();
    assert_eq!(init["result"]["protocolVersion"], LEGACY, "{init}");
    let got = relayed.call("get_memory", json!({"id": dave}));
    assert_eq!(got["result"]["structuredContent"]["memory"], format!("Dave's locker is 12 {MARK}"), "{got}");
    let added = relayed.call("add_memory", json!({"text": "Dave moved to locker 14", "user_id": "dave"}));
    assert_eq!(added["result"]["isError"], false, "{added}");
    assert_eq!(relayed.call("nope", json!({}))["error"]["code"], -32602);
    assert!(relayed.finish().success());
    assert_eq!(memories_of(&server, &a), 2, "the relayed add landed in project A");
    let mut wrong = StdioMcp::start(keyed("nxs_wrong_key"));
    let refused = wrong.initialize();
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    assert_eq!(refused["error"]["data"]["code"], "unauthorized", "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("not valid"), "{refused}");
    assert!(wrong.finish().success());
    assert_eq!(server.stop().code(), Some(0));
}
