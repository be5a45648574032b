//! Adding memories: messages in, ADD / UPDATE / DELETE / NONE events out.
//!
//! - `infer=false`: each non-system message is one memory, verbatim (role and name in its
//!   metadata); a duplicate of a memory in the same scope (the same words, give or take case,
//!   punctuation, order and filler words: [`super::model::content_key`]) is merged into it
//!   (event NONE) rather than stored twice.
//! - `infer=true` without an LLM: the deterministic extractor ([`super::extract`]), then the same
//!   duplicate check.
//! - `infer=true` with an LLM: Mem0's two steps — the model extracts facts; each fact is compared
//!   with the most similar memories of the scope, shown to the model under short ids so it cannot
//!   invent real ones; the model decides. Immutable memories are never changed by inference.
//!
//! Everything one add decides is written in one batch, each change with its history entry, and
//! is searchable when the call returns.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::extract::{self, Candidate, Decision, Known};
use super::model::{CONTENT_KEY, content_key};
use super::{
    Event, Filter, MEMORY_KIND, Memories, Memory, Message, Relation, Scope, Tier, clean_categories, history_record,
    new_memory_id, parse_day,
};
use crate::error::{Error, Result};
use crate::jobs::{JobContext, JobHandler};
use crate::store::TenantId;
use crate::store::jobs::{Job, JobState};
use crate::store::records::{RecordFilter, Write};

/// An add, as the API takes it. Unknown fields are ignored (Mem0 clients send several).
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AddRequest {
    /// The conversation: `{role, content, name?}`. Or give `text` for one memory.
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub run_id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Extract facts (default) or store the messages verbatim (`false`).
    #[serde(default)]
    pub infer: Option<bool>,
    /// The tier of every memory added; by default the extractor (or the scope) decides.
    #[serde(default)]
    pub tier: Option<Tier>,
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub immutable: bool,
    /// `YYYY-MM-DD`: hidden from search and list after this day.
    #[serde(default)]
    pub expiration_date: Option<String>,
    /// Expire this many seconds from now (working memory).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// When it happened: Unix seconds or RFC 3339.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub timestamp: Option<Value>,
    /// Where it came from; Nexus adds the message's role, name and position.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub provenance: Option<Value>,
    /// Extra instructions for the LLM's extraction step.
    #[serde(default)]
    pub custom_instructions: Option<String>,
}

impl AddRequest {
    pub fn scope(&self) -> Scope {
        Scope {
            user_id: self.user_id.clone(),
            agent_id: self.agent_id.clone(),
            app_id: self.app_id.clone(),
            run_id: self.run_id.clone(),
        }
    }
}

/// One outcome of an add.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AddResult {
    pub id: String,
    pub memory: String,
    pub event: Event,
    pub tier: Tier,
    /// The text before an UPDATE or DELETE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_memory: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AddOutcome {
    pub results: Vec<AddResult>,
    /// Relations between entities the add linked in the graph.
    pub relations: Vec<Relation>,
}

/// How an asynchronous add is doing (Mem0's event).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AddEvent {
    pub id: String,
    /// `PENDING`, `RUNNING`, `SUCCEEDED` or `FAILED`.
    pub status: &'static str,
    pub results: Vec<AddResult>,
    pub relations: Vec<Relation>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What one add settled on, before it is written.
struct Plan {
    writes: Vec<Write>,
    results: Vec<AddResult>,
    relations: Vec<Relation>,
    /// Where the run stands after this add.
    run: Option<super::RunState>,
}

/// The fields every memory of one add shares.
struct Common {
    scope: Scope,
    metadata: Map<String, Value>,
    categories: Vec<String>,
    immutable: bool,
    event_time: Option<DateTime<Utc>>,
    expiration_date: Option<chrono::NaiveDate>,
    expires_at: Option<DateTime<Utc>>,
    provenance: Option<Value>,
    tier: Option<Tier>,
}

impl Memories {
    /// Adds memories from `request`; see the module documentation.
    pub async fn add(&self, tenant: &TenantId, request: AddRequest, actor: &str) -> Result<AddOutcome> {
        let (messages, common) = self.validate(&request)?;
        let infer = request.infer.unwrap_or(true);
        // Model calls happen before the scope is locked: they are slow and read nothing of it.
        let mut note = None;
        let mut extracted_relations = Vec::new();
        let mut model_facts = false;
        let candidates = if !infer {
            verbatim(&messages, &common)
        } else if let Some(llm) = &self.llm {
            let extracted =
                extract::extract_with_llm(llm.as_ref(), &messages, request.custom_instructions.as_deref()).await?;
            note = extracted.note;
            extracted_relations = extracted.relations;
            model_facts = !extracted.fell_back;
            extracted.candidates
        } else {
            extract::extract_without_llm(&messages)
        };
        let input = json!({"messages": messages});
        let _guard = self.scope_lock(tenant, &common.scope).lock().await;
        // Other nodes adding to the same scope wait too (duplicates and turn numbers are decided here).
        let _cluster_guard = self.stores.records.exclusive(&super::scope_lock_name(tenant, &common.scope)).await?;
        let plan = match &self.llm {
            Some(llm) if model_facts && !candidates.is_empty() => {
                self.plan_with_llm(tenant, llm.as_ref(), &common, candidates, extracted_relations, actor, &input, note)
                    .await?
            }
            _ => self.plan_without_llm(tenant, &common, candidates, &messages, actor, &input, note).await?,
        };
        if !plan.writes.is_empty() {
            self.writes.write(tenant, plan.writes, true).await?;
        }
        if let Some(run) = plan.run {
            self.advance_run(tenant, &common.scope, run);
        }
        Ok(AddOutcome { results: plan.results, relations: plan.relations })
    }

    fn validate(&self, request: &AddRequest) -> Result<(Vec<Message>, Common)> {
        let scope = request.scope().normalized()?;
        scope.require()?;
        let mut messages = request.messages.clone();
        if let Some(text) = request.text.as_deref().filter(|t| !t.trim().is_empty()) {
            messages.push(Message::user(text));
        }
        if messages.iter().all(|m| m.text().is_empty()) {
            return Err(Error::invalid("give messages (a list of {role, content}) or text with something to remember"));
        }
        if messages.len() > 1000 {
            return Err(Error::invalid("at most 1000 messages per add"));
        }
        for m in &messages {
            self.check_size(&m.text())?;
        }
        let metadata = match &request.metadata {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(Error::invalid("metadata must be a JSON object")),
        };
        let event_time = match &request.timestamp {
            None | Some(Value::Null) => None,
            Some(t) => Some(
                super::filter::parse_time(t)
                    .ok_or_else(|| Error::invalid("timestamp must be Unix seconds or an RFC 3339 time"))?,
            ),
        };
        let expiration_date = request
            .expiration_date
            .as_deref()
            .filter(|d| !d.trim().is_empty())
            .map(|d| parse_day(d, "expiration_date"))
            .transpose()?;
        let now = Utc::now();
        let mut expires_at = expiration_date.map(end_of_day);
        if let Some(ttl) = request.ttl_seconds {
            let at = now + Duration::seconds(ttl.min(100 * 365 * 86_400) as i64);
            expires_at = Some(expires_at.map_or(at, |e| e.min(at)));
        }
        let common = Common {
            tier: request.tier,
            scope,
            metadata,
            categories: clean_categories(request.categories.clone())?,
            immutable: request.immutable,
            event_time,
            expiration_date,
            expires_at,
            provenance: request.provenance.clone().filter(|p| !p.is_null()),
        };
        Ok((messages, common))
    }

    fn new_memory(
        &self,
        common: &Common,
        candidate: &Candidate,
        messages_metadata: Option<&Map<String, Value>>,
    ) -> Memory {
        let now = Utc::now();
        let tier = common.tier.unwrap_or(candidate.tier);
        let mut metadata = common.metadata.clone();
        if let Some(extra) = messages_metadata {
            for (k, v) in extra {
                metadata.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let mut categories = common.categories.clone();
        for c in &candidate.categories {
            if !categories.contains(c) {
                categories.push(c.clone());
            }
        }
        let expires_at = match (common.expires_at, tier) {
            (Some(t), _) => Some(t),
            (None, Tier::Working) => Some(now + Duration::seconds(self.config.working_ttl_secs as i64)),
            (None, _) => None,
        };
        Memory {
            id: new_memory_id(),
            memory: candidate.text.clone(),
            tier,
            user_id: common.scope.user_id.clone(),
            agent_id: common.scope.agent_id.clone(),
            app_id: common.scope.app_id.clone(),
            run_id: common.scope.run_id.clone(),
            metadata: Value::Object(metadata),
            categories,
            immutable: common.immutable,
            event_time: common.event_time,
            expiration_date: common.expiration_date,
            expires_at,
            provenance: common.provenance.clone(),
            entities: Vec::new(),
            created_at: now,
            updated_at: now,
            turn: None,
            thread: None,
            context: None,
        }
    }

    /// The memories of exactly this scope most similar to `vector`, with their similarity.
    async fn similar(&self, tenant: &TenantId, scope: &Scope, vector: &[f32], k: usize) -> Result<Vec<(Memory, f32)>> {
        let mut filter = RecordFilter::kinds(&[MEMORY_KIND]);
        scope_filter(scope).pushdown(&mut filter);
        let hits = self.stores.records.nearest_exact(tenant, &filter, vector, k * 2).await?;
        let keys: Vec<_> = hits.iter().map(|h| h.key).collect();
        let by_key: HashMap<_, _> =
            self.stores.records.get_by_keys(tenant, &keys).await?.into_iter().map(|r| (r.key, r)).collect();
        let now = Utc::now();
        Ok(hits
            .iter()
            .filter_map(|h| by_key.get(&h.key).map(|r| (Memory::from_record(r), 1.0 - h.distance)))
            .filter(|(m, _)| m.scope() == *scope && !m.is_expired(now))
            .take(k)
            .collect())
    }

    /// A live memory of exactly this scope that says the same (see [`content_key`]).
    async fn duplicate_of(&self, tenant: &TenantId, scope: &Scope, key: &str) -> Result<Option<Memory>> {
        let mut filter = RecordFilter::kinds(&[MEMORY_KIND]);
        scope_filter(scope).pushdown(&mut filter);
        filter.metadata.push((CONTENT_KEY.into(), key.into()));
        let keys = self.stores.records.keys_matching(tenant, &filter, 50).await?;
        let now = Utc::now();
        Ok(self
            .stores
            .records
            .get_by_keys(tenant, &keys)
            .await?
            .iter()
            .map(Memory::from_record)
            .find(|m| m.scope() == *scope && !m.is_expired(now)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn plan_without_llm(
        &self,
        tenant: &TenantId,
        common: &Common,
        candidates: Vec<Candidate>,
        messages: &[Message],
        actor: &str,
        input: &Value,
        note: Option<String>,
    ) -> Result<Plan> {
        let mut plan = Plan { writes: Vec::new(), results: Vec::new(), relations: Vec::new(), run: None };
        let mut added: Vec<(String, String)> = Vec::new(); // (content key, id) of this add
        let mut run = self.run_state(tenant, &common.scope).await?;
        for candidate in candidates {
            let extra = messages.get(candidate.message).map(source_metadata);
            // The run so far is this turn's context; then the turn joins it.
            // Without a run, the scope's thread is the run (see `memory.thread_gap_secs`).
            let threaded = common.scope.run_id.is_none() && self.config.thread_gap_secs > 0;
            if threaded {
                let at = common.event_time.unwrap_or_else(Utc::now);
                run.thread_for(&common.scope, at, std::time::Duration::from_secs(self.config.thread_gap_secs));
            }
            let n = self.config.context_turns;
            let context =
                (n > 0 && !run.turns.is_empty()).then(|| run.turns.iter().cloned().collect::<Vec<_>>().join("\n"));
            let turn = (common.scope.run_id.is_some() || threaded).then_some(run.count);
            let speaker = extra
                .as_ref()
                .and_then(|e| e.get("name"))
                .or_else(|| common.metadata.get("speaker"))
                .and_then(Value::as_str);
            let text: String = candidate.text.chars().take(300).collect();
            let line = speaker.map_or_else(|| text.clone(), |s| format!("{s}: {text}"));
            if common.scope.run_id.is_some() || threaded {
                run.count += 1;
                run.turns.push_back(line);
                while run.turns.len() > n {
                    run.turns.pop_front();
                }
                plan.run = Some(run.clone());
            }
            let key = content_key(&candidate.text);
            let twin = match added.iter().find(|(k, _)| *k == key) {
                Some((_, id)) => Some((id.clone(), candidate.text.clone(), common.tier.unwrap_or(candidate.tier))),
                None => self.duplicate_of(tenant, &common.scope, &key).await?.map(|m| (m.id, m.memory, m.tier)),
            };
            if let Some((id, memory, tier)) = twin {
                plan.results.push(AddResult { id, memory, event: Event::None, tier, previous_memory: None });
                continue;
            }
            let mut memory = self.new_memory(common, &candidate, extra.as_ref());
            memory.context = context;
            memory.turn = turn;
            memory.thread = run.thread.clone().filter(|_| threaded);
            plan.writes.extend(self.graph_writes(&mut memory, &candidate.relations));
            plan.relations.extend(candidate.relations.iter().cloned());
            plan.writes.extend(self.added(&memory, actor, Some(input.clone()), note.clone()));
            added.push((key, memory.id.clone()));
            plan.results.push(AddResult {
                id: memory.id,
                memory: memory.memory,
                event: Event::Add,
                tier: memory.tier,
                previous_memory: None,
            });
        }
        Ok(plan)
    }

    #[allow(clippy::too_many_arguments)]
    async fn plan_with_llm(
        &self,
        tenant: &TenantId,
        llm: &dyn crate::llm::Llm,
        common: &Common,
        candidates: Vec<Candidate>,
        relations: Vec<Relation>,
        actor: &str,
        input: &Value,
        note: Option<String>,
    ) -> Result<Plan> {
        let texts: Vec<String> = candidates.iter().map(|c| c.text.clone()).collect();
        let vectors = self.embed.embed(&texts).await?;
        // The similar memories of every fact, shown to the model as "0", "1", ...
        let mut known: Vec<Memory> = Vec::new();
        for vector in &vectors {
            for (m, _) in self.similar(tenant, &common.scope, vector, 5).await? {
                if !known.iter().any(|k| k.id == m.id) {
                    known.push(m);
                }
            }
        }
        let shown: Vec<Known> =
            known.iter().enumerate().map(|(i, m)| Known { short_id: i.to_string(), text: m.memory.clone() }).collect();
        let by_short: HashMap<String, &Memory> = known.iter().enumerate().map(|(i, m)| (i.to_string(), m)).collect();
        let tier_of = |text: &str| {
            candidates
                .iter()
                .find(|c| c.text == text)
                .map(|c| c.tier)
                .unwrap_or_else(|| extract::classify(text, "user"))
        };
        let (decisions, mut note) = match extract::decide_with_llm(llm, &shown, &texts).await? {
            Ok((decisions, repaired)) => (decisions, repaired.or(note)),
            Err(problem) => (
                texts.iter().map(|t| Decision::Add { text: t.clone() }).collect(),
                Some(format!("{problem}; the facts were added without comparison")),
            ),
        };
        let mut plan = Plan { writes: Vec::new(), results: Vec::new(), relations: Vec::new(), run: None };
        let mut relations_left = relations;
        let mut changed: Vec<String> = Vec::new();
        for decision in decisions {
            match decision {
                Decision::Add { text } => {
                    let candidate = Candidate {
                        tier: tier_of(&text),
                        text,
                        categories: categories_of(&candidates),
                        relations: Vec::new(),
                        message: 0,
                    };
                    self.plan_add(&mut plan, common, candidate, &mut relations_left, actor, input, note.take());
                }
                Decision::Update { short_id, text } => match by_short.get(&short_id) {
                    Some(old) if old.immutable => {
                        let n = format!("memory {} is immutable and was kept; the fact was added beside it", old.id);
                        let candidate = Candidate {
                            tier: tier_of(&text),
                            text,
                            categories: Vec::new(),
                            relations: Vec::new(),
                            message: 0,
                        };
                        self.plan_add(&mut plan, common, candidate, &mut relations_left, actor, input, Some(n));
                    }
                    Some(old) if !changed.contains(&old.id) => {
                        changed.push(old.id.clone());
                        let mut new = (*old).clone();
                        new.memory = text.clone();
                        new.updated_at = Utc::now();
                        let entry = self.history_entry(
                            &new,
                            Event::Update,
                            Some(old.memory.clone()),
                            Some(text.clone()),
                            actor,
                            Some(input.clone()),
                            note.take(),
                        );
                        plan.writes.push(Write::Upsert(self.memory_record(&new)));
                        plan.writes.push(Write::Upsert(history_record(&entry)));
                        plan.results.push(AddResult {
                            id: new.id,
                            memory: text,
                            event: Event::Update,
                            tier: new.tier,
                            previous_memory: Some(old.memory.clone()),
                        });
                    }
                    Some(_) => {}
                    None => {
                        // An id the model was not shown: keep the fact rather than guess.
                        let n = format!("the model named unknown memory {short_id:?}; the fact was added as new");
                        let candidate = Candidate {
                            tier: tier_of(&text),
                            text,
                            categories: Vec::new(),
                            relations: Vec::new(),
                            message: 0,
                        };
                        self.plan_add(&mut plan, common, candidate, &mut relations_left, actor, input, Some(n));
                    }
                },
                Decision::Delete { short_id } => {
                    if let Some(old) = by_short.get(&short_id).filter(|m| !m.immutable && !changed.contains(&m.id)) {
                        changed.push(old.id.clone());
                        let entry = self.history_entry(
                            old,
                            Event::Delete,
                            Some(old.memory.clone()),
                            None,
                            actor,
                            Some(input.clone()),
                            note.take(),
                        );
                        plan.writes.push(Write::Delete { id: old.id.clone() });
                        plan.writes.push(Write::Upsert(history_record(&entry)));
                        plan.writes.extend(self.relation_deletes(tenant, &old.id).await?);
                        plan.results.push(AddResult {
                            id: old.id.clone(),
                            memory: old.memory.clone(),
                            event: Event::Delete,
                            tier: old.tier,
                            previous_memory: Some(old.memory.clone()),
                        });
                    }
                }
                Decision::None { .. } => {}
            }
        }
        Ok(plan)
    }

    #[allow(clippy::too_many_arguments)]
    fn plan_add(
        &self,
        plan: &mut Plan,
        common: &Common,
        candidate: Candidate,
        relations: &mut Vec<Relation>,
        actor: &str,
        input: &Value,
        note: Option<String>,
    ) {
        let mut memory = self.new_memory(common, &candidate, None);
        // The model's relations go with the first memory that names both ends.
        let lower = memory.memory.to_lowercase();
        let (mine, rest): (Vec<Relation>, Vec<Relation>) = std::mem::take(relations)
            .into_iter()
            .partition(|r| lower.contains(&r.source.to_lowercase()) || lower.contains(&r.target.to_lowercase()));
        *relations = rest;
        plan.writes.extend(self.graph_writes(&mut memory, &mine));
        plan.relations.extend(mine);
        plan.writes.extend(self.added(&memory, actor, Some(input.clone()), note));
        plan.results.push(AddResult {
            id: memory.id,
            memory: memory.memory,
            event: Event::Add,
            tier: memory.tier,
            previous_memory: None,
        });
    }

    /// Queues an add to run in the background; the job id is the event id.
    pub async fn enqueue_add(
        &self,
        jobs: &crate::jobs::Jobs,
        tenant: &TenantId,
        request: AddRequest,
        actor: &str,
    ) -> Result<Job> {
        self.validate(&request)?;
        let payload = serde_json::to_value(AddPayload { request, actor: actor.to_string() })
            .map_err(|e| Error::internal("encode add job", e))?;
        jobs.enqueue(tenant, super::ADD_JOB, payload, 3).await
    }
}

/// An add job's event, in Mem0's terms.
pub fn add_event(job: &Job) -> Result<AddEvent> {
    if job.kind != super::ADD_JOB {
        return Err(Error::not_found("event", &job.id));
    }
    let status = match job.state {
        JobState::Queued => "PENDING",
        JobState::Running => "RUNNING",
        JobState::Succeeded => "SUCCEEDED",
        _ => "FAILED",
    };
    let outcome: AddOutcome = job.result.clone().and_then(|r| serde_json::from_value(r).ok()).unwrap_or_default();
    Ok(AddEvent {
        id: job.id.clone(),
        status,
        results: outcome.results,
        relations: outcome.relations,
        error: job.error.clone(),
        created_at: job.created_at,
        updated_at: job.updated_at,
    })
}

#[derive(Serialize, Deserialize)]
struct AddPayload {
    request: AddRequest,
    actor: String,
}

/// Runs queued adds.
pub struct AddHandler(pub Arc<Memories>);

#[async_trait]
impl JobHandler for AddHandler {
    async fn run(&self, ctx: &JobContext) -> Result<Value> {
        let job = ctx.job();
        let payload: AddPayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| Error::invalid(format!("memory add job payload is malformed: {e}")))?;
        let outcome = self.0.add(&job.tenant, payload.request, &payload.actor).await?;
        serde_json::to_value(outcome).map_err(|e| Error::internal("encode add outcome", e))
    }
}

/// Each non-system message as one candidate, verbatim, with its role and name as metadata.
fn verbatim(messages: &[Message], common: &Common) -> Vec<Candidate> {
    let default_tier = if common.scope.is_run_only() { Tier::Working } else { Tier::Episodic };
    messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m.role != "system" && !m.text().is_empty())
        .map(|(i, m)| {
            let speaker = m.name.as_deref().or_else(|| common.metadata.get("speaker").and_then(Value::as_str));
            Candidate {
                text: m.text(),
                tier: default_tier,
                categories: Vec::new(),
                relations: extract::sentence_relations(speaker, &m.text()),
                message: i,
            }
        })
        .collect()
}

/// The role and name of the message a memory came from, as metadata.
fn source_metadata(m: &Message) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("role".into(), m.role.clone().into());
    if let Some(name) = &m.name {
        out.insert("name".into(), name.clone().into());
    }
    out
}

fn categories_of(candidates: &[Candidate]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in candidates.iter().flat_map(|c| c.categories.iter()) {
        if !out.contains(c) {
            out.push(c.clone());
        }
    }
    out
}

/// Exactly this scope's ids, as a filter.
pub fn scope_filter(scope: &Scope) -> Filter {
    use super::filter::Field;
    let mut f = Filter::everything();
    for (field, value) in [
        (Field::UserId, &scope.user_id),
        (Field::AgentId, &scope.agent_id),
        (Field::AppId, &scope.app_id),
        (Field::RunId, &scope.run_id),
    ] {
        if let Some(v) = value {
            f = f.and(Filter::eq(field, v.clone()));
        }
    }
    f
}

pub(crate) fn end_of_day(day: chrono::NaiveDate) -> DateTime<Utc> {
    (day + Duration::days(1)).and_hms_opt(0, 0, 0).expect("midnight").and_utc()
}
