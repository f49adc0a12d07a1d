//! Decode-step attention on the CPU, reading the KV cache in place.
//!
//! For one new token: `out[h] = Σ_j softmax_j(q[h]·k[g(h)][j] / √d) · v[g(h)][j]` over cached
//! positions `j < t`, where query head `h` uses KV head `g(h) = h / (n_head / n_head_kv)` (GQA,
//! ggml's broadcast rule). Scores are f32 and the softmax subtracts the maximum, as ggml's
//! `soft_max` does.

/// `q`: `[n_head, d]`; `k`, `v`: `[n_head_kv, capacity, d]`; returns `[n_head, d]`.
pub fn attention_decode(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n_head: usize,
    n_head_kv: usize,
    capacity: usize,
    t: usize,
) -> Vec<f32> {
    let d = q.len() / n_head;
    assert_eq!(q.len(), n_head * d);
    assert!(
        k.len() >= n_head_kv * capacity * d
            && v.len() >= n_head_kv * capacity * d
            && t <= capacity
            && t > 0
    );
    let mut out = vec![0.0f32; n_head * d];
    #[cfg(target_arch = "x86_64")]
    if super::cpu::has_avx2() {
        // SAFETY: AVX2 and FMA are present (checked at run time).
        unsafe { decode_avx2(q, k, v, n_head, n_head_kv, capacity, t, &mut out) };
        return out;
    }
    decode_body(q, k, v, n_head, n_head_kv, capacity, t, &mut out);
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn decode_avx2(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    nh: usize,
    nkv: usize,
    cap: usize,
    t: usize,
    out: &mut [f32],
) {
    decode_body(q, k, v, nh, nkv, cap, t, out)
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent lanes so the compiler vectorizes without reassociation.
    let mut acc = [0.0f32; 8];
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] = ca[i].mul_add(cb[i], acc[i]);
        }
    }
    let mut s: f32 = acc.iter().sum();
    let tail = a.len() / 8 * 8;
    for i in tail..a.len() {
        s += a[i] * b[i];
    }
    s
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn decode_body(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    nh: usize,
    nkv: usize,
    cap: usize,
    t: usize,
    out: &mut [f32],
) {
    let d = q.len() / nh;
    let group = nh / nkv;
    let scale = 1.0 / (d as f32).sqrt();
    let mut scores = vec![0.0f32; t];
    for h in 0..nh {
        let g = h / group;
        let qh = &q[h * d..(h + 1) * d];
        let kh = &k[g * cap * d..];
        let vh = &v[g * cap * d..];
        let mut max = f32::NEG_INFINITY;
        for (j, s) in scores.iter_mut().enumerate() {
            *s = dot(qh, &kh[j * d..(j + 1) * d]) * scale;
            max = max.max(*s);
        }
        let mut sum = 0.0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        let inv = 1.0 / sum;
        let o = &mut out[h * d..(h + 1) * d];
        for (j, &p) in scores.iter().enumerate() {
            let w = p * inv;
            for (oi, &vi) in o.iter_mut().zip(&vh[j * d..(j + 1) * d]) {
                *oi = w.mul_add(vi, *oi);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_gqa_reference() {
        let (nh, nkv, cap, t, d) = (6, 2, 10, 7, 16);
        let f = |i: usize| ((i * 7919 % 97) as f32 - 48.0) / 40.0;
        let q: Vec<f32> = (0..nh * d).map(f).collect();
        let k: Vec<f32> = (0..nkv * cap * d).map(|i| f(i + 13)).collect();
        let v: Vec<f32> = (0..nkv * cap * d).map(|i| f(i + 29)).collect();
        let got = attention_decode(&q, &k, &v, nh, nkv, cap, t);
        for h in 0..nh {
            let g = h / (nh / nkv);
            let s: Vec<f64> = (0..t)
                .map(|j| {
                    (0..d)
                        .map(|i| q[h * d + i] as f64 * k[(g * cap + j) * d + i] as f64)
                        .sum::<f64>()
                        / (d as f64).sqrt()
                })
                .collect();
            let m = s.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
            for i in 0..d {
                let want: f64 = (0..t)
                    .map(|j| (s[j] - m).exp() / z * v[(g * cap + j) * d + i] as f64)
                    .sum();
                assert!(
                    (got[h * d + i] as f64 - want).abs() < 1e-5,
                    "h{h} i{i}: {} vs {want}",
                    got[h * d + i]
                );
            }
        }
    }
}
