//! Anthropic Messages: `POST {url}/v1/messages` with `x-api-key` and
//! `anthropic-version: 2023-06-01`.
//!
//! System messages are joined into the top-level `system` field (the API takes no `system` role).
//! Temperature is capped at 1, the API's maximum. A stream is SSE: `message_start`,
//! `content_block_start`, `content_block_delta` (text in `delta.text` of `text_delta`s),
//! `content_block_stop`, `message_delta`, `message_stop`, with `ping`s between and `error` when
//! the server gives up mid-way; unknown events are skipped, as the API asks.
//!
//! The API has no JSON mode: `json` adds an instruction to the system prompt, and [`Llm::complete`]
//! strips a Markdown code fence the model may still wrap around the object. Callers must still
//! parse, and repair or retry, what comes back.

use async_trait::async_trait;
use eventsource_stream::Event;
use futures::stream::BoxStream;
use serde::Deserialize;
use serde_json::{Value, json};

use super::transport::{Attempt, Auth, Decoder, Step, Transport, truncate};
use super::{ChatRequest, ChatResponse, JSON_INSTRUCTION, Llm, LlmIdentity, Role};
use crate::config::LlmEndpointConfig;
use crate::error::Result;

pub const API_VERSION: &str = "2023-06-01";

pub struct AnthropicLlm {
    transport: Transport,
    config: LlmEndpointConfig,
    identity: LlmIdentity,
}

impl AnthropicLlm {
    pub fn new(config: &LlmEndpointConfig) -> Result<AnthropicLlm> {
        // Takes `https://api.anthropic.com` and, forgivingly, `.../v1`.
        let url = config.url.trim_end_matches('/');
        let url = url.strip_suffix("/v1").unwrap_or(url).to_string();
        let transport = Transport::new(
            "llm.anthropic",
            config,
            format!("{url}/v1/messages"),
            Auth::Header("x-api-key"),
            &[("anthropic-version", API_VERSION)],
        )?;
        Ok(AnthropicLlm {
            transport,
            identity: LlmIdentity { provider: "anthropic", model: config.model.clone(), url },
            config: config.clone(),
        })
    }

    fn body(&self, request: &ChatRequest, stream: bool) -> Value {
        let mut system: Vec<&str> =
            request.messages.iter().filter(|m| m.role == Role::System).map(|m| m.content.as_str()).collect();
        if request.json {
            system.push(JSON_INSTRUCTION);
        }
        let messages: Vec<Value> = request
            .messages
            .iter()
            .filter(|m| m.role != Role::System)
            .map(|m| json!({"role": m.role, "content": m.content}))
            .collect();
        let mut body = json!({
            "model": self.config.model,
            "max_tokens": request.max_tokens.unwrap_or(self.config.max_tokens),
            "temperature": request.temperature.unwrap_or(self.config.temperature).min(1.0),
            "messages": messages,
            "stream": stream,
        });
        if !system.is_empty() {
            body["system"] = json!(system.join("\n\n"));
        }
        body
    }
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    model: Option<String>,
    content: Vec<Block>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    input_tokens: Option<u32>,
    #[serde(default)]
    output_tokens: Option<u32>,
}

fn parse_message(body: &[u8], configured_model: &str) -> std::result::Result<ChatResponse, Attempt> {
    let message: Message = serde_json::from_slice(body).map_err(|e| {
        Attempt::fail(format!(
            "answered with a body that is not a message ({e}): {}",
            truncate(&String::from_utf8_lossy(body))
        ))
    })?;
    let text: String = message.content.iter().filter(|b| b.kind == "text").filter_map(|b| b.text.as_deref()).collect();
    Ok(ChatResponse {
        text,
        model: message.model.unwrap_or_else(|| configured_model.to_string()),
        input_tokens: message.usage.as_ref().and_then(|u| u.input_tokens),
        output_tokens: message.usage.as_ref().and_then(|u| u.output_tokens),
        stop_reason: message.stop_reason,
    })
}

/// The object inside a "```json ... ```" fence, or the text unchanged.
fn strip_code_fence(text: &str) -> &str {
    let trimmed = text.trim();
    let Some(inner) = trimmed.strip_prefix("```").and_then(|t| t.strip_suffix("```")) else {
        return text;
    };
    let inner = inner.strip_prefix("json").or_else(|| inner.strip_prefix("JSON")).unwrap_or(inner);
    inner.trim()
}

/// The events of one message, until `message_stop`.
#[derive(Default)]
struct EventDecoder;

impl Decoder for EventDecoder {
    fn decode(&mut self, event: &Event) -> std::result::Result<Step, Attempt> {
        let data: Value = serde_json::from_str(&event.data)
            .map_err(|e| Attempt::fail(format!("sent an event that is not JSON ({e}): {}", truncate(&event.data))))?;
        let kind = data["type"].as_str().unwrap_or(&event.event);
        Ok(match kind {
            "content_block_start" if data["content_block"]["type"] == "text" => {
                Step::Text(data["content_block"]["text"].as_str().unwrap_or_default().to_string())
            }
            "content_block_delta" if data["delta"]["type"] == "text_delta" => {
                Step::Text(data["delta"]["text"].as_str().unwrap_or_default().to_string())
            }
            "message_stop" => Step::Done,
            "error" => {
                let error_type = data["error"]["type"].as_str().unwrap_or("error");
                let message = data["error"]["message"].as_str().unwrap_or_default();
                let why = format!("reported {error_type} in the stream: {}", truncate(message));
                return Err(match error_type {
                    "overloaded_error" | "api_error" | "rate_limit_error" | "timeout_error" => Attempt::retry(why),
                    _ => Attempt::fail(why),
                });
            }
            _ => Step::Skip,
        })
    }

    fn end(&mut self) -> std::result::Result<(), String> {
        Err("the stream ended before `message_stop`".to_string())
    }
}

#[async_trait]
impl Llm for AnthropicLlm {
    fn describe(&self) -> LlmIdentity {
        self.identity.clone()
    }

    fn context_tokens(&self) -> usize {
        self.config.context_tokens
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse> {
        request.check()?;
        let body = self.body(request, false);
        let mut response = self.transport.complete(&body, |bytes| parse_message(bytes, &self.config.model)).await?;
        if request.json {
            response.text = strip_code_fence(&response.text).to_string();
        }
        Ok(response)
    }

    async fn stream(&self, request: &ChatRequest) -> Result<BoxStream<'static, Result<String>>> {
        request.check()?;
        let body = self.body(request, true);
        self.transport.stream(&body, EventDecoder::default).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::transport::decode_chunks;
    use super::*;

    #[test]
    fn llm_anthropic_code_fence_is_stripped() {
        assert_eq!(strip_code_fence("```json\n{\"a\": 1}\n```"), "{\"a\": 1}");
        assert_eq!(strip_code_fence("```\n{\"a\": 1}\n```\n"), "{\"a\": 1}");
        assert_eq!(strip_code_fence("{\"a\": \"```\"}"), "{\"a\": \"```\"}");
    }

    #[tokio::test]
    async fn llm_anthropic_events_decode_and_error_event_is_retryable() {
        let chunks: Vec<&'static [u8]> = vec![
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"content\":[]}}\n\n",
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\n",
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        ];
        let (texts, error) = decode_chunks(chunks, EventDecoder).await;
        assert_eq!(texts, vec!["Hi"]);
        assert!(matches!(error, Some(Attempt::Retry { ref why, .. }) if why.contains("overloaded_error")), "{error:?}");
    }

    #[tokio::test]
    async fn llm_anthropic_stream_without_message_stop_is_an_error() {
        let chunks: Vec<&'static [u8]> = vec![
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n",
        ];
        let (texts, error) = decode_chunks(chunks, EventDecoder).await;
        assert_eq!(texts, vec!["Hi"]);
        assert!(error.is_some(), "an event without its blank line was never complete");
    }
}
