//! `nexus reindex`: rebuild derived stores from the record, re-embedding first when the embedder
//! changed.

use super::StoreName;
use super::server::progress_bar;
use crate::app::App;
use crate::config::Config;
use crate::error::Result;
use crate::writelog::{projections, reembed, reindex};

impl StoreName {
    fn as_str(self) -> &'static str {
        match self {
            StoreName::Text => "text",
            StoreName::Vectors => "vectors",
            StoreName::Graph => "graph",
        }
    }
}

pub(super) async fn run(config: Config, only: Option<StoreName>) -> Result<i32> {
    let with_vectors = only.is_none_or(|s| s == StoreName::Vectors);
    // The vector index is rebuilt whole: drop it first, since it may have been built with other
    // dimensions than the configured embedder's and then could not be opened.
    let embedder = if with_vectors { Some(crate::embed::open_embedder(&config.embed)?) } else { None };
    let (dir, stores) = App::open_stores(&config, with_vectors).await?;
    let total = stores.records.stats().await?.items;
    for projection in projections(&stores) {
        if only.is_some_and(|s| s.as_str() != projection.name()) {
            continue;
        }
        let bar = progress_bar(total, projection.name(), "records");
        if let (Some(embedder), "vectors") = (&embedder, projection.name()) {
            let service = crate::embed::EmbedService::start(embedder.clone(), &config.embed);
            let outcome = reembed::reembed_and_rebuild(dir.root(), &*stores.records, &service, &projection, |n| {
                bar.set_position(n)
            })
            .await?;
            bar.finish();
            match outcome {
                reembed::Outcome::Rebuilt { records } => println!("vectors: rebuilt from {records} records"),
                reembed::Outcome::Reembedded { embedded, resumed_after } => {
                    let resumed =
                        if resumed_after > 0 { format!(", resumed after key {resumed_after}") } else { String::new() };
                    println!(
                        "vectors: re-embedded {embedded} records with {}{resumed}; index rebuilt",
                        service.identity()
                    );
                }
            }
            continue;
        }
        let done = reindex::reindex(&*stores.records, &projection, |n| bar.set_position(n)).await?;
        bar.finish();
        println!("{}: rebuilt from {done} records", projection.name());
    }
    Ok(0)
}
