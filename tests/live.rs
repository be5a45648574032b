//! Real time on the real binary: a meeting streamed over a WebSocket (partials to viewers, finals
//! stored and acknowledged, resume without gaps or duplicates, idempotent resends, errors that
//! store nothing), the key as a WebSocket subprotocol, and the event hub (positions, catch-up
//! after a reconnect, tenants and scopes, server-sent events, resync, slow consumers closed).

use crate::common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::time::Duration;

use common::{Server, client};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest, http::HeaderValue};

type Ws = tungstenite::WebSocket<TcpStream>;

const MASTER: &str = "live-master-key-0123456789abcdef";

fn keyed(data: &std::path::Path, envs: &[(&str, &str)]) -> Server {
    let server = Server::start_with(data, |cmd| {
        cmd.env("NEXUS__AUTH__MASTER_KEY", MASTER)
            .env("NEXUS__LIMITS__PER_KEY_PER_SECOND", "0")
            .env("NEXUS__LIMITS__PER_ADDRESS_PER_SECOND", "0")
            .env("NEXUS__LIMITS__AUTH_FAILURES_PER_MINUTE", "0");
        for (k, v) in envs {
            cmd.env(k, v);
        }
    });
    server.wait_ready();
    server
}

fn call(server: &Server, method: reqwest::Method, path: &str, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut r = client().request(method, server.url(path));
    if let Some(key) = key {
        r = r.bearer_auth(key);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().unwrap();
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn ok(server: &Server, method: reqwest::Method, path: &str, key: Option<&str>, body: Option<Value>) -> Value {
    let (status, v) = call(server, method.clone(), path, key, body);
    assert!((200..300).contains(&status), "{method} {path}: {status} {v}");
    v
}

/// A WebSocket to `path`, with the key (if any) as the subprotocol `nexus.key.<key>`.
fn connect(server: &Server, path: &str, key: Option<&str>) -> Result<Ws, tungstenite::Error> {
    let mut request = format!("ws://{}{}", server.addr, path).into_client_request().unwrap();
    if let Some(key) = key {
        let protocols = HeaderValue::from_str(&format!("nexus.v1, nexus.key.{key}")).unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", protocols);
    }
    let stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    match tungstenite::client(request, stream) {
        Ok((ws, response)) => {
            if key.is_some() {
                assert_eq!(response.headers()["sec-websocket-protocol"], "nexus.v1", "the subprotocol is echoed");
            }
            Ok(ws)
        }
        Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
        Err(tungstenite::HandshakeError::Interrupted(_)) => panic!("handshake interrupted"),
    }
}

fn refused_status(result: Result<Ws, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, the connection was accepted"),
    }
}

/// The next JSON message (pings and pongs skipped).
fn next(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("a message") {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// Reads until a message satisfies `want`; returns it.
fn until(ws: &mut Ws, want: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..10_000 {
        let v = next(ws);
        if want(&v) {
            return v;
        }
    }
    panic!("no such message");
}

fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string())).unwrap();
}

fn seg(id: &str, text: &str, is_final: bool) -> Value {
    json!({"segment_id": id, "speaker": "Ana", "start_ms": 1000, "end_ms": 2000, "text": text, "is_final": is_final})
}

fn transcript_len(server: &Server, meeting: &str, key: Option<&str>) -> usize {
    let t = ok(server, reqwest::Method::GET, &format!("/api/v1/meetings/{meeting}/transcript"), key, None);
    t["segments"].as_array().unwrap().len()
}

fn is_type(kind: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["type"] == kind
}

#[test]
fn a_meeting_streams_partials_and_finals_resumes_and_refuses_bad_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    server.wait_ready();
    let meeting = ok(&server, reqwest::Method::POST, "/api/v1/meetings", None, Some(json!({"title": "Standup"})));
    let id = meeting["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/meetings/{id}/stream");

    let mut viewer = connect(&server, &path, None).unwrap();
    let mut sender = connect(&server, &path, None).unwrap();
    // Partials reach the viewer (the latest text of the segment), finals are acknowledged.
    send(&mut sender, seg("s1", "we should", false));
    let partial = until(&mut viewer, is_type("partial"));
    assert_eq!(partial["data"]["segment_id"], "s1", "{partial}");
    assert_eq!(partial["data"]["text"], "we should");
    assert_eq!(partial["topics"], json!(["meetings", format!("meeting:{id}")]));
    send(&mut sender, seg("s1", "we should ship on Friday", true));
    let ack = until(&mut sender, is_type("ack"));
    assert_eq!(ack, json!({"type": "ack", "segment_id": "s1", "seq": 0, "status": "stored"}));
    let fin = until(&mut viewer, is_type("segment"));
    assert_eq!(fin["data"]["seq"], 0, "{fin}");
    assert_eq!(fin["data"]["text"], "we should ship on Friday");
    assert!(fin["pos"].as_u64().unwrap() > 0, "a final carries its change-log position: {fin}");
    for (n, sid) in ["s2", "s3"].iter().enumerate() {
        send(&mut sender, seg(sid, &format!("point number {n}"), true));
        assert_eq!(until(&mut sender, is_type("ack"))["seq"], n as u64 + 1);
    }
    // A final sent again is the same segment, acknowledged with its first seq.
    send(&mut sender, seg("s2", "point number 0", true));
    let again = until(&mut sender, is_type("ack"));
    assert_eq!((again["seq"].as_u64(), again["status"].as_str()), (Some(1), Some("duplicate")), "{again}");
    assert_eq!(transcript_len(&server, &id, None), 3);

    // Bad messages: an error with the HTTP API's code, nothing stored.
    sender.send(Message::text("{not json")).unwrap();
    assert_eq!(until(&mut sender, is_type("error"))["code"], "invalid_json");
    send(&mut sender, json!({"segment_id": "s9", "txt": "typo"}));
    assert_eq!(until(&mut sender, is_type("error"))["code"], "invalid_request");
    send(&mut sender, seg("s9", "", true));
    assert_eq!(until(&mut sender, is_type("error"))["code"], "invalid_request");
    assert_eq!(transcript_len(&server, &id, None), 3, "nothing stored for bad messages");

    // Resume after seq 0: the stored finals 1 and 2, then the live ones, each once.
    let mut resumed = connect(&server, &format!("{path}?after=0"), None).unwrap();
    send(&mut sender, seg("s4", "the fourth point", true));
    assert_eq!(until(&mut sender, is_type("ack"))["seq"], 3);
    send(&mut sender, seg("s5", "the fifth point", true));
    assert_eq!(until(&mut sender, is_type("ack"))["seq"], 4);
    let mut seqs = Vec::new();
    while seqs.last() != Some(&4) {
        let v = until(&mut resumed, is_type("segment"));
        seqs.push(v["data"]["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, vec![1, 2, 3, 4], "no gap, no duplicate");

    // An ended meeting takes no more segments.
    ok(&server, reqwest::Method::POST, &format!("/api/v1/meetings/{id}/end"), None, None);
    send(&mut sender, seg("s6", "too late", true));
    assert_eq!(until(&mut sender, is_type("error"))["code"], "conflict");
    send(&mut sender, seg("s7", "too late", false));
    assert_eq!(until(&mut sender, is_type("error"))["code"], "conflict");
    assert_eq!(transcript_len(&server, &id, None), 5);

    // An unknown meeting: an error message; without an upgrade, the HTTP answers.
    let mut unknown = connect(&server, "/api/v1/meetings/mtg_nope/stream", None).unwrap();
    assert_eq!(next(&mut unknown)["code"], "not_found");
    assert_eq!(call(&server, reqwest::Method::GET, "/api/v1/meetings/mtg_nope/stream", None, None).0, 404);
    assert_eq!(call(&server, reqwest::Method::GET, &path, None, None).0, 400);
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn the_stream_takes_the_key_as_a_subprotocol_with_its_scopes_and_tenant() {
    let tmp = tempfile::tempdir().unwrap();
    let server = keyed(&tmp.path().join("data"), &[]);
    let post = reqwest::Method::POST;
    ok(&server, post.clone(), "/api/v1/projects", Some(MASTER), Some(json!({"id": "other", "name": "other"})));
    let key = |project: &str, scopes: Value| {
        let body = json!({"name": "k", "project": project, "scopes": scopes});
        ok(&server, post.clone(), "/api/v1/keys", Some(MASTER), Some(body))["key"].as_str().unwrap().to_string()
    };
    let writer = key("default", json!(["read", "write"]));
    let reader = key("default", json!(["read"]));
    let stranger = key("other", json!(["read", "write"]));
    let meeting = ok(&server, post.clone(), "/api/v1/meetings", Some(&writer), Some(json!({"title": "Keys"})));
    let id = meeting["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/meetings/{id}/stream");

    assert_eq!(refused_status(connect(&server, &path, None)), 401);
    assert_eq!(refused_status(connect(&server, &path, Some("nxs_0000000000000000_wrong"))), 401);
    let mut watching = connect(&server, &path, Some(&reader)).unwrap();
    let mut sending = connect(&server, &path, Some(&writer)).unwrap();
    send(&mut sending, seg("k1", "the key came as a subprotocol", true));
    assert_eq!(until(&mut sending, is_type("ack"))["seq"], 0);
    assert_eq!(until(&mut watching, is_type("segment"))["data"]["segment_id"], "k1", "a read key watches");
    send(&mut watching, seg("k2", "a reader may not write", true));
    assert_eq!(until(&mut watching, is_type("error"))["code"], "forbidden");
    assert_eq!(transcript_len(&server, &id, Some(&reader)), 1);
    // Another project's key does not find the meeting.
    let mut outside = connect(&server, &path, Some(&stranger)).unwrap();
    assert_eq!(next(&mut outside)["code"], "not_found");
    assert_eq!(call(&server, reqwest::Method::GET, &path, Some(&stranger), None).0, 404);
    assert_eq!(server.stop().code(), Some(0));
}

fn add_memory(server: &Server, key: &str, user: &str, text: &str) -> String {
    let body = json!({"messages": [{"role": "user", "content": text}], "user_id": user, "infer": false});
    let v = ok(server, reqwest::Method::POST, "/api/v1/memories", Some(key), Some(body));
    v["results"][0]["id"].as_str().unwrap().to_string()
}

#[test]
fn the_event_hub_carries_positions_catches_up_and_keeps_tenants_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let server = keyed(&tmp.path().join("data"), &[]);
    let post = reqwest::Method::POST;
    for project in ["tenant-a", "tenant-b"] {
        ok(&server, post.clone(), "/api/v1/projects", Some(MASTER), Some(json!({"id": project, "name": project})));
    }
    let key = |project: &str, scopes: Value| {
        let body = json!({"name": "k", "project": project, "scopes": scopes});
        ok(&server, post.clone(), "/api/v1/keys", Some(MASTER), Some(body))["key"].as_str().unwrap().to_string()
    };
    let a_write = key("tenant-a", json!(["read", "write"]));
    let a_read = key("tenant-a", json!(["read"]));
    let a_write_only = key("tenant-a", json!(["write"]));
    let b_all = key("tenant-b", json!(["read", "write", "admin"]));

    let mut a_ws = connect(&server, "/api/v1/events?topics=memories", Some(&a_read)).unwrap();
    let mut b_ws = connect(&server, "/api/v1/events", Some(&b_all)).unwrap();
    // A memory added over HTTP arrives with its position; documents are another topic.
    ok(
        &server,
        post.clone(),
        "/api/v1/documents/text",
        Some(&a_write),
        Some(json!({"text": "a handbook", "source": "a.txt"})),
    );
    let m1 = add_memory(&server, &a_write, "alice", "Alice likes green tea");
    let first = next(&mut a_ws);
    assert_eq!((first["type"].as_str(), first["id"].as_str()), (Some("memory"), Some(m1.as_str())), "{first}");
    assert_eq!(first["data"]["memory"], "Alice likes green tea");
    assert!(first["topics"].as_array().unwrap().contains(&json!("memories:user:alice")), "{first}");
    let p1 = first["pos"].as_u64().unwrap();
    let m2 = add_memory(&server, &a_write, "alice", "Alice moved to Lisbon");
    let second = next(&mut a_ws);
    assert_eq!(second["id"], m2.as_str());
    let p2 = second["pos"].as_u64().unwrap();
    assert!(p2 > p1);

    // Tenant B sees none of A's events: its first event is its own memory.
    let mb = add_memory(&server, &b_all, "bob", "Bob's own memory");
    let b_first = until(&mut b_ws, is_type("memory"));
    assert_eq!(b_first["id"], mb.as_str(), "tenant B saw another tenant's event: {b_first}");

    // Reconnecting after p1 catches up on m2, then goes live: no gap, no duplicate.
    drop(a_ws);
    let mut again =
        connect(&server, &format!("/api/v1/events?topics=memories:user:alice&after={p1}"), Some(&a_read)).unwrap();
    let m3 = add_memory(&server, &a_write, "alice", "Alice adopted a cat");
    let ids: Vec<String> = (0..2).map(|_| next(&mut again)["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, vec![m2.clone(), m3.clone()]);

    // The same as a JSON page, and as server-sent events resumed with Last-Event-ID.
    let page = ok(&server, reqwest::Method::GET, "/api/v1/events?topics=memories&after=0", Some(&a_read), None);
    let listed: Vec<&str> = page["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(listed, vec![m1.as_str(), m2.as_str(), m3.as_str()], "{page}");
    assert!(!page["resync"].as_bool().unwrap());
    let b_page = ok(&server, reqwest::Method::GET, "/api/v1/events?after=0", Some(&b_all), None);
    let b_text = b_page.to_string();
    assert!(!b_text.contains(&m1) && !b_text.contains("Alice") && b_text.contains(&mb), "{b_page}");
    let sse = client()
        .get(server.url("/api/v1/events?topics=memories"))
        .bearer_auth(&a_read)
        .header("Accept", "text/event-stream")
        .header("Last-Event-ID", p1.to_string())
        .send()
        .unwrap();
    assert_eq!(sse.status(), 200);
    assert!(sse.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut lines = BufReader::new(sse).lines();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = lines.next().unwrap().unwrap();
        if let Some(data) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(data).unwrap();
            seen.push(v["id"].as_str().unwrap().to_string());
        }
        if let Some(id) = line.strip_prefix("id: ") {
            assert!(id.parse::<u64>().unwrap() > p1);
        }
    }
    assert_eq!(seen, vec![m2.clone(), m3.clone()]);

    // Scopes: a key without `read` follows nothing; bad topics are refused.
    assert_eq!(call(&server, reqwest::Method::GET, "/api/v1/events", Some(&a_write_only), None).0, 403);
    assert_eq!(refused_status(connect(&server, "/api/v1/events", Some(&a_write_only))), 403);
    assert_eq!(refused_status(connect(&server, "/api/v1/events", Some("nxs_0000000000000000_wrong"))), 401);
    let (status, body) = call(&server, reqwest::Method::GET, "/api/v1/events?topics=records", Some(&a_read), None);
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")), "{body}");
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn a_client_too_far_behind_is_told_to_resync() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(&tmp.path().join("data"), |cmd| {
        cmd.env("NEXUS__EVENTS__CATCH_UP_MAX", "3");
    });
    server.wait_ready();
    for n in 0..3 {
        let body =
            json!({"messages": [{"role": "user", "content": format!("fact {n}")}], "user_id": "u", "infer": false});
        ok(&server, reqwest::Method::POST, "/api/v1/memories", None, Some(body));
    }
    let page = ok(&server, reqwest::Method::GET, "/api/v1/events?after=0", None, None);
    assert_eq!(page["resync"], true, "{page}");
    let mut ws = connect(&server, "/api/v1/events?after=0", None).unwrap();
    let first = next(&mut ws);
    assert_eq!(first["type"], "resync", "{first}");
    assert_eq!(first["pos"], page["pos"]);
    // From there it follows live.
    let body = json!({"messages": [{"role": "user", "content": "fact 4"}], "user_id": "u", "infer": false});
    let id = ok(&server, reqwest::Method::POST, "/api/v1/memories", None, Some(body))["results"][0]["id"].clone();
    assert_eq!(until(&mut ws, is_type("memory"))["id"], id);
    assert_eq!(server.stop().code(), Some(0));
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_viewer_that_stops_reading_is_closed_and_memory_stays_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with(&tmp.path().join("data"), |cmd| {
        cmd.env("NEXUS__EVENTS__QUEUE", "1024").env("NEXUS__EVENTS__SEND_TIMEOUT_MS", "2000");
    });
    server.wait_ready();
    let meeting = ok(&server, reqwest::Method::POST, "/api/v1/meetings", None, Some(json!({"title": "Flood"})));
    let path = format!("/api/v1/meetings/{}/stream", meeting["id"].as_str().unwrap());
    let mut slow = connect(&server, &path, None).unwrap();
    let mut sender = connect(&server, &path, None).unwrap();
    // Warm up, then measure: 2,000 partials of 16 KiB (32 MiB) pass through the hub while the
    // viewer reads nothing.
    send(&mut sender, seg("warm", "warm up", false));
    until(&mut slow, is_type("partial"));
    let before = rss_kib(server.child.id());
    let text = "x".repeat(16 * 1024 - 16);
    const SENT: usize = 2000;
    for round in 0..SENT / 200 {
        for n in 0..200 {
            send(&mut sender, seg(&format!("p{round}-{n}"), &text, false));
        }
        // Paced like speech, not a burst: the server has read the round when it answers this.
        sender.send(Message::text("{not json")).unwrap();
        assert_eq!(until(&mut sender, is_type("error"))["code"], "invalid_json");
        eprintln!("round {round} sent");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The sender's connection is still served (it is not the slow one).
    send(&mut sender, seg("f1", "still here", true));
    assert_eq!(until(&mut sender, is_type("ack"))["seq"], 0);
    let grown_mib = rss_kib(server.child.id()).saturating_sub(before) / 1024;
    // The slow viewer gets what its socket held, then `resync` and a close, or just the close.
    let mut partials = 0;
    let mut resync = false;
    loop {
        match slow.read() {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                match v["type"].as_str() {
                    Some("partial") => partials += 1,
                    Some("resync") => resync = true,
                    _ => {}
                }
            }
            Ok(Message::Close(frame)) => {
                if let Some(frame) = frame {
                    assert_eq!(u16::from(frame.code), 1008);
                }
                break;
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                panic!("the slow viewer's connection is still open after {partials} partials")
            }
            Err(_) => break,
        }
    }
    println!("slow viewer: {partials} of {SENT} partials, resync {resync}; server grew {grown_mib} MiB");
    assert!(partials < SENT, "the slow viewer was cut off ({partials} of {SENT})");
    assert!(grown_mib < 48, "the server's memory grew by {grown_mib} MiB for a viewer that reads nothing");
    assert_eq!(server.stop().code(), Some(0));
}
