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

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use wecom_edge_audit::{Accepted, AuditMsg, AUDIT_ACTOR};
use wecom_edge_supervisor::{ChildSpec, Restart, SupervisorMsg};

use crate::actor::{Job, SessionActor, SessionArgs, SessionContext, SessionMsg};
use crate::reply::{Origin, ReplyTo};
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
                let accepted = match ractor::registry::where_is(AUDIT_ACTOR.into()) {
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
                        tracing::error!(msgid = %m.msgid, error = %e, "could not record the message; not acknowledged");
                        if let Some(tx) = m.accepted.take() {
                            let _ = tx.send(false);
                        }
                        return Ok(());
                    }
                };
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
