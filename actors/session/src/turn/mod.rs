//! A turn — one question answered — as named stages over one context ([`TurnCtx`]):
//!
//! 1. **admit** ([`admit`]): the limiter's per-user and per-chat rates and its fair queue
//!    ("queued, N ahead" shown while waiting);
//! 2. **filter_in** ([`filter::inbound`]): the content filter on the question — a blocked term
//!    is refused politely without a model call, a masked one reaches the model masked;
//! 3. **retrieve** ([`retrieve`]): the company documents' chunks that match the question
//!    (`knowledge_retrieved` audited by document, no text);
//! 4. **prompt** ([`prompt`]): the persona's system message, the history that fits, the
//!    question with the excerpts that fit `[knowledge] max_tokens`, within the turn's and the
//!    model's token budgets;
//! 5. **generate** ([`generate`]): the model's answer streamed through **filter_out**
//!    ([`filter::OutputFilter`]: the last few characters held back until they are safe, a
//!    blocked term stops the answer) — again once if the model actor restarted mid-answer;
//! 6. **deliver** ([`deliver`]): the final frame (or the durable outbox) — naming the
//!    documents the excerpts came from —, the audit row, the inbound row settled, the exchange
//!    kept as history (without the excerpts or the sources line).
//!
//! Runtime rules:
//! * A stage ends the turn early with a [`Stop`]: the notice the user is told, after the stage
//!   has audited why. Every path out of a turn delivers exactly one final frame and settles
//!   its inbound row.
//! * One exit guard per turn ([`TurnCtx::run`]): a stage that panics ends the turn with
//!   [`TURN_FAILED`], a `turn_failed` audit row naming the stage, and
//!   `wecom_edge_turns_failed_total`; the session goes on with its next message.
//! * The stages know nothing of WeCom beyond the [`Replier`]: the same stages serve the long
//!   connection, AI-bot webhooks and app callbacks.

mod admit;
mod deliver;
pub mod filter;
mod generate;
mod prompt;
mod retrieve;

pub use deliver::SOURCES;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use futures::FutureExt;
use serde_json::json;
use wecom_edge_audit::knowledge::Hit;

use crate::actor::{Job, SessionContext};
use crate::filter::ContentFilter;
use crate::persona::Persona;
use crate::reply::Replier;
use crate::{strip_mentions, Turn};

/// The stages, in order (their names appear in audit rows and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Rate limits and the fair queue.
    Admit,
    /// The content filter on the question.
    FilterIn,
    /// The knowledge base searched.
    Retrieve,
    /// The prompt.
    Prompt,
    /// The model's answer, streamed through the output filter.
    Generate,
    /// The final frame and the records.
    Deliver,
}

impl Stage {
    /// `admit`, `filter_in`, `retrieve`, `prompt`, `generate`, `deliver`.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Admit => "admit",
            Stage::FilterIn => "filter_in",
            Stage::Retrieve => "retrieve",
            Stage::Prompt => "prompt",
            Stage::Generate => "generate",
            Stage::Deliver => "deliver",
        }
    }
}

/// A turn ends early: what the user is told, and why (the stage has recorded it).
#[derive(Debug)]
pub struct Stop {
    /// The notice.
    pub notice: String,
    /// Why, as the audit rows name it: `blocked_in`, `blocked_out`, `user_rate`,
    /// `chat_rate`, `queue_full`, `restarting`, `cancelled`, `message_too_long`,
    /// `context_overflow`, `model_error`, `model_lost`, `gave_up` (and `turn_failed` for a
    /// stage that panicked).
    pub reason: &'static str,
}

impl Stop {
    /// A stop for `reason` with `notice`.
    pub fn new(reason: &'static str, notice: impl Into<String>) -> Stop {
        Stop {
            notice: notice.into(),
            reason,
        }
    }
}

/// What the user is told when a stage failed unexpectedly.
pub const TURN_FAILED: &str = "⚠️ 抱歉，处理这条消息时出了错，我已记录下来；请再问一次。\
     (Sorry — something went wrong while answering this message; it has been recorded. \
     Please ask again.)";

/// What an API request (or the console's "Try it") brings to a turn ([`TurnCtx::api`]).
pub struct ApiTurn {
    /// `openai`, or `console` for the admin console's "Try it".
    pub channel: &'static str,
    /// The API key's id (never the key); the console's `console`.
    pub key_id: String,
    /// The request's `user`, if given (rate limits count per user of a key).
    pub user: Option<String>,
    /// The response id (`chatcmpl-…`), the turn's msgid in audit rows.
    pub request_id: String,
    /// The system message.
    pub system: Option<String>,
    /// The messages before the question (user and assistant).
    pub history: Vec<Turn>,
    /// The last user message.
    pub question: String,
    /// Sampling and length (`generate`); its system prompt is not used (see `system`).
    pub persona: Arc<Persona>,
    /// Where the turn's events go.
    pub events: tokio::sync::mpsc::UnboundedSender<crate::reply::ApiEvent>,
    /// Set when the client goes away.
    pub cancel: Arc<AtomicBool>,
}

/// One turn's context, owned by its task.
pub struct TurnCtx {
    /// The conversation key (history key).
    pub key: String,
    /// What every session shares.
    pub ctx: SessionContext,
    /// The conversation so far (as loaded when the turn started).
    pub history: Vec<Turn>,
    /// Set by `#reset` / `#stop`: the turn ends at its next step.
    pub cancel: Arc<AtomicBool>,
    /// The message.
    pub job: Job,
    /// Who answers.
    pub persona: Arc<Persona>,
    /// The system message (the persona's; an API request's own, or none).
    pub system: Option<String>,
    /// The content filter in force when the turn started.
    pub filter: Arc<ContentFilter>,
    /// The question (mentions stripped; masked by filter_in).
    pub question: String,
    /// The knowledge base's chunks for the question, best first (retrieve).
    pub knowledge: Vec<Hit>,
    /// How many of [`TurnCtx::knowledge`] (from the first) the last prompt carried.
    pub knowledge_used: usize,
    replier: Replier,
    stage: Stage,
    permit: Option<wecom_edge_limiter::Permit>,
    depth: Option<admit::DepthGuard>,
}

/// Who answers what: the persona, the system message, the question.
struct Speaker {
    persona: Arc<Persona>,
    system: Option<String>,
    question: String,
}

impl TurnCtx {
    /// A turn for `job`.
    pub fn new(
        key: String,
        ctx: SessionContext,
        history: Vec<Turn>,
        cancel: Arc<AtomicBool>,
        job: Job,
    ) -> TurnCtx {
        let persona = ctx.personas.for_origin(&job.origin);
        let answer = Speaker {
            system: Some(persona.system_message()),
            question: strip_mentions(&job.origin.text).to_string(),
            persona,
        };
        TurnCtx::assemble(key, ctx, history, cancel, job, answer)
    }

    /// A stateless turn for an API request: its own system message (or none) and history,
    /// answered through [`ReplyTo::Api`](crate::reply::ReplyTo::Api); the limiter counts it
    /// as user `a.user` of endpoint `{a.channel}/{a.key_id}`, its audit rows are about
    /// conversation `{a.channel}/{a.key_id}/{a.request_id}`.
    pub fn api(ctx: SessionContext, a: ApiTurn) -> TurnCtx {
        let origin = crate::reply::Origin {
            channel: a.channel.into(),
            endpoint: a.key_id.clone(),
            user: a.user.unwrap_or_else(|| a.key_id.clone()),
            chat: None,
            text: a.question.clone(),
            req_id: None,
        };
        let job = Job {
            inbound_id: 0,
            msgid: a.request_id.clone(),
            origin,
            reply: crate::reply::ReplyTo::Api { events: a.events },
            received: std::time::Instant::now(),
        };
        let key = format!("{}/{}/{}", a.channel, a.key_id, a.request_id);
        let answer = Speaker {
            system: a.system,
            question: a.question,
            persona: a.persona,
        };
        TurnCtx::assemble(key, ctx, a.history, a.cancel, job, answer)
    }

    /// The turn, before its first stage.
    fn assemble(
        key: String,
        ctx: SessionContext,
        history: Vec<Turn>,
        cancel: Arc<AtomicBool>,
        job: Job,
        a: Speaker,
    ) -> TurnCtx {
        let filter = ctx.filter.current();
        TurnCtx {
            system: a.system,
            question: a.question,
            persona: a.persona,
            replier: Replier::new(job.reply.clone()),
            key,
            ctx,
            history,
            cancel,
            job,
            filter,
            knowledge: Vec::new(),
            knowledge_used: 0,
            stage: Stage::Admit,
            permit: None,
            depth: None,
        }
    }

    /// Runs the stages; the exchange to remember when the model answered.
    pub async fn run(mut self) -> Option<(String, String)> {
        let outcome = AssertUnwindSafe(self.stages()).catch_unwind().await;
        // The generation slot goes back before the final frame is sent.
        self.permit = None;
        self.depth = None;
        match outcome {
            Ok(Ok(exchange)) => Some(exchange),
            Ok(Err(Stop { notice, reason })) => {
                self.replier.stopped(reason);
                deliver::send(&mut self, notice).await;
                None
            }
            Err(panic) => {
                let error = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into());
                let stage = self.stage.name();
                tracing::error!(alert = true, session = %self.key, msgid = %self.job.msgid, stage, %error, "a turn's stage failed; the user is told");
                self.ctx.metrics.turns_failed.inc();
                record(
                    "turn_failed",
                    &self.key,
                    json!({"msgid": self.job.msgid, "stage": stage, "error": error}),
                );
                self.replier.stopped("turn_failed");
                deliver::send(&mut self, TURN_FAILED.to_string()).await;
                None
            }
        }
    }

    async fn stages(&mut self) -> Result<(String, String), Stop> {
        self.enter(Stage::Admit);
        admit::run(self).await?;
        self.enter(Stage::FilterIn);
        filter::inbound(self)?;
        self.enter(Stage::Retrieve);
        retrieve::run(self).await;
        let answer = generate::run(self).await?;
        self.enter(Stage::Deliver);
        Ok(deliver::answer(self, answer).await)
    }

    /// Marks the stage the turn is in (named in a `turn_failed` row).
    fn enter(&mut self, stage: Stage) {
        self.stage = stage;
        fault_point(stage, &self.question);
    }
}

/// Debug builds only: `WECOM_EDGE_FAULT=STAGE:MARKER` makes `STAGE` panic for a question that
/// contains `MARKER` (how the tests check the exit guard end to end).
fn fault_point(stage: Stage, question: &str) {
    #[cfg(debug_assertions)]
    if let Ok(f) = std::env::var("WECOM_EDGE_FAULT") {
        if let Some((s, marker)) = f.split_once(':') {
            if s == stage.name() && !marker.is_empty() && question.contains(marker) {
                panic!("fault injected into stage {s}");
            }
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = (stage, question);
}

pub(crate) fn record(kind: &str, key: &str, detail: serde_json::Value) {
    wecom_edge_audit::record(kind, "session", key, detail);
}
