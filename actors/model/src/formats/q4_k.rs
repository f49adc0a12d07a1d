//! Q4_K: 256 weights in 144 bytes — 8 sub-blocks of 32 with 6-bit scales and minimums,
//! `y = d·sc_j·q − dmin·m_j`.
//!
//! Source: ggml-common.h `block_q4_K` (`ggml_half d, dmin; uint8_t scales[12]; uint8_t
//! qs[128]`), ggml-quants.c `dequantize_row_q4_K` and `get_scale_min_k4`: for `j < 4`,
//! `sc = s[j] & 63`, `m = s[j+4] & 63`; for `j ≥ 4`, `sc = (s[j+4] & 0xF) | (s[j−4] >> 6) << 4`,
//! `m = (s[j+4] >> 4) | (s[j] >> 6) << 4`. Quants come in 4 groups of 64: `qs[32g+l] & 0xF` is
//! weight `64g+l` (sub-block `2g`), `qs[32g+l] >> 4` is weight `64g+32+l` (sub-block `2g+1`).
//!
//! Activations: Q8_K ([`BlockQ8K`]). As ggml-cpu `ggml_vec_dot_q4_K_q8_K`:
//! `Σ = d_x·(d·Σ_j sc_j·Σ_{i∈j} q_i·q8_i − dmin·Σ_j m_j·bsum_j)`: the minimum term reads the
//! activation's `bsums` (8 multiply-adds per 256 weights); the inner loop stays u8 × i8.

use super::{blocks, h, Act, ActRow, BlockQ8K, Format};
use crate::kernels::cpu::has_avx2;
use crate::quant::GgmlType;

/// One Q4_K super-block.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BlockQ4K {
    /// Super-block scale of the scales (f16).
    pub d: [u8; 2],
    /// Super-block scale of the minimums (f16).
    pub dmin: [u8; 2],
    /// 8 scales and 8 minimums, 6 bits each.
    pub scales: [u8; 12],
    /// Nibbles in 4 groups of 64 weights.
    pub qs: [u8; 128],
}

const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

/// The 8 scales and 8 minimums of a Q4_K/Q5_K super-block (`get_scale_min_k4`).
#[inline]
pub(crate) fn scales_mins(s: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..8 {
        if j < 4 {
            sc[j] = s[j] & 63;
            mn[j] = s[j + 4] & 63;
        } else {
            sc[j] = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
            mn[j] = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        }
    }
    (sc, mn)
}

/// `Σ_j m_j · (bsums[2j] + bsums[2j+1])`: the minimum term of a super-block.
#[inline]
pub(crate) fn min_term(mn: &[u8; 8], x: &BlockQ8K) -> i32 {
    (0..8)
        .map(|j| mn[j] as i32 * (x.bsums[2 * j] as i32 + x.bsums[2 * j + 1] as i32))
        .sum()
}

/// The Q4_K format.
pub struct Q4K;

impl Format for Q4K {
    fn ty(&self) -> GgmlType {
        GgmlType::Q4_K
    }

    fn act(&self) -> Act {
        Act::Q8K
    }

    fn dequantize(&self, data: &[u8], out: &mut [f32]) {
        for (b, o) in blocks::<BlockQ4K>(data)
            .iter()
            .zip(out.chunks_exact_mut(256))
        {
            let (d, dmin) = (h(b.d), h(b.dmin));
            let (sc, mn) = scales_mins(&b.scales);
            for g in 0..4 {
                let (d1, m1) = (d * sc[2 * g] as f32, dmin * mn[2 * g] as f32);
                let (d2, m2) = (d * sc[2 * g + 1] as f32, dmin * mn[2 * g + 1] as f32);
                for l in 0..32 {
                    let q = b.qs[32 * g + l];
                    o[64 * g + l] = d1 * (q & 0x0f) as f32 - m1;
                    o[64 * g + 32 + l] = d2 * (q >> 4) as f32 - m2;
                }
            }
        }
    }

    fn dot(&self, row: &[u8], x: ActRow<'_>) -> f32 {
        let ActRow::Q8K(x) = x else {
            panic!("Q4_K: Q8_K activations expected")
        };
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: AVX2, FMA and F16C are present (checked at run time).
            return unsafe { avx2::dot(blocks(row), x) };
        }
        dot_portable(row, x)
    }
}

/// The portable dot product (the integer sums of the SIMD path, in scalar code).
pub fn dot_portable(row: &[u8], x: &[BlockQ8K]) -> f32 {
    let mut acc = 0.0f32;
    for (b, xb) in blocks::<BlockQ4K>(row).iter().zip(x) {
        let (sc, mn) = scales_mins(&b.scales);
        let mut sumi = 0i32;
        for g in 0..4 {
            let (mut lo, mut hi) = (0i32, 0i32);
            for l in 0..32 {
                let q = b.qs[32 * g + l];
                lo += (q & 0x0f) as i32 * xb.qs[64 * g + l] as i32;
                hi += (q >> 4) as i32 * xb.qs[64 * g + 32 + l] as i32;
            }
            sumi += sc[2 * g] as i32 * lo + sc[2 * g + 1] as i32 * hi;
        }
        let summ = min_term(&mn, xb);
        acc += xb.d * (h(b.d) * sumi as f32 - h(b.dmin) * summ as f32);
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{h, min_term, scales_mins, BlockQ4K, BlockQ8K};
    use std::arch::x86_64::*;

    /// Per 64 weights: `maddubs` (u8 nibbles × i8 activations → i16 pairs), then `madd` with the
    /// sub-block scale (→ i32); one int→float conversion per super-block.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot(row: &[BlockQ4K], x: &[BlockQ8K]) -> f32 {
        let mask = _mm256_set1_epi8(0x0f);
        let mut acc = 0.0f32;
        for (b, xb) in row.iter().zip(x) {
            let (sc, mn) = scales_mins(&b.scales);
            let mut sumi = _mm256_setzero_si256();
            for g in 0..4 {
                let bits = _mm256_loadu_si256(b.qs.as_ptr().add(32 * g) as *const __m256i);
                let lo = _mm256_and_si256(bits, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), mask);
                let xl = _mm256_loadu_si256(xb.qs.as_ptr().add(64 * g) as *const __m256i);
                let xh = _mm256_loadu_si256(xb.qs.as_ptr().add(64 * g + 32) as *const __m256i);
                let pl = _mm256_madd_epi16(
                    _mm256_set1_epi16(sc[2 * g] as i16),
                    _mm256_maddubs_epi16(lo, xl),
                );
                let ph = _mm256_madd_epi16(
                    _mm256_set1_epi16(sc[2 * g + 1] as i16),
                    _mm256_maddubs_epi16(hi, xh),
                );
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
            }
            let s = crate::kernels::cpu::avx2::hsum_i32(sumi);
            acc += xb.d * (h(b.d) * s as f32 - h(b.dmin) * min_term(&mn, xb) as f32);
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dot_matches_reference() {
        super::super::testing::check_dot(crate::quant::GgmlType::Q4_K, 512, &[0, 2]);
    }
}
