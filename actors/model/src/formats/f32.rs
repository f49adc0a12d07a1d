//! F32: IEEE single floats, little-endian (GGUF `GGML_TYPE_F32`). Dot products take f32
//! activations.

use super::{Act, ActRow, Format};
use crate::quant::GgmlType;

/// The F32 format.
pub struct F32Format;

impl Format for F32Format {
    fn ty(&self) -> GgmlType {
        GgmlType::F32
    }

    fn act(&self) -> Act {
        Act::F32
    }

    fn dequantize(&self, data: &[u8], out: &mut [f32]) {
        for (o, b) in out.iter_mut().zip(data.chunks_exact(4)) {
            *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
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
        super::super::testing::check_dot(crate::quant::GgmlType::F32, 96, &[]);
    }
}
