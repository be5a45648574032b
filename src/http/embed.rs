//! Embeddings on demand, with the configured embedder.

use std::sync::Arc;

use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::error::ApiJson;
use crate::app::App;
use crate::embed::EmbedderIdentity;
use crate::error::{Error, Result};

const MAX_TEXTS: usize = 256;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"texts": ["How do I rotate an API key?", "Keys are revoked at once."]}))]
pub struct EmbedInput {
    /// 1-256 texts. A text longer than the model takes is embedded in pieces and averaged.
    pub texts: Vec<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Embeddings {
    pub embedder: EmbedderIdentity,
    /// One unit vector per text, in order.
    pub vectors: Vec<Vec<f32>>,
}

/// Embeds texts.
///
/// One unit vector per text, in order, from the configured embedder (named in the answer).
/// Answers 503 with Retry-After when the embedding queue is full.
#[utoipa::path(post, path = "/api/v1/embed", tag = "embed", request_body = EmbedInput,
    responses((status = 200, body = Embeddings), (status = 400, body = super::error::ErrorBody),
              (status = 503, body = super::error::ErrorBody, description = "queue full; retry after the Retry-After seconds")))]
pub async fn embed(State(app): State<Arc<App>>, ApiJson(input): ApiJson<EmbedInput>) -> Result<axum::Json<Embeddings>> {
    if input.texts.is_empty() || input.texts.len() > MAX_TEXTS {
        return Err(Error::invalid(format!("send 1-{MAX_TEXTS} texts")));
    }
    let vectors = app.embed.embed(&input.texts).await?;
    Ok(axum::Json(Embeddings { embedder: app.embed.identity().clone(), vectors }))
}
