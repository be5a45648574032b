//! The vector store on Qdrant, over its REST API: one store shared by every node of a cluster.
//!
//! Contract, beyond the trait's:
//! - Needs Qdrant 1.16 or newer (conditional upserts, collection metadata; older servers ignore
//!   `update_filter` without an error, so open refuses them); tested with 1.18.3.
//!   [`QdrantVectorStore::open`] checks that Qdrant answers at `store.vectors.url` and accepts the
//!   API key (sent as the `api-key` header, from `store.vectors.api_key_env` or `api_key_file`).
//! - What Nexus creates: one collection per generation, `{collection_prefix}-vectors-{dimensions}-{n}`,
//!   and the alias `{collection_prefix}-vectors` naming the live one. Every read and write of the
//!   live store goes through the alias, so switching it ([`VectorStore::make_live`]) moves every
//!   node at once. A collection holds one named vector `embedding` (cosine; float32 for
//!   quantization `f32`, float16 for `f16`, float32 searched through Qdrant's int8 scalar
//!   quantization for `i8`), HNSW graphs per tenant only (`m = 0`, `payload_m = connectivity`:
//!   every query names its tenant), payload indexes on `tenant` (keyword, `is_tenant`), `kind`
//!   (keyword), `key` and `deleted_ms` (integers), and the metadata
//!   `{"nexus": {"store": "vectors", "dimensions": N, "quantization": "f32"}}`. The first open
//!   creates generation 1 and the alias. An alias naming a collection with other dimensions or
//!   quantization, or a collection Nexus did not make, is refused with nothing changed.
//! - Points: the id is the record key (an unsigned integer, also kept in the payload as `key`);
//!   the payload holds `tenant`, `kind` and the change-log position of the batch that wrote the
//!   point, as `seq_hi` and `seq_lo` (its upper and lower 32 bits: Qdrant compares numbers as
//!   doubles, exact only up to 2^53). A write is a conditional upsert (`update_filter`) that
//!   replaces a stored point only when its position is not newer than the batch's, so a replayed
//!   or stale batch never brings back an older state. A delete writes a tombstone in the same way:
//!   a point without vector or tenant (no query finds it) that keeps a stale upsert from bringing
//!   the key back; tombstones are removed [`TOMBSTONE_KEEP`] after they were written.
//! - A meta point (a fixed UUID, no vector, no tenant) in each collection holds that generation's
//!   committed position and the newest fencing token that wrote it.
//! - Staging: the handle [`QdrantVectorStore::open`] returns keeps upserts and deletes in memory
//!   until [`VectorStore::commit`] writes them, then the position. Its own reads see them (as the
//!   conditional writes would apply them); other handles read what was committed. Beyond
//!   [`PENDING_MAX_FLOATS`] staged vector components the changes are written ahead of the commit
//!   (a large rebuild in place); replaying the change log from the committed position makes that
//!   harmless. A new generation's handle ([`VectorStore::new_generation`]) writes straight
//!   through: nothing reads that generation before it is made live.
//! - Fencing: every upsert, delete, commit and clear first compares this handle's token with the
//!   meta point's: an older one fails with `conflict` (and the staged changes are dropped), a
//!   newer one is recorded there by a conditional payload update (`fence <= token`). The committed
//!   position is written by the same conditional update, so a node that lost the lease never
//!   moves it. Points are written after the check, not atomically with it: a batch of a node that
//!   loses the lease in between may still land, and the per-point positions keep it from
//!   replacing anything newer (or bringing back a deleted key while its tombstone lasts). A handle
//!   whose token is older than the meta point's reads committed points only.
//! - Search: filtered queries (`POST /collections/{alias}/points/query`) with the tenant, and the
//!   kinds when given, as `must` conditions. A tenant of at most `exact_below` points is scored
//!   exactly (`exact: true`), as the embedded store does, so twins holding the same vectors
//!   answer alike. A key predicate cannot run in Qdrant: rounds fetch
//!   k*4, k*16, ... hits and filter them here until k pass or the tenant's points run out; when
//!   the index returns fewer than the filter matches (up to [`EXACT_SCAN_MAX`]), they are scored
//!   exactly. [`VectorStore::nearest_among`] always scores exactly.
//! - Errors: unreachable, timed out, 429 and 5xx are `backend_unavailable`; a refused API key is
//!   `config_invalid`, naming `store.vectors.api_key_env`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{VectorHit, VectorPoint, VectorQuery, VectorStore, cosine, validate_vector};
use crate::config::{Quantization, VectorsConfig};
use crate::error::{Error, ErrorCode, Result};
use crate::store::{RecordKey, Seq, StoreStats, TenantId};

const SETTING: &str = "store.vectors";

/// Qdrant 1.16: conditional upserts (`update_filter`) and collection metadata.
const MIN_VERSION: (u32, u32) = (1, 16);

/// The one named vector of a collection.
const VECTOR: &str = "embedding";

/// The meta point's id: a UUID, so that no record key can name it.
const META_ID: &str = "6e657875-732d-4d65-8a00-766563746f72";

/// Qdrant's largest vector.
const MAX_DIMENSIONS: usize = 65_536;

/// Points sent per request.
const WRITE_BATCH: usize = 256;

/// Ids read per scroll request.
const SCROLL_PAGE: usize = 10_000;

/// At most this many points matching a query are scored exactly when the index returns fewer.
pub const EXACT_SCAN_MAX: usize = 50_000;

/// Staged vector components (64 MiB of f32) beyond which the live handle writes ahead of a commit.
pub const PENDING_MAX_FLOATS: usize = 16 << 20;

/// How long a tombstone keeps a deleted key from being brought back by a stale write.
pub const TOMBSTONE_KEEP: Duration = Duration::from_secs(600);

/// Tombstones are looked for at most this often (after a commit).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// A change kept until the next commit: an upsert, or a delete (`point` is `None`).
#[derive(Clone)]
struct Staged {
    seq: Seq,
    point: Option<Arc<StagedPoint>>,
}

struct StagedPoint {
    tenant: TenantId,
    kind: String,
    vector: Vec<f32>,
}

#[derive(Default)]
struct Pending {
    changes: HashMap<RecordKey, Staged>,
    /// Vector components held, for the memory bound.
    floats: usize,
}

impl Pending {
    /// Keeps `staged` unless the key already holds a newer change (as the conditional write would).
    fn stage(&mut self, key: RecordKey, staged: Staged) {
        if self.changes.get(&key).is_some_and(|held| held.seq > staged.seq) {
            return;
        }
        self.floats += staged.point.as_ref().map_or(0, |p| p.vector.len());
        if let Some(old) = self.changes.insert(key, staged) {
            self.floats -= old.point.as_ref().map_or(0, |p| p.vector.len());
        }
    }

    fn snapshot(&self) -> Vec<(RecordKey, Staged)> {
        self.changes.iter().map(|(k, s)| (*k, s.clone())).collect()
    }

    fn clear(&mut self) {
        self.changes.clear();
        self.floats = 0;
    }
}

/// What a handle's staged changes make of its reads.
#[derive(Default)]
struct Overlay {
    /// Keys whose staged change is in effect: what the collection holds for them is stale.
    changed: HashSet<RecordKey>,
    /// Staged upserts in effect.
    points: Vec<(RecordKey, Arc<StagedPoint>)>,
    /// How many of `changed` are points with a vector in the collection.
    stored_live: usize,
}

/// The meta point's payload.
#[derive(Clone, Copy, Default)]
struct Meta {
    seq: Seq,
    fence: u64,
}

pub struct QdrantVectorStore {
    rest: Arc<Rest>,
    config: VectorsConfig,
    /// `{collection_prefix}-vectors`.
    alias: String,
    /// A new generation's collection until it is made live; `None`: the alias.
    generation: RwLock<Option<String>>,
    /// Whether writes wait in memory for the commit (the live store's handle) or go straight
    /// through (a new generation's).
    staged: bool,
    pending: Mutex<Pending>,
    fence: AtomicU64,
    /// One write of this handle at a time.
    writing: tokio::sync::Mutex<()>,
    last_sweep: Mutex<Option<Instant>>,
}

fn quantization_name(quantization: Quantization) -> &'static str {
    match quantization {
        Quantization::F32 => "f32",
        Quantization::F16 => "f16",
        Quantization::I8 => "i8",
    }
}

fn check_config(config: &VectorsConfig) -> Result<()> {
    let prefix = &config.collection_prefix;
    let valid_prefix = !prefix.is_empty()
        && prefix.len() <= 200
        && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid_prefix {
        return Err(Error::config(format!(
            "invalid configuration: `{SETTING}.collection_prefix` {prefix:?} must be 1-200 letters, digits, '-' or '_'"
        )));
    }
    if config.dimensions == 0 || config.dimensions > MAX_DIMENSIONS {
        return Err(Error::config(format!(
            "invalid configuration: `{SETTING}.dimensions` is {}, but qdrant holds 1 to {MAX_DIMENSIONS}",
            config.dimensions
        )));
    }
    if config.connectivity == 0 {
        return Err(Error::config(format!("invalid configuration: `{SETTING}.connectivity` must be at least 1")));
    }
    if config.expansion_add < 4 {
        return Err(Error::config(format!(
            "invalid configuration: `{SETTING}.expansion_add` is {}, but qdrant's HNSW takes 4 or more",
            config.expansion_add
        )));
    }
    if config.timeout_ms == 0 {
        return Err(Error::config(format!("invalid configuration: `{SETTING}.timeout_ms` must be at least 1")));
    }
    Ok(())
}

/// The request body of a collection holding `config`'s vectors.
fn collection_body(config: &VectorsConfig) -> Value {
    let datatype = match config.quantization {
        Quantization::F16 => "float16",
        Quantization::F32 | Quantization::I8 => "float32",
    };
    let mut body = json!({
        "vectors": {VECTOR: {"size": config.dimensions, "distance": "Cosine", "datatype": datatype}},
        "hnsw_config": {"m": 0, "payload_m": config.connectivity, "ef_construct": config.expansion_add},
        "metadata": {"nexus": {
            "store": "vectors",
            "dimensions": config.dimensions,
            "quantization": quantization_name(config.quantization),
        }},
    });
    if config.quantization == Quantization::I8 {
        body["quantization_config"] = json!({"scalar": {"type": "int8", "always_ram": true}});
    }
    body
}

/// The payload indexes of a collection.
fn payload_indexes() -> [(&'static str, Value); 4] {
    [
        ("tenant", json!({"type": "keyword", "is_tenant": true})),
        ("kind", json!({"type": "keyword", "enable_hnsw": false})),
        ("key", json!({"type": "integer", "lookup": true, "range": false, "enable_hnsw": false})),
        ("deleted_ms", json!({"type": "integer", "lookup": false, "range": true, "enable_hnsw": false})),
    ]
}

/// `seq` as the two exact halves the payload holds.
fn seq_halves(seq: Seq) -> (u64, u64) {
    (seq >> 32, seq & 0xffff_ffff)
}

/// Matches stored points whose position is not newer than `seq`.
fn not_newer_than(seq: Seq) -> Value {
    let (hi, lo) = seq_halves(seq);
    json!({"should": [
        {"key": "seq_hi", "range": {"lt": hi}},
        {"must": [{"key": "seq_hi", "match": {"value": hi}}, {"key": "seq_lo", "range": {"lte": lo}}]},
    ]})
}

/// The position a stored point's payload holds.
fn stored_seq(payload: &Value) -> Option<Seq> {
    Some((payload.get("seq_hi")?.as_u64()? << 32) | payload.get("seq_lo")?.as_u64()?)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn point_body(key: RecordKey, staged: &Staged, now_ms: u64) -> Value {
    let (hi, lo) = seq_halves(staged.seq);
    match &staged.point {
        Some(p) => json!({
            "id": key,
            "vector": {VECTOR: p.vector},
            "payload": {"tenant": p.tenant.as_str(), "kind": p.kind, "key": key, "seq_hi": hi, "seq_lo": lo},
        }),
        None => json!({
            "id": key,
            "vector": {},
            "payload": {"key": key, "seq_hi": hi, "seq_lo": lo, "deleted_ms": now_ms},
        }),
    }
}

fn tenant_filter(tenant: &TenantId, kinds: Option<&Vec<String>>) -> Value {
    let mut must = vec![json!({"key": "tenant", "match": {"value": tenant.as_str()}})];
    if let Some(kinds) = kinds {
        must.push(json!({"key": "kind", "match": {"any": kinds}}));
    }
    json!({"must": must})
}

fn best_first(hits: &mut [VectorHit]) {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.key.cmp(&b.key)));
}

/// Record keys are kept in Qdrant's integer payload, a signed 64-bit number.
fn check_key(key: RecordKey) -> Result<()> {
    if key > i64::MAX as u64 {
        return Err(Error::invalid(format!("record key {key} is larger than the qdrant vector store holds")));
    }
    Ok(())
}

impl QdrantVectorStore {
    /// Opens the live store behind the alias `{collection_prefix}-vectors`, creating the first
    /// generation and the alias when there is none; refuses a live collection made for other
    /// vectors or by something else.
    pub async fn open(config: &VectorsConfig) -> Result<QdrantVectorStore> {
        check_config(config)?;
        let rest = Arc::new(Rest::new(config)?);
        rest.check_server().await?;
        let alias = format!("{}-vectors", config.collection_prefix);
        ensure_live(&rest, config, &alias).await?;
        Ok(QdrantVectorStore::handle(rest, config, alias, None, true, 0))
    }

    /// A new, empty generation made with `config`'s dimensions and quantization, whatever the
    /// live one holds (a rebuild after a change of embedder); [`VectorStore::make_live`] on it
    /// switches the alias.
    pub async fn new_generation_for(config: &VectorsConfig) -> Result<QdrantVectorStore> {
        check_config(config)?;
        let rest = Arc::new(Rest::new(config)?);
        rest.check_server().await?;
        let alias = format!("{}-vectors", config.collection_prefix);
        let (name, _) = create_generation(&rest, config, false).await?;
        Ok(QdrantVectorStore::handle(rest, config, alias, Some(name), false, 0))
    }

    fn handle(
        rest: Arc<Rest>,
        config: &VectorsConfig,
        alias: String,
        generation: Option<String>,
        staged: bool,
        fence: u64,
    ) -> QdrantVectorStore {
        QdrantVectorStore {
            rest,
            config: config.clone(),
            alias,
            generation: RwLock::new(generation),
            staged,
            pending: Mutex::new(Pending::default()),
            fence: AtomicU64::new(fence),
            writing: tokio::sync::Mutex::new(()),
            last_sweep: Mutex::new(None),
        }
    }

    /// The collection (or alias) this handle reads and writes.
    fn target(&self) -> String {
        self.generation.read().clone().unwrap_or_else(|| self.alias.clone())
    }

    /// The concrete collection of a generation not yet live.
    pub fn generation_collection(&self) -> Option<String> {
        self.generation.read().clone()
    }

    fn points_path(target: &str, tail: &str) -> String {
        format!("/collections/{target}/points{tail}")
    }

    async fn read_meta(&self, target: &str) -> Result<Option<Meta>> {
        let body = json!({"ids": [META_ID], "with_payload": true, "with_vector": false});
        let found =
            self.rest.call(Method::POST, &Self::points_path(target, ""), Some(&body), "read the meta point").await?;
        Ok(found.as_array().and_then(|points| points.first()).map(|point| Meta {
            seq: point["payload"]["seq"].as_u64().unwrap_or(0),
            fence: point["payload"]["fence"].as_u64().unwrap_or(0),
        }))
    }

    /// Sets `payload` on the meta point unless a newer token than this handle's wrote it.
    async fn set_meta(&self, target: &str, payload: Value) -> Result<()> {
        let mine = self.fence.load(Ordering::Acquire);
        let body = json!({
            "payload": payload,
            "filter": {"must": [{"has_id": [META_ID]}, {"key": "fence", "range": {"lte": mine}}]},
        });
        self.rest
            .call(Method::POST, &Self::points_path(target, "/payload?wait=true"), Some(&body), "update the meta point")
            .await?;
        Ok(())
    }

    fn lost_lease(&self, stored: u64, mine: u64) -> Error {
        self.pending.lock().clear();
        Error::new(
            ErrorCode::Conflict,
            format!(
                "lost the lease on the shared vector store: a node with a newer fencing token ({stored}, this node's \
                 is {mine}) writes it now"
            ),
        )
    }

    /// Refuses to write when a newer token than this handle's wrote `target`; records this
    /// handle's token there when it is the newest.
    async fn fence_check(&self, target: &str) -> Result<()> {
        let mine = self.fence.load(Ordering::Acquire);
        let meta = match self.read_meta(target).await? {
            Some(meta) => meta,
            None => {
                ensure_meta(&self.rest, target).await?;
                self.read_meta(target).await?.unwrap_or_default()
            }
        };
        if meta.fence > mine {
            return Err(self.lost_lease(meta.fence, mine));
        }
        if meta.fence < mine {
            self.set_meta(target, json!({"fence": mine})).await?;
            let meta = self.read_meta(target).await?.unwrap_or_default();
            if meta.fence != mine {
                return Err(self.lost_lease(meta.fence, mine));
            }
        }
        Ok(())
    }

    /// Writes `changes` as conditional upserts: one request per position and batch.
    async fn write_changes(&self, target: &str, changes: &[(RecordKey, Staged)]) -> Result<()> {
        let now = now_ms();
        let mut by_seq: BTreeMap<Seq, Vec<Value>> = BTreeMap::new();
        for (key, staged) in changes {
            by_seq.entry(staged.seq).or_default().push(point_body(*key, staged, now));
        }
        for (seq, points) in by_seq {
            let condition = not_newer_than(seq);
            for chunk in points.chunks(WRITE_BATCH) {
                let body = json!({"points": chunk, "update_filter": condition});
                self.rest
                    .call(Method::PUT, &Self::points_path(target, "?wait=true"), Some(&body), "write vectors")
                    .await?;
            }
        }
        Ok(())
    }

    /// Writes the staged changes to `target` and forgets them (after a fence check).
    async fn flush(&self, target: &str) -> Result<()> {
        let changes = self.pending.lock().snapshot();
        self.write_changes(target, &changes).await?;
        self.pending.lock().clear();
        Ok(())
    }

    /// Stages `changes` (the live handle) or writes them at once (a new generation's).
    async fn apply(&self, changes: Vec<(RecordKey, Staged)>) -> Result<()> {
        let _writing = self.writing.lock().await;
        let target = self.target();
        self.fence_check(&target).await?;
        if !self.staged {
            return self.write_changes(&target, &changes).await;
        }
        let full = {
            let mut pending = self.pending.lock();
            for (key, staged) in changes {
                pending.stage(key, staged);
            }
            pending.floats > PENDING_MAX_FLOATS
        };
        if full { self.flush(&target).await } else { Ok(()) }
    }

    /// The staged changes (among `only`) that are in effect: not older than what `target` holds
    /// for their keys, and only while no newer token has written `target`.
    async fn overlay(&self, target: &str, only: Option<&HashSet<RecordKey>>) -> Result<Overlay> {
        let staged: Vec<(RecordKey, Staged)> = {
            let pending = self.pending.lock();
            pending
                .changes
                .iter()
                .filter(|(key, _)| only.is_none_or(|keys| keys.contains(key)))
                .map(|(key, s)| (*key, s.clone()))
                .collect()
        };
        let mut overlay = Overlay::default();
        if staged.is_empty() {
            return Ok(overlay);
        }
        let mut ids: Vec<Value> = staged.iter().map(|(key, _)| json!(key)).collect();
        ids.push(json!(META_ID));
        let body = json!({"ids": ids, "with_payload": ["seq_hi", "seq_lo", "tenant", "fence"], "with_vector": false});
        let found = self.rest.call(Method::POST, &Self::points_path(target, ""), Some(&body), "read vectors").await?;
        let mine = self.fence.load(Ordering::Acquire);
        let mut stored: HashMap<RecordKey, (Option<Seq>, bool)> = HashMap::new();
        for point in found.as_array().into_iter().flatten() {
            let payload = &point["payload"];
            match point["id"].as_u64() {
                Some(key) => {
                    stored.insert(key, (stored_seq(payload), payload.get("tenant").is_some()));
                }
                None => {
                    if payload["fence"].as_u64().is_some_and(|fence| fence > mine) {
                        // Another node projects the store now: what this one staged will never be written.
                        self.pending.lock().clear();
                        return Ok(overlay);
                    }
                }
            }
        }
        let mut superseded = Vec::new();
        for (key, change) in staged {
            let (seq, live) = stored.get(&key).copied().unwrap_or((None, false));
            if seq.is_some_and(|seq| seq > change.seq) {
                superseded.push((key, change.seq));
                continue;
            }
            overlay.changed.insert(key);
            overlay.stored_live += usize::from(live);
            if let Some(point) = change.point {
                overlay.points.push((key, point));
            }
        }
        if !superseded.is_empty() {
            let mut pending = self.pending.lock();
            for (key, seq) in superseded {
                if pending.changes.get(&key).is_some_and(|s| s.seq == seq)
                    && let Some(old) = pending.changes.remove(&key)
                {
                    pending.floats -= old.point.as_ref().map_or(0, |p| p.vector.len());
                }
            }
        }
        Ok(overlay)
    }

    /// Scored points of `target` matching `filter`: at most `limit`, best first.
    async fn query(
        &self,
        target: &str,
        vector: &[f32],
        filter: &Value,
        limit: usize,
        exact: bool,
    ) -> Result<Vec<VectorHit>> {
        let ef = self.config.expansion_search.max(limit);
        let body = json!({
            "query": vector,
            "using": VECTOR,
            "filter": filter,
            "limit": limit,
            "params": {"hnsw_ef": ef, "exact": exact},
            "with_payload": false,
            "with_vector": false,
        });
        let found =
            self.rest.call(Method::POST, &Self::points_path(target, "/query"), Some(&body), "search vectors").await?;
        Ok(found["points"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some(VectorHit { key: p["id"].as_u64()?, score: p["score"].as_f64()? as f32 }))
            .collect())
    }

    async fn count(&self, target: &str, filter: &Value) -> Result<usize> {
        let body = json!({"filter": filter, "exact": true});
        let found =
            self.rest.call(Method::POST, &Self::points_path(target, "/count"), Some(&body), "count vectors").await?;
        Ok(found["count"].as_u64().unwrap_or(0) as usize)
    }

    /// Removes tombstones older than [`TOMBSTONE_KEEP`] (at most every [`SWEEP_EVERY`]).
    async fn sweep_tombstones(&self, target: &str) {
        {
            let mut last = self.last_sweep.lock();
            if last.is_some_and(|at| at.elapsed() < SWEEP_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let cutoff = now_ms().saturating_sub(TOMBSTONE_KEEP.as_millis() as u64);
        let body = json!({"filter": {"must": [{"key": "deleted_ms", "range": {"lt": cutoff}}]}});
        let path = Self::points_path(target, "/delete?wait=false");
        if let Err(e) = self.rest.call(Method::POST, &path, Some(&body), "remove old tombstones").await {
            tracing::warn!(target = %self.rest.shown, error = %e, "removing old vector tombstones failed");
        }
    }
}

/// Makes sure the alias names a live collection for `config`'s vectors made by Nexus, creating
/// the first generation and the alias when there is none; refuses anything else under the name.
async fn ensure_live(rest: &Rest, config: &VectorsConfig, alias: &str) -> Result<()> {
    match rest.alias_target(alias).await? {
        Some(live) => verify(rest, config, &live).await?,
        None => {
            if rest.collection_info(alias).await?.is_some() {
                return Err(Error::config(format!(
                    "qdrant at {} holds a collection named `{alias}`, the alias nexus keeps its vectors \
                         behind; choose another {SETTING}.collection_prefix",
                    rest.shown
                )));
            }
            let (name, created) = create_generation(rest, config, true).await?;
            // Another node may have made the alias meanwhile: use it.
            match rest.alias_target(alias).await? {
                Some(live) if live != name => {
                    if created {
                        rest.call(Method::DELETE, &format!("/collections/{name}"), None, "drop an unused collection")
                            .await?;
                    }
                    verify(rest, config, &live).await?;
                }
                Some(_) => {}
                None => {
                    let actions =
                        json!({"actions": [{"create_alias": {"collection_name": name, "alias_name": alias}}]});
                    rest.call(Method::POST, "/collections/aliases", Some(&actions), "create the alias").await?;
                    tracing::info!(target = %rest.shown, collection = %name, alias = %alias, "qdrant collection created");
                }
            }
        }
    }
    Ok(())
}

/// Creates the meta point of `collection` unless it is there.
async fn ensure_meta(rest: &Rest, collection: &str) -> Result<()> {
    // The condition matches no stored meta point, so an existing one is kept.
    let body = json!({
        "points": [{"id": META_ID, "vector": {}, "payload": {"nexus_meta": true, "seq": 0, "fence": 0}}],
        "update_filter": {"must": [{"key": "nexus_meta", "match": {"value": false}}]},
    });
    rest.call(
        Method::PUT,
        &format!("/collections/{collection}/points?wait=true"),
        Some(&body),
        "create the meta point",
    )
    .await?;
    Ok(())
}

/// Checks that `collection` holds `config`'s vectors and was made by Nexus; adds what an
/// interrupted creation left out.
async fn verify(rest: &Rest, config: &VectorsConfig, collection: &str) -> Result<()> {
    let Some(info) = rest.collection_info(collection).await? else {
        return Err(Error::store(
            "open the vector store",
            format!("qdrant at {} lost the collection `{collection}` while nexus opened it; start again", rest.shown),
        ));
    };
    let nexus = &info["config"]["metadata"]["nexus"];
    let vector = &info["config"]["params"]["vectors"][VECTOR];
    let distance = vector["distance"].as_str();
    if nexus["store"].as_str() != Some("vectors") || !vector.is_object() || distance != Some("Cosine") {
        return Err(Error::config(format!(
            "the collection `{collection}` in qdrant at {} was not made by nexus for its vectors; choose another \
             {SETTING}.collection_prefix",
            rest.shown
        )));
    }
    let dimensions = vector["size"].as_u64().unwrap_or(0) as usize;
    let quantization = nexus["quantization"].as_str().unwrap_or("?");
    let wanted = quantization_name(config.quantization);
    if dimensions != config.dimensions || quantization != wanted {
        return Err(Error::config(format!(
            "the collection `{collection}` in qdrant at {} holds vectors of {dimensions} dimensions ({quantization}), \
             but {SETTING}.dimensions is {} ({wanted}); run `nexus reindex --store vectors` to rebuild it, or choose \
             another {SETTING}.collection_prefix",
            rest.shown, config.dimensions
        )));
    }
    let schema = &info["payload_schema"];
    for (field, index) in payload_indexes() {
        if schema.get(field).is_none() {
            create_index(rest, collection, field, index).await?;
        }
    }
    ensure_meta(rest, collection).await
}

async fn create_index(rest: &Rest, collection: &str, field: &str, schema: Value) -> Result<()> {
    let body = json!({"field_name": field, "field_schema": schema});
    rest.call(
        Method::PUT,
        &format!("/collections/{collection}/index?wait=true"),
        Some(&body),
        "create a payload index",
    )
    .await?;
    Ok(())
}

/// Creates the next generation's collection; returns its name and whether this call created it.
/// With `adopt`, a collection of that name made at the same moment (by another node opening the
/// store) is checked and used; otherwise the next number is tried.
async fn create_generation(rest: &Rest, config: &VectorsConfig, adopt: bool) -> Result<(String, bool)> {
    let stem = format!("{}-vectors-", config.collection_prefix);
    for _ in 0..8 {
        let listed = rest.call(Method::GET, "/collections", None, "list collections").await?;
        let highest = listed["collections"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str()?.strip_prefix(&stem)?.split_once('-').map(|(_, n)| n.parse::<u64>()))
            .filter_map(|n| n.ok())
            .max()
            .unwrap_or(0);
        let name = format!("{stem}{}-{}", config.dimensions, highest + 1);
        let body = collection_body(config);
        match rest.request(Method::PUT, &format!("/collections/{name}"), Some(&body), "create a collection").await? {
            Answer::Ok(_) => {
                for (field, index) in payload_indexes() {
                    create_index(rest, &name, field, index).await?;
                }
                ensure_meta(rest, &name).await?;
                return Ok((name, true));
            }
            Answer::Status(StatusCode::CONFLICT, _) if adopt => {
                verify(rest, config, &name).await?;
                return Ok((name, false));
            }
            Answer::Status(StatusCode::CONFLICT, _) => continue,
            Answer::Status(status, detail) => return Err(rest.refused("create a collection", status, &detail)),
        }
    }
    Err(Error::store("create a collection", "other clients kept taking the next collection name; try again"))
}

#[async_trait]
impl VectorStore for QdrantVectorStore {
    fn backend(&self) -> &'static str {
        "qdrant"
    }

    fn dimensions(&self) -> usize {
        self.config.dimensions
    }

    fn shared(&self) -> bool {
        true
    }
    fn generations(&self) -> bool {
        true
    }

    /// Guards every write: see the module doc. A new token also drops what an earlier lease
    /// staged (the change log is replayed from the committed position).
    fn set_fence(&self, token: u64) {
        if self.fence.swap(token, Ordering::AcqRel) != token {
            self.pending.lock().clear();
        }
    }

    async fn upsert(&self, points: Vec<VectorPoint>, seq: Seq) -> Result<()> {
        for p in &points {
            validate_vector(&p.vector, self.config.dimensions)?;
            check_key(p.key)?;
        }
        // The last point for a key wins, as if they were written one after another.
        let mut latest: HashMap<RecordKey, Staged> = HashMap::with_capacity(points.len());
        for p in points {
            let point = StagedPoint { tenant: p.tenant, kind: p.kind, vector: p.vector };
            latest.insert(p.key, Staged { seq, point: Some(Arc::new(point)) });
        }
        self.apply(latest.into_iter().collect()).await
    }

    async fn delete(&self, keys: Vec<RecordKey>, seq: Seq) -> Result<()> {
        for key in &keys {
            check_key(*key)?;
        }
        let keys: HashSet<RecordKey> = keys.into_iter().collect();
        if keys.is_empty() {
            return Ok(());
        }
        self.apply(keys.into_iter().map(|key| (key, Staged { seq, point: None })).collect()).await
    }

    async fn search(&self, query: VectorQuery) -> Result<Vec<VectorHit>> {
        validate_vector(&query.vector, self.config.dimensions)?;
        let k = query.k;
        if k == 0 || query.kinds.as_ref().is_some_and(|kinds| kinds.is_empty()) {
            return Ok(Vec::new());
        }
        let target = self.target();
        let overlay = self.overlay(&target, None).await?;
        let predicate = query.predicate.as_ref();
        let accepts = |key: RecordKey| predicate.is_none_or(|p| p(key));
        let staged_hits: Vec<VectorHit> = overlay
            .points
            .iter()
            .filter(|(key, p)| {
                p.tenant == query.tenant
                    && query.kinds.as_ref().is_none_or(|kinds| kinds.contains(&p.kind))
                    && accepts(*key)
            })
            .map(|(key, p)| VectorHit { key: *key, score: cosine(&p.vector, &query.vector) })
            .collect();
        let filter = tenant_filter(&query.tenant, query.kinds.as_ref());
        let filtered = predicate.is_some() || !overlay.changed.is_empty();
        let mut limit = k.saturating_mul(if filtered { 4 } else { 1 });
        // A tenant of at most `exact_below` points is scored exactly, as the embedded store does:
        // the same answers on every twin, whatever each index's graph.
        let mut exact = self.config.exact_below > 0
            && self.count(&target, &tenant_filter(&query.tenant, None)).await? <= self.config.exact_below;
        loop {
            let found = self.query(&target, &query.vector, &filter, limit, exact).await?;
            let fetched = found.len();
            let mut hits: Vec<VectorHit> = found
                .into_iter()
                .filter(|h| !overlay.changed.contains(&h.key) && accepts(h.key))
                .chain(staged_hits.iter().copied())
                .collect();
            best_first(&mut hits);
            hits.truncate(k);
            if hits.len() >= k {
                return Ok(hits);
            }
            if fetched < limit {
                // The matching points ran out, or the index returned fewer than there are: score
                // a small enough set exactly.
                if !exact {
                    let held = self.count(&target, &filter).await?;
                    if held > fetched && held <= EXACT_SCAN_MAX {
                        exact = true;
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
        let wanted: HashSet<RecordKey> = keys.into_iter().collect();
        let target = self.target();
        let overlay = self.overlay(&target, Some(&wanted)).await?;
        let stored: Vec<RecordKey> = wanted.iter().copied().filter(|key| !overlay.changed.contains(key)).collect();
        let mut hits = Vec::new();
        if !stored.is_empty() {
            let filter = json!({"must": [
                {"key": "tenant", "match": {"value": tenant.as_str()}},
                {"has_id": stored},
            ]});
            hits = self.query(&target, &vector, &filter, stored.len(), true).await?;
        }
        hits.extend(
            overlay
                .points
                .iter()
                .filter(|(_, p)| &p.tenant == tenant)
                .map(|(key, p)| VectorHit { key: *key, score: cosine(&p.vector, &vector) }),
        );
        best_first(&mut hits);
        hits.truncate(k);
        Ok(hits)
    }

    async fn commit(&self, seq: Seq) -> Result<()> {
        let _writing = self.writing.lock().await;
        let target = self.target();
        self.fence_check(&target).await?;
        let changes = self.pending.lock().snapshot();
        self.write_changes(&target, &changes).await?;
        let mine = self.fence.load(Ordering::Acquire);
        self.set_meta(&target, json!({"seq": seq, "fence": mine})).await?;
        let meta = self.read_meta(&target).await?.unwrap_or_default();
        if meta.fence != mine || meta.seq != seq {
            return Err(self.lost_lease(meta.fence, mine));
        }
        self.pending.lock().clear();
        self.sweep_tombstones(&target).await;
        Ok(())
    }

    async fn restore_layout(&self) -> Result<()> {
        // A rebuild's generation is written by `nexus reindex`, which starts over when it fails.
        if self.generation.read().is_some() {
            return Ok(());
        }
        ensure_live(&self.rest, &self.config, &self.alias).await
    }

    async fn committed_seq(&self) -> Result<Seq> {
        Ok(self.read_meta(&self.target()).await?.unwrap_or_default().seq)
    }

    async fn keys(&self) -> Result<Vec<RecordKey>> {
        let target = self.target();
        let overlay = self.overlay(&target, None).await?;
        let mut keys = Vec::new();
        let mut offset = Value::Null;
        loop {
            let body = json!({
                "filter": {"must": [{"has_vector": VECTOR}]},
                "limit": SCROLL_PAGE,
                "offset": offset,
                "with_payload": false,
                "with_vector": false,
            });
            let page = self
                .rest
                .call(Method::POST, &Self::points_path(&target, "/scroll"), Some(&body), "list vector keys")
                .await?;
            keys.extend(page["points"].as_array().into_iter().flatten().filter_map(|p| p["id"].as_u64()));
            offset = page["next_page_offset"].clone();
            if offset.is_null() {
                break;
            }
        }
        keys.retain(|key| !overlay.changed.contains(key));
        keys.extend(overlay.points.iter().map(|(key, _)| *key));
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    async fn clear(&self) -> Result<()> {
        let _writing = self.writing.lock().await;
        let target = self.target();
        self.fence_check(&target).await?;
        let body = json!({"filter": {"must_not": [{"has_id": [META_ID]}]}});
        self.rest
            .call(Method::POST, &Self::points_path(&target, "/delete?wait=true"), Some(&body), "clear vectors")
            .await?;
        let mine = self.fence.load(Ordering::Acquire);
        self.set_meta(&target, json!({"seq": 0, "fence": mine})).await?;
        let meta = self.read_meta(&target).await?.unwrap_or_default();
        if meta.fence != mine || meta.seq != 0 {
            return Err(self.lost_lease(meta.fence, mine));
        }
        self.pending.lock().clear();
        Ok(())
    }

    async fn stats(&self) -> Result<StoreStats> {
        let target = self.target();
        let overlay = self.overlay(&target, None).await?;
        let stored = self.count(&target, &json!({"must": [{"has_vector": VECTOR}]})).await?;
        let items = (stored - overlay.stored_live.min(stored) + overlay.points.len()) as u64;
        // Qdrant does not say how much disk a collection takes: the vectors' own size.
        let component = if self.config.quantization == Quantization::F16 { 2 } else { 4 };
        Ok(StoreStats { items, bytes: items * (self.config.dimensions * component) as u64 })
    }

    async fn new_generation(&self) -> Result<Option<Arc<dyn VectorStore>>> {
        let (name, _) = create_generation(&self.rest, &self.config, false).await?;
        tracing::info!(target = %self.rest.shown, collection = %name, "new qdrant vector generation");
        let fence = self.fence.load(Ordering::Acquire);
        let handle =
            QdrantVectorStore::handle(self.rest.clone(), &self.config, self.alias.clone(), Some(name), false, fence);
        Ok(Some(Arc::new(handle)))
    }

    async fn make_live(&self) -> Result<()> {
        let Some(name) = self.generation_collection() else {
            return Err(Error::internal("make_live", "this handle already reads the live generation"));
        };
        let _writing = self.writing.lock().await;
        self.fence_check(&name).await?;
        let replaced = self.rest.alias_target(&self.alias).await?;
        let mut actions = Vec::new();
        if replaced.is_some() {
            actions.push(json!({"delete_alias": {"alias_name": self.alias}}));
        }
        actions.push(json!({"create_alias": {"collection_name": name, "alias_name": self.alias}}));
        self.rest
            .call(Method::POST, "/collections/aliases", Some(&json!({"actions": actions})), "switch the alias")
            .await?;
        *self.generation.write() = None;
        tracing::info!(target = %self.rest.shown, collection = %name, alias = %self.alias, "qdrant vector generation made live");
        if let Some(old) = replaced.filter(|old| *old != name)
            && let Err(e) =
                self.rest.call(Method::DELETE, &format!("/collections/{old}"), None, "drop a replaced generation").await
        {
            tracing::warn!(target = %self.rest.shown, collection = %old, error = %e,
                "the replaced vector generation could not be dropped; delete that collection");
        }
        Ok(())
    }
}

/// A successful answer's `result`, or a status Qdrant answered with (other than those mapped to
/// errors at once) and its message.
enum Answer {
    Ok(Value),
    Status(StatusCode, String),
}

/// Qdrant's REST API.
struct Rest {
    client: reqwest::Client,
    /// The URL without a trailing slash.
    base: String,
    /// Scheme, host and port: for messages (the URL may carry credentials).
    shown: String,
    timeout: Duration,
}

impl Rest {
    fn new(config: &VectorsConfig) -> Result<Rest> {
        let url = config.url.as_ref().ok_or_else(|| {
            Error::config(format!(
                "invalid configuration: `{SETTING}.url` is required when {SETTING}.backend = \"qdrant\" (the REST \
                 endpoint, e.g. http://qdrant.internal:6333)"
            ))
        })?;
        let parsed = reqwest::Url::parse(url.expose().trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| {
                Error::config(format!(
                    "invalid configuration: `{SETTING}.url` is not an http(s) URL; give qdrant's REST endpoint, e.g. \
                     http://qdrant.internal:6333"
                ))
            })?;
        let shown = format!(
            "{}://{}{}",
            parsed.scheme(),
            parsed.host_str().unwrap_or_default(),
            parsed.port().map(|p| format!(":{p}")).unwrap_or_default()
        );
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = &config.api_key {
            let mut value = reqwest::header::HeaderValue::from_str(key.expose().trim()).map_err(|_| {
                Error::config(format!(
                    "invalid configuration: the API key from {SETTING}.api_key_env or api_key_file holds characters \
                     an HTTP header cannot carry"
                ))
            })?;
            value.set_sensitive(true);
            headers.insert("api-key", value);
        }
        let timeout = Duration::from_millis(config.timeout_ms);
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("nexus/", env!("CARGO_PKG_VERSION")));
        if parsed.scheme() == "https" {
            builder = builder.use_preconfigured_tls(crate::tls::client_config(SETTING, config.ca_file.as_deref())?);
        }
        let client = builder.build().map_err(|e| Error::internal("build the qdrant client", e))?;
        Ok(Rest { client, base: parsed.as_str().trim_end_matches('/').to_string(), shown, timeout })
    }

    /// Sends a request; transport failures, refused keys, 429 and 5xx are errors, other
    /// statuses come back as [`Answer::Status`].
    async fn request(&self, method: Method, path: &str, body: Option<&Value>, context: &str) -> Result<Answer> {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(context, &e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(context, &e))?;
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            let Some(mut value) = parsed else {
                return Err(Error::store(&format!("qdrant {context}"), "the answer is not JSON"));
            };
            return Ok(Answer::Ok(value["result"].take()));
        }
        let detail = parsed
            .as_ref()
            .and_then(|v| v["status"]["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).lines().next().unwrap_or_default().to_string());
        let detail: String = detail.chars().take(300).collect();
        if status == StatusCode::UNAUTHORIZED
            || status == StatusCode::FORBIDDEN
            || status == StatusCode::TOO_MANY_REQUESTS
            || status.is_server_error()
        {
            return Err(self.refused(context, status, &detail));
        }
        Ok(Answer::Status(status, detail))
    }

    /// Like [`Rest::request`], with every status but success an error.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>, context: &str) -> Result<Value> {
        match self.request(method, path, body, context).await? {
            Answer::Ok(value) => Ok(value),
            Answer::Status(status, detail) => Err(self.refused(context, status, &detail)),
        }
    }

    fn refused(&self, context: &str, status: StatusCode, detail: &str) -> Error {
        metrics::counter!("nexus_backend_errors_total", "backend" => "qdrant").increment(1);
        let code = status.as_u16();
        match code {
            401 | 403 => Error::config(format!(
                "qdrant at {} refused the API key ({code}) to {context}: set the key qdrant expects in \
                 {SETTING}.api_key_env or {SETTING}.api_key_file",
                self.shown
            )),
            429 | 500..=599 => {
                tracing::warn!(target = %self.shown, context, status = code, detail, "qdrant unavailable");
                Error::new(
                    ErrorCode::BackendUnavailable,
                    format!("qdrant at {} is unavailable ({context}): {code} {detail}", self.shown),
                )
            }
            _ => Error::store(&format!("qdrant at {} could not {context}", self.shown), format!("{code} {detail}")),
        }
    }

    fn unreachable(&self, context: &str, e: &reqwest::Error) -> Error {
        metrics::counter!("nexus_backend_errors_total", "backend" => "qdrant").increment(1);
        tracing::warn!(target = %self.shown, context, error = %e, "qdrant unreachable");
        let reason = if e.is_timeout() {
            format!("no answer within {} ms ({SETTING}.timeout_ms)", self.timeout.as_millis())
        } else {
            root_cause(e)
        };
        Error::new(
            ErrorCode::BackendUnavailable,
            format!("qdrant at {} ({SETTING}.url) is unreachable ({context}): {reason}", self.shown),
        )
    }

    /// Checks that Qdrant answers, is new enough and accepts the API key.
    async fn check_server(&self) -> Result<()> {
        let response = self.client.get(format!("{}/", self.base)).send().await.map_err(|e| {
            let e = self.unreachable("connect", &e);
            Error::new(e.code, format!("{}; check {SETTING}.url and that qdrant runs there", e.message))
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable("connect", &e))?;
        if !status.is_success() {
            return Err(self.refused("connect", status, String::from_utf8_lossy(&bytes).lines().next().unwrap_or("")));
        }
        // `GET /` answers `{"title": ..., "version": ...}`.
        let info: Value =
            serde_json::from_slice(&bytes).ok().filter(|v: &Value| v["version"].is_string()).ok_or_else(|| {
                Error::config(format!(
                    "the server at {} ({SETTING}.url) does not answer as qdrant's REST API does; give qdrant's REST \
                     endpoint (port 6333 by default)",
                    self.shown
                ))
            })?;
        let version = info["version"].as_str().unwrap_or_default().to_string();
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if found < MIN_VERSION {
            return Err(Error::config(format!(
                "qdrant at {} ({SETTING}.url) is version {version}, but nexus needs qdrant {}.{} or newer",
                self.shown, MIN_VERSION.0, MIN_VERSION.1
            )));
        }
        // Answers only with a valid key, when qdrant asks for one.
        self.call(Method::GET, "/aliases", None, "list aliases").await?;
        Ok(())
    }

    /// The collection `alias` names, if that alias exists.
    async fn alias_target(&self, alias: &str) -> Result<Option<String>> {
        let listed = self.call(Method::GET, "/aliases", None, "list aliases").await?;
        Ok(listed["aliases"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["alias_name"].as_str() == Some(alias))
            .and_then(|a| a["collection_name"].as_str().map(str::to_string)))
    }

    /// A collection's description (an alias is followed), or `None` when there is none.
    async fn collection_info(&self, name: &str) -> Result<Option<Value>> {
        match self.request(Method::GET, &format!("/collections/{name}"), None, "read a collection").await? {
            Answer::Ok(info) => Ok(Some(info)),
            Answer::Status(StatusCode::NOT_FOUND, _) => Ok(None),
            Answer::Status(status, detail) => Err(self.refused("read a collection", status, &detail)),
        }
    }
}

/// The innermost cause of a transport error (such as "connection refused").
fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
