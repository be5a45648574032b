//! Turning messages into memories: the deterministic extractor, entity spotting, and the LLM's
//! two steps (extract facts; decide ADD / UPDATE / DELETE / NONE against similar memories).
//!
//! The deterministic extractor (used when no LLM is configured) keeps the sentences of user
//! messages that say something about the speaker or the world and drops the rest:
//! - questions, greetings and thanks, and sentences of fewer than three words are dropped;
//! - first-person statements of state or preference (`I am`, `I like`, `my … is`, `I work`, …)
//!   become **factual** memories;
//! - sentences that report something that happened (a past-tense verb or a time expression such
//!   as `yesterday`, `last week`, `in 2019`, `ago`) become **episodic** memories;
//! - other declarative sentences of assistant or system-free messages become **semantic**;
//! - each kept sentence is stored as written, prefixed with the speaker's name when the message
//!   has one (`Alice: I moved to Lyon.`), so the memory stands on its own.
//!
//! Entities are spotted as runs of capitalised words (not sentence-initial function words) plus
//! the speaker; each memory links its speaker to the entities it mentions (`mentions`).

use serde::Deserialize;
use serde_json::Value;

use super::model::{Message, Relation, Tier};
use crate::error::{Error, ErrorCode, Result};
use crate::llm::json::ask_json;
pub use crate::llm::json::read_json;
use crate::llm::{ChatMessage, ChatRequest, Llm};

/// A fact to remember, before it is compared with what is already known.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub text: String,
    pub tier: Tier,
    pub categories: Vec<String>,
    pub relations: Vec<Relation>,
    /// The message it came from (index into the add's messages).
    pub message: usize,
}

const GREETINGS: &[&str] = &[
    "hi",
    "hello",
    "hey",
    "thanks",
    "thank you",
    "bye",
    "goodbye",
    "ok",
    "okay",
    "cool",
    "great",
    "nice",
    "sure",
    "yes",
    "no",
    "yeah",
    "good morning",
    "good night",
    "see you",
];
const FACT_MARKERS: &[&str] = &[
    "i am ",
    "i'm ",
    "i like",
    "i love",
    "i hate",
    "i prefer",
    "i enjoy",
    "i work",
    "i live",
    "i have ",
    "i've got",
    "i usually",
    "i always",
    "i never",
    "i want",
    "i need",
    "i don't like",
    "i dislike",
    "my ",
    "i can't",
    "i cannot",
    "i'm allergic",
    "i own",
    "i speak",
    "i study",
    "i believe",
];
const TIME_MARKERS: &[&str] = &[
    "yesterday",
    "today",
    "tonight",
    "last week",
    "last month",
    "last year",
    "last night",
    "this morning",
    "ago",
    "on monday",
    "on tuesday",
    "on wednesday",
    "on thursday",
    "on friday",
    "on saturday",
    "on sunday",
    "this weekend",
    "last weekend",
    "recently",
    "just ",
];
const PAST_VERBS: &[&str] = &[
    "went",
    "visited",
    "saw",
    "met",
    "moved",
    "bought",
    "started",
    "finished",
    "joined",
    "left",
    "took",
    "made",
    "gave",
    "got",
    "won",
    "lost",
    "ran",
    "read",
    "wrote",
    "built",
    "attended",
    "travelled",
    "traveled",
    "did",
    "had",
    "was",
    "were",
    "became",
    "adopted",
    "painted",
    "signed",
    "graduated",
    "married",
    "learned",
    "tried",
];
/// Capitalised words that are not names.
const NOT_NAMES: &[&str] = &[
    "I",
    "I'm",
    "I've",
    "I'll",
    "I'd",
    "The",
    "A",
    "An",
    "And",
    "But",
    "Or",
    "So",
    "My",
    "Your",
    "Our",
    "We",
    "You",
    "He",
    "She",
    "They",
    "It",
    "This",
    "That",
    "These",
    "Those",
    "What",
    "When",
    "Where",
    "Why",
    "How",
    "Who",
    "Yes",
    "No",
    "Oh",
    "Wow",
    "Hey",
    "Hi",
    "Hello",
    "Thanks",
    "Thank",
    "Ok",
    "Okay",
    "Well",
    "Also",
    "Just",
    "Really",
    "Sure",
    "Great",
    "Nice",
    "Yeah",
    "Do",
    "Did",
    "Is",
    "Are",
    "Was",
    "Were",
    "Have",
    "Has",
    "Can",
    "Could",
    "Would",
    "Should",
    "Will",
    "If",
    "In",
    "On",
    "At",
    "For",
    "With",
    "To",
    "From",
    "Of",
    "By",
    "As",
    "Not",
    "Let",
    "Me",
    "Him",
    "Her",
    "Them",
    "Us",
    "There",
    "Here",
    "Then",
    "Now",
    "Maybe",
    "Sounds",
    "Love",
    "Glad",
    "Good",
    "Awesome",
    "Absolutely",
    "Definitely",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "Today",
    "Yesterday",
    "Tomorrow",
    "It's",
    "That's",
    "What's",
    "Congrats",
];

/// Sentences of a text (Unicode sentence boundaries), trimmed and non-empty.
use crate::graph::extract::sentences;
use crate::graph::llm::clean_entity_type;

fn word_count(text: &str) -> usize {
    text.split_whitespace().filter(|w| w.chars().any(char::is_alphanumeric)).count()
}

fn is_chatter(sentence: &str) -> bool {
    let lower = sentence.to_lowercase();
    let bare = lower.trim_matches(|c: char| !c.is_alphanumeric() && c != ' ').trim();
    if sentence.trim_end().ends_with('?') || word_count(sentence) < 3 {
        return true;
    }
    GREETINGS.iter().any(|g| bare == *g || (bare.starts_with(g) && word_count(bare) <= g.split(' ').count() + 2))
}

/// The tier a sentence belongs to, by the rules of the module documentation.
pub fn classify(sentence: &str, role: &str) -> Tier {
    let lower = format!(" {} ", sentence.to_lowercase());
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric() && c != '\'').filter(|w| !w.is_empty()).collect();
    let happened = TIME_MARKERS.iter().any(|m| lower.contains(m))
        || words.iter().any(|w| PAST_VERBS.contains(w) || (w.len() > 4 && w.ends_with("ed")))
        || words.iter().any(|w| {
            w.len() == 4 && (w.starts_with("19") || w.starts_with("20")) && w.chars().all(|c| c.is_ascii_digit())
        });
    let about_speaker =
        FACT_MARKERS.iter().any(|m| lower.trim_start().starts_with(m) || lower.contains(&format!(" {m}")));
    if happened {
        Tier::Episodic
    } else if about_speaker {
        Tier::Factual
    } else if role == "assistant" || !words.iter().any(|w| matches!(*w, "i" | "me" | "my" | "we" | "our")) {
        Tier::Semantic
    } else {
        Tier::Factual
    }
}

/// The deterministic extractor: see the module documentation.
pub fn extract_without_llm(messages: &[Message]) -> Vec<Candidate> {
    let mut out = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        if message.role == "system" {
            continue;
        }
        let speaker = message.name.as_deref().map(str::trim).filter(|n| !n.is_empty());
        for sentence in sentences(&message.text()) {
            if is_chatter(&sentence) {
                continue;
            }
            let tier = classify(&sentence, &message.role);
            // What an assistant says about itself is not the user's memory.
            if message.role == "assistant" && tier != Tier::Semantic {
                continue;
            }
            let text = match speaker {
                Some(name) => format!("{name}: {sentence}"),
                None => sentence.clone(),
            };
            let relations = sentence_relations(speaker, &sentence);
            out.push(Candidate { text, tier, categories: Vec::new(), relations, message: index });
        }
    }
    out
}

/// Names in a text: runs of capitalised words, skipping common sentence openers.
pub fn spot_entities(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut run: Vec<&str> = Vec::new();
    let flush = |run: &mut Vec<&str>, names: &mut Vec<String>| {
        if !run.is_empty() {
            let name = run.join(" ");
            if !names.contains(&name) {
                names.push(name);
            }
            run.clear();
        }
    };
    for raw in text.split_whitespace() {
        let word = raw.trim_matches(|c: char| !c.is_alphanumeric() && c != '\'' && c != '-');
        let word = word.strip_suffix("'s").unwrap_or(word);
        let capitalised = word.chars().next().is_some_and(char::is_uppercase)
            && word.chars().skip(1).any(char::is_lowercase)
            && !NOT_NAMES.contains(&word);
        if capitalised {
            run.push(word);
        } else {
            flush(&mut run, &mut names);
        }
        if raw.ends_with(['.', ',', '!', '?', ';', ':']) {
            flush(&mut run, &mut names);
        }
    }
    flush(&mut run, &mut names);
    names
}

/// The relations the graph's rule set reads from what `speaker` said (`Caroline lives_in
/// Sweden` from Caroline's "I moved to Sweden"), then `speaker mentions X` for every other
/// entity X of the sentence.
pub fn sentence_relations(speaker: Option<&str>, sentence: &str) -> Vec<Relation> {
    let read = crate::graph::extract::extract_said_by(sentence, &[], speaker);
    let mut out: Vec<Relation> = read
        .relations
        .iter()
        .map(|r| Relation {
            source: r.source.name.clone(),
            source_type: r.source.entity_type.clone(),
            relationship: r.relation_type.clone(),
            target: r.target.name.clone(),
            target_type: r.target.entity_type.clone(),
            score: None,
        })
        .collect();
    let type_of = |name: &str| {
        read.entities
            .iter()
            .find(|e| e.name.eq_ignore_ascii_case(name))
            .map_or(super::model::UNKNOWN_TYPE, |e| e.entity_type.as_str())
            .to_string()
    };
    for mut mention in mention_relations(speaker, sentence) {
        if !out.iter().any(|r| r.target.eq_ignore_ascii_case(&mention.target)) {
            mention.target_type = type_of(&mention.target);
            out.push(mention);
        }
    }
    out
}

/// `speaker mentions X` for every entity X of the sentence (without a speaker, none).
pub fn mention_relations(speaker: Option<&str>, sentence: &str) -> Vec<Relation> {
    let Some(speaker) = speaker else { return Vec::new() };
    spot_entities(sentence)
        .into_iter()
        .filter(|e| !e.eq_ignore_ascii_case(speaker))
        .map(|target| Relation { source_type: "person".into(), ..Relation::new(speaker, "mentions", target) })
        .collect()
}

// ---- The LLM's two steps -------------------------------------------------------------------

const EXTRACT_PROMPT: &str = "You extract memories from a conversation for a long-term memory store. \
Return the facts worth remembering about the people, their preferences, plans, relationships and what \
happened to them, each as one short self-contained sentence in the language of the conversation, naming \
the person instead of using pronouns. Skip greetings, small talk and questions. For each fact give its \
tier: \"factual\" (a stable fact or preference), \"episodic\" (something that happened at a time; include \
the date when known) or \"semantic\" (general knowledge not about a person), and up to three short \
lowercase categories. Also list relations between named entities as {source, source_type, \
relationship, target, target_type} with a snake_case relationship and each type one of person, \
organization, place, project, team or entity. Answer with JSON only: \
{\"facts\": [{\"text\": \"...\", \"tier\": \"factual\", \"categories\": [\"...\"]}], \
\"relations\": [{\"source\": \"...\", \"source_type\": \"person\", \"relationship\": \"...\", \
\"target\": \"...\", \"target_type\": \"organization\"}]}. \
If there is nothing worth remembering, answer {\"facts\": [], \"relations\": []}.";

const DECIDE_PROMPT: &str = "You maintain a memory store. You get the EXISTING memories (each with an \
id) and NEW facts. For each new fact decide: ADD (new information), UPDATE an existing memory (same \
subject, the new fact refines or corrects it: give the merged text), DELETE an existing memory (the new \
fact contradicts it), or NONE (already known). Use only the ids given; for ADD give no id. Answer with \
JSON only: {\"memory\": [{\"id\": \"0\", \"text\": \"...\", \"event\": \"ADD|UPDATE|DELETE|NONE\", \
\"old_memory\": \"...\"}]}.";

#[derive(Debug, Deserialize)]
struct ExtractAnswer {
    #[serde(default)]
    facts: Vec<FactItem>,
    #[serde(default)]
    relations: Vec<RelationItem>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FactItem {
    Text(String),
    Full {
        text: String,
        #[serde(default)]
        tier: Option<String>,
        #[serde(default)]
        categories: Vec<String>,
    },
}

#[derive(Debug, Deserialize)]
struct RelationItem {
    source: String,
    #[serde(default)]
    source_type: Option<String>,
    relationship: String,
    #[serde(alias = "destination")]
    target: String,
    #[serde(default, alias = "destination_type")]
    target_type: Option<String>,
}

/// The facts the model found, and whether the answer had to be repaired or retried.
pub struct Extracted {
    pub candidates: Vec<Candidate>,
    pub relations: Vec<Relation>,
    pub note: Option<String>,
    /// The model's answer was unusable and the deterministic extractor produced the candidates.
    pub fell_back: bool,
}

/// Step one: the model lists facts. A malformed answer is repaired, then asked for again once;
/// after that the deterministic extractor takes over (and the note says so), so nothing is dropped.
pub async fn extract_with_llm(
    llm: &dyn Llm,
    messages: &[Message],
    custom_instructions: Option<&str>,
) -> Result<Extracted> {
    let conversation: String = messages
        .iter()
        .filter(|m| m.role != "system")
        .map(|m| format!("{}: {}", m.name.as_deref().unwrap_or(&m.role), m.text()))
        .collect::<Vec<_>>()
        .join("\n");
    let mut system = EXTRACT_PROMPT.to_string();
    if let Some(extra) = custom_instructions.filter(|s| !s.trim().is_empty()) {
        system.push_str("\nAlso follow these instructions: ");
        system.push_str(extra);
    }
    let request = |extra: Option<String>| {
        let mut msgs =
            vec![ChatMessage::system(system.clone()), ChatMessage::user(format!("Conversation:\n{conversation}"))];
        if let Some(e) = extra {
            msgs.push(ChatMessage::user(e));
        }
        ChatRequest { json: true, temperature: Some(0.0), ..ChatRequest::new(msgs) }
    };
    match ask_json::<ExtractAnswer>(llm, request(None), request).await? {
        Ok((answer, repaired)) => {
            let candidates = answer
                .facts
                .into_iter()
                .filter_map(|f| {
                    let (text, tier, categories) = match f {
                        FactItem::Text(t) => (t, None, Vec::new()),
                        FactItem::Full { text, tier, categories } => (text, tier, categories),
                    };
                    let text = text.trim().to_string();
                    (!text.is_empty()).then(|| Candidate {
                        tier: tier.as_deref().and_then(Tier::parse).unwrap_or_else(|| classify(&text, "user")),
                        categories: categories
                            .into_iter()
                            .map(|c| c.trim().to_lowercase())
                            .filter(|c| !c.is_empty())
                            .take(5)
                            .collect(),
                        relations: Vec::new(),
                        message: 0,
                        text,
                    })
                })
                .collect();
            let relations = answer
                .relations
                .into_iter()
                .filter(|r| {
                    !r.source.trim().is_empty() && !r.target.trim().is_empty() && !r.relationship.trim().is_empty()
                })
                .map(|r| Relation {
                    source: r.source.trim().to_string(),
                    source_type: clean_entity_type(r.source_type.as_deref()),
                    relationship: r.relationship.trim().to_lowercase().replace(' ', "_"),
                    target: r.target.trim().to_string(),
                    target_type: clean_entity_type(r.target_type.as_deref()),
                    score: None,
                })
                .collect();
            Ok(Extracted {
                candidates,
                relations,
                note: repaired.then(|| "the model's facts were repaired JSON".into()),
                fell_back: false,
            })
        }
        Err(problem) => Ok(Extracted {
            candidates: extract_without_llm(messages),
            relations: Vec::new(),
            note: Some(format!(
                "the model's facts could not be read ({problem}); the deterministic extractor was used"
            )),
            fell_back: true,
        }),
    }
}

/// An existing memory shown to the model under a short id.
pub struct Known {
    pub short_id: String,
    pub text: String,
}

#[derive(Debug, Deserialize)]
struct DecideAnswer {
    #[serde(default)]
    memory: Vec<DecisionItem>,
}

#[derive(Debug, Deserialize)]
struct DecisionItem {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    text: Option<String>,
    event: String,
}

/// What the model decided for one fact, with ids still the short ones it was shown.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Add { text: String },
    Update { short_id: String, text: String },
    Delete { short_id: String },
    None { short_id: Option<String> },
}

/// Step two: the model compares the facts with the similar memories. `Err(note)` when its answer
/// could not be read even after a repair and a retry (the caller then adds the facts as they are).
pub async fn decide_with_llm(
    llm: &dyn Llm,
    known: &[Known],
    facts: &[String],
) -> Result<std::result::Result<(Vec<Decision>, Option<String>), String>> {
    let existing: Vec<Value> = known.iter().map(|k| serde_json::json!({"id": k.short_id, "text": k.text})).collect();
    let body = serde_json::json!({"existing": existing, "new_facts": facts});
    let request = |extra: Option<String>| {
        let mut msgs = vec![ChatMessage::system(DECIDE_PROMPT), ChatMessage::user(body.to_string())];
        if let Some(e) = extra {
            msgs.push(ChatMessage::user(e));
        }
        ChatRequest { json: true, temperature: Some(0.0), ..ChatRequest::new(msgs) }
    };
    Ok(match ask_json::<DecideAnswer>(llm, request(None), request).await? {
        Ok((answer, repaired)) => {
            let id_of = |v: &Option<Value>| match v {
                Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            let decisions = answer
                .memory
                .into_iter()
                .filter_map(|d| {
                    let text = d.text.map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
                    let id = id_of(&d.id);
                    match d.event.trim().to_uppercase().as_str() {
                        "ADD" => text.map(|text| Decision::Add { text }),
                        "UPDATE" => match (id, text) {
                            (Some(short_id), Some(text)) => Some(Decision::Update { short_id, text }),
                            (None, Some(text)) => Some(Decision::Add { text }),
                            _ => None,
                        },
                        "DELETE" => id.map(|short_id| Decision::Delete { short_id }),
                        _ => Some(Decision::None { short_id: id }),
                    }
                })
                .collect();
            Ok((decisions, repaired.then(|| "the model's decisions were repaired JSON".into())))
        }
        Err(problem) => Err(format!("the model's decisions could not be read ({problem})")),
    })
}

/// A model answer that cannot be used at all is an upstream failure, not the caller's.
pub fn llm_failure(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::LlmUnavailable, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_extractor_keeps_facts_and_events_and_drops_chatter() {
        let messages = vec![
            Message {
                name: Some("Alice".into()),
                ..Message::user(
                    "Hi! I'm a vegetarian and I live in Lyon. What should I cook tonight? Yesterday I visited Marie in Paris.",
                )
            },
            Message { role: "assistant".into(), content: "Sure! How about a ratatouille?".into(), name: None },
        ];
        let got = extract_without_llm(&messages);
        let texts: Vec<&str> = got.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert_eq!(got[0].text, "Alice: I'm a vegetarian and I live in Lyon.");
        assert_eq!(got[0].tier, Tier::Factual);
        assert_eq!(got[1].tier, Tier::Episodic);
        let targets: Vec<&str> = got[1].relations.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets, vec!["Marie", "Paris"]);
    }

    #[test]
    fn entities_are_capitalised_runs_not_openers() {
        assert_eq!(
            spot_entities("The LGBTQ support group met at Central Park with John Smith."),
            vec!["Central Park", "John Smith"]
        );
        assert!(spot_entities("I went home.").is_empty());
    }

    #[test]
    fn malformed_json_is_repaired() {
        let (v, repaired): (Value, bool) = read_json("Sure! ```json\n{\"facts\": [\"likes tea\",],}\n```").unwrap();
        assert!(repaired);
        assert_eq!(v["facts"][0], "likes tea");
        assert!(read_json::<Value>("no json here").is_err());
    }
}
