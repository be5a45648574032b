//! The auth store: organisations, projects (tenants), API keys and the audit log.
//!
//! Contract:
//! - Every install has the organisation `default` holding the project `default` (the default tenant).
//! - A project's id is a [`TenantId`]; creating a project or organisation whose id exists is a
//!   `conflict`; a project needs an existing organisation and a key an existing project (`not_found`).
//! - Keys are kept with the SHA-256 of their secret, never the secret. [`AuthStore::get_key`] is
//!   system scope (authentication does not know the tenant yet); listing and revoking take a
//!   [`Within`] so a tenant's admin never sees or touches another tenant's keys.
//! - Revoking is idempotent and keeps the first revocation time.
//! - [`AuthStore::append_audit`] writes a batch in one transaction and marks each key in it as used.
//! - Audit entries are listed newest first; [`AuditFilter::within`] confines them to one tenant.

pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::TenantId;
use crate::error::Result;

/// What a key may do. Scopes are independent: `admin` does not imply `write`, so give each needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Project {
    /// The tenant id of everything stored in this project.
    #[schema(value_type = String)]
    pub id: TenantId,
    pub org_id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// An API key as shown: everything but its secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: String,
    #[schema(value_type = String)]
    pub project: TenantId,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A key with the hash its secret must match.
#[derive(Clone, Debug)]
pub struct StoredKey {
    pub key: ApiKey,
    pub secret_hash: [u8; 32],
}

#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub id: String,
    pub project: TenantId,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub secret_hash: [u8; 32],
    pub expires_at: Option<DateTime<Utc>>,
}

/// Which tenants a management call may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Within {
    /// Every tenant: the operator.
    All,
    Tenant(TenantId),
}

impl Within {
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            Within::All => None,
            Within::Tenant(t) => Some(t),
        }
    }
}

/// One audited request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    /// `key`, `master`, `open` (loopback without keys) or `anonymous` (no valid key).
    pub principal: String,
    pub key_id: Option<String>,
    #[schema(value_type = Option<String>)]
    pub tenant: Option<TenantId>,
    pub method: String,
    /// The route template, e.g. `/api/v1/records/{id}`.
    pub route: String,
    /// The id in the path, when the route has one.
    pub object_id: Option<String>,
    pub status: u16,
    /// Client address.
    pub client: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub seq: u64,
    #[serde(flatten)]
    pub event: AuditEvent,
}

#[derive(Clone, Debug)]
pub struct AuditFilter {
    pub within: Within,
    pub key_id: Option<String>,
    pub method: Option<String>,
    pub status: Option<u16>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Entries older than this seq (keyset pagination, newest first).
    pub before_seq: Option<u64>,
    pub limit: usize,
}

impl AuditFilter {
    /// The newest `limit` entries in `within`, with no other condition.
    pub fn newest(within: Within, limit: usize) -> AuditFilter {
        AuditFilter {
            within,
            key_id: None,
            method: None,
            status: None,
            since: None,
            until: None,
            before_seq: None,
            limit,
        }
    }
}

/// Everything of an auth store but its audit log, as a migration copies it.
#[derive(Clone, Debug, Default)]
pub struct AuthExport {
    pub orgs: Vec<Org>,
    pub projects: Vec<Project>,
    pub keys: Vec<StoredKey>,
}

#[async_trait]
pub trait AuthStore: Send + Sync + 'static {
    fn backend(&self) -> &'static str;

    async fn create_org(&self, id: &str, name: &str) -> Result<Org>;

    async fn list_orgs(&self) -> Result<Vec<Org>>;

    async fn create_project(&self, id: &TenantId, org_id: &str, name: &str) -> Result<Project>;

    async fn get_project(&self, id: &TenantId) -> Result<Option<Project>>;

    /// Projects in `within`, oldest first.
    async fn list_projects(&self, within: &Within) -> Result<Vec<Project>>;

    async fn create_key(&self, key: NewApiKey) -> Result<ApiKey>;

    /// System scope: the key with this id in any tenant, with its secret's hash.
    async fn get_key(&self, id: &str) -> Result<Option<StoredKey>>;

    /// Keys in `within`, oldest first.
    async fn list_keys(&self, within: &Within) -> Result<Vec<ApiKey>>;

    /// Revokes the key when it is in `within`; `None` when there is no such key there.
    async fn revoke_key(&self, within: &Within, id: &str, at: DateTime<Utc>) -> Result<Option<ApiKey>>;

    async fn append_audit(&self, events: &[AuditEvent]) -> Result<()>;

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>>;

    /// Deletes audit entries older than `before`; returns how many.
    async fn prune_audit(&self, before: DateTime<Utc>) -> Result<u64>;

    /// Organisations, projects and keys (with their hashes), for a migration.
    async fn export(&self) -> Result<AuthExport>;

    /// Writes `data` as it is (ids, times, hashes kept), replacing what is there under the same
    /// ids: a migration copying another store's organisations, projects and keys.
    async fn import(&self, data: &AuthExport) -> Result<()>;

    /// Audit entries after `after_seq`, oldest first.
    async fn audit_after(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditEntry>>;

    /// Audit entries with their seq kept; those already there are left alone. Later entries get
    /// higher seqs.
    async fn import_audit(&self, entries: &[AuditEntry]) -> Result<()>;
}
