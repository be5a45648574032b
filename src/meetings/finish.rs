//! What happens once a meeting has ended (the job [`FINISH_JOB`], queued by `POST .../end` and
//! run at the end of an import):
//!
//! 1. **Insights**: the rules run over the whole transcript; with an LLM configured, the model
//!    reads it (in pieces that fit its context, each line `[seq] Speaker: text`) and answers JSON
//!    (`summary`, `action_items`, `decisions`, `questions`, each item with the `seqs` it came
//!    from). An answer that cannot be read even after repair, names no item, or a model that
//!    cannot be reached leaves the rules' insights in place (`extractor: rules`); a usable one
//!    replaces them (`extractor: llm`; sequence numbers outside the transcript are dropped).
//!    Topics always come from the rules.
//! 2. **Final summary**: the model's, else extractive (more bullets than the rolling one).
//! 3. **Memories** (through [`crate::memory::Memories::add`], verbatim): for each participant
//!    with a `user_id`, one episodic memory of the meeting — what they said that mattered most and
//!    what they committed to — with the meeting as `run_id`; for each action item whose owner is
//!    such a participant, a factual memory of that user. Running the job again changes nothing:
//!    the same words in the same scope are one memory.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::insights::{self, RULES};
use super::model::*;
use super::{Meetings, TOPICS, insight_write, merge_insights, summary_write};
use crate::error::{Error, ErrorCode, Result};
use crate::jobs::{JobContext, JobHandler};
use crate::llm::{ChatMessage, ChatRequest, Llm, estimate_tokens};
use crate::memory::add::AddRequest;
use crate::memory::{Message, Tier};
use crate::store::TenantId;
use crate::store::records::Write;

pub const FINISH_JOB: &str = "meeting_finish";
const FINAL_BULLETS_MIN: usize = 5;
const FINAL_BULLETS_MAX: usize = 12;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinishPayload {
    pub meeting_id: String,
}

/// A memory the end of a meeting made.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MeetingMemory {
    pub user_id: String,
    pub memory_id: String,
    pub tier: Tier,
    /// `ADD`, or `NONE` when the same memory was there already.
    pub event: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Finished {
    pub meeting_id: String,
    pub insights: usize,
    /// `rules` or `llm`.
    pub extractor: String,
    pub summary: Summary,
    pub memories: Vec<MeetingMemory>,
    /// What the transcript added to the project's entity graph.
    #[serde(default)]
    pub graph: crate::graph::Ingested,
}

pub struct FinishHandler(pub Arc<Meetings>);

#[async_trait]
impl JobHandler for FinishHandler {
    async fn run(&self, ctx: &JobContext) -> Result<serde_json::Value> {
        let job = ctx.job();
        let payload: FinishPayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| Error::invalid(format!("meeting job payload is malformed: {e}")))?;
        ctx.progress(0, 1).await?;
        let finished = self.0.finish(&job.tenant, &payload.meeting_id).await?;
        ctx.progress(1, 1).await?;
        serde_json::to_value(finished).map_err(|e| Error::internal("encode job result", e))
    }
}

#[derive(Deserialize)]
struct LlmAnswer {
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    action_items: Vec<LlmItem>,
    #[serde(default)]
    decisions: Vec<LlmItem>,
    #[serde(default)]
    questions: Vec<LlmItem>,
}

#[derive(Deserialize)]
struct LlmItem {
    text: String,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    due: Option<String>,
    #[serde(default)]
    seqs: Vec<u64>,
}

const PROMPT: &str = "You read meeting transcripts and note what matters. Each transcript line is `[seq] Speaker: text`. \
Answer with JSON of this shape: {\"summary\": \"3 to 6 sentences\", \"action_items\": [{\"text\": \"...\", \"owner\": \"speaker name or null\", \
\"due\": \"the due date as said, or null\", \"seqs\": [seq, ...]}], \"decisions\": [{\"text\": \"...\", \"seqs\": [...]}], \
\"questions\": [{\"text\": \"a question left open\", \"seqs\": [...]}]}. Use only what the transcript says; `seqs` are the \
bracketed numbers of the lines each item comes from.";

impl Meetings {
    /// The work after a meeting's end; see the module documentation.
    pub async fn finish(&self, tenant: &TenantId, id: &str) -> Result<Finished> {
        let meeting = self.get(tenant, id).await?;
        if meeting.status != Status::Ended {
            return Err(Error::new(ErrorCode::Conflict, format!("meeting {id} has not ended")));
        }
        let segments = self.segments(tenant, id).await?;
        let names: Vec<String> = meeting.participants.iter().map(|p| p.name.clone()).collect();
        let start_day = meeting.started_at.unwrap_or(meeting.created_at).date_naive();
        let mut found = merge_insights(insights::extract(&segments, &names, start_day));
        let mut extractor = RULES.to_string();
        let mut model_summary = None;
        if let Some(llm) = &self.llm {
            match llm_insights(llm.as_ref(), &meeting, &segments).await {
                Ok(Some((items, summary))) => {
                    found = merge_insights(items);
                    extractor = "llm".into();
                    model_summary = summary;
                }
                Ok(None) => tracing::warn!(meeting = id, "the LLM's insights were unusable; keeping the rules'"),
                Err(e) => {
                    tracing::warn!(meeting = id, error = %e, "the LLM did not answer; keeping the rules' insights")
                }
            }
        }
        found.extend(insights::topics(&segments, TOPICS));
        let most = (segments.len() / 40).clamp(FINAL_BULLETS_MIN, FINAL_BULLETS_MAX);
        let bullets = insights::extractive_summary(&segments, &found, most);
        let generator = if model_summary.is_some() { "llm" } else { "extractive" };
        let last = segments.last().map_or(0, |s| s.seq);
        {
            let _guard = self.lock(tenant, id).await?;
            self.get(tenant, id).await?; // deleted meanwhile: nothing to write
            let known = self.insights(tenant, id, None).await?;
            let keep: Vec<String> = found.iter().map(|i| insight_record_id(id, i.kind, &i.text)).collect();
            let mut writes: Vec<Write> =
                known.iter().filter(|k| !keep.contains(&k.id)).map(|k| Write::Delete { id: k.id.clone() }).collect();
            writes.extend(found.iter().map(|i| insight_write(id, i)));
            writes.push(summary_write(id, "final", &bullets, model_summary, last, generator));
            self.write(tenant, writes, true).await?;
        }
        let memories = self.remember(tenant, &meeting, &segments, &found).await?;
        let mut known: Vec<(String, String)> = Vec::new();
        for name in meeting.participants.iter().map(|p| &p.name).chain(segments.iter().map(|s| &s.speaker)) {
            if !name.trim().is_empty() && !known.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                known.push((name.trim().to_string(), "person".into()));
            }
        }
        let texts: Vec<(String, String)> =
            segments.iter().map(|s| (s.text.clone(), segment_record_id(id, s.seq))).collect();
        let mut graph = crate::graph::Ingested::default();
        for (name, kind) in &known {
            let person = crate::graph::extract::Found { name: name.clone(), entity_type: kind.clone() };
            graph.entities += usize::from(self.graph.resolve(tenant, &person).await?.1);
        }
        let read = self.graph.ingest(tenant, &texts, &known).await?;
        graph = crate::graph::Ingested { entities: graph.entities + read.entities, ..read };
        Ok(Finished {
            meeting_id: id.to_string(),
            insights: found.len(),
            extractor,
            summary: self.summary(tenant, id).await?,
            memories,
            graph,
        })
    }

    async fn remember(
        &self,
        tenant: &TenantId,
        meeting: &Meeting,
        segments: &[Segment],
        found: &[Insight],
    ) -> Result<Vec<MeetingMemory>> {
        let when = meeting.ended_at.or(meeting.started_at).unwrap_or(meeting.created_at);
        let day = meeting.started_at.unwrap_or(meeting.created_at).format("%Y-%m-%d");
        let mut out = Vec::new();
        for p in &meeting.participants {
            let Some(user_id) = &p.user_id else { continue };
            let own: Vec<Segment> =
                segments.iter().filter(|s| s.speaker.trim().eq_ignore_ascii_case(&p.name)).cloned().collect();
            let own_insights: Vec<Insight> = found
                .iter()
                .filter(|i| i.speaker.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(&p.name)))
                .cloned()
                .collect();
            let said: Vec<String> = insights::extractive_summary(&own, &own_insights, 3)
                .into_iter()
                .map(|b| b.split_once(": ").map_or(b.clone(), |(_, t)| t.to_string()))
                .collect();
            let committed: Vec<&Insight> = found
                .iter()
                .filter(|i| {
                    i.kind == InsightKind::ActionItem
                        && i.owner.as_deref().is_some_and(|o| o.eq_ignore_ascii_case(&p.name))
                })
                .collect();
            let mut text = format!("{} took part in the meeting \"{}\" on {day}", p.name, meeting.title);
            if said.is_empty() {
                text.push('.');
            } else {
                text.push_str(&format!(" and said: {}", said.join(" ")));
            }
            if !committed.is_empty() {
                let items: Vec<String> = committed.iter().map(|i| with_due(i)).collect();
                text.push_str(&format!(" They committed to: {}.", items.join("; ")));
            }
            let seqs: Vec<u64> = own.iter().map(|s| s.seq).collect();
            out.extend(
                self.memorize(tenant, meeting, user_id, text, Tier::Episodic, when, json!({"seqs": seqs})).await?,
            );
            for item in committed {
                let text = format!("Action item from the meeting \"{}\": {}", meeting.title, with_due(item));
                let extra =
                    json!({"seqs": item.seqs, "insight_id": insight_record_id(&meeting.id, item.kind, &item.text)});
                out.extend(self.memorize(tenant, meeting, user_id, text, Tier::Factual, when, extra).await?);
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    async fn memorize(
        &self,
        tenant: &TenantId,
        meeting: &Meeting,
        user_id: &str,
        text: String,
        tier: Tier,
        when: chrono::DateTime<chrono::Utc>,
        extra: serde_json::Value,
    ) -> Result<Vec<MeetingMemory>> {
        let mut metadata = json!({"meeting_id": meeting.id, "source": "meeting"});
        if let (Some(m), Some(e)) = (metadata.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        let request = AddRequest {
            messages: vec![Message::user(text)],
            user_id: Some(user_id.to_string()),
            run_id: Some(meeting.id.clone()),
            infer: Some(false),
            tier: Some(tier),
            metadata: Some(metadata),
            timestamp: Some(json!(when.to_rfc3339())),
            ..Default::default()
        };
        let outcome = self.memories.add(tenant, request, "meetings").await?;
        Ok(outcome
            .results
            .into_iter()
            .map(|r| MeetingMemory {
                user_id: user_id.to_string(),
                memory_id: r.id,
                tier: r.tier,
                event: r.event.as_str().to_string(),
            })
            .collect())
    }
}

fn with_due(item: &Insight) -> String {
    match (&item.due_date, &item.due) {
        (Some(d), _) => format!("{} (due {d})", item.text),
        (None, Some(d)) => format!("{} (due {d})", item.text),
        _ => item.text.clone(),
    }
}

/// The model's insights over the whole transcript and its summary; `None` when an answer was
/// unusable. Errors: the model could not be reached.
async fn llm_insights(
    llm: &dyn Llm,
    meeting: &Meeting,
    segments: &[Segment],
) -> Result<Option<(Vec<Insight>, Option<String>)>> {
    if segments.is_empty() {
        return Ok(None);
    }
    let budget = llm.context_tokens().saturating_sub(estimate_tokens(PROMPT) + 200).max(500);
    let mut pieces: Vec<Vec<&Segment>> = vec![Vec::new()];
    let mut used = 0;
    for s in segments {
        let cost = estimate_tokens(&s.text) + 8;
        if used + cost > budget && !pieces.last().is_some_and(|p| p.is_empty()) {
            pieces.push(Vec::new());
            used = 0;
        }
        used += cost;
        if let Some(p) = pieces.last_mut() {
            p.push(s);
        }
    }
    let start_day = meeting.started_at.unwrap_or(meeting.created_at).date_naive();
    let mut items = Vec::new();
    let mut summaries = Vec::new();
    for piece in pieces {
        let lines: Vec<String> = piece.iter().map(|s| format!("[{}] {}", s.seq, s.as_turn())).collect();
        let request = ChatRequest {
            messages: vec![
                ChatMessage::system(PROMPT),
                ChatMessage::user(format!("Meeting: {}\n\n{}", meeting.title, lines.join("\n"))),
            ],
            json: true,
            ..Default::default()
        };
        let answer = llm.complete(&request).await?;
        let Ok((parsed, _)) = crate::llm::json::read_json::<LlmAnswer>(&answer.text) else { return Ok(None) };
        let range = piece.first().map_or(0, |s| s.seq)..=piece.last().map_or(0, |s| s.seq);
        let speaker_of =
            |seq: u64| piece.iter().find(|s| s.seq == seq).map(|s| s.speaker.clone()).filter(|s| !s.is_empty());
        let mut read = |kind: InsightKind, list: Vec<LlmItem>| {
            for item in list {
                let text = item.text.trim().to_string();
                let seqs: Vec<u64> = item.seqs.into_iter().filter(|s| range.contains(s)).collect();
                if text.is_empty() || seqs.is_empty() {
                    continue;
                }
                let owner = item
                    .owner
                    .filter(|o| !o.trim().is_empty() && o != "null")
                    .map(|o| meeting.participant(&o).map_or(o.trim().to_string(), |p| p.name.clone()));
                let due = item.due.filter(|d| !d.trim().is_empty() && d != "null");
                let due_date = due
                    .as_deref()
                    .and_then(|d| insights::due(&format!(" by {} ", d.to_lowercase()), start_day))
                    .and_then(|(_, d)| d)
                    .map(|d| d.to_string());
                items.push(Insight {
                    id: String::new(),
                    kind,
                    text,
                    speaker: speaker_of(seqs[0]),
                    owner: if kind == InsightKind::ActionItem { owner } else { None },
                    due: if kind == InsightKind::ActionItem { due } else { None },
                    due_date: if kind == InsightKind::ActionItem { due_date } else { None },
                    seqs,
                    extractor: "llm".into(),
                });
            }
        };
        let usable = parsed.summary.as_deref().is_some_and(|s| !s.trim().is_empty())
            || !parsed.action_items.is_empty()
            || !parsed.decisions.is_empty();
        if !usable {
            return Ok(None);
        }
        read(InsightKind::ActionItem, parsed.action_items);
        read(InsightKind::Decision, parsed.decisions);
        read(InsightKind::Question, parsed.questions);
        summaries.extend(parsed.summary.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()));
    }
    let summary = (!summaries.is_empty()).then(|| summaries.join("\n\n"));
    Ok(Some((items, summary)))
}
