//! The Qdrant vector store on a real Qdrant (tests/common/qdrant.rs): the shared suite, stale
//! replays, fencing, generations, searches beyond what the index returns, what open refuses.

use std::sync::Arc;

use nexus::config::{Quantization, Secret, VectorsBackend, VectorsConfig};
use nexus::error::ErrorCode;
use nexus::store::TenantId;
use nexus::store::testsuite;
use nexus::store::vectors::qdrant::QdrantVectorStore;
use nexus::store::vectors::{VectorHit, VectorPoint, VectorQuery, VectorStore, cosine};
use reqwest::Method;
use serde_json::json;

use super::common::qdrant;

fn config_at(url: &str, prefix: &str, dimensions: usize, quantization: Quantization) -> VectorsConfig {
    VectorsConfig {
        backend: VectorsBackend::Qdrant,
        dimensions,
        connectivity: 16,
        expansion_add: 64,
        expansion_search: 64,
        quantization,
        url: Some(Secret::new(url.to_string())),
        collection_prefix: prefix.to_string(),
        api_key: Some(Secret::new(qdrant::server().api_key.clone())),
        timeout_ms: 10_000,
        ..VectorsConfig::default()
    }
}

fn config(prefix: &str, dimensions: usize, quantization: Quantization) -> VectorsConfig {
    config_at(&qdrant::server().url, prefix, dimensions, quantization)
}

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

/// Deterministic vectors spread over the sphere (a fixed linear congruential sequence).
fn vectors(count: usize, dims: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut next = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    };
    (0..count).map(|_| (0..dims).map(|_| next()).collect()).collect()
}

fn point(key: u64, t: &TenantId, vector: Vec<f32>) -> VectorPoint {
    VectorPoint { key, tenant: t.clone(), kind: "doc".into(), vector }
}

fn everything(t: &TenantId, vector: &[f32]) -> VectorQuery {
    VectorQuery { tenant: t.clone(), vector: vector.to_vec(), k: 10, kinds: None, predicate: None }
}

fn keys_of(hits: &[VectorHit]) -> Vec<u64> {
    let mut keys: Vec<u64> = hits.iter().map(|h| h.key).collect();
    keys.sort_unstable();
    keys
}

/// The collection the alias `{prefix}-vectors` names.
async fn live_collection(prefix: &str) -> Option<String> {
    let (status, body) = qdrant::request(Method::GET, "/aliases", None).await;
    assert_eq!(status, 200, "{body}");
    body["result"]["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["alias_name"] == format!("{prefix}-vectors"))
        .map(|a| a["collection_name"].as_str().unwrap().to_string())
}

async fn collection_exists(name: &str) -> bool {
    let (status, body) = qdrant::request(Method::GET, &format!("/collections/{name}"), None).await;
    assert!(status == 200 || status == 404, "{status} {body}");
    status == 200
}

#[tokio::test]
async fn qdrant_vector_store() {
    for quantization in [Quantization::F32, Quantization::F16, Quantization::I8] {
        let config = config(&qdrant::fresh_prefix("suite"), 8, quantization);
        testsuite::vector_store_suite(|| async {
            Arc::new(QdrantVectorStore::open(&config).await.unwrap()) as Arc<dyn VectorStore>
        })
        .await;
    }
}

/// A tenant of at most `exact_below` points is scored exactly, as the embedded store does.
#[tokio::test]
async fn qdrant_small_tenants_are_searched_exactly() {
    testsuite::small_tenant_search_suite(|| async {
        let config = VectorsConfig {
            connectivity: 8,
            expansion_add: 16,
            expansion_search: 16,
            ..config(&qdrant::fresh_prefix("exact"), testsuite::SMALL_TENANT_DIMENSIONS, Quantization::F32)
        };
        Arc::new(QdrantVectorStore::open(&config).await.unwrap()) as Arc<dyn VectorStore>
    })
    .await;
}

/// Each point keeps the change-log position that wrote it: a replayed or stale batch never
/// replaces a newer state, nor brings back a deleted key; the writer's own reads agree.
#[tokio::test]
async fn qdrant_stale_writes_never_bring_back_an_older_state() {
    let config = config(&qdrant::fresh_prefix("stale"), 8, Quantization::F32);
    let store = QdrantVectorStore::open(&config).await.unwrap();
    let t = tenant("stale");
    let v = vectors(6, 8, 11);

    store.upsert(vec![point(1, &t, v[1].clone()), point(2, &t, v[2].clone())], 10).await.unwrap();
    store.commit(10).await.unwrap();
    // A replay of an older batch, committed: Qdrant keeps the newer point.
    store.upsert(vec![point(1, &t, v[3].clone())], 5).await.unwrap();
    store.commit(11).await.unwrap();
    // A deleted key is not brought back by an older upsert.
    store.delete(vec![2], 20).await.unwrap();
    store.commit(20).await.unwrap();
    store.upsert(vec![point(2, &t, v[4].clone())], 15).await.unwrap();
    store.commit(21).await.unwrap();
    // The writer's own reads, before a commit, agree.
    store.upsert(vec![point(1, &t, v[3].clone()), point(2, &t, v[4].clone())], 6).await.unwrap();
    let hits = store.search(everything(&t, &v[1])).await.unwrap();
    assert_eq!(keys_of(&hits), vec![1], "the writer's own reads keep the seq 10 vector and key 2 deleted: {hits:?}");
    assert!(hits[0].score > 0.999, "{hits:?}");
    store.upsert(vec![point(1, &t, v[3].clone()), point(2, &t, v[4].clone())], 6).await.unwrap();
    assert_eq!(store.keys().await.unwrap(), vec![1]);
    store.upsert(vec![point(1, &t, v[3].clone()), point(2, &t, v[4].clone())], 6).await.unwrap();
    assert_eq!(store.stats().await.unwrap().items, 1);
    store.commit(21).await.unwrap();

    let reader = QdrantVectorStore::open(&config).await.unwrap();
    assert_eq!(reader.committed_seq().await.unwrap(), 21);
    assert_eq!(reader.keys().await.unwrap(), vec![1]);
    assert_eq!(reader.stats().await.unwrap().items, 1);
    let hits = reader.search(everything(&t, &v[1])).await.unwrap();
    assert_eq!(keys_of(&hits), vec![1]);
    assert!((hits[0].score - 1.0).abs() < 1e-3, "still the seq 10 vector: {hits:?}");
    let among = reader.nearest_among(&t, vec![1, 2], v[3].clone(), 10).await.unwrap();
    assert_eq!(keys_of(&among), vec![1]);
    assert!((among[0].score - cosine(&v[1], &v[3])).abs() < 1e-3, "{among:?}");

    // The same batch again, or a newer one, does replace it; a newer upsert brings key 2 back.
    reader.upsert(vec![point(1, &t, v[5].clone())], 10).await.unwrap();
    reader.upsert(vec![point(2, &t, v[4].clone())], 30).await.unwrap();
    reader.commit(30).await.unwrap();
    let hits = store.search(everything(&t, &v[5])).await.unwrap();
    assert_eq!(hits[0].key, 1, "{hits:?}");
    assert!(hits[0].score > 0.999, "{hits:?}");
    assert_eq!(store.keys().await.unwrap(), vec![1, 2]);

    // Positions beyond 2^53 (where doubles skip integers) still compare exactly.
    let high: u64 = 0x0123_4567_89ab_cdef;
    reader.upsert(vec![point(3, &t, v[1].clone())], high).await.unwrap();
    reader.commit(high).await.unwrap();
    reader.upsert(vec![point(3, &t, v[2].clone())], high - 1).await.unwrap();
    reader.commit(high).await.unwrap();
    let among = store.nearest_among(&t, vec![3], v[1].clone(), 1).await.unwrap();
    assert!(among[0].score > 0.999, "position {high} kept against {}: {among:?}", high - 1);
    reader.upsert(vec![point(3, &t, v[2].clone())], high).await.unwrap();
    reader.commit(high).await.unwrap();
    let among = store.nearest_among(&t, vec![3], v[2].clone(), 1).await.unwrap();
    assert!(among[0].score > 0.999, "the same position replaces: {among:?}");
    assert_eq!(store.committed_seq().await.unwrap(), high);
}

/// A node that lost the projector's lease (an older fencing token) can neither write points nor
/// move the committed position; what it staged never reaches the store the other nodes read.
#[tokio::test]
async fn qdrant_refuses_writes_from_a_node_that_lost_its_lease() {
    let config = config(&qdrant::fresh_prefix("fence"), 8, Quantization::F32);
    let a = QdrantVectorStore::open(&config).await.unwrap();
    let b = QdrantVectorStore::open(&config).await.unwrap();
    assert!(a.shared() && b.shared());
    let t = tenant("fence");
    let v = vectors(8, 8, 7);

    a.set_fence(1);
    a.upsert(vec![point(1, &t, v[1].clone())], 1).await.unwrap();
    a.commit(1).await.unwrap();
    // Applied, never committed.
    a.upsert(vec![point(5, &t, v[5].clone())], 2).await.unwrap();
    a.delete(vec![1], 2).await.unwrap();
    assert_eq!(a.keys().await.unwrap(), vec![5], "a writer reads its own staged changes");
    assert_eq!(b.keys().await.unwrap(), vec![1], "other nodes read committed points only");
    assert_eq!(keys_of(&a.search(everything(&t, &v[1])).await.unwrap()), vec![5]);
    assert_eq!(a.stats().await.unwrap().items, 1);

    b.set_fence(2);
    b.upsert(vec![point(2, &t, v[2].clone())], 3).await.unwrap();
    b.commit(3).await.unwrap();
    // The old node, now following, reads what is committed: its staged changes are gone.
    assert_eq!(a.keys().await.unwrap(), vec![1, 2]);
    assert_eq!(keys_of(&a.search(everything(&t, &v[1])).await.unwrap()), vec![1, 2]);
    assert_eq!(keys_of(&a.nearest_among(&t, vec![1, 2, 5], v[1].clone(), 10).await.unwrap()), vec![1, 2]);

    for refused in [
        a.upsert(vec![point(3, &t, v[3].clone())], 4).await,
        a.delete(vec![1], 4).await,
        a.commit(4).await,
        a.clear().await,
    ] {
        let e = refused.expect_err("the old token is refused");
        assert_eq!(e.code, ErrorCode::Conflict, "{e}");
        assert!(e.message.contains("lost the lease"), "{e}");
    }
    b.upsert(vec![point(4, &t, v[4].clone())], 5).await.unwrap();
    b.commit(5).await.unwrap();

    let reader = QdrantVectorStore::open(&config).await.unwrap();
    assert_eq!(reader.committed_seq().await.unwrap(), 5);
    assert_eq!(reader.keys().await.unwrap(), vec![1, 2, 4], "the old node's staged point 5 is gone");
    // Once it regains the lease with a newer token, the old node writes again.
    a.set_fence(3);
    a.upsert(vec![point(6, &t, v[6].clone())], 6).await.unwrap();
    a.commit(6).await.unwrap();
    assert!(b.commit(7).await.is_err(), "and the other one no longer can");
    assert_eq!(reader.committed_seq().await.unwrap(), 6);
    assert_eq!(reader.keys().await.unwrap(), vec![1, 2, 4, 6]);
}

/// A rebuild fills a new collection while every node keeps reading the live one; making it live
/// switches the alias for every handle at once and drops the collection it replaced.
#[tokio::test]
async fn qdrant_new_generation_goes_live_for_every_node_at_once() {
    let prefix = qdrant::fresh_prefix("generation");
    let config = config(&prefix, 8, Quantization::F32);
    let live = QdrantVectorStore::open(&config).await.unwrap();
    let other_node = QdrantVectorStore::open(&config).await.unwrap();
    let t = tenant("gen");
    let v = vectors(8, 8, 5);
    live.upsert(vec![point(1, &t, v[1].clone()), point(2, &t, v[2].clone())], 3).await.unwrap();
    live.commit(3).await.unwrap();
    let old = live_collection(&prefix).await.expect("the alias exists");
    assert_eq!(old, format!("{prefix}-vectors-8-1"));

    let next = live.new_generation().await.unwrap().expect("qdrant builds generations");
    assert_eq!(next.committed_seq().await.unwrap(), 0);
    assert!(next.keys().await.unwrap().is_empty(), "a new generation starts empty");
    next.upsert(vec![point(7, &t, v[7].clone()), point(6, &t, v[6].clone())], 3).await.unwrap();
    next.commit(3).await.unwrap();
    assert!(collection_exists(&format!("{prefix}-vectors-8-2")).await);
    // The projector keeps writing the live generation, which every node still reads.
    live.upsert(vec![point(3, &t, v[3].clone())], 4).await.unwrap();
    live.commit(4).await.unwrap();
    assert_eq!(other_node.keys().await.unwrap(), vec![1, 2, 3]);
    assert_eq!(keys_of(&other_node.search(everything(&t, &v[1])).await.unwrap()), vec![1, 2, 3]);
    assert_eq!(other_node.committed_seq().await.unwrap(), 4);

    next.make_live().await.unwrap();
    assert_eq!(live_collection(&prefix).await.as_deref(), Some(format!("{prefix}-vectors-8-2").as_str()));
    assert!(!collection_exists(&old).await, "the replaced generation is dropped");
    for handle in [&live, &other_node] {
        assert_eq!(handle.keys().await.unwrap(), vec![6, 7]);
        assert_eq!(keys_of(&handle.search(everything(&t, &v[7])).await.unwrap()), vec![6, 7]);
        assert_eq!(handle.committed_seq().await.unwrap(), 3, "the position is the generation's");
    }
    // Writes through the alias reach the new generation, also from the handle that built it.
    live.upsert(vec![point(8, &t, v[0].clone())], 5).await.unwrap();
    live.commit(5).await.unwrap();
    next.upsert(vec![point(9, &t, v[0].clone())], 6).await.unwrap();
    next.commit(6).await.unwrap();
    let reopened = QdrantVectorStore::open(&config).await.unwrap();
    assert_eq!(reopened.keys().await.unwrap(), vec![6, 7, 8, 9]);
    assert_eq!(reopened.committed_seq().await.unwrap(), 6);
    assert!(next.make_live().await.is_err(), "a live handle has no generation to switch to");

    // After a change of embedder: a generation with other dimensions, then live.
    let wider = config_at(&qdrant::server().url, &prefix, 16, Quantization::F16);
    assert_eq!(QdrantVectorStore::open(&wider).await.err().unwrap().code, ErrorCode::ConfigInvalid);
    let rebuilt = QdrantVectorStore::new_generation_for(&wider).await.unwrap();
    assert_eq!(rebuilt.generation_collection().as_deref(), Some(format!("{prefix}-vectors-16-3").as_str()));
    rebuilt.upsert(vec![point(1, &t, vectors(1, 16, 9).remove(0))], 7).await.unwrap();
    rebuilt.commit(7).await.unwrap();
    rebuilt.make_live().await.unwrap();
    let reopened = QdrantVectorStore::open(&wider).await.unwrap();
    assert_eq!(reopened.keys().await.unwrap(), vec![1]);
    assert!(QdrantVectorStore::open(&config).await.is_err(), "the old dimensions are refused now");
    assert!(!collection_exists(&format!("{prefix}-vectors-8-2")).await);
}

/// A small tenant among a large one, kinds, and a key predicate Qdrant cannot see: the store
/// still finds k, and when fewer than k match, all of them.
#[tokio::test]
async fn qdrant_search_finds_k_beyond_what_the_index_returns() {
    let prefix = qdrant::fresh_prefix("filter");
    let config = config(&prefix, 8, Quantization::F32);
    let store = QdrantVectorStore::open(&config).await.unwrap();
    // A collection this small would be searched exhaustively; make Qdrant build and walk HNSW
    // graphs (one per tenant), as it does over a large collection.
    let (status, body) = qdrant::request(
        Method::PATCH,
        &format!("/collections/{prefix}-vectors"),
        Some(json!({"optimizers_config": {"indexing_threshold": 10}, "hnsw_config": {"full_scan_threshold": 10}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (a, b) = (tenant("big"), tenant("small"));
    let many = vectors(2000, 8, 1);
    let few = vectors(20, 8, 2);
    let mut points: Vec<VectorPoint> =
        many.iter().enumerate().map(|(i, v)| point(i as u64 + 1, &a, v.clone())).collect();
    points.extend(few.iter().enumerate().map(|(i, v)| VectorPoint {
        kind: if i % 2 == 0 { "doc".into() } else { "memory".into() },
        ..point(10_001 + i as u64, &b, v.clone())
    }));
    store.upsert(points.clone(), 1).await.unwrap();
    store.commit(1).await.unwrap();
    let store = QdrantVectorStore::open(&config).await.unwrap();
    // Wait until the optimizer has built graphs and gone idle. How many points end up in indexed
    // segments depends on how Qdrant splits them (a small appendable segment stays plain), so
    // the wait is for an index that exists and no longer changes, not for a fixed count.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let mut settled: Option<u64> = None;
    loop {
        let (_, info) = qdrant::request(Method::GET, &format!("/collections/{prefix}-vectors"), None).await;
        let info = &info["result"];
        let indexed = info["indexed_vectors_count"].as_u64().unwrap_or(0);
        let idle = info["status"] == "green"
            && info["optimizer_status"] == "ok"
            && info["update_queue"]["length"].as_u64().unwrap_or(0) == 0;
        if idle && indexed > 0 && settled == Some(indexed) {
            break;
        }
        settled = idle.then_some(indexed);
        assert!(std::time::Instant::now() < deadline, "qdrant did not index the points: {info}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }

    let query = many[0].iter().map(|x| -x).collect::<Vec<f32>>();
    let exact = |accept: &dyn Fn(&VectorPoint) -> bool, k: usize| {
        let mut scored: Vec<(u64, f32)> =
            points.iter().filter(|p| accept(p)).map(|p| (p.key, cosine(&p.vector, &query))).collect();
        scored.sort_by(|x, y| y.1.total_cmp(&x.1));
        scored.into_iter().take(k).map(|(k, _)| k).collect::<Vec<u64>>()
    };
    let search =
        |t: &TenantId, k, kinds: Option<Vec<String>>, predicate: Option<nexus::store::vectors::KeyPredicate>| {
            store.search(VectorQuery { tenant: t.clone(), vector: query.clone(), k, kinds, predicate })
        };

    // k beyond the tenant's points: all of them, best first.
    let small = search(&b, 50, None, None).await.unwrap();
    assert_eq!(small.len(), 20, "{small:?}");
    assert!(small.windows(2).all(|w| w[0].score >= w[1].score), "best first: {small:?}");
    assert_eq!(small.iter().map(|h| h.key).collect::<Vec<_>>(), exact(&|p| p.tenant == b, 50));
    let memories = search(&b, 50, Some(vec!["memory".into()]), None).await.unwrap();
    assert_eq!(keys_of(&memories), (0..20).filter(|i| i % 2 == 1).map(|i| 10_001 + i).collect::<Vec<u64>>());

    let sparse = search(&a, 10, None, Some(Arc::new(|key| key % 97 == 0))).await.unwrap();
    assert_eq!(sparse.len(), 10, "{sparse:?}");
    assert!(sparse.iter().all(|h| h.key % 97 == 0 && h.key <= 2000), "{sparse:?}");
    assert!(sparse.windows(2).all(|w| w[0].score >= w[1].score), "best first: {sparse:?}");
    let expected = exact(&|p| p.tenant == a && p.key % 97 == 0, 10);
    let found = sparse.iter().filter(|h| expected.contains(&h.key)).count();
    assert!(found >= 9, "the exact top 10 {expected:?}, found {sparse:?}");

    // Fewer acceptable points than k: all of them.
    let rare = search(&a, 10, None, Some(Arc::new(|key| key % 500 == 0))).await.unwrap();
    assert_eq!(keys_of(&rare), vec![500, 1000, 1500, 2000]);
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.items, 2020);
    assert!(stats.bytes > 0);
}

/// Open refuses what it cannot serve with one line naming the setting, and changes nothing.
#[tokio::test]
async fn qdrant_open_refuses_what_it_cannot_serve() {
    let prefix = qdrant::fresh_prefix("open");
    let store = QdrantVectorStore::open(&config(&prefix, 8, Quantization::F32)).await.unwrap();
    let t = tenant("open");
    store.upsert(vec![point(1, &t, vectors(1, 8, 3).remove(0))], 1).await.unwrap();
    store.commit(1).await.unwrap();
    drop(store);

    // Other dimensions or quantization than the live collection holds.
    for other in [config(&prefix, 16, Quantization::F32), config(&prefix, 8, Quantization::F16)] {
        let e = QdrantVectorStore::open(&other).await.err().expect("other vectors are refused");
        assert_eq!(e.code, ErrorCode::ConfigInvalid, "{e}");
        assert!(
            e.message.contains("nexus reindex --store vectors")
                && e.message.contains("store.vectors.dimensions")
                && e.message.contains("store.vectors.collection_prefix")
                && !e.message.contains('\n'),
            "{e}"
        );
    }
    let store = QdrantVectorStore::open(&config(&prefix, 8, Quantization::F32)).await.unwrap();
    assert_eq!(store.keys().await.unwrap(), vec![1], "nothing was overwritten");
    assert_eq!(store.committed_seq().await.unwrap(), 1);

    // A collection of something else where the alias would go: refused, left as it was.
    let foreign = qdrant::fresh_prefix("foreign");
    let name = format!("{foreign}-vectors");
    let (status, body) = qdrant::request(
        Method::PUT,
        &format!("/collections/{name}"),
        Some(json!({"vectors": {"size": 4, "distance": "Dot"}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = qdrant::request(
        Method::PUT,
        &format!("/collections/{name}/points?wait=true"),
        Some(json!({"points": [{"id": 1, "vector": [1.0, 0.0, 0.0, 0.0], "payload": {"mine": true}}]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let e = QdrantVectorStore::open(&config(&foreign, 8, Quantization::F32)).await.err().expect("refused");
    assert_eq!(e.code, ErrorCode::ConfigInvalid, "{e}");
    assert!(e.message.contains("store.vectors.collection_prefix") && !e.message.contains('\n'), "{e}");
    let (_, info) = qdrant::request(Method::GET, &format!("/collections/{name}"), None).await;
    assert_eq!(info["result"]["config"]["params"]["vectors"]["size"], 4, "{info}");
    assert_eq!(info["result"]["points_count"], 1, "{info}");
    assert!(live_collection(&foreign).await.is_none());
    assert!(!collection_exists(&format!("{foreign}-vectors-8-1")).await);

    // A collection that another program made under Nexus's generation name.
    let squatter = qdrant::fresh_prefix("squatter");
    let (status, body) = qdrant::request(
        Method::PUT,
        &format!("/collections/{squatter}-vectors-8-1"),
        Some(json!({"vectors": {"embedding": {"size": 8, "distance": "Cosine"}}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let opened = QdrantVectorStore::open(&config(&squatter, 8, Quantization::F32)).await.unwrap();
    assert_eq!(
        live_collection(&squatter).await.as_deref(),
        Some(format!("{squatter}-vectors-8-2").as_str()),
        "nexus takes the next name"
    );
    assert!(opened.keys().await.unwrap().is_empty());

    // Nothing listens at the URL.
    let e = QdrantVectorStore::open(&config_at(&qdrant::unreachable_url(), &prefix, 8, Quantization::F32))
        .await
        .err()
        .expect("unreachable");
    assert_eq!(e.code, ErrorCode::BackendUnavailable, "{e}");
    assert!(e.message.contains("store.vectors.url") && !e.message.contains('\n'), "{e}");

    // A wrong API key, or none.
    let mut wrong = config(&prefix, 8, Quantization::F32);
    wrong.api_key = Some(Secret::new("not-the-key".into()));
    for config in [wrong.clone(), VectorsConfig { api_key: None, ..wrong }] {
        let e = QdrantVectorStore::open(&config).await.err().expect("the key is refused");
        assert_eq!(e.code, ErrorCode::ConfigInvalid, "{e}");
        assert!(e.message.contains("store.vectors.api_key_env") && !e.message.contains('\n'), "{e}");
    }

    // Settings Qdrant cannot serve.
    let mut bad = config(&prefix, 8, Quantization::F32);
    bad.url = None;
    let e = QdrantVectorStore::open(&bad).await.err().unwrap();
    assert!(e.code == ErrorCode::ConfigInvalid && e.message.contains("store.vectors.url"), "{e}");
    let mut bad = config("bad/prefix", 8, Quantization::F32);
    bad.collection_prefix = "bad/prefix".into();
    let e = QdrantVectorStore::open(&bad).await.err().unwrap();
    assert!(e.code == ErrorCode::ConfigInvalid && e.message.contains("collection_prefix"), "{e}");
}
