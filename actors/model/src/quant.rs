//! ggml tensor types (ids, names, block sizes — ggml/src/ggml-common.h, ggml.c
//! `type_traits`), dequantization through [`crate::formats`], and ggml's reference quantizers
//! for the 32-element formats (for tests and tools; the engine reads weights already
//! quantized).

use half::f16;

/// A ggml tensor type (`enum ggml_type`), with the ids the GGUF tensor-info table uses.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// IEEE f32.
    F32,
    /// IEEE half.
    F16,
    /// 4-bit, scale only (18 bytes / 32).
    Q4_0,
    /// 4-bit, scale and minimum (20 bytes / 32).
    Q4_1,
    /// 5-bit, scale only.
    Q5_0,
    /// 5-bit, scale and minimum.
    Q5_1,
    /// 8-bit, scale only (34 bytes / 32).
    Q8_0,
    /// 8-bit with scale and sum (activations).
    Q8_1,
    /// k-quant, 2-bit super-blocks of 256.
    Q2_K,
    /// k-quant, 3-bit.
    Q3_K,
    /// k-quant, 4-bit.
    Q4_K,
    /// k-quant, 5-bit.
    Q5_K,
    /// k-quant, 6-bit.
    Q6_K,
    /// k-quant, 8-bit (activations).
    Q8_K,
    /// Signed 8-bit integer.
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// IEEE f64.
    F64,
    /// bfloat16.
    BF16,
}

impl GgmlType {
    /// The type of a `ggml_type` id, or `None` for ids this reader does not know.
    pub fn from_id(id: u32) -> Option<Self> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            30 => BF16,
            _ => return None,
        })
    }

    /// The `ggml_type` id.
    pub fn id(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2_K => 10,
            Q3_K => 11,
            Q4_K => 12,
            Q5_K => 13,
            Q6_K => 14,
            Q8_K => 15,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            BF16 => 30,
        }
    }

    /// ggml's name of the type (`Q4_1`, `F16`, …).
    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2_K => "Q2_K",
            Q3_K => "Q3_K",
            Q4_K => "Q4_K",
            Q5_K => "Q5_K",
            Q6_K => "Q6_K",
            Q8_K => "Q8_K",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            BF16 => "BF16",
        }
    }

    /// Elements per block (`ggml_blck_size`).
    pub fn block_size(self) -> usize {
        use GgmlType::*;
        match self {
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 => 32,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K => 256,
            F32 | F16 | I8 | I16 | I32 | I64 | F64 | BF16 => 1,
        }
    }

    /// Bytes per block (`ggml_type_size`).
    pub fn block_bytes(self) -> usize {
        use GgmlType::*;
        match self {
            F32 | I32 => 4,
            F16 | BF16 | I16 => 2,
            I8 => 1,
            I64 | F64 => 8,
            Q4_0 => 18,
            Q4_1 => 20,
            Q5_0 => 22,
            Q5_1 => 24,
            Q8_0 => 34,
            Q8_1 => 36,
            Q2_K => 84,
            Q3_K => 110,
            Q4_K => 144,
            Q5_K => 176,
            Q6_K => 210,
            Q8_K => 292,
        }
    }

    /// Whether this engine can decode the type to floats ([`dequantize`]).
    pub fn can_dequantize(self) -> bool {
        crate::formats::format(self).is_some()
    }

    /// Whether the fused matmul kernels take weights of this type ([`crate::formats`]).
    pub fn is_matmul_weight(self) -> bool {
        crate::formats::format(self).is_some()
    }
}

/// Decodes `n` elements of type `ty` from `data` into f32, appending to `out`
/// ([`crate::formats::Format::dequantize`]).
///
/// # Panics
/// If `ty` cannot be dequantized ([`GgmlType::can_dequantize`]) or `data` is shorter than
/// `n` elements need; callers check both (the GGUF reader validates sizes).
pub fn dequantize(ty: GgmlType, data: &[u8], n: usize, out: &mut Vec<f32>) {
    let f = crate::formats::format(ty)
        .unwrap_or_else(|| panic!("dequantize: {} not supported", ty.name()));
    assert_eq!(
        n % ty.block_size(),
        0,
        "dequantize: {n} is not a whole number of blocks"
    );
    let n_blocks = n / ty.block_size();
    let at = out.len();
    out.resize(at + n, 0.0);
    f.dequantize(&data[..n_blocks * ty.block_bytes()], &mut out[at..]);
}

/// Encodes f32 values as Q4_1 blocks exactly as ggml's `quantize_row_q4_1_ref` does
/// (for tests and tools; the engine reads weights already quantized).
pub fn quantize_q4_1(x: &[f32]) -> Vec<u8> {
    assert_eq!(x.len() % 32, 0);
    let mut out = Vec::with_capacity(x.len() / 32 * 20);
    for blk in x.chunks_exact(32) {
        let min = blk.iter().copied().fold(f32::INFINITY, f32::min);
        let max = blk.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(f16::from_f32(d).to_le_bytes());
        out.extend(f16::from_f32(min).to_le_bytes());
        for j in 0..16 {
            let q0 = (((blk[j] - min) * id + 0.5) as u8).min(15);
            let q1 = (((blk[j + 16] - min) * id + 0.5) as u8).min(15);
            out.push(q0 | (q1 << 4));
        }
    }
    out
}

/// Encodes f32 values as Q4_0 blocks as ggml's `quantize_row_q4_0_ref` does.
pub fn quantize_q4_0(x: &[f32]) -> Vec<u8> {
    assert_eq!(x.len() % 32, 0);
    let mut out = Vec::with_capacity(x.len() / 32 * 18);
    for blk in x.chunks_exact(32) {
        // The value of largest magnitude, with its sign, maps to -8.
        let max = blk
            .iter()
            .copied()
            .fold(0.0f32, |a, v| if v.abs() > a.abs() { v } else { a });
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(f16::from_f32(d).to_le_bytes());
        for j in 0..16 {
            let q0 = ((blk[j] * id + 8.5) as u8).min(15);
            let q1 = ((blk[j + 16] * id + 8.5) as u8).min(15);
            out.push(q0 | (q1 << 4));
        }
    }
    out
}

/// Encodes f32 values as Q8_0 blocks as ggml's `quantize_row_q8_0_ref` does.
pub fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
    assert_eq!(x.len() % 32, 0);
    let mut out = Vec::with_capacity(x.len() / 32 * 34);
    for blk in x.chunks_exact(32) {
        let amax = blk.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(f16::from_f32(d).to_le_bytes());
        out.extend(blk.iter().map(|&v| (v * id).round() as i8 as u8));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q4_0_hand_built_block() {
        // d = 0.5; byte j = (lo = j, hi = 15 - j)
        let mut b = h(0.5).to_vec();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut out = Vec::new();
        dequantize(GgmlType::Q4_0, &b, 32, &mut out);
        for j in 0..16 {
            assert_eq!(out[j], (j as f32 - 8.0) * 0.5);
            assert_eq!(out[j + 16], ((15 - j) as f32 - 8.0) * 0.5);
        }
    }

    #[test]
    fn q4_1_hand_built_block() {
        // d = 0.25, m = -1.0; byte j = (lo = j, hi = 15 - j)
        let mut b = h(0.25).to_vec();
        b.extend(h(-1.0));
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut out = Vec::new();
        dequantize(GgmlType::Q4_1, &b, 32, &mut out);
        for j in 0..16 {
            assert_eq!(out[j], j as f32 * 0.25 - 1.0);
            assert_eq!(out[j + 16], (15 - j) as f32 * 0.25 - 1.0);
        }
    }

    #[test]
    fn q8_0_hand_built_block() {
        let mut b = h(2.0).to_vec();
        b.extend((0..32i32).map(|j| (j - 16) as i8 as u8));
        let mut out = Vec::new();
        dequantize(GgmlType::Q8_0, &b, 32, &mut out);
        for (j, v) in out.iter().enumerate() {
            assert_eq!(*v, (j as f32 - 16.0) * 2.0);
        }
    }

    #[test]
    fn f16_and_f32() {
        let mut out = Vec::new();
        let b: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| h(*v)).collect();
        dequantize(GgmlType::F16, &b, 2, &mut out);
        let b: Vec<u8> = [3.25f32, 7.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        dequantize(GgmlType::F32, &b, 2, &mut out);
        assert_eq!(out, vec![1.5, -2.0, 3.25, 7.0]);
    }

    #[test]
    fn quantizers_round_trip_within_half_a_step() {
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 64) as f32 - 31.0) / 7.0)
            .collect();
        for (ty, bytes) in [
            (GgmlType::Q4_0, quantize_q4_0(&x)),
            (GgmlType::Q4_1, quantize_q4_1(&x)),
            (GgmlType::Q8_0, quantize_q8_0(&x)),
        ] {
            assert_eq!(bytes.len(), 2 * ty.block_bytes());
            let mut y = Vec::new();
            dequantize(ty, &bytes, 64, &mut y);
            let amax = 32.0 / 7.0;
            // Q4_0 maps the largest magnitude to -8, so the other side clamps at +7: one step.
            let tol = match ty {
                GgmlType::Q8_0 => amax / 127.0 * 0.51,
                GgmlType::Q4_1 => 2.0 * amax / 15.0 * 0.51,
                _ => amax / 8.0 * 1.01,
            };
            for (a, b) in x.iter().zip(&y) {
                assert!((a - b).abs() <= tol + 1e-3, "{}: {a} vs {b}", ty.name());
            }
        }
    }

    #[test]
    fn ids_round_trip() {
        for id in 0..40 {
            if let Some(t) = GgmlType::from_id(id) {
                assert_eq!(t.id(), id);
            }
        }
        assert_eq!(GgmlType::from_id(4), None); // Q4_2, removed from ggml
    }
}
