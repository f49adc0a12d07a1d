//! Q3_K: 256 weights in 110 bytes — 16 sub-blocks of 16 with signed 6-bit scales,
//! `y = d·(sc − 32)·(q − 4·!hbit)` with 2-bit `q` plus a high bit.
//!
//! Source: ggml-common.h `block_q3_K` (`uint8_t hmask[32]; uint8_t qs[64]; uint8_t
//! scales[12]; ggml_half d`), ggml-quants.c `dequantize_row_q3_K`: scale `i` is
//! `(i < 8 ? s[i] & 0xF : s[i−8] >> 4) | ((s[8 + i%4] >> 2·(i/4)) & 3) << 4`, minus 32; the quant
//! order is Q2_K's, and 4 is subtracted where the `hmask` bit is clear (the mask bit starts at
//! 1 and moves up once per shift, across both halves). The dot product decodes the weights
//! exactly and multiplies them with the Q8_K activations ([`super::dot_dequantized_k`]).

use super::{blocks, h, Act, ActRow, AffineLayout, Format};
use crate::quant::GgmlType;

/// One Q3_K super-block.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BlockQ3K {
    /// High bits of the quants.
    pub hmask: [u8; 32],
    /// Low 2 bits of the quants.
    pub qs: [u8; 64],
    /// 16 scales, 6 bits each.
    pub scales: [u8; 12],
    /// Super-block scale (f16).
    pub d: [u8; 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);

fn scale(s: &[u8; 12], i: usize) -> i32 {
    let low = if i < 8 { s[i] & 0x0f } else { s[i - 8] >> 4 };
    let high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
    (low | (high << 4)) as i32 - 32
}

/// The Q3_K format.
pub struct Q3K;

impl Format for Q3K {
    fn ty(&self) -> GgmlType {
        GgmlType::Q3_K
    }

    fn act(&self) -> Act {
        Act::Q8K
    }

    fn affine_layout(&self) -> Option<AffineLayout> {
        Some(AffineLayout { bits: 4, group: 16 })
    }

    /// Sub-blocks of 16: `dl·(q − 4)` as `dl·q − 4·dl` with `q = lq − hb + 4` in 0..8: both
    /// products exact, and so is their difference.
    fn affine_groups(&self, data: &[u8], group: &mut dyn FnMut(f32, f32, &[i8])) {
        for b in blocks::<BlockQ3K>(data) {
            sub_blocks(b, |dl, qs| group(dl, -4.0 * dl, &qs.map(|q| q + 4)));
        }
    }

    fn dequantize(&self, data: &[u8], out: &mut [f32]) {
        for (b, o) in blocks::<BlockQ3K>(data)
            .iter()
            .zip(out.chunks_exact_mut(256))
        {
            let mut o = o.chunks_exact_mut(16);
            sub_blocks(b, |dl, qs| {
                for (o, &q) in o.next().expect("16 sub-blocks").iter_mut().zip(qs) {
                    *o = dl * q as f32;
                }
            });
        }
    }

    fn dot(&self, row: &[u8], x: ActRow<'_>) -> f32 {
        super::dot_dequantized_k(self, row, x)
    }
}

/// The block's 16 sub-blocks in weight order: scale `dl` and the 16 signed 3-bit quants
/// `lq − hb` (−4..4) of each (ggml-quants.c `dequantize_row_q3_K`).
#[inline]
fn sub_blocks(b: &BlockQ3K, mut f: impl FnMut(f32, &[i8; 16])) {
    let d = h(b.d);
    let (mut is, mut m) = (0, 1u8);
    for n in 0..2 {
        let q = &b.qs[32 * n..32 * n + 32];
        for j in 0..4 {
            for half in 0..2 {
                let dl = d * scale(&b.scales, is) as f32;
                is += 1;
                let qs: [i8; 16] = std::array::from_fn(|l| {
                    let lq = ((q[l + 16 * half] >> (2 * j)) & 3) as i8;
                    let hb = if b.hmask[l + 16 * half] & m != 0 {
                        0
                    } else {
                        4
                    };
                    lq - hb
                });
                f(dl, &qs);
            }
            m <<= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dot_matches_reference() {
        super::super::testing::check_dot(crate::quant::GgmlType::Q3_K, 512, &[108]);
    }
}
