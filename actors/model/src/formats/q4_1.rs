//! Q4_1: 32 weights in 20 bytes, `y = d·q + m`.
//!
//! Source: ggml-common.h `block_q4_1` (`ggml_half d, m; uint8_t qs[16]`), ggml-quants.c
//! `dequantize_row_q4_1`; nibble order as Q4_0. Activations: Q8_1 ([`BlockQ8`] with
//! `s = d·Σq`); `Σ = d_w·d_x·Σ q_w·q_x + m_w·s_x` per block (ggml-cpu `ggml_vec_dot_q4_1_q8_1`).
//! The AVX2 tiles and the repacked layout live in [`crate::kernels`].

use super::{blocks, h, Act, ActRow, AffineLayout, Format};
use crate::kernels::cpu::BlockQ8;
use crate::quant::GgmlType;

/// One Q4_1 block.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BlockQ4_1 {
    /// Scale (f16).
    pub d: [u8; 2],
    /// Minimum (f16).
    pub m: [u8; 2],
    /// Nibbles: weight `j` low, `j + 16` high.
    pub qs: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

/// The Q4_1 format.
pub struct Q4_1;

impl Format for Q4_1 {
    fn ty(&self) -> GgmlType {
        GgmlType::Q4_1
    }

    fn act(&self) -> Act {
        Act::Q8
    }

    fn affine_layout(&self) -> Option<AffineLayout> {
        Some(AffineLayout { bits: 4, group: 32 })
    }

    fn affine_groups(&self, data: &[u8], group: &mut dyn FnMut(f32, f32, &[i8])) {
        for b in blocks::<BlockQ4_1>(data) {
            let mut q = [0i8; 32];
            for (j, &v) in b.qs.iter().enumerate() {
                (q[j], q[j + 16]) = ((v & 0x0f) as i8, (v >> 4) as i8);
            }
            group(h(b.d), h(b.m), &q);
        }
    }

    fn dequantize(&self, data: &[u8], out: &mut [f32]) {
        for (b, o) in blocks::<BlockQ4_1>(data)
            .iter()
            .zip(out.chunks_exact_mut(32))
        {
            let (d, m) = (h(b.d), h(b.m));
            for (j, &q) in b.qs.iter().enumerate() {
                o[j] = (q & 0x0f) as f32 * d + m;
                o[j + 16] = (q >> 4) as f32 * d + m;
            }
        }
    }

    fn dot(&self, row: &[u8], x: ActRow<'_>) -> f32 {
        let ActRow::Q8(x) = x else {
            panic!("Q4_1: Q8_1 activations expected")
        };
        dot_portable(row, x)
    }
}

/// The portable dot product.
pub fn dot_portable(row: &[u8], x: &[BlockQ8]) -> f32 {
    let mut acc = 0.0f32;
    for (b, xb) in blocks::<BlockQ4_1>(row).iter().zip(x) {
        let mut s = 0i32;
        for (j, &q) in b.qs.iter().enumerate() {
            s += (q & 0x0f) as i32 * xb.qs[j] as i32;
            s += (q >> 4) as i32 * xb.qs[j + 16] as i32;
        }
        acc += h(b.d) * xb.d * s as f32 + h(b.m) * xb.s;
    }
    acc
}

#[cfg(test)]
mod tests {
    /// Q4_1's formula uses ggml's f16-rounded `s` for `d·Σq`, so it sits within an f16 ulp
    /// of the reference per block, inside the shared tolerance.
    #[test]
    fn dot_matches_reference() {
        super::super::testing::check_dot(crate::quant::GgmlType::Q4_1, 128, &[0, 2]);
    }
}
