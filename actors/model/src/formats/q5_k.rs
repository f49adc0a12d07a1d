//! Q5_K: 256 weights in 176 bytes — as Q4_K plus a fifth bit per weight,
//! `y = d·sc_j·(q + 16·hbit) − dmin·m_j`.
//!
//! Source: ggml-common.h `block_q5_K` (`ggml_half d, dmin; uint8_t scales[12]; uint8_t qh[32];
//! uint8_t qs[128]`), ggml-quants.c `dequantize_row_q5_K`: scales and nibbles as Q4_K; the fifth
//! bit of weight `64g+l` is bit `2g` of `qh[l]`, of weight `64g+32+l` bit `2g+1`.
//! Activations: Q8_K ([`super::BlockQ8K`]) with the minimum term from `bsums` (ggml-cpu
//! `ggml_vec_dot_q5_K_q8_K`). The SIMD kernel is Q4_K's ([`K4Block`]) with the fifth bit
//! OR-ed into each quant.

#[cfg(target_arch = "x86_64")]
use super::q4_k::avx2;
use super::q4_k::{min_term, scales_mins, K4Block};
use super::{blocks, h, tiled_dot, Act, AffineLayout, BlockQ8K, Format};
use crate::quant::GgmlType;

/// One Q5_K super-block.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BlockQ5K {
    /// Super-block scale of the scales (f16).
    pub d: [u8; 2],
    /// Super-block scale of the minimums (f16).
    pub dmin: [u8; 2],
    /// 8 scales and 8 minimums, 6 bits each (as Q4_K).
    pub scales: [u8; 12],
    /// Fifth bits.
    pub qh: [u8; 32],
    /// Low nibbles in 4 groups of 64 weights.
    pub qs: [u8; 128],
}

const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);

impl K4Block for BlockQ5K {
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
        Some(&self.qh)
    }
}

impl BlockQ5K {
    /// The 256 quants (0..31) in weight order.
    fn quants(&self) -> [u8; 256] {
        let mut q = [0u8; 256];
        for g in 0..4 {
            for l in 0..32 {
                let b = self.qs[32 * g + l];
                q[64 * g + l] = (b & 0x0f) | (((self.qh[l] >> (2 * g)) & 1) << 4);
                q[64 * g + 32 + l] = (b >> 4) | (((self.qh[l] >> (2 * g + 1)) & 1) << 4);
            }
        }
        q
    }
}

/// The Q5_K format.
pub struct Q5K;

impl Format for Q5K {
    fn ty(&self) -> GgmlType {
        GgmlType::Q5_K
    }

    fn act(&self) -> Act {
        Act::Q8K
    }

    fn affine_layout(&self) -> Option<AffineLayout> {
        Some(AffineLayout { bits: 8, group: 32 })
    }

    /// Sub-blocks of 32: `d·sc·q − dmin·m`, the 5-bit `q` in a byte.
    fn affine_groups(&self, data: &[u8], group: &mut dyn FnMut(f32, f32, &[i8])) {
        for b in blocks::<BlockQ5K>(data) {
            let (d, dmin) = (h(b.d), h(b.dmin));
            let (sc, mn) = scales_mins(&b.scales);
            let q = b.quants().map(|q| q as i8);
            for j in 0..8 {
                group(
                    d * sc[j] as f32,
                    -(dmin * mn[j] as f32),
                    &q[32 * j..32 * j + 32],
                );
            }
        }
    }

    fn dequantize(&self, data: &[u8], out: &mut [f32]) {
        for (b, o) in blocks::<BlockQ5K>(data)
            .iter()
            .zip(out.chunks_exact_mut(256))
        {
            let (d, dmin) = (h(b.d), h(b.dmin));
            let (sc, mn) = scales_mins(&b.scales);
            for (i, q) in b.quants().iter().enumerate() {
                let j = i / 32;
                o[i] = d * sc[j] as f32 * *q as f32 - dmin * mn[j] as f32;
            }
        }
    }

    tiled_dot!(
        ty: GgmlType::Q5_K,
        act: Q8K "Q8_K",
        block: BlockQ5K,
        tile: avx2::tile[BlockQ5K],
        portable: dot_portable,
    );
}

/// The portable dot product (the integer sums of the SIMD path, in scalar code).
pub fn dot_portable(row: &[u8], x: &[BlockQ8K]) -> f32 {
    let mut acc = 0.0f32;
    for (b, xb) in blocks::<BlockQ5K>(row).iter().zip(x) {
        let (sc, mn) = scales_mins(&b.scales);
        let q = b.quants();
        let mut sumi = 0i32;
        for (j, &s) in sc.iter().enumerate() {
            let p: i32 = (32 * j..32 * j + 32)
                .map(|i| q[i] as i32 * xb.qs[i] as i32)
                .sum();
            sumi += s as i32 * p;
        }
        acc += xb.d * (h(b.d) * sumi as f32 - h(b.dmin) * min_term(&mn, xb) as f32);
    }
    acc
}

#[cfg(test)]
mod tests {
    #[test]
    fn dot_matches_reference() {
        super::super::testing::check_dot(crate::quant::GgmlType::Q5_K, 512, &[0, 2]);
    }
}
