//! The fused kernels on the real model's tensors, against a dequantized f64 reference.

mod common;

use common::model_path;
use wecom_edge_actors::model::gguf::GgufFile;
use wecom_edge_actors::model::kernels::cpu::{
    dot_scalar, has_avx2, qmatmul, quantize_q8, QMatRef, QK,
};
use wecom_edge_actors::model::kernels::packed::{self, PackedActs, PackedMatrix};
use wecom_edge_actors::model::quant::{dequantize, GgmlType};

#[test]
fn real_q4_1_and_q8_0_tensors_match_the_f64_reference() {
    let g = GgufFile::open(model_path()).unwrap();
    for (name, rows) in [
        ("blk.0.attn_q.weight", 576),
        ("blk.7.ffn_down.weight", 64),
        ("blk.29.ffn_gate.weight", 96),
        ("token_embd.weight", 128),
    ] {
        let info = g.tensor(name).unwrap();
        let (k, n_all) = (info.dims[0] as usize, info.dims[1] as usize);
        let n = rows.min(n_all);
        let rb = k / QK * info.ggml_type.block_bytes();
        let data = &g.data(info)[..n * rb];
        let w = QMatRef {
            ty: info.ggml_type,
            n,
            k,
            data,
        };
        // Activations shaped like a normed hidden state: mostly small, a few large.
        let m = 3;
        let x: Vec<f32> = (0..m * k)
            .map(|i| {
                ((i * 2654435761usize % 1000) as f32 / 500.0 - 1.0)
                    * if i % 61 == 0 { 8.0 } else { 1.0 }
            })
            .collect();
        let mut got = vec![0.0f32; m * n];
        qmatmul(&x, w, &mut got);
        let mut wd = Vec::new();
        dequantize(info.ggml_type, data, n * k, &mut wd);
        let xq = quantize_q8(&x, k);
        let nb = k / QK;
        for t in 0..m {
            for r in 0..n {
                // f64 reference on the same 8-bit activations the kernel sees. For Q4_1 the
                // minimum term uses the block's stored s = d·Σq (f16), as ggml's block_q8_1 does.
                let mut want = 0.0f64;
                for b in 0..nb {
                    let xb = &xq[t * nb + b];
                    for j in 0..QK {
                        want += wd[r * k + b * QK + j] as f64 * xb.qs[j] as f64 * xb.d as f64;
                    }
                    if info.ggml_type == GgmlType::Q4_1 {
                        let blk = &data[r * rb + b * 20..];
                        let m_w = half::f16::from_le_bytes([blk[2], blk[3]]).to_f64();
                        let sum_q: f64 = xb.qs.iter().map(|&q| q as f64).sum();
                        want += m_w * (xb.s as f64 - xb.d as f64 * sum_q);
                    }
                }
                let g = got[t * n + r] as f64;
                assert!(
                    (g - want).abs() < 1e-3 * (1.0 + want.abs()),
                    "{name} [{t},{r}]: {g} vs {want}"
                );
                let s = dot_scalar(
                    info.ggml_type,
                    &data[r * rb..(r + 1) * rb],
                    &xq[t * nb..(t + 1) * nb],
                ) as f64;
                assert!(
                    (s - want).abs() < 1e-3 * (1.0 + want.abs()),
                    "{name} scalar [{t},{r}]: {s} vs {want}"
                );
            }
        }
        if has_avx2() {
            let p = PackedMatrix::from_gguf(w).unwrap();
            let acts = PackedActs::new(&xq, m, k);
            let mut out = vec![0.0f32; m * n];
            // SAFETY: AVX2 present; `out` is m × n and this thread is the only writer.
            unsafe { packed::rows(&p, &acts, 0, n, out.as_mut_ptr()) };
            for (i, (a, b)) in out.iter().zip(&got).enumerate() {
                assert!(
                    (a - b).abs() < 1e-3 * (1.0 + b.abs()),
                    "{name} packed [{i}]: {a} vs {b}"
                );
            }
        }
    }
}
