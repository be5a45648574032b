//! Walks over the graph store that see only the relations a [`View`] admits: valid at a moment
//! (`as_of`), known at a moment (`known_at`), of some types. Level by level, so a store answers
//! one question per level whatever it is (in memory or a server).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::model::Relation;
use crate::error::{Error, Result};
use crate::store::graph::{GraphEdge, GraphStore};
use crate::store::{RecordKey, TenantId};

/// Which relations a walk or an analysis sees.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Valid time: only relations true at this moment. `None`: whenever they were true.
    pub as_of: Option<DateTime<Utc>>,
    /// System time: relations as Nexus knew them at this moment. `None`: what it knows now.
    pub known_at: Option<DateTime<Utc>>,
    /// Only relations of these (normalised) types; empty: all.
    pub types: Vec<String>,
}

impl View {
    pub fn admits(&self, relation: &Relation) -> bool {
        (self.types.is_empty() || self.types.contains(&relation.relation_type))
            && relation.known_at_time(self.known_at)
            && self.as_of.is_none_or(|t| relation.valid_at_time(t))
    }

    /// Refuses a `known_at` after now: Nexus cannot know the future's knowledge.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<()> {
        if self.known_at.is_some_and(|k| k > now) {
            return Err(Error::invalid(
                "known_at is in the future: it asks what Nexus knew at a moment, so it can be at most now \
                 (for facts planned ahead, use as_of)",
            ));
        }
        Ok(())
    }
}

/// What a walk reached: each entity id with its distance, and the relations it took.
#[derive(Debug, Default)]
pub struct Walked {
    pub reached: Vec<(String, usize)>,
    pub relations: Vec<Relation>,
}

/// The relations at `ids` that `view` admits, each once, in key order.
async fn admitted_at(store: &dyn GraphStore, tenant: &TenantId, ids: &[String], view: &View) -> Result<Vec<Relation>> {
    let mut admitted = Vec::new();
    store.visit_edges_at(tenant, ids, &mut |e| admit(e, view, &mut admitted)).await?;
    admitted.sort_by_key(|(key, _)| *key);
    admitted.dedup_by_key(|(key, _)| *key);
    Ok(admitted.into_iter().map(|(_, relation)| relation).collect())
}

/// Keeps an edge's relation when `view` admits it (a self-loop never).
fn admit(edge: &GraphEdge, view: &View, into: &mut Vec<(RecordKey, Relation)>) {
    if edge.source != edge.target {
        let relation = Relation::from_edge(edge);
        if view.admits(&relation) {
            into.push((edge.key, relation));
        }
    }
}

/// Every entity within `hops` relations of `start` (either direction), nearest first, and every
/// admitted relation among them. More than `limit` entities is an error, not a truncated answer.
pub async fn neighbourhood(
    store: &dyn GraphStore,
    tenant: &TenantId,
    start: &str,
    hops: usize,
    view: &View,
    limit: usize,
) -> Result<Walked> {
    let mut depth_of: HashMap<String, usize> = HashMap::from([(start.to_string(), 0)]);
    let mut order = vec![(start.to_string(), 0)];
    let mut relations: Vec<Relation> = Vec::new();
    let mut taken: HashSet<String> = HashSet::new();
    let mut frontier = vec![start.to_string()];
    for depth in 1..=hops {
        if frontier.is_empty() {
            break;
        }
        let mut next = Vec::new();
        for relation in admitted_at(store, tenant, &frontier, view).await? {
            for end in [&relation.source, &relation.target] {
                if !depth_of.contains_key(end) {
                    depth_of.insert(end.clone(), depth);
                    next.push(end.clone());
                }
            }
            if taken.insert(relation.id.clone()) {
                relations.push(relation);
            }
        }
        if depth_of.len() > limit + 1 {
            return Err(Error::invalid(format!(
                "more than {limit} entities lie within {hops} hops of {start}; ask for fewer hops, \
                 narrow the walk with types or as_of, or raise limit"
            )));
        }
        next.sort();
        order.extend(next.iter().map(|id| (id.clone(), depth)));
        frontier = next;
    }
    // Relations among the outermost entities were not walked from either end: add them.
    if !frontier.is_empty() {
        let mut within = Vec::new();
        store.visit_edges_within(tenant, &frontier, &mut |e| admit(e, view, &mut within)).await?;
        relations.extend(within.into_iter().map(|(_, r)| r).filter(|r| taken.insert(r.id.clone())));
    }
    relations.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Walked { reached: order, relations })
}

/// The fewest-relations path from `from` to `to` over admitted relations (either direction):
/// the entity ids along it and the relation taken at each step. `None`: not connected. A search
/// that would visit more than `limit` entities stops with an error.
pub async fn path(
    store: &dyn GraphStore,
    tenant: &TenantId,
    from: &str,
    to: &str,
    view: &View,
    limit: usize,
) -> Result<Option<(Vec<String>, Vec<Relation>)>> {
    if from == to {
        return Ok(Some((vec![from.to_string()], Vec::new())));
    }
    // Entity -> (the entity it was reached from, the relation taken).
    let mut parent: HashMap<String, Option<(String, Relation)>> = HashMap::from([(from.to_string(), None)]);
    let mut frontier = vec![from.to_string()];
    while !frontier.is_empty() {
        let mut next = Vec::new();
        let current: HashSet<String> = frontier.iter().cloned().collect();
        for relation in admitted_at(store, tenant, &frontier, view).await? {
            let pairs = [(&relation.source, &relation.target), (&relation.target, &relation.source)];
            for (near, far) in pairs {
                if current.contains(near) && !parent.contains_key(far) {
                    parent.insert(far.clone(), Some((near.clone(), relation.clone())));
                    next.push(far.clone());
                }
            }
        }
        if parent.contains_key(to) {
            let (mut ids, mut taken) = (vec![to.to_string()], Vec::new());
            let mut at = to.to_string();
            while let Some(Some((previous, relation))) = parent.get(&at) {
                taken.push(relation.clone());
                ids.push(previous.clone());
                at = previous.clone();
            }
            ids.reverse();
            taken.reverse();
            return Ok(Some((ids, taken)));
        }
        if parent.len() > limit {
            return Err(Error::invalid(format!(
                "the search for a path visited more than {limit} entities without reaching {to}; \
                 narrow it with types or as_of"
            )));
        }
        next.sort();
        frontier = next;
    }
    Ok(None)
}
