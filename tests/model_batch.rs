//! The one forward path (`Llama::step`) computes each row on its own, so results the box
//! promises to be exact are exact, bit for bit, on every CPU: batched decode over sequences of
//! different lengths gives, row for row, the logits each sequence gets alone, and a prompt
//! prefilled in chunks (beside another sequence's decode step) gives the logits of one prefill.

mod common;

use common::engine;
use wecom_edge_actors::model::llama::{Chunk, KvCache, Logits};
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
            assert!(
                bits_equal(w, g),
                "step {step}, sequence {i}: batched logits differ from single decode"
            );
        }
        next_alone = want.iter().map(|r| argmax(r)).collect();
        next_batched = got.iter().map(|r| argmax(r)).collect();
        assert_eq!(next_alone, next_batched);
    }
    for (a, b) in alone.iter().zip(&batched) {
        assert_eq!(a.len(), b.len());
    }
}

fn bits_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn chunked_prefill_is_exactly_one_prefill() {
    let e = engine();
    let prompt = e
        .chat_prompt(&[ChatMessage::new(
            "user",
            "Explain, in two sentences, why a database index speeds up lookups.",
        )])
        .unwrap();
    let mut whole = e.model.new_cache(256);
    let want = rows(e.model.forward(&prompt, &mut whole, Logits::All).unwrap());
    // The same prompt in uneven chunks, each step shared with another sequence's decode token.
    let other = e.chat_prompt(&[ChatMessage::new("user", "hi")]).unwrap();
    let mut other_cache = e.model.new_cache(256);
    let mut alone_cache = e.model.new_cache(256);
    e.model
        .forward(&other, &mut other_cache, Logits::Last)
        .unwrap();
    e.model
        .forward(&other, &mut alone_cache, Logits::Last)
        .unwrap();
    let mut chunked = e.model.new_cache(256);
    let mut got = Vec::new();
    let mut at = 0;
    for (i, size) in [5usize, 1, 17, 32, 3, usize::MAX].into_iter().enumerate() {
        let end = (at + size).min(prompt.len());
        let tok = other[i % other.len()];
        let mut chunks = [
            Chunk {
                tokens: &prompt[at..end],
                cache: &mut chunked,
                logits: Logits::All,
            },
            Chunk {
                tokens: std::slice::from_ref(&tok),
                cache: &mut other_cache,
                logits: Logits::Last,
            },
        ];
        let mut out = rows(e.model.step(&mut chunks).unwrap());
        let decoded = out.pop().unwrap();
        let alone = rows(
            e.model
                .forward(&[tok], &mut alone_cache, Logits::Last)
                .unwrap(),
        );
        assert!(
            bits_equal(&decoded, &alone[0]),
            "the decode row beside chunk {i}"
        );
        got.extend(out);
        at = end;
        if at == prompt.len() {
            break;
        }
    }
    assert_eq!(got.len(), want.len());
    for (p, (w, g)) in want.iter().zip(&got).enumerate() {
        assert!(bits_equal(w, g), "position {p}: chunked prefill differs");
    }
    assert_eq!(chunked.len(), whole.len());
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
