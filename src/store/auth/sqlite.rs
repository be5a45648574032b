//! The embedded auth store: tables in the record store's SQLite database (migration
//! `0004_auth.sql`), on the same connections, so one writer serialises every write.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row, params};

use super::{
    ApiKey, AuditEntry, AuditEvent, AuditFilter, AuthExport, AuthStore, NewApiKey, Org, Project, Scope, StoredKey,
    Within,
};
use crate::error::{Error, ErrorCode, Result};
use crate::store::records::sqlite::{Inner, SqliteRecordStore, from_micros, now_micros};
use crate::store::{TenantId, blocking};

pub struct SqliteAuthStore {
    db: Arc<Inner>,
}

impl SqliteAuthStore {
    /// Over the record store's database; its migrations created the tables.
    pub fn new(records: &SqliteRecordStore) -> SqliteAuthStore {
        SqliteAuthStore { db: records.database() }
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn conversion_error(i: usize, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
}

fn tenant_at(row: &Row<'_>, i: usize) -> rusqlite::Result<TenantId> {
    TenantId::new(row.get::<_, String>(i)?).map_err(|e| conversion_error(i, e))
}

fn scopes_to_text(scopes: &[Scope]) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

fn scopes_from_text(text: &str) -> Vec<Scope> {
    text.split(',').filter_map(Scope::parse).collect()
}

const KEY_COLUMNS: &str = "id, project_id, name, scopes, created_at, expires_at, revoked_at, last_used_at, secret_hash";

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<StoredKey> {
    let hash: Vec<u8> = row.get(8)?;
    let secret_hash: [u8; 32] = hash.as_slice().try_into().map_err(|e| conversion_error(8, e))?;
    Ok(StoredKey {
        key: ApiKey {
            id: row.get(0)?,
            project: tenant_at(row, 1)?,
            name: row.get(2)?,
            scopes: scopes_from_text(&row.get::<_, String>(3)?),
            created_at: from_micros(row.get(4)?),
            expires_at: row.get::<_, Option<i64>>(5)?.map(from_micros),
            revoked_at: row.get::<_, Option<i64>>(6)?.map(from_micros),
            last_used_at: row.get::<_, Option<i64>>(7)?.map(from_micros),
        },
        secret_hash,
    })
}

fn project_from_row(row: &Row<'_>) -> rusqlite::Result<Project> {
    Ok(Project { id: tenant_at(row, 0)?, org_id: row.get(1)?, name: row.get(2)?, created_at: from_micros(row.get(3)?) })
}

fn audit_from_row(row: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    let tenant: Option<String> = row.get(4)?;
    Ok(AuditEntry {
        seq: row.get::<_, i64>(0)? as u64,
        event: AuditEvent {
            at: from_micros(row.get(1)?),
            principal: row.get(2)?,
            key_id: row.get(3)?,
            tenant: tenant.map(TenantId::new).transpose().map_err(|e| conversion_error(4, e))?,
            method: row.get(5)?,
            route: row.get(6)?,
            object_id: row.get(7)?,
            status: row.get::<_, i64>(8)? as u16,
            client: row.get(9)?,
        },
    })
}

fn conflict(what: &str, id: &str) -> Error {
    Error::new(ErrorCode::Conflict, format!("{what} `{id}` already exists; choose another id"))
}

#[async_trait]
impl AuthStore for SqliteAuthStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn create_org(&self, id: &str, name: &str) -> Result<Org> {
        let db = self.db.clone();
        let org = Org { id: id.to_string(), name: name.to_string(), created_at: from_micros(now_micros()) };
        blocking(move || {
            let conn = db.writer.lock();
            let inserted = conn.execute(
                "INSERT INTO orgs (id, name, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO NOTHING",
                params![org.id, org.name, micros(org.created_at)],
            )?;
            if inserted == 0 {
                return Err(conflict("organisation", &org.id));
            }
            Ok(org)
        })
        .await
    }

    async fn list_orgs(&self) -> Result<Vec<Org>> {
        let db = self.db.clone();
        blocking(move || {
            db.read(|conn| {
                let mut stmt = conn.prepare_cached("SELECT id, name, created_at FROM orgs ORDER BY created_at, id")?;
                let rows = stmt.query_map([], |r| {
                    Ok(Org { id: r.get(0)?, name: r.get(1)?, created_at: from_micros(r.get(2)?) })
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }

    async fn create_project(&self, id: &TenantId, org_id: &str, name: &str) -> Result<Project> {
        let db = self.db.clone();
        let project = Project {
            id: id.clone(),
            org_id: org_id.to_string(),
            name: name.to_string(),
            created_at: from_micros(now_micros()),
        };
        blocking(move || {
            let mut conn = db.writer.lock();
            let tx = conn.transaction()?;
            let org: Option<String> =
                tx.query_row("SELECT id FROM orgs WHERE id = ?1", [&project.org_id], |r| r.get(0)).optional()?;
            if org.is_none() {
                return Err(Error::not_found("organisation", &project.org_id));
            }
            let inserted = tx.execute(
                "INSERT INTO projects (id, org_id, name, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (id) DO NOTHING",
                params![project.id.as_str(), project.org_id, project.name, micros(project.created_at)],
            )?;
            if inserted == 0 {
                return Err(conflict("project", project.id.as_str()));
            }
            tx.commit()?;
            Ok(project)
        })
        .await
    }

    async fn get_project(&self, id: &TenantId) -> Result<Option<Project>> {
        let db = self.db.clone();
        let id = id.clone();
        blocking(move || {
            db.read(|conn| {
                Ok(conn
                    .query_row(
                        "SELECT id, org_id, name, created_at FROM projects WHERE id = ?1",
                        [id.as_str()],
                        project_from_row,
                    )
                    .optional()?)
            })
        })
        .await
    }

    async fn list_projects(&self, within: &Within) -> Result<Vec<Project>> {
        let db = self.db.clone();
        let tenant = within.tenant().map(|t| t.as_str().to_string());
        blocking(move || {
            db.read(|conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT id, org_id, name, created_at FROM projects WHERE (?1 IS NULL OR id = ?1)
                     ORDER BY created_at, id",
                )?;
                let rows = stmt.query_map([tenant], project_from_row)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }

    async fn create_key(&self, key: NewApiKey) -> Result<ApiKey> {
        let db = self.db.clone();
        blocking(move || {
            let mut conn = db.writer.lock();
            let tx = conn.transaction()?;
            let project: Option<String> = tx
                .query_row("SELECT id FROM projects WHERE id = ?1", [key.project.as_str()], |r| r.get(0))
                .optional()?;
            if project.is_none() {
                return Err(Error::not_found("project", key.project.as_str()));
            }
            let now = now_micros();
            let inserted = tx.execute(
                "INSERT INTO api_keys (id, project_id, name, secret_hash, scopes, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
                params![
                    key.id,
                    key.project.as_str(),
                    key.name,
                    key.secret_hash.as_slice(),
                    scopes_to_text(&key.scopes),
                    now,
                    key.expires_at.map(micros)
                ],
            )?;
            if inserted == 0 {
                return Err(conflict("key", &key.id));
            }
            tx.commit()?;
            Ok(ApiKey {
                id: key.id,
                project: key.project,
                name: key.name,
                scopes: key.scopes,
                created_at: from_micros(now),
                expires_at: key.expires_at.map(|t| from_micros(micros(t))),
                revoked_at: None,
                last_used_at: None,
            })
        })
        .await
    }

    async fn get_key(&self, id: &str) -> Result<Option<StoredKey>> {
        let db = self.db.clone();
        let id = id.to_string();
        blocking(move || {
            db.read(|conn| {
                let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1");
                Ok(conn.prepare_cached(&sql)?.query_row([id], key_from_row).optional()?)
            })
        })
        .await
    }

    async fn list_keys(&self, within: &Within) -> Result<Vec<ApiKey>> {
        let db = self.db.clone();
        let tenant = within.tenant().map(|t| t.as_str().to_string());
        blocking(move || {
            db.read(|conn| {
                let sql = format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE (?1 IS NULL OR project_id = ?1) ORDER BY created_at, id"
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map([tenant], |r| key_from_row(r).map(|k| k.key))?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }

    async fn revoke_key(&self, within: &Within, id: &str, at: DateTime<Utc>) -> Result<Option<ApiKey>> {
        let db = self.db.clone();
        let tenant = within.tenant().map(|t| t.as_str().to_string());
        let id = id.to_string();
        blocking(move || {
            let conn = db.writer.lock();
            let sql = format!(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?3)
                 WHERE id = ?1 AND (?2 IS NULL OR project_id = ?2) RETURNING {KEY_COLUMNS}"
            );
            Ok(conn.query_row(&sql, params![id, tenant, micros(at)], |r| key_from_row(r).map(|k| k.key)).optional()?)
        })
        .await
    }

    async fn append_audit(&self, events: &[AuditEvent]) -> Result<()> {
        let db = self.db.clone();
        let events = events.to_vec();
        blocking(move || {
            let mut conn = db.writer.lock();
            let tx = conn.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO audit_log (at, principal, key_id, tenant, method, route, object_id, status, client)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                let mut used = tx.prepare_cached(
                    "UPDATE api_keys SET last_used_at = max(coalesce(last_used_at, 0), ?2) WHERE id = ?1",
                )?;
                for e in &events {
                    insert.execute(params![
                        micros(e.at),
                        e.principal,
                        e.key_id,
                        e.tenant.as_ref().map(|t| t.as_str()),
                        e.method,
                        e.route,
                        e.object_id,
                        e.status as i64,
                        e.client
                    ])?;
                    if let Some(key_id) = &e.key_id {
                        used.execute(params![key_id, micros(e.at)])?;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let db = self.db.clone();
        let f = filter.clone();
        blocking(move || {
            db.read(|conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT seq, at, principal, key_id, tenant, method, route, object_id, status, client
                     FROM audit_log
                     WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR key_id = ?2) AND (?3 IS NULL OR method = ?3)
                       AND (?4 IS NULL OR status = ?4) AND (?5 IS NULL OR at >= ?5) AND (?6 IS NULL OR at < ?6)
                       AND (?7 IS NULL OR seq < ?7)
                     ORDER BY seq DESC LIMIT ?8",
                )?;
                let rows = stmt.query_map(
                    params![
                        f.within.tenant().map(|t| t.as_str()),
                        f.key_id,
                        f.method,
                        f.status.map(i64::from),
                        f.since.map(micros),
                        f.until.map(micros),
                        f.before_seq.map(|s| s as i64),
                        f.limit as i64
                    ],
                    audit_from_row,
                )?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }

    async fn prune_audit(&self, before: DateTime<Utc>) -> Result<u64> {
        let db = self.db.clone();
        blocking(move || {
            let conn = db.writer.lock();
            Ok(conn.execute("DELETE FROM audit_log WHERE at < ?1", [micros(before)])? as u64)
        })
        .await
    }

    async fn export(&self) -> Result<AuthExport> {
        let db = self.db.clone();
        blocking(move || {
            db.read(|conn| {
                let orgs = conn
                    .prepare("SELECT id, name, created_at FROM orgs ORDER BY id")?
                    .query_map([], |r| Ok(Org { id: r.get(0)?, name: r.get(1)?, created_at: from_micros(r.get(2)?) }))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let projects = conn
                    .prepare("SELECT id, org_id, name, created_at FROM projects ORDER BY id")?
                    .query_map([], project_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let keys = conn
                    .prepare(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id"))?
                    .query_map([], key_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(AuthExport { orgs, projects, keys })
            })
        })
        .await
    }

    async fn import(&self, data: &AuthExport) -> Result<()> {
        let db = self.db.clone();
        let data = data.clone();
        blocking(move || {
            let mut conn = db.writer.lock();
            let tx = conn.transaction()?;
            for org in &data.orgs {
                tx.execute(
                    "INSERT INTO orgs (id, name, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, created_at = excluded.created_at",
                    params![org.id, org.name, micros(org.created_at)],
                )?;
            }
            for p in &data.projects {
                tx.execute(
                    "INSERT INTO projects (id, org_id, name, created_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (id) DO UPDATE SET org_id = excluded.org_id, name = excluded.name,
                        created_at = excluded.created_at",
                    params![p.id.as_str(), p.org_id, p.name, micros(p.created_at)],
                )?;
            }
            for k in &data.keys {
                tx.execute(
                    "INSERT INTO api_keys (id, project_id, name, secret_hash, scopes, created_at, expires_at,
                                           revoked_at, last_used_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (id) DO UPDATE SET project_id = excluded.project_id, name = excluded.name,
                        secret_hash = excluded.secret_hash, scopes = excluded.scopes, created_at = excluded.created_at,
                        expires_at = excluded.expires_at, revoked_at = excluded.revoked_at,
                        last_used_at = excluded.last_used_at",
                    params![
                        k.key.id,
                        k.key.project.as_str(),
                        k.key.name,
                        k.secret_hash.as_slice(),
                        scopes_to_text(&k.key.scopes),
                        micros(k.key.created_at),
                        k.key.expires_at.map(micros),
                        k.key.revoked_at.map(micros),
                        k.key.last_used_at.map(micros)
                    ],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn audit_after(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        let db = self.db.clone();
        blocking(move || {
            db.read(|conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT seq, at, principal, key_id, tenant, method, route, object_id, status, client
                     FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )?;
                let rows = stmt.query_map(
                    params![i64::try_from(after_seq).unwrap_or(i64::MAX), i64::try_from(limit).unwrap_or(i64::MAX)],
                    audit_from_row,
                )?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }

    async fn import_audit(&self, entries: &[AuditEntry]) -> Result<()> {
        let db = self.db.clone();
        let entries = entries.to_vec();
        blocking(move || {
            let mut conn = db.writer.lock();
            let tx = conn.transaction()?;
            for e in &entries {
                let v = &e.event;
                tx.execute(
                    "INSERT INTO audit_log (seq, at, principal, key_id, tenant, method, route, object_id, status, client)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (seq) DO NOTHING",
                    params![
                        e.seq as i64,
                        micros(v.at),
                        v.principal,
                        v.key_id,
                        v.tenant.as_ref().map(TenantId::as_str),
                        v.method,
                        v.route,
                        v.object_id,
                        i64::from(v.status),
                        v.client
                    ],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
}
