//! The rule-based extractor: entities and relations read from text without a language model.
//!
//! Per sentence:
//! - **Patterns** between two names: "X works at/for Y", "X joined Y", "X is employed by Y"
//!   (`works_for`); "X, the `<role>` of Y" and "X is the `<role>` at Y" (`role_at`, the role kept as
//!   the fact); "X reports to Y" (`reports_to`); "X lives in Y", "X moved to Y", "X is from Y"
//!   (`lives_in`); "X manages/leads/runs Y" (`manages`); "X is a member of Y", "X belongs to Y"
//!   (`member_of`); "X married Y" (`married_to`); "assigned to X" (X is a person). A "the"
//!   before the second name is allowed ("a member of the Chess Club").
//! - **Names** are runs of capitalised words (joined by `of`, `de`, `van`...), without sentence
//!   openers ("Yesterday", "The"); the known names (speakers, participants, users, the project's
//!   entities) are always found, in any case.
//! - **Types** come from the pattern (who works for whom), then from cues: an organisation's
//!   suffix (Inc, Corp, University, Labs...), a title before a person (Dr, Ms...); otherwise
//!   `entity`.
//! - **Dates** in the sentence give the relation's validity: "since/in/from/as of/on `<date>`"
//!   its start, "until/till `<date>`" its end (ISO dates, "March 2021", "March 3, 2021", years).
//!
//! Resolving the names found against the project's entities is the caller's (see
//! [`super::Graph::ingest`]).

use std::sync::LazyLock;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use regex::Regex;

/// An entity named in the text.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub name: String,
    /// `person`, `organization`, `place`, or `entity` when nothing says.
    pub entity_type: String,
}

/// A relation read from a sentence, between names.
#[derive(Clone, Debug, PartialEq)]
pub struct FoundRelation {
    pub source: Found,
    pub relation_type: String,
    pub target: Found,
    /// The sentence it was read from.
    pub fact: String,
    pub valid_at: Option<DateTime<Utc>>,
    pub invalid_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Extraction {
    pub entities: Vec<Found>,
    pub relations: Vec<FoundRelation>,
}

const NAME: &str = r"[A-Z][\p{L}\p{N}'’&.-]*(?:\s+(?:(?:of|de|du|da|van|von|der|la|le)\s+)?[A-Z][\p{L}\p{N}'’&.-]*)*";

/// Words that open sentences or are capitalised for other reasons: never a name's first word.
const OPENERS: &[&str] = &[
    "I",
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
    "Hey",
    "Hi",
    "Hello",
    "Thanks",
    "Ok",
    "Okay",
    "Well",
    "Also",
    "Just",
    "Yesterday",
    "Today",
    "Tomorrow",
    "Last",
    "Next",
    "Then",
    "Now",
    "Since",
    "In",
    "On",
    "At",
    "From",
    "As",
    "After",
    "Before",
    "During",
    "If",
    "Meanwhile",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "Let's",
    "Please",
    "Maybe",
];

const ORG_SUFFIXES: &[&str] = &[
    "Inc",
    "Inc.",
    "Corp",
    "Corp.",
    "Corporation",
    "Ltd",
    "Ltd.",
    "LLC",
    "GmbH",
    "AG",
    "SA",
    "Company",
    "Co",
    "Co.",
    "Group",
    "University",
    "College",
    "Institute",
    "Bank",
    "Labs",
    "Lab",
    "Foundation",
    "Agency",
    "Association",
    "Systems",
    "Technologies",
    "Industries",
    "Partners",
    "Holdings",
    "Ventures",
    "Studios",
    "Team",
    "Department",
];

const TITLES: &[&str] = &["Dr", "Dr.", "Mr", "Mr.", "Ms", "Ms.", "Mrs", "Mrs.", "Prof", "Prof."];

/// Month names, January first.
pub(crate) const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// (pattern, relation type, source type, target type); `{X}` and `{Y}` are names.
const PATTERNS: &[(&str, &str, &str, &str)] = &[
    (
        r"{X} (?:works|work|worked|is working|am working|has worked|have worked|was working) (?:at|for) {Y}",
        "works_for",
        "person",
        "organization",
    ),
    (r"{X} (?:joined|joins|has joined|have joined|will join) {Y}", "works_for", "person", "organization"),
    (r"{X} (?:is|am|was) (?:employed|hired) by {Y}", "works_for", "person", "organization"),
    (r"{X}, (?:the |our |their |a |an )?[a-z][a-z -]{1,40}? (?:of|at) {Y}", "role_at", "person", "organization"),
    (
        r"{X} (?:is|am|was|became|has become|have become) (?:the |a |an |our )?[a-z][a-z -]{1,40}? (?:of|at) {Y}",
        "role_at",
        "person",
        "organization",
    ),
    (r"{X} (?:reports|report|reported|will report) to {Y}", "reports_to", "person", "person"),
    (r"{X} (?:lives|live|lived|is living|am living|has lived|have lived) in {Y}", "lives_in", "person", "place"),
    (r"{X} (?:moved|relocated) to {Y}", "lives_in", "person", "place"),
    (r"{X} (?:is|am|comes|come|came) from {Y}", "lives_in", "person", "place"),
    (
        r"{X} (?:manages|manage|managed|leads|lead|led|runs|run|ran|heads|head|headed) {Y}",
        "manages",
        "person",
        "entity",
    ),
    (r"{X} (?:is|am|was|became) (?:a |an )?member of {Y}", "member_of", "person", "organization"),
    (r"{X} (?:belongs|belong|belonged) to {Y}", "member_of", "person", "organization"),
    (r"{X} (?:married|is married to|am married to|was married to) {Y}", "married_to", "person", "person"),
];

struct Pattern {
    regex: Regex,
    relation_type: &'static str,
    source_type: &'static str,
    target_type: &'static str,
}

static COMPILED: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    PATTERNS
        .iter()
        .map(|(p, relation_type, source_type, target_type)| Pattern {
            regex: Regex::new(
                &p.replace("{X}", &format!("(?P<x>{NAME})")).replace("{Y}", &format!("(?:the )?(?P<y>{NAME})")),
            )
            .expect("a valid pattern"),
            relation_type,
            source_type,
            target_type,
        })
        .collect()
});

static NAMES: LazyLock<Regex> = LazyLock::new(|| Regex::new(NAME).expect("a valid pattern"));
static ASSIGNED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(r"(?:assigned to|owned by|given to) (?P<x>{NAME})")).expect("a valid pattern")
});
static DATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?P<cue>since|in|from|as of|on|starting|until|till|to)\s+(?P<date>\d{4}-\d{2}-\d{2}|(?:january|february|march|april|may|june|july|august|september|october|november|december)(?:\s+\d{1,2},)?\s+\d{4}|(?:19|20)\d{2})\b",
    )
    .expect("a valid pattern")
});

/// A name as written, without opening words and a trailing possessive or full stop.
fn clean(raw: &str) -> Option<String> {
    let mut words: Vec<&str> = raw.split_whitespace().collect();
    while words.first().is_some_and(|w| OPENERS.contains(w) || TITLES.contains(w)) {
        words.remove(0);
    }
    let mut name = words.join(" ");
    for suffix in ["'s", "’s"] {
        if let Some(stripped) = name.strip_suffix(suffix) {
            name = stripped.to_string();
        }
    }
    let name = name.trim_end_matches(['.', ',', '-', '\'']).to_string();
    let letters = name.chars().filter(|c| c.is_alphabetic()).count();
    (letters >= 2).then_some(name)
}

/// The type cues say for a name (`None`: they do not).
fn cued_type(name: &str, before: &str) -> Option<&'static str> {
    let last = name.split_whitespace().last().unwrap_or_default();
    if ORG_SUFFIXES.contains(&last) {
        return Some("organization");
    }
    let previous = before.split_whitespace().last().unwrap_or_default();
    if TITLES.contains(&previous) {
        return Some("person");
    }
    None
}

fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    let day = |date: NaiveDate| Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0)?).into();
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return day(date);
    }
    let words: Vec<String> =
        text.split(|c: char| c.is_whitespace() || c == ',').filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
    let year = |w: &str| w.parse::<i32>().ok().filter(|y| (1900..=2100).contains(y));
    match words.as_slice() {
        [y] => NaiveDate::from_ymd_opt(year(y)?, 1, 1).and_then(day),
        [m, y] => {
            let month = MONTHS.iter().position(|name| name == m)? as u32 + 1;
            NaiveDate::from_ymd_opt(year(y)?, month, 1).and_then(day)
        }
        [m, d, y] => {
            let month = MONTHS.iter().position(|name| name == m)? as u32 + 1;
            NaiveDate::from_ymd_opt(year(y)?, month, d.parse().ok()?).and_then(day)
        }
        _ => None,
    }
}

/// The validity a sentence's dates give: (start, end).
fn validity(sentence: &str) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let (mut start, mut end) = (None, None);
    for found in DATE.captures_iter(sentence) {
        let Some(date) = parse_date(&found["date"]) else { continue };
        match found["cue"].to_lowercase().as_str() {
            "until" | "till" | "to" => end = end.or(Some(date)),
            _ => start = start.or(Some(date)),
        }
    }
    if start.zip(end).is_some_and(|(s, e)| e <= s) {
        end = None;
    }
    (start, end)
}

/// A text's sentences (Unicode sentence boundaries), trimmed, empty ones left out.
pub(crate) fn sentences(text: &str) -> Vec<String> {
    use unicode_segmentation::UnicodeSegmentation;
    text.unicode_sentences().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

/// Reads entities and relations from `text`. `known` are names that are entities whatever their
/// case and place (speakers, participants...), each with its type.
pub fn extract(text: &str, known: &[(String, String)]) -> Extraction {
    extract_said_by(text, known, None)
}

/// [`extract`] for what `speaker` said: "I" is the speaker ("I moved to Sweden").
pub fn extract_said_by(text: &str, known: &[(String, String)], speaker: Option<&str>) -> Extraction {
    let mut out = Extraction::default();
    let add = |out: &mut Extraction, found: Found| match out
        .entities
        .iter_mut()
        .find(|e| e.name.eq_ignore_ascii_case(&found.name))
    {
        Some(e) if e.entity_type == "entity" => e.entity_type = found.entity_type,
        Some(_) => {}
        None => out.entities.push(found),
    };
    let known_type = |name: &str| known.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, t)| t.clone());
    let typed = |name: &str, before: &str, from_pattern: &str| -> String {
        if speaker.is_some_and(|s| s.eq_ignore_ascii_case(name)) {
            return "person".into();
        }
        known_type(name)
            .or_else(|| cued_type(name, before).map(str::to_string))
            .unwrap_or_else(|| from_pattern.to_string())
    };
    for sentence in sentences(text) {
        let (valid_at, invalid_at) = validity(&sentence);
        let mut read: Vec<FoundRelation> = Vec::new();
        for pattern in COMPILED.iter() {
            for found in pattern.regex.captures_iter(&sentence) {
                let (x, y) = (&found["x"], &found["y"]);
                let me = |raw: &str| match speaker {
                    Some(name) if raw.split_whitespace().last() == Some("I") => Some(name.to_string()),
                    _ => clean(raw),
                };
                let (Some(source), Some(target)) = (me(x), me(y)) else { continue };
                if source.eq_ignore_ascii_case(&target) {
                    continue;
                }
                let before = |m: regex::Match| &sentence[..m.start()];
                let source = Found {
                    entity_type: typed(&source, before(found.name("x").unwrap()), pattern.source_type),
                    name: source,
                };
                let target = Found {
                    entity_type: typed(&target, before(found.name("y").unwrap()), pattern.target_type),
                    name: target,
                };
                add(&mut out, source.clone());
                add(&mut out, target.clone());
                let relation = FoundRelation {
                    source,
                    relation_type: pattern.relation_type.to_string(),
                    target,
                    fact: sentence.clone(),
                    valid_at,
                    invalid_at,
                };
                if !read.contains(&relation) {
                    read.push(relation);
                }
            }
        }
        // "X is a member of Y" reads as a role too: a more specific relation between the same
        // two names wins.
        let specific = |r: &FoundRelation| {
            read.iter().any(|o| o.relation_type != "role_at" && o.source == r.source && o.target == r.target)
        };
        let kept: Vec<FoundRelation> =
            read.iter().filter(|r| r.relation_type != "role_at" || !specific(r)).cloned().collect();
        for relation in kept {
            if !out.relations.contains(&relation) {
                out.relations.push(relation);
            }
        }
        for found in ASSIGNED.captures_iter(&sentence) {
            if let Some(name) = clean(&found["x"]) {
                add(&mut out, Found { entity_type: typed(&name, "", "person"), name });
            }
        }
        for span in NAMES.find_iter(&sentence) {
            let Some(name) = clean(span.as_str()) else { continue };
            if let Some(t) =
                known_type(&name).or_else(|| cued_type(&name, &sentence[..span.start()]).map(str::to_string))
            {
                add(&mut out, Found { name, entity_type: t });
            }
        }
        // Known names written in lower case.
        let lower = sentence.to_lowercase();
        for (name, t) in known {
            let needle = name.to_lowercase();
            let hit = lower.match_indices(&needle).any(|(at, _)| {
                let before = lower[..at].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
                let after = lower[at + needle.len()..].chars().next().is_none_or(|c| !c.is_alphanumeric());
                before && after
            });
            if hit && !needle.is_empty() {
                add(&mut out, Found { name: name.clone(), entity_type: t.clone() });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relations(text: &str) -> Vec<(String, String, String)> {
        extract(text, &[]).relations.into_iter().map(|r| (r.source.name, r.relation_type, r.target.name)).collect()
    }

    fn triple(s: &str, t: &str, o: &str) -> (String, String, String) {
        (s.into(), t.into(), o.into())
    }

    #[test]
    fn patterns_read_relations_between_names() {
        assert_eq!(relations("Ana Lima works at Acme Corp."), vec![triple("Ana Lima", "works_for", "Acme Corp")]);
        assert_eq!(relations("Yesterday Bo joined Globex."), vec![triple("Bo", "works_for", "Globex")]);
        assert_eq!(
            relations("Maria Silva, the head of research at Initech, spoke first."),
            vec![triple("Maria Silva", "role_at", "Initech")]
        );
        assert_eq!(relations("Dana reports to Lee."), vec![triple("Dana", "reports_to", "Lee")]);
        assert_eq!(relations("Caroline moved to Sweden last year."), vec![triple("Caroline", "lives_in", "Sweden")]);
        assert_eq!(relations("Kim is a member of the Chess Club."), vec![triple("Kim", "member_of", "Chess Club")]);
        assert_eq!(relations("the weather is nice and we had lunch."), Vec::<(String, String, String)>::new());
    }

    #[test]
    fn types_come_from_patterns_cues_and_known_names() {
        let got = extract("Dr. Ray Holt manages Precinct Labs. Amy said hi.", &[("Amy".into(), "person".into())]);
        let types: Vec<(&str, &str)> = got.entities.iter().map(|e| (e.name.as_str(), e.entity_type.as_str())).collect();
        assert!(types.contains(&("Ray Holt", "person")), "{types:?}");
        assert!(types.contains(&("Precinct Labs", "organization")), "a suffix says organisation: {types:?}");
        assert!(types.contains(&("Amy", "person")), "{types:?}");
        let got = extract("the budget was assigned to Priya", &[]);
        assert_eq!(got.entities, vec![Found { name: "Priya".into(), entity_type: "person".into() }]);
        let got = extract("ask nadia about it", &[("Nadia".into(), "person".into())]);
        assert_eq!(got.entities.len(), 1, "a known name in lower case is found");
    }

    #[test]
    fn i_is_the_speaker() {
        let got = extract_said_by("I moved to Sweden in 2019 and I work at Spotify.", &[], Some("Caroline"));
        let read: Vec<(&str, &str, &str)> = got
            .relations
            .iter()
            .map(|r| (r.source.name.as_str(), r.relation_type.as_str(), r.target.name.as_str()))
            .collect();
        assert_eq!(read, vec![("Caroline", "works_for", "Spotify"), ("Caroline", "lives_in", "Sweden")]);
        assert!(extract("I work at Spotify.", &[]).relations.is_empty(), "without a speaker, I is nobody");
    }

    #[test]
    fn dates_give_validity() {
        let got = extract("Ana has worked at Acme since March 2021.", &[]);
        assert_eq!(got.relations[0].valid_at, Some(Utc.with_ymd_and_hms(2021, 3, 1, 0, 0, 0).unwrap()));
        let got = extract("Ana worked at Acme from 2019 until 2022-06-30.", &[]);
        assert_eq!(got.relations[0].valid_at, Some(Utc.with_ymd_and_hms(2019, 1, 1, 0, 0, 0).unwrap()));
        assert_eq!(got.relations[0].invalid_at, Some(Utc.with_ymd_and_hms(2022, 6, 30, 0, 0, 0).unwrap()));
        assert_eq!(extract("Bo joined Globex.", &[]).relations[0].valid_at, None);
    }
}
