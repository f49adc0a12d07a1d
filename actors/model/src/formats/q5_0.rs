//! Q5_0: 32 weights in 22 bytes, `y = d·(q − 16)` with 5-bit `q`.
//!
//! Source: ggml-common.h `block_q5_0` (`ggml_half d; uint8_t qh[4]; uint8_t qs[16]`),
//! ggml-quants.c `dequantize_row_q5_0`: `qh` read as a little-endian u32; weight `j < 16` is
//! `(qs[j] & 0xF) | bit j of qh << 4`, weight `j + 16` is `(qs[j] >> 4) | bit j+16 of qh << 4`.
//! Activations: Q8_0 ([`BlockQ8`]); `Σ = d_w·d_x·Σ (q_w − 16)·q_x` per block
//! (ggml-cpu `ggml_vec_dot_q5_0_q8_0`; the AVX2 path expands `qh` to a byte mask, as ggml's
//! `bytes_from_bits_32`, and ORs `0xF0` into weights whose fifth bit is clear: that byte read as
//! signed is `q − 16`).

use super::{blocks, h, tiled_dot, Act, AffineLayout, Format};
use crate::kernels::cpu::BlockQ8;
use crate::quant::GgmlType;

/// One Q5_0 block.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BlockQ5_0 {
    /// Scale (f16).
    pub d: [u8; 2],
    /// Fifth bits, a little-endian u32: bit `j` for weight `j`.
    pub qh: [u8; 4],
    /// Low nibbles: weight `j` low, `j + 16` high.
    pub qs: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

impl BlockQ5_0 {
    /// The 32 quants, 0..32, in weight order.
    #[inline]
    fn quants(&self) -> [u8; 32] {
        quants_5bit(self.qh, &self.qs)
    }
}

/// The 32 five-bit quants of a Q5_0/Q5_1 block in weight order, from its fifth bits `qh` (a
/// little-endian u32) and its nibbles `qs`.
#[inline]
pub(super) fn quants_5bit(qh: [u8; 4], qs: &[u8; 16]) -> [u8; 32] {
    let qh = u32::from_le_bytes(qh);
    let mut q = [0u8; 32];
    for j in 0..16 {
        q[j] = (qs[j] & 0x0f) | (((qh >> j) & 1) << 4) as u8;
        q[j + 16] = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4) as u8;
    }
    q
}

/// The Q5_0 format.
pub struct Q5_0;

impl Format for Q5_0 {
    fn ty(&self) -> GgmlType {
        GgmlType::Q5_0
    }

    fn act(&self) -> Act {
        Act::Q8
    }

    fn affine_layout(&self) -> Option<AffineLayout> {
        Some(AffineLayout { bits: 8, group: 32 })
    }

    fn affine_groups(&self, data: &[u8], group: &mut dyn FnMut(f32, f32, &[i8])) {
        for b in blocks::<BlockQ5_0>(data) {
            group(h(b.d), 0.0, &b.quants().map(|q| q as i8 - 16));
        }
    }

    fn dequantize(&self, data: &[u8], out: &mut [f32]) {
        for (b, o) in blocks::<BlockQ5_0>(data)
            .iter()
            .zip(out.chunks_exact_mut(32))
        {
            let d = h(b.d);
            for (o, q) in o.iter_mut().zip(b.quants()) {
                *o = (q as i32 - 16) as f32 * d;
            }
        }
    }

    tiled_dot!(
        ty: GgmlType::Q5_0,
        act: Q8 "Q8_0",
        block: BlockQ5_0,
        tile: avx2::tile,
        portable: dot_portable,
    );
}

/// The portable dot product: the same integer sum per block, one multiply per block.
pub fn dot_portable(row: &[u8], x: &[BlockQ8]) -> f32 {
    let mut acc = 0.0f32;
    for (b, xb) in blocks::<BlockQ5_0>(row).iter().zip(x) {
        let s: i32 = b
            .quants()
            .iter()
            .zip(&xb.qs)
            .map(|(&q, &a)| (q as i32 - 16) * a as i32)
            .sum();
        acc += h(b.d) * xb.d * s as f32;
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{h, BlockQ5_0, BlockQ8};
    use std::arch::x86_64::*;

    /// 0xFF in byte `i` where bit `i` of `bits` is set.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn bytes_from_bits(bits: u32) -> __m256i {
        let shuf = _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        );
        let v = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), shuf);
        let v = _mm256_or_si256(v, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe_u64 as i64));
        _mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1))
    }

    /// Per block: the 5-bit weights decoded once (nibbles, fifth-bit mask, `q − 16` as signed
    /// bytes, their absolute values for `maddubs`) for the `C` tokens of the tile; per token
    /// `maddubs`/`madd` to eight i32 sums, one conversion and an FMA with `d_w·d_x` into eight
    /// f32 lanes, one horizontal sum per row. Each token's sums are the same instructions in
    /// the same order as with `C = 1`, so a token's value does not depend on the tile.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn tile<const C: usize>(row: &[BlockQ5_0], x: [&[BlockQ8]; C], out: &mut [f32; C]) {
        for xc in &x {
            assert!(
                xc.len() >= row.len(),
                "Q5_0: activations shorter than the row"
            );
        }
        let xp: [*const BlockQ8; C] = x.map(|x| x.as_ptr());
        let mask = _mm_set1_epi8(0x0f);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); C];
        for (i, b) in row.iter().enumerate() {
            crate::formats::prefetch_ahead(b);
            let raw = _mm_loadu_si128(b.qs.as_ptr() as *const __m128i);
            let lo = _mm_and_si128(raw, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
            let nib = _mm256_set_m128i(hi, lo);
            let fifth = bytes_from_bits(u32::from_le_bytes(b.qh));
            // Fifth bit clear: OR 0xF0, which as a signed byte is q − 16; set: q − 16 = nib.
            let w = _mm256_or_si256(nib, _mm256_andnot_si256(fifth, _mm256_set1_epi8(-16)));
            let wabs = _mm256_sign_epi8(w, w);
            let d = h(b.d);
            for c in 0..C {
                let xb = &*xp[c].add(i);
                let xv = _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i);
                let p16 = _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(xv, w));
                let p = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
                acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(d * xb.d), p, acc[c]);
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
        super::super::testing::check_dot(crate::quant::GgmlType::Q5_0, 192, &[0]);
    }
}
