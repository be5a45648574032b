//! The record store on Postgres: the system of record of a cluster, shared by every node.
//!
//! The tables mirror the embedded store's (`migrations/postgres/`). What differs is the change
//! log's order: several nodes write at once, and a sequence value taken at insert becomes visible
//! only at commit, so a reader ordered by it alone would step past a transaction that commits
//! late. Here an entry's position is its transaction's id (shifted left [`INDEX_BITS`]) plus its
//! index within the transaction, and readers take only entries of transactions older than every
//! one still running (`nexus_log_horizon()` in the schema: the snapshot's oldest running
//! transaction, leaving out other databases' ones): once a position has been read, nothing before
//! it can appear. The price: a writing transaction held open delays every reader until it ends. Each write also sends a `NOTIFY` so other nodes' indexers wake at once (they poll too,
//! since a notification sent while a listener reconnects is lost).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::{
    Change, ChangeOp, ExactHit, ExclusiveGuard, FacetTerms, GraphItem, ListFilter, NewRecord, Record, RecordFilter,
    RecordStore, Write, WriteReceipt, Written, field_name, index_terms,
};
use crate::config::RecordsConfig;
use crate::error::{Error, Result};
use crate::store::postgres::{Pg, PgSettings};
use crate::store::{RecordKey, Seq, StoreStats, TenantId};

const MIGRATIONS: &[&str] =
    &[include_str!("migrations/postgres/0001_init.sql"), include_str!("migrations/postgres/0002_migration.sql")];

/// Bits of a change's position that number the entries of one transaction.
pub const INDEX_BITS: u32 = 20;
/// The channel a write notifies on commit.
pub const CHANGES_CHANNEL: &str = "nexus_changes";
/// Attempts of a write that lost a deadlock or serialization race.
const WRITE_ATTEMPTS: usize = 5;

pub struct PostgresRecordStore {
    pg: Pg,
    events: tokio::sync::watch::Sender<u64>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PostgresRecordStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PostgresRecordStore {
    /// Connects (a wrong URL or password is refused here), migrates, and starts listening for
    /// other nodes' changes.
    pub async fn open(config: &RecordsConfig) -> Result<PostgresRecordStore> {
        let url = config.url.as_ref().ok_or_else(|| {
            Error::config(
                "invalid configuration: `store.records.url` is required when store.records.backend = \"postgres\"",
            )
        })?;
        let pg = Pg::connect(&PgSettings::from_records("store.records.url", url, config)).await?;
        pg.migrate("records", MIGRATIONS).await?;
        let (events, _) = tokio::sync::watch::channel(0u64);
        let listener = tokio::spawn(listen(pg.clone(), events.clone()));
        Ok(PostgresRecordStore { pg, events, listener })
    }

    /// The pool, for the stores that keep their tables in the same database (jobs, auth, pgvector).
    pub fn pg(&self) -> &Pg {
        &self.pg
    }
}

/// A session advisory lock on a pooled connection: released when dropped; a connection whose
/// unlock fails is closed rather than returned to the pool, which releases it too.
struct AdvisoryLock {
    client: Option<deadpool_postgres::Object>,
    key: i64,
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else { return };
        let key = self.key;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if client.execute("SELECT pg_advisory_unlock($1)", &[&key]).await.is_err() {
                    drop(deadpool_postgres::Object::take(client));
                }
            });
        }
    }
}

/// Forwards notifications of committed changes, reconnecting with backoff; every (re)connect
/// ticks too, since changes may have been missed while disconnected.
async fn listen(pg: Pg, events: tokio::sync::watch::Sender<u64>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match pg.listen(CHANGES_CHANNEL).await {
            Ok((_client, mut rx)) => {
                backoff = Duration::from_millis(200);
                events.send_modify(|n| *n += 1);
                while rx.recv().await.is_some() {
                    events.send_modify(|n| *n += 1);
                }
                tracing::warn!(target = %pg.target, "lost the postgres notification connection; reconnecting");
            }
            Err(e) => tracing::debug!(error = %e, "cannot listen for changes yet"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

fn from_micros(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}

fn vector_to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_to_vector(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

const RECORD_COLUMNS: &str = "r.key, r.tenant, r.id, r.kind, r.title, r.body, r.tags, r.metadata, r.vector, r.graph, r.version, \
     r.created_at, r.updated_at, r.embed";

fn record_from_row(row: &Row, offset: usize) -> Result<Record> {
    let decode = |what: &str, e: serde_json::Error| Error::store(&format!("postgres: decode {what}"), e);
    let tags: serde_json::Value = row.get(offset + 6);
    let graph: Option<serde_json::Value> = row.get(offset + 9);
    let vector: Option<Vec<u8>> = row.get(offset + 8);
    Ok(Record {
        key: row.get::<_, i64>(offset) as u64,
        tenant: TenantId::new(row.get::<_, String>(offset + 1))?,
        id: row.get(offset + 2),
        kind: row.get(offset + 3),
        title: row.get(offset + 4),
        body: row.get(offset + 5),
        tags: serde_json::from_value(tags).map_err(|e| decode("tags", e))?,
        metadata: row.get(offset + 7),
        vector: vector.map(|b| bytes_to_vector(&b)),
        graph: graph.map(serde_json::from_value::<GraphItem>).transpose().map_err(|e| decode("graph", e))?,
        version: row.get::<_, i64>(offset + 10) as u64,
        created_at: from_micros(row.get(offset + 11)),
        updated_at: from_micros(row.get(offset + 12)),
        embed: row.get(offset + 13),
    })
}

/// Arguments of a dynamically built statement.
#[derive(Default)]
struct Args(Vec<Box<dyn ToSql + Sync + Send>>);

impl Args {
    /// Adds a value; returns its placeholder (`$n`).
    fn push(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.0.push(Box::new(value));
        format!("${}", self.0.len())
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)).collect()
    }
}

/// A WHERE clause selecting the tenant's records (`r`) that match `filter`. Indexed terms are
/// read from `record_facets`; every condition is also checked exactly.
fn filter_sql(tenant: &TenantId, filter: &RecordFilter, args: &mut Args) -> String {
    let t = args.push(tenant.as_str().to_string());
    let mut sql = vec![format!("r.tenant = {t}")];
    if !filter.kinds.is_empty() {
        sql.push(format!("r.kind = ANY({})", args.push(filter.kinds.clone())));
    }
    let terms = FacetTerms::of(filter).terms;
    if !terms.is_empty() {
        // Every indexed term, as one lookup: the keys carrying all of them.
        let n = terms.len() as i64;
        sql.push(format!(
            "r.key IN (SELECT key FROM record_facets WHERE tenant = {t} AND facet = ANY({}) \
             GROUP BY key HAVING count(*) = {})",
            args.push(terms),
            args.push(n)
        ));
    }
    for tag in &filter.tags {
        sql.push(format!("r.tags @> {}", args.push(serde_json::json!([tag]))));
    }
    for (key, value) in &filter.metadata {
        let field = args.push(field_name(key));
        sql.push(format!(
            "jsonb_typeof(r.metadata -> {field}) IN ('string', 'number', 'boolean') \
             AND r.metadata ->> {field} = {}",
            args.push(value.clone())
        ));
    }
    let date = "nexus_record_date(r.metadata, r.created_at)";
    if let Some(from) = filter.date_from {
        sql.push(format!("{date} >= {}", args.push(from.timestamp_micros())));
    }
    if let Some(to) = filter.date_to {
        sql.push(format!("{date} <= {}", args.push(to.timestamp_micros())));
    }
    if let Some(after) = filter.after_key {
        sql.push(format!("r.key > {}", args.push(after as i64)));
    }
    sql.join(" AND ")
}

/// Whether a failed write may simply be run again (it lost a race and was rolled back).
fn retryable(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
}

fn row_seq(txid: i64, index: usize) -> i64 {
    (txid << INDEX_BITS) | index as i64
}

impl PostgresRecordStore {
    async fn write_once(
        client: &mut deadpool_postgres::Object,
        tenant: &TenantId,
        writes: &[Write],
    ) -> std::result::Result<WriteReceipt, tokio_postgres::Error> {
        let tx = client.transaction().await?;
        let txid: i64 = tx.query_one("SELECT pg_current_xact_id()::text::bigint", &[]).await?.get(0);
        let now = now_micros();
        if let Some(upserts) = distinct_upserts(writes) {
            let written = upsert_batch(&tx, tenant, &upserts, txid, now).await?;
            tx.execute("SELECT pg_notify($1, '')", &[&CHANGES_CHANNEL]).await?;
            tx.commit().await?;
            let seq = written.last().map(|w| w.seq).unwrap_or(0);
            return Ok(WriteReceipt { seq, written });
        }
        let upsert = tx
            .prepare_cached(
                "INSERT INTO records AS r (tenant, id, kind, title, body, tags, metadata, vector, graph, version,
                                          created_at, updated_at, embed)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $10, $11)
                 ON CONFLICT (tenant, id) DO UPDATE SET
                    kind = excluded.kind, title = excluded.title, body = excluded.body, tags = excluded.tags,
                    metadata = excluded.metadata, vector = excluded.vector, graph = excluded.graph,
                    version = r.version + 1, updated_at = excluded.updated_at, embed = excluded.embed
                 RETURNING key, version",
            )
            .await?;
        let log = tx
            .prepare_cached(
                "INSERT INTO changes (seq, txid, tenant, record_key, id, op, at)
                 VALUES ($1, pg_current_xact_id(), $2, $3, $4, $5, $6)",
            )
            .await?;
        let clear_facets = tx.prepare_cached("DELETE FROM record_facets WHERE key = $1").await?;
        let add_facets = tx
            .prepare_cached("INSERT INTO record_facets (tenant, facet, key) SELECT $1, unnest($2::text[]), $3")
            .await?;
        let mut written = Vec::with_capacity(writes.len());
        for write in writes {
            let index = written.len();
            match write {
                Write::Upsert(r) => {
                    let tags = serde_json::json!(r.tags);
                    let graph = r.graph.as_ref().map(|g| serde_json::to_value(g).unwrap_or_default());
                    let vector = r.vector.as_deref().map(vector_to_bytes);
                    let row = tx
                        .query_one(
                            &upsert,
                            &[
                                &tenant.as_str(),
                                &r.id,
                                &r.kind,
                                &r.title,
                                &r.body,
                                &tags,
                                &r.metadata,
                                &vector,
                                &graph,
                                &now,
                                &r.embed,
                            ],
                        )
                        .await?;
                    let (key, version): (i64, i64) = (row.get(0), row.get(1));
                    tx.execute(&clear_facets, &[&key]).await?;
                    let terms = index_terms(&r.kind, &r.tags, &r.metadata);
                    tx.execute(&add_facets, &[&tenant.as_str(), &terms, &key]).await?;
                    let seq = row_seq(txid, index);
                    tx.execute(&log, &[&seq, &tenant.as_str(), &key, &r.id, &"upsert", &now]).await?;
                    written.push(Written {
                        id: r.id.clone(),
                        key: key as u64,
                        op: ChangeOp::Upsert,
                        version: version as u64,
                        seq: seq as u64,
                    });
                }
                Write::Delete { id } => {
                    let gone = tx
                        .query_opt(
                            "DELETE FROM records WHERE tenant = $1 AND id = $2 RETURNING key, version",
                            &[&tenant.as_str(), id],
                        )
                        .await?;
                    if let Some(row) = gone {
                        let (key, version): (i64, i64) = (row.get(0), row.get(1));
                        tx.execute(&clear_facets, &[&key]).await?;
                        let seq = row_seq(txid, index);
                        tx.execute(&log, &[&seq, &tenant.as_str(), &key, id, &"delete", &now]).await?;
                        written.push(Written {
                            id: id.clone(),
                            key: key as u64,
                            op: ChangeOp::Delete,
                            version: version as u64,
                            seq: seq as u64,
                        });
                    }
                }
            }
        }
        if !written.is_empty() {
            tx.execute("SELECT pg_notify($1, '')", &[&CHANGES_CHANNEL]).await?;
        }
        tx.commit().await?;
        let seq = match written.last() {
            Some(w) => w.seq,
            None => 0,
        };
        Ok(WriteReceipt { seq, written })
    }
}

/// The batch's records when it holds only upserts of distinct ids (two or more): those are
/// written with one statement per table instead of one per record.
fn distinct_upserts(writes: &[Write]) -> Option<Vec<&NewRecord>> {
    if writes.len() < 2 {
        return None;
    }
    let mut seen = std::collections::HashSet::with_capacity(writes.len());
    writes
        .iter()
        .map(|w| match w {
            Write::Upsert(r) if seen.insert(r.id.as_str()) => Some(r),
            _ => None,
        })
        .collect()
}

/// Upserts `records` (distinct ids) with their filter terms and change-log entries, four
/// statements in all; entry `i` of the log is `records[i]`.
async fn upsert_batch(
    tx: &deadpool_postgres::Transaction<'_>,
    tenant: &TenantId,
    records: &[&NewRecord],
    txid: i64,
    now: i64,
) -> std::result::Result<Vec<Written>, tokio_postgres::Error> {
    let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
    let titles: Vec<Option<&str>> = records.iter().map(|r| r.title.as_deref()).collect();
    let bodies: Vec<Option<&str>> = records.iter().map(|r| r.body.as_deref()).collect();
    let tags: Vec<serde_json::Value> = records.iter().map(|r| serde_json::json!(r.tags)).collect();
    let metadata: Vec<&serde_json::Value> = records.iter().map(|r| &r.metadata).collect();
    let vectors: Vec<Option<Vec<u8>>> = records.iter().map(|r| r.vector.as_deref().map(vector_to_bytes)).collect();
    let graphs: Vec<Option<serde_json::Value>> =
        records.iter().map(|r| r.graph.as_ref().map(|g| serde_json::to_value(g).unwrap_or_default())).collect();
    let embeds: Vec<bool> = records.iter().map(|r| r.embed).collect();
    // Rows are locked in id order, so concurrent batches over the same ids do not deadlock.
    let rows = tx
        .query(
            "INSERT INTO records AS r (tenant, id, kind, title, body, tags, metadata, vector, graph, version,
                                      created_at, updated_at, embed)
             SELECT $1, u.id, u.kind, u.title, u.body, u.tags, u.metadata, u.vector, u.graph, 1, $11, $11, u.embed
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[], $8::bytea[],
                         $9::jsonb[], $10::bool[]) AS u(id, kind, title, body, tags, metadata, vector, graph, embed)
             ORDER BY u.id
             ON CONFLICT (tenant, id) DO UPDATE SET
                kind = excluded.kind, title = excluded.title, body = excluded.body, tags = excluded.tags,
                metadata = excluded.metadata, vector = excluded.vector, graph = excluded.graph,
                version = r.version + 1, updated_at = excluded.updated_at, embed = excluded.embed
             RETURNING id, key, version",
            &[&tenant.as_str(), &ids, &kinds, &titles, &bodies, &tags, &metadata, &vectors, &graphs, &embeds, &now],
        )
        .await?;
    let stored: std::collections::HashMap<String, (i64, i64)> =
        rows.iter().map(|row| (row.get::<_, String>(0), (row.get(1), row.get(2)))).collect();
    let keys: Vec<i64> = ids.iter().map(|id| stored[*id].0).collect();
    tx.execute("DELETE FROM record_facets WHERE key = ANY($1)", &[&keys]).await?;
    let (mut term_keys, mut terms) = (Vec::new(), Vec::new());
    for (record, key) in records.iter().zip(&keys) {
        for term in index_terms(&record.kind, &record.tags, &record.metadata) {
            term_keys.push(*key);
            terms.push(term);
        }
    }
    tx.execute(
        "INSERT INTO record_facets (tenant, facet, key) SELECT $1, t, k FROM unnest($2::text[], $3::bigint[]) AS u(t, k)",
        &[&tenant.as_str(), &terms, &term_keys],
    )
    .await?;
    let seqs: Vec<i64> = (0..records.len()).map(|i| row_seq(txid, i)).collect();
    tx.execute(
        "INSERT INTO changes (seq, txid, tenant, record_key, id, op, at)
         SELECT s, pg_current_xact_id(), $1, k, i, 'upsert', $5 FROM unnest($2::bigint[], $3::bigint[], $4::text[]) AS u(s, k, i)",
        &[&tenant.as_str(), &seqs, &keys, &ids, &now],
    )
    .await?;
    Ok(ids
        .iter()
        .zip(seqs)
        .map(|(id, seq)| {
            let (key, version) = stored[*id];
            Written {
                id: id.to_string(),
                key: key as u64,
                op: ChangeOp::Upsert,
                version: version as u64,
                seq: seq as u64,
            }
        })
        .collect())
}

/// Appends a migration's change-log entries (`(tenant, key, id, op)`, in order) to the writing
/// transaction `txid` and wakes the nodes; returns the last entry's position.
async fn log_imported(
    tx: &deadpool_postgres::Transaction<'_>,
    txid: i64,
    entries: &[(String, i64, String, &str)],
) -> std::result::Result<Seq, tokio_postgres::Error> {
    let seqs: Vec<i64> = (0..entries.len()).map(|i| row_seq(txid, i)).collect();
    let tenants: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    let keys: Vec<i64> = entries.iter().map(|e| e.1).collect();
    let ids: Vec<&str> = entries.iter().map(|e| e.2.as_str()).collect();
    let ops: Vec<&str> = entries.iter().map(|e| e.3).collect();
    tx.execute(
        "INSERT INTO changes (seq, txid, tenant, record_key, id, op, at)
         SELECT s, pg_current_xact_id(), t, k, i, o, $6
         FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[]) AS u(s, t, k, i, o)",
        &[&seqs, &tenants, &keys, &ids, &ops, &now_micros()],
    )
    .await?;
    tx.execute("SELECT pg_notify($1, '')", &[&CHANGES_CHANNEL]).await?;
    Ok(seqs.last().map_or(0, |s| *s as u64))
}

const HEAD_SQL: &str = "SELECT seq FROM changes WHERE txid < (SELECT nexus_log_horizon())
                        ORDER BY seq DESC LIMIT 1";

#[async_trait]
impl RecordStore for PostgresRecordStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn write(&self, tenant: &TenantId, writes: Vec<Write>) -> Result<WriteReceipt> {
        if writes.len() >= 1 << INDEX_BITS {
            return Err(Error::invalid(format!(
                "a write batch holds at most {} writes; split it",
                (1 << INDEX_BITS) - 1
            )));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut client = self.pg.client().await?;
            match Self::write_once(&mut client, tenant, &writes).await {
                Ok(mut receipt) => {
                    if receipt.written.is_empty() {
                        receipt.seq = self.head_seq().await?;
                    }
                    return Ok(receipt);
                }
                Err(e) if retryable(&e) && attempt < WRITE_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(10 * attempt as u64)).await;
                }
                Err(e) => return Err(self.pg.error("write", e)),
            }
        }
    }

    async fn get(&self, tenant: &TenantId, id: &str) -> Result<Option<Record>> {
        let client = self.pg.client().await?;
        let sql = format!("SELECT {RECORD_COLUMNS} FROM records r WHERE r.tenant = $1 AND r.id = $2");
        let row = client.query_opt(&sql, &[&tenant.as_str(), &id]).await.map_err(|e| self.pg.error("get", e))?;
        row.map(|r| record_from_row(&r, 0)).transpose()
    }

    async fn get_many(&self, tenant: &TenantId, ids: &[String]) -> Result<Vec<Record>> {
        let client = self.pg.client().await?;
        // In the order asked for, skipping ids that are gone or another tenant's.
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM unnest($2::text[]) WITH ORDINALITY AS k(id, n)
             JOIN records r ON r.tenant = $1 AND r.id = k.id ORDER BY k.n"
        );
        let rows = client.query(&sql, &[&tenant.as_str(), &ids]).await.map_err(|e| self.pg.error("get", e))?;
        rows.iter().map(|r| record_from_row(r, 0)).collect()
    }

    async fn get_by_keys(&self, tenant: &TenantId, keys: &[RecordKey]) -> Result<Vec<Record>> {
        let client = self.pg.client().await?;
        let keys: Vec<i64> = keys.iter().map(|k| *k as i64).collect();
        // In the order asked for, skipping keys that are gone or another tenant's.
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM unnest($2::bigint[]) WITH ORDINALITY AS k(key, n)
             JOIN records r ON r.key = k.key WHERE r.tenant = $1 ORDER BY k.n"
        );
        let rows = client.query(&sql, &[&tenant.as_str(), &keys]).await.map_err(|e| self.pg.error("get", e))?;
        rows.iter().map(|r| record_from_row(r, 0)).collect()
    }

    async fn list(&self, tenant: &TenantId, filter: &ListFilter) -> Result<Vec<Record>> {
        let client = self.pg.client().await?;
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM records r
             WHERE r.tenant = $1 AND ($2::text IS NULL OR r.kind = $2) AND r.key > $3
             ORDER BY r.key LIMIT $4"
        );
        let rows = client
            .query(
                &sql,
                &[
                    &tenant.as_str(),
                    &filter.kind,
                    &(filter.after_key.unwrap_or(0) as i64),
                    &(filter.limit.min(i64::MAX as usize) as i64),
                ],
            )
            .await
            .map_err(|e| self.pg.error("list", e))?;
        rows.iter().map(|r| record_from_row(r, 0)).collect()
    }

    async fn count(&self, tenant: &TenantId) -> Result<u64> {
        let client = self.pg.client().await?;
        let row = client
            .query_one("SELECT count(*) FROM records WHERE tenant = $1", &[&tenant.as_str()])
            .await
            .map_err(|e| self.pg.error("count", e))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn nearest_exact(
        &self,
        tenant: &TenantId,
        filter: &RecordFilter,
        vector: &[f32],
        k: usize,
    ) -> Result<Vec<ExactHit>> {
        let client = self.pg.client().await?;
        let mut args = Args::default();
        let where_sql = filter_sql(tenant, filter, &mut args);
        let bytes = args.push((vector.len() * 4) as i32);
        let sql = format!(
            "SELECT r.key, r.id, r.vector FROM records r
             WHERE {where_sql} AND r.vector IS NOT NULL AND length(r.vector) = {bytes}"
        );
        let rows = client.query(&sql, &args.refs()).await.map_err(|e| self.pg.error("nearest", e))?;
        let mut hits: Vec<ExactHit> = rows
            .iter()
            .map(|row| {
                let v = bytes_to_vector(row.get::<_, &[u8]>(2));
                ExactHit {
                    key: row.get::<_, i64>(0) as u64,
                    id: row.get(1),
                    distance: 1.0 - crate::store::vectors::cosine(vector, &v),
                }
            })
            .collect();
        hits.sort_by(|a, b| a.distance.total_cmp(&b.distance).then(a.key.cmp(&b.key)));
        hits.truncate(k);
        Ok(hits)
    }

    async fn keys_matching(&self, tenant: &TenantId, filter: &RecordFilter, limit: usize) -> Result<Vec<RecordKey>> {
        let client = self.pg.client().await?;
        let mut args = Args::default();
        let where_sql = filter_sql(tenant, filter, &mut args);
        let limit = args.push(limit.min(i64::MAX as usize) as i64);
        let sql = format!("SELECT r.key FROM records r WHERE {where_sql} ORDER BY r.key LIMIT {limit}");
        let rows = client.query(&sql, &args.refs()).await.map_err(|e| self.pg.error("filter", e))?;
        Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
    }

    async fn count_by(&self, tenant: &TenantId, filter: &RecordFilter, field: &str) -> Result<Vec<(String, u64)>> {
        let client = self.pg.client().await?;
        let mut args = Args::default();
        let field = args.push(field_name(field));
        let where_sql = filter_sql(tenant, filter, &mut args);
        let sql = format!(
            "SELECT r.metadata ->> {field} AS value, count(*) FROM records r
             WHERE {where_sql} AND r.metadata ->> {field} IS NOT NULL GROUP BY value ORDER BY value"
        );
        let rows = client.query(&sql, &args.refs()).await.map_err(|e| self.pg.error("count", e))?;
        Ok(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64)).collect())
    }

    async fn changes_since(&self, after: Seq, limit: usize) -> Result<Vec<Change>> {
        let client = self.pg.client().await?;
        let sql = format!(
            "SELECT c.seq, c.tenant, c.record_key, c.id, c.op, {RECORD_COLUMNS}
             FROM changes c LEFT JOIN records r ON r.key = c.record_key
             WHERE c.seq > $1 AND c.txid < (SELECT nexus_log_horizon())
             ORDER BY c.seq LIMIT $2"
        );
        let rows = client
            .query(&sql, &[&(after as i64), &(limit.min(i64::MAX as usize) as i64)])
            .await
            .map_err(|e| self.pg.error("read changes", e))?;
        rows.iter()
            .map(|row| {
                let present: Option<i64> = row.get(5);
                let op: &str = row.get(4);
                Ok(Change {
                    seq: row.get::<_, i64>(0) as u64,
                    tenant: TenantId::new(row.get::<_, String>(1))?,
                    key: row.get::<_, i64>(2) as u64,
                    id: row.get(3),
                    op: if op == "delete" { ChangeOp::Delete } else { ChangeOp::Upsert },
                    record: present.map(|_| record_from_row(row, 5)).transpose()?,
                })
            })
            .collect()
    }

    async fn head_seq(&self) -> Result<Seq> {
        let client = self.pg.client().await?;
        let row = client.query_opt(HEAD_SQL, &[]).await.map_err(|e| self.pg.error("read changes", e))?;
        Ok(row.map(|r| r.get::<_, i64>(0) as u64).unwrap_or(0))
    }

    async fn scan(&self, after_key: RecordKey, limit: usize) -> Result<Vec<Record>> {
        let client = self.pg.client().await?;
        let sql = format!("SELECT {RECORD_COLUMNS} FROM records r WHERE r.key > $1 ORDER BY r.key LIMIT $2");
        let rows = client
            .query(&sql, &[&(after_key as i64), &(limit.min(i64::MAX as usize) as i64)])
            .await
            .map_err(|e| self.pg.error("scan", e))?;
        rows.iter().map(|r| record_from_row(r, 0)).collect()
    }

    async fn set_vectors(&self, updates: Vec<(RecordKey, Option<Vec<f32>>)>) -> Result<()> {
        let mut client = self.pg.client().await?;
        let err = |e| self.pg.error("set vectors", e);
        let tx = client.transaction().await.map_err(err)?;
        let stmt = tx.prepare("UPDATE records SET vector = $2 WHERE key = $1").await.map_err(err)?;
        for (key, vector) in &updates {
            tx.execute(&stmt, &[&(*key as i64), &vector.as_deref().map(vector_to_bytes)]).await.map_err(err)?;
        }
        tx.commit().await.map_err(err)
    }

    async fn prune_changes(&self, upto: Seq) -> Result<u64> {
        let client = self.pg.client().await?;
        // The newest readable entry stays: it marks the head.
        let n = client
            .execute(
                &format!(
                    "DELETE FROM changes WHERE seq <= $1 AND txid < (SELECT nexus_log_horizon())
                     AND seq < coalesce(({HEAD_SQL}), 0)"
                ),
                &[&(upto as i64)],
            )
            .await
            .map_err(|e| self.pg.error("prune changes", e))?;
        Ok(n)
    }

    fn shared(&self) -> bool {
        true
    }

    async fn acquire_lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<Option<u64>> {
        let client = self.pg.client().await?;
        // The server's clock decides, so nodes with skewed clocks agree on expiry.
        let row = client
            .query_opt(
                "WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms)
                 INSERT INTO leases AS l (name, owner, until_ms, token)
                 SELECT $1, $2, now.ms + $3, 1 FROM now
                 ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until_ms = excluded.until_ms,
                    token = CASE WHEN l.owner = excluded.owner THEN l.token ELSE l.token + 1 END
                 WHERE l.owner = excluded.owner OR l.until_ms < (SELECT ms FROM now)
                 RETURNING token",
                &[&name, &owner, &(ttl.as_millis() as i64)],
            )
            .await
            .map_err(|e| self.pg.error("lease", e))?;
        Ok(row.map(|r| r.get::<_, i64>(0) as u64))
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<()> {
        let client = self.pg.client().await?;
        client
            .execute("UPDATE leases SET until_ms = 0 WHERE name = $1 AND owner = $2", &[&name, &owner])
            .await
            .map_err(|e| self.pg.error("lease", e))?;
        Ok(())
    }

    async fn lease_holder(&self, name: &str) -> Result<Option<String>> {
        let client = self.pg.client().await?;
        let row = client
            .query_opt(
                "SELECT owner FROM leases
                 WHERE name = $1 AND until_ms >= (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                &[&name],
            )
            .await
            .map_err(|e| self.pg.error("lease", e))?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn exclusive(&self, name: &str) -> Result<Option<ExclusiveGuard>> {
        let client = self.pg.client().await?;
        let key: i64 = client
            .query_one("SELECT hashtextextended($1, 7426)", &[&name])
            .await
            .map_err(|e| self.pg.error("lock", e))?
            .get(0);
        client.execute("SELECT pg_advisory_lock($1)", &[&key]).await.map_err(|e| self.pg.error("lock", e))?;
        Ok(Some(Box::new(AdvisoryLock { client: Some(client), key })))
    }

    fn change_events(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.events.subscribe())
    }

    async fn stats(&self) -> Result<StoreStats> {
        let client = self.pg.client().await?;
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM records), pg_total_relation_size('records') + \
                 pg_total_relation_size('changes') + pg_total_relation_size('record_facets')",
                &[],
            )
            .await
            .map_err(|e| self.pg.error("stats", e))?;
        Ok(StoreStats { items: row.get::<_, i64>(0) as u64, bytes: row.get::<_, i64>(1) as u64 })
    }

    async fn import(&self, records: Vec<Record>) -> Result<Seq> {
        if records.is_empty() {
            return self.head_seq().await;
        }
        let mut client = self.pg.client().await?;
        let err = |e| self.pg.error("import records", e);
        let tx = client.transaction().await.map_err(err)?;
        let txid: i64 = tx.query_one("SELECT pg_current_xact_id()::text::bigint", &[]).await.map_err(err)?.get(0);
        let keys: Vec<i64> = records.iter().map(|r| r.key as i64).collect();
        let tenants: Vec<&str> = records.iter().map(|r| r.tenant.as_str()).collect();
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        // The same (tenant, id) under another key: the source re-created that id.
        let displaced = tx
            .query(
                "DELETE FROM records r USING unnest($1::text[], $2::text[], $3::bigint[]) AS u(tenant, id, key)
                 WHERE r.tenant = u.tenant AND r.id = u.id AND r.key <> u.key
                 RETURNING r.key, r.tenant, r.id",
                &[&tenants, &ids, &keys],
            )
            .await
            .map_err(err)?;
        let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
        let titles: Vec<Option<&str>> = records.iter().map(|r| r.title.as_deref()).collect();
        let bodies: Vec<Option<&str>> = records.iter().map(|r| r.body.as_deref()).collect();
        let tags: Vec<serde_json::Value> = records.iter().map(|r| serde_json::json!(r.tags)).collect();
        let metadata: Vec<&serde_json::Value> = records.iter().map(|r| &r.metadata).collect();
        let vectors: Vec<Option<Vec<u8>>> = records.iter().map(|r| r.vector.as_deref().map(vector_to_bytes)).collect();
        let graphs: Vec<Option<serde_json::Value>> =
            records.iter().map(|r| r.graph.as_ref().map(|g| serde_json::to_value(g).unwrap_or_default())).collect();
        let versions: Vec<i64> = records.iter().map(|r| r.version as i64).collect();
        let created: Vec<i64> = records.iter().map(|r| r.created_at.timestamp_micros()).collect();
        let updated: Vec<i64> = records.iter().map(|r| r.updated_at.timestamp_micros()).collect();
        let embeds: Vec<bool> = records.iter().map(|r| r.embed).collect();
        tx.execute(
            "INSERT INTO records AS r (key, tenant, id, kind, title, body, tags, metadata, vector, graph, version,
                                      created_at, updated_at, embed)
             OVERRIDING SYSTEM VALUE
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                  $7::jsonb[], $8::jsonb[], $9::bytea[], $10::jsonb[], $11::bigint[], $12::bigint[],
                                  $13::bigint[], $14::bool[])
             ON CONFLICT (key) DO UPDATE SET
                tenant = excluded.tenant, id = excluded.id, kind = excluded.kind, title = excluded.title,
                body = excluded.body, tags = excluded.tags, metadata = excluded.metadata, vector = excluded.vector,
                graph = excluded.graph, version = excluded.version, created_at = excluded.created_at,
                updated_at = excluded.updated_at, embed = excluded.embed",
            &[
                &keys, &tenants, &ids, &kinds, &titles, &bodies, &tags, &metadata, &vectors, &graphs, &versions,
                &created, &updated, &embeds,
            ],
        )
        .await
        .map_err(err)?;
        let displaced_keys: Vec<i64> = displaced.iter().map(|row| row.get(0)).collect();
        let all_keys: Vec<i64> = keys.iter().chain(&displaced_keys).copied().collect();
        tx.execute("DELETE FROM record_facets WHERE key = ANY($1)", &[&all_keys]).await.map_err(err)?;
        let (mut term_tenants, mut term_keys, mut terms) = (Vec::new(), Vec::new(), Vec::new());
        for r in &records {
            for term in index_terms(&r.kind, &r.tags, &r.metadata) {
                term_tenants.push(r.tenant.as_str());
                term_keys.push(r.key as i64);
                terms.push(term);
            }
        }
        tx.execute(
            "INSERT INTO record_facets (tenant, facet, key)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])",
            &[&term_tenants, &terms, &term_keys],
        )
        .await
        .map_err(err)?;
        // The change log: the removals first, then one upsert per record.
        let mut entries: Vec<(String, i64, String, &str)> =
            displaced.iter().map(|row| (row.get(1), row.get(0), row.get(2), "delete")).collect();
        entries.extend(records.iter().map(|r| (r.tenant.as_str().to_string(), r.key as i64, r.id.clone(), "upsert")));
        let last = log_imported(&tx, txid, &entries).await.map_err(err)?;
        // Keys handed out from now on come after every imported one.
        tx.execute(
            "SELECT setval(pg_get_serial_sequence('records', 'key'),
                           greatest((SELECT max(key) FROM records), (SELECT last_value FROM records_key_seq)))",
            &[],
        )
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(last)
    }

    async fn import_removals(&self, keys: Vec<RecordKey>) -> Result<Seq> {
        if keys.is_empty() {
            return self.head_seq().await;
        }
        let mut client = self.pg.client().await?;
        let err = |e| self.pg.error("import removals", e);
        let tx = client.transaction().await.map_err(err)?;
        let txid: i64 = tx.query_one("SELECT pg_current_xact_id()::text::bigint", &[]).await.map_err(err)?.get(0);
        let keys: Vec<i64> = keys.iter().map(|k| *k as i64).collect();
        let gone = tx
            .query("DELETE FROM records WHERE key = ANY($1) RETURNING key, tenant, id", &[&keys])
            .await
            .map_err(err)?;
        if gone.is_empty() {
            drop(tx);
            return self.head_seq().await;
        }
        let gone_keys: Vec<i64> = gone.iter().map(|r| r.get(0)).collect();
        tx.execute("DELETE FROM record_facets WHERE key = ANY($1)", &[&gone_keys]).await.map_err(err)?;
        let entries: Vec<(String, i64, String, &str)> =
            gone.iter().map(|row| (row.get(1), row.get(0), row.get(2), "delete")).collect();
        let last = log_imported(&tx, txid, &entries).await.map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(last)
    }

    async fn migration_state(&self) -> Result<Option<serde_json::Value>> {
        let client = self.pg.client().await?;
        let row = client
            .query_opt("SELECT state FROM migration WHERE id = 1", &[])
            .await
            .map_err(|e| self.pg.error("read the migration state", e))?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn save_migration_state(&self, state: &serde_json::Value) -> Result<()> {
        let client = self.pg.client().await?;
        client
            .execute(
                "INSERT INTO migration (id, state, updated_at) VALUES (1, $1, $2)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                &[state, &now_micros()],
            )
            .await
            .map_err(|e| self.pg.error("save the migration state", e))?;
        Ok(())
    }
}
