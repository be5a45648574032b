//! Grounded answers: retrieve chunks with the hybrid engine, then answer from them with numbered
//! citations — through the configured LLM, or, with none configured, extractively (the best
//! passages themselves, highlighted, each with its citation). Never an error for lack of an LLM.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Serialize;

use super::documents::CHUNK_KIND;
use crate::error::Result;
use crate::llm::{ChatMessage, ChatRequest, Llm, estimate_tokens, fit_context};
use crate::search::{SearchEngine, SearchHit, SearchRequest};
use crate::store::text::Snippet;

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Citation {
    /// The number used in the answer: `[n]`.
    pub n: usize,
    pub document_id: Option<String>,
    pub chunk_id: String,
    pub title: Option<String>,
    pub source: Option<String>,
    pub snippet: Snippet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AnswerMode {
    Llm,
    Extractive,
}

/// An answer in the making: its citations first, then its text piece by piece.
pub struct AnswerStream {
    pub mode: AnswerMode,
    pub citations: Vec<Citation>,
    pub text: BoxStream<'static, Result<String>>,
}

const SYSTEM_PROMPT: &str = "You answer questions using only the numbered sources given. \
Cite every claim with the number of its source in square brackets, like [1] or [2][3]. \
If the sources do not contain the answer, say so plainly. Be concise.";

pub async fn answer(
    search: &SearchEngine,
    llm: Option<Arc<dyn Llm>>,
    mut request: SearchRequest,
    rerank: bool,
) -> Result<AnswerStream> {
    if request.filter.kinds.is_empty() {
        request.filter.kinds = vec![CHUNK_KIND.to_string()];
    }
    let (hits, _) = search.search_reranked(&request, rerank).await?;
    let citations: Vec<Citation> = hits.iter().enumerate().map(|(i, h)| citation(i + 1, h)).collect();
    let Some(llm) = llm.filter(|_| !hits.is_empty()) else {
        let text = extractive(&citations);
        return Ok(AnswerStream {
            mode: AnswerMode::Extractive,
            citations,
            text: futures::stream::iter(text.into_iter().map(Ok)).boxed(),
        });
    };
    let passages: Vec<String> = hits
        .iter()
        .enumerate()
        .map(|(i, h)| {
            format!(
                "[{}] {}\n{}",
                i + 1,
                h.record.title.clone().unwrap_or_default(),
                h.record.body.clone().unwrap_or_default()
            )
        })
        .collect();
    let question = format!("Question: {}", request.query);
    let budget = llm.context_tokens().saturating_sub(estimate_tokens(SYSTEM_PROMPT) + estimate_tokens(&question) + 64);
    let used = fit_context(&passages, budget, &estimate_tokens).max(1);
    let citations: Vec<Citation> = citations.into_iter().take(used).collect();
    let prompt = format!("Sources:\n\n{}\n\n{question}", passages[..used].join("\n\n"));
    let chat = ChatRequest::new(vec![ChatMessage::system(SYSTEM_PROMPT), ChatMessage::user(prompt)]);
    let text = llm.stream(&chat).await?;
    Ok(AnswerStream { mode: AnswerMode::Llm, citations, text })
}

fn citation(n: usize, hit: &SearchHit) -> Citation {
    let m = &hit.record.metadata;
    let s = |k: &str| m.get(k).and_then(|v| v.as_str()).map(str::to_string);
    Citation {
        n,
        document_id: s("document_id"),
        chunk_id: hit.record.id.clone(),
        title: hit.record.title.clone(),
        source: s("source"),
        snippet: hit.snippet.clone(),
    }
}

/// The best passages, as pieces of one answer: "[1] passage…" per citation, matched words in **bold**.
fn extractive(citations: &[Citation]) -> Vec<String> {
    if citations.is_empty() {
        return vec!["No source in the knowledge base matches this question.".to_string()];
    }
    citations
        .iter()
        .take(3)
        .map(|c| {
            let mut text = String::new();
            let mut at = 0;
            for &(start, end) in &c.snippet.highlights {
                if start < at || end > c.snippet.text.len() {
                    continue;
                }
                text.push_str(&c.snippet.text[at..start]);
                text.push_str("**");
                text.push_str(&c.snippet.text[start..end]);
                text.push_str("**");
                at = end;
            }
            text.push_str(&c.snippet.text[at..]);
            format!("{} [{}]\n\n", text.trim(), c.n)
        })
        .collect()
}
