//! `x Wᵀ + b` in bfloat16 with f32 accumulation, for CPUs with AVX-512 BF16 (AMD Zen 4, Intel
//! Sapphire Rapids and later): one `vdpbf16ps` does 32 multiply-adds where an f32 FMA does 16, so
//! the encoder's dense layers (nearly all its arithmetic) take about half the time.
//!
//! The weights are rounded to bf16 and packed once, at load, in the order the kernel reads them;
//! each call rounds its activations to bf16. Sums stay in f32, so a 384-wide dot product keeps
//! about three significant digits — embeddings stay within 0.9999 cosine of the f32 ones (see
//! `tests/embed.rs`). Other CPUs use candle's f32 product (`Bf16Linear::new` returns `None`).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

type Result<T> = candle_core::Result<T>;

/// Output columns in one packed unit (one 512-bit register of f32).
const UNIT: usize = 16;
/// Units a kernel call covers: 64 columns, so 4 weight registers and 24 accumulators for 6 rows.
const PANEL_UNITS: usize = 4;
/// Rows of a full kernel tile.
const TILE_ROWS: usize = 6;
/// Rows one parallel task covers: its activations (at k = 1536) stay in L2.
const TASK_ROWS: usize = 96;

/// Whether this CPU runs the bf16 kernel.
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rounds to the nearest bf16, ties to even (what `vcvtne2ps2bf16` does).
fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) as u16
}

/// A dense layer with bf16 weights packed for the kernel, optionally followed by exact GELU.
pub struct Bf16Linear {
    inputs: usize,
    outputs: usize,
    /// Panel after panel; within a panel, pair after pair of inputs; within a pair, unit after
    /// unit of 16 columns, each 16 (column, input pair) bf16 pairs: `W[c][2p], W[c][2p + 1]`.
    packed: Vec<u16>,
    bias: Vec<f32>,
    gelu: bool,
}

impl Bf16Linear {
    /// `weight` is `[outputs, inputs]` row-major. `None` when the CPU lacks the instructions or
    /// the shape does not fit the kernel (outputs a multiple of 16, inputs even).
    pub fn new(weight: &[f32], bias: &[f32], inputs: usize, outputs: usize, gelu: bool) -> Option<Bf16Linear> {
        if !supported()
            || !outputs.is_multiple_of(UNIT)
            || !inputs.is_multiple_of(2)
            || weight.len() != inputs * outputs
        {
            return None;
        }
        if bias.len() != outputs {
            return None;
        }
        let pairs = inputs / 2;
        let mut packed = Vec::with_capacity(inputs * outputs);
        for panel_start in (0..outputs).step_by(UNIT * PANEL_UNITS) {
            let units = ((outputs - panel_start) / UNIT).min(PANEL_UNITS);
            for p in 0..pairs {
                for u in 0..units {
                    for lane in 0..UNIT {
                        let row = &weight[(panel_start + u * UNIT + lane) * inputs..][..inputs];
                        packed.push(to_bf16(row[2 * p]));
                        packed.push(to_bf16(row[2 * p + 1]));
                    }
                }
            }
        }
        Some(Bf16Linear { inputs, outputs, packed, bias: bias.to_vec(), gelu })
    }

    /// `x`: `m` rows of `inputs` → `m` rows of `outputs`.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let m = x.len() / self.inputs;
        let pairs = self.inputs / 2;
        // Activations as bf16 pairs, one u32 per pair (the kernel broadcasts them).
        let mut a = vec![0u32; m * pairs];
        a.par_chunks_mut(pairs * 32).zip(x.par_chunks(self.inputs * 32)).for_each(|(a, x)| {
            for (a, x) in a.chunks_exact_mut(pairs).zip(x.chunks_exact(self.inputs)) {
                // SAFETY: `new` checked the CPU; `a` holds half as many values as `x`.
                unsafe { kernel::round_pairs(x, a) };
            }
        });
        let mut out = vec![0f32; m * self.outputs];
        let panels = self.outputs.div_ceil(UNIT * PANEL_UNITS);
        let row_blocks = m.div_ceil(TASK_ROWS);
        let out_ptr = SharedOut(out.as_mut_ptr());
        (0..row_blocks * panels).into_par_iter().for_each(|task| {
            let (block, panel) = (task / panels, task % panels);
            let rows = block * TASK_ROWS..((block + 1) * TASK_ROWS).min(m);
            // SAFETY: tasks write disjoint (row block, panel) rectangles of `out`, which outlives them.
            unsafe { self.panel(&a, rows, panel, &out_ptr) };
        });
        out
    }

    /// Computes rows `rows` of panel `panel` into `out`.
    ///
    /// # Safety
    /// `out` points to `m * outputs` floats, and no other task writes this rectangle.
    unsafe fn panel(&self, a: &[u32], rows: std::ops::Range<usize>, panel: usize, out: &SharedOut) {
        let pairs = self.inputs / 2;
        let col = panel * UNIT * PANEL_UNITS;
        let units = ((self.outputs - col) / UNIT).min(PANEL_UNITS);
        let b = &self.packed[col * self.inputs..][..units * UNIT * self.inputs];
        let mut row = rows.start;
        while row < rows.end {
            let tile = (rows.end - row).min(TILE_ROWS);
            let a = &a[row * pairs..(row + tile) * pairs];
            let c = unsafe { out.at(row * self.outputs + col) };
            let bias = &self.bias[col..col + units * UNIT];
            unsafe { kernel::dispatch(tile, units, a, pairs, b, c, self.outputs, bias) };
            if self.gelu {
                for r in 0..tile {
                    let c = unsafe { std::slice::from_raw_parts_mut(c.add(r * self.outputs), units * UNIT) };
                    for v in c {
                        *v = super::bert::gelu(*v);
                    }
                }
            }
            row += tile;
        }
    }
}

/// One output buffer handed to parallel tasks that each write a disjoint part of it.
pub(super) struct SharedOut(pub(super) *mut f32);
// SAFETY: the tasks write disjoint regions (see `Bf16Linear::forward` and bert's `Attention`).
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `offset` is inside the buffer.
    pub(super) unsafe fn at(&self, offset: usize) -> *mut f32 {
        unsafe { self.0.add(offset) }
    }
}

impl CustomOp1 for Bf16Linear {
    fn name(&self) -> &'static str {
        "linear-bf16"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(x) = storage else { candle_core::bail!("linear-bf16 takes f32 input") };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("linear-bf16 takes a contiguous input")
        };
        let dims = layout.dims();
        if dims.len() != 2 || dims[1] != self.inputs {
            candle_core::bail!("linear-bf16: input {dims:?} is not [rows, {}]", self.inputs);
        }
        let out = self.forward(&x[start..end]);
        Ok((CpuStorage::F32(out), Shape::from((dims[0], self.outputs))))
    }
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::arch::x86_64::*;

    use super::UNIT;

    /// Picks the kernel for a `rows` × `units` tile.
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BF16; `a` holds `rows * pairs` pairs, `b` the panel's
    /// `pairs * units * 32` values, `c` has room for `rows` rows of stride `ldc` from the panel's
    /// first column, and `bias` `units * 16` values.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn dispatch(
        rows: usize,
        units: usize,
        a: &[u32],
        pairs: usize,
        b: &[u16],
        c: *mut f32,
        ldc: usize,
        bias: &[f32],
    ) {
        macro_rules! go {
            ($r:literal) => {
                match units {
                    4 => unsafe { tile::<$r, 4>(a, pairs, b, c, ldc, bias) },
                    3 => unsafe { tile::<$r, 3>(a, pairs, b, c, ldc, bias) },
                    2 => unsafe { tile::<$r, 2>(a, pairs, b, c, ldc, bias) },
                    _ => unsafe { tile::<$r, 1>(a, pairs, b, c, ldc, bias) },
                }
            };
        }
        match rows {
            6 => go!(6),
            5 => go!(5),
            4 => go!(4),
            3 => go!(3),
            2 => go!(2),
            _ => go!(1),
        }
    }

    /// Rounds `x` to bf16, two values to a `u32` (the first in the low half).
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BF16; `out.len() * 2 == x.len()`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn round_pairs(x: &[f32], out: &mut [u32]) {
        debug_assert_eq!(out.len() * 2, x.len());
        let whole = x.len() / 32;
        for i in 0..whole {
            unsafe {
                let lo = _mm512_loadu_ps(x.as_ptr().add(i * 32));
                let hi = _mm512_loadu_ps(x.as_ptr().add(i * 32 + 16));
                let pairs: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(out.as_mut_ptr().add(i * 16).cast(), pairs);
            }
        }
        for p in whole * 16..out.len() {
            out[p] = u32::from(super::to_bf16(x[2 * p])) | (u32::from(super::to_bf16(x[2 * p + 1])) << 16);
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn tile<const R: usize, const U: usize>(
        a: &[u32],
        pairs: usize,
        b: &[u16],
        c: *mut f32,
        ldc: usize,
        bias: &[f32],
    ) {
        debug_assert!(a.len() >= R * pairs && b.len() >= pairs * U * 32 && bias.len() >= U * UNIT);
        let mut acc = [[_mm512_setzero_ps(); U]; R];
        let (a, b) = (a.as_ptr(), b.as_ptr());
        for p in 0..pairs {
            let bp = unsafe { b.add(p * U * 32) };
            let w: [__m512bh; U] =
                std::array::from_fn(|u| unsafe { std::mem::transmute(_mm512_loadu_si512(bp.add(u * 32).cast())) });
            for (r, acc) in acc.iter_mut().enumerate() {
                let x: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi32(*a.add(r * pairs + p) as i32)) };
                for u in 0..U {
                    acc[u] = _mm512_dpbf16_ps(acc[u], x, w[u]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (u, acc) in acc.iter().enumerate() {
                unsafe {
                    let b = _mm512_loadu_ps(bias.as_ptr().add(u * UNIT));
                    _mm512_storeu_ps(c.add(r * ldc + u * UNIT), _mm512_add_ps(*acc, b));
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod kernel {
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn dispatch(_: usize, _: usize, _: &[u32], _: usize, _: &[u16], _: *mut f32, _: usize, _: &[f32]) {
        unreachable!("Bf16Linear::new returns None off x86_64")
    }

    pub unsafe fn round_pairs(_: &[f32], _: &mut [u32]) {
        unreachable!("Bf16Linear::new returns None off x86_64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], w: &[f32], bias: &[f32], k: usize, n: usize, gelu: bool) -> Vec<f32> {
        let m = x.len() / k;
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|t| f64::from(x[i * k + t]) * f64::from(w[j * k + t])).sum();
                let v = dot as f32 + bias[j];
                out[i * n + j] = if gelu { crate::embed::bert::gelu(v) } else { v };
            }
        }
        out
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn rounding_to_bf16_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3F80);
        assert_eq!(to_bf16(f32::from_bits(0x3F80_8000)), 0x3F80, "a tie rounds to the even neighbour");
        assert_eq!(to_bf16(f32::from_bits(0x3F81_8000)), 0x3F82, "a tie rounds to the even neighbour");
        assert_eq!(to_bf16(f32::from_bits(0x3F80_8001)), 0x3F81);
        assert_eq!(to_bf16(-2.5), 0xC020);
        if supported() {
            let x = values(70, 9); // two vector blocks and a scalar tail
            let mut pairs = vec![0u32; 35];
            unsafe { kernel::round_pairs(&x, &mut pairs) };
            for (p, pair) in pairs.iter().enumerate() {
                assert_eq!(*pair as u16, to_bf16(x[2 * p]), "pair {p}, low half");
                assert_eq!((*pair >> 16) as u16, to_bf16(x[2 * p + 1]), "pair {p}, high half");
            }
        }
    }

    #[test]
    fn products_match_f32_to_bf16_precision_for_every_tile_shape() {
        if !supported() {
            eprintln!("this CPU has no AVX-512 BF16; the f32 path serves it");
            assert!(Bf16Linear::new(&[0.0; 32], &[0.0; 16], 2, 16, false).is_none());
            return;
        }
        // Rows cover every tile height and a second task; columns every panel width.
        for (m, k, n) in [(1, 2, 16), (7, 30, 48), (13, 384, 80), (100, 64, 1152), (5, 1536, 384)] {
            for gelu in [false, true] {
                let (x, w, bias) = (values(m * k, 1), values(n * k, 2), values(n, 3));
                let layer = Bf16Linear::new(&w, &bias, k, n, gelu).expect("a kernel shape");
                let got = layer.forward(&x);
                let want = reference(&x, &w, &bias, k, n, gelu);
                // Two bf16 roundings per product: about 2^-8 of the sum of |x w| terms.
                let scale = (k as f32).sqrt() * 0.6;
                for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                    assert!((g - e).abs() <= 0.01 * scale + 1e-4, "m {m} k {k} n {n} [{i}]: {g} vs {e}");
                }
            }
        }
        assert!(Bf16Linear::new(&[0.0; 30], &[0.0; 10], 3, 10, false).is_none(), "odd shapes stay on f32");
    }
}
