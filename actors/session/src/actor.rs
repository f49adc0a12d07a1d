//! The session actor: one per conversation key, started by the router under `session_sup`.
//!
//! Runtime rules:
//! * Jobs (accepted inbound messages) are answered one at a time, in arrival order; a turn runs
//!   as a task so the mailbox stays responsive (`#reset` cancels the running turn at once).
//! * Commands (`#help #reset #status`, also `/…`) are answered here, without the model.
//! * A question is a turn: named stages (admit, filter_in, prompt, generate with filter_out,
//!   deliver; [`crate::turn`]) run as one task under one exit guard. History is read from
//!   SQLite on the first message (an idle-stopped or restarted session continues its
//!   conversation) and handed to each turn.
//! * `#stop` cancels the running answer (it ends with what was shown, marked as cut);
//!   `#reset` also forgets the conversation.
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
use wecom_edge_audit::{AuditMsg, PendingInbound, AUDIT_ACTOR};
use wecom_edge_limiter::{LimiterMsg, LIMITER_ACTOR};
use wecom_edge_model::MODEL_ACTOR;
use wecom_edge_watchdog::Metrics;

use crate::admin::NOT_ADMIN;
use crate::filter::FilterHandle;
use crate::persona::Personas;
use crate::reasoning::ReasoningMode;
use crate::reply::{Origin, Outbound, Replier, ReplyTo};
use crate::router::RouterMsg;
use crate::turn::TurnCtx;
use crate::{parse_command, strip_mentions, Command, Turn};

/// Settings shared by all sessions.
#[derive(Debug, Clone)]
pub struct SessionSettings {
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
    /// Who answers, per bot or app (system prompt, language, welcome, sampling).
    pub personas: Personas,
    /// The content filter in force (reloadable).
    pub filter: FilterHandle,
    /// The company knowledge base the retrieve stage searches (`None`: not configured).
    pub knowledge: Option<crate::knowledge::KnowledgeBase>,
    /// Whether new messages are taken (false while the data partition is nearly full: they are
    /// answered with a polite refusal instead of being accepted with nowhere to record them).
    pub accepting: Arc<std::sync::atomic::AtomicBool>,
    /// Who may run `#status all` and `#reload`, and what they run.
    pub admin: crate::admin::Admin,
    /// What generates each endpoint's answers ([`wecom_edge_model::serve::local::Local`]: this
    /// process's model; an upstream; either with a fallback).
    pub generators: crate::Generators,
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

/// Settles inbound row `id` (answered, or given up).
pub(crate) fn finish_inbound(id: i64, answered: bool) {
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
        let id = job.inbound_id;
        let turn = TurnCtx::new(
            self.args.key.clone(),
            self.args.ctx.clone(),
            self.history.clone().unwrap_or_default(),
            cancel.clone(),
            job,
        );
        let me = myself.clone();
        let task = tokio::spawn(async move {
            let exchange = turn.run().await;
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
        let name = format!("{cmd:?}").to_lowercase();
        let admin = self.args.ctx.admin.clone();
        if cmd.is_admin() && !admin.allows(&job.origin.user) {
            record(
                "command_refused",
                &key,
                json!({"msgid": job.msgid, "command": name, "userid": job.origin.user}),
            );
            return self.answer(job, async { NOT_ADMIN.to_string() });
        }
        let text = match cmd {
            Command::Help => self.args.ctx.personas.for_origin(&job.origin).help(),
            Command::Stop => {
                let running = match &self.current {
                    Some((_, cancel, _)) => {
                        cancel.store(true, Ordering::Relaxed);
                        true
                    }
                    None => false,
                };
                record("session_stop", &key, json!({"running": running}));
                if running {
                    "好的，已停止当前回答。(Stopped the answer in progress.)".to_string()
                } else {
                    "现在没有正在生成的回答。(No answer is being written right now.)".to_string()
                }
            }
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
            Command::Reload => {
                record(
                    "command",
                    &key,
                    json!({"msgid": job.msgid, "command": name}),
                );
                return self.answer(job, async move { admin.reload().await });
            }
            Command::Status | Command::StatusAll => {
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
                let own = format!(
                    "状态 (status): model {model} · {active} generation(s) running, {waiting} \
                     waiting · \
                     {} turn(s) of history in this conversation · {} question(s) waiting here",
                    self.history.as_ref().map_or(0, Vec::len),
                    self.queue.len() + usize::from(self.current.is_some()),
                );
                if cmd == Command::StatusAll {
                    format!("{own}\n{}", admin.status())
                } else {
                    own
                }
            }
        };
        record(
            "command",
            &key,
            json!({"msgid": job.msgid, "command": name}),
        );
        self.answer(job, async move { text })
    }

    /// Sends the text `text` resolves to as `job`'s answer, off the actor (a reply, or a
    /// `#reload`, may take a while), and settles the inbound row.
    fn answer(
        &self,
        job: Job,
        text: impl std::future::Future<Output = String> + Send + 'static,
    ) -> Result<(), ActorProcessingErr> {
        let id = job.inbound_id;
        tokio::spawn(async move {
            let text = text.await;
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
