//! Searching memories: the hybrid engine, then recency and tier weighting, filters and threshold,
//! and the relations of the graph around what was found.
//!
//! Each candidate's **relevance** (0..1) blends its rank in the fused keyword + semantic lists
//! (normalised reciprocal rank: 1 for first in both) with its cosine similarity to the query
//! (`hybrid`); `keyword` and `semantic` modes use their own list alone. The **score** is the
//! relevance times the tier's weight (`working` 1.0, `factual` 1.0, `episodic` 0.95, `semantic`
//! 0.9) times a recency factor that decays from 1 to `1 - memory.recency_weight` with a half-life
//! of `memory.recency_half_life_days` since the memory's event time (or creation). Results are
//! ordered by score; `threshold` drops those below it.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::add::cosine;
use super::{Filter, MEMORY_KIND, Memories, Memory, Relation, Tier, entity_id};
use crate::error::{Error, Result};
use crate::search::{Fusion, Mode, ScoreBreakdown, SearchRequest};
use crate::store::TenantId;
use crate::store::graph::Direction;
use crate::store::records::RecordFilter;

pub const MAX_TOP_K: usize = 1000;

#[derive(Clone, Debug)]
pub struct SearchOptions {
    pub top_k: usize,
    pub threshold: Option<f32>,
    pub mode: Mode,
    pub show_expired: bool,
    /// Read the relations around the results from the graph store.
    pub relations: bool,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions { top_k: 10, threshold: None, mode: Mode::Hybrid, show_expired: false, relations: true }
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ScoredMemory {
    #[serde(flatten)]
    pub memory: Memory,
    /// 0..1, higher is better (see the module documentation).
    pub score: f32,
    /// Cosine similarity of the memory and the query.
    pub similarity: f32,
    pub breakdown: ScoreBreakdown,
}

#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct SearchOutcome {
    pub results: Vec<ScoredMemory>,
    pub relations: Vec<Relation>,
}

pub fn tier_weight(tier: Tier) -> f32 {
    match tier {
        Tier::Working | Tier::Factual => 1.0,
        Tier::Episodic => 0.95,
        Tier::Semantic => 0.9,
    }
}

impl Memories {
    pub async fn search(
        &self,
        tenant: &TenantId,
        query: &str,
        filter: &Filter,
        options: &SearchOptions,
    ) -> Result<SearchOutcome> {
        if query.trim().is_empty() {
            return Err(Error::invalid("query must not be empty"));
        }
        if options.top_k == 0 || options.top_k > MAX_TOP_K {
            return Err(Error::invalid(format!("top_k must be between 1 and {MAX_TOP_K}")));
        }
        let mut store_filter = RecordFilter::kinds(&[MEMORY_KIND]);
        filter.pushdown(&mut store_filter);
        let fusion = Fusion::default();
        // Over-fetch: filters the stores cannot apply, and expiry, remove some afterwards.
        let candidates = (options.top_k * 4).clamp(50, MAX_TOP_K);
        let request = SearchRequest {
            tenant: tenant.clone(),
            query: query.to_string(),
            mode: options.mode,
            filter: store_filter,
            top_k: candidates,
            offset: 0,
            fusion,
        };
        let (hits, query_vector) = tokio::join!(self.engine.search(&request), self.embed.embed_one(query));
        let (hits, query_vector) = (hits?, query_vector?);
        let now = Utc::now();
        let best = (fusion.keyword_weight + fusion.semantic_weight) / (fusion.rrf_k + 1.0);
        let mut results: Vec<ScoredMemory> = hits
            .into_iter()
            .filter_map(|hit| {
                let memory = Memory::from_record(&hit.record);
                if !filter.matches(&memory) || (!options.show_expired && memory.is_expired(now)) {
                    return None;
                }
                let similarity = hit.record.vector.as_deref().map_or(0.0, |v| cosine(v, &query_vector));
                let b = &hit.breakdown;
                let rank_part = |rank: Option<usize>, w: f32| rank.map_or(0.0, |r| w / (fusion.rrf_k + r as f32));
                let relevance = match options.mode {
                    Mode::Keyword => rank_part(b.keyword_rank, 1.0) / (1.0 / (fusion.rrf_k + 1.0)),
                    Mode::Semantic => similarity.max(0.0),
                    Mode::Hybrid => {
                        let fused = rank_part(b.keyword_rank, fusion.keyword_weight)
                            + rank_part(b.semantic_rank, fusion.semantic_weight);
                        0.5 * (fused / best) + 0.5 * similarity.max(0.0)
                    }
                };
                let score = relevance * tier_weight(memory.tier) * self.recency(memory.moment(), now);
                Some(ScoredMemory { memory, score: score.clamp(0.0, 1.0), similarity, breakdown: hit.breakdown })
            })
            .filter(|r| options.threshold.is_none_or(|t| r.score >= t))
            .collect();
        results.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.memory.id.cmp(&b.memory.id)));
        results.truncate(options.top_k);
        let relations =
            if options.relations { self.relations_around(tenant, query, &results).await? } else { Vec::new() };
        Ok(SearchOutcome { results, relations })
    }

    /// 1 for now, decaying toward `1 - recency_weight` with the configured half-life.
    fn recency(&self, moment: DateTime<Utc>, now: DateTime<Utc>) -> f32 {
        let w = self.config.recency_weight.clamp(0.0, 1.0);
        if w == 0.0 || self.config.recency_half_life_days <= 0.0 {
            return 1.0;
        }
        let age_days = ((now - moment).num_seconds().max(0) as f32) / 86_400.0;
        (1.0 - w) + w * 0.5f32.powf(age_days / self.config.recency_half_life_days)
    }

    /// The graph's relations touching the entities of the results and those named in the query.
    async fn relations_around(
        &self,
        tenant: &TenantId,
        query: &str,
        results: &[ScoredMemory],
    ) -> Result<Vec<Relation>> {
        let mut entities: Vec<(String, String)> = Vec::new(); // (owner, name)
        let query_names = super::extract::spot_entities(query);
        for r in results {
            let owner = r.memory.scope().owner();
            for name in r.memory.entities.iter().chain(query_names.iter()) {
                let pair = (owner.clone(), name.clone());
                if !entities.contains(&pair) {
                    entities.push(pair);
                }
            }
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut names: HashMap<String, String> = HashMap::new();
        for (owner, name) in entities.iter().take(50) {
            names.insert(entity_id(owner, name), name.clone());
        }
        for (owner, name) in entities.iter().take(50) {
            for n in self.stores.graph.neighbours(tenant, &entity_id(owner, name), Direction::Both, None).await? {
                let props = &n.edge.properties;
                let text = |k: &str| props.get(k).and_then(|v| v.as_str()).map(str::to_string);
                let relation = Relation {
                    source: text("source")
                        .or_else(|| names.get(&n.edge.source).cloned())
                        .unwrap_or(n.edge.source.clone()),
                    relationship: n.edge.label.clone(),
                    target: text("target")
                        .or_else(|| names.get(&n.edge.target).cloned())
                        .unwrap_or(n.edge.target.clone()),
                };
                if seen.insert(relation.clone()) {
                    out.push(relation);
                }
                if out.len() >= 50 {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }
}
