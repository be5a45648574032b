//! Backups, for the operator: take one (a job), list them with the schedule's state, download
//! one, verify one (a job).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::error::{ApiJson, ApiPath};
use super::tenant::Tenant;
use crate::app::App;
use crate::backup::schedule::ScheduleStatus;
use crate::backup::target::Target;
use crate::backup::{self, BACKUP_JOB, BackupArchive, VERIFY_JOB};
use crate::error::Result;
use crate::store::jobs::Job;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"no_derived": false}))]
pub struct TakeBackup {
    /// Where the archive goes: an absolute directory on the server, or `s3://bucket/prefix` (on
    /// the S3 service of `[backup.s3]`); default `[backup] dir`.
    pub dir: Option<String>,
    /// Leave the derived stores out (rebuilt on restore).
    #[serde(default)]
    pub no_derived: bool,
}

/// Takes a backup while the server keeps serving.
///
/// Answers at once with a job (follow it at `/api/v1/jobs/{id}`); its result names the archive,
/// its size and SHA-256 and the change-log position it holds. Writes go on during the backup.
/// One backup runs at a time (`conflict` otherwise). Operator only.
#[utoipa::path(post, path = "/api/v1/admin/backups", tag = "ops", request_body = TakeBackup,
    responses((status = 202, body = Job, description = "the backup job")))]
pub async fn take(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiJson(body): ApiJson<TakeBackup>,
) -> Result<(StatusCode, axum::Json<Job>)> {
    if let Some(dir) = &body.dir {
        if backup::target::is_s3(dir) {
            crate::config::parse_s3(dir)?;
        } else if !std::path::Path::new(dir).is_absolute() || dir.contains('\0') {
            return Err(crate::error::Error::invalid(format!(
                "dir `{dir}` must be an absolute path on the server or s3://bucket/prefix (or leave it out for \
                 [backup] dir)"
            )));
        }
    }
    let payload = serde_json::json!({"dir": body.dir, "no_derived": body.no_derived});
    let job = app.jobs.enqueue(&tenant, BACKUP_JOB, payload, 1).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(job)))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Backups {
    /// The directory (or `s3://bucket/prefix`) listed: `[backup] dir`.
    pub dir: String,
    /// Finished archives, newest first.
    pub archives: Vec<BackupArchive>,
    pub schedule: ScheduleStatus,
}

/// The archives in the backup directory and the schedule's state.
///
/// Finished archives of `[backup] dir`, newest first, with their size, time, change-log position
/// and whether a checksum file is beside them; and what the schedule did last and does next.
/// Operator only.
#[utoipa::path(get, path = "/api/v1/admin/backups", operation_id = "list_backups", tag = "ops", responses((status = 200, body = Backups)))]
pub async fn list(State(app): State<Arc<App>>) -> Result<axum::Json<Backups>> {
    let target = Target::open(&app.config, None).await?;
    let archives = target.list().await?;
    let schedule = app.backup_status.lock().clone();
    Ok(axum::Json(Backups { dir: target.describe(), archives, schedule }))
}

/// Downloads an archive.
///
/// Streams the archive (`application/zstd`); its SHA-256 is in `X-Checksum-Sha256` when its
/// checksum file is there. `name` is an archive's name as the listing gives it. Operator only.
#[utoipa::path(get, path = "/api/v1/admin/backups/{name}", tag = "ops", params(("name" = String, Path, description = "The archive's name, as the listing gives it",
        example = "nexus-host-20250102T030000000Z-s1234.tar.zst")),
    responses((status = 200, content_type = "application/zstd", body = Vec<u8>),
    (status = 404, body = super::error::ErrorBody)))]
pub async fn download(State(app): State<Arc<App>>, ApiPath(name): ApiPath<String>) -> Result<Response> {
    let target = Target::open(&app.config, None).await?;
    let (size, checksum, stream) = target.read(&name).await?;
    let body = Body::from_stream(stream);
    let mut response = (
        [
            (header::CONTENT_TYPE, "application/zstd".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        body,
    )
        .into_response();
    if let Some(sum) = checksum.and_then(|s| s.parse().ok()) {
        response.headers_mut().insert("x-checksum-sha256", sum);
    }
    Ok(response)
}

/// Verifies an archive.
///
/// Checksums, every file against the manifest, then a trial restore into a scratch directory with
/// the record's integrity check and `nexus check`. Answers at once with a job whose result is the
/// report; a refused archive fails the job with `archive_invalid`. Operator only.
#[utoipa::path(post, path = "/api/v1/admin/backups/{name}/verify", tag = "ops",
    params(("name" = String, Path, description = "The archive's name, as the listing gives it",
        example = "nexus-host-20250102T030000000Z-s1234.tar.zst")),
    responses((status = 202, body = Job, description = "the verification job"),
    (status = 404, body = super::error::ErrorBody)))]
pub async fn verify(
    State(app): State<Arc<App>>,
    Tenant(tenant): Tenant,
    ApiPath(name): ApiPath<String>,
) -> Result<(StatusCode, axum::Json<Job>)> {
    Target::open(&app.config, None).await?.check_exists(&name).await?;
    let job = app.jobs.enqueue(&tenant, VERIFY_JOB, serde_json::json!({"name": name}), 1).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(job)))
}
