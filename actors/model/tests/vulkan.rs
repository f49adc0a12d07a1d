//! The whole model on burn-wgpu over Vulkan (feature `vulkan`): on a machine without a GPU,
//! Mesa's lavapipe (installed by scripts/setup-debian.sh), which runs the same CubeCL kernels
//! as CUDA. Run by scripts/test.sh as `cargo test -p wecom-edge-model --features vulkan`.
//!
//! - The 16 tiny random-weight models of tests/data/synthetic (qwen2, qwen3, llama3, gemma3 in
//!   Q4_K_M, Q5_K_M, Q6_K, Q8_0, llama.cpp's quantization) against llama.cpp's logits at every
//!   prompt position, and llama.cpp's greedy tokens up to the first near-tie.
//! - SmolLM2-135M Q4_1 (the default model, scripts/fetch-model.sh): greedy generation on Vulkan
//!   gives the CPU path's tokens wherever the CPU's choice is not a near-tie.
#![cfg(feature = "vulkan")]

use std::path::{Path, PathBuf};

#[path = "../../../tests/common/fixture.rs"]
mod fixture;
use fixture::argmax;

use wecom_edge_model::gpu::VulkanBackend;
use wecom_edge_model::llama::Logits;
use wecom_edge_model::{CpuBackend, Engine};

/// Largest allowed |ours − llama.cpp| over all logits of a file. The GPU kernels take f32
/// activations where llama.cpp's CPU (and ours) rounds them to Q8, and the GPU attention reads
/// the f16 cache in f32 where the CPU rounds the query and the softmax weights to f16, so the
/// logits differ by those roundings: measured on lavapipe (2026-12-07), max 0.16–0.47 over the
/// 16 files, mean 0.026–0.057.
const LOGIT_TOLERANCE: f64 = 1.0;
/// Largest allowed mean |ours − llama.cpp| over all logits of a file; a wrong forward moves it
/// to the logits' own scale (std ≈ 2–4).
const MEAN_LOGIT_TOLERANCE: f64 = 0.1;
/// llama.cpp's greedy tokens are compared up to the first step whose top-2 margin is below
/// this (its logits are given to 5 digits; ours differ by the roundings above).
const NEAR_TIE: f64 = 0.1;
/// The CPU path's greedy tokens are compared at the steps whose top-2 margin is at least this: the two paths' logits differ by up to [`CPU_GPU_TOLERANCE`] (SmolLM2, 30 layers of
/// the roundings above: measured max |Δ| per step 0.46–1.27 on lavapipe).
const CPU_NEAR_TIE: f64 = 0.5;
/// Largest allowed |CPU − GPU| logit at a compared step (a wrong kernel or forward moves them
/// by the logits' scale, ~10).
const CPU_GPU_TOLERANCE: f32 = 2.0;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The gap between the largest and the second largest value.
fn margin(v: &[f32]) -> f64 {
    let mut s: Vec<f32> = v.to_vec();
    s.sort_by(|a, b| b.total_cmp(a));
    (s[0] - s[1]) as f64
}

#[test]
fn synthetic_models_match_llama_cpp_on_vulkan() {
    let dir = repo().join("tests/data/synthetic");
    for arch in ["qwen2", "qwen3", "llama3", "gemma3"] {
        for quant in ["q4_k_m", "q5_k_m", "q6_k", "q8_0"] {
            let name = format!("{arch}-{quant}");
            let fx = fixture::read(&dir, &name);
            let engine = Engine::<VulkanBackend>::load(
                dir.join(format!("{name}.gguf")),
                &Default::default(),
            )
            .unwrap();
            let (prompt, want) = (&fx.token_ids, &fx.logits);
            let (greedy, margins) = (&fx.greedy_token_ids, &fx.greedy_top2_logit_margin);
            let model = &engine.model;
            let n_vocab = want[0].len();
            let mut cache = model.new_cache(prompt.len() + greedy.len() + 1);
            let all: Vec<f32> = model
                .forward(prompt, &mut cache, Logits::All)
                .unwrap()
                .into_data()
                .to_vec()
                .unwrap();
            assert_eq!(all.len(), prompt.len() * n_vocab, "{name}: logits shape");
            let (mut worst, mut sum) = (0.0f64, 0.0f64);
            for (pos, row) in want.iter().enumerate() {
                for (t, &l) in row.iter().enumerate() {
                    let d = (all[pos * n_vocab + t] as f64 - l).abs();
                    worst = worst.max(d);
                    sum += d;
                }
            }
            let mean = sum / all.len() as f64;
            eprintln!("{name} (vulkan): max |Δlogit| {worst:.4}, mean {mean:.4}");
            assert!(worst <= LOGIT_TOLERANCE, "{name}: max |Δlogit| {worst}");
            assert!(mean <= MEAN_LOGIT_TOLERANCE, "{name}: mean |Δlogit| {mean}");

            // Greedy continuation, one token at a time, up to llama.cpp's first near-tie.
            let last = &all[(prompt.len() - 1) * n_vocab..];
            let mut tok = argmax(last);
            for (step, (&g, &m)) in greedy.iter().zip(margins.iter()).enumerate() {
                if m < NEAR_TIE {
                    break;
                }
                assert_eq!(tok, g, "{name}: greedy token {step}");
                tok = argmax(&engine.logits_last(&[tok], &mut cache).unwrap());
            }
        }
    }
}

#[test]
fn smollm2_greedy_on_vulkan_matches_the_cpu_path() {
    let path = repo().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        eprintln!(
            "skipped: {} is not fetched (scripts/fetch-model.sh)",
            path.display()
        );
        return;
    }
    let cpu = Engine::<CpuBackend>::load(&path, &Default::default()).unwrap();
    let gpu = Engine::<VulkanBackend>::load(&path, &Default::default()).unwrap();
    let prompt = cpu
        .tokenizer
        .tokenize("The capital of France is", true, false)
        .unwrap();
    assert_eq!(
        gpu.tokenizer
            .tokenize("The capital of France is", true, false)
            .unwrap(),
        prompt
    );
    let n_gen = 24;
    let mut cc = cpu.model.new_cache(prompt.len() + n_gen);
    let mut gc = gpu.model.new_cache(prompt.len() + n_gen);
    let (mut lc, mut lg) = (
        cpu.logits_last(&prompt, &mut cc).unwrap(),
        gpu.logits_last(&prompt, &mut gc).unwrap(),
    );
    // Both read the CPU's greedy tokens (teacher forcing), so every step is compared where
    // the CPU's choice is clear; near-ties are skipped, not the end of the comparison.
    let mut compared = 0;
    for step in 0..n_gen {
        let (tc, tg) = (argmax(&lc), argmax(&lg));
        let dmax = lc
            .iter()
            .zip(&lg)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!(
            "step {step}: cpu {tc} vulkan {tg}, cpu top-2 margin {:.3}, max |Δlogit| {dmax:.3}",
            margin(&lc)
        );
        assert!(
            dmax <= CPU_GPU_TOLERANCE,
            "step {step}: max |Δlogit| {dmax}"
        );
        if margin(&lc) >= CPU_NEAR_TIE {
            assert_eq!(tg, tc, "greedy token {step}: vulkan vs cpu");
            compared += 1;
        }
        lc = cpu.logits_last(&[tc], &mut cc).unwrap();
        lg = gpu.logits_last(&[tc], &mut gc).unwrap();
    }
    eprintln!("SmolLM2 Q4_1: {compared} of {n_gen} greedy tokens compared, all equal");
    assert!(
        compared >= n_gen / 2,
        "only {compared} clear steps of {n_gen}"
    );
}
