//! `wecom-edge ask` and `wecom-edge perplexity` as a user runs them.

mod common;

use std::process::Command;

use common::{data, model_path};
use serde_json::Value;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wecom-edge"));
    c.env("WECOM_EDGE_MODEL", model_path());
    c
}

#[test]
fn ask_streams_text_and_ends_with_json() {
    let out = bin()
        .args([
            "ask",
            "--max-tokens",
            "12",
            "--threads",
            "2",
            "--json",
            "What is a database index?",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.lines().last().unwrap();
    let v: Value = serde_json::from_str(last).unwrap();
    for key in [
        "prompt_token_ids",
        "token_ids",
        "text",
        "prompt_tokens",
        "generated_tokens",
        "load_ms",
        "prefill_tokens_per_s",
        "decode_tokens_per_s",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {last}");
    }
    assert_eq!(v["generated_tokens"], 12);
    assert_eq!(v["prompt_tokens"], 36);
    let text = v["text"].as_str().unwrap();
    assert!(text.starts_with("A database index is"), "{text}");
    // The streamed answer precedes the JSON line.
    assert!(stdout.starts_with(text), "{stdout}");
}

#[test]
fn perplexity_prints_the_reference_definition() {
    let out = bin()
        .arg("perplexity")
        .arg(data("perplexity-text.txt"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["n_tokens"], 218);
    let ppl = v["perplexity"].as_f64().unwrap();
    assert!((ppl - 20.686).abs() / 20.686 < 0.02, "{ppl}");
}

#[test]
fn bad_arguments_are_clear_errors() {
    let out = bin()
        .args(["ask", "--temperature=-1", "hi"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("temperature"));
    let out = bin()
        .args(["ask", "--threads", "0", "hi"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threads"));
}
