//! Q8_K: the activation format of the K-quant dot products (never stored in a GGUF).
//!
//! Source: ggml-common.h `block_q8_K` (`float d; int8_t qs[256]; int16_t bsums[16]`) and
//! ggml-quants.c `quantize_row_q8_K_ref`: per 256 values, `max` is the value of largest
//! magnitude (with its sign), `iscale = −127/max`, `q = min(127, nearest_int(iscale·x))`
//! (round half to even), `d = 1/iscale` (so `d` may be negative), `bsums[j] = Σ q[16j..16j+16]`.
//! The `bsums` let a K-quant dot product apply per-sub-block minimums and offsets with 8 or 16
//! multiply-adds per 256 weights instead of one per weight.

use crate::kernels::{pool, SharedMut};

/// Elements per K-quant super-block (`QK_K`).
pub const QK_K: usize = 256;

/// 256 activations quantized to 8 bits (ggml `block_q8_K`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BlockQ8K {
    /// Scale (f32, may be negative).
    pub d: f32,
    /// Quants.
    pub qs: [i8; QK_K],
    /// Sums of each 16 quants.
    pub bsums: [i16; QK_K / 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 4 + QK_K + QK_K / 16 * 2);

impl Default for BlockQ8K {
    fn default() -> Self {
        Self {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
        }
    }
}

/// Quantizes one row (`x.len()` a multiple of 256) into `out`.
pub fn quantize_row_q8_k(x: &[f32], out: &mut [BlockQ8K]) {
    debug_assert_eq!(x.len(), out.len() * QK_K);
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::cpu::has_avx2() {
        // SAFETY: AVX2 and FMA are present (checked at run time).
        return unsafe { quantize_row_q8_k_avx2(x, out) };
    }
    quantize_row_q8_k_body(x, out)
}

/// The same code compiled for AVX2, where rounding is one instruction (`vroundps`) instead of a
/// `rintf` call; the results are the same.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_row_q8_k_avx2(x: &[f32], out: &mut [BlockQ8K]) {
    quantize_row_q8_k_body(x, out)
}

#[inline(always)]
fn quantize_row_q8_k_body(x: &[f32], out: &mut [BlockQ8K]) {
    for (blk, o) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in blk {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            *o = BlockQ8K::default();
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in o.qs.iter_mut().zip(blk) {
            *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
        }
        for (j, s) in o.bsums.iter_mut().enumerate() {
            *s = o.qs[16 * j..16 * (j + 1)].iter().map(|&q| q as i16).sum();
        }
        o.d = 1.0 / iscale;
    }
}

/// Quantizes `m` rows of `k` activations each (`k` a multiple of 256).
pub fn quantize_q8_k(x: &[f32], k: usize) -> Vec<BlockQ8K> {
    assert!(
        k.is_multiple_of(QK_K),
        "Q8_K: {k} is not a multiple of {QK_K}"
    );
    let nb = k / QK_K;
    let m = x.len() / k;
    let mut out = vec![BlockQ8K::default(); m * nb];
    if m >= 8 {
        let ptr = SharedMut::new(&mut out);
        pool::global().run(m, &|t| {
            // SAFETY: task t writes row t's blocks only.
            let o = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(t * nb), nb) };
            quantize_row_q8_k(&x[t * k..(t + 1) * k], o);
        });
    } else {
        for (o, row) in out.chunks_mut(nb).zip(x.chunks(k)) {
            quantize_row_q8_k(row, o);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantization_follows_ggml() {
        let x: Vec<f32> = (0..256).map(|i| (i as f32 - 100.0) / 10.0).collect();
        let q = quantize_q8_k(&x, 256);
        // The largest magnitude is +15.5: iscale = −127/15.5, so it maps to −127 and d < 0.
        assert_eq!(q[0].qs[255], -127);
        assert!(q[0].d < 0.0);
        for (i, &v) in x.iter().enumerate() {
            assert!((q[0].qs[i] as f32 * q[0].d - v).abs() <= q[0].d.abs() * 0.5 + 1e-6);
        }
        for j in 0..16 {
            let s: i32 = q[0].qs[16 * j..16 * j + 16].iter().map(|&v| v as i32).sum();
            assert_eq!(q[0].bsums[j] as i32, s);
        }
        let z = quantize_q8_k(&[0.0; 256], 256);
        assert_eq!((z[0].d, z[0].qs[0]), (0.0, 0));
    }
}
