//! The affine form of GGUF blocks used by the GPU kernels: `value = q · d + m`, `q` unsigned.
//!
//! Q4_1 is already affine; Q4_0 becomes `m = −8·d`; Q8_0 becomes `q + 128` with `m = −128·d`.
//! Every conversion is exact in f32 (small integers times an f16 scale).

use crate::backend::HostQWeight;
use crate::quant::{f16_at, GgmlType};

/// Converts GGUF blocks to `(d, m, packed quants, bits)` in the affine form.
pub fn affine_form(w: &HostQWeight) -> (Vec<f32>, Vec<f32>, Vec<u32>, u32) {
    let bb = w.ty.block_bytes();
    let n_blocks = w.n * w.k / 32;
    let mut d = Vec::with_capacity(n_blocks);
    let mut m = Vec::with_capacity(n_blocks);
    let bits = if w.ty == GgmlType::Q8_0 { 8 } else { 4 };
    let mut bytes: Vec<u8> = Vec::with_capacity(n_blocks * bits as usize * 4);
    for b in w.data().chunks_exact(bb) {
        let scale = f16_at(b, 0);
        d.push(scale);
        match w.ty {
            GgmlType::Q4_1 => {
                m.push(f16_at(b, 2));
                bytes.extend_from_slice(&b[4..20]);
            }
            GgmlType::Q4_0 => {
                m.push(-8.0 * scale);
                bytes.extend_from_slice(&b[2..18]);
            }
            GgmlType::Q8_0 => {
                m.push(-128.0 * scale);
                bytes.extend(b[2..34].iter().map(|&q| (q as i8 as i16 + 128) as u8));
            }
            other => panic!("affine_form: {} is not a matmul weight type", other.name()),
        }
    }
    let q = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (d, m, q, bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::HostQWeight;
    use crate::quant::{dequantize, quantize_q4_0, quantize_q4_1, quantize_q8_0, GgmlType};

    /// The affine form decodes to exactly the GGUF values (runs without a GPU).
    #[test]
    fn affine_form_is_exact() {
        let (n, k) = (3, 64);
        let x: Vec<f32> = (0..n * k)
            .map(|i| ((i * 31 % 57) as f32 - 28.0) / 9.0)
            .collect();
        for (ty, bytes) in [
            (GgmlType::Q4_0, quantize_q4_0(&x)),
            (GgmlType::Q4_1, quantize_q4_1(&x)),
            (GgmlType::Q8_0, quantize_q8_0(&x)),
        ] {
            let w = HostQWeight::owned(ty, n, k, bytes.clone());
            let (d, m, q, bits) = affine_form(&w);
            let mut want = Vec::new();
            dequantize(ty, &bytes, n * k, &mut want);
            let qbytes: Vec<u8> = q.iter().flat_map(|w| w.to_le_bytes()).collect();
            for (i, &wv) in want.iter().enumerate() {
                let (b, j) = (i / 32, i % 32);
                let qv = if bits == 8 {
                    qbytes[b * 32 + j] as f32
                } else {
                    let byte = qbytes[b * 16 + j % 16];
                    (if j < 16 { byte & 0xF } else { byte >> 4 }) as f32
                };
                assert_eq!(qv * d[b] + m[b], wv, "{} element {i}", ty.name());
            }
        }
    }
}
