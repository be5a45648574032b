//! Meetings: transcripts in; searchable turns, insights, summaries and memories out.
//!
//! [`Meetings`] is the service behind `/api/v1/meetings`. Everything a meeting holds is a record
//! (layout in [`model`]) written through the one write path, so backups, dumps, migrations and
//! cluster twins carry meetings like any other data:
//!
//! - **segments** ([`Meetings::add_segments`]): final segments get the meeting's next `seq` (0 for
//!   its first) and are stored with the chunks they change, the insights the rules find in them,
//!   the unknown speakers as participants and, every [`SUMMARY_EVERY`] segments, the rolling
//!   summary and topics — one write batch per request, so a refused batch stores nothing and a
//!   stored one is complete. A `segment_id` already stored is acknowledged with its `seq` again;
//!   partial segments are acknowledged and not stored.
//! - **chunks**: windows of [`WINDOW`] consecutive turns every [`STRIDE`] turns (so each turn is in
//!   two windows and an answer spanning turns lies inside one), `Speaker: text` lines, embedded and
//!   indexed by the hybrid engine, filterable by meeting (`meeting_id`), speaker (a tag per
//!   speaker) and time (the chunk's date is the meeting's start plus its offset). Search leaves
//!   out a chunk that overlaps a better-ranked chunk of the same meeting.
//! - **end** ([`Meetings::end`], then the job [`finish`]): the status turns `ended`; the job makes
//!   the final insights (the configured LLM's, else the rules'), the final summary, one episodic
//!   memory per participant with a `user_id` (the meeting as `run_id`) and a factual memory per
//!   action item for its owner; and the entities and relations the rule-based extractor reads
//!   from the transcript go into the project's entity graph (`crate::graph`), the participants
//!   known as people.
//! - **import** ([`import`]): a transcript file becomes an ended meeting, in one write.
//!
//! Writes to one meeting run one at a time (a lock per meeting, across nodes too), so `seq`s are
//! dense and in order.

pub mod finish;
pub mod formats;
pub mod import;
pub mod insights;
pub mod model;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{Error, ErrorCode, Result};
use crate::llm::Llm;
use crate::memory::Memories;
use crate::store::records::{NewRecord, Record, RecordFilter, Write};
use crate::store::{RecordKey, Stores, TenantId};
use crate::writelog::{WriteLog, WriteOutcome};
use model::*;
pub use model::{Insight, InsightKind, Meeting, Participant, Segment, SegmentInput, Status, Summary};

/// Turns per search chunk.
pub const WINDOW: u64 = 4;
/// Turns between the starts of two chunks (a turn is in `WINDOW / STRIDE` chunks).
pub const STRIDE: u64 = 2;
/// The rolling summary and the topics are refreshed every this many final segments.
pub const SUMMARY_EVERY: u64 = 10;
/// Bullets of a rolling summary.
const ROLLING_BULLETS: usize = 5;
/// Topics kept.
const TOPICS: usize = 6;
/// Records read per page when a meeting's parts are listed.
const PAGE: usize = 1000;

pub struct Meetings {
    stores: Stores,
    writes: Arc<WriteLog>,
    memories: Arc<Memories>,
    graph: Arc<crate::graph::Graph>,
    llm: Option<Arc<dyn Llm>>,
    locks: Vec<tokio::sync::Mutex<()>>,
}

/// A new meeting.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"title": "Weekly product review", "status": "live",
    "participants": [{"name": "Ana Lima", "user_id": "ana"}, {"name": "Bo Chen", "user_id": "bo"}]}))]
pub struct NewMeeting {
    pub title: String,
    /// `scheduled` (default) or `live`; a meeting ends through `POST .../end`.
    #[serde(default)]
    pub status: Option<Status>,
    /// When it started (RFC 3339); set when the first segment arrives if absent.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub participants: Vec<Participant>,
}

/// A change to a meeting; absent fields stay as they are.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"title": "Weekly product review (moved)", "metadata": {"room": "4B"}}))]
pub struct MeetingPatch {
    pub title: Option<String>,
    /// `scheduled` or `live` (end a meeting with `POST .../end`).
    pub status: Option<Status>,
    pub started_at: Option<DateTime<Utc>>,
    /// Replaces the meeting's metadata.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// What happened to one segment of a request.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SegmentAck {
    pub segment_id: String,
    /// The segment's place in the transcript; absent for a partial.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// `stored`, `duplicate` (this segment_id was stored before: same seq) or `partial` (not stored).
    pub status: &'static str,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SegmentsOutcome {
    pub meeting_id: String,
    pub acks: Vec<SegmentAck>,
    /// Insights the stored segments produced.
    pub insights: Vec<Insight>,
    /// `true`: searchable now; `false`: the wait timed out; absent: not asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indexed: Option<bool>,
}

fn validate_title(title: &str) -> Result<String> {
    let title = title.trim();
    if title.is_empty() || title.len() > 512 || title.chars().any(char::is_control) {
        return Err(Error::invalid("a meeting's title must be 1-512 bytes without control characters"));
    }
    Ok(title.to_string())
}

fn validate_metadata(metadata: Option<Value>) -> Result<Value> {
    match metadata {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::Object(m)) => Ok(Value::Object(m)),
        Some(_) => Err(Error::invalid("metadata must be a JSON object")),
    }
}

impl Meetings {
    pub fn new(
        stores: Stores,
        writes: Arc<WriteLog>,
        memories: Arc<Memories>,
        graph: Arc<crate::graph::Graph>,
        llm: Option<Arc<dyn Llm>>,
    ) -> Meetings {
        let locks = (0..64).map(|_| tokio::sync::Mutex::new(())).collect();
        Meetings { stores, writes, memories, graph, llm, locks }
    }

    /// Holds the meeting's lock (in this process and, for a shared record store, across nodes).
    async fn lock(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<(tokio::sync::MutexGuard<'_, ()>, Option<crate::store::records::ExclusiveGuard>)> {
        let name = crate::memory::short_hash(&[tenant.as_str(), id]);
        let stripe = u64::from_str_radix(&name[..8], 16).unwrap_or(0) as usize % self.locks.len();
        let local = self.locks[stripe].lock().await;
        let cluster = self.stores.records.exclusive(&format!("meeting:{name}")).await?;
        Ok((local, cluster))
    }

    pub async fn get(&self, tenant: &TenantId, id: &str) -> Result<Meeting> {
        match self.stores.records.get(tenant, id).await? {
            Some(r) if r.kind == MEETING_KIND => Ok(Meeting::from_record(&r)),
            _ => Err(Error::not_found("meeting", id)),
        }
    }

    pub async fn list(
        &self,
        tenant: &TenantId,
        status: Option<Status>,
        after: Option<RecordKey>,
        limit: usize,
    ) -> Result<Vec<Meeting>> {
        let mut filter = RecordFilter::kinds(&[MEETING_KIND]);
        filter.after_key = after;
        if let Some(s) = status {
            filter.metadata.push(("status".into(), s.as_str().into()));
        }
        let keys = self.stores.records.keys_matching(tenant, &filter, limit).await?;
        let records = self.stores.records.get_by_keys(tenant, &keys).await?;
        Ok(records.iter().map(Meeting::from_record).collect())
    }

    fn meeting_write(meeting: &Meeting) -> Write {
        Write::Upsert(NewRecord {
            id: meeting.id.clone(),
            kind: MEETING_KIND.into(),
            title: Some(meeting.title.clone()),
            body: None,
            tags: Vec::new(),
            metadata: meeting.record_metadata(),
            vector: None,
            graph: None,
            embed: false,
        })
    }

    pub async fn create(&self, tenant: &TenantId, input: NewMeeting, wait: bool) -> Result<Meeting> {
        let meeting = self.new_meeting(new_meeting_id(), input, "live")?;
        self.writes.write(tenant, vec![Self::meeting_write(&meeting)], wait).await?;
        self.get(tenant, &meeting.id).await
    }

    fn new_meeting(&self, id: String, input: NewMeeting, source: &str) -> Result<Meeting> {
        let now = Utc::now();
        let status = input.status.unwrap_or_default();
        if status == Status::Ended {
            return Err(Error::invalid(
                "a meeting is created scheduled or live; end it with POST /api/v1/meetings/{id}/end",
            ));
        }
        let mut meeting = Meeting {
            id,
            title: validate_title(&input.title)?,
            status,
            started_at: input.started_at.or((status == Status::Live).then_some(now)),
            ended_at: None,
            source: source.into(),
            participants: Vec::new(),
            segments: 0,
            metadata: validate_metadata(input.metadata)?,
            key: 0,
            created_at: now,
            updated_at: now,
        };
        for p in input.participants {
            meeting.upsert_participant(p)?;
        }
        Ok(meeting)
    }

    pub async fn update(&self, tenant: &TenantId, id: &str, patch: MeetingPatch, wait: bool) -> Result<Meeting> {
        let _guard = self.lock(tenant, id).await?;
        let mut meeting = self.get(tenant, id).await?;
        if let Some(title) = patch.title {
            meeting.title = validate_title(&title)?;
        }
        if let Some(status) = patch.status {
            if status == Status::Ended && meeting.status != Status::Ended {
                return Err(Error::invalid("end a meeting with POST /api/v1/meetings/{id}/end"));
            }
            if meeting.status == Status::Ended && status != Status::Ended {
                return Err(Error::new(ErrorCode::Conflict, format!("meeting {id} has ended; it cannot be reopened")));
            }
            if status == Status::Live && meeting.started_at.is_none() {
                meeting.started_at = Some(Utc::now());
            }
            meeting.status = status;
        }
        if let Some(t) = patch.started_at {
            meeting.started_at = Some(t);
        }
        if patch.metadata.is_some() {
            meeting.metadata = validate_metadata(patch.metadata)?;
        }
        self.writes.write(tenant, vec![Self::meeting_write(&meeting)], wait).await?;
        self.get(tenant, id).await
    }

    pub async fn add_participants(
        &self,
        tenant: &TenantId,
        id: &str,
        participants: Vec<Participant>,
        wait: bool,
    ) -> Result<Meeting> {
        if participants.is_empty() {
            return Err(Error::invalid("give at least one participant"));
        }
        let _guard = self.lock(tenant, id).await?;
        let mut meeting = self.get(tenant, id).await?;
        for p in participants {
            meeting.upsert_participant(p)?;
        }
        self.writes.write(tenant, vec![Self::meeting_write(&meeting)], wait).await?;
        self.get(tenant, id).await
    }

    /// Keys of the meeting's records of `kinds` (all parts when empty), in key order.
    async fn part_keys(
        &self,
        tenant: &TenantId,
        id: &str,
        kinds: &[&str],
        extra: &[(&str, &str)],
    ) -> Result<Vec<RecordKey>> {
        let mut filter = RecordFilter::kinds(if kinds.is_empty() { &PART_KINDS } else { kinds });
        filter.metadata.push(("meeting_id".into(), id.into()));
        for (k, v) in extra {
            filter.metadata.push((k.to_string(), v.to_string()));
        }
        let mut out = Vec::new();
        loop {
            let page = self.stores.records.keys_matching(tenant, &filter, PAGE).await?;
            let done = page.len() < PAGE;
            filter.after_key = page.last().copied();
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    async fn records(&self, tenant: &TenantId, keys: &[RecordKey]) -> Result<Vec<Record>> {
        let mut out = Vec::with_capacity(keys.len());
        for page in keys.chunks(PAGE) {
            out.extend(self.stores.records.get_by_keys(tenant, page).await?);
        }
        Ok(out)
    }

    /// Removes the meeting and everything it holds (segments, chunks, insights, summary) from
    /// every store. The memories its end made stay: they belong to their users.
    pub async fn delete(&self, tenant: &TenantId, id: &str, wait: bool) -> Result<Meeting> {
        let _guard = self.lock(tenant, id).await?;
        let meeting = self.get(tenant, id).await?;
        let keys = self.part_keys(tenant, id, &[], &[]).await?;
        let mut writes: Vec<Write> =
            self.records(tenant, &keys).await?.into_iter().map(|r| Write::Delete { id: r.id }).collect();
        writes.push(Write::Delete { id: id.to_string() });
        self.writes.write(tenant, writes, wait).await?;
        Ok(meeting)
    }

    /// The meeting's final segments in `seq` order.
    pub async fn segments(&self, tenant: &TenantId, id: &str) -> Result<Vec<Segment>> {
        let keys = self.part_keys(tenant, id, &[SEGMENT_KIND], &[]).await?;
        let mut segments: Vec<Segment> = self.records(tenant, &keys).await?.iter().map(Segment::from_record).collect();
        segments.sort_by_key(|s| s.seq);
        Ok(segments)
    }

    /// The meeting's insights (of one kind, if given), in the order they were said.
    pub async fn insights(&self, tenant: &TenantId, id: &str, kind: Option<InsightKind>) -> Result<Vec<Insight>> {
        let extra: Vec<(&str, &str)> = kind.iter().map(|k| ("kind", k.as_str())).collect();
        let keys = self.part_keys(tenant, id, &[INSIGHT_KIND], &extra).await?;
        let mut found: Vec<Insight> =
            self.records(tenant, &keys).await?.iter().filter_map(Insight::from_record).collect();
        found.sort_by(|a, b| a.seqs.first().cmp(&b.seqs.first()).then(a.kind.cmp(&b.kind)).then(a.id.cmp(&b.id)));
        Ok(found)
    }

    pub async fn summary(&self, tenant: &TenantId, id: &str) -> Result<Summary> {
        self.get(tenant, id).await?;
        Ok(match self.stores.records.get(tenant, &summary_record_id(id)).await? {
            Some(r) if r.kind == SUMMARY_KIND => Summary::from_record(&r),
            _ => Summary { meeting_id: id.to_string(), kind: "none".into(), ..Default::default() },
        })
    }

    /// Stores the final segments of `inputs` (see the module documentation).
    pub async fn add_segments(
        &self,
        tenant: &TenantId,
        id: &str,
        inputs: Vec<SegmentInput>,
        wait: bool,
    ) -> Result<SegmentsOutcome> {
        if inputs.is_empty() {
            return Err(Error::invalid("give at least one segment in `segments`"));
        }
        if inputs.len() > MAX_BATCH {
            return Err(Error::new(ErrorCode::PayloadTooLarge, format!("at most {MAX_BATCH} segments per request")));
        }
        for s in &inputs {
            s.validate()?;
        }
        let _guard = self.lock(tenant, id).await?;
        let mut meeting = self.get(tenant, id).await?;
        if meeting.status == Status::Ended {
            return Err(Error::new(ErrorCode::Conflict, format!("meeting {id} has ended; it takes no more segments")));
        }
        let finals = inputs.iter().filter(|s| s.is_final).count() as u64;
        if meeting.segments + finals > MAX_SEGMENTS {
            return Err(Error::new(
                ErrorCode::PayloadTooLarge,
                format!("a meeting holds at most {MAX_SEGMENTS} segments"),
            ));
        }
        let mut acks = Vec::with_capacity(inputs.len());
        let mut fresh: Vec<Segment> = Vec::new();
        let mut seen: HashMap<String, u64> = HashMap::new();
        for input in inputs {
            if !input.is_final {
                acks.push(SegmentAck { segment_id: input.segment_id, seq: None, status: "partial" });
                continue;
            }
            if let Some(seq) = seen.get(&input.segment_id) {
                acks.push(SegmentAck { segment_id: input.segment_id, seq: Some(*seq), status: "duplicate" });
                continue;
            }
            if let Some(seq) = self.stored_seq(tenant, id, &input.segment_id).await? {
                seen.insert(input.segment_id.clone(), seq);
                acks.push(SegmentAck { segment_id: input.segment_id, seq: Some(seq), status: "duplicate" });
                continue;
            }
            let seq = meeting.segments + fresh.len() as u64;
            seen.insert(input.segment_id.clone(), seq);
            acks.push(SegmentAck { segment_id: input.segment_id.clone(), seq: Some(seq), status: "stored" });
            fresh.push(Segment {
                seq,
                segment_id: input.segment_id,
                speaker: input.speaker.trim().to_string(),
                start_ms: input.start_ms,
                end_ms: input.end_ms,
                text: input.text.trim().to_string(),
            });
        }
        if fresh.is_empty() {
            return Ok(SegmentsOutcome { meeting_id: id.to_string(), acks, insights: Vec::new(), indexed: None });
        }
        if meeting.status == Status::Scheduled {
            meeting.status = Status::Live;
        }
        if meeting.started_at.is_none() {
            meeting.started_at = Some(Utc::now());
        }
        let (writes, insights) = self.append(tenant, &mut meeting, fresh).await?;
        let outcome = self.writes.write(tenant, writes, wait).await?;
        Ok(SegmentsOutcome { meeting_id: id.to_string(), acks, insights, indexed: outcome.indexed })
    }

    async fn stored_seq(&self, tenant: &TenantId, id: &str, segment_id: &str) -> Result<Option<u64>> {
        let keys = self.part_keys(tenant, id, &[SEGMENT_KIND], &[("segment_id", segment_id)]).await?;
        let records = self.records(tenant, &keys).await?;
        Ok(records.iter().map(Segment::from_record).find(|s| s.segment_id == segment_id).map(|s| s.seq))
    }

    /// The writes that add `fresh` (numbered from `meeting.segments` on) to the meeting:
    /// segments, changed chunks, the rules' insights, new speakers as participants, the rolling
    /// summary and topics when due, and the meeting itself.
    async fn append(
        &self,
        tenant: &TenantId,
        meeting: &mut Meeting,
        fresh: Vec<Segment>,
    ) -> Result<(Vec<Write>, Vec<Insight>)> {
        let before = meeting.segments;
        let last = fresh.last().map_or(before, |s| s.seq);
        let mut writes = Vec::new();
        for s in &fresh {
            if !s.speaker.is_empty() && meeting.participant(&s.speaker).is_none() {
                meeting.upsert_participant(Participant::named(&s.speaker))?;
            }
            writes.push(segment_write(&meeting.id, s));
        }
        // Earlier turns that share a chunk with the new ones.
        let from = before.saturating_sub(WINDOW - 1);
        let mut window: Vec<Segment> = Vec::new();
        for seq in from..before {
            if let Some(r) = self.stores.records.get(tenant, &segment_record_id(&meeting.id, seq)).await? {
                window.push(Segment::from_record(&r));
            }
        }
        window.extend(fresh.iter().cloned());
        writes.extend(chunk_writes(meeting, &window, before, last));

        let names: Vec<String> = meeting.participants.iter().map(|p| p.name.clone()).collect();
        let start_day = meeting.started_at.unwrap_or(meeting.created_at).date_naive();
        let found = merge_insights(insights::extract(&fresh, &names, start_day));
        for i in &found {
            writes.push(insight_write(&meeting.id, i));
        }
        meeting.segments = last + 1;
        if before / SUMMARY_EVERY != meeting.segments / SUMMARY_EVERY {
            let mut all = self.segments(tenant, &meeting.id).await?;
            all.retain(|s| s.seq < before);
            all.extend(fresh);
            let known = self.insights(tenant, &meeting.id, None).await?;
            let mut every = known.clone();
            every.extend(found.iter().cloned());
            let bullets = insights::extractive_summary(&all, &every, ROLLING_BULLETS);
            writes.push(summary_write(&meeting.id, "rolling", &bullets, None, last, "extractive"));
            writes.extend(topic_writes(&meeting.id, &known, insights::topics(&all, TOPICS)));
        }
        writes.push(Self::meeting_write(meeting));
        Ok((writes, found))
    }

    /// Marks the meeting ended (now, unless it ended before). The finishing work is the job
    /// [`finish::FINISH_JOB`]; the caller queues it.
    pub async fn end(&self, tenant: &TenantId, id: &str) -> Result<Meeting> {
        let _guard = self.lock(tenant, id).await?;
        let mut meeting = self.get(tenant, id).await?;
        if meeting.status != Status::Ended {
            let now = Utc::now();
            meeting.status = Status::Ended;
            meeting.ended_at = Some(now);
            meeting.started_at = Some(meeting.started_at.unwrap_or(meeting.created_at));
            self.writes.write(tenant, vec![Self::meeting_write(&meeting)], false).await?;
        }
        self.get(tenant, id).await
    }

    /// A whole transcript as a new, ended meeting with id `id`, in one write (nothing is stored
    /// when anything is refused). `None` when a meeting with that id exists already.
    pub async fn create_imported(
        &self,
        tenant: &TenantId,
        id: &str,
        mut input: NewMeeting,
        source: &str,
        segments: Vec<SegmentInput>,
    ) -> Result<Option<Meeting>> {
        if segments.len() as u64 > MAX_SEGMENTS {
            return Err(Error::new(
                ErrorCode::PayloadTooLarge,
                format!("a meeting holds at most {MAX_SEGMENTS} segments"),
            ));
        }
        let _guard = self.lock(tenant, id).await?;
        if self.stores.records.get(tenant, id).await?.is_some() {
            return Ok(None);
        }
        let started = input.started_at.take();
        let mut meeting = self.new_meeting(id.to_string(), input, source)?;
        meeting.started_at = Some(started.unwrap_or(meeting.created_at));
        let mut fresh = Vec::with_capacity(segments.len());
        for (seq, s) in segments.into_iter().enumerate() {
            s.validate().map_err(|e| Error::new(e.code, format!("segment {}: {}", seq + 1, e.message)))?;
            fresh.push(Segment {
                seq: seq as u64,
                segment_id: s.segment_id,
                speaker: s.speaker.trim().to_string(),
                start_ms: s.start_ms,
                end_ms: s.end_ms,
                text: s.text.trim().to_string(),
            });
        }
        let last = fresh.last().map_or(0, |s| s.start_ms.max(s.end_ms));
        meeting.status = Status::Ended;
        meeting.ended_at = meeting.started_at.map(|t| t + chrono::Duration::milliseconds(last as i64));
        let (writes, _) = self.append(tenant, &mut meeting, fresh).await?;
        self.writes.write(tenant, writes, true).await?;
        Ok(Some(self.get(tenant, id).await?))
    }

    pub(crate) async fn write(&self, tenant: &TenantId, writes: Vec<Write>, wait: bool) -> Result<WriteOutcome> {
        self.writes.write(tenant, writes, wait).await
    }
}

/// Insights found twice in one batch (the same sentence) become one with both sources.
fn merge_insights(found: Vec<Insight>) -> Vec<Insight> {
    let mut by_id: BTreeMap<(InsightKind, String), Insight> = BTreeMap::new();
    let mut order = Vec::new();
    for i in found {
        let key = (i.kind, insight_record_id("", i.kind, &i.text));
        match by_id.get_mut(&key) {
            Some(existing) => {
                for s in i.seqs {
                    if !existing.seqs.contains(&s) {
                        existing.seqs.push(s);
                    }
                }
            }
            None => {
                order.push(key.clone());
                by_id.insert(key, i);
            }
        }
    }
    order.into_iter().filter_map(|k| by_id.remove(&k)).collect()
}

fn segment_write(meeting_id: &str, s: &Segment) -> Write {
    Write::Upsert(NewRecord {
        id: segment_record_id(meeting_id, s.seq),
        kind: SEGMENT_KIND.into(),
        title: Some(s.speaker.clone()).filter(|t| !t.is_empty()),
        body: Some(s.text.clone()),
        tags: Vec::new(),
        metadata: json!({
            "meeting_id": meeting_id, "seq": s.seq, "segment_id": s.segment_id, "speaker": s.speaker,
            "start_ms": s.start_ms, "end_ms": s.end_ms,
        }),
        vector: None,
        graph: None,
        embed: false,
    })
}

/// The chunks whose window holds a segment numbered `first..=last`; `window` holds every
/// segment they cover. A window that the one before it already covers entirely is not written
/// (it will be once a later turn makes it longer).
fn chunk_writes(meeting: &Meeting, window: &[Segment], first: u64, last: u64) -> Vec<Write> {
    let by_seq: BTreeMap<u64, &Segment> = window.iter().map(|s| (s.seq, s)).collect();
    let lowest = first.saturating_sub(WINDOW - 1);
    let mut start = lowest.div_ceil(STRIDE) * STRIDE;
    let base = meeting.started_at.unwrap_or(meeting.created_at);
    let mut out = Vec::new();
    while start <= last {
        let end = (start + WINDOW - 1).min(last);
        let covered_before = start >= STRIDE && start - STRIDE + WINDOW > last;
        if !covered_before {
            let turns: Vec<&Segment> = (start..=end).filter_map(|s| by_seq.get(&s).copied()).collect();
            if !turns.is_empty() {
                out.push(chunk_write(&meeting.id, base, &turns));
            }
        }
        start += STRIDE;
    }
    out
}

fn chunk_write(meeting_id: &str, base: DateTime<Utc>, turns: &[&Segment]) -> Write {
    let body = turns.iter().map(|s| s.as_turn()).collect::<Vec<_>>().join("\n");
    let mut said: Vec<(String, usize)> = Vec::new();
    for s in turns.iter().filter(|s| !s.speaker.is_empty()) {
        match said.iter_mut().find(|(n, _)| *n == s.speaker) {
            Some((_, n)) => *n += s.text.len(),
            None => said.push((s.speaker.clone(), s.text.len())),
        }
    }
    let speaker = said.iter().max_by_key(|(_, n)| *n).map(|(s, _)| s.clone());
    let speakers: Vec<String> = said.iter().map(|(s, _)| s.clone()).collect();
    let first = turns[0];
    let last = turns[turns.len() - 1];
    let date = base + chrono::Duration::milliseconds(first.start_ms as i64);
    let mut m = Map::new();
    m.insert("meeting_id".into(), meeting_id.into());
    m.insert("seq_start".into(), first.seq.into());
    m.insert("seq_end".into(), last.seq.into());
    m.insert("start_ms".into(), first.start_ms.into());
    m.insert("end_ms".into(), last.end_ms.into());
    m.insert("date".into(), date.to_rfc3339().into());
    if let Some(s) = speaker {
        m.insert("speaker".into(), s.into());
    }
    m.insert("speakers".into(), json!(speakers));
    Write::Upsert(NewRecord {
        id: chunk_record_id(meeting_id, first.seq),
        kind: CHUNK_KIND.into(),
        title: None,
        body: Some(body),
        tags: speakers.iter().map(|s| speaker_tag(s)).collect(),
        metadata: Value::Object(m),
        vector: None,
        graph: None,
        embed: true,
    })
}

pub(crate) fn insight_write(meeting_id: &str, i: &Insight) -> Write {
    let mut m = Map::new();
    m.insert("meeting_id".into(), meeting_id.into());
    m.insert("kind".into(), i.kind.as_str().into());
    for (k, v) in [("speaker", &i.speaker), ("owner", &i.owner), ("due", &i.due), ("due_date", &i.due_date)] {
        if let Some(v) = v {
            m.insert(k.into(), v.clone().into());
        }
    }
    m.insert("seqs".into(), json!(i.seqs));
    m.insert("extractor".into(), i.extractor.clone().into());
    Write::Upsert(NewRecord {
        id: insight_record_id(meeting_id, i.kind, &i.text),
        kind: INSIGHT_KIND.into(),
        title: None,
        body: Some(i.text.clone()),
        tags: Vec::new(),
        metadata: Value::Object(m),
        vector: None,
        graph: None,
        embed: false,
    })
}

/// New topics written, topics no longer among them removed.
fn topic_writes(meeting_id: &str, known: &[Insight], topics: Vec<Insight>) -> Vec<Write> {
    let mut out: Vec<Write> = topics.iter().map(|t| insight_write(meeting_id, t)).collect();
    let keep: Vec<String> = topics.iter().map(|t| insight_record_id(meeting_id, t.kind, &t.text)).collect();
    for old in known.iter().filter(|i| i.kind == InsightKind::Topic) {
        if !keep.contains(&old.id) {
            out.push(Write::Delete { id: old.id.clone() });
        }
    }
    out
}

pub(crate) fn summary_write(
    meeting_id: &str,
    kind: &str,
    bullets: &[String],
    text: Option<String>,
    upto_seq: u64,
    generator: &str,
) -> Write {
    let text = text.unwrap_or_else(|| bullets.join("\n"));
    Write::Upsert(NewRecord {
        id: summary_record_id(meeting_id),
        kind: SUMMARY_KIND.into(),
        title: None,
        body: Some(text).filter(|t| !t.is_empty()),
        tags: Vec::new(),
        metadata: json!({"meeting_id": meeting_id, "kind": kind, "upto_seq": upto_seq, "generator": generator, "bullets": bullets}),
        vector: None,
        graph: None,
        embed: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meeting() -> Meeting {
        Meeting {
            id: "m".into(),
            title: "t".into(),
            status: Status::Live,
            started_at: None,
            ended_at: None,
            source: "live".into(),
            participants: vec![],
            segments: 0,
            metadata: json!({}),
            key: 0,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn seg(seq: u64) -> Segment {
        Segment {
            seq,
            segment_id: seq.to_string(),
            speaker: format!("S{}", seq % 2),
            start_ms: seq,
            end_ms: seq,
            text: format!("turn {seq}"),
        }
    }

    fn ranges(writes: &[Write]) -> Vec<(u64, u64)> {
        writes
            .iter()
            .filter_map(|w| match w {
                Write::Upsert(r) => Some((r.metadata["seq_start"].as_u64()?, r.metadata["seq_end"].as_u64()?)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn chunks_overlap_and_grow_as_turns_arrive() {
        let all: Vec<Segment> = (0..10).map(seg).collect();
        // All at once: windows of four every two turns, none inside the one before.
        assert_eq!(ranges(&chunk_writes(&meeting(), &all, 0, 9)), vec![(0, 3), (2, 5), (4, 7), (6, 9)]);
        // One at a time: each arrival rewrites the windows it is in.
        assert_eq!(ranges(&chunk_writes(&meeting(), &all[..1], 0, 0)), vec![(0, 0)]);
        assert_eq!(ranges(&chunk_writes(&meeting(), &all[..4], 3, 3)), vec![(0, 3)]);
        assert_eq!(ranges(&chunk_writes(&meeting(), &all[1..5], 4, 4)), vec![(2, 4)]);
        assert_eq!(ranges(&chunk_writes(&meeting(), &all[2..6], 5, 5)), vec![(2, 5)]);
        let Write::Upsert(r) = &chunk_writes(&meeting(), &all, 0, 9)[0] else { panic!() };
        assert_eq!(r.body.as_deref(), Some("S0: turn 0\nS1: turn 1\nS0: turn 2\nS1: turn 3"));
        assert_eq!(r.tags, vec!["speaker:s0", "speaker:s1"]);
    }
}
