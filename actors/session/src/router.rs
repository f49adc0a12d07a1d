//! The ingress router: every accepted message passes through here.
//!
//! For each inbound message it (1) records the msgid in SQLite — a duplicate (WeCom's
//! redelivery, a callback retry) is dropped and audited, a new message is durable from here on
//! — then (2) finds the session actor for the conversation key, starting it under
//! `session_sup` when there is none, and (3) hands it the job.
//!
//! Sessions are registered as `session:{key}`; `session_sup` restarts a crashed one under the
//! same name (transient children), and the new incarnation reads its unanswered messages from
//! SQLite. Idle sessions ask to stop; the router agrees only when it has sent them nothing
//! newer than what they have seen, and stops them before handling its next message, so no
//! message is ever sent to a session that is going away.
//!
//! At start-up the router starts a session for every conversation with accepted but
//! unanswered messages (after a crash or a power cut): they are answered, or the user is told.
//!
//! When storage fails (a full or read-only disk, [`SessionContext::accepting`] false) nothing
//! is lost silently: a callback is not acknowledged (503, WeCom retries it later), and a
//! long-connection message — which WeCom never redelivers — is told plainly that the box
//! cannot take messages now; it is remembered (bounded, in memory) and recorded as
//! `inbound_unrecorded` in the audit trail when the next message is stored.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use wecom_edge_audit::{Accepted, AuditMsg, AUDIT_ACTOR};
use wecom_edge_supervisor::{ChildSpec, Restart, SupervisorMsg};

use crate::actor::{Job, SessionActor, SessionArgs, SessionContext, SessionMsg};
use crate::reply::{Origin, Replier, ReplyTo};
use crate::{ConversationKey, Scope};

/// The router's registered name.
pub const ROUTER_ACTOR: &str = "router";

/// A message from WeCom I/O, verified and decrypted, not yet recorded.
#[derive(Debug)]
pub struct InboundMsg {
    /// WeCom's msgid (the dedupe key).
    pub msgid: String,
    /// Who and where.
    pub origin: Origin,
    /// How to answer.
    pub reply: ReplyTo,
    /// When the box received it.
    pub received: Instant,
    /// Told `true` once the message is durable (or a known duplicate), `false` when it could
    /// not be stored (then it must not be acknowledged).
    pub accepted: Option<tokio::sync::oneshot::Sender<bool>>,
}

/// Messages to the router.
#[derive(Debug)]
pub enum RouterMsg {
    /// A message to record and route.
    Inbound(Box<InboundMsg>),
    /// A session has been idle; `handled` is the newest inbound id it has seen.
    SessionIdle {
        /// Its key.
        key: String,
        /// Newest inbound id seen.
        handled: i64,
    },
}

/// The registered name of `session_sup`, the supervisor sessions are started under.
pub const SESSION_SUP: &str = "session_sup";

/// Start arguments.
#[derive(Debug, Clone)]
pub struct RouterArgs {
    /// What sessions share.
    pub ctx: SessionContext,
    /// Per user or per group contexts.
    pub scope: Scope,
}

/// The actor.
#[derive(Debug, Default)]
pub struct RouterActor;

/// Its state.
#[derive(Debug)]
pub struct RouterState {
    args: RouterArgs,
    /// Newest inbound id sent to each live session.
    last_sent: HashMap<String, i64>,
    /// Incarnation counter for child ids (a stopped session's id may linger in `session_sup`
    /// for a moment; a fresh id never collides).
    started: u64,
    /// Long-connection messages that could not be stored (the user was told), as
    /// `(channel, msgid, conversation)`; audited with the next message stored. At most
    /// [`MAX_UNRECORDED`]; beyond that only counted.
    unrecorded: Vec<(String, String, String)>,
    /// Unrecorded messages beyond [`MAX_UNRECORDED`].
    unrecorded_dropped: u64,
}

/// Most unrecorded messages remembered for the audit trail.
pub const MAX_UNRECORDED: usize = 1000;

/// What a user is told when the box cannot store their message.
pub const CANNOT_STORE: &str = "⚠️ 服务器存储暂时不可用，这条消息未能保存，请稍后再发一次。\
     (The box cannot store messages right now, so it cannot take this one; please send it again \
     in a few minutes.)";

/// Tells the sender behind `reply` that their message cannot be taken now, in the background.
fn tell_cannot_store(reply: ReplyTo) {
    tokio::spawn(async move {
        let mut r = Replier::new(reply);
        if let Err(e) = r.finish(CANNOT_STORE).await {
            tracing::warn!(error = %e, "could not tell the user the message was not stored");
        }
    });
}

fn session_name(key: &str) -> String {
    format!("session:{key}")
}

impl RouterState {
    /// The session for `key`, started when absent.
    async fn session(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        key: &str,
    ) -> Result<ActorRef<SessionMsg>, ActorProcessingErr> {
        let name = session_name(key);
        for _ in 0..100 {
            if let Some(cell) = ractor::registry::where_is(name.clone()) {
                return Ok(cell.into());
            }
            self.started += 1;
            let args = SessionArgs {
                key: key.to_string(),
                ctx: self.args.ctx.clone(),
                router: myself.clone(),
            };
            let n = name.clone();
            let spec = ChildSpec::new(&format!("{key}#{}", self.started), move |sup| {
                let (args, n) = (args.clone(), n.clone());
                async move {
                    let (r, _) = Actor::spawn_linked(Some(n), SessionActor, args, sup).await?;
                    Ok(r.get_cell())
                }
            })
            .restart(Restart::Transient)
            .shutdown(wecom_edge_supervisor::Shutdown::Timeout(
                Duration::from_secs(5),
            ));
            let sup: ActorRef<SupervisorMsg> = ractor::registry::where_is(SESSION_SUP.into())
                .ok_or("session_sup is not running")?
                .into();
            match ractor::call!(sup, SupervisorMsg::StartChild, spec)? {
                Ok(cell) => return Ok(cell.into()),
                // The name is being re-registered by a restart: look again.
                Err(e) => {
                    tracing::debug!(session = key, error = %e, "session start raced; retrying");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        Err(format!("could not start the session for {key}").into())
    }
}

impl Actor for RouterActor {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = RouterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<RouterMsg>,
        args: RouterArgs,
    ) -> Result<RouterState, ActorProcessingErr> {
        Ok(RouterState {
            args,
            last_sent: HashMap::new(),
            started: 0,
            unrecorded: Vec::new(),
            unrecorded_dropped: 0,
        })
    }

    /// The start-up sweep: a session for every conversation with unanswered messages.
    async fn post_start(
        &self,
        myself: ActorRef<RouterMsg>,
        st: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        let a: ActorRef<AuditMsg> = ractor::registry::where_is(AUDIT_ACTOR.into())
            .ok_or("the audit actor is not running")?
            .into();
        let pending = ractor::call!(a, |reply| AuditMsg::Pending {
            conversation: None,
            reply
        })?
        .map_err(|e| format!("reading pending messages: {e}"))?;
        let keys: BTreeSet<String> = pending.iter().map(|p| p.conversation.clone()).collect();
        if !keys.is_empty() {
            tracing::info!(
                messages = pending.len(),
                conversations = keys.len(),
                "answering messages accepted before the restart"
            );
        }
        for p in &pending {
            let e = st.last_sent.entry(p.conversation.clone()).or_insert(0);
            *e = (*e).max(p.id);
        }
        for key in keys {
            st.session(&myself, &key).await?;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RouterMsg>,
        msg: RouterMsg,
        st: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RouterMsg::Inbound(mut m) => {
                // Bounded before it reaches SQLite (dedupe, inbound, audit rows).
                if let std::borrow::Cow::Owned(k) = wecom_edge_wecom::callback::msgid_key(&m.msgid)
                {
                    m.msgid = k;
                }
                let o = &m.origin;
                let key = ConversationKey::new(
                    &o.channel,
                    &o.endpoint,
                    o.chat.as_deref(),
                    &o.user,
                    st.args.scope,
                )
                .to_string();
                let channel = format!("{}/{}", o.channel, o.endpoint);
                let payload = serde_json::to_value(o)?;
                let accepted = if !st.args.ctx.accepting.load(Ordering::Relaxed) {
                    Err("the data partition is nearly full".to_string())
                } else {
                    match ractor::registry::where_is(AUDIT_ACTOR.into()) {
                        Some(cell) => {
                            let a: ActorRef<AuditMsg> = cell.into();
                            let (msgid, conversation) = (m.msgid.clone(), key.clone());
                            ractor::call!(a, |reply| AuditMsg::AcceptInbound {
                                channel,
                                msgid,
                                conversation,
                                payload,
                                reply,
                            })
                            .map_err(|e| e.to_string())
                            .and_then(|r| r)
                        }
                        None => Err("the audit actor is not running".into()),
                    }
                };
                let metrics = &st.args.ctx.metrics;
                let id = match accepted {
                    Ok(Accepted::New(id)) => {
                        metrics.messages_received.inc();
                        id
                    }
                    Ok(Accepted::Duplicate) => {
                        metrics.messages_duplicated.inc();
                        tracing::info!(msgid = %m.msgid, "duplicate message dropped");
                        if let Some(tx) = m.accepted.take() {
                            let _ = tx.send(true);
                        }
                        return Ok(());
                    }
                    Err(e) => {
                        if let Some(tx) = m.accepted.take() {
                            // A callback: not acknowledged, so WeCom retries it later.
                            tracing::error!(msgid = %m.msgid, error = %e, "could not record the message; not acknowledged (WeCom retries)");
                            let _ = tx.send(false);
                        } else {
                            // The long connection never redelivers: say so to the user now.
                            tracing::error!(alert = true, msgid = %m.msgid, error = %e, "could not record the message; the user is told to send it again");
                            if st.unrecorded.len() < MAX_UNRECORDED {
                                st.unrecorded.push((
                                    format!("{}/{}", m.origin.channel, m.origin.endpoint),
                                    m.msgid.clone(),
                                    key.clone(),
                                ));
                            } else {
                                st.unrecorded_dropped += 1;
                            }
                            tell_cannot_store(m.reply);
                        }
                        return Ok(());
                    }
                };
                // Storage works: what could not be recorded before goes into the trail now.
                if !st.unrecorded.is_empty() || st.unrecorded_dropped > 0 {
                    for (channel, msgid, conversation) in st.unrecorded.drain(..) {
                        wecom_edge_audit::record(
                            "inbound_unrecorded",
                            &channel,
                            &msgid,
                            serde_json::json!({"conversation": conversation, "told_user": true}),
                        );
                    }
                    if st.unrecorded_dropped > 0 {
                        wecom_edge_audit::record(
                            "inbound_unrecorded",
                            "router",
                            "",
                            serde_json::json!({"more": st.unrecorded_dropped, "told_user": true}),
                        );
                        st.unrecorded_dropped = 0;
                    }
                }
                if let Some(tx) = m.accepted.take() {
                    let _ = tx.send(true);
                }
                let session = st.session(&myself, &key).await?;
                st.last_sent.insert(key, id);
                let m = *m;
                let job = Job {
                    inbound_id: id,
                    msgid: m.msgid,
                    origin: m.origin,
                    reply: m.reply,
                    received: m.received,
                };
                // A session that just died misses this; its restart reads it from SQLite.
                let _ = session.send_message(SessionMsg::Job(Box::new(job)));
            }
            RouterMsg::SessionIdle { key, handled } => {
                let sent = st.last_sent.get(&key).copied().unwrap_or(0);
                if handled >= sent {
                    if let Some(cell) = ractor::registry::where_is(session_name(&key)) {
                        st.last_sent.remove(&key);
                        tracing::debug!(session = %key, "idle session stopped");
                        let _ = cell
                            .stop_and_wait(Some("idle".into()), Some(Duration::from_secs(5)))
                            .await;
                    }
                }
            }
        }
        Ok(())
    }
}
