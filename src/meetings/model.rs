//! What a meeting is made of, and how each part is laid out as a record.
//!
//! | kind | id | title / body | metadata |
//! |---|---|---|---|
//! | `meeting` | `mtg_<uuid>` | title / — | status, started_at, ended_at, source, next_seq, participants, metadata |
//! | `meeting_segment` | `<meeting>:seg:<seq>` | speaker / text | meeting_id, seq, segment_id, speaker, start_ms, end_ms |
//! | `meeting_chunk` | `<meeting>:chunk:<seq_start>` | — / `Speaker: text` lines | meeting_id, seq_start, seq_end, speaker, speakers, date; tags `speaker:<name>` |
//! | `meeting_insight` | `<meeting>:ins:<hash>` | — / text | meeting_id, kind, owner, due, due_date, seqs, extractor |
//! | `meeting_summary` | `<meeting>:summary` | — / text | meeting_id, kind (rolling, final), upto_seq, generator, bullets |
//!
//! Only finals are records; a segment's `seq` is given by the server, 0 for the meeting's first
//! segment and one more for each next one. Chunks (windows of consecutive turns) are what search
//! finds; segments are the transcript.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::store::records::Record;

pub const MEETING_KIND: &str = "meeting";
pub const SEGMENT_KIND: &str = "meeting_segment";
pub const CHUNK_KIND: &str = "meeting_chunk";
pub const INSIGHT_KIND: &str = "meeting_insight";
pub const SUMMARY_KIND: &str = "meeting_summary";
/// Every kind a meeting's records have besides the meeting itself.
pub const PART_KINDS: [&str; 4] = [SEGMENT_KIND, CHUNK_KIND, INSIGHT_KIND, SUMMARY_KIND];

/// Most bytes of one segment's text.
pub const MAX_SEGMENT_TEXT: usize = 16 * 1024;
/// Most segments in one request.
pub const MAX_BATCH: usize = 1000;
/// Most segments a meeting holds.
pub const MAX_SEGMENTS: u64 = 200_000;
/// Most participants a meeting holds.
pub const MAX_PARTICIPANTS: usize = 500;
const MAX_NAME: usize = 256;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = MeetingStatus)]
pub enum Status {
    #[default]
    Scheduled,
    Live,
    Ended,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::Live => "live",
            Status::Ended => "ended",
        }
    }

    fn parse(text: &str) -> Status {
        match text {
            "live" => Status::Live,
            "ended" => Status::Ended,
            _ => Status::Scheduled,
        }
    }
}

/// Someone in a meeting. `user_id` is the memory scope their memories go to when it ends.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Participant {
    /// Given by Nexus (`p1`, `p2`...) when absent.
    #[serde(default)]
    pub id: String,
    /// As the transcript names them (the segments' `speaker`).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

impl Participant {
    pub fn named(name: &str) -> Participant {
        Participant { name: name.to_string(), ..Default::default() }
    }

    pub fn validate(&self) -> Result<()> {
        let name = self.name.trim();
        if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
            return Err(Error::invalid(format!(
                "a participant's name must be 1-{MAX_NAME} bytes without control characters, not {:?}",
                self.name
            )));
        }
        for (field, value) in [("email", &self.email), ("external_id", &self.external_id), ("user_id", &self.user_id)] {
            if let Some(v) = value
                && (v.trim().is_empty() || v.len() > MAX_NAME || v.chars().any(char::is_control))
            {
                return Err(Error::invalid(format!(
                    "participant {:?}: {field} must be 1-{MAX_NAME} bytes without control characters",
                    self.name
                )));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Meeting {
    pub id: String,
    pub title: String,
    pub status: Status,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// `live` (segments sent), or `import:<format>`.
    pub source: String,
    pub participants: Vec<Participant>,
    /// How many final segments it holds: the next one gets this `seq`.
    pub segments: u64,
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// The record key: pass as `after` for the next page.
    pub key: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Meeting {
    pub fn from_record(r: &Record) -> Meeting {
        let m = &r.metadata;
        let time = |k: &str| {
            m.get(k).and_then(Value::as_str).and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.to_utc())
        };
        Meeting {
            id: r.id.clone(),
            title: r.title.clone().unwrap_or_default(),
            status: Status::parse(m.get("status").and_then(Value::as_str).unwrap_or_default()),
            started_at: time("started_at"),
            ended_at: time("ended_at"),
            source: m.get("source").and_then(Value::as_str).unwrap_or("live").to_string(),
            participants: m
                .get("participants")
                .and_then(|p| serde_json::from_value(p.clone()).ok())
                .unwrap_or_default(),
            segments: m.get("next_seq").and_then(Value::as_u64).unwrap_or(0),
            metadata: m.get("metadata").cloned().unwrap_or_else(|| json!({})),
            key: r.key,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }

    /// The record's metadata for this state.
    pub fn record_metadata(&self) -> Value {
        let time = |t: Option<DateTime<Utc>>| t.map(|t| Value::String(t.to_rfc3339()));
        let mut m = Map::new();
        m.insert("status".into(), self.status.as_str().into());
        if let Some(t) = time(self.started_at) {
            m.insert("started_at".into(), t.clone());
            m.insert("date".into(), t);
        }
        if let Some(t) = time(self.ended_at) {
            m.insert("ended_at".into(), t);
        }
        m.insert("source".into(), self.source.clone().into());
        m.insert("next_seq".into(), self.segments.into());
        m.insert("participants".into(), serde_json::to_value(&self.participants).unwrap_or_default());
        m.insert("metadata".into(), self.metadata.clone());
        Value::Object(m)
    }

    /// The participant a transcript's speaker name is, if any (names compared without case).
    pub fn participant(&self, speaker: &str) -> Option<&Participant> {
        let speaker = speaker.trim();
        self.participants.iter().find(|p| p.name.trim().eq_ignore_ascii_case(speaker))
    }

    /// Adds or merges `p`: by id when given, else by name. Returns whether it was new.
    pub fn upsert_participant(&mut self, mut p: Participant) -> Result<bool> {
        p.validate()?;
        p.name = p.name.trim().to_string();
        let existing = if p.id.is_empty() {
            self.participants.iter().position(|q| q.name.eq_ignore_ascii_case(&p.name))
        } else {
            self.participants.iter().position(|q| q.id == p.id)
        };
        match existing {
            Some(i) => {
                let q = &mut self.participants[i];
                q.name = p.name;
                q.email = p.email.or(q.email.take());
                q.external_id = p.external_id.or(q.external_id.take());
                q.user_id = p.user_id.or(q.user_id.take());
                Ok(false)
            }
            None => {
                if self.participants.len() >= MAX_PARTICIPANTS {
                    return Err(Error::invalid(format!("a meeting has at most {MAX_PARTICIPANTS} participants")));
                }
                if p.id.is_empty() {
                    let mut n = self.participants.len() + 1;
                    while self.participants.iter().any(|q| q.id == format!("p{n}")) {
                        n += 1;
                    }
                    p.id = format!("p{n}");
                }
                self.participants.push(p);
                Ok(true)
            }
        }
    }
}

/// A final segment of the transcript.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Segment {
    pub seq: u64,
    pub segment_id: String,
    pub speaker: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub text: String,
}

impl Segment {
    pub fn from_record(r: &Record) -> Segment {
        let m = &r.metadata;
        let n = |k: &str| m.get(k).and_then(Value::as_u64).unwrap_or(0);
        Segment {
            seq: n("seq"),
            segment_id: m.get("segment_id").and_then(Value::as_str).unwrap_or_default().to_string(),
            speaker: r.title.clone().unwrap_or_default(),
            start_ms: n("start_ms"),
            end_ms: n("end_ms"),
            text: r.body.clone().unwrap_or_default(),
        }
    }

    /// `Speaker: text`.
    pub fn as_turn(&self) -> String {
        if self.speaker.is_empty() { self.text.clone() } else { format!("{}: {}", self.speaker, self.text) }
    }
}

/// A segment as a client sends it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentInput {
    /// The client's id for the segment: sending it again changes nothing.
    pub segment_id: String,
    #[serde(default)]
    pub speaker: String,
    #[serde(default)]
    pub start_ms: u64,
    #[serde(default)]
    pub end_ms: u64,
    pub text: String,
    /// Partial (interim) segments are acknowledged, never stored.
    #[serde(default = "yes")]
    pub is_final: bool,
}

fn yes() -> bool {
    true
}

impl SegmentInput {
    pub fn validate(&self) -> Result<()> {
        let id = &self.segment_id;
        if id.is_empty() || id.len() > MAX_NAME || id.chars().any(char::is_control) {
            return Err(Error::invalid(format!(
                "segment_id must be 1-{MAX_NAME} bytes without control characters, not {id:?}"
            )));
        }
        if self.speaker.len() > MAX_NAME || self.speaker.chars().any(char::is_control) {
            return Err(Error::invalid(format!("segment {id:?}: speaker must be at most {MAX_NAME} bytes")));
        }
        if self.is_final && self.text.trim().is_empty() {
            return Err(Error::invalid(format!("segment {id:?}: a final segment needs text")));
        }
        if self.text.len() > MAX_SEGMENT_TEXT {
            return Err(Error::new(
                crate::error::ErrorCode::PayloadTooLarge,
                format!("segment {id:?}: text is over {MAX_SEGMENT_TEXT} bytes; split it into several segments"),
            ));
        }
        if self.end_ms < self.start_ms {
            return Err(Error::invalid(format!(
                "segment {id:?}: end_ms ({}) is before start_ms ({})",
                self.end_ms, self.start_ms
            )));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InsightKind {
    ActionItem,
    Decision,
    Question,
    Topic,
}

impl InsightKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InsightKind::ActionItem => "action_item",
            InsightKind::Decision => "decision",
            InsightKind::Question => "question",
            InsightKind::Topic => "topic",
        }
    }

    pub fn parse(text: &str) -> Option<InsightKind> {
        match text {
            "action_item" => Some(InsightKind::ActionItem),
            "decision" => Some(InsightKind::Decision),
            "question" => Some(InsightKind::Question),
            "topic" => Some(InsightKind::Topic),
            _ => None,
        }
    }
}

/// Something worth knowing that a meeting said, with the segments it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Insight {
    #[serde(default)]
    pub id: String,
    pub kind: InsightKind,
    pub text: String,
    /// Who said it (the speaker of its first segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
    /// An action item's owner, when it was said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// An action item's due date as said ("by Friday").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    /// `due` as a date (YYYY-MM-DD), when it could be read relative to the meeting's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_date: Option<String>,
    /// The `seq` of every segment it came from.
    pub seqs: Vec<u64>,
    /// `rules` or `llm`.
    pub extractor: String,
}

impl Insight {
    pub fn from_record(r: &Record) -> Option<Insight> {
        let m = &r.metadata;
        let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
        Some(Insight {
            id: r.id.clone(),
            kind: InsightKind::parse(m.get("kind")?.as_str()?)?,
            text: r.body.clone().unwrap_or_default(),
            speaker: s("speaker"),
            owner: s("owner"),
            due: s("due"),
            due_date: s("due_date"),
            seqs: m.get("seqs").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default(),
            extractor: s("extractor").unwrap_or_default(),
        })
    }
}

/// A meeting's summary: rolling while it runs, final once it has ended.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Summary {
    pub meeting_id: String,
    /// `rolling` or `final`; `none` before there is anything to summarise.
    pub kind: String,
    pub text: String,
    pub bullets: Vec<String>,
    /// The last segment it covers.
    pub upto_seq: Option<u64>,
    /// `extractive` or `llm`.
    pub generator: String,
}

impl Summary {
    pub fn from_record(r: &Record) -> Summary {
        let m = &r.metadata;
        let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        Summary {
            meeting_id: s("meeting_id"),
            kind: s("kind"),
            text: r.body.clone().unwrap_or_default(),
            bullets: m.get("bullets").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default(),
            upto_seq: m.get("upto_seq").and_then(Value::as_u64),
            generator: s("generator"),
        }
    }
}

pub fn new_meeting_id() -> String {
    format!("mtg_{}", uuid::Uuid::now_v7().simple())
}

pub fn segment_record_id(meeting_id: &str, seq: u64) -> String {
    format!("{meeting_id}:seg:{seq}")
}

pub fn chunk_record_id(meeting_id: &str, seq_start: u64) -> String {
    format!("{meeting_id}:chunk:{seq_start}")
}

pub fn summary_record_id(meeting_id: &str) -> String {
    format!("{meeting_id}:summary")
}

/// An insight's id: the same finding made again is the same record.
pub fn insight_record_id(meeting_id: &str, kind: InsightKind, text: &str) -> String {
    use sha2::{Digest, Sha256};
    let normal: String =
        text.to_lowercase().chars().filter(|c| c.is_alphanumeric() || c.is_whitespace()).collect::<String>();
    let normal = normal.split_whitespace().collect::<Vec<_>>().join(" ");
    let digest = Sha256::digest(format!("{}\0{normal}", kind.as_str()).as_bytes());
    format!("{meeting_id}:ins:{}", &hex::encode(digest)[..16])
}

/// The tag a chunk carries for each speaker in it (filters by speaker read tags).
pub fn speaker_tag(speaker: &str) -> String {
    let mut tag = format!("speaker:{}", speaker.trim().to_lowercase());
    while tag.len() > 256 {
        tag.pop();
    }
    tag
}
