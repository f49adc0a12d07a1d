//! F16: IEEE half floats, little-endian (GGUF `GGML_TYPE_F16`). Dot products take f32
//! activations (ggml converts them to f16 first; here they stay f32, within f16 rounding of it).

use super::{Act, ActRow, Format};
use crate::quant::GgmlType;

/// The F16 format.
pub struct F16Format;

impl Format for F16Format {
    fn ty(&self) -> GgmlType {
        GgmlType::F16
    }

    fn act(&self) -> Act {
        Act::F32
    }

    fn dequantize(&self, data: &[u8], out: &mut [f32]) {
        for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
            *o = super::h([b[0], b[1]]);
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
        super::super::testing::check_dot(crate::quant::GgmlType::F16, 96, &[]);
    }
}
