//! Runs every store's conformance suite against the embedded implementations.

use std::path::PathBuf;
use std::sync::Arc;

use nexus::config::{
    Quantization, RecordsBackend, RecordsConfig, Synchronous, TextBackend, TextConfig, VectorsBackend, VectorsConfig,
};
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
    let config =
        RecordsConfig { backend: RecordsBackend::Sqlite, synchronous: Synchronous::Full, mmap_mb: 8192, url: None };
    testsuite::record_store_suite(|| async {
        Arc::new(SqliteRecordStore::open(&path, &config).await.unwrap()) as Arc<dyn RecordStore>
    })
    .await;
}

#[tokio::test]
async fn sqlite_auth_store() {
    let (_tmp, path) = dir();
    let config =
        RecordsConfig { backend: RecordsBackend::Sqlite, synchronous: Synchronous::Full, mmap_mb: 8192, url: None };
    testsuite::auth_store_suite(|| async {
        let records = SqliteRecordStore::open(&path, &config).await.unwrap();
        Arc::new(SqliteAuthStore::new(&records)) as Arc<dyn AuthStore>
    })
    .await;
}

#[tokio::test]
async fn usearch_vector_store() {
    for quantization in [Quantization::F32, Quantization::F16, Quantization::I8] {
        let (_tmp, path) = dir();
        let config = VectorsConfig {
            backend: VectorsBackend::Usearch,
            dimensions: 8,
            connectivity: 16,
            expansion_add: 64,
            expansion_search: 64,
            quantization,
            url: None,
        };
        testsuite::vector_store_suite(|| async {
            Arc::new(UsearchVectorStore::open(&path, &config).await.unwrap()) as Arc<dyn VectorStore>
        })
        .await;
    }
}

#[tokio::test]
async fn tantivy_text_store() {
    let (_tmp, path) = dir();
    let config = TextConfig { backend: TextBackend::Tantivy, writer_memory_mb: 20, url: None };
    testsuite::text_store_suite(|| async {
        Arc::new(TantivyTextStore::open(&path, &config).await.unwrap()) as Arc<dyn TextStore>
    })
    .await;
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
    let config =
        RecordsConfig { backend: RecordsBackend::Sqlite, synchronous: Synchronous::Full, mmap_mb: 8192, url: None };
    testsuite::job_store_suite(|| async {
        Arc::new(SqliteRecordStore::open(&path, &config).await.unwrap()) as Arc<dyn nexus::store::jobs::JobStore>
    })
    .await;
}
