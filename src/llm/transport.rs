//! What both providers share: the HTTP client and API key, retries, status handling, and reading
//! an SSE stream with timeouts.
//!
//! Retried, with exponential backoff or the server's `Retry-After`/`retry-after-ms`: 408, 409,
//! 429, any 5xx (Anthropic's 529 included), timeouts and broken connections, and a stream that
//! fails before its first text. Not retried: 401/403 (the key), other 4xx (the model, the URL, the
//! request), and a body that is not the expected JSON. An `x-should-retry` header, which both
//! APIs send, overrides the status.
//!
//! SSE is parsed by `eventsource-stream` (spec-complete: split lines, split UTF-8, CR/LF/CRLF,
//! comments, multi-line data); each provider's [`Decoder`] says what its events mean.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::stream::{BoxStream, Stream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::config::{LlmEndpointConfig, Secret};
use crate::error::{Error, ErrorCode, Result};
use crate::outbound::{describe, retry_after};

const BASE_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Upstream error text kept in a message: enough to act on, not a whole HTML page.
const DETAIL_CHARS: usize = 300;

/// How the API key travels.
pub(super) enum Auth {
    /// `Authorization: Bearer KEY`
    Bearer,
    /// A header of its own, e.g. `x-api-key: KEY`.
    Header(&'static str),
}

/// The outcome of one failed attempt.
#[derive(Debug)]
pub(super) enum Attempt {
    /// Another attempt may succeed.
    Retry { why: String, retry_after: Option<Duration>, timed_out: bool },
    /// No attempt will.
    Fail(String),
}

impl Attempt {
    pub fn retry(why: impl Into<String>) -> Attempt {
        Attempt::Retry { why: why.into(), retry_after: None, timed_out: false }
    }
    pub fn timeout(why: impl Into<String>) -> Attempt {
        Attempt::Retry { why: why.into(), retry_after: None, timed_out: true }
    }
    pub fn fail(why: impl Into<String>) -> Attempt {
        Attempt::Fail(why.into())
    }
}

/// What one SSE event means to a provider.
pub(super) enum Step {
    Text(String),
    Skip,
    /// The provider's end marker: the answer is complete.
    Done,
}

pub(super) trait Decoder: Send + 'static {
    fn decode(&mut self, event: &Event) -> std::result::Result<Step, Attempt>;
    /// The connection closed before [`Step::Done`]: `Err` says what was missing.
    fn end(&mut self) -> std::result::Result<(), String>;
}

/// Turns failures into errors that name the endpoint and never carry the key.
#[derive(Clone)]
pub(super) struct Upstream {
    /// The endpoint without credentials or query, safe to show.
    shown: String,
    key: Option<Secret>,
}

impl Upstream {
    fn error(&self, code: ErrorCode, why: &str) -> Error {
        Error::new(code, self.scrub(&format!("LLM endpoint {}: {why}", self.shown)))
    }

    fn scrub(&self, text: &str) -> String {
        match &self.key {
            Some(key) if !key.expose().is_empty() => text.replace(key.expose(), "<redacted>"),
            _ => text.to_string(),
        }
    }

    /// A failure after text was handed out: reported, never retried.
    fn after_start(&self, attempt: Attempt) -> Error {
        match attempt {
            Attempt::Retry { why, timed_out: true, .. } => {
                self.error(ErrorCode::LlmTimeout, &format!("{why}; the answer is incomplete"))
            }
            Attempt::Retry { why, .. } | Attempt::Fail(why) => {
                self.error(ErrorCode::LlmUnavailable, &format!("{why}; the answer is incomplete"))
            }
        }
    }
}

pub(super) struct Transport {
    client: reqwest::Client,
    endpoint: String,
    /// The config section, named where the fix is a setting: `llm.openai`.
    section: &'static str,
    headers: HeaderMap,
    upstream: Upstream,
    timeout: Duration,
    idle_timeout: Duration,
    max_retries: u32,
}

impl Transport {
    pub fn new(
        section: &'static str,
        config: &LlmEndpointConfig,
        endpoint: String,
        auth: Auth,
        extra_headers: &[(&'static str, &'static str)],
    ) -> Result<Transport> {
        let key = read_api_key(section, config)?;
        let mut headers = HeaderMap::new();
        if let Some(key) = &key {
            let (name, value) = match auth {
                Auth::Bearer => (AUTHORIZATION, format!("Bearer {}", key.expose())),
                Auth::Header(name) => (HeaderName::from_static(name), key.expose().to_string()),
            };
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                Error::config(format!(
                    "the API key from {section}.api_key_env or api_key_file holds characters an HTTP header cannot \
                     carry"
                ))
            })?;
            // Keeps it out of reqwest's and hyper's debug output.
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        for (name, value) in extra_headers {
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(crate::tls::client_config(section, None)?)
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs))
            .user_agent(concat!("nexus/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::internal("build the HTTP client", e))?;
        Ok(Transport {
            client,
            upstream: Upstream { shown: shown_url(&endpoint), key },
            endpoint,
            section,
            headers,
            timeout: Duration::from_secs(config.timeout_secs),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs),
            max_retries: config.max_retries,
        })
    }

    /// Posts `body` and parses the whole answer with `parse`, retrying what may pass next time.
    pub async fn complete<T>(
        &self,
        body: &Value,
        parse: impl Fn(&[u8]) -> std::result::Result<T, Attempt>,
    ) -> Result<T> {
        let parse = &parse;
        self.retrying(move || async move {
            let response = self.send(body, false).await?;
            let bytes = response.bytes().await.map_err(|e| self.failure(&e))?;
            parse(&bytes)
        })
        .await
    }

    /// Posts `body` (which asks for a stream) and returns the text pieces `decoder` finds. Returns
    /// once the first piece has arrived; everything until then is retried as a whole.
    pub async fn stream<D: Decoder>(
        &self,
        body: &Value,
        new_decoder: impl Fn() -> D,
    ) -> Result<BoxStream<'static, Result<String>>> {
        let new_decoder = &new_decoder;
        let (first, reader) = self
            .retrying(move || async move {
                let started = Instant::now();
                let response = self.send(body, true).await?;
                if let Some(kind) = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok())
                    && !kind.to_ascii_lowercase().starts_with("text/event-stream")
                {
                    return Err(Attempt::fail(format!(
                        "answered a streaming request with {kind} instead of text/event-stream; the server may not \
                         support streaming"
                    )));
                }
                let mut reader = Reader::new(body_chunks(response), new_decoder(), self.timeout, self.idle_timeout);
                let first = reader.next_text(Some(started + self.timeout)).await?;
                Ok((first, reader))
            })
            .await?;
        let Some(first) = first else {
            return Ok(futures::stream::empty().boxed());
        };
        let upstream = self.upstream.clone();
        let rest = futures::stream::unfold(Some(reader), move |state| {
            let upstream = upstream.clone();
            async move {
                let mut reader = state?;
                match reader.next_text(None).await {
                    Ok(Some(text)) => Some((Ok(text), Some(reader))),
                    Ok(None) => None,
                    Err(attempt) => Some((Err(upstream.after_start(attempt)), None)),
                }
            }
        });
        Ok(futures::stream::once(async move { Ok(first) }).chain(rest).boxed())
    }

    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, Attempt>>,
    {
        let mut backoff = BASE_BACKOFF;
        let mut tries = 0u32;
        loop {
            tries += 1;
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(Attempt::Fail(why)) => return Err(self.upstream.error(ErrorCode::LlmUnavailable, &why)),
                Err(Attempt::Retry { why, retry_after, timed_out }) => {
                    if tries > self.max_retries {
                        let code = if timed_out { ErrorCode::LlmTimeout } else { ErrorCode::LlmUnavailable };
                        let why = if tries > 1 { format!("{why}; gave up after {tries} attempts") } else { why };
                        return Err(self.upstream.error(code, &why));
                    }
                    let wait = retry_after.unwrap_or(backoff).min(MAX_BACKOFF);
                    tracing::warn!(
                        endpoint = %self.upstream.shown,
                        attempt = tries,
                        wait_ms = wait.as_millis() as u64,
                        why = %self.upstream.scrub(&why),
                        "LLM request failed; retrying"
                    );
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// One request: the response when its status is a success, else what to do about it.
    async fn send(&self, body: &Value, stream: bool) -> std::result::Result<reqwest::Response, Attempt> {
        let request = self.client.post(&self.endpoint).headers(self.headers.clone()).json(body);
        let sent = if stream {
            // A stream lasts as long as the model writes: the timeout covers only its start here
            // and in `Reader`; the idle timeout covers the gaps after that.
            match tokio::time::timeout(self.timeout, request.send()).await {
                Ok(sent) => sent,
                Err(_) => return Err(Attempt::timeout(format!("no answer within {} s", self.timeout.as_secs()))),
            }
        } else {
            request.timeout(self.timeout).send().await
        };
        let response = sent.map_err(|e| self.failure(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry_after(response.headers());
        let should_retry = response.headers().get("x-should-retry").and_then(|v| v.to_str().ok()).map(|v| v == "true");
        let body = tokio::time::timeout(self.timeout, response.bytes()).await.ok().and_then(|r| r.ok());
        let detail = body.map(|b| upstream_detail(&b)).unwrap_or_default();
        Err(self.classify(status, detail, retry_after, should_retry))
    }

    fn classify(
        &self,
        status: StatusCode,
        detail: String,
        retry_after: Option<Duration>,
        should_retry: Option<bool>,
    ) -> Attempt {
        let section = self.section;
        let shown = status_text(status);
        // The detail of a refused key may quote part of it; it is left out.
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Attempt::fail(format!(
                "rejected the API key ({shown}); check {section}.api_key_env or {section}.api_key_file"
            ));
        }
        let retryable = should_retry.unwrap_or(matches!(status.as_u16(), 408 | 409 | 429) || status.is_server_error());
        let detail = if detail.is_empty() { String::new() } else { format!(": {detail}") };
        if retryable {
            let why = match status.as_u16() {
                429 => format!("rate limited ({shown}){detail}"),
                529 => format!("overloaded ({shown}){detail}"),
                _ => format!("failed ({shown}){detail}"),
            };
            return Attempt::Retry { why, retry_after, timed_out: status == StatusCode::REQUEST_TIMEOUT };
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return Attempt::fail(format!(
                "refused the request as too large ({shown}){detail}; lower {section}.context_tokens or max_tokens"
            ));
        }
        Attempt::fail(format!("refused the request ({shown}){detail}; check {section}.model and {section}.url"))
    }

    /// A request that got no HTTP answer.
    fn failure(&self, e: &reqwest::Error) -> Attempt {
        if e.is_timeout() {
            Attempt::timeout(format!("no answer within {} s", self.timeout.as_secs()))
        } else if e.is_connect() {
            Attempt::retry(format!("cannot connect: {}", describe(e)))
        } else if e.is_builder() {
            Attempt::fail(format!("cannot build the request: {}", describe(e)))
        } else {
            Attempt::retry(format!("the connection failed: {}", describe(e)))
        }
    }
}

/// Reads events until the decoder finds text, with a deadline for the first and an idle timeout
/// for the rest.
struct Reader<D> {
    events: BoxStream<'static, std::result::Result<Event, String>>,
    decoder: D,
    timeout: Duration,
    idle_timeout: Duration,
    done: bool,
}

impl<D: Decoder> Reader<D> {
    fn new(
        chunks: impl Stream<Item = std::result::Result<Bytes, String>> + Send + 'static,
        decoder: D,
        timeout: Duration,
        idle_timeout: Duration,
    ) -> Reader<D> {
        let events = chunks
            .eventsource()
            .map(|event| {
                event.map_err(|e| match e {
                    EventStreamError::Transport(why) => why,
                    other => format!("not a valid event stream: {other}"),
                })
            })
            .boxed();
        Reader { events, decoder, timeout, idle_timeout, done: false }
    }

    /// The next non-empty text; `None` once the answer is complete.
    async fn next_text(&mut self, deadline: Option<Instant>) -> std::result::Result<Option<String>, Attempt> {
        loop {
            if self.done {
                return Ok(None);
            }
            let wait = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => self.idle_timeout,
            };
            let Ok(next) = tokio::time::timeout(wait, self.events.next()).await else {
                self.done = true;
                return Err(Attempt::timeout(match deadline {
                    Some(_) => format!("no text within {} s", self.timeout.as_secs()),
                    None => format!("the stream stalled: nothing for {} s", self.idle_timeout.as_secs()),
                }));
            };
            match next {
                None => {
                    self.done = true;
                    self.decoder.end().map_err(Attempt::retry)?;
                    return Ok(None);
                }
                Some(Err(why)) => {
                    self.done = true;
                    return Err(Attempt::retry(format!("the stream broke: {why}")));
                }
                Some(Ok(event)) => match self.decoder.decode(&event).inspect_err(|_| self.done = true)? {
                    Step::Text(text) if !text.is_empty() => return Ok(Some(text)),
                    Step::Text(_) | Step::Skip => {}
                    Step::Done => {
                        self.done = true;
                        return Ok(None);
                    }
                },
            }
        }
    }
}

fn body_chunks(response: reqwest::Response) -> impl Stream<Item = std::result::Result<Bytes, String>> + Send {
    futures::stream::unfold(Some(response), |state| async move {
        let mut response = state?;
        match response.chunk().await {
            Ok(Some(bytes)) => Some((Ok(bytes), Some(response))),
            Ok(None) => None,
            Err(e) => Some((Err(describe(&e)), None)),
        }
    })
}

/// Decodes a whole byte stream, for tests of the decoders: the texts, then the error if any.
#[cfg(test)]
pub(super) async fn decode_chunks<D: Decoder>(
    chunks: Vec<&'static [u8]>,
    decoder: D,
) -> (Vec<String>, Option<Attempt>) {
    let chunks = futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c))));
    let mut reader = Reader::new(chunks, decoder, Duration::from_secs(5), Duration::from_secs(5));
    let mut texts = Vec::new();
    loop {
        match reader.next_text(None).await {
            Ok(Some(text)) => texts.push(text),
            Ok(None) => return (texts, None),
            Err(attempt) => return (texts, Some(attempt)),
        }
    }
}

fn read_api_key(section: &str, config: &LlmEndpointConfig) -> Result<Option<Secret>> {
    if let Some(var) = &config.api_key_env {
        return match std::env::var(var) {
            Ok(key) if !key.trim().is_empty() => Ok(Some(Secret::new(key.trim().to_string()))),
            _ => Err(Error::config(format!(
                "{section}.api_key_env names {var}, but that environment variable is empty or unset"
            ))),
        };
    }
    if let Some(path) = &config.api_key_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("cannot read {section}.api_key_file {}: {e}", path.display())))?;
        let key = text.lines().next().unwrap_or_default().trim().to_string();
        if key.is_empty() {
            return Err(Error::config(format!("{section}.api_key_file {} is empty", path.display())));
        }
        return Ok(Some(Secret::new(key)));
    }
    Ok(None)
}

/// The message of an error body (`{"error": {"message", "type"}}` in both APIs), else its text.
fn upstream_detail(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(json) => {
            let error = &json["error"];
            match (error["message"].as_str(), error["type"].as_str(), error.as_str()) {
                (Some(message), Some(kind), _) => format!("{message} ({kind})"),
                (Some(message), None, _) | (None, None, Some(message)) => message.to_string(),
                _ => json.to_string(),
            }
        }
        Err(_) => String::from_utf8_lossy(body).split_whitespace().collect::<Vec<_>>().join(" "),
    };
    truncate(&text)
}

pub(super) fn truncate(text: &str) -> String {
    if text.chars().count() <= DETAIL_CHARS {
        return text.to_string();
    }
    let cut: String = text.chars().take(DETAIL_CHARS).collect();
    format!("{cut}…")
}

fn status_text(status: StatusCode) -> String {
    match (status.as_u16(), status.canonical_reason()) {
        (529, _) => "529 Overloaded".to_string(),
        (code, Some(reason)) => format!("{code} {reason}"),
        (code, None) => code.to_string(),
    }
}

/// The endpoint without user, password or query, which may hold credentials.
fn shown_url(endpoint: &str) -> String {
    match reqwest::Url::parse(endpoint) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.to_string()
        }
        Err(_) => endpoint.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llm_upstream_detail_prefers_the_error_message() {
        let anthropic = br#"{"type":"error","error":{"type":"not_found_error","message":"model: nope"}}"#;
        assert_eq!(upstream_detail(anthropic), "model: nope (not_found_error)");
        assert_eq!(upstream_detail(br#"{"error":"model 'x' not found"}"#), "model 'x' not found");
        assert_eq!(upstream_detail(b"<html>\n  <h1>Bad Gateway</h1>\n</html>"), "<html> <h1>Bad Gateway</h1> </html>");
        assert_eq!(upstream_detail("é".repeat(400).as_bytes()).chars().count(), DETAIL_CHARS + 1);
    }

    #[test]
    fn llm_shown_url_drops_credentials_and_query() {
        assert_eq!(
            shown_url("https://user:pw@example.test/v1/chat/completions?api-key=k"),
            "https://example.test/v1/chat/completions"
        );
        assert_eq!(
            shown_url("http://127.0.0.1:11434/v1/chat/completions"),
            "http://127.0.0.1:11434/v1/chat/completions"
        );
    }

    #[test]
    fn llm_upstream_errors_never_carry_the_key() {
        let upstream = Upstream { shown: "http://x/v1".into(), key: Some(Secret::new("sk-live-123".into())) };
        let error = upstream.error(ErrorCode::LlmUnavailable, "refused: Incorrect API key provided: sk-live-123");
        assert!(!error.message.contains("sk-live-123"), "{}", error.message);
        assert!(error.message.contains("<redacted>"));
        assert_eq!(error.code, ErrorCode::LlmUnavailable);
    }
}
