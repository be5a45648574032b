//! The Elasticsearch/OpenSearch text store on a real OpenSearch-API server
//! (tests/common/opensearch.rs): the shared suite, stale replays, generations, what open refuses.

use std::sync::Arc;

use nexus::config::{Secret, TextBackend, TextConfig};
use nexus::error::ErrorCode;
use nexus::store::TenantId;
use nexus::store::testsuite;
use nexus::store::text::elasticsearch::ElasticsearchTextStore;
use nexus::store::text::{TextDoc, TextQuery, TextStore};
use reqwest::Method;
use serde_json::json;

use super::common::opensearch;

fn config_at(url: &str, prefix: &str) -> TextConfig {
    TextConfig {
        backend: TextBackend::Elasticsearch,
        url: Some(Secret::new(url.to_string())),
        index_prefix: prefix.to_string(),
        timeout_ms: 10_000,
        ..TextConfig::default()
    }
}

fn config(hint: &str) -> TextConfig {
    config_at(opensearch::url(), &opensearch::fresh_prefix(hint))
}

async fn open(config: &TextConfig) -> Arc<dyn TextStore> {
    Arc::new(ElasticsearchTextStore::open(config).await.unwrap())
}

fn tenant() -> TenantId {
    TenantId::new("es-tests").unwrap()
}

fn doc(key: u64, title: &str, body: &str) -> TextDoc {
    TextDoc {
        key,
        tenant: tenant(),
        kind: "doc".into(),
        title: title.into(),
        body: body.into(),
        tags: Vec::new(),
        facets: Vec::new(),
        date: 0,
    }
}

async fn found(store: &Arc<dyn TextStore>, words: &str) -> Vec<u64> {
    let mut keys: Vec<u64> =
        store.search(TextQuery::new(tenant(), words, 50)).await.unwrap().iter().map(|h| h.key).collect();
    keys.sort_unstable();
    keys
}

/// The concrete indices behind `{prefix}-text`.
async fn live_indices(prefix: &str) -> Vec<String> {
    let (status, body) = opensearch::request(Method::GET, &format!("_alias/{prefix}-text"), None).await;
    assert_eq!(status, 200, "{body}");
    body.as_object().unwrap().keys().cloned().collect()
}

async fn exists(index: &str) -> bool {
    let (status, _) = opensearch::request(Method::GET, index, None).await;
    status == 200
}

#[tokio::test]
async fn elasticsearch_text_store() {
    let config = config("suite");
    testsuite::text_store_suite(|| async { open(&config).await }).await;
}

#[tokio::test]
async fn stale_writes_never_bring_back_an_older_state() {
    let config = config("stale");
    let store = open(&config).await;
    store.upsert(vec![doc(1, "ten", "the state at ten")], 10).await.unwrap();
    store.upsert(vec![doc(2, "eight", "the state at eight")], 8).await.unwrap();
    store.commit(10).await.unwrap();

    // A replayed batch (seq 5) for the same key: the state at 10 stays.
    store.upsert(vec![doc(1, "five", "the state at five")], 5).await.unwrap();
    store.commit(10).await.unwrap();
    assert_eq!(found(&store, "ten").await, vec![1]);
    assert!(found(&store, "five").await.is_empty());

    // The same from another handle (a projector that lost its lease), sent at once.
    let stale = open(&config).await;
    stale.upsert(vec![doc(1, "four", "the state at four")], 4).await.unwrap();
    stale.commit(4).await.unwrap();
    assert_eq!(found(&store, "ten").await, vec![1]);
    assert!(found(&store, "four").await.is_empty());
    assert_eq!(store.committed_seq().await.unwrap(), 10, "the position never moves back");

    // Deleted at 12, then the batch of 10 replayed: the key stays deleted.
    store.delete(vec![2], 12).await.unwrap();
    store.commit(12).await.unwrap();
    assert_eq!(store.keys().await.unwrap(), vec![1]);
    stale.upsert(vec![doc(2, "eight", "the state at eight, replayed")], 10).await.unwrap();
    stale.commit(10).await.unwrap();
    assert_eq!(store.keys().await.unwrap(), vec![1], "a stale batch cannot resurrect a deleted key");
    assert!(found(&store, "eight").await.is_empty());
    assert_eq!(store.stats().await.unwrap().items, 1, "tombstones are not counted");

    // A newer state after the delete is written.
    store.upsert(vec![doc(2, "thirteen", "back at thirteen")], 13).await.unwrap();
    store.commit(13).await.unwrap();
    assert_eq!(found(&store, "thirteen").await, vec![2]);
    assert_eq!(store.committed_seq().await.unwrap(), 13);

    // Within one handle's buffer too, the newer state wins whatever the order of the calls.
    store.upsert(vec![doc(3, "twenty", "twenty")], 20).await.unwrap();
    store.upsert(vec![doc(3, "nineteen", "nineteen")], 19).await.unwrap();
    store.commit(20).await.unwrap();
    assert_eq!(found(&store, "twenty").await, vec![3]);
    assert!(found(&store, "nineteen").await.is_empty());
}

#[tokio::test]
async fn a_new_generation_goes_live_for_every_node_at_once() {
    let config = config("generation");
    let store = open(&config).await;
    let other_node = open(&config).await;
    store.upsert(vec![doc(1, "old", "the old generation"), doc(2, "old", "also old")], 3).await.unwrap();
    store.commit(3).await.unwrap();
    let old = live_indices(&config.index_prefix).await;
    assert_eq!(old.len(), 1);

    let next = store.new_generation().await.unwrap().expect("the cluster store rebuilds into a new generation");
    assert_eq!(next.committed_seq().await.unwrap(), 0, "a new generation starts empty");
    assert!(next.keys().await.unwrap().is_empty());
    next.upsert(vec![doc(7, "new", "the new generation")], 9).await.unwrap();
    next.commit(9).await.unwrap();
    // The projector keeps writing the live generation meanwhile; searches still see it alone.
    store.upsert(vec![doc(3, "old", "written during the rebuild")], 4).await.unwrap();
    store.commit(4).await.unwrap();
    for node in [&store, &other_node] {
        assert_eq!(found(node, "old").await, vec![1, 2, 3]);
        assert!(found(node, "new").await.is_empty());
        assert_eq!(node.committed_seq().await.unwrap(), 4);
    }
    assert_eq!(next.keys().await.unwrap(), vec![7]);

    next.make_live().await.unwrap();
    for node in [&store, &other_node, &next] {
        assert_eq!(found(node, "new").await, vec![7]);
        assert!(found(node, "old").await.is_empty());
        assert_eq!(node.committed_seq().await.unwrap(), 9);
        assert_eq!(node.keys().await.unwrap(), vec![7]);
    }
    let live = live_indices(&config.index_prefix).await;
    assert_eq!(live.len(), 1);
    assert_ne!(live, old);
    assert!(!exists(&old[0]).await, "the replaced generation is deleted");

    // Writes through any live handle reach the new generation.
    other_node.upsert(vec![doc(8, "later", "after the switch")], 10).await.unwrap();
    other_node.commit(10).await.unwrap();
    assert_eq!(found(&store, "later").await, vec![8]);

    // A rebuild that never went live is dropped by the next one.
    let abandoned = store.new_generation().await.unwrap().unwrap();
    abandoned.upsert(vec![doc(9, "abandoned", "never live")], 11).await.unwrap();
    abandoned.commit(11).await.unwrap();
    let (_, indices) = opensearch::request(Method::GET, &format!("{}-text-*", config.index_prefix), None).await;
    assert_eq!(indices.as_object().unwrap().len(), 2);
    let _next = store.new_generation().await.unwrap().unwrap();
    let (_, indices) = opensearch::request(Method::GET, &format!("{}-text-*", config.index_prefix), None).await;
    assert_eq!(indices.as_object().unwrap().len(), 2, "the abandoned generation is gone: {indices}");

    // Clearing the live store makes an empty generation live.
    store.clear().await.unwrap();
    for node in [&store, &other_node] {
        assert!(node.keys().await.unwrap().is_empty());
        assert_eq!(node.committed_seq().await.unwrap(), 0);
    }
    assert!(!exists(&live[0]).await, "the cleared generation is deleted");
}

#[tokio::test]
async fn indices_made_by_something_else_are_refused_and_left_alone() {
    // An index named like the alias.
    let foreign = config("foreign-index");
    let name = format!("{}-text", foreign.index_prefix);
    let mapping = json!({ "mappings": { "properties": { "body": { "type": "text" } } } });
    let (status, body) = opensearch::request(Method::PUT, &name, Some(mapping)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) =
        opensearch::request(Method::PUT, &format!("{name}/_doc/1?refresh=true"), Some(json!({ "body": "theirs" })))
            .await;
    assert!(status == 200 || status == 201);
    let e = ElasticsearchTextStore::open(&foreign).await.err().expect("refused");
    assert_eq!(e.code, ErrorCode::ConfigInvalid, "{e}");
    assert!(e.message.contains("store.text.index_prefix") && !e.message.contains('\n'), "{e}");
    let (_, count) = opensearch::request(Method::GET, &format!("{name}/_count"), None).await;
    assert_eq!(count["count"], 1, "their document is still there");
    let (_, mapping) = opensearch::request(Method::GET, &format!("{name}/_mapping"), None).await;
    assert!(mapping[&name]["mappings"]["properties"].get("tenant").is_none(), "their mapping is unchanged");

    // An alias of that name over an index with another mapping (the standard analyzer).
    let aliased = config("foreign-alias");
    let alias = format!("{}-text", aliased.index_prefix);
    let index = format!("{alias}-1");
    let theirs = json!({
        "aliases": { &alias: {} },
        "mappings": { "properties": {
            "title": { "type": "text" }, "body": { "type": "text" }, "tenant": { "type": "keyword" }
        } }
    });
    let (status, body) = opensearch::request(Method::PUT, &index, Some(theirs)).await;
    assert_eq!(status, 200, "{body}");
    let e = ElasticsearchTextStore::open(&aliased).await.err().expect("refused");
    assert_eq!(e.code, ErrorCode::ConfigInvalid, "{e}");
    assert!(e.message.contains("store.text.index_prefix") && e.message.contains(&index), "{e}");
    assert_eq!(live_indices(&aliased.index_prefix).await, vec![index.clone()], "the alias is untouched");
    let (_, indices) = opensearch::request(Method::GET, &format!("{alias}-*"), None).await;
    assert_eq!(indices.as_object().unwrap().len(), 1, "no index was added");

    // A bad prefix is a configuration error before any request.
    let mut bad = aliased.clone();
    bad.index_prefix = "Bad Prefix".into();
    let e = ElasticsearchTextStore::open(&bad).await.err().expect("refused");
    assert!(e.code == ErrorCode::ConfigInvalid && e.message.contains("store.text.index_prefix"), "{e}");
}

#[tokio::test]
async fn an_unreachable_server_is_backend_unavailable() {
    // Nothing listens on a port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://elastic:hunter2@127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let e = ElasticsearchTextStore::open(&config_at(&url, "nexus")).await.err().expect("unreachable");
    assert_eq!(e.code, ErrorCode::BackendUnavailable, "{e}");
    assert_eq!(e.code.http_status(), 503);
    assert!(e.message.contains("store.text.url") && e.message.contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(!e.message.contains("hunter2") && !e.message.contains('\n'), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));

    // A server that goes away under a working store.
    let server = opensearch::Osmem::start();
    let store = open(&config_at(&server.url, "gone")).await;
    store.upsert(vec![doc(1, "here", "soon gone")], 1).await.unwrap();
    store.commit(1).await.unwrap();
    drop(server);
    let errors = [
        store.search(TextQuery::new(tenant(), "here", 5)).await.err().unwrap(),
        store.committed_seq().await.err().unwrap(),
        store.commit(2).await.err().unwrap(),
        store.keys().await.err().unwrap(),
    ];
    for e in errors {
        assert_eq!(e.code, ErrorCode::BackendUnavailable, "{e}");
        assert!(e.message.contains(&format!("opensearch at {}", "http://127.0.0.1")), "{e}");
    }
}

#[tokio::test]
async fn an_index_deleted_outside_nexus_is_an_error_not_a_new_index() {
    let config = config("deleted");
    let store = open(&config).await;
    store.upsert(vec![doc(1, "kept", "until deleted")], 1).await.unwrap();
    store.commit(1).await.unwrap();
    let live = live_indices(&config.index_prefix).await;
    let (status, _) = opensearch::request(Method::DELETE, &live[0], None).await;
    assert_eq!(status, 200);

    store.upsert(vec![doc(2, "lost", "no index to go to")], 2).await.unwrap();
    let e = store.commit(2).await.expect_err("the write has nowhere to go");
    assert_eq!(e.code, ErrorCode::StoreFailure, "{e}");
    assert!(e.message.contains("nexus reindex --store text"), "{e}");
    let alias = format!("{}-text", config.index_prefix);
    assert!(!exists(&alias).await, "no index was made up under the alias's name");
    let e = store.search(TextQuery::new(tenant(), "kept", 5)).await.expect_err("nothing to search");
    assert!(e.message.contains("nexus reindex --store text"), "{e}");

    // The next open starts an empty store again.
    let store = open(&config).await;
    assert!(store.keys().await.unwrap().is_empty());
    assert_eq!(store.committed_seq().await.unwrap(), 0);
}
