//! The real-time hub: one stream of events for the whole product, derived from the change log.
//!
//! One tailer task follows the record store's change log (woken by this process's writes, and
//! polling when other nodes share the log) and turns each entry into at most one [`Event`],
//! published on a `tokio::sync::broadcast` channel of fixed capacity. So every write path (HTTP,
//! MCP, Mem0, jobs) produces events without code of its own, and in a cluster every node sees
//! every node's writes. An event carries its change-log position (`pos`): a client that
//! reconnects with the last position it saw catches up from the log ([`Hub::catch_up`]) and then
//! follows live; one too far behind is told to resync.
//!
//! Some events are live only, never logged: partial transcript segments (fanned out by the live
//! meeting stream, coalesced per segment) and job progress (per node, like job events). They
//! carry the position the hub had published when they were sent, and are not replayed.
//!
//! Topics: `meetings` and `meeting:{id}` (the meeting, its final segments, insights, summary,
//! partials), `memories` and `memories:user:{id}` / `memories:agent:{id}` / `memories:run:{id}`,
//! `documents`, `jobs`. Every event belongs to one tenant; the transport shows a connection only
//! its own tenant's events. The channel is bounded: a receiver that falls `queue` events behind
//! learns it (`Lagged`) and is closed by the transport, so a slow reader never grows memory.
//!
//! A connection that follows one meeting only (`meeting:{id}`: a meeting's viewers and its live
//! stream) takes that meeting's events from a channel of its own, made while it has receivers.
//! So thousands of viewers of a hundred meetings are each woken by their meeting's events alone,
//! not by every event of the node, and one that keeps up with its meeting never falls behind
//! because other meetings are busy.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::config::EventsConfig;
use crate::error::{Error, Result};
use crate::jobs::JobEvent;
use crate::knowledge::documents::{DOCUMENT_KIND, Document};
use crate::meetings::model::{
    CHUNK_KIND, INSIGHT_KIND, Insight, MEETING_KIND, Meeting, SEGMENT_KIND, SUMMARY_KIND, Segment, Summary,
};
use crate::memory::model::{HistoryEntry, Memory};
use crate::memory::{HISTORY_KIND, MEMORY_KIND};
use crate::store::records::{Change, ChangeOp, RecordStore};
use crate::store::{Seq, TenantId};

/// Change-log entries read per page.
const PAGE: usize = 512;
/// How long the tailer waits after a failed read of the change log.
const RETRY: Duration = Duration::from_secs(1);

/// One event. Serialized once per event (see [`Event::frame`]), shared by every connection.
#[derive(Debug, Serialize)]
pub struct Event {
    /// `meeting`, `segment`, `insight`, `summary`, `partial`, `memory`, `document` or `job`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The change-log position: of the change itself, or (live-only events) the position the hub
    /// had published when it was sent.
    pub pos: Seq,
    pub topics: Vec<String>,
    /// `upsert` or `delete`; absent for live-only events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<ChangeOp>,
    /// The id of what changed (record, memory, job, segment).
    pub id: String,
    pub data: Value,
    #[serde(skip)]
    pub tenant: TenantId,
    /// From the change log (replayed on catch-up), not live-only.
    #[serde(skip)]
    pub logged: bool,
    /// The connection a live-only event came from (0: none); it is not sent back there.
    #[serde(skip)]
    pub origin: u64,
    #[serde(skip)]
    frame: OnceLock<bytes::Bytes>,
}

impl Event {
    fn new(kind: &'static str, pos: Seq, tenant: TenantId, topics: Vec<String>, id: String, data: Value) -> Event {
        Event { kind, pos, topics, op: None, id, data, tenant, logged: false, origin: 0, frame: OnceLock::new() }
    }

    /// The event as JSON text (UTF-8), made on first use and shared after.
    pub fn frame(&self) -> bytes::Bytes {
        self.frame.get_or_init(|| serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec()).into()).clone()
    }

    /// The meeting a meeting event is about.
    pub fn meeting_id(&self) -> Option<&str> {
        self.topics.iter().find_map(|t| t.strip_prefix("meeting:"))
    }
}

/// The topics a connection asked for; empty: every topic.
#[derive(Clone, Debug, Default)]
pub struct Topics(BTreeSet<String>);

impl Topics {
    /// `a,b,c`; each one of the documented topics.
    pub fn parse(list: Option<&str>) -> Result<Topics> {
        let mut out = BTreeSet::new();
        for topic in list.unwrap_or_default().split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let valid = match topic.split_once(':') {
                None => ["meetings", "memories", "documents", "jobs"].contains(&topic),
                Some(("meeting", id)) => !id.is_empty(),
                Some(("memories", scope)) => {
                    scope.split_once(':').is_some_and(|(k, id)| ["user", "agent", "run"].contains(&k) && !id.is_empty())
                }
                Some(_) => false,
            };
            if !valid || topic.len() > 300 {
                return Err(Error::invalid(format!(
                    "unknown topic {topic:?}: use meetings, meeting:{{id}}, memories, memories:user:{{id}}, \
                     memories:agent:{{id}}, memories:run:{{id}}, documents or jobs"
                )));
            }
            out.insert(topic.to_string());
        }
        Ok(Topics(out))
    }

    pub fn one(topic: String) -> Topics {
        Topics(BTreeSet::from([topic]))
    }

    /// The meeting these topics are all about, when they are exactly `meeting:{id}`.
    pub fn only_meeting(&self) -> Option<&str> {
        match self.0.len() {
            1 => self.0.first()?.strip_prefix("meeting:"),
            _ => None,
        }
    }

    pub fn matches(&self, event: &Event) -> bool {
        self.0.is_empty() || event.topics.iter().any(|t| self.0.contains(t))
    }
}

/// What a catch-up found.
pub enum CatchUp {
    /// The tenant's matching events after the asked position, up to the hub's position.
    Events(Vec<Arc<Event>>),
    /// Too far behind (or ahead: a position this log never had): reload, then follow live.
    Resync,
}

/// Where events go: the node's channel, which every event takes, and one per meeting that
/// connections follow on its own, which takes that meeting's events too. All are bounded by
/// `capacity`; a meeting's channel is dropped once nobody listens to it.
struct Channels {
    all: broadcast::Sender<Arc<Event>>,
    meetings: parking_lot::Mutex<HashMap<String, broadcast::Sender<Arc<Event>>>>,
    capacity: usize,
}

impl Channels {
    fn new(capacity: usize) -> Channels {
        Channels { all: broadcast::channel(capacity).0, meetings: Default::default(), capacity }
    }

    fn send(&self, event: Event) {
        let event = Arc::new(event);
        if let Some(meeting) = event.meeting_id() {
            let mut meetings = self.meetings.lock();
            if let Some(tx) = meetings.get(meeting)
                && tx.send(event.clone()).is_err()
            {
                meetings.remove(meeting);
            }
        }
        let _ = self.all.send(event);
    }

    /// A receiver of every event from now on that `topics` can match.
    fn subscribe(&self, topics: &Topics) -> broadcast::Receiver<Arc<Event>> {
        let Some(meeting) = topics.only_meeting() else { return self.all.subscribe() };
        let mut meetings = self.meetings.lock();
        if let Some(tx) = meetings.get(meeting) {
            return tx.subscribe();
        }
        meetings.retain(|_, tx| tx.receiver_count() > 0);
        let (tx, rx) = broadcast::channel(self.capacity);
        meetings.insert(meeting.to_string(), tx);
        rx
    }
}

pub struct Hub {
    channels: Channels,
    published: watch::Sender<Seq>,
    records: Arc<dyn RecordStore>,
    config: EventsConfig,
}

impl Hub {
    /// Starts the tailer from the change log's head; it stops when `shutdown` turns true.
    /// `written` ticks on this process's writes; `poll` is how often the log is read anyway when
    /// other processes write it too.
    pub async fn start(
        records: Arc<dyn RecordStore>,
        config: EventsConfig,
        written: watch::Receiver<Seq>,
        poll: Duration,
        jobs: broadcast::Receiver<JobEvent>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Hub>> {
        let head = records.head_seq().await?;
        let channels = Channels::new(config.queue);
        let hub = Arc::new(Hub { channels, published: watch::channel(head).0, records, config });
        tokio::spawn(hub.clone().tail(head, written, poll, shutdown.clone()));
        tokio::spawn(hub.clone().forward_jobs(jobs, shutdown));
        Ok(hub)
    }

    pub fn config(&self) -> &EventsConfig {
        &self.config
    }

    /// A receiver of the events from now on that `topics` can match: a meeting's own channel
    /// when they are one meeting's, else every event (the caller keeps only what its connection
    /// may see).
    pub fn subscribe(&self, topics: &Topics) -> broadcast::Receiver<Arc<Event>> {
        self.channels.subscribe(topics)
    }

    /// The change-log position of the last logged event published.
    pub fn position(&self) -> Seq {
        *self.published.borrow()
    }

    /// Publishes a live-only event (not in the change log, never replayed).
    pub fn publish_live(&self, tenant: &TenantId, kind: &'static str, topics: Vec<String>, id: String, data: Value) {
        self.channels.send(Event::new(kind, self.position(), tenant.clone(), topics, id, data));
    }

    /// A partial (interim) transcript segment of a meeting, for its viewers other than the
    /// connection `origin` that sent it.
    pub fn publish_partial(&self, tenant: &TenantId, meeting_id: &str, segment: Value, origin: u64) {
        let id = segment["segment_id"].as_str().unwrap_or_default().to_string();
        let mut event = Event::new("partial", self.position(), tenant.clone(), meeting_topics(meeting_id), id, segment);
        event.origin = origin;
        self.channels.send(event);
    }

    /// A stored final segment, sent again to a client resuming a meeting's stream (not from the
    /// log: it carries the hub's position).
    pub fn replayed_segment(&self, tenant: &TenantId, meeting_id: &str, segment: &Segment) -> Event {
        let id = crate::meetings::model::segment_record_id(meeting_id, segment.seq);
        let mut event =
            Event::new("segment", self.position(), tenant.clone(), meeting_topics(meeting_id), id, to_value(segment));
        event.op = Some(ChangeOp::Upsert);
        event
    }

    /// The tenant's events matching `topics` in the change log after `after`, up to the hub's
    /// position `upto` (what live events start after), reading at most `catch_up_max` entries.
    pub async fn catch_up(&self, tenant: &TenantId, topics: &Topics, after: Seq, upto: Seq) -> Result<CatchUp> {
        if after > upto {
            return Ok(CatchUp::Resync);
        }
        let mut out = Vec::new();
        let mut from = after;
        let mut read = 0usize;
        while from < upto {
            let page = self.records.changes_since(from, PAGE).await?;
            if page.is_empty() {
                break;
            }
            for change in &page {
                if change.seq > upto {
                    return Ok(CatchUp::Events(out));
                }
                read += 1;
                if read > self.config.catch_up_max {
                    return Ok(CatchUp::Resync);
                }
                from = change.seq;
                if &change.tenant == tenant
                    && let Some(event) = derive(change)
                    && topics.matches(&event)
                {
                    out.push(Arc::new(event));
                }
            }
        }
        Ok(CatchUp::Events(out))
    }

    async fn tail(
        self: Arc<Self>,
        mut last: Seq,
        mut written: watch::Receiver<Seq>,
        poll: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut others = self.records.change_events();
        let shared = self.records.shared();
        loop {
            match self.records.changes_since(last, PAGE).await {
                Ok(page) => {
                    let full = page.len() == PAGE;
                    for change in &page {
                        if let Some(event) = derive(change) {
                            self.channels.send(event);
                        }
                        last = change.seq;
                    }
                    self.published.send_if_modified(|p| {
                        let newer = last > *p;
                        *p = last.max(*p);
                        newer
                    });
                    if full {
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the event hub could not read the change log; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
            if *shutdown.borrow() {
                return;
            }
            tokio::select! {
                changed = written.changed() => if changed.is_err() { return },
                _ = async {
                    match others.as_mut() {
                        Some(rx) => { let _ = rx.changed().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
                _ = tokio::time::sleep(poll), if shared => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn forward_jobs(
        self: Arc<Self>,
        mut jobs: broadcast::Receiver<JobEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let event = tokio::select! {
                event = jobs.recv() => event,
                _ = shutdown.changed() => return,
            };
            match event {
                Ok(job) => {
                    let Some(tenant) = job.tenant.clone() else { continue };
                    let data = serde_json::to_value(&job).unwrap_or(Value::Null);
                    self.publish_live(&tenant, "job", vec!["jobs".into()], job.job_id.clone(), data);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// The event a change-log entry makes, if any: the record's state now (replaying converges).
/// A deleted record's kind is gone with it: deletions of a document, a meeting and its parts are
/// known by their ids, a memory's by the history entry its deletion writes.
pub fn derive(change: &Change) -> Option<Event> {
    let tenant = change.tenant.clone();
    let (kind, topics, id, data) = match &change.record {
        Some(r) => match r.kind.as_str() {
            MEETING_KIND => ("meeting", meeting_topics(&r.id), r.id.clone(), to_value(Meeting::from_record(r))),
            SEGMENT_KIND | INSIGHT_KIND | SUMMARY_KIND => {
                let meeting = r.metadata.get("meeting_id").and_then(Value::as_str)?;
                let (kind, data) = match r.kind.as_str() {
                    SEGMENT_KIND => ("segment", to_value(Segment::from_record(r))),
                    INSIGHT_KIND => ("insight", to_value(Insight::from_record(r)?)),
                    _ => ("summary", to_value(Summary::from_record(r))),
                };
                (kind, meeting_topics(meeting), r.id.clone(), data)
            }
            CHUNK_KIND => return None,
            MEMORY_KIND => {
                let memory = Memory::from_record(r);
                let topics = memory_topics(&memory.user_id, &memory.agent_id, &memory.run_id);
                ("memory", topics, r.id.clone(), to_value(memory))
            }
            HISTORY_KIND => {
                let entry = HistoryEntry::from_record(r);
                if entry.event != crate::memory::model::Event::Delete {
                    return None;
                }
                let topics = memory_topics(&entry.user_id, &entry.agent_id, &entry.run_id);
                let data = json!({"id": entry.memory_id, "memory": entry.old_memory, "user_id": entry.user_id,
                                  "agent_id": entry.agent_id, "run_id": entry.run_id});
                let mut event = Event::new("memory", change.seq, tenant, topics, entry.memory_id, data);
                event.op = Some(ChangeOp::Delete);
                event.logged = true;
                return Some(event);
            }
            DOCUMENT_KIND => ("document", vec!["documents".into()], r.id.clone(), to_value(Document::from_record(r))),
            _ => return None,
        },
        None => {
            if crate::knowledge::documents::is_document_id(&change.id) {
                let mut event = Event::new(
                    "document",
                    change.seq,
                    tenant,
                    vec!["documents".into()],
                    change.id.clone(),
                    json!({"id": change.id}),
                );
                event.op = Some(ChangeOp::Delete);
                event.logged = true;
                return Some(event);
            }
            let (meeting, part) = change.id.split_once(':').unwrap_or((&change.id, ""));
            if !meeting.starts_with("mtg_") {
                return None;
            }
            let kind = match part {
                "" => "meeting",
                p if p.starts_with("seg:") => "segment",
                p if p.starts_with("ins:") => "insight",
                "summary" => "summary",
                _ => return None,
            };
            (kind, meeting_topics(meeting), change.id.clone(), json!({"id": change.id}))
        }
    };
    let mut event = Event::new(kind, change.seq, tenant, topics, id, data);
    event.op = Some(if change.record.is_some() { ChangeOp::Upsert } else { ChangeOp::Delete });
    event.logged = true;
    Some(event)
}

fn to_value<T: Serialize>(value: T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn meeting_topics(meeting_id: &str) -> Vec<String> {
    vec!["meetings".into(), format!("meeting:{meeting_id}")]
}

fn memory_topics(user: &Option<String>, agent: &Option<String>, run: &Option<String>) -> Vec<String> {
    let mut topics = vec!["memories".to_string()];
    for (scope, id) in [("user", user), ("agent", agent), ("run", run)] {
        if let Some(id) = id {
            topics.push(format!("memories:{scope}:{id}"));
        }
    }
    topics
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial(meeting: &str, n: u64) -> Event {
        let tenant = TenantId::new("t").unwrap();
        Event::new("partial", n, tenant, meeting_topics(meeting), format!("s{n}"), json!({"n": n}))
    }

    #[test]
    fn a_meetings_viewers_are_not_behind_because_other_meetings_are_busy() {
        let channels = Channels::new(4);
        let one = Topics::parse(Some("meeting:mtg_a")).unwrap();
        assert_eq!(one.only_meeting(), Some("mtg_a"));
        assert_eq!(Topics::parse(Some("meeting:mtg_a,meetings")).unwrap().only_meeting(), None);
        let mut viewer = channels.subscribe(&one);
        let mut everything = channels.subscribe(&Topics::default());
        for n in 0..10 {
            channels.send(partial("mtg_b", n));
        }
        channels.send(partial("mtg_a", 10));
        assert_eq!(viewer.try_recv().unwrap().id, "s10", "only its meeting's events, none lost");
        assert!(matches!(everything.try_recv(), Err(broadcast::error::TryRecvError::Lagged(_))));
        // A meeting's channel goes with its last viewer.
        drop(viewer);
        channels.send(partial("mtg_a", 11));
        assert!(channels.meetings.lock().is_empty());
    }

    #[test]
    fn topics_are_checked() {
        for good in ["meetings", "meeting:mtg_1", "memories,memories:user:alice", "documents, jobs", ""] {
            assert!(Topics::parse(Some(good)).is_ok(), "{good}");
        }
        for bad in ["meeting:", "memories:user:", "memories:team:x", "records", "jobs:1"] {
            assert!(Topics::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    /// Deletions carry no record: a document's is known by its id, its chunks' are not events.
    #[test]
    fn a_deleted_document_is_a_documents_event() {
        let deleted = |id: &str| Change {
            seq: 7,
            tenant: TenantId::default_tenant(),
            key: 3,
            id: id.into(),
            op: ChangeOp::Delete,
            record: None,
        };
        let id = crate::knowledge::documents::document_id("default", "a.txt");
        let event = derive(&deleted(&id)).expect("a document deletion is an event");
        assert_eq!((event.kind, event.id.as_str(), event.op), ("document", id.as_str(), Some(ChangeOp::Delete)));
        assert_eq!(event.topics, vec!["documents".to_string()]);
        assert_eq!(event.pos, 7);
        assert!(derive(&deleted(&crate::knowledge::documents::chunk_id(&id, 1, 0))).is_none(), "chunks are not events");
        assert!(derive(&deleted("doc-not-hex")).is_none());
    }
}
