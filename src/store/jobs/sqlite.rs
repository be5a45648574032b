//! The job queue in the record store's SQLite database (same file, same connections).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row, params};

use super::{Job, JobState, JobStore};
use crate::error::{Error, Result};
use crate::store::records::sqlite::{SqliteRecordStore, from_micros, now_micros};
use crate::store::{TenantId, blocking};

const COLUMNS: &str = "id, tenant, kind, payload, state, attempts, max_attempts, progress, result, error, run_after, created_at, updated_at, error_code";

fn job_from_row(r: &Row<'_>) -> rusqlite::Result<Job> {
    let json = |i: usize, text: String| {
        serde_json::from_str(&text)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
    };
    let tenant: String = r.get(1)?;
    let state: String = r.get(4)?;
    let result: Option<String> = r.get(8)?;
    Ok(Job {
        id: r.get(0)?,
        tenant: TenantId::new(tenant)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e)))?,
        kind: r.get(2)?,
        payload: json(3, r.get(3)?)?,
        state: JobState::parse(&state).unwrap_or(JobState::Failed),
        attempts: r.get::<_, i64>(5)? as u32,
        max_attempts: r.get::<_, i64>(6)? as u32,
        progress: json(7, r.get(7)?)?,
        result: result.map(|t| json(8, t)).transpose()?,
        error: r.get(9)?,
        run_after: from_micros(r.get(10)?),
        created_at: from_micros(r.get(11)?),
        updated_at: from_micros(r.get(12)?),
        error_code: r.get(13)?,
    })
}

fn encode(v: &serde_json::Value) -> String {
    v.to_string()
}

#[async_trait]
impl JobStore for SqliteRecordStore {
    async fn enqueue(
        &self,
        tenant: &TenantId,
        kind: &str,
        payload: serde_json::Value,
        max_attempts: u32,
    ) -> Result<Job> {
        let inner = self.inner.clone();
        let (tenant, kind) = (tenant.clone(), kind.to_string());
        blocking(move || {
            let id = uuid::Uuid::now_v7().to_string();
            let now = now_micros();
            let conn = inner.writer.lock();
            conn.execute(
                "INSERT INTO jobs (id, tenant, kind, payload, state, max_attempts, run_after, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?6, ?6)",
                params![id, tenant.as_str(), kind, encode(&payload), max_attempts.max(1) as i64, now],
            )?;
            let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1");
            Ok(conn.query_row(&sql, [&id], job_from_row)?)
        })
        .await
    }

    async fn record_succeeded(
        &self,
        tenant: &TenantId,
        kind: &str,
        payload: serde_json::Value,
        result: serde_json::Value,
    ) -> Result<Job> {
        let inner = self.inner.clone();
        let (tenant, kind) = (tenant.clone(), kind.to_string());
        blocking(move || {
            let id = uuid::Uuid::now_v7().to_string();
            let now = now_micros();
            let conn = inner.writer.lock();
            conn.execute(
                "INSERT INTO jobs (id, tenant, kind, payload, state, attempts, max_attempts, result, run_after,
                                   created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 'succeeded', 1, 1, ?5, ?6, ?6, ?6)",
                params![id, tenant.as_str(), kind, encode(&payload), encode(&result), now],
            )?;
            let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1");
            Ok(conn.query_row(&sql, [&id], job_from_row)?)
        })
        .await
    }

    async fn get(&self, tenant: &TenantId, id: &str) -> Result<Option<Job>> {
        let inner = self.inner.clone();
        let (tenant, id) = (tenant.clone(), id.to_string());
        blocking(move || {
            inner.read(|conn| {
                let sql = format!("SELECT {COLUMNS} FROM jobs WHERE tenant = ?1 AND id = ?2");
                Ok(conn.query_row(&sql, params![tenant.as_str(), id], job_from_row).optional()?)
            })
        })
        .await
    }

    async fn list(&self, tenant: &TenantId, state: Option<JobState>, limit: usize) -> Result<Vec<Job>> {
        let inner = self.inner.clone();
        let tenant = tenant.clone();
        blocking(move || {
            inner.read(|conn| {
                let sql = format!(
                    "SELECT {COLUMNS} FROM jobs WHERE tenant = ?1 AND (?2 IS NULL OR state = ?2)
                     ORDER BY created_at DESC, id DESC LIMIT ?3"
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows =
                    stmt.query_map(params![tenant.as_str(), state.map(JobState::as_str), limit as i64], job_from_row)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }

    async fn cancel(&self, tenant: &TenantId, id: &str) -> Result<Option<Job>> {
        let inner = self.inner.clone();
        let (tenant, id) = (tenant.clone(), id.to_string());
        blocking(move || {
            let conn = inner.writer.lock();
            conn.execute(
                "UPDATE jobs SET state = 'cancelled', lease_until = NULL, updated_at = ?3
                 WHERE tenant = ?1 AND id = ?2 AND state IN ('queued', 'running')",
                params![tenant.as_str(), id, now_micros()],
            )?;
            let sql = format!("SELECT {COLUMNS} FROM jobs WHERE tenant = ?1 AND id = ?2");
            Ok(conn.query_row(&sql, params![tenant.as_str(), id], job_from_row).optional()?)
        })
        .await
    }

    async fn claim(&self, lease: std::time::Duration) -> Result<Option<Job>> {
        let inner = self.inner.clone();
        blocking(move || {
            let now = now_micros();
            let conn = inner.writer.lock();
            let sql = format!(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until = ?2, updated_at = ?1
                 WHERE id = (SELECT id FROM jobs
                             WHERE (state = 'queued' AND run_after <= ?1) OR (state = 'running' AND lease_until < ?1)
                             ORDER BY run_after, created_at LIMIT 1)
                 RETURNING {COLUMNS}"
            );
            Ok(conn.query_row(&sql, params![now, now + lease.as_micros() as i64], job_from_row).optional()?)
        })
        .await
    }

    async fn heartbeat(&self, id: &str, progress: serde_json::Value, lease: std::time::Duration) -> Result<bool> {
        let inner = self.inner.clone();
        let id = id.to_string();
        blocking(move || {
            let now = now_micros();
            let conn = inner.writer.lock();
            let n = conn.execute(
                "UPDATE jobs SET progress = ?2, lease_until = ?3, updated_at = ?4 WHERE id = ?1 AND state = 'running'",
                params![id, encode(&progress), now + lease.as_micros() as i64, now],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn complete(&self, id: &str, result: serde_json::Value) -> Result<()> {
        let inner = self.inner.clone();
        let id = id.to_string();
        blocking(move || {
            let conn = inner.writer.lock();
            conn.execute(
                "UPDATE jobs SET state = 'succeeded', result = ?2, error = NULL, error_code = NULL, lease_until = NULL, updated_at = ?3
                 WHERE id = ?1 AND state = 'running'",
                params![id, encode(&result), now_micros()],
            )?;
            Ok(())
        })
        .await
    }

    async fn fail(&self, id: &str, error: &Error, retry_at: Option<DateTime<Utc>>) -> Result<JobState> {
        let inner = self.inner.clone();
        let (id, code, error) = (id.to_string(), error.code.as_str(), error.to_string());
        blocking(move || {
            let now = now_micros();
            let conn = inner.writer.lock();
            let state: Option<String> = conn
                .query_row(
                    "UPDATE jobs SET
                        state = CASE WHEN ?3 IS NULL THEN 'failed' WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
                        run_after = COALESCE(?3, run_after), error = ?2, error_code = ?5, lease_until = NULL, updated_at = ?4
                     WHERE id = ?1 AND state = 'running' RETURNING state",
                    params![id, error, retry_at.map(|t| t.timestamp_micros()), now, code],
                    |r| r.get(0),
                )
                .optional()?;
            state
                .as_deref()
                .and_then(JobState::parse)
                .ok_or_else(|| Error::invalid(format!("job {id} is not running (cancelled meanwhile?)")))
        })
        .await
    }

    async fn export(&self) -> Result<Vec<Job>> {
        let inner = self.inner.clone();
        blocking(move || {
            inner.read(|conn| {
                let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM jobs ORDER BY id"))?;
                let rows = stmt.query_map([], job_from_row)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }

    async fn import(&self, jobs: &[Job]) -> Result<()> {
        let inner = self.inner.clone();
        let jobs = jobs.to_vec();
        blocking(move || {
            let mut conn = inner.writer.lock();
            let tx = conn.transaction()?;
            for j in &jobs {
                let state = if j.state == JobState::Running { JobState::Queued } else { j.state };
                tx.execute(
                    &format!(
                        "INSERT INTO jobs ({COLUMNS}, lease_until)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, NULL)
                         ON CONFLICT (id) DO UPDATE SET tenant = excluded.tenant, kind = excluded.kind,
                            payload = excluded.payload, state = excluded.state, attempts = excluded.attempts,
                            max_attempts = excluded.max_attempts, progress = excluded.progress,
                            result = excluded.result, error = excluded.error, run_after = excluded.run_after,
                            created_at = excluded.created_at, updated_at = excluded.updated_at,
                            error_code = excluded.error_code, lease_until = NULL"
                    ),
                    params![
                        j.id,
                        j.tenant.as_str(),
                        j.kind,
                        encode(&j.payload),
                        state.as_str(),
                        j.attempts,
                        j.max_attempts,
                        encode(&j.progress),
                        j.result.as_ref().map(encode),
                        j.error,
                        j.run_after.timestamp_micros(),
                        j.created_at.timestamp_micros(),
                        j.updated_at.timestamp_micros(),
                        j.error_code
                    ],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
}
