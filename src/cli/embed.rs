//! `nexus embed`: print the embedding of a text, made by the configured embedder.

use crate::config::Config;
use crate::error::{Error, Result};

pub(super) async fn run(config: Config, text: &str, chunks: bool) -> Result<i32> {
    let embedder = crate::embed::open_embedder(&config.embed)?;
    let service = crate::embed::EmbedService::start(embedder, &config.embed);
    let json = if chunks {
        let pieces = service.embed_chunks(text).await?;
        let pieces: Vec<_> =
            pieces.into_iter().map(|(text, vector)| serde_json::json!({"text": text, "vector": vector})).collect();
        serde_json::to_string(&pieces)
    } else {
        serde_json::to_string(&service.embed_one(text).await?)
    };
    let json = json.map_err(|e| Error::internal("encode vector", e))?;
    use std::io::Write;
    match writeln!(std::io::stdout(), "{json}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(0),
    }
}
