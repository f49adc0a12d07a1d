//! A scripted OpenAI-compatible endpoint on loopback (chunks as llama-server and vLLM send
//! them, an error status, a stream cut mid-answer) for the upstream generator's tests.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};

/// What the endpoint does with the next request.
#[derive(Clone)]
pub enum Answer {
    /// Streams these content deltas, a finish chunk, a usage chunk, `[DONE]`.
    Text(Vec<&'static str>),
    /// Answers with this status and an OpenAI-shaped error.
    Status(u16),
    /// Streams these deltas, then breaks the connection.
    Cut(Vec<&'static str>),
}

/// The answers still to give and the requests seen.
#[derive(Default)]
pub struct Script {
    pub answers: VecDeque<Answer>,
    /// Each request's headers and body, in order.
    pub requests: Vec<(HeaderMap, Value)>,
}

/// The script, shared with the server.
pub type Shared = Arc<Mutex<Script>>;

fn chunk(v: Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

async fn chat(State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let answer = {
        let mut s = s.lock().unwrap();
        s.requests.push((headers, body));
        s.answers.pop_front().unwrap_or(Answer::Status(500))
    };
    let (deltas, cut) = match answer {
        Answer::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap();
            return (
                status,
                Json(json!({"error": {"message": "scripted failure", "type": "server_error", "code": code}})),
            )
                .into_response();
        }
        Answer::Text(d) => (d, false),
        Answer::Cut(d) => (d, true),
    };
    let mut parts: Vec<Result<Bytes, std::io::Error>> = vec![Ok(chunk(
        json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": null}}]}),
    ))];
    for d in &deltas {
        parts.push(Ok(chunk(
            json!({"choices": [{"index": 0, "delta": {"content": d}, "finish_reason": null}]}),
        )));
    }
    if cut {
        parts.push(Err(std::io::Error::other("the server went away")));
    } else {
        parts.push(Ok(chunk(
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        )));
        parts.push(Ok(chunk(json!({"choices": [], "usage": {
            "prompt_tokens": 9, "completion_tokens": deltas.len(), "total_tokens": 9 + deltas.len()}}))));
        parts.push(Ok(Bytes::from("data: [DONE]\n\n")));
    }
    // The break comes after the deltas reached the client, as when a server is killed.
    let stream = futures_util::stream::iter(parts).then(|p| async move {
        if p.is_err() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        p
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn models() -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": "qwen", "object": "model", "max_model_len": 32768}]}),
    )
}

/// An endpoint on loopback answering `answers` in order; its script, and its base URL.
pub async fn endpoint(answers: Vec<Answer>) -> (Shared, String) {
    let s: Shared = Arc::new(Mutex::new(Script {
        answers: answers.into(),
        ..Default::default()
    }));
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .with_state(s.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (s, url)
}

/// A port nothing listens on.
pub fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    format!("http://{a}/v1")
}
