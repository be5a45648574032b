//! OpenAI-compatible Chat Completions: `POST {url}/chat/completions`, as spoken by OpenAI,
//! Ollama, vLLM, llama.cpp server and LM Studio.
//!
//! The key, when set, goes as `Authorization: Bearer`; local servers need none. A stream is
//! `"stream": true` answered with SSE `data: {chunk}` events, text in `choices[0].delta.content`,
//! ended by `data: [DONE]` (a stream that closes after a `finish_reason` but without `[DONE]`, as
//! some servers do, is complete too). `json` sends `response_format: {"type": "json_object"}`;
//! OpenAI refuses that unless a message mentions JSON, so an instruction saying so is added when
//! none does.

use async_trait::async_trait;
use eventsource_stream::Event;
use futures::stream::BoxStream;
use serde::Deserialize;
use serde_json::{Value, json};

use super::transport::{Attempt, Auth, Decoder, Step, Transport, truncate};
use super::{ChatRequest, ChatResponse, JSON_INSTRUCTION, Llm, LlmIdentity};
use crate::config::LlmEndpointConfig;
use crate::error::Result;

pub struct OpenAiLlm {
    transport: Transport,
    config: LlmEndpointConfig,
    identity: LlmIdentity,
}

impl OpenAiLlm {
    pub fn new(config: &LlmEndpointConfig) -> Result<OpenAiLlm> {
        let url = config.url.trim_end_matches('/').to_string();
        let transport = Transport::new("llm.openai", config, format!("{url}/chat/completions"), Auth::Bearer, &[])?;
        Ok(OpenAiLlm {
            transport,
            identity: LlmIdentity { provider: "openai", model: config.model.clone(), url },
            config: config.clone(),
        })
    }

    fn body(&self, request: &ChatRequest, stream: bool) -> Value {
        let mut messages: Vec<Value> =
            request.messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect();
        if request.json && !request.messages.iter().any(|m| m.content.to_ascii_lowercase().contains("json")) {
            messages.insert(0, json!({"role": "system", "content": JSON_INSTRUCTION}));
        }
        let mut body = json!({
            "model": self.config.model,
            "messages": messages,
            "max_tokens": request.max_tokens.unwrap_or(self.config.max_tokens),
            "temperature": request.temperature.unwrap_or(self.config.temperature),
            "stream": stream,
        });
        if request.json {
            body["response_format"] = json!({"type": "json_object"});
        }
        body
    }
}

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    model: Option<String>,
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<u32>,
    #[serde(default)]
    completion_tokens: Option<u32>,
}

fn parse_completion(body: &[u8], configured_model: &str) -> std::result::Result<ChatResponse, Attempt> {
    let completion: Completion = serde_json::from_slice(body).map_err(|e| {
        Attempt::fail(format!(
            "answered with a body that is not a chat completion ({e}): {}",
            truncate(&String::from_utf8_lossy(body))
        ))
    })?;
    let Some(choice) = completion.choices.into_iter().next() else {
        return Err(Attempt::fail("answered with no choices"));
    };
    if let Some(refusal) = choice.message.refusal.filter(|r| !r.is_empty()) {
        return Err(Attempt::fail(format!("the model refused: {}", truncate(&refusal))));
    }
    Ok(ChatResponse {
        text: choice.message.content.unwrap_or_default(),
        model: completion.model.unwrap_or_else(|| configured_model.to_string()),
        input_tokens: completion.usage.as_ref().and_then(|u| u.prompt_tokens),
        output_tokens: completion.usage.as_ref().and_then(|u| u.completion_tokens),
        stop_reason: choice.finish_reason,
    })
}

/// `data: {chunk}` events until `data: [DONE]`.
#[derive(Default)]
struct ChunkDecoder {
    finished: bool,
}

impl Decoder for ChunkDecoder {
    fn decode(&mut self, event: &Event) -> std::result::Result<Step, Attempt> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(Step::Done);
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| {
            Attempt::fail(format!("sent an event that is not a chat completion chunk ({e}): {}", truncate(data)))
        })?;
        // OpenAI nests errors under `error`; vLLM sends `{"object": "error", "message": ...}`.
        if chunk.get("error").is_some() || chunk["object"] == "error" {
            let error = chunk.get("error").unwrap_or(&chunk);
            let message = error["message"].as_str().map(str::to_string).unwrap_or_else(|| error.to_string());
            return Err(Attempt::fail(format!("reported an error in the stream: {}", truncate(&message))));
        }
        // A usage chunk has no choices.
        let choice = &chunk["choices"][0];
        if choice["finish_reason"].is_string() {
            self.finished = true;
        }
        Ok(match choice["delta"]["content"].as_str() {
            Some(text) => Step::Text(text.to_string()),
            None => Step::Skip,
        })
    }

    fn end(&mut self) -> std::result::Result<(), String> {
        match self.finished {
            true => Ok(()),
            false => Err("the stream ended before `data: [DONE]`".to_string()),
        }
    }
}

#[async_trait]
impl Llm for OpenAiLlm {
    fn describe(&self) -> LlmIdentity {
        self.identity.clone()
    }

    fn context_tokens(&self) -> usize {
        self.config.context_tokens
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse> {
        request.check()?;
        let body = self.body(request, false);
        self.transport.complete(&body, |bytes| parse_completion(bytes, &self.config.model)).await
    }

    async fn stream(&self, request: &ChatRequest) -> Result<BoxStream<'static, Result<String>>> {
        request.check()?;
        let body = self.body(request, true);
        self.transport.stream(&body, ChunkDecoder::default).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::transport::decode_chunks;
    use super::*;

    #[tokio::test]
    async fn llm_openai_chunks_split_anywhere_decode_whole() {
        // One event split mid-line and inside the two bytes of "é"; CRLF line ends; a comment.
        let chunks: Vec<&'static [u8]> = vec![
            b": keep-alive\r\n\r\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"caf",
            b"\xc3",
            b"\xa9\"},\"finish_reason\":null}]}\r\n\r\ndata: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_",
            b"reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
        ];
        let (texts, error) = decode_chunks(chunks, ChunkDecoder::default()).await;
        assert_eq!(texts, vec!["café"]);
        assert!(error.is_none(), "{error:?}");
    }

    #[tokio::test]
    async fn llm_openai_stream_without_done_is_an_error_unless_finished() {
        let cut: Vec<&'static [u8]> = vec![b"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n"];
        let (texts, error) = decode_chunks(cut, ChunkDecoder::default()).await;
        assert_eq!(texts, vec!["Hel"]);
        assert!(matches!(error, Some(Attempt::Retry { ref why, .. }) if why.contains("[DONE]")), "{error:?}");

        let finished: Vec<&'static [u8]> =
            vec![b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}]}\n\n"];
        let (texts, error) = decode_chunks(finished, ChunkDecoder::default()).await;
        assert_eq!(texts, vec!["Hi"]);
        assert!(error.is_none());
    }

    #[tokio::test]
    async fn llm_openai_error_in_stream_is_reported() {
        let chunks: Vec<&'static [u8]> =
            vec![b"data: {\"object\":\"error\",\"message\":\"context too long\",\"type\":\"BadRequestError\"}\n\n"];
        let (_, error) = decode_chunks(chunks, ChunkDecoder::default()).await;
        assert!(matches!(error, Some(Attempt::Fail(ref why)) if why.contains("context too long")), "{error:?}");
    }

    #[test]
    fn llm_openai_completion_parses_and_refuses_garbage() {
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-x","choices":[{"index":0,"message":{"role":"assistant","content":"Hi","refusal":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#;
        let response = parse_completion(body, "configured").unwrap();
        assert_eq!(response.text, "Hi");
        assert_eq!(response.model, "gpt-x");
        assert_eq!((response.input_tokens, response.output_tokens), (Some(9), Some(1)));
        assert_eq!(response.stop_reason.as_deref(), Some("stop"));
        assert!(matches!(parse_completion(b"<html>502</html>", "m"), Err(Attempt::Fail(_))));
        assert!(matches!(parse_completion(br#"{"choices":[]}"#, "m"), Err(Attempt::Fail(_))));
    }
}
