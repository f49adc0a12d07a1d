//! Q6_K: 256 weights in 210 bytes — 16 sub-blocks of 16 with signed 8-bit scales,
//! `y = d·sc·(q − 32)` with 6-bit `q`.
//!
//! Source: ggml-common.h `block_q6_K` (`uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16];
//! ggml_half d` — `d` last), ggml-quants.c `dequantize_row_q6_K`: two halves of 128 weights
//! (`ql += 64`, `qh += 32`, `scales += 8`); for `l < 32`: weight `l` is
//! `ql[l] & 0xF | (qh[l] & 3) << 4`, weight `l+32` is `ql[l+32] & 0xF | (qh[l] >> 2 & 3) << 4`,
//! weight `l+64` is `ql[l] >> 4 | (qh[l] >> 4 & 3) << 4`, weight `l+96` is
//! `ql[l+32] >> 4 | (qh[l] >> 6) << 4`; sub-block `s` is weights `16s..16s+16`.
//!
//! Activations: Q8_K ([`BlockQ8K`]). As ggml-cpu `ggml_vec_dot_q6_K_q8_K`, the unsigned quant
//! (0..63) goes into the integer products and the `−32` offset is applied once per super-block
//! as `32·Σ_s sc_s·bsum_s`.

use super::{blocks, h, tiled_dot, Act, AffineLayout, BlockQ8K, Format};
use crate::quant::GgmlType;

/// One Q6_K super-block.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BlockQ6K {
    /// Low 4 bits of the quants.
    pub ql: [u8; 128],
    /// High 2 bits of the quants.
    pub qh: [u8; 64],
    /// Signed scales of the 16 sub-blocks.
    pub scales: [i8; 16],
    /// Super-block scale (f16).
    pub d: [u8; 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

impl BlockQ6K {
    /// The 256 unsigned quants (0..63) in weight order.
    fn quants(&self) -> [u8; 256] {
        let mut q = [0u8; 256];
        for n in 0..2 {
            let (ql, qh) = (&self.ql[64 * n..], &self.qh[32 * n..]);
            let y = &mut q[128 * n..];
            for l in 0..32 {
                y[l] = (ql[l] & 0x0f) | ((qh[l] & 3) << 4);
                y[l + 32] = (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4);
                y[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                y[l + 96] = (ql[l + 32] >> 4) | ((qh[l] >> 6) << 4);
            }
        }
        q
    }
}

/// `32 · Σ_s sc_s · bsums_s`: the offset term of a super-block.
#[inline]
fn offset(b: &BlockQ6K, x: &BlockQ8K) -> i32 {
    32 * (0..16)
        .map(|s| b.scales[s] as i32 * x.bsums[s] as i32)
        .sum::<i32>()
}

/// The Q6_K format.
pub struct Q6K;

impl Format for Q6K {
    fn ty(&self) -> GgmlType {
        GgmlType::Q6_K
    }

    fn act(&self) -> Act {
        Act::Q8K
    }

    fn affine_layout(&self) -> Option<AffineLayout> {
        Some(AffineLayout { bits: 8, group: 16 })
    }

    /// Sub-blocks of 16: `d·sc·(q − 32)` with the signed `q − 32` (so `(d·sc)·q'` is the same
    /// product [`Format::dequantize`] rounds).
    fn affine_groups(&self, data: &[u8], group: &mut dyn FnMut(f32, f32, &[i8])) {
        for b in blocks::<BlockQ6K>(data) {
            let d = h(b.d);
            let q = b.quants().map(|q| q as i8 - 32);
            for s in 0..16 {
                group(d * b.scales[s] as f32, 0.0, &q[16 * s..16 * s + 16]);
            }
        }
    }

    fn dequantize(&self, data: &[u8], out: &mut [f32]) {
        for (b, o) in blocks::<BlockQ6K>(data)
            .iter()
            .zip(out.chunks_exact_mut(256))
        {
            let d = h(b.d);
            for (i, q) in b.quants().iter().enumerate() {
                o[i] = d * b.scales[i / 16] as f32 * (*q as i32 - 32) as f32;
            }
        }
    }

    tiled_dot!(
        ty: GgmlType::Q6_K,
        act: Q8K "Q8_K",
        block: BlockQ6K,
        tile: avx2::tile,
        portable: dot_portable,
    );
}

/// The portable dot product (the integer sums of the SIMD path, in scalar code).
pub fn dot_portable(row: &[u8], x: &[BlockQ8K]) -> f32 {
    let mut acc = 0.0f32;
    for (b, xb) in blocks::<BlockQ6K>(row).iter().zip(x) {
        let q = b.quants();
        let mut sumi = 0i32;
        for s in 0..16 {
            let p: i32 = (16 * s..16 * s + 16)
                .map(|i| q[i] as i32 * xb.qs[i] as i32)
                .sum();
            sumi += b.scales[s] as i32 * p;
        }
        acc += h(b.d) * xb.d * (sumi - offset(b, xb)) as f32;
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{h, BlockQ6K, BlockQ8K};
    use std::arch::x86_64::*;

    /// The 6-bit quants of 128 weights are assembled once per half super-block for the `C`
    /// tokens of the tile; each token's sums are the same instructions in the same order as
    /// with `C = 1`. The `−32` offset (`32·Σ sc·bsums`) is subtracted from the integer sums
    /// in eight i32 lanes; one FMA per super-block and token, one horizontal sum per row.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn tile<const C: usize>(row: &[BlockQ6K], x: [&[BlockQ8K]; C], out: &mut [f32; C]) {
        let m4 = _mm256_set1_epi8(0x0f);
        let mut acc = [_mm256_setzero_ps(); C];
        // Bounds are checked once here; the loop reads through pointers.
        for xc in &x {
            assert!(
                xc.len() >= row.len(),
                "Q6_K: activations shorter than the row"
            );
        }
        let xp: [*const BlockQ8K; C] = x.map(|x| x.as_ptr());
        for (j, b) in row.iter().enumerate() {
            crate::formats::prefetch_ahead(b);
            let mut sumi = [_mm256_setzero_si256(); C];
            for n in 0..2 {
                let ql0 = _mm256_loadu_si256(b.ql.as_ptr().add(64 * n) as *const __m256i);
                let ql1 = _mm256_loadu_si256(b.ql.as_ptr().add(64 * n + 32) as *const __m256i);
                let qh = _mm256_loadu_si256(b.qh.as_ptr().add(32 * n) as *const __m256i);
                let hb = |m: i8| _mm256_and_si256(qh, _mm256_set1_epi8(m));
                let v = [
                    _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(hb(0x03), 4)),
                    _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_slli_epi16(hb(0x0c), 2)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), hb(0x30)),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                        _mm256_srli_epi16(hb(0xc0_u8 as i8), 2),
                    ),
                ];
                for (i, v) in v.iter().enumerate() {
                    let s = 8 * n + 2 * i;
                    let scale = _mm256_set_m128i(
                        _mm_set1_epi16(b.scales[s + 1] as i16),
                        _mm_set1_epi16(b.scales[s] as i16),
                    );
                    for c in 0..C {
                        let xv = _mm256_loadu_si256(
                            (*xp[c].add(j)).qs.as_ptr().add(128 * n + 32 * i) as *const __m256i,
                        );
                        let prod = _mm256_madd_epi16(_mm256_maddubs_epi16(*v, xv), scale);
                        sumi[c] = _mm256_add_epi32(sumi[c], prod);
                    }
                }
            }
            let sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.scales.as_ptr() as *const __m128i));
            let d = h(b.d);
            for c in 0..C {
                let xb = &*xp[c].add(j);
                let bs = _mm256_loadu_si256(xb.bsums.as_ptr() as *const __m256i);
                let off = _mm256_slli_epi32(_mm256_madd_epi16(sc, bs), 5);
                acc[c] = _mm256_fmadd_ps(
                    _mm256_set1_ps(d * xb.d),
                    _mm256_cvtepi32_ps(_mm256_sub_epi32(sumi[c], off)),
                    acc[c],
                );
            }
        }
        for c in 0..C {
            out[c] = crate::kernels::cpu::avx2::hsum(acc[c]);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dot_matches_reference() {
        super::super::testing::check_dot(crate::quant::GgmlType::Q6_K, 512, &[208]);
    }
}
