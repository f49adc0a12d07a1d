//! Q8_0: 32 weights in 34 bytes, `y = d·q` with `q` signed.
//!
//! Source: ggml-common.h `block_q8_0` (`ggml_half d; int8_t qs[32]`), ggml-quants.c
//! `dequantize_row_q8_0`. Activations: Q8_0 ([`BlockQ8`]); `Σ = d_w·d_x·Σ q_w·q_x` per block
//! (ggml-cpu `ggml_vec_dot_q8_0_q8_0`). The AVX2 tiles and the repacked layout live in
//! [`crate::kernels`].

use super::{blocks, h, Act, ActRow, AffineLayout, Format};
use crate::kernels::cpu::BlockQ8;
use crate::quant::GgmlType;

/// One Q8_0 block.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BlockQ8_0 {
    /// Scale (f16).
    pub d: [u8; 2],
    /// Signed quants (stored as bytes).
    pub qs: [u8; 32],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// The Q8_0 format.
pub struct Q8_0;

impl Format for Q8_0 {
    fn ty(&self) -> GgmlType {
        GgmlType::Q8_0
    }

    fn act(&self) -> Act {
        Act::Q8
    }

    fn affine_layout(&self) -> Option<AffineLayout> {
        Some(AffineLayout { bits: 8, group: 32 })
    }

    fn affine_groups(&self, data: &[u8], group: &mut dyn FnMut(f32, f32, &[i8])) {
        for b in blocks::<BlockQ8_0>(data) {
            group(h(b.d), 0.0, &b.qs.map(|q| q as i8));
        }
    }

    fn dequantize(&self, data: &[u8], out: &mut [f32]) {
        for (b, o) in blocks::<BlockQ8_0>(data)
            .iter()
            .zip(out.chunks_exact_mut(32))
        {
            let d = h(b.d);
            for (o, &q) in o.iter_mut().zip(&b.qs) {
                *o = q as i8 as f32 * d;
            }
        }
    }

    fn dot(&self, row: &[u8], x: ActRow<'_>) -> f32 {
        let ActRow::Q8(x) = x else {
            panic!("Q8_0: Q8_0 activations expected")
        };
        dot_portable(row, x)
    }
}

/// The portable dot product.
pub fn dot_portable(row: &[u8], x: &[BlockQ8]) -> f32 {
    let mut acc = 0.0f32;
    for (b, xb) in blocks::<BlockQ8_0>(row).iter().zip(x) {
        let s: i32 =
            b.qs.iter()
                .zip(&xb.qs)
                .map(|(&w, &a)| w as i8 as i32 * a as i32)
                .sum();
        acc += h(b.d) * xb.d * s as f32;
    }
    acc
}

#[cfg(test)]
mod tests {
    #[test]
    fn dot_matches_reference() {
        super::super::testing::check_dot(crate::quant::GgmlType::Q8_0, 128, &[0]);
    }
}
