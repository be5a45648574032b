//! A local server speaking Cohere's rerank wire format (`POST /v2/rerank`), standing in for the
//! paid API: it checks the key and the body as Cohere does, and answers
//! `{id, results: [{index, relevance_score}], meta}`, best first, `top_n` of them.
//!
//! Its "model" is a rule a test can compute: a document scores the share of the query's words
//! (lowercased, three letters or more) it holds, plus a little for being short, so that ties
//! go to the shorter text. Words in the query pick a behaviour: `fail500` answers 500 every
//! time, `flaky` 503 on the first request for that query, `slow` after 3 s.
#![allow(dead_code)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use parking_lot::Mutex;
use serde_json::{Value, json};

pub const KEY: &str = "co-fake-rerank-5d1e2a9b";
pub const MODEL: &str = "rerank-v3.5";

#[derive(Default)]
pub struct Calls {
    pub bodies: Mutex<Vec<Value>>,
    pub authorizations: Mutex<Vec<Option<String>>>,
    flaky: Mutex<HashSet<String>>,
}

impl Calls {
    pub fn requests(&self) -> usize {
        self.bodies.lock().len()
    }
    pub fn last_body(&self) -> Value {
        self.bodies.lock().last().cloned().expect("a rerank request was made")
    }
}

pub struct FakeRerank {
    pub addr: SocketAddr,
    pub calls: Arc<Calls>,
}

impl FakeRerank {
    pub fn start() -> FakeRerank {
        let calls = Arc::new(Calls::default());
        let app = axum::Router::new().route("/v2/rerank", post(rerank)).with_state(calls.clone());
        FakeRerank { addr: super::serve_in_background(app), calls }
    }

    /// Base URL as configured (`rerank.url`).
    pub fn url(&self) -> String {
        format!("http://{}/v2", self.addr)
    }
}

/// The fake model's score of `document` for `query`.
pub fn score(query: &str, document: &str) -> f64 {
    let words = |t: &str| -> HashSet<String> {
        t.split(|c: char| !c.is_alphanumeric()).filter(|w| w.chars().count() >= 3).map(str::to_lowercase).collect()
    };
    let asked = words(query);
    let held = words(document);
    let shared = asked.intersection(&held).count() as f64 / asked.len().max(1) as f64;
    0.9 * shared + 0.1 / (1.0 + document.chars().count() as f64 / 100.0)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"message": message}))).into_response()
}

async fn rerank(State(calls): State<Arc<Calls>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "invalid request: body is not JSON");
    };
    calls.bodies.lock().push(body.clone());
    calls.authorizations.lock().push(authorization.clone());
    if authorization.as_deref() != Some(&format!("Bearer {KEY}")) {
        return error(StatusCode::UNAUTHORIZED, "invalid api token");
    }
    if body["model"] != MODEL {
        return error(StatusCode::NOT_FOUND, &format!("model '{}' not found", body["model"]));
    }
    let (Some(query), Some(documents)) = (body["query"].as_str(), body["documents"].as_array()) else {
        return error(StatusCode::BAD_REQUEST, "invalid request: query and documents are required");
    };
    let Some(documents) = documents.iter().map(Value::as_str).collect::<Option<Vec<&str>>>() else {
        return error(StatusCode::BAD_REQUEST, "invalid request: documents must be strings");
    };
    if documents.is_empty() || documents.len() > 1000 {
        return error(StatusCode::BAD_REQUEST, "invalid request: between 1 and 1000 documents");
    }
    let top_n = body["top_n"].as_u64().map_or(documents.len(), |n| n as usize);
    if query.contains("fail500") {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal server error");
    }
    if query.contains("flaky") && calls.flaky.lock().insert(query.to_string()) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "service unavailable");
    }
    if query.contains("slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let mut results: Vec<(usize, f64)> = documents.iter().enumerate().map(|(i, d)| (i, score(query, d))).collect();
    results.sort_by(|a, b| b.1.total_cmp(&a.1));
    results.truncate(top_n);
    let results: Vec<Value> = results.iter().map(|(i, s)| json!({"index": i, "relevance_score": s})).collect();
    axum::Json(json!({"id": "5807ee2e-0cda-445a-9ec8-864c60a06606", "results": results,
        "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}}))
    .into_response()
}
