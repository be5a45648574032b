//! Meetings under `/api/v1/meetings`: CRUD, participants, segments, end, transcript export,
//! insights, summary and import.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::error::{ApiJson, ApiMultipart, ApiPath, ApiQuery};
use super::tenant::Tenant;
use crate::app::App;
use crate::error::{Error, ErrorCode, Result};
use crate::meetings::finish::{FINISH_JOB, FinishPayload};
use crate::meetings::formats::{TranscriptFormat, render};
use crate::meetings::import::{IMPORT_JOB, ImportPayload, read_file};
use crate::meetings::{
    Insight, InsightKind, Meeting, MeetingPatch, NewMeeting, Participant, SegmentInput, SegmentsOutcome, Status,
    Summary,
};
use crate::store::TenantId;
use crate::store::jobs::{Job, JobState};

/// How long `?wait=true` waits for a meeting's job.
const JOB_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitParams {
    /// Answer once the change is searchable (for `end` and `import`: once the job has finished).
    #[param(example = false)]
    #[serde(default)]
    pub wait: bool,
}

/// Creates a meeting.
///
/// Status `scheduled` unless given `live`; participants may come now or later. The answer holds
/// the meeting's `id`, which every other meeting route takes.
#[utoipa::path(post, path = "/api/v1/meetings", tag = "meetings", params(WaitParams), request_body = NewMeeting,
    responses((status = 201, body = Meeting), (status = 400, body = super::error::ErrorBody)))]
pub async fn create(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiQuery(params): ApiQuery<WaitParams>,
    ApiJson(input): ApiJson<NewMeeting>,
) -> Result<(StatusCode, axum::Json<Meeting>)> {
    Ok((StatusCode::CREATED, axum::Json(app.meetings.create(&tenant, input, params.wait).await?)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only meetings of this status: `scheduled`, `live` or `ended`.
    #[param(example = "live")]
    pub status: Option<Status>,
    /// The `next_after` of the previous page.
    #[param(example = 0)]
    pub after: Option<u64>,
    /// 1-500, default 50.
    #[param(example = 50)]
    pub limit: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MeetingPage {
    pub meetings: Vec<Meeting>,
    pub next_after: Option<u64>,
}

/// Lists meetings.
///
/// Oldest first, a page at a time (`after` = the previous page's `next_after`), optionally of one
/// status only.
#[utoipa::path(get, path = "/api/v1/meetings", tag = "meetings", params(ListParams), responses((status = 200, body = MeetingPage)))]
pub async fn list(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<axum::Json<MeetingPage>> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(Error::invalid("limit must be between 1 and 500"));
    }
    let meetings = app.meetings.list(&tenant, params.status, params.after, limit).await?;
    let next_after = if meetings.len() == limit { meetings.last().map(|m| m.key) } else { None };
    Ok(axum::Json(MeetingPage { meetings, next_after }))
}

/// One meeting.
///
/// Its title, status, times, metadata, participants and how many final segments it holds.
#[utoipa::path(get, path = "/api/v1/meetings/{id}", tag = "meetings", params(("id" = String, Path, description = "The meeting's id, as its creation answered it", example = "mtg_0193c1a2b3c47d5e8f9a0b1c2d3e4f50")),
    responses((status = 200, body = Meeting), (status = 404, body = super::error::ErrorBody)))]
pub async fn get(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<Meeting>> {
    Ok(axum::Json(app.meetings.get(&tenant, &id).await?))
}

/// Changes a meeting.
///
/// Its title, status (`scheduled` or `live`; end it with `POST .../end`), start or metadata;
/// absent fields stay as they are.
#[utoipa::path(patch, path = "/api/v1/meetings/{id}", tag = "meetings", params(("id" = String, Path, description = "The meeting's id, as its creation answered it", example = "mtg_0193c1a2b3c47d5e8f9a0b1c2d3e4f50"), WaitParams),
    request_body = MeetingPatch,
    responses((status = 200, body = Meeting), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn update(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<WaitParams>,
    ApiJson(patch): ApiJson<MeetingPatch>,
) -> Result<axum::Json<Meeting>> {
    Ok(axum::Json(app.meetings.update(&tenant, &id, patch, params.wait).await?))
}

/// Deletes a meeting.
///
/// With its transcript, chunks, insights and summary, from every store. The memories its end made
/// stay with their users.
#[utoipa::path(delete, path = "/api/v1/meetings/{id}", tag = "meetings", params(("id" = String, Path, description = "The meeting's id, as its creation answered it", example = "mtg_0193c1a2b3c47d5e8f9a0b1c2d3e4f50")),
    responses((status = 200, body = Meeting), (status = 404, body = super::error::ErrorBody)))]
pub async fn delete(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<Meeting>> {
    Ok(axum::Json(app.meetings.delete(&tenant, &id, true).await?))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Participants {
    pub participants: Vec<Participant>,
}

/// The meeting's participants.
///
/// Each with its name and, when known, email, external id and the memory `user_id` it stands for.
#[utoipa::path(get, path = "/api/v1/meetings/{id}/participants", tag = "meetings", params(("id" = String, Path, description = "The meeting's id, as its creation answered it", example = "mtg_0193c1a2b3c47d5e8f9a0b1c2d3e4f50")),
    responses((status = 200, body = Participants), (status = 404, body = super::error::ErrorBody)))]
pub async fn participants(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<Participants>> {
    Ok(axum::Json(Participants { participants: app.meetings.get(&tenant, &id).await?.participants }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"participants": [{"name": "Ana Lima", "email": "ana@example.com", "user_id": "ana"}]}))]
pub struct ParticipantsInput {
    /// Added, or merged into the participant with the same id (else the same name).
    pub participants: Vec<Participant>,
}

/// Adds participants, or updates them.
///
/// A participant is matched by id, else by name; a new one is added.
#[utoipa::path(post, path = "/api/v1/meetings/{id}/participants", tag = "meetings", params(("id" = String, Path, description = "The meeting's id, as its creation answered it", example = "mtg_0193c1a2b3c47d5e8f9a0b1c2d3e4f50"), WaitParams),
    request_body = ParticipantsInput,
    responses((status = 200, body = Participants), (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn add_participants(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<WaitParams>,
    ApiJson(input): ApiJson<ParticipantsInput>,
) -> Result<axum::Json<Participants>> {
    let meeting = app.meetings.add_participants(&tenant, &id, input.participants, params.wait).await?;
    Ok(axum::Json(Participants { participants: meeting.participants }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"segments": [{"segment_id": "s1", "speaker": "Ana Lima", "start_ms": 0, "end_ms": 4200,
    "text": "We decided to ship the importer on Friday.", "is_final": true}]}))]
pub struct SegmentsInput {
    pub segments: Vec<SegmentInput>,
}

/// Adds transcript segments.
///
/// Finals are stored and acknowledged with their `seq` (a `segment_id` sent before gets its first
/// `seq` back); partials are acknowledged, not stored. One request is stored whole or not at all.
#[utoipa::path(post, path = "/api/v1/meetings/{id}/segments", tag = "meetings", params(("id" = String, Path, description = "The meeting's id, as its creation answered it", example = "mtg_0193c1a2b3c47d5e8f9a0b1c2d3e4f50"), WaitParams),
    request_body = SegmentsInput,
    responses((status = 200, body = SegmentsOutcome), (status = 400, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody),
              (status = 413, body = super::error::ErrorBody)))]
pub async fn segments(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<WaitParams>,
    ApiJson(input): ApiJson<SegmentsInput>,
) -> Result<axum::Json<SegmentsOutcome>> {
    Ok(axum::Json(app.meetings.add_segments(&tenant, &id, input.segments, params.wait).await?))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Ended {
    pub meeting: Meeting,
    /// The job that makes the final insights, summary and memories (`GET /api/v1/jobs/{id}`).
    pub job_id: String,
    pub job_state: JobState,
    /// The job's outcome, when `wait` was asked and it finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

async fn waited(app: &App, tenant: &TenantId, job: Job, wait: bool) -> Result<Job> {
    if wait { app.jobs.wait(tenant, &job.id, JOB_WAIT).await } else { Ok(job) }
}

/// Ends a meeting.
///
/// Queues the job that makes its final insights, summary and memories. Ending it again runs that
/// job again (it changes nothing that is already there).
#[utoipa::path(post, path = "/api/v1/meetings/{id}/end", tag = "meetings", params(("id" = String, Path, description = "The meeting's id, as its creation answered it", example = "mtg_0193c1a2b3c47d5e8f9a0b1c2d3e4f50"), WaitParams),
    responses((status = 202, body = Ended), (status = 404, body = super::error::ErrorBody)))]
pub async fn end(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<WaitParams>,
) -> Result<(StatusCode, axum::Json<Ended>)> {
    let meeting = app.meetings.end(&tenant, &id).await?;
    let payload =
        serde_json::to_value(FinishPayload { meeting_id: id.clone() }).map_err(|e| Error::internal("encode job", e))?;
    let job = app.jobs.enqueue(&tenant, FINISH_JOB, payload, app.config.jobs.max_attempts).await?;
    let job = waited(&app, &tenant, job, params.wait).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Ended { meeting, job_id: job.id, job_state: job.state, result: job.result, error: job.error }),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TranscriptParams {
    /// `json` (default), `vtt`, `srt` or `text` (`Speaker: text` lines).
    #[param(example = "vtt")]
    pub format: Option<String>,
}

/// The transcript.
///
/// As JSON (importable again), WebVTT, SRT or `Speaker: text` lines.
#[utoipa::path(get, path = "/api/v1/meetings/{id}/transcript", tag = "meetings", params(("id" = String, Path, description = "The meeting's id, as its creation answered it", example = "mtg_0193c1a2b3c47d5e8f9a0b1c2d3e4f50"), TranscriptParams),
    responses((status = 200, content_type = "application/json", body = String, description = "JSON, text/vtt, application/x-subrip or text/plain"),
              (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn transcript(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<TranscriptParams>,
) -> Result<Response> {
    let (format, mime, ext) = match params.format.as_deref().unwrap_or("json") {
        "json" => (TranscriptFormat::Json, "application/json", "json"),
        "vtt" | "webvtt" => (TranscriptFormat::Vtt, "text/vtt; charset=utf-8", "vtt"),
        "srt" => (TranscriptFormat::Srt, "application/x-subrip; charset=utf-8", "srt"),
        "text" | "txt" => (TranscriptFormat::Text, "text/plain; charset=utf-8", "txt"),
        other => return Err(Error::invalid(format!("format {other:?} is not one of json, vtt, srt, text"))),
    };
    let meeting = app.meetings.get(&tenant, &id).await?;
    let segments = app.meetings.segments(&tenant, &id).await?;
    let body = render(format, &meeting, &segments);
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{id}.{ext}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InsightParams {
    /// Only `action_item`, `decision`, `question` or `topic`.
    #[param(example = "decision")]
    pub kind: Option<InsightKind>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Insights {
    pub insights: Vec<Insight>,
}

/// The meeting's insights.
///
/// Action items, decisions, questions and topics, each with the segments it came from.
#[utoipa::path(get, path = "/api/v1/meetings/{id}/insights", tag = "meetings", params(("id" = String, Path, description = "The meeting's id, as its creation answered it", example = "mtg_0193c1a2b3c47d5e8f9a0b1c2d3e4f50"), InsightParams),
    responses((status = 200, body = Insights), (status = 404, body = super::error::ErrorBody)))]
pub async fn insights(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<InsightParams>,
) -> Result<axum::Json<Insights>> {
    app.meetings.get(&tenant, &id).await?;
    Ok(axum::Json(Insights { insights: app.meetings.insights(&tenant, &id, params.kind).await? }))
}

/// The meeting's summary.
///
/// Rolling while the meeting runs, final once it has ended.
#[utoipa::path(get, path = "/api/v1/meetings/{id}/summary", tag = "meetings", params(("id" = String, Path, description = "The meeting's id, as its creation answered it", example = "mtg_0193c1a2b3c47d5e8f9a0b1c2d3e4f50")),
    responses((status = 200, body = Summary), (status = 404, body = super::error::ErrorBody)))]
pub async fn summary(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<Summary>> {
    Ok(axum::Json(app.meetings.summary(&tenant, &id).await?))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Imported {
    pub job_id: String,
    pub state: JobState,
    /// What the file was read as: `vtt`, `srt`, `otter`, `text` or `json`.
    pub format: TranscriptFormat,
    /// How many meetings the file holds.
    pub meetings: usize,
    /// The finished job's meetings, when `wait` was asked and it finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}

/// Imports a recorded transcript.
///
/// `multipart/form-data`: one `file`, optional `title`. WebVTT
/// (Zoom, Teams), SRT, Otter text, `Speaker: text` lines, or JSON (Nexus's export, QMSum). The
/// file is read and checked at once — a file that is not what its name says is refused and
/// nothing is kept — then a job makes each transcript an ended meeting.
#[utoipa::path(post, path = "/api/v1/meetings/import", tag = "meetings", params(WaitParams),
    request_body(content_type = "multipart/form-data", content = String, description = "file, title",
        example = json!({"file": "standup.vtt", "title": "Standup"})),
    responses((status = 202, body = Imported), (status = 400, body = super::error::ErrorBody),
              (status = 413, body = super::error::ErrorBody), (status = 415, body = super::error::ErrorBody),
              (status = 422, body = super::error::ErrorBody)))]
pub async fn import(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiQuery(params): ApiQuery<WaitParams>,
    ApiMultipart(mut multipart): ApiMultipart,
) -> Result<(StatusCode, axum::Json<Imported>)> {
    let limit = app.config.knowledge.max_upload_bytes;
    let too_large = || {
        Error::new(
            ErrorCode::PayloadTooLarge,
            format!("the transcript is larger than knowledge.max_upload_bytes ({limit} bytes)"),
        )
    };
    let bad = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            Error::invalid(format!("malformed multipart body: {}", e.body_text()))
        }
    };
    let mut file: Option<(String, Vec<u8>)> = None;
    let mut title = None;
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        match field.name().unwrap_or_default() {
            "file" => {
                if file.is_some() {
                    return Err(Error::invalid("send one `file` per import"));
                }
                let name = field.file_name().map(str::to_string).filter(|n| !n.is_empty()).ok_or_else(|| {
                    Error::invalid("the `file` field needs a file name (Content-Disposition filename)")
                })?;
                let mut bytes = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() as u64 > limit {
                        return Err(too_large());
                    }
                }
                file = Some((name, bytes));
            }
            "title" => title = Some(field.text().await.map_err(bad)?).filter(|t| !t.trim().is_empty()),
            other => return Err(Error::invalid(format!("unknown multipart field {other:?}; use file, title"))),
        }
    }
    let (file_name, bytes) = file.ok_or_else(|| Error::invalid("send the transcript in a `file` field"))?;
    // Checked now, so a bad file is refused before anything is kept; the job reads it again.
    let (format, meetings) = {
        let (name, title, bytes) = (file_name.clone(), title.clone(), bytes.clone());
        tokio::task::spawn_blocking(move || read_file(&name, title.as_deref(), &bytes).map(|(f, m)| (f, m.len())))
            .await??
    };
    let upload_key = format!("uploads/{}", uuid::Uuid::now_v7());
    let body = bytes::Bytes::from(bytes);
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(body) });
    app.stores.objects.put(&tenant, &upload_key, Box::pin(stream)).await?;
    let payload = serde_json::to_value(ImportPayload { upload_key: upload_key.clone(), file_name, title })
        .map_err(|e| Error::internal("encode job", e))?;
    let job = match app.jobs.enqueue(&tenant, IMPORT_JOB, payload, app.config.jobs.max_attempts).await {
        Ok(job) => job,
        Err(e) => {
            let _ = app.stores.objects.delete(&tenant, &upload_key).await;
            return Err(e);
        }
    };
    let job = waited(&app, &tenant, job, params.wait).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Imported {
            job_id: job.id,
            state: job.state,
            format,
            meetings,
            result: job.result,
            error: job.error,
            error_code: job.error_code,
        }),
    ))
}
