use std::time::Instant;
use wecom_edge_model::kernels::cpu::{qmatmul, QMatRef};
use wecom_edge_model::quant::{quantize_q4_1, quantize_q8_0, GgmlType};
fn main() {
    wecom_edge_model::set_cpu_threads(1);
    for (ty, n, k) in [
        (GgmlType::Q4_1, 576, 576),
        (GgmlType::Q4_1, 1536, 576),
        (GgmlType::Q4_1, 576 * 40, 576),
        (GgmlType::Q8_0, 49152, 576),
    ] {
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 500.0)
            .collect();
        let data = if ty == GgmlType::Q4_1 {
            quantize_q4_1(&w)
        } else {
            quantize_q8_0(&w)
        };
        let wr = QMatRef {
            ty,
            n,
            k,
            data: &data,
        };
        for m in [1usize, 64] {
            let x: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 / 17.0).collect();
            let mut out = vec![0.0; m * n];
            let reps = (200_000_000 / (n * k * m)).max(3);
            qmatmul(&x, wr, &mut out);
            let t = Instant::now();
            for _ in 0..reps {
                qmatmul(&x, wr, &mut out);
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            let blocks = (n * k / 32 * m) as f64;
            println!(
                "{} n={n} k={k} m={m}: {:.1} us, {:.2} ns/block-row-token, {:.2} GB/s weights",
                ty.name(),
                s * 1e6,
                s * 1e9 / blocks,
                data.len() as f64 / s / 1e9
            );
        }
    }
}
