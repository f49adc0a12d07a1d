//! Causal attention over the KV cache on the CPU, reading the cache in place.
//!
//! For query `i` of `m` new tokens at positions `pos..pos + m`:
//! `out[i][h] = Σ_{j ≤ pos+i} softmax_j(q[i][h]·k[g(h)][j] / √d) · v[g(h)][j]`, where query head
//! `h` reads KV head `g(h) = h / (n_head / n_head_kv)` (GQA, ggml's broadcast rule). Scores are
//! f32; the softmax subtracts the row maximum as ggml's `soft_max` does. Work is split over
//! (head, query chunk) tasks on the kernel pool.

use super::{pool, SharedMut};

/// Shapes of one call.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    /// New tokens (query rows).
    pub m: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// Positions the cache holds (its second dimension).
    pub capacity: usize,
    /// Position of the first new token; the cache is filled up to `pos + m`.
    pub pos: usize,
}

/// `q`: `[m, n_head, d]`; `k`, `v`: `[n_head_kv, capacity, d]`; returns `[m, n_head, d]`.
///
/// # Panics
/// If the slices are shorter than the shapes say or `pos + m > capacity`.
pub fn attention_cached(q: &[f32], k: &[f32], v: &[f32], s: AttnShape) -> Vec<f32> {
    let AttnShape {
        m,
        n_head: nh,
        n_head_kv: nkv,
        head_dim: d,
        capacity: cap,
        pos,
    } = s;
    assert_eq!(q.len(), m * nh * d, "attention: q shape");
    assert!(
        nkv > 0 && nh % nkv == 0 && pos + m <= cap,
        "attention: {s:?}"
    );
    assert!(
        k.len() >= nkv * cap * d && v.len() >= nkv * cap * d,
        "attention: cache shape"
    );
    let mut out = vec![0.0f32; m * nh * d];
    // Tasks: heads × chunks of queries; small problems run inline.
    let chunk = 16usize;
    let chunks = m.div_ceil(chunk);
    let work = m * (pos + m) * nh;
    let optr = SharedMut::new(&mut out);
    let task = |i: usize| {
        let (h, c) = (i / chunks, i % chunks);
        let rows = c * chunk..((c + 1) * chunk).min(m);
        // SAFETY: task (h, c) writes rows `rows` of head h only.
        unsafe { head_rows(q, k, v, s, h, rows, optr.get()) };
    };
    if work < 1 << 15 {
        (0..nh * chunks).for_each(task);
    } else {
        pool::global().run(nh * chunks, &task);
    }
    out
}

/// # Safety
/// `out` holds `m · n_head · d` floats; no other task writes head `h` of `rows`.
unsafe fn head_rows(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: AttnShape,
    h: usize,
    rows: std::ops::Range<usize>,
    out: *mut f32,
) {
    #[cfg(target_arch = "x86_64")]
    if super::cpu::has_avx2() {
        return head_rows_avx2(q, k, v, s, h, rows, out);
    }
    head_rows_body(q, k, v, s, h, rows, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn head_rows_avx2(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: AttnShape,
    h: usize,
    rows: std::ops::Range<usize>,
    out: *mut f32,
) {
    head_rows_body(q, k, v, s, h, rows, out)
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent lanes so the compiler vectorizes without reassociation.
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] = ca[i].mul_add(cb[i], acc[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `e^x` for `x ≤ 0` (softmax after max subtraction): Cody–Waite range reduction and a
/// degree-6 polynomial, relative error < 2e-7; branch-free so loops over it vectorize.
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    let x = x.max(-87.0);
    let n = (x * std::f32::consts::LOG2_E).round();
    let r = n.mul_add(-0.693_145_75, x);
    let r = n.mul_add(-1.428_606_8e-6, r);
    let p = 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[inline(always)]
unsafe fn head_rows_body(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: AttnShape,
    h: usize,
    rows: std::ops::Range<usize>,
    out: *mut f32,
) {
    let (nh, d, cap) = (s.n_head, s.head_dim, s.capacity);
    let g = h / (nh / s.n_head_kv);
    let scale = 1.0 / (d as f32).sqrt();
    let kh = &k[g * cap * d..(g + 1) * cap * d];
    let vh = &v[g * cap * d..(g + 1) * cap * d];
    let mut scores = vec![0.0f32; s.pos + rows.end];
    for i in rows {
        let t = s.pos + i + 1; // causal: keys 0..=pos+i
        let qh = &q[(i * nh + h) * d..(i * nh + h + 1) * d];
        let sc = &mut scores[..t];
        let mut max = f32::NEG_INFINITY;
        for (j, x) in sc.iter_mut().enumerate() {
            *x = dot(qh, &kh[j * d..(j + 1) * d]) * scale;
            max = max.max(*x);
        }
        let mut sum = 0.0f32;
        for x in sc.iter_mut() {
            *x = exp_neg(*x - max);
            sum += *x;
        }
        let inv = 1.0 / sum;
        let o = std::slice::from_raw_parts_mut(out.add((i * nh + h) * d), d);
        o.fill(0.0);
        for (j, &p) in sc.iter().enumerate() {
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

    fn reference(q: &[f32], k: &[f32], v: &[f32], s: AttnShape) -> Vec<f64> {
        let (nh, d, cap) = (s.n_head, s.head_dim, s.capacity);
        let mut out = vec![0.0f64; s.m * nh * d];
        for i in 0..s.m {
            for h in 0..nh {
                let g = h / (nh / s.n_head_kv);
                let t = s.pos + i + 1;
                let sc: Vec<f64> = (0..t)
                    .map(|j| {
                        (0..d)
                            .map(|e| {
                                q[(i * nh + h) * d + e] as f64 * k[(g * cap + j) * d + e] as f64
                            })
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let mx = sc.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = sc.iter().map(|x| (x - mx).exp()).sum();
                for e in 0..d {
                    out[(i * nh + h) * d + e] = (0..t)
                        .map(|j| (sc[j] - mx).exp() / z * v[(g * cap + j) * d + e] as f64)
                        .sum();
                }
            }
        }
        out
    }

    #[test]
    fn matches_f64_causal_gqa_reference() {
        let f = |i: usize| ((i * 7919 % 97) as f32 - 48.0) / 40.0;
        // Decode (m = 1), a prefill from empty, a continued prefill, and one big enough for the pool.
        for (m, pos, cap) in [(1, 6, 10), (5, 0, 8), (4, 3, 9), (40, 30, 80)] {
            let s = AttnShape {
                m,
                n_head: 6,
                n_head_kv: 2,
                head_dim: 16,
                capacity: cap,
                pos,
            };
            let q: Vec<f32> = (0..m * 6 * 16).map(f).collect();
            let k: Vec<f32> = (0..2 * cap * 16).map(|i| f(i + 13)).collect();
            let v: Vec<f32> = (0..2 * cap * 16).map(|i| f(i + 29)).collect();
            let got = attention_cached(&q, &k, &v, s);
            let want = reference(&q, &k, &v, s);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (*g as f64 - w).abs() < 1e-5,
                    "m{m} pos{pos} [{i}]: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn exp_neg_is_accurate() {
        for i in 0..=1740 {
            let x = -(i as f32) * 0.05; // down to -87, the clamp
            let (got, want) = (exp_neg(x) as f64, (x as f64).exp());
            assert!((got - want).abs() <= want * 3e-7, "{x}: {got} vs {want}");
        }
        // Below the clamp the result is negligible next to the row maximum's weight of 1.
        assert!(exp_neg(-1000.0) < 2e-38 && exp_neg(-1000.0) >= 0.0);
    }
}
