//! The job store: a durable queue of background work, kept in the record store's database.
//!
//! Contract:
//! - [`JobStore::enqueue`] makes a `queued` job durable before returning.
//! - [`JobStore::claim`] hands out the oldest due job — `queued` with `run_after` passed, or
//!   `running` with an expired lease (its worker died) — exactly once per lease, marks it
//!   `running`, counts the attempt and sets the lease.
//! - [`JobStore::fail`] re-queues the job for `retry_at`, or marks it `dead` once it has used its
//!   attempts (`failed` is never left behind by the queue itself: it is the state of a job whose
//!   error cannot be retried).
//! - A cancelled job is never claimed again; [`JobStore::heartbeat`] tells its worker to stop.
//! - Tenant-scoped reads never show another tenant's jobs.

pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::TenantId;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Dead,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        [
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Dead,
            JobState::Cancelled,
        ]
        .into_iter()
        .find(|j| j.as_str() == s)
    }

    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Dead | JobState::Cancelled)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Job {
    pub id: String,
    #[schema(value_type = String)]
    pub tenant: TenantId,
    pub kind: String,
    pub payload: serde_json::Value,
    pub state: JobState,
    pub attempts: u32,
    pub max_attempts: u32,
    /// What the job reported, e.g. `{"done": 3, "total": 10}`.
    pub progress: serde_json::Value,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    /// The stable code of `error` (as in the API's error bodies), e.g. `corrupt_document`.
    pub error_code: Option<String>,
    pub run_after: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    async fn enqueue(
        &self,
        tenant: &TenantId,
        kind: &str,
        payload: serde_json::Value,
        max_attempts: u32,
    ) -> Result<Job>;
    /// Records work that already ran inline as a `succeeded` job (never claimed), so that it has
    /// an id to look up like queued work: a synchronous Mem0 add answers with such an event id.
    async fn record_succeeded(
        &self,
        tenant: &TenantId,
        kind: &str,
        payload: serde_json::Value,
        result: serde_json::Value,
    ) -> Result<Job>;
    async fn get(&self, tenant: &TenantId, id: &str) -> Result<Option<Job>>;
    /// Newest first; `before` is the `created_at` of the last job of the previous page.
    async fn list(&self, tenant: &TenantId, state: Option<JobState>, limit: usize) -> Result<Vec<Job>>;
    /// Cancels a job that has not finished; returns it as it is now.
    async fn cancel(&self, tenant: &TenantId, id: &str) -> Result<Option<Job>>;

    // --- system scope: workers ---
    async fn claim(&self, lease: std::time::Duration) -> Result<Option<Job>>;
    /// Records progress and extends the lease; `false` when the job was cancelled.
    async fn heartbeat(&self, id: &str, progress: serde_json::Value, lease: std::time::Duration) -> Result<bool>;
    async fn complete(&self, id: &str, result: serde_json::Value) -> Result<()>;
    /// `retry_at: None` fails for good (`failed`); otherwise re-queued, or `dead` when attempts are used up.
    async fn fail(&self, id: &str, error: &Error, retry_at: Option<DateTime<Utc>>) -> Result<JobState>;

    /// Every job, for a migration.
    async fn export(&self) -> Result<Vec<Job>>;

    /// Writes jobs as they are (a migration), replacing those under the same ids; a job that was
    /// running is queued again (its worker is gone).
    async fn import(&self, jobs: &[Job]) -> Result<()>;
}
