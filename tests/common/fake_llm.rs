//! A local server speaking the two LLM wire formats, standing in for paid APIs:
//! OpenAI Chat Completions (`POST /v1/chat/completions`) and Anthropic Messages
//! (`POST /v1/messages`), whole answers and SSE streams written byte for byte as those services
//! write them. It checks requests as they do (key, version header, roles, required fields), and
//! the model name picks a behaviour: see [`behaviour`].
#![allow(dead_code)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::SinkExt;
use parking_lot::Mutex;
use serde_json::{Value, json};

pub const KEY: &str = "sk-fake-9c41d2e7b8a0-secret";

/// The answer, as the stream sends it: the last piece has a multi-byte character that the
/// server splits across two writes.
pub const PIECES: [&str; 5] = ["The sky ", "is blue ", "because of ", "Rayleigh ", "scattering — café ☕."];
pub const JSON_ANSWER: &str = r#"{"answer": "blue", "sources": [1]}"#;
/// What the `meeting-notes` model answers a JSON request: a meeting's notes in a code fence,
/// with a trailing comma to repair and one item pointing outside the transcript.
pub const MEETING_NOTES: &str = "Here are the notes:\n```json\n{\"summary\": \"The launch moves to May; Ben tells the press.\", \
\"action_items\": [{\"text\": \"Tell the press team about the new date\", \"owner\": \"ben\", \"due\": \"tomorrow\", \"seqs\": [1]},], \
\"decisions\": [{\"text\": \"The launch moves to May\", \"seqs\": [0]}, {\"text\": \"Invented\", \"seqs\": [99]}], \
\"questions\": []}\n```";

pub fn answer() -> String {
    PIECES.concat()
}

#[derive(Default)]
pub struct Calls {
    pub requests: AtomicUsize,
    pub bodies: Mutex<Vec<Value>>,
    pub headers: Mutex<Vec<HeaderMap>>,
    /// The test opens it to let a `gated` stream go on past its first piece.
    pub gate: tokio::sync::Notify,
    /// Set once a stream has handed its last byte to the connection.
    pub finished: AtomicBool,
    failed_once: Mutex<HashSet<String>>,
}

impl Calls {
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
    pub fn last_body(&self) -> Value {
        self.bodies.lock().last().cloned().expect("a request was made")
    }
    /// The last request whose body holds `text`: other work (the entity graph's reading of a
    /// document or transcript) may ask the model in between.
    pub fn last_body_with(&self, text: &str) -> Value {
        let bodies = self.bodies.lock();
        bodies.iter().rev().find(|b| b.to_string().contains(text)).cloned().expect("a request holding the text")
    }
    pub fn last_header(&self, name: &str) -> Option<String> {
        self.headers.lock().last()?.get(name).map(|v| v.to_str().unwrap().to_string())
    }
    /// True the first time `model` asks, so "-once" behaviours fail exactly once.
    fn first_time(&self, model: &str) -> bool {
        self.failed_once.lock().insert(model.to_string())
    }
}

pub struct FakeLlm {
    pub addr: SocketAddr,
    pub calls: Arc<Calls>,
}

impl FakeLlm {
    /// Serves on its own thread and runtime, so it works from sync and async tests alike.
    pub fn start() -> FakeLlm {
        let calls = Arc::new(Calls::default());
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            .with_state(calls.clone());
        FakeLlm { addr: super::serve_in_background(app), calls }
    }

    /// Base URL as configured for an OpenAI-compatible server.
    pub fn openai_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Base URL as configured for Anthropic.
    pub fn anthropic_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// What the model name asks the fake to do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Behaviour {
    /// Answer normally.
    Ok,
    /// Accept any key (or none) and answer.
    AnyKey,
    /// Like `AnyKey`; a JSON request gets [`MEETING_NOTES`].
    MeetingNotes,
    /// Stream the first piece, then wait for `Calls::gate`.
    Gated,
    /// 429 with `Retry-After: 1`, once.
    RateLimitedOnce,
    /// 500, always.
    Always500,
    /// Overloaded (Anthropic 529, OpenAI 503), always / once.
    Overloaded,
    OverloadedOnce,
    /// Answers after 3 s.
    Slow,
    /// Streams one piece, then stays silent for 30 s.
    Stall,
    /// 200 with a JSON body cut short.
    Malformed,
    /// Streams two pieces, then drops the connection.
    Cut,
    /// Streams two pieces, then closes cleanly without the end marker.
    CutClean,
    /// Drops the connection before any piece, once.
    CutOnce,
    /// Streams two pieces, then an error event.
    ErrorEvent,
    /// 404: no such model.
    BadModel,
    /// 500 whose message quotes the key it was sent.
    EchoKey500,
    /// Answers a streaming request with a whole JSON answer.
    NoStream,
}

fn behaviour(model: &str) -> Behaviour {
    match model {
        "any-key" => Behaviour::AnyKey,
        "meeting-notes" => Behaviour::MeetingNotes,
        "gated" => Behaviour::Gated,
        "rate-limited-once" => Behaviour::RateLimitedOnce,
        "always-500" => Behaviour::Always500,
        "overloaded" => Behaviour::Overloaded,
        "overloaded-once" => Behaviour::OverloadedOnce,
        "slow" => Behaviour::Slow,
        "stall" => Behaviour::Stall,
        "malformed" => Behaviour::Malformed,
        "cut" => Behaviour::Cut,
        "cut-clean" => Behaviour::CutClean,
        "cut-once" => Behaviour::CutOnce,
        "error-event" => Behaviour::ErrorEvent,
        "bad-model" => Behaviour::BadModel,
        "echo-key-500" => Behaviour::EchoKey500,
        "no-stream" => Behaviour::NoStream,
        _ => Behaviour::Ok,
    }
}

/// One write to the connection, or a pause between writes.
enum Write {
    Bytes(Vec<u8>),
    Pause(Duration),
    WaitForGate,
    /// Ends the body with an error: the connection is dropped mid-response.
    Abort,
}

fn sse_response(calls: Arc<Calls>, writes: Vec<Write>) -> Response {
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    tokio::spawn(async move {
        for write in writes {
            match write {
                Write::Bytes(bytes) => {
                    if tx.send(Ok(Bytes::from(bytes))).await.is_err() {
                        return;
                    }
                }
                Write::Pause(d) => tokio::time::sleep(d).await,
                Write::WaitForGate => {
                    let _ = tokio::time::timeout(Duration::from_secs(10), calls.gate.notified()).await;
                }
                Write::Abort => {
                    let _ = tx.send(Err(std::io::Error::other("connection dropped"))).await;
                    return;
                }
            }
        }
        calls.finished.store(true, Ordering::SeqCst);
    });
    Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(rx))
        .unwrap()
}

/// The writes of a stream: `events` (each already a complete SSE event ending in a blank line)
/// shaped by the behaviour. `pieces_at` are the indexes of the events that carry a piece.
fn stream_writes(b: Behaviour, events: Vec<String>, pieces_at: &[usize], error_event: String) -> Vec<Write> {
    let pause = || Write::Pause(Duration::from_millis(20));
    let mut writes = Vec::new();
    let last_piece = *pieces_at.last().unwrap();
    for (i, event) in events.into_iter().enumerate() {
        let piece_number = pieces_at.iter().position(|&p| p == i);
        if b == Behaviour::CutOnce && piece_number == Some(0) {
            writes.push(Write::Abort);
            return writes;
        }
        if i == last_piece {
            // Split inside the three bytes of '☕', as TCP may.
            let cut = event.find('☕').unwrap() + 1;
            writes.push(Write::Bytes(event.as_bytes()[..cut].to_vec()));
            writes.push(pause());
            writes.push(Write::Bytes(event.as_bytes()[cut..].to_vec()));
        } else {
            writes.push(Write::Bytes(event.into_bytes()));
        }
        writes.push(pause());
        match (b, piece_number) {
            (Behaviour::Gated, Some(0)) => writes.push(Write::WaitForGate),
            (Behaviour::Stall, Some(0)) => writes.push(Write::Pause(Duration::from_secs(30))),
            (Behaviour::Cut, Some(1)) => {
                writes.push(Write::Abort);
                return writes;
            }
            (Behaviour::CutClean, Some(1)) => return writes,
            (Behaviour::ErrorEvent, Some(1)) => {
                writes.push(Write::Bytes(error_event.into_bytes()));
                return writes;
            }
            _ => {}
        }
    }
    writes
}

fn record(calls: &Calls, headers: &HeaderMap, body: &Bytes) -> Option<Value> {
    calls.requests.fetch_add(1, Ordering::SeqCst);
    calls.headers.lock().push(headers.clone());
    let body: Value = serde_json::from_slice(body).ok()?;
    calls.bodies.lock().push(body.clone());
    Some(body)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn mentions_json(messages: &Value) -> bool {
    messages
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| m["content"].as_str().unwrap_or("").to_lowercase().contains("json"))
}

// ---------------------------------------------------------------- OpenAI

fn openai_error(status: StatusCode, message: &str, kind: &str, code: Value) -> Response {
    (status, axum::Json(json!({"error": {"message": message, "type": kind, "param": null, "code": code}})))
        .into_response()
}

async fn openai(State(calls): State<Arc<Calls>>, headers: HeaderMap, raw: Bytes) -> Response {
    let Some(body) = record(&calls, &headers, &raw) else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request.",
            "invalid_request_error",
            Value::Null,
        );
    };
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let b = behaviour(&model);
    let presented = header(&headers, "authorization").and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
    if b != Behaviour::AnyKey && b != Behaviour::MeetingNotes && presented != KEY {
        return openai_error(
            StatusCode::UNAUTHORIZED,
            &format!("Incorrect API key provided: {presented}. You can find your API key in your account settings."),
            "invalid_request_error",
            json!("invalid_api_key"),
        );
    }
    if !body["messages"].is_array() || body["model"].as_str().is_none() {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "Missing required parameter",
            "invalid_request_error",
            Value::Null,
        );
    }
    let json_mode = body["response_format"]["type"] == "json_object";
    if json_mode && !mentions_json(&body["messages"]) {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
            "invalid_request_error",
            Value::Null,
        );
    }
    if let Some(response) = common_failure(&calls, b, &model, presented, Provider::OpenAi).await {
        return response;
    }
    let stream = body["stream"] == true;
    if !stream || b == Behaviour::NoStream {
        let text = match (json_mode, b) {
            (true, Behaviour::MeetingNotes) => MEETING_NOTES.to_string(),
            (true, _) => JSON_ANSWER.to_string(),
            _ => answer(),
        };
        return axum::Json(json!({
            "id": "chatcmpl-fake1",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": format!("{model}-2025-01-01"),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null, "annotations": []},
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": 42, "completion_tokens": 17, "total_tokens": 59},
            "service_tier": "default",
            "system_fingerprint": "fp_fake"
        }))
        .into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        let chunk = json!({
            "id": "chatcmpl-fake1",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        });
        format!("data: {chunk}\n\n")
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": "", "refusal": null}), Value::Null)];
    let mut pieces_at = Vec::new();
    for piece in PIECES {
        pieces_at.push(events.len());
        events.push(chunk(json!({"content": piece}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    events.push("data: [DONE]\n\n".to_string());
    let error_event = format!(
        "data: {}\n\n",
        json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error"}})
    );
    let b = if b == Behaviour::CutOnce && !calls.first_time(&model) { Behaviour::Ok } else { b };
    sse_response(calls.clone(), stream_writes(b, events, &pieces_at, error_event))
}

// ---------------------------------------------------------------- Anthropic

fn anthropic_error(status: u16, kind: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("request-id", "req_fake")],
        axum::Json(json!({"type": "error", "error": {"type": kind, "message": message}})),
    )
        .into_response()
}

async fn anthropic(State(calls): State<Arc<Calls>>, headers: HeaderMap, raw: Bytes) -> Response {
    let Some(body) = record(&calls, &headers, &raw) else {
        return anthropic_error(400, "invalid_request_error", "There was an issue with the format of your request");
    };
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let b = behaviour(&model);
    let presented = header(&headers, "x-api-key").unwrap_or("");
    if b != Behaviour::AnyKey {
        if presented.is_empty() {
            return anthropic_error(401, "authentication_error", "x-api-key header is required");
        }
        if presented != KEY {
            return anthropic_error(401, "authentication_error", "invalid x-api-key");
        }
    }
    if header(&headers, "anthropic-version").is_none() {
        return anthropic_error(400, "invalid_request_error", "anthropic-version: header is required");
    }
    if !body["max_tokens"].is_u64() {
        return anthropic_error(400, "invalid_request_error", "max_tokens: Field required");
    }
    if body["temperature"].as_f64().is_some_and(|t| !(0.0..=1.0).contains(&t)) {
        return anthropic_error(400, "invalid_request_error", "temperature: range: 0..1");
    }
    let Some(messages) = body["messages"].as_array() else {
        return anthropic_error(400, "invalid_request_error", "messages: Field required");
    };
    for (i, message) in messages.iter().enumerate() {
        if !matches!(message["role"].as_str(), Some("user" | "assistant")) {
            return anthropic_error(
                400,
                "invalid_request_error",
                &format!("messages.{i}.role: Input should be 'user' or 'assistant'"),
            );
        }
    }
    if let Some(response) = common_failure(&calls, b, &model, presented, Provider::Anthropic).await {
        return response;
    }
    // Like a real model told to answer in JSON, it sometimes wraps the object in a fence.
    let json_mode = body["system"].as_str().is_some_and(|s| s.contains("JSON"));
    let stream = body["stream"] == true;
    if !stream || b == Behaviour::NoStream {
        let text = if json_mode { format!("```json\n{JSON_ANSWER}\n```") } else { answer() };
        return axum::Json(json!({
            "id": "msg_fake1",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": 42, "output_tokens": 17}
        }))
        .into_response();
    }
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_fake1", "type": "message", "role": "assistant",
                "content": [], "model": model, "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 42, "output_tokens": 1}}}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        // Anthropic writes its pings with a space after the colon.
        "event: ping\ndata: {\"type\": \"ping\"}\n\n".to_string(),
    ];
    let mut pieces_at = Vec::new();
    for piece in PIECES {
        pieces_at.push(events.len());
        events.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    events.push(event("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
    events.push(event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 17}}),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    let error_event =
        event("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));
    let b = if b == Behaviour::CutOnce && !calls.first_time(&model) { Behaviour::Ok } else { b };
    sse_response(calls.clone(), stream_writes(b, events, &pieces_at, error_event))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Provider {
    OpenAi,
    Anthropic,
}

/// Failures both APIs answer alike, each in its own error shape.
async fn common_failure(
    calls: &Calls,
    b: Behaviour,
    model: &str,
    presented_key: &str,
    provider: Provider,
) -> Option<Response> {
    let error = |status: u16, kind: &str, message: &str| match provider {
        Provider::OpenAi => openai_error(StatusCode::from_u16(status).unwrap(), message, kind, Value::Null),
        Provider::Anthropic => anthropic_error(status, kind, message),
    };
    match b {
        Behaviour::RateLimitedOnce if calls.first_time(model) => {
            let mut response = error(429, "rate_limit_error", "Rate limit reached for requests");
            response.headers_mut().insert("retry-after", "1".parse().unwrap());
            Some(response)
        }
        Behaviour::Always500 => Some(error(500, "api_error", "The server had an error while processing your request.")),
        Behaviour::Overloaded => Some(overloaded(provider)),
        Behaviour::OverloadedOnce if calls.first_time(model) => Some(overloaded(provider)),
        Behaviour::Slow => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            None
        }
        Behaviour::Malformed => Some(
            Response::builder()
                .header("content-type", "application/json")
                .body(Body::from(r#"{"id":"x","choices":[{"index":0,"message":{"role":"assist"#))
                .unwrap(),
        ),
        Behaviour::BadModel => Some(match provider {
            Provider::OpenAi => openai_error(
                StatusCode::NOT_FOUND,
                &format!("The model `{model}` does not exist or you do not have access to it."),
                "invalid_request_error",
                json!("model_not_found"),
            ),
            Provider::Anthropic => anthropic_error(404, "not_found_error", &format!("model: {model}")),
        }),
        Behaviour::EchoKey500 => {
            Some(error(500, "api_error", &format!("internal failure handling key {presented_key}")))
        }
        _ => None,
    }
}

fn overloaded(provider: Provider) -> Response {
    match provider {
        Provider::OpenAi => openai_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "The engine is currently overloaded, please try again later",
            "server_error",
            Value::Null,
        ),
        Provider::Anthropic => anthropic_error(529, "overloaded_error", "Overloaded"),
    }
}

/// Answers chat completions from a queue of scripted texts, in OpenAI's wire format.
pub struct ScriptedLlm {
    pub addr: std::net::SocketAddr,
    answers: Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
    pub requests: Arc<std::sync::Mutex<Vec<Value>>>,
}

impl ScriptedLlm {
    pub fn start() -> ScriptedLlm {
        use axum::routing::post;
        let answers: Arc<std::sync::Mutex<std::collections::VecDeque<String>>> = Arc::default();
        let requests: Arc<std::sync::Mutex<Vec<Value>>> = Arc::default();
        let (a, r) = (answers.clone(), requests.clone());
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            post(move |axum::Json(body): axum::Json<Value>| {
                let (a, r) = (a.clone(), r.clone());
                async move {
                    r.lock().unwrap().push(body);
                    let text = a.lock().unwrap().pop_front().unwrap_or_else(|| "{}".into());
                    axum::Json(json!({
                        "id": "chatcmpl-scripted", "object": "chat.completion", "created": 1_700_000_000, "model": "scripted",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}
                    }))
                }
            }),
        );
        ScriptedLlm { addr: super::serve_in_background(app), answers, requests }
    }

    pub fn script(&self, answers: &[&str]) {
        self.answers.lock().unwrap().extend(answers.iter().map(|s| s.to_string()));
    }

    /// A config file pointing Nexus at this server.
    pub fn config(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("llm.toml");
        let text = format!(
            "[llm]\nprovider = \"openai\"\n[llm.openai]\nurl = \"http://{}/v1\"\nmodel = \"scripted\"\n",
            self.addr
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}
