//! Q4_0: 32 weights in 18 bytes, `y = d·(q − 8)`.
//!
//! Source: ggml-common.h `block_q4_0` (`ggml_half d; uint8_t qs[16]`), ggml-quants.c
//! `dequantize_row_q4_0`: byte `j` holds weight `j` in its low nibble and `j + 16` in its high
//! nibble. Activations: Q8_0 ([`BlockQ8`]); `Σ = d_w·d_x·Σ (q_w − 8)·q_x` per block
//! (ggml-cpu `ggml_vec_dot_q4_0_q8_0`). The AVX2 tiles live in [`crate::kernels::cpu`].

use super::{blocks, h, Act, ActRow, AffineLayout, Format};
use crate::kernels::cpu::BlockQ8;
use crate::quant::GgmlType;

/// One Q4_0 block.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BlockQ4_0 {
    /// Scale (f16).
    pub d: [u8; 2],
    /// Nibbles: weight `j` low, `j + 16` high.
    pub qs: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

/// The Q4_0 format.
pub struct Q4_0;

impl Format for Q4_0 {
    fn ty(&self) -> GgmlType {
        GgmlType::Q4_0
    }

    fn act(&self) -> Act {
        Act::Q8
    }

    fn affine_layout(&self) -> Option<AffineLayout> {
        Some(AffineLayout { bits: 4, group: 32 })
    }

    /// `d·(q − 8)` as `d·q − 8d`: both products exact.
    fn affine_groups(&self, data: &[u8], group: &mut dyn FnMut(f32, f32, &[i8])) {
        for b in blocks::<BlockQ4_0>(data) {
            let d = h(b.d);
            let mut q = [0i8; 32];
            for (j, &v) in b.qs.iter().enumerate() {
                (q[j], q[j + 16]) = ((v & 0x0f) as i8, (v >> 4) as i8);
            }
            group(d, -8.0 * d, &q);
        }
    }

    fn dequantize(&self, data: &[u8], out: &mut [f32]) {
        for (b, o) in blocks::<BlockQ4_0>(data)
            .iter()
            .zip(out.chunks_exact_mut(32))
        {
            let d = h(b.d);
            for (j, &q) in b.qs.iter().enumerate() {
                o[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
                o[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
            }
        }
    }

    fn dot(&self, row: &[u8], x: ActRow<'_>) -> f32 {
        let ActRow::Q8(x) = x else {
            panic!("Q4_0: Q8_0 activations expected")
        };
        dot_portable(row, x)
    }
}

/// The portable dot product (integer sums per block, one scale multiply per block).
pub fn dot_portable(row: &[u8], x: &[BlockQ8]) -> f32 {
    let mut acc = 0.0f32;
    for (b, xb) in blocks::<BlockQ4_0>(row).iter().zip(x) {
        let mut s = 0i32;
        for (j, &q) in b.qs.iter().enumerate() {
            s += ((q & 0x0f) as i32 - 8) * xb.qs[j] as i32;
            s += ((q >> 4) as i32 - 8) * xb.qs[j + 16] as i32;
        }
        acc += h(b.d) * xb.d * s as f32;
    }
    acc
}

#[cfg(test)]
mod tests {
    #[test]
    fn dot_matches_reference() {
        super::super::testing::check_dot(crate::quant::GgmlType::Q4_0, 128, &[0]);
    }
}
