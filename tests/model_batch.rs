//! Continuous batching's decode step: `Llama::forward_batch` over sequences of different
//! lengths gives, row for row, the logits each sequence gets alone.

mod common;

use common::engine;
use wecom_edge_actors::model::llama::{KvCache, Logits};
use wecom_edge_actors::model::sampler::argmax;
use wecom_edge_actors::model::{ChatMessage, CpuBackend, ModelError};

fn rows(t: burn::tensor::Tensor<CpuBackend, 2>) -> Vec<Vec<f32>> {
    let [n, v] = t.dims();
    let flat = t.into_data().to_vec::<f32>().unwrap();
    (0..n).map(|i| flat[i * v..(i + 1) * v].to_vec()).collect()
}

#[test]
fn batched_decode_matches_one_sequence_at_a_time() {
    let e = engine();
    let questions = [
        "What is a database index?",
        "Name three colours.",
        "hi",
        "Explain TCP in one sentence, please.",
    ];
    let prompts: Vec<Vec<u32>> = questions
        .iter()
        .map(|q| {
            e.chat_prompt(&[ChatMessage::new("user", q.to_string())])
                .unwrap()
        })
        .collect();
    let prefill = |caches: &mut Vec<KvCache<CpuBackend>>| -> Vec<u32> {
        prompts
            .iter()
            .map(|p| {
                let mut c = e.model.new_cache(256);
                let logits = rows(e.model.forward(p, &mut c, Logits::Last).unwrap());
                caches.push(c);
                argmax(&logits[0])
            })
            .collect()
    };
    let (mut alone, mut batched) = (Vec::new(), Vec::new());
    let mut next_alone = prefill(&mut alone);
    let mut next_batched = prefill(&mut batched);
    for step in 0..6 {
        let mut want = Vec::new();
        for (c, t) in alone.iter_mut().zip(&next_alone) {
            want.push(rows(e.model.forward(&[*t], c, Logits::Last).unwrap()).remove(0));
        }
        let mut refs: Vec<&mut KvCache<CpuBackend>> = batched.iter_mut().collect();
        let got = rows(e.model.forward_batch(&next_batched, &mut refs).unwrap());
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            let diff = w
                .iter()
                .zip(g)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                diff < 1e-3,
                "step {step}, sequence {i}: max |Δlogit| = {diff}"
            );
            assert_eq!(argmax(w), argmax(g));
        }
        next_alone = want.iter().map(|r| argmax(r)).collect();
        next_batched = got.iter().map(|r| argmax(r)).collect();
        assert_eq!(next_alone, next_batched);
    }
    for (a, b) in alone.iter().zip(&batched) {
        assert_eq!(a.len(), b.len());
    }
}

#[test]
fn batched_decode_refuses_bad_input_without_writing() {
    let e = engine();
    let mut a = e.model.new_cache(4);
    let mut b = e.model.new_cache(4);
    e.model
        .forward(&[1, 2, 3, 4], &mut a, Logits::Last)
        .unwrap();
    let mut refs = vec![&mut a, &mut b];
    assert!(matches!(
        e.model.forward_batch(&[5, 6], &mut refs),
        Err(ModelError::ContextOverflow { .. })
    ));
    assert_eq!(b.len(), 0, "nothing written to the other cache");
    let mut refs = vec![&mut b];
    assert!(matches!(
        e.model.forward_batch(&[5, 6], &mut refs),
        Err(ModelError::InvalidParameter(_))
    ));
}
