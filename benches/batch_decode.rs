//! Aggregate decode throughput of `Llama::forward_batch` for 1, 2, 4 and 8 sequences
//! (the model-level step continuous batching stands on). Prints tok/s and the ratio to one
//! sequence. Run: `cargo bench --bench batch_decode` (needs scripts/fetch-model.sh); another
//! GGUF with `WECOM_EDGE_MODEL=FILE`.

use std::time::Instant;

use wecom_edge_actors::model::llama::{KvCache, Logits};
use wecom_edge_actors::model::{ChatMessage, CpuBackend, Engine, DEFAULT_MODEL_FILE};

fn main() {
    let path = std::env::var_os("WECOM_EDGE_MODEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("models")
                .join(DEFAULT_MODEL_FILE)
        });
    let e = Engine::<CpuBackend>::load(&path, &Default::default())
        .expect("model (run scripts/fetch-model.sh)");
    // A base model (no chat template, e.g. gemma-3-270m) takes the question as raw text.
    let question = "Tell me about databases.";
    let prompt = e
        .chat_prompt(&[ChatMessage::new("user", question.to_string())])
        .or_else(|_| e.tokenizer.tokenize(question, true, false))
        .unwrap();
    const STEPS: usize = 64;
    let mut single = 0.0;
    for n in [1usize, 2, 4, 8] {
        let mut caches: Vec<KvCache<CpuBackend>> = (0..n)
            .map(|_| {
                let mut c = e.model.new_cache(prompt.len() + STEPS + 1);
                e.model.forward(&prompt, &mut c, Logits::Last).unwrap();
                c
            })
            .collect();
        let tokens = vec![42u32; n];
        let t0 = Instant::now();
        for _ in 0..STEPS {
            let mut refs: Vec<&mut KvCache<CpuBackend>> = caches.iter_mut().collect();
            let _ = e.model.forward_batch(&tokens, &mut refs).unwrap();
        }
        let tps = (n * STEPS) as f64 / t0.elapsed().as_secs_f64();
        if n == 1 {
            single = tps;
        }
        println!(
            "batch {n}: {tps:.1} tok/s aggregate ({:.2}x one sequence)",
            tps / single
        );
    }
}
