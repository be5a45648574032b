//! The vector store on pgvector: points in a Postgres table with an HNSW index (cosine), shared by
//! every node of a cluster.
//!
//! Contract, beyond the trait's:
//! - [`PgvectorStore::open`] needs Postgres 16 or newer and pgvector 0.8 or newer (iterative index
//!   scans). It creates the `vector` extension when absent and the role may; otherwise it fails
//!   with one line saying what to run. Quantization `f32` keeps `vector(N)`, `f16` `halfvec(N)`;
//!   `i8` has no pgvector type and is refused.
//! - The embedding columns and the HNSW index are created with the configured dimensions on the
//!   first open; opening with other dimensions or quantization is refused until
//!   `nexus reindex --store vectors` has discarded them ([`PgvectorStore::discard`]).
//! - Upserts and deletes go to this handle's pending rows (its session); a commit moves them into
//!   the committed points and records the change-log position in one transaction, so the points
//!   every node reads are always those of a committed position. This handle's reads see its own
//!   pending changes; other handles read committed points only. Pending rows of a handle that
//!   went away uncommitted are dropped by the next commit.
//! - Fencing: every writing transaction (upsert, delete, commit, clear) first locks the cursor
//!   row; when a newer fencing token than this handle's has written, it fails with `conflict`,
//!   else it records its own token and writes. A node that lost its lease can neither write
//!   points nor move the position.
//! - Search: a tenant of at most `exact_below` vectors is searched by scoring every one of them,
//!   as the embedded store does, so that every twin holding the same vectors answers alike. A
//!   larger one walks the HNSW index with iterative scans (relaxed order, re-sorted here) filtered
//!   by tenant and kinds in SQL. A key predicate cannot run in SQL: rounds fetch k*4, k*16, ... rows
//!   and filter them here until k pass or the tenant's rows run out. When the index gives up
//!   before a tenant's rows run out (a small tenant in a large table), up to
//!   [`EXACT_SCAN_MAX`] rows are scored exactly instead.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use pgvector::Vector;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::{KeyPredicate, VectorHit, VectorPoint, VectorQuery, VectorStore, validate_vector};
use crate::config::{Quantization, VectorsConfig};
use crate::error::{Error, ErrorCode, Result};
use crate::store::postgres::Pg;
use crate::store::{RecordKey, Seq, StoreStats, TenantId};

const MIGRATIONS: &[&str] = &[include_str!("migrations/pgvector/0001_init.sql")];

const SETTING: &str = "store.vectors";

/// Serialises creating (and discarding) the embedding columns across nodes.
const SETUP_LOCK: i64 = 7_426_002;

/// Postgres 16 (`server_version_num`).
const MIN_SERVER_VERSION: i32 = 160_000;

/// pgvector 0.8: iterative index scans.
const MIN_PGVECTOR: (u32, u32) = (0, 8);

/// Rows sent per statement.
const WRITE_BATCH: usize = 1000;

/// Pending rows moved per statement at a commit (each statement stays within statement_timeout).
const MOVE_BATCH: i64 = 5000;

/// At most this many of a tenant's rows are scored exactly when the index gives up early.
pub const EXACT_SCAN_MAX: i64 = 50_000;

/// pgvector's bounds: `hnsw.ef_search`, `m`, `ef_construction`, indexed dimensions.
const EF_SEARCH_MAX: usize = 1000;
const M_RANGE: (usize, usize) = (2, 100);
const EF_CONSTRUCTION_MAX: usize = 1000;

/// Moves up to `$2` of session `$1`'s pending rows into the committed points; answers how many.
const MOVE_PENDING: &str = "
WITH moved AS (
    DELETE FROM vector_pending
    WHERE session = $1 AND key IN (SELECT key FROM vector_pending WHERE session = $1 ORDER BY key LIMIT $2)
    RETURNING key, tenant, kind, embedding
), removed AS (
    DELETE FROM vector_points WHERE key IN (SELECT key FROM moved WHERE embedding IS NULL)
), written AS (
    INSERT INTO vector_points (key, tenant, kind, embedding)
    SELECT key, tenant, kind, embedding FROM moved WHERE embedding IS NOT NULL
    ON CONFLICT (key) DO UPDATE SET tenant = excluded.tenant, kind = excluded.kind, embedding = excluded.embedding
)
SELECT count(*) FROM moved";

/// Keys this handle sees: committed ones it has no pending change for, and its pending upserts.
const VISIBLE_KEYS: &str = "
SELECT key FROM vector_points p
WHERE NOT EXISTS (SELECT 1 FROM vector_pending x WHERE x.session = $1 AND x.key = p.key)
UNION ALL
SELECT key FROM vector_pending WHERE session = $1 AND embedding IS NOT NULL";

pub struct PgvectorStore {
    pg: Pg,
    config: VectorsConfig,
    /// The embedding columns' type: `vector` or `halfvec`.
    column: &'static str,
    /// Casts a `vector` parameter to that type.
    cast: &'static str,
    /// Marks this handle's pending rows.
    session: i64,
    fence: AtomicU64,
    /// Whether this handle may have pending rows (set before it writes, cleared when it commits):
    /// reads look for them only then.
    may_have_pending: AtomicBool,
    /// One write of this handle at a time.
    writing: tokio::sync::Mutex<()>,
}

/// The embedding columns' type for `config`, after checking what pgvector's HNSW index takes.
fn column_type(config: &VectorsConfig) -> Result<&'static str> {
    let (column, max_dimensions) = match config.quantization {
        Quantization::F32 => ("vector", 2000),
        Quantization::F16 => ("halfvec", 4000),
        Quantization::I8 => {
            return Err(Error::config(format!(
                "invalid configuration: `{SETTING}.quantization = \"i8\"` is not available with pgvector; \
                 use \"f32\" or \"f16\""
            )));
        }
    };
    if config.dimensions == 0 || config.dimensions > max_dimensions {
        return Err(Error::config(format!(
            "invalid configuration: `{SETTING}.dimensions` is {}, but pgvector indexes 1 to {max_dimensions} \
             dimensions as {}; use quantization \"f16\" for up to 4000",
            config.dimensions,
            quantization_name(config.quantization)
        )));
    }
    if config.connectivity < M_RANGE.0 || config.connectivity > M_RANGE.1 {
        return Err(Error::config(format!(
            "invalid configuration: `{SETTING}.connectivity` is {}, but pgvector's HNSW takes {} to {}",
            config.connectivity, M_RANGE.0, M_RANGE.1
        )));
    }
    if config.expansion_add < 2 * config.connectivity || config.expansion_add > EF_CONSTRUCTION_MAX {
        return Err(Error::config(format!(
            "invalid configuration: `{SETTING}.expansion_add` is {}, but pgvector's HNSW takes twice \
             `connectivity` ({}) to {EF_CONSTRUCTION_MAX}",
            config.expansion_add,
            2 * config.connectivity
        )));
    }
    Ok(column)
}

fn quantization_name(quantization: Quantization) -> &'static str {
    match quantization {
        Quantization::F32 => "f32",
        Quantization::F16 => "f16",
        Quantization::I8 => "i8",
    }
}

/// `major.minor` of a version string such as `0.8.1`.
fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split('.');
    let major = parts.next()?.trim().parse().ok()?;
    let minor = parts.next().map_or(Some(0), |m| m.trim().parse().ok())?;
    Some((major, minor))
}

fn too_old(pg: &Pg, version: &str, installed: bool) -> Option<Error> {
    if major_minor(version).is_some_and(|v| v >= MIN_PGVECTOR) {
        return None;
    }
    let what = if installed {
        "run `ALTER EXTENSION vector UPDATE` as a superuser after installing pgvector 0.8 or newer on the server"
    } else {
        "install pgvector 0.8 or newer on the server"
    };
    Some(Error::config(format!(
        "pgvector {version} in postgres at {} ({SETTING}) is older than 0.8, which Nexus needs for iterative \
         index scans: {what}",
        pg.target
    )))
}

/// Checks the server and pgvector versions, creating the extension when absent and the role may.
async fn ensure_extension(pg: &Pg) -> Result<()> {
    let client = pg.client().await?;
    let err = |e| pg.error("check pgvector", e);
    let server: i32 =
        client.query_one("SELECT current_setting('server_version_num')::int", &[]).await.map_err(err)?.get(0);
    if server < MIN_SERVER_VERSION {
        return Err(Error::config(format!(
            "postgres at {} ({SETTING}) is version {}.{}, but the pgvector store needs Postgres 16 or newer",
            pg.target,
            server / 10_000,
            server % 10_000 / 100
        )));
    }
    let available = client
        .query_opt("SELECT default_version, installed_version FROM pg_available_extensions WHERE name = 'vector'", &[])
        .await
        .map_err(err)?;
    let Some(row) = available else {
        return Err(Error::config(format!(
            "the pgvector extension is not installed in postgres at {} ({SETTING}): install pgvector 0.8 or newer \
             on the server, then run `CREATE EXTENSION vector` in that database as a superuser",
            pg.target
        )));
    };
    let default_version: String = row.get(0);
    let installed: Option<String> = row.get(1);
    if let Some(version) = installed {
        return too_old(pg, &version, true).map_or(Ok(()), Err);
    }
    if let Some(e) = too_old(pg, &default_version, false) {
        return Err(e);
    }
    match client.batch_execute("CREATE EXTENSION IF NOT EXISTS vector").await {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => Err(Error::config(format!(
            "the pgvector extension is not installed in postgres at {} ({SETTING}) and this role may not create \
             it: run `CREATE EXTENSION vector` in that database as a superuser",
            pg.target
        ))),
        Err(e) => {
            // Another node may have created it at the same moment.
            let created =
                client.query_opt("SELECT 1 FROM pg_extension WHERE extname = 'vector'", &[]).await.map_err(err)?;
            if created.is_some() { Ok(()) } else { Err(pg.error("create the pgvector extension", e)) }
        }
    }
}

/// Adds the embedding columns and the HNSW index on the first open; refuses other dimensions or
/// quantization than they were made with.
async fn ensure_columns(pg: &Pg, config: &VectorsConfig, column: &str) -> Result<()> {
    let mut client = pg.client().await?;
    let err = |e| pg.error("set up the vector table", e);
    let tx = client.transaction().await.map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SETUP_LOCK]).await.map_err(err)?;
    let quantization = quantization_name(config.quantization);
    let existing = tx.query_opt("SELECT dimensions, quantization FROM vector_meta", &[]).await.map_err(err)?;
    if let Some(row) = existing {
        let dimensions: i32 = row.get(0);
        let built: String = row.get(1);
        if dimensions as usize != config.dimensions || built != quantization {
            return Err(Error::config(format!(
                "the vector table in postgres at {} was built with {dimensions} dimensions ({built}), but \
                 {SETTING} asks for {} ({quantization}); run `nexus reindex --store vectors` to rebuild it",
                pg.target, config.dimensions
            )));
        }
        return Ok(());
    }
    let n = config.dimensions;
    tx.batch_execute(&format!(
        "ALTER TABLE vector_points ADD COLUMN embedding {column}({n}) NOT NULL;
         ALTER TABLE vector_pending ADD COLUMN embedding {column}({n});
         CREATE INDEX vector_points_by_embedding ON vector_points
             USING hnsw (embedding {column}_cosine_ops) WITH (m = {}, ef_construction = {});",
        config.connectivity, config.expansion_add
    ))
    .await
    .map_err(err)?;
    tx.execute("INSERT INTO vector_meta (dimensions, quantization) VALUES ($1, $2)", &[&(n as i32), &quantization])
        .await
        .map_err(err)?;
    tx.commit().await.map_err(err)?;
    tracing::info!(target = %pg.target, dimensions = n, quantization, "pgvector table created");
    Ok(())
}

fn key_param(key: RecordKey) -> i64 {
    key as i64
}

fn hit(key: i64, distance: f64) -> VectorHit {
    VectorHit { key: key as RecordKey, score: (1.0 - distance) as f32 }
}

fn best_first(hits: &mut [VectorHit]) {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.key.cmp(&b.key)));
}

impl PgvectorStore {
    /// Opens the store in `pg`'s database: checks pgvector, applies the migrations and creates
    /// the embedding columns with `config`'s dimensions when they do not exist yet.
    pub async fn open(pg: Pg, config: &VectorsConfig) -> Result<PgvectorStore> {
        let column = column_type(config)?;
        ensure_extension(&pg).await?;
        pg.migrate("vectors", MIGRATIONS).await?;
        ensure_columns(&pg, config, column).await?;
        Ok(PgvectorStore {
            pg,
            config: config.clone(),
            column,
            cast: if column == "vector" { "::vector" } else { "::vector::halfvec" },
            session: rand::random(),
            fence: AtomicU64::new(0),
            may_have_pending: AtomicBool::new(false),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// Drops every point, the committed position and the embedding columns, so that the next
    /// open creates them with the configured dimensions (`nexus reindex --store vectors`). Run
    /// it while no node writes the store.
    pub async fn discard(pg: &Pg) -> Result<()> {
        ensure_extension(pg).await?;
        pg.migrate("vectors", MIGRATIONS).await?;
        let mut client = pg.client().await?;
        let err = |e| pg.error("discard the vector table", e);
        let tx = client.transaction().await.map_err(err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SETUP_LOCK]).await.map_err(err)?;
        tx.batch_execute(
            "TRUNCATE vector_points, vector_pending;
             DROP INDEX IF EXISTS vector_points_by_embedding;
             ALTER TABLE vector_points DROP COLUMN IF EXISTS embedding;
             ALTER TABLE vector_pending DROP COLUMN IF EXISTS embedding;
             DELETE FROM vector_meta;
             UPDATE vector_cursor SET seq = 0;",
        )
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)
    }

    /// Locks the cursor row for a writing transaction and checks this handle's fencing token
    /// against the newest that wrote.
    async fn fence_check(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<()> {
        let mine = self.fence.load(Ordering::Acquire);
        let row = tx
            .query_one("SELECT token FROM vector_cursor FOR UPDATE", &[])
            .await
            .map_err(|e| self.pg.error("lock the vector cursor", e))?;
        let stored = row.get::<_, i64>(0) as u64;
        if stored > mine {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!(
                    "lost the lease on the shared vector store: a node with a newer fencing token ({stored}, \
                     this node's is {mine}) writes it now"
                ),
            ));
        }
        if stored < mine {
            tx.execute("UPDATE vector_cursor SET token = $1", &[&(mine as i64)])
                .await
                .map_err(|e| self.pg.error("lock the vector cursor", e))?;
        }
        Ok(())
    }

    /// This handle's pending changes (among `keys`), as its reads see them. They are read from
    /// the table each time: after a lost lease, the next projector's commit drops them.
    async fn overlay(
        &self,
        client: &tokio_postgres::Client,
        tenant: &TenantId,
        kinds: Option<&Vec<String>>,
        keys: Option<&Vec<i64>>,
        q: &Vector,
    ) -> Result<Overlay> {
        let mut overlay = Overlay::default();
        if !self.may_have_pending.load(Ordering::Acquire) {
            return Ok(overlay);
        }
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&self.session, q];
        let mut sql =
            format!("SELECT key, tenant, kind, embedding <=> $2{} FROM vector_pending WHERE session = $1", self.cast);
        if let Some(keys) = keys {
            params.push(keys);
            sql.push_str(" AND key = ANY($3)");
        }
        let rows = client.query(&sql, &params).await.map_err(|e| self.pg.error("read pending vectors", e))?;
        for row in rows {
            let key: i64 = row.get(0);
            overlay.changed.insert(key as RecordKey);
            let (Some(t), Some(kind), Some(distance)) =
                (row.get::<_, Option<&str>>(1), row.get::<_, Option<&str>>(2), row.get::<_, Option<f64>>(3))
            else {
                continue; // deleted
            };
            if t == tenant.as_str() && kinds.is_none_or(|kinds| kinds.iter().any(|k| k == kind)) {
                overlay.hits.push(hit(key, distance));
            }
        }
        Ok(overlay)
    }
}

/// What a handle's pending changes make of its reads.
#[derive(Default)]
struct Overlay {
    /// Keys with a pending change: their committed rows are stale.
    changed: HashSet<RecordKey>,
    /// Pending upserts that match the read, scored.
    hits: Vec<VectorHit>,
}

impl Overlay {
    /// Committed hits without a pending change, and pending hits, that `predicate` accepts: best
    /// first, at most `k`.
    fn merge(
        &self,
        committed: impl IntoIterator<Item = VectorHit>,
        predicate: Option<&KeyPredicate>,
        k: usize,
    ) -> Vec<VectorHit> {
        let mut hits: Vec<VectorHit> = committed
            .into_iter()
            .filter(|h| !self.changed.contains(&h.key))
            .chain(self.hits.iter().copied())
            .filter(|h| predicate.is_none_or(|p| p(h.key)))
            .collect();
        best_first(&mut hits);
        hits.truncate(k);
        hits
    }
}

#[async_trait]
impl VectorStore for PgvectorStore {
    fn backend(&self) -> &'static str {
        "pgvector"
    }

    fn dimensions(&self) -> usize {
        self.config.dimensions
    }

    fn shared(&self) -> bool {
        true
    }

    fn set_fence(&self, token: u64) {
        self.fence.store(token, Ordering::Release);
    }

    async fn upsert(&self, points: Vec<VectorPoint>, _seq: Seq) -> Result<()> {
        for p in &points {
            validate_vector(&p.vector, self.config.dimensions)?;
        }
        // The last point for a key wins, as if they were written one after another.
        let mut latest: HashMap<RecordKey, VectorPoint> = HashMap::with_capacity(points.len());
        for p in points {
            latest.insert(p.key, p);
        }
        let points: Vec<VectorPoint> = latest.into_values().collect();
        let _writing = self.writing.lock().await;
        self.may_have_pending.store(true, Ordering::Release);
        let mut client = self.pg.client().await?;
        let err = |e| self.pg.error("write vectors", e);
        let tx = client.transaction().await.map_err(err)?;
        self.fence_check(&tx).await?;
        let statement = tx
            .prepare_cached(&format!(
                "INSERT INTO vector_pending (session, key, tenant, kind, embedding)
                 SELECT $1, u.key, u.tenant, u.kind, u.embedding::{}
                 FROM unnest($2::bigint[], $3::text[], $4::text[], $5::vector[]) AS u(key, tenant, kind, embedding)
                 ON CONFLICT (session, key) DO UPDATE
                 SET tenant = excluded.tenant, kind = excluded.kind, embedding = excluded.embedding",
                self.column
            ))
            .await
            .map_err(err)?;
        for chunk in points.chunks(WRITE_BATCH) {
            let keys: Vec<i64> = chunk.iter().map(|p| key_param(p.key)).collect();
            let tenants: Vec<&str> = chunk.iter().map(|p| p.tenant.as_str()).collect();
            let kinds: Vec<&str> = chunk.iter().map(|p| p.kind.as_str()).collect();
            let vectors: Vec<Vector> = chunk.iter().map(|p| Vector::from(p.vector.clone())).collect();
            tx.execute(&statement, &[&self.session, &keys, &tenants, &kinds, &vectors]).await.map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(())
    }

    async fn delete(&self, keys: Vec<RecordKey>, _seq: Seq) -> Result<()> {
        let keys: Vec<RecordKey> = keys.into_iter().collect::<HashSet<_>>().into_iter().collect();
        if keys.is_empty() {
            return Ok(());
        }
        let _writing = self.writing.lock().await;
        self.may_have_pending.store(true, Ordering::Release);
        let mut client = self.pg.client().await?;
        let err = |e| self.pg.error("delete vectors", e);
        let tx = client.transaction().await.map_err(err)?;
        self.fence_check(&tx).await?;
        let statement = tx
            .prepare_cached(
                "INSERT INTO vector_pending (session, key, tenant, kind, embedding)
                 SELECT $1, k, NULL, NULL, NULL FROM unnest($2::bigint[]) AS k
                 ON CONFLICT (session, key) DO UPDATE SET tenant = NULL, kind = NULL, embedding = NULL",
            )
            .await
            .map_err(err)?;
        for chunk in keys.chunks(WRITE_BATCH) {
            let params: Vec<i64> = chunk.iter().copied().map(key_param).collect();
            tx.execute(&statement, &[&self.session, &params]).await.map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(())
    }

    async fn search(&self, query: VectorQuery) -> Result<Vec<VectorHit>> {
        validate_vector(&query.vector, self.config.dimensions)?;
        let k = query.k;
        if k == 0 || query.kinds.as_ref().is_some_and(|kinds| kinds.is_empty()) {
            return Ok(Vec::new());
        }
        let q = Vector::from(query.vector.clone());
        let predicate = query.predicate.as_ref();
        let mut client = self.pg.client().await?;
        let err = |e| self.pg.error("search vectors", e);
        let overlay = self.overlay(&client, &query.tenant, query.kinds.as_ref(), None, &q).await?;
        let filtered = predicate.is_some() || !overlay.changed.is_empty();

        // Parameters: the tenant, the kinds when given, then the row limit and the query vector.
        let tenant = query.tenant.as_str();
        let mut filter: Vec<&(dyn ToSql + Sync)> = vec![&tenant];
        let mut condition = "tenant = $1".to_string();
        if let Some(kinds) = &query.kinds {
            filter.push(kinds);
            condition.push_str(" AND kind = ANY($2)");
        }
        let (limit_param, vector_param) = (filter.len() + 1, filter.len() + 2);
        let cast = self.cast;
        let by_index = format!(
            "SELECT key, embedding <=> ${vector_param}{cast} AS distance FROM vector_points
             WHERE {condition} ORDER BY distance LIMIT ${limit_param}"
        );
        // Materialised first, so that the ordering cannot go through the index.
        let exact = format!(
            "WITH candidates AS MATERIALIZED (SELECT key, embedding FROM vector_points WHERE {condition})
             SELECT key, embedding <=> ${vector_param}{cast} AS distance FROM candidates
             ORDER BY distance LIMIT ${limit_param}"
        );
        let held =
            format!("SELECT count(*) FROM (SELECT 1 FROM vector_points WHERE {condition} LIMIT ${limit_param}) s");

        let tx = client.build_transaction().read_only(true).start().await.map_err(err)?;
        let ef_search = self.config.expansion_search.max(k).clamp(1, EF_SEARCH_MAX);
        tx.batch_execute(&format!(
            "SET LOCAL hnsw.ef_search = {ef_search}; SET LOCAL hnsw.iterative_scan = relaxed_order"
        ))
        .await
        .map_err(err)?;
        let mut limit = k.saturating_mul(if filtered { 4 } else { 1 }) as i64;
        // Few enough to score every one: exact, whatever the index's graph.
        let mut exhaustive = self.config.exact_below > 0 && {
            let cap = self.config.exact_below.min(i64::MAX as usize - 1) as i64 + 1;
            let statement = tx
                .prepare_cached("SELECT count(*) FROM (SELECT 1 FROM vector_points WHERE tenant = $1 LIMIT $2) s")
                .await
                .map_err(err)?;
            let held: i64 = tx.query_one(&statement, &[&tenant, &cap]).await.map_err(err)?.get(0);
            held < cap
        };
        loop {
            let mut params = filter.clone();
            params.push(&limit);
            params.push(&q);
            let sql = if exhaustive { &exact } else { &by_index };
            let statement = tx.prepare_cached(sql).await.map_err(err)?;
            let rows = tx.query(&statement, &params).await.map_err(err)?;
            let fetched = rows.len() as i64;
            let hits = overlay.merge(rows.iter().map(|r| hit(r.get(0), r.get(1))), predicate, k);
            if hits.len() >= k {
                return Ok(hits);
            }
            if fetched < limit {
                // The tenant's rows ran out, or the index gave up before they did (iterative scans
                // stop after `hnsw.max_scan_tuples`): score a small enough remainder exactly.
                if !exhaustive {
                    let cap = EXACT_SCAN_MAX + 1;
                    let mut params = filter.clone();
                    params.push(&cap);
                    let statement = tx.prepare_cached(&held).await.map_err(err)?;
                    let held: i64 = tx.query_one(&statement, &params).await.map_err(err)?.get(0);
                    if held > fetched && held <= EXACT_SCAN_MAX {
                        exhaustive = true;
                        continue;
                    }
                }
                return Ok(hits);
            }
            limit = limit.saturating_mul(4);
        }
    }

    async fn nearest_among(
        &self,
        tenant: &TenantId,
        keys: Vec<RecordKey>,
        vector: Vec<f32>,
        k: usize,
    ) -> Result<Vec<VectorHit>> {
        validate_vector(&vector, self.config.dimensions)?;
        if keys.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let q = Vector::from(vector);
        let keys: Vec<i64> = keys.into_iter().map(key_param).collect();
        let client = self.pg.client().await?;
        // No ORDER BY: each candidate is scored exactly, never through the index.
        let statement = client
            .prepare_cached(&format!(
                "SELECT key, embedding <=> $1{} FROM vector_points WHERE tenant = $2 AND key = ANY($3)",
                self.cast
            ))
            .await
            .map_err(|e| self.pg.error("score vectors", e))?;
        let rows = client
            .query(&statement, &[&q, &tenant.as_str(), &keys])
            .await
            .map_err(|e| self.pg.error("score vectors", e))?;
        let overlay = self.overlay(&client, tenant, None, Some(&keys), &q).await?;
        Ok(overlay.merge(rows.iter().map(|r| hit(r.get(0), r.get(1))), None, k))
    }

    async fn commit(&self, seq: Seq) -> Result<()> {
        let _writing = self.writing.lock().await;
        let mut client = self.pg.client().await?;
        let err = |e| self.pg.error("commit vectors", e);
        let tx = client.transaction().await.map_err(err)?;
        self.fence_check(&tx).await?;
        let statement = tx.prepare_cached(MOVE_PENDING).await.map_err(err)?;
        loop {
            let moved: i64 = tx.query_one(&statement, &[&self.session, &MOVE_BATCH]).await.map_err(err)?.get(0);
            if moved < MOVE_BATCH {
                break;
            }
        }
        // Left by handles that went away without committing: never to be committed.
        tx.execute("DELETE FROM vector_pending WHERE session <> $1", &[&self.session]).await.map_err(err)?;
        tx.execute("UPDATE vector_cursor SET seq = $1", &[&(seq as i64)]).await.map_err(err)?;
        tx.commit().await.map_err(err)?;
        self.may_have_pending.store(false, Ordering::Release);
        Ok(())
    }

    async fn committed_seq(&self) -> Result<Seq> {
        let client = self.pg.client().await?;
        let row = client
            .query_one("SELECT seq FROM vector_cursor", &[])
            .await
            .map_err(|e| self.pg.error("read the vector cursor", e))?;
        Ok(row.get::<_, i64>(0) as Seq)
    }

    async fn keys(&self) -> Result<Vec<RecordKey>> {
        let client = self.pg.client().await?;
        let rows = client
            .query(&format!("{VISIBLE_KEYS} ORDER BY 1"), &[&self.session])
            .await
            .map_err(|e| self.pg.error("list vector keys", e))?;
        Ok(rows.iter().map(|r| r.get::<_, i64>(0) as RecordKey).collect())
    }

    async fn clear(&self) -> Result<()> {
        let _writing = self.writing.lock().await;
        let mut client = self.pg.client().await?;
        let err = |e| self.pg.error("clear vectors", e);
        let tx = client.transaction().await.map_err(err)?;
        self.fence_check(&tx).await?;
        tx.batch_execute("TRUNCATE vector_points, vector_pending; UPDATE vector_cursor SET seq = 0")
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        self.may_have_pending.store(false, Ordering::Release);
        Ok(())
    }

    async fn stats(&self) -> Result<StoreStats> {
        let client = self.pg.client().await?;
        let row = client
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM ({VISIBLE_KEYS}) visible),
                            pg_total_relation_size('vector_points') + pg_total_relation_size('vector_pending')"
                ),
                &[&self.session],
            )
            .await
            .map_err(|e| self.pg.error("vector store stats", e))?;
        Ok(StoreStats { items: row.get::<_, i64>(0) as u64, bytes: row.get::<_, i64>(1) as u64 })
    }
}
