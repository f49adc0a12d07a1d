//! `cargo bench --bench inference`: prefill tok/s (512-token prompt) and decode tok/s (128
//! single-token steps from an empty context, llama-bench's pp512/tg128) at 1 and 2 threads, the
//! peak RSS, and llama.cpp on the same file and machine when llama-cpp-python is installed.
//!
//! Each configuration runs in a child process (the thread pools are sized once per process, and
//! peak RSS is per process). Each figure is the best of 3 runs.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{json, Value};
use wecom_edge_actors::model::{CpuBackend, Engine, DEFAULT_MODEL_FILE};

const N_PROMPT: usize = 512;
const N_GEN: usize = 128;
const REPS: usize = 3;

fn model_path() -> String {
    std::env::var("WECOM_EDGE_MODEL")
        .unwrap_or_else(|_| format!("{}/models/{DEFAULT_MODEL_FILE}", env!("CARGO_MANIFEST_DIR")))
}

/// 512 prompt tokens: the reference paragraph, repeated.
fn prompt_tokens(engine: &Engine<CpuBackend>) -> Vec<u32> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/perplexity-text.txt"
    ))
    .unwrap();
    let mut ids = Vec::new();
    while ids.len() < N_PROMPT {
        ids.extend(engine.tokenizer.encode(&text).unwrap());
    }
    ids.truncate(N_PROMPT);
    ids
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn child(threads: usize) {
    wecom_edge_actors::model::set_cpu_threads(threads);
    let engine = Engine::<CpuBackend>::load(model_path(), &Default::default()).expect("load model");
    let tokens = prompt_tokens(&engine);
    let mut best_pp = f64::MAX;
    let mut best_tg = f64::MAX;
    for _ in 0..REPS {
        let mut cache = engine.model.new_cache(N_PROMPT + N_GEN);
        let t = Instant::now();
        engine.logits_last(&tokens, &mut cache).unwrap();
        best_pp = best_pp.min(t.elapsed().as_secs_f64());

        let mut cache = engine.model.new_cache(N_GEN);
        let t = Instant::now();
        let mut tok = tokens[0];
        for _ in 0..N_GEN {
            let logits = engine.logits_last(&[tok], &mut cache).unwrap();
            tok = wecom_edge_actors::model::sampler::argmax(&logits);
        }
        best_tg = best_tg.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{}",
        json!({
            "threads": threads,
            "prefill_tokens_per_s": N_PROMPT as f64 / best_pp,
            "decode_tokens_per_s": N_GEN as f64 / best_tg,
            "peak_rss_mb": peak_rss_mb(),
            "prompt_tokens": tokens,
        })
    );
}

fn run_child(threads: usize) -> Value {
    let out = Command::new(std::env::current_exe().unwrap())
        .env("WECOM_EDGE_BENCH_CHILD", threads.to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("run benchmark child");
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.lines().last().unwrap_or("null")).expect("child result")
}

fn llama_cpp(threads: usize, tokens: &Value) -> Option<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/llama_cpp_bench.py");
    let mut child = Command::new("python3")
        .args([
            script,
            &model_path(),
            &threads.to_string(),
            &N_PROMPT.to_string(),
            &N_GEN.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()?
        .write_all(tokens.to_string().as_bytes())
        .ok()?;
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!(
            "llama.cpp not measured ({}): pip install llama-cpp-python",
            err.lines().last().unwrap_or("failed")
        );
        return None;
    }
    serde_json::from_slice(out.stdout.trim_ascii()).ok()
}

fn main() {
    if let Ok(t) = std::env::var("WECOM_EDGE_BENCH_CHILD") {
        return child(t.parse().unwrap());
    }
    // `cargo bench` passes --bench; `cargo test --benches` runs with no arguments: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    println!(
        "inference: {} (pp{N_PROMPT}, tg{N_GEN}, best of {REPS})",
        model_path()
    );
    println!(
        "{:>8} {:>14} {:>14} {:>10} {:>16} {:>16} {:>9} {:>9}",
        "threads",
        "prefill tok/s",
        "decode tok/s",
        "peak RSS",
        "llama.cpp pp",
        "llama.cpp tg",
        "pp ratio",
        "tg ratio"
    );
    for threads in [1usize, 2] {
        let ours = run_child(threads);
        let theirs = llama_cpp(threads, &ours["prompt_tokens"]);
        let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let (pp, tg) = (
            f(&ours, "prefill_tokens_per_s"),
            f(&ours, "decode_tokens_per_s"),
        );
        let (lpp, ltg) = theirs.as_ref().map_or((f64::NAN, f64::NAN), |t| {
            (f(t, "prefill_tokens_per_s"), f(t, "decode_tokens_per_s"))
        });
        println!(
            "{threads:>8} {pp:>14.1} {tg:>14.1} {:>7.0} MB {lpp:>16.1} {ltg:>16.1} {:>8.2}x {:>8.2}x",
            f(&ours, "peak_rss_mb"),
            pp / lpp,
            tg / ltg
        );
    }
}
