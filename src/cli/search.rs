//! `nexus search`: search the knowledge base, through the running server when one holds the data
//! directory, else on the data directory directly.

use serde_json::{Value, json};

use super::SearchMode;
use super::server::server_request;
use crate::app::App;
use crate::config::Config;
use crate::datadir::{DataDir, Holder};
use crate::error::{Error, Result};
use crate::search::{Fusion, Mode};
use crate::store::TenantId;

impl From<SearchMode> for Mode {
    fn from(mode: SearchMode) -> Self {
        match mode {
            SearchMode::Hybrid => Mode::Hybrid,
            SearchMode::Keyword => Mode::Keyword,
            SearchMode::Semantic => Mode::Semantic,
        }
    }
}

pub(super) struct SearchArgs {
    pub query: String,
    pub json: bool,
    pub top_k: usize,
    pub mode: Mode,
    pub collection: Option<String>,
}

pub(super) async fn run(config: Config, args: SearchArgs) -> Result<i32> {
    let mut body = json!({"query": args.query, "top_k": args.top_k, "mode": args.mode});
    if let Some(c) = &args.collection {
        body["filters"] = json!({"collection": c});
    }
    let results: Value = match DataDir::holder(&config.data_dir) {
        Holder::Held(info) => {
            server_request(&config, &info, reqwest::Method::POST, "/api/v1/search", Some(body)).await?
        }
        Holder::Free => {
            let app = App::open(config).await?;
            let input: crate::http::search::SearchInput =
                serde_json::from_value(body).map_err(|e| Error::internal("search request", e))?;
            let hits = app
                .search
                .search(&input.into_request(TenantId::default_tenant(), Fusion::for_documents(&app.config.knowledge))?)
                .await;
            app.shutdown().await;
            let hits = hits?;
            let results: Vec<Value> = hits
                .into_iter()
                .map(|h| {
                    let m = &h.record.metadata;
                    json!({"document_id": m.get("document_id"), "chunk_id": h.record.id, "source": m.get("source"),
                           "title": h.record.title, "score": h.score, "snippet": h.snippet})
                })
                .collect();
            json!({ "results": results })
        }
    };
    let empty = Vec::new();
    let list = results["results"].as_array().unwrap_or(&empty);
    if args.json {
        let trimmed: Vec<Value> = list
            .iter()
            .map(|r| {
                json!({"document_id": r["document_id"], "chunk_id": r["chunk_id"], "source": r["source"],
                       "title": r["title"], "score": r["score"], "snippet": r["snippet"]["text"]})
            })
            .collect();
        println!("{}", json!({ "results": trimmed }));
    } else {
        for (i, r) in list.iter().enumerate() {
            println!(
                "{:>2}. {} ({}) score {:.4}",
                i + 1,
                r["title"].as_str().unwrap_or("-"),
                r["source"].as_str().unwrap_or("-"),
                r["score"].as_f64().unwrap_or(0.0)
            );
            println!("    {}", r["snippet"]["text"].as_str().unwrap_or_default().replace('\n', " "));
        }
    }
    Ok(0)
}
