//! Searching memories: the hybrid engine, then recency and tier weighting, filters and threshold,
//! and the relations of the graph around what was found.
//!
//! Each candidate's **relevance** (0..1) is, in `hybrid` mode, its reciprocal-rank-fusion score
//! over the keyword and semantic lists divided by the best possible one (1 = first in both; first
//! in one list only ≈ 0.5); in `keyword` mode the same over the keyword list alone, and in
//! `semantic` mode its cosine similarity to the query (also reported as `similarity` in every mode). The **score** is the
//! relevance times the tier's weight (`working` 1.0, `factual` 1.0, `episodic` 0.95, `semantic`
//! 0.9) times a recency factor that decays from 1 to `1 - memory.recency_weight` with a half-life
//! of `memory.recency_half_life_days` since the memory's event time (or creation), times the
//! factors of the query's **cues** — what a question says beyond its words, each lowering the
//! memories that do not fit it, and each applied only when it tells the candidates apart:
//! - it names some of the people who speak in the candidates (a speaker's name, or the first word
//!   of a name of several words): the turns of the other speakers are multiplied by
//!   `1 - memory.speaker_weight` (memories without a speaker are left alone); in `hybrid` and
//!   `semantic` mode the query is searched without their names (a keyword search tells whom it
//!   names): the cue stands in for them, and searched for, a name favours the turns that address
//!   its bearer ("Thanks, Ann!") and makes all of theirs match alike;
//! - it names a calendar period ("on 4 March, 2021", "in July 2020", "in June", "in 2019") that
//!   some candidates' event times fall in, give or take a week (people talk about a day a few
//!   days later): the others are multiplied by `1 - memory.date_weight`;
//! - it asks when ("when", "what year", "how long ago"...): memories that place nothing in time
//!   (no time word, month, weekday or year) are multiplied by `1 - memory.time_weight`;
//! - it is a question (it ends with "?" or opens with a question word): memories that end with a
//!   question themselves are multiplied by `1 - memory.question_weight` (a turn that asks seldom
//!   holds the answer).
//!
//! A turn of a run first gains `neighbour_weight` of its best neighbouring turn's relevance.
//! Results are ordered by score; `threshold` drops those below it. With a reranker configured
//! (`[rerank]`, [`crate::rerank`]), the best `rerank.candidates` of them are then reordered by it
//! (it reads `"Speaker: text"`), each with its `rerank_score`.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::Serialize;

use super::model::UNKNOWN_TYPE;
use super::{Filter, MEMORY_KIND, Memories, Memory, Relation, Tier, entity_id};
use crate::config::MemoryConfig;
use crate::error::{Error, Result};
use crate::search::{Fusion, Mode, ScoreBreakdown, SearchRequest};
use crate::store::TenantId;
use crate::store::graph::Direction;
use crate::store::records::RecordFilter;
use crate::store::vectors::cosine;

pub const MAX_TOP_K: usize = 1000;

#[derive(Clone, Debug)]
pub struct SearchOptions {
    pub top_k: usize,
    pub threshold: Option<f32>,
    pub mode: Mode,
    pub show_expired: bool,
    /// Read the relations around the results from the graph store.
    pub relations: bool,
    pub fusion: Fusion,
    /// Share of the best neighbouring turn's relevance a turn gains (0 turns it off).
    pub neighbour_weight: f32,
    /// Share of the relevance of the best candidate naming it that a memory mentioning the same
    /// name gains (the second hop; 0 turns it off).
    pub hop_weight: f32,
    /// Whether the best results are reordered by the reranker (`[rerank]`): `None` leaves it to
    /// `rerank.by_default`. Without a reranker configured, nothing is reranked.
    pub rerank: Option<bool>,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            top_k: 10,
            threshold: None,
            mode: Mode::Hybrid,
            show_expired: false,
            relations: true,
            fusion: Fusion::default(),
            neighbour_weight: 0.0,
            hop_weight: 0.0,
            rerank: None,
        }
    }
}

impl SearchOptions {
    /// The defaults `config` sets (top 10, hybrid, relations read).
    pub fn configured(config: &MemoryConfig) -> SearchOptions {
        SearchOptions {
            fusion: Fusion::for_memories(config),
            neighbour_weight: config.neighbour_weight.clamp(0.0, 1.0),
            hop_weight: config.hop_weight.clamp(0.0, 1.0),
            ..SearchOptions::default()
        }
    }

    /// Refuses weights outside 0..1.
    pub fn check(&self) -> Result<()> {
        for (name, value) in [("neighbour_weight", self.neighbour_weight), ("hop_weight", self.hop_weight)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(Error::invalid(format!("{name} must be between 0 and 1")));
            }
        }
        Ok(())
    }
}

/// A candidate: the memory, its relevance, its similarity to the query, how it ranked.
type Candidate = (Memory, f32, f32, ScoreBreakdown);

/// How many of the best candidates lend their names to the second hop.
const HOP_SEEDS: usize = 5;
/// At most this many names are followed, each to at most [`HOP_HITS`] memories.
const HOP_NAMES: usize = 3;
const HOP_HITS: usize = 20;

/// The run, or the thread Nexus found for memories added without one.
fn run_of(m: &Memory) -> Option<String> {
    m.run_id.clone().or_else(|| m.thread.clone())
}

/// A hit as a memory the search may return (it passes `filter`, and is not expired unless
/// asked for), with its similarity to the query.
fn admit(
    hit: &crate::search::SearchHit,
    filter: &Filter,
    options: &SearchOptions,
    now: DateTime<Utc>,
    query_vector: &[f32],
) -> Option<(Memory, f32)> {
    let memory = Memory::from_record(&hit.record);
    if !filter.matches(&memory) || (!options.show_expired && memory.is_expired(now)) {
        return None;
    }
    Some((memory, hit.record.vector.as_deref().map_or(0.0, |v| cosine(v, query_vector))))
}

/// Scores are compared to 1e-5: below that, differences are rounding noise (recency moves by less
/// than f32 resolves between memories added moments apart, and differently at each instant a
/// search runs).
fn rank(score: f32) -> i64 {
    (f64::from(score) * 1e5).round() as i64
}

/// A turn of a run (or thread) gains `weight` times the relevance of its best neighbouring turn
/// among the candidates (the one before or after it): an answer is often the reply to what matched.
fn spread_to_neighbours(scored: &mut [Candidate], weight: f32) {
    if weight <= 0.0 {
        return;
    }
    let by_turn: HashMap<(String, u64), f32> =
        scored.iter().filter_map(|(m, relevance, ..)| Some(((run_of(m)?, m.turn?), *relevance))).collect();
    for (m, relevance, ..) in scored.iter_mut() {
        let (Some(run), Some(turn)) = (run_of(m), m.turn) else { continue };
        let before = turn.checked_sub(1).and_then(|t| by_turn.get(&(run.clone(), t))).copied().unwrap_or(0.0);
        let after = by_turn.get(&(run, turn + 1)).copied().unwrap_or(0.0);
        // Not capped here: a cap would make a turn lifted by its neighbour equal to the turn
        // that matched. Ranking uses the sum; the score shown is capped at 1.
        *relevance += weight * before.max(after);
    }
}

pub(crate) use crate::graph::extract::MONTHS;
const WEEKDAYS: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
/// Words that make a query ask when something happened.
const WHEN_PHRASES: &[&str] =
    &["when", "what date", "what day", "what year", "what month", "which year", "which month", "how long ago"];
/// Words by which a turn places what it says in time (beside dates, months, weekdays and years).
const TIME_WORDS: &[&str] = &[
    "yesterday",
    "today",
    "tonight",
    "tomorrow",
    "ago",
    "recently",
    "week",
    "weekend",
    "weeks",
    "month",
    "months",
    "year",
    "years",
    "morning",
    "evening",
    "night",
    "since",
    "last",
    "lately",
];
/// A period named in a query also covers the talk about it this long before and after.
const PERIOD_SLACK_DAYS: i64 = 7;

/// A calendar period a query names.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Period {
    /// From the first moment up to (not including) the second.
    Span(DateTime<Utc>, DateTime<Utc>),
    /// A month (1-12) of any year ("in June").
    Month(u32),
}

impl Period {
    fn covers(&self, t: DateTime<Utc>) -> bool {
        let slack = chrono::Duration::days(PERIOD_SLACK_DAYS);
        match *self {
            Period::Span(start, end) => t >= start - slack && t < end + slack,
            Period::Month(m) => [t - slack, t, t + slack].iter().any(|t| t.month() == m),
        }
    }
}

/// Lowercase words of `text` (letters and digits; an apostrophe ends a word: "Ann's" → "ann", "s").
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// The calendar periods `query` names: "13 October, 2023", "October 13, 2023", "2023-10-13",
/// "July 2023", "in June", "in 2022". Month names count when capitalised ("may" is a verb), and
/// not as the first word unless a day or year goes with them.
fn named_periods(query: &str) -> Vec<Period> {
    let raw: Vec<&str> = query.split(|c: char| !c.is_alphanumeric() && c != '-').filter(|w| !w.is_empty()).collect();
    let number = |i: usize, range: std::ops::RangeInclusive<u32>| {
        raw.get(i).and_then(|w| w.parse::<u32>().ok()).filter(|n| range.contains(n))
    };
    let day_span = |y: i32, m: u32, d: u32| {
        let start = NaiveDate::from_ymd_opt(y, m, d)?.and_hms_opt(0, 0, 0)?.and_utc();
        Some(Period::Span(start, start + chrono::Duration::days(1)))
    };
    let month_span = |y: i32, m: u32| {
        let start = NaiveDate::from_ymd_opt(y, m, 1)?;
        let end = if m == 12 { NaiveDate::from_ymd_opt(y + 1, 1, 1)? } else { NaiveDate::from_ymd_opt(y, m + 1, 1)? };
        Some(Period::Span(start.and_hms_opt(0, 0, 0)?.and_utc(), end.and_hms_opt(0, 0, 0)?.and_utc()))
    };
    let mut out = Vec::new();
    let mut used = vec![false; raw.len()];
    for (i, w) in raw.iter().enumerate() {
        if let Ok(day) = NaiveDate::parse_from_str(w, "%Y-%m-%d") {
            out.extend(day_span(day.year(), day.month(), day.day()));
            used[i] = true;
            continue;
        }
        let Some(m) = MONTHS.iter().position(|name| w.eq_ignore_ascii_case(name)) else { continue };
        if !w.starts_with(char::is_uppercase) {
            continue;
        }
        let m = m as u32 + 1;
        used[i] = true;
        // "13 October 2023" or "October 13, 2023", then the year.
        let (day, after) = match (i.checked_sub(1).and_then(|j| number(j, 1..=31)), number(i + 1, 1..=31)) {
            (_, Some(d)) => (Some(d), i + 2),
            (Some(d), None) => (Some(d), i + 1),
            (None, None) => (None, i + 1),
        };
        let year = number(after, 1900..=2200).map(|y| y as i32);
        // A query's first word is capitalised anyway ("May I..."): alone, it is no month.
        if i == 0 && day.is_none() && year.is_none() {
            continue;
        }
        if day.is_some() || year.is_some() {
            let last = after.min(raw.len().saturating_sub(1));
            used[i.saturating_sub(1)..=last].iter_mut().for_each(|u| *u = true);
        }
        out.extend(match (day, year) {
            (Some(d), Some(y)) => day_span(y, m, d),
            (None, Some(y)) => month_span(y, m),
            _ => Some(Period::Month(m)),
        });
    }
    for (i, _) in raw.iter().enumerate() {
        if let Some(y) = number(i, 1900..=2200).filter(|_| !used[i] && raw[i].len() == 4) {
            let start =
                |y: i32| NaiveDate::from_ymd_opt(y, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc());
            if let (Some(a), Some(b)) = (start(y as i32), start(y as i32 + 1)) {
                out.push(Period::Span(a, b));
            }
        }
    }
    out
}

/// Whether `query` asks when something happened.
fn asks_when(query: &str) -> bool {
    let text = format!(" {} ", words(query).join(" "));
    WHEN_PHRASES.iter().any(|p| text.contains(&format!(" {p} ")))
}

/// Words a question opens with.
const QUESTION_WORDS: &[&str] = &[
    "what", "when", "where", "who", "whom", "whose", "which", "why", "how", "did", "do", "does", "is", "are", "was",
    "were", "has", "have", "had", "can", "could", "would", "will", "should",
];

/// Whether `query` is a question: it ends with "?" or opens with a question word.
fn is_question(query: &str) -> bool {
    query.trim_end().ends_with('?') || words(query).first().is_some_and(|w| QUESTION_WORDS.contains(&w.as_str()))
}

/// Whether `text` places what it says in time: a time word, a month or weekday, a year.
fn states_time(text: &str) -> bool {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).any(|w| {
        let lower = w.to_lowercase();
        TIME_WORDS.contains(&lower.as_str())
            || WEEKDAYS.contains(&lower.as_str())
            || (w.starts_with(char::is_uppercase) && MONTHS.contains(&lower.as_str()))
            || (w.len() == 4 && (w.starts_with("19") || w.starts_with("20")) && w.chars().all(|c| c.is_ascii_digit()))
    })
}

/// Whether the words of `name` appear in `query_words` in a row, or, for a name of several
/// words, its first word does ("Ann" for "Ann Lee").
fn names(query_words: &[String], name: &str) -> bool {
    let name = words(name);
    let Some(first) = name.first() else { return false };
    query_words.windows(name.len()).any(|w| w == name.as_slice())
        || (name.len() > 1 && first.chars().count() >= 3 && query_words.contains(first))
}

/// What a query says about the turns it is after beyond its words — who said them, when, and
/// whether it asks for a time — as factors on the candidates' scores (see the module
/// documentation). Each cue applies only when it tells candidates apart.
#[derive(Debug, Default)]
struct Cues {
    /// Lowercased speakers of the candidates whom the query names.
    speakers: HashSet<String>,
    periods: Vec<Period>,
    asks_when: bool,
    /// Whether the query is a question.
    asks: bool,
    speaker_factor: f32,
    date_factor: f32,
    time_factor: f32,
    question_factor: f32,
}

/// The lowercased `speakers` whom `query` names, unless it names all of them: naming everyone
/// who speaks tells no one apart.
fn named_speakers<'a>(query: &str, speakers: impl IntoIterator<Item = &'a str>) -> HashSet<String> {
    let query_words = words(query);
    let speakers: HashSet<String> = speakers.into_iter().map(str::to_lowercase).collect();
    let named: HashSet<String> = speakers.iter().filter(|s| names(&query_words, s)).cloned().collect();
    if named.len() < speakers.len() { named } else { HashSet::new() }
}

/// `query` without the words that name `speakers` (lowercased) as [`names`] finds them, nor the
/// "'s" after them: "What books has Ann's sister read?" → "What books has sister read?".
/// `None` when it names none of them, or nothing else.
fn without_names(query: &str, speakers: &HashSet<String>) -> Option<String> {
    // The query's words, split as `words` splits them, as byte ranges.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut start = None;
    for (i, c) in query.char_indices().chain(std::iter::once((query.len(), ' '))) {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                runs.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    let lower: Vec<String> = runs.iter().map(|&(a, b)| query[a..b].to_lowercase()).collect();
    let mut drop = vec![false; runs.len()];
    for speaker in speakers {
        let name = words(speaker);
        let Some(first) = name.first() else { continue };
        for i in 0..lower.len() {
            if lower[i..].starts_with(&name) {
                drop[i..i + name.len()].iter_mut().for_each(|d| *d = true);
            } else if name.len() > 1 && first.chars().count() >= 3 && lower[i] == *first {
                drop[i] = true;
            }
        }
    }
    if !drop.contains(&true) {
        return None;
    }
    let apostrophe = |text: &str| matches!(text, "'" | "\u{2019}");
    for i in 1..runs.len() {
        if drop[i - 1] && !drop[i] && lower[i] == "s" && apostrophe(&query[runs[i - 1].1..runs[i].0]) {
            drop[i] = true;
        }
    }
    let mut out = String::with_capacity(query.len());
    let mut at = 0;
    for (&(a, b), _) in runs.iter().zip(&drop).filter(|(_, dropped)| **dropped) {
        out.push_str(&query[at..a]);
        out.push(' ');
        at = b;
    }
    out.push_str(&query[at..]);
    // The apostrophe of a possessive that went goes too.
    let out = out.split_whitespace().filter(|w| !apostrophe(w)).collect::<Vec<_>>().join(" ");
    (!words(&out).is_empty()).then_some(out)
}

impl Cues {
    fn read(query: &str, candidates: &[Candidate], config: &MemoryConfig) -> Cues {
        let named = named_speakers(query, candidates.iter().filter_map(|(m, ..)| m.speaker()));
        let mut periods = named_periods(query);
        if !candidates.iter().any(|(m, ..)| periods.iter().any(|p| p.covers(m.moment()))) {
            periods.clear();
        }
        Cues {
            speakers: named,
            periods,
            asks_when: asks_when(query),
            asks: is_question(query),
            speaker_factor: 1.0 - config.speaker_weight.clamp(0.0, 1.0),
            date_factor: 1.0 - config.date_weight.clamp(0.0, 1.0),
            time_factor: 1.0 - config.time_weight.clamp(0.0, 1.0),
            question_factor: 1.0 - config.question_weight.clamp(0.0, 1.0),
        }
    }

    /// The factor on a candidate's score: 1 when it fits every cue.
    fn factor(&self, m: &Memory) -> f32 {
        let mut f = 1.0;
        if !self.speakers.is_empty() && m.speaker().is_some_and(|s| !self.speakers.contains(&s.to_lowercase())) {
            f *= self.speaker_factor;
        }
        if !self.periods.is_empty() && !self.periods.iter().any(|p| p.covers(m.moment())) {
            f *= self.date_factor;
        }
        if self.asks_when && !states_time(&m.memory) {
            f *= self.time_factor;
        }
        if self.asks && m.memory.trim_end().ends_with('?') {
            f *= self.question_factor;
        }
        f
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ScoredMemory {
    #[serde(flatten)]
    pub memory: Memory,
    /// 0..1, higher is better (see the module documentation).
    pub score: f32,
    /// Cosine similarity of the memory and the query (as searched: in hybrid and semantic mode
    /// without the names of the speakers it names, see the module documentation).
    pub similarity: f32,
    pub breakdown: ScoreBreakdown,
    /// The reranker's score, when it reordered this result; results are then in its order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank_score: Option<f32>,
}

#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct SearchOutcome {
    pub results: Vec<ScoredMemory>,
    pub relations: Vec<Relation>,
    /// Present when the search asked for the reranker: `false` when it failed (or did not answer
    /// within `rerank.timeout_ms`) and the results keep their own order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reranked: Option<bool>,
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
        let fusion = options.fusion;
        // Over-fetch: filters the stores cannot apply, and expiry, remove some afterwards.
        let candidates = (options.top_k * 10).clamp(100, MAX_TOP_K);
        let request = SearchRequest {
            tenant: tenant.clone(),
            query: query.to_string(),
            mode: options.mode,
            filter: store_filter,
            top_k: candidates,
            offset: 0,
            fusion,
            snippets: false, // a memory is shown whole
        };
        // A query that names some of the people who speak is searched without their names: the
        // speaker cue prefers their turns, and in the query's vector a name would favour the
        // turns that address them ("Thanks, Ann!") over those in which they speak. A keyword
        // search for the query tells whom it names (a memory's record title is its speaker), at
        // the cost of no embedding. Keyword mode keeps the names: there they match the
        // speaker's turns, and on LoCoMo it does better with them.
        let mut searched = None;
        if self.config.speaker_weight > 0.0 && options.mode != Mode::Keyword {
            let probe = SearchRequest { mode: Mode::Keyword, ..request.clone() };
            let (hits, _) = self.engine.search_with_vector(&probe).await?;
            let named = named_speakers(query, hits.iter().filter_map(|h| h.record.title.as_deref()));
            searched = without_names(query, &named);
        }
        let (hits, query_vector) = match searched {
            Some(rest) => self.engine.search_with_vector(&SearchRequest { query: rest, ..request.clone() }).await?,
            None => self.engine.search_with_vector(&request).await?,
        };
        // Keyword mode computes no vector; the similarity every hit reports still needs one.
        let query_vector = match query_vector {
            Some(v) => v,
            None => self.embed.embed_one(query).await?,
        };
        let now = Utc::now();
        let best = (fusion.keyword_weight + fusion.semantic_weight) / (fusion.rrf_k + 1.0);
        let mut scored: Vec<Candidate> = hits
            .into_iter()
            .filter_map(|hit| {
                let (memory, similarity) = admit(&hit, filter, options, now, &query_vector)?;
                let b = &hit.breakdown;
                let rank_part = |rank: Option<usize>, w: f32| rank.map_or(0.0, |r| w / (fusion.rrf_k + r as f32));
                let relevance = match options.mode {
                    Mode::Keyword => rank_part(b.keyword_rank, 1.0) / (1.0 / (fusion.rrf_k + 1.0)),
                    Mode::Semantic => similarity.max(0.0),
                    Mode::Hybrid => {
                        let fused = rank_part(b.keyword_rank, fusion.keyword_weight)
                            + rank_part(b.semantic_rank, fusion.semantic_weight);
                        // Both weights at 0 rank nothing above anything else.
                        if best > 0.0 { fused / best } else { 0.0 }
                    }
                };
                Some((memory, relevance, similarity, hit.breakdown))
            })
            .collect();
        spread_to_neighbours(&mut scored, options.neighbour_weight);
        self.hop_through_names(&request, filter, options, &query_vector, &mut scored).await?;
        let cues = Cues::read(query, &scored, &self.config);
        // (the result, its score before the cap at 1 that ranks it)
        let mut ranked: Vec<(ScoredMemory, f32)> = scored
            .into_iter()
            .map(|(memory, relevance, similarity, breakdown)| {
                let score =
                    relevance * tier_weight(memory.tier) * self.recency(memory.moment(), now) * cues.factor(&memory);
                let shown =
                    ScoredMemory { memory, score: score.clamp(0.0, 1.0), similarity, breakdown, rerank_score: None };
                (shown, score)
            })
            .filter(|(r, _)| options.threshold.is_none_or(|t| r.score >= t))
            .collect();
        // Equal scores (see `rank`) go newest first, then by id.
        ranked.sort_by(|(a, a_raw), (b, b_raw)| {
            rank(*b_raw)
                .cmp(&rank(*a_raw))
                .then_with(|| b.memory.moment().cmp(&a.memory.moment()))
                .then_with(|| a.memory.id.cmp(&b.memory.id))
        });
        let mut results: Vec<ScoredMemory> = ranked.into_iter().map(|(r, _)| r).collect();
        let mut reranked = None;
        if let Some(reranker) = self.engine.reranker_for(options.rerank) {
            let text = |r: &ScoredMemory| match r.memory.speaker() {
                Some(speaker) => format!("{speaker}: {}", r.memory.memory),
                None => r.memory.memory.clone(),
            };
            reranked = Some(reranker.reorder(query, &mut results, text, |r, s| r.rerank_score = Some(s)).await);
        }
        results.truncate(options.top_k);
        let relations =
            if options.relations { self.relations_around(tenant, query, &results).await? } else { Vec::new() };
        Ok(SearchOutcome { results, relations, reranked })
    }

    /// The second hop of a question that needs two: the names the best candidates mention
    /// beyond the query's own (places, organisations, pets, people who do not speak) lead to the
    /// other memories that mention them, through the text index. Each such memory gains
    /// `hop_weight` times the relevance of the best candidate naming it; one that was no
    /// candidate joins with that alone. The speakers' names are left out: they are in every turn.
    async fn hop_through_names(
        &self,
        request: &SearchRequest,
        filter: &Filter,
        options: &SearchOptions,
        query_vector: &[f32],
        scored: &mut Vec<Candidate>,
    ) -> Result<()> {
        let weight = options.hop_weight;
        if weight <= 0.0 || scored.is_empty() {
            return Ok(());
        }
        let query_words = words(&request.query);
        let speakers: Vec<String> = scored.iter().filter_map(|(m, ..)| m.speaker()).map(str::to_lowercase).collect();
        let is_speaker = |name: &str| {
            let name = name.to_lowercase();
            speakers.iter().any(|s| *s == name || s.split_whitespace().next() == Some(name.as_str()))
        };
        let mut order: Vec<usize> = (0..scored.len()).collect();
        order.sort_by(|&a, &b| scored[b].1.total_cmp(&scored[a].1));
        order.truncate(HOP_SEEDS);
        let mut bridges: Vec<(String, f32)> = Vec::new();
        for &i in &order {
            let (m, relevance, ..) = &scored[i];
            for name in super::extract::spot_entities(&m.memory) {
                if name.chars().count() < 3 || is_speaker(&name) || names(&query_words, &name) {
                    continue;
                }
                match bridges.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                    Some(known) => known.1 = known.1.max(*relevance),
                    None => bridges.push((name, *relevance)),
                }
            }
        }
        bridges.sort_by(|a, b| b.1.total_cmp(&a.1));
        bridges.truncate(HOP_NAMES);
        let now = Utc::now();
        let mut index: HashMap<String, usize> =
            scored.iter().enumerate().map(|(i, (m, ..))| (m.id.clone(), i)).collect();
        let mut gains: HashMap<usize, f32> = HashMap::new();
        for (name, relevance) in bridges {
            let hop = SearchRequest {
                query: format!("\"{}\"", name.replace('"', " ")),
                mode: Mode::Keyword,
                top_k: HOP_HITS,
                ..request.clone()
            };
            let (hits, _) = self.engine.search_with_vector(&hop).await?;
            for hit in hits {
                let i = match index.get(&hit.record.id) {
                    Some(&i) => i,
                    None => {
                        let Some((memory, similarity)) = admit(&hit, filter, options, now, query_vector) else {
                            continue;
                        };
                        index.insert(memory.id.clone(), scored.len());
                        scored.push((memory, 0.0, similarity, ScoreBreakdown::default()));
                        scored.len() - 1
                    }
                };
                if !order.contains(&i) {
                    let gain = gains.entry(i).or_default();
                    *gain = gain.max(weight * relevance);
                }
            }
        }
        for (i, gain) in gains {
            scored[i].1 += gain;
        }
        Ok(())
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

    /// The graph's relations touching the entities of the results and those named in the query,
    /// best first. A relation scores as the best result that names one of its ends; an end the
    /// query names scores as the best result.
    async fn relations_around(
        &self,
        tenant: &TenantId,
        query: &str,
        results: &[ScoredMemory],
    ) -> Result<Vec<Relation>> {
        let best = results.iter().map(|r| r.score).fold(0.0f32, f32::max);
        let query_names = super::extract::spot_entities(query);
        let mut entities: Vec<(String, String, f32)> = Vec::new(); // (owner, name, score)
        for r in results {
            let owner = r.memory.scope().owner();
            let named = r.memory.entities.iter().map(|n| (n, r.score));
            for (name, score) in named.chain(query_names.iter().map(|n| (n, best))) {
                match entities.iter_mut().find(|(o, n, _)| *o == owner && n.eq_ignore_ascii_case(name)) {
                    Some(known) => known.2 = known.2.max(score),
                    None => entities.push((owner.clone(), name.clone(), score)),
                }
            }
        }
        entities.sort_by(|a, b| b.2.total_cmp(&a.2));
        let mut relations = self.relations_of_entities(tenant, &entities).await?;
        relations.sort_by(|a, b| b.score.unwrap_or(0.0).total_cmp(&a.score.unwrap_or(0.0)));
        Ok(relations)
    }

    /// The graph's relations touching the entities of `memories`: the relations of their scope
    /// (Mem0's `get_all` with `enable_graph`).
    pub async fn relations_of(&self, tenant: &TenantId, memories: &[Memory]) -> Result<Vec<Relation>> {
        let mut entities: Vec<(String, String, f32)> = Vec::new();
        for m in memories {
            let owner = m.scope().owner();
            for name in &m.entities {
                if !entities.iter().any(|(o, n, _)| *o == owner && n.eq_ignore_ascii_case(name)) {
                    entities.push((owner.clone(), name.clone(), 0.0));
                }
            }
        }
        let mut relations = self.relations_of_entities(tenant, &entities).await?;
        for r in &mut relations {
            r.score = None;
        }
        Ok(relations)
    }

    /// The relations touching the first 50 of `entities` (owner, name, score), at most 50, each
    /// scored by the best of its ends.
    async fn relations_of_entities(
        &self,
        tenant: &TenantId,
        entities: &[(String, String, f32)],
    ) -> Result<Vec<Relation>> {
        const MOST: usize = 50;
        let mut names: HashMap<String, (String, f32)> = HashMap::new();
        for (owner, name, score) in entities.iter().take(MOST) {
            names.insert(entity_id(owner, name), (name.clone(), *score));
        }
        let mut seen = HashSet::new();
        let mut out: Vec<Relation> = Vec::new();
        for (owner, name, _) in entities.iter().take(MOST) {
            for n in self.stores.graph.neighbours(tenant, &entity_id(owner, name), Direction::Both, None).await? {
                let props = &n.edge.properties;
                let text = |k: &str| props.get(k).and_then(|v| v.as_str()).map(str::to_string);
                let end = |key: &str, id: &str| {
                    text(key).or_else(|| names.get(id).map(|(n, _)| n.clone())).unwrap_or_else(|| id.to_string())
                };
                let score = [&n.edge.source, &n.edge.target]
                    .iter()
                    .filter_map(|id| names.get(id.as_str()).map(|(_, s)| *s))
                    .fold(0.0f32, f32::max);
                let relation = Relation {
                    source: end("source", &n.edge.source),
                    source_type: text("source_type").unwrap_or_else(|| UNKNOWN_TYPE.to_string()),
                    relationship: n.edge.label.clone(),
                    target: end("target", &n.edge.target),
                    target_type: text("target_type").unwrap_or_else(|| UNKNOWN_TYPE.to_string()),
                    score: Some(score),
                };
                if seen.insert(relation.key()) {
                    out.push(relation);
                }
                if out.len() >= MOST {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(y, m, d).unwrap().and_hms_opt(12, 0, 0).unwrap().and_utc()
    }

    #[test]
    fn periods_named_in_a_query() {
        let one = |q: &str| named_periods(q);
        let covers = |q: &str, t: DateTime<Utc>| one(q).iter().any(|p| p.covers(t));
        assert!(covers("What did Ann bake on 4 March, 2021?", day(2021, 3, 4)));
        assert!(covers("What did Ann bake on March 4, 2021?", day(2021, 3, 9)), "a week's slack");
        assert!(!covers("What did Ann bake on March 4, 2021?", day(2021, 3, 20)));
        assert!(covers("Where did Bo travel in July 2020?", day(2020, 7, 30)));
        assert!(!covers("Where did Bo travel in July 2020?", day(2021, 7, 15)));
        assert!(covers("Who visited in June?", day(1999, 6, 2)));
        assert!(covers("What changed in 2019?", day(2019, 11, 2)));
        assert!(covers("notes of 2022-01-05", day(2022, 1, 6)));
        assert!(one("May I ask what you may like?").is_empty(), "the verb is not the month");
        assert!(one("How many books did Ann read?").is_empty());
        assert_eq!(one("What did Ann buy in May 2023?").len(), 1, "the year belongs to the month");
    }

    #[test]
    fn time_questions_and_turns_that_state_a_time() {
        assert!(asks_when("When did Ann move to Oslo?"));
        assert!(asks_when("In what year did Bo start the band?"));
        assert!(!asks_when("What does Ann like to cook?"));
        assert!(states_time("We went hiking last weekend"));
        assert!(states_time("I started in 2019"));
        assert!(states_time("It was on Tuesday"));
        assert!(!states_time("I love pottery, it calms me"));
        assert!(!states_time("you may like it"));
    }

    #[test]
    fn questions_lower_turns_that_only_ask() {
        assert!(is_question("What does Ann like to cook?"));
        assert!(is_question("did Bo move to Oslo"));
        assert!(is_question("Ann's favourite book?"));
        assert!(!is_question("Ann's favourite book"));
        assert!(!is_question("pottery class schedule"));
        let memory = |text: &str| {
            Memory::from_record(&crate::store::records::Record {
                key: 1,
                tenant: TenantId::default_tenant(),
                id: "m".into(),
                kind: MEMORY_KIND.into(),
                title: None,
                body: Some(text.into()),
                tags: Vec::new(),
                metadata: serde_json::json!({}),
                vector: None,
                graph: None,
                version: 1,
                created_at: Utc::now(),
                updated_at: Utc::now(),
                embed: true,
            })
        };
        let defaults: toml::Value = toml::from_str(crate::config::DEFAULT_CONFIG).unwrap();
        let config = MemoryConfig { question_weight: 0.2, ..defaults["memory"].clone().try_into().unwrap() };
        let cues = Cues::read("What does Ann like to cook?", &[], &config);
        assert!((cues.factor(&memory("Do you like to cook?")) - 0.8).abs() < 1e-6);
        assert_eq!(cues.factor(&memory("I like to cook pasta. Do you?  ")), 0.8, "it ends with a question");
        assert_eq!(cues.factor(&memory("I like to cook pasta.")), 1.0);
        let statement = Cues::read("recipes Ann likes", &[], &config);
        assert_eq!(statement.factor(&memory("Do you like to cook?")), 1.0, "a query that asks nothing");
    }

    #[test]
    fn named_speakers_leave_the_query() {
        let named = |query: &str, speakers: &[&str]| named_speakers(query, speakers.iter().copied());
        let ann = named("What books has Ann read?", &["Ann", "Bo"]);
        assert_eq!(ann, HashSet::from(["ann".to_string()]));
        assert!(named("Did Ann and Bo both go?", &["Ann", "Bo"]).is_empty(), "naming everyone tells no one apart");
        assert_eq!(without_names("What books has Ann read?", &ann).as_deref(), Some("What books has read?"));
        assert_eq!(
            without_names("What did Ann's sister (and Ann\u{2019}s) say?", &ann).as_deref(),
            Some("What did sister (and ) say?")
        );
        assert_eq!(without_names("Where is ANN?", &ann).as_deref(), Some("Where is ?"));
        assert_eq!(without_names("Where is Anna?", &ann), None, "a longer word is another name");
        assert_eq!(without_names("Ann?", &ann), None, "nothing would be left");
        let lee = HashSet::from(["bo lee".to_string()]);
        assert_eq!(without_names("Did Bo Lee or Bo call?", &lee).as_deref(), Some("Did or Bo call?"));
        let marta = HashSet::from(["marta ruiz".to_string()]);
        assert_eq!(without_names("Where does Marta work?", &marta).as_deref(), Some("Where does work?"));
    }

    #[test]
    fn speakers_named_in_a_query() {
        let q = words("What did Ann's sister give Bo Lee?");
        assert!(names(&q, "Ann"));
        assert!(names(&q, "bo lee"));
        assert!(names(&words("Where does Marta Ruiz work?"), "Marta"));
        assert!(names(&words("Where does Marta work?"), "Marta Ruiz"));
        assert!(!names(&q, "Anna"));
    }
}
