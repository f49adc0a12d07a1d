//! Tiny random-weight qwen2, qwen3, llama (Llama-3 with rope_freqs) and gemma3 models, each in
//! Q4_K_M, Q5_K_M, Q6_K and Q8_0 as llama.cpp quantized them, against llama.cpp's own outputs
//! (tests/data/synthetic/, made by scripts/fixtures/synthetic.py; see its README.md). For every
//! file: the tensor types are the ones llama.cpp chose, the text tokenizes to llama.cpp's ids,
//! the logits at every prompt position are within [`LOGIT_TOLERANCE`] of llama.cpp's, and
//! greedy decoding gives llama.cpp's tokens up to the first near-tie.

mod common;
#[path = "common/fixture.rs"]
mod fixture;

use std::path::PathBuf;

use wecom_edge_actors::model::gguf::GgufFile;
use wecom_edge_actors::model::llama::Logits;
use wecom_edge_actors::model::{CpuBackend, Engine};

/// Largest allowed |ours − llama.cpp| over all logits of a file. We compute as llama.cpp's CPU
/// does (f16 KV cache, Q8 activations rounded the same way, f16 GELU table), and the logits agree
/// to < 0.001 up to the first position where float summation order flips one Q8 (or f16)
/// rounding; from there the flipped key/value moves every later position's logits by ~0.1
/// (the logits' spread is std ≈ 2–4). Measured max on the 16 files: 0.0005–0.28 (AVX2 and the
/// portable path alike); a second flip could add as much again.
const LOGIT_TOLERANCE: f64 = 0.5;
/// Largest allowed mean |ours − llama.cpp| over all logits of a file: a rounding flip moves it
/// to ≤ 0.04 (measured 0.0000–0.036), a wrong forward (a missing bias, RoPE mode or norm) to
/// the logits' own scale.
const MEAN_LOGIT_TOLERANCE: f64 = 0.08;
/// Greedy decoding is compared up to the first step whose llama.cpp top-2 margin is below this.
const NEAR_TIE: f64 = 0.1;

const ARCHS: [&str; 4] = ["qwen2", "qwen3", "llama3", "gemma3"];
const QUANTS: [&str; 4] = ["q4_k_m", "q5_k_m", "q6_k", "q8_0"];

fn dir() -> PathBuf {
    common::data("synthetic")
}

/// Checks one architecture in its four quantizations (each prints its largest logit difference).
fn check(arch: &str) {
    for quant in QUANTS {
        let name = format!("{arch}-{quant}");
        let fx = fixture::read(&dir(), &name);
        let fixture = &fx.json;
        let path = dir().join(format!("{name}.gguf"));

        // The block formats are the ones llama.cpp wrote (Q4_K_M mixes Q4_K and Q6_K).
        let g = GgufFile::open(&path).unwrap();
        for t in g.tensors() {
            assert_eq!(
                t.ggml_type.name(),
                fixture["tensor_types"][&t.name].as_str().unwrap(),
                "{name}: type of {}",
                t.name
            );
        }
        assert_eq!(
            g.tensors().len(),
            fixture["tensor_types"].as_object().unwrap().len()
        );
        drop(g);

        let engine = Engine::<CpuBackend>::load(&path, &Default::default()).unwrap();
        let text = fixture["text"].as_str().unwrap();
        let prompt = fx.token_ids.clone();
        assert_eq!(
            engine.tokenizer.tokenize(text, true, false).unwrap(),
            prompt,
            "{name}: token ids of {text:?}"
        );
        // Decoded without the BOS (decode renders control tokens).
        let bos = usize::from(fixture["hparams"]["add_bos"].as_bool().unwrap());
        assert_eq!(
            engine.tokenizer.decode(&prompt[bos..]).unwrap(),
            text,
            "{name}"
        );

        // Every position's logits.
        let want = &fx.logits;
        let greedy = &fx.greedy_token_ids;
        let model = &engine.model;
        let n_vocab = want[0].len();
        let mut cache = model.new_cache(prompt.len() + greedy.len() + 1);
        let all: Vec<f32> = model
            .forward(&prompt, &mut cache, Logits::All)
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(all.len(), prompt.len() * n_vocab, "{name}: logits shape");
        let mut worst = (0.0f64, 0usize, 0usize);
        let mut sum = 0.0;
        for (pos, row) in want.iter().enumerate() {
            for (t, &l) in row.iter().enumerate() {
                let d = (all[pos * n_vocab + t] as f64 - l).abs();
                sum += d;
                if d > worst.0 {
                    worst = (d, pos, t);
                }
            }
        }
        let mean = sum / all.len() as f64;
        eprintln!(
            "{name}: max |Δlogit| {:.4} (position {}, token {}), mean {mean:.4}",
            worst.0, worst.1, worst.2
        );
        assert!(
            mean <= MEAN_LOGIT_TOLERANCE,
            "{name}: mean |Δlogit| {mean} over all positions"
        );
        assert!(
            worst.0 <= LOGIT_TOLERANCE,
            "{name}: logit of token {} at position {}: ours {}, llama.cpp {}",
            worst.2,
            worst.1,
            all[worst.1 * n_vocab + worst.2],
            want[worst.1][worst.2]
        );

        // Greedy, free-running, up to the first near-tie.
        let margins = &fx.greedy_top2_logit_margin;
        let first_tie = margins
            .iter()
            .position(|&m| m < NEAR_TIE)
            .unwrap_or(greedy.len());
        let mut logits = all[(prompt.len() - 1) * n_vocab..].to_vec();
        let mut got = Vec::new();
        for &want_t in &greedy[..first_tie] {
            let t = fixture::argmax(&logits);
            got.push(t);
            assert_eq!(
                t, want_t,
                "{name}: greedy differs before any near-tie: ours {got:?}, llama.cpp {greedy:?}"
            );
            logits = model
                .forward(&[t], &mut cache, Logits::Last)
                .unwrap()
                .into_data()
                .to_vec()
                .unwrap();
        }
        eprintln!(
            "{name}: greedy equal over {first_tie} of {} tokens",
            greedy.len()
        );
    }
}

#[test]
fn qwen2_biases_neox_rope() {
    check("qwen2");
}

/// The qwen2 fixtures carry Qwen2.5's chat template (the model the configuration stick's
/// import and the boot test switch to and chat with): it renders into ChatML special tokens.
#[test]
fn qwen2_fixture_chats_in_chatml() {
    let g = GgufFile::open(dir().join("qwen2-q4_k_m.gguf")).unwrap();
    let tok = wecom_edge_actors::model::Tokenizer::from_gguf(&g).unwrap();
    let ids = tok
        .encode_chat(&[wecom_edge_actors::model::ChatMessage::new("user", "你好")])
        .unwrap();
    let text = String::from_utf8(ids.iter().flat_map(|&i| tok.piece(i)).collect()).unwrap();
    assert!(text.starts_with("<|im_start|>system\n"), "{text:?}");
    assert!(
        text.ends_with("<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"),
        "{text:?}"
    );
    let im_start = tok.tokenize("<|im_start|>", false, true).unwrap();
    assert_eq!(im_start.len(), 1, "<|im_start|> is one special token");
    assert_eq!(ids[0], im_start[0]);
}

#[test]
fn qwen3_qk_norm_head_dim_from_key_length() {
    check("qwen3");
}

#[test]
fn llama3_rope_freqs() {
    check("llama3");
}

#[test]
fn gemma3_sliding_window_geglu_post_norms() {
    check("gemma3");
}

#[test]
fn every_fixture_is_checked() {
    let mut files: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".gguf"))
        .collect();
    files.sort();
    let mut want: Vec<String> = ARCHS
        .iter()
        .flat_map(|a| QUANTS.iter().map(move |q| format!("{a}-{q}.gguf")))
        .collect();
    want.sort();
    assert_eq!(files, want);
}
