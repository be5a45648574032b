//! The import job: a transcript file, already read once and kept in the object store, becomes
//! one ended meeting per transcript it holds (see [`super::formats`]), each written in one batch
//! and then finished like a meeting that ended live ([`super::finish`]).
//!
//! Every transcript of the file is checked before the first is written. Meeting ids come from
//! the job's id, so a retried job finds the meetings it already made instead of making them twice.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::formats::{self, ImportedMeeting};
use super::model::SegmentInput;
use super::{Meetings, NewMeeting};
use crate::error::{Error, ErrorCode, Result};
use crate::jobs::{JobContext, JobHandler};
use crate::memory::short_hash;
use crate::store::Stores;

pub const IMPORT_JOB: &str = "meeting_import";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImportPayload {
    pub upload_key: String,
    pub file_name: String,
    #[serde(default)]
    pub title: Option<String>,
}

pub struct ImportHandler {
    pub stores: Stores,
    pub meetings: Arc<Meetings>,
}

/// A meeting ready to write: its fields and its segments.
pub type Prepared = (NewMeeting, Vec<SegmentInput>);

/// The meeting a transcript of an import becomes: its fields and segments, checked.
pub fn prepare(
    file_name: &str,
    title: Option<&str>,
    index: usize,
    count: usize,
    m: ImportedMeeting,
) -> Result<Prepared> {
    let stem = file_name.rsplit('/').next().unwrap_or(file_name);
    let stem = stem.rsplit_once('.').map_or(stem, |(s, _)| s);
    let base = title.map(str::to_string).or(m.title).unwrap_or_else(|| stem.to_string());
    let title = if count > 1 { format!("{base} #{}", index + 1) } else { base };
    let mut metadata = match m.metadata {
        Some(Value::Object(map)) => map,
        _ => Default::default(),
    };
    metadata.insert("file_name".into(), stem.to_string().into());
    let ids: Vec<Option<String>> = m.segments.iter().map(|s| s.segment_id.clone()).collect();
    let unique = ids.iter().all(Option::is_some) && {
        let mut seen = std::collections::HashSet::new();
        ids.iter().flatten().all(|i| seen.insert(i.clone()))
    };
    let segments: Vec<SegmentInput> = m
        .segments
        .into_iter()
        .enumerate()
        .map(|(n, s)| SegmentInput {
            segment_id: if unique { s.segment_id.unwrap_or_default() } else { n.to_string() },
            speaker: s.speaker,
            start_ms: s.start_ms,
            end_ms: s.end_ms.max(s.start_ms),
            text: s.text,
            is_final: true,
        })
        .collect();
    for (n, s) in segments.iter().enumerate() {
        s.validate().map_err(|e| Error::new(e.code, format!("{file_name}, segment {}: {}", n + 1, e.message)))?;
    }
    let input = NewMeeting {
        title: truncate(&title, 512),
        status: None,
        started_at: m.started_at,
        metadata: Some(Value::Object(metadata)),
        participants: m.participants,
    };
    for p in &input.participants {
        p.validate()?;
    }
    Ok((input, segments))
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Reads and checks a whole file: every transcript it holds, ready to write.
pub fn read_file(
    file_name: &str,
    title: Option<&str>,
    bytes: &[u8],
) -> Result<(formats::TranscriptFormat, Vec<Prepared>)> {
    let (format, meetings) = formats::parse(file_name, bytes)?;
    let count = meetings.len();
    let prepared = meetings
        .into_iter()
        .enumerate()
        .map(|(i, m)| prepare(file_name, title, i, count, m))
        .collect::<Result<Vec<_>>>()?;
    Ok((format, prepared))
}

#[async_trait]
impl JobHandler for ImportHandler {
    async fn run(&self, ctx: &JobContext) -> Result<Value> {
        let job = ctx.job();
        let payload: ImportPayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| Error::invalid(format!("import job payload is malformed: {e}")))?;
        let bytes = match self.stores.objects.get(&job.tenant, &payload.upload_key).await {
            Ok((_, mut stream)) => {
                let mut buf = Vec::new();
                while let Some(chunk) = stream.next().await {
                    buf.extend_from_slice(&chunk?);
                }
                buf
            }
            Err(e) if e.code == ErrorCode::NotFound => {
                return Err(Error::new(ErrorCode::NotFound, format!("upload {} is gone", payload.upload_key)));
            }
            Err(e) => return Err(e),
        };
        let read = read_file(&payload.file_name, payload.title.as_deref(), &bytes);
        let (format, prepared) = match read {
            Ok(r) => r,
            Err(e) => {
                self.stores.objects.delete(&job.tenant, &payload.upload_key).await?;
                return Err(e);
            }
        };
        let total = prepared.len() as u64;
        let mut out = Vec::new();
        for (i, (input, segments)) in prepared.into_iter().enumerate() {
            ctx.progress(i as u64, total).await?;
            let id = format!("mtg_{}", short_hash(&[&job.id, &i.to_string()]));
            let source = format!("import:{}", format.as_str());
            let created = self.meetings.create_imported(&job.tenant, &id, input, &source, segments).await?;
            if created.is_none() {
                tracing::info!(meeting = %id, "imported before this attempt");
            }
            let finished = self.meetings.finish(&job.tenant, &id).await?;
            let meeting = self.meetings.get(&job.tenant, &id).await?;
            out.push(json!({"meeting": meeting, "finished": finished}));
        }
        self.stores.objects.delete(&job.tenant, &payload.upload_key).await?;
        ctx.progress(total, total).await?;
        Ok(json!({"format": format.as_str(), "meetings": out}))
    }
}
