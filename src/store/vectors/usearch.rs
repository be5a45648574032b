//! The embedded vector store: a usearch HNSW index (cosine) held in memory and saved to disk.
//!
//! The index keeps only keys and vectors, so a side table maps each key to its tenant and kind for
//! filtering. A commit saves both under a new generation and then atomically replaces
//! `manifest.json`, which names the files and the change-log position they reach; a crash at any
//! instant leaves the previous generation intact.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use super::{VectorHit, VectorPoint, VectorQuery, VectorStore, cosine, validate_vector};
use crate::config::{Quantization, VectorsConfig};
use crate::error::{Error, ErrorCode, Result};
use crate::store::{RecordKey, Seq, StoreStats, TenantId, blocking, dir_size};

const MANIFEST: &str = "manifest.json";

/// Search contexts usearch reserves; as many searches run at once (more wait for a permit).
const SEARCH_CONTEXTS: usize = 64;

/// Batches at least this large are added from several threads.
const PARALLEL_ADD_MIN: usize = 64;

fn reserve(index: &Index, capacity: usize) -> Result<()> {
    index.reserve_capacity_and_threads(capacity, SEARCH_CONTEXTS).map_err(usearch_err("reserve vector index"))
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    generation: u64,
    seq: Seq,
    dimensions: usize,
    quantization: Quantization,
    index_file: String,
    points_file: String,
}

/// Tenant and kind of every key, with both strings interned.
#[derive(Default, Serialize, Deserialize)]
struct Points {
    tenants: Vec<String>,
    kinds: Vec<String>,
    /// key -> (tenant index, kind index)
    entries: HashMap<RecordKey, (u32, u32)>,
    /// Points per tenant index (derived from `entries`, not saved).
    #[serde(skip)]
    per_tenant: Vec<usize>,
}

impl Points {
    fn count_tenants(&mut self) {
        self.per_tenant = vec![0; self.tenants.len()];
        for (tenant, _) in self.entries.values() {
            self.per_tenant[*tenant as usize] += 1;
        }
    }

    fn insert(&mut self, key: RecordKey, tenant: &str, kind: &str) {
        let tenant = Points::intern(&mut self.tenants, tenant);
        let kind = Points::intern(&mut self.kinds, kind);
        self.per_tenant.resize(self.tenants.len(), 0);
        self.per_tenant[tenant as usize] += 1;
        if let Some((old, _)) = self.entries.insert(key, (tenant, kind)) {
            self.per_tenant[old as usize] -= 1;
        }
    }

    fn remove(&mut self, key: RecordKey) {
        if let Some((tenant, _)) = self.entries.remove(&key) {
            self.per_tenant[tenant as usize] -= 1;
        }
    }

    fn intern(list: &mut Vec<String>, value: &str) -> u32 {
        match list.iter().position(|v| v == value) {
            Some(i) => i as u32,
            None => {
                list.push(value.to_string());
                (list.len() - 1) as u32
            }
        }
    }
}

struct State {
    index: Index,
    points: Points,
    generation: u64,
    committed_seq: Seq,
}

pub struct UsearchVectorStore {
    dir: PathBuf,
    config: VectorsConfig,
    state: Arc<RwLock<State>>,
    searches: Arc<tokio::sync::Semaphore>,
}

fn usearch_err<E: std::fmt::Display>(context: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::store(context, e)
}

fn new_index(config: &VectorsConfig) -> Result<Index> {
    let options = IndexOptions {
        dimensions: config.dimensions,
        metric: MetricKind::Cos,
        // Ask explicitly: usearch's default quantises to bf16.
        quantization: match config.quantization {
            Quantization::F32 => ScalarKind::F32,
            Quantization::F16 => ScalarKind::F16,
            Quantization::I8 => ScalarKind::I8,
        },
        connectivity: config.connectivity,
        expansion_add: config.expansion_add,
        expansion_search: config.expansion_search,
        multi: false,
    };
    let index = Index::new(&options).map_err(usearch_err("create vector index"))?;
    reserve(&index, 1024)?;
    Ok(index)
}

fn load_state(dir: &Path, config: &VectorsConfig) -> Result<State> {
    let manifest_path = dir.join(MANIFEST);
    let index = new_index(config)?;
    let Ok(text) = std::fs::read_to_string(&manifest_path) else {
        return Ok(State { index, points: Points::default(), generation: 0, committed_seq: 0 });
    };
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| Error::new(ErrorCode::DataDirInvalid, format!("{} is corrupt: {e}", manifest_path.display())))?;
    if manifest.dimensions != config.dimensions || manifest.quantization != config.quantization {
        return Err(Error::config(format!(
            "the vector index was built with {} dimensions ({:?}), but store.vectors asks for {} ({:?}); \
             run `nexus reindex --store vectors` to rebuild it",
            manifest.dimensions, manifest.quantization, config.dimensions, config.quantization
        )));
    }
    let index_path = dir.join(&manifest.index_file);
    index
        .load(index_path.to_str().ok_or_else(|| Error::invalid("data directory path is not UTF-8"))?)
        .map_err(usearch_err("load vector index"))?;
    index.change_expansion_search(config.expansion_search);
    index.change_expansion_add(config.expansion_add);
    reserve(&index, index.size().max(1024))?;
    let mut points: Points = serde_json::from_slice(&std::fs::read(dir.join(&manifest.points_file))?)
        .map_err(|e| Error::store("load vector points", e))?;
    points.count_tenants();
    Ok(State { index, points, generation: manifest.generation, committed_seq: manifest.seq })
}

impl UsearchVectorStore {
    pub async fn open(dir: &Path, config: &VectorsConfig) -> Result<UsearchVectorStore> {
        let dir = dir.to_path_buf();
        let config = config.clone();
        blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let state = load_state(&dir, &config)?;
            Ok(UsearchVectorStore {
                dir,
                config,
                state: Arc::new(RwLock::new(state)),
                searches: Arc::new(tokio::sync::Semaphore::new(SEARCH_CONTEXTS)),
            })
        })
        .await
    }
}

fn save_generation(dir: &Path, state: &State, generation: u64, seq: Seq, config: &VectorsConfig) -> Result<()> {
    let index_file = format!("index-{generation}.usearch");
    let points_file = format!("points-{generation}.json");
    let index_path = dir.join(&index_file);
    save_index(&state.index, &index_path)?;
    let points = serde_json::to_vec(&state.points).map_err(|e| Error::internal("encode vector points", e))?;
    write_synced(&dir.join(&points_file), &points)?;
    let manifest = Manifest {
        generation,
        seq,
        dimensions: config.dimensions,
        quantization: config.quantization,
        index_file,
        points_file,
    };
    let manifest = serde_json::to_vec(&manifest).map_err(|e| Error::internal("encode vector manifest", e))?;
    let tmp = dir.join(format!("{MANIFEST}.tmp"));
    write_synced(&tmp, &manifest)?;
    std::fs::rename(&tmp, dir.join(MANIFEST))?;
    std::fs::File::open(dir)?.sync_all()?;
    // Older generations are no longer referenced.
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let is_old = (name.starts_with("index-") || name.starts_with("points-"))
            && !name.starts_with(&format!("index-{generation}."))
            && !name.starts_with(&format!("points-{generation}."));
        if is_old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// The `k` of `keys` nearest to `vector` by comparing each stored vector (cosine), best first,
/// ties by key.
fn rank_exactly(
    index: &Index,
    keys: impl Iterator<Item = RecordKey>,
    vector: &[f32],
    k: usize,
) -> Result<Vec<VectorHit>> {
    let mut stored = vec![0f32; vector.len()];
    let mut hits = Vec::new();
    for key in keys {
        if index.get(key, &mut stored).map_err(usearch_err("read vector"))? > 0 {
            hits.push(VectorHit { key, score: cosine(&stored, vector) });
        }
    }
    let order = |a: &VectorHit, b: &VectorHit| b.score.total_cmp(&a.score).then(a.key.cmp(&b.key));
    let k = k.min(hits.len());
    if k > 0 && k < hits.len() {
        hits.select_nth_unstable_by(k - 1, order);
    }
    hits.truncate(k);
    hits.sort_by(order);
    Ok(hits)
}

/// Indexes up to this size are saved through memory, trickled to the disk; larger ones straight
/// to the file.
const TRICKLE_SAVE_MAX: usize = 1 << 30;

/// Saves the index whole and durably. Written at once, hundreds of megabytes reach the disk in one
/// burst and every commit's fsync (the record store's, on the same disk) waits behind it; so the
/// index is serialised into memory and written through [`Trickle`](crate::store::Trickle), which
/// keeps at most a few MiB unflushed at any moment.
fn save_index(index: &Index, path: &Path) -> Result<()> {
    let length = index.serialized_length();
    if length > TRICKLE_SAVE_MAX {
        index
            .save(path.to_str().ok_or_else(|| Error::invalid("data directory path is not UTF-8"))?)
            .map_err(usearch_err("save vector index"))?;
        std::fs::File::open(path)?.sync_all()?;
        return Ok(());
    }
    let mut buffer = vec![0u8; length];
    index.save_to_buffer(&mut buffer).map_err(usearch_err("save vector index"))?;
    let mut file = crate::store::Trickle::new(std::fs::File::create(path)?);
    for piece in buffer.chunks(crate::store::TRICKLE_BYTES as usize) {
        std::io::Write::write_all(&mut file, piece)?;
    }
    file.flush_pending()?;
    file.into_inner().sync_all()?;
    Ok(())
}

/// Adds `points` (none of them present): HNSW insertion is the costly part of indexing, and
/// usearch takes concurrent adds, so large batches are spread over the cores.
fn add_all(index: &Index, points: &[VectorPoint]) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(SEARCH_CONTEXTS);
    if points.len() < PARALLEL_ADD_MIN || threads == 1 {
        for p in points {
            index.add(p.key, &p.vector).map_err(usearch_err("add vector"))?;
        }
        return Ok(());
    }
    let chunk = points.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = points
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || -> Result<()> {
                    for p in part {
                        index.add(p.key, &p.vector).map_err(usearch_err("add vector"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().map_err(|_| Error::internal("add vectors", "worker panicked"))?)
    })
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

#[async_trait]
impl VectorStore for UsearchVectorStore {
    fn backend(&self) -> &'static str {
        "usearch"
    }

    fn dimensions(&self) -> usize {
        self.config.dimensions
    }

    async fn upsert(&self, points: Vec<VectorPoint>, _seq: Seq) -> Result<()> {
        for p in &points {
            validate_vector(&p.vector, self.config.dimensions)?;
        }
        let state = self.state.clone();
        blocking(move || {
            let mut state = state.write();
            // The last point for a key wins, as if they were added one after another.
            let mut seen = std::collections::HashSet::new();
            let mut points: Vec<VectorPoint> = points.into_iter().rev().filter(|p| seen.insert(p.key)).collect();
            points.reverse();
            let needed = state.index.size() + points.len();
            if needed > state.index.capacity() {
                let capacity = needed.max(state.index.capacity() * 2);
                reserve(&state.index, capacity)?;
            }
            for p in &points {
                if state.index.contains(p.key) {
                    state.index.remove(p.key).map_err(usearch_err("replace vector"))?;
                }
            }
            add_all(&state.index, &points)?;
            for p in points {
                state.points.insert(p.key, p.tenant.as_str(), &p.kind);
            }
            Ok(())
        })
        .await
    }

    async fn delete(&self, keys: Vec<RecordKey>, _seq: Seq) -> Result<()> {
        let state = self.state.clone();
        blocking(move || {
            let mut state = state.write();
            for key in keys {
                if state.index.contains(key) {
                    state.index.remove(key).map_err(usearch_err("remove vector"))?;
                }
                state.points.remove(key);
            }
            Ok(())
        })
        .await
    }

    async fn search(&self, query: VectorQuery) -> Result<Vec<VectorHit>> {
        validate_vector(&query.vector, self.config.dimensions)?;
        let state = self.state.clone();
        let exact_below = self.config.exact_below;
        let _permit = self.searches.acquire().await.map_err(|e| Error::internal("vector search permit", e))?;
        blocking(move || {
            let state = state.read();
            let Some(tenant) = state.points.tenants.iter().position(|t| t == query.tenant.as_str()) else {
                return Ok(Vec::new());
            };
            if query.k == 0 || state.index.size() == 0 {
                return Ok(Vec::new());
            }
            let kinds: Option<Vec<u32>> = query.kinds.as_ref().map(|kinds| {
                kinds.iter().filter_map(|k| state.points.kinds.iter().position(|x| x == k).map(|i| i as u32)).collect()
            });
            let entries = &state.points.entries;
            let accept = |key: RecordKey| -> bool {
                let Some((t, k)) = entries.get(&key) else { return false };
                *t as usize == tenant
                    && kinds.as_ref().is_none_or(|ks| ks.contains(k))
                    && query.predicate.as_ref().is_none_or(|p| p(key))
            };
            if state.points.per_tenant[tenant] <= exact_below {
                // Few enough to compare with every one: exact, and the same wherever the same
                // vectors are (however each index's graph was built).
                let keys = entries.iter().filter(|(key, (t, k))| {
                    *t as usize == tenant
                        && kinds.as_ref().is_none_or(|ks| ks.contains(k))
                        && query.predicate.as_ref().is_none_or(|p| p(**key))
                });
                return rank_exactly(&state.index, keys.map(|(key, _)| *key), &query.vector, query.k);
            }
            let matches =
                state.index.filtered_search(&query.vector, query.k, accept).map_err(usearch_err("search vectors"))?;
            Ok(matches
                .keys
                .iter()
                .zip(matches.distances.iter())
                .map(|(key, distance)| VectorHit { key: *key, score: 1.0 - distance })
                .collect())
        })
        .await
    }

    async fn nearest_among(
        &self,
        tenant: &TenantId,
        keys: Vec<RecordKey>,
        vector: Vec<f32>,
        k: usize,
    ) -> Result<Vec<VectorHit>> {
        validate_vector(&vector, self.config.dimensions)?;
        let state = self.state.clone();
        let tenant = tenant.clone();
        blocking(move || {
            let state = state.read();
            let Some(t) = state.points.tenants.iter().position(|x| x == tenant.as_str()) else {
                return Ok(Vec::new());
            };
            let keys =
                keys.into_iter().filter(|key| state.points.entries.get(key).is_some_and(|(pt, _)| *pt as usize == t));
            rank_exactly(&state.index, keys, &vector, k)
        })
        .await
    }

    async fn commit(&self, seq: Seq) -> Result<()> {
        let state = self.state.clone();
        let dir = self.dir.clone();
        let config = self.config.clone();
        blocking(move || {
            // A read lock: searches go on while the index is saved; writers wait.
            let guard = state.upgradable_read();
            if guard.committed_seq == seq && seq != 0 {
                return Ok(());
            }
            let generation = guard.generation + 1;
            save_generation(&dir, &guard, generation, seq, &config)?;
            let mut state = parking_lot::RwLockUpgradableReadGuard::upgrade(guard);
            state.generation = generation;
            state.committed_seq = seq;
            Ok(())
        })
        .await
    }

    async fn committed_seq(&self) -> Result<Seq> {
        Ok(self.state.read().committed_seq)
    }

    /// A saved generation's files are never written again, and the manifest that names them is
    /// replaced by a rename: links to the three make the copy.
    async fn snapshot(&self, into: &Path) -> Result<Option<Seq>> {
        let (dir, into) = (self.dir.clone(), into.to_path_buf());
        blocking(move || {
            std::fs::create_dir_all(&into)?;
            let Ok(text) = std::fs::read(dir.join(MANIFEST)) else { return Ok(Some(0)) };
            let manifest: Manifest =
                serde_json::from_slice(&text).map_err(|e| Error::store("read the vector manifest", e))?;
            for file in [&manifest.index_file, &manifest.points_file] {
                crate::store::link_or_copy(&dir.join(file), &into.join(file))?;
            }
            std::fs::write(into.join(MANIFEST), &text)?;
            Ok(Some(manifest.seq))
        })
        .await
    }

    async fn keys(&self) -> Result<Vec<RecordKey>> {
        let mut keys: Vec<RecordKey> = self.state.read().points.entries.keys().copied().collect();
        keys.sort_unstable();
        Ok(keys)
    }

    async fn clear(&self) -> Result<()> {
        let state = self.state.clone();
        let dir = self.dir.clone();
        let config = self.config.clone();
        blocking(move || {
            let mut state = state.write();
            state.index = new_index(&config)?;
            state.points = Points::default();
            let generation = state.generation + 1;
            save_generation(&dir, &state, generation, 0, &config)?;
            state.generation = generation;
            state.committed_seq = 0;
            Ok(())
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats> {
        let items = self.state.read().points.entries.len() as u64;
        Ok(StoreStats { items, bytes: dir_size(&self.dir) })
    }
}
