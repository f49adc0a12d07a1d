//! Every block format decodes exactly as gguf-py's numpy ports of ggml's `dequantize_row_*`
//! (fixture: tests/data/dequant-gguf-py.json, made by scripts/fixtures/dequant.py from random
//! blocks), and its fused dot product agrees with those values.

mod common;

use wecom_edge_actors::model::kernels::cpu::{qmatmul, QMatRef};
use wecom_edge_actors::model::quant::{dequantize, GgmlType};

fn ty(name: &str) -> GgmlType {
    (0..40)
        .filter_map(GgmlType::from_id)
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("unknown type {name}"))
}

#[test]
fn formats_decode_as_gguf_py_does() {
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::data("dequant-gguf-py.json")).unwrap(),
    )
    .unwrap();
    let formats = fixture["formats"].as_array().unwrap();
    assert_eq!(
        formats.len(),
        10,
        "Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K"
    );
    for f in formats {
        let t = ty(f["type"].as_str().unwrap());
        let hex = f["bytes"].as_str().unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let want: Vec<f32> = f["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let mut got = Vec::new();
        dequantize(t, &bytes, want.len(), &mut got);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // gguf-py computes in f32 numpy with the same operation order; allow one ulp.
            assert!(
                (g - w).abs() <= w.abs() * 2e-7 + 1e-9,
                "{} element {i}: {g} vs gguf-py {w}",
                t.name()
            );
        }
        // The fused dot product of the row with a ramp equals Σ w·x within the activation
        // quantization error.
        let k = want.len();
        let x: Vec<f32> = (0..k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let mut out = [0.0f32];
        qmatmul(
            &x,
            QMatRef {
                ty: t,
                n: 1,
                k,
                data: &bytes,
            },
            &mut out,
        );
        let exact: f64 = want
            .iter()
            .zip(&x)
            .map(|(&w, &x)| w as f64 * x as f64)
            .sum();
        let norm: f64 = want
            .iter()
            .zip(&x)
            .map(|(&w, &x)| (w as f64 * x as f64).abs())
            .sum();
        assert!(
            (out[0] as f64 - exact).abs() <= 0.01 * norm,
            "{}: dot {} vs {exact}",
            t.name(),
            out[0]
        );
    }
}
