//! Weights repacked for the AVX2 kernels: the same quants and scales as the GGUF blocks, laid
//! out so eight blocks share one scale vector.
//!
//! A GGUF Q4_1 block interleaves its scales with its quants (`d, m, qs[16]`), so a dot product
//! converts two f16 scalars and broadcasts a scale per block. Here each row keeps its scales
//! apart, eight blocks to a group, so one `vcvtph2ps` converts a group's scales and one FMA
//! applies them; the integer dot products of a group are reduced with a `vphaddd` tree.
//!
//! Row layouts (`nb` blocks, `g = ⌈nb/8⌉` groups, scales f16, zero-padded to `8g`):
//! - `U4` (Q4_1, and Q4_0 as `m = −8·d`, exact in f16): `d[8g] m[8g] qs[nb·16]`. Scales are
//!   stored per group in the order `b0 b2 b4 b6 b1 b3 b5 b7`, the order the reduction yields
//!   when block pairs are loaded 32 bytes at a time (one 128-bit lane per block).
//! - `S8` (Q8_0): `d[8g] qs[nb·32]`, scales in natural order.
//!
//! The bytes are the GGUF bytes rearranged (plus a few padding scales), so the weights stay
//! 4-bit in memory. Rows need an even `nb` (every llama dimension is a multiple of 64).

use half::f16;

use super::cpu::{BlockQ8, QMatRef, QK};
use crate::quant::GgmlType;

/// The repacked kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackedKind {
    /// Unsigned 4-bit quants with scale and minimum: `q · d + m`.
    U4,
    /// Signed 8-bit quants with a scale: `q · d`.
    S8,
}

/// A repacked weight matrix: `n` rows of `k` inputs.
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    /// Layout kind.
    pub kind: PackedKind,
    /// Output rows.
    pub n: usize,
    /// Inputs per row.
    pub k: usize,
    data: Vec<u8>,
}

/// Permuted position of block `j` (0..8) inside a U4 scale group.
const U4_ORDER: [usize; 8] = [0, 4, 1, 5, 2, 6, 3, 7];

impl PackedMatrix {
    /// Repacks GGUF blocks; `None` for types or shapes the packed kernels do not take.
    pub fn from_gguf(w: QMatRef<'_>) -> Option<Self> {
        let nb = w.k / QK;
        if !nb.is_multiple_of(2) || !w.k.is_multiple_of(QK) {
            return None;
        }
        let kind = match w.ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 => PackedKind::U4,
            GgmlType::Q8_0 => PackedKind::S8,
            _ => return None,
        };
        let g8 = nb.div_ceil(8) * 8;
        let bb = w.ty.block_bytes();
        let mut out = Self {
            kind,
            n: w.n,
            k: w.k,
            data: Vec::new(),
        };
        let rb = out.row_bytes();
        out.data = vec![0u8; rb * w.n];
        for r in 0..w.n {
            let src = &w.data[r * nb * bb..(r + 1) * nb * bb];
            let dst = &mut out.data[r * rb..(r + 1) * rb];
            for b in 0..nb {
                let blk = &src[b * bb..(b + 1) * bb];
                let slot = match kind {
                    PackedKind::U4 => b / 8 * 8 + U4_ORDER[b % 8],
                    PackedKind::S8 => b,
                };
                dst[slot * 2..slot * 2 + 2].copy_from_slice(&blk[0..2]);
                match w.ty {
                    GgmlType::Q4_1 => {
                        dst[(g8 + slot) * 2..(g8 + slot) * 2 + 2].copy_from_slice(&blk[2..4]);
                        let q0 = 4 * g8 + b * 16;
                        dst[q0..q0 + 16].copy_from_slice(&blk[4..20]);
                    }
                    GgmlType::Q4_0 => {
                        let d = f16::from_le_bytes([blk[0], blk[1]]);
                        let m = f16::from_f32(-8.0 * d.to_f32());
                        dst[(g8 + slot) * 2..(g8 + slot) * 2 + 2].copy_from_slice(&m.to_le_bytes());
                        let q0 = 4 * g8 + b * 16;
                        dst[q0..q0 + 16].copy_from_slice(&blk[2..18]);
                    }
                    _ => {
                        let q0 = 2 * g8 + b * 32;
                        dst[q0..q0 + 32].copy_from_slice(&blk[2..34]);
                    }
                }
            }
        }
        Some(out)
    }

    fn groups(&self) -> usize {
        (self.k / QK).div_ceil(8)
    }

    fn row_bytes(&self) -> usize {
        let (nb, g8) = (self.k / QK, self.groups() * 8);
        match self.kind {
            PackedKind::U4 => 4 * g8 + nb * 16,
            PackedKind::S8 => 2 * g8 + nb * 32,
        }
    }

    /// Bytes held.
    pub fn size_bytes(&self) -> usize {
        self.data.len()
    }
}

/// Activations of `m` tokens quantized for the packed kernels (one [`BlockQ8`] per 32 inputs,
/// plus the scale vectors in both group orders).
#[derive(Debug, Clone)]
pub struct PackedActs {
    /// Tokens.
    pub m: usize,
    /// Inputs per token.
    pub k: usize,
    /// Quants per token in natural order (`k` bytes).
    qs: Vec<i8>,
    /// Quants per token with each block pair interleaved as `b0[0..16] b1[0..16] b0[16..32] b1[16..32]`.
    qs_pairs: Vec<i8>,
    /// `d` per token, natural order, padded to groups of 8.
    d_nat: Vec<f32>,
    /// `d` per token in U4 group order.
    d_u4: Vec<f32>,
    /// `s = d·Σq` per token in U4 group order.
    s_u4: Vec<f32>,
}

impl PackedActs {
    /// Rearranges quantized activations (`m · k / 32` blocks).
    pub fn new(xq: &[BlockQ8], m: usize, k: usize) -> Self {
        let nb = k / QK;
        let g8 = nb.div_ceil(8) * 8;
        let mut a = Self {
            m,
            k,
            qs: Vec::with_capacity(m * k),
            qs_pairs: vec![0; m * k],
            d_nat: vec![0.0; m * g8],
            d_u4: vec![0.0; m * g8],
            s_u4: vec![0.0; m * g8],
        };
        for t in 0..m {
            let row = &xq[t * nb..(t + 1) * nb];
            for (b, blk) in row.iter().enumerate() {
                a.qs.extend_from_slice(&blk.qs);
                let slot = b / 8 * 8 + U4_ORDER[b % 8];
                a.d_nat[t * g8 + b] = blk.d;
                a.d_u4[t * g8 + slot] = blk.d;
                a.s_u4[t * g8 + slot] = blk.s;
                let base = t * k + (b / 2) * 64 + (b % 2) * 16;
                a.qs_pairs[base..base + 16].copy_from_slice(&blk.qs[..16]);
                a.qs_pairs[base + 32..base + 48].copy_from_slice(&blk.qs[16..]);
            }
        }
        a
    }
}

/// Output columns `r0..r1` of `out` (`m × w.n`, row-major) for all tokens.
///
/// # Safety
/// AVX2, FMA and F16C must be present; `out` points to `m · w.n` floats and no other thread
/// writes columns `r0..r1`.
#[cfg(target_arch = "x86_64")]
pub unsafe fn rows(w: &PackedMatrix, a: &PackedActs, r0: usize, r1: usize, out: *mut f32) {
    match w.kind {
        PackedKind::U4 => avx2::rows_u4(w, a, r0, r1, out),
        PackedKind::S8 => avx2::rows_s8(w, a, r0, r1, out),
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{PackedActs, PackedMatrix, QK};
    use crate::kernels::cpu::avx2::hsum;
    use std::arch::x86_64::*;

    /// Tokens `t0..t0 + T` against row `r`: each weight block pair is unpacked once and used
    /// for all `T` tokens (a register tile over tokens, so batched decode and prefill unpack
    /// the 4-bit weights once per step instead of once per token).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile_u4<const T: usize>(
        w: &PackedMatrix,
        a: &PackedActs,
        row: *const u8,
        r: usize,
        t0: usize,
        out: *mut f32,
    ) {
        let npairs = w.k / QK / 2;
        let ng = w.groups();
        let g8 = ng * 8;
        let (dp, mp, qp) = (
            row as *const __m128i,
            row.add(2 * g8) as *const __m128i,
            row.add(4 * g8),
        );
        let mask = _mm256_set1_epi8(0x0f);
        let ones = _mm256_set1_epi16(1);
        let zero = _mm256_setzero_si256();
        let mut acc = [_mm256_setzero_ps(); T];
        for g in 0..ng {
            let p0 = g * 4;
            let mut lo = [zero; 4];
            let mut hi = [zero; 4];
            for i in 0..4 {
                if p0 + i < npairs {
                    let raw = _mm256_loadu_si256(qp.add((p0 + i) * 32) as *const __m256i);
                    lo[i] = _mm256_and_si256(raw, mask);
                    hi[i] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
                }
            }
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(dp.add(g)));
            let mw = _mm256_cvtph_ps(_mm_loadu_si128(mp.add(g)));
            for (j, acc) in acc.iter_mut().enumerate() {
                let t = t0 + j;
                let xq = a.qs_pairs.as_ptr().add(t * w.k);
                let v = |i: usize| {
                    if p0 + i < npairs {
                        let x = xq.add((p0 + i) * 64);
                        let xa = _mm256_loadu_si256(x as *const __m256i);
                        let xb = _mm256_loadu_si256(x.add(32) as *const __m256i);
                        let s16 = _mm256_add_epi16(
                            _mm256_maddubs_epi16(lo[i], xa),
                            _mm256_maddubs_epi16(hi[i], xb),
                        );
                        _mm256_madd_epi16(s16, ones)
                    } else {
                        zero
                    }
                };
                let h =
                    _mm256_hadd_epi32(_mm256_hadd_epi32(v(0), v(1)), _mm256_hadd_epi32(v(2), v(3)));
                let xd = _mm256_loadu_ps(a.d_u4.as_ptr().add(t * g8 + g * 8));
                let xs = _mm256_loadu_ps(a.s_u4.as_ptr().add(t * g8 + g * 8));
                *acc = _mm256_fmadd_ps(_mm256_mul_ps(dw, xd), _mm256_cvtepi32_ps(h), *acc);
                *acc = _mm256_fmadd_ps(mw, xs, *acc);
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            *out.add((t0 + j) * w.n + r) = hsum(*acc);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn rows_u4(w: &PackedMatrix, a: &PackedActs, r0: usize, r1: usize, out: *mut f32) {
        let rb = w.row_bytes();
        for r in r0..r1 {
            let row = w.data.as_ptr().add(r * rb);
            if r + 2 < r1 {
                // The next row is ~2 rows ahead in a sequential stream; hint it early.
                _mm_prefetch(row.add(2 * rb) as *const i8, _MM_HINT_T0);
            }
            let mut t = 0;
            while t + 4 <= a.m {
                tile_u4::<4>(w, a, row, r, t, out);
                t += 4;
            }
            while t < a.m {
                tile_u4::<1>(w, a, row, r, t, out);
                t += 1;
            }
        }
    }

    /// Integer dot product of one Q8_0 block with one activation block (8 partial sums).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block_s8(wq: *const u8, xq: *const i8) -> __m256i {
        let wv = _mm256_loadu_si256(wq as *const __m256i);
        let xv = _mm256_loadu_si256(xq as *const __m256i);
        let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
        _mm256_madd_epi16(p16, _mm256_set1_epi16(1))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn rows_s8(w: &PackedMatrix, a: &PackedActs, r0: usize, r1: usize, out: *mut f32) {
        let nb = w.k / QK;
        let ng = w.groups();
        let g8 = ng * 8;
        let rb = w.row_bytes();
        let zero = _mm256_setzero_si256();
        for r in r0..r1 {
            let row = w.data.as_ptr().add(r * rb);
            let (dp, qp) = (row as *const __m128i, row.add(2 * g8));
            for line in (0..rb).step_by(64) {
                _mm_prefetch(row.add(4 * rb + line) as *const i8, _MM_HINT_T0);
            }
            for t in 0..a.m {
                let xq = a.qs.as_ptr().add(t * w.k);
                let xd = a.d_nat.as_ptr().add(t * g8);
                let mut acc = _mm256_setzero_ps();
                for g in 0..ng {
                    let b0 = g * 8;
                    let v = |i: usize| {
                        if b0 + i < nb {
                            block_s8(qp.add((b0 + i) * 32), xq.add((b0 + i) * 32))
                        } else {
                            zero
                        }
                    };
                    let h01 = _mm256_hadd_epi32(v(0), v(1));
                    let h23 = _mm256_hadd_epi32(v(2), v(3));
                    let h45 = _mm256_hadd_epi32(v(4), v(5));
                    let h67 = _mm256_hadd_epi32(v(6), v(7));
                    let lo4 = _mm256_hadd_epi32(h01, h23); // lanes: b0..b3 halves
                    let hi4 = _mm256_hadd_epi32(h45, h67); // lanes: b4..b7 halves
                    let s = _mm256_add_epi32(
                        _mm256_permute2x128_si256(lo4, hi4, 0x20),
                        _mm256_permute2x128_si256(lo4, hi4, 0x31),
                    );
                    let dw = _mm256_cvtph_ps(_mm_loadu_si128(dp.add(g)));
                    let scale = _mm256_mul_ps(dw, _mm256_loadu_ps(xd.add(g * 8)));
                    acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(s), acc);
                }
                *out.add(t * w.n + r) = hsum(acc);
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::kernels::cpu::{dot_scalar, has_avx2, quantize_q8};
    use crate::quant::{quantize_q4_0, quantize_q4_1, quantize_q8_0};

    #[test]
    fn packed_kernels_match_the_block_kernels() {
        if !has_avx2() {
            return;
        }
        let f = |i: usize, s: usize| (((i * 7919 + s * 104729) % 2003) as f32 - 1001.0) / 300.0;
        for (ty, quant) in [
            (GgmlType::Q4_1, quantize_q4_1 as fn(&[f32]) -> Vec<u8>),
            (GgmlType::Q4_0, quantize_q4_0),
            (GgmlType::Q8_0, quantize_q8_0),
        ] {
            for (m, n, k) in [
                (1, 5, 64),
                (1, 9, 576),
                (3, 7, 512),
                (2, 4, 1536),
                (5, 3, 192),
                (9, 4, 320),
            ] {
                let wf: Vec<f32> = (0..n * k).map(|i| f(i, 1)).collect();
                let data = quant(&wf);
                let w = QMatRef {
                    ty,
                    n,
                    k,
                    data: &data,
                };
                let p = PackedMatrix::from_gguf(w).unwrap();
                let x: Vec<f32> = (0..m * k).map(|i| f(i, 2)).collect();
                let xq = quantize_q8(&x, k);
                let acts = PackedActs::new(&xq, m, k);
                let mut out = vec![0.0f32; m * n];
                unsafe { rows(&p, &acts, 0, n, out.as_mut_ptr()) };
                let nb = k / QK;
                let rb = nb * ty.block_bytes();
                // A token's values are the same bits among others as alone.
                for t in 0..m {
                    let one = PackedActs::new(&xq[t * nb..(t + 1) * nb], 1, k);
                    let mut alone = vec![0.0f32; n];
                    unsafe { rows(&p, &one, 0, n, alone.as_mut_ptr()) };
                    for r in 0..n {
                        assert_eq!(
                            out[t * n + r].to_bits(),
                            alone[r].to_bits(),
                            "{} m{m} [{t},{r}]",
                            ty.name()
                        );
                    }
                }
                for t in 0..m {
                    for r in 0..n {
                        let want =
                            dot_scalar(ty, &data[r * rb..(r + 1) * rb], &xq[t * nb..(t + 1) * nb]);
                        let got = out[t * n + r];
                        let tol = 1e-3 * (1.0 + want.abs()) + 1e-3 * (k as f32).sqrt();
                        assert!(
                            (got - want).abs() < tol,
                            "{} m{m} n{n} k{k} [{t},{r}]: {got} vs {want}",
                            ty.name()
                        );
                    }
                }
            }
        }
    }
}
