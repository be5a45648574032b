//! The entity graph: entities, the relations between them and when each was true.
//!
//! [`Graph`] is the service behind `/api/v1/graph`. Entities and relations are records (layout
//! in [`model`]) written through the one write path; the graph store holds them as nodes and
//! edges for walks ([`walk`]).
//!
//! Time is kept twice over, as in a bitemporal table: when a relation was true (`valid_at`,
//! `invalid_at`) and when Nexus held it (`created_at`, `expired_at`). Nothing is deleted:
//! - A relation of a **single-valued** type (a person works for one employer at a time; the list
//!   is [`SINGLE_VALUED`]) that names another target than one already true closes the old one:
//!   the old version is expired, and a corrected version, valid until the new one starts, takes
//!   its place. A new fact that started before the old one is instead closed by it.
//! - A contradicting fact without `valid_at` is taken as true from the moment it is added.
//! - Adding a relation that is already known (same ends and type, overlapping validity) returns
//!   the known one.
//!
//! So a walk `as_of` a moment sees what was true then, and `known_at` a moment what Nexus knew
//! then; the default is everything Nexus knows now.
//!
//! Writes to one entity's relations run one at a time (a lock per source entity, across nodes
//! too), so two contradicting facts added at once are both resolved.
//!
//! [`analytics`] ranks entities (PageRank, betweenness, closeness, degree) and groups them
//! (weakly connected components, Louvain communities) on a copy of a view of the graph held in
//! memory, each measure as networkx defines it.

pub mod analytics;
pub mod extract;
pub mod llm;
pub mod model;
pub mod walk;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::search::{Fusion, Mode, SearchEngine, SearchRequest};
use crate::store::records::{Record, RecordFilter, Write};
use crate::store::{RecordKey, Stores, TenantId};
use crate::writelog::WriteLog;
use model::*;
pub use model::{Entity, NewEntity, NewRelation, Relation};
pub use walk::View;

/// Relation types a subject holds one of at a time.
pub const SINGLE_VALUED: &[&str] = &[
    "works_for",
    "works_at",
    "employed_by",
    "reports_to",
    "role_at",
    "lives_in",
    "based_in",
    "located_in",
    "headquartered_in",
    "married_to",
    "owned_by",
    "led_by",
];

/// The types a found name is looked up under, beside its own.
const KNOWN_TYPES: &[&str] = &["person", "organization", "place", "project", "team", "entity"];

/// How similar two long names must be (Jaro-Winkler) to be taken for one entity.
pub const FUZZY_MATCH: f64 = 0.93;

/// The confidence of a relation the rules read.
const RULE_CONFIDENCE: f64 = 0.7;
/// The confidence of a relation the language model read.
const LLM_CONFIDENCE: f64 = 0.8;

/// What an ingest added.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Ingested {
    /// New entities.
    pub entities: usize,
    /// New relations.
    pub relations: usize,
    /// Batches of text the language model read.
    #[serde(default)]
    pub llm_batches: usize,
    /// Batches the rules read instead, because the model could not be reached or its answer
    /// could not be read.
    #[serde(default)]
    pub rule_batches: usize,
}

/// The most relations one entity may have of one type before adding another is refused.
const MAX_RELATIONS_PER_TYPE: usize = 10_000;
/// The most provenance ids a relation carries.
const MAX_SOURCES: usize = 100;

/// A relation added, with the versions it closed.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct RelationAdded {
    #[serde(flatten)]
    pub relation: Relation,
    /// Whether this call added it (`false`: it was already known, and is returned as it is).
    pub created: bool,
    /// The corrected versions of relations this one contradicted (their validity now ends
    /// where this one's begins); the versions they replace are expired, not deleted.
    pub closed: Vec<Relation>,
}

/// An entity found by a search.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct EntityHit {
    #[serde(flatten)]
    pub entity: Entity,
    pub score: f32,
}

pub struct Graph {
    stores: Stores,
    writes: Arc<WriteLog>,
    search: SearchEngine,
    /// With a model, [`Graph::ingest`] reads texts with it ([`llm`]); else with the rules.
    llm: Option<Arc<dyn crate::llm::Llm>>,
    locks: Vec<tokio::sync::Mutex<()>>,
}

fn check_text(what: &str, value: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(format!("{what} must not be empty")));
    }
    if value.chars().count() > max {
        return Err(Error::invalid(format!("{what} is longer than {max} characters")));
    }
    Ok(())
}

impl Graph {
    pub fn new(
        stores: Stores,
        writes: Arc<WriteLog>,
        search: SearchEngine,
        llm: Option<Arc<dyn crate::llm::Llm>>,
    ) -> Graph {
        Graph { stores, writes, search, llm, locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect() }
    }

    /// Holds the lock of `id`'s relations (in this process and, for a shared record store,
    /// across nodes).
    async fn lock(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<(tokio::sync::MutexGuard<'_, ()>, Option<crate::store::records::ExclusiveGuard>)> {
        let name = short_hash(&[tenant.as_str(), id]);
        let stripe = u64::from_str_radix(&name[..8], 16).unwrap_or(0) as usize % self.locks.len();
        let local = self.locks[stripe].lock().await;
        let cluster = self.stores.records.exclusive(&format!("graph:{name}")).await?;
        Ok((local, cluster))
    }

    async fn entity_record(&self, tenant: &TenantId, id: &str) -> Result<Option<Record>> {
        Ok(self.stores.records.get(tenant, id).await?.filter(|r| r.kind == ENTITY_KIND))
    }

    /// The entities of `ids` that exist, in no particular order. Those whose record key the graph
    /// store knows are read by key; the rest, and any whose key no longer names them (the
    /// graph store is behind a deletion), by id.
    pub async fn entities(&self, tenant: &TenantId, ids: &[String]) -> Result<Vec<Entity>> {
        let keyed = self.stores.graph.node_keys(tenant, ids).await?;
        let keys: Vec<RecordKey> = keyed.iter().map(|(_, key)| *key).collect();
        let mut records =
            if keys.is_empty() { Vec::new() } else { self.stores.records.get_by_keys(tenant, &keys).await? };
        let expected: HashMap<RecordKey, &str> = keyed.iter().map(|(id, key)| (*key, id.as_str())).collect();
        records.retain(|r| expected.get(&r.key) == Some(&r.id.as_str()));
        if records.len() < ids.len() {
            let found: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
            let rest: Vec<String> = ids.iter().filter(|id| !found.contains(id.as_str())).cloned().collect();
            let more = self.stores.records.get_many(tenant, &rest).await?;
            records.extend(more);
        }
        Ok(records.iter().filter(|r| r.kind == ENTITY_KIND).map(Entity::from_record).collect())
    }

    pub async fn entity(&self, tenant: &TenantId, id: &str) -> Result<Entity> {
        match self.entity_record(tenant, id).await? {
            Some(r) => Ok(Entity::from_record(&r)),
            None => Err(Error::not_found("entity", id)),
        }
    }

    /// Adds an entity, or merges aliases, attributes and summary into the one of the same type
    /// and name. Returns it and whether it is new.
    /// With `wait`, answers once every derived store shows it.
    pub async fn add_entity(&self, tenant: &TenantId, new: NewEntity, wait: bool) -> Result<(Entity, bool)> {
        check_text("name", &new.name, MAX_NAME_LEN)?;
        let entity_type = normalise_type(&new.entity_type);
        check_text("type", &entity_type, MAX_TYPE_LEN)
            .map_err(|_| Error::invalid("type must hold letters or digits, at most 64 characters"))?;
        if new.aliases.len() > MAX_ALIASES {
            return Err(Error::invalid(format!("at most {MAX_ALIASES} aliases")));
        }
        for alias in &new.aliases {
            check_text("an alias", alias, MAX_NAME_LEN)?;
        }
        let attributes = match new.attributes {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) => return Err(Error::invalid("attributes must be an object")),
        };
        if let Some(summary) = &new.summary {
            check_text("summary", summary, MAX_FACT_LEN)?;
        }
        let name = new.name.split_whitespace().collect::<Vec<_>>().join(" ");
        let id = entity_id(&entity_type, &name);
        let _lock = self.lock(tenant, &id).await?;
        let existing = self.entity_record(tenant, &id).await?.map(|r| Entity::from_record(&r));
        let mut entity = existing.clone().unwrap_or_else(|| Entity {
            id: id.clone(),
            name: name.clone(),
            entity_type: entity_type.clone(),
            aliases: Vec::new(),
            attributes: Value::Object(Map::new()),
            summary: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        });
        for alias in new.aliases {
            let alias = alias.split_whitespace().collect::<Vec<_>>().join(" ");
            let known = normalise_name(&alias) == normalise_name(&entity.name)
                || entity.aliases.iter().any(|a| normalise_name(a) == normalise_name(&alias));
            if !known {
                entity.aliases.push(alias);
            }
        }
        if let Value::Object(current) = &mut entity.attributes {
            current.extend(attributes);
        }
        if new.summary.is_some() {
            entity.summary = new.summary;
        }
        let created = existing.is_none();
        if let Some(existing) = existing.filter(|e| *e == entity) {
            return Ok((existing, false));
        }
        self.writes.write(tenant, vec![Write::Upsert(entity.to_record())], wait).await?;
        Ok((self.entity(tenant, &id).await?, created))
    }

    /// Finds entities by name, alias or summary (hybrid search), best first.
    pub async fn search_entities(
        &self,
        tenant: &TenantId,
        query: &str,
        entity_type: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EntityHit>> {
        let mut filter = RecordFilter::kinds(&[ENTITY_KIND]);
        if let Some(t) = entity_type {
            filter.metadata.push(("type".into(), normalise_type(t)));
        }
        let request = SearchRequest {
            tenant: tenant.clone(),
            query: query.to_string(),
            mode: Mode::Hybrid,
            filter,
            top_k: limit,
            offset: 0,
            fusion: Fusion::default(),
            snippets: false,
        };
        let hits = self.search.search(&request).await?;
        Ok(hits.into_iter().map(|h| EntityHit { entity: Entity::from_record(&h.record), score: h.score }).collect())
    }

    /// The project's entities in id order after `after`, at most `limit`.
    pub async fn list_entities(
        &self,
        tenant: &TenantId,
        entity_type: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entity>> {
        let mut filter = RecordFilter::kinds(&[ENTITY_KIND]);
        if let Some(t) = entity_type {
            filter.metadata.push(("type".into(), normalise_type(t)));
        }
        if let Some(after) = after {
            filter.after_key = self.stores.records.get(tenant, after).await?.map(|r| r.key);
        }
        let keys = self.stores.records.keys_matching(tenant, &filter, limit).await?;
        let records = self.stores.records.get_by_keys(tenant, &keys).await?;
        Ok(records.iter().map(Entity::from_record).collect())
    }

    /// Every version of `source`'s relations of `relation_type` that Nexus holds now.
    async fn current_relations(&self, tenant: &TenantId, source: &str, relation_type: &str) -> Result<Vec<Relation>> {
        let mut filter = RecordFilter::kinds(&[RELATION_KIND]);
        filter.metadata.push(("source".into(), source.to_string()));
        filter.metadata.push(("type".into(), relation_type.to_string()));
        let keys = self.stores.records.keys_matching(tenant, &filter, MAX_RELATIONS_PER_TYPE + 1).await?;
        if keys.len() > MAX_RELATIONS_PER_TYPE {
            return Err(Error::invalid(format!(
                "{source} already has more than {MAX_RELATIONS_PER_TYPE} relations of type {relation_type}"
            )));
        }
        let records = self.stores.records.get_by_keys(tenant, &keys).await?;
        Ok(records.iter().map(Relation::from_record).filter(|r| r.expired_at.is_none()).collect())
    }

    /// Adds a relation between two entities of the project, resolving contradictions (see the
    /// module doc) in the same write.
    pub async fn add_relation(&self, tenant: &TenantId, new: NewRelation, wait: bool) -> Result<RelationAdded> {
        let relation_type = normalise_type(&new.relation_type);
        check_text("type", &relation_type, MAX_TYPE_LEN)
            .map_err(|_| Error::invalid("type must hold letters or digits, at most 64 characters"))?;
        if new.source == new.target {
            return Err(Error::invalid("a relation joins two different entities: source and target are the same"));
        }
        if let Some(fact) = &new.fact {
            check_text("fact", fact, MAX_FACT_LEN)?;
        }
        let confidence = new.confidence.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&confidence) {
            return Err(Error::invalid("confidence must be between 0 and 1"));
        }
        if let (Some(v), Some(i)) = (new.valid_at, new.invalid_at)
            && i <= v
        {
            return Err(Error::invalid("invalid_at must come after valid_at"));
        }
        if new.sources.len() > MAX_SOURCES {
            return Err(Error::invalid(format!("at most {MAX_SOURCES} sources")));
        }
        let mut names = Vec::new();
        for end in [&new.source, &new.target] {
            match self.entity_record(tenant, end).await? {
                Some(r) => names.push(Entity::from_record(&r).name),
                None => {
                    return Err(Error::new(
                        crate::error::ErrorCode::NotFound,
                        format!(
                            "entity `{end}` not found in this project: a relation joins two of the project's \
                             entities; add them with POST /api/v1/graph/entities first"
                        ),
                    ));
                }
            }
        }

        let _lock = self.lock(tenant, &new.source).await?;
        let now = Utc::now();
        let known = self.current_relations(tenant, &new.source, &relation_type).await?;
        if let Some(same) = known.iter().find(|r| {
            r.target == new.target
                && r.overlaps(new.valid_at, new.invalid_at)
                && (new.valid_at.is_none() || r.valid_at.is_none_or(|v| v <= new.valid_at.unwrap_or(v)))
        }) {
            return Ok(RelationAdded { relation: same.clone(), created: false, closed: Vec::new() });
        }

        let mut relation = Relation {
            id: new_id("rel", &[tenant.as_str(), &new.source, &relation_type, &new.target], now),
            source: new.source,
            relation_type: relation_type.clone(),
            target: new.target,
            fact: new.fact,
            confidence,
            valid_at: new.valid_at,
            invalid_at: new.invalid_at,
            created_at: now,
            expired_at: None,
            sources: new.sources,
            supersedes: None,
            invalidated_by: None,
        };
        let mut writes = Vec::new();
        let mut closed = Vec::new();
        if SINGLE_VALUED.contains(&relation_type.as_str()) {
            let contradicted: Vec<&Relation> = known
                .iter()
                .filter(|r| {
                    r.target != relation.target && r.overlaps(relation.valid_at.or(Some(now)), relation.invalid_at)
                })
                .collect();
            if !contradicted.is_empty() && relation.valid_at.is_none() {
                relation.valid_at = Some(now);
            }
            let starts = relation.valid_at.unwrap_or(now);
            for old in contradicted {
                match old.valid_at {
                    // The new fact is older news: the known one, which began later, closes it.
                    Some(old_start) if old_start >= starts => {
                        relation.invalid_at = Some(relation.invalid_at.map_or(old_start, |i| i.min(old_start)));
                    }
                    _ => {
                        let mut expired = old.clone();
                        expired.expired_at = Some(now);
                        expired.invalidated_by = Some(relation.id.clone());
                        let mut corrected = old.clone();
                        corrected.id = new_id("rel", &[tenant.as_str(), &old.id], now);
                        corrected.invalid_at = Some(old.invalid_at.map_or(starts, |i| i.min(starts)));
                        corrected.created_at = now;
                        corrected.supersedes = Some(old.id.clone());
                        let body = relation_text(&expired, &names);
                        writes.push(Write::Upsert(expired.to_record(body.clone())));
                        writes.push(Write::Upsert(corrected.to_record(body)));
                        closed.push(corrected);
                    }
                }
            }
        }
        if relation.valid_at.zip(relation.invalid_at).is_some_and(|(v, i)| i <= v) {
            // Entirely before a known fact that began at the same moment: nothing left to add.
            return Err(Error::invalid(format!(
                "{} already holds a {relation_type} relation from the same moment; give valid_at to say when this one held",
                relation.source
            )));
        }
        writes.push(Write::Upsert(relation.to_record(relation_text(&relation, &names))));
        self.writes.write(tenant, writes, wait).await?;
        Ok(RelationAdded { relation, created: true, closed })
    }

    /// What `texts` say, one [`extract::Extraction`] per text with the confidence of its
    /// relations: read by the language model when one is configured, a batch per call
    /// ([`llm`]), else (or when the model fails on a batch) by the rules ([`extract`]).
    async fn read(
        &self,
        texts: &[(String, String)],
        known: &[(String, String)],
        out: &mut Ingested,
    ) -> Vec<(extract::Extraction, f64)> {
        let rules = |range: std::ops::Range<usize>| {
            texts[range].iter().map(|(t, _)| (extract::extract(t, known), RULE_CONFIDENCE)).collect::<Vec<_>>()
        };
        let Some(model) = &self.llm else {
            return rules(0..texts.len());
        };
        let bodies: Vec<String> = texts.iter().map(|(t, _)| t.clone()).collect();
        let mut read = Vec::with_capacity(texts.len());
        for range in llm::batches(&bodies) {
            let why = match llm::read(model.as_ref(), &bodies[range.clone()], known).await {
                Ok(Ok(found)) => {
                    out.llm_batches += 1;
                    read.extend(found.into_iter().map(|f| (f, LLM_CONFIDENCE)));
                    continue;
                }
                Ok(Err(problem)) => problem,
                Err(e) => e.message,
            };
            tracing::warn!(error = %why, "the model could not read entities; the rules read this batch");
            out.rule_batches += 1;
            read.extend(rules(range));
        }
        read
    }

    /// Reads entities and relations from texts (see `Graph::read`: the language model when
    /// configured, else the rules) and adds them: each name resolved to an entity of the
    /// project (see [`Graph::resolve`]; a lone first name to the one person of this ingest
    /// named in full with it), each relation with the text's id among its `sources`. `known`:
    /// names that are entities whatever their case (speakers, participants), with their type.
    pub async fn ingest(
        &self,
        tenant: &TenantId,
        texts: &[(String, String)],
        known: &[(String, String)],
    ) -> Result<Ingested> {
        let mut resolved: HashMap<String, String> = HashMap::new();
        // People named in full so far, by their first name: "Priya" after "Priya Raman" is her.
        let mut first_names: HashMap<String, Vec<String>> = HashMap::new();
        let mut out = Ingested::default();
        let read = self.read(texts, known, &mut out).await;
        for ((_, source_id), (found, confidence)) in texts.iter().zip(read) {
            for entity in &found.entities {
                let key = normalise_name(&entity.name);
                if resolved.contains_key(&key) {
                    continue;
                }
                if !key.contains(' ')
                    && let Some([id]) = first_names.get(&key).map(Vec::as_slice)
                {
                    resolved.insert(key, id.clone());
                    continue;
                }
                let (id, created) = self.resolve(tenant, entity).await?;
                out.entities += usize::from(created);
                if entity.entity_type == "person"
                    && let Some((first, _)) = key.split_once(' ')
                {
                    let ids = first_names.entry(first.to_string()).or_default();
                    if !ids.contains(&id) {
                        ids.push(id.clone());
                    }
                }
                resolved.insert(key, id);
            }
            for r in found.relations {
                let (Some(source), Some(target)) =
                    (resolved.get(&normalise_name(&r.source.name)), resolved.get(&normalise_name(&r.target.name)))
                else {
                    continue;
                };
                let new = NewRelation {
                    source: source.clone(),
                    relation_type: r.relation_type,
                    target: target.clone(),
                    fact: Some(r.fact.chars().take(MAX_FACT_LEN).collect()),
                    valid_at: r.valid_at,
                    invalid_at: r.invalid_at,
                    confidence: Some(confidence),
                    sources: vec![source_id.clone()],
                };
                match self.add_relation(tenant, new, false).await {
                    Ok(added) => out.relations += usize::from(added.created),
                    // Two names that resolved to one entity, or dates that contradict: skipped.
                    Err(e) if e.code == crate::error::ErrorCode::InvalidRequest => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    /// The project's entity a found name stands for, or a new one: the same name as any type,
    /// else a name or alias equal once normalised among the entities keyword search finds for
    /// it, else a near spelling (Jaro-Winkler at least [`FUZZY_MATCH`]) when both names are
    /// long enough to tell apart (two words or more, six letters or more): short or one-word
    /// names are never merged on spelling alone. Returns the id and whether it is new.
    pub async fn resolve(&self, tenant: &TenantId, found: &extract::Found) -> Result<(String, bool)> {
        let mut types = vec![found.entity_type.as_str()];
        types.extend(KNOWN_TYPES.iter().filter(|t| **t != found.entity_type));
        for t in types {
            let id = entity_id(t, &found.name);
            if self.entity_record(tenant, &id).await?.is_some() {
                return Ok((id, false));
            }
        }
        let name = normalise_name(&found.name);
        let filter = RecordFilter::kinds(&[ENTITY_KIND]);
        let request = SearchRequest {
            tenant: tenant.clone(),
            query: found.name.clone(),
            mode: Mode::Keyword,
            filter,
            top_k: 5,
            offset: 0,
            fusion: Fusion::default(),
            snippets: false,
        };
        let candidates: Vec<Entity> =
            self.search.search(&request).await?.iter().map(|h| Entity::from_record(&h.record)).collect();
        let same = |e: &Entity| normalise_name(&e.name) == name || e.aliases.iter().any(|a| normalise_name(a) == name);
        if let Some(e) = candidates.iter().find(|e| same(e)) {
            return Ok((e.id.clone(), false));
        }
        let distinct =
            |n: &str| n.split_whitespace().count() >= 2 && n.chars().filter(|c| c.is_alphabetic()).count() >= 6;
        if distinct(&name)
            && let Some(e) = candidates.iter().find(|e| {
                let other = normalise_name(&e.name);
                distinct(&other) && strsim::jaro_winkler(&name, &other) >= FUZZY_MATCH
            })
        {
            return Ok((e.id.clone(), false));
        }
        let new = NewEntity {
            name: found.name.clone(),
            entity_type: found.entity_type.clone(),
            aliases: Vec::new(),
            attributes: None,
            summary: None,
        };
        let (entity, created) = self.add_entity(tenant, new, false).await?;
        Ok((entity.id, created))
    }

    /// Runs `algorithm` over the project's entities and the relations `view` admits (only
    /// entities of `entity_types` when given), directed or not. With `store`, each entity's
    /// value is kept in its attributes under the algorithm's name. Results come best first
    /// (components and communities: by number, then id).
    pub async fn analytics(
        &self,
        tenant: &TenantId,
        algorithm: analytics::Algorithm,
        view: &View,
        entity_types: &[String],
        directed: bool,
        store: bool,
    ) -> Result<Vec<(String, f64)>> {
        let limits = analytics::Limits::default();
        let types: Vec<String> = entity_types.iter().map(|t| normalise_type(t)).collect();
        let mut entities: Vec<Entity> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.list_entities(tenant, None, after.as_deref(), 5000).await?;
            let Some(last) = page.last().map(|e| e.id.clone()) else { break };
            let full = page.len() == 5000;
            entities.extend(page.into_iter().filter(|e| types.is_empty() || types.contains(&e.entity_type)));
            if entities.len() > limits.max_nodes {
                return Err(Error::new(
                    crate::error::ErrorCode::PayloadTooLarge,
                    format!("more than {} entities in this view; narrow it with entity_types", limits.max_nodes),
                ));
            }
            if !full {
                break;
            }
            after = Some(last);
        }
        let ids: std::collections::HashSet<&str> = entities.iter().map(|e| e.id.as_str()).collect();
        let relations = self.relations(tenant, view, limits.max_edges).await?;
        let edges = relations
            .iter()
            .filter(|r| ids.contains(r.source.as_str()) && ids.contains(r.target.as_str()))
            .map(|r| (r.source.as_str(), r.target.as_str(), None));
        let nodes = entities.iter().map(|e| e.id.as_str());
        let graph = analytics::AnalyticsGraph::new(directed, nodes, edges, limits)?;
        let mut results = analytics::run(&graph, algorithm, &analytics::Options::default())?;
        match algorithm {
            analytics::Algorithm::Components | analytics::Algorithm::Communities => {
                results.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)))
            }
            _ => results.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0))),
        }
        if store {
            let values: HashMap<&str, f64> = results.iter().map(|(id, v)| (id.as_str(), *v)).collect();
            let mut writes = Vec::new();
            for mut entity in entities {
                let Some(value) = values.get(entity.id.as_str()) else { continue };
                if let Value::Object(attributes) = &mut entity.attributes {
                    attributes.insert(algorithm.as_str().to_string(), serde_json::json!(value));
                }
                writes.push(Write::Upsert(entity.to_record()));
                if writes.len() == 500 {
                    self.writes.write(tenant, std::mem::take(&mut writes), false).await?;
                }
            }
            if !writes.is_empty() {
                self.writes.write(tenant, writes, false).await?;
            }
        }
        Ok(results)
    }

    /// Every relation version Nexus holds between entities of the project, as `view` admits,
    /// read from the record (at most `limit`; more is an error).
    pub async fn relations(&self, tenant: &TenantId, view: &View, limit: usize) -> Result<Vec<Relation>> {
        let mut out = Vec::new();
        let mut filter = RecordFilter::kinds(&[RELATION_KIND]);
        loop {
            let keys = self.stores.records.keys_matching(tenant, &filter, 5000).await?;
            let Some(&last) = keys.last() else { break };
            for record in self.stores.records.get_by_keys(tenant, &keys).await? {
                let relation = Relation::from_record(&record);
                if view.admits(&relation) && relation.source != relation.target {
                    out.push(relation);
                }
            }
            if out.len() > limit {
                return Err(Error::invalid(format!(
                    "the graph holds more than {limit} relations in this view; narrow it with types or as_of"
                )));
            }
            filter.after_key = Some(last);
        }
        Ok(out)
    }
}

/// A fresh id: a hash of what it is about and the moment, plus a random part.
fn new_id(prefix: &str, parts: &[&str], now: DateTime<Utc>) -> String {
    let nonce = uuid::Uuid::now_v7().to_string();
    let micros = now.timestamp_micros().to_string();
    let mut all: Vec<&str> = parts.to_vec();
    all.push(&micros);
    all.push(&nonce);
    format!("{prefix}_{}", short_hash(&all))
}

/// The text a relation is found by: its fact, else its ends and type in words.
fn relation_text(relation: &Relation, names: &[String]) -> String {
    match &relation.fact {
        Some(fact) => fact.clone(),
        None => format!(
            "{} {} {}",
            names.first().map_or("", String::as_str),
            relation.relation_type.replace('_', " "),
            names.get(1).map_or("", String::as_str)
        ),
    }
}
