//! One hybrid search engine for every kind of item (document chunks, memories, meetings...).
//!
//! A query runs against the text store (BM25) and the vector store (cosine similarity of the
//! query's embedding), each asked for more candidates than the page needs; the two ranked lists
//! are fused with weighted reciprocal rank fusion (`weight / (k + rank)`), and every hit carries
//! its score breakdown. Filters apply inside both stores: facets, tags and dates in the text
//! store; for vectors, a selective filter becomes the set of allowed keys (read from the record
//! store), searched exactly when small and through the HNSW index with a key predicate otherwise.
//! Meeting chunks overlap (each turn is in two windows), so a window that shares turns with a
//! better-ranked window of the same meeting is left out: a page holds distinct passages. When
//! meeting windows are among a hybrid search's candidates, a third ranking joins the fusion:
//! each window by the passage around it (`context.rs`).

mod context;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{KnowledgeConfig, MemoryConfig};
use crate::embed::EmbedService;
use crate::error::{Error, Result};
use crate::rerank::Reranker;
use crate::store::records::{Record, RecordFilter, facet};
use crate::store::text::{Snippet, TextQuery};
use crate::store::vectors::VectorQuery;
use crate::store::{RecordKey, Stores, TenantId};

/// Below this many allowed keys, a filtered vector search scores each one exactly instead of HNSW.
const EXACT_SEARCH_MAX_KEYS: usize = 20_000;
/// Most candidates fetched from each store.
const MAX_CANDIDATES: usize = 1000;
/// Fewest candidates fetched from each store when meeting windows are ranked by context: a
/// window whose passage matches may rank low in both lists (measured on QMSum: 50 candidates
/// find fewer gold passages than 100).
const CONTEXT_CANDIDATES: usize = 100;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Hybrid,
    Keyword,
    Semantic,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Fusion {
    /// Weight of the keyword (BM25) ranking in the fusion.
    #[serde(default = "one")]
    pub keyword_weight: f32,
    /// Weight of the semantic (vector) ranking in the fusion.
    #[serde(default = "one")]
    pub semantic_weight: f32,
    /// The `k` of reciprocal rank fusion: larger flattens the advantage of top ranks.
    #[serde(default = "sixty")]
    pub rrf_k: f32,
    /// Within the keyword ranking: how much a match in an item's title counts against one in
    /// its body (a document's title, a memory's speaker).
    #[serde(default = "default_title_weight")]
    pub title_weight: f32,
    /// Weight of the context ranking in hybrid search, used when meeting windows are among the
    /// candidates: a window ranked by the passage around it, any other hit by its own vector.
    #[serde(default = "one")]
    pub context_weight: f32,
}

fn one() -> f32 {
    1.0
}
fn sixty() -> f32 {
    60.0
}
fn default_title_weight() -> f32 {
    crate::store::text::DEFAULT_TITLE_WEIGHT
}

impl Fusion {
    /// The fusion document search and answers use unless a request gives its own.
    pub fn for_documents(config: &KnowledgeConfig) -> Self {
        Fusion {
            keyword_weight: config.keyword_weight,
            semantic_weight: config.semantic_weight,
            title_weight: config.title_weight,
            context_weight: config.context_weight,
            ..Default::default()
        }
    }

    /// The fusion memory search uses unless a request gives its own.
    pub fn for_memories(config: &MemoryConfig) -> Self {
        Fusion { keyword_weight: 1.0, semantic_weight: config.semantic_weight, ..Default::default() }
    }
}

impl Default for Fusion {
    fn default() -> Self {
        Fusion {
            keyword_weight: 1.0,
            semantic_weight: 1.0,
            rrf_k: 60.0,
            title_weight: default_title_weight(),
            context_weight: 1.0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SearchRequest {
    pub tenant: TenantId,
    pub query: String,
    pub mode: Mode,
    pub filter: RecordFilter,
    pub top_k: usize,
    pub offset: usize,
    pub fusion: Fusion,
    /// Whether hits carry highlighted snippets (callers that show only whole records skip them).
    pub snippets: bool,
}

/// How a hit scored: its rank (1-based) and raw score in each list it appeared in.
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ScoreBreakdown {
    pub keyword_rank: Option<usize>,
    /// BM25 score.
    pub keyword_score: Option<f32>,
    pub semantic_rank: Option<usize>,
    /// Cosine similarity.
    pub semantic_score: Option<f32>,
    /// Rank in the context ranking (hybrid search with meeting windows among the candidates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_rank: Option<usize>,
    /// Cosine similarity of the query to the hit's context: for a meeting window, the centroid
    /// of the windows around it; for any other hit, its own vector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_score: Option<f32>,
    /// The fused score the hit is ranked by (equal to the single list's score outside hybrid mode).
    pub fused: f32,
}

#[derive(Clone, Debug)]
pub struct SearchHit {
    pub record: Record,
    pub score: f32,
    pub breakdown: ScoreBreakdown,
    pub snippet: Snippet,
    /// The reranker's score, when it reordered this hit ([`SearchEngine::search_reranked`]).
    pub rerank_score: Option<f32>,
}

/// What the reranker reads of a hit: its title (a memory's speaker, a document's title) and text.
fn rerank_text(hit: &SearchHit) -> String {
    match (hit.record.title.as_deref(), hit.record.body.as_deref()) {
        (Some(title), Some(body)) if !title.is_empty() => format!("{title}: {body}"),
        (_, Some(body)) => body.to_string(),
        (Some(title), None) => title.to_string(),
        (None, None) => String::new(),
    }
}

#[derive(Clone)]
pub struct SearchEngine {
    stores: Stores,
    embed: Arc<EmbedService>,
    reranker: Option<Arc<Reranker>>,
}

struct Ranked {
    key: RecordKey,
    score: f32,
}

impl SearchEngine {
    pub fn new(stores: Stores, embed: Arc<EmbedService>) -> SearchEngine {
        SearchEngine { stores, embed, reranker: None }
    }

    /// This engine, with `reranker` for [`Self::search_reranked`].
    pub fn with_reranker(mut self, reranker: Option<Arc<Reranker>>) -> SearchEngine {
        self.reranker = reranker;
        self
    }

    /// The reranker a request that says `rerank` (or leaves it to `rerank.by_default`: `None`)
    /// is reranked by; none when it says no or none is configured.
    pub fn reranker_for(&self, asked: Option<bool>) -> Option<&Arc<Reranker>> {
        self.reranker.as_ref().filter(|r| asked.unwrap_or(r.by_default()))
    }

    /// [`Self::reranker_for`] as a yes or no, for a route that refuses `rerank: true` when no
    /// reranker is configured.
    pub fn wants_rerank(&self, asked: Option<bool>) -> Result<bool> {
        if asked == Some(true) && self.reranker.is_none() {
            return Err(Error::invalid(
                "rerank is true, but no reranker is configured: set [rerank] provider and url, or leave rerank out",
            ));
        }
        Ok(self.reranker_for(asked).is_some())
    }

    /// [`Self::search`], then, when `rerank`, the reranker's order over the best
    /// `rerank.candidates` hits (at least the page asked for), paged as asked. The flag says
    /// whether the hits were reranked: `None` when not asked, `Some(false)` when the reranker
    /// failed and the hits keep the search's order.
    pub async fn search_reranked(
        &self,
        request: &SearchRequest,
        rerank: bool,
    ) -> Result<(Vec<SearchHit>, Option<bool>)> {
        let Some(reranker) = self.reranker_for(Some(rerank)) else {
            return Ok((self.search(request).await?, None));
        };
        let wanted = request.offset.saturating_add(request.top_k);
        let pool = reranker.candidates().max(wanted).min(MAX_CANDIDATES);
        let mut hits = self.search(&SearchRequest { top_k: pool, offset: 0, ..request.clone() }).await?;
        let reranked =
            reranker.reorder(&request.query, &mut hits, rerank_text, |hit, score| hit.rerank_score = Some(score)).await;
        let page = hits.into_iter().skip(request.offset).take(request.top_k).collect();
        Ok((page, Some(reranked)))
    }

    pub async fn search(&self, request: &SearchRequest) -> Result<Vec<SearchHit>> {
        Ok(self.search_with_vector(request).await?.0)
    }

    /// [`SearchEngine::search`], also handing back the query's vector when the mode computed one,
    /// so a caller that scores hits further does not embed the query a second time.
    pub async fn search_with_vector(&self, request: &SearchRequest) -> Result<(Vec<SearchHit>, Option<Vec<f32>>)> {
        if request.query.trim().is_empty() {
            return Err(Error::invalid("query must not be empty"));
        }
        if request.top_k == 0 || request.top_k.saturating_add(request.offset) > MAX_CANDIDATES {
            return Err(Error::invalid(format!(
                "top_k must be at least 1 and top_k + offset at most {MAX_CANDIDATES}"
            )));
        }
        let wanted = request.offset + request.top_k;
        let floor = if self.ranks_context(request) { CONTEXT_CANDIDATES } else { 50 };
        let candidates = (wanted * 3).clamp(floor, MAX_CANDIDATES).max(wanted);
        let (keyword, (semantic, query_vector)) = match request.mode {
            Mode::Keyword => (self.keyword(request, candidates).await?, (Vec::new(), None)),
            Mode::Semantic => (Vec::new(), self.semantic(request, candidates).await?),
            Mode::Hybrid => {
                let (k, s) = tokio::join!(self.keyword(request, candidates), self.semantic(request, candidates));
                (k?, s?)
            }
        };
        let mut snippets: HashMap<RecordKey, Snippet> = HashMap::new();
        let keyword_ranked: Vec<Ranked> = keyword
            .into_iter()
            .map(|(key, score, snippet)| {
                snippets.insert(key, snippet);
                Ranked { key, score }
            })
            .collect();
        let mut known: HashMap<RecordKey, Record> = HashMap::new();
        let context = match &query_vector {
            Some(vector) if self.ranks_context(request) => {
                self.context(request, &keyword_ranked, &semantic, vector, &mut known).await?
            }
            _ => Vec::new(),
        };
        let fused = fuse(&keyword_ranked, &semantic, &context, request.mode, &request.fusion);
        let page = self.distinct(&request.tenant, fused, wanted, known).await?;
        let page: Vec<(RecordKey, ScoreBreakdown, Record)> = page.into_iter().skip(request.offset).collect();

        let missing: Vec<RecordKey> = page.iter().map(|(k, _, _)| *k).filter(|k| !snippets.contains_key(k)).collect();
        if request.snippets && !missing.is_empty() {
            snippets.extend(self.stores.text.snippets(&request.tenant, &request.query, missing).await?);
        }
        let hits = page
            .into_iter()
            .map(|(key, breakdown, record)| {
                let snippet = match snippets.remove(&key) {
                    Some(s) => s,
                    None if request.snippets => leading_snippet(&record),
                    None => Snippet::default(),
                };
                SearchHit { score: breakdown.fused, breakdown, snippet, record, rerank_score: None }
            })
            .collect();
        Ok((hits, query_vector))
    }

    /// Whether a search ranks its candidates by context too: hybrid, with a context weight, over
    /// kinds that include meeting windows.
    fn ranks_context(&self, request: &SearchRequest) -> bool {
        let kinds = &request.filter.kinds;
        request.mode == Mode::Hybrid
            && request.fusion.context_weight > 0.0
            && (kinds.is_empty() || kinds.iter().any(|k| k == crate::meetings::model::CHUNK_KIND))
    }

    /// The context ranking of the keyword and semantic candidates (empty when none is a meeting
    /// window). The records read on the way are left in `known` for the page.
    async fn context(
        &self,
        request: &SearchRequest,
        keyword: &[Ranked],
        semantic: &[Ranked],
        query: &[f32],
        known: &mut HashMap<RecordKey, Record>,
    ) -> Result<Vec<Ranked>> {
        let mut keys: Vec<RecordKey> = Vec::with_capacity(keyword.len() + semantic.len());
        let mut seen = HashSet::new();
        keys.extend(keyword.iter().chain(semantic).map(|r| r.key).filter(|k| seen.insert(*k)));
        let candidates = self.stores.records.get_by_keys(&request.tenant, &keys).await?;
        if !candidates.iter().any(|r| Window::of(r).is_some()) {
            known.extend(candidates.into_iter().map(|r| (r.key, r)));
            return Ok(Vec::new());
        }
        let have: HashSet<&str> = candidates.iter().map(|r| r.id.as_str()).collect();
        let mut wanted_ids: Vec<String> = candidates
            .iter()
            .filter_map(Window::of)
            .flat_map(|w| context::context_ids(&w.meeting, w.first).collect::<Vec<_>>())
            .filter(|id| !have.contains(id.as_str()))
            .collect();
        wanted_ids.sort_unstable();
        wanted_ids.dedup();
        let around_records = self.stores.records.get_many(&request.tenant, &wanted_ids).await?;
        let mut around: HashMap<String, &Record> = around_records.iter().map(|r| (r.id.clone(), r)).collect();
        around.extend(candidates.iter().map(|r| (r.id.clone(), r)));
        let ranked = context::rank(&candidates.iter().collect::<Vec<_>>(), &around, query);
        drop(around);
        known.extend(candidates.into_iter().map(|r| (r.key, r)));
        Ok(ranked.into_iter().map(|(key, score)| Ranked { key, score }).collect())
    }

    /// The first `wanted` hits of `fused` with their records, skipping records deleted since they
    /// were indexed and meeting windows that overlap a better-ranked window of the same meeting
    /// (windows share turns, so neighbours would otherwise fill a page with one passage).
    /// `known` holds records already read for this search.
    async fn distinct(
        &self,
        tenant: &TenantId,
        fused: Vec<(RecordKey, ScoreBreakdown)>,
        wanted: usize,
        mut known: HashMap<RecordKey, Record>,
    ) -> Result<Vec<(RecordKey, ScoreBreakdown, Record)>> {
        let mut kept: Vec<(RecordKey, ScoreBreakdown, Record)> = Vec::with_capacity(wanted);
        let mut windows: Vec<Window> = Vec::new();
        let mut rest = fused.into_iter().peekable();
        while kept.len() < wanted && rest.peek().is_some() {
            let batch: Vec<(RecordKey, ScoreBreakdown)> = rest.by_ref().take((wanted - kept.len()).max(10)).collect();
            let keys: Vec<RecordKey> = batch.iter().map(|(k, _)| *k).filter(|k| !known.contains_key(k)).collect();
            let mut records: HashMap<RecordKey, Record> = if keys.is_empty() {
                HashMap::new()
            } else {
                self.stores.records.get_by_keys(tenant, &keys).await?.into_iter().map(|r| (r.key, r)).collect()
            };
            records.extend(batch.iter().filter_map(|(k, _)| known.remove_entry(k)));
            for (key, breakdown) in batch {
                if kept.len() == wanted {
                    break;
                }
                let Some(record) = records.remove(&key) else { continue };
                if let Some(window) = Window::of(&record) {
                    if windows.iter().any(|w| w.overlaps(&window)) {
                        continue;
                    }
                    windows.push(window);
                }
                kept.push((key, breakdown, record));
            }
        }
        Ok(kept)
    }

    async fn keyword(&self, request: &SearchRequest, limit: usize) -> Result<Vec<(RecordKey, f32, Snippet)>> {
        let f = &request.filter;
        let mut query = TextQuery::new(request.tenant.clone(), request.query.clone(), limit);
        query.title_weight = request.fusion.title_weight;
        query.snippets = request.snippets;
        query.kinds = (!f.kinds.is_empty()).then(|| f.kinds.clone());
        query.tags = f.tags.clone();
        query.facets = f.metadata.iter().map(|(k, v)| facet(k, v)).collect();
        query.date_from = f.date_from.map(|d| d.timestamp_micros());
        query.date_to = f.date_to.map(|d| d.timestamp_micros());
        let hits = self.stores.text.search(query).await?;
        Ok(hits.into_iter().map(|h| (h.key, h.score, h.snippet)).collect())
    }

    async fn semantic(&self, request: &SearchRequest, limit: usize) -> Result<(Vec<Ranked>, Option<Vec<f32>>)> {
        let vector = self.embed.embed_one(&request.query).await?;
        let ranked = self.nearest(request, vector.clone(), limit).await?;
        Ok((ranked, Some(vector)))
    }

    async fn nearest(&self, request: &SearchRequest, vector: Vec<f32>, limit: usize) -> Result<Vec<Ranked>> {
        let f = &request.filter;
        if f.is_selective() {
            let allowed = self.stores.records.keys_matching(&request.tenant, f, EXACT_SEARCH_MAX_KEYS + 1).await?;
            if allowed.len() <= EXACT_SEARCH_MAX_KEYS {
                // Scored one by one from the vectors in memory: no record is read.
                let hits = self.stores.vectors.nearest_among(&request.tenant, allowed, vector, limit).await?;
                return Ok(hits.into_iter().map(|h| Ranked { key: h.key, score: h.score }).collect());
            }
            let allowed: Arc<HashSet<RecordKey>> = Arc::new(
                self.stores.records.keys_matching(&request.tenant, f, usize::MAX >> 1).await?.into_iter().collect(),
            );
            let query = VectorQuery {
                tenant: request.tenant.clone(),
                vector,
                k: limit,
                kinds: None,
                predicate: Some(Arc::new(move |key| allowed.contains(&key))),
            };
            return Ok(self
                .stores
                .vectors
                .search(query)
                .await?
                .into_iter()
                .map(|h| Ranked { key: h.key, score: h.score })
                .collect());
        }
        let query = VectorQuery {
            tenant: request.tenant.clone(),
            vector,
            k: limit,
            kinds: (!f.kinds.is_empty()).then(|| f.kinds.clone()),
            predicate: None,
        };
        Ok(self
            .stores
            .vectors
            .search(query)
            .await?
            .into_iter()
            .map(|h| Ranked { key: h.key, score: h.score })
            .collect())
    }
}

/// A meeting chunk's turns: its meeting and its first and last `seq`.
#[derive(Debug, PartialEq)]
struct Window {
    meeting: String,
    first: u64,
    last: u64,
}

impl Window {
    fn of(record: &Record) -> Option<Window> {
        if record.kind != crate::meetings::model::CHUNK_KIND {
            return None;
        }
        let m = &record.metadata;
        Some(Window {
            meeting: m.get("meeting_id")?.as_str()?.to_string(),
            first: m.get("seq_start")?.as_u64()?,
            last: m.get("seq_end")?.as_u64()?,
        })
    }

    fn overlaps(&self, other: &Window) -> bool {
        self.meeting == other.meeting && self.first <= other.last && other.first <= self.last
    }
}

/// Weighted reciprocal rank fusion (of the context ranking too, when there is one); single-list
/// modes keep that list's own scores.
fn fuse(
    keyword: &[Ranked],
    semantic: &[Ranked],
    context: &[Ranked],
    mode: Mode,
    fusion: &Fusion,
) -> Vec<(RecordKey, ScoreBreakdown)> {
    let mut by_key: HashMap<RecordKey, ScoreBreakdown> = HashMap::new();
    for (i, r) in keyword.iter().enumerate() {
        let b = by_key.entry(r.key).or_default();
        b.keyword_rank = Some(i + 1);
        b.keyword_score = Some(r.score);
    }
    for (i, r) in semantic.iter().enumerate() {
        let b = by_key.entry(r.key).or_default();
        b.semantic_rank = Some(i + 1);
        b.semantic_score = Some(r.score);
    }
    for (i, r) in context.iter().enumerate() {
        if let Some(b) = by_key.get_mut(&r.key) {
            b.context_rank = Some(i + 1);
            b.context_score = Some(r.score);
        }
    }
    for b in by_key.values_mut() {
        b.fused = match mode {
            Mode::Keyword => b.keyword_score.unwrap_or(0.0),
            Mode::Semantic => b.semantic_score.unwrap_or(0.0),
            Mode::Hybrid => {
                let part = |rank: Option<usize>, weight: f32| rank.map_or(0.0, |r| weight / (fusion.rrf_k + r as f32));
                part(b.keyword_rank, fusion.keyword_weight)
                    + part(b.semantic_rank, fusion.semantic_weight)
                    + part(b.context_rank, fusion.context_weight)
            }
        };
    }
    let mut out: Vec<(RecordKey, ScoreBreakdown)> = by_key.into_iter().collect();
    // Ties broken by key for a stable order across pages.
    out.sort_by(|a, b| b.1.fused.total_cmp(&a.1.fused).then(a.0.cmp(&b.0)));
    out
}

fn leading_snippet(record: &Record) -> Snippet {
    let body = record.body.as_deref().unwrap_or_default();
    let mut end = body.len().min(240);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    Snippet { text: body[..end].to_string(), highlights: Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranked(keys: &[u64]) -> Vec<Ranked> {
        keys.iter().enumerate().map(|(i, k)| Ranked { key: *k, score: 10.0 - i as f32 }).collect()
    }

    #[test]
    fn rrf_rewards_agreement_and_respects_weights() {
        let fused = fuse(&ranked(&[1, 2, 3]), &ranked(&[3, 4, 1]), &[], Mode::Hybrid, &Fusion::default());
        let order: Vec<u64> = fused.iter().map(|(k, _)| *k).collect();
        assert_eq!(&order[..2], &[1, 3], "items in both lists lead");
        let (_, b) = &fused[0];
        assert_eq!((b.keyword_rank, b.semantic_rank), (Some(1), Some(3)));
        assert!((b.fused - (1.0 / 61.0 + 1.0 / 63.0)).abs() < 1e-6);

        let semantic_only = Fusion { keyword_weight: 0.0, ..Fusion::default() };
        let fused = fuse(&ranked(&[1, 2, 3]), &ranked(&[3, 4, 1]), &[], Mode::Hybrid, &semantic_only);
        assert_eq!(fused.iter().take(3).map(|(k, _)| *k).collect::<Vec<_>>(), vec![3, 4, 1]);
    }

    #[test]
    fn windows_overlap_within_one_meeting() {
        let w = |meeting: &str, first, last| Window { meeting: meeting.into(), first, last };
        assert!(w("a", 0, 3).overlaps(&w("a", 2, 5)));
        assert!(w("a", 2, 5).overlaps(&w("a", 0, 3)));
        assert!(!w("a", 0, 3).overlaps(&w("a", 4, 7)));
        assert!(!w("a", 0, 3).overlaps(&w("b", 2, 5)));
    }

    #[test]
    fn single_modes_keep_raw_scores() {
        let fused = fuse(&ranked(&[7, 8]), &[], &[], Mode::Keyword, &Fusion::default());
        assert_eq!(fused[0].0, 7);
        assert_eq!(fused[0].1.fused, 10.0);
    }
}
