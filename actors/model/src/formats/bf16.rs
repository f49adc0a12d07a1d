//! BF16: bfloat16 (the top half of an f32), little-endian (GGUF `GGML_TYPE_BF16`). Dot
//! products take f32 activations.

use super::{Act, ActRow, Format};
use crate::quant::GgmlType;

/// The BF16 format.
pub struct Bf16Format;

impl Format for Bf16Format {
    fn ty(&self) -> GgmlType {
        GgmlType::BF16
    }

    fn act(&self) -> Act {
        Act::F32
    }

    fn dequantize(&self, data: &[u8], out: &mut [f32]) {
        for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
            *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
        }
    }

    fn dot(&self, row: &[u8], x: ActRow<'_>) -> f32 {
        super::dot_float(self, row, x)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dot_matches_reference() {
        super::super::testing::check_dot(crate::quant::GgmlType::BF16, 96, &[]);
    }
}
