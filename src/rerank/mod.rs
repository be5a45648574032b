//! The reranker: a cross-encoder behind an HTTP API that reads the query beside each of a
//! search's best results and scores them together, the step that finds what shares no words
//! with the question. Nexus ships no such model; `[rerank]` points at a server or an API:
//!
//! - `cohere`: `POST {url}/rerank` `{model, query, documents, top_n}` →
//!   `{results: [{index, relevance_score}]}` (Cohere, Jina, Mixedbread, Infinity, vLLM; a `data`
//!   list, as Voyage answers, is read too);
//! - `tei`: text-embeddings-inference, `POST {url}/rerank` `{query, texts, truncate}` →
//!   `[{index, score}]`.
//!
//! A search waits at most `rerank.timeout_ms` for it, retries included (408, 409, 429, 5xx, time-outs,
//! broken connections; a `Retry-After` is honoured within that budget). When it fails, the search
//! still answers, in the order it had, and says so (`reranked: false`); a warning is logged and
//! `nexus_rerank_requests_total{outcome="failed"}` counts it. A search is never refused because
//! of the reranker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{RerankConfig, RerankProvider, Secret, read_secret};
use crate::error::{Error, ErrorCode, Result};
use crate::outbound::{describe, retry_after};

const BASE_BACKOFF: Duration = Duration::from_millis(100);
/// Upstream error text kept in a message: enough to act on, not a whole HTML page.
const DETAIL_CHARS: usize = 300;

pub struct Reranker {
    client: reqwest::Client,
    endpoint: String,
    api_key: Option<Secret>,
    config: RerankConfig,
}

/// One failed attempt: whether another may succeed, and why it failed.
enum Attempt {
    Retry(String, Option<Duration>),
    Fail(String),
}

#[derive(Deserialize)]
struct Scored {
    index: usize,
    #[serde(alias = "score")]
    relevance_score: f64,
}

impl Reranker {
    /// The configured reranker; `None` when `rerank.provider = "none"`.
    pub fn open(config: &RerankConfig) -> Result<Option<Arc<Reranker>>> {
        if config.provider == RerankProvider::None {
            return Ok(None);
        }
        let api_key = read_secret("rerank.api_key", config.api_key_env.as_deref(), config.api_key_file.as_deref())?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(crate::tls::client_config("rerank", None)?)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| Error::internal("build the HTTP client", e))?;
        Ok(Some(Arc::new(Reranker {
            client,
            endpoint: format!("{}/rerank", config.url.trim_end_matches('/')),
            api_key,
            config: config.clone(),
        })))
    }

    /// Whether a search that does not say is reranked (`rerank.by_default`).
    pub fn by_default(&self) -> bool {
        self.config.by_default
    }

    /// How many of a search's best results are reordered.
    pub fn candidates(&self) -> usize {
        self.config.candidates
    }

    /// Reorders the first [`Self::candidates`] of `items` by the reranker's scores for `query`
    /// (best first; `text` gives what it reads of an item, cut at `rerank.max_chars`) and hands
    /// each its score through `scored`. Items it returns no score for follow those it does, in
    /// their order, and so do the items past the candidates. Returns whether it reranked: on
    /// failure the items stay as they were.
    pub async fn reorder<T>(
        &self,
        query: &str,
        items: &mut Vec<T>,
        text: impl Fn(&T) -> String,
        mut scored: impl FnMut(&mut T, f32),
    ) -> bool {
        let n = items.len().min(self.config.candidates);
        if n == 0 {
            return true;
        }
        let documents: Vec<String> = items[..n].iter().map(|item| cut(&text(item), self.config.max_chars)).collect();
        let started = Instant::now();
        let outcome = self.scores(query, &documents).await;
        metrics::histogram!("nexus_rerank_seconds").record(started.elapsed().as_secs_f64());
        let scores = match outcome {
            Ok(scores) => scores,
            Err(e) => {
                metrics::counter!("nexus_rerank_requests_total", "outcome" => "failed").increment(1);
                tracing::warn!(error = %e, "the reranker failed: the search answers in its own order");
                return false;
            }
        };
        metrics::counter!("nexus_rerank_requests_total", "outcome" => "ok").increment(1);
        let mut rest: Vec<Option<T>> = items.drain(..n).map(Some).collect();
        let mut ordered = Vec::with_capacity(items.len() + n);
        for (index, score) in scores {
            if let Some(mut item) = rest[index].take() {
                scored(&mut item, score);
                ordered.push(item);
            }
        }
        ordered.extend(rest.into_iter().flatten());
        ordered.append(items);
        *items = ordered;
        true
    }

    /// The reranker's scores of `documents` for `query`: (index, score), best first, each index
    /// once. Within `rerank.timeout_ms`, retries included.
    pub async fn scores(&self, query: &str, documents: &[String]) -> Result<Vec<(usize, f32)>> {
        let budget = Duration::from_millis(self.config.timeout_ms);
        match tokio::time::timeout(budget, self.scores_with_retries(query, documents)).await {
            Ok(found) => found,
            Err(_) => {
                Err(self.unavailable(format!("no answer within rerank.timeout_ms ({} ms)", self.config.timeout_ms)))
            }
        }
    }

    async fn scores_with_retries(&self, query: &str, documents: &[String]) -> Result<Vec<(usize, f32)>> {
        let mut backoff = BASE_BACKOFF;
        let mut attempt = 0;
        loop {
            match self.attempt(query, documents).await {
                Ok(scores) => return Ok(scores),
                Err(Attempt::Fail(why)) => return Err(self.unavailable(why)),
                Err(Attempt::Retry(why, retry_after)) => {
                    if attempt >= self.config.max_retries {
                        return Err(self.unavailable(why));
                    }
                    attempt += 1;
                    tokio::time::sleep(retry_after.unwrap_or(backoff)).await;
                    backoff *= 2;
                }
            }
        }
    }

    fn unavailable(&self, why: String) -> Error {
        Error::new(ErrorCode::BackendUnavailable, format!("reranker {}: {why}", self.endpoint))
    }

    async fn attempt(&self, query: &str, documents: &[String]) -> std::result::Result<Vec<(usize, f32)>, Attempt> {
        let body = match self.config.provider {
            RerankProvider::Tei => json!({"query": query, "texts": documents, "truncate": true}),
            _ => json!({"model": self.config.model, "query": query, "documents": documents, "top_n": documents.len()}),
        };
        let mut request = self.client.post(&self.endpoint).json(&body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose());
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Err(Attempt::Retry(format!("cannot connect: {}", describe(&e)), None)),
        };
        let status = response.status();
        if status.is_success() {
            let value: Value = match response.json().await {
                Ok(v) => v,
                Err(e) => return Err(Attempt::Retry(format!("the answer broke off: {}", describe(&e)), None)),
            };
            return read_scores(value, documents.len()).map_err(Attempt::Fail);
        }
        let retry_after = retry_after(response.headers());
        let detail: String = response.text().await.unwrap_or_default().chars().take(DETAIL_CHARS).collect();
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(Attempt::Fail(format!("rejected the API key ({status}); check rerank.api_key_env or api_key_file")))
            }
            StatusCode::REQUEST_TIMEOUT | StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS => {
                Err(Attempt::Retry(format!("asked to retry ({status}): {detail}"), retry_after))
            }
            s if s.is_server_error() => Err(Attempt::Retry(format!("server error ({status}): {detail}"), retry_after)),
            _ => Err(Attempt::Fail(format!("refused the request ({status}): {detail}; check rerank.model and url"))),
        }
    }
}

/// The scores of an answer (Cohere's `{results}`, Voyage's `{data}`, or TEI's bare list), best
/// first. An index out of range, twice, or a score that is not a number makes the answer unusable.
fn read_scores(value: Value, documents: usize) -> std::result::Result<Vec<(usize, f32)>, String> {
    let list = match value {
        Value::Array(items) => Value::Array(items),
        Value::Object(mut fields) => match fields.remove("results").or_else(|| fields.remove("data")) {
            Some(list) => list,
            None => return Err("answered without a `results` list".into()),
        },
        _ => return Err("answered with something other than a list of scores".into()),
    };
    let items: Vec<Scored> =
        serde_json::from_value(list).map_err(|e| format!("answered with scores that cannot be read: {e}"))?;
    let mut seen = vec![false; documents];
    let mut scores = Vec::with_capacity(items.len());
    for item in items {
        if item.index >= documents || std::mem::replace(&mut seen[item.index], true) {
            return Err(format!("answered with index {} for {documents} documents, or twice", item.index));
        }
        if !item.relevance_score.is_finite() {
            return Err(format!("answered with a score that is not a number for document {}", item.index));
        }
        scores.push((item.index, item.relevance_score as f32));
    }
    scores.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(scores)
}

/// `text` cut to at most `max` characters.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => text[..at].to_string(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_of_each_wire_format_are_read_best_first() {
        let cohere =
            json!({"id": "x", "results": [{"index": 1, "relevance_score": 0.2}, {"index": 0, "relevance_score": 0.9}]});
        assert_eq!(read_scores(cohere, 2).unwrap(), vec![(0, 0.9), (1, 0.2)]);
        let voyage = json!({"object": "list", "data": [{"index": 0, "relevance_score": 0.1}, {"index": 2, "relevance_score": 0.5}]});
        assert_eq!(read_scores(voyage, 3).unwrap(), vec![(2, 0.5), (0, 0.1)]);
        let tei = json!([{"index": 0, "score": 0.3}, {"index": 1, "score": 0.7}]);
        assert_eq!(read_scores(tei, 2).unwrap(), vec![(1, 0.7), (0, 0.3)]);
        // Equal scores keep the first-stage order.
        let ties = json!([{"index": 1, "score": 0.5}, {"index": 0, "score": 0.5}]);
        assert_eq!(read_scores(ties, 2).unwrap(), vec![(0, 0.5), (1, 0.5)]);
    }

    #[test]
    fn unusable_answers_are_refused() {
        assert!(read_scores(json!({"results": [{"index": 2, "relevance_score": 0.1}]}), 2).is_err());
        assert!(read_scores(json!([{"index": 0, "score": 0.1}, {"index": 0, "score": 0.2}]), 2).is_err());
        assert!(read_scores(json!({"message": "ok"}), 2).is_err());
        assert!(read_scores(json!([{"index": 0}]), 2).is_err());
        assert!(read_scores(json!("scores"), 2).is_err());
    }

    #[test]
    fn texts_are_cut_at_a_character_boundary() {
        assert_eq!(cut("café au lait", 4), "café");
        assert_eq!(cut("short", 100), "short");
    }

    #[tokio::test]
    async fn reorder_puts_scored_items_first_and_keeps_the_rest_in_order() {
        // A server that scores the documents by how many of the query's words they hold.
        let app = axum::Router::new().route(
            "/rerank",
            axum::routing::post(|axum::Json(body): axum::Json<Value>| async move {
                let query = body["query"].as_str().unwrap().to_string();
                let texts = body["texts"].as_array().unwrap().clone();
                let scores: Vec<Value> = texts
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let t = t.as_str().unwrap();
                        let hits = query.split_whitespace().filter(|w| t.contains(w)).count();
                        json!({"index": i, "score": hits as f64})
                    })
                    .filter(|v| v["score"].as_f64().unwrap() > 0.0)
                    .collect();
                axum::Json(Value::Array(scores))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let config = RerankConfig {
            provider: RerankProvider::Tei,
            url: format!("http://{addr}"),
            model: String::new(),
            api_key_env: None,
            api_key_file: None,
            candidates: 4,
            max_chars: 100,
            timeout_ms: 5000,
            max_retries: 0,
            by_default: true,
        };
        let reranker = Reranker::open(&config).unwrap().unwrap();
        let mut items: Vec<(&str, Option<f32>)> =
            ["red", "blue fish", "fish", "blue", "blue fish past the candidates"].iter().map(|t| (*t, None)).collect();
        assert!(reranker.reorder("blue fish", &mut items, |i| i.0.to_string(), |i, s| i.1 = Some(s)).await);
        let order: Vec<&str> = items.iter().map(|i| i.0).collect();
        assert_eq!(order, ["blue fish", "fish", "blue", "red", "blue fish past the candidates"]);
        assert_eq!(items[0].1, Some(2.0));
        assert_eq!(items[3].1, None, "no score came back for it");

        // Nobody listens there: the items stay as they were.
        let gone = Reranker::open(&RerankConfig { url: "http://127.0.0.1:9".into(), ..config }).unwrap().unwrap();
        let before = items.clone();
        assert!(!gone.reorder("blue", &mut items, |i| i.0.to_string(), |i, s| i.1 = Some(s)).await);
        assert_eq!(items, before);
    }
}
