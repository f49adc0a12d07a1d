#![warn(missing_docs)]
//! The box's OpenAI-compatible API (`[openai] listen`), for the company's other tools —
//! Dify, LangBot, IDE plug-ins, scripts with the `openai` client — on the LAN.
//!
//! * `POST /v1/chat/completions`, `POST /v1/completions` ([`request`] lists the parameters),
//!   streaming (`data: {chunk}` lines, `data: [DONE]`, a last `usage` chunk with
//!   `choices: []` when `stream_options.include_usage` is set) or not; `GET /v1/models`;
//!   `GET /health` (`{"status":"ok"}`, 503 while the default generator is not ready; public,
//!   as llama-server's is).
//! * Keys ([`auth`]): `Authorization: Bearer` or `X-Api-Key`, constant-time; with no key
//!   configured the API only starts when `allow_anonymous` is set on a loopback address
//!   (checked by the configuration).
//! * Each request is one stateless turn through the same stages as a WeCom message
//!   ([`wecom_edge_session::TurnCtx::api`]): admission and rate limits (per key, and per
//!   `user` within it), the content filter in and out, knowledge, the generator (sharing the
//!   local model's batch with WeCom chats), audit rows under `openai/{key id}/{request id}`
//!   (`api_request`, then the turn's usual rows) — never the key.
//! * A stage that ends a turn early answers with OpenAI's error shape ([`error::ApiError`]):
//!   429 for rate limits, 400 `context_length_exceeded`, 503 while the model restarts. A
//!   blocked term is not an error: the answer is the refusal, `finish_reason:
//!   "content_filter"`.
//! * Stop sequences are applied here: the text is held back by the longest one less a
//!   character, and the answer ends (the generation cancelled) where one appears.
//! * A client that disconnects cancels its generation.

pub mod auth;
pub mod error;
pub mod request;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use wecom_edge_model::serve::Generator;
use wecom_edge_model::{GenStats, StopReason};
use wecom_edge_session::{ApiEvent, ApiTurn, Generators, SessionContext, Turn, TurnCtx};

use auth::ApiKey;
use error::ApiError;
use request::{Request, Shape};

/// What the API serves with.
#[derive(Clone)]
pub struct ApiState {
    /// What every turn shares (the WeCom sessions' own).
    pub ctx: SessionContext,
    /// The keys; empty only with `anonymous`.
    pub keys: Arc<Vec<ApiKey>>,
    /// Requests without a key are served (loopback only; the configuration checks that).
    pub anonymous: bool,
    /// The models `GET /v1/models` lists, by id: the default first; a request's `model`
    /// naming one of them generates there, any other generates on the default.
    pub models: Arc<Vec<(String, Arc<dyn Generator>)>>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("keys", &self.keys)
            .field("anonymous", &self.anonymous)
            .finish_non_exhaustive()
    }
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/health", get(health))
        .route("/v1/health", get(health))
        .fallback(|uri: Uri| async move { ApiError::not_found(uri.path()) })
        .with_state(state)
}

/// Who is asking: the key's id and whether the persona applies.
fn caller(state: &ApiState, headers: &HeaderMap) -> Result<(String, bool), ApiError> {
    match auth::check(&state.keys, headers) {
        Some(k) => Ok((k.id.clone(), k.persona)),
        None if state.anonymous && state.keys.is_empty() => Ok(("anonymous".into(), false)),
        None => Err(ApiError::unauthorized()),
    }
}

async fn chat_completions(State(s): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    serve(s, headers, Shape::Chat, body).await
}

async fn completions(State(s): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    serve(s, headers, Shape::Completion, body).await
}

async fn models(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(e) = caller(&s, &headers) {
        return e.into_response();
    }
    let data: Vec<Value> = s
        .models
        .iter()
        .map(|(id, _)| json!({"id": id, "object": "model", "created": 0, "owned_by": "wecom-edge"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

async fn health(State(s): State<ApiState>) -> Response {
    let ready = match s.models.first() {
        Some((_, g)) => g.ready(Duration::from_millis(200)).await.is_some(),
        None => false,
    };
    if ready {
        Json(json!({"status": "ok"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": {"code": 503, "message": "the model is not ready", "type": "unavailable_error"}})),
        )
            .into_response()
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A response id: `chatcmpl-` / `cmpl-` and 24 hex digits (time and a counter).
fn response_id(shape: Shape) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let prefix = match shape {
        Shape::Chat => "chatcmpl",
        Shape::Completion => "cmpl",
    };
    format!("{prefix}-{t:016x}{n:08x}")
}

/// Sets the flag when dropped: the client went away (or the answer ended).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One request: checked, run as a turn, answered.
async fn serve(s: ApiState, headers: HeaderMap, shape: Shape, body: Bytes) -> Response {
    let (key_id, with_persona) = match caller(&s, &headers) {
        Ok(c) => c,
        Err(e) => {
            wecom_edge_audit::record(
                "api_refused",
                "openai",
                "",
                json!({"status": 401, "reason": "invalid_api_key"}),
            );
            return e.into_response();
        }
    };
    let req = match request::parse(shape, &body) {
        Ok(r) => r,
        Err(e) => {
            wecom_edge_audit::record(
                "api_refused",
                "openai",
                &key_id,
                json!({"status": e.status.as_u16(), "param": e.param, "key_id": key_id}),
            );
            return e.into_response();
        }
    };
    let id = response_id(shape);
    let (model, generator) = s
        .models
        .iter()
        .find(|(m, _)| Some(m) == req.model.as_ref())
        .or(s.models.first())
        .map(|(m, g)| (m.clone(), g.clone()))
        .expect("the API always has a default model");
    wecom_edge_audit::record(
        "api_request",
        "openai",
        &format!("openai/{key_id}/{id}"),
        json!({"key_id": key_id, "request_id": id, "endpoint": match shape { Shape::Chat => "chat", Shape::Completion => "completions" },
               "model": model, "stream": req.stream, "messages": req.history.len() + 1}),
    );
    let persona = s.ctx.personas.default_value();
    let mut own = (*persona).clone();
    if let Some(n) = req.max_tokens {
        own.generate.max_tokens = n;
    }
    if let Some(t) = req.temperature {
        own.generate.sampling.temperature = t;
    }
    if let Some(p) = req.top_p {
        own.generate.sampling.top_p = p;
    }
    if let Some(seed) = req.seed {
        own.generate.sampling.seed = seed;
    }
    let system = match (with_persona, req.system.clone()) {
        (true, Some(own_system)) => Some(format!("{}\n\n{own_system}", persona.system_message())),
        (true, None) => Some(persona.system_message()),
        (false, system) => system,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let mut ctx = s.ctx.clone();
    ctx.generators = Generators::new(generator);
    let turn = TurnCtx::api(
        ctx,
        ApiTurn {
            channel: "openai",
            key_id,
            user: req.user.clone(),
            request_id: id.clone(),
            system,
            history: req
                .history
                .iter()
                .map(|(role, content)| Turn {
                    role: role.clone(),
                    content: content.clone(),
                })
                .collect(),
            question: req.question.clone(),
            persona: Arc::new(own),
            events: tx,
            cancel: cancel.clone(),
        },
    );
    tokio::spawn(turn.run());
    let answer = Answer {
        id,
        model,
        created: now_s(),
        req,
        rx,
        guard: CancelOnDrop(cancel),
        text: Text::default(),
        usage: None,
        stopped: None,
    };
    if answer.req.stream {
        answer.stream().await
    } else {
        answer.whole().await
    }
}

/// The answer's text as the client sees it: the turn's frames (each the whole answer so far)
/// cut at a stop sequence and held back by the longest one, as deltas.
#[derive(Default)]
struct Text {
    /// What the client was sent.
    sent: String,
    /// Put before the turn's text after it started again (a failover mid-answer).
    lead: String,
    /// A stop sequence ended the answer.
    stopped: bool,
}

impl Text {
    /// The delta to send for the frame `frame` (`last`: the final text, nothing held back).
    fn delta(&mut self, frame: &str, stops: &[String], last: bool) -> String {
        if self.stopped {
            return String::new();
        }
        let mut view = format!("{}{frame}", self.lead);
        if !view.starts_with(&self.sent) {
            // The answer started again: it continues after what the client has.
            self.lead = format!("{}\n\n", self.sent);
            view = format!("{}{frame}", self.lead);
        }
        let mut from = self
            .sent
            .len()
            .saturating_sub(stops.iter().map(String::len).max().unwrap_or(0));
        while !view.is_char_boundary(from) {
            from -= 1;
        }
        let cut = stops
            .iter()
            .filter_map(|s| view[from..].find(s.as_str()).map(|i| from + i))
            .min();
        let end = match cut {
            Some(i) => {
                self.stopped = true;
                i
            }
            None if last => view.len(),
            None => {
                let hold = stops.iter().map(|s| s.chars().count()).max().unwrap_or(1) - 1;
                let mut end = view.len();
                for _ in 0..hold {
                    end = view[..end].char_indices().last().map_or(0, |(i, _)| i);
                }
                end
            }
        };
        if end <= self.sent.len() {
            return String::new();
        }
        let d = view[self.sent.len()..end].to_string();
        self.sent.push_str(&d);
        d
    }
}

/// One answer being produced.
struct Answer {
    id: String,
    model: String,
    created: u64,
    req: Request,
    rx: mpsc::UnboundedReceiver<ApiEvent>,
    guard: CancelOnDrop,
    text: Text,
    usage: Option<GenStats>,
    stopped: Option<&'static str>,
}

/// The next step of an answer.
enum Step {
    Delta(String),
    /// The turn ended early before any text: answer with this error.
    Error(ApiError),
    Done,
}

impl Answer {
    /// The next piece of the answer.
    async fn next(&mut self) -> Step {
        loop {
            let Some(ev) = self.rx.recv().await else {
                return Step::Done;
            };
            match ev {
                ApiEvent::Text(t) => {
                    let stops = self.req.stop.clone();
                    let d = self.text.delta(&t, &stops, false);
                    if self.text.stopped {
                        // The rest is not wanted.
                        self.guard.0.store(true, Ordering::Relaxed);
                    }
                    if !d.is_empty() {
                        return Step::Delta(d);
                    }
                }
                ApiEvent::Usage(u) => self.usage = Some(u),
                ApiEvent::Stopped(r) => self.stopped = Some(r),
                ApiEvent::Final(t) => {
                    match self.stopped {
                        // A refusal is the answer.
                        Some("blocked_in") if self.text.sent.is_empty() => {}
                        // Cut at a blocked term, or by the client's stop: what was sent stands.
                        Some("blocked_out") | Some("cancelled") => return Step::Done,
                        Some(r) if self.text.sent.is_empty() => {
                            return Step::Error(ApiError::for_stop(r, &t))
                        }
                        Some(_) => return Step::Done,
                        None => {}
                    }
                    let stops = self.req.stop.clone();
                    let d = self.text.delta(&t, &stops, true);
                    self.rx.close();
                    return if d.is_empty() {
                        Step::Done
                    } else {
                        Step::Delta(d)
                    };
                }
            }
        }
    }

    fn finish_reason(&self) -> &'static str {
        if matches!(self.stopped, Some("blocked_in" | "blocked_out")) {
            return "content_filter";
        }
        match self.usage.as_ref().map(|u| u.stop) {
            Some(StopReason::MaxTokens) if !self.text.stopped => "length",
            _ => "stop",
        }
    }

    fn usage_json(&self) -> Value {
        let (p, c) = self
            .usage
            .as_ref()
            .map_or((0, 0), |u| (u.prompt_tokens, u.tokens));
        let cached = self.usage.as_ref().map_or(0, |u| u.cached_tokens);
        json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
               "prompt_tokens_details": {"cached_tokens": cached}})
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.req.shape, chunk) {
            (Shape::Chat, false) => "chat.completion",
            (Shape::Chat, true) => "chat.completion.chunk",
            (Shape::Completion, _) => "text_completion",
        }
    }

    /// A chunk with `delta` (chat) or `text` (completions) and `finish_reason`.
    fn chunk(&self, delta: Option<Value>, text: &str, finish: Option<&str>) -> Value {
        let choice = match self.req.shape {
            Shape::Chat => {
                json!({"index": 0, "delta": delta.unwrap_or_else(|| json!({"content": text})),
                                  "logprobs": null, "finish_reason": finish})
            }
            Shape::Completion => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
            }
        };
        json!({"id": self.id, "object": self.object(true), "created": self.created,
               "model": self.model, "choices": [choice]})
    }

    /// The whole answer as one JSON body.
    async fn whole(mut self) -> Response {
        loop {
            match self.next().await {
                Step::Delta(_) => {}
                Step::Error(e) => return e.into_response(),
                Step::Done => break,
            }
        }
        let text = self.text.sent.clone();
        let choice = match self.req.shape {
            Shape::Chat => json!({"index": 0, "message": {"role": "assistant", "content": text},
                                  "logprobs": null, "finish_reason": self.finish_reason()}),
            Shape::Completion => json!({"index": 0, "text": text, "logprobs": null,
                                        "finish_reason": self.finish_reason()}),
        };
        Json(
            json!({"id": self.id, "object": self.object(false), "created": self.created,
                    "model": self.model, "choices": [choice], "usage": self.usage_json()}),
        )
        .into_response()
    }

    /// The answer as SSE: the status is decided by the first step (an early stop is an error
    /// response, not a stream).
    async fn stream(mut self) -> Response {
        let first = self.next().await;
        if let Step::Error(e) = first {
            return e.into_response();
        }
        let (tx, rx) = mpsc::channel::<Result<Event, std::convert::Infallible>>(64);
        tokio::spawn(async move {
            let send = |v: Value| {
                let tx = tx.clone();
                async move {
                    tx.send(Ok(Event::default().data(v.to_string())))
                        .await
                        .is_ok()
                }
            };
            if self.req.shape == Shape::Chat
                && !send(self.chunk(Some(json!({"role": "assistant", "content": ""})), "", None))
                    .await
            {
                return;
            }
            let mut step = first;
            loop {
                match step {
                    Step::Delta(d) => {
                        if !send(self.chunk(None, &d, None)).await {
                            return; // the client went away: the guard cancels
                        }
                    }
                    Step::Error(e) => {
                        // Mid-answer: llama-server's way, an error event.
                        let _ = send(e.body()).await;
                        break;
                    }
                    Step::Done => break,
                }
                step = self.next().await;
            }
            let finish = self.finish_reason();
            let _ = send(self.chunk(Some(json!({})), "", Some(finish))).await;
            if self.req.include_usage {
                let usage = json!({"id": self.id, "object": self.object(true), "created": self.created,
                                   "model": self.model, "choices": [], "usage": self.usage_json()});
                let _ = send(usage).await;
            }
            let _ = tx.send(Ok(Event::default().data("[DONE]"))).await;
        });
        Sse::new(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|e| (e, rx))
        }))
        .keep_alive(KeepAlive::default())
        .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_hold_back_and_cut_at_stop_sequences() {
        let stops = vec!["END".to_string()];
        let mut t = Text::default();
        assert_eq!(t.delta("Hello E", &stops, false), "Hello");
        assert_eq!(t.delta("Hello EN", &stops, false), " ");
        assert_eq!(t.delta("Hello ENd more", &stops, false), "ENd mo");
        assert_eq!(t.delta("Hello ENd more END and on", &stops, false), "re ");
        assert!(t.stopped);
        assert_eq!(
            t.delta("Hello ENd more END and on, final", &stops, true),
            ""
        );
        assert_eq!(t.sent, "Hello ENd more ");
        // No stops: every frame's new text goes out at once; the final adds the rest.
        let mut t = Text::default();
        assert_eq!(t.delta("你好", &[], false), "你好");
        assert_eq!(t.delta("你好，世界", &[], true), "，世界");
        // Multi-byte text before a stop sequence.
        let mut t = Text::default();
        let stops = vec!["la".to_string()];
        assert_eq!(t.delta("L'Éto", &stops, false), "L'Ét");
        assert_eq!(t.delta("L'Étoile, la", &stops, false), "oile, ");
        // A restart continues after what was sent.
        let mut t = Text::default();
        assert_eq!(t.delta("half", &[], false), "half");
        assert_eq!(t.delta("whole", &[], true), "\n\nwhole");
    }
}
