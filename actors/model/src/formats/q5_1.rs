//! Q5_1: 32 weights in 24 bytes, `y = d·q + m` with 5-bit `q`.
//!
//! Source: ggml-common.h `block_q5_1` (`ggml_half d, m; uint8_t qh[4]; uint8_t qs[16]`),
//! ggml-quants.c `dequantize_row_q5_1`; bits as Q5_0. Activations: Q8_1 ([`crate::kernels::cpu::BlockQ8`]);
//! `Σ = d_w·d_x·Σ q_w·q_x + m_w·s_x` per block (ggml-cpu `ggml_vec_dot_q5_1_q8_1`).

use super::{blocks, h, Act, ActRow, AffineLayout, Format};
use crate::quant::GgmlType;

/// One Q5_1 block.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BlockQ5_1 {
    /// Scale (f16).
    pub d: [u8; 2],
    /// Minimum (f16).
    pub m: [u8; 2],
    /// Fifth bits, a little-endian u32.
    pub qh: [u8; 4],
    /// Low nibbles.
    pub qs: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

impl BlockQ5_1 {
    fn quants(&self) -> [u8; 32] {
        super::q5_0::quants_5bit(self.qh, &self.qs)
    }
}

/// The Q5_1 format.
pub struct Q5_1;

impl Format for Q5_1 {
    fn ty(&self) -> GgmlType {
        GgmlType::Q5_1
    }

    fn act(&self) -> Act {
        Act::Q8
    }

    fn affine_layout(&self) -> Option<AffineLayout> {
        Some(AffineLayout { bits: 8, group: 32 })
    }

    fn affine_groups(&self, data: &[u8], group: &mut dyn FnMut(f32, f32, &[i8])) {
        for b in blocks::<BlockQ5_1>(data) {
            group(h(b.d), h(b.m), &b.quants().map(|q| q as i8));
        }
    }

    fn dequantize(&self, data: &[u8], out: &mut [f32]) {
        for (b, o) in blocks::<BlockQ5_1>(data)
            .iter()
            .zip(out.chunks_exact_mut(32))
        {
            let (d, m) = (h(b.d), h(b.m));
            for (o, q) in o.iter_mut().zip(b.quants()) {
                *o = q as f32 * d + m;
            }
        }
    }

    fn dot(&self, row: &[u8], x: ActRow<'_>) -> f32 {
        let ActRow::Q8(x) = x else {
            panic!("Q5_1: Q8_1 activations expected")
        };
        let mut acc = 0.0f32;
        for (b, xb) in blocks::<BlockQ5_1>(row).iter().zip(x) {
            let s: i32 = b
                .quants()
                .iter()
                .zip(&xb.qs)
                .map(|(&q, &a)| q as i32 * a as i32)
                .sum();
            acc += h(b.d) * xb.d * s as f32 + h(b.m) * xb.s;
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dot_matches_reference() {
        super::super::testing::check_dot(crate::quant::GgmlType::Q5_1, 192, &[0, 2]);
    }
}
