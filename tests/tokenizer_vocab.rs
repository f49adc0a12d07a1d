//! llama.cpp's own tokenizer vectors: for each vocabulary of a supported tokenizer model
//! (llama.cpp `models/ggml-vocab-NAME.gguf`, fetched by scripts/fetch-vocab.sh), every text of
//! `NAME.gguf.inp` tokenizes to the ids on the same line of `NAME.gguf.out` (both copied to
//! tests/data/vocab/ from llama.cpp as vendored in llama_cpp_python-0.3.36). As llama.cpp's
//! tests/test-tokenizer-0.cpp: no BOS/EOS added, control tokens not parsed.
//!
//! Skipped with a message when the vocabularies are not fetched; CI fetches them.

mod common;

use wecom_edge_actors::model::gguf::GgufFile;
use wecom_edge_actors::model::tokenizer::Tokenizer;

/// Every vocabulary scripts/fetch-vocab.sh fetches.
const VOCABS: &[&str] = &[
    "command-r",
    "deepseek-coder",
    "deepseek-llm",
    "falcon",
    "gpt-2",
    "llama-bpe",
    "llama-spm",
    "mpt",
    "phi-3",
    "qwen2",
    "qwen35",
    "refact",
    "starcoder",
];

#[test]
fn llama_cpp_vocab_vectors() {
    let dir = common::repo().join("models/vocab");
    if !dir.join("ggml-vocab-gpt-2.gguf").exists() {
        eprintln!("skipped: models/vocab is not fetched (scripts/fetch-vocab.sh)");
        return;
    }
    let mut failures = Vec::new();
    let mut checked = 0;
    for name in VOCABS {
        let gguf = GgufFile::open(dir.join(format!("ggml-vocab-{name}.gguf"))).unwrap();
        let tok = Tokenizer::from_gguf(&gguf).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (text, want) in common::vocab_vectors(name) {
            let got = tok.tokenize(&text, false, false).unwrap();
            checked += 1;
            if got != want {
                failures.push(format!("{name} {text:?}\n  got  {got:?}\n  want {want:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} vectors differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 400, "only {checked} vectors");
}

/// The real gemma-3-270m vocabulary (SentencePiece, no space prefix, user-defined markup
/// pieces): llama.cpp's ids for llama.cpp's llama-spm texts plus Chinese and markup texts
/// (tests/data/vocab/gemma-3-270m.gguf.{inp,out}, made by scripts/fixtures/vocab-gemma3.py).
#[test]
fn gemma3_vocab_vectors() {
    let path = common::repo().join("models/gemma-3-270m-q4_k_m.gguf");
    if !path.exists() {
        eprintln!("skipped: models/gemma-3-270m-q4_k_m.gguf is not fetched (scripts/fetch-model.sh gemma3-270m)");
        return;
    }
    let tok = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    assert_eq!(tok.model_name(), "llama");
    assert!(tok.add_bos);
    // llama.cpp with add_special: BOS (2) first.
    assert_eq!(
        tok.tokenize("The capital of France is", true, false)
            .unwrap(),
        [2, 818, 5279, 529, 7001, 563]
    );
    let mut failures = Vec::new();
    let cases = common::vocab_vectors("gemma-3-270m");
    for (text, want) in &cases {
        let got = tok.tokenize(text, false, false).unwrap();
        if &got != want {
            failures.push(format!("{text:?}\n  got  {got:?}\n  want {want:?}"));
        } else {
            assert_eq!(&tok.decode(&got).unwrap(), text, "round trip");
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
