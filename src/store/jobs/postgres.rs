//! The job queue in Postgres, shared by every node of a cluster (table `jobs` of the record
//! store's migration `0001_init.sql`).
//!
//! Contract, beyond the [`JobStore`] one:
//! - Any node may claim any job. [`JobStore::claim`] is one statement that locks the oldest due
//!   row with `FOR UPDATE SKIP LOCKED` and marks it `running` with a lease, so concurrent workers
//!   on any number of nodes each get a different job, and a job is handed out once per lease.
//! - A job whose worker stopped heartbeating (its node died) is claimed again once its lease has
//!   passed: delivery is at least once, as in the embedded queue.
//! - Times and leases are read from the database's clock, so nodes whose clocks disagree still
//!   agree on when a lease ends; a retry time given by a node counts as a delay from that node's
//!   clock.

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use tokio_postgres::Row;

use super::{Job, JobState, JobStore};
use crate::error::{Error, Result};
use crate::store::TenantId;
use crate::store::postgres::Pg;

const COLUMNS: &str = "id, tenant, kind, payload, state, attempts, max_attempts, progress, result, error, run_after, created_at, updated_at, error_code";

/// The database's time of the current statement, in microseconds since the epoch.
const NOW: &str = "(extract(epoch FROM statement_timestamp()) * 1000000)::bigint";

pub struct PostgresJobStore {
    pg: Pg,
}

impl PostgresJobStore {
    /// Over the record store's database; its migration created the table.
    pub fn new(pg: Pg) -> PostgresJobStore {
        PostgresJobStore { pg }
    }
}

fn from_micros(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}

fn micros(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn job_from_row(row: &Row) -> Result<Job> {
    let decode = |e: tokio_postgres::Error| Error::store("postgres jobs row", e);
    let tenant: String = row.try_get(1).map_err(decode)?;
    let state: String = row.try_get(4).map_err(decode)?;
    Ok(Job {
        id: row.try_get(0).map_err(decode)?,
        tenant: TenantId::new(tenant).map_err(|e| Error::store("postgres jobs row", e))?,
        kind: row.try_get(2).map_err(decode)?,
        payload: row.try_get(3).map_err(decode)?,
        state: JobState::parse(&state).unwrap_or(JobState::Failed),
        attempts: row.try_get::<_, i32>(5).map_err(decode)?.max(0) as u32,
        max_attempts: row.try_get::<_, i32>(6).map_err(decode)?.max(0) as u32,
        progress: row.try_get(7).map_err(decode)?,
        result: row.try_get(8).map_err(decode)?,
        error: row.try_get(9).map_err(decode)?,
        run_after: from_micros(row.try_get(10).map_err(decode)?),
        created_at: from_micros(row.try_get(11).map_err(decode)?),
        updated_at: from_micros(row.try_get(12).map_err(decode)?),
        error_code: row.try_get(13).map_err(decode)?,
    })
}

impl PostgresJobStore {
    /// A new `queued` job, or with a `result` a `succeeded` one.
    async fn insert(
        &self,
        tenant: &TenantId,
        kind: &str,
        payload: &serde_json::Value,
        max_attempts: i32,
        result: Option<&serde_json::Value>,
    ) -> Result<Job> {
        let (state, attempts) = match result {
            Some(_) => (JobState::Succeeded, 1i32),
            None => (JobState::Queued, 0i32),
        };
        let client = self.pg.client().await?;
        let id = uuid::Uuid::now_v7().to_string();
        let sql = format!(
            "INSERT INTO jobs (id, tenant, kind, payload, state, attempts, max_attempts, result, run_after,
                               created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, {NOW}, {NOW}, {NOW})
             RETURNING {COLUMNS}"
        );
        let row = client
            .query_one(
                &sql,
                &[&id, &tenant.as_str(), &kind, payload, &state.as_str(), &attempts, &max_attempts, &result],
            )
            .await
            .map_err(|e| self.pg.error("enqueue job", e))?;
        job_from_row(&row)
    }
}

#[async_trait]
impl JobStore for PostgresJobStore {
    async fn enqueue(
        &self,
        tenant: &TenantId,
        kind: &str,
        payload: serde_json::Value,
        max_attempts: u32,
    ) -> Result<Job> {
        let max_attempts = i32::try_from(max_attempts.max(1)).unwrap_or(i32::MAX);
        self.insert(tenant, kind, &payload, max_attempts, None).await
    }

    async fn record_succeeded(
        &self,
        tenant: &TenantId,
        kind: &str,
        payload: serde_json::Value,
        result: serde_json::Value,
    ) -> Result<Job> {
        self.insert(tenant, kind, &payload, 1, Some(&result)).await
    }

    async fn get(&self, tenant: &TenantId, id: &str) -> Result<Option<Job>> {
        let client = self.pg.client().await?;
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE tenant = $1 AND id = $2");
        let row = client.query_opt(&sql, &[&tenant.as_str(), &id]).await.map_err(|e| self.pg.error("get job", e))?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list(&self, tenant: &TenantId, state: Option<JobState>, limit: usize) -> Result<Vec<Job>> {
        let client = self.pg.client().await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs WHERE tenant = $1 AND ($2::text IS NULL OR state = $2)
             ORDER BY created_at DESC, id DESC LIMIT $3"
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(&sql, &[&tenant.as_str(), &state.map(JobState::as_str), &limit])
            .await
            .map_err(|e| self.pg.error("list jobs", e))?;
        rows.iter().map(job_from_row).collect()
    }

    async fn cancel(&self, tenant: &TenantId, id: &str) -> Result<Option<Job>> {
        let client = self.pg.client().await?;
        // The UPDATE's RETURNING shows a job it cancelled; one that had already finished is read as it is.
        let sql = format!(
            "WITH cancelled AS (
                 UPDATE jobs SET state = 'cancelled', lease_until = NULL, updated_at = {NOW}
                 WHERE tenant = $1 AND id = $2 AND state IN ('queued', 'running')
                 RETURNING {COLUMNS})
             SELECT {COLUMNS} FROM cancelled
             UNION ALL
             SELECT {COLUMNS} FROM jobs WHERE tenant = $1 AND id = $2 AND NOT EXISTS (SELECT 1 FROM cancelled)"
        );
        let row = client.query_opt(&sql, &[&tenant.as_str(), &id]).await.map_err(|e| self.pg.error("cancel job", e))?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn claim(&self, lease: std::time::Duration) -> Result<Option<Job>> {
        let client = self.pg.client().await?;
        // SKIP LOCKED: a row another worker is claiming right now is passed over, never waited
        // for; a row claimed meanwhile no longer matches when it is locked, and is passed over too.
        let sql = format!(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until = {NOW} + $1, updated_at = {NOW}
             WHERE id = (SELECT id FROM jobs
                         WHERE (state = 'queued' AND run_after <= {NOW})
                            OR (state = 'running' AND lease_until < {NOW})
                         ORDER BY run_after, created_at, id
                         LIMIT 1
                         FOR UPDATE SKIP LOCKED)
             RETURNING {COLUMNS}"
        );
        let row = client.query_opt(&sql, &[&micros(lease)]).await.map_err(|e| self.pg.error("claim job", e))?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn heartbeat(&self, id: &str, progress: serde_json::Value, lease: std::time::Duration) -> Result<bool> {
        let client = self.pg.client().await?;
        let sql = format!(
            "UPDATE jobs SET progress = $2, lease_until = {NOW} + $3, updated_at = {NOW}
             WHERE id = $1 AND state = 'running'"
        );
        let n = client
            .execute(&sql, &[&id, &progress, &micros(lease)])
            .await
            .map_err(|e| self.pg.error("job heartbeat", e))?;
        Ok(n == 1)
    }

    async fn complete(&self, id: &str, result: serde_json::Value) -> Result<()> {
        let client = self.pg.client().await?;
        let sql = format!(
            "UPDATE jobs SET state = 'succeeded', result = $2, error = NULL, error_code = NULL, lease_until = NULL,
                             updated_at = {NOW}
             WHERE id = $1 AND state = 'running'"
        );
        client.execute(&sql, &[&id, &result]).await.map_err(|e| self.pg.error("complete job", e))?;
        Ok(())
    }

    async fn fail(&self, id: &str, error: &Error, retry_at: Option<DateTime<Utc>>) -> Result<JobState> {
        let client = self.pg.client().await?;
        // The retry time as a delay from this node's clock, applied to the database's.
        let delay = retry_at.map(|at| (at - Utc::now()).num_microseconds().unwrap_or(i64::MAX).max(0));
        let sql = format!(
            "UPDATE jobs SET
                 state = CASE WHEN $3::bigint IS NULL THEN 'failed' WHEN attempts >= max_attempts THEN 'dead'
                              ELSE 'queued' END,
                 run_after = COALESCE({NOW} + $3, run_after), error = $2, error_code = $4, lease_until = NULL,
                 updated_at = {NOW}
             WHERE id = $1 AND state = 'running'
             RETURNING state"
        );
        let row = client
            .query_opt(&sql, &[&id, &error.to_string(), &delay, &error.code.as_str()])
            .await
            .map_err(|e| self.pg.error("fail job", e))?;
        let state: Option<String> = row.map(|r| r.get(0));
        state
            .as_deref()
            .and_then(JobState::parse)
            .ok_or_else(|| Error::invalid(format!("job {id} is not running (cancelled meanwhile?)")))
    }

    async fn export(&self) -> Result<Vec<Job>> {
        let client = self.pg.client().await?;
        let rows = client
            .query(&format!("SELECT {COLUMNS} FROM jobs ORDER BY id"), &[])
            .await
            .map_err(|e| self.pg.error("export jobs", e))?;
        rows.iter().map(job_from_row).collect()
    }

    async fn import(&self, jobs: &[Job]) -> Result<()> {
        let mut client = self.pg.client().await?;
        let err = |e| self.pg.error("import jobs", e);
        let tx = client.transaction().await.map_err(err)?;
        for j in jobs {
            let state = if j.state == JobState::Running { JobState::Queued } else { j.state };
            tx.execute(
                &format!(
                    "INSERT INTO jobs ({COLUMNS}, lease_until)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, NULL)
                     ON CONFLICT (id) DO UPDATE SET tenant = excluded.tenant, kind = excluded.kind,
                        payload = excluded.payload, state = excluded.state, attempts = excluded.attempts,
                        max_attempts = excluded.max_attempts, progress = excluded.progress, result = excluded.result,
                        error = excluded.error, run_after = excluded.run_after, created_at = excluded.created_at,
                        updated_at = excluded.updated_at, error_code = excluded.error_code, lease_until = NULL"
                ),
                &[
                    &j.id,
                    &j.tenant.as_str(),
                    &j.kind,
                    &j.payload,
                    &state.as_str(),
                    &(j.attempts as i32),
                    &(j.max_attempts as i32),
                    &j.progress,
                    &j.result,
                    &j.error,
                    &j.run_after.timestamp_micros(),
                    &j.created_at.timestamp_micros(),
                    &j.updated_at.timestamp_micros(),
                    &j.error_code,
                ],
            )
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)
    }
}
