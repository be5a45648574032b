//! LLM providers: chat completions for grounded answers and memory extraction.
//!
//! An [`Llm`] is one remote model behind one wire format: OpenAI-compatible Chat Completions
//! ([`openai`]: OpenAI, Ollama, vLLM, llama.cpp server, LM Studio) or Anthropic Messages
//! ([`anthropic`]). Both answer whole ([`Llm::complete`]) or as a stream of text pieces
//! ([`Llm::stream`]). [`open_llm`] turns `[llm]` into a provider, or `None` when no LLM is
//! configured: callers then fall back to answers that need no model.
//!
//! [`json`] reads a model's JSON answers (repairing, then asking again once).
//!
//! Both share `transport`: timeouts, retries with backoff honouring `Retry-After`, immediate
//! errors that a retry cannot fix, the API key (read once, never logged, scrubbed from upstream
//! messages) and SSE reading. A stream is retried only until its first piece of text; after that
//! a failure ends it with an error item.

pub mod anthropic;
pub mod json;
pub mod openai;
mod transport;

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::config::{LlmConfig, LlmProvider};
use crate::error::{Error, Result};

/// What `json: true` adds to the system prompt.
const JSON_INSTRUCTION: &str =
    "Answer with one JSON object and nothing else: no text before or after it, no Markdown code fence.";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> ChatMessage {
        ChatMessage { role: Role::System, content: content.into() }
    }
    pub fn user(content: impl Into<String>) -> ChatMessage {
        ChatMessage { role: Role::User, content: content.into() }
    }
    pub fn assistant(content: impl Into<String>) -> ChatMessage {
        ChatMessage { role: Role::Assistant, content: content.into() }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    /// Most tokens to generate; `None` takes the provider's configured `max_tokens`.
    pub max_tokens: Option<u32>,
    /// `None` takes the provider's configured `temperature`.
    pub temperature: Option<f32>,
    /// Ask for one JSON object as the answer (see each provider for how).
    pub json: bool,
}

impl ChatRequest {
    pub fn new(messages: Vec<ChatMessage>) -> ChatRequest {
        ChatRequest { messages, ..Default::default() }
    }

    /// Refuses what no provider would take, before anything is sent.
    fn check(&self) -> Result<()> {
        if !self.messages.iter().any(|m| m.role != Role::System) {
            return Err(Error::invalid("a chat request needs at least one user or assistant message"));
        }
        if self.max_tokens == Some(0) {
            return Err(Error::invalid("max_tokens must be at least 1"));
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(Error::invalid("temperature must be between 0 and 2"));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChatResponse {
    pub text: String,
    /// The model that answered, as the server names it.
    pub model: String,
    pub input_tokens: Option<u32>,
    pub output_tokens: Option<u32>,
    /// Why generation stopped, in the provider's words (`stop`, `length`, `end_turn`, `max_tokens`).
    pub stop_reason: Option<String>,
}

/// Which model answers, for logs and status pages. Holds no secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LlmIdentity {
    pub provider: &'static str,
    pub model: String,
    pub url: String,
}

impl std::fmt::Display for LlmIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} at {}", self.provider, self.model, self.url)
    }
}

#[async_trait]
pub trait Llm: Send + Sync {
    fn describe(&self) -> LlmIdentity;

    /// Tokens of context (retrieved passages) a prompt may carry: the configured `context_tokens`.
    fn context_tokens(&self) -> usize;

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse>;

    /// The answer as pieces of text in order. Returns once the first piece has arrived (or the
    /// answer ended empty); failures before then are retried, later ones end the stream with an
    /// `Err` item.
    async fn stream(&self, request: &ChatRequest) -> Result<BoxStream<'static, Result<String>>>;
}

/// Opens the configured provider; `None` when `llm.provider = "none"`.
pub fn open_llm(config: &LlmConfig) -> Result<Option<Arc<dyn Llm>>> {
    let missing = |section: &str| Error::config(format!("{section} is not set"));
    Ok(match config.provider {
        LlmProvider::None => None,
        LlmProvider::Openai => {
            let endpoint = config.openai.as_ref().ok_or_else(|| missing("llm.openai"))?;
            Some(Arc::new(openai::OpenAiLlm::new(endpoint)?))
        }
        LlmProvider::Anthropic => {
            let endpoint = config.anthropic.as_ref().ok_or_else(|| missing("llm.anthropic"))?;
            Some(Arc::new(anthropic::AnthropicLlm::new(endpoint)?))
        }
    })
}

/// A cheap, conservative token estimate: a quarter token per ASCII character (rounded up) plus
/// one per other character.
///
/// English averages about four characters per token in the GPT and Claude vocabularies; CJK and
/// other scripts take one or more tokens per character. Neither provider's tokenizer ships with
/// Nexus (the built-in MiniLM WordPiece vocabulary is a different one), so any count here is an
/// approximation; this one errs high so a budget is rarely overrun.
pub fn estimate_tokens(text: &str) -> usize {
    let ascii = text.bytes().filter(u8::is_ascii).count();
    let other = text.chars().filter(|c| !c.is_ascii()).count();
    ascii.div_ceil(4) + other
}

/// How many of `passages`, taken in order, fit within `budget_tokens` as counted by `count`.
///
/// Stops at the first passage that does not fit rather than skipping to smaller ones: passages
/// come ranked, and citations number them in that order.
pub fn fit_context(passages: &[String], budget_tokens: usize, count: &dyn Fn(&str) -> usize) -> usize {
    let mut used = 0usize;
    for (i, passage) in passages.iter().enumerate() {
        used = used.saturating_add(count(passage));
        if used > budget_tokens {
            return i;
        }
    }
    passages.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llm_token_estimate_rounds_up_and_counts_other_scripts() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abc"), 1);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens("東京"), 2);
        assert_eq!(estimate_tokens("café"), 2);
    }

    #[test]
    fn llm_fit_context_takes_a_ranked_prefix() {
        let passages: Vec<String> = ["aaaa", "bbbbbbbb", "cc", "d"].iter().map(|s| s.to_string()).collect();
        let len = |s: &str| s.len();
        assert_eq!(fit_context(&passages, 0, &len), 0);
        assert_eq!(fit_context(&passages, 4, &len), 1);
        assert_eq!(fit_context(&passages, 11, &len), 1, "the third would fit, but not the second");
        assert_eq!(fit_context(&passages, 12, &len), 2);
        assert_eq!(fit_context(&passages, 100, &len), 4);
        assert_eq!(fit_context(&[], 10, &len), 0);
        assert_eq!(fit_context(&passages, 2, &|s: &str| estimate_tokens(s)), 1);
    }

    #[test]
    fn llm_request_check_refuses_what_no_provider_takes() {
        assert!(ChatRequest::new(vec![ChatMessage::system("only a system prompt")]).check().is_err());
        assert!(ChatRequest::new(vec![]).check().is_err());
        let mut ok = ChatRequest::new(vec![ChatMessage::user("hi")]);
        assert!(ok.check().is_ok());
        ok.max_tokens = Some(0);
        assert!(ok.check().is_err());
        ok.max_tokens = None;
        ok.temperature = Some(3.0);
        assert!(ok.check().is_err());
    }
}
