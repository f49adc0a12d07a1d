//! GGUF block formats behind one trait, one file per format.
//!
//! Each file holds the format's `#[repr(C)]` block with its size assertion (ggml's
//! `ggml/src/ggml-common.h`), its exact dequantization (`dequantize_row_*` in
//! `ggml/src/ggml-quants.c`) and its dot product against the activation format ggml pairs it
//! with (`vec_dot_type`, `ggml/src/ggml-cpu/ggml-cpu.c`): Q8_0/Q8_1 blocks of 32 ([`BlockQ8`])
//! for the 32-element formats, Q8_K super-blocks of 256 ([`BlockQ8K`], with `bsums`) for the
//! K-quants, f32 for the float formats. A dot product is a function of one weight row and one
//! token's activations only, so a token's result never depends on the other tokens of a step
//! (batched decode is bit-identical to decoding alone).
//!
//! [`format`] is the one place a [`GgmlType`] is mapped to its implementation.

use std::sync::OnceLock;

use crate::kernels::cpu::{quantize_q8, BlockQ8};
use crate::quant::GgmlType;

mod bf16;
mod f16;
mod f32;
mod q2_k;
mod q3_k;
mod q4_0;
mod q4_1;
mod q4_k;
mod q5_0;
mod q5_1;
mod q5_k;
mod q6_k;
mod q8_0;
pub mod q8_k;

pub use q8_k::{quantize_q8_k, BlockQ8K, QK_K};

/// The activation format a weight format's dot product takes (ggml's `vec_dot_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Blocks of 32 as ggml's `block_q8_0`/`block_q8_1` ([`BlockQ8`]: `d`, `s = d·Σq`, `qs`).
    Q8,
    /// Super-blocks of 256 as ggml's `block_q8_K` ([`BlockQ8K`]).
    Q8K,
    /// Plain f32.
    F32,
}

/// One token's activations in a format's [`Act`].
#[derive(Debug, Clone, Copy)]
pub enum ActRow<'a> {
    /// `k / 32` blocks.
    Q8(&'a [BlockQ8]),
    /// `k / 256` super-blocks.
    Q8K(&'a [BlockQ8K]),
    /// `k` floats.
    F32(&'a [f32]),
}

/// How a format's weights are laid out for the GPU kernels (`crate::gpu`): groups of `group`
/// consecutive weights of a row, each `value = d·q + m` with one f32 `d` and `m` per group and
/// an integer `q` of `bits` bits (4: unsigned 0..16, two to a byte; 8: signed −128..128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AffineLayout {
    /// Bits per quant: 4 or 8.
    pub bits: u32,
    /// Weights per group (16 or 32; divides the block size).
    pub group: usize,
}

/// A GGUF block format.
pub trait Format: Send + Sync + 'static {
    /// The ggml type.
    fn ty(&self) -> GgmlType;

    /// The activation format [`Format::dot`] takes.
    fn act(&self) -> Act;

    /// Decodes whole blocks: `data` holds `out.len() / block_size` blocks.
    fn dequantize(&self, data: &[u8], out: &mut [f32]);

    /// `Σ w·x` over one weight row (whole blocks) and one token's activations in
    /// [`Format::act`] (panics on another kind). The SIMD path, where the CPU has it, and the
    /// portable path compute the same integer sums.
    fn dot(&self, row: &[u8], x: ActRow<'_>) -> f32;

    /// `out[c] = Σ w·x_c` for one weight row and several tokens' activations (a token tile:
    /// the row's blocks are decoded once for all of them). Each `out[c]` is bit-identical to
    /// [`Format::dot`] of that token alone, so a token's result never depends on how many
    /// tokens share the step.
    ///
    /// # Panics
    /// If `out.len() != xs.len()`, or as [`Format::dot`].
    fn dot_tile(&self, row: &[u8], xs: &[ActRow<'_>], out: &mut [f32]) {
        assert_eq!(xs.len(), out.len(), "dot_tile: one output per token");
        for (o, &x) in out.iter_mut().zip(xs) {
            *o = self.dot(row, x);
        }
    }

    /// The format's [`AffineLayout`] for the GPU kernels; `None` for the float formats (F32,
    /// F16, BF16), which the GPU takes as dense f32.
    fn affine_layout(&self) -> Option<AffineLayout> {
        None
    }

    /// Calls `group(d, m, q)` for each group of the whole blocks `data`, in weight order, with
    /// `d·q + m` (f32, `d·q` exact) equal to [`Format::dequantize`]'s value of every weight
    /// (`q` as [`Format::affine_layout`] says).
    ///
    /// # Panics
    /// For a format without an affine layout.
    fn affine_groups(&self, _data: &[u8], _group: &mut dyn FnMut(f32, f32, &[i8])) {
        panic!("{}: no affine layout", self.ty().name())
    }
}

/// Token tiles of at most this many tokens ([`Format::dot_tile`]).
pub const TILE: usize = 4;

/// Implements [`Format::dot`] and [`Format::dot_tile`] for a format with an AVX2 tile kernel
/// and a portable dot product:
///
/// ```ignore
/// tiled_dot!(ty: GgmlType::Q4_K, act: Q8K "Q8_K", block: BlockQ4K,
///            tile: avx2::tile[BlockQ4K], portable: dot_portable);
/// ```
///
/// `tile` is `unsafe fn tile<[B,] const C: usize>(&[Block], [&[A]; C], &mut [f32; C])` (AVX2,
/// FMA, F16C), each token's value the same as with `C = 1`; `dot` is the tile with `C = 1` and
/// `dot_tile` runs it over tiles of at most [`TILE`] tokens, so a token's bits never depend on
/// its tile. Without AVX2 (or with `WECOM_EDGE_NO_SIMD`), both take `portable(row, &[A])`.
/// Activations of another [`Act`] panic with `"{type}: {act} activations expected"`.
macro_rules! tiled_dot {
    (
        ty: $ty:expr,
        act: $act:ident $act_name:literal,
        block: $block:ty,
        tile: $($tile:ident)::+ $([$g:ty])?,
        portable: $portable:path $(,)?
    ) => {
        fn dot(&self, row: &[u8], x: $crate::formats::ActRow<'_>) -> f32 {
            let $crate::formats::ActRow::$act(x) = x else {
                panic!("{}: {} activations expected", $ty.name(), $act_name)
            };
            #[cfg(target_arch = "x86_64")]
            if $crate::kernels::cpu::has_avx2() {
                let mut out = [0.0f32];
                let row = $crate::formats::blocks::<$block>(row);
                // SAFETY: AVX2, FMA and F16C are present (checked at run time).
                unsafe { $($tile)::+::<$($g,)? 1>(row, [x], &mut out) };
                return out[0];
            }
            $portable(row, x)
        }

        fn dot_tile(
            &self,
            row: &[u8],
            xs: &[$crate::formats::ActRow<'_>],
            out: &mut [f32],
        ) {
            use $crate::formats::TILE;
            assert_eq!(xs.len(), out.len(), "dot_tile: one output per token");
            #[cfg(target_arch = "x86_64")]
            if $crate::kernels::cpu::has_avx2() {
                let row = $crate::formats::blocks::<$block>(row);
                for (xs, out) in xs.chunks(TILE).zip(out.chunks_mut(TILE)) {
                    let mut x = [&[][..]; TILE];
                    for (x, a) in x.iter_mut().zip(xs) {
                        let $crate::formats::ActRow::$act(a) = *a else {
                            panic!("{}: {} activations expected", $ty.name(), $act_name)
                        };
                        *x = a;
                    }
                    // SAFETY: AVX2, FMA and F16C are present (checked at run time).
                    unsafe {
                        match out {
                            [a, b, c, d] => {
                                let mut o = [0.0f32; 4];
                                $($tile)::+::<$($g,)? 4>(row, x, &mut o);
                                [*a, *b, *c, *d] = o;
                            }
                            [a, b, c] => {
                                let mut o = [0.0f32; 3];
                                $($tile)::+::<$($g,)? 3>(row, [x[0], x[1], x[2]], &mut o);
                                [*a, *b, *c] = o;
                            }
                            [a, b] => {
                                let mut o = [0.0f32; 2];
                                $($tile)::+::<$($g,)? 2>(row, [x[0], x[1]], &mut o);
                                [*a, *b] = o;
                            }
                            [a] => {
                                let mut o = [0.0f32; 1];
                                $($tile)::+::<$($g,)? 1>(row, [x[0]], &mut o);
                                *a = o[0];
                            }
                            _ => unreachable!("a tile of 1..=TILE tokens"),
                        }
                    }
                }
                return;
            }
            for (o, &x) in out.iter_mut().zip(xs) {
                *o = self.dot(row, x);
            }
        }
    };
}
pub(crate) use tiled_dot;

/// How far ahead of the block being read the tile kernels prefetch weights, in bytes.
/// Rows of a task are contiguous, so this runs on into the task's next rows. The hardware
/// prefetcher stops at each 4 KiB page; without this, decode of a Q4_K model stalled on
/// weight loads (measured: 33 → 50 tok/s at one thread, qwen2 1024×16 Q4_K_M).
#[cfg(target_arch = "x86_64")]
const PREFETCH_AHEAD: usize = 1024;

/// Prefetches (into L1) the cache lines of one block's size, [`PREFETCH_AHEAD`] bytes past the
/// block `b`. Calls for consecutive blocks cover every line (each call covers its block's
/// bytes from the block's start). Prefetching past the end of the weights is harmless: it
/// reads nothing and faults never.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_ahead<T>(b: &T) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    let p = (b as *const T as *const i8).wrapping_add(PREFETCH_AHEAD);
    let mut o = 0;
    while o < std::mem::size_of::<T>() {
        // SAFETY: a prefetch is a hint; it never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(o)) };
        o += 64;
    }
}

/// The implementation of `ty`, or `None` for types the engine cannot decode.
pub fn format(ty: GgmlType) -> Option<&'static dyn Format> {
    use GgmlType::*;
    Some(match ty {
        F32 => &f32::F32Format,
        F16 => &f16::F16Format,
        BF16 => &bf16::Bf16Format,
        Q4_0 => &q4_0::Q4_0,
        Q4_1 => &q4_1::Q4_1,
        Q5_0 => &q5_0::Q5_0,
        Q5_1 => &q5_1::Q5_1,
        Q8_0 => &q8_0::Q8_0,
        Q2_K => &q2_k::Q2K,
        Q3_K => &q3_k::Q3K,
        Q4_K => &q4_k::Q4K,
        Q5_K => &q5_k::Q5K,
        Q6_K => &q6_k::Q6K,
        Q8_1 | Q8_K | I8 | I16 | I32 | I64 | F64 => return None,
    })
}

/// Views `data` as blocks of `T` (a `#[repr(C)]` struct of bytes, alignment 1).
///
/// # Panics
/// If `data` is not a whole number of blocks.
pub(crate) fn blocks<T: Copy>(data: &[u8]) -> &[T] {
    const { assert!(std::mem::align_of::<T>() == 1) };
    let size = std::mem::size_of::<T>();
    assert!(
        data.len().is_multiple_of(size),
        "{} bytes are not whole {size}-byte blocks",
        data.len()
    );
    // SAFETY: T is plain bytes with alignment 1 (checked above) and the length is whole blocks.
    unsafe { std::slice::from_raw_parts(data.as_ptr() as *const T, data.len() / size) }
}

/// An IEEE half stored as its two little-endian bytes.
#[inline]
pub(crate) fn h(b: [u8; 2]) -> f32 {
    half::f16::from_le_bytes(b).to_f32()
}

/// Activations of `m` tokens × `k` inputs, quantized on first use into each format the
/// weights of a step need (once per step, shared by all weights that take it).
pub struct Acts<'a> {
    /// Row-major `m × k` f32.
    pub x: &'a [f32],
    /// Tokens.
    pub m: usize,
    /// Inputs per token.
    pub k: usize,
    q8: OnceLock<Vec<BlockQ8>>,
    q8k: OnceLock<Vec<BlockQ8K>>,
}

impl<'a> Acts<'a> {
    /// `x` is `m × k`, row-major.
    pub fn new(x: &'a [f32], k: usize) -> Self {
        assert!(k > 0 && x.len().is_multiple_of(k), "acts: x is not m × k");
        Self {
            x,
            m: x.len() / k,
            k,
            q8: OnceLock::new(),
            q8k: OnceLock::new(),
        }
    }

    /// The Q8 blocks (`m · k / 32`).
    pub fn q8(&self) -> &[BlockQ8] {
        self.q8.get_or_init(|| quantize_q8(self.x, self.k))
    }

    /// The Q8_K super-blocks (`m · k / 256`).
    pub fn q8k(&self) -> &[BlockQ8K] {
        self.q8k.get_or_init(|| quantize_q8_k(self.x, self.k))
    }

    /// Token `t`'s activations in `act` (quantizing all tokens on first use).
    pub fn row(&self, act: Act, t: usize) -> ActRow<'_> {
        match act {
            Act::Q8 => {
                let nb = self.k / 32;
                ActRow::Q8(&self.q8()[t * nb..(t + 1) * nb])
            }
            Act::Q8K => {
                let nb = self.k / QK_K;
                ActRow::Q8K(&self.q8k()[t * nb..(t + 1) * nb])
            }
            Act::F32 => ActRow::F32(&self.x[t * self.k..(t + 1) * self.k]),
        }
    }
}

/// `Σ a·b` in eight independent f32 lanes (vectorizes without reassociation; the same order
/// on every CPU).
#[inline(always)]
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] = ca[i].mul_add(cb[i], acc[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ w·x` for a float-format row (F32, F16, BF16): decoded, then [`dot_f32`].
pub(crate) fn dot_float(f: &dyn Format, row: &[u8], x: ActRow<'_>) -> f32 {
    let ActRow::F32(x) = x else {
        panic!("{}: f32 activations expected", f.ty().name())
    };
    let mut w = vec![0.0f32; x.len()];
    f.dequantize(row, &mut w);
    dot_f32(&w, x)
}

/// `Σ w·x` for a K-quant row by dequantizing each super-block (the exact path for formats
/// without an integer kernel: Q2_K, Q3_K): weights decoded exactly, activations as `d·q`.
pub(crate) fn dot_dequantized_k(f: &dyn Format, row: &[u8], x: ActRow<'_>) -> f32 {
    let ActRow::Q8K(x) = x else {
        panic!("{}: Q8_K activations expected", f.ty().name())
    };
    let bb = f.ty().block_bytes();
    let mut w = [0.0f32; QK_K];
    let mut a = [0.0f32; QK_K];
    let mut acc = 0.0f32;
    for (b, xb) in row.chunks_exact(bb).zip(x) {
        f.dequantize(b, &mut w);
        for (ai, &q) in a.iter_mut().zip(&xb.qs) {
            *ai = q as f32;
        }
        acc += xb.d * dot_f32(&w, &a);
    }
    acc
}

#[cfg(test)]
pub(crate) mod testing {
    //! Shared checks for the format files: a dot product against the f64 reference of the
    //! dequantized weights and the activations as their format represents them.

    use super::*;

    /// Deterministic pseudo-random floats in [-1, 1), heavier tails every 7th (xorshift).
    pub fn randoms(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let v = (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                if i % 7 == 0 {
                    v * 4.0
                } else {
                    v
                }
            })
            .collect()
    }

    /// Random bytes (a block's raw contents) with the block's f16 fields set to `scales`
    /// at the given offsets.
    pub fn random_blocks(ty: GgmlType, n_blocks: usize, seed: u64, f16_at: &[usize]) -> Vec<u8> {
        let bb = ty.block_bytes();
        let r = randoms(n_blocks * bb, seed);
        match ty {
            GgmlType::F32 => return r[..n_blocks].iter().flat_map(|v| v.to_le_bytes()).collect(),
            GgmlType::F16 => {
                return r[..n_blocks]
                    .iter()
                    .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                    .collect()
            }
            GgmlType::BF16 => {
                return r[..n_blocks]
                    .iter()
                    .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                    .collect()
            }
            _ => {}
        }
        let mut out: Vec<u8> = r.iter().map(|v| (v.to_bits() >> 7) as u8).collect();
        for b in 0..n_blocks {
            for (i, &at) in f16_at.iter().enumerate() {
                let v = 0.01 + 0.02 * ((b * 7 + i * 3) % 11) as f32;
                out[b * bb + at..b * bb + at + 2]
                    .copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
            }
        }
        out
    }

    /// Byte offsets of a block's f16 scale fields (ggml-common.h).
    pub fn f16_fields(ty: GgmlType) -> &'static [usize] {
        use GgmlType::*;
        match ty {
            Q4_0 | Q5_0 | Q8_0 => &[0],
            Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
            Q2_K => &[80, 82],
            Q3_K => &[108],
            Q6_K => &[208],
            _ => &[],
        }
    }

    /// [`random_blocks`] with finite, positive scales in every f16 field.
    pub fn random_weights(ty: GgmlType, n_blocks: usize, seed: u64) -> Vec<u8> {
        random_blocks(ty, n_blocks, seed, f16_fields(ty))
    }

    /// The format's dot product agrees with the f64 reference on `rows` random rows of `k`.
    pub fn check_dot(ty: GgmlType, k: usize, f16_at: &[usize]) {
        let f = format(ty).unwrap();
        let nb = k / ty.block_size();
        // Formats with a minimum use ggml's f16-rounded `s = d·Σq` of the activations.
        let rel = if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
            2e-3
        } else {
            1e-5
        };
        for seed in 0..4u64 {
            let row = random_blocks(ty, nb, seed + 1, f16_at);
            let x = randoms(k, seed + 100);
            let acts = Acts::new(&x, k);
            let xr = acts.row(f.act(), 0);
            let xa: Vec<f64> = match xr {
                ActRow::Q8(b) => b
                    .iter()
                    .flat_map(|b| b.qs.iter().map(move |&q| q as f64 * b.d as f64))
                    .collect(),
                ActRow::Q8K(b) => b
                    .iter()
                    .flat_map(|b| b.qs.iter().map(move |&q| q as f64 * b.d as f64))
                    .collect(),
                ActRow::F32(v) => v.iter().map(|&v| v as f64).collect(),
            };
            let mut w = vec![0.0f32; k];
            f.dequantize(&row, &mut w);
            assert!(w.iter().all(|v| v.is_finite()), "{}: non-finite", ty.name());
            let want: f64 = w.iter().zip(&xa).map(|(&w, &a)| w as f64 * a).sum();
            let norm: f64 = w.iter().zip(&xa).map(|(&w, &a)| (w as f64 * a).abs()).sum();
            let got = f.dot(&row, xr) as f64;
            assert!(
                (got - want).abs() <= rel * norm + 1e-6,
                "{} k{k} seed{seed}: {got} vs {want} (Σ|wx| {norm})",
                ty.name()
            );
            // The portable path gives the same value (computed with SIMD off when it was on).
            if let Some(p) = portable_dot(ty, &row, xr) {
                assert!(
                    (p as f64 - got).abs() <= 1e-5 * norm + 1e-6,
                    "{}: portable {p} vs {got}",
                    ty.name()
                );
            }
        }
    }

    /// [`Format::dot_tile`] over 1..=9 tokens gives each token [`Format::dot`]'s bits.
    #[test]
    fn token_tiles_are_bit_identical_to_single_dots() {
        use GgmlType::*;
        let k = 512;
        for ty in [
            F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
        ] {
            let f = format(ty).unwrap();
            let row = random_blocks(ty, k / ty.block_size(), 3, &[0, 2]);
            for m in 1..=9 {
                let x = randoms(m * k, 40 + m as u64);
                let acts = Acts::new(&x, k);
                let xs: Vec<ActRow<'_>> = (0..m).map(|t| acts.row(f.act(), t)).collect();
                let mut out = vec![0.0f32; m];
                f.dot_tile(&row, &xs, &mut out);
                for (t, &o) in out.iter().enumerate() {
                    assert_eq!(
                        o.to_bits(),
                        f.dot(&row, xs[t]).to_bits(),
                        "{} token {t} of {m}",
                        ty.name()
                    );
                }
            }
        }
    }

    fn portable_dot(ty: GgmlType, row: &[u8], x: ActRow<'_>) -> Option<f32> {
        match (ty, x) {
            (GgmlType::Q4_K, ActRow::Q8K(x)) => Some(super::q4_k::dot_portable(row, x)),
            (GgmlType::Q5_K, ActRow::Q8K(x)) => Some(super::q5_k::dot_portable(row, x)),
            (GgmlType::Q6_K, ActRow::Q8K(x)) => Some(super::q6_k::dot_portable(row, x)),
            (GgmlType::Q5_0, ActRow::Q8(x)) => Some(super::q5_0::dot_portable(row, x)),
            _ => None,
        }
    }
}
