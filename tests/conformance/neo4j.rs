//! The Neo4j graph store on a real Bolt server (tests/common/bolt.rs): the shared suite, stale
//! replays, generations, tenants, fencing, a wiped graph made writable again, and what open
//! refuses.

use std::sync::Arc;

use nexus::config::{GraphBackend, GraphConfig, Secret};
use nexus::error::ErrorCode;
use nexus::store::TenantId;
use nexus::store::graph::neo4j::Neo4jGraphStore;
use nexus::store::graph::{Direction, GraphEdge, GraphNode, GraphStore, GraphWrite};
use nexus::store::testsuite;

use super::common::bolt::{self, BoltServer};

fn config(server: &BoltServer) -> GraphConfig {
    GraphConfig {
        backend: GraphBackend::Neo4j,
        url: Some(Secret::new(server.url.clone())),
        username: server.username.clone(),
        password: server.password.clone().map(Secret::new),
        timeout_ms: 10_000,
        ..GraphConfig::default()
    }
}

async fn open(server: &BoltServer) -> Neo4jGraphStore {
    Neo4jGraphStore::open(&config(server)).await.unwrap()
}

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

fn node(key: u64, t: &TenantId, id: &str, name: &str) -> GraphWrite {
    GraphWrite::Node(GraphNode {
        key,
        tenant: t.clone(),
        id: id.into(),
        label: "person".into(),
        name: name.into(),
        properties: serde_json::json!({"n": name}),
        updated_at: 1_700_000_000_000_000,
    })
}

fn edge(key: u64, t: &TenantId, id: &str, source: &str, target: &str) -> GraphWrite {
    GraphWrite::Edge(GraphEdge {
        key,
        tenant: t.clone(),
        id: id.into(),
        label: "knows".into(),
        source: source.into(),
        target: target.into(),
        properties: serde_json::json!({}),
        updated_at: 0,
    })
}

async fn name_of(store: &dyn GraphStore, t: &TenantId, id: &str) -> Option<String> {
    store.node(t, id).await.unwrap().map(|n| n.name)
}

async fn hop_ids(store: &dyn GraphStore, t: &TenantId, id: &str, k: usize) -> Vec<String> {
    store.k_hop(t, id, k, 100).await.unwrap().into_iter().map(|r| r.id).collect()
}

#[tokio::test]
async fn neo4j_graph_store() {
    let graph = bolt::graph().await;
    let config = config(&graph.server);
    testsuite::graph_store_suite(|| async {
        Arc::new(Neo4jGraphStore::open(&config).await.unwrap()) as Arc<dyn GraphStore>
    })
    .await;
}

#[tokio::test]
async fn neo4j_stale_replays_keep_the_newer_state() {
    let graph = bolt::graph().await;
    let store = open(&graph.server).await;
    let a = tenant("stale");
    store.apply(vec![node(1, &a, "ada", "Ada at 10"), edge(2, &a, "e", "ada", "bob")], 10).await.unwrap();

    // A replay of an older batch changes nothing, not even where the edge points.
    store.apply(vec![node(1, &a, "ada", "Ada at 5"), edge(2, &a, "e", "ada", "cy")], 5).await.unwrap();
    assert_eq!(name_of(&store, &a, "ada").await.as_deref(), Some("Ada at 10"));
    let out = store.neighbours(&a, "ada", Direction::Out, None).await.unwrap();
    assert_eq!(out.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), vec!["bob"]);
    assert!(store.node(&a, "cy").await.unwrap().is_none());
    assert!(store.shortest_path(&a, "ada", "cy").await.unwrap().is_none(), "no placeholder was left for cy");

    // The same batch again is harmless.
    store.apply(vec![node(1, &a, "ada", "Ada at 10"), edge(2, &a, "e", "ada", "bob")], 10).await.unwrap();
    assert_eq!(store.keys().await.unwrap(), vec![1, 2]);
    assert_eq!(store.neighbours(&a, "ada", Direction::Both, None).await.unwrap().len(), 1);

    // A delete leaves a tombstone: an older upsert does not bring the key back, a newer one does.
    store.apply(vec![GraphWrite::Delete(1), GraphWrite::Delete(2)], 12).await.unwrap();
    assert!(store.keys().await.unwrap().is_empty());
    store.apply(vec![node(1, &a, "ada", "Ada at 11"), edge(2, &a, "e", "ada", "bob")], 11).await.unwrap();
    assert!(store.keys().await.unwrap().is_empty(), "a stale replay resurrected a deleted key");
    assert!(store.node(&a, "ada").await.unwrap().is_none());
    store.apply(vec![node(1, &a, "ada", "Ada at 13")], 13).await.unwrap();
    assert_eq!(name_of(&store, &a, "ada").await.as_deref(), Some("Ada at 13"));

    // A key that changes kind: the node becomes an edge; an older batch cannot turn it back.
    store.apply(vec![edge(1, &a, "e1", "bob", "cy")], 14).await.unwrap();
    assert!(store.node(&a, "ada").await.unwrap().is_none());
    assert_eq!(hop_ids(&store, &a, "bob", 1).await, vec!["cy"]);
    store.apply(vec![node(1, &a, "ada", "Ada at 13")], 13).await.unwrap();
    assert!(store.node(&a, "ada").await.unwrap().is_none());
    assert_eq!(store.keys().await.unwrap(), vec![1]);
    assert_eq!(store.stats().await.unwrap().items, 1);
}

#[tokio::test]
async fn neo4j_generations_switch_at_once() {
    let graph = bolt::graph().await;
    let live = open(&graph.server).await;
    let other_node = open(&graph.server).await;
    let a = tenant("gens");
    live.apply(vec![node(1, &a, "ada", "Old Ada"), node(2, &a, "bob", "Old Bob"), edge(3, &a, "e", "ada", "bob")], 1)
        .await
        .unwrap();
    live.commit(1).await.unwrap();

    let next = live.new_generation().await.unwrap().expect("a shared store builds new generations");
    assert!(next.keys().await.unwrap().is_empty(), "a new generation starts empty");
    assert_eq!(next.committed_seq().await.unwrap(), 0);
    next.apply(vec![node(1, &a, "ada", "New Ada"), node(4, &a, "cy", "New Cy"), edge(5, &a, "f", "ada", "cy")], 1)
        .await
        .unwrap();
    next.commit(9).await.unwrap();

    // Every node still reads the live generation, and writes to it land there.
    for store in [&live, &other_node] {
        assert_eq!(name_of(store, &a, "ada").await.as_deref(), Some("Old Ada"));
        assert_eq!(hop_ids(store, &a, "ada", 2).await, vec!["bob"]);
        assert_eq!(store.committed_seq().await.unwrap(), 1);
    }
    live.apply(vec![node(6, &a, "dee", "Old Dee")], 2).await.unwrap();
    assert!(next.node(&a, "dee").await.unwrap().is_none());
    assert_eq!(name_of(&*next, &a, "ada").await.as_deref(), Some("New Ada"));
    assert_eq!(next.shortest_path(&a, "ada", "cy").await.unwrap(), Some(vec!["ada".to_string(), "cy".to_string()]));

    next.make_live().await.unwrap();
    for store in [&live, &other_node] {
        assert_eq!(name_of(store, &a, "ada").await.as_deref(), Some("New Ada"));
        assert!(store.node(&a, "bob").await.unwrap().is_none());
        assert_eq!(hop_ids(store, &a, "ada", 2).await, vec!["cy"]);
        assert_eq!(store.shortest_path(&a, "ada", "cy").await.unwrap().unwrap().len(), 2);
        assert_eq!(store.committed_seq().await.unwrap(), 9);
        assert_eq!(store.keys().await.unwrap(), vec![1, 4, 5]);
    }
    // The replaced generation is gone from the server.
    let left = bolt::count(&graph.server, "MATCH (n:NexusNode) RETURN count(n)").await;
    assert_eq!(left, 2, "only the live generation's nodes are left");
    assert_eq!(bolt::count(&graph.server, "MATCH (x:NexusGeneration) RETURN count(x)").await, 1);
    // Writes through the original handle now land in the new generation.
    live.apply(vec![node(7, &a, "eve", "Eve")], 10).await.unwrap();
    assert_eq!(name_of(&*next, &a, "eve").await.as_deref(), Some("Eve"));
    assert!(live.make_live().await.is_err(), "only a new generation's handle is made live");
}

#[tokio::test]
async fn neo4j_tenants_are_separate_graphs() {
    let graph = bolt::graph().await;
    let store = open(&graph.server).await;
    let (a, b) = (tenant("one"), tenant("two"));
    store
        .apply(
            vec![
                node(1, &a, "ada", "Ada of one"),
                edge(2, &a, "e", "ada", "bob"),
                node(3, &b, "bob", "Bob of two"),
                edge(4, &b, "e", "bob", "cy"),
            ],
            1,
        )
        .await
        .unwrap();
    assert_eq!(hop_ids(&store, &a, "ada", 5).await, vec!["bob"], "a's bob is a placeholder; b's edge is not a's");
    assert!(store.k_hop(&a, "ada", 5, 10).await.unwrap()[0].node.is_none());
    assert!(store.shortest_path(&a, "ada", "cy").await.unwrap().is_none());
    assert!(store.node(&b, "ada").await.unwrap().is_none());
    assert!(store.neighbours(&b, "ada", Direction::Both, None).await.unwrap().is_empty());
    let of_bob = store.neighbours(&b, "bob", Direction::Both, None).await.unwrap();
    assert_eq!(of_bob.iter().map(|n| (n.id.as_str(), n.node.is_some())).collect::<Vec<_>>(), vec![("cy", false)]);
    assert_eq!(name_of(&store, &b, "bob").await.as_deref(), Some("Bob of two"));
    store.apply(vec![GraphWrite::Delete(4)], 2).await.unwrap();
    assert_eq!(hop_ids(&store, &a, "ada", 5).await, vec!["bob"], "deleting b's edge leaves a's alone");
    assert_eq!(store.keys().await.unwrap(), vec![1, 2, 3]);
}

#[tokio::test]
async fn neo4j_fencing_refuses_an_older_token() {
    let graph = bolt::graph().await;
    let (old, new) = (open(&graph.server).await, open(&graph.server).await);
    let a = tenant("fence");
    old.set_fence(1);
    old.apply(vec![node(1, &a, "ada", "Ada")], 1).await.unwrap();
    new.set_fence(2);
    new.apply(vec![node(2, &a, "bob", "Bob")], 2).await.unwrap();
    let refused = old.apply(vec![node(1, &a, "ada", "Stale Ada")], 3).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::Conflict, "{refused:?}");
    assert_eq!(old.commit(3).await.unwrap_err().code, ErrorCode::Conflict);
    assert_eq!(old.clear().await.unwrap_err().code, ErrorCode::Conflict);
    assert_eq!(name_of(&new, &a, "ada").await.as_deref(), Some("Ada"));
    new.commit(2).await.unwrap();
    assert_eq!(old.committed_seq().await.unwrap(), 2, "an older token still reads");
}

#[tokio::test]
async fn neo4j_open_refuses_what_it_cannot_use() {
    // Nothing listens: backend_unavailable, naming the setting.
    let unreachable = BoltServer { url: bolt::unreachable_url(), username: None, password: None };
    let e = Neo4jGraphStore::open(&config(&unreachable)).await.err().unwrap();
    assert_eq!(e.code, ErrorCode::BackendUnavailable, "{e:?}");
    assert!(e.message.contains("store.graph.url") && e.message.contains(&unreachable.url), "{}", e.message);

    // Not a Bolt URL.
    let mut bad = config(&unreachable);
    bad.url = Some(Secret::new("http://127.0.0.1:7474".into()));
    let e = Neo4jGraphStore::open(&bad).await.err().unwrap();
    assert_eq!(e.code, ErrorCode::ConfigInvalid, "{e:?}");
    assert!(e.message.contains("store.graph.url"), "{}", e.message);

    // The right password gets in, a wrong one is refused (FalkorDB checks it against Redis's
    // `requirepass`; its user is `falkordb`).
    let server = bolt::OwnServer::start(Some("right-password"));
    let store = open(&server.server).await;
    store.apply(vec![node(1, &tenant("login"), "ada", "Ada")], 1).await.unwrap();
    assert_eq!(store.keys().await.unwrap(), vec![1]);
    let mut wrong = config(&server.server);
    wrong.password = Some(Secret::new("wrong-password".into()));
    let e = Neo4jGraphStore::open(&wrong).await.err().unwrap();
    assert_eq!(e.code, ErrorCode::ConfigInvalid, "{e:?}");
    assert!(
        e.message.contains("store.graph.username") && e.message.contains("store.graph.password_env"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn neo4j_any_text_and_large_batches_round_trip() {
    let graph = bolt::graph().await;
    let store = open(&graph.server).await;
    let a = tenant("text");
    // Quotes, backslashes, newlines and non-ASCII survive in names, ids and properties.
    let awkward = GraphNode {
        key: 1,
        tenant: a.clone(),
        id: "o'brien \\ \"q\"".into(),
        label: "per'son".into(),
        name: "O'Brien \\ the \"2nd\"\nüñí ☃".into(),
        properties: serde_json::json!({"quote": "it's \"quoted\"\n\\", "n": 1.5, "list": [1, "two'"]}),
        updated_at: -5,
    };
    store.apply(vec![GraphWrite::Node(awkward.clone())], 1).await.unwrap();
    assert_eq!(store.node(&a, &awkward.id).await.unwrap(), Some(awkward.clone()));

    // A batch larger than one statement: a star of 300 spokes, each spoke a node and an edge.
    let mut writes = Vec::new();
    for i in 0..300u64 {
        writes.push(node(100 + i, &a, &format!("spoke-{i:03}"), &format!("Spoke {i}")));
        writes.push(edge(1000 + i, &a, &format!("e{i}"), &awkward.id, &format!("spoke-{i:03}")));
    }
    store.apply(writes, 2).await.unwrap();
    assert_eq!(store.stats().await.unwrap().items, 601);
    assert_eq!(store.neighbours(&a, &awkward.id, Direction::Out, None).await.unwrap().len(), 300);
    let near = store.k_hop(&a, "spoke-007", 2, 5).await.unwrap();
    let ids: Vec<(&str, usize)> = near.iter().map(|r| (r.id.as_str(), r.depth)).collect();
    assert_eq!(
        ids,
        vec![(awkward.id.as_str(), 1), ("spoke-000", 2), ("spoke-001", 2), ("spoke-002", 2), ("spoke-003", 2)]
    );
    assert_eq!(near[0].node.as_ref().unwrap().name, awkward.name);
    let path = store.shortest_path(&a, "spoke-010", "spoke-290").await.unwrap().unwrap();
    assert_eq!(path, vec!["spoke-010".to_string(), awkward.id.clone(), "spoke-290".to_string()]);
    let all = store.k_hop(&a, "spoke-000", 3, 1000).await.unwrap();
    assert_eq!(all.len(), 300, "the hub and the 299 other spokes");

    // The edges among some nodes: a short list is one statement, a list longer than one
    // statement takes every edge at the nodes and keeps those among them; both agree.
    let within = |ids: Vec<String>| {
        let store = &store;
        let a = &a;
        async move {
            let mut found: Vec<String> = store.edges_within(a, &ids).await.unwrap().into_iter().map(|e| e.id).collect();
            found.sort();
            found
        }
    };
    let few = vec![awkward.id.clone(), "spoke-003".to_string(), "spoke-200".to_string(), "nobody".to_string()];
    assert_eq!(within(few).await, vec!["e200", "e3"]);
    let mut many: Vec<String> = (0..300).filter(|i| i % 2 == 1).map(|i| format!("spoke-{i:03}")).collect();
    many.extend((0..800).map(|i| format!("absent-{i}")));
    many.push(awkward.id.clone());
    let expected: Vec<String> = {
        let mut e: Vec<String> = (0..300).filter(|i| i % 2 == 1).map(|i| format!("e{i}")).collect();
        e.sort();
        e
    };
    assert_eq!(within(many).await, expected);
}

/// A server that lost the graph behind the store's back (restarted empty): writes are refused
/// and the position reads 0 until `restore_layout` puts the meta node back; it keeps what the
/// graph holds when nothing was lost.
#[tokio::test]
async fn neo4j_restore_layout_makes_a_wiped_graph_writable_again() {
    let graph = bolt::graph().await;
    let store = open(&graph.server).await;
    let a = tenant("wiped");
    store.set_fence(1);
    store.apply(vec![node(1, &a, "ada", "Ada")], 5).await.unwrap();
    store.commit(5).await.unwrap();
    store.restore_layout().await.unwrap();
    assert_eq!(store.committed_seq().await.unwrap(), 5, "nothing lost: the layout and the data are kept");
    assert_eq!(name_of(&store, &a, "ada").await.as_deref(), Some("Ada"));

    let mut session = bolt::session(&graph.server).await;
    let _wiped = session.run("MATCH (n) DETACH DELETE n").await.expect("wipe the graph");
    assert_eq!(bolt::count(&graph.server, "MATCH (n) RETURN count(n)").await, 0);
    assert_eq!(store.committed_seq().await.unwrap(), 0);
    assert!(store.apply(vec![node(2, &a, "bob", "Bob")], 6).await.is_err(), "a write without the meta node");

    store.restore_layout().await.unwrap();
    assert_eq!(store.committed_seq().await.unwrap(), 0);
    store.apply(vec![node(1, &a, "ada", "Ada"), node(2, &a, "bob", "Bob")], 6).await.unwrap();
    store.commit(6).await.unwrap();
    assert_eq!(store.committed_seq().await.unwrap(), 6);
    assert_eq!(store.keys().await.unwrap(), vec![1, 2]);
    assert_eq!(name_of(&store, &a, "bob").await.as_deref(), Some("Bob"));
}
