//! BERT's encoder for inference on the CPU, on candle tensors.
//!
//! The computation is Hugging Face's `BertModel` (as candle-transformers' `bert` has it), arranged
//! for speed on a CPU:
//! - the query, key and value projections are one matrix product (a `[3h, h]` weight);
//! - attention's `1/sqrt(head size)` scale is folded into the query weights at load time;
//! - attention is one parallel pass per sequence and head over the fused projection's output,
//!   without copying the heads apart;
//! - the feed-forward activation — exact, erf-based GELU, as the model was trained with — is
//!   fused with its bias and computed in parallel with a polynomial erf the compiler vectorises,
//!   instead of a scalar libm call per element on one thread (which otherwise costs as much as
//!   all the matrix products together);
//! - on CPUs with AVX-512 BF16 the dense layers run in bfloat16 with f32 sums (`bf16.rs`), with
//!   the bias and GELU applied as each tile is finished.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use serde::Deserialize;

use super::bf16::{Bf16Linear, SharedOut};

type Result<T> = candle_core::Result<T>;

/// The fields of a Hugging Face `config.json` that the encoder needs.
#[derive(Clone, Debug, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: String,
}

/// A dense layer, `x Wᵀ + b`, optionally followed by exact GELU (the feed-forward's first layer).
enum Linear {
    /// `weight`: `[out, in]`, as stored.
    F32 { weight: Tensor, bias: Tensor, gelu: bool },
    /// The same layer in bf16, on CPUs that have the instructions (see `bf16.rs`).
    Bf16(Bf16Linear),
}

impl Linear {
    fn new(weight: Tensor, bias: Tensor, gelu: bool) -> Result<Linear> {
        let (outputs, inputs) = weight.dims2()?;
        let fast =
            Bf16Linear::new(&weight.flatten_all()?.to_vec1::<f32>()?, &bias.to_vec1::<f32>()?, inputs, outputs, gelu);
        Ok(fast.map_or(Linear::F32 { weight, bias, gelu }, Linear::Bf16))
    }

    fn load(vb: VarBuilder, inputs: usize, outputs: usize, gelu: bool) -> Result<Linear> {
        Linear::new(vb.get((outputs, inputs), "weight")?, vb.get(outputs, "bias")?, gelu)
    }

    /// `x`: `[n, in]` → `[n, out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Bf16(fast) => x.apply_op1_no_bwd(fast),
            Linear::F32 { weight, bias, gelu } => {
                let product = x.matmul(&weight.t()?)?;
                if *gelu { product.apply_op2_no_bwd(bias, &BiasGelu) } else { product.broadcast_add(bias) }
            }
        }
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(vb: VarBuilder, size: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm { weight: vb.get(size, "weight")?, bias: vb.get(size, "bias")?, eps: eps as f32 })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

struct Layer {
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

impl Layer {
    fn load(vb: VarBuilder, c: &BertConfig) -> Result<Layer> {
        let h = c.hidden_size;
        let attention = vb.pp("attention");
        let projection = |name: &str| -> Result<(Tensor, Tensor)> {
            let vb = attention.pp("self").pp(name);
            Ok((vb.get((h, h), "weight")?, vb.get(h, "bias")?))
        };
        let (query, key, value) = (projection("query")?, projection("key")?, projection("value")?);
        let scale = 1.0 / ((h / c.num_attention_heads) as f64).sqrt();
        let qkv = Linear::new(
            Tensor::cat(&[&(query.0 * scale)?, &key.0, &value.0], 0)?,
            Tensor::cat(&[&(query.1 * scale)?, &key.1, &value.1], 0)?,
            false,
        )?;
        Ok(Layer {
            qkv,
            attention_out: Linear::load(attention.pp("output").pp("dense"), h, h, false)?,
            attention_norm: LayerNorm::load(attention.pp("output").pp("LayerNorm"), h, c.layer_norm_eps)?,
            intermediate: Linear::load(vb.pp("intermediate").pp("dense"), h, c.intermediate_size, true)?,
            output: Linear::load(vb.pp("output").pp("dense"), c.intermediate_size, h, false)?,
            output_norm: LayerNorm::load(vb.pp("output").pp("LayerNorm"), h, c.layer_norm_eps)?,
        })
    }
}

pub struct Bert {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    /// Row 0 of the token-type embeddings: every token is of type 0 for a single text.
    token_type_embedding: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    max_positions: usize,
}

impl Bert {
    pub fn load(vb: VarBuilder, c: &BertConfig) -> Result<Bert> {
        if c.hidden_act != "gelu" {
            candle_core::bail!("unsupported activation {:?}: the encoder runs erf-based gelu", c.hidden_act);
        }
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            candle_core::bail!("hidden_size must be a multiple of num_attention_heads");
        }
        let h = c.hidden_size;
        let emb = vb.pp("embeddings");
        let layers = (0..c.num_hidden_layers)
            .map(|i| Layer::load(vb.pp("encoder").pp("layer").pp(i.to_string()), c))
            .collect::<Result<Vec<_>>>()?;
        Ok(Bert {
            word_embeddings: emb.get((c.vocab_size, h), "word_embeddings.weight")?,
            position_embeddings: emb.get((c.max_position_embeddings, h), "position_embeddings.weight")?,
            token_type_embedding: emb.get((c.type_vocab_size, h), "token_type_embeddings.weight")?.get(0)?,
            embeddings_norm: LayerNorm::load(emb.pp("LayerNorm"), h, c.layer_norm_eps)?,
            layers,
            hidden: h,
            heads: c.num_attention_heads,
            max_positions: c.max_position_embeddings,
        })
    }

    /// `ids`, `mask`: `[batch, len]` (u32; mask 1 for a token, 0 for padding) → the last hidden
    /// states, `[batch, len, hidden]`.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, len) = ids.dims2()?;
        if len > self.max_positions {
            candle_core::bail!("{len} tokens is more than the model's {} positions", self.max_positions);
        }
        let (h, heads) = (self.hidden, self.heads);
        let tokens = batch * len;
        let words = self.word_embeddings.index_select(&ids.flatten_all()?, 0)?.reshape((batch, len, h))?;
        let embedded = words
            .broadcast_add(&self.position_embeddings.narrow(0, 0, len)?)?
            .broadcast_add(&self.token_type_embedding)?;
        let mut x = self.embeddings_norm.forward(&embedded.reshape((tokens, h))?)?;
        // Added to attention scores: 0 where there is a token, a large negative at padding.
        let mask_bias = ((mask.to_dtype(DType::F32)? - 1.0)? * 10_000.0)?;
        for layer in &self.layers {
            let qkv = layer.qkv.forward(&x)?;
            let context = qkv.apply_op2_no_bwd(&mask_bias, &Attention { batch, len, heads })?;
            let attended = layer.attention_norm.forward(&(layer.attention_out.forward(&context)? + &x)?)?;
            let inner = layer.intermediate.forward(&attended)?;
            x = layer.output_norm.forward(&(layer.output.forward(&inner)? + &attended)?)?;
        }
        x.reshape((batch, len, h))
    }
}

/// Multi-head self-attention over the fused projection: `qkv` `[tokens, 3h]` (queries already
/// scaled) and the mask bias `[batch, len]` → the context `[tokens, h]`. One parallel task per
/// sequence and head reads its queries, keys and values in place, so the heads are never
/// copied out, and writes its columns of the context.
struct Attention {
    batch: usize,
    len: usize,
    heads: usize,
}

impl CustomOp2 for Attention {
    fn name(&self) -> &'static str {
        "self-attention"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(qkv), CpuStorage::F32(mask)) = (s1, s2) else {
            candle_core::bail!("self-attention takes f32 tensors");
        };
        let (Some((q_start, q_end)), Some((m_start, m_end))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("self-attention takes contiguous tensors");
        };
        let (qkv, mask) = (&qkv[q_start..q_end], &mask[m_start..m_end]);
        let (batch, len, heads) = (self.batch, self.len, self.heads);
        let tokens = batch * len;
        let width = l1.dims().last().copied().unwrap_or(0);
        if tokens == 0 || width % 3 != 0 || qkv.len() != tokens * width || mask.len() != tokens {
            candle_core::bail!("self-attention: qkv must be [batch * len, 3h] and the mask [batch, len]");
        }
        let h = width / 3;
        let d = h / heads;
        let mut context = vec![0f32; tokens * h];
        let out = SharedOut(context.as_mut_ptr());
        (0..batch * heads).into_par_iter().for_each(|task| {
            let (b, head) = (task / heads, task % heads);
            let row = |t: usize, part: usize| &qkv[(b * len + t) * width + part * h + head * d..][..d];
            let mask = &mask[b * len..(b + 1) * len];
            // Keys transposed, so each query's scores are sums of whole rows (no reductions).
            let mut keys = vec![0f32; d * len];
            for j in 0..len {
                for (t, k) in row(j, 1).iter().enumerate() {
                    keys[t * len + j] = *k;
                }
            }
            let mut scores = vec![0f32; len];
            for i in 0..len {
                scores.copy_from_slice(mask);
                for (&q, keys) in row(i, 0).iter().zip(keys.chunks_exact(len)) {
                    for (s, k) in scores.iter_mut().zip(keys) {
                        *s += q * k;
                    }
                }
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for score in scores.iter_mut() {
                    *score = (*score - max).exp();
                    sum += *score;
                }
                // SAFETY: each (sequence, head) task writes only its own `d` columns of its rows.
                let context = unsafe { std::slice::from_raw_parts_mut(out.at((b * len + i) * h + head * d), d) };
                for (j, p) in scores.iter().enumerate() {
                    let p = p / sum;
                    for (c, v) in context.iter_mut().zip(row(j, 2)) {
                        *c += p * v;
                    }
                }
            }
        });
        Ok((CpuStorage::F32(context), Shape::from((tokens, h))))
    }
}

/// `gelu(x + bias)` with the bias broadcast over rows, in parallel.
struct BiasGelu;

/// Rows of the activation handed to one parallel task.
const GELU_ROWS_PER_TASK: usize = 16;

impl CustomOp2 for BiasGelu {
    fn name(&self) -> &'static str {
        "bias-gelu-erf"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(bias)) = (s1, s2) else {
            candle_core::bail!("bias-gelu-erf takes f32 tensors");
        };
        let (Some((x_start, x_end)), Some((b_start, b_end))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("bias-gelu-erf takes contiguous tensors");
        };
        let (x, bias) = (&x[x_start..x_end], &bias[b_start..b_end]);
        let width = bias.len();
        if width == 0 || x.len() % width != 0 || l1.dims().last() != Some(&width) {
            candle_core::bail!("bias-gelu-erf: the bias must be as long as the last dimension");
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(width * GELU_ROWS_PER_TASK).zip(x.par_chunks(width * GELU_ROWS_PER_TASK)).for_each(
            |(out, x)| {
                for (out, x) in out.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
                    for ((o, &v), &b) in out.iter_mut().zip(x).zip(bias) {
                        *o = gelu(v + b);
                    }
                }
            },
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Exact GELU: `x/2 (1 + erf(x/√2))`.
#[inline(always)]
pub(super) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf as a ratio of an odd and an even polynomial over [-4, 4] (outside it erf is ±1 in f32);
/// the minimax coefficients used by Eigen and XLA. Absolute error under 2e-7; branch-free, so
/// loops over it vectorise.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_libm_everywhere() {
        let xs: Vec<f32> = (-100_000..=100_000).map(|i| i as f32 / 10_000.0).collect();
        // candle's own erf is libm's.
        let reference = Tensor::new(xs.as_slice(), &candle_core::Device::Cpu).unwrap().erf().unwrap();
        let worst =
            xs.iter().zip(reference.to_vec1::<f32>().unwrap()).map(|(&x, r)| (erf(x) - r).abs()).fold(0f32, f32::max);
        assert!(worst < 5e-7, "largest difference from libm's erf: {worst}");
        assert!((erf(25.0) - 1.0).abs() < 2e-7 && (erf(-25.0) + 1.0).abs() < 2e-7, "saturates at ±1");
    }

    #[test]
    fn bias_gelu_matches_the_unfused_computation() {
        let device = candle_core::Device::Cpu;
        let x = Tensor::arange(0f32, 40.0, &device).unwrap().affine(0.25, -5.0).unwrap().reshape((10, 4)).unwrap();
        let bias = Tensor::new(&[0.5f32, -1.0, 0.0, 2.0], &device).unwrap();
        let fused = x.apply_op2_no_bwd(&bias, &BiasGelu).unwrap().to_vec2::<f32>().unwrap();
        let plain = x.broadcast_add(&bias).unwrap().gelu_erf().unwrap().to_vec2::<f32>().unwrap();
        for (a, b) in fused.iter().flatten().zip(plain.iter().flatten()) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn attention_matches_the_unfused_computation_with_padding() {
        let device = candle_core::Device::Cpu;
        let (batch, len, heads, d) = (3, 5, 4, 8);
        let h = heads * d;
        let n = batch * len * 3 * h;
        let qkv = Tensor::arange(0f32, n as f32, &device).unwrap().affine(0.37, 0.0).unwrap().sin().unwrap();
        let qkv = qkv.reshape((batch * len, 3 * h)).unwrap();
        // The second sequence has two padded positions, the third one.
        let mask: Vec<f32> = (0..batch * len).map(|i| if [8, 9, 14].contains(&i) { 0.0 } else { 1.0 }).collect();
        let mask = Tensor::new(mask.as_slice(), &device).unwrap().reshape((batch, len)).unwrap();
        let bias = ((mask - 1.0).unwrap() * 10_000.0).unwrap();
        let fused = qkv.apply_op2_no_bwd(&bias, &Attention { batch, len, heads }).unwrap();

        let split = qkv.reshape((batch, len, 3, heads, d)).unwrap().permute((2, 0, 3, 1, 4)).unwrap();
        let (q, k, v) = (split.get(0).unwrap(), split.get(1).unwrap(), split.get(2).unwrap());
        let (q, k, v) = (q.contiguous().unwrap(), k.contiguous().unwrap(), v.contiguous().unwrap());
        let scores = q.matmul(&k.t().unwrap()).unwrap().broadcast_add(&bias.reshape((batch, 1, 1, len)).unwrap());
        let probs = candle_nn::ops::softmax_last_dim(&scores.unwrap()).unwrap();
        let plain = probs.matmul(&v).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
        let plain = plain.reshape((batch * len, h)).unwrap().to_vec2::<f32>().unwrap();
        for (a, b) in fused.to_vec2::<f32>().unwrap().iter().flatten().zip(plain.iter().flatten()) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
