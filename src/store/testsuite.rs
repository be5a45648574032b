//! The conformance suites: one function per store trait, run against every implementation
//! (`tests/conformance.rs` runs the embedded ones; a cluster twin adds its own call).
//!
//! Each suite takes a function that opens the store on the same underlying storage, so it can
//! check what survives a reopen. Suites panic on the first broken promise.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use super::Seq;
use super::TenantId;
use super::auth::{AuditEvent, AuditFilter, AuthStore, NewApiKey, Scope, Within};
use super::graph::{Direction, GraphEdge, GraphNode, GraphStore, GraphWrite};
use super::objects::ObjectStore;
use super::records::{Change, ChangeOp, GraphItem, ListFilter, NewRecord, RecordFilter, RecordStore, Write};
use super::text::{TextDoc, TextQuery, TextStore};
use super::vectors::{VectorPoint, VectorQuery, VectorStore};
use crate::error::ErrorCode;

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

fn record(id: &str, kind: &str, body: &str) -> NewRecord {
    NewRecord {
        id: id.into(),
        kind: kind.into(),
        body: Some(body.into()),
        metadata: serde_json::json!({"n": 1}),
        ..Default::default()
    }
}

/// A unit vector along axis `i` with a small tilt towards axis `j`.
pub fn axis_vector(dims: usize, i: usize, j: usize, tilt: f32) -> Vec<f32> {
    let mut v = vec![0.0; dims];
    v[i % dims] = 1.0;
    v[j % dims] += tilt;
    v
}

/// The change log past `after`, read until it holds `want` entries. On a shared server the log's
/// horizon can stay for a moment behind a commit (another database's transaction ending while the
/// horizon is read): a delay, never a skip, so readers poll and so does the suite.
async fn settled_changes(store: &dyn RecordStore, after: Seq, limit: usize, want: usize) -> Vec<Change> {
    let mut changes = store.changes_since(after, limit).await.unwrap();
    for _ in 0..400 {
        if changes.len() >= want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        changes = store.changes_since(after, limit).await.unwrap();
    }
    changes
}

/// The change log's head once it has reached `at_least` (see [`settled_changes`]).
async fn settled_head(store: &dyn RecordStore, at_least: Seq) -> Seq {
    let mut head = store.head_seq().await.unwrap();
    for _ in 0..400 {
        if head >= at_least {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        head = store.head_seq().await.unwrap();
    }
    head
}

pub async fn record_store_suite<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn RecordStore>>,
{
    let store = open().await;
    let (a, b) = (tenant("suite-a"), tenant("suite-b"));
    assert_eq!(store.head_seq().await.unwrap(), 0, "a new store has an empty change log");

    // Writes are atomic batches with one change entry each, in order.
    let mut with_vector = record("r1", "note", "first body");
    with_vector.vector = Some(axis_vector(4, 0, 1, 0.1));
    with_vector.tags = vec!["x".into()];
    with_vector.graph = Some(GraphItem::Node { label: "person".into(), name: "Ada".into() });
    let receipt = store
        .write(&a, vec![Write::Upsert(with_vector.clone()), Write::Upsert(record("r2", "note", "second"))])
        .await
        .unwrap();
    assert_eq!(receipt.written.len(), 2);
    assert!(receipt.written[0].seq < receipt.written[1].seq, "sequence numbers increase");
    assert_eq!(receipt.seq, receipt.written[1].seq);
    assert_ne!(receipt.written[0].key, receipt.written[1].key);
    let r1 = store.get(&a, "r1").await.unwrap().expect("r1 stored");
    assert_eq!(r1.vector.as_deref(), with_vector.vector.as_deref(), "vectors round-trip exactly");
    assert_eq!(r1.graph, with_vector.graph);
    assert_eq!(r1.tags, vec!["x".to_string()]);
    assert_eq!(r1.metadata, serde_json::json!({"n": 1}));
    assert_eq!(r1.version, 1);

    // Upsert keeps key and created_at, bumps version.
    let receipt2 = store.write(&a, vec![Write::Upsert(record("r1", "note", "changed"))]).await.unwrap();
    let r1b = store.get(&a, "r1").await.unwrap().unwrap();
    assert_eq!(r1b.key, r1.key);
    assert_eq!(r1b.version, 2);
    assert_eq!(r1b.created_at, r1.created_at);
    assert_eq!(r1b.body.as_deref(), Some("changed"));
    assert!(r1b.vector.is_none(), "an upsert replaces the whole record");
    assert!(receipt2.seq > receipt.seq);

    // Tenant isolation.
    store.write(&b, vec![Write::Upsert(record("r1", "note", "b's own r1"))]).await.unwrap();
    assert_eq!(store.get(&a, "r1").await.unwrap().unwrap().body.as_deref(), Some("changed"));
    assert_eq!(store.get(&b, "r1").await.unwrap().unwrap().body.as_deref(), Some("b's own r1"));
    assert!(store.get(&b, "r2").await.unwrap().is_none(), "b cannot read a's r2");
    assert_eq!(store.count(&a).await.unwrap(), 2);
    assert_eq!(store.count(&b).await.unwrap(), 1);
    let b_key = store.get(&b, "r1").await.unwrap().unwrap().key;
    assert!(store.get_by_keys(&a, &[b_key]).await.unwrap().is_empty(), "keys do not cross tenants");
    let asked = ["r2".to_string(), "nope".to_string(), "r1".to_string()];
    let many: Vec<String> = store.get_many(&a, &asked).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(many, vec!["r2", "r1"], "in the order asked, the missing left out");
    let theirs: Vec<String> = store.get_many(&b, &asked).await.unwrap().into_iter().map(|r| r.body.unwrap()).collect();
    assert_eq!(theirs, vec!["b's own r1"], "ids do not cross tenants");

    // Delete: logged once; deleting an absent id logs nothing.
    let head = store.head_seq().await.unwrap();
    let del = store.write(&a, vec![Write::Delete { id: "r2".into() }]).await.unwrap();
    assert_eq!(del.written.len(), 1);
    assert_eq!(del.written[0].op, ChangeOp::Delete);
    let none = store.write(&a, vec![Write::Delete { id: "nope".into() }]).await.unwrap();
    assert!(none.written.is_empty());
    assert!(del.seq > head);
    assert_eq!(none.seq, del.seq, "an empty receipt reports the head");
    assert!(store.get(&a, "r2").await.unwrap().is_none());

    // The change log carries each record's current state; deleted records have none.
    let changes = settled_changes(&*store, 0, 100, 5).await;
    assert_eq!(changes.len(), 5);
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    let first = &changes[0];
    assert_eq!((first.id.as_str(), first.tenant.as_str()), ("r1", "suite-a"));
    assert_eq!(first.record.as_ref().unwrap().version, 2, "replay sees the current state");
    let r2_changes: Vec<_> = changes.iter().filter(|c| c.id == "r2").collect();
    assert!(r2_changes.iter().all(|c| c.record.is_none()));
    assert_eq!(r2_changes.last().unwrap().op, ChangeOp::Delete);
    assert_eq!(settled_changes(&*store, changes[2].seq, 100, 2).await.len(), 2);
    assert_eq!(settled_changes(&*store, 0, 2, 2).await.len(), 2, "limit is honoured");

    // Keys are never reused, even after the newest record is deleted.
    let r3 = store.write(&a, vec![Write::Upsert(record("r3", "task", "third"))]).await.unwrap();
    store.write(&a, vec![Write::Delete { id: "r3".into() }]).await.unwrap();
    let r4 = store.write(&a, vec![Write::Upsert(record("r4", "task", "fourth"))]).await.unwrap();
    assert!(r4.written[0].key > r3.written[0].key);

    // Listing: by kind, keyset pagination.
    for i in 0..5 {
        store.write(&a, vec![Write::Upsert(record(&format!("p{i}"), "page", "x"))]).await.unwrap();
    }
    let page1 = store.list(&a, &ListFilter { kind: Some("page".into()), after_key: None, limit: 3 }).await.unwrap();
    assert_eq!(page1.len(), 3);
    let page2 = store
        .list(&a, &ListFilter { kind: Some("page".into()), after_key: Some(page1[2].key), limit: 3 })
        .await
        .unwrap();
    assert_eq!(page2.len(), 2);
    assert!(page2.iter().all(|r| r.kind == "page" && r.key > page1[2].key));
    assert!(
        store.list(&b, &ListFilter { kind: Some("page".into()), after_key: None, limit: 10 }).await.unwrap().is_empty()
    );

    // Exact vector search: nearest first, scoped to tenant and kind.
    let dims = 4;
    for (id, i) in [("v0", 0), ("v1", 1), ("v2", 2)] {
        let mut r = record(id, "vec", "v");
        r.vector = Some(axis_vector(dims, i, i + 1, 0.05));
        store.write(&a, vec![Write::Upsert(r)]).await.unwrap();
    }
    let mut other = record("v9", "vec", "v");
    other.vector = Some(axis_vector(dims, 1, 1, 0.0));
    store.write(&b, vec![Write::Upsert(other)]).await.unwrap();
    let hits = store.nearest_exact(&a, &RecordFilter::kinds(&["vec"]), &axis_vector(dims, 1, 0, 0.0), 2).await.unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].id, "v1");
    assert!(hits[0].distance <= hits[1].distance);
    assert!(hits.iter().all(|h| h.id != "v9"));

    // Filters on tags, metadata and dates, shared by exact search and key selection.
    let tagged = |id: &str, tags: &[&str], meta: serde_json::Value, i: usize| {
        let mut r = record(id, "filtered", "f");
        r.tags = tags.iter().map(|t| t.to_string()).collect();
        r.metadata = meta;
        r.vector = Some(axis_vector(dims, i, i, 0.0));
        Write::Upsert(r)
    };
    store
        .write(
            &a,
            vec![
                tagged(
                    "f1",
                    &["red", "big"],
                    serde_json::json!({"collection": "c1", "n": 3, "ok": true, "date": "2024-05-01"}),
                    0,
                ),
                tagged(
                    "f2",
                    &["red"],
                    serde_json::json!({"collection": "c2", "n": 4, "ok": false, "date": "2023-01-01T10:00:00Z"}),
                    1,
                ),
                tagged("f3", &["big"], serde_json::json!({"collection": "c1", "n": 3}), 2),
            ],
        )
        .await
        .unwrap();
    let ids = |keys: Vec<u64>, all: &[super::records::Record]| -> Vec<String> {
        let mut out: Vec<String> = all.iter().filter(|r| keys.contains(&r.key)).map(|r| r.id.clone()).collect();
        out.sort();
        out
    };
    let listed =
        store.list(&a, &ListFilter { kind: Some("filtered".into()), after_key: None, limit: 10 }).await.unwrap();
    let select = |f: RecordFilter| {
        let store = store.clone();
        let a = a.clone();
        async move { store.keys_matching(&a, &f, 100).await.unwrap() }
    };
    let base = RecordFilter::kinds(&["filtered"]);
    assert_eq!(
        ids(select(RecordFilter { tags: vec!["red".into(), "big".into()], ..base.clone() }).await, &listed),
        vec!["f1"]
    );
    assert_eq!(
        ids(select(RecordFilter { metadata: vec![("collection".into(), "c1".into())], ..base.clone() }).await, &listed),
        vec!["f1", "f3"]
    );
    assert_eq!(
        ids(select(RecordFilter { metadata: vec![("n".into(), "4".into())], ..base.clone() }).await, &listed),
        vec!["f2"]
    );
    assert_eq!(
        ids(select(RecordFilter { metadata: vec![("ok".into(), "true".into())], ..base.clone() }).await, &listed),
        vec!["f1"]
    );
    let from = super::records::parse_date("2024-01-01").unwrap();
    let to = super::records::parse_date("2024-12-31").unwrap();
    assert_eq!(
        ids(select(RecordFilter { date_from: Some(from), date_to: Some(to), ..base.clone() }).await, &listed),
        vec!["f1"]
    );
    assert!(
        select(RecordFilter { metadata: vec![("collection".into(), "c1".into())], ..base.clone() }).await.len() == 2
    );
    assert!(store.keys_matching(&b, &base, 100).await.unwrap().is_empty(), "filters never cross tenants");
    let counts = store.count_by(&a, &base, "collection").await.unwrap();
    assert_eq!(counts, vec![("c1".to_string(), 2), ("c2".to_string(), 1)]);
    let all_keys = store.keys_matching(&a, &base, 100).await.unwrap();
    assert!(all_keys.windows(2).all(|w| w[0] < w[1]), "key order");
    let after =
        store.keys_matching(&a, &RecordFilter { after_key: Some(all_keys[0]), ..base.clone() }, 100).await.unwrap();
    assert_eq!(after, all_keys[1..].to_vec());
    let near = store
        .nearest_exact(
            &a,
            &RecordFilter { metadata: vec![("collection".into(), "c1".into())], ..base.clone() },
            &axis_vector(dims, 2, 2, 0.0),
            5,
        )
        .await
        .unwrap();
    assert_eq!(near.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), vec!["f3", "f1"]);

    // Filters follow updates and deletes, combine (with a common term beside a rare one), and
    // still match values too long for an index.
    let long = "x".repeat(200);
    store
        .write(
            &a,
            vec![
                tagged("f2", &["blue"], serde_json::json!({"collection": "c1", "n": 4, "note": long}), 1),
                Write::Delete { id: "f3".into() },
            ],
        )
        .await
        .unwrap();
    let last = store.write(&b, vec![tagged("g1", &["red"], serde_json::json!({"collection": "c1"}), 0)]).await.unwrap();
    let listed =
        store.list(&a, &ListFilter { kind: Some("filtered".into()), after_key: None, limit: 10 }).await.unwrap();
    let c1 = || ("collection".to_string(), "c1".to_string());
    assert_eq!(ids(select(RecordFilter { metadata: vec![c1()], ..base.clone() }).await, &listed), vec!["f1", "f2"]);
    assert!(
        select(RecordFilter { metadata: vec![("collection".into(), "c2".into())], ..base.clone() }).await.is_empty(),
        "an updated value no longer matches its old one"
    );
    assert_eq!(ids(select(RecordFilter { tags: vec!["red".into()], ..base.clone() }).await, &listed), vec!["f1"]);
    assert_eq!(ids(select(RecordFilter { tags: vec!["blue".into()], ..base.clone() }).await, &listed), vec!["f2"]);
    assert_eq!(
        ids(select(RecordFilter { metadata: vec![c1(), ("n".into(), "4".into())], ..base.clone() }).await, &listed),
        vec!["f2"]
    );
    assert_eq!(
        ids(select(RecordFilter { metadata: vec![("note".into(), long.clone())], ..base.clone() }).await, &listed),
        vec!["f2"]
    );
    assert!(
        select(RecordFilter {
            metadata: vec![c1(), ("n".into(), "3".into())],
            tags: vec!["blue".into()],
            ..base.clone()
        })
        .await
        .is_empty()
    );

    // Scan covers every tenant in key order; stats count records.
    let all = store.scan(0, 1000).await.unwrap();
    assert!(all.windows(2).all(|w| w[0].key < w[1].key));
    assert_eq!(all.len() as u64, store.stats().await.unwrap().items);
    assert!(all.iter().any(|r| r.tenant == b));

    // Pruning keeps the head and the later entries.
    let head = settled_head(&*store, last.seq).await;
    assert_eq!(head, last.seq);
    store.prune_changes(head - 1).await.unwrap();
    assert_eq!(settled_changes(&*store, 0, 100, 1).await.len(), 1);
    assert_eq!(settled_head(&*store, head).await, head, "pruning never lowers the head");

    // Everything acknowledged survives a reopen.
    drop(store);
    let store = open().await;
    assert_eq!(store.get(&a, "r1").await.unwrap().unwrap().version, 2);
    assert_eq!(settled_head(&*store, head).await, head);
    let next = store.write(&a, vec![Write::Upsert(record("after", "note", "x"))]).await.unwrap();
    assert!(next.seq > head, "sequence numbers continue after a reopen");

    // Leases: one owner at a time until it expires; the token grows when it changes hands.
    let ttl = std::time::Duration::from_millis(400);
    let t1 = store.acquire_lease("suite", "node-a", ttl).await.unwrap().expect("a new lease is free");
    assert_eq!(store.acquire_lease("suite", "node-b", ttl).await.unwrap(), None, "held by node-a");
    assert_eq!(store.acquire_lease("suite", "node-a", ttl).await.unwrap(), Some(t1), "renewing keeps the token");
    assert!(store.acquire_lease("other", "node-b", ttl).await.unwrap().is_some(), "leases are independent");
    tokio::time::sleep(ttl + std::time::Duration::from_millis(200)).await;
    let t2 = store.acquire_lease("suite", "node-b", ttl).await.unwrap().expect("an expired lease is free");
    assert!(t2 > t1, "a new holder gets a greater token");
    assert_eq!(store.acquire_lease("suite", "node-a", ttl).await.unwrap(), None);
    assert_eq!(store.lease_holder("suite").await.unwrap().as_deref(), Some("node-b"));
    assert_eq!(store.lease_holder("never-taken").await.unwrap(), None);
    store.release_lease("suite", "node-a").await.unwrap();
    assert_eq!(store.acquire_lease("suite", "node-a", ttl).await.unwrap(), None, "only the holder releases");
    store.release_lease("suite", "node-b").await.unwrap();
    assert_eq!(store.lease_holder("suite").await.unwrap(), None, "a released lease has no holder");
    let t3 = store.acquire_lease("suite", "node-a", ttl).await.unwrap().expect("a released lease is free");
    assert!(t3 > t2);
}

pub async fn vector_store_suite<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn VectorStore>>,
{
    let store = open().await;
    let dims = store.dimensions();
    let (a, b) = (tenant("suite-a"), tenant("suite-b"));
    let point = |key, t: &TenantId, kind: &str, i, j, tilt| VectorPoint {
        key,
        tenant: t.clone(),
        kind: kind.into(),
        vector: axis_vector(dims, i, j, tilt),
    };
    assert_eq!(store.committed_seq().await.unwrap(), 0);
    store
        .upsert(
            vec![
                point(1, &a, "doc", 0, 1, 0.1),
                point(2, &a, "doc", 1, 2, 0.1),
                point(3, &a, "memory", 0, 2, 0.3),
                point(4, &b, "doc", 0, 1, 0.0),
            ],
            1,
        )
        .await
        .unwrap();
    let query = |t: &TenantId, k, kinds: Option<Vec<String>>| VectorQuery {
        tenant: t.clone(),
        vector: axis_vector(dims, 0, 0, 0.0),
        k,
        kinds,
        predicate: None,
    };
    let hits = store.search(query(&a, 3, None)).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.key).collect::<Vec<_>>(), vec![1, 3, 2], "best first");
    assert!(hits[0].score > hits[1].score && hits[1].score > hits[2].score);
    assert!(hits[0].score <= 1.0001 && hits[0].score > 0.9);
    assert!(store.search(query(&a, 10, None)).await.unwrap().iter().all(|h| h.key != 4), "tenant isolation");
    assert_eq!(store.search(query(&b, 10, None)).await.unwrap().len(), 1);
    let docs = store.search(query(&a, 10, Some(vec!["memory".into()]))).await.unwrap();
    assert_eq!(docs.iter().map(|h| h.key).collect::<Vec<_>>(), vec![3], "kind filter");
    let mut with_predicate = query(&a, 10, None);
    with_predicate.predicate = Some(Arc::new(|key| key % 2 == 0));
    assert_eq!(store.search(with_predicate).await.unwrap().iter().map(|h| h.key).collect::<Vec<_>>(), vec![2]);
    assert!(store.search(query(&tenant("nobody"), 10, None)).await.unwrap().is_empty());
    // Exact scoring among given keys: best first, the tenant's own, unknown keys skipped.
    let among = store.nearest_among(&a, vec![2, 3, 4, 99], axis_vector(dims, 0, 0, 0.0), 10).await.unwrap();
    assert_eq!(among.iter().map(|h| h.key).collect::<Vec<_>>(), vec![3, 2]);
    let searched = store.search(query(&a, 3, None)).await.unwrap();
    let same = |key| searched.iter().find(|h| h.key == key).unwrap().score;
    assert!((among[0].score - same(3)).abs() < 1e-3 && (among[1].score - same(2)).abs() < 1e-3, "cosine, as search");
    assert_eq!(store.nearest_among(&a, vec![1, 2, 3], axis_vector(dims, 0, 0, 0.0), 1).await.unwrap().len(), 1);
    assert!(store.nearest_among(&b, vec![1, 2, 3], axis_vector(dims, 0, 0, 0.0), 10).await.unwrap().is_empty());

    // Upsert replaces; delete removes.
    store.upsert(vec![point(1, &a, "doc", 3, 3, 0.0)], 2).await.unwrap();
    let hits = store.search(query(&a, 1, None)).await.unwrap();
    assert_eq!(hits[0].key, 3, "key 1 moved away from the query");
    store.delete(vec![3, 99], 3).await.unwrap();
    assert_eq!(store.keys().await.unwrap(), vec![1, 2, 4]);

    // Bad vectors are refused.
    let mut bad = point(5, &a, "doc", 0, 0, 0.0);
    bad.vector.push(1.0);
    assert!(store.upsert(vec![bad], 4).await.is_err(), "wrong dimensions refused");
    let mut nan = point(5, &a, "doc", 0, 0, 0.0);
    nan.vector[0] = f32::NAN;
    assert!(store.upsert(vec![nan], 5).await.is_err(), "NaN refused");

    // Commit makes state and position durable together.
    store.commit(7).await.unwrap();
    store.upsert(vec![point(6, &a, "doc", 2, 2, 0.0)], 8).await.unwrap(); // applied, not committed
    drop(store);
    let store = open().await;
    assert_eq!(store.committed_seq().await.unwrap(), 7);
    assert_eq!(store.keys().await.unwrap(), vec![1, 2, 4], "uncommitted changes are replayed, not kept");
    assert_eq!(store.search(query(&b, 10, None)).await.unwrap()[0].key, 4, "tenants survive a reopen");
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.items, 3);

    store.clear().await.unwrap();
    assert!(store.keys().await.unwrap().is_empty());
    assert_eq!(store.committed_seq().await.unwrap(), 0);
}

/// Dimensions of the vectors [`small_tenant_search_suite`] writes.
pub const SMALL_TENANT_DIMENSIONS: usize = 48;

/// A tenant of at most `exact_below` vectors is searched exactly: a store built with history
/// (first versions replaced, extra points deleted, another tenant) and one filled fresh in
/// another order both answer every query as brute force does, for the tenant asked only. `open`
/// gives an empty store (of [`SMALL_TENANT_DIMENSIONS`], with the default `exact_below`) each time
/// it is called; a graph small enough to miss neighbours (connectivity 8, expansion 16) shows
/// that the answers do not come from it.
pub async fn small_tenant_search_suite<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn VectorStore>>,
{
    let dims = SMALL_TENANT_DIMENSIONS;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut random = move || {
        (0..dims)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2001) as f32 / 1000.0 - 1.0
            })
            .collect::<Vec<f32>>()
    };
    let (a, b) = (tenant("exact-a"), tenant("exact-b"));
    let point = |key: u64, tenant: &TenantId, vector: Vec<f32>| VectorPoint {
        key,
        tenant: tenant.clone(),
        kind: if key.is_multiple_of(3) { "memory".into() } else { "doc".into() },
        vector,
    };
    let finals: Vec<VectorPoint> = (1..=6000).map(|k| point(k, &a, random())).collect();
    let others: Vec<VectorPoint> = (20_001..=20_300).map(|k| point(k, &b, random())).collect();

    // One built with history: first versions, replaced; extra points, deleted.
    let built = open().await;
    assert_eq!(built.dimensions(), dims);
    built.upsert((1..=6000).map(|k| point(k, &a, random())).collect(), 1).await.unwrap();
    built.upsert((10_001..=12_000).map(|k| point(k, &a, random())).collect(), 2).await.unwrap();
    built.upsert(finals.clone(), 3).await.unwrap();
    built.delete((10_001..=12_000).collect(), 4).await.unwrap();
    built.upsert(others.clone(), 5).await.unwrap();
    built.commit(5).await.unwrap();
    // The other fresh, the other tenant first and the points in reverse.
    let fresh = open().await;
    fresh.upsert(others.clone(), 1).await.unwrap();
    fresh.upsert(finals.iter().rev().cloned().collect(), 2).await.unwrap();
    fresh.commit(2).await.unwrap();

    let keys = |hits: &[super::vectors::VectorHit]| hits.iter().map(|h| h.key).collect::<Vec<u64>>();
    for q in 0..100u32 {
        let vector = random();
        let kinds = q.is_multiple_of(4).then(|| vec!["memory".to_string()]);
        let query =
            || VectorQuery { tenant: a.clone(), vector: vector.clone(), k: 10, kinds: kinds.clone(), predicate: None };
        let mut brute: Vec<(u64, f32)> = finals
            .iter()
            .filter(|p| kinds.is_none() || p.kind == "memory")
            .map(|p| (p.key, super::vectors::cosine(&p.vector, &vector)))
            .collect();
        brute.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        let expected: Vec<u64> = brute.iter().take(10).map(|(k, _)| *k).collect();
        assert_eq!(keys(&built.search(query()).await.unwrap()), expected, "query {q}, the store with history");
        assert_eq!(keys(&fresh.search(query()).await.unwrap()), expected, "query {q}, the fresh store");
    }
}

fn text_doc(key: u64, t: &TenantId, kind: &str, title: &str, body: &str, tags: &[&str]) -> TextDoc {
    TextDoc {
        key,
        tenant: t.clone(),
        kind: kind.into(),
        title: title.into(),
        body: body.into(),
        tags: tags.iter().map(|s| s.to_string()).collect(),
        facets: vec![format!("n={}", key % 2)],
        date: key as i64 * 1000,
    }
}

pub async fn text_store_suite<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn TextStore>>,
{
    let store = open().await;
    let (a, b) = (tenant("suite-a"), tenant("suite-b"));
    store
        .upsert(
            vec![
                text_doc(
                    1,
                    &a,
                    "doc",
                    "Gardening notes",
                    "The gardener runs the greenhouse and waters tomatoes daily.",
                    &["home"],
                ),
                text_doc(2, &a, "doc", "Running a marathon", "Training plans for runners.", &["sport"]),
                text_doc(3, &a, "memory", "Lunch", "Ada prefers tomatoes in her salad.", &["home", "food"]),
                text_doc(4, &b, "doc", "Running secrets", "Tenant b runs too.", &[]),
            ],
            1,
        )
        .await
        .unwrap();
    let q = |t: &TenantId, text: &str| TextQuery::new(t.clone(), text, 10);
    assert!(store.search(q(&a, "tomatoes")).await.unwrap().is_empty(), "invisible before commit");
    store.commit(3).await.unwrap();

    // Stemming: "running" finds "runs" and "runners"; the title match ranks first.
    let hits = store.search(q(&a, "running")).await.unwrap();
    let keys: Vec<u64> = hits.iter().map(|h| h.key).collect();
    assert_eq!(keys.first(), Some(&2), "title match outranks body match: {keys:?}");
    assert!(keys.contains(&1), "stemmed body match: {keys:?}");
    assert!(!keys.contains(&4), "tenant isolation");
    let bare = store.search(TextQuery { snippets: false, ..q(&a, "running") }).await.unwrap();
    assert_eq!(
        bare.iter().map(|h| (h.key, h.score)).collect::<Vec<_>>(),
        hits.iter().map(|h| (h.key, h.score)).collect::<Vec<_>>(),
        "without snippets: the same hits"
    );
    assert!(bare.iter().all(|h| h.snippet.text.is_empty()) && hits.iter().any(|h| !h.snippet.text.is_empty()));
    let mut light_titles = q(&a, "running");
    light_titles.title_weight = 0.01;
    let keys: Vec<u64> = store.search(light_titles).await.unwrap().iter().map(|h| h.key).collect();
    assert_eq!(keys.first(), Some(&1), "with titles weighed lightly the body match leads: {keys:?}");

    // Snippets highlight the matched words.
    let hits = store.search(q(&a, "greenhouse")).await.unwrap();
    assert_eq!(hits.len(), 1);
    let snippet = &hits[0].snippet;
    assert!(!snippet.highlights.is_empty());
    let (s, e) = snippet.highlights[0];
    assert_eq!(snippet.text[s..e].to_lowercase(), "greenhouse");

    // Filters: kinds and tags.
    let mut kinds = q(&a, "tomatoes");
    kinds.kinds = Some(vec!["memory".into()]);
    assert_eq!(store.search(kinds).await.unwrap().iter().map(|h| h.key).collect::<Vec<_>>(), vec![3]);
    let mut tags = q(&a, "tomatoes");
    tags.tags = vec!["home".into(), "food".into()];
    assert_eq!(store.search(tags).await.unwrap().iter().map(|h| h.key).collect::<Vec<_>>(), vec![3]);

    // Facets and date ranges.
    let mut facets = q(&a, "tomatoes running");
    facets.facets = vec!["n=1".into()];
    let mut keys: Vec<u64> = store.search(facets).await.unwrap().iter().map(|h| h.key).collect();
    keys.sort();
    assert_eq!(keys, vec![1, 3]);
    let mut dated = q(&a, "tomatoes running");
    dated.date_from = Some(2000);
    dated.date_to = Some(2999);
    assert_eq!(store.search(dated).await.unwrap().iter().map(|h| h.key).collect::<Vec<_>>(), vec![2]);

    // Snippets for chosen documents, whether or not they matched.
    let snippets = store.snippets(&a, "greenhouse", vec![1, 2, 4]).await.unwrap();
    assert_eq!(snippets.len(), 2, "key 4 belongs to another tenant");
    assert!(!snippets.iter().find(|(k, _)| *k == 1).unwrap().1.highlights.is_empty());
    assert!(snippets.iter().find(|(k, _)| *k == 2).unwrap().1.highlights.is_empty());

    // Query syntax: phrases, required and excluded terms; malformed input is not an error.
    assert_eq!(
        store.search(q(&a, "\"waters tomatoes\"")).await.unwrap().iter().map(|h| h.key).collect::<Vec<_>>(),
        vec![1]
    );
    let excluded = store.search(q(&a, "tomatoes -salad")).await.unwrap();
    assert_eq!(excluded.iter().map(|h| h.key).collect::<Vec<_>>(), vec![1]);
    assert!(store.search(q(&a, "tomatoes AND (")).await.is_ok());
    assert!(
        store.search(q(&a, "tenant:suite-b runs")).await.unwrap().iter().all(|h| h.key != 4),
        "field syntax cannot escape the tenant"
    );

    // Pagination.
    let mut page = q(&a, "tomatoes running");
    page.limit = 1;
    page.offset = 1;
    assert_eq!(store.search(page).await.unwrap().len(), 1);

    // Replace and delete.
    store.upsert(vec![text_doc(1, &a, "doc", "Gardening notes", "Only roses now.", &[])], 4).await.unwrap();
    store.delete(vec![3], 5).await.unwrap();
    store.commit(5).await.unwrap();
    assert!(store.search(q(&a, "tomatoes")).await.unwrap().is_empty());
    assert_eq!(store.keys().await.unwrap(), vec![1, 2, 4]);

    // Durable with its position.
    store.upsert(vec![text_doc(9, &a, "doc", "uncommitted", "gone after reopen", &[])], 6).await.unwrap();
    drop(store);
    let store = open().await;
    assert_eq!(store.committed_seq().await.unwrap(), 5);
    assert_eq!(store.keys().await.unwrap(), vec![1, 2, 4]);
    assert_eq!(store.stats().await.unwrap().items, 3);
    store.clear().await.unwrap();
    assert!(store.keys().await.unwrap().is_empty());
    assert_eq!(store.committed_seq().await.unwrap(), 0);
}

fn node(key: u64, t: &TenantId, id: &str, name: &str) -> GraphWrite {
    GraphWrite::Node(GraphNode {
        key,
        tenant: t.clone(),
        id: id.into(),
        label: "person".into(),
        name: name.into(),
        properties: serde_json::json!({}),
        updated_at: 0,
    })
}

fn edge(key: u64, t: &TenantId, id: &str, label: &str, source: &str, target: &str) -> GraphWrite {
    GraphWrite::Edge(GraphEdge {
        key,
        tenant: t.clone(),
        id: id.into(),
        label: label.into(),
        source: source.into(),
        target: target.into(),
        properties: serde_json::json!({"since": 2020}),
        updated_at: 0,
    })
}

pub async fn graph_store_suite<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn GraphStore>>,
{
    let store = open().await;
    let (a, b) = (tenant("suite-a"), tenant("suite-b"));
    // a: ada -knows-> bob -knows-> cy -works_with-> dee ; ada -manages-> eve (eve has no node yet)
    store
        .apply(
            vec![
                node(1, &a, "ada", "Ada"),
                node(2, &a, "bob", "Bob"),
                node(3, &a, "cy", "Cy"),
                node(4, &a, "dee", "Dee"),
                edge(10, &a, "e1", "knows", "ada", "bob"),
                edge(11, &a, "e2", "knows", "bob", "cy"),
                edge(12, &a, "e3", "works_with", "cy", "dee"),
                edge(13, &a, "e4", "manages", "ada", "eve"),
                node(20, &b, "ada", "Other Ada"),
                edge(21, &b, "e1", "knows", "ada", "zed"),
            ],
            1,
        )
        .await
        .unwrap();
    assert_eq!(store.node(&a, "ada").await.unwrap().unwrap().name, "Ada");
    assert_eq!(store.node(&b, "ada").await.unwrap().unwrap().name, "Other Ada", "tenants are separate graphs");
    assert!(store.node(&a, "zed").await.unwrap().is_none());
    // Keys a store can tell are its nodes' own: none of another tenant, none for an id that only
    // an edge names.
    let asked: Vec<String> = ["ada", "bob", "eve", "zed"].map(String::from).to_vec();
    for (id, key) in store.node_keys(&a, &asked).await.unwrap() {
        assert_eq!(Some(key), store.node(&a, &id).await.unwrap().map(|n| n.key), "the key of {id}");
    }

    let out = store.neighbours(&a, "ada", Direction::Out, None).await.unwrap();
    assert_eq!(out.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), vec!["bob", "eve"]);
    assert!(out[1].node.is_none(), "an edge may name a node that does not exist yet");
    assert_eq!(out[0].edge.properties["since"], 2020);
    let incoming = store.neighbours(&a, "bob", Direction::In, None).await.unwrap();
    assert_eq!(incoming.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), vec!["ada"]);
    let labelled = store.neighbours(&a, "ada", Direction::Both, Some("manages")).await.unwrap();
    assert_eq!(labelled.len(), 1);

    let hops = store.k_hop(&a, "ada", 2, 100).await.unwrap();
    let ids: Vec<(&str, usize)> = hops.iter().map(|r| (r.id.as_str(), r.depth)).collect();
    assert_eq!(ids, vec![("bob", 1), ("eve", 1), ("cy", 2)]);
    assert_eq!(store.k_hop(&a, "ada", 3, 2).await.unwrap().len(), 2, "limit is honoured");

    let path = store.shortest_path(&a, "ada", "dee").await.unwrap().unwrap();
    assert_eq!(path, vec!["ada", "bob", "cy", "dee"]);
    assert_eq!(store.shortest_path(&a, "dee", "ada").await.unwrap().unwrap().len(), 4, "paths ignore direction");
    assert!(store.shortest_path(&a, "ada", "zed").await.unwrap().is_none(), "no path across tenants");

    // Every edge at some nodes, each once, whichever end they are.
    let mut at: Vec<String> = store
        .edges_at(&a, &["bob".to_string(), "cy".to_string(), "nobody".to_string()])
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    at.sort();
    assert_eq!(at, vec!["e1", "e2", "e3"]);
    let edge_at = store.edges_at(&a, &["ada".to_string()]).await.unwrap();
    assert!(edge_at.iter().any(|e| e.id == "e1" && e.properties["since"] == 2020 && e.source == "ada"));
    assert!(store.edges_at(&b, &["bob".to_string()]).await.unwrap().is_empty(), "no edges across tenants");
    // Only the edges with both ends among the nodes.
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut within: Vec<String> = store
        .edges_within(&a, &ids(&["bob", "cy", "dee", "nobody"]))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    within.sort();
    assert_eq!(within, vec!["e2", "e3"]);
    assert!(store.edges_within(&a, &ids(&["ada", "cy"])).await.unwrap().is_empty());
    assert!(store.edges_within(&b, &ids(&["bob", "cy"])).await.unwrap().is_empty(), "no edges across tenants");
    // Visiting lends the same edges, each once.
    for asked in [ids(&["bob", "cy", "nobody"]), ids(&["ada"]), ids(&["bob", "cy", "dee", "nobody"])] {
        let mut lent = Vec::new();
        store.visit_edges_at(&a, &asked, &mut |e| lent.push(e.clone())).await.unwrap();
        let mut copied = store.edges_at(&a, &asked).await.unwrap();
        lent.sort_by_key(|e| e.key);
        copied.sort_by_key(|e| e.key);
        assert_eq!(lent, copied, "visit_edges_at({asked:?})");
        let mut lent = Vec::new();
        store.visit_edges_within(&a, &asked, &mut |e| lent.push(e.clone())).await.unwrap();
        let mut copied = store.edges_within(&a, &asked).await.unwrap();
        lent.sort_by_key(|e| e.key);
        copied.sort_by_key(|e| e.key);
        assert_eq!(lent, copied, "visit_edges_within({asked:?})");
    }

    // eve appears: the dangling edge now reaches her.
    store.apply(vec![node(5, &a, "eve", "Eve")], 2).await.unwrap();
    let out = store.neighbours(&a, "ada", Direction::Out, Some("manages")).await.unwrap();
    assert_eq!(out[0].node.as_ref().unwrap().name, "Eve");

    // Re-pointing an edge and deleting a node.
    store.apply(vec![edge(11, &a, "e2", "knows", "bob", "dee"), GraphWrite::Delete(3)], 3).await.unwrap();
    assert_eq!(store.shortest_path(&a, "ada", "dee").await.unwrap().unwrap(), vec!["ada", "bob", "dee"]);
    assert!(store.node(&a, "cy").await.unwrap().is_none());
    let cy = store.neighbours(&a, "cy", Direction::Both, None).await.unwrap();
    assert_eq!(cy.len(), 1, "cy's remaining edge still names it");

    store.commit(42).await.unwrap();
    drop(store);
    let store = open().await;
    assert_eq!(store.committed_seq().await.unwrap(), 42);
    assert_eq!(store.keys().await.unwrap(), vec![1, 2, 4, 5, 10, 11, 12, 13, 20, 21]);
    assert_eq!(store.shortest_path(&a, "ada", "dee").await.unwrap().unwrap(), vec!["ada", "bob", "dee"]);
    store.clear().await.unwrap();
    assert!(store.keys().await.unwrap().is_empty());
    assert!(store.node(&a, "ada").await.unwrap().is_none());
}

fn body(parts: &[&'static [u8]]) -> super::objects::ByteStream {
    let chunks: Vec<std::io::Result<Bytes>> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
    futures::stream::iter(chunks).boxed()
}

async fn read_all(mut stream: super::objects::ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

pub async fn object_store_suite<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn ObjectStore>>,
{
    let store = open().await;
    let (a, b) = (tenant("suite-a"), tenant("suite-b"));
    let info = store.put(&a, "docs/report.txt", body(&[b"hello ", b"world"])).await.unwrap();
    assert_eq!(info.size, 11);
    // sha256("hello world")
    assert_eq!(info.sha256.as_deref(), Some("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"));
    let (meta, stream) = store.get(&a, "docs/report.txt").await.unwrap();
    assert_eq!(meta.size, 11);
    assert_eq!(read_all(stream).await, b"hello world");
    assert_eq!(store.content_hash(&a, "docs/report.txt").await.unwrap(), info.sha256.unwrap());

    // Large objects stream through in many chunks.
    let big: &'static [u8] = Box::leak(vec![7u8; 3 * 1024 * 1024].into_boxed_slice());
    let parts: Vec<&'static [u8]> = big.chunks(64 * 1024).collect();
    let info = store.put(&a, "blobs/big.bin", body(&parts)).await.unwrap();
    assert_eq!(info.size, big.len() as u64);
    assert_eq!(read_all(store.get(&a, "blobs/big.bin").await.unwrap().1).await.len(), big.len());

    // Replace, tenant isolation, listing by prefix.
    store.put(&a, "docs/report.txt", body(&[b"v2"])).await.unwrap();
    assert_eq!(read_all(store.get(&a, "docs/report.txt").await.unwrap().1).await, b"v2");
    store.put(&b, "docs/report.txt", body(&[b"b's"])).await.unwrap();
    assert_eq!(read_all(store.get(&a, "docs/report.txt").await.unwrap().1).await, b"v2");
    store.put(&a, "docs/notes.md", body(&[b"# notes"])).await.unwrap();
    let listed: Vec<String> = store.list(&a, "docs/").await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(listed, vec!["docs/notes.md", "docs/report.txt"]);
    assert_eq!(store.list(&a, "").await.unwrap().len(), 3);
    assert_eq!(store.list(&b, "").await.unwrap().len(), 1);

    // Missing keys and bad keys.
    let missing = store.get(&a, "docs/none.txt").await.err().unwrap();
    assert_eq!(missing.code, crate::error::ErrorCode::NotFound);
    assert!(store.head(&a, "docs/none.txt").await.unwrap().is_none());
    for bad in ["", "../escape", "a//b", "a/./b", "/abs"] {
        let err = store.put(&a, bad, body(&[b"x"])).await.err().unwrap_or_else(|| panic!("{bad:?} accepted"));
        assert_eq!(err.code, crate::error::ErrorCode::InvalidRequest, "{bad:?}");
    }

    // Delete.
    assert!(store.delete(&a, "docs/notes.md").await.unwrap());
    assert!(!store.delete(&a, "docs/notes.md").await.unwrap());
    assert!(store.head(&a, "docs/notes.md").await.unwrap().is_none());

    drop(store);
    let store = open().await;
    assert_eq!(store.head(&a, "docs/report.txt").await.unwrap().unwrap().size, 2);
    assert_eq!(store.stats().await.unwrap().items, 3);
}

pub async fn job_store_suite<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn super::jobs::JobStore>>,
{
    use super::jobs::JobState;
    use std::time::Duration;
    let store = open().await;
    let (a, b) = (tenant("suite-a"), tenant("suite-b"));
    let first = store.enqueue(&a, "ingest", serde_json::json!({"n": 1}), 2).await.unwrap();
    let second = store.enqueue(&a, "ingest", serde_json::json!({"n": 2}), 1).await.unwrap();
    assert_eq!(first.state, JobState::Queued);
    assert!(store.get(&b, &first.id).await.unwrap().is_none(), "tenant isolation");
    assert_eq!(store.list(&a, None, 10).await.unwrap().len(), 2);
    assert!(store.list(&b, None, 10).await.unwrap().is_empty());

    // Claimed once, oldest first, with the attempt counted.
    let claimed = store.claim(Duration::from_secs(60)).await.unwrap().unwrap();
    assert_eq!(claimed.id, first.id);
    assert_eq!((claimed.state, claimed.attempts), (JobState::Running, 1));
    assert!(
        store
            .heartbeat(&claimed.id, serde_json::json!({"done": 1, "total": 2}), Duration::from_secs(60))
            .await
            .unwrap()
    );
    let next = store.claim(Duration::from_secs(60)).await.unwrap().unwrap();
    assert_eq!(next.id, second.id);
    assert!(store.claim(Duration::from_secs(60)).await.unwrap().is_none(), "nothing else is due");

    // Retry, then dead once attempts are used up.
    let boom = crate::error::Error::new(crate::error::ErrorCode::StoreFailure, "boom");
    let state = store.fail(&first.id, &boom, Some(chrono::Utc::now())).await.unwrap();
    assert_eq!(state, JobState::Queued);
    let again = store.claim(Duration::from_secs(60)).await.unwrap().unwrap();
    assert_eq!((again.id.as_str(), again.attempts), (first.id.as_str(), 2));
    assert_eq!(again.progress["done"], 1);
    assert_eq!(store.fail(&first.id, &boom, Some(chrono::Utc::now())).await.unwrap(), JobState::Dead);
    let dead = store.get(&a, &first.id).await.unwrap().unwrap();
    assert_eq!(dead.error.as_deref(), Some(boom.to_string().as_str()));
    assert_eq!(dead.error_code.as_deref(), Some("store_failure"), "the error's stable code is kept");

    // Completion.
    store.complete(&second.id, serde_json::json!({"ok": true})).await.unwrap();
    let done = store.get(&a, &second.id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.result, Some(serde_json::json!({"ok": true})));
    assert_eq!(store.list(&a, Some(JobState::Dead), 10).await.unwrap().len(), 1);

    // An expired lease lets another worker take the job over; a cancelled job stops.
    let third = store.enqueue(&a, "ingest", serde_json::json!({}), 3).await.unwrap();
    store.claim(Duration::from_millis(1)).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken_over = store.claim(Duration::from_secs(60)).await.unwrap().unwrap();
    assert_eq!((taken_over.id.as_str(), taken_over.attempts), (third.id.as_str(), 2));
    assert!(store.cancel(&b, &third.id).await.unwrap().is_none(), "another tenant cannot cancel it");
    assert_eq!(store.cancel(&a, &third.id).await.unwrap().unwrap().state, JobState::Cancelled);
    assert!(!store.heartbeat(&third.id, serde_json::json!({}), Duration::from_secs(60)).await.unwrap());
    assert!(store.claim(Duration::from_secs(60)).await.unwrap().is_none());

    // Work done inline is recorded as finished and is never claimed.
    let inline =
        store.record_succeeded(&a, "ingest", serde_json::json!({}), serde_json::json!({"n": 3})).await.unwrap();
    assert_eq!((inline.state, inline.result.clone()), (JobState::Succeeded, Some(serde_json::json!({"n": 3}))));
    assert!(store.get(&b, &inline.id).await.unwrap().is_none(), "tenant isolation");
    assert!(store.claim(Duration::from_secs(60)).await.unwrap().is_none());

    // Durable.
    drop(store);
    let store = open().await;
    assert_eq!(store.list(&a, None, 10).await.unwrap().len(), 4);
    assert_eq!(store.get(&a, &inline.id).await.unwrap().unwrap().state, JobState::Succeeded);

    // Workers on two handles of one queue (two nodes) claiming at once: each job goes to exactly
    // one of them, once.
    let c = tenant("suite-c");
    let handles = [store.clone(), open().await];
    let mut enqueued = std::collections::BTreeSet::new();
    for n in 0..50 {
        enqueued.insert(handles[n % 2].enqueue(&c, "ingest", serde_json::json!({"n": n}), 3).await.unwrap().id);
    }
    let claimers = (0..8).map(|i| {
        let handle = handles[i % 2].clone();
        tokio::spawn(async move {
            let mut claimed = Vec::new();
            while let Some(job) = handle.claim(Duration::from_secs(60)).await.unwrap() {
                claimed.push(job);
                tokio::task::yield_now().await;
            }
            claimed
        })
    });
    let mut claims = Vec::new();
    for claimer in futures::future::join_all(claimers).await {
        claims.extend(claimer.unwrap());
    }
    let claimed_ids: std::collections::BTreeSet<String> = claims.iter().map(|j| j.id.clone()).collect();
    assert_eq!(claims.len(), 50, "50 jobs, 50 claims: none handed out twice within its lease");
    assert_eq!(claimed_ids, enqueued, "every job claimed exactly once");
    assert!(claims.iter().all(|j| j.state == JobState::Running && j.attempts == 1 && j.tenant == c));
    for handle in &handles {
        assert!(handle.claim(Duration::from_secs(60)).await.unwrap().is_none(), "every job is leased");
    }
    for job in &claims {
        handles[1].complete(&job.id, serde_json::json!({})).await.unwrap();
    }
    assert_eq!(store.list(&c, Some(JobState::Succeeded), 100).await.unwrap().len(), 50);

    // A worker keeps its job while it heartbeats; once it stops (its node died), the job is
    // claimed again through the other handle after the lease, not before.
    let lease = Duration::from_secs(2);
    let job = handles[0].enqueue(&c, "ingest", serde_json::json!({}), 3).await.unwrap();
    assert_eq!(handles[0].claim(lease).await.unwrap().unwrap().id, job.id);
    let beating_until = std::time::Instant::now() + lease * 2;
    let mut last_beat = std::time::Instant::now();
    while std::time::Instant::now() < beating_until {
        assert!(handles[1].claim(lease).await.unwrap().is_none(), "a heartbeating worker keeps its job");
        tokio::time::sleep(lease / 10).await;
        last_beat = std::time::Instant::now();
        assert!(handles[0].heartbeat(&job.id, serde_json::json!({"beat": 1}), lease).await.unwrap());
    }
    let taken_over = loop {
        if let Some(job) = handles[1].claim(lease).await.unwrap() {
            break job;
        }
        assert!(last_beat.elapsed() < lease * 5, "a job whose worker stopped is claimed again after its lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The lease runs from when the last heartbeat reached the store, after `last_beat`.
    assert!(last_beat.elapsed() >= lease, "claimed again after {:?}, within its lease", last_beat.elapsed());
    assert_eq!((taken_over.id.as_str(), taken_over.attempts), (job.id.as_str(), 2));
    assert_eq!(taken_over.progress, serde_json::json!({"beat": 1}), "the progress reported so far is kept");
    handles[1].complete(&job.id, serde_json::json!({})).await.unwrap();
    assert_eq!(store.get(&c, &job.id).await.unwrap().unwrap().state, JobState::Succeeded);
}

pub async fn auth_store_suite<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn AuthStore>>,
{
    use chrono::{Duration, Utc};

    let store = open().await;
    // Every install starts with the default organisation and project.
    let orgs = store.list_orgs().await.unwrap();
    assert_eq!(orgs.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(), vec!["default"]);
    let default = store.get_project(&TenantId::default_tenant()).await.unwrap().expect("default project");
    assert_eq!(default.org_id, "default");

    // Organisations and projects: ids are unique, projects need their organisation.
    store.create_org("acme", "Acme").await.unwrap();
    assert_eq!(store.create_org("acme", "Again").await.unwrap_err().code, ErrorCode::Conflict);
    let (a, b) = (tenant("suite-a"), tenant("suite-b"));
    store.create_project(&a, "acme", "A").await.unwrap();
    store.create_project(&b, "default", "B").await.unwrap();
    assert_eq!(store.create_project(&a, "acme", "A").await.unwrap_err().code, ErrorCode::Conflict);
    assert_eq!(store.create_project(&tenant("x"), "nope", "X").await.unwrap_err().code, ErrorCode::NotFound);
    let all = store.list_projects(&Within::All).await.unwrap();
    assert_eq!(all.len(), 3);
    let only_a = store.list_projects(&Within::Tenant(a.clone())).await.unwrap();
    assert_eq!(only_a.iter().map(|p| p.id.clone()).collect::<Vec<_>>(), vec![a.clone()]);

    // Keys: stored with their hash; a key needs its project; ids are unique.
    let new_key = |id: &str, project: &TenantId, hash: u8| NewApiKey {
        id: id.into(),
        project: project.clone(),
        name: format!("key {id}"),
        scopes: vec![Scope::Read, Scope::Write],
        secret_hash: [hash; 32],
        expires_at: Some(Utc::now() + Duration::days(1)),
    };
    let ka = store.create_key(new_key("ka", &a, 1)).await.unwrap();
    assert_eq!(ka.scopes, vec![Scope::Read, Scope::Write]);
    assert!(ka.revoked_at.is_none() && ka.last_used_at.is_none());
    store.create_key(new_key("kb", &b, 2)).await.unwrap();
    assert_eq!(store.create_key(new_key("ka", &a, 3)).await.unwrap_err().code, ErrorCode::Conflict);
    assert_eq!(store.create_key(new_key("kx", &tenant("nope"), 3)).await.unwrap_err().code, ErrorCode::NotFound);
    let stored = store.get_key("ka").await.unwrap().unwrap();
    assert_eq!(stored.secret_hash, [1; 32]);
    assert_eq!(stored.key, ka);
    assert!(store.get_key("missing").await.unwrap().is_none());

    // Isolation: a tenant lists and revokes only its own keys.
    let listed = store.list_keys(&Within::Tenant(a.clone())).await.unwrap();
    assert_eq!(listed.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), vec!["ka"]);
    assert_eq!(store.list_keys(&Within::All).await.unwrap().len(), 2);
    assert!(store.revoke_key(&Within::Tenant(a.clone()), "kb", Utc::now()).await.unwrap().is_none());
    assert!(store.get_key("kb").await.unwrap().unwrap().key.revoked_at.is_none(), "b's key untouched");
    let first = store.revoke_key(&Within::Tenant(a.clone()), "ka", Utc::now()).await.unwrap().unwrap();
    let again = store.revoke_key(&Within::All, "ka", Utc::now() + Duration::seconds(5)).await.unwrap().unwrap();
    assert_eq!(first.revoked_at, again.revoked_at, "revoking is idempotent");

    // Audit: appended in batches, listed newest first, filtered, confined to a tenant, pruned.
    // Times are kept to the microsecond.
    let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
    let event = |minutes_ago: i64, key: Option<&str>, tenant: &TenantId, status: u16| AuditEvent {
        at: now - Duration::minutes(minutes_ago),
        principal: if key.is_some() { "key".into() } else { "anonymous".into() },
        key_id: key.map(str::to_string),
        tenant: Some(tenant.clone()),
        method: "GET".into(),
        route: "/api/v1/records/{id}".into(),
        object_id: Some("r1".into()),
        status,
        client: Some("127.0.0.1".into()),
    };
    store
        .append_audit(&[event(60, Some("kb"), &b, 200), event(30, Some("ka"), &a, 200), event(10, None, &a, 401)])
        .await
        .unwrap();
    let filter = |within: Within| AuditFilter::newest(within, 100);
    let all = store.list_audit(&filter(Within::All)).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all[0].seq > all[1].seq && all[1].seq > all[2].seq, "newest first");
    assert_eq!(all[0].event, event(10, None, &a, 401));
    let of_a = store.list_audit(&filter(Within::Tenant(a.clone()))).await.unwrap();
    assert_eq!(of_a.len(), 2);
    assert!(of_a.iter().all(|e| e.event.tenant.as_ref() == Some(&a)));
    let by_key = store.list_audit(&AuditFilter { key_id: Some("kb".into()), ..filter(Within::All) }).await.unwrap();
    assert_eq!(by_key.len(), 1);
    let by_status = store.list_audit(&AuditFilter { status: Some(401), ..filter(Within::All) }).await.unwrap();
    assert_eq!(by_status.len(), 1);
    let page = store.list_audit(&AuditFilter { limit: 1, ..filter(Within::All) }).await.unwrap();
    let next = store.list_audit(&AuditFilter { before_seq: Some(page[0].seq), ..filter(Within::All) }).await.unwrap();
    assert_eq!(next.len(), 2);
    let recent = store
        .list_audit(&AuditFilter { since: Some(now - Duration::minutes(45)), ..filter(Within::All) })
        .await
        .unwrap();
    assert_eq!(recent.len(), 2);
    // Using a key marks it.
    assert!(store.get_key("kb").await.unwrap().unwrap().key.last_used_at.is_some());
    assert_eq!(store.prune_audit(now - Duration::minutes(20)).await.unwrap(), 2);
    assert_eq!(store.list_audit(&filter(Within::All)).await.unwrap().len(), 1);

    // Everything survives a reopen.
    drop(store);
    let store = open().await;
    assert_eq!(store.list_keys(&Within::All).await.unwrap().len(), 2);
    assert!(store.get_key("ka").await.unwrap().unwrap().key.revoked_at.is_some());
    assert_eq!(store.list_projects(&Within::All).await.unwrap().len(), 3);
    assert_eq!(store.list_audit(&filter(Within::All)).await.unwrap().len(), 1);
}

/// Migration between two record stores (`source` written here, `target` empty): records land
/// as they are (keys, versions, times, vectors), a page imported twice lands the same way, a
/// re-created id replaces its old key, removals log changes, later writes get greater keys, and
/// the migration state round-trips.
pub async fn record_import_suite(source: Arc<dyn RecordStore>, target: Arc<dyn RecordStore>) {
    let (a, b) = (tenant("import-a"), tenant("import-b"));
    let mut with_vector = record("m1", "memory", "likes rowing");
    with_vector.vector = Some(axis_vector(4, 1, 2, 0.1));
    with_vector.graph = Some(GraphItem::Node { label: "person".into(), name: "Ada".into() });
    with_vector.embed = true;
    source.write(&a, vec![Write::Upsert(with_vector), Write::Upsert(record("m2", "memory", "two"))]).await.unwrap();
    source.write(&b, vec![Write::Upsert(record("d1", "document", "a document"))]).await.unwrap();
    source.write(&a, vec![Write::Upsert(record("m1", "memory", "likes sculling"))]).await.unwrap();
    let page = source.scan(0, 100).await.unwrap();
    assert_eq!(page.len(), 3);

    assert_eq!(target.migration_state().await.unwrap(), None, "no migration yet");
    let before = target.head_seq().await.unwrap();
    let seq = target.import(page.clone()).await.unwrap();
    assert!(seq > before, "an import logs changes");
    let again = target.import(page.clone()).await.unwrap();
    assert!(again > seq, "importing again logs again");
    let copied = target.scan(0, 100).await.unwrap();
    assert_eq!(copied, page, "records land as they are, once, whatever how often a page is imported");
    assert_eq!(target.get(&a, "m1").await.unwrap().unwrap().version, 2);
    assert!(target.keys_matching(&a, &RecordFilter::kinds(&["memory"]), 10).await.unwrap().len() == 2);
    let changes = target.changes_since(before, 100).await.unwrap();
    assert!(changes.iter().all(|c| c.op == ChangeOp::Upsert && c.record.is_some()));

    // The source re-creates an id under a new key: importing it replaces the old key.
    source.write(&b, vec![Write::Delete { id: "d1".into() }]).await.unwrap();
    let receipt = source.write(&b, vec![Write::Upsert(record("d1", "document", "again"))]).await.unwrap();
    let recreated = source.get(&b, "d1").await.unwrap().unwrap();
    assert_eq!(recreated.key, receipt.written[0].key);
    let old_key = page.iter().find(|r| r.id == "d1").unwrap().key;
    target.import(vec![recreated.clone()]).await.unwrap();
    assert_eq!(target.get(&b, "d1").await.unwrap().unwrap(), recreated);
    assert!(target.get_by_keys(&b, &[old_key]).await.unwrap().is_empty(), "the old key is gone");

    // Removals by key, logged; an absent key is no error.
    let head = target.head_seq().await.unwrap();
    let m2 = target.get(&a, "m2").await.unwrap().unwrap();
    target.import_removals(vec![m2.key, 999_999]).await.unwrap();
    assert!(target.get(&a, "m2").await.unwrap().is_none());
    let logged = target.changes_since(head, 10).await.unwrap();
    assert_eq!(logged.len(), 1);
    assert_eq!((logged[0].op, logged[0].key), (ChangeOp::Delete, m2.key));

    // Later writes on the target get keys above every imported one.
    let w = target.write(&a, vec![Write::Upsert(record("new", "note", "after"))]).await.unwrap();
    assert!(w.written[0].key > recreated.key, "{} > {}", w.written[0].key, recreated.key);

    let state = serde_json::json!({"source": "suite", "copied_through": 3});
    target.save_migration_state(&state).await.unwrap();
    assert_eq!(target.migration_state().await.unwrap(), Some(state));
    target.save_migration_state(&serde_json::json!({"source": "suite", "copied_through": 4})).await.unwrap();
    assert_eq!(target.migration_state().await.unwrap().unwrap()["copied_through"], 4);
}
