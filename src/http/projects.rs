//! Organisations and projects (tenants). The master key creates them; a project's admin key
//! sees its own project.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::ApiJson;
use crate::app::App;
use crate::error::{Error, Result};
use crate::store::TenantId;
use crate::store::auth::{Org, Project};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": "acme", "name": "Acme support"}))]
pub struct ProjectInput {
    /// The project's id, which is its tenant id: 1-64 letters, digits, '-' or '_'.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: String,
    /// Default: the id.
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// Default: `default`.
    pub org_id: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ProjectList {
    pub projects: Vec<Project>,
}

fn display_name(name: Option<String>, id: &str) -> Result<String> {
    let name = name.map(|n| n.trim().to_string()).unwrap_or_else(|| id.to_string());
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Error::invalid("name must be 1-100 characters"));
    }
    Ok(name)
}

/// Creates a project: a new tenant, empty, to issue keys for.
///
/// Its id is the tenant id every record of it carries; 409 `conflict` when it exists. Needs the
/// master key.
#[utoipa::path(post, path = "/api/v1/projects", tag = "auth", request_body = ProjectInput,
    responses((status = 201, body = Project), (status = 409, body = super::error::ErrorBody)))]
pub async fn create_project(
    State(app): State<Arc<App>>,
    ApiJson(input): ApiJson<ProjectInput>,
) -> Result<(StatusCode, axum::Json<Project>)> {
    let id = TenantId::new(input.id)?;
    let name = display_name(input.name, id.as_str())?;
    let org = input.org_id.unwrap_or_else(|| "default".to_string());
    let project = app.auth.store.create_project(&id, &org, &name).await?;
    Ok((StatusCode::CREATED, axum::Json(project)))
}

/// Lists projects.
///
/// All of them for the master key, the key's own for a project key (with the `admin` scope).
#[utoipa::path(get, path = "/api/v1/projects", tag = "auth", responses((status = 200, body = ProjectList)))]
pub async fn list_projects(State(app): State<Arc<App>>, Caller(ctx): Caller) -> Result<axum::Json<ProjectList>> {
    Ok(axum::Json(ProjectList { projects: app.auth.store.list_projects(&ctx.within()).await? }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": "acme-corp", "name": "Acme Corporation"}))]
pub struct OrgInput {
    /// 1-64 letters, digits, '-' or '_'.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: String,
    /// Default: the id.
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OrgList {
    pub orgs: Vec<Org>,
}

/// Creates an organisation to hold projects.
///
/// Projects name their organisation with `org_id`; every install has `default`. 409 `conflict`
/// when it exists. Needs the master key.
#[utoipa::path(post, path = "/api/v1/orgs", tag = "auth", request_body = OrgInput,
    responses((status = 201, body = Org), (status = 409, body = super::error::ErrorBody)))]
pub async fn create_org(
    State(app): State<Arc<App>>,
    ApiJson(input): ApiJson<OrgInput>,
) -> Result<(StatusCode, axum::Json<Org>)> {
    // Organisation ids follow the tenant id rules.
    let id = TenantId::new(input.id.clone())
        .map_err(|_| Error::invalid("org id must be 1-64 characters of letters, digits, '-' or '_'"))?;
    let name = display_name(input.name, id.as_str())?;
    Ok((StatusCode::CREATED, axum::Json(app.auth.store.create_org(id.as_str(), &name).await?)))
}

/// Lists organisations.
///
/// Every organisation with its name and creation time. Needs the master key.
#[utoipa::path(get, path = "/api/v1/orgs", tag = "auth", responses((status = 200, body = OrgList)))]
pub async fn list_orgs(State(app): State<Arc<App>>) -> Result<axum::Json<OrgList>> {
    Ok(axum::Json(OrgList { orgs: app.auth.store.list_orgs().await? }))
}
