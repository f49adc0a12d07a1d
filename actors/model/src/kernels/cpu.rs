//! Fused quantized matmul on the CPU: `out[m][n] = Σ_k x[m][k] · W[n][k]` with `W` kept in its
//! GGUF blocks (every format of [`crate::formats`]).
//!
//! Q4_0, Q4_1 and Q8_0 have the register-tiled AVX2 kernels below (and the repacked ones in
//! [`super::packed`]); every other format runs its own dot product ([`Format::dot`]) per weight
//! row and token, with activations quantized once per call into the format it takes
//! ([`Acts`]).
//!
//! As llama.cpp does (ggml-cpu `vec_dot_q4_1_q8_1`, `vec_dot_q8_0_q8_0`), activations are first
//! quantized to 8 bits per block of 32 ([`BlockQ8`], the semantics of ggml's `block_q8_1`:
//! `d = amax / 127` rounded to f16, `q = round_ties_even(x / d)`, `s = d · Σq` rounded to f16),
//! so each block product is an integer dot product scaled once:
//!
//! - Q4_1: `d_w · d_x · Σ q_w q_x + m_w · s_x`
//! - Q4_0: `d_w · d_x · Σ (q_w − 8) q_x`
//! - Q8_0: `d_w · d_x · Σ q_w q_x`
//!
//! The AVX2/FMA path (runtime-detected) computes tiles of `R` weight rows × `C` tokens, so a
//! prefill of many tokens unpacks each weight block once per `C` tokens rather than once per
//! token; the portable path computes the same integers in scalar code. Rows are split over the
//! kernel pool ([`super::pool`], `--threads`).

use super::packed::{self, PackedActs, PackedMatrix};
use super::{pool, SharedMut};
use crate::formats::{self, ActRow, Acts, Format};
use crate::quant::GgmlType;

/// Elements per quantization block (Q4_0, Q4_1, Q8_0 and the activation blocks).
pub const QK: usize = 32;

/// 32 activations quantized to 8 bits (ggml `block_q8_1` semantics, f32 storage).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct BlockQ8 {
    /// Scale, rounded to f16 precision as ggml stores it.
    pub d: f32,
    /// `d · Σ qs`, rounded to f16 precision (the Q4_1 minimum term needs it).
    pub s: f32,
    /// Quantized values.
    pub qs: [i8; QK],
}

#[inline]
fn round_f16(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

/// Quantizes one row of activations (`x.len()` a multiple of 32) into `out`.
pub fn quantize_row_q8(x: &[f32], out: &mut [BlockQ8]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 and FMA are present (checked at run time).
        return unsafe { quantize_row_q8_avx2(x, out) };
    }
    quantize_row_q8_body(x, out)
}

/// The same code compiled for AVX2, where rounding is one instruction (`vroundps`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_row_q8_avx2(x: &[f32], out: &mut [BlockQ8]) {
    quantize_row_q8_body(x, out)
}

#[inline(always)]
fn quantize_row_q8_body(x: &[f32], out: &mut [BlockQ8]) {
    for (blk, o) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = blk.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        // As ggml's quantize_row_q8_0 / q8_1 (x86): d = amax/127 but id = 127/amax.
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in o.qs.iter_mut().zip(blk) {
            let r = (v * id).round_ties_even() as i32;
            *q = r as i8;
            sum += r;
        }
        o.d = round_f16(d);
        o.s = round_f16(sum as f32 * d);
    }
}

/// Quantizes `m` rows of `k` activations each.
pub fn quantize_q8(x: &[f32], k: usize) -> Vec<BlockQ8> {
    let nb = k / QK;
    let m = x.len() / k;
    let mut out = vec![BlockQ8::default(); m * nb];
    if m >= 8 {
        let ptr = SharedMut::new(&mut out);
        pool::global().run(m, &|t| {
            // SAFETY: task t writes row t's blocks only.
            let o = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(t * nb), nb) };
            quantize_row_q8(&x[t * k..(t + 1) * k], o);
        });
    } else {
        for (o, row) in out.chunks_mut(nb).zip(x.chunks(k)) {
            quantize_row_q8(row, o);
        }
    }
    out
}

/// A weight matrix in GGUF blocks: `n` rows (outputs) of `k` columns (inputs).
#[derive(Debug, Clone, Copy)]
pub struct QMatRef<'a> {
    /// The block format.
    pub ty: GgmlType,
    /// Output rows.
    pub n: usize,
    /// Input columns (a multiple of the format's block size).
    pub k: usize,
    /// `n · k / block_size` blocks, row after row.
    pub data: &'a [u8],
}

impl QMatRef<'_> {
    fn row_bytes(&self) -> usize {
        self.k / self.ty.block_size() * self.ty.block_bytes()
    }

    /// Whether the tiled kernels of this file take the format (Q4_0, Q4_1, Q8_0).
    fn tiled(&self) -> bool {
        matches!(self.ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0)
    }
}

/// Whether the SIMD kernels can run here: AVX2, FMA and F16C (the kernels read f16 scales with
/// `vcvtph2ps`), each detected at run time, once; `WECOM_EDGE_NO_SIMD` forces the portable path.
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX2.get_or_init(|| {
            std::env::var_os("WECOM_EDGE_NO_SIMD").is_none()
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[m][n] = x[m][k] · Wᵀ`, with `x` row-major f32 and `out` row-major f32 (`m × n`).
///
/// # Panics
/// If the shapes disagree or the weight type has no format ([`crate::formats::format`]).
pub fn qmatmul(x: &[f32], w: QMatRef<'_>, out: &mut [f32]) {
    qmatmul_acts(&Acts::new(x, w.k), w, out);
}

/// Like [`qmatmul`], with the activations prepared ([`Acts`], shared between the weights of a
/// step that read the same input).
///
/// # Panics
/// As [`qmatmul`].
pub fn qmatmul_acts(a: &Acts<'_>, w: QMatRef<'_>, out: &mut [f32]) {
    let f = formats::format(w.ty).unwrap_or_else(|| panic!("qmatmul: {} weights", w.ty.name()));
    assert_eq!(w.k % w.ty.block_size(), 0, "qmatmul: k is not whole blocks");
    assert_eq!(w.data.len(), w.n * w.row_bytes(), "qmatmul: weight size");
    assert_eq!(
        a.k, w.k,
        "qmatmul: x has {} columns, the weight takes {}",
        a.k, w.k
    );
    assert_eq!(out.len(), a.m * w.n, "qmatmul: out is not m × n");
    if w.tiled() {
        return qmatmul_q8(a.q8(), a.m, w, out);
    }
    let (m, n, rb, act) = (a.m, w.n, w.row_bytes(), f.act());
    // Every token's activations in the format, before the rows are split over threads.
    let _ = a.row(act, 0);
    let ptr = SharedMut::new(out);
    parallel_rows(n, |r0, r1| {
        let mut xs = [ActRow::F32(&[]); TOKEN_BLOCK];
        let mut vals = [0.0f32; TOKEN_BLOCK];
        // Blocks of tokens whose activations stay in L1/L2 while the task's rows pass over them;
        // each row meets them in tiles ([`Format::dot_tile`]: a token's value never depends on
        // the tile it is in).
        for t0 in (0..m).step_by(TOKEN_BLOCK) {
            let c = (m - t0).min(TOKEN_BLOCK);
            for (i, x) in xs[..c].iter_mut().enumerate() {
                *x = a.row(act, t0 + i);
            }
            for r in r0..r1 {
                f.dot_tile(&w.data[r * rb..(r + 1) * rb], &xs[..c], &mut vals[..c]);
                for (i, &v) in vals[..c].iter().enumerate() {
                    // SAFETY: rows r0..r1 of every token are written by this task only.
                    unsafe { *ptr.get().add((t0 + i) * n + r) = v };
                }
            }
        }
    });
}

/// Tokens per block of [`qmatmul_acts`]'s loop: 32 tokens of Q8_K activations at k = 1024 are
/// ~36 KiB.
const TOKEN_BLOCK: usize = 32;

/// `out = x · Wᵀ` with `W` repacked ([`PackedMatrix`]) and `x` prepared ([`PackedActs`]).
///
/// # Panics
/// If the CPU lacks AVX2/FMA (packed matrices are only built where it has them) or shapes differ.
pub fn qmatmul_packed(w: &PackedMatrix, a: &PackedActs, out: &mut [f32]) {
    assert!(has_avx2(), "packed kernels need AVX2");
    assert_eq!(w.k, a.k, "qmatmul_packed: k");
    assert_eq!(out.len(), a.m * w.n, "qmatmul_packed: out is not m × n");
    let ptr = SharedMut::new(out);
    parallel_rows(w.n, |r0, r1| {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 checked above; rows r0..r1 belong to this task alone.
        unsafe {
            packed::rows(w, a, r0, r1, ptr.get())
        }
    });
}

/// Splits rows `0..n` into tasks (a multiple of 4 rows, several per thread) and runs them on
/// the kernel pool.
fn parallel_rows(n: usize, f: impl Fn(usize, usize) + Sync) {
    let pool = pool::global();
    let threads = pool.threads();
    if threads <= 1 || n < 64 {
        return f(0, n);
    }
    let per = n.div_ceil(threads * 4).next_multiple_of(4);
    pool.run(n.div_ceil(per), &|i| f(i * per, ((i + 1) * per).min(n)));
}

/// Like [`qmatmul`], with the activations already quantized (`m · k / 32` blocks).
pub fn qmatmul_q8(xq: &[BlockQ8], m: usize, w: QMatRef<'_>, out: &mut [f32]) {
    let n = w.n;
    let ptr = SharedMut::new(out);
    parallel_rows(n, |r0, r1| {
        // SAFETY: rows r0..r1 of every token are written by this task only; `out` is m × n.
        unsafe { rows(xq, m, w, r0, r1, ptr.get()) }
    });
}

/// Computes output columns `r0..r1` for all `m` tokens.
///
/// # Safety
/// `out` points to `m · w.n` floats and no other thread writes columns `r0..r1`.
unsafe fn rows(xq: &[BlockQ8], m: usize, w: QMatRef<'_>, r0: usize, r1: usize, out: *mut f32) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        match w.ty {
            GgmlType::Q4_1 => return avx2::rows::<{ avx2::Q4_1 }>(xq, m, w, r0, r1, out),
            GgmlType::Q4_0 => return avx2::rows::<{ avx2::Q4_0 }>(xq, m, w, r0, r1, out),
            GgmlType::Q8_0 => return avx2::rows::<{ avx2::Q8_0 }>(xq, m, w, r0, r1, out),
            _ => unreachable!(),
        }
    }
    let nb = w.k / QK;
    let rb = w.row_bytes();
    for r in r0..r1 {
        let row = &w.data[r * rb..(r + 1) * rb];
        for t in 0..m {
            let v = dot_scalar(w.ty, row, &xq[t * nb..(t + 1) * nb]);
            *out.add(t * w.n + r) = v;
        }
    }
}

/// Portable block dot product of one weight row of a 32-element format (Q4_0, Q4_1, Q5_0,
/// Q5_1, Q8_0) and one quantized activation row ([`Format::dot`]).
///
/// # Panics
/// For a format whose activations are not [`BlockQ8`] blocks.
pub fn dot_scalar(ty: GgmlType, row: &[u8], x: &[BlockQ8]) -> f32 {
    let f: &dyn Format = formats::format(ty).expect("a known format");
    f.dot(row, ActRow::Q8(x))
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::{BlockQ8, QMatRef, QK};
    use std::arch::x86_64::*;

    pub const Q4_0: u8 = 0;
    pub const Q4_1: u8 = 1;
    pub const Q8_0: u8 = 2;

    const fn block_bytes(t: u8) -> usize {
        match t {
            Q4_0 => 18,
            Q4_1 => 20,
            _ => 34,
        }
    }

    /// Loads one weight block: (d, m, 32 values as bytes; unsigned for Q4_1, signed otherwise).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack<const T: u8>(p: *const u8) -> (f32, f32, __m256i) {
        let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            u16::from_le_bytes([*p, *p.add(1)]) as i32,
        )));
        match T {
            Q8_0 => (d, 0.0, _mm256_loadu_si256(p.add(2) as *const __m256i)),
            _ => {
                let (m, qs) = if T == Q4_1 {
                    let m = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u16::from_le_bytes([
                        *p.add(2),
                        *p.add(3),
                    ])
                        as i32)));
                    (m, p.add(4))
                } else {
                    (0.0, p.add(2))
                };
                let raw = _mm_loadu_si128(qs as *const __m128i);
                let lo_mask = _mm_set1_epi8(0x0f);
                let lo = _mm_and_si128(raw, lo_mask);
                let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), lo_mask);
                let v = _mm256_set_m128i(hi, lo);
                if T == Q4_0 {
                    (d, m, _mm256_sub_epi8(v, _mm256_set1_epi8(8)))
                } else {
                    (d, m, v)
                }
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// One tile: `R` weight rows starting at `w` × `C` tokens starting at `x`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile<const T: u8, const R: usize, const C: usize>(
        w: *const u8,
        row_bytes: usize,
        x: *const BlockQ8,
        nb: usize,
        out: *mut f32,
        n: usize,
    ) {
        let bb = block_bytes(T);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let mut summ = [[0.0f32; C]; R];
        for b in 0..nb {
            for r in 0..R {
                let (dw, mw, wv) = unpack::<T>(w.add(r * row_bytes + b * bb));
                let wabs = if T == Q4_1 {
                    wv
                } else {
                    _mm256_sign_epi8(wv, wv)
                };
                for c in 0..C {
                    let xb = &*x.add(c * nb + b);
                    let xv = _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i);
                    let p16 = if T == Q4_1 {
                        _mm256_maddubs_epi16(wv, xv)
                    } else {
                        _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(xv, wv))
                    };
                    let p = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
                    acc[r][c] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xb.d), p, acc[r][c]);
                    if T == Q4_1 {
                        summ[r][c] += mw * xb.s;
                    }
                }
            }
        }
        for r in 0..R {
            for c in 0..C {
                *out.add(c * n + r) = hsum(acc[r][c]) + summ[r][c];
            }
        }
    }

    /// Output columns `r0..r1` for all `m` tokens, in tiles.
    ///
    /// # Safety
    /// As [`super::rows`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn rows<const T: u8>(
        xq: &[BlockQ8],
        m: usize,
        w: QMatRef<'_>,
        r0: usize,
        r1: usize,
        out: *mut f32,
    ) {
        let nb = w.k / QK;
        let rb = nb * block_bytes(T);
        let n = w.n;
        let wp = w.data.as_ptr();
        let xp = xq.as_ptr();
        let mut r = r0;
        if m == 1 {
            // Decode: memory-bound; four rows in flight.
            while r + 4 <= r1 {
                tile::<T, 4, 1>(wp.add(r * rb), rb, xp, nb, out.add(r), n);
                r += 4;
            }
            while r < r1 {
                tile::<T, 1, 1>(wp.add(r * rb), rb, xp, nb, out.add(r), n);
                r += 1;
            }
            return;
        }
        // Prefill: 2 rows × 4 tokens per tile; each weight block is unpacked once per 4 tokens.
        while r < r1 {
            let two = r + 2 <= r1;
            let mut t = 0;
            while t + 4 <= m {
                let (x, o) = (xp.add(t * nb), out.add(t * n + r));
                if two {
                    tile::<T, 2, 4>(wp.add(r * rb), rb, x, nb, o, n);
                } else {
                    tile::<T, 1, 4>(wp.add(r * rb), rb, x, nb, o, n);
                }
                t += 4;
            }
            while t < m {
                let (x, o) = (xp.add(t * nb), out.add(t * n + r));
                if two {
                    tile::<T, 2, 1>(wp.add(r * rb), rb, x, nb, o, n);
                } else {
                    tile::<T, 1, 1>(wp.add(r * rb), rb, x, nb, o, n);
                }
                t += 1;
            }
            r += if two { 2 } else { 1 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize, quantize_q4_0, quantize_q4_1, quantize_q8_0};

    /// Deterministic pseudo-random floats in [-1, 1) (xorshift), heavier tails every 7th.
    pub(crate) fn randoms(n: usize, seed: u64) -> Vec<f32> {
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

    fn weights(ty: GgmlType, n: usize, k: usize, seed: u64) -> Vec<u8> {
        let w = randoms(n * k, seed);
        match ty {
            GgmlType::Q4_0 => quantize_q4_0(&w),
            GgmlType::Q4_1 => quantize_q4_1(&w),
            GgmlType::Q8_0 => quantize_q8_0(&w),
            _ => unreachable!(),
        }
    }

    /// f64 reference: dequantized weights against dequantized activation blocks.
    fn reference(ty: GgmlType, w: &[u8], n: usize, k: usize, xq: &[BlockQ8], m: usize) -> Vec<f64> {
        let mut wd = Vec::new();
        dequantize(ty, w, n * k, &mut wd);
        let nb = k / QK;
        let mut out = vec![0.0f64; m * n];
        for t in 0..m {
            for r in 0..n {
                let mut acc = 0.0f64;
                for b in 0..nb {
                    let xb = &xq[t * nb + b];
                    for j in 0..QK {
                        acc += wd[r * k + b * QK + j] as f64 * (xb.qs[j] as f64 * xb.d as f64);
                    }
                }
                out[t * n + r] = acc;
            }
        }
        out
    }

    /// The Q4_1 formula uses ggml's f16-rounded `s` in place of `d·Σq`; the difference is
    /// bounded by half an f16 ulp of `s` times `m` per block.
    fn check(ty: GgmlType, m: usize, n: usize, k: usize) {
        let w = weights(ty, n, k, 7 + n as u64);
        let x = randoms(m * k, 11 + m as u64);
        let xq = quantize_q8(&x, k);
        let want = reference(ty, &w, n, k, &xq, m);
        let mut got = vec![0.0f32; m * n];
        qmatmul(&x, QMatRef { ty, n, k, data: &w }, &mut got);
        let mut scalar = vec![0.0f32; m * n];
        let nb = k / QK;
        let rb = nb * ty.block_bytes();
        for t in 0..m {
            for r in 0..n {
                scalar[t * n + r] =
                    dot_scalar(ty, &w[r * rb..(r + 1) * rb], &xq[t * nb..(t + 1) * nb]);
            }
        }
        let scale = (k as f64).sqrt() * 2.0;
        for i in 0..m * n {
            let tol = 2e-3 * scale;
            assert!(
                (got[i] as f64 - want[i]).abs() < tol,
                "{} m={m} n={n} k={k} [{i}]: simd {} vs f64 {}",
                ty.name(),
                got[i],
                want[i]
            );
            assert!(
                (got[i] - scalar[i]).abs() <= 1e-4 * scale as f32,
                "{} [{i}]: simd {} vs scalar {}",
                ty.name(),
                got[i],
                scalar[i]
            );
        }
        // Against exact f32 activations, the 8-bit activation error stays small.
        let mut wd = Vec::new();
        dequantize(ty, &w, n * k, &mut wd);
        for t in 0..m {
            for r in 0..n {
                let exact: f64 = (0..k)
                    .map(|j| wd[r * k + j] as f64 * x[t * k + j] as f64)
                    .sum();
                assert!(
                    (got[t * n + r] as f64 - exact).abs() < 0.02 * scale,
                    "exact {exact} vs {}",
                    got[t * n + r]
                );
            }
        }
    }

    #[test]
    fn kernels_match_f64_reference_on_random_tensors() {
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            for (m, n, k) in [
                (1, 1, 32),
                (1, 7, 64),
                (1, 37, 576),
                (3, 5, 96),
                (4, 6, 64),
                (9, 13, 160),
                (17, 33, 256),
            ] {
                check(ty, m, n, k);
            }
        }
    }

    #[test]
    fn activation_quantization_matches_ggml() {
        let x: Vec<f32> = (0..32).map(|i| i as f32 - 15.5).collect();
        let mut b = [BlockQ8::default()];
        quantize_row_q8(&x, &mut b);
        let d = 15.5f32 / 127.0;
        assert_eq!(b[0].d, round_f16(d));
        assert_eq!(b[0].qs[31], 127);
        assert_eq!(b[0].qs[0], -(15.5f32 / d).round_ties_even() as i8);
        let sum: i32 = b[0].qs.iter().map(|&q| q as i32).sum();
        assert_eq!(b[0].s, round_f16(sum as f32 * d));
        // All-zero block: d = 0, q = 0, no NaN.
        let mut z = [BlockQ8::default()];
        quantize_row_q8(&[0.0; 32], &mut z);
        assert_eq!((z[0].d, z[0].s, z[0].qs), (0.0, 0.0, [0; 32]));
    }
}
