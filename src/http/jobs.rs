//! Background jobs: list, inspect, cancel, follow.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::error::{ApiPath, ApiQuery};
use super::tenant::Tenant;
use crate::app::App;
use crate::error::{Error, Result};
use crate::store::jobs::{Job, JobState};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only jobs in this state.
    #[param(example = "running")]
    pub state: Option<JobState>,
    /// 1-500, default 50.
    #[param(minimum = 1, maximum = 500, example = 50)]
    pub limit: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct JobList {
    pub jobs: Vec<Job>,
}

/// Jobs, newest first.
///
/// The project's background jobs (document ingestion, asynchronous memory adds, backups...) with
/// their state, attempts and progress, optionally of one state only.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(ListParams), responses((status = 200, body = JobList)))]
pub async fn list(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<axum::Json<JobList>> {
    let limit = p.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(Error::invalid("limit must be between 1 and 500"));
    }
    Ok(axum::Json(JobList { jobs: app.jobs.store().list(&tenant, p.state, limit).await? }))
}

/// One job: state, attempts, progress, result or error.
///
/// Poll it until `state` is `succeeded`, `failed`, `dead` or `cancelled`; `result` holds what a
/// finished job produced, `error` and `error_code` why it failed.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job's id, as the route that queued it answered it",
        example = "01947c2e-5b7a-7d3e-9f41-6a2b8c0d1e2f")),
    responses((status = 200, body = Job), (status = 404, body = super::error::ErrorBody)))]
pub async fn get(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<Job>> {
    Ok(axum::Json(app.jobs.store().get(&tenant, &id).await?.ok_or_else(|| Error::not_found("job", &id))?))
}

/// Cancels a job that has not finished.
///
/// A queued job never runs; a running one stops at its next step. Answers with the job as it is
/// now; cancelling a finished job changes nothing. No body.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "The job's id, as the route that queued it answered it",
        example = "01947c2e-5b7a-7d3e-9f41-6a2b8c0d1e2f")),
    responses((status = 200, body = Job), (status = 404, body = super::error::ErrorBody)))]
pub async fn cancel(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<Job>> {
    Ok(axum::Json(app.jobs.cancel(&tenant, &id).await?.ok_or_else(|| Error::not_found("job", &id))?))
}

/// One server-sent event: `event: job`, and the job as JSON in `data`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct JobStreamEvent {
    /// Always `job`.
    pub event: String,
    /// The job (as `GET /api/v1/jobs/{id}` shows it), encoded as JSON.
    pub data: String,
}

/// Follows a job as server-sent `job` events until it finishes.
///
/// The first event is the job as it is; one more follows each change of state or progress, and the
/// stream ends after the event of a finished state.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/events", tag = "jobs",
    params(("id" = String, Path, description = "The job's id, as the route that queued it answered it",
        example = "01947c2e-5b7a-7d3e-9f41-6a2b8c0d1e2f")),
    responses((status = 200, content_type = "text/event-stream", body = JobStreamEvent,
        description = "a stream of events, each as described"),
        (status = 404, body = super::error::ErrorBody)))]
pub async fn events(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(id): ApiPath<String>,
) -> Result<Response> {
    let job = app.jobs.store().get(&tenant, &id).await?.ok_or_else(|| Error::not_found("job", &id))?;
    let mut rx = app.jobs.subscribe();
    let first = Event::default().event("job").json_data(&job);
    let finished = job.state.is_finished();
    let stream = async_stream_events(move |tx| async move {
        let _ = tx.send(first).await;
        if finished {
            return;
        }
        while let Ok(event) = rx.recv().await {
            if event.job_id != id || event.tenant.as_ref() != Some(&tenant) {
                continue;
            }
            let end = event.state.is_finished();
            if tx.send(Event::default().event("job").json_data(&event)).await.is_err() || end {
                return;
            }
        }
    });
    Ok(Sse::new(stream.map(|e| Ok::<_, Infallible>(e.unwrap_or_else(|_| Event::default()))))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// A stream fed by a task through a small channel.
fn async_stream_events<F, Fut>(f: F) -> impl futures::Stream<Item = std::result::Result<Event, axum::Error>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<std::result::Result<Event, axum::Error>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    tokio_stream_from(rx)
}

fn tokio_stream_from<T: Send + 'static>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
