//! Bad model files give errors that name the file and the key or tensor.

mod common;

use common::{model_path, TempDir};
use wecom_edge_actors::model::gguf::{GgufWriter, Value};
use wecom_edge_actors::model::{CpuBackend, Engine, ModelError};

fn load(bytes: &[u8]) -> (TempDir, ModelError) {
    let dir = TempDir::new("gguf");
    let path = dir.0.join("model.gguf");
    std::fs::write(&path, bytes).unwrap();
    let err = Engine::<CpuBackend>::load(&path, &Default::default()).unwrap_err();
    (dir, err)
}

#[test]
fn truncated_real_model() {
    let full = std::fs::read(model_path()).unwrap();
    for cut in [3usize, 100, 1 << 20, full.len() - 1] {
        let (dir, err) = load(&full[..cut]);
        let msg = err.to_string();
        assert!(
            matches!(err, ModelError::Truncated { .. }),
            "cut {cut}: {msg}"
        );
        assert!(
            msg.contains(&dir.0.join("model.gguf").display().to_string()),
            "{msg}"
        );
    }
}

#[test]
fn bad_magic() {
    let (_d, err) = load(b"GGML\x03\x00\x00\x00garbage-garbage-garbage");
    assert!(matches!(err, ModelError::BadMagic { .. }), "{err}");
}

#[test]
fn unsupported_architecture() {
    let mut w = GgufWriter::default();
    w.kv("general.architecture", Value::String("gptneox".into()));
    w.kv("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.kv(
        "tokenizer.ggml.tokens",
        Value::Array(vec![Value::String("a".into())]),
    );
    w.kv(
        "tokenizer.ggml.merges",
        Value::Array(vec![Value::String("a a".into())]),
    );
    let (_d, err) = load(&w.to_bytes());
    assert!(
        err.to_string()
            .contains("unsupported architecture 'gptneox'"),
        "{err}"
    );
}

#[test]
fn missing_key_is_named() {
    let mut w = GgufWriter::default();
    w.kv("general.architecture", Value::String("llama".into()));
    let (_d, err) = load(&w.to_bytes());
    assert!(
        matches!(&err, ModelError::MissingKey { key, .. } if key == "llama.embedding_length"),
        "{err}"
    );
}

#[test]
fn unknown_tensor_type_is_named() {
    let mut w = GgufWriter::default();
    w.kv("general.architecture", Value::String("llama".into()));
    w.tensor("blk.0.attn_q.weight", &[32, 1], 39, vec![0; 64]);
    let (_d, err) = load(&w.to_bytes());
    let msg = err.to_string();
    assert!(
        msg.contains("blk.0.attn_q.weight")
            && msg.contains("unknown or unsupported tensor type 39"),
        "{msg}"
    );
}

#[test]
fn missing_model_says_how_to_fetch_it() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wecom-edge"))
        .args(["ask", "--model", "/nonexistent/model.gguf", "hi"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("scripts/fetch-model.sh") && err.contains("/nonexistent/model.gguf"),
        "{err}"
    );
}
