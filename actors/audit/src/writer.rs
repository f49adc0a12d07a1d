//! The audit actor: the single writer of the SQLite file.
//!
//! Every write goes through this actor's mailbox, so SQLite sees one writer and the hash chain
//! is appended in one order. Calls that must be durable before the caller goes on
//! ([`AuditMsg::AcceptInbound`]: a message is written before it is acknowledged) are RPCs;
//! fire-and-forget events are casts, and a failed write is logged and counted (never a crash
//! loop: the watchdog's SQLite probe, [`AuditMsg::Probe`], reports the store unhealthy).
//! Registered under [`AUDIT_ACTOR`].
//!
//! At start it loads (or makes) the audit key and opens the store; what the open found
//! ([`StartFinding`]) is logged, written to the chain, and answered by [`AuditMsg::Findings`].
//! The chain's head is logged (`audit head`: seq, hash, db_id, key_id) at start, every
//! [`HEAD_LOG_EVERY`] and at stop, so the journal holds anchors outside the data directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::Value;

use crate::{
    Accepted, AuditError, AuditKey, AuditStore, OutboxItem, PendingInbound, StartFinding, Turn,
};

/// The audit actor's registered name.
pub const AUDIT_ACTOR: &str = "audit";

/// How long msgids are remembered for dedupe (WeCom retries within minutes; a day is ample).
pub const DEDUPE_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// How often the chain's head is logged (also at start and at stop).
pub const HEAD_LOG_EVERY: Duration = Duration::from_secs(600);

/// Messages to the audit actor. Replies carry errors as text (the store's error is not `Clone`).
#[derive(Debug)]
pub enum AuditMsg {
    /// Appends an audit row (`kind`, `actor`, `subject`, `detail` JSON without message text).
    Append {
        /// Event kind (`generation_finished`, `actor_restarted`, …).
        kind: String,
        /// Who (`session`, `model`, `aibot/{bot_id}`, …).
        actor: String,
        /// What (a msgid, a conversation key, a child id).
        subject: String,
        /// Details.
        detail: Value,
    },
    /// [`AuditStore::accept_inbound`]: durable before the reply.
    AcceptInbound {
        /// Channel (`aibot/{bot_id}`, `app/{agentid}`).
        channel: String,
        /// WeCom's msgid.
        msgid: String,
        /// Conversation key.
        conversation: String,
        /// The message (JSON) as needed to answer it after a restart.
        payload: Value,
        /// The outcome.
        reply: RpcReplyPort<Result<Accepted, String>>,
    },
    /// [`AuditStore::finish_inbound`].
    FinishInbound {
        /// Inbound id.
        id: i64,
        /// Answered (`true`) or failed and the user told.
        answered: bool,
    },
    /// Accepted, unanswered messages, oldest first; only one conversation's when given.
    Pending {
        /// Filter.
        conversation: Option<String>,
        /// The list.
        reply: RpcReplyPort<Result<Vec<PendingInbound>, String>>,
    },
    /// Appends one turn to a session's history.
    HistoryPush {
        /// Session (conversation key).
        session: String,
        /// `user` or `assistant`.
        role: String,
        /// Text.
        content: String,
    },
    /// A session's last `limit` turns.
    History {
        /// Session.
        session: String,
        /// Most turns.
        limit: usize,
        /// Oldest first.
        reply: RpcReplyPort<Result<Vec<Turn>, String>>,
    },
    /// Forgets a session's history (`#reset`); replies when done.
    HistoryClear {
        /// Session.
        session: String,
        /// Rows removed.
        reply: RpcReplyPort<Result<usize, String>>,
    },
    /// A write probe for the watchdog: a real write that must commit
    /// ([`AuditStore::probe`]).
    Probe(RpcReplyPort<Result<(), String>>),
    /// [`AuditStore::start_attempt`]: one more generation for inbound `id`; the new count.
    StartAttempt {
        /// Inbound id.
        id: i64,
        /// The count (0: no such message).
        reply: RpcReplyPort<Result<i64, String>>,
    },
    /// Prunes dedupe rows past [`DEDUPE_RETENTION`] (sent hourly by the actor itself).
    Prune,
    /// What the store's open found at this actor's start (empty: all agreed); for health and
    /// alerts. [`StartFinding::is_alert`] tells which to raise.
    Findings(RpcReplyPort<Vec<StartFinding>>),
    /// Logs the chain's head (sent every [`HEAD_LOG_EVERY`] by the actor itself).
    LogHead,
    /// [`AuditStore::outbox_put`]: keeps an undelivered answer and settles its inbound
    /// message; the outbox id.
    OutboxPut {
        /// The inbound message answered.
        inbound_id: i64,
        /// Conversation key.
        conversation: String,
        /// Where it goes (the inbound message's origin JSON).
        origin: Value,
        /// What is still to send, in order.
        parts: Vec<String>,
        /// Why it was not delivered.
        error: String,
        /// Given up after this (unix ms).
        deadline_ms: i64,
        /// The outbox id.
        reply: RpcReplyPort<Result<i64, String>>,
    },
    /// [`AuditStore::outbox_progress`].
    OutboxProgress {
        /// Outbox id.
        id: i64,
        /// Parts still to send.
        parts: Vec<String>,
        /// After a failure: the error and the next attempt (unix ms).
        failed: Option<(String, i64)>,
    },
    /// [`AuditStore::outbox_done`] (`abandoned: None`) or [`AuditStore::outbox_abandon`].
    OutboxSettle {
        /// Outbox id.
        id: i64,
        /// Why it was given up.
        abandoned: Option<String>,
    },
    /// [`AuditStore::outbox_pending`].
    OutboxPending(RpcReplyPort<Result<Vec<OutboxItem>, String>>),
}

/// Start arguments.
#[derive(Clone)]
pub struct AuditArgs {
    /// Data directory (created if absent).
    pub dir: PathBuf,
    /// The audit key file, made (0600, directory 0700) when absent; usually
    /// [`AuditKey::default_path`]`(&dir)`, or e.g. a systemd credential file.
    pub key: PathBuf,
    /// Called on every failed write (the metrics counter).
    pub on_write_error: Arc<dyn Fn() + Send + Sync>,
}

/// The actor.
#[derive(Debug, Default)]
pub struct AuditActor;

/// Its state.
pub struct AuditState {
    store: AuditStore,
    on_write_error: Arc<dyn Fn() + Send + Sync>,
    timers: [tokio::task::JoinHandle<()>; 2],
    /// Fire-and-forget writes that failed (disk full, read-only filesystem), replayed in
    /// order before the next write once the store takes writes again.
    deferred: std::collections::VecDeque<Deferred>,
    /// Deferred writes dropped because [`MAX_DEFERRED`] were already held.
    deferred_dropped: u64,
}

/// At most this many failed fire-and-forget writes are held for replay (a few MB).
pub const MAX_DEFERRED: usize = 10_000;

/// A fire-and-forget write kept for replay.
enum Deferred {
    Append {
        kind: String,
        actor: String,
        subject: String,
        detail: Value,
        at_ms: i64,
    },
    FinishInbound {
        id: i64,
        answered: bool,
    },
    OutboxSettle {
        id: i64,
        abandoned: Option<String>,
    },
}

impl Deferred {
    fn apply(&self, store: &mut AuditStore) -> Result<(), AuditError> {
        match self {
            Deferred::Append {
                kind,
                actor,
                subject,
                detail,
                at_ms,
            } => {
                // Marked as written late, with the time it happened.
                let mut detail = detail.clone();
                if let Value::Object(m) = &mut detail {
                    m.insert("recorded_late_from_ms".into(), (*at_ms).into());
                }
                store.append(kind, actor, subject, &detail).map(drop)
            }
            Deferred::FinishInbound { id, answered } => store.finish_inbound(*id, *answered),
            Deferred::OutboxSettle { id, abandoned } => match abandoned {
                None => store.outbox_done(*id),
                Some(e) => store.outbox_abandon(*id, e),
            },
        }
    }
}

impl Drop for AuditState {
    fn drop(&mut self) {
        for t in &self.timers {
            t.abort();
        }
    }
}

/// Sends `msg()` to `me` after `first`, then every `period`, until the actor is gone.
fn every(
    me: ActorRef<AuditMsg>,
    first: Duration,
    period: Duration,
    msg: fn() -> AuditMsg,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, period);
        loop {
            tick.tick().await;
            if me.send_message(msg()).is_err() {
                return;
            }
        }
    })
}

fn log_head(store: &AuditStore, when: &str) {
    if let Some(h) = store.head() {
        tracing::info!(
            seq = h.seq,
            rows = h.seq,
            hash = %h.hash,
            db_id = %h.db_id,
            key_id = %h.key_id,
            "audit head ({when})"
        );
    }
}

impl AuditState {
    /// Keeps a failed fire-and-forget write for replay.
    fn defer(&mut self, what: &str, r: Result<(), AuditError>, d: Deferred) {
        let failed = match r {
            Ok(()) => false,
            // Queued behind earlier failures: already reported once.
            Err(AuditError::Deferred) => true,
            Err(e) => self.check(what, Err::<(), _>(e)).is_err(),
        };
        if failed {
            if self.deferred.len() < MAX_DEFERRED {
                self.deferred.push_back(d);
            } else {
                self.deferred_dropped += 1;
            }
        }
    }

    /// Replays deferred writes in order until one fails; true when none is left.
    fn replay(&mut self) -> bool {
        let replayed = self.deferred.len();
        if replayed == 0 && self.deferred_dropped == 0 {
            return true;
        }
        while let Some(d) = self.deferred.front() {
            if d.apply(&mut self.store).is_err() {
                return false;
            }
            self.deferred.pop_front();
        }
        if self.deferred_dropped > 0 {
            let detail =
                serde_json::json!({"dropped": self.deferred_dropped, "held": MAX_DEFERRED});
            if self
                .store
                .append("audit_rows_lost", "audit", "", &detail)
                .is_err()
            {
                return false;
            }
            self.deferred_dropped = 0;
        }
        tracing::info!(
            replayed,
            "audit store writable again: deferred writes replayed"
        );
        true
    }

    fn check<T>(&self, what: &str, r: Result<T, AuditError>) -> Result<T, String> {
        r.map_err(|e| {
            (self.on_write_error)();
            tracing::error!(error = %e, "audit store: {what} failed");
            e.to_string()
        })
    }
}

impl Actor for AuditActor {
    type Msg = AuditMsg;
    type State = AuditState;
    type Arguments = AuditArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AuditMsg>,
        args: AuditArgs,
    ) -> Result<AuditState, ActorProcessingErr> {
        let key = AuditKey::load_or_create(&args.key)?;
        let store = AuditStore::open(&args.dir, key)?;
        log_head(&store, "start");
        let hour = Duration::from_secs(3600);
        let timers = [
            every(myself.clone(), Duration::ZERO, hour, || AuditMsg::Prune),
            every(myself, HEAD_LOG_EVERY, HEAD_LOG_EVERY, || AuditMsg::LogHead),
        ];
        Ok(AuditState {
            store,
            on_write_error: args.on_write_error,
            timers,
            deferred: Default::default(),
            deferred_dropped: 0,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<AuditMsg>,
        st: &mut AuditState,
    ) -> Result<(), ActorProcessingErr> {
        if !st.replay() {
            // The store never came back: the journal is the only record left of these.
            for d in &st.deferred {
                if let Deferred::Append {
                    kind,
                    actor,
                    subject,
                    at_ms,
                    ..
                } = d
                {
                    tracing::error!(
                        alert = true,
                        kind,
                        actor,
                        subject,
                        at_ms,
                        "audit row never written (storage failed)"
                    );
                }
            }
            tracing::error!(
                alert = true,
                held = st.deferred.len(),
                dropped = st.deferred_dropped,
                "audit store: writes lost at stop"
            );
        }
        log_head(&st.store, "stop");
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<AuditMsg>,
        msg: AuditMsg,
        st: &mut AuditState,
    ) -> Result<(), ActorProcessingErr> {
        // What failed before goes first, so the chain keeps the order things happened in.
        let clear = st.replay();
        match msg {
            AuditMsg::Append {
                kind,
                actor,
                subject,
                detail,
            } => {
                let at_ms = crate::now_ms();
                let r = if clear {
                    st.store.append(&kind, &actor, &subject, &detail).map(drop)
                } else {
                    Err(AuditError::Deferred)
                };
                let d = Deferred::Append {
                    kind,
                    actor,
                    subject,
                    detail,
                    at_ms,
                };
                st.defer("append", r, d);
            }
            AuditMsg::AcceptInbound {
                channel,
                msgid,
                conversation,
                payload,
                reply,
            } => {
                let r = st
                    .store
                    .accept_inbound(&channel, &msgid, &conversation, &payload);
                let _ = reply.send(st.check("accept_inbound", r));
            }
            AuditMsg::FinishInbound { id, answered } => {
                let r = if clear {
                    st.store.finish_inbound(id, answered)
                } else {
                    Err(AuditError::Deferred)
                };
                st.defer(
                    "finish_inbound",
                    r,
                    Deferred::FinishInbound { id, answered },
                );
            }
            AuditMsg::Pending {
                conversation,
                reply,
            } => {
                let r = st.store.pending_inbound().map(|v| {
                    v.into_iter()
                        .filter(|p| conversation.as_ref().is_none_or(|c| &p.conversation == c))
                        .collect()
                });
                let _ = reply.send(r.map_err(|e| e.to_string()));
            }
            AuditMsg::HistoryPush {
                session,
                role,
                content,
            } => {
                let r = st.store.history_push(&session, &role, &content);
                let _ = st.check("history_push", r);
            }
            AuditMsg::History {
                session,
                limit,
                reply,
            } => {
                let r = st.store.history(&session, limit);
                let _ = reply.send(r.map_err(|e| e.to_string()));
            }
            AuditMsg::HistoryClear { session, reply } => {
                let r = st.store.history_clear(&session);
                let _ = reply.send(st.check("history_clear", r));
            }
            AuditMsg::Probe(reply) => {
                let r = if clear {
                    st.store.probe()
                } else {
                    Err(AuditError::Deferred)
                };
                let _ = reply.send(st.check("probe", r));
            }
            AuditMsg::StartAttempt { id, reply } => {
                let r = st.store.start_attempt(id);
                let _ = reply.send(st.check("start_attempt", r));
            }
            AuditMsg::Prune => {
                let r = st.store.prune(DEDUPE_RETENTION);
                if let Ok(n) = st.check("prune", r) {
                    tracing::debug!(pruned = n, "dedupe rows past retention removed");
                }
            }
            AuditMsg::OutboxPut {
                inbound_id,
                conversation,
                origin,
                parts,
                error,
                deadline_ms,
                reply,
            } => {
                let r = st.store.outbox_put(
                    inbound_id,
                    &conversation,
                    &origin,
                    &parts,
                    &error,
                    deadline_ms,
                );
                let _ = reply.send(st.check("outbox_put", r));
            }
            AuditMsg::OutboxProgress { id, parts, failed } => {
                let r = st.store.outbox_progress(
                    id,
                    &parts,
                    failed.as_ref().map(|(e, t)| (e.as_str(), *t)),
                );
                let _ = st.check("outbox_progress", r);
            }
            AuditMsg::OutboxSettle { id, abandoned } => {
                let d = Deferred::OutboxSettle { id, abandoned };
                let r = if clear {
                    d.apply(&mut st.store)
                } else {
                    Err(AuditError::Deferred)
                };
                st.defer("outbox_settle", r, d);
            }
            AuditMsg::OutboxPending(reply) => {
                let r = st.store.outbox_pending();
                let _ = reply.send(r.map_err(|e| e.to_string()));
            }
            AuditMsg::Findings(reply) => {
                let _ = reply.send(st.store.findings().to_vec());
            }
            AuditMsg::LogHead => log_head(&st.store, "periodic"),
        }
        Ok(())
    }
}

/// Appends an audit row through the registered audit actor (dropped with a warning when it is
/// not running — e.g. mid-restart; the row is an observation, not state).
pub fn record(kind: &str, actor: &str, subject: &str, detail: Value) {
    match ractor::registry::where_is(AUDIT_ACTOR.into()) {
        Some(cell) => {
            let r: ActorRef<AuditMsg> = cell.into();
            let _ = r.send_message(AuditMsg::Append {
                kind: kind.into(),
                actor: actor.into(),
                subject: subject.into(),
                detail,
            });
        }
        None => tracing::warn!(
            kind,
            actor,
            subject,
            "audit actor not running; row not recorded"
        ),
    }
}
