//! The form the GPU kernels (`crate::gpu`) take a weight matrix in: every quantized format as
//! groups of `value = d·q + m` ([`AffineLayout`], each format's
//! [`crate::formats::Format::affine_groups`]), the float formats as dense f32.
//!
//! Quants are packed into u32 words (little-endian bytes), group after group in weight order:
//! - 4 bits: a group of `G` takes `G/2` bytes; byte `j` holds quant `j` (low nibble) and
//!   `j + G/2` (high nibble) — GGUF's own Q4_0/Q4_1 layout for `G = 32`.
//! - 8 bits: one signed byte per quant.
//!
//! `d` and `m` are f32, one each per group. Every value `d·q + m` equals the format's
//! dequantized value exactly (tested below for every format). Bytes per weight on the GPU:
//! `bits/8 + 8/G` (Q4_K 0.75 against GGUF's 0.5625; Q6_K 1.5 against 0.82).

use crate::backend::HostQWeight;
use crate::formats::{self, AffineLayout};
use crate::quant::GgmlType;

/// A weight matrix (`n` rows of `k`) in the GPU kernels' form.
#[derive(Debug, Clone, PartialEq)]
pub enum GpuForm {
    /// Quantized formats: `d`, `m` per group (`n·k/group` each) and the packed quants
    /// (`n·k·bits/32` words).
    Affine {
        /// Bits per quant and weights per group.
        layout: AffineLayout,
        /// Scale per group.
        d: Vec<f32>,
        /// Offset per group.
        m: Vec<f32>,
        /// Packed quants.
        q: Vec<u32>,
    },
    /// Float formats (F32, F16, BF16) decoded to f32, row-major `n × k`.
    Dense(Vec<f32>),
}

/// Converts a GGUF weight matrix to the GPU form.
///
/// # Errors
/// A message naming the type when the engine has no format for it.
pub fn gpu_form(w: &HostQWeight) -> Result<GpuForm, String> {
    let f = formats::format(w.ty).ok_or_else(|| format!("{} weights", w.ty.name()))?;
    let Some(layout) = f.affine_layout() else {
        let mut out = vec![0.0f32; w.n * w.k];
        f.dequantize(w.data(), &mut out);
        return Ok(GpuForm::Dense(out));
    };
    let groups = w.n * w.k / layout.group;
    let mut d = Vec::with_capacity(groups);
    let mut m = Vec::with_capacity(groups);
    let mut bytes = Vec::with_capacity(groups * layout.group * layout.bits as usize / 8);
    f.affine_groups(w.data(), &mut |gd, gm, q| {
        debug_assert_eq!(q.len(), layout.group);
        d.push(gd);
        m.push(gm);
        if layout.bits == 4 {
            let (lo, hi) = q.split_at(q.len() / 2);
            bytes.extend(lo.iter().zip(hi).map(|(&l, &h)| l as u8 | (h as u8) << 4));
        } else {
            bytes.extend(q.iter().map(|&v| v as u8));
        }
    });
    assert_eq!(d.len(), groups, "{}: groups", w.ty.name());
    let q = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(GpuForm::Affine { layout, d, m, q })
}

/// Bytes `n` elements of `ty` take in the GPU form: `n·(bits/8 + 8/group)`, `4n` for the float
/// formats (and for a type without a format, which the GPU refuses at load).
pub fn gpu_bytes(ty: GgmlType, n: u64) -> u64 {
    match formats::format(ty).and_then(|f| f.affine_layout()) {
        Some(l) => n * l.bits as u64 / 8 + n / l.group as u64 * 8,
        None => 4 * n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::testing::random_weights;

    /// Every format's GPU form decodes to exactly its dequantized values (runs without a GPU).
    #[test]
    fn gpu_form_is_exact_for_every_format() {
        use GgmlType::*;
        let (n, k) = (3, 512);
        for ty in [
            F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
        ] {
            let f = formats::format(ty).unwrap();
            let bytes = random_weights(ty, n * k / ty.block_size(), 7);
            let mut want = vec![0.0f32; n * k];
            f.dequantize(&bytes, &mut want);
            let w = HostQWeight::owned(ty, n, k, bytes);
            let form = gpu_form(&w).unwrap();
            let held = match &form {
                GpuForm::Dense(v) => 4 * v.len(),
                GpuForm::Affine { d, m, q, .. } => 4 * (d.len() + m.len() + q.len()),
            };
            assert_eq!(gpu_bytes(ty, (n * k) as u64), held as u64, "{}", ty.name());
            match form {
                GpuForm::Dense(v) => {
                    assert!(f.affine_layout().is_none(), "{}", ty.name());
                    assert_eq!(v, want, "{}", ty.name());
                }
                GpuForm::Affine { layout, d, m, q } => {
                    let g = layout.group;
                    let qb: Vec<u8> = q.iter().flat_map(|w| w.to_le_bytes()).collect();
                    for (i, &wv) in want.iter().enumerate() {
                        let (b, j) = (i / g, i % g);
                        let qv = if layout.bits == 8 {
                            qb[i] as i8 as f32
                        } else {
                            let byte = qb[b * g / 2 + j % (g / 2)];
                            (if j < g / 2 { byte & 0xF } else { byte >> 4 }) as f32
                        };
                        // == (not bits): 0·d may be −0 where d·q + m is +0.
                        assert!(
                            qv * d[b] + m[b] == wv,
                            "{} element {i}: {} vs {wv}",
                            ty.name(),
                            qv * d[b] + m[b]
                        );
                    }
                }
            }
        }
    }
}
