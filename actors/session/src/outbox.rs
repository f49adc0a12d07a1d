//! The outbox actor: delivers answers that were generated but not delivered (kept durably by
//! [`AuditMsg::OutboxPut`] — a socket drop mid-stream, WeCom's API failing, the access_token
//! refused), until they are delivered or their deadline passes.
//!
//! * **What** — each undelivered answer is its remaining parts, in order, sent proactively to
//!   the conversation it answers ([`send_proactive`]: `aibot_send_msg` over the bot's long
//!   connection once it is back, or the app's `message/send` / `appchat/send`).
//! * **When** — a pass every [`PASS_EVERY`] and whenever a session defers an answer; a failed
//!   attempt waits `min(1 s × 2^attempts, 60 s)` ([`backoff`]). Within one conversation
//!   answers go strictly oldest first: a later one waits for an earlier one.
//! * **Until** — [`OUTBOX_DEADLINE`] after the answer was deferred, it is given up: an audit row
//!   `reply_abandoned`, the inbound message marked failed, an alert line, and
//!   `wecom_edge_outbox_abandoned` counts it.
//! * **Health** — `wecom_edge_outbox_pending` is the number waiting; the readiness check
//!   `outbox` fails while one has waited longer than [`STALE_AFTER`] (it never touches the
//!   watchdog's pets: a WeCom outage is not a reason to restart the box).
//! * **Restarts** — nothing is kept in memory that is not in the store: the first pass after a
//!   (re)start is the start-up sweep.
//!
//! Registered under [`OUTBOX_ACTOR`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use wecom_edge_audit::{now_ms, AuditMsg, OutboxItem, AUDIT_ACTOR};
use wecom_edge_watchdog::{Health, Metrics};

use crate::reply::{send_proactive, Origin, Outbound};

/// The outbox actor's registered name.
pub const OUTBOX_ACTOR: &str = "outbox";

/// How long an undelivered answer is retried before it is given up.
pub const OUTBOX_DEADLINE: Duration = Duration::from_secs(3600);

/// How often the outbox looks for answers due (also on every [`OutboxMsg::Wake`]).
pub const PASS_EVERY: Duration = Duration::from_secs(1);

/// An answer waiting longer than this makes the `outbox` readiness check fail.
pub const STALE_AFTER: Duration = Duration::from_secs(120);

/// The wait after `attempts` failed deliveries: 1 s, 2 s, 4 s, … at most 60 s.
pub fn backoff(attempts: i64) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(0, 6) as u32).min(Duration::from_secs(60))
}

/// Messages to the outbox actor.
#[derive(Debug)]
pub enum OutboxMsg {
    /// Something was deferred: look now.
    Wake,
    /// The pass in progress ended.
    PassDone,
}

/// Start arguments.
#[derive(Clone)]
pub struct OutboxArgs {
    /// Where answers go.
    pub outbound: Arc<Outbound>,
    /// `outbox_pending`, `outbox_delivered`, `outbox_abandoned`.
    pub metrics: Metrics,
    /// The `outbox` readiness check.
    pub health: Health,
}

/// The actor.
#[derive(Debug, Default)]
pub struct OutboxActor;

/// Its state.
pub struct OutboxState {
    args: OutboxArgs,
    /// A pass is running (one at a time: a pass sends in order).
    busy: bool,
    /// A wake came during the pass: run another right after.
    again: bool,
    ticker: tokio::task::JoinHandle<()>,
}

impl Actor for OutboxActor {
    type Msg = OutboxMsg;
    type State = OutboxState;
    type Arguments = OutboxArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<OutboxMsg>,
        args: OutboxArgs,
    ) -> Result<OutboxState, ActorProcessingErr> {
        let me = myself.clone();
        let ticker = tokio::spawn(async move {
            let mut t = tokio::time::interval(PASS_EVERY);
            loop {
                t.tick().await;
                if me.send_message(OutboxMsg::Wake).is_err() {
                    return;
                }
            }
        });
        Ok(OutboxState {
            args,
            busy: false,
            again: false,
            ticker,
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<OutboxMsg>,
        st: &mut OutboxState,
    ) -> Result<(), ActorProcessingErr> {
        st.ticker.abort();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<OutboxMsg>,
        msg: OutboxMsg,
        st: &mut OutboxState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            OutboxMsg::Wake if st.busy => st.again = true,
            OutboxMsg::Wake => {
                st.busy = true;
                let args = st.args.clone();
                tokio::spawn(async move {
                    pass(&args).await;
                    let _ = myself.send_message(OutboxMsg::PassDone);
                });
            }
            OutboxMsg::PassDone => {
                st.busy = false;
                if std::mem::take(&mut st.again) {
                    myself.send_message(OutboxMsg::Wake)?;
                }
            }
        }
        Ok(())
    }
}

fn audit() -> Option<ActorRef<AuditMsg>> {
    ractor::registry::where_is(AUDIT_ACTOR.into()).map(Into::into)
}

/// One pass over the store's outbox: every conversation's oldest answers that are due.
async fn pass(args: &OutboxArgs) {
    let Some(a) = audit() else { return };
    let items = match ractor::call!(a, AuditMsg::OutboxPending) {
        Ok(Ok(v)) => v,
        _ => return,
    };
    report(args, &items);
    let mut left = items.len();
    // Conversations with an earlier answer still waiting (not due, or failed this pass).
    let mut blocked: HashSet<String> = HashSet::new();
    for item in items {
        if blocked.contains(&item.conversation) {
            continue;
        }
        let now = now_ms();
        if now > item.deadline_ms {
            abandon(&a, args, &item);
            left -= 1;
        } else if item.next_ms > now || !deliver(&a, args, item.clone()).await {
            blocked.insert(item.conversation);
        } else {
            left -= 1;
        }
    }
    args.metrics.outbox_pending.set(left as i64);
}

/// Sends what is left of `item`; whether it is all delivered.
async fn deliver(a: &ActorRef<AuditMsg>, args: &OutboxArgs, item: OutboxItem) -> bool {
    let Ok(origin) = serde_json::from_value::<Origin>(item.origin.clone()) else {
        abandon(
            a,
            args,
            &OutboxItem {
                last_error: "the stored origin is unreadable".into(),
                ..item
            },
        );
        return true;
    };
    let mut parts = item.parts.clone();
    while let Some(part) = parts.first() {
        match send_proactive(&args.outbound, &origin, part).await {
            Ok(()) => {
                parts.remove(0);
                if !parts.is_empty() {
                    let _ = a.send_message(AuditMsg::OutboxProgress {
                        id: item.id,
                        parts: parts.clone(),
                        failed: None,
                    });
                }
            }
            Err(e) => {
                let next = now_ms() + backoff(item.attempts + 1).as_millis() as i64;
                tracing::info!(
                    outbox_id = item.id,
                    attempts = item.attempts + 1,
                    error = %e,
                    "undelivered answer: trying again later"
                );
                let _ = a.send_message(AuditMsg::OutboxProgress {
                    id: item.id,
                    parts,
                    failed: Some((e, next)),
                });
                return false;
            }
        }
    }
    let _ = a.send_message(AuditMsg::OutboxSettle {
        id: item.id,
        abandoned: None,
    });
    args.metrics.outbox_delivered.inc();
    tracing::info!(
        outbox_id = item.id,
        attempts = item.attempts + 1,
        "deferred answer delivered"
    );
    true
}

fn abandon(a: &ActorRef<AuditMsg>, args: &OutboxArgs, item: &OutboxItem) {
    let error = format!(
        "not delivered within {} s after {} attempts: {}",
        OUTBOX_DEADLINE.as_secs(),
        item.attempts,
        item.last_error
    );
    tracing::warn!(alert = true, outbox_id = item.id, conversation = %item.conversation, %error, "an answer was given up");
    let _ = a.send_message(AuditMsg::OutboxSettle {
        id: item.id,
        abandoned: Some(error),
    });
    args.metrics.outbox_abandoned.inc();
}

/// The gauge and the readiness check, from the pending list at a pass's start.
fn report(args: &OutboxArgs, items: &[OutboxItem]) {
    args.metrics.outbox_pending.set(items.len() as i64);
    let now = now_ms();
    let stale = items
        .iter()
        .filter(|i| now - i.created_ms > STALE_AFTER.as_millis() as i64)
        .min_by_key(|i| i.created_ms);
    args.health.set(
        "outbox",
        match stale {
            None => Ok(()),
            Some(i) => Err(format!(
                "{} answer(s) undelivered, the oldest for {} s: {}",
                items.len(),
                (now - i.created_ms) / 1000,
                i.last_error
            )),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let s: Vec<u64> = (0..9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(s, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
