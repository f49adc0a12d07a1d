//! `wecom-edge model inspect`, `model tokenize` and `complete` as a user runs them.

mod common;

use std::process::{Command, Output};

use common::{model_path, repo};
use serde_json::Value;

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wecom-edge"))
        .env("WECOM_EDGE_MODEL", model_path())
        .args(args)
        .output()
        .unwrap()
}

fn json_line(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

/// SmolLM2-135M Q4_1: the quant mix, parameters, hparams and memory as the file holds them.
#[test]
fn inspect_reports_the_default_model() {
    let path = model_path();
    let out = bin(&[
        "model",
        "inspect",
        "--json",
        "--ctx-size",
        "2048",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json_line(&out);
    assert_eq!(r["architecture"], "llama");
    assert_eq!(r["file_type"], "Q4_1");
    assert!(r["unsupported"].is_null(), "{r}");
    let types: Vec<(String, u64, u64)> = r["tensor_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["ty"].as_str().unwrap().to_owned(),
                t["tensors"].as_u64().unwrap(),
                t["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    // 30 layers × 7 matrices in Q4_1; the embeddings (tied) in Q8_0; 61 norm vectors in F32.
    let counts: Vec<(&str, u64)> = types.iter().map(|(t, n, _)| (t.as_str(), *n)).collect();
    assert_eq!(counts, [("Q4_1", 210), ("Q8_0", 1), ("F32", 61)]);
    let h = &r["hparams"];
    assert_eq!(
        [
            &h["n_vocab"],
            &h["n_embd"],
            &h["n_layer"],
            &h["n_head"],
            &h["n_head_kv"],
            &h["head_dim"]
        ],
        [49152, 576, 30, 9, 3, 64]
    );
    assert_eq!(r["n_params"], 134_515_008u64);
    assert_eq!(r["tokenizer"]["model"], "gpt2");
    assert_eq!(r["tokenizer"]["pre"], "smollm");
    assert_eq!(r["tokenizer"]["chat_template"], true);
    let m = &r["memory"];
    let weights: u64 = types.iter().map(|t| t.2).sum();
    assert_eq!(m["weights_bytes"], weights);
    // 30 layers × K and V × 3 heads × 64 × 2048 positions × 2 bytes (f16).
    assert_eq!(m["kv_cache_bytes"], 30 * 2 * 3 * 64 * 2048 * 2u64);
    assert_eq!(m["cache_type"], "f16");
    assert_eq!(m["fits"], true);
    // The text form says the same in lines.
    let text = bin(&["model", "inspect", path.to_str().unwrap()]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("architecture   llama"), "{text}");
    assert!(text.contains("Q4_1    210 tensors"), "{text}");
}

/// A vocab-only GGUF has no weights: inspect says why it cannot run and exits 1.
#[test]
fn inspect_refuses_a_vocab_only_file() {
    let vocab = repo().join("models/vocab/ggml-vocab-qwen2.gguf");
    if !vocab.exists() {
        eprintln!("skipped: models/vocab is not fetched (scripts/fetch-vocab.sh)");
        return;
    }
    let out = bin(&["model", "inspect", "--json", vocab.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let r = json_line(&out);
    assert!(
        r["unsupported"]
            .as_str()
            .unwrap()
            .contains("token_embd.weight"),
        "{r}"
    );
    assert_eq!(r["tokenizer"]["pre"], "qwen2");
    assert!(r["tokenizer"]["unsupported"].is_null(), "{r}");
}

/// `model check`: the default model loads, scores the check text finitely and generates a
/// token; a file that is not a whole GGUF is rejected with the reason and exit 1.
#[test]
fn check_runs_the_model_or_says_why_not() {
    let path = model_path();
    let out = bin(&["model", "check", "--json", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json_line(&out);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["architecture"], "llama");
    assert_eq!(r["chat_template"], true);
    assert!(r["mean_nll"].as_f64().unwrap().is_finite(), "{r}");
    assert_eq!(r["token_ids"].as_array().unwrap().len(), 1, "{r}");

    let dir = common::TempDir::new("check");
    let bytes = std::fs::read(repo().join("tests/data/synthetic/qwen2-q4_k_m.gguf")).unwrap();
    let cut = dir.0.join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 4096]).unwrap();
    let out = bin(&["model", "check", cut.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("REJECTED"), "{err}");
}

/// `model tokenize` on llama.cpp's own vocab file prints llama.cpp's ids; `--special` parses
/// control tokens, which are plain text otherwise.
#[test]
fn tokenize_matches_llama_cpp_vectors() {
    let vocab = repo().join("models/vocab/ggml-vocab-qwen2.gguf");
    if !vocab.exists() {
        eprintln!("skipped: models/vocab is not fetched (scripts/fetch-vocab.sh)");
        return;
    }
    let v = vocab.to_str().unwrap();
    let cases = common::vocab_vectors("qwen2");
    let mut checked = 0;
    for (text, want) in cases.iter().filter(|(t, _)| !t.is_empty()).take(12) {
        let out = bin(&["model", "tokenize", "--json", "--model", v, text]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ids: Vec<u32> = json_line(&out)["token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(&ids, want, "{text:?}");
        checked += 1;
    }
    assert!(checked >= 10);
    let plain = json_line(&bin(&[
        "model",
        "tokenize",
        "--json",
        "--model",
        v,
        "<|im_start|>",
    ]));
    assert!(plain["token_ids"].as_array().unwrap().len() > 1, "{plain}");
    let special = json_line(&bin(&[
        "model",
        "tokenize",
        "--json",
        "--special",
        "--model",
        v,
        "<|im_start|>",
    ]));
    assert_eq!(special["token_ids"], serde_json::json!([151644]));
    assert_eq!(special["pieces"], serde_json::json!(["<|im_start|>"]));
    // Without --json: one `id<TAB>piece` line per token.
    let lines = bin(&["model", "tokenize", "--model", v, "你好"]);
    assert_eq!(
        String::from_utf8(lines.stdout).unwrap(),
        "108386\t\"你好\"\n"
    );
}

/// `complete` continues raw text: the prompt is the text's own tokens (no chat template), and
/// greedy decoding is the same on every run.
#[test]
fn complete_continues_raw_text() {
    let path = model_path();
    let args = [
        "complete",
        "--max-tokens",
        "8",
        "--threads",
        "2",
        "--json",
        "The capital of France is",
    ];
    let a = bin(&args);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let a = json_line(&a);
    let tok = json_line(&bin(&[
        "model",
        "tokenize",
        "--json",
        "--model",
        path.to_str().unwrap(),
        "The capital of France is",
    ]));
    assert_eq!(a["prompt_token_ids"], tok["token_ids"]);
    assert_eq!(a["generated_tokens"], 8);
    assert_eq!(a["stop"], "max_tokens");
    let b = json_line(&bin(&args));
    assert_eq!(a["token_ids"], b["token_ids"]);
    assert!(!a["text"].as_str().unwrap().trim().is_empty(), "{a}");
}
