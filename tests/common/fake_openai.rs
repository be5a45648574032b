//! A local server speaking the OpenAI embeddings wire format (`POST /v1/embeddings`), standing in
//! for a remote paid API. The model name picks its behaviour.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

pub const KEY: &str = "test-key";

#[derive(Default)]
pub struct Calls {
    pub requests: AtomicUsize,
    pub inputs: AtomicUsize,
    rate_limited: AtomicUsize,
}

pub struct FakeOpenAi {
    pub addr: SocketAddr,
    pub calls: Arc<Calls>,
}

impl FakeOpenAi {
    /// Serves on its own thread and runtime, so it works from sync and async tests alike.
    pub fn start() -> FakeOpenAi {
        let calls = Arc::new(Calls::default());
        let app = axum::Router::new().route("/v1/embeddings", post(embeddings)).with_state(calls.clone());
        FakeOpenAi { addr: super::serve_in_background(app), calls }
    }

    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

/// A deterministic unit vector for a text.
pub fn fake_vector(text: &str, dims: usize) -> Vec<f32> {
    let mut state: u64 = 1469598103934665603;
    for b in text.bytes() {
        state = (state ^ b as u64).wrapping_mul(1099511628211);
    }
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

async fn embeddings(State(calls): State<Arc<Calls>>, headers: HeaderMap, body: axum::Json<Value>) -> Response {
    calls.requests.fetch_add(1, Ordering::SeqCst);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {KEY}")) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})),
        )
            .into_response();
    }
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let inputs: Vec<String> =
        body["input"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    calls.inputs.fetch_add(inputs.len(), Ordering::SeqCst);
    let dims = match model.as_str() {
        "wrong-dims" => 100,
        _ => 384,
    };
    match model.as_str() {
        "rate-limited-once" if calls.rate_limited.fetch_add(1, Ordering::SeqCst) == 0 => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                axum::Json(json!({"error": {"message": "Rate limit reached"}})),
            )
                .into_response();
        }
        "always-500" => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error": {"message": "The server had an error"}})),
            )
                .into_response();
        }
        "bad-model" => {
            return (StatusCode::NOT_FOUND, axum::Json(json!({"error": {"message": "The model does not exist"}})))
                .into_response();
        }
        "slow" => tokio::time::sleep(Duration::from_secs(5)).await,
        "paced" => tokio::time::sleep(Duration::from_millis(40)).await,
        _ => {}
    }
    // Answer out of order, as the index field allows.
    let mut data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| json!({"object": "embedding", "index": i, "embedding": fake_vector(text, dims)}))
        .collect();
    data.reverse();
    axum::Json(
        json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": 1, "total_tokens": 1}}),
    )
    .into_response()
}
