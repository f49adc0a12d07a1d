//! The upstream generator and the failover against real HTTP servers on loopback: an
//! OpenAI-compatible endpoint whose answers the test scripts (chunks, an error status, a
//! stream cut mid-answer), the way llama-server and vLLM send them.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::upstream::{dead_url, endpoint, Answer};
use serde_json::json;
use wecom_edge_actors::model::serve::failover::Failover;
use wecom_edge_actors::model::serve::upstream::{Upstream, UpstreamConfig};
use wecom_edge_actors::model::serve::{ChatRequest, Generator};
use wecom_edge_actors::model::{
    ChatMessage, GenEvent, GenFailure, GenStats, GenerateParams, StopReason,
};

fn upstream(name: &str, url: &str) -> Upstream {
    let mut c = UpstreamConfig::new(name, url, "qwen");
    c.api_key = Some("sk-test-key".into());
    c.timeout = Duration::from_secs(5);
    c.retries = 2;
    c.cooldown = Duration::from_secs(60);
    Upstream::new(c).unwrap()
}

fn request() -> ChatRequest {
    ChatRequest {
        messages: vec![
            ChatMessage::new("system", "你是助手。"),
            ChatMessage::new("user", "你好"),
        ],
        params: GenerateParams {
            max_tokens: 32,
            ..Default::default()
        },
        cancel: Arc::new(AtomicBool::new(false)),
        cache_key: None,
        submitted: Instant::now(),
    }
}

/// Everything a generation sent, in order.
async fn events(g: &dyn Generator) -> Vec<GenEvent> {
    let ready = g.ready(Duration::from_secs(5)).await.expect("ready");
    let mut rx = ready.submit(request()).expect("submitted").events;
    let mut out = Vec::new();
    while let Some(ev) = rx.recv().await {
        let end = matches!(ev, GenEvent::Finished(_) | GenEvent::Failed(_));
        out.push(ev);
        if end {
            break;
        }
    }
    out
}

fn text(evs: &[GenEvent]) -> String {
    evs.iter()
        .filter_map(|e| match e {
            GenEvent::Text(s) => Some(s.as_str()),
            _ => None,
        })
        .collect()
}

fn finished(evs: &[GenEvent]) -> Option<&GenStats> {
    evs.iter().find_map(|e| match e {
        GenEvent::Finished(s) => Some(s),
        _ => None,
    })
}

fn failed(evs: &[GenEvent]) -> Option<&GenFailure> {
    evs.iter().find_map(|e| match e {
        GenEvent::Failed(f) => Some(f),
        _ => None,
    })
}

#[tokio::test]
async fn streams_an_answer_with_its_usage() {
    let (script, url) = endpoint(vec![Answer::Text(vec!["你好", "！", "有什么可以帮你？"])]).await;
    let up = upstream("fleet", &url);
    let ready = up.ready(Duration::from_secs(1)).await.unwrap();
    // The context length comes from the endpoint's /models (vLLM's max_model_len).
    assert_eq!(ready.context_length(), 32768);
    assert!(ready.prompt_tokens(&request().messages).unwrap() >= 9);
    let evs = events(&up).await;
    assert!(matches!(evs[0], GenEvent::Started { .. }));
    assert_eq!(text(&evs), "你好！有什么可以帮你？");
    let s = finished(&evs).expect("finished");
    assert_eq!(
        (s.stop, s.prompt_tokens, s.tokens),
        (StopReason::EndOfTurn, 9, 3)
    );
    let s = script.lock().unwrap();
    let (headers, body) = &s.requests[0];
    assert_eq!(headers["authorization"], "Bearer sk-test-key");
    assert_eq!(body["model"], "qwen");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["max_tokens"], 32);
    assert_eq!(
        body["messages"][1],
        json!({"role": "user", "content": "你好"})
    );
}

#[tokio::test]
async fn retries_a_5xx_and_a_429_then_answers() {
    let (script, url) = endpoint(vec![
        Answer::Status(503),
        Answer::Status(429),
        Answer::Text(vec!["好"]),
    ])
    .await;
    let up = upstream("fleet", &url);
    let evs = events(&up).await;
    assert_eq!(text(&evs), "好");
    assert_eq!(script.lock().unwrap().requests.len(), 3);
    assert!(!up.breaker().is_open(Instant::now()));
}

#[tokio::test]
async fn a_4xx_is_not_retried() {
    let (script, url) = endpoint(vec![Answer::Status(401), Answer::Text(vec!["no"])]).await;
    let up = upstream("fleet", &url);
    let evs = events(&up).await;
    let f = failed(&evs).expect("failed");
    assert!(f.to_string().contains("401"), "{f}");
    assert_eq!(script.lock().unwrap().requests.len(), 1);
}

#[tokio::test]
async fn an_unreachable_upstream_fails_after_its_retries_and_opens_the_breaker() {
    let up = upstream("fleet", &dead_url());
    let evs = events(&up).await;
    let f = failed(&evs).expect("failed").to_string();
    assert!(f.contains("unavailable after 3 tries"), "{f}");
    assert!(up.breaker().is_open(Instant::now()));
    // Open: not ready, so a turn goes to its fallback at once.
    assert!(up.ready(Duration::from_secs(1)).await.is_none());
}

#[tokio::test]
async fn a_stream_cut_mid_answer_is_a_failure() {
    let (_s, url) = endpoint(vec![Answer::Cut(vec!["一半"])]).await;
    let up = upstream("fleet", &url);
    let evs = events(&up).await;
    assert_eq!(text(&evs), "一半");
    assert!(failed(&evs).is_some(), "{evs:?}");
    assert!(up.breaker().is_open(Instant::now()));
}

#[tokio::test]
async fn failover_before_any_text_is_one_answer() {
    let (_s, url) = endpoint(vec![Answer::Text(vec!["备用", "回答"])]).await;
    let g = Failover::new(
        Arc::new(upstream("fleet", &dead_url())),
        Arc::new(upstream("spare", &url)),
    );
    assert_eq!(g.name(), "fleet");
    let evs = events(&g).await;
    assert_eq!(text(&evs), "备用回答");
    assert!(evs.iter().any(
        |e| matches!(e, GenEvent::Failover { from, to, restart: false, .. }
        if from == "fleet" && to == "spare")
    ));
    assert!(finished(&evs).is_some());
    // The primary's breaker is open now: the next turn starts on the fallback, announced.
    let ready = g.ready(Duration::from_secs(1)).await.unwrap();
    assert_eq!(ready.name(), "spare");
    let evs = events(&g).await;
    assert!(matches!(&evs[0], GenEvent::Failover { reason, .. } if reason == "not ready"));
}

#[tokio::test]
async fn failover_mid_answer_restarts_on_the_fallback() {
    let (_p, primary) = endpoint(vec![Answer::Cut(vec!["答到", "一半"])]).await;
    let (_f, spare) = endpoint(vec![Answer::Text(vec!["完整的回答"])]).await;
    let g = Failover::new(
        Arc::new(upstream("fleet", &primary)),
        Arc::new(upstream("spare", &spare)),
    );
    let evs = events(&g).await;
    let at = evs
        .iter()
        .position(|e| matches!(e, GenEvent::Failover { restart: true, .. }))
        .expect("a restart");
    // What came after the restart is the whole answer.
    assert_eq!(text(&evs[..at]), "答到一半");
    assert_eq!(text(&evs[at..]), "完整的回答");
    assert!(finished(&evs).is_some());
    assert!(failed(&evs).is_none());
}

#[tokio::test]
async fn cancelling_stops_the_stream() {
    let (_s, url) = endpoint(vec![Answer::Text(vec!["a"; 50])]).await;
    let up = upstream("fleet", &url);
    let ready = up.ready(Duration::from_secs(1)).await.unwrap();
    let req = request();
    req.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut rx = ready.submit(req).unwrap().events;
    let mut stop = None;
    while let Some(ev) = rx.recv().await {
        if let GenEvent::Finished(s) = ev {
            stop = Some(s.stop);
        }
    }
    assert_eq!(stop, Some(StopReason::Cancelled));
}
