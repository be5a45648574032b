//! Runs every store's conformance suite against the embedded implementations and their cluster
//! twins on real servers (Postgres with pgvector, an S3 server; see tests/common/cluster.rs).

use std::path::PathBuf;
use std::sync::Arc;

use nexus::config::{Quantization, RecordsBackend, RecordsConfig, TextConfig, VectorsBackend, VectorsConfig};
use nexus::store::auth::AuthStore;
use nexus::store::auth::sqlite::SqliteAuthStore;
use nexus::store::graph::GraphStore;
use nexus::store::graph::sled::SledGraphStore;
use nexus::store::objects::ObjectStore;
use nexus::store::objects::local::ObjectStoreBacked;
use nexus::store::records::RecordStore;
use nexus::store::records::sqlite::SqliteRecordStore;
use nexus::store::testsuite;
use nexus::store::text::TextStore;
use nexus::store::text::tantivy::TantivyTextStore;
use nexus::store::vectors::VectorStore;
use nexus::store::vectors::usearch::UsearchVectorStore;

fn dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("store");
    (tmp, path)
}

#[tokio::test]
async fn sqlite_record_store() {
    let (_tmp, path) = dir();
    let config = RecordsConfig::default();
    testsuite::record_store_suite(|| async {
        Arc::new(SqliteRecordStore::open(&path, &config).await.unwrap()) as Arc<dyn RecordStore>
    })
    .await;
}

#[tokio::test]
async fn sqlite_auth_store() {
    let (_tmp, path) = dir();
    let config = RecordsConfig::default();
    testsuite::auth_store_suite(|| async {
        let records = SqliteRecordStore::open(&path, &config).await.unwrap();
        Arc::new(SqliteAuthStore::new(&records)) as Arc<dyn AuthStore>
    })
    .await;
}

/// Through the HNSW graph (`exact_below = 0`) and by comparing every vector (the default for a
/// tenant this small), in each quantization.
#[tokio::test]
async fn usearch_vector_store() {
    for exact_below in [0, VectorsConfig::default().exact_below] {
        for quantization in [Quantization::F32, Quantization::F16, Quantization::I8] {
            let (_tmp, path) = dir();
            let config = VectorsConfig {
                backend: VectorsBackend::Usearch,
                dimensions: 8,
                connectivity: 16,
                expansion_add: 64,
                expansion_search: 64,
                quantization,
                exact_below,
                ..Default::default()
            };
            testsuite::vector_store_suite(|| async {
                Arc::new(UsearchVectorStore::open(&path, &config).await.unwrap()) as Arc<dyn VectorStore>
            })
            .await;
        }
    }
}

/// Below `exact_below` a search compares every vector: stores holding the same vectors answer
/// alike however they were built, and as brute force does.
#[tokio::test]
async fn usearch_small_tenants_are_searched_exactly_whatever_the_index_history() {
    let tmp = tempfile::tempdir().unwrap();
    let opened = std::sync::atomic::AtomicUsize::new(0);
    let config = VectorsConfig {
        dimensions: testsuite::SMALL_TENANT_DIMENSIONS,
        connectivity: 8,
        expansion_add: 16,
        expansion_search: 16,
        ..Default::default()
    };
    testsuite::small_tenant_search_suite(|| async {
        let n = opened.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = tmp.path().join(format!("vectors-{n}"));
        Arc::new(UsearchVectorStore::open(&path, &config).await.unwrap()) as Arc<dyn VectorStore>
    })
    .await;
}

#[tokio::test]
async fn tantivy_text_store() {
    let (_tmp, path) = dir();
    let config = TextConfig { writer_memory_mb: 20, ..Default::default() };
    testsuite::text_store_suite(|| async {
        Arc::new(TantivyTextStore::open(&path, &config).await.unwrap()) as Arc<dyn TextStore>
    })
    .await;
}

/// Commits of the embedded text index do not wait on the disk. A process that stops without the
/// closing sync leaves the index as it was (the page cache holds it); one whose files were
/// damaged (a power loss) is found out at the next open and rebuilt from the change log, rather
/// than serving a broken index.
#[tokio::test]
async fn tantivy_text_store_checks_itself_after_a_stop_without_sync() {
    use nexus::store::TenantId;
    use nexus::store::text::{TextDoc, TextQuery};
    let (_tmp, path) = dir();
    let config = TextConfig { writer_memory_mb: 20, ..Default::default() };
    let tenant = TenantId::new("t").unwrap();
    let doc = |key: u64, body: &str| TextDoc {
        key,
        tenant: tenant.clone(),
        kind: "doc".into(),
        title: String::new(),
        body: body.into(),
        tags: vec![],
        facets: vec![],
        date: 0,
    };
    let found = |store: Arc<TantivyTextStore>, word: &'static str| {
        let tenant = tenant.clone();
        async move { store.search(TextQuery::new(tenant, word, 10)).await.unwrap().len() }
    };

    // A clean close: synced, the marker gone.
    let store = Arc::new(TantivyTextStore::open(&path, &config).await.unwrap());
    assert!(path.join("UNSYNCED").exists(), "an open index is marked unsynced");
    store.upsert(vec![doc(1, "heron over the marsh")], 1).await.unwrap();
    store.commit(1).await.unwrap();
    store.sync(true).await.unwrap();
    assert!(!path.join("UNSYNCED").exists());
    // A commit after the closing sync marks the folder again.
    store.upsert(vec![doc(2, "kestrel above the field")], 2).await.unwrap();
    store.commit(2).await.unwrap();
    assert!(path.join("UNSYNCED").exists());
    drop(store);

    // A stop without a sync, files intact: everything committed is there.
    let store = Arc::new(TantivyTextStore::open(&path, &config).await.unwrap());
    assert_eq!(store.committed_seq().await.unwrap(), 2);
    assert_eq!(found(store.clone(), "kestrel").await, 1);
    store.upsert(vec![doc(3, "plover on the shore")], 3).await.unwrap();
    store.commit(3).await.unwrap();
    drop(store);

    // A stop without a sync that damaged a file: rebuilt empty, to be replayed from position 0.
    let victim = std::fs::read_dir(&path)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "idx"))
        .expect("a postings file");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    let store = Arc::new(TantivyTextStore::open(&path, &config).await.unwrap());
    assert_eq!(store.committed_seq().await.unwrap(), 0, "a damaged index starts over");
    assert_eq!(store.keys().await.unwrap(), Vec::<u64>::new());
    store.upsert(vec![doc(1, "heron over the marsh")], 3).await.unwrap();
    store.commit(3).await.unwrap();
    assert_eq!(found(store.clone(), "heron").await, 1);
    drop(store);

    // Damage found in a cleanly closed index is not papered over by a rebuild.
    let store = Arc::new(TantivyTextStore::open(&path, &config).await.unwrap());
    store.sync(true).await.unwrap();
    drop(store);
    std::fs::write(path.join("meta.json"), b"{").unwrap();
    let Err(e) = TantivyTextStore::open(&path, &config).await else { panic!("a broken meta.json opened") };
    assert!(e.to_string().contains("reindex"), "{e}");
}

#[tokio::test]
async fn sled_graph_store() {
    let (_tmp, path) = dir();
    testsuite::graph_store_suite(|| async {
        Arc::new(SledGraphStore::open(&path).await.unwrap()) as Arc<dyn GraphStore>
    })
    .await;
}

#[tokio::test]
async fn sled_graph_store_knows_its_node_keys() {
    use nexus::store::graph::{GraphNode, GraphWrite};
    let (_tmp, path) = dir();
    let store = SledGraphStore::open(&path).await.unwrap();
    let tenant = nexus::store::TenantId::new("keys").unwrap();
    let node = |key, id: &str| {
        GraphWrite::Node(GraphNode {
            key,
            tenant: tenant.clone(),
            id: id.into(),
            label: "person".into(),
            name: id.into(),
            properties: serde_json::json!({}),
            updated_at: 0,
        })
    };
    store.apply(vec![node(7, "ada"), node(9, "bob")], 1).await.unwrap();
    let asked: Vec<String> = ["bob", "cy", "ada"].map(String::from).to_vec();
    let mut keys = store.node_keys(&tenant, &asked).await.unwrap();
    keys.sort();
    assert_eq!(keys, vec![("ada".to_string(), 7), ("bob".to_string(), 9)], "from memory, without a round trip");
}

#[tokio::test]
async fn local_object_store() {
    let (_tmp, path) = dir();
    testsuite::object_store_suite(|| async {
        Arc::new(ObjectStoreBacked::open(&path).unwrap()) as Arc<dyn ObjectStore>
    })
    .await;
}

#[tokio::test]
async fn sqlite_job_store() {
    let (_tmp, path) = dir();
    let config = RecordsConfig::default();
    testsuite::job_store_suite(|| async {
        Arc::new(SqliteRecordStore::open(&path, &config).await.unwrap()) as Arc<dyn nexus::store::jobs::JobStore>
    })
    .await;
}

mod common;

#[path = "conformance/elasticsearch.rs"]
mod elasticsearch;

#[path = "conformance/qdrant.rs"]
mod qdrant;

#[path = "conformance/neo4j.rs"]
mod neo4j;

fn postgres_records_config(hint: &str) -> RecordsConfig {
    let url = common::cluster::postgres().fresh_database(hint);
    RecordsConfig {
        backend: RecordsBackend::Postgres,
        url: Some(nexus::config::Secret::new(url)),
        pool_size: 4,
        ..RecordsConfig::default()
    }
}

/// Migrations both ways between the embedded and the cluster record store, and within each kind.
#[tokio::test]
async fn record_store_imports() {
    let (_tmp, path) = dir();
    let sqlite = |sub: &str| {
        let path = path.join(sub);
        async move {
            Arc::new(SqliteRecordStore::open(&path, &RecordsConfig::default()).await.unwrap()) as Arc<dyn RecordStore>
        }
    };
    let postgres = |hint: &'static str| async move {
        Arc::new(
            nexus::store::records::postgres::PostgresRecordStore::open(&postgres_records_config(hint)).await.unwrap(),
        ) as Arc<dyn RecordStore>
    };
    testsuite::record_import_suite(sqlite("s1").await, postgres("import-to-pg").await).await;
    testsuite::record_import_suite(postgres("import-from-pg").await, sqlite("s2").await).await;
    testsuite::record_import_suite(sqlite("s3").await, sqlite("s4").await).await;
}

#[tokio::test]
async fn postgres_record_store() {
    let config = postgres_records_config("records-suite");
    testsuite::record_store_suite(|| async {
        Arc::new(nexus::store::records::postgres::PostgresRecordStore::open(&config).await.unwrap())
            as Arc<dyn RecordStore>
    })
    .await;
}

/// A change-log entry's position is taken when its transaction writes but is readable only once
/// it commits: a reader that resumes after the last position it saw must not step past a
/// transaction that commits after a later one.
#[tokio::test]
async fn postgres_change_log_never_skips_a_late_commit() {
    use nexus::store::records::postgres::PostgresRecordStore;
    use nexus::store::records::{NewRecord, Write};
    let config = postgres_records_config("late-commit");
    let store = Arc::new(PostgresRecordStore::open(&config).await.unwrap());
    let tenant = nexus::store::TenantId::new("late").unwrap();
    let note = |id: &str, body: &str| {
        Write::Upsert(NewRecord { id: id.into(), kind: "note".into(), body: Some(body.into()), ..Default::default() })
    };
    // The log's horizon is the oldest transaction still running on the server. Other tests'
    // databases share the server, and one of their transactions that ends while the horizon is
    // read can hold it back for a moment (a delay, never a skip): reads poll until they settle.
    let settled = |from: nexus::store::Seq, want: usize| {
        let store = store.clone();
        async move {
            for _ in 0..400 {
                let changes = store.changes_since(from, 100).await.unwrap();
                if changes.len() >= want {
                    return changes;
                }
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            panic!("the change log did not reach {want} entries past {from}");
        }
    };
    let first = store.write(&tenant, vec![note("slow", "before")]).await.unwrap();
    let cursor = settled(0, 1).await.last().unwrap().seq;
    assert_eq!(cursor, first.seq, "a committed write is readable");

    // Another session locks the row the slow writer will update, so the slow writer's
    // transaction starts (and takes its position) but cannot commit until the lock is released.
    let url = config.url.as_ref().unwrap().expose().to_string();
    let (locker, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    locker.batch_execute("BEGIN; SELECT 1 FROM records WHERE id = 'slow' FOR UPDATE").await.unwrap();
    let slow = {
        let (store, tenant) = (store.clone(), tenant.clone());
        tokio::spawn(async move { store.write(&tenant, vec![note("slow", "after")]).await.unwrap() })
    };
    // Wait until the slow writer holds a transaction id and waits on the lock. Asked from a
    // session of its own: inside the locker's transaction, pg_stat_activity would answer from
    // the snapshot its first read took.
    let (observer, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND backend_xid IS NOT NULL \
                   AND datname = current_database()";
    for _ in 0..400 {
        if observer.query_one(waiting, &[]).await.unwrap().get::<_, i64>(0) > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(observer.query_one(waiting, &[]).await.unwrap().get::<_, i64>(0), 1, "the slow writer waits");

    // A later writer commits first, with a greater position.
    let fast = store.write(&tenant, vec![note("fast", "quick")]).await.unwrap();
    assert!(fast.seq > cursor);
    assert!(
        store.changes_since(cursor, 100).await.unwrap().is_empty(),
        "nothing is readable past a transaction that has not finished"
    );
    assert!(store.head_seq().await.unwrap() < fast.seq, "the head stops before the running transaction too");

    locker.batch_execute("COMMIT").await.unwrap();
    let slow = slow.await.unwrap();
    assert!(slow.seq < fast.seq, "positions follow the order transactions took them");
    let after = settled(cursor, 2).await;
    let ids: Vec<_> = after.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, vec!["slow", "fast"], "the late commit is read, in position order, before the later one");
    assert_eq!(after[0].record.as_ref().unwrap().body.as_deref(), Some("after"));
    let mut head = store.head_seq().await.unwrap();
    for _ in 0..400 {
        if head == fast.seq {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        head = store.head_seq().await.unwrap();
    }
    assert_eq!(head, fast.seq);
}

/// Two nodes starting at once migrate the schema once; a schema newer than this binary is refused.
#[tokio::test]
async fn postgres_migrations_run_once_and_refuse_a_newer_schema() {
    use nexus::store::records::postgres::PostgresRecordStore;
    let config = postgres_records_config("migrate");
    let (a, b) = tokio::join!(PostgresRecordStore::open(&config), PostgresRecordStore::open(&config));
    let (a, _b) = (a.unwrap(), b.unwrap());
    let client = a.pg().client().await.unwrap();
    let version: i32 =
        client.query_one("SELECT version FROM nexus_schema WHERE component = 'records'", &[]).await.unwrap().get(0);
    assert_eq!(version, 2, "both migrations (the tables, then the migration state), once");
    client.execute("UPDATE nexus_schema SET version = 99 WHERE component = 'records'", &[]).await.unwrap();
    let err = PostgresRecordStore::open(&config).await.err().expect("a newer schema is refused");
    assert_eq!(err.code, nexus::error::ErrorCode::DataDirFormatTooNew);
    assert!(err.message.contains("newer"), "{}", err.message);
}

/// Opens the record store on `config` as a node would; its pool serves the job and auth stores.
async fn postgres_node(config: &RecordsConfig) -> nexus::store::records::postgres::PostgresRecordStore {
    nexus::store::records::postgres::PostgresRecordStore::open(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_job_store() {
    use nexus::store::jobs::JobStore;
    use nexus::store::jobs::postgres::PostgresJobStore;
    let config = postgres_records_config("jobs-suite");
    // Each open is a node of its own: its own pool on the shared database.
    testsuite::job_store_suite(|| async {
        Arc::new(PostgresJobStore::new(postgres_node(&config).await.pg().clone())) as Arc<dyn JobStore>
    })
    .await;
}

#[tokio::test]
async fn postgres_auth_store() {
    use nexus::store::auth::postgres::PostgresAuthStore;
    let config = postgres_records_config("auth-suite");
    testsuite::auth_store_suite(|| async {
        Arc::new(PostgresAuthStore::new(postgres_node(&config).await.pg().clone())) as Arc<dyn AuthStore>
    })
    .await;
}

/// Nodes writing the same auth tables at once: one of several creations of an id wins and the
/// rest are conflicts; audit batches that mark the same keys in opposite orders all commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_auth_store_nodes_writing_at_once() {
    use chrono::{Duration, Utc};
    use nexus::error::ErrorCode;
    use nexus::store::TenantId;
    use nexus::store::auth::postgres::PostgresAuthStore;
    use nexus::store::auth::{AuditEvent, AuditFilter, NewApiKey, Scope, Within};
    let config = postgres_records_config("auth-nodes");
    let nodes: Vec<Arc<dyn AuthStore>> = vec![
        Arc::new(PostgresAuthStore::new(postgres_node(&config).await.pg().clone())),
        Arc::new(PostgresAuthStore::new(postgres_node(&config).await.pg().clone())),
    ];

    let creations = (0..8).map(|i| {
        let node = nodes[i % 2].clone();
        tokio::spawn(async move { node.create_org("race", &format!("attempt {i}")).await })
    });
    let outcomes: Vec<_> = futures::future::join_all(creations).await.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1, "one creation wins");
    assert!(outcomes.iter().filter_map(|o| o.as_ref().err()).all(|e| e.code == ErrorCode::Conflict));
    assert_eq!(nodes[1].list_orgs().await.unwrap().iter().filter(|o| o.id == "race").count(), 1);

    let tenant = TenantId::default_tenant();
    let ids: Vec<String> = (0..6).map(|i| format!("k{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let key = NewApiKey {
            id: id.clone(),
            project: tenant.clone(),
            name: id.clone(),
            scopes: vec![Scope::Read],
            secret_hash: [i as u8; 32],
            expires_at: None,
        };
        nodes[i % 2].create_key(key).await.unwrap();
    }
    let start = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
    let event = |key: &str, n: i64| AuditEvent {
        at: start + Duration::milliseconds(n),
        principal: "key".into(),
        key_id: Some(key.to_string()),
        tenant: Some(tenant.clone()),
        method: "GET".into(),
        route: "/api/v1/records".into(),
        object_id: None,
        status: 200,
        client: None,
    };
    // Node 0 writes its batches with the keys in ascending order, node 1 in descending order.
    const BATCHES: i64 = 120;
    let batches = (0..BATCHES).map(|b| {
        let node = nodes[(b % 2) as usize].clone();
        let mut order: Vec<&String> = ids.iter().collect();
        if b % 2 == 1 {
            order.reverse();
        }
        let batch: Vec<AuditEvent> = order.iter().enumerate().map(|(j, id)| event(id, b * 10 + j as i64)).collect();
        tokio::spawn(async move { node.append_audit(&batch).await })
    });
    for outcome in futures::future::join_all(batches).await {
        outcome.unwrap().expect("every batch commits");
    }
    let filter = AuditFilter::newest(Within::All, 10_000);
    assert_eq!(nodes[0].list_audit(&filter).await.unwrap().len(), BATCHES as usize * ids.len());
    for id in &ids {
        let latest = nodes[1].list_audit(&AuditFilter { key_id: Some(id.clone()), ..filter.clone() }).await.unwrap();
        let latest_at = latest.iter().map(|e| e.event.at).max().unwrap();
        let key = nodes[0].get_key(id).await.unwrap().unwrap().key;
        assert_eq!(key.last_used_at, Some(latest_at), "{id} is marked with its latest use");
    }
}

/// Keys are read from the shared tables on every request: a key revoked through one node is
/// refused by every node at once.
#[tokio::test]
async fn postgres_key_revoked_through_one_node_is_refused_by_every_node() {
    use nexus::auth::{Auth, keys};
    use nexus::config::{Config, ConfigFile, FlagOverrides, Secret};
    use nexus::error::ErrorCode;
    use nexus::store::TenantId;
    use nexus::store::auth::postgres::PostgresAuthStore;
    use nexus::store::auth::{NewApiKey, Scope, Within};
    let config = postgres_records_config("auth-revoke");
    let (_tmp, data_dir) = dir();
    std::fs::create_dir_all(&data_dir).unwrap();
    let flags = FlagOverrides { data_dir: Some(data_dir.clone()), ..Default::default() };
    let mut node_config = Config::load(ConfigFile::IfExists(&data_dir.join("absent.toml")), &flags).unwrap();
    node_config.auth.master_key = Some(Secret::new(keys::generate_master()));
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let store: Arc<dyn AuthStore> = Arc::new(PostgresAuthStore::new(postgres_node(&config).await.pg().clone()));
        nodes.push(Auth::open(&node_config, &data_dir, store).unwrap());
    }

    let generated = keys::generate();
    nodes[0]
        .store
        .create_key(NewApiKey {
            id: generated.id.clone(),
            project: TenantId::default_tenant(),
            name: "shared".into(),
            scopes: vec![Scope::Read],
            secret_hash: generated.hash,
            expires_at: None,
        })
        .await
        .unwrap();
    for node in &nodes {
        let context = node.authenticate(Some(&generated.plaintext)).await.expect("a key made on one node works on all");
        assert_eq!(context.tenant, TenantId::default_tenant());
    }
    nodes[0].store.revoke_key(&Within::All, &generated.id, chrono::Utc::now()).await.unwrap().unwrap();
    for node in &nodes {
        let refused = node.authenticate(Some(&generated.plaintext)).await.expect_err("a revoked key is refused");
        assert_eq!(refused.code, ErrorCode::KeyRevoked);
    }
    for node in &nodes {
        node.shutdown().await;
    }
}

/// `[store.objects]` for `bucket` on `server`, credentials in files (as `*_file` settings name them).
fn s3_objects_config(
    server: &common::cluster::S3Server,
    bucket: &str,
    prefix: Option<&str>,
) -> (tempfile::TempDir, nexus::config::ObjectsConfig) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("access-key"), format!("{}\n", server.access_key)).unwrap();
    std::fs::write(tmp.path().join("secret-key"), format!("{}\n", server.secret_key)).unwrap();
    let config = nexus::config::ObjectsConfig {
        backend: nexus::config::ObjectsBackend::S3,
        endpoint: Some(server.endpoint.clone()),
        bucket: Some(bucket.to_string()),
        region: common::cluster::S3_REGION.to_string(),
        path_style: true,
        access_key_id_env: None,
        secret_access_key_env: None,
        access_key_id_file: Some(tmp.path().join("access-key")),
        secret_access_key_file: Some(tmp.path().join("secret-key")),
        allow_http: true,
        prefix: prefix.map(str::to_string),
    };
    (tmp, config)
}

#[tokio::test]
async fn s3_object_store() {
    let server = common::cluster::s3();
    let bucket = server.create_bucket("conformance");
    let (_tmp, config) = s3_objects_config(server, &bucket, Some("nexus/suite"));
    let unused = std::path::Path::new("/nonexistent/objects");
    testsuite::object_store_suite(|| async { nexus::store::objects::open(&config, unused).await.unwrap() }).await;
    // Every object is in the bucket under the prefix, then the tenant.
    let mut keys = server.list_keys(&bucket);
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "nexus/suite/suite-a/blobs/big.bin",
            "nexus/suite/suite-a/docs/report.txt",
            "nexus/suite/suite-b/docs/report.txt"
        ]
    );
    assert!(!unused.exists(), "the s3 backend writes nothing locally");
}

/// An object larger than one part goes up as a multipart upload and comes back whole.
#[tokio::test]
async fn s3_object_store_round_trips_an_object_of_several_parts() {
    use futures::StreamExt;
    use sha2::Digest;
    let server = common::cluster::s3();
    let bucket = server.create_bucket("multipart");
    let (_tmp, config) = s3_objects_config(server, &bucket, None);
    let store = nexus::store::objects::open(&config, std::path::Path::new("/nonexistent")).await.unwrap();
    let tenant = nexus::store::TenantId::new("big").unwrap();

    // 20 MiB of xorshift bytes (no two parts alike), sent in uneven chunks.
    let size = 20 * 1024 * 1024 + 12_345;
    assert!(size > 2 * nexus::store::objects::local::CHUNK);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let expected = hex::encode(sha2::Sha256::digest(&data));
    let chunks: Vec<std::io::Result<bytes::Bytes>> =
        data.chunks(777_777).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
    let info = store.put(&tenant, "media/video.bin", futures::stream::iter(chunks).boxed()).await.unwrap();
    assert_eq!(info.size, size as u64);
    assert_eq!(info.sha256.as_deref(), Some(expected.as_str()));

    let (meta, mut stream) = store.get(&tenant, "media/video.bin").await.unwrap();
    assert_eq!(meta.size, size as u64);
    let mut hasher = sha2::Sha256::new();
    let mut read = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        read += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(read, size);
    assert_eq!(hex::encode(hasher.finalize()), expected);
    assert_eq!(store.content_hash(&tenant, "media/video.bin").await.unwrap(), expected);
    assert_eq!(server.list_keys(&bucket), vec!["big/media/video.bin"]);

    // A body that fails midway leaves nothing behind, not even a part of it.
    let failing: Vec<std::io::Result<bytes::Bytes>> =
        vec![Ok(bytes::Bytes::from(vec![1u8; 9 * 1024 * 1024])), Err(std::io::Error::other("client went away"))];
    let err = store.put(&tenant, "media/broken.bin", futures::stream::iter(failing).boxed()).await.unwrap_err();
    assert_eq!(err.code, nexus::error::ErrorCode::InvalidRequest);
    assert!(store.head(&tenant, "media/broken.bin").await.unwrap().is_none());
    assert_eq!(server.list_keys(&bucket), vec!["big/media/video.bin"]);
}

/// A service that goes away while running gives `backend_unavailable` (503), not a store failure.
#[tokio::test]
async fn s3_object_store_unreachable_while_running_is_backend_unavailable() {
    use futures::StreamExt;
    let tmp = tempfile::tempdir().unwrap();
    let mut own = common::cluster::OwnS3::start(&tmp.path().join("s3"));
    let bucket = own.server.create_bucket("going-away");
    let (_keys, config) = s3_objects_config(&own.server, &bucket, None);
    let store = nexus::store::objects::open(&config, std::path::Path::new("/nonexistent")).await.unwrap();
    let tenant = nexus::store::TenantId::new("t").unwrap();
    let body = || futures::stream::iter(vec![Ok(bytes::Bytes::from_static(b"kept"))]).boxed();
    store.put(&tenant, "a.txt", body()).await.unwrap();
    let missing = store.get(&tenant, "missing.txt").await.err().unwrap();
    assert_eq!(missing.code, nexus::error::ErrorCode::NotFound);

    own.stop();
    let started = std::time::Instant::now();
    let errors = [
        store.get(&tenant, "a.txt").await.err().unwrap(),
        store.put(&tenant, "b.txt", body()).await.unwrap_err(),
        store.list(&tenant, "").await.unwrap_err(),
        store.head(&tenant, "a.txt").await.unwrap_err(),
    ];
    for err in errors {
        assert_eq!(err.code, nexus::error::ErrorCode::BackendUnavailable, "{err}");
        assert_eq!(err.code.http_status(), 503);
        assert!(err.message.contains(&own.server.endpoint), "{err}");
        assert!(!err.message.contains(&own.server.secret_key), "{err}");
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "gave up in {:?}", started.elapsed());
}

// --- pgvector ---------------------------------------------------------------------------------

mod pgvector_store {
    use std::sync::Arc;
    use std::time::Duration;

    use nexus::config::{Quantization, Secret, VectorsBackend, VectorsConfig};
    use nexus::error::ErrorCode;
    use nexus::store::TenantId;
    use nexus::store::postgres::{Pg, PgSettings};
    use nexus::store::testsuite;
    use nexus::store::vectors::pgvector::PgvectorStore;
    use nexus::store::vectors::{VectorPoint, VectorQuery, VectorStore, cosine};

    use super::common;

    async fn connect(url: String) -> Pg {
        Pg::connect(&PgSettings {
            setting: "store.vectors.url",
            url: Secret::new(url),
            pool_size: 4,
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
            ca_file: None,
        })
        .await
        .unwrap()
    }

    fn config(dimensions: usize, quantization: Quantization) -> VectorsConfig {
        VectorsConfig {
            backend: VectorsBackend::Pgvector,
            dimensions,
            connectivity: 16,
            expansion_add: 64,
            expansion_search: 64,
            quantization,
            ..Default::default()
        }
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

    #[tokio::test]
    async fn pgvector_vector_store() {
        for quantization in [Quantization::F32, Quantization::F16] {
            let pg = connect(common::cluster::postgres().fresh_database("pgvector-suite")).await;
            let config = config(8, quantization);
            testsuite::vector_store_suite(|| async {
                Arc::new(PgvectorStore::open(pg.clone(), &config).await.unwrap()) as Arc<dyn VectorStore>
            })
            .await;
        }
    }

    /// A tenant of at most `exact_below` vectors is scored exactly, as the embedded store does.
    #[tokio::test]
    async fn pgvector_small_tenants_are_searched_exactly() {
        let config = VectorsConfig {
            connectivity: 8,
            expansion_add: 16,
            expansion_search: 16,
            ..config(testsuite::SMALL_TENANT_DIMENSIONS, Quantization::F32)
        };
        testsuite::small_tenant_search_suite(|| async {
            let pg = connect(common::cluster::postgres().fresh_database("pgvector-exact")).await;
            Arc::new(PgvectorStore::open(pg, &config).await.unwrap()) as Arc<dyn VectorStore>
        })
        .await;
    }

    /// A node that lost the projector's lease (an older fencing token) can neither write points
    /// nor move the committed position; what it applied without committing never reaches the
    /// store the other nodes read.
    #[tokio::test]
    async fn pgvector_refuses_writes_from_a_node_that_lost_its_lease() {
        let url = common::cluster::postgres().fresh_database("pgvector-fence");
        let config = config(8, Quantization::F32);
        let a = PgvectorStore::open(connect(url.clone()).await, &config).await.unwrap();
        let b = PgvectorStore::open(connect(url.clone()).await, &config).await.unwrap();
        assert!(a.shared() && b.shared());
        let t = tenant("fence");
        let v = vectors(8, 8, 7);

        a.set_fence(1);
        a.upsert(vec![point(1, &t, v[1].clone())], 1).await.unwrap();
        a.commit(1).await.unwrap();
        // Applied, never committed.
        a.upsert(vec![point(5, &t, v[5].clone())], 2).await.unwrap();
        a.delete(vec![1], 3).await.unwrap();
        assert_eq!(a.keys().await.unwrap(), vec![5], "a writer reads its own pending changes");
        assert_eq!(b.keys().await.unwrap(), vec![1], "other nodes read committed points only");
        let everything = |vector: &Vec<f32>| VectorQuery {
            tenant: t.clone(),
            vector: vector.clone(),
            k: 10,
            kinds: None,
            predicate: None,
        };
        let keys_found = |hits: Vec<nexus::store::vectors::VectorHit>| {
            let mut keys: Vec<u64> = hits.iter().map(|h| h.key).collect();
            keys.sort_unstable();
            keys
        };
        assert_eq!(keys_found(a.search(everything(&v[1])).await.unwrap()), vec![5]);

        b.set_fence(2);
        b.upsert(vec![point(2, &t, v[2].clone())], 4).await.unwrap();
        b.commit(2).await.unwrap();
        // The old node, now following, reads what is committed: its pending changes are gone.
        assert_eq!(a.keys().await.unwrap(), vec![1, 2]);
        assert_eq!(keys_found(a.search(everything(&v[1])).await.unwrap()), vec![1, 2]);
        let among = a.nearest_among(&t, vec![1, 2, 5], v[1].clone(), 10).await.unwrap();
        assert_eq!(keys_found(among), vec![1, 2]);

        for refused in [
            a.upsert(vec![point(3, &t, v[3].clone())], 5).await,
            a.delete(vec![1], 6).await,
            a.commit(3).await,
            a.clear().await,
        ] {
            let e = refused.expect_err("the old token is refused");
            assert_eq!(e.code, ErrorCode::Conflict, "{e}");
            assert!(e.message.contains("lost the lease"), "{e}");
        }
        b.upsert(vec![point(4, &t, v[4].clone())], 7).await.unwrap();
        b.commit(4).await.unwrap();

        let reader = PgvectorStore::open(connect(url).await, &config).await.unwrap();
        assert_eq!(reader.committed_seq().await.unwrap(), 4);
        assert_eq!(reader.keys().await.unwrap(), vec![1, 2, 4], "the old node's pending point 5 is gone");
        assert_eq!(keys_found(reader.search(everything(&v[3])).await.unwrap()), vec![1, 2, 4]);
        // Once it regains the lease with a newer token, the old node writes again.
        a.set_fence(3);
        a.upsert(vec![point(6, &t, v[6].clone())], 8).await.unwrap();
        a.commit(5).await.unwrap();
        assert!(b.commit(6).await.is_err(), "and the other one no longer can");
        assert_eq!(reader.keys().await.unwrap(), vec![1, 2, 4, 6]);
    }

    /// A small tenant among a large one, and a key predicate that SQL cannot see: the index walk
    /// alone would return too few, the store still finds k.
    #[tokio::test]
    async fn pgvector_search_finds_k_beyond_what_the_index_returns() {
        let server = common::cluster::postgres();
        let url = server.fresh_database("pgvector-filter");
        let database = url.rsplit('/').next().unwrap().to_string();
        // A table this small would be scanned whole; make the planner walk the HNSW index, as it
        // does over a large table.
        server.psql(&server.admin_url, &format!("ALTER DATABASE \"{database}\" SET enable_seqscan = off"));
        let pg = connect(url.clone()).await;
        let store = PgvectorStore::open(pg, &config(8, Quantization::F32)).await.unwrap();
        server.psql(&url, "DROP INDEX vector_points_by_tenant");
        let (a, b) = (tenant("big"), tenant("small"));
        let many = vectors(2000, 8, 1);
        let few = vectors(20, 8, 2);
        let mut points: Vec<VectorPoint> =
            many.iter().enumerate().map(|(i, v)| point(i as u64 + 1, &a, v.clone())).collect();
        points.extend(few.iter().enumerate().map(|(i, v)| point(10_001 + i as u64, &b, v.clone())));
        store.upsert(points.clone(), 1).await.unwrap();
        store.commit(1).await.unwrap();

        server.psql(&url, "ANALYZE vector_points");

        // Exact answers, computed here.
        let query = many[0].iter().map(|x| -x).collect::<Vec<f32>>();
        let literal = format!("[{}]", query.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(","));
        let index_alone = server.psql(
            &url,
            &format!(
                "SET hnsw.iterative_scan = off; SELECT count(*) FROM (SELECT key FROM vector_points \
                 WHERE tenant = 'small' ORDER BY embedding <=> '{literal}' LIMIT 10) s"
            ),
        );
        assert!(index_alone.parse::<usize>().unwrap() < 10, "the index alone finds {index_alone} of the small tenant");
        let exact = |accept: &dyn Fn(&VectorPoint) -> bool| {
            let mut scored: Vec<(u64, f32)> =
                points.iter().filter(|p| accept(p)).map(|p| (p.key, cosine(&p.vector, &query))).collect();
            scored.sort_by(|x, y| y.1.total_cmp(&x.1));
            scored.into_iter().take(10).map(|(k, _)| k).collect::<Vec<u64>>()
        };

        let small = store
            .search(VectorQuery { tenant: b.clone(), vector: query.clone(), k: 10, kinds: None, predicate: None })
            .await
            .unwrap();
        assert_eq!(small.len(), 10, "{small:?}");
        assert!(small.iter().all(|h| h.key > 10_000), "only the small tenant: {small:?}");
        assert!(small.windows(2).all(|w| w[0].score >= w[1].score), "best first: {small:?}");
        assert_eq!(small.iter().map(|h| h.key).collect::<Vec<_>>(), exact(&|p| p.tenant == b));

        let sparse = store
            .search(VectorQuery {
                tenant: a.clone(),
                vector: query.clone(),
                k: 10,
                kinds: None,
                predicate: Some(Arc::new(|key| key % 97 == 0)),
            })
            .await
            .unwrap();
        assert_eq!(sparse.len(), 10, "{sparse:?}");
        assert!(sparse.iter().all(|h| h.key % 97 == 0 && h.key <= 2000), "{sparse:?}");
        assert!(sparse.windows(2).all(|w| w[0].score >= w[1].score), "best first: {sparse:?}");
        let expected = exact(&|p| p.tenant == a && p.key % 97 == 0);
        let found = sparse.iter().filter(|h| expected.contains(&h.key)).count();
        assert!(found >= 9, "the exact top 10 {expected:?}, found {sparse:?}");

        // Fewer acceptable points than k: all of them.
        let rare = store
            .search(VectorQuery {
                tenant: a.clone(),
                vector: query.clone(),
                k: 10,
                kinds: None,
                predicate: Some(Arc::new(|key| key % 500 == 0)),
            })
            .await
            .unwrap();
        let mut keys: Vec<u64> = rare.iter().map(|h| h.key).collect();
        keys.sort_unstable();
        assert_eq!(keys, vec![500, 1000, 1500, 2000]);
        let stats = store.stats().await.unwrap();
        assert_eq!(stats.items, 2020);
        assert!(stats.bytes > 0);
    }

    #[tokio::test]
    async fn pgvector_open_refuses_what_it_cannot_serve() {
        let server = common::cluster::postgres();
        let url = server.fresh_database("pgvector-open");
        let pg = connect(url.clone()).await;
        let store = PgvectorStore::open(pg.clone(), &config(8, Quantization::F32)).await.unwrap();
        store.upsert(vec![point(1, &tenant("t"), vectors(1, 8, 3).remove(0))], 1).await.unwrap();
        store.commit(1).await.unwrap();
        drop(store);

        for other in [config(16, Quantization::F32), config(8, Quantization::F16)] {
            let e = PgvectorStore::open(pg.clone(), &other).await.err().expect("other vectors are refused");
            assert_eq!(e.code, ErrorCode::ConfigInvalid, "{e}");
            assert!(e.message.contains("nexus reindex --store vectors"), "{e}");
        }
        let e = PgvectorStore::open(pg.clone(), &config(8, Quantization::I8)).await.err().unwrap();
        assert!(e.code == ErrorCode::ConfigInvalid && e.message.contains("quantization"), "{e}");
        let mut bad = config(8, Quantization::F32);
        bad.expansion_add = 8;
        let e = PgvectorStore::open(pg.clone(), &bad).await.err().unwrap();
        assert!(e.code == ErrorCode::ConfigInvalid && e.message.contains("expansion_add"), "{e}");

        // Discarded (reindex), it opens with the new dimensions, empty.
        PgvectorStore::discard(&pg).await.unwrap();
        let store = PgvectorStore::open(pg.clone(), &config(16, Quantization::F32)).await.unwrap();
        assert!(store.keys().await.unwrap().is_empty());
        assert_eq!(store.committed_seq().await.unwrap(), 0);
        store.upsert(vec![point(2, &tenant("t"), vectors(1, 16, 4).remove(0))], 1).await.unwrap();

        // A role that may not create the extension gets one line saying what to run.
        let role = server.create_role("pgvector");
        let owned = server.fresh_database_owned_by("pgvector-role", &role);
        let pg = connect(owned.clone()).await;
        let e = PgvectorStore::open(pg.clone(), &config(8, Quantization::F32)).await.err().unwrap();
        assert_eq!(e.code, ErrorCode::ConfigInvalid, "{e}");
        assert!(
            e.message.contains("pgvector extension is not installed")
                && e.message.contains("CREATE EXTENSION vector")
                && e.message.contains("store.vectors")
                && !e.message.contains('\n'),
            "{e}"
        );
        let database = owned.rsplit('/').next().unwrap();
        server.psql(&server.url(database), "CREATE EXTENSION vector");
        let store = PgvectorStore::open(pg, &config(8, Quantization::F32)).await.unwrap();
        assert!(store.keys().await.unwrap().is_empty());
    }
}
