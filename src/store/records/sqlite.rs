//! The embedded record store: SQLite (bundled) in WAL mode, with sqlite-vec for exact vector search.
//!
//! One writer connection serialises writes; a few reader connections serve reads concurrently
//! (WAL lets readers run beside the writer). All calls run on the blocking pool.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use parking_lot::Mutex;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use super::{
    Change, ChangeOp, ExactHit, FacetTerms, GraphItem, ListFilter, NewRecord, Record, RecordFilter, RecordStore, Write,
    WriteReceipt, Written, field_name,
};
use crate::config::{RecordsConfig, Synchronous};
use crate::error::{Error, Result};
use crate::store::{RecordKey, Seq, StoreStats, TenantId, blocking, dir_size};

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/sqlite/0001_init.sql"),
    include_str!("migrations/sqlite/0002_embed_flag.sql"),
    include_str!("migrations/sqlite/0003_jobs.sql"),
    include_str!("migrations/sqlite/0004_auth.sql"),
    include_str!("migrations/sqlite/0005_job_error_code.sql"),
    include_str!("migrations/sqlite/0006_record_facets.sql"),
    include_str!("migrations/sqlite/0007_leases.sql"),
    include_str!("migrations/sqlite/0008_migration.sql"),
];

const READERS: usize = 4;
const DB_FILE: &str = "nexus.sqlite";

pub struct SqliteRecordStore {
    pub(crate) inner: Arc<Inner>,
}

/// The database's connections, shared with the stores that keep their tables in the same file
/// (jobs, auth), so that one writer serialises every write.
pub(crate) struct Inner {
    pub(crate) writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    dir: std::path::PathBuf,
}

impl Inner {
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        for _ in 0..self.readers.len() {
            let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
            if let Some(conn) = self.readers[i].try_lock() {
                return f(&conn);
            }
        }
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        f(&self.readers[i].lock())
    }

    /// [`Self::read`] in one read transaction, for a reader that runs many statements: they see
    /// one snapshot, and SQLite takes its shared lock (an `fcntl` call and a look at the WAL
    /// index) once instead of once per statement.
    pub(crate) fn read_snapshot<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.read(|conn| {
            let tx = conn.unchecked_transaction()?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
    }
}

fn register_sqlite_vec() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| unsafe {
        // sqlite-vec exports its entry point with the C signature SQLite expects of an extension.
        type Init = unsafe extern "C" fn(
            *mut rusqlite::ffi::sqlite3,
            *mut *mut std::os::raw::c_char,
            *const rusqlite::ffi::sqlite3_api_routines,
        ) -> std::os::raw::c_int;
        let init: Init = std::mem::transmute(sqlite_vec::sqlite3_vec_init as *const ());
        rusqlite::ffi::sqlite3_auto_extension(Some(init));
    });
}

fn open_connection(path: &Path, config: &RecordsConfig) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = match config.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "mmap_size", config.mmap_mb.saturating_mul(1 << 20) as i64)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Keep each cached statement's plan: otherwise SQLite re-prepares any statement whose bound
    // values (a LIMIT, a JSON path) could change its plan on every execution.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(conn)
}

/// How many WAL pages (4 KiB each) a commit may leave before the checkpointer copies them into
/// the database file: SQLite's own autocheckpoint threshold.
const CHECKPOINT_PAGES: i32 = 1000;

/// Moves WAL checkpoints off the writer. SQLite's autocheckpoint runs inside the commit that
/// crosses the threshold, so that one write waits for the WAL to be copied into the database
/// file and the file to be synced. Instead the writer's WAL hook (which replaces the
/// autocheckpoint) wakes a thread of its own with its own connection, which runs a `PASSIVE`
/// checkpoint: it copies what no reader still needs without taking the write lock, so writers
/// go on committing meanwhile. The thread ends when the writer connection closes (the hook, and
/// with it the only sender, is dropped).
fn checkpoint_in_background(writer: &mut Connection, checkpointer: Connection) -> Result<()> {
    let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
    writer.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: std::os::raw::c_int| {
        if pages >= CHECKPOINT_PAGES {
            // Full means a checkpoint is already due; it will cover these pages too.
            let _ = wake.try_send(());
        }
        Ok(())
    }))?;
    std::thread::Builder::new().name("sqlite-checkpoint".into()).spawn(move || {
        while woken.recv().is_ok() {
            if let Err(e) =
                checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0)).map(|_| ())
            {
                tracing::warn!(error = %e, "WAL checkpoint failed; the next commit past the threshold retries it");
            }
        }
    })?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let applied: usize = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    if applied > MIGRATIONS.len() {
        return Err(Error::new(
            crate::error::ErrorCode::DataDirFormatTooNew,
            format!(
                "the record store has schema version {applied}, newer than this nexus knows ({}); run a newer nexus",
                MIGRATIONS.len()
            ),
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "record store schema migrated");
    }
    Ok(())
}

impl SqliteRecordStore {
    pub async fn open(dir: &Path, config: &RecordsConfig) -> Result<SqliteRecordStore> {
        let dir = dir.to_path_buf();
        let config = config.clone();
        blocking(move || {
            register_sqlite_vec();
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(DB_FILE);
            let mut writer = open_connection(&path, &config)?;
            migrate(&mut writer)?;
            checkpoint_in_background(&mut writer, open_connection(&path, &config)?)?;
            let readers =
                (0..READERS).map(|_| open_connection(&path, &config).map(Mutex::new)).collect::<Result<Vec<_>>>()?;
            Ok(SqliteRecordStore {
                inner: Arc::new(Inner { writer: Mutex::new(writer), readers, next_reader: AtomicUsize::new(0), dir }),
            })
        })
        .await
    }
}

impl SqliteRecordStore {
    /// The connections, for the auth store over the same database.
    pub(crate) fn database(&self) -> Arc<Inner> {
        self.inner.clone()
    }
}

pub(crate) fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

pub(crate) fn from_micros(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}

pub(crate) fn vector_to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn blob_to_vector(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

const RECORD_COLUMNS: &str =
    "key, tenant, id, kind, title, body, tags, metadata, vector, graph, version, created_at, updated_at, embed";

fn record_from_row(row: &Row<'_>, offset: usize) -> rusqlite::Result<Record> {
    let json_err = |i: usize, e: serde_json::Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    let tags: String = row.get(offset + 6)?;
    let metadata: String = row.get(offset + 7)?;
    let vector: Option<Vec<u8>> = row.get(offset + 8)?;
    let graph: Option<String> = row.get(offset + 9)?;
    let tenant: String = row.get(offset + 1)?;
    Ok(Record {
        key: row.get::<_, i64>(offset)? as u64,
        tenant: TenantId::new(tenant)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e)))?,
        id: row.get(offset + 2)?,
        kind: row.get(offset + 3)?,
        title: row.get(offset + 4)?,
        body: row.get(offset + 5)?,
        tags: serde_json::from_str(&tags).map_err(|e| json_err(offset + 6, e))?,
        metadata: serde_json::from_str(&metadata).map_err(|e| json_err(offset + 7, e))?,
        vector: vector.map(|b| blob_to_vector(&b)),
        graph: graph.map(|g| serde_json::from_str::<GraphItem>(&g)).transpose().map_err(|e| json_err(offset + 9, e))?,
        version: row.get::<_, i64>(offset + 10)? as u64,
        created_at: from_micros(row.get(offset + 11)?),
        updated_at: from_micros(row.get(offset + 12)?),
        embed: row.get::<_, i64>(offset + 13)? != 0,
    })
}

fn upsert(tx: &rusqlite::Transaction<'_>, tenant: &TenantId, r: &NewRecord, now: i64) -> Result<(RecordKey, u64)> {
    let tags = serde_json::to_string(&r.tags).map_err(|e| Error::internal("encode tags", e))?;
    let metadata = serde_json::to_string(&r.metadata).map_err(|e| Error::internal("encode metadata", e))?;
    let graph =
        r.graph.as_ref().map(serde_json::to_string).transpose().map_err(|e| Error::internal("encode graph", e))?;
    let vector = r.vector.as_deref().map(vector_to_blob);
    let (key, version): (i64, i64) = tx.query_row(
        "INSERT INTO records (tenant, id, kind, title, body, tags, metadata, vector, graph, version, created_at, updated_at, embed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1, ?10, ?10, ?11)
         ON CONFLICT (tenant, id) DO UPDATE SET
            kind = excluded.kind, title = excluded.title, body = excluded.body, tags = excluded.tags,
            metadata = excluded.metadata, vector = excluded.vector, graph = excluded.graph,
            version = records.version + 1, updated_at = excluded.updated_at, embed = excluded.embed
         RETURNING key, version",
        params![tenant.as_str(), r.id, r.kind, r.title, r.body, tags, metadata, vector, graph, now, r.embed],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    Ok((key as u64, version as u64))
}

fn log_change(
    tx: &rusqlite::Transaction<'_>,
    tenant: &TenantId,
    key: RecordKey,
    id: &str,
    op: ChangeOp,
    now: i64,
) -> Result<Seq> {
    let op = match op {
        ChangeOp::Upsert => "upsert",
        ChangeOp::Delete => "delete",
    };
    tx.execute(
        "INSERT INTO changes (tenant, record_key, id, op, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![tenant.as_str(), key as i64, id, op, now],
    )?;
    Ok(tx.last_insert_rowid() as u64)
}

/// A WHERE clause (with positional `?` arguments) selecting the tenant's records that match.
/// Metadata keys are bound as JSON paths, never spliced into the SQL.
fn filter_sql(conn: &Connection, tenant: &TenantId, filter: &RecordFilter) -> Result<(String, Vec<SqlValue>)> {
    // The indexed term with the fewest records drives the query (every term's exact test
    // below still decides).
    let driver = narrowest_term(conn, tenant, FacetTerms::of(filter).terms)?;
    // With a driving term, unary `+` keeps the planner from seeking the kind index as well:
    // each candidate key is then one primary-key lookup.
    let plain = if driver.is_some() { "+" } else { "" };
    let mut sql = vec![format!("{plain}tenant = ?")];
    let mut args = vec![SqlValue::Text(tenant.as_str().to_string())];
    if !filter.kinds.is_empty() {
        sql.push(format!("{plain}kind IN ({})", vec!["?"; filter.kinds.len()].join(", ")));
        args.extend(filter.kinds.iter().map(|k| SqlValue::Text(k.clone())));
    }
    if let Some(term) = driver {
        sql.push("key IN (SELECT key FROM record_facets WHERE tenant = ? AND facet = ?)".to_string());
        args.push(SqlValue::Text(tenant.as_str().to_string()));
        args.push(SqlValue::Text(term));
    }
    for tag in &filter.tags {
        sql.push("EXISTS (SELECT 1 FROM json_each(records.tags) WHERE value = ?)".to_string());
        args.push(SqlValue::Text(tag.clone()));
    }
    for (key, value) in &filter.metadata {
        let field = field_name(key);
        // Booleans compare as "true"/"false", like facets; other scalars as their text.
        sql.push(
            "(CASE json_type(metadata, ?1x) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' \
             ELSE CAST(json_extract(metadata, ?1x) AS TEXT) END) = ?"
                .replace("?1x", "?")
                .to_string(),
        );
        let path = format!("$.\"{field}\"");
        args.push(SqlValue::Text(path.clone()));
        args.push(SqlValue::Text(path));
        args.push(SqlValue::Text(value.clone()));
    }
    // The record's date: metadata `date` when SQLite can read it, else creation (microseconds).
    let date = "COALESCE(unixepoch(json_extract(metadata, '$.date')) * 1000000, created_at)";
    if let Some(from) = filter.date_from {
        sql.push(format!("{date} >= ?"));
        args.push(SqlValue::Integer(from.timestamp_micros()));
    }
    if let Some(to) = filter.date_to {
        sql.push(format!("{date} <= ?"));
        args.push(SqlValue::Integer(to.timestamp_micros()));
    }
    if let Some(after) = filter.after_key {
        sql.push("key > ?".to_string());
        args.push(SqlValue::Integer(after as i64));
    }
    Ok((sql.join(" AND "), args))
}

/// The keys matching `filter` read from `record_facets` alone (no record is read), when every
/// condition is an indexed term that cannot be confused with another: tags, kinds and metadata
/// equalities, no dates. `None` when the filter needs the records.
fn indexed_keys_sql(
    conn: &Connection,
    tenant: &TenantId,
    filter: &RecordFilter,
    limit: usize,
) -> Result<Option<(String, Vec<SqlValue>)>> {
    let FacetTerms { terms, complete } = FacetTerms::of(filter);
    if !complete || terms.is_empty() || filter.date_from.is_some() || filter.date_to.is_some() {
        return Ok(None);
    }
    let Some(driver) = narrowest_term(conn, tenant, terms.clone())? else { return Ok(None) };
    let t = || SqlValue::Text(tenant.as_str().to_string());
    let mut sql = vec!["f.tenant = ? AND f.facet = ?".to_string()];
    let mut args = vec![t(), SqlValue::Text(driver.clone())];
    let also = "EXISTS (SELECT 1 FROM record_facets g WHERE g.tenant = ? AND g.facet = ? AND g.key = f.key)";
    for term in terms.into_iter().filter(|term| *term != driver) {
        sql.push(also.to_string());
        args.extend([t(), SqlValue::Text(term)]);
    }
    if !filter.kinds.is_empty() {
        sql.push(format!(
            "EXISTS (SELECT 1 FROM record_facets g WHERE g.tenant = ? AND g.facet IN ({}) AND g.key = f.key)",
            vec!["?"; filter.kinds.len()].join(", ")
        ));
        args.push(t());
        args.extend(filter.kinds.iter().map(|k| SqlValue::Text(super::kind_term(k))));
    }
    if let Some(after) = filter.after_key {
        sql.push("f.key > ?".to_string());
        args.push(SqlValue::Integer(after as i64));
    }
    args.push(SqlValue::Integer(limit.min(i64::MAX as usize) as i64));
    Ok(Some((format!("SELECT f.key FROM record_facets f WHERE {} ORDER BY f.key LIMIT ?", sql.join(" AND ")), args)))
}

/// Of `terms`, the one fewest of the tenant's records carry (counted up to a bound, so a common
/// term costs no more than a rare one).
fn narrowest_term(conn: &Connection, tenant: &TenantId, mut terms: Vec<String>) -> Result<Option<String>> {
    const COUNT_BOUND: i64 = 10_000;
    if terms.len() <= 1 {
        return Ok(terms.pop());
    }
    let mut stmt = conn.prepare_cached(
        "SELECT count(*) FROM (SELECT 1 FROM record_facets WHERE tenant = ?1 AND facet = ?2 LIMIT ?3)",
    )?;
    let mut best: Option<(i64, String)> = None;
    for term in terms {
        let n: i64 = stmt.query_row(params![tenant.as_str(), term, COUNT_BOUND], |r| r.get(0))?;
        if best.as_ref().is_none_or(|(m, _)| n < *m) {
            best = Some((n, term));
        }
    }
    Ok(best.map(|(_, term)| term))
}

fn head_seq(conn: &Connection) -> Result<Seq> {
    // sqlite_sequence keeps the highest seq ever handed out, even after pruning.
    let seq: Option<i64> =
        conn.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'changes'", [], |r| r.get(0)).optional()?;
    Ok(seq.unwrap_or(0) as u64)
}

#[async_trait]
impl RecordStore for SqliteRecordStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn write(&self, tenant: &TenantId, writes: Vec<Write>) -> Result<WriteReceipt> {
        let inner = self.inner.clone();
        let tenant = tenant.clone();
        blocking(move || {
            let mut conn = inner.writer.lock();
            let tx = conn.transaction()?;
            let now = now_micros();
            let mut written = Vec::with_capacity(writes.len());
            for write in &writes {
                match write {
                    Write::Upsert(record) => {
                        let (key, version) = upsert(&tx, &tenant, record, now)?;
                        let seq = log_change(&tx, &tenant, key, &record.id, ChangeOp::Upsert, now)?;
                        written.push(Written { id: record.id.clone(), key, op: ChangeOp::Upsert, version, seq });
                    }
                    Write::Delete { id } => {
                        let gone: Option<(i64, i64)> = tx
                            .query_row(
                                "DELETE FROM records WHERE tenant = ?1 AND id = ?2 RETURNING key, version",
                                params![tenant.as_str(), id],
                                |r| Ok((r.get(0)?, r.get(1)?)),
                            )
                            .optional()?;
                        if let Some((key, version)) = gone {
                            let seq = log_change(&tx, &tenant, key as u64, id, ChangeOp::Delete, now)?;
                            written.push(Written {
                                id: id.clone(),
                                key: key as u64,
                                op: ChangeOp::Delete,
                                version: version as u64,
                                seq,
                            });
                        }
                    }
                }
            }
            let seq = match written.last() {
                Some(w) => w.seq,
                None => head_seq(&tx)?,
            };
            tx.commit()?;
            Ok(WriteReceipt { seq, written })
        })
        .await
    }

    async fn get(&self, tenant: &TenantId, id: &str) -> Result<Option<Record>> {
        let inner = self.inner.clone();
        let (tenant, id) = (tenant.clone(), id.to_string());
        blocking(move || {
            inner.read(|conn| {
                let sql = format!("SELECT {RECORD_COLUMNS} FROM records WHERE tenant = ?1 AND id = ?2");
                Ok(conn.query_row(&sql, params![tenant.as_str(), id], |r| record_from_row(r, 0)).optional()?)
            })
        })
        .await
    }

    async fn get_many(&self, tenant: &TenantId, ids: &[String]) -> Result<Vec<Record>> {
        let inner = self.inner.clone();
        let (tenant, ids) = (tenant.clone(), ids.to_vec());
        blocking(move || {
            inner.read_snapshot(|conn| {
                let sql = format!("SELECT {RECORD_COLUMNS} FROM records WHERE tenant = ?1 AND id = ?2");
                let mut stmt = conn.prepare_cached(&sql)?;
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    out.extend(stmt.query_row(params![tenant.as_str(), id], |r| record_from_row(r, 0)).optional()?);
                }
                Ok(out)
            })
        })
        .await
    }

    async fn get_by_keys(&self, tenant: &TenantId, keys: &[RecordKey]) -> Result<Vec<Record>> {
        let inner = self.inner.clone();
        let tenant = tenant.clone();
        let keys = keys.to_vec();
        blocking(move || {
            inner.read_snapshot(|conn| {
                let sql = format!("SELECT {RECORD_COLUMNS} FROM records WHERE tenant = ?1 AND key = ?2");
                let mut stmt = conn.prepare_cached(&sql)?;
                let mut out = Vec::with_capacity(keys.len());
                for key in keys {
                    if let Some(r) =
                        stmt.query_row(params![tenant.as_str(), key as i64], |r| record_from_row(r, 0)).optional()?
                    {
                        out.push(r);
                    }
                }
                Ok(out)
            })
        })
        .await
    }

    async fn list(&self, tenant: &TenantId, filter: &ListFilter) -> Result<Vec<Record>> {
        let inner = self.inner.clone();
        let tenant = tenant.clone();
        let filter = filter.clone();
        blocking(move || {
            inner.read(|conn| {
                let sql = format!(
                    "SELECT {RECORD_COLUMNS} FROM records
                     WHERE tenant = ?1 AND (?2 IS NULL OR kind = ?2) AND key > ?3
                     ORDER BY key LIMIT ?4"
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(
                    params![tenant.as_str(), filter.kind, filter.after_key.unwrap_or(0) as i64, filter.limit as i64],
                    |r| record_from_row(r, 0),
                )?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }

    async fn count(&self, tenant: &TenantId) -> Result<u64> {
        let inner = self.inner.clone();
        let tenant = tenant.clone();
        blocking(move || {
            inner.read(|conn| {
                let n: i64 =
                    conn.query_row("SELECT count(*) FROM records WHERE tenant = ?1", [tenant.as_str()], |r| r.get(0))?;
                Ok(n as u64)
            })
        })
        .await
    }

    async fn nearest_exact(
        &self,
        tenant: &TenantId,
        filter: &RecordFilter,
        vector: &[f32],
        k: usize,
    ) -> Result<Vec<ExactHit>> {
        let inner = self.inner.clone();
        let (tenant, filter) = (tenant.clone(), filter.clone());
        let blob = vector_to_blob(vector);
        blocking(move || {
            inner.read(|conn| {
                let (where_sql, mut args) = filter_sql(conn, &tenant, &filter)?;
                let sql = format!(
                    "SELECT key, id, vec_distance_cosine(vector, ?) AS distance FROM records
                     WHERE {where_sql} AND vector IS NOT NULL AND length(vector) = ?
                     ORDER BY distance LIMIT ?"
                );
                let mut all: Vec<SqlValue> = vec![SqlValue::Blob(blob.clone())];
                all.append(&mut args);
                all.push(SqlValue::Integer(blob.len() as i64));
                all.push(SqlValue::Integer(k as i64));
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params_from_iter(all), |r| {
                    Ok(ExactHit {
                        key: r.get::<_, i64>(0)? as u64,
                        id: r.get(1)?,
                        distance: r.get::<_, f64>(2)? as f32,
                    })
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }

    async fn keys_matching(&self, tenant: &TenantId, filter: &RecordFilter, limit: usize) -> Result<Vec<RecordKey>> {
        let inner = self.inner.clone();
        let (tenant, filter) = (tenant.clone(), filter.clone());
        blocking(move || {
            inner.read(|conn| {
                let (sql, args) = match indexed_keys_sql(conn, &tenant, &filter, limit)? {
                    Some(indexed) => indexed,
                    None => {
                        let (where_sql, mut args) = filter_sql(conn, &tenant, &filter)?;
                        args.push(SqlValue::Integer(limit.min(i64::MAX as usize) as i64));
                        (format!("SELECT key FROM records WHERE {where_sql} ORDER BY key LIMIT ?"), args)
                    }
                };
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params_from_iter(args), |r| Ok(r.get::<_, i64>(0)? as u64))?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }

    async fn count_by(&self, tenant: &TenantId, filter: &RecordFilter, field: &str) -> Result<Vec<(String, u64)>> {
        let inner = self.inner.clone();
        let (tenant, filter) = (tenant.clone(), filter.clone());
        let path = format!("$.\"{}\"", field_name(field));
        blocking(move || {
            inner.read(|conn| {
                let (where_sql, args) = filter_sql(conn, &tenant, &filter)?;
                let mut all = vec![SqlValue::Text(path)];
                all.extend(args);
                let sql = format!(
                    "SELECT CAST(json_extract(metadata, ?) AS TEXT) AS value, count(*) FROM records
                     WHERE {where_sql} GROUP BY value HAVING value IS NOT NULL ORDER BY value"
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt
                    .query_map(params_from_iter(all), |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }

    async fn changes_since(&self, after: Seq, limit: usize) -> Result<Vec<Change>> {
        let inner = self.inner.clone();
        blocking(move || {
            inner.read(|conn| {
                let sql = format!(
                    "SELECT c.seq, c.tenant, c.record_key, c.id, c.op, {}
                     FROM changes c LEFT JOIN records r ON r.key = c.record_key
                     WHERE c.seq > ?1 ORDER BY c.seq LIMIT ?2",
                    RECORD_COLUMNS.split(", ").map(|c| format!("r.{c}")).collect::<Vec<_>>().join(", ")
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params![after as i64, limit as i64], |row| {
                    let tenant: String = row.get(1)?;
                    let op: String = row.get(4)?;
                    let present: Option<i64> = row.get(5)?;
                    let record = match present {
                        Some(_) => Some(record_from_row(row, 5)?),
                        None => None,
                    };
                    Ok((row.get::<_, i64>(0)?, tenant, row.get::<_, i64>(2)?, row.get::<_, String>(3)?, op, record))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (seq, tenant, key, id, op, record) = row?;
                    let op = if op == "delete" { ChangeOp::Delete } else { ChangeOp::Upsert };
                    out.push(Change {
                        seq: seq as u64,
                        tenant: TenantId::new(tenant)?,
                        key: key as u64,
                        id,
                        op,
                        record,
                    });
                }
                Ok(out)
            })
        })
        .await
    }

    async fn head_seq(&self) -> Result<Seq> {
        let inner = self.inner.clone();
        blocking(move || inner.read(head_seq)).await
    }

    /// SQLite's online backup, every page in one step: one read transaction, so writers go on
    /// (in WAL mode) and the copy is the database as of its start.
    async fn backup_into(&self, to: &Path) -> Result<Seq> {
        /// Pages copied per step: a few MiB, then the copy's pages are flushed as they accumulate.
        const STEP_PAGES: i32 = 1024;
        let (inner, to) = (self.inner.clone(), to.to_path_buf());
        crate::store::low_priority(move || {
            let mut copy = Connection::open(&to)?;
            // A new file written once and made durable at the end: no journal, no syncs per step.
            copy.pragma_update(None, "journal_mode", "OFF")?;
            copy.pragma_update(None, "synchronous", "OFF")?;
            let mut trickle = crate::store::Trickle::new(std::fs::File::options().write(true).open(&to)?);
            inner.read(|conn| {
                // One read transaction for the whole copy: every step reads the same snapshot, so
                // commits of the writer neither reach the copy nor restart it, and the copy can be
                // taken in small steps with its pages flushed in between.
                conn.execute_batch("BEGIN")?;
                let copied = (|| -> Result<()> {
                    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
                    let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
                    let backup = rusqlite::backup::Backup::new(conn, &mut copy)?;
                    loop {
                        match backup.step(STEP_PAGES)? {
                            rusqlite::backup::StepResult::Done => return Ok(()),
                            rusqlite::backup::StepResult::More => {
                                trickle.wrote(STEP_PAGES as u64 * page_size.max(512) as u64)?
                            }
                            _ => std::thread::sleep(std::time::Duration::from_millis(10)),
                        }
                    }
                })();
                let ended = conn.execute_batch("COMMIT");
                copied?;
                Ok(ended?)
            })?;
            let seq = head_seq(&copy)?;
            copy.pragma_update(None, "journal_mode", "DELETE")?;
            drop(copy);
            trickle.flush_pending()?;
            trickle.into_inner().sync_all()?;
            Ok(seq)
        })
        .await
    }

    async fn scan(&self, after_key: RecordKey, limit: usize) -> Result<Vec<Record>> {
        let inner = self.inner.clone();
        blocking(move || {
            inner.read(|conn| {
                let sql = format!("SELECT {RECORD_COLUMNS} FROM records WHERE key > ?1 ORDER BY key LIMIT ?2");
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params![after_key as i64, limit as i64], |r| record_from_row(r, 0))?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await
    }

    async fn set_vectors(&self, updates: Vec<(RecordKey, Option<Vec<f32>>)>) -> Result<()> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut conn = inner.writer.lock();
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached("UPDATE records SET vector = ?2 WHERE key = ?1")?;
                for (key, vector) in &updates {
                    stmt.execute(params![*key as i64, vector.as_deref().map(vector_to_blob)])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn prune_changes(&self, upto: Seq) -> Result<u64> {
        let inner = self.inner.clone();
        blocking(move || {
            let conn = inner.writer.lock();
            Ok(conn.execute("DELETE FROM changes WHERE seq <= ?1", [upto as i64])? as u64)
        })
        .await
    }

    async fn acquire_lease(&self, name: &str, owner: &str, ttl: std::time::Duration) -> Result<Option<u64>> {
        let inner = self.inner.clone();
        let (name, owner) = (name.to_string(), owner.to_string());
        blocking(move || {
            let conn = inner.writer.lock();
            let now = Utc::now().timestamp_millis();
            let token: Option<i64> = conn
                .query_row(
                    "INSERT INTO leases (name, owner, until_ms, token) VALUES (?1, ?2, ?3 + ?4, 1)
                     ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until_ms = excluded.until_ms,
                        token = CASE WHEN leases.owner = excluded.owner THEN leases.token ELSE leases.token + 1 END
                     WHERE leases.owner = excluded.owner OR leases.until_ms < ?3
                     RETURNING token",
                    params![name, owner, now, ttl.as_millis() as i64],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(token.map(|t| t as u64))
        })
        .await
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<()> {
        let inner = self.inner.clone();
        let (name, owner) = (name.to_string(), owner.to_string());
        blocking(move || {
            let conn = inner.writer.lock();
            conn.execute("UPDATE leases SET until_ms = 0 WHERE name = ?1 AND owner = ?2", params![name, owner])?;
            Ok(())
        })
        .await
    }

    async fn lease_holder(&self, name: &str) -> Result<Option<String>> {
        let inner = self.inner.clone();
        let name = name.to_string();
        blocking(move || {
            let conn = inner.writer.lock();
            let now = Utc::now().timestamp_millis();
            Ok(conn
                .query_row("SELECT owner FROM leases WHERE name = ?1 AND until_ms >= ?2", params![name, now], |r| {
                    r.get(0)
                })
                .optional()?)
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats> {
        let inner = self.inner.clone();
        blocking(move || {
            let items =
                inner.read(|conn| Ok(conn.query_row("SELECT count(*) FROM records", [], |r| r.get::<_, i64>(0))?))?;
            Ok(StoreStats { items: items as u64, bytes: dir_size(&inner.dir) })
        })
        .await
    }

    async fn import(&self, records: Vec<Record>) -> Result<Seq> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut conn = inner.writer.lock();
            let tx = conn.transaction()?;
            let now = now_micros();
            let mut seq = None;
            for r in &records {
                let displaced: Option<i64> = tx
                    .query_row(
                        "DELETE FROM records WHERE tenant = ?1 AND id = ?2 AND key <> ?3 RETURNING key",
                        params![r.tenant.as_str(), r.id, r.key as i64],
                        |row| row.get(0),
                    )
                    .optional()?;
                if let Some(key) = displaced {
                    log_change(&tx, &r.tenant, key as u64, &r.id, ChangeOp::Delete, now)?;
                }
                let tags = serde_json::to_string(&r.tags).map_err(|e| Error::internal("encode tags", e))?;
                let metadata = serde_json::to_string(&r.metadata).map_err(|e| Error::internal("encode metadata", e))?;
                let graph = r
                    .graph
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(|e| Error::internal("encode graph", e))?;
                tx.execute(
                    "INSERT INTO records (key, tenant, id, kind, title, body, tags, metadata, vector, graph, version,
                                          created_at, updated_at, embed)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                     ON CONFLICT (key) DO UPDATE SET
                        tenant = excluded.tenant, id = excluded.id, kind = excluded.kind, title = excluded.title,
                        body = excluded.body, tags = excluded.tags, metadata = excluded.metadata,
                        vector = excluded.vector, graph = excluded.graph, version = excluded.version,
                        created_at = excluded.created_at, updated_at = excluded.updated_at, embed = excluded.embed",
                    params![
                        r.key as i64,
                        r.tenant.as_str(),
                        r.id,
                        r.kind,
                        r.title,
                        r.body,
                        tags,
                        metadata,
                        r.vector.as_deref().map(vector_to_blob),
                        graph,
                        r.version as i64,
                        r.created_at.timestamp_micros(),
                        r.updated_at.timestamp_micros(),
                        r.embed
                    ],
                )?;
                seq = Some(log_change(&tx, &r.tenant, r.key, &r.id, ChangeOp::Upsert, now)?);
            }
            let seq = match seq {
                Some(seq) => seq,
                None => head_seq(&tx)?,
            };
            tx.commit()?;
            Ok(seq)
        })
        .await
    }

    async fn import_removals(&self, keys: Vec<RecordKey>) -> Result<Seq> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut conn = inner.writer.lock();
            let tx = conn.transaction()?;
            let now = now_micros();
            for key in keys {
                let gone: Option<(String, String)> = tx
                    .query_row("DELETE FROM records WHERE key = ?1 RETURNING tenant, id", [key as i64], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?;
                if let Some((tenant, id)) = gone {
                    log_change(&tx, &TenantId::new(tenant)?, key, &id, ChangeOp::Delete, now)?;
                }
            }
            let seq = head_seq(&tx)?;
            tx.commit()?;
            Ok(seq)
        })
        .await
    }

    async fn migration_state(&self) -> Result<Option<serde_json::Value>> {
        let inner = self.inner.clone();
        blocking(move || {
            inner.read(|conn| {
                let text: Option<String> =
                    conn.query_row("SELECT state FROM migration WHERE id = 1", [], |r| r.get(0)).optional()?;
                text.map(|t| serde_json::from_str(&t).map_err(|e| Error::internal("read the migration state", e)))
                    .transpose()
            })
        })
        .await
    }

    async fn save_migration_state(&self, state: &serde_json::Value) -> Result<()> {
        let inner = self.inner.clone();
        let text = state.to_string();
        blocking(move || {
            inner.writer.lock().execute(
                "INSERT INTO migration (id, state, updated_at) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                params![text, now_micros()],
            )?;
            Ok(())
        })
        .await
    }
}
