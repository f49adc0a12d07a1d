//! RMSNorm on the CPU, row by row in a fixed order.
//!
//! `y = x / sqrt(mean(x²) + ε) · γ` over each row of `[rows, d]` (ggml `rms_norm` then `mul`).
//! The sum of squares is taken with eight interleaved partial sums (lane `j` adds elements
//! `j, j + 8, j + 16, …`) combined as `((s0+s4)+(s2+s6)) + ((s1+s5)+(s3+s7))`, then the tail —
//! written out in scalar Rust, which the compiler may vectorize but never reassociates. So a
//! row's result depends only on that row: the same in a batch as alone, in a prefill chunk as
//! in the whole prompt, and the same on every x86 or ARM CPU whatever its vector width (Burn's
//! own reductions pick their lane count, and with it their summation order, at run time).

/// Normalizes each row of `x` (`rows × d`, row-major) into `out`, scaled by `weight` (`d`).
///
/// # Panics
/// If the lengths disagree.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    assert!(
        d > 0 && x.len().is_multiple_of(d) && out.len() == x.len(),
        "rms_norm: shapes"
    );
    for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let inv = 1.0 / (sum_squares(row) / d as f32 + eps).sqrt();
        for ((o, &v), &w) in o.iter_mut().zip(row).zip(weight) {
            *o = v * inv * w;
        }
    }
}

/// `Σ v²` of one row in the fixed order of the module docs.
#[inline]
fn sum_squares(row: &[f32]) -> f32 {
    let mut s = [0.0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for j in 0..8 {
            s[j] += c[j] * c[j];
        }
    }
    ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7])) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_f64_and_rows_are_independent() {
        let d = 576 + 3;
        let x: Vec<f32> = (0..5 * d)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 97.0)
            .collect();
        let w: Vec<f32> = (0..d).map(|i| 0.5 + (i % 7) as f32 / 10.0).collect();
        let mut all = vec![0.0; x.len()];
        rms_norm(&x, &w, 1e-5, &mut all);
        for r in 0..5 {
            let row = &x[r * d..(r + 1) * d];
            let mut alone = vec![0.0; d];
            rms_norm(row, &w, 1e-5, &mut alone);
            assert!(alone
                .iter()
                .zip(&all[r * d..(r + 1) * d])
                .all(|(a, b)| a.to_bits() == b.to_bits()));
            let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / d as f64;
            let inv = 1.0 / (ms + 1e-5).sqrt();
            for j in 0..d {
                let want = row[j] as f64 * inv * w[j] as f64;
                assert!((alone[j] as f64 - want).abs() < 1e-5 * (1.0 + want.abs()));
            }
        }
    }
}
