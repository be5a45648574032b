//! Entities and relations read by a language model: one structured call per batch of texts.
//!
//! The model lists the entities the texts name (with their type and the other names used for
//! them) and the relations the texts state, each with the number of the text it came from and,
//! when the text says, the dates it started and stopped being true. A malformed answer is
//! repaired, then asked for again once ([`crate::llm::json::ask_json`]); an answer that still
//! cannot be read is reported so the caller can use the rules ([`super::extract`]) instead.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

use super::extract::{Extraction, Found, FoundRelation};
use super::model::normalise_type;
use crate::error::Result;
use crate::llm::json::ask_json;
use crate::llm::{ChatMessage, ChatRequest, Llm};

/// Characters of text one call carries at most (a longer single text is sent alone).
pub const BATCH_CHARS: usize = 6_000;

const PROMPT: &str = "You build a knowledge graph from texts. The texts are numbered [1], [2] and so \
on. List the entities they name: people, organizations, places, projects and teams, each with its \
type (person, organization, place, project, team, or entity when none fits) and the other names the \
texts use for it (aliases). Then list the relations the texts state between those entities, each as \
{source, type, target, fact, text, valid_at, invalid_at}: source and target are entity names as \
listed, type a short snake_case verb phrase (works_for, reports_to, lives_in, member_of, manages, \
assigned_to, founded, ...), fact the statement in one sentence, text the number of the text that \
states it, valid_at and invalid_at the dates it began and stopped being true as YYYY-MM-DD when the \
text says so, else null. Do not invent facts the texts do not state. Answer with JSON only: \
{\"entities\": [{\"name\": \"...\", \"type\": \"person\", \"aliases\": []}], \
\"relations\": [{\"source\": \"...\", \"type\": \"works_for\", \"target\": \"...\", \"fact\": \"...\", \
\"text\": 1, \"valid_at\": null, \"invalid_at\": null}]}. If there is nothing, answer \
{\"entities\": [], \"relations\": []}.";

#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    entities: Vec<EntityItem>,
    #[serde(default)]
    relations: Vec<RelationItem>,
}

#[derive(Debug, Deserialize)]
struct EntityItem {
    name: String,
    #[serde(default, rename = "type", alias = "entity_type")]
    entity_type: Option<String>,
    #[serde(default)]
    aliases: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct RelationItem {
    source: String,
    #[serde(rename = "type", alias = "relationship", alias = "relation")]
    relation_type: String,
    #[serde(alias = "destination")]
    target: String,
    #[serde(default)]
    fact: Option<String>,
    #[serde(default)]
    text: Option<serde_json::Value>,
    #[serde(default)]
    valid_at: Option<String>,
    #[serde(default)]
    invalid_at: Option<String>,
}

/// An entity type as the graph keeps it: one lowercase word (`organisation` is `organization`),
/// `entity` when missing or not a word.
pub fn clean_entity_type(given: Option<&str>) -> String {
    let t = given.unwrap_or_default().trim().to_lowercase().replace([' ', '-'], "_");
    let t = if t == "organisation" { "organization".to_string() } else { t };
    if t.is_empty() || t.len() > 32 || !t.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
        "entity".to_string()
    } else {
        t
    }
}

/// A model's date: `YYYY-MM-DD` (midnight UTC) or RFC 3339; anything else is no date.
fn date(text: Option<&str>) -> Option<DateTime<Utc>> {
    let text = text?.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().map(|d| d.and_hms_opt(0, 0, 0).unwrap().and_utc())
}

/// The texts, in batches of at most [`BATCH_CHARS`] characters (a longer text alone).
pub fn batches(texts: &[String]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, text) in texts.iter().enumerate() {
        let len = text.chars().count();
        if i > start && size + len > BATCH_CHARS {
            out.push(start..i);
            (start, size) = (i, 0);
        }
        size += len;
    }
    if start < texts.len() {
        out.push(start..texts.len());
    }
    out
}

/// What the model reads from `texts` (one batch), one [`Extraction`] per text. The outer error
/// is a failure to reach the model; the inner one, an answer that could not be read.
pub async fn read(
    llm: &dyn Llm,
    texts: &[String],
    known: &[(String, String)],
) -> Result<std::result::Result<Vec<Extraction>, String>> {
    let mut user = String::new();
    if !known.is_empty() {
        let names: Vec<String> = known.iter().map(|(n, t)| format!("{n} ({t})")).collect();
        user.push_str(&format!("Known entities: {}.\n\n", names.join(", ")));
    }
    for (i, text) in texts.iter().enumerate() {
        user.push_str(&format!("[{}] {}\n", i + 1, text.trim()));
    }
    let request = |problem: Option<String>| {
        let mut messages = vec![ChatMessage::system(PROMPT), ChatMessage::user(user.clone())];
        if let Some(problem) = problem {
            messages.push(ChatMessage::user(problem));
        }
        ChatRequest { messages, max_tokens: None, temperature: Some(0.0), json: true }
    };
    let answer = match ask_json::<Answer>(llm, request(None), request).await? {
        Ok((answer, _)) => answer,
        Err(problem) => return Ok(Err(problem)),
    };
    Ok(Ok(assign(answer, texts, known)))
}

/// Spreads the model's answer over the texts: each entity to the first text naming it (else
/// the first), each relation to the text it names (else the first naming its source); alias
/// ends become the entity's name.
fn assign(answer: Answer, texts: &[String], known: &[(String, String)]) -> Vec<Extraction> {
    let mut out = vec![Extraction::default(); texts.len()];
    let lower: Vec<String> = texts.iter().map(|t| t.to_lowercase()).collect();
    let first_naming = |name: &str| lower.iter().position(|t| t.contains(&name.to_lowercase()));
    let mut canonical: Vec<(String, Found)> = Vec::new(); // (a name or alias, lowercased; the entity)
    for e in answer.entities {
        let name = e.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            continue;
        }
        let known_type = known.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, t)| t.as_str());
        let found =
            Found { name: name.to_string(), entity_type: clean_entity_type(known_type.or(e.entity_type.as_deref())) };
        for alias in std::iter::once(name).chain(e.aliases.iter().map(|a| a.trim())) {
            if !alias.is_empty() && !canonical.iter().any(|(a, _)| a == &alias.to_lowercase()) {
                canonical.push((alias.to_lowercase(), found.clone()));
            }
        }
        let at = first_naming(name).unwrap_or(0);
        if !out[at].entities.iter().any(|f| f.name.eq_ignore_ascii_case(name)) {
            out[at].entities.push(found);
        }
    }
    let entity = |name: &str| -> Option<Found> {
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        Some(canonical.iter().find(|(a, _)| *a == name.to_lowercase()).map(|(_, f)| f.clone()).unwrap_or_else(|| {
            let t = known.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, t)| t.as_str());
            Found { name: name.to_string(), entity_type: clean_entity_type(t) }
        }))
    };
    for r in answer.relations {
        let (Some(source), Some(target)) = (entity(&r.source), entity(&r.target)) else { continue };
        let relation_type = normalise_type(&r.relation_type);
        if relation_type.is_empty() || relation_type.len() > 64 {
            continue;
        }
        let numbered = r.text.as_ref().and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()));
        let at = numbered
            .and_then(|n| (n as usize).checked_sub(1))
            .filter(|i| *i < texts.len())
            .or_else(|| first_naming(&source.name))
            .unwrap_or(0);
        let fact = r.fact.filter(|f| !f.trim().is_empty()).unwrap_or_else(|| texts[at].clone());
        for end in [&source, &target] {
            if !out.iter().any(|x| x.entities.iter().any(|f| f.name.eq_ignore_ascii_case(&end.name))) {
                out[at].entities.push(end.clone());
            }
        }
        out[at].relations.push(FoundRelation {
            source,
            relation_type,
            target,
            fact,
            valid_at: date(r.valid_at.as_deref()),
            invalid_at: date(r.invalid_at.as_deref()),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_spread_over_their_texts_with_aliases_resolved() {
        let texts = vec!["Robert Smith joined Acme in 2020.".to_string(), "Bob now lives in Oslo.".to_string()];
        let answer: Answer = serde_json::from_str(
            r#"{"entities": [{"name": "Robert Smith", "type": "Person", "aliases": ["Bob"]},
                             {"name": "Acme", "type": "organisation"}, {"name": "Oslo", "type": "city!"}],
                "relations": [{"source": "Robert Smith", "type": "Works For", "target": "Acme",
                               "text": 1, "valid_at": "2020-01-01", "fact": "Robert Smith joined Acme."},
                              {"source": "Bob", "relationship": "lives_in", "destination": "Oslo", "text": "2"},
                              {"source": "", "type": "x", "target": "Acme"}]}"#,
        )
        .unwrap();
        let read = assign(answer, &texts, &[]);
        assert_eq!(read[0].entities.len(), 2);
        assert_eq!(read[0].entities[1].entity_type, "organization");
        assert_eq!(read[0].relations[0].relation_type, "works_for");
        assert_eq!(read[0].relations[0].valid_at.unwrap().to_rfc3339(), "2020-01-01T00:00:00+00:00");
        let moved = &read[1].relations[0];
        assert_eq!((moved.source.name.as_str(), moved.target.name.as_str()), ("Robert Smith", "Oslo"));
        assert_eq!(moved.target.entity_type, "entity", "a type that is not a word is no type");
        assert_eq!(moved.fact, texts[1], "no fact given: the text is the fact");
        assert_eq!(read.iter().map(|r| r.relations.len()).sum::<usize>(), 2, "an empty end is dropped");
    }

    #[test]
    fn texts_are_batched_by_size() {
        let texts: Vec<String> = [10, BATCH_CHARS, 10, 10].iter().map(|n| "a".repeat(*n)).collect();
        assert_eq!(batches(&texts), vec![0..1, 1..2, 2..4]);
        assert!(batches(&[]).is_empty());
    }
}
