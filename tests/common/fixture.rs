//! What scripts/fixtures/synthetic.py recorded from llama.cpp for one model of
//! tests/data/synthetic (`NAME.json` beside `NAME.gguf`), read for tests/model_synthetic.rs (the
//! CPU path) and actors/model/tests/vulkan.rs (the Vulkan path), which include this file.

use std::path::Path;

use serde_json::Value;

/// One fixture: the whole JSON and the fields both paths compare against.
pub struct Fixture {
    /// The whole file (text, hparams, tensor_types, …; the Vulkan test reads none of it).
    #[allow(dead_code)]
    pub json: Value,
    /// The prompt's token ids (BOS as the GGUF says).
    pub token_ids: Vec<u32>,
    /// llama.cpp's logits at every prompt position, `[positions][n_vocab]`.
    pub logits: Vec<Vec<f64>>,
    /// llama.cpp's greedy continuation.
    pub greedy_token_ids: Vec<u32>,
    /// At each greedy step, llama.cpp's top-2 logit margin (a near-tie below the test's bound).
    pub greedy_top2_logit_margin: Vec<f64>,
}

/// Reads `dir/NAME.json`.
///
/// # Panics
/// A missing file or field.
pub fn read(dir: &Path, name: &str) -> Fixture {
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
            .unwrap();
    let floats = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    Fixture {
        token_ids: ids(&json["token_ids"]),
        logits: json["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(floats)
            .collect(),
        greedy_token_ids: ids(&json["greedy_token_ids"]),
        greedy_top2_logit_margin: floats(&json["greedy_top2_logit_margin"]),
        json,
    }
}

/// A JSON array of token ids.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The index of the largest value (the first of equal ones).
pub fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .copied()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |a, (i, x)| if x > a.1 { (i, x) } else { a },
        )
        .0 as u32
}
