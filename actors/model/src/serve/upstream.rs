//! An upstream generator: an OpenAI-compatible chat endpoint elsewhere on the network (vLLM,
//! llama.cpp's `llama-server`, Ollama, another wecom-edge box), streamed over SSE.
//!
//! * Request: `POST {base_url}/chat/completions` with `stream: true` and
//!   `stream_options.include_usage` (OpenAI API reference, "Create chat completion"); the
//!   sampling settings OpenAI defines (`temperature`, `top_p`, `seed`, `max_tokens`) are sent,
//!   the local-only ones (`top_k`, repetition penalty) are not.
//! * Answer: `data: {chunk}` lines, `choices[0].delta.content` (and `reasoning_content`,
//!   as vLLM and llama-server stream a reasoning model's thinking, shown as `<think>…</think>`),
//!   `finish_reason` (`stop`, `length`), a last chunk with `usage`, then `data: [DONE]`.
//! * Failures: a connect error, a timeout, 429 or a 5xx is retried [`UpstreamConfig::retries`]
//!   times with exponential backoff (429's `Retry-After` honoured, at most [`MAX_BACKOFF`]);
//!   anything else, the retries running out, or the stream breaking mid-answer ends the
//!   generation with [`GenEvent::Failed`]. Each such failure opens the [`Breaker`]: the
//!   upstream is then not [`Generator::ready`] for a cool-down, so turns go straight to the
//!   fallback (see [`super::failover`]).
//! * `timeout` bounds the wait for the response headers and every gap between two chunks.
//! * Token counts: no tokenizer here, so budgeting uses a conservative estimate
//!   ([`estimate_tokens`]), scaled up when the upstream's `usage` shows it counted more.
//!   The context length is configured, else read from `GET {base_url}/models` (vLLM's
//!   `max_model_len`), else [`DEFAULT_CONTEXT`]; a 400 saying the prompt exceeds the context
//!   (llama-server's `exceed_context_size_error` with `n_ctx`) lowers it for later turns.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc::{self, UnboundedSender};

use super::{ChatRequest, Generator, Ready, ReadyFuture, SubmitError, Submitted};
use crate::{ChatMessage, GenEvent, GenFailure, GenStats, StopReason};

/// Context length assumed when neither the configuration nor the upstream names one
/// (llama-server's and Ollama's usual default is 4096 or more; vLLM reports its own).
pub const DEFAULT_CONTEXT: usize = 4096;

/// The longest wait between two tries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The first retry's wait; each further one doubles it.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// How often a streaming answer checks its cancel flag while no chunk arrives.
const CANCEL_POLL: Duration = Duration::from_millis(50);

/// One upstream endpoint, as configured (`[[upstream]]`).
#[derive(Clone)]
pub struct UpstreamConfig {
    /// Its name (`generator = "<name>"`, audit rows, metrics).
    pub name: String,
    /// The API's base, as the `openai` client takes it: `http://host:port/v1`.
    pub base_url: String,
    /// The `model` field sent.
    pub model: String,
    /// Sent as `Authorization: Bearer …` when set; never logged.
    pub api_key: Option<String>,
    /// Bound on the wait for response headers and on every gap between chunks.
    pub timeout: Duration,
    /// The context length (prompt plus answer, tokens); `None`: asked of the upstream.
    pub context_length: Option<usize>,
    /// Retries after a connect error, a timeout, 429 or a 5xx.
    pub retries: u32,
    /// The breaker's first cool-down; it doubles while failures go on (at most ten times).
    pub cooldown: Duration,
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("context_length", &self.context_length)
            .finish_non_exhaustive()
    }
}

impl UpstreamConfig {
    /// A configuration with the defaults: 30 s timeout, 2 retries, 10 s cool-down.
    pub fn new(name: &str, base_url: &str, model: &str) -> Self {
        Self {
            name: name.into(),
            base_url: base_url.trim_end_matches('/').into(),
            model: model.into(),
            api_key: None,
            timeout: Duration::from_secs(30),
            context_length: None,
            retries: 2,
            cooldown: Duration::from_secs(10),
        }
    }
}

/// A circuit breaker (closed → open → half-open): after a failed generation the upstream is
/// skipped for a cool-down; then one request probes it; a success closes the breaker, a
/// failure opens it again for twice as long (at most ten times the first cool-down).
#[derive(Debug)]
pub struct Breaker {
    first: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Debug)]
struct BreakerState {
    /// Open until then (`None`: closed or half-open).
    open_until: Option<Instant>,
    /// The next cool-down.
    cooldown: Duration,
    /// A probe is out since then (half-open); others wait for its outcome, or until it is
    /// older than the first cool-down (a caller that took the probe and never sent it).
    probing: Option<Instant>,
    /// Failures since the last success.
    failures: u32,
}

impl Breaker {
    /// A closed breaker whose first cool-down is `cooldown`.
    pub fn new(cooldown: Duration) -> Self {
        Self {
            first: cooldown,
            state: Mutex::new(BreakerState {
                open_until: None,
                cooldown,
                probing: None,
                failures: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a request may go now (taking the half-open probe when the cool-down is over).
    pub fn allow(&self, now: Instant) -> bool {
        let mut s = self.lock();
        match s.open_until {
            None if s.failures == 0 => true,
            // Half-open: one probe at a time.
            None => {
                if s.probing
                    .is_some_and(|t| now.saturating_duration_since(t) < self.first)
                {
                    false
                } else {
                    s.probing = Some(now);
                    true
                }
            }
            Some(t) if now < t => false,
            Some(_) => {
                s.open_until = None;
                s.probing = Some(now);
                true
            }
        }
    }

    /// Whether the breaker is open (or half-open with its probe out).
    pub fn is_open(&self, now: Instant) -> bool {
        let s = self.lock();
        s.open_until.is_some_and(|t| now < t)
            || s.probing
                .is_some_and(|t| now.saturating_duration_since(t) < self.first)
    }

    /// A request succeeded: closed.
    pub fn success(&self) {
        let mut s = self.lock();
        s.open_until = None;
        s.probing = None;
        s.failures = 0;
        s.cooldown = self.first;
    }

    /// A request failed: open for the current cool-down, which then doubles.
    pub fn failure(&self, now: Instant) {
        let mut s = self.lock();
        s.failures += 1;
        s.probing = None;
        s.open_until = Some(now + s.cooldown);
        s.cooldown = (s.cooldown * 2).min(self.first * 10);
    }
}

/// A conservative token count for `text` when the upstream's tokenizer is not at hand: one
/// token per non-ASCII character (CJK text runs at about 0.6–1 token per character in
/// Qwen's, Llama-3's and Gemma's vocabularies) and one per three ASCII bytes (English runs
/// at about four), plus a fifth for margin.
pub fn estimate_tokens(text: &str) -> usize {
    let (mut ascii, mut other) = (0usize, 0usize);
    for c in text.chars() {
        if c.is_ascii() {
            ascii += 1;
        } else {
            other += 1;
        }
    }
    let base = other + ascii.div_ceil(3);
    base + base.div_ceil(5)
}

/// Tokens a chat template adds per message (role markers, separators); generous.
const PER_MESSAGE: usize = 8;

/// An OpenAI-compatible upstream (see the module's docs).
#[derive(Debug, Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: UpstreamConfig,
    client: reqwest::Client,
    breaker: Breaker,
    /// The context length in use (0: not known yet).
    context: AtomicUsize,
    /// Whether the upstream's `/models` was asked already.
    asked: AtomicBool,
    /// The estimate's scale in percent (100 = as estimated), raised when `usage` shows more.
    scale: AtomicUsize,
}

impl Upstream {
    /// An upstream client (no connection is made until the first request).
    ///
    /// # Errors
    /// The HTTP client failing to build (its TLS set-up), as text.
    pub fn new(cfg: UpstreamConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| format!("upstream {}: {e}", cfg.name))?;
        Ok(Self {
            inner: Arc::new(Inner {
                breaker: Breaker::new(cfg.cooldown),
                context: AtomicUsize::new(cfg.context_length.unwrap_or(0)),
                asked: AtomicBool::new(cfg.context_length.is_some()),
                scale: AtomicUsize::new(100),
                cfg,
                client,
            }),
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &UpstreamConfig {
        &self.inner.cfg
    }

    /// Its breaker.
    pub fn breaker(&self) -> &Breaker {
        &self.inner.breaker
    }
}

impl Inner {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self
            .client
            .request(method, format!("{}{path}", self.cfg.base_url));
        match &self.cfg.api_key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    /// Asks `GET /models` once for the context length (vLLM's `max_model_len`).
    async fn discover_context(&self) {
        if self.asked.swap(true, Ordering::Relaxed) {
            return;
        }
        let found = async {
            let r = self
                .request(reqwest::Method::GET, "/models")
                .timeout(self.cfg.timeout.min(Duration::from_secs(5)))
                .send()
                .await
                .ok()?;
            let v: Value = r.json().await.ok()?;
            let models = v.get("data")?.as_array()?;
            let m = models
                .iter()
                .find(|m| m.get("id").and_then(Value::as_str) == Some(&self.cfg.model))
                .or(models.first())?;
            m.get("max_model_len")
                .and_then(Value::as_u64)
                .map(|n| n as usize)
        }
        .await;
        let n = found.unwrap_or(DEFAULT_CONTEXT);
        let _ = self
            .context
            .compare_exchange(0, n, Ordering::Relaxed, Ordering::Relaxed);
        tracing::info!(upstream = %self.cfg.name, context_length = self.context(), "upstream context length");
    }

    fn context(&self) -> usize {
        match self.context.load(Ordering::Relaxed) {
            0 => DEFAULT_CONTEXT,
            n => n,
        }
    }

    fn scaled(&self, n: usize) -> usize {
        (n * self.scale.load(Ordering::Relaxed)).div_ceil(100)
    }

    fn estimate_messages(&self, messages: &[ChatMessage]) -> usize {
        let raw: usize = messages
            .iter()
            .map(|m| estimate_tokens(&m.content) + PER_MESSAGE)
            .sum::<usize>()
            + PER_MESSAGE;
        self.scaled(raw)
    }

    /// Learns from the upstream's count for a prompt estimated at `estimated`.
    fn calibrate(&self, estimated: usize, counted: usize) {
        if counted > estimated && estimated > 0 {
            let pct =
                (counted * 100).div_ceil(estimated) * self.scale.load(Ordering::Relaxed) / 100;
            let pct = pct.clamp(100, 400);
            self.scale.fetch_max(pct, Ordering::Relaxed);
            tracing::info!(upstream = %self.cfg.name, estimated, counted, scale_percent = pct, "the upstream counted more prompt tokens than estimated; estimates scaled up");
        }
    }
}

/// The upstream, ready (its breaker let the request through).
struct UpstreamReady {
    inner: Arc<Inner>,
}

impl Generator for Upstream {
    fn name(&self) -> &str {
        &self.inner.cfg.name
    }

    fn ready(&self, _wait: Duration) -> ReadyFuture<'_> {
        Box::pin(async move {
            if !self.inner.breaker.allow(Instant::now()) {
                return None;
            }
            self.inner.discover_context().await;
            Some(Box::new(UpstreamReady {
                inner: self.inner.clone(),
            }) as Box<dyn Ready>)
        })
    }
}

impl Ready for UpstreamReady {
    fn name(&self) -> &str {
        &self.inner.cfg.name
    }

    fn context_length(&self) -> usize {
        self.inner.context()
    }

    fn prompt_tokens(&self, messages: &[ChatMessage]) -> Result<usize, String> {
        Ok(self.inner.estimate_messages(messages))
    }

    fn text_tokens(&self, text: &str) -> usize {
        self.inner.scaled(estimate_tokens(text))
    }

    fn submit(&self, req: ChatRequest) -> Result<Submitted, SubmitError> {
        let prompt_tokens = self.inner.estimate_messages(&req.messages);
        let (tx, events) = mpsc::unbounded_channel();
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let now = Instant::now;
            match run(&inner, &req, prompt_tokens, &tx).await {
                Ok(()) => inner.breaker.success(),
                Err(f) => {
                    if !matches!(f, GenFailure::ContextOverflow { .. }) {
                        inner.breaker.failure(now());
                    }
                    tracing::warn!(upstream = %inner.cfg.name, error = %f, "upstream generation failed");
                    let _ = tx.send(GenEvent::Failed(f));
                }
            }
        });
        Ok(Submitted {
            events,
            prompt_tokens,
            opens_think: false,
        })
    }
}

/// Why one try failed.
enum TryError {
    /// Worth another try (connect error, timeout, 429, 5xx); the wait the server asked for.
    Retry(String, Option<Duration>),
    /// Not (another 4xx, a broken answer).
    Fatal(GenFailure),
}

/// The request body (OpenAI "Create chat completion").
fn body(cfg: &UpstreamConfig, req: &ChatRequest) -> Value {
    let s = &req.params.sampling;
    let mut b = json!({
        "model": cfg.model,
        "messages": req.messages,
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_tokens": req.params.max_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
    });
    if s.temperature > 0.0 {
        b["seed"] = json!(s.seed);
    }
    b
}

/// A `Retry-After` header in seconds.
fn retry_after(r: &reqwest::Response) -> Option<Duration> {
    r.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The error an upstream answered with, mapped: a context overflow (OpenAI's
/// `context_length_exceeded` code, llama-server's `exceed_context_size_error` type with
/// `n_prompt_tokens` and `n_ctx`, vLLM's "maximum context length" message) or the message.
fn http_error(inner: &Inner, status: reqwest::StatusCode, text: &str, needed: usize) -> GenFailure {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let e = v.get("error").unwrap_or(&v);
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .map_or_else(|| text.chars().take(300).collect(), str::to_string);
    let kind = e.get("type").and_then(Value::as_str).unwrap_or("");
    let code = e.get("code").and_then(Value::as_str).unwrap_or("");
    let lower = message.to_lowercase();
    if status == reqwest::StatusCode::BAD_REQUEST
        && (code == "context_length_exceeded"
            || kind == "exceed_context_size_error"
            || lower.contains("context length")
            || lower.contains("context window"))
    {
        let n_ctx = e.get("n_ctx").and_then(Value::as_u64).map(|n| n as usize);
        if let Some(n) = n_ctx {
            inner.context.store(n, Ordering::Relaxed);
        }
        let needed = e
            .get("n_prompt_tokens")
            .and_then(Value::as_u64)
            .map_or(needed, |n| n as usize);
        return GenFailure::ContextOverflow {
            needed,
            context_length: n_ctx.unwrap_or_else(|| inner.context()),
        };
    }
    GenFailure::Other(format!(
        "upstream {} answered {status}: {message}",
        inner.cfg.name
    ))
}

/// Sends the request, retrying as the module's docs say; the streaming response.
async fn connect(
    inner: &Inner,
    req: &ChatRequest,
    needed: usize,
) -> Result<reqwest::Response, GenFailure> {
    let body = body(&inner.cfg, req);
    let mut backoff = FIRST_BACKOFF;
    let mut tries = 0;
    loop {
        tries += 1;
        let sent = tokio::time::timeout(
            inner.cfg.timeout,
            inner
                .request(reqwest::Method::POST, "/chat/completions")
                .json(&body)
                .send(),
        )
        .await;
        let err = match sent {
            Err(_) => TryError::Retry(format!("no answer within {:?}", inner.cfg.timeout), None),
            Ok(Err(e)) => TryError::Retry(e.without_url().to_string(), None),
            Ok(Ok(r)) if r.status().is_success() => return Ok(r),
            Ok(Ok(r)) => {
                let status = r.status();
                let wait = retry_after(&r);
                let text = r.text().await.unwrap_or_default();
                if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                    TryError::Retry(
                        format!("{status}: {}", text.chars().take(200).collect::<String>()),
                        wait,
                    )
                } else {
                    TryError::Fatal(http_error(inner, status, &text, needed))
                }
            }
        };
        match err {
            TryError::Fatal(f) => return Err(f),
            TryError::Retry(why, wait) => {
                if tries > inner.cfg.retries || req.cancel.load(Ordering::Relaxed) {
                    return Err(GenFailure::Other(format!(
                        "upstream {} unavailable after {tries} tries: {why}",
                        inner.cfg.name
                    )));
                }
                let wait = wait.unwrap_or(backoff).min(MAX_BACKOFF);
                tracing::info!(upstream = %inner.cfg.name, try_no = tries, error = %why, wait_ms = wait.as_millis() as u64, "upstream try failed; retrying");
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// What a chunk said.
#[derive(Default)]
struct Chunk {
    content: Option<String>,
    reasoning: Option<String>,
    finish: Option<StopReason>,
    usage: Option<(usize, usize, usize)>,
    error: Option<String>,
}

fn parse_chunk(data: &str) -> Result<Chunk, String> {
    let v: Value = serde_json::from_str(data).map_err(|e| format!("a chunk is not JSON: {e}"))?;
    let mut c = Chunk::default();
    if let Some(e) = v.get("error") {
        c.error = Some(
            e.get("message")
                .and_then(Value::as_str)
                .map_or_else(|| e.to_string(), str::to_string),
        );
        return Ok(c);
    }
    if let Some(choice) = v.get("choices").and_then(|c| c.get(0)) {
        let delta = choice.get("delta");
        let text = |k: &str| {
            delta
                .and_then(|d| d.get(k))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        c.content = text("content");
        c.reasoning = text("reasoning_content").or_else(|| text("reasoning"));
        c.finish = match choice.get("finish_reason").and_then(Value::as_str) {
            Some("length") => Some(StopReason::MaxTokens),
            Some(_) => Some(StopReason::EndOfTurn),
            None => None,
        };
    }
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
        let cached = u
            .get("prompt_tokens_details")
            .and_then(|d| d.get("cached_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize;
        c.usage = Some((n("prompt_tokens"), n("completion_tokens"), cached));
    }
    Ok(c)
}

/// One generation: connect, stream the chunks into events, finish.
async fn run(
    inner: &Inner,
    req: &ChatRequest,
    estimated: usize,
    tx: &UnboundedSender<GenEvent>,
) -> Result<(), GenFailure> {
    let response = connect(inner, req, estimated + req.params.max_tokens).await?;
    let queued = req.submitted.elapsed();
    let _ = tx.send(GenEvent::Started {
        prompt_tokens: estimated,
        cached_tokens: 0,
        queued,
    });
    let started = Instant::now();
    let mut first_token: Option<Instant> = None;
    let mut stream = response.bytes_stream().eventsource();
    let (mut deltas, mut stop, mut usage) = (0usize, None, None);
    let mut thinking = false;
    let mut last_chunk = Instant::now();
    let mut done = false;
    while !done {
        if req.cancel.load(Ordering::Relaxed) {
            stop = Some(StopReason::Cancelled);
            break;
        }
        let ev = match tokio::time::timeout(CANCEL_POLL, stream.next()).await {
            Err(_) => {
                if last_chunk.elapsed() > inner.cfg.timeout {
                    return Err(GenFailure::Other(format!(
                        "upstream {} sent nothing for {:?} mid-answer",
                        inner.cfg.name, inner.cfg.timeout
                    )));
                }
                continue;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(GenFailure::Other(format!(
                    "upstream {}: the answer broke off: {e}",
                    inner.cfg.name
                )))
            }
            Ok(Some(Ok(ev))) => ev,
        };
        last_chunk = Instant::now();
        if ev.data.trim() == "[DONE]" {
            done = true;
            continue;
        }
        if ev.data.trim().is_empty() {
            continue;
        }
        let c = parse_chunk(&ev.data)
            .map_err(|e| GenFailure::Other(format!("upstream {}: {e}", inner.cfg.name)))?;
        if let Some(e) = c.error {
            return Err(GenFailure::Other(format!(
                "upstream {} failed mid-answer: {e}",
                inner.cfg.name
            )));
        }
        let mut text = String::new();
        if let Some(r) = c.reasoning {
            if !thinking {
                thinking = true;
                text.push_str("<think>");
            }
            text.push_str(&r);
        }
        if let Some(s) = c.content {
            if thinking {
                thinking = false;
                text.push_str("</think>");
            }
            text.push_str(&s);
        }
        if !text.is_empty() {
            first_token.get_or_insert_with(Instant::now);
            deltas += 1;
            let _ = tx.send(GenEvent::Text(text));
        }
        stop = c.finish.or(stop);
        usage = c.usage.or(usage);
    }
    if !done && stop.is_none() {
        // The body ended without `[DONE]` or a finish reason: the upstream went away.
        return Err(GenFailure::Other(format!(
            "upstream {}: the answer broke off before its end",
            inner.cfg.name
        )));
    }
    if thinking {
        let _ = tx.send(GenEvent::Text("</think>".into()));
    }
    let (prompt_tokens, tokens, cached_tokens) = usage.unwrap_or((estimated, deltas, 0));
    if usage.is_some() {
        inner.calibrate(estimated, prompt_tokens);
    }
    let first = first_token.unwrap_or_else(Instant::now);
    let _ = tx.send(GenEvent::Finished(GenStats {
        stop: stop.unwrap_or(StopReason::EndOfTurn),
        prompt_tokens,
        cached_tokens,
        tokens,
        queued,
        prefill: first.saturating_duration_since(started),
        decode: first.elapsed(),
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_never_undercount_common_text() {
        // SmolLM2's tokenizer gives "Hello, how are you today?" 7 tokens; Qwen2.5's gives
        // "你好，请用中文介绍一下数据库索引。" 11.
        assert!(estimate_tokens("Hello, how are you today?") >= 7);
        assert!(estimate_tokens("你好，请用中文介绍一下数据库索引。") >= 11);
        assert_eq!(estimate_tokens(""), 0);
    }

    #[test]
    fn breaker_opens_probes_and_closes() {
        let b = Breaker::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(b.allow(t0));
        b.failure(t0);
        assert!(!b.allow(t0 + Duration::from_secs(9)));
        assert!(b.is_open(t0 + Duration::from_secs(9)));
        // Cool-down over: one probe, the others wait for it.
        assert!(b.allow(t0 + Duration::from_secs(10)));
        assert!(!b.allow(t0 + Duration::from_secs(10)));
        // A probe taken and never sent does not hold the breaker for ever.
        assert!(b.allow(t0 + Duration::from_secs(20)));
        // The probe fails: open for twice as long.
        let t1 = t0 + Duration::from_secs(11);
        b.failure(t1);
        assert!(!b.allow(t1 + Duration::from_secs(19)));
        assert!(b.allow(t1 + Duration::from_secs(20)));
        b.success();
        assert!(b.allow(t1 + Duration::from_secs(20)));
        assert!(b.allow(t1 + Duration::from_secs(20)));
        assert!(!b.is_open(t1 + Duration::from_secs(20)));
    }

    #[test]
    fn chunks_parse_as_llama_server_and_vllm_send_them() {
        let c =
            parse_chunk(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}"#)
                .unwrap();
        assert!(c.content.is_none() && c.finish.is_none());
        let c = parse_chunk(r#"{"choices":[{"delta":{"content":"你好"},"finish_reason":null}]}"#)
            .unwrap();
        assert_eq!(c.content.as_deref(), Some("你好"));
        let c = parse_chunk(r#"{"choices":[{"delta":{},"finish_reason":"length"}]}"#).unwrap();
        assert_eq!(c.finish, Some(StopReason::MaxTokens));
        let c = parse_chunk(r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":4}}}"#).unwrap();
        assert_eq!(c.usage, Some((12, 5, 4)));
        let c = parse_chunk(r#"{"choices":[{"delta":{"reasoning_content":"嗯"}}]}"#).unwrap();
        assert_eq!(c.reasoning.as_deref(), Some("嗯"));
        let c = parse_chunk(r#"{"error":{"message":"boom","type":"server_error"}}"#).unwrap();
        assert_eq!(c.error.as_deref(), Some("boom"));
        assert!(parse_chunk("not json").is_err());
    }

    #[test]
    fn a_context_error_is_recognised_and_teaches_n_ctx() {
        let up = Upstream::new(UpstreamConfig::new("u", "http://127.0.0.1:9/v1", "m")).unwrap();
        let f = http_error(
            &up.inner,
            reqwest::StatusCode::BAD_REQUEST,
            r#"{"error":{"code":400,"message":"the request exceeds the available context size","type":"exceed_context_size_error","n_prompt_tokens":5000,"n_ctx":2048}}"#,
            100,
        );
        assert_eq!(
            f,
            GenFailure::ContextOverflow {
                needed: 5000,
                context_length: 2048
            }
        );
        assert_eq!(up.inner.context(), 2048);
        let f = http_error(
            &up.inner,
            reqwest::StatusCode::UNAUTHORIZED,
            r#"{"error":{"message":"Invalid API Key","type":"authentication_error"}}"#,
            1,
        );
        assert_eq!(
            f,
            GenFailure::Other("upstream u answered 401 Unauthorized: Invalid API Key".into())
        );
    }

    #[test]
    fn the_key_stays_out_of_debug() {
        let mut c = UpstreamConfig::new("u", "http://h/v1/", "m");
        c.api_key = Some("sk-secret".into());
        assert_eq!(c.base_url, "http://h/v1");
        assert!(!format!("{c:?}").contains("sk-secret"));
    }
}
