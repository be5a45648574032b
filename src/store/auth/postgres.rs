//! The auth store in Postgres, shared by every node of a cluster (tables `orgs`, `projects`,
//! `api_keys` and `audit_log` of the record store's migration `0001_init.sql`).
//!
//! Contract, beyond the [`AuthStore`] one:
//! - Every lookup reads the tables: nothing is cached, so a key revoked through one node is
//!   refused by every node from the next request on.
//! - Creating an organisation, project or key is one statement; two nodes creating the same id at
//!   once get one success and one `conflict`.
//! - [`AuthStore::append_audit`] inserts a batch in one statement and marks its keys used in the
//!   same transaction, locking the keys in id order so that nodes writing at once never deadlock.
//! - Creation times are read from the database's clock, so objects made on different nodes list
//!   in the order they were made.

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

use super::{
    ApiKey, AuditEntry, AuditEvent, AuditFilter, AuthExport, AuthStore, NewApiKey, Org, Project, Scope, StoredKey,
    Within,
};
use crate::error::{Error, ErrorCode, Result};
use crate::store::TenantId;
use crate::store::postgres::Pg;

/// The database's time of the current statement, in microseconds since the epoch.
const NOW: &str = "(extract(epoch FROM statement_timestamp()) * 1000000)::bigint";

const KEY_COLUMNS: &str = "id, project_id, name, scopes, created_at, expires_at, revoked_at, last_used_at, secret_hash";

pub struct PostgresAuthStore {
    pg: Pg,
}

impl PostgresAuthStore {
    /// Over the record store's database; its migration created the tables and the default
    /// organisation and project.
    pub fn new(pg: Pg) -> PostgresAuthStore {
        PostgresAuthStore { pg }
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}

fn column<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T> {
    row.try_get(i).map_err(|e| Error::store("postgres auth row", e))
}

fn tenant(id: String) -> Result<TenantId> {
    TenantId::new(id).map_err(|e| Error::store("postgres auth row", e))
}

fn scopes_to_text(scopes: &[Scope]) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

fn scopes_from_text(text: &str) -> Vec<Scope> {
    text.split(',').filter_map(Scope::parse).collect()
}

fn key_from_row(row: &Row) -> Result<StoredKey> {
    let hash: Vec<u8> = column(row, 8)?;
    let secret_hash: [u8; 32] =
        hash.as_slice().try_into().map_err(|e| Error::store("postgres auth row: api_keys.secret_hash", e))?;
    Ok(StoredKey {
        key: ApiKey {
            id: column(row, 0)?,
            project: tenant(column(row, 1)?)?,
            name: column(row, 2)?,
            scopes: scopes_from_text(column(row, 3)?),
            created_at: from_micros(column(row, 4)?),
            expires_at: column::<Option<i64>>(row, 5)?.map(from_micros),
            revoked_at: column::<Option<i64>>(row, 6)?.map(from_micros),
            last_used_at: column::<Option<i64>>(row, 7)?.map(from_micros),
        },
        secret_hash,
    })
}

fn project_from_row(row: &Row) -> Result<Project> {
    Ok(Project {
        id: tenant(column(row, 0)?)?,
        org_id: column(row, 1)?,
        name: column(row, 2)?,
        created_at: from_micros(column(row, 3)?),
    })
}

fn audit_from_row(row: &Row) -> Result<AuditEntry> {
    Ok(AuditEntry {
        seq: column::<i64>(row, 0)?.max(0) as u64,
        event: AuditEvent {
            at: from_micros(column(row, 1)?),
            principal: column(row, 2)?,
            key_id: column(row, 3)?,
            tenant: column::<Option<String>>(row, 4)?.map(tenant).transpose()?,
            method: column(row, 5)?,
            route: column(row, 6)?,
            object_id: column(row, 7)?,
            status: u16::try_from(column::<i32>(row, 8)?).unwrap_or(0),
            client: column(row, 9)?,
        },
    })
}

fn conflict(what: &str, id: &str) -> Error {
    Error::new(ErrorCode::Conflict, format!("{what} `{id}` already exists; choose another id"))
}

#[async_trait]
impl AuthStore for PostgresAuthStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn create_org(&self, id: &str, name: &str) -> Result<Org> {
        let client = self.pg.client().await?;
        let sql = format!(
            "INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, {NOW})
             ON CONFLICT (id) DO NOTHING RETURNING created_at"
        );
        let row = client.query_opt(&sql, &[&id, &name]).await.map_err(|e| self.pg.error("create organisation", e))?;
        let Some(row) = row else { return Err(conflict("organisation", id)) };
        Ok(Org { id: id.to_string(), name: name.to_string(), created_at: from_micros(column(&row, 0)?) })
    }

    async fn list_orgs(&self) -> Result<Vec<Org>> {
        let client = self.pg.client().await?;
        let rows = client
            .query("SELECT id, name, created_at FROM orgs ORDER BY created_at, id", &[])
            .await
            .map_err(|e| self.pg.error("list organisations", e))?;
        rows.iter()
            .map(|r| Ok(Org { id: column(r, 0)?, name: column(r, 1)?, created_at: from_micros(column(r, 2)?) }))
            .collect()
    }

    async fn create_project(&self, id: &TenantId, org_id: &str, name: &str) -> Result<Project> {
        let client = self.pg.client().await?;
        // Organisations are never deleted, so the one found here is there at commit.
        let sql = format!(
            "WITH org AS (SELECT id FROM orgs WHERE id = $2),
                  inserted AS (INSERT INTO projects (id, org_id, name, created_at)
                               SELECT $1, id, $3, {NOW} FROM org
                               ON CONFLICT (id) DO NOTHING RETURNING created_at)
             SELECT EXISTS (SELECT 1 FROM org), (SELECT created_at FROM inserted)"
        );
        let row = client
            .query_one(&sql, &[&id.as_str(), &org_id, &name])
            .await
            .map_err(|e| self.pg.error("create project", e))?;
        if !column::<bool>(&row, 0)? {
            return Err(Error::not_found("organisation", org_id));
        }
        let Some(created_at) = column::<Option<i64>>(&row, 1)? else { return Err(conflict("project", id.as_str())) };
        Ok(Project {
            id: id.clone(),
            org_id: org_id.to_string(),
            name: name.to_string(),
            created_at: from_micros(created_at),
        })
    }

    async fn get_project(&self, id: &TenantId) -> Result<Option<Project>> {
        let client = self.pg.client().await?;
        let row = client
            .query_opt("SELECT id, org_id, name, created_at FROM projects WHERE id = $1", &[&id.as_str()])
            .await
            .map_err(|e| self.pg.error("get project", e))?;
        row.as_ref().map(project_from_row).transpose()
    }

    async fn list_projects(&self, within: &Within) -> Result<Vec<Project>> {
        let client = self.pg.client().await?;
        let rows = client
            .query(
                "SELECT id, org_id, name, created_at FROM projects WHERE ($1::text IS NULL OR id = $1)
                 ORDER BY created_at, id",
                &[&within.tenant().map(TenantId::as_str)],
            )
            .await
            .map_err(|e| self.pg.error("list projects", e))?;
        rows.iter().map(project_from_row).collect()
    }

    async fn create_key(&self, key: NewApiKey) -> Result<ApiKey> {
        let client = self.pg.client().await?;
        // Projects are never deleted, so the one found here is there at commit.
        let sql = format!(
            "WITH project AS (SELECT id FROM projects WHERE id = $2),
                  inserted AS (INSERT INTO api_keys (id, project_id, name, secret_hash, scopes, created_at, expires_at)
                               SELECT $1, id, $3, $4, $5, {NOW}, $6 FROM project
                               ON CONFLICT (id) DO NOTHING RETURNING created_at)
             SELECT EXISTS (SELECT 1 FROM project), (SELECT created_at FROM inserted)"
        );
        let row = client
            .query_one(
                &sql,
                &[
                    &key.id,
                    &key.project.as_str(),
                    &key.name,
                    &key.secret_hash.as_slice(),
                    &scopes_to_text(&key.scopes),
                    &key.expires_at.map(micros),
                ],
            )
            .await
            .map_err(|e| self.pg.error("create key", e))?;
        if !column::<bool>(&row, 0)? {
            return Err(Error::not_found("project", key.project.as_str()));
        }
        let Some(created_at) = column::<Option<i64>>(&row, 1)? else { return Err(conflict("key", &key.id)) };
        Ok(ApiKey {
            id: key.id,
            project: key.project,
            name: key.name,
            scopes: key.scopes,
            created_at: from_micros(created_at),
            expires_at: key.expires_at.map(|t| from_micros(micros(t))),
            revoked_at: None,
            last_used_at: None,
        })
    }

    async fn get_key(&self, id: &str) -> Result<Option<StoredKey>> {
        let client = self.pg.client().await?;
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1");
        let row = client.query_opt(&sql, &[&id]).await.map_err(|e| self.pg.error("get key", e))?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn list_keys(&self, within: &Within) -> Result<Vec<ApiKey>> {
        let client = self.pg.client().await?;
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE ($1::text IS NULL OR project_id = $1) ORDER BY created_at, id"
        );
        let rows = client
            .query(&sql, &[&within.tenant().map(TenantId::as_str)])
            .await
            .map_err(|e| self.pg.error("list keys", e))?;
        rows.iter().map(|r| key_from_row(r).map(|k| k.key)).collect()
    }

    async fn revoke_key(&self, within: &Within, id: &str, at: DateTime<Utc>) -> Result<Option<ApiKey>> {
        let client = self.pg.client().await?;
        let sql = format!(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, $3)
             WHERE id = $1 AND ($2::text IS NULL OR project_id = $2) RETURNING {KEY_COLUMNS}"
        );
        let row = client
            .query_opt(&sql, &[&id, &within.tenant().map(TenantId::as_str), &micros(at)])
            .await
            .map_err(|e| self.pg.error("revoke key", e))?;
        row.as_ref().map(|r| key_from_row(r).map(|k| k.key)).transpose()
    }

    async fn append_audit(&self, events: &[AuditEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let at: Vec<i64> = events.iter().map(|e| micros(e.at)).collect();
        let principal: Vec<&str> = events.iter().map(|e| e.principal.as_str()).collect();
        let key_id: Vec<Option<&str>> = events.iter().map(|e| e.key_id.as_deref()).collect();
        let tenant: Vec<Option<&str>> = events.iter().map(|e| e.tenant.as_ref().map(TenantId::as_str)).collect();
        let method: Vec<&str> = events.iter().map(|e| e.method.as_str()).collect();
        let route: Vec<&str> = events.iter().map(|e| e.route.as_str()).collect();
        let object_id: Vec<Option<&str>> = events.iter().map(|e| e.object_id.as_deref()).collect();
        let status: Vec<i32> = events.iter().map(|e| i32::from(e.status)).collect();
        let client_addr: Vec<Option<&str>> = events.iter().map(|e| e.client.as_deref()).collect();
        // Each key's latest use in the batch, in id order: the order the rows are locked in.
        let mut used: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
        for e in events {
            if let Some(id) = e.key_id.as_deref() {
                let latest = used.entry(id).or_insert(i64::MIN);
                *latest = (*latest).max(micros(e.at));
            }
        }
        let used_ids: Vec<&str> = used.keys().copied().collect();
        let used_at: Vec<i64> = used.values().copied().collect();

        let err = |e| self.pg.error("append audit", e);
        let mut client = self.pg.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        // Seqs follow the batch's order.
        tx.execute(
            "INSERT INTO audit_log (at, principal, key_id, tenant, method, route, object_id, status, client)
             SELECT at, principal, key_id, tenant, method, route, object_id, status, client
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::integer[], $9::text[])
                  WITH ORDINALITY AS e(at, principal, key_id, tenant, method, route, object_id, status, client, n)
             ORDER BY n",
            &[&at, &principal, &key_id, &tenant, &method, &route, &object_id, &status, &client_addr],
        )
        .await
        .map_err(err)?;
        if !used_ids.is_empty() {
            tx.execute("SELECT 1 FROM api_keys WHERE id = ANY($1) ORDER BY id FOR UPDATE", &[&used_ids])
                .await
                .map_err(err)?;
            tx.execute(
                "UPDATE api_keys SET last_used_at = greatest(last_used_at, u.at)
                 FROM unnest($1::text[], $2::bigint[]) AS u(id, at) WHERE api_keys.id = u.id",
                &[&used_ids, &used_at],
            )
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(())
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let client = self.pg.client().await?;
        let f = filter;
        let rows = client
            .query(
                "SELECT seq, at, principal, key_id, tenant, method, route, object_id, status, client
                 FROM audit_log
                 WHERE ($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR key_id = $2)
                   AND ($3::text IS NULL OR method = $3) AND ($4::integer IS NULL OR status = $4)
                   AND ($5::bigint IS NULL OR at >= $5) AND ($6::bigint IS NULL OR at < $6)
                   AND ($7::bigint IS NULL OR seq < $7)
                 ORDER BY seq DESC LIMIT $8",
                &[
                    &f.within.tenant().map(TenantId::as_str),
                    &f.key_id,
                    &f.method,
                    &f.status.map(i32::from),
                    &f.since.map(micros),
                    &f.until.map(micros),
                    &f.before_seq.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
                    &i64::try_from(f.limit).unwrap_or(i64::MAX),
                ],
            )
            .await
            .map_err(|e| self.pg.error("list audit", e))?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn prune_audit(&self, before: DateTime<Utc>) -> Result<u64> {
        let client = self.pg.client().await?;
        client
            .execute("DELETE FROM audit_log WHERE at < $1", &[&micros(before)])
            .await
            .map_err(|e| self.pg.error("prune audit", e))
    }

    async fn export(&self) -> Result<AuthExport> {
        let client = self.pg.client().await?;
        let err = |e| self.pg.error("export auth", e);
        let orgs = client
            .query("SELECT id, name, created_at FROM orgs ORDER BY id", &[])
            .await
            .map_err(err)?
            .iter()
            .map(|r| Ok(Org { id: column(r, 0)?, name: column(r, 1)?, created_at: from_micros(column(r, 2)?) }))
            .collect::<Result<Vec<_>>>()?;
        let projects = client
            .query("SELECT id, org_id, name, created_at FROM projects ORDER BY id", &[])
            .await
            .map_err(err)?
            .iter()
            .map(project_from_row)
            .collect::<Result<Vec<_>>>()?;
        let keys = client
            .query(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id"), &[])
            .await
            .map_err(err)?
            .iter()
            .map(key_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(AuthExport { orgs, projects, keys })
    }

    async fn import(&self, data: &AuthExport) -> Result<()> {
        let mut client = self.pg.client().await?;
        let err = |e| self.pg.error("import auth", e);
        let tx = client.transaction().await.map_err(err)?;
        for org in &data.orgs {
            tx.execute(
                "INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, created_at = excluded.created_at",
                &[&org.id, &org.name, &micros(org.created_at)],
            )
            .await
            .map_err(err)?;
        }
        for p in &data.projects {
            tx.execute(
                "INSERT INTO projects (id, org_id, name, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET org_id = excluded.org_id, name = excluded.name,
                    created_at = excluded.created_at",
                &[&p.id.as_str(), &p.org_id, &p.name, &micros(p.created_at)],
            )
            .await
            .map_err(err)?;
        }
        for k in &data.keys {
            tx.execute(
                "INSERT INTO api_keys (id, project_id, name, secret_hash, scopes, created_at, expires_at, revoked_at,
                                       last_used_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (id) DO UPDATE SET project_id = excluded.project_id, name = excluded.name,
                    secret_hash = excluded.secret_hash, scopes = excluded.scopes, created_at = excluded.created_at,
                    expires_at = excluded.expires_at, revoked_at = excluded.revoked_at,
                    last_used_at = excluded.last_used_at",
                &[
                    &k.key.id,
                    &k.key.project.as_str(),
                    &k.key.name,
                    &k.secret_hash.as_slice(),
                    &scopes_to_text(&k.key.scopes),
                    &micros(k.key.created_at),
                    &k.key.expires_at.map(micros),
                    &k.key.revoked_at.map(micros),
                    &k.key.last_used_at.map(micros),
                ],
            )
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)
    }

    async fn audit_after(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        let client = self.pg.client().await?;
        let rows = client
            .query(
                "SELECT seq, at, principal, key_id, tenant, method, route, object_id, status, client
                 FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&i64::try_from(after_seq).unwrap_or(i64::MAX), &i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await
            .map_err(|e| self.pg.error("list audit", e))?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn import_audit(&self, entries: &[AuditEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let seq: Vec<i64> = entries.iter().map(|e| e.seq as i64).collect();
        let at: Vec<i64> = entries.iter().map(|e| micros(e.event.at)).collect();
        let principal: Vec<&str> = entries.iter().map(|e| e.event.principal.as_str()).collect();
        let key_id: Vec<Option<&str>> = entries.iter().map(|e| e.event.key_id.as_deref()).collect();
        let tenant: Vec<Option<&str>> = entries.iter().map(|e| e.event.tenant.as_ref().map(TenantId::as_str)).collect();
        let method: Vec<&str> = entries.iter().map(|e| e.event.method.as_str()).collect();
        let route: Vec<&str> = entries.iter().map(|e| e.event.route.as_str()).collect();
        let object_id: Vec<Option<&str>> = entries.iter().map(|e| e.event.object_id.as_deref()).collect();
        let status: Vec<i32> = entries.iter().map(|e| i32::from(e.event.status)).collect();
        let client_addr: Vec<Option<&str>> = entries.iter().map(|e| e.event.client.as_deref()).collect();
        let mut client = self.pg.client().await?;
        let err = |e| self.pg.error("import audit", e);
        let tx = client.transaction().await.map_err(err)?;
        tx.execute(
            "INSERT INTO audit_log (seq, at, principal, key_id, tenant, method, route, object_id, status, client)
             OVERRIDING SYSTEM VALUE
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                                  $7::text[], $8::text[], $9::integer[], $10::text[])
             ON CONFLICT (seq) DO NOTHING",
            &[&seq, &at, &principal, &key_id, &tenant, &method, &route, &object_id, &status, &client_addr],
        )
        .await
        .map_err(err)?;
        tx.execute(
            "SELECT setval(pg_get_serial_sequence('audit_log', 'seq'),
                           greatest((SELECT max(seq) FROM audit_log), (SELECT last_value FROM audit_log_seq_seq)))",
            &[],
        )
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)
    }
}
