//! Retrieval quality on BEIR SciFact: ingest the corpus through the documents pipeline, run the
//! 300 test queries in keyword, semantic and hybrid modes, and print nDCG@10 and Recall@100
//! beside the published numbers (BM25 0.665, all-MiniLM-L6-v2 dense 0.6451).
//!
//! ```sh
//! cargo bench --bench scifact -- [--data PATH_TO/beir-scifact]
//! ```
//! Chunks are ranked; a document ranks where its best chunk does (trec_eval semantics: binary
//! relevance, run depth 100 documents).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use futures::StreamExt;
use nexus::app::App;
use nexus::config::{Config, ConfigFile, FlagOverrides};
use nexus::knowledge::documents::{CHUNK_KIND, DocumentMeta};
use nexus::search::{Fusion, Mode, SearchRequest};
use nexus::store::TenantId;
use nexus::store::records::RecordFilter;
use serde_json::Value;

fn read_jsonl(path: &PathBuf) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ndcg_at_10(ranking: &[String], relevant: &HashSet<String>) -> f64 {
    let dcg: f64 = ranking
        .iter()
        .take(10)
        .enumerate()
        .filter(|(_, d)| relevant.contains(*d))
        .map(|(i, _)| 1.0 / (i as f64 + 2.0).log2())
        .sum();
    let ideal: f64 = (0..relevant.len().min(10)).map(|i| 1.0 / (i as f64 + 2.0).log2()).sum();
    if ideal == 0.0 { 0.0 } else { dcg / ideal }
}

fn recall_at_100(ranking: &[String], relevant: &HashSet<String>) -> f64 {
    let found = ranking.iter().take(100).filter(|d| relevant.contains(*d)).count();
    found as f64 / relevant.len() as f64
}

fn main() {
    let mut data = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/datasets/beir-scifact"));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--data" {
            data = args.next().expect("--data PATH").into();
        }
    }
    let corpus = read_jsonl(&data.join("corpus.jsonl"));
    let queries: HashMap<String, String> = read_jsonl(&data.join("queries.jsonl"))
        .into_iter()
        .map(|q| (q["_id"].as_str().unwrap().to_string(), q["text"].as_str().unwrap().to_string()))
        .collect();
    let mut qrels: HashMap<String, HashSet<String>> = HashMap::new();
    for line in std::fs::read_to_string(data.join("qrels/test.tsv")).unwrap().lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        qrels.entry(cols[0].to_string()).or_default().insert(cols[1].to_string());
    }
    let mut test: Vec<&String> = qrels.keys().collect();
    test.sort();

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let flags = FlagOverrides { data_dir: Some(dir.path().join("data")), ..Default::default() };
        let config = Config::load(ConfigFile::IfExists(std::path::Path::new("/nonexistent")), &flags).unwrap();
        let app = App::open(config).await.unwrap();
        let tenant = TenantId::default_tenant();

        let started = Instant::now();
        let docs = app.documents.clone();
        let total = corpus.len();
        let results: Vec<_> = futures::stream::iter(corpus.iter().cloned())
            .map(|doc| {
                let docs = docs.clone();
                let tenant = tenant.clone();
                async move {
                    let meta = DocumentMeta {
                        source: doc["_id"].as_str().unwrap().to_string(),
                        collection: Some("scifact".into()),
                        title: doc["title"].as_str().map(str::to_string),
                        content_type: Some("txt".into()),
                        ..Default::default()
                    };
                    let text = doc["text"].as_str().unwrap_or_default().to_string();
                    docs.ingest_bytes(&tenant, &meta, text.into()).await
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        let head = app.stores.records.head_seq().await.unwrap();
        app.writes.wait_indexed(head).await;
        let ingest_secs = started.elapsed().as_secs_f64();
        let chunks = app.stores.text.stats().await.unwrap().items;
        eprintln!("ingested {total} documents ({failed} failed) into {chunks} chunks in {ingest_secs:.1}s");

        println!("\nBEIR SciFact, {} test queries, {} documents, {} chunks", test.len(), total, chunks);
        println!(
            "{:<10} {:>9} {:>11} {:>9} {:>9} {:>22}",
            "mode", "nDCG@10", "Recall@100", "p50 ms", "p95 ms", "nDCG@10 vs published"
        );
        for (mode, anchor, anchor_name) in [
            (Mode::Keyword, 0.665, "BM25 0.665"),
            (Mode::Semantic, 0.6451, "MiniLM 0.6451"),
            (Mode::Hybrid, 0.665, "BM25 0.665"),
        ] {
            let (mut ndcg, mut recall) = (0.0, 0.0);
            let mut ms = Vec::new();
            for qid in &test {
                let request = SearchRequest {
                    tenant: tenant.clone(),
                    query: queries[*qid].clone(),
                    mode,
                    filter: RecordFilter::kinds(&[CHUNK_KIND]),
                    top_k: 300,
                    offset: 0,
                    fusion: Fusion::default(),
                };
                let t = Instant::now();
                let hits = app.search.search(&request).await.unwrap();
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
                let mut ranking: Vec<String> = Vec::new();
                for h in hits {
                    let source = h.record.metadata["source"].as_str().unwrap_or_default().to_string();
                    if !ranking.contains(&source) {
                        ranking.push(source);
                    }
                }
                ndcg += ndcg_at_10(&ranking, &qrels[*qid]);
                recall += recall_at_100(&ranking, &qrels[*qid]);
            }
            ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let n = test.len() as f64;
            let (ndcg, recall) = (ndcg / n, recall / n);
            println!(
                "{:<10} {:>9.4} {:>11.4} {:>9.1} {:>9.1} {:>13.2}x {anchor_name}",
                format!("{mode:?}").to_lowercase(),
                ndcg,
                recall,
                ms[ms.len() / 2],
                ms[ms.len() * 95 / 100],
                ndcg / anchor
            );
        }
        println!("ingest: {:.1} documents/s, {:.1} chunks/s", total as f64 / ingest_secs, chunks as f64 / ingest_secs);
        app.shutdown().await;
    });
}
