//! The write path in-process: replay after a restart, read-your-writes, and `check` catching
//! a derived store that lost something.

use std::path::Path;

use nexus::app::App;
use nexus::config::{Config, ConfigFile, FlagOverrides};
use nexus::store::TenantId;
use nexus::store::records::{GraphItem, NewRecord, Write};
use nexus::store::text::TextQuery;

fn config(data: &Path) -> Config {
    let flags = FlagOverrides { data_dir: Some(data.to_path_buf()), ..Default::default() };
    Config::load(ConfigFile::IfExists(Path::new("/nonexistent/nexus.toml")), &flags).unwrap()
}

fn note(id: &str, body: &str) -> Write {
    let mut vector = vec![0.01f32; 384];
    vector[id.len() % 384] = 1.0;
    Write::Upsert(NewRecord {
        id: id.into(),
        kind: "note".into(),
        body: Some(body.into()),
        vector: Some(vector),
        graph: Some(GraphItem::Node { label: "note".into(), name: id.into() }),
        metadata: serde_json::json!({}),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_and_check_catches_divergence() {
    let tmp = tempfile::tempdir().unwrap();
    let app = App::open(config(&tmp.path().join("data"))).await.unwrap();
    let tenant = TenantId::default_tenant();
    let outcome =
        app.writes.write(&tenant, vec![note("a", "apples and pears"), note("b", "bananas")], true).await.unwrap();
    assert_eq!(outcome.indexed, Some(true));
    let q = TextQuery::new(tenant.clone(), "pears", 5);
    assert_eq!(app.stores.text.search(q.clone()).await.unwrap().len(), 1, "visible as soon as the write returns");
    assert!(app.check().await.unwrap().ok);

    // Lose a document from the text index behind the write path's back.
    let key = app.stores.records.get(&tenant, "a").await.unwrap().unwrap().key;
    let head = app.stores.records.head_seq().await.unwrap();
    app.stores.text.delete(vec![key], head).await.unwrap();
    app.stores.text.commit(head).await.unwrap();
    let report = app.check().await.unwrap();
    assert!(!report.ok);
    let text = report.stores.iter().find(|s| s.store == "text").unwrap();
    assert_eq!(text.missing, vec!["default/a".to_string()]);
    assert!(report.stores.iter().filter(|s| s.store != "text").all(|s| s.ok));
    assert!(report.to_text().contains("missing default/a"));

    // Rebuild it.
    let projection = app.projections().into_iter().find(|p| p.name() == "text").unwrap();
    let replayed = nexus::writelog::reindex::reindex(&*app.stores.records, &projection, |_| {}).await.unwrap();
    assert_eq!(replayed, 2);
    assert!(app.check().await.unwrap().ok);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexers_replay_what_they_missed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    {
        // Write through the record store only, as if the process died before any indexer ran.
        let (_dir, stores) = App::open_stores(&config(&data), false).await.unwrap();
        let tenant = TenantId::default_tenant();
        let writes = (0..30).map(|i| note(&format!("n{i}"), &format!("missed note {i}"))).collect();
        stores.records.write(&tenant, writes).await.unwrap();
        stores.records.write(&tenant, vec![Write::Delete { id: "n3".into() }]).await.unwrap();
    }
    let app = App::open(config(&data)).await.unwrap();
    let head = app.stores.records.head_seq().await.unwrap();
    assert!(app.writes.wait_indexed(head).await);
    assert!(app.ready());
    let report = app.check().await.unwrap();
    assert!(report.ok, "{}", report.to_text());
    assert_eq!(report.records, 29);
    for store in &report.stores {
        assert_eq!(store.indexed, 29, "{} holds every record", store.store);
    }
    app.shutdown().await;
    drop(app);
    // After a clean shutdown every store has committed the head: nothing to replay.
    let (_dir, stores) = App::open_stores(&config(&data), false).await.unwrap();
    assert_eq!(stores.text.committed_seq().await.unwrap(), head);
    assert_eq!(stores.vectors.committed_seq().await.unwrap(), head);
    assert_eq!(stores.graph.committed_seq().await.unwrap(), head);
}

fn imported(id: &str, user: &str, text: &str) -> nexus::memory::Memory {
    let scope = nexus::memory::Scope { user_id: Some(user.into()), ..Default::default() };
    let mut memory = nexus::memory::Memory::new(id, text, nexus::memory::Tier::Factual, scope);
    memory.metadata = serde_json::json!({"source": "import"});
    memory
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_memories_are_searched_like_added_ones_and_bad_vectors_write_nothing() {
    use nexus::memory::filter::Field;
    use nexus::memory::search::SearchOptions;
    use nexus::memory::{Event, Filter};
    let tmp = tempfile::tempdir().unwrap();
    let app = App::open(config(&tmp.path().join("data"))).await.unwrap();
    let tenant = TenantId::default_tenant();
    let texts = ["Alice adopted a grey cat named Miso.", "The quarterly report is due on Friday."];
    let vectors = app.embed.embed(&texts.map(String::from)).await.unwrap();
    let batch =
        texts.iter().zip(vectors.clone()).enumerate().map(|(i, (t, v))| (imported(&format!("m{i}"), "alice", t), v));
    let outcome = app.memories.import(&tenant, batch.collect(), "loader").await.unwrap();
    assert!(app.writes.wait_indexed(outcome.receipt.seq).await);

    let found = app
        .memories
        .search(&tenant, "what pet does alice have", &Filter::eq(Field::UserId, "alice"), &SearchOptions::default())
        .await
        .unwrap();
    assert_eq!(found.results[0].memory.id, "m0", "hybrid search finds the imported memory");
    assert!(found.results[0].similarity > 0.3, "its stored vector is the one given: {}", found.results[0].similarity);
    let history = app.memories.history(&tenant, "m1").await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].event, Event::Add);
    assert_eq!(history[0].actor, "loader");

    // A vector of the wrong size, or a memory with no scope, refuses the whole batch.
    let short = vec![
        (imported("m2", "alice", "Bob likes tea."), vec![0.1; 8]),
        (imported("m3", "alice", "x y"), vectors[0].clone()),
    ];
    let err = app.memories.import(&tenant, short, "loader").await.unwrap_err();
    assert_eq!(err.code.as_str(), "invalid_vector", "{err}");
    let mut unscoped = imported("m4", "alice", "No owner.");
    unscoped.user_id = None;
    assert!(app.memories.import(&tenant, vec![(unscoped, vectors[1].clone())], "loader").await.is_err());
    for id in ["m2", "m3", "m4"] {
        assert!(app.memories.get(&tenant, id).await.is_err(), "{id} was not written");
    }
    app.shutdown().await;
}
