//! LLM providers against a local server speaking the OpenAI and Anthropic wire formats: whole
//! answers and SSE streams, request shapes, retries, timeouts, broken streams and key hygiene.
//! Every behaviour runs against both providers.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::fake_llm::{FakeLlm, JSON_ANSWER, KEY, PIECES, answer};
use futures::StreamExt;
use nexus::config::{LlmConfig, LlmEndpointConfig, LlmProvider};
use nexus::error::{Error, ErrorCode};
use nexus::llm::{ChatMessage, ChatRequest, Llm, open_llm};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Provider {
    OpenAi,
    Anthropic,
}

impl Provider {
    fn section(self) -> &'static str {
        match self {
            Provider::OpenAi => "llm.openai",
            Provider::Anthropic => "llm.anthropic",
        }
    }
}

fn endpoint(fake: &FakeLlm, provider: Provider, model: &str) -> LlmEndpointConfig {
    LlmEndpointConfig {
        url: match provider {
            Provider::OpenAi => fake.openai_url(),
            Provider::Anthropic => fake.anthropic_url(),
        },
        model: model.to_string(),
        api_key_env: None,
        api_key_file: None,
        timeout_secs: 5,
        connect_timeout_secs: 2,
        idle_timeout_secs: 2,
        max_retries: 2,
        max_tokens: 256,
        temperature: 0.2,
        context_tokens: 4000,
    }
}

fn open_with(provider: Provider, endpoint: LlmEndpointConfig) -> nexus::error::Result<Arc<dyn Llm>> {
    let config = match provider {
        Provider::OpenAi => LlmConfig { provider: LlmProvider::Openai, openai: Some(endpoint), anthropic: None },
        Provider::Anthropic => LlmConfig { provider: LlmProvider::Anthropic, openai: None, anthropic: Some(endpoint) },
    };
    Ok(open_llm(&config)?.expect("a provider is configured"))
}

/// The provider for `model`, its key read from a file holding `key`.
fn open_keyed(
    fake: &FakeLlm,
    provider: Provider,
    model: &str,
    key: &str,
    tweak: impl FnOnce(&mut LlmEndpointConfig),
) -> Arc<dyn Llm> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), format!("{key}\n")).unwrap();
    let mut config = endpoint(fake, provider, model);
    config.api_key_file = Some(file.path().to_path_buf());
    tweak(&mut config);
    open_with(provider, config).unwrap()
}

fn open(fake: &FakeLlm, provider: Provider, model: &str) -> Arc<dyn Llm> {
    open_keyed(fake, provider, model, KEY, |_| {})
}

fn question() -> ChatRequest {
    ChatRequest::new(vec![
        ChatMessage::system("You answer from the passages given."),
        ChatMessage::user("Why is the sky blue?"),
    ])
}

async fn collect(llm: &dyn Llm, request: &ChatRequest) -> (Vec<String>, Option<Error>) {
    let mut stream = match llm.stream(request).await {
        Ok(stream) => stream,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut pieces = Vec::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(20), stream.next()).await.expect("stream hung") {
        match item {
            Ok(piece) => pieces.push(piece),
            Err(e) => {
                assert!(stream.next().await.is_none(), "nothing follows an error");
                return (pieces, Some(e));
            }
        }
    }
    (pieces, None)
}

/// Runs each behaviour once per provider: `name::openai` and `name::anthropic`.
macro_rules! both_providers {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn openai() {
                super::$name(super::Provider::OpenAi).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn anthropic() {
                super::$name(super::Provider::Anthropic).await
            }
        }
    )*};
}

both_providers!(
    complete_answers_and_sends_the_real_request,
    stream_arrives_piece_by_piece,
    json_mode_asks_for_an_object,
    bad_key_fails_at_once_and_says_which_setting,
    rate_limit_honours_retry_after,
    server_errors_are_retried_then_reported,
    overload_once_is_retried,
    slow_server_times_out,
    stalled_stream_times_out,
    malformed_body_is_a_clear_error,
    stream_cut_midway_is_an_error,
    stream_closed_early_is_an_error,
    stream_failing_before_its_first_piece_is_retried,
    error_event_ends_the_stream,
    unknown_model_fails_at_once,
    key_never_appears_in_errors,
    non_streaming_answer_to_a_stream_request_is_refused,
    unreachable_server_is_unavailable,
    missing_key_env_is_a_config_error,
);

async fn complete_answers_and_sends_the_real_request(p: Provider) {
    let fake = FakeLlm::start();
    let llm = open(&fake, p, "ok-model");
    assert_eq!(llm.context_tokens(), 4000);
    let identity = llm.describe();
    assert_eq!(identity.model, "ok-model");
    assert!(!identity.to_string().contains(KEY));

    let response = llm.complete(&question()).await.unwrap();
    assert_eq!(response.text, answer());
    assert!(response.model.starts_with("ok-model"), "{}", response.model);
    assert_eq!((response.input_tokens, response.output_tokens), (Some(42), Some(17)));
    let body = fake.calls.last_body();
    assert_eq!(body["model"], "ok-model");
    assert_eq!(body["stream"], false);
    assert_eq!(body["max_tokens"], 256, "the configured default");
    assert!((body["temperature"].as_f64().unwrap() - 0.2).abs() < 1e-6);
    match p {
        Provider::OpenAi => {
            assert_eq!(response.stop_reason.as_deref(), Some("stop"));
            assert_eq!(fake.calls.last_header("authorization"), Some(format!("Bearer {KEY}")));
            assert_eq!(body["messages"][0]["role"], "system");
            assert_eq!(body["messages"][1]["role"], "user");
            assert_eq!(body["messages"][1]["content"], "Why is the sky blue?");
            assert!(body.get("response_format").is_none());
        }
        Provider::Anthropic => {
            assert_eq!(response.stop_reason.as_deref(), Some("end_turn"));
            assert_eq!(fake.calls.last_header("x-api-key").as_deref(), Some(KEY));
            assert_eq!(fake.calls.last_header("anthropic-version").as_deref(), Some("2023-06-01"));
            assert!(fake.calls.last_header("authorization").is_none());
            assert_eq!(body["system"], "You answer from the passages given.");
            assert_eq!(body["messages"].as_array().unwrap().len(), 1, "the system prompt is not a message");
            assert_eq!(body["messages"][0]["role"], "user");
        }
    }

    // Per-request limits win over the configured ones.
    let mut request = question();
    request.max_tokens = Some(64);
    request.temperature = Some(0.0);
    llm.complete(&request).await.unwrap();
    assert_eq!(fake.calls.last_body()["max_tokens"], 64);
    assert_eq!(fake.calls.last_body()["temperature"], 0.0);
    assert_eq!(fake.calls.requests(), 2);

    // Refused before anything is sent.
    let err = llm.complete(&ChatRequest::new(vec![ChatMessage::system("alone")])).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidRequest);
    assert_eq!(fake.calls.requests(), 2);
}

async fn stream_arrives_piece_by_piece(p: Provider) {
    let fake = FakeLlm::start();
    let llm = open(&fake, p, "gated");
    let mut stream = tokio::time::timeout(Duration::from_secs(5), llm.stream(&question()))
        .await
        .expect("the first piece arrives while the server is still holding the rest")
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first, PIECES[0]);
    assert!(!fake.calls.finished.load(Ordering::SeqCst), "the server has not finished its answer yet");
    fake.calls.gate.notify_one();
    let mut text = first;
    while let Some(piece) = stream.next().await {
        text.push_str(&piece.unwrap());
    }
    assert_eq!(text, answer(), "every piece, the split multi-byte character whole");
    assert_eq!(fake.calls.last_body()["stream"], true);
    assert_eq!(fake.calls.requests(), 1);
}

async fn json_mode_asks_for_an_object(p: Provider) {
    let fake = FakeLlm::start();
    let llm = open(&fake, p, "ok-model");
    let mut request = ChatRequest::new(vec![ChatMessage::user("What colour is the sky? Cite your sources.")]);
    request.json = true;
    let response = llm.complete(&request).await.unwrap();
    let parsed: Value = serde_json::from_str(&response.text).expect("the answer is one JSON object");
    assert_eq!(parsed, serde_json::from_str::<Value>(JSON_ANSWER).unwrap());
    let body = fake.calls.last_body();
    match p {
        Provider::OpenAi => {
            assert_eq!(body["response_format"], serde_json::json!({"type": "json_object"}));
            // OpenAI refuses json_object unless a message mentions JSON; the fake does too.
            assert_eq!(body["messages"][0]["role"], "system");
            assert!(body["messages"][0]["content"].as_str().unwrap().contains("JSON"));
        }
        Provider::Anthropic => {
            assert!(body.get("response_format").is_none(), "Anthropic has no JSON mode");
            assert!(body["system"].as_str().unwrap().contains("JSON"));
        }
    }
}

async fn bad_key_fails_at_once_and_says_which_setting(p: Provider) {
    let fake = FakeLlm::start();
    let wrong = "sk-wrong-7d1e0f5a22";
    let llm = open_keyed(&fake, p, "ok-model", wrong, |_| {});
    let err = llm.complete(&question()).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::LlmUnavailable);
    assert!(err.message.contains("401"), "{}", err.message);
    assert!(err.message.contains(&format!("{}.api_key_env", p.section())), "{}", err.message);
    assert!(!format!("{err:?}").contains(wrong), "{err:?}");
    assert_eq!(fake.calls.requests(), 1, "a bad key is not retried");

    let (pieces, err) = collect(llm.as_ref(), &question()).await;
    assert!(pieces.is_empty());
    let err = err.unwrap();
    assert!(err.message.contains("401") && !err.message.contains(wrong), "{}", err.message);
    assert_eq!(fake.calls.requests(), 2);
}

async fn rate_limit_honours_retry_after(p: Provider) {
    let fake = FakeLlm::start();
    let llm = open(&fake, p, "rate-limited-once");
    let started = Instant::now();
    let response = llm.complete(&question()).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(response.text, answer());
    assert_eq!(fake.calls.requests(), 2);
    // The first backoff is 250 ms; only Retry-After makes it a second.
    assert!(waited >= Duration::from_millis(950), "retried after {waited:?}, before Retry-After: 1");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
}

async fn server_errors_are_retried_then_reported(p: Provider) {
    let fake = FakeLlm::start();
    let llm = open(&fake, p, "always-500");
    let err = llm.complete(&question()).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::LlmUnavailable);
    assert_eq!(fake.calls.requests(), 3, "one try and max_retries = 2 retries");
    assert!(err.message.contains("500 Internal Server Error"), "{}", err.message);
    assert!(err.message.contains("gave up after 3 attempts"), "{}", err.message);
    assert!(err.message.contains("The server had an error"), "the upstream's own words: {}", err.message);

    let llm = open(&fake, p, "overloaded");
    let (_, err) = collect(llm.as_ref(), &question()).await;
    let err = err.unwrap();
    assert_eq!(err.code, ErrorCode::LlmUnavailable);
    let status = if p == Provider::Anthropic { "529 Overloaded" } else { "503 Service Unavailable" };
    assert!(err.message.contains(status), "{}", err.message);
    assert_eq!(fake.calls.requests(), 6);
    assert_eq!(err.code.http_status(), 502);
}

async fn overload_once_is_retried(p: Provider) {
    let fake = FakeLlm::start();
    let llm = open(&fake, p, "overloaded-once");
    let (pieces, err) = collect(llm.as_ref(), &question()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(pieces.concat(), answer());
    assert_eq!(fake.calls.requests(), 2);
}

async fn slow_server_times_out(p: Provider) {
    let fake = FakeLlm::start();
    let llm = open_keyed(&fake, p, "slow", KEY, |c| {
        c.timeout_secs = 1;
        c.max_retries = 1;
    });
    let started = Instant::now();
    let err = llm.complete(&question()).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::LlmTimeout, "{err:?}");
    assert_eq!(err.code.http_status(), 504);
    assert!(err.message.contains("no answer within 1 s"), "{}", err.message);
    assert!(started.elapsed() < Duration::from_millis(2900), "two 1 s tries, not the server's 3 s");
    assert_eq!(fake.calls.requests(), 2);

    let (_, err) = collect(llm.as_ref(), &question()).await;
    assert_eq!(err.unwrap().code, ErrorCode::LlmTimeout);
}

async fn stalled_stream_times_out(p: Provider) {
    let fake = FakeLlm::start();
    let llm = open_keyed(&fake, p, "stall", KEY, |c| c.idle_timeout_secs = 1);
    let started = Instant::now();
    let (pieces, err) = collect(llm.as_ref(), &question()).await;
    assert_eq!(pieces, vec![PIECES[0]]);
    let err = err.expect("the stall ends the stream");
    assert_eq!(err.code, ErrorCode::LlmTimeout);
    assert!(err.message.contains("stalled") && err.message.contains("incomplete"), "{}", err.message);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(fake.calls.requests(), 1, "not retried once text was handed out");
}

async fn malformed_body_is_a_clear_error(p: Provider) {
    let fake = FakeLlm::start();
    let llm = open(&fake, p, "malformed");
    let err = llm.complete(&question()).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::LlmUnavailable);
    assert!(err.message.contains("answered with a body that is not a"), "{}", err.message);
    assert!(err.message.contains("\"role\":\"assist"), "shows what came: {}", err.message);
    assert_eq!(fake.calls.requests(), 1);
}

async fn stream_cut_midway_is_an_error(p: Provider) {
    let fake = FakeLlm::start();
    let llm = open(&fake, p, "cut");
    let (pieces, err) = collect(llm.as_ref(), &question()).await;
    assert_eq!(pieces, PIECES[..2].to_vec());
    let err = err.expect("a cut stream is not a complete answer");
    assert_eq!(err.code, ErrorCode::LlmUnavailable);
    assert!(err.message.contains("incomplete"), "{}", err.message);
    assert_eq!(fake.calls.requests(), 1);
}

async fn stream_closed_early_is_an_error(p: Provider) {
    let fake = FakeLlm::start();
    let llm = open(&fake, p, "cut-clean");
    let (pieces, err) = collect(llm.as_ref(), &question()).await;
    assert_eq!(pieces, PIECES[..2].to_vec());
    let err = err.expect("no end marker, no complete answer");
    let marker = if p == Provider::OpenAi { "[DONE]" } else { "message_stop" };
    assert!(err.message.contains(marker), "{}", err.message);
}

async fn stream_failing_before_its_first_piece_is_retried(p: Provider) {
    let fake = FakeLlm::start();
    let llm = open(&fake, p, "cut-once");
    let (pieces, err) = collect(llm.as_ref(), &question()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(pieces.concat(), answer());
    assert_eq!(fake.calls.requests(), 2);
}

async fn error_event_ends_the_stream(p: Provider) {
    let fake = FakeLlm::start();
    let llm = open(&fake, p, "error-event");
    let (pieces, err) = collect(llm.as_ref(), &question()).await;
    assert_eq!(pieces, PIECES[..2].to_vec());
    let err = err.unwrap();
    assert_eq!(err.code, ErrorCode::LlmUnavailable);
    let said = if p == Provider::OpenAi { "The server had an error" } else { "overloaded_error" };
    assert!(err.message.contains(said), "{}", err.message);
    assert_eq!(fake.calls.requests(), 1);
}

async fn unknown_model_fails_at_once(p: Provider) {
    let fake = FakeLlm::start();
    let llm = open(&fake, p, "bad-model");
    let err = llm.complete(&question()).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::LlmUnavailable);
    assert!(err.message.contains("404"), "{}", err.message);
    assert!(err.message.contains(&format!("check {}.model", p.section())), "{}", err.message);
    assert!(err.message.contains("bad-model"), "the upstream's words name it: {}", err.message);
    assert_eq!(fake.calls.requests(), 1);
}

async fn key_never_appears_in_errors(p: Provider) {
    let fake = FakeLlm::start();
    let llm = open_keyed(&fake, p, "echo-key-500", KEY, |c| c.max_retries = 0);
    let err = llm.complete(&question()).await.unwrap_err();
    assert!(err.message.contains("internal failure handling key <redacted>"), "{}", err.message);
    assert!(!format!("{err} {err:?}").contains(KEY));
    let (_, err) = collect(llm.as_ref(), &question()).await;
    assert!(!format!("{:?}", err.unwrap()).contains(KEY));
}

async fn non_streaming_answer_to_a_stream_request_is_refused(p: Provider) {
    let fake = FakeLlm::start();
    let llm = open(&fake, p, "no-stream");
    let (pieces, err) = collect(llm.as_ref(), &question()).await;
    assert!(pieces.is_empty());
    let err = err.unwrap();
    assert!(err.message.contains("instead of text/event-stream"), "{}", err.message);
    assert_eq!(fake.calls.requests(), 1);
}

async fn unreachable_server_is_unavailable(p: Provider) {
    let fake = FakeLlm::start();
    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let llm = open_keyed(&fake, p, "ok-model", KEY, |c| {
        c.url = format!("http://127.0.0.1:{port}");
        c.max_retries = 1;
    });
    let err = llm.complete(&question()).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::LlmUnavailable);
    assert!(err.message.contains("cannot connect"), "{}", err.message);
    assert!(err.message.contains("gave up after 2 attempts"), "{}", err.message);
}

async fn missing_key_env_is_a_config_error(p: Provider) {
    let fake = FakeLlm::start();
    let mut config = endpoint(&fake, p, "ok-model");
    config.api_key_env = Some("NEXUS_TEST_NO_SUCH_KEY_VARIABLE".into());
    let err = open_with(p, config).err().unwrap();
    assert_eq!(err.code, ErrorCode::ConfigInvalid);
    assert!(err.message.contains(&format!("{}.api_key_env", p.section())), "{}", err.message);
    assert!(err.message.contains("NEXUS_TEST_NO_SUCH_KEY_VARIABLE"), "{}", err.message);
}

/// The key is read from the variable `api_key_env` names. PATH stands in for a key variable: it
/// is always set, and setting one here would race with the other tests' threads.
#[tokio::test]
async fn openai_key_comes_from_the_named_variable_or_is_left_out() {
    let fake = FakeLlm::start();
    let mut config = endpoint(&fake, Provider::OpenAi, "any-key");
    config.api_key_env = Some("PATH".into());
    let llm = open_with(Provider::OpenAi, config).unwrap();
    llm.complete(&question()).await.unwrap();
    let path = std::env::var("PATH").unwrap();
    assert_eq!(fake.calls.last_header("authorization"), Some(format!("Bearer {}", path.trim())));

    // Local servers (Ollama, llama.cpp) take no key: none is sent.
    let llm = open_with(Provider::OpenAi, endpoint(&fake, Provider::OpenAi, "any-key")).unwrap();
    llm.complete(&question()).await.unwrap();
    assert_eq!(fake.calls.last_header("authorization"), None);
}

#[test]
fn no_provider_means_no_llm() {
    let config = LlmConfig { provider: LlmProvider::None, openai: None, anthropic: None };
    assert!(open_llm(&config).unwrap().is_none());
}
