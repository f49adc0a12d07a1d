//! The scheduler's continuous batching: several requests submitted at different times, decoded
//! together, each produce exactly the greedy answer they get alone; cancellation frees a slot;
//! an oversized request is refused with the context numbers.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use common::engine;
use wecom_edge_actors::model::scheduler::{self, SchedulerConfig};
use wecom_edge_actors::model::{
    ChatMessage, GenEvent, GenFailure, GenRequest, GenerateParams, StopReason,
};

fn params(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        ..Default::default()
    }
}

struct Submitted {
    events: tokio::sync::mpsc::UnboundedReceiver<GenEvent>,
    cancel: Arc<AtomicBool>,
}

fn request(prompt: Vec<u32>, max_tokens: usize) -> (GenRequest, Submitted) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    (
        GenRequest {
            prompt,
            params: params(max_tokens),
            events: tx,
            cancel: cancel.clone(),
            submitted: Instant::now(),
            cache_key: None,
        },
        Submitted { events: rx, cancel },
    )
}

/// Collects a request's text and its end.
fn drain(s: &mut Submitted) -> (String, Result<StopReason, GenFailure>) {
    let mut text = String::new();
    while let Some(ev) = s.events.blocking_recv() {
        match ev {
            GenEvent::Started { .. } => {}
            GenEvent::Text(t) => text.push_str(&t),
            GenEvent::Finished(stats) => return (text, Ok(stats.stop)),
            GenEvent::Failed(f) => return (text, Err(f)),
        }
    }
    panic!("the event channel closed without an end");
}

#[test]
fn batched_requests_match_single_generation() {
    let e = engine();
    let questions = [
        "What is a database index?",
        "Name three colours.",
        "Explain TCP in one sentence, please.",
    ];
    let prompts: Vec<Vec<u32>> = questions
        .iter()
        .map(|q| e.chat_prompt(&[ChatMessage::new("user", *q)]).unwrap())
        .collect();
    let expected: Vec<String> = prompts
        .iter()
        .map(|p| {
            e.generate(p, &params(24), |_| std::ops::ControlFlow::Continue(()))
                .unwrap()
                .text
        })
        .collect();

    let (tx, rx) = mpsc::channel();
    let alive = AtomicBool::new(true);
    let mut subs = Vec::new();
    std::thread::scope(|s| {
        s.spawn(|| scheduler::run(e, SchedulerConfig::default(), rx, &alive, &()));
        // The first request runs alone for a while; the others join between decode steps.
        let (r, sub) = request(prompts[0].clone(), 24);
        tx.send(r).unwrap();
        subs.push(sub);
        let first = subs[0].events.blocking_recv().unwrap();
        assert!(matches!(first, GenEvent::Started { .. }), "{first:?}");
        for p in &prompts[1..] {
            let (r, sub) = request(p.clone(), 24);
            tx.send(r).unwrap();
            subs.push(sub);
        }
        // A cancelled request ends as Cancelled and does not disturb the others.
        let (r, mut cancelled) = request(prompts[1].clone(), 200);
        cancelled.cancel.store(true, Ordering::Relaxed);
        tx.send(r).unwrap();
        // Too long for the context: refused with the numbers.
        let (r, mut huge) = request(prompts[2].clone(), 1 << 20);
        tx.send(r).unwrap();
        drop(tx);

        let mut got = Vec::new();
        for sub in &mut subs {
            got.push(drain(sub));
        }
        for ((text, end), want) in got.iter().zip(&expected) {
            assert_eq!(text, want);
            assert_eq!(*end, Ok(StopReason::MaxTokens));
        }
        assert_eq!(
            drain(&mut cancelled),
            (String::new(), Ok(StopReason::Cancelled))
        );
        match drain(&mut huge).1 {
            Err(GenFailure::ContextOverflow { context_length, .. }) => {
                assert_eq!(context_length, e.model.config.context_length)
            }
            other => panic!("expected a context overflow, got {other:?}"),
        }
    });
}

#[test]
fn a_conversation_reuses_its_prefix_cache() {
    let e = engine();
    let (tx, rx) = mpsc::channel();
    let alive = &AtomicBool::new(true);
    std::thread::scope(|s| {
        // No slack: the second turn outgrows the first turn's cache, which is grown.
        let cfg = SchedulerConfig {
            slack: 0,
            ..Default::default()
        };
        s.spawn(move || scheduler::run(e, cfg, rx, alive, &()));
        let run = |prompt: Vec<u32>, key: Option<&str>| {
            let (mut r, mut sub) = request(prompt, 24);
            r.cache_key = key.map(str::to_string);
            tx.send(r).unwrap();
            let cached = match sub.events.blocking_recv() {
                Some(GenEvent::Started { cached_tokens, .. }) => cached_tokens,
                other => panic!("{other:?}"),
            };
            (drain(&mut sub).0, cached)
        };
        let q1 = "Name three colours.";
        let p1 = e.chat_prompt(&[ChatMessage::new("user", q1)]).unwrap();
        let (a1, cached) = run(p1.clone(), Some("conv"));
        assert_eq!(cached, 0, "nothing parked yet");
        let p2 = e
            .chat_prompt(&[
                ChatMessage::new("user", q1),
                ChatMessage::new("assistant", a1.clone()),
                ChatMessage::new("user", "And three animals?"),
            ])
            .unwrap();
        let (a2, cached) = run(p2.clone(), Some("conv"));
        assert!(
            cached >= p1.len(),
            "the first turn's {} tokens come from the cache ({cached})",
            p1.len()
        );
        // The same prompt prefilled from scratch gives the same answer.
        let (fresh, cached) = run(p2, None);
        assert_eq!(cached, 0);
        assert_eq!(a2, fresh);
        drop(tx);
    });
}
