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

use super::{blocks, h, tiled_dot, Act, AffineLayout, BlockQ8K, Format};
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

/// The super-blocks laid out as Q4_K (Q4_K, Q5_K): `d`, `dmin`, the 12 bytes of 6-bit scales
/// and minimums and 128 bytes of nibbles; Q5_K adds 32 bytes of fifth bits. One SIMD kernel
/// serves both.
pub(crate) trait K4Block: Copy + 'static {
    /// Super-block scale of the scales (f16 bytes).
    fn d(&self) -> [u8; 2];
    /// Super-block scale of the minimums (f16 bytes).
    fn dmin(&self) -> [u8; 2];
    /// The packed scales and minimums (`get_scale_min_k4`).
    fn scales(&self) -> &[u8; 12];
    /// Nibbles in 4 groups of 64 weights.
    fn qs(&self) -> &[u8; 128];
    /// The fifth bits (Q5_K: bit `2g` of `qh[l]` for weight `64g+l`, bit `2g+1` for
    /// `64g+32+l`), `None` for Q4_K.
    fn qh(&self) -> Option<&[u8; 32]>;
}

impl K4Block for BlockQ4K {
    fn d(&self) -> [u8; 2] {
        self.d
    }
    fn dmin(&self) -> [u8; 2] {
        self.dmin
    }
    fn scales(&self) -> &[u8; 12] {
        &self.scales
    }
    fn qs(&self) -> &[u8; 128] {
        &self.qs
    }
    fn qh(&self) -> Option<&[u8; 32]> {
        None
    }
}

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

    fn affine_layout(&self) -> Option<AffineLayout> {
        Some(AffineLayout { bits: 4, group: 32 })
    }

    /// Sub-blocks of 32: `d·sc·q − dmin·m`.
    fn affine_groups(&self, data: &[u8], group: &mut dyn FnMut(f32, f32, &[i8])) {
        for b in blocks::<BlockQ4K>(data) {
            let (d, dmin) = (h(b.d), h(b.dmin));
            let (sc, mn) = scales_mins(&b.scales);
            for g in 0..4 {
                let qs = &b.qs[32 * g..32 * g + 32];
                let lo: [i8; 32] = std::array::from_fn(|l| (qs[l] & 0x0f) as i8);
                let hi: [i8; 32] = std::array::from_fn(|l| (qs[l] >> 4) as i8);
                group(d * sc[2 * g] as f32, -(dmin * mn[2 * g] as f32), &lo);
                group(
                    d * sc[2 * g + 1] as f32,
                    -(dmin * mn[2 * g + 1] as f32),
                    &hi,
                );
            }
        }
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

    tiled_dot!(
        ty: GgmlType::Q4_K,
        act: Q8K "Q8_K",
        block: BlockQ4K,
        tile: avx2::tile[BlockQ4K],
        portable: dot_portable,
    );
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
pub(crate) mod avx2 {
    use super::{h, BlockQ8K, K4Block};
    use crate::formats::prefetch_ahead;
    use std::arch::x86_64::*;

    /// The 8 scales (bytes 0..8) and 8 minimums (bytes 8..16) of `get_scale_min_k4`, unpacked
    /// with whole-word masks as ggml's AVX2 kernel does (`kmask1..3`).
    #[inline(always)]
    pub(crate) unsafe fn scales_mins_u32(s: &[u8; 12]) -> [u32; 4] {
        const KMASK1: u32 = 0x3f3f3f3f;
        const KMASK2: u32 = 0x0f0f0f0f;
        const KMASK3: u32 = 0x03030303;
        let u = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
        let (u0, u1, u2) = (u(0), u(1), u(2));
        [
            u0 & KMASK1,
            (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4),
            u1 & KMASK1,
            ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4),
        ]
    }

    /// Per 64 weights: `maddubs` (u8 quants × i8 activations → i16 pairs; Q5_K's fifth bit
    /// OR-ed in as 16, at most 31·127·2 < 2¹⁵), then `madd` with the sub-block scale (→ i32);
    /// per super-block one int→float conversion and an FMA into eight f32 lanes, and the
    /// minimum term (`bsums` pair sums × minimums, four i32 lanes) subtracted into the same
    /// lanes; one horizontal sum per row. The quants and scales are decoded once for the `C`
    /// tokens of the tile; each token's sums are the same instructions in the same order as
    /// with `C = 1`. The loop over the 4 groups of 64 weights is kept rolled (an opaque
    /// bound): unrolled, LLVM decoded all 8 quant vectors first and spilled them to the
    /// stack (measured, qwen2 1024×16 Q4_K_M prefill at one thread: 120 → 140–150 tok/s).
    /// The weights `PREFETCH_AHEAD` bytes on are prefetched (the next rows of the task, which
    /// the hardware prefetcher loses at each 4 KiB page).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn tile<B: K4Block, const C: usize>(
        row: &[B],
        x: [&[BlockQ8K]; C],
        out: &mut [f32; C],
    ) {
        let mask = _mm256_set1_epi8(0x0f);
        let one = _mm256_set1_epi8(1);
        // Byte pairs (2j, 2j+1) repeated: broadcasts i16 lane j (ggml's get_scale_shuffle_k4).
        const SCALE_SHUFFLE: [__m256i; 8] = {
            let mut m = [[0u8; 32]; 8];
            let mut j = 0;
            while j < 8 {
                let mut i = 0;
                while i < 16 {
                    m[j][2 * i] = 2 * j as u8;
                    m[j][2 * i + 1] = 2 * j as u8 + 1;
                    i += 1;
                }
                j += 1;
            }
            // SAFETY: 32 bytes to a 256-bit vector.
            unsafe { std::mem::transmute::<[[u8; 32]; 8], [__m256i; 8]>(m) }
        };
        let mut acc = [_mm256_setzero_ps(); C];
        // Bounds are checked once here; the loop reads through pointers.
        for xc in &x {
            assert!(
                xc.len() >= row.len(),
                "Q4_K: activations shorter than the row"
            );
        }
        let xp: [*const BlockQ8K; C] = x.map(|x| x.as_ptr());
        for (i, b) in row.iter().enumerate() {
            prefetch_ahead(b);
            let u = scales_mins_u32(b.scales());
            // 8 scales then 8 minimums as i16; each scale is broadcast by one byte shuffle.
            let sm = _mm256_cvtepu8_epi16(_mm_set_epi32(
                u[3] as i32,
                u[2] as i32,
                u[1] as i32,
                u[0] as i32,
            ));
            let scales = _mm256_permute2x128_si256(sm, sm, 0x00);
            let mins = _mm256_extracti128_si256(sm, 1);
            let mut sumi = [_mm256_setzero_si256(); C];
            // Q5_K: the fifth bits, shifted right by 2 per group of 64 (bit 0 of each byte is
            // then the low half's bit, bit 1 the high half's).
            let mut hbits = b
                .qh()
                .map(|qh| _mm256_loadu_si256(qh.as_ptr() as *const __m256i));
            for g in 0..std::hint::black_box(4) {
                let bits = _mm256_loadu_si256(b.qs().as_ptr().add(32 * g) as *const __m256i);
                let mut lo = _mm256_and_si256(bits, mask);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), mask);
                if let Some(hb) = hbits.as_mut() {
                    let bit = |v: __m256i| _mm256_slli_epi16(_mm256_and_si256(v, one), 4);
                    lo = _mm256_or_si256(lo, bit(*hb));
                    hi = _mm256_or_si256(hi, bit(_mm256_srli_epi16(*hb, 1)));
                    *hb = _mm256_srli_epi16(*hb, 2);
                }
                let (s1, s2) = (
                    _mm256_shuffle_epi8(scales, SCALE_SHUFFLE[2 * g]),
                    _mm256_shuffle_epi8(scales, SCALE_SHUFFLE[2 * g + 1]),
                );
                for c in 0..C {
                    let xq = (*xp[c].add(i)).qs.as_ptr();
                    let xl = _mm256_loadu_si256(xq.add(64 * g) as *const __m256i);
                    let xh = _mm256_loadu_si256(xq.add(64 * g + 32) as *const __m256i);
                    let pl = _mm256_madd_epi16(s1, _mm256_maddubs_epi16(lo, xl));
                    let ph = _mm256_madd_epi16(s2, _mm256_maddubs_epi16(hi, xh));
                    sumi[c] = _mm256_add_epi32(sumi[c], _mm256_add_epi32(pl, ph));
                }
            }
            let (d, dmin) = (h(b.d()), h(b.dmin()));
            for c in 0..C {
                let xb = &*xp[c].add(i);
                // The minimum term (`bsums` pair sums × minimums, four i32 lanes) goes into the
                // same accumulator, negated, so a token holds one register across the row.
                let bs = _mm256_loadu_si256(xb.bsums.as_ptr() as *const __m256i);
                let pairs =
                    _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
                let summ = _mm256_zextsi128_si256(_mm_madd_epi16(mins, pairs));
                acc[c] = _mm256_fmadd_ps(
                    _mm256_set1_ps(d * xb.d),
                    _mm256_cvtepi32_ps(sumi[c]),
                    acc[c],
                );
                acc[c] = _mm256_fnmadd_ps(
                    _mm256_set1_ps(dmin * xb.d),
                    _mm256_cvtepi32_ps(summ),
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
        super::super::testing::check_dot(crate::quant::GgmlType::Q4_K, 512, &[0, 2]);
    }
}
