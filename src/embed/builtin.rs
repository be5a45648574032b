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
use rust_embed::RustEmbed;
use tokenizers::{Tokenizer, TruncationParams};

use super::bert::{Bert, BertConfig};
use super::{Embedder, EmbedderIdentity};
use crate::error::{Error, Result};

pub const DIMENSIONS: usize = crate::config::BUILTIN_EMBED_DIMENSIONS;
/// sentence-transformers' `max_seq_length` for this model, special tokens included.
pub const MAX_TOKENS: usize = 256;
/// Tokens per piece when a long text is split: room for [CLS]/[SEP] and for re-tokenising at a
/// piece's edges.
const PIECE_TOKENS: usize = 240;
/// `[PAD]`; padded positions are masked out of attention and pooling.
const PAD_ID: u32 = 0;
/// A forward pass pads every sequence to its longest. Sequences are grouped by length so that
/// padding adds at most this share of work: a short query batched with a long chunk is not
/// run at the chunk's length.
const MAX_PADDING_SHARE: f32 = 0.2;
/// Groups smaller than this are merged anyway: each pass has a fixed cost.
const MIN_GROUP: usize = 4;
/// Padded tokens of one forward pass at most: larger passes spill the layers' activations out of
/// the core's cache and run a third slower per token (measured by `cargo bench --bench embed`).
const MAX_GROUP_TOKENS: usize = 128;
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
    model: Bert,
    /// Truncates at 256, like sentence-transformers; sequences are padded per forward pass.
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
        let model = Bert::load(vb, &config).map_err(model_err("build the model"))?;
        let mut splitter = Tokenizer::from_bytes(file("tokenizer.json")?).map_err(model_err("load the tokenizer"))?;
        // The shipped tokenizer.json pads and truncates at 128; set what sentence-transformers uses.
        splitter.with_padding(None);
        splitter.with_truncation(None).map_err(model_err("configure the tokenizer"))?;
        let mut tokenizer = splitter.clone();
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))
            .map_err(model_err("configure the tokenizer"))?;
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

    /// Embeds, blocking the calling thread.
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        on_pool(|| self.inner.forward(texts))
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
        let ids: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
        let mut out = vec![Vec::new(); texts.len()];
        for group in length_groups(&ids) {
            let members: Vec<&[u32]> = group.iter().map(|&i| ids[i]).collect();
            let vectors = self.forward_padded(&members).map_err(model_err("run the embedding model"))?;
            for (i, v) in group.into_iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// One forward pass over token sequences padded to the longest, then mean pooling over the
    /// real tokens and L2 normalisation.
    fn forward_padded(&self, sequences: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let batch = sequences.len();
        let len = sequences.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(batch * len);
        let mut mask = Vec::with_capacity(batch * len);
        for s in sequences {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(PAD_ID, len - s.len()));
            mask.extend(std::iter::repeat_n(1u32, s.len()));
            mask.extend(std::iter::repeat_n(0u32, len - s.len()));
        }
        let ids = Tensor::from_vec(ids, (batch, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (batch, len), &self.device)?;
        let hidden = self.model.forward(&ids, &mask)?; // [batch, len, 384]
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // [batch, len, 1]
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // [batch, 384]
        let counts = mask.sum(1)?; // [batch, 1]
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        mean.broadcast_div(&norms)?.to_vec2::<f32>()
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

/// Indexes of `sequences` in groups of similar length (longest first), each group padded to its
/// longest with at most `MAX_PADDING_SHARE` of its tokens being padding (or at least
/// `MIN_GROUP` sequences) and at most `MAX_GROUP_TOKENS` tokens (or one sequence).
fn length_groups(sequences: &[&[u32]]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..sequences.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sequences[i].len()));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let (mut longest, mut real) = (0usize, 0usize);
    for i in order {
        let n = sequences[i].len();
        if !current.is_empty() {
            let padded = longest * (current.len() + 1);
            let share = 1.0 - (real + n) as f32 / padded as f32;
            if (share > MAX_PADDING_SHARE && current.len() >= MIN_GROUP) || padded > MAX_GROUP_TOKENS {
                groups.push(std::mem::take(&mut current));
                real = 0;
            }
        }
        if current.is_empty() {
            longest = n;
        }
        current.push(i);
        real += n;
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
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
        crate::store::blocking(move || on_pool(|| inner.forward(&texts))).await
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.inner.splitter.encode_fast(text, true).map(|e| e.len()).unwrap_or(text.len())
    }

    fn concurrency(&self) -> usize {
        1
    }
}

/// Runs `f` on a thread of the pool the encoder's parallel loops use, so its serial steps do
/// not compete for the cores with idle workers spinning for work.
fn on_pool<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    rayon::scope(|_| f())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_groups_bound_padding_and_keep_every_sequence() {
        let lengths = [200usize, 12, 15, 190, 11, 14, 13, 60, 180, 10, 12];
        let sequences: Vec<Vec<u32>> = lengths.iter().map(|&n| vec![1; n]).collect();
        let refs: Vec<&[u32]> = sequences.iter().map(Vec::as_slice).collect();
        let groups = length_groups(&refs);
        let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        // Each long chunk runs alone (over MAX_GROUP_TOKENS together); short queries share
        // passes and are never padded to a chunk's length.
        let longest = |g: &Vec<usize>| g.iter().map(|&i| lengths[i]).max().unwrap();
        assert_eq!(groups.iter().filter(|g| longest(g) >= 180).map(Vec::len).collect::<Vec<_>>(), vec![1, 1, 1]);
        assert!(groups.iter().any(|g| g.len() >= 4 && longest(g) <= 15), "{groups:?}");
        assert_eq!(length_groups(&refs[1..3]).len(), 1, "a few short sequences share one pass");
        for group in &groups {
            let padded = group.iter().map(|&i| lengths[i]).max().unwrap() * group.len();
            assert!(group.len() == 1 || padded <= MAX_GROUP_TOKENS, "{group:?} pads to {padded} tokens");
        }
    }
}
