//! The audit log, for admins: newest first, filtered, a page at a time. A project's admin key sees
//! its own project's entries; the master key sees every entry.

use std::sync::Arc;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::ApiQuery;
use crate::app::App;
use crate::auth::Within;
use crate::error::{Error, Result};
use crate::store::TenantId;
use crate::store::auth::{AuditEntry, AuditFilter};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only this project's entries (the master key; a project key sees only its own anyway).
    #[param(example = "default")]
    pub project: Option<String>,
    /// Only the requests made with this key (its id, as `GET /api/v1/keys` shows it).
    #[param(example = "3f9a1c0d5e7b2a64")]
    pub key_id: Option<String>,
    /// GET, POST, PUT, DELETE...
    #[param(example = "DELETE")]
    pub method: Option<String>,
    /// Only this HTTP status.
    #[param(example = 403)]
    pub status: Option<u16>,
    /// RFC 3339; entries at or after this time.
    #[param(example = "2025-01-01T00:00:00Z")]
    pub since: Option<DateTime<Utc>>,
    /// RFC 3339; entries before this time.
    #[param(example = "2025-02-01T00:00:00Z")]
    pub until: Option<DateTime<Utc>>,
    /// Continue with entries older than this (the `next_before` of the previous page).
    #[param(example = 1200)]
    pub before: Option<u64>,
    /// 1-1000, default 100.
    #[param(minimum = 1, maximum = 1000, example = 100)]
    pub limit: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `before` for the next page; absent on the last page.
    pub next_before: Option<u64>,
}

/// Who did what, when, and how it ended.
///
/// Audit entries newest first: the time, the key (or `master`, `open`, `anonymous`), the project,
/// the method and route template, the object id, the status and the client address. Filter by
/// project, key, method, status and time; page with `before`. Needs the `admin` scope; a project's
/// key sees its own project's entries only.
#[utoipa::path(get, path = "/api/v1/audit", operation_id = "list_audit", tag = "auth", params(AuditParams),
    responses((status = 200, body = AuditPage), (status = 400, body = super::error::ErrorBody)))]
pub async fn list(
    State(app): State<Arc<App>>,
    Caller(ctx): Caller,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<axum::Json<AuditPage>> {
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Error::invalid("limit must be between 1 and 1000"));
    }
    let within = match (ctx.within(), params.project) {
        (within, None) => within,
        (Within::All, Some(p)) => Within::Tenant(TenantId::new(p)?),
        (Within::Tenant(own), Some(p)) if own.as_str() == p => Within::Tenant(own),
        (Within::Tenant(_), Some(p)) => return Err(Error::not_found("project", &p)),
    };
    let filter = AuditFilter {
        within,
        key_id: params.key_id,
        method: params.method.map(|m| m.to_ascii_uppercase()),
        status: params.status,
        since: params.since,
        until: params.until,
        before_seq: params.before,
        limit,
    };
    let entries = app.auth.store.list_audit(&filter).await?;
    let next_before = if entries.len() == limit { entries.last().map(|e| e.seq) } else { None };
    Ok(axum::Json(AuditPage { entries, next_before }))
}
