//! The built-in embedder: all-MiniLM-L6-v2 run with candle, exactly as sentence-transformers runs
//! it — WordPiece tokens truncated at 256, padded to the longest in the batch, BERT forward pass,
//! mean pooling over the attention mask, L2 normalisation.
//!
//! The weights (f16 safetensors, see `assets/models/all-minilm-l6-v2/README.md`) are compiled
//! into release binaries; debug builds read them from the repository at run time.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use rust_embed::RustEmbed;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::{Embedder, EmbedderIdentity};
use crate::error::{Error, Result};

pub const DIMENSIONS: usize = 384;
/// sentence-transformers' `max_seq_length` for this model, special tokens included.
pub const MAX_TOKENS: usize = 256;
/// Tokens per piece when a long text is split: room for [CLS]/[SEP] and for re-tokenising at a
/// piece's edges.
const PIECE_TOKENS: usize = 240;
/// The first 12 hex digits of the shipped weights' SHA-256 (checked by a test).
pub const WEIGHTS_VERSION: &str = "f16-553c9ff2a4d9";

#[derive(RustEmbed)]
#[folder = "assets/models/all-minilm-l6-v2/"]
#[include = "*.json"]
#[include = "*.safetensors"]
struct ModelFiles;

pub struct MiniLm {
    inner: Arc<Inner>,
    identity: EmbedderIdentity,
}

struct Inner {
    model: BertModel,
    /// Truncates at 256 and pads to the batch's longest, like sentence-transformers.
    tokenizer: Tokenizer,
    /// No truncation: used to find where to split long texts.
    splitter: Tokenizer,
    device: Device,
}

fn model_err<E: std::fmt::Display>(context: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::internal(context, e)
}

fn file(name: &str) -> Result<Cow<'static, [u8]>> {
    ModelFiles::get(name).map(|f| f.data).ok_or_else(|| {
        Error::internal("load the built-in model", format!("{name} is missing from assets/models/all-minilm-l6-v2"))
    })
}

impl MiniLm {
    pub fn load() -> Result<MiniLm> {
        let device = Device::Cpu;
        let config: BertConfig =
            serde_json::from_slice(&file("config.json")?).map_err(model_err("read the model configuration"))?;
        // Borrowed bytes (release: compiled in) are read in place, without a second copy.
        let vb = match file("model.f16.safetensors")? {
            Cow::Borrowed(bytes) => VarBuilder::from_slice_safetensors(bytes, DType::F32, &device),
            Cow::Owned(bytes) => VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device),
        }
        .map_err(model_err("load the model weights"))?;
        let model = BertModel::load(vb, &config).map_err(model_err("build the model"))?;
        let mut splitter = Tokenizer::from_bytes(file("tokenizer.json")?).map_err(model_err("load the tokenizer"))?;
        // The shipped tokenizer.json pads and truncates at 128; set what sentence-transformers uses.
        splitter.with_padding(None);
        splitter.with_truncation(None).map_err(model_err("configure the tokenizer"))?;
        let mut tokenizer = splitter.clone();
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))
            .map_err(model_err("configure the tokenizer"))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id: 0,
            pad_token: "[PAD]".into(),
            ..Default::default()
        }));
        Ok(MiniLm {
            inner: Arc::new(Inner { model, tokenizer, splitter, device }),
            identity: EmbedderIdentity {
                provider: "builtin".into(),
                model: "all-minilm-l6-v2".into(),
                dimensions: DIMENSIONS,
                version: WEIGHTS_VERSION.into(),
            },
        })
    }

    /// Embeds on the calling thread (blocking).
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.inner.forward(texts)
    }

    /// Token count of `text` without truncation, special tokens included.
    pub fn token_count(&self, text: &str) -> Result<usize> {
        let encoding = self.inner.splitter.encode_fast(text, true).map_err(model_err("tokenize"))?;
        Ok(encoding.len())
    }
}

impl Inner {
    fn forward(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encodings = self.tokenizer.encode_batch(inputs, true).map_err(model_err("tokenize"))?;
        let batch = encodings.len();
        let len = encodings[0].len();
        let mut ids = Vec::with_capacity(batch * len);
        let mut mask = Vec::with_capacity(batch * len);
        for e in &encodings {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let ids = Tensor::from_vec(ids, (batch, len), &self.device)?;
            let mask = Tensor::from_vec(mask, (batch, len), &self.device)?;
            let token_types = ids.zeros_like()?;
            let hidden = self.model.forward(&ids, &token_types, Some(&mask))?; // [batch, len, 384]
            let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // [batch, len, 1]
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // [batch, 384]
            let counts = mask.sum(1)?; // [batch, 1]
            let mean = summed.broadcast_div(&counts)?;
            let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
            mean.broadcast_div(&norms)?.to_vec2::<f32>()
        };
        run().map_err(model_err("run the embedding model"))
    }

    fn split(&self, text: &str) -> Vec<String> {
        let Ok(encoding) = self.splitter.encode(text, false) else { return vec![text.to_string()] };
        if encoding.len() + 2 <= MAX_TOKENS {
            return vec![text.to_string()];
        }
        let offsets = encoding.get_offsets();
        let mut pieces = Vec::new();
        let mut start_token = 0;
        while start_token < offsets.len() {
            let mut end_token = (start_token + PIECE_TOKENS).min(offsets.len());
            // Prefer to cut between words: back off while the next token continues a word.
            if end_token < offsets.len() {
                let mut cut = end_token;
                while cut > start_token + PIECE_TOKENS / 2 && offsets[cut].0 == offsets[cut - 1].1 {
                    cut -= 1;
                }
                if cut > start_token + PIECE_TOKENS / 2 {
                    end_token = cut;
                }
            }
            let from = offsets[start_token].0;
            let to = if end_token < offsets.len() { offsets[end_token].0 } else { text.len() };
            if let Some(piece) = text.get(from..to) {
                pieces.push(piece.trim().to_string());
            }
            start_token = end_token;
        }
        pieces.retain(|p| !p.is_empty());
        if pieces.is_empty() { vec![text.to_string()] } else { pieces }
    }
}

#[async_trait]
impl Embedder for MiniLm {
    fn identity(&self) -> &EmbedderIdentity {
        &self.identity
    }

    fn split(&self, text: &str) -> Vec<String> {
        self.inner.split(text)
    }

    async fn embed_batch(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        let inner = self.inner.clone();
        crate::store::blocking(move || inner.forward(&texts)).await
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.inner.splitter.encode_fast(text, true).map(|e| e.len()).unwrap_or(text.len())
    }

    fn concurrency(&self) -> usize {
        1
    }
}
