//! The session actor: one per conversation key, started by the router under `session_sup`.
//!
//! Runtime rules:
//! * Jobs (accepted inbound messages) are answered one at a time, in arrival order; a turn runs
//!   as a task so the mailbox stays responsive (`#reset` cancels the running turn at once).
//! * Commands (`#help #reset #status`, also `/…`) are answered here, without the model.
//! * A question is admitted by the limiter actor first; a refusal is a polite reply, audited.
//! * The prompt is the model's chat template over the history that fits its context
//!   ([`fit_history`](crate::fit_history)) plus the question; history is read from SQLite on the
//!   first message (an idle-stopped or restarted session continues its conversation).
//! * The answer streams: the first frame as soon as the first text is decoded, then at most one
//!   update per `throttle`, a keep-alive update when nothing changed for `keepalive`, the final
//!   frame last. If the model actor dies mid-answer, the turn waits for its restart (bounded by
//!   `model_wait`) and generates once more; if that fails too the user is told.
//! * Start-up reads this conversation's accepted-but-unanswered messages from SQLite, so a
//!   restart (of the session or of the box) loses nothing; inbound ids already seen are skipped.
//! * Idle for `idle_timeout`: the session asks the router to stop it (the router knows whether
//!   a message is on its way); a dropped session costs nothing but a history read.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use tokio::sync::mpsc;
use wecom_edge_audit::{AuditMsg, PendingInbound, AUDIT_ACTOR};
use wecom_edge_limiter::{Admitted, LimiterMsg, QueueUpdate, Queued, LIMITER_ACTOR};
use wecom_edge_model::{
    ChatMessage, GenEvent, GenFailure, GenRequest, GenStats, GenerateParams, ModelInfo, ModelMsg,
    StopReason, MODEL_ACTOR,
};
use wecom_edge_watchdog::Metrics;

use crate::outbox::{OutboxMsg, OUTBOX_ACTOR, OUTBOX_DEADLINE};
use crate::reasoning::{prompt_opens_think, Phase, Reasoning, ReasoningMode, THINKING};
use crate::reply::{Origin, Outbound, Replier, ReplyTo, Undelivered};
use crate::router::RouterMsg;
use crate::{fit_history, help_text, parse_command, strip_mentions, Command, Turn};

/// Settings shared by all sessions.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Generation length and sampling.
    pub generate: GenerateParams,
    /// A system prompt put before the history (`None`: the template's default).
    pub system_prompt: Option<String>,
    /// Stop after this long without a message.
    pub idle_timeout: Duration,
    /// At most one stream update per this interval (WeCom's stream refresh pace; ~500 ms).
    pub throttle: Duration,
    /// An update is re-sent when nothing changed for this long (well inside WeCom's 6-minute
    /// stream expiry).
    pub keepalive: Duration,
    /// How long a turn waits for a (restarting) model actor.
    pub model_wait: Duration,
    /// Most history turns read from SQLite.
    pub history_limit: usize,
    /// Most tokens of one turn's prompt (system prompt, the history that fits, the question):
    /// bounds the prefill time of a turn whose history is not in the prefix cache (after a
    /// restart or an eviction).
    pub max_prompt_tokens: usize,
    /// Most tokens of the question itself; a longer message is refused politely.
    pub max_message_tokens: usize,
    /// How a reasoning model's `<think>` part is shown ([`crate::reasoning`]).
    pub reasoning: ReasoningMode,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            generate: GenerateParams::default(),
            system_prompt: None,
            idle_timeout: Duration::from_secs(600),
            throttle: Duration::from_millis(500),
            keepalive: Duration::from_secs(60),
            model_wait: Duration::from_secs(10),
            history_limit: 64,
            max_prompt_tokens: 2048,
            max_message_tokens: 1536,
            reasoning: ReasoningMode::Hidden,
        }
    }
}

/// What every session shares.
#[derive(Debug, Clone)]
pub struct SessionContext {
    /// Settings.
    pub settings: SessionSettings,
    /// Outbound connections.
    pub outbound: Arc<Outbound>,
    /// Metrics.
    pub metrics: Metrics,
    /// Whether new messages are taken (false while the data partition is nearly full: they are
    /// answered with a polite refusal instead of being accepted with nowhere to record them).
    pub accepting: Arc<std::sync::atomic::AtomicBool>,
}

/// One accepted message for a session.
#[derive(Debug, Clone)]
pub struct Job {
    /// The inbound row's id (monotonic).
    pub inbound_id: i64,
    /// WeCom's msgid.
    pub msgid: String,
    /// Who and where.
    pub origin: Origin,
    /// How to answer.
    pub reply: ReplyTo,
    /// When the box received it (for time-to-first-token).
    pub received: Instant,
}

impl Job {
    /// A job for a message accepted before this session started.
    pub fn from_pending(p: &PendingInbound, out: &Outbound) -> Option<Job> {
        let origin: Origin = serde_json::from_value(p.payload.clone()).ok()?;
        Some(Job {
            inbound_id: p.id,
            msgid: p.msgid.clone(),
            reply: ReplyTo::for_origin(&origin, out),
            origin,
            received: Instant::now(),
        })
    }
}

/// Messages to a session.
#[derive(Debug)]
pub enum SessionMsg {
    /// An accepted message.
    Job(Box<Job>),
    /// The running turn ended (its inbound id; the exchange to remember, if any).
    TurnDone {
        /// Inbound id.
        inbound_id: i64,
        /// `(question, answer)` to append to the in-memory history.
        exchange: Option<(String, String)>,
    },
    /// Timer: check for idleness.
    IdleCheck,
}

/// Start arguments.
#[derive(Debug, Clone)]
pub struct SessionArgs {
    /// The conversation key (its `Display` form; the history key).
    pub key: String,
    /// Shared context.
    pub ctx: SessionContext,
    /// The router, told when the session is idle.
    pub router: ActorRef<RouterMsg>,
}

/// The actor.
#[derive(Debug, Default)]
pub struct SessionActor;

/// Its state.
pub struct SessionState {
    args: SessionArgs,
    history: Option<Vec<Turn>>,
    queue: VecDeque<Job>,
    seen: HashSet<i64>,
    max_seen: i64,
    current: Option<(i64, Arc<AtomicBool>, tokio::task::JoinHandle<()>)>,
    last_activity: Instant,
    ticker: tokio::task::JoinHandle<()>,
}

impl Drop for SessionState {
    /// A dying session takes its turn with it (the message stays accepted in SQLite and is
    /// answered by the session's next incarnation — never twice).
    fn drop(&mut self) {
        self.ticker.abort();
        if let Some((_, cancel, task)) = self.current.take() {
            cancel.store(true, Ordering::Relaxed);
            task.abort();
        }
    }
}

fn audit() -> Option<ActorRef<AuditMsg>> {
    ractor::registry::where_is(AUDIT_ACTOR.into()).map(Into::into)
}

fn record(kind: &str, key: &str, detail: serde_json::Value) {
    wecom_edge_audit::record(kind, "session", key, detail);
}

/// Generations a message may start; one more and it is settled with [`GAVE_UP`] instead (it
/// crashed or stalled the model each time: the model actor died mid-answer, or the process
/// was killed by the watchdog and the start-up sweep replayed it).
pub const MAX_ATTEMPTS: i64 = 2;

/// What the user is told when their message is not tried again.
pub const GAVE_UP: &str =
    "⚠️ 抱歉，这个问题两次都让模型出错了，我不再重试；请换一种问法，或缩短问题。\
     (Sorry — answering this made the model fail twice, so I will not try it again. Please \
     rephrase it or ask something shorter.)";

/// Counts a generation for inbound `id` durably; the new count (`None`: storage unavailable,
/// go on — losing the count only risks one more retry).
async fn start_attempt(id: i64) -> Option<i64> {
    let a = audit()?;
    match ractor::call!(a, |reply| AuditMsg::StartAttempt { id, reply }) {
        Ok(Ok(n)) => Some(n),
        _ => None,
    }
}

fn finish_inbound(id: i64, answered: bool) {
    if let Some(a) = audit() {
        let _ = a.send_message(AuditMsg::FinishInbound { id, answered });
    }
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        let period = (args.ctx.settings.idle_timeout / 2).max(Duration::from_millis(50));
        let me = myself.clone();
        let ticker = tokio::spawn(async move {
            let mut t = tokio::time::interval(period);
            t.tick().await;
            loop {
                t.tick().await;
                if me.send_message(SessionMsg::IdleCheck).is_err() {
                    return;
                }
            }
        });
        let st = SessionState {
            history: None,
            queue: VecDeque::new(),
            seen: HashSet::new(),
            max_seen: 0,
            current: None,
            last_activity: Instant::now(),
            ticker,
            args,
        };
        // Whatever this conversation had accepted and not answered (a crash, a restart).
        let a = audit().ok_or("the audit actor is not running")?;
        let key = st.args.key.clone();
        let pending = ractor::call!(a, |reply| AuditMsg::Pending {
            conversation: Some(key),
            reply
        })?
        .map_err(|e| format!("reading pending messages: {e}"))?;
        // Through the mailbox, so commands among them are handled as commands.
        for p in &pending {
            match Job::from_pending(p, &st.args.ctx.outbound) {
                Some(job) => myself.send_message(SessionMsg::Job(Box::new(job)))?,
                None => finish_inbound(p.id, false),
            }
        }
        tracing::debug!(session = %st.args.key, n = pending.len(), "session started with its accepted messages");
        Ok(st)
    }

    async fn post_start(
        &self,
        myself: ActorRef<SessionMsg>,
        st: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        st.next(&myself).await
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        st: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionMsg::Job(job) => {
                st.last_activity = Instant::now();
                let text = strip_mentions(&job.origin.text).to_string();
                match parse_command(&text) {
                    Some(cmd) if st.seen.insert(job.inbound_id) => {
                        st.max_seen = st.max_seen.max(job.inbound_id);
                        st.command(cmd, *job).await?;
                    }
                    Some(_) => {}
                    None => st.enqueue(*job),
                }
            }
            SessionMsg::TurnDone {
                inbound_id,
                exchange,
            } => {
                if st.current.as_ref().is_some_and(|c| c.0 == inbound_id) {
                    st.current = None;
                }
                if let (Some(h), Some((q, a))) = (st.history.as_mut(), exchange) {
                    h.push(Turn {
                        role: "user".into(),
                        content: q,
                    });
                    h.push(Turn {
                        role: "assistant".into(),
                        content: a,
                    });
                    let limit = st.args.ctx.settings.history_limit;
                    if h.len() > limit {
                        h.drain(..h.len() - limit);
                    }
                }
                st.last_activity = Instant::now();
            }
            SessionMsg::IdleCheck => {
                let idle = st.current.is_none()
                    && st.queue.is_empty()
                    && st.last_activity.elapsed() >= st.args.ctx.settings.idle_timeout;
                if idle {
                    let _ = st.args.router.send_message(RouterMsg::SessionIdle {
                        key: st.args.key.clone(),
                        handled: st.max_seen,
                    });
                }
            }
        }
        st.next(&myself).await
    }
}

impl SessionState {
    fn enqueue(&mut self, job: Job) {
        if self.seen.insert(job.inbound_id) {
            self.max_seen = self.max_seen.max(job.inbound_id);
            self.queue.push_back(job);
        }
    }

    async fn load_history(&mut self) -> Result<(), ActorProcessingErr> {
        if self.history.is_none() {
            let a = audit().ok_or("the audit actor is not running")?;
            let (session, limit) = (self.args.key.clone(), self.args.ctx.settings.history_limit);
            let h = ractor::call!(a, |reply| AuditMsg::History {
                session,
                limit,
                reply
            })?
            .map_err(|e| format!("reading history: {e}"))?;
            self.history = Some(h);
        }
        Ok(())
    }

    /// Starts the next queued turn when none runs.
    async fn next(&mut self, myself: &ActorRef<SessionMsg>) -> Result<(), ActorProcessingErr> {
        if self.current.is_some() {
            return Ok(());
        }
        let Some(job) = self.queue.pop_front() else {
            return Ok(());
        };
        self.load_history().await?;
        let cancel = Arc::new(AtomicBool::new(false));
        let turn = TurnCtx {
            key: self.args.key.clone(),
            ctx: self.args.ctx.clone(),
            history: self.history.clone().unwrap_or_default(),
            cancel: cancel.clone(),
        };
        let id = job.inbound_id;
        let me = myself.clone();
        let task = tokio::spawn(async move {
            let exchange = turn.run(job).await;
            let _ = me.send_message(SessionMsg::TurnDone {
                inbound_id: id,
                exchange,
            });
        });
        self.current = Some((id, cancel, task));
        Ok(())
    }

    async fn command(&mut self, cmd: Command, job: Job) -> Result<(), ActorProcessingErr> {
        let key = self.args.key.clone();
        let text = match cmd {
            Command::Help => help_text().to_string(),
            Command::Reset => {
                if let Some((_, cancel, _)) = &self.current {
                    cancel.store(true, Ordering::Relaxed);
                }
                let a = audit().ok_or("the audit actor is not running")?;
                let session = key.clone();
                let removed = ractor::call!(a, |reply| AuditMsg::HistoryClear { session, reply })?
                    .map_err(|e| format!("clearing history: {e}"))?;
                self.history = Some(Vec::new());
                record("session_reset", &key, json!({"turns_removed": removed}));
                "好的，我已忘记我们之前的对话。(Done: I have forgotten our conversation.)"
                    .to_string()
            }
            Command::Status => {
                let (active, waiting) = match ractor::registry::where_is(LIMITER_ACTOR.into()) {
                    Some(c) => {
                        let l: ActorRef<LimiterMsg> = c.into();
                        ractor::call!(l, LimiterMsg::InFlight).unwrap_or((0, 0))
                    }
                    None => (0, 0),
                };
                let model = if ractor::registry::where_is(MODEL_ACTOR.into()).is_some() {
                    "ready"
                } else {
                    "restarting"
                };
                format!(
                    "状态 (status): model {model} · {active} generation(s) running, {waiting} \
                     waiting · \
                     {} turn(s) of history in this conversation · {} question(s) waiting here",
                    self.history.as_ref().map_or(0, Vec::len),
                    self.queue.len() + usize::from(self.current.is_some()),
                )
            }
        };
        record(
            "command",
            &key,
            json!({"msgid": job.msgid, "command": format!("{cmd:?}").to_lowercase()}),
        );
        let id = job.inbound_id;
        tokio::spawn(async move {
            let mut r = Replier::new(job.reply);
            let ok = match r.finish(&text).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "command reply failed");
                    false
                }
            };
            finish_inbound(id, ok);
        });
        Ok(())
    }
}

/// One turn's context (owned by its task).
struct TurnCtx {
    key: String,
    ctx: SessionContext,
    history: Vec<Turn>,
    cancel: Arc<AtomicBool>,
}

/// How a generation attempt ended.
enum Attempt {
    Done(GenStats),
    Failed(GenFailure),
    /// The message alone is over the per-message budget (`tokens` > `limit`); not generated.
    TooLong {
        tokens: usize,
        limit: usize,
    },
    /// Generations for this message already failed `attempts` times; not tried again.
    GaveUp {
        attempts: i64,
    },
    /// The model actor went away mid-answer.
    Lost,
}

impl TurnCtx {
    /// Answers `job`; returns the exchange to remember when it was answered by the model.
    async fn run(self, job: Job) -> Option<(String, String)> {
        let key = &self.key;
        let question = strip_mentions(&job.origin.text).to_string();
        let settings = &self.ctx.settings;
        let metrics = &self.ctx.metrics;
        let mut replier = Replier::new(job.reply.clone());
        // Admission.
        let Some(limiter) = ractor::registry::where_is(LIMITER_ACTOR.into()) else {
            deliver(&mut replier, &job, key, RESTARTING.into()).await;
            return None;
        };
        let limiter: ActorRef<LimiterMsg> = limiter.into();
        let user = format!(
            "{}/{}/{}",
            job.origin.channel,
            job.origin.endpoint,
            crate::key_component(&job.origin.user)
        );
        let chat = job.origin.chat.as_ref().map(|c| {
            format!(
                "{}/{}/{}",
                job.origin.channel,
                job.origin.endpoint,
                crate::key_component(c)
            )
        });
        let admitted = match ractor::call!(limiter, |reply| LimiterMsg::Admit { user, chat, reply })
        {
            Ok(Ok(a)) => a,
            Ok(Err(refusal)) => {
                metrics.messages_rate_limited.inc();
                record(
                    "rate_limited",
                    key,
                    json!({"msgid": job.msgid, "limit": refusal.kind()}),
                );
                deliver(&mut replier, &job, key, refusal.message()).await;
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "limiter unavailable");
                deliver(&mut replier, &job, key, RESTARTING.into()).await;
                return None;
            }
        };
        metrics.queue_depth.inc();
        let _depth = DepthGuard(metrics.clone());
        let permit = match admitted {
            Admitted::Now(p) => p,
            Admitted::Queued(q) => match self.wait_turn(q, &job, &mut replier).await {
                Ok(p) => p,
                Err(text) => {
                    deliver(&mut replier, &job, key, text).await;
                    return None;
                }
            },
        };

        let mut attempt_no = 0;
        let outcome = loop {
            attempt_no += 1;
            let Some((model, info)) = wait_model(settings.model_wait).await else {
                break Attempt::Lost;
            };
            let prompt = match self.prompt(&info, &question) {
                Ok(p) => p,
                Err(a) => break a,
            };
            // Durable before the model sees it: a message that keeps killing the model (or the
            // process) is settled, not replayed at every restart.
            if let Some(n) = start_attempt(job.inbound_id).await {
                if n > MAX_ATTEMPTS {
                    break Attempt::GaveUp { attempts: n - 1 };
                }
            }
            record(
                "generation_started",
                key,
                json!({"msgid": job.msgid, "prompt_tokens": prompt.len(), "attempt": attempt_no}),
            );
            let tail_from = prompt.len().saturating_sub(8);
            let opened = info
                .tokenizer
                .decode(&prompt[tail_from..])
                .is_ok_and(|t| prompt_opens_think(&t));
            let reasoning = Reasoning::new(settings.reasoning, opened);
            let res = self
                .generate(&model, prompt, reasoning, &job, &mut replier, attempt_no)
                .await;
            match res {
                (Attempt::Lost, _) if attempt_no < 2 && !self.cancel.load(Ordering::Relaxed) => {
                    tracing::warn!(session = %key, "the model went away mid-answer; generating again");
                    record("generation_retried", key, json!({"msgid": job.msgid}));
                    // Tell the user at once; the regenerated answer replaces this frame.
                    if let Err(e) = replier.update(MODEL_RESTARTING).await {
                        tracing::warn!(error = %e, "stream update failed");
                    }
                    continue;
                }
                (Attempt::Done(stats), mut r) => {
                    let thinking_tokens = info
                        .tokenizer
                        .encode_plain(r.thinking())
                        .map_or(0, |t| t.len());
                    metrics.generations.inc();
                    metrics.tokens.inc_by(stats.tokens as u64);
                    metrics
                        .generation_seconds
                        .observe((stats.prefill + stats.decode).as_secs_f64());
                    record(
                        "generation_finished",
                        key,
                        json!({
                            "msgid": job.msgid,
                            "stop": stats.stop,
                            "prompt_tokens": stats.prompt_tokens,
                            "cached_tokens": stats.cached_tokens,
                            "tokens": stats.tokens,
                            "thinking_tokens": thinking_tokens,
                            "queued_ms": stats.queued.as_millis() as u64,
                            "prefill_ms": stats.prefill.as_millis() as u64,
                            "decode_ms": stats.decode.as_millis() as u64,
                        }),
                    );
                    if stats.stop == StopReason::Cancelled {
                        // #reset: close the stream with what was shown, marked as cut.
                        drop(permit);
                        let cut = format!("{}\n\n(已取消 — cancelled by #reset)", r.display());
                        deliver(&mut replier, &job, key, cut).await;
                        return None;
                    }
                    // Only the answer is kept in history; the reasoning is shown as configured.
                    let shown =
                        if r.phase() == Phase::Thinking && stats.stop == StopReason::MaxTokens {
                            // max_tokens ran out while it was still thinking.
                            format!(
                                "{}{OUT_OF_TOKENS_THINKING}",
                                match settings.reasoning {
                                    ReasoningMode::Quoted => r.display().replace(THINKING, ""),
                                    ReasoningMode::Hidden => String::new(),
                                }
                            )
                        } else {
                            r.finish();
                            r.display()
                        };
                    let text = r.answer().to_string();
                    deliver(&mut replier, &job, key, shown).await;
                    drop(permit);
                    if let Some(a) = audit() {
                        for (role, content) in [("user", &question), ("assistant", &text)] {
                            let _ = a.send_message(AuditMsg::HistoryPush {
                                session: key.clone(),
                                role: role.into(),
                                content: content.clone(),
                            });
                        }
                    }
                    return Some((question, text));
                }
                (other, _) => break other,
            }
        };
        drop(permit);
        let reason = match &outcome {
            Attempt::TooLong { .. } => "message_too_long",
            Attempt::GaveUp { .. } => "gave_up",
            Attempt::Failed(GenFailure::ContextOverflow { .. }) => "context_overflow",
            Attempt::Failed(_) => "model_error",
            Attempt::Lost | Attempt::Done(_) => "model_lost",
        };
        let notice = match outcome {
            Attempt::GaveUp { attempts } => {
                tracing::error!(alert = true, session = %key, msgid = %job.msgid, attempts, "a message failed the model repeatedly; settled with an apology");
                GAVE_UP.to_string()
            }
            Attempt::TooLong { tokens, limit } => format!(
                "⚠️ 这条消息太长了（约 {tokens} 个词元，上限 {limit}）；请分段发送，或只发需要回答的部分。\
                 (This message is too long for me: about {tokens} tokens, the limit is {limit}. \
                 Please send it in shorter parts, or only the part you need answered.)"
            ),
            Attempt::Failed(GenFailure::ContextOverflow { .. }) => {
                "⚠️ 这个问题太长了，超出了模型的上下文长度；请缩短后再问，或发送 #reset 清空对话。\
                 (The question does not fit the model's context; shorten it, or send #reset.)"
                    .to_string()
            }
            Attempt::Failed(f) => {
                format!("⚠️ 生成回答失败 (the answer could not be generated): {f}")
            }
            Attempt::Lost | Attempt::Done(_) => {
                "⚠️ 模型正在重启，未能完成回答；请再问一次。(The model restarted and could not finish \
                 the answer; please ask again.)"
                    .to_string()
            }
        };
        record(
            "generation_failed",
            key,
            json!({"msgid": job.msgid, "notice": true, "reason": reason}),
        );
        deliver(&mut replier, &job, key, notice).await;
        None
    }

    /// Waits in the limiter's fair queue, showing "queued, N ahead" at once (on channels that
    /// stream) and updating it as the queue moves; the permit when it is this turn's time.
    ///
    /// # Errors
    /// The notice to deliver instead: cancelled by `#reset`, or the limiter went away.
    async fn wait_turn(
        &self,
        mut q: Queued,
        job: &Job,
        replier: &mut Replier,
    ) -> Result<wecom_edge_limiter::Permit, String> {
        let settings = &self.ctx.settings;
        let mut shown = None;
        let mut ahead = q.ahead;
        let mut last = Instant::now() - settings.throttle;
        record(
            "queued",
            &self.key,
            json!({"msgid": job.msgid, "ahead": ahead}),
        );
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err("(已取消 — cancelled by #reset)".into());
            }
            if shown != Some(ahead) && last.elapsed() >= settings.throttle && replier.streams() {
                if let Err(e) = replier.update(&queued_text(ahead)).await {
                    tracing::warn!(error = %e, "stream update failed");
                }
                shown = Some(ahead);
                last = Instant::now();
            }
            let tick = tokio::time::sleep(settings.throttle);
            tokio::select! {
                u = q.next() => match u {
                    Some(QueueUpdate::Ahead(n)) => ahead = n,
                    Some(QueueUpdate::Granted(p)) => return Ok(p),
                    None => return Err(RESTARTING.into()),
                },
                _ = tick => {}
            }
        }
    }

    /// The prompt: system prompt, the history that fits, the question — within
    /// `max_prompt_tokens` and the model's context less the answer's room.
    ///
    /// # Errors
    /// [`Attempt::TooLong`] for a question over `max_message_tokens`;
    /// [`GenFailure::ContextOverflow`] when even the bare question does not fit the context.
    fn prompt(&self, info: &ModelInfo, question: &str) -> Result<Vec<u32>, Attempt> {
        let tok = &info.tokenizer;
        let settings = &self.ctx.settings;
        let question_tokens = tok
            .encode_plain(question)
            .map_err(|e| Attempt::Failed(GenFailure::Other(e.to_string())))?
            .len();
        if question_tokens > settings.max_message_tokens {
            return Err(Attempt::TooLong {
                tokens: question_tokens,
                limit: settings.max_message_tokens,
            });
        }
        let count = |t: &Turn| {
            tok.encode_plain(&t.content)
                .map_or(t.content.len(), |v| v.len())
                + 4
        };
        let render = |hist: &[Turn]| -> Result<Vec<u32>, GenFailure> {
            let mut msgs = Vec::with_capacity(hist.len() + 2);
            if let Some(sys) = &settings.system_prompt {
                msgs.push(ChatMessage::new("system", sys.clone()));
            }
            msgs.extend(
                hist.iter()
                    .map(|t| ChatMessage::new(&t.role, t.content.clone())),
            );
            msgs.push(ChatMessage::new("user", question.to_string()));
            tok.encode_chat(&msgs)
                .map_err(|e| GenFailure::Other(e.to_string()))
        };
        let bare = render(&[]).map_err(Attempt::Failed)?;
        let reserve = settings.generate.max_tokens;
        if bare.len() + reserve > info.context_length {
            return Err(Attempt::Failed(GenFailure::ContextOverflow {
                needed: bare.len() + reserve,
                context_length: info.context_length,
            }));
        }
        // The turn's prompt budget (the bare prompt always fits: the question is within its
        // own limit, a long system prompt only leaves no room for history).
        let limit = settings
            .max_prompt_tokens
            .min(info.context_length - reserve)
            .max(bare.len());
        let hist = fit_history(&self.history, bare.len(), 0, limit, count);
        let mut prompt = render(hist).map_err(Attempt::Failed)?;
        // The per-turn estimate is close but not exact: drop whole pairs until it fits.
        let mut from = self.history.len() - hist.len();
        while prompt.len() > limit && from < self.history.len() {
            from = (from + 2).min(self.history.len());
            prompt = render(&self.history[from..]).map_err(Attempt::Failed)?;
        }
        Ok(prompt)
    }

    /// One generation attempt, streaming into `replier`; returns how it ended and the text.
    async fn generate(
        &self,
        model: &ActorRef<ModelMsg>,
        prompt: Vec<u32>,
        mut r: Reasoning,
        job: &Job,
        replier: &mut Replier,
        attempt: u32,
    ) -> (Attempt, Reasoning) {
        let settings = &self.ctx.settings;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let req = GenRequest {
            prompt,
            params: settings.generate.clone(),
            events: tx,
            cancel: self.cancel.clone(),
            submitted: Instant::now(),
            cache_key: Some(self.key.clone()),
        };
        if model.send_message(ModelMsg::Generate(req)).is_err() {
            return (Attempt::Lost, r);
        }
        // What the user sees (the answer, or the reasoning shown as configured).
        let mut text = String::new();
        let mut shown = String::new();
        let mut last_frame = Instant::now();
        let mut first = true;
        loop {
            // The next frame is due one throttle after the last when there is new text, one
            // keep-alive after it otherwise.
            let next = last_frame
                + if text != shown {
                    settings.throttle
                } else {
                    settings.keepalive
                };
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(GenEvent::Started { .. }) => {}
                    Some(GenEvent::Text(t)) => {
                        r.push(&t);
                        text = r.display();
                        if first && !text.trim().is_empty() && replier.streams() {
                            first = false;
                            if attempt == 1 {
                                self.ctx.metrics.time_to_first_token_seconds
                                    .observe(job.received.elapsed().as_secs_f64());
                            }
                            if let Err(e) = replier.update(&text).await {
                                tracing::warn!(error = %e, "stream update failed");
                            }
                            shown.clone_from(&text);
                            last_frame = Instant::now();
                        }
                    }
                    Some(GenEvent::Finished(stats)) => return (Attempt::Done(stats), r),
                    Some(GenEvent::Failed(f)) => return (Attempt::Failed(f), r),
                    None => return (Attempt::Lost, r),
                },
                _ = tokio::time::sleep_until(next.into()), if !first => {
                    if let Err(e) = replier.update(&text).await {
                        tracing::warn!(error = %e, "stream update failed");
                    }
                    shown.clone_from(&text);
                    last_frame = Instant::now();
                }
            }
        }
    }
}

/// The frame a queued question shows until its turn (Chinese, then English).
fn queued_text(ahead: usize) -> String {
    if ahead == 0 {
        "⏳ 排队中：下一个就轮到你。(Queued: you are next.)".to_string()
    } else {
        format!(
            "⏳ 排队中：前面还有 {ahead} 个问题，轮到你时我会马上回答。(Queued: {ahead} question(s) \
             ahead of yours; I will answer as soon as it is your turn.)"
        )
    }
}

/// Appended when max_tokens ran out inside the reasoning part.
const OUT_OF_TOKENS_THINKING: &str = "⚠️ 模型还在思考时就用完了回答长度上限（max_tokens）；请再问一次，或调大 \
     max_tokens。(The model used up max_tokens while still thinking; ask again, or raise max_tokens.)";

const MODEL_RESTARTING: &str =
    "⚠️ 模型重启中，正在重新生成回答… (The model restarted; regenerating the answer…)";

const RESTARTING: &str =
    "⚠️ 服务正在重启，请稍后再试。(The box is restarting; please ask again in a moment.)";

/// Sends the final answer (or notice), audits the outcome and settles the inbound row. What
/// could not be delivered but can still be sent proactively goes to the durable outbox
/// ([`crate::outbox`]), which settles the row in the same transaction.
async fn deliver(replier: &mut Replier, job: &Job, key: &str, text: String) {
    let ok = match replier.finish(&text).await {
        Ok(()) => {
            record(
                "reply_sent",
                key,
                json!({"msgid": job.msgid, "bytes": text.len(), "frames": replier.frames()}),
            );
            true
        }
        Err(u) if !u.parts.is_empty() => match defer(job, key, &u).await {
            Ok(id) => {
                tracing::warn!(session = %key, outbox_id = id, error = %u, "answer not delivered; kept in the outbox");
                return;
            }
            Err(e) => {
                let error = format!("{u}; the outbox could not keep it: {e}");
                record(
                    "reply_failed",
                    key,
                    json!({"msgid": job.msgid, "error": error}),
                );
                false
            }
        },
        Err(u) => {
            record(
                "reply_failed",
                key,
                json!({"msgid": job.msgid, "error": u.error}),
            );
            false
        }
    };
    finish_inbound(job.inbound_id, ok);
}

/// Keeps an undelivered answer in the outbox (durable before this returns) and wakes the
/// outbox actor; the outbox id.
async fn defer(job: &Job, key: &str, u: &Undelivered) -> Result<i64, String> {
    let a = audit().ok_or("the audit actor is restarting")?;
    let deadline_ms = wecom_edge_audit::now_ms() + OUTBOX_DEADLINE.as_millis() as i64;
    let id = ractor::call!(a, |reply| AuditMsg::OutboxPut {
        inbound_id: job.inbound_id,
        conversation: key.to_string(),
        origin: serde_json::to_value(&job.origin).unwrap_or_default(),
        parts: u.parts.clone(),
        error: u.error.clone(),
        deadline_ms,
        reply,
    })
    .map_err(|e| e.to_string())??;
    if let Some(o) = ractor::registry::where_is(OUTBOX_ACTOR.into()) {
        let _ = o.send_message(OutboxMsg::Wake);
    }
    Ok(id)
}

struct DepthGuard(Metrics);

impl Drop for DepthGuard {
    fn drop(&mut self) {
        self.0.queue_depth.dec();
    }
}

/// The model actor, once it is registered and answers (waits up to `wait` for a restart).
async fn wait_model(wait: Duration) -> Option<(ActorRef<ModelMsg>, ModelInfo)> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(cell) = ractor::registry::where_is(MODEL_ACTOR.into()) {
            let m: ActorRef<ModelMsg> = cell.into();
            if let Ok(info) = ractor::call!(m, ModelMsg::Info) {
                return Some((m, info));
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
