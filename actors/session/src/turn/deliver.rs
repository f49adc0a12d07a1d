//! Stage **deliver**: the final frame, its audit row, the inbound row settled, and the
//! exchange kept as history.
//!
//! What could not be delivered but can still be sent proactively goes to the durable outbox
//! ([`crate::outbox`]), which settles the inbound row in the same transaction; otherwise the
//! row is settled as unanswered with a `reply_failed` row.

use ractor::ActorRef;
use serde_json::json;
use wecom_edge_audit::knowledge::Hit;
use wecom_edge_audit::{AuditMsg, AUDIT_ACTOR};

use super::generate::Answer;
use super::{record, TurnCtx};
use crate::outbox::{OutboxMsg, OUTBOX_ACTOR, OUTBOX_DEADLINE};
use crate::reply::Undelivered;

fn audit() -> Option<ActorRef<AuditMsg>> {
    ractor::registry::where_is(AUDIT_ACTOR.into()).map(Into::into)
}

/// Delivers the answer — with a line naming the documents its excerpts came from, when the
/// prompt carried any — and keeps the exchange (question, answer) in SQLite; returns it for
/// the session's in-memory history.
pub(super) async fn answer(t: &mut TurnCtx, a: Answer) -> (String, String) {
    // The generation slot is free once the text exists.
    t.permit = None;
    let shown = match sources(&t.knowledge[..t.knowledge_used.min(t.knowledge.len())]) {
        Some(line) => format!("{}\n\n{line}", a.shown.trim_end()),
        None => a.shown,
    };
    send(t, shown).await;
    if t.replier.stateless() {
        return (t.question.clone(), a.text);
    }
    if let Some(audit) = audit() {
        for (role, content) in [("user", &t.question), ("assistant", &a.text)] {
            let _ = audit.send_message(AuditMsg::HistoryPush {
                session: t.key.clone(),
                role: role.into(),
                content: content.clone(),
            });
        }
    }
    (t.question.clone(), a.text)
}

/// `来源 (Sources)：《A》、《B》` for the documents of `used` (each once, in order); `None`
/// for none.
fn sources(used: &[Hit]) -> Option<String> {
    let mut titles: Vec<&str> = Vec::new();
    for h in used {
        if !titles.contains(&h.title.as_str()) {
            titles.push(&h.title);
        }
    }
    if titles.is_empty() {
        return None;
    }
    let list: Vec<String> = titles.iter().map(|t| format!("《{t}》")).collect();
    Some(format!("{SOURCES}{}", list.join("、")))
}

/// Opens the sources line of an answer drawn from the knowledge base.
pub const SOURCES: &str = "来源 (Sources)：";

/// Sends `text` as the final frame, audits the outcome and settles the inbound row.
pub(super) async fn send(t: &mut TurnCtx, text: String) {
    let (key, job) = (&t.key, &t.job);
    let ok = match t.replier.finish(&text).await {
        Ok(()) => {
            record(
                "reply_sent",
                key,
                json!({"msgid": job.msgid, "bytes": text.len(), "frames": t.replier.frames()}),
            );
            true
        }
        Err(u) if !u.parts.is_empty() && !t.replier.stateless() => match defer(t, &u).await {
            Ok(id) => {
                tracing::warn!(session = %t.key, outbox_id = id, error = %u, "answer not delivered; kept in the outbox");
                return;
            }
            Err(e) => {
                let error = format!("{u}; the outbox could not keep it: {e}");
                record(
                    "reply_failed",
                    &t.key,
                    json!({"msgid": t.job.msgid, "error": error}),
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
    if !t.replier.stateless() {
        crate::actor::finish_inbound(t.job.inbound_id, ok);
    }
}

/// Keeps an undelivered answer in the outbox (durable before this returns) and wakes the
/// outbox actor; the outbox id.
async fn defer(t: &TurnCtx, u: &Undelivered) -> Result<i64, String> {
    let a = audit().ok_or("the audit actor is restarting")?;
    let deadline_ms = wecom_edge_audit::now_ms() + OUTBOX_DEADLINE.as_millis() as i64;
    let (inbound_id, conversation) = (t.job.inbound_id, t.key.clone());
    let origin = serde_json::to_value(&t.job.origin).unwrap_or_default();
    let id = ractor::call!(a, |reply| AuditMsg::OutboxPut {
        inbound_id,
        conversation,
        origin,
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
