//! Q2_K: 256 weights in 84 bytes — 16 sub-blocks of 16 with 4-bit scales and minimums,
//! `y = d·(sc & 0xF)·q − dmin·(sc >> 4)` with 2-bit `q`.
//!
//! Source: ggml-common.h `block_q2_K` (`uint8_t scales[16]; uint8_t qs[64]; ggml_half d,
//! dmin`), ggml-quants.c `dequantize_row_q2_K`: two halves of 128 weights (`qs += 32`); in each,
//! for shift `2j` (`j < 4`), 16 weights `(qs[l] >> 2j) & 3` then 16 weights
//! `(qs[l+16] >> 2j) & 3`, each run taking the next scale byte. The dot product decodes the
//! weights exactly and multiplies them with the Q8_K activations ([`super::dot_dequantized_k`]).

use super::{blocks, h, Act, ActRow, AffineLayout, Format};
use crate::quant::GgmlType;

/// One Q2_K super-block.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BlockQ2K {
    /// Scale (low nibble) and minimum (high nibble) of each sub-block.
    pub scales: [u8; 16],
    /// 2-bit quants.
    pub qs: [u8; 64],
    /// Super-block scale (f16).
    pub d: [u8; 2],
    /// Super-block minimum scale (f16).
    pub dmin: [u8; 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84);

/// The Q2_K format.
pub struct Q2K;

impl Format for Q2K {
    fn ty(&self) -> GgmlType {
        GgmlType::Q2_K
    }

    fn act(&self) -> Act {
        Act::Q8K
    }

    fn affine_layout(&self) -> Option<AffineLayout> {
        Some(AffineLayout { bits: 4, group: 16 })
    }

    /// Sub-blocks of 16: `d·sc·q − dmin·m`, the 2-bit `q` in the 4-bit container.
    fn affine_groups(&self, data: &[u8], group: &mut dyn FnMut(f32, f32, &[i8])) {
        for b in blocks::<BlockQ2K>(data) {
            sub_blocks(b, |dl, ml, qs| group(dl, -ml, qs));
        }
    }

    fn dequantize(&self, data: &[u8], out: &mut [f32]) {
        for (b, o) in blocks::<BlockQ2K>(data)
            .iter()
            .zip(out.chunks_exact_mut(256))
        {
            let mut o = o.chunks_exact_mut(16);
            sub_blocks(b, |dl, ml, qs| {
                for (o, &q) in o.next().expect("16 sub-blocks").iter_mut().zip(qs) {
                    *o = dl * q as f32 - ml;
                }
            });
        }
    }

    fn dot(&self, row: &[u8], x: ActRow<'_>) -> f32 {
        super::dot_dequantized_k(self, row, x)
    }
}

/// The block's 16 sub-blocks in weight order: scale `d·sc`, minimum `dmin·m` and the 16 2-bit
/// quants of each (ggml-quants.c `dequantize_row_q2_K`).
#[inline]
fn sub_blocks(b: &BlockQ2K, mut f: impl FnMut(f32, f32, &[i8; 16])) {
    let (d, dmin) = (h(b.d), h(b.dmin));
    let mut is = 0;
    for n in 0..2 {
        let q = &b.qs[32 * n..32 * n + 32];
        for j in 0..4 {
            for half in 0..2 {
                let sc = b.scales[is];
                is += 1;
                let qs: [i8; 16] =
                    std::array::from_fn(|l| ((q[l + 16 * half] >> (2 * j)) & 3) as i8);
                f(d * (sc & 0x0f) as f32, dmin * (sc >> 4) as f32, &qs);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dot_matches_reference() {
        super::super::testing::check_dot(crate::quant::GgmlType::Q2_K, 512, &[80, 82]);
    }
}
