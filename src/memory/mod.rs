//! Memory: what agents remember about users, agents and runs, in four tiers.
//!
//! [`Memories`] is the service behind `/api/v1/memories` and the Mem0 compatibility routes:
//! - **add** ([`add`]): messages become memories — verbatim (`infer=false`), by the deterministic
//!   extractor, or by the LLM's two steps — with near-duplicates in the same scope merged, and each
//!   change written together with its history entry and graph links in one write batch;
//! - **search** ([`search`]): the hybrid engine plus recency and tier weighting, with `relations`
//!   read from the graph store;
//! - get, list, update, delete, history, scopes ("entities" in Mem0's words) and feedback here.
//!
//! The record layout is in [`model`]; the filter grammar in [`filter`].

pub mod add;
pub mod extract;
pub mod filter;
pub mod import;
pub mod model;
pub mod search;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::MemoryConfig;
use crate::embed::EmbedService;
use crate::error::{Error, ErrorCode, Result};
use crate::llm::Llm;
use crate::search::SearchEngine;
use crate::store::records::{NewRecord, RecordFilter, Write};
use crate::store::{RecordKey, Stores, TenantId};
use crate::writelog::WriteLog;
pub use filter::Filter;
pub use model::{Event, HistoryEntry, Memory, Message, Relation, Scope, Tier};

pub const MEMORY_KIND: &str = "memory";
pub const HISTORY_KIND: &str = "memory_history";
pub use crate::graph::model::{ENTITY_KIND, RELATION_KIND};
/// User metadata scalars are copied to top-level record metadata under this prefix, as facets.
pub const META_FACET_PREFIX: &str = "m.";
/// The job that runs an asynchronous add (its id is the Mem0 `event_id`).
pub const ADD_JOB: &str = "memory_add";
/// Most memories one list or bulk delete reads.
const MAX_SCAN: usize = 1_000_000;

pub struct Memories {
    stores: Stores,
    writes: Arc<WriteLog>,
    engine: SearchEngine,
    embed: Arc<EmbedService>,
    llm: Option<Arc<dyn Llm>>,
    config: MemoryConfig,
    /// Adds to one scope run one at a time, so that duplicate checks see each other.
    scope_locks: Vec<tokio::sync::Mutex<()>>,
    /// The latest turns of recent runs, embedded as context with the next turn.
    recent_turns: parking_lot::Mutex<lru::LruCache<String, RunState>>,
}

/// A change to a memory's fields; absent fields stay as they are.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct Update {
    pub text: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    pub tier: Option<Tier>,
    pub categories: Option<Vec<String>>,
    /// `YYYY-MM-DD`; an empty string clears it.
    pub expiration_date: Option<String>,
    /// Event time: Unix seconds or RFC 3339.
    #[schema(value_type = Option<Object>)]
    pub timestamp: Option<Value>,
    pub immutable: Option<bool>,
}

/// A list request.
#[derive(Clone, Debug)]
pub struct ListRequest {
    pub filter: Filter,
    pub show_expired: bool,
    pub offset: usize,
    pub limit: usize,
}

/// A scope id in use, and how many memories it holds ("entities" in Mem0).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ScopeCount {
    /// `user`, `agent`, `app` or `run`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: String,
    pub memories: u64,
}

/// A run's turn count and its latest turns (`speaker: text`); for a scope without a run, the
/// same for its current thread, with the thread's id and its latest event time.
#[derive(Clone, Debug, Default)]
pub(crate) struct RunState {
    pub count: u64,
    pub turns: std::collections::VecDeque<String>,
    pub thread: Option<String>,
    pub last_at: Option<chrono::DateTime<Utc>>,
}

impl RunState {
    /// Places a message of event time `at` of a scope without a run: in the current thread when
    /// it follows the thread's last message within `gap`, else at the start of a new thread.
    pub fn thread_for(&mut self, scope: &Scope, at: chrono::DateTime<Utc>, gap: std::time::Duration) {
        let gap = chrono::Duration::from_std(gap).unwrap_or(chrono::Duration::MAX);
        let follows = self.last_at.is_some_and(|last| at >= last - gap && at - last <= gap);
        if self.thread.is_none() || !follows {
            let started = at.timestamp_micros().to_string();
            self.thread = Some(format!("thr_{}", short_hash(&[&scope.owner(), &started, &self.count.to_string()])));
            self.count = 0;
            self.turns.clear();
        }
        self.last_at = Some(self.last_at.map_or(at, |last| last.max(at)));
    }
}

/// The name of a scope's lock: adds to one scope run one at a time (across nodes too).
pub(crate) fn scope_lock_name(tenant: &TenantId, scope: &Scope) -> String {
    short_hash(&[tenant.as_str(), &scope.owner(), scope.run_id.as_deref().unwrap_or("")])
}

fn run_key(tenant: &TenantId, scope: &Scope) -> String {
    format!("{}\0{}", tenant.as_str(), serde_json::to_string(scope).unwrap_or_default())
}

pub fn new_memory_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A short, stable hex digest of `parts` (each ended by a NUL), for ids derived from names.
pub(crate) use crate::graph::model::short_hash;

pub fn entity_id(owner: &str, name: &str) -> String {
    format!("ent_{}", short_hash(&[owner, &name.trim().to_lowercase()]))
}

/// Parses `YYYY-MM-DD`.
pub fn parse_day(text: &str, field: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| Error::invalid(format!("{field} must be a date as YYYY-MM-DD, not {text:?}")))
}

impl Memories {
    pub fn new(
        stores: Stores,
        writes: Arc<WriteLog>,
        embed: Arc<EmbedService>,
        engine: SearchEngine,
        llm: Option<Arc<dyn Llm>>,
        config: MemoryConfig,
    ) -> Memories {
        Memories {
            stores,
            writes,
            engine,
            embed,
            llm,
            config,
            scope_locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            recent_turns: parking_lot::Mutex::new(lru::LruCache::new(std::num::NonZeroUsize::new(4096).unwrap())),
        }
    }

    pub fn config(&self) -> &MemoryConfig {
        &self.config
    }

    pub fn has_llm(&self) -> bool {
        self.llm.is_some()
    }

    /// Where a run stands: how many turns it has had, and the last `memory.context_turns` of
    /// them (loaded once from the store, then kept). Called with the scope locked.
    pub(crate) async fn run_state(&self, tenant: &TenantId, scope: &Scope) -> Result<RunState> {
        if scope.run_id.is_none() && self.config.thread_gap_secs == 0 {
            return Ok(RunState::default());
        }
        let key = run_key(tenant, scope);
        // Other nodes add turns too when the record store is shared: read the run every time.
        let cached = !self.stores.records.shared();
        if let Some(state) = self.recent_turns.lock().get(&key).filter(|_| cached) {
            return Ok(state.clone());
        }
        if scope.run_id.is_none() {
            let state = self.thread_state(tenant, scope).await?;
            self.recent_turns.lock().put(key, state.clone());
            return Ok(state);
        }
        let mut earlier = self.matching(tenant, &add::scope_filter(scope), true).await?;
        earlier.retain(|m| m.scope() == *scope);
        earlier.sort_by_key(|m| m.turn.unwrap_or(0));
        let count = earlier.iter().filter_map(|m| m.turn).max().map_or(earlier.len() as u64, |t| t + 1);
        let keep = self.config.context_turns;
        let turns = earlier.iter().rev().take(keep).rev().map(Memory::as_turn).collect();
        let state = RunState { count, turns, ..RunState::default() };
        self.recent_turns.lock().put(key, state.clone());
        Ok(state)
    }

    /// The current thread of a scope without a run, read from its newest memories.
    async fn thread_state(&self, tenant: &TenantId, scope: &Scope) -> Result<RunState> {
        let mut filter = RecordFilter::kinds(&[MEMORY_KIND]);
        add::scope_filter(scope).pushdown(&mut filter);
        let keys = self.stores.records.keys_matching(tenant, &filter, MAX_SCAN).await?;
        let newest = &keys[keys.len().saturating_sub(64)..];
        let mut recent: Vec<Memory> = self
            .stores
            .records
            .get_by_keys(tenant, newest)
            .await?
            .iter()
            .map(Memory::from_record)
            .filter(|m| m.scope() == *scope && m.thread.is_some())
            .collect();
        let Some(last) = recent.iter().max_by_key(|m| (m.turn.unwrap_or(0), m.created_at)).cloned() else {
            return Ok(RunState::default());
        };
        recent.retain(|m| m.thread == last.thread);
        recent.sort_by_key(|m| m.turn.unwrap_or(0));
        let keep = self.config.context_turns;
        Ok(RunState {
            count: last.turn.map_or(recent.len() as u64, |t| t + 1),
            turns: recent.iter().rev().take(keep).rev().map(Memory::as_turn).collect(),
            last_at: recent.iter().map(Memory::moment).max(),
            thread: last.thread,
        })
    }

    /// Remembers a run's (or thread's) new turns, as context for the next ones, and where it
    /// now stands.
    pub(crate) fn advance_run(&self, tenant: &TenantId, scope: &Scope, state: RunState) {
        if scope.run_id.is_some() || state.thread.is_some() {
            self.recent_turns.lock().put(run_key(tenant, scope), state);
        }
    }

    fn scope_lock(&self, tenant: &TenantId, scope: &Scope) -> &tokio::sync::Mutex<()> {
        let h = scope_lock_name(tenant, scope);
        let n = u64::from_str_radix(&h[..8], 16).unwrap_or(0) as usize;
        &self.scope_locks[n % self.scope_locks.len()]
    }

    pub async fn get(&self, tenant: &TenantId, id: &str) -> Result<Memory> {
        match self.stores.records.get(tenant, id).await? {
            Some(r) if r.kind == MEMORY_KIND => Ok(Memory::from_record(&r)),
            _ => Err(Error::not_found("memory", id)),
        }
    }

    /// The memories matching `filter`, oldest first, and how many match in all.
    pub async fn list(&self, tenant: &TenantId, request: &ListRequest) -> Result<(Vec<Memory>, usize)> {
        let all = self.matching(tenant, &request.filter, request.show_expired).await?;
        let total = all.len();
        Ok((all.into_iter().skip(request.offset).take(request.limit).collect(), total))
    }

    async fn matching(&self, tenant: &TenantId, filter: &Filter, show_expired: bool) -> Result<Vec<Memory>> {
        let mut store_filter = RecordFilter::kinds(&[MEMORY_KIND]);
        filter.pushdown(&mut store_filter);
        let keys = self.stores.records.keys_matching(tenant, &store_filter, MAX_SCAN).await?;
        let now = Utc::now();
        let mut out = Vec::new();
        for batch in keys.chunks(1000) {
            for r in self.stores.records.get_by_keys(tenant, batch).await? {
                let m = Memory::from_record(&r);
                if filter.matches(&m) && (show_expired || !m.is_expired(now)) {
                    out.push(m);
                }
            }
        }
        Ok(out)
    }

    pub async fn history(&self, tenant: &TenantId, id: &str) -> Result<Vec<HistoryEntry>> {
        let mut filter = RecordFilter::kinds(&[HISTORY_KIND]);
        filter.metadata.push(("memory_id".into(), id.into()));
        let keys = self.stores.records.keys_matching(tenant, &filter, 100_000).await?;
        if keys.is_empty() {
            // No history: an unknown id (history outlives deletion, so a known one always has some).
            return Err(Error::not_found("memory", id));
        }
        let mut entries: Vec<HistoryEntry> =
            self.stores.records.get_by_keys(tenant, &keys).await?.iter().map(HistoryEntry::from_record).collect();
        entries.sort_by_key(|e| e.created_at);
        Ok(entries)
    }

    /// Applies `update`; a text change is re-embedded and recorded in the history.
    pub async fn update(&self, tenant: &TenantId, id: &str, update: Update, actor: &str) -> Result<Memory> {
        let old = self.get(tenant, id).await?;
        let mut new = old.clone();
        if let Some(text) = &update.text {
            let text = text.trim();
            if text.is_empty() {
                return Err(Error::invalid("text must not be empty; delete the memory instead"));
            }
            self.check_size(text)?;
            if old.immutable && text != old.memory {
                return Err(Error::new(
                    ErrorCode::Conflict,
                    format!("memory {id} is immutable: its text cannot change; delete it and add a new one"),
                ));
            }
            new.memory = text.to_string();
        }
        if let Some(metadata) = update.metadata.clone() {
            new.metadata = Value::Object(metadata);
        }
        if let Some(tier) = update.tier {
            new.tier = tier;
        }
        if let Some(categories) = update.categories.clone() {
            new.categories = clean_categories(categories)?;
        }
        if let Some(day) = &update.expiration_date {
            if day.trim().is_empty() {
                new.expiration_date = None;
                new.expires_at = None;
            } else {
                let d = parse_day(day, "expiration_date")?;
                new.expiration_date = Some(d);
                new.expires_at = Some(add::end_of_day(d));
            }
        }
        if let Some(ts) = &update.timestamp {
            new.event_time = Some(
                filter::parse_time(ts)
                    .ok_or_else(|| Error::invalid("timestamp must be Unix seconds or an RFC 3339 time"))?,
            );
        }
        if let Some(immutable) = update.immutable {
            new.immutable = immutable;
        }
        let input = serde_json::to_value(UpdateInput::from(&update)).unwrap_or(Value::Null);
        let text_changed = new.memory != old.memory;
        let entry = self.history_entry(
            &new,
            Event::Update,
            Some(old.memory.clone()),
            Some(new.memory.clone()),
            actor,
            Some(input),
            None,
        );
        let mut writes = vec![Write::Upsert(self.memory_record(&new)), Write::Upsert(history_record(&entry))];
        if text_changed {
            writes.extend(self.relation_deletes(tenant, id).await?);
            new.entities.clear();
            let relations =
                extract::sentence_relations(new.metadata.get("speaker").and_then(Value::as_str), &new.memory);
            writes.extend(self.graph_writes(&mut new, &relations));
            writes[0] = Write::Upsert(self.memory_record(&new));
        }
        self.writes.write(tenant, writes, true).await?;
        self.get(tenant, id).await
    }

    pub async fn delete(&self, tenant: &TenantId, id: &str, actor: &str) -> Result<()> {
        let old = self.get(tenant, id).await?;
        let mut writes = self.delete_writes(tenant, &old, actor, None).await?;
        writes.shrink_to_fit();
        self.writes.write(tenant, writes, true).await?;
        Ok(())
    }

    async fn delete_writes(
        &self,
        tenant: &TenantId,
        old: &Memory,
        actor: &str,
        note: Option<String>,
    ) -> Result<Vec<Write>> {
        let entry = self.history_entry(old, Event::Delete, Some(old.memory.clone()), None, actor, None, note);
        let mut writes = vec![Write::Delete { id: old.id.clone() }, Write::Upsert(history_record(&entry))];
        writes.extend(self.relation_deletes(tenant, &old.id).await?);
        Ok(writes)
    }

    /// Deletes every memory matching `filter` (expired ones included); returns how many.
    pub async fn delete_where(&self, tenant: &TenantId, filter: &Filter, actor: &str) -> Result<u64> {
        let doomed = self.matching(tenant, filter, true).await?;
        for batch in doomed.chunks(200) {
            let mut writes = Vec::new();
            for m in batch {
                writes.extend(self.delete_writes(tenant, m, actor, None).await?);
            }
            self.writes.write(tenant, writes, true).await?;
        }
        Ok(doomed.len() as u64)
    }

    /// Every scope id in use, with its memory count.
    pub async fn scopes(&self, tenant: &TenantId) -> Result<Vec<ScopeCount>> {
        let filter = RecordFilter::kinds(&[MEMORY_KIND]);
        let mut out = Vec::new();
        for (kind, field) in [("user", "user_id"), ("agent", "agent_id"), ("app", "app_id"), ("run", "run_id")] {
            for (name, memories) in self.stores.records.count_by(tenant, &filter, field).await? {
                if !name.is_empty() {
                    out.push(ScopeCount { kind, name, memories });
                }
            }
        }
        Ok(out)
    }

    /// Records feedback on a memory's usefulness (kept in its metadata, not its history).
    pub async fn feedback(
        &self,
        tenant: &TenantId,
        id: &str,
        feedback: Option<&str>,
        reason: Option<&str>,
    ) -> Result<()> {
        if let Some(f) = feedback
            && !matches!(f, "POSITIVE" | "NEGATIVE" | "VERY_NEGATIVE")
        {
            return Err(Error::invalid("feedback must be POSITIVE, NEGATIVE, VERY_NEGATIVE or null"));
        }
        let record = match self.stores.records.get(tenant, id).await? {
            Some(r) if r.kind == MEMORY_KIND => r,
            _ => return Err(Error::not_found("memory", id)),
        };
        let mut metadata = record.metadata.clone();
        metadata["feedback"] = json!({"feedback": feedback, "reason": reason, "at": Utc::now().to_rfc3339()});
        let new = NewRecord {
            id: record.id.clone(),
            kind: record.kind.clone(),
            title: record.title.clone(),
            body: record.body.clone(),
            tags: record.tags.clone(),
            metadata,
            vector: None,
            graph: None,
            embed: true,
        };
        self.writes.write(tenant, vec![Write::Upsert(new)], true).await?;
        Ok(())
    }

    fn check_size(&self, text: &str) -> Result<()> {
        if text.len() > self.config.max_message_bytes {
            return Err(Error::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "a message of {} bytes is over memory.max_message_bytes ({}); split it or store it as a document",
                    text.len(),
                    self.config.max_message_bytes
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn memory_record(&self, m: &Memory) -> NewRecord {
        NewRecord {
            id: m.id.clone(),
            kind: MEMORY_KIND.into(),
            // Who said it is keyword-searchable and part of the embedding, not of the text.
            title: m.speaker().map(str::to_string),
            body: Some(m.memory.clone()),
            tags: m.categories.clone(),
            metadata: m.record_metadata(),
            vector: None,
            graph: None,
            embed: true,
        }
    }

    /// The writes that add `m`: its record and its ADD history entry.
    pub(crate) fn added(&self, m: &Memory, actor: &str, input: Option<Value>, note: Option<String>) -> [Write; 2] {
        let entry = self.history_entry(m, Event::Add, None, Some(m.memory.clone()), actor, input, note);
        [Write::Upsert(self.memory_record(m)), Write::Upsert(history_record(&entry))]
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn history_entry(
        &self,
        m: &Memory,
        event: Event,
        old_memory: Option<String>,
        new_memory: Option<String>,
        actor: &str,
        input: Option<Value>,
        note: Option<String>,
    ) -> HistoryEntry {
        HistoryEntry {
            id: format!("{}:{}", m.id, uuid::Uuid::now_v7()),
            memory_id: m.id.clone(),
            event,
            old_memory,
            new_memory,
            actor: actor.to_string(),
            input,
            note,
            user_id: m.user_id.clone(),
            agent_id: m.agent_id.clone(),
            app_id: m.app_id.clone(),
            run_id: m.run_id.clone(),
            metadata: m.metadata.clone(),
            created_at: Utc::now(),
        }
    }

    /// Entity nodes and relation edges for a memory's relations; records the entity names on it.
    pub(crate) fn graph_writes(&self, m: &mut Memory, relations: &[Relation]) -> Vec<Write> {
        let owner = m.scope().owner();
        let mut writes = Vec::new();
        let mut seen: HashMap<String, ()> = HashMap::new();
        let scope = m.scope();
        let scope_meta = |extra: Value| {
            let mut meta = Map::new();
            for (k, v) in scope.fields() {
                if let Some(v) = v {
                    meta.insert(k.into(), v.into());
                }
            }
            if let Value::Object(e) = extra {
                meta.extend(e);
            }
            Value::Object(meta)
        };
        for r in relations {
            for (name, entity_type) in [(&r.source, &r.source_type), (&r.target, &r.target_type)] {
                let id = entity_id(&owner, name);
                if seen.insert(id.clone(), ()).is_none() {
                    if !m.entities.contains(name) {
                        m.entities.push(name.clone());
                    }
                    writes.push(Write::Upsert(NewRecord {
                        id,
                        kind: ENTITY_KIND.into(),
                        metadata: scope_meta(json!({"name": name, "type": entity_type})),
                        graph: Some(crate::store::records::GraphItem::Node {
                            label: "entity".into(),
                            name: name.clone(),
                        }),
                        ..Default::default()
                    }));
                }
            }
            writes.push(Write::Upsert(NewRecord {
                id: format!("rel_{}", short_hash(&[&m.id, &r.source, &r.relationship, &r.target])),
                kind: RELATION_KIND.into(),
                metadata: scope_meta(json!({
                    "memory_id": m.id, "source": r.source, "relationship": r.relationship, "target": r.target,
                    "source_type": r.source_type, "target_type": r.target_type,
                })),
                graph: Some(crate::store::records::GraphItem::Edge {
                    label: r.relationship.clone(),
                    source: entity_id(&owner, &r.source),
                    target: entity_id(&owner, &r.target),
                }),
                ..Default::default()
            }));
        }
        writes
    }

    async fn relation_deletes(&self, tenant: &TenantId, memory_id: &str) -> Result<Vec<Write>> {
        let mut filter = RecordFilter::kinds(&[RELATION_KIND]);
        filter.metadata.push(("memory_id".into(), memory_id.into()));
        let keys: Vec<RecordKey> = self.stores.records.keys_matching(tenant, &filter, 10_000).await?;
        let records = self.stores.records.get_by_keys(tenant, &keys).await?;
        Ok(records.into_iter().map(|r| Write::Delete { id: r.id }).collect())
    }
}

pub(crate) fn history_record(entry: &HistoryEntry) -> NewRecord {
    NewRecord {
        id: entry.id.clone(),
        kind: HISTORY_KIND.into(),
        metadata: entry.record_metadata(),
        ..Default::default()
    }
}

pub(crate) fn clean_categories(categories: Vec<String>) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for c in categories {
        let c = c.trim().to_lowercase();
        if c.is_empty() {
            continue;
        }
        if c.len() > 64 {
            return Err(Error::invalid("a category is at most 64 bytes"));
        }
        if !out.contains(&c) {
            out.push(c);
        }
    }
    if out.len() > 20 {
        return Err(Error::invalid("at most 20 categories per memory"));
    }
    Ok(out)
}

/// What an update asked for, as its history entry keeps it.
#[derive(Serialize)]
struct UpdateInput {
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tier: Option<Tier>,
    #[serde(skip_serializing_if = "Option::is_none")]
    categories: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    immutable: Option<bool>,
}

impl From<&Update> for UpdateInput {
    fn from(u: &Update) -> Self {
        UpdateInput {
            text: u.text.clone(),
            metadata: u.metadata.clone(),
            tier: u.tier,
            categories: u.categories.clone(),
            expiration_date: u.expiration_date.clone(),
            immutable: u.immutable,
        }
    }
}
