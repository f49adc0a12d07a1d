//! The generation seam at chat level: what a turn (or any front end) asks a generator for —
//! chat messages, sampling settings and limits — and what comes back — text deltas, then the
//! counts and the stop reason ([`GenEvent`]), cancellable through [`ChatRequest::cancel`].
//!
//! * [`Generator`] — something that generates: [`local::Local`] (the model actor in this
//!   process, its continuous-batching scheduler and prefix cache behind it),
//!   [`upstream::Upstream`] (an OpenAI-compatible endpoint over HTTP), or
//!   [`failover::Failover`] (one of those with another as its fallback). A generator is
//!   first made [`Generator::ready`]: that waits for it (a model actor restarting) and hands
//!   back a [`Ready`] handle holding what budgeting needs.
//! * [`Ready`] — one generator, ready now: its context length, token counts for budgeting
//!   (exact where the tokenizer is local, an estimate otherwise), and [`Ready::submit`].
//!
//! Callers never see token ids: the generator renders the messages with its own chat
//! template. The turn's prompt stage fits history and excerpts with [`Ready::prompt_tokens`].

pub mod failover;
pub mod local;
pub mod upstream;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;

use crate::{ChatMessage, GenEvent, GenerateParams};

/// One generation asked for at chat level.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The conversation, system message first, the question last.
    pub messages: Vec<ChatMessage>,
    /// Length (`max_tokens`) and sampling.
    pub params: GenerateParams,
    /// Set to stop the generation before its next token (the events then end with
    /// `Finished` and stop reason `Cancelled`).
    pub cancel: Arc<AtomicBool>,
    /// The conversation this continues (the local scheduler's prefix-cache key), if any.
    pub cache_key: Option<String>,
    /// When the request was made (queue time is measured from here).
    pub submitted: Instant,
}

/// What [`Ready::submit`] started.
#[derive(Debug)]
pub struct Submitted {
    /// Its events: `Started`, `Text` deltas, then `Finished` or `Failed`; the channel closing
    /// early means the generator went away mid-answer.
    pub events: UnboundedReceiver<GenEvent>,
    /// Tokens of the rendered prompt (exact for a local model).
    pub prompt_tokens: usize,
    /// Whether the rendered prompt already opens a reasoning block (`<think>` at its end, as
    /// some chat templates add): the answer then starts inside it.
    pub opens_think: bool,
}

/// Why nothing was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// The messages could not be rendered (the chat template or the tokenizer failed).
    Template(String),
    /// The generator went away (a model actor stopping); try [`Generator::ready`] again.
    Lost,
}

/// One generator, ready now (see the module's docs).
pub trait Ready: Send + Sync {
    /// The name of the generator that is ready (a [`failover::Failover`]'s fallback, when
    /// its primary was not).
    fn name(&self) -> &str;

    /// The most positions a prompt and its answer may take together.
    fn context_length(&self) -> usize;

    /// Tokens `messages` take once rendered as a prompt.
    ///
    /// # Errors
    /// The template or the tokenizer failing, as text.
    fn prompt_tokens(&self, messages: &[ChatMessage]) -> Result<usize, String>;

    /// Tokens of `text` alone (a question's length, an excerpt's, a reasoning part's).
    fn text_tokens(&self, text: &str) -> usize;

    /// Starts a generation.
    ///
    /// # Errors
    /// [`SubmitError`].
    fn submit(&self, req: ChatRequest) -> Result<Submitted, SubmitError>;
}

/// A future of a [`Ready`] handle (`None`: not ready within the wait).
pub type ReadyFuture<'a> = Pin<Box<dyn Future<Output = Option<Box<dyn Ready>>> + Send + 'a>>;

/// Something that generates (see the module's docs).
pub trait Generator: Send + Sync + std::fmt::Debug {
    /// A name for logs and audit rows (`local`, an upstream's name).
    fn name(&self) -> &str;

    /// Waits up to `wait` for the generator to be ready; its handle.
    fn ready(&self, wait: Duration) -> ReadyFuture<'_>;
}
