//! API keys: create (the key is shown once), list, read and revoke. A project's admin key manages
//! its own project's keys; the master key manages every project's.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::{ApiJson, ApiPath, ApiQuery};
use crate::app::App;
use crate::auth::{ApiKey, Scope, Within, keys};
use crate::error::{Error, Result};
use crate::store::TenantId;
use crate::store::auth::{AuthStore, NewApiKey};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "support bot", "project": "default", "scopes": ["read", "write"], "expires_in_days": 90}))]
pub struct KeyInput {
    /// What the key is for, e.g. "support bot".
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// The project (tenant) the key acts for; default: the caller's.
    pub project: Option<String>,
    /// At least one of `read`, `write`, `admin`.
    #[schema(min_items = 1)]
    pub scopes: Vec<Scope>,
    /// When the key stops working; default: never. Give this or `expires_in_days`.
    pub expires_at: Option<DateTime<Utc>>,
    #[schema(minimum = 1, maximum = 36500)]
    pub expires_in_days: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    /// The key itself. It is shown only now; store it safely.
    pub key: String,
    pub api_key: ApiKey,
}

/// What a caller may create or see: its own project unless it is the operator.
fn project_in_reach(within: &Within, project: Option<&str>, own: &TenantId) -> Result<TenantId> {
    let project = match project {
        Some(p) => TenantId::new(p).map_err(|_| Error::not_found("project", p))?,
        None => own.clone(),
    };
    match within {
        Within::Tenant(t) if *t != project => Err(Error::not_found("project", project.as_str())),
        _ => Ok(project),
    }
}

/// The shared core of `POST /api/v1/keys` and `nexus keys create` (offline).
pub async fn create_key(store: &dyn AuthStore, project: TenantId, input: KeyInput) -> Result<CreatedKey> {
    let name = input.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Error::invalid("name must be 1-100 characters"));
    }
    let mut scopes = input.scopes;
    scopes.sort();
    scopes.dedup();
    if scopes.is_empty() {
        return Err(Error::invalid("give at least one scope: read, write or admin"));
    }
    let expires_at = match (input.expires_at, input.expires_in_days) {
        (Some(_), Some(_)) => return Err(Error::invalid("give expires_at or expires_in_days, not both")),
        (Some(at), None) => Some(at),
        (None, Some(days)) if (1..=36_500).contains(&days) => Some(Utc::now() + chrono::Duration::days(days.into())),
        (None, Some(_)) => return Err(Error::invalid("expires_in_days must be between 1 and 36500")),
        (None, None) => None,
    };
    if expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(Error::invalid("expires_at is in the past; give a future time"));
    }
    let generated = keys::generate();
    let api_key = store
        .create_key(NewApiKey { id: generated.id, project, name, scopes, secret_hash: generated.hash, expires_at })
        .await?;
    Ok(CreatedKey { key: generated.plaintext, api_key })
}

/// Responses that carry a key must not be cached anywhere.
fn no_store(status: StatusCode, body: impl Serialize) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Creates an API key; the answer holds the key, which is never shown again.
///
/// The key belongs to one project (default: the caller's) and carries scopes: `read`, `write`,
/// `admin`. Only its SHA-256 is stored. A project's admin key creates keys of its own project; the
/// master key, of any. Needs the `admin` scope.
#[utoipa::path(post, path = "/api/v1/keys", tag = "auth", request_body = KeyInput,
    responses((status = 201, body = CreatedKey), (status = 400, body = super::error::ErrorBody)))]
pub async fn create(
    State(app): State<Arc<App>>,
    Caller(ctx): Caller,
    ApiJson(input): ApiJson<KeyInput>,
) -> Result<Response> {
    let project = project_in_reach(&ctx.within(), input.project.as_deref(), &ctx.tenant)?;
    let created = create_key(&*app.auth.store, project, input).await?;
    Ok(no_store(StatusCode::CREATED, created))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this project's keys.
    #[param(example = "default")]
    pub project: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyList {
    pub keys: Vec<ApiKey>,
}

/// Lists keys (never their secrets), oldest first.
///
/// Each key's id, name, project, scopes, expiry, revocation and last use. A project's admin key
/// sees its own project's keys. Needs the `admin` scope.
#[utoipa::path(get, path = "/api/v1/keys", operation_id = "list_keys", tag = "auth", params(ListParams), responses((status = 200, body = KeyList)))]
pub async fn list(
    State(app): State<Arc<App>>,
    Caller(ctx): Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Response> {
    let within = match params.project {
        Some(p) => Within::Tenant(project_in_reach(&ctx.within(), Some(&p), &ctx.tenant)?),
        None => ctx.within(),
    };
    Ok(no_store(StatusCode::OK, KeyList { keys: app.auth.store.list_keys(&within).await? }))
}

/// One key.
///
/// Its name, project, scopes, expiry, revocation and last use; never its secret. Needs the `admin`
/// scope.
#[utoipa::path(get, path = "/api/v1/keys/{id}", operation_id = "get_key", tag = "auth",
    params(("id" = String, Path, description = "The key's id: the part after `nxs_` and before the next `_`",
        example = "3f9a1c0d5e7b2a64")),
    responses((status = 200, body = ApiKey), (status = 404, body = super::error::ErrorBody)))]
pub async fn get(State(app): State<Arc<App>>, Caller(ctx): Caller, ApiPath(id): ApiPath<String>) -> Result<Response> {
    let key = app
        .auth
        .store
        .get_key(&id)
        .await?
        .map(|k| k.key)
        .filter(|k| ctx.within().tenant().is_none_or(|t| *t == k.project))
        .ok_or_else(|| Error::not_found("key", &id))?;
    Ok(no_store(StatusCode::OK, key))
}

/// Revokes a key: it stops working at once.
///
/// Answers with the key, now revoked. Revoking twice is harmless. Needs the `admin` scope.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "auth",
    params(("id" = String, Path, description = "The key's id: the part after `nxs_` and before the next `_`",
        example = "3f9a1c0d5e7b2a64")),
    responses((status = 200, body = ApiKey), (status = 404, body = super::error::ErrorBody)))]
pub async fn revoke(
    State(app): State<Arc<App>>,
    Caller(ctx): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response> {
    let key = app.auth.store.revoke_key(&ctx.within(), &id, Utc::now()).await?;
    Ok(no_store(StatusCode::OK, key.ok_or_else(|| Error::not_found("key", &id))?))
}
