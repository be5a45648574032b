//! A remote embedder: any OpenAI-compatible `POST {url}/embeddings` endpoint (OpenAI, Ollama,
//! vLLM, LM Studio, text-embeddings-inference).
//!
//! Retries 429, 5xx, timeouts and connection failures with exponential backoff, honouring
//! `Retry-After`; fails at once on 4xx answers that a retry cannot fix (a bad key, a bad model).
//! The API key is read once, from an environment variable or a file, and never logged.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::{Embedder, EmbedderIdentity};
use crate::config::OpenAiEmbedConfig;
use crate::error::{Error, ErrorCode, Result};
use crate::outbound::describe;

pub struct OpenAiEmbedder {
    client: reqwest::Client,
    endpoint: String,
    api_key: Option<String>,
    config: OpenAiEmbedConfig,
    identity: EmbedderIdentity,
}

#[derive(Serialize)]
struct EmbeddingRequest<'a> {
    model: &'a str,
    input: &'a [String],
    encoding_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<usize>,
}

#[derive(Deserialize)]
struct EmbeddingResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

const BASE_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl OpenAiEmbedder {
    pub fn new(config: &OpenAiEmbedConfig) -> Result<OpenAiEmbedder> {
        let api_key = read_api_key(config)?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(crate::tls::client_config("embed.openai", None)?)
            .timeout(Duration::from_secs(config.timeout_secs))
            .build()
            .map_err(|e| Error::internal("build the HTTP client", e))?;
        Ok(OpenAiEmbedder {
            client,
            endpoint: format!("{}/embeddings", config.url.trim_end_matches('/')),
            api_key,
            identity: EmbedderIdentity {
                provider: "openai".into(),
                model: config.model.clone(),
                dimensions: config.dimensions,
                version: config.url.trim_end_matches('/').to_string(),
            },
            config: config.clone(),
        })
    }

    fn unavailable(&self, what: String) -> Error {
        Error::new(ErrorCode::EmbedderUnavailable, format!("embedding endpoint {}: {what}", self.endpoint))
    }

    async fn request_once(&self, texts: &[String]) -> std::result::Result<Vec<Vec<f32>>, Attempt> {
        let body = EmbeddingRequest {
            model: &self.config.model,
            input: texts,
            encoding_format: "float",
            dimensions: self.config.send_dimensions.then_some(self.config.dimensions),
        };
        let mut request = self.client.post(&self.endpoint).json(&body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Err(Attempt::Retry(format!("no answer within {} s", self.config.timeout_secs), None));
            }
            Err(e) => return Err(Attempt::Retry(format!("cannot connect: {}", describe(&e)), None)),
        };
        let status = response.status();
        if status.is_success() {
            let parsed: EmbeddingResponse = response.json().await.map_err(|e| {
                Attempt::Fail(
                    self.unavailable(format!("answered with a body that is not an embeddings list: {}", describe(&e))),
                )
            })?;
            return self.check(parsed, texts.len()).map_err(Attempt::Fail);
        }
        let retry_after = crate::outbound::retry_after(response.headers());
        let detail = response.text().await.unwrap_or_default();
        let detail: String = detail.chars().take(300).collect();
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(Attempt::Fail(self.unavailable(format!(
                "rejected the API key ({status}); check embed.openai.api_key_env or api_key_file"
            )))),
            StatusCode::TOO_MANY_REQUESTS => Err(Attempt::Retry(format!("rate limited ({status})"), retry_after)),
            s if s.is_server_error() => Err(Attempt::Retry(format!("server error ({status}): {detail}"), retry_after)),
            _ => Err(Attempt::Fail(
                self.unavailable(format!("refused the request ({status}): {detail}; check embed.openai.model and url")),
            )),
        }
    }

    fn check(&self, response: EmbeddingResponse, expected: usize) -> Result<Vec<Vec<f32>>> {
        if response.data.len() != expected {
            return Err(self.unavailable(format!("returned {} embeddings for {expected} inputs", response.data.len())));
        }
        let mut items = response.data;
        items.sort_by_key(|item| item.index.unwrap_or(0));
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if item.embedding.len() != self.config.dimensions {
                return Err(self.unavailable(format!(
                    "returned vectors of {} dimensions, but embed.openai.dimensions is {}; set it to the model's size \
                     (and store.vectors.dimensions with it)",
                    item.embedding.len(),
                    self.config.dimensions
                )));
            }
            let mut v = item.embedding;
            if v.iter().any(|x| !x.is_finite()) {
                return Err(self.unavailable("returned a vector with a non-finite component".into()));
            }
            super::normalize(&mut v);
            out.push(v);
        }
        Ok(out)
    }
}

enum Attempt {
    Retry(String, Option<Duration>),
    Fail(Error),
}

fn read_api_key(config: &OpenAiEmbedConfig) -> Result<Option<String>> {
    if let Some(var) = &config.api_key_env {
        return match std::env::var(var) {
            Ok(key) if !key.trim().is_empty() => Ok(Some(key.trim().to_string())),
            _ => Err(Error::config(format!(
                "embed.openai.api_key_env names {var}, but that environment variable is empty or unset"
            ))),
        };
    }
    if let Some(path) = &config.api_key_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("cannot read embed.openai.api_key_file {}: {e}", path.display())))?;
        let key = text.lines().next().unwrap_or_default().trim().to_string();
        if key.is_empty() {
            return Err(Error::config(format!("embed.openai.api_key_file {} is empty", path.display())));
        }
        return Ok(Some(key));
    }
    Ok(None)
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn identity(&self) -> &EmbedderIdentity {
        &self.identity
    }

    fn split(&self, text: &str) -> Vec<String> {
        split_chars(text, self.config.max_input_chars)
    }

    async fn embed_batch(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        let mut backoff = BASE_BACKOFF;
        let mut attempt = 0;
        loop {
            match self.request_once(&texts).await {
                Ok(vectors) => return Ok(vectors),
                Err(Attempt::Fail(e)) => return Err(e),
                Err(Attempt::Retry(why, retry_after)) => {
                    if attempt >= self.config.max_retries {
                        return Err(self.unavailable(format!("{why}; gave up after {} attempts", attempt + 1)));
                    }
                    let wait = retry_after.unwrap_or(backoff).min(MAX_BACKOFF);
                    tracing::warn!(endpoint = %self.endpoint, attempt = attempt + 1, wait_ms = wait.as_millis() as u64, why, "embedding request failed; retrying");
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    attempt += 1;
                }
            }
        }
    }

    /// About four characters a token, the usual rule of thumb for English with BPE vocabularies.
    fn count_tokens(&self, text: &str) -> usize {
        text.len().div_ceil(4) + 2
    }

    fn concurrency(&self) -> usize {
        self.config.concurrency
    }
}

/// Splits at whitespace into pieces of at most `max` bytes (a word longer than that is cut).
pub fn split_chars(text: &str, max: usize) -> Vec<String> {
    if text.len() <= max {
        return vec![text.to_string()];
    }
    let mut pieces = Vec::new();
    let mut current = String::new();
    for word in text.split_inclusive(char::is_whitespace) {
        if current.len() + word.len() > max && !current.is_empty() {
            pieces.push(std::mem::take(&mut current));
        }
        let mut word = word;
        while word.len() > max {
            let mut cut = max;
            while !word.is_char_boundary(cut) {
                cut -= 1;
            }
            pieces.push(word[..cut].to_string());
            word = &word[cut..];
        }
        current.push_str(word);
    }
    if !current.trim().is_empty() {
        pieces.push(current);
    }
    pieces
}
