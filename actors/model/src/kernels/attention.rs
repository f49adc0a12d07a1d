//! Causal attention over the KV cache on the CPU, reading the cache in place.
//!
//! For query `i` of `m` new tokens at positions `pos..pos + m`:
//! `out[i][h] = Σ_{j ≤ pos+i} softmax_j(q[i][h]·k[g(h)][j] / √d) · v[g(h)][j]`, where query head
//! `h` reads KV head `g(h) = h / (n_head / n_head_kv)` (GQA, ggml's broadcast rule). Scores are
//! f32; the softmax subtracts the row maximum as ggml's `soft_max` does. With a sliding window
//! of `w` positions (Gemma-3's SWA layers, `n_swa`), query `p` sees keys `p − w < j ≤ p` only
//! (llama.cpp `llama_hparams::is_masked_swa`). One call serves all of a step's sequences
//! ([`attention_batch`]); work is split over (sequence, KV head, query chunk) tasks on the
//! kernel pool.
//!
//! The cache is f32 or f16 ([`KvElem`]). Over an f16 cache the kernel computes what llama.cpp's
//! CPU attention without flash attention computes (`build_attn_mha`: `kq = mul_mat(k, q)`,
//! `soft_max_ext`, `kqv = mul_mat(v, kq)`): ggml's `vec_dot_f16` converts the other operand to
//! f16 first, so the query row and the normalized softmax weights are rounded to f16 before
//! their dot products, which accumulate in f32.

use std::borrow::Cow;

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::{pool, SharedMut};

/// An element type of the KV cache.
pub trait KvElem: Copy + Send + Sync + 'static {
    /// Whether the cache is f16 (the query and the weights are rounded to f16 as well).
    const HALF: bool;

    /// The values as f32 (borrowed when they already are).
    fn f32_rows(src: &[Self]) -> Cow<'_, [f32]>;
}

impl KvElem for f32 {
    const HALF: bool = false;

    fn f32_rows(src: &[f32]) -> Cow<'_, [f32]> {
        Cow::Borrowed(src)
    }
}

impl KvElem for f16 {
    const HALF: bool = true;

    fn f32_rows(src: &[f16]) -> Cow<'_, [f32]> {
        Cow::Owned(src.to_f32_vec())
    }
}

/// `x` rounded to the nearest f16 (ties to even), as f32.
#[inline(always)]
fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

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
    /// Sliding window in positions (`n_swa`); 0: every earlier position is seen.
    pub window: usize,
    /// Score scale (`1/√head_dim` unless the architecture says otherwise).
    pub scale: f32,
}

/// `q`: `[m, n_head, d]`; `k`, `v`: `[n_head_kv, capacity, d]`; returns `[m, n_head, d]`
/// ([`attention_batch`] of one sequence).
///
/// # Panics
/// If the slices are shorter than the shapes say or `pos + m > capacity`.
pub fn attention_cached<E: KvElem>(q: &[f32], k: &[E], v: &[E], s: AttnShape) -> Vec<f32> {
    attention_batch(q, &[SeqKv { k, v, shape: s }])
}

/// One sequence of [`attention_batch`]: its KV cache (`k`, `v`: `[n_head_kv, capacity, d]`)
/// and shape (`shape.m` query rows at positions `shape.pos..`).
#[derive(Debug, Clone, Copy)]
pub struct SeqKv<'a, E> {
    /// Keys.
    pub k: &'a [E],
    /// Values.
    pub v: &'a [E],
    /// Shape and span.
    pub shape: AttnShape,
}

/// Each sequence's queries over its own cache, all in one parallel run: `q` holds the
/// sequences' queries one after another (`[Σm, n_head, d]`; every sequence has the same
/// `n_head` and `d`); returns `[Σm, n_head, d]` in the same order.
///
/// Tasks are (sequence, KV head, chunk of 16 queries): a task converts its KV head's keys and
/// values once and serves every query head that reads them (GQA); with fewer than four tasks
/// per pool thread, one task per query head instead. What a query row gets does not depend on
/// the other sequences, the split or whether the task runs on the pool — batched decode
/// relies on it for bit-identical results.
///
/// # Panics
/// If the sequences' head counts or widths differ, a slice is shorter than its shape says or
/// `pos + m > capacity`.
pub fn attention_batch<E: KvElem>(q: &[f32], seqs: &[SeqKv<'_, E>]) -> Vec<f32> {
    const CHUNK: usize = 16;
    let Some(first) = seqs.first() else {
        assert!(q.is_empty(), "attention: queries without a sequence");
        return Vec::new();
    };
    let (nh, d) = (first.shape.n_head, first.shape.head_dim);
    // (sequence, KV head, query chunk) per task, and each sequence's first float in q/out.
    let mut tasks = Vec::new();
    let mut offsets = Vec::with_capacity(seqs.len());
    let (mut total, mut work) = (0usize, 0usize);
    for (i, sq) in seqs.iter().enumerate() {
        let s = sq.shape;
        let (m, nkv, cap, pos) = (s.m, s.n_head_kv, s.capacity, s.pos);
        assert!(
            s.n_head == nh && s.head_dim == d,
            "attention: sequences of one call share n_head and head_dim: {s:?}"
        );
        assert!(
            nkv > 0 && nh % nkv == 0 && pos + m <= cap,
            "attention: {s:?}"
        );
        assert!(
            sq.k.len() >= nkv * cap * d && sq.v.len() >= nkv * cap * d,
            "attention: cache shape"
        );
        offsets.push(total);
        total += m * nh * d;
        work += m * (pos + m) * nh;
        let group = nh / nkv;
        for g in 0..nkv {
            for c in 0..m.div_ceil(CHUNK) {
                tasks.push((
                    i,
                    g * group..(g + 1) * group,
                    c * CHUNK..((c + 1) * CHUNK).min(m),
                ));
            }
        }
    }
    assert_eq!(q.len(), total, "attention: q shape");
    // Too few tasks for the pool (one long conversation on a many-core box, few KV heads):
    // one task per query head, each converting its KV head's rows itself.
    if tasks.len() < 4 * pool::global().threads() && tasks.iter().any(|t| t.1.len() > 1) {
        tasks = tasks
            .into_iter()
            .flat_map(|(i, heads, rows)| heads.map(move |h| (i, h..h + 1, rows.clone())))
            .collect();
    }
    let mut out = vec![0.0f32; total];
    let optr = SharedMut::new(&mut out);
    let task = |t: usize| {
        let (i, ref heads, ref rows) = tasks[t];
        let (sq, off) = (&seqs[i], offsets[i]);
        let n = sq.shape.m * nh * d;
        // SAFETY: task (i, heads, rows) writes `heads` of `rows` of sequence i only.
        unsafe {
            group_rows(
                &q[off..off + n],
                sq.k,
                sq.v,
                sq.shape,
                heads.clone(),
                rows.clone(),
                optr.get().add(off),
            )
        };
    };
    // Small problems run inline: a decode step of a short conversation.
    if work < 1 << 12 || tasks.len() == 1 {
        (0..tasks.len()).for_each(task);
    } else {
        pool::global().run(tasks.len(), &task);
    }
    out
}

/// Query `heads` (all reading one KV head) for query `rows`.
///
/// # Safety
/// `out` holds `m · n_head · d` floats; no other task writes those heads of `rows`.
unsafe fn group_rows<E: KvElem>(
    q: &[f32],
    k: &[E],
    v: &[E],
    s: AttnShape,
    heads: std::ops::Range<usize>,
    rows: std::ops::Range<usize>,
    out: *mut f32,
) {
    #[cfg(target_arch = "x86_64")]
    if super::cpu::has_avx2() {
        return group_rows_avx2(q, k, v, s, heads, rows, out);
    }
    group_rows_body(q, k, v, s, heads, rows, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn group_rows_avx2<E: KvElem>(
    q: &[f32],
    k: &[E],
    v: &[E],
    s: AttnShape,
    heads: std::ops::Range<usize>,
    rows: std::ops::Range<usize>,
    out: *mut f32,
) {
    group_rows_body(q, k, v, s, heads, rows, out)
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
unsafe fn group_rows_body<E: KvElem>(
    q: &[f32],
    k: &[E],
    v: &[E],
    s: AttnShape,
    heads: std::ops::Range<usize>,
    rows: std::ops::Range<usize>,
    out: *mut f32,
) {
    let (nh, d, cap) = (s.n_head, s.head_dim, s.capacity);
    let g = heads.start / (nh / s.n_head_kv);
    // Keys `first..last` cover every row of the task.
    let seen_from = |t: usize| {
        if s.window > 0 {
            t.saturating_sub(s.window)
        } else {
            0
        }
    };
    let (first, last) = (seen_from(s.pos + rows.start + 1), s.pos + rows.end);
    let span = (g * cap + first) * d..(g * cap + last) * d;
    let (kh, vh) = (E::f32_rows(&k[span.clone()]), E::f32_rows(&v[span]));
    let mut scores = vec![0.0f32; last - first];
    let mut q16 = vec![0.0f32; if E::HALF { d } else { 0 }];
    for (h, i) in heads.flat_map(|h| rows.clone().map(move |i| (h, i))) {
        let t = s.pos + i + 1; // causal: keys 0..=pos+i
        let start = seen_from(t);
        let (kh, vh) = (&kh[(start - first) * d..], &vh[(start - first) * d..]);
        let mut qh = &q[(i * nh + h) * d..(i * nh + h + 1) * d];
        if E::HALF {
            for (r, &x) in q16.iter_mut().zip(qh) {
                *r = round_f16(x);
            }
            qh = &q16;
        }
        let sc = &mut scores[..t - start];
        scores_into(qh, kh, s.scale, sc);
        let max = sc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for x in sc.iter_mut() {
            *x = exp_neg(*x - max);
            sum += *x;
        }
        let o = std::slice::from_raw_parts_mut(out.add((i * nh + h) * d), d);
        if E::HALF {
            // ggml normalizes the weights (soft_max), then rounds them for vec_dot_f16.
            let inv = 1.0 / sum;
            for x in sc.iter_mut() {
                *x = round_f16(*x * inv);
            }
            weighted_sum(sc, vh, 1.0, o);
        } else {
            weighted_sum(sc, vh, 1.0 / sum, o);
        }
    }
}

/// `sc[j] = q · k[j] · scale` for the first `sc.len()` rows of `k` (rows of `q.len()` floats).
#[inline(always)]
unsafe fn scores_into(q: &[f32], k: &[f32], scale: f32, sc: &mut [f32]) {
    let d = q.len();
    #[cfg(target_arch = "x86_64")]
    if d.is_multiple_of(8) && super::cpu::has_avx2() {
        return avx2::scores(q, k, scale, sc);
    }
    for (j, x) in sc.iter_mut().enumerate() {
        *x = dot(q, &k[j * d..(j + 1) * d]) * scale;
    }
}

/// `o = Σ_j p[j] · inv · v[j]` over the first `p.len()` rows of `v` (rows of `o.len()` floats).
#[inline(always)]
unsafe fn weighted_sum(p: &[f32], v: &[f32], inv: f32, o: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::cpu::has_avx2() {
        match o.len() {
            64 => return avx2::weighted_sum::<8>(p, v, inv, o),
            32 => return avx2::weighted_sum::<4>(p, v, inv, o),
            128 => return avx2::weighted_sum::<16>(p, v, inv, o),
            256 => return avx2::weighted_sum::<32>(p, v, inv, o),
            _ => {}
        }
    }
    let d = o.len();
    o.fill(0.0);
    for (j, &pj) in p.iter().enumerate() {
        let w = pj * inv;
        for (oi, &vi) in o.iter_mut().zip(&v[j * d..(j + 1) * d]) {
            *oi = w.mul_add(vi, *oi);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Four keys at a time; one `vhaddps` tree turns their four accumulators into four scores.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn scores(q: &[f32], k: &[f32], scale: f32, sc: &mut [f32]) {
        let (d, t) = (q.len(), sc.len());
        assert!(k.len() >= t * d && d.is_multiple_of(8));
        let (qp, kp, sp) = (q.as_ptr(), k.as_ptr(), sc.as_mut_ptr());
        let vscale = _mm_set1_ps(scale);
        let mut j = 0;
        while j + 4 <= t {
            let mut a = [_mm256_setzero_ps(); 4];
            for e in (0..d).step_by(8) {
                let qv = _mm256_loadu_ps(qp.add(e));
                for (r, acc) in a.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kp.add((j + r) * d + e)), *acc);
                }
            }
            let h = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
            let s4 = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
            _mm_storeu_ps(sp.add(j), _mm_mul_ps(s4, vscale));
            j += 4;
        }
        while j < t {
            let mut acc = _mm256_setzero_ps();
            for e in (0..d).step_by(8) {
                acc = _mm256_fmadd_ps(
                    _mm256_loadu_ps(qp.add(e)),
                    _mm256_loadu_ps(kp.add(j * d + e)),
                    acc,
                );
            }
            *sp.add(j) = crate::kernels::cpu::avx2::hsum(acc) * scale;
            j += 1;
        }
    }

    /// The output row (`L` vectors of 8) stays in registers across all keys.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weighted_sum<const L: usize>(p: &[f32], v: &[f32], inv: f32, o: &mut [f32]) {
        let d = L * 8;
        assert!(o.len() == d && v.len() >= p.len() * d);
        let vp = v.as_ptr();
        let mut acc = [_mm256_setzero_ps(); L];
        for (j, &pj) in p.iter().enumerate() {
            let w = _mm256_set1_ps(pj * inv);
            for (l, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(vp.add(j * d + l * 8)), *a);
            }
        }
        for (l, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(o.as_mut_ptr().add(l * 8), *a);
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
                let start = if s.window > 0 {
                    t.saturating_sub(s.window)
                } else {
                    0
                };
                let sc: Vec<f64> = (start..t)
                    .map(|j| {
                        (0..d)
                            .map(|e| {
                                q[(i * nh + h) * d + e] as f64 * k[(g * cap + j) * d + e] as f64
                            })
                            .sum::<f64>()
                            * s.scale as f64
                    })
                    .collect();
                let mx = sc.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = sc.iter().map(|x| (x - mx).exp()).sum();
                for e in 0..d {
                    out[(i * nh + h) * d + e] = (start..t)
                        .map(|j| (sc[j - start] - mx).exp() / z * v[(g * cap + j) * d + e] as f64)
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
        // Each also with a sliding window shorter than the context.
        for d in [16usize, 24, 32, 64, 256] {
            for (m, pos, cap, window) in [
                (1, 6, 10, 0),
                (5, 0, 8, 0),
                (4, 3, 9, 0),
                (40, 30, 80, 0),
                (1, 6, 10, 4),
                (5, 0, 8, 3),
                (40, 30, 80, 17),
            ] {
                let s = AttnShape {
                    m,
                    n_head: 6,
                    n_head_kv: 2,
                    head_dim: d,
                    capacity: cap,
                    pos,
                    window,
                    scale: 1.0 / (d as f32).sqrt(),
                };
                let q: Vec<f32> = (0..m * 6 * d).map(f).collect();
                let k: Vec<f32> = (0..2 * cap * d).map(|i| f(i + 13)).collect();
                let v: Vec<f32> = (0..2 * cap * d).map(|i| f(i + 29)).collect();
                let got = attention_cached(&q, &k, &v, s);
                let want = reference(&q, &k, &v, s);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (*g as f64 - w).abs() < 1e-5,
                        "d{d} m{m} pos{pos} window{window} [{i}]: {g} vs {w}"
                    );
                }
            }
        }
    }

    /// A sequence's rows are the same bits alone (few tasks: one per query head) as among
    /// fifteen others (many tasks: one per KV head), over an f16 cache as the model uses.
    #[test]
    fn a_sequence_is_the_same_alone_and_in_a_batch() {
        let f = |i: usize| f16::from_f32(((i * 7919 % 97) as f32 - 48.0) / 40.0);
        let (nh, nkv, d, cap) = (6, 2, 32, 64);
        let caches: Vec<(Vec<f16>, Vec<f16>)> = (0..16)
            .map(|s| {
                let k = (0..nkv * cap * d).map(|i| f(i + 13 * s)).collect();
                let v = (0..nkv * cap * d).map(|i| f(i + 29 * s)).collect();
                (k, v)
            })
            .collect();
        let shape = |s: usize| AttnShape {
            m: 1 + s % 3,
            n_head: nh,
            n_head_kv: nkv,
            head_dim: d,
            capacity: cap,
            pos: 20 + 2 * s,
            window: 0,
            scale: 1.0 / (d as f32).sqrt(),
        };
        let qs: Vec<Vec<f32>> = (0..16)
            .map(|s| {
                (0..shape(s).m * nh * d)
                    .map(|i| f(i + 7 * s).to_f32())
                    .collect()
            })
            .collect();
        let seqs: Vec<SeqKv<'_, f16>> = caches
            .iter()
            .enumerate()
            .map(|(s, (k, v))| SeqKv {
                k,
                v,
                shape: shape(s),
            })
            .collect();
        let all = attention_batch(&qs.concat(), &seqs);
        let mut off = 0;
        for (s, q) in qs.iter().enumerate() {
            let alone = attention_batch(q, &seqs[s..s + 1]);
            let together = &all[off..off + alone.len()];
            off += alone.len();
            assert!(
                alone
                    .iter()
                    .zip(together)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "sequence {s}"
            );
        }
    }

    /// Over an f16 cache: as llama.cpp's non-flash attention, the query and the normalized
    /// weights are rounded to f16 too (reference in f64 over the rounded values).
    #[test]
    fn f16_cache_rounds_query_and_weights_as_ggml() {
        let f = |i: usize| ((i * 7919 % 97) as f32 - 48.0) / 40.0;
        let (m, pos, cap, d) = (3, 20, 24, 64);
        let s = AttnShape {
            m,
            n_head: 4,
            n_head_kv: 2,
            head_dim: d,
            capacity: cap,
            pos,
            window: 0,
            scale: 1.0 / 8.0,
        };
        let q: Vec<f32> = (0..m * 4 * d).map(|i| f(i) * 3.0).collect();
        let k: Vec<f16> = (0..2 * cap * d)
            .map(|i| f16::from_f32(f(i + 13) * 3.0))
            .collect();
        let v: Vec<f16> = (0..2 * cap * d).map(|i| f16::from_f32(f(i + 29))).collect();
        let got = attention_cached(&q, &k, &v, s);
        let (k32, v32): (Vec<f32>, Vec<f32>) = (k.to_f32_vec(), v.to_f32_vec());
        let unrounded = attention_cached(&q, &k32, &v32, s);
        let mut want = vec![0.0f64; m * 4 * d];
        for i in 0..m {
            for h in 0..4 {
                let g = h / 2;
                let t = pos + i + 1;
                let qh: Vec<f64> = q[(i * 4 + h) * d..][..d]
                    .iter()
                    .map(|&x| round_f16(x) as f64)
                    .collect();
                let sc: Vec<f64> = (0..t)
                    .map(|j| {
                        (0..d)
                            .map(|e| qh[e] * k32[(g * cap + j) * d + e] as f64)
                            .sum::<f64>()
                            / 8.0
                    })
                    .collect();
                let mx = sc.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = sc.iter().map(|x| (x - mx).exp()).sum();
                let p: Vec<f64> = sc
                    .iter()
                    .map(|x| round_f16(((x - mx).exp() / z) as f32) as f64)
                    .collect();
                for e in 0..d {
                    want[(i * 4 + h) * d + e] = (0..t)
                        .map(|j| p[j] * v32[(g * cap + j) * d + e] as f64)
                        .sum();
                }
            }
        }
        let mut moved = 0.0f64;
        for (i, ((g, w), u)) in got.iter().zip(&want).zip(&unrounded).enumerate() {
            assert!((*g as f64 - w).abs() < 2e-5, "[{i}]: {g} vs {w}");
            moved = moved.max((g - u).abs() as f64);
        }
        // The rounding is real: the f32 kernel over the same cache differs.
        assert!(moved > 1e-4, "f16 and f32 results differ by only {moved}");
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
