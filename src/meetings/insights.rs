//! Insights and summaries without a model: deterministic rules over a meeting's final segments.
//!
//! Each final segment is split into sentences (Unicode sentence boundaries) and every sentence is
//! read on its own, so insights can be found as segments arrive, each pointing at the segment
//! (`seqs`) it came from:
//!
//! - **Decision**: a sentence that is not a question and reports an agreement or a choice — "we
//!   decided", "decided to", "we agreed", "we agree", "agreed on/to/that", "let's go with", "we'll
//!   go with", "we're going with", "settled on", "we chose", "final decision", "we'll stick with",
//!   "is approved"...; the team's choice said as its plan ("we're going to use", "we'll use",
//!   "let's use", "we're gonna have", "we'll have", "so we've got"...) or as what it rules out
//!   ("we don't want", "we're not going to", "we won't", "we can't use"...).
//! - **Action item**: a commitment or an assignment — first person ("I'll", "I will", "I'm going
//!   to", "let me", "I can take") owned by the speaker; a named participant followed by "will",
//!   "is going to", "can you", "please", or "assigned to `<name>`", owned by that participant; a
//!   request to the listener ("can you", "could you", "please") owned by the participant it names,
//!   if any; team work ("we need to", "we have to", "we should", "we must", "someone needs to",
//!   "action item", "follow up") without an owner unless a participant is named. Hedges ("I'll be
//!   honest", "I will say") are not commitments. The due date is what follows "by", "before",
//!   "due", "until" or "no later than", or a bare "tomorrow", "next week", "on Friday"; it is read
//!   as a date relative to the meeting's start when it is a weekday, today, tomorrow, the end of
//!   the day/week/month, next week/month, an ISO date or a month and day.
//! - **Question**: a sentence of at least four words ending in `?` that is not a tag question
//!   ("right?", "okay?") or a request already taken as an action item.
//! - **Topic**: recomputed over the whole transcript: the most frequent two-word phrases of
//!   content words (stop words and disfluencies removed) said at least three times, else single
//!   content words; each with the first segments it occurs in.
//!
//! The **extractive summary** scores each sentence of six words or more by the frequency of its
//! content words in the whole meeting (log-scaled, normalised by the square root of its length),
//! adds a bonus when it holds a decision or an action item, and keeps the best few in the order
//! they were said, as `Speaker: sentence` bullets.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use unicode_segmentation::UnicodeSegmentation;

use super::model::{Insight, InsightKind, Segment};

pub const RULES: &str = "rules";

const DECISION_CUES: &[&str] = &[
    "we decided",
    "we've decided",
    "we have decided",
    "decided to",
    "decided that",
    "decided on",
    "the decision is",
    "final decision",
    "we agreed",
    "we've agreed",
    "we have agreed",
    "we all agree",
    "agreed to",
    "agreed on",
    "agreed that",
    "let's go with",
    "lets go with",
    "let's go for",
    "we'll go with",
    "we will go with",
    "we're going with",
    "we are going with",
    "we're going to go with",
    "we'll go for",
    "settled on",
    "we chose",
    "we've chosen",
    "we have chosen",
    "we'll stick with",
    "we will stick with",
    "is approved",
    "was approved",
    "so that's decided",
    "that's settled",
    "we agree",
    "everybody agrees",
    "everyone agrees",
    // The team's choice said as its plan...
    "we're going to use",
    "we are going to use",
    "we're gonna use",
    "we'll use",
    "we will use",
    "let's use",
    "we're going to have",
    "we are going to have",
    "we're gonna have",
    "we'll have",
    "we will have",
    "let's have",
    "we'll go for",
    "we're gonna go with",
    "we're gonna go for",
    "so we've got",
    // ...or as what it rules out.
    "we don't want",
    "we do not want",
    "we're not going to",
    "we are not going to",
    "we're not gonna",
    "we won't",
    "we will not",
    "we can't use",
    "we couldn't use",
];

const SELF_CUES: &[&str] =
    &["i'll ", "i will ", "i'm going to ", "i am going to ", "let me ", "i can take ", "i'll take ", "i can do "];
const HEDGES: &[&str] = &[
    "i'll be honest",
    "i will be honest",
    "i'll say",
    "i will say",
    "i'll admit",
    "let me think",
    "let me see",
    "let me just say",
    "let me ask",
    "i'll tell you",
    "i'm going to say",
];
const TEAM_CUES: &[&str] = &[
    "we need to ",
    "we have to ",
    "we should ",
    "we must ",
    "we'll need to ",
    "we will need to ",
    "someone needs to ",
    "someone should ",
    "somebody needs to ",
    "action item",
    "follow up",
    "follow-up",
    "to-do",
    "todo",
];
const REQUEST_CUES: &[&str] = &["can you ", "could you ", "would you ", "will you ", "please "];
const NAMED_CUES: &[&str] =
    &[" will ", " is going to ", " can you ", " could you ", " please ", " should ", " needs to "];
const TAG_QUESTIONS: &[&str] = &["right", "okay", "ok", "yeah", "you know", "isn't it", "no", "huh", "yes", "true"];
const DUE_CUES: &[&str] = &[" by ", " before ", " due ", " until ", " no later than "];

const STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "actually",
    "after",
    "again",
    "against",
    "all",
    "also",
    "am",
    "an",
    "and",
    "any",
    "are",
    "aren't",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "can't",
    "cannot",
    "could",
    "couldn't",
    "did",
    "didn't",
    "do",
    "does",
    "doesn't",
    "doing",
    "don't",
    "down",
    "during",
    "each",
    "few",
    "for",
    "from",
    "further",
    "get",
    "gets",
    "getting",
    "go",
    "goes",
    "going",
    "gonna",
    "got",
    "had",
    "hadn't",
    "has",
    "hasn't",
    "have",
    "haven't",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "hmm",
    "i",
    "i'd",
    "i'll",
    "i'm",
    "i've",
    "if",
    "in",
    "into",
    "is",
    "isn't",
    "it",
    "it's",
    "its",
    "itself",
    "just",
    "kind",
    "know",
    "let",
    "let's",
    "like",
    "maybe",
    "me",
    "mean",
    "mm",
    "more",
    "most",
    "much",
    "must",
    "my",
    "myself",
    "need",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "oh",
    "okay",
    "on",
    "once",
    "one",
    "only",
    "or",
    "other",
    "ought",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "probably",
    "put",
    "quite",
    "really",
    "right",
    "said",
    "same",
    "say",
    "see",
    "she",
    "should",
    "shouldn't",
    "so",
    "some",
    "something",
    "sort",
    "still",
    "such",
    "sure",
    "take",
    "than",
    "that",
    "that's",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "there's",
    "these",
    "they",
    "they're",
    "thing",
    "things",
    "think",
    "this",
    "those",
    "through",
    "to",
    "too",
    "uh",
    "um",
    "under",
    "until",
    "up",
    "us",
    "very",
    "want",
    "was",
    "wasn't",
    "way",
    "we",
    "we'll",
    "we're",
    "we've",
    "well",
    "were",
    "weren't",
    "what",
    "what's",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "won't",
    "would",
    "wouldn't",
    "yeah",
    "yes",
    "you",
    "you're",
    "you've",
    "your",
    "yours",
    "yourself",
    "gap",
    "disfmarker",
    "vocalsound",
    "laugh",
    "cough",
    "two",
    "three",
    "lot",
    "bit",
    "good",
    "great",
    "make",
    "made",
    "use",
    "used",
    "look",
    "looking",
    "come",
    "mhm",
    "huh",
    "ah",
    "er",
    "erm",
    "uh-huh",
    "alright",
    "anyway",
    "guess",
    "even",
    "yep",
    "nope",
];

/// Sentences of a segment's text, trimmed and non-empty.
pub fn sentences(text: &str) -> Vec<&str> {
    text.unicode_sentences().map(str::trim).filter(|s| !s.is_empty()).collect()
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'' && c != '-')
        .map(|w| w.trim_matches(|c| c == '\'' || c == '-').to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

fn is_content(word: &str) -> bool {
    word.len() >= 3 && word.chars().any(char::is_alphabetic) && !STOP_WORDS.contains(&word)
}

/// What the rules find in `segments`. `names`: the meeting's participant names (owners are read
/// among them); `start`: the meeting's start day, for due dates.
pub fn extract(segments: &[Segment], names: &[String], start: NaiveDate) -> Vec<Insight> {
    let mut out = Vec::new();
    for segment in segments {
        for sentence in sentences(&segment.text) {
            out.extend(read_sentence(sentence, segment, names, start));
        }
    }
    out
}

fn insight(kind: InsightKind, sentence: &str, segment: &Segment) -> Insight {
    Insight {
        id: String::new(),
        kind,
        text: sentence.to_string(),
        speaker: (!segment.speaker.is_empty()).then(|| segment.speaker.clone()),
        owner: None,
        due: None,
        due_date: None,
        seqs: vec![segment.seq],
        extractor: RULES.into(),
    }
}

fn read_sentence(sentence: &str, segment: &Segment, names: &[String], start: NaiveDate) -> Vec<Insight> {
    let mut out = Vec::new();
    let n_words = words(sentence).len();
    if n_words < 3 {
        return out;
    }
    let lower = format!(" {} ", sentence.to_lowercase().replace('’', "'"));
    let asks = sentence.trim_end().ends_with('?');
    if !asks && DECISION_CUES.iter().any(|c| lower.contains(c)) {
        out.push(insight(InsightKind::Decision, sentence, segment));
    }
    if let Some(owner) = action_owner(&lower, segment, names) {
        let mut item = insight(InsightKind::ActionItem, sentence, segment);
        item.owner = owner;
        if let Some((said, date)) = due(&lower, start) {
            item.due = Some(said);
            item.due_date = date.map(|d| d.to_string());
        }
        out.push(item);
        return out;
    }
    if asks && n_words >= 4 {
        let bare = lower.trim().trim_end_matches('?').trim();
        let tag = TAG_QUESTIONS.iter().any(|t| bare.ends_with(&format!(", {t}")) || bare == *t);
        if !tag {
            out.push(insight(InsightKind::Question, sentence, segment));
        }
    }
    out
}

/// `Some(owner)` when the sentence is an action item (the owner may be unknown).
fn action_owner(lower: &str, segment: &Segment, names: &[String]) -> Option<Option<String>> {
    if HEDGES.iter().any(|h| lower.contains(h)) {
        return None;
    }
    let named = names.iter().find(|n| {
        let n = n.to_lowercase();
        let first = n.split_whitespace().next().unwrap_or_default().to_string();
        [n, first].iter().any(|n| {
            !n.is_empty()
                && (NAMED_CUES
                    .iter()
                    .any(|c| lower.contains(&format!(" {n}{c}")) || lower.contains(&format!(" {n},{c}")))
                    || lower.contains(&format!("assigned to {n}"))
                    || lower.contains(&format!(" {n}, can you"))
                    || lower.contains(&format!(" {n}, could you"))
                    || lower.contains(&format!(" {n}, please")))
        })
    });
    if let Some(name) = named {
        return Some(Some(name.clone()));
    }
    let speaker = (!segment.speaker.is_empty()).then(|| segment.speaker.clone());
    if SELF_CUES.iter().any(|c| lower.contains(&format!(" {c}"))) {
        return Some(speaker);
    }
    if REQUEST_CUES.iter().any(|c| lower.contains(&format!(" {c}"))) {
        return Some(None);
    }
    if TEAM_CUES.iter().any(|c| lower.contains(c)) {
        return Some(None);
    }
    None
}

const WEEKDAYS: [(&str, Weekday); 7] = [
    ("monday", Weekday::Mon),
    ("tuesday", Weekday::Tue),
    ("wednesday", Weekday::Wed),
    ("thursday", Weekday::Thu),
    ("friday", Weekday::Fri),
    ("saturday", Weekday::Sat),
    ("sunday", Weekday::Sun),
];

/// The due date an action item states: the words as said and, when they can be read, the date.
pub fn due(lower: &str, start: NaiveDate) -> Option<(String, Option<NaiveDate>)> {
    for cue in DUE_CUES {
        if let Some(at) = lower.find(cue) {
            let rest = &lower[at + cue.len()..];
            if let Some((said, date)) = read_when(rest, start) {
                return Some((format!("{} {said}", cue.trim()), date));
            }
        }
    }
    for bare in ["tomorrow", "next week", "next month", "end of the week", "end of the day", "this week"] {
        if lower.contains(&format!(" {bare}")) {
            return read_when(bare, start);
        }
    }
    for (name, _) in WEEKDAYS {
        if lower.contains(&format!(" on {name}")) || lower.contains(&format!(" next {name}")) {
            let phrase =
                if lower.contains(&format!(" next {name}")) { format!("next {name}") } else { name.to_string() };
            return read_when(&phrase, start);
        }
    }
    None
}

fn read_when(rest: &str, start: NaiveDate) -> Option<(String, Option<NaiveDate>)> {
    let tokens: Vec<String> = rest
        .split_whitespace()
        .map(|t| t.trim_matches(|c: char| !c.is_alphanumeric() && c != '-').to_string())
        .take(4)
        .collect();
    let first = tokens.first()?.as_str();
    let second = tokens.get(1).map(String::as_str).unwrap_or_default();
    let next_weekday = |day: Weekday, skip_week: bool| {
        let mut d = start + Duration::days(1);
        while d.weekday() != day {
            d += Duration::days(1);
        }
        if skip_week { d + Duration::days(7) } else { d }
    };
    let weekday =
        |t: &str| WEEKDAYS.iter().find(|(n, _)| *n == t || (n.starts_with(t) && t.len() >= 3)).map(|(_, d)| *d);
    if let Some(day) = weekday(first) {
        return Some((first.to_string(), Some(next_weekday(day, false))));
    }
    match first {
        "today" | "tonight" => return Some((first.into(), Some(start))),
        "tomorrow" => return Some((first.into(), Some(start + Duration::days(1)))),
        "next" => {
            if let Some(day) = weekday(second) {
                let d = next_weekday(day, false);
                let d = if (d - start).num_days() < 7
                    && start.weekday().num_days_from_monday() < day.num_days_from_monday()
                {
                    d + Duration::days(7)
                } else {
                    d
                };
                return Some((format!("next {second}"), Some(d)));
            }
            if second == "week" {
                let monday = start + Duration::days(7 - start.weekday().num_days_from_monday() as i64);
                return Some(("next week".into(), Some(monday + Duration::days(4))));
            }
            if second == "month" {
                let (y, m) =
                    if start.month() == 12 { (start.year() + 1, 1) } else { (start.year(), start.month() + 1) };
                return Some(("next month".into(), NaiveDate::from_ymd_opt(y, m, 1)));
            }
        }
        "end" | "the" => {
            let words: Vec<&str> = tokens.iter().map(String::as_str).collect();
            let joined = words.join(" ");
            for (unit, days) in [("day", 0i64), ("week", -1), ("month", -2)] {
                if joined.contains(&format!("end of the {unit}")) || joined.contains(&format!("end of {unit}")) {
                    let date = match days {
                        0 => start,
                        -1 => start + Duration::days(4 - start.weekday().num_days_from_monday().min(4) as i64),
                        _ => {
                            let (y, m) = if start.month() == 12 {
                                (start.year() + 1, 1)
                            } else {
                                (start.year(), start.month() + 1)
                            };
                            NaiveDate::from_ymd_opt(y, m, 1).map(|d| d - Duration::days(1)).unwrap_or(start)
                        }
                    };
                    return Some((format!("end of the {unit}"), Some(date)));
                }
            }
        }
        "this" if second == "week" => {
            return Some((
                "this week".into(),
                Some(start + Duration::days(4 - start.weekday().num_days_from_monday().min(4) as i64)),
            ));
        }
        _ => {}
    }
    if let Ok(d) = NaiveDate::parse_from_str(first, "%Y-%m-%d") {
        return Some((first.into(), Some(d)));
    }
    if let Some(month) =
        crate::memory::search::MONTHS.iter().position(|m| *m == first || (first.len() >= 3 && m.starts_with(first)))
    {
        let day: Option<u32> = second.trim_end_matches(|c: char| c.is_alphabetic()).parse().ok();
        if let Some(day) = day {
            let mut date = NaiveDate::from_ymd_opt(start.year(), month as u32 + 1, day);
            if let Some(d) = date
                && d < start
            {
                date = NaiveDate::from_ymd_opt(start.year() + 1, month as u32 + 1, day);
            }
            return Some((format!("{first} {second}"), date));
        }
    }
    None
}

/// The meeting's topics over its whole transcript (see the module documentation).
pub fn topics(segments: &[Segment], most: usize) -> Vec<Insight> {
    let mut unigrams: HashMap<String, Vec<u64>> = HashMap::new();
    let mut bigrams: HashMap<String, Vec<u64>> = HashMap::new();
    for s in segments {
        let w = words(&s.text);
        for (i, word) in w.iter().enumerate() {
            if !is_content(word) {
                continue;
            }
            unigrams.entry(word.clone()).or_default().push(s.seq);
            if let Some(next) = w.get(i + 1)
                && is_content(next)
                && next != word
            {
                bigrams.entry(format!("{word} {next}")).or_default().push(s.seq);
            }
        }
    }
    let ranked = |map: HashMap<String, Vec<u64>>| {
        let mut v: Vec<(String, Vec<u64>)> = map.into_iter().filter(|(_, seqs)| seqs.len() >= 3).collect();
        v.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
        v
    };
    let mut chosen: Vec<(String, Vec<u64>)> = Vec::new();
    for (phrase, seqs) in ranked(bigrams).into_iter().chain(ranked(unigrams)) {
        if chosen.len() >= most {
            break;
        }
        // A word already inside a chosen phrase adds nothing.
        if chosen.iter().any(|(c, _)| c.split(' ').any(|w| phrase.split(' ').any(|p| p == w))) {
            continue;
        }
        chosen.push((phrase, seqs));
    }
    chosen
        .into_iter()
        .map(|(phrase, mut seqs)| {
            seqs.dedup();
            seqs.truncate(20);
            Insight {
                id: String::new(),
                kind: InsightKind::Topic,
                text: phrase,
                speaker: None,
                owner: None,
                due: None,
                due_date: None,
                seqs,
                extractor: RULES.into(),
            }
        })
        .collect()
}

/// The best `most` sentences, in the order they were said, as `Speaker: sentence` bullets.
pub fn extractive_summary(segments: &[Segment], insights: &[Insight], most: usize) -> Vec<String> {
    let mut frequency: HashMap<String, f32> = HashMap::new();
    for s in segments {
        for w in words(&s.text).into_iter().filter(|w| is_content(w)) {
            *frequency.entry(w).or_default() += 1.0;
        }
    }
    let bonus: HashMap<&str, f32> = insights
        .iter()
        .filter_map(|i| match i.kind {
            InsightKind::Decision => Some((i.text.as_str(), 1.5)),
            InsightKind::ActionItem => Some((i.text.as_str(), 1.0)),
            _ => None,
        })
        .collect();
    let mut scored: Vec<(f32, u64, usize, String)> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for s in segments {
        for (i, sentence) in sentences(&s.text).into_iter().enumerate() {
            let w = words(sentence);
            if w.len() < 6 || !seen.insert(sentence.to_lowercase()) {
                continue;
            }
            let content: f32 = w.iter().filter(|w| is_content(w)).map(|w| (1.0 + frequency[w.as_str()]).ln()).sum();
            let score = content / (w.len() as f32).sqrt() + bonus.get(sentence).copied().unwrap_or(0.0);
            let line = if s.speaker.is_empty() { sentence.to_string() } else { format!("{}: {sentence}", s.speaker) };
            scored.push((score, s.seq, i, line));
        }
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.truncate(most);
    let ordered: BTreeMap<(u64, usize), String> =
        scored.into_iter().map(|(_, seq, i, line)| ((seq, i), line)).collect();
    ordered.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(seq: u64, speaker: &str, text: &str) -> Segment {
        Segment {
            seq,
            segment_id: format!("s{seq}"),
            speaker: speaker.into(),
            start_ms: seq * 1000,
            end_ms: seq * 1000 + 900,
            text: text.into(),
        }
    }

    fn monday() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 30).unwrap()
    }

    #[test]
    fn rules_find_actions_with_owners_and_dates_decisions_and_questions() {
        let names = vec!["Alice".to_string(), "Bob Stone".to_string()];
        let segments = vec![
            seg(0, "Alice", "Welcome everyone. Should we launch the beta in March or wait for the audit?"),
            seg(1, "Bob Stone", "After the review we decided to launch the beta in March."),
            seg(2, "Alice", "Great. I'll send the launch checklist by Friday."),
            seg(3, "Alice", "Bob, can you update the pricing page before next Wednesday?"),
            seg(4, "Bob Stone", "We need to book the venue. I'll be honest, it is expensive, right?"),
            seg(5, "Alice", "So did we decide on the venue?"),
            seg(6, "Bob Stone", "Okay, we don't want a screen on it then."),
        ];
        let found = extract(&segments, &names, monday());
        let of = |kind| found.iter().filter(|i| i.kind == kind).collect::<Vec<_>>();
        let decisions = of(InsightKind::Decision);
        assert_eq!(decisions.len(), 2, "a question is not a decision: {found:#?}");
        assert_eq!(decisions[0].seqs, vec![1]);
        assert_eq!(decisions[1].seqs, vec![6], "what the team rules out");
        let actions = of(InsightKind::ActionItem);
        assert_eq!(actions.len(), 3, "{actions:#?}");
        assert_eq!(actions[0].owner.as_deref(), Some("Alice"));
        assert_eq!(actions[0].due.as_deref(), Some("by friday"));
        assert_eq!(actions[0].due_date.as_deref(), Some("2026-12-04"));
        assert_eq!(actions[1].owner.as_deref(), Some("Bob Stone"), "addressed by first name");
        assert_eq!(actions[1].due_date.as_deref(), Some("2026-12-09"));
        assert_eq!((actions[2].owner.as_deref(), actions[2].seqs.as_slice()), (None, &[4][..]), "team work");
        let questions = of(InsightKind::Question);
        assert_eq!(questions.len(), 2, "the tag question is not one: {questions:#?}");
        assert_eq!(questions[0].seqs, vec![0]);
        assert_eq!(questions[1].seqs, vec![5]);
    }

    #[test]
    fn due_dates_read_relative_to_the_start() {
        let d = |text: &str| due(&format!(" {text} "), monday()).and_then(|(_, d)| d).map(|d| d.to_string());
        assert_eq!(d("send it tomorrow"), Some("2026-12-01".into()));
        assert_eq!(d("by end of the week"), Some("2026-12-04".into()));
        assert_eq!(d("by 2027-01-15"), Some("2027-01-15".into()));
        assert_eq!(d("by january 5th"), Some("2027-01-05".into()));
        assert_eq!(d("no date here"), None);
    }

    #[test]
    fn topics_prefer_repeated_phrases_and_summary_keeps_order() {
        let segments: Vec<Segment> = (0..6)
            .map(|i| {
                seg(i, if i % 2 == 0 { "A" } else { "B" }, "The remote control needs a better battery design overall.")
            })
            .chain([seg(6, "A", "We decided the remote control gets a rechargeable battery today.")])
            .collect();
        let t = topics(&segments, 3);
        assert_eq!(t[0].text, "remote control");
        assert!(t[0].seqs.starts_with(&[0, 1, 2]));
        let found = extract(&segments, &[], monday());
        let summary = extractive_summary(&segments, &found, 2);
        assert_eq!(summary.len(), 2);
        assert!(summary[1].starts_with("A: We decided"), "{summary:?}");
    }
}
