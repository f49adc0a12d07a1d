//! Stage **admit**: the limiter's per-user and per-chat rates, then its fair queue.
//!
//! A refusal (rate exceeded, queue full) is a polite notice and a `rate_limited` row; a
//! queued question shows "queued, N ahead" at once on channels that stream, updated as the
//! queue moves (at most once per `throttle`), until its permit is granted. `#reset`/`#stop`
//! leave the queue at once.

use std::sync::atomic::Ordering;
use std::time::Instant;

use ractor::ActorRef;
use serde_json::json;
use wecom_edge_limiter::{Admitted, LimiterMsg, Permit, QueueUpdate, Queued, LIMITER_ACTOR};
use wecom_edge_watchdog::Metrics;

use super::{record, Stop, TurnCtx};

/// What the user is told while the box restarts a part it needs.
pub(crate) const RESTARTING: &str =
    "⚠️ 服务正在重启，请稍后再试。(The box is restarting; please ask again in a moment.)";

/// What a question cancelled while queued shows.
const CANCELLED_QUEUED: &str = "(已取消 — cancelled)";

/// Counts the turn in `queue_depth` from admission to its end.
pub(crate) struct DepthGuard(Metrics);

impl Drop for DepthGuard {
    fn drop(&mut self) {
        self.0.queue_depth.dec();
    }
}

/// Admits the turn: its permit is kept in the turn until the answer is generated.
pub(super) async fn run(t: &mut TurnCtx) -> Result<(), Stop> {
    let Some(limiter) = ractor::registry::where_is(LIMITER_ACTOR.into()) else {
        return Err(Stop::new("restarting", RESTARTING));
    };
    let limiter: ActorRef<LimiterMsg> = limiter.into();
    let o = &t.job.origin;
    let user = format!(
        "{}/{}/{}",
        o.channel,
        o.endpoint,
        crate::key_component(&o.user)
    );
    let chat = o
        .chat
        .as_ref()
        .map(|c| format!("{}/{}/{}", o.channel, o.endpoint, crate::key_component(c)));
    let admitted = match ractor::call!(limiter, |reply| LimiterMsg::Admit { user, chat, reply }) {
        Ok(Ok(a)) => a,
        Ok(Err(refusal)) => {
            t.ctx.metrics.messages_rate_limited.inc();
            record(
                "rate_limited",
                &t.key,
                json!({"msgid": t.job.msgid, "limit": refusal.kind()}),
            );
            return Err(Stop::new(refusal.kind(), refusal.message()));
        }
        Err(e) => {
            tracing::warn!(error = %e, "limiter unavailable");
            return Err(Stop::new("restarting", RESTARTING));
        }
    };
    t.ctx.metrics.queue_depth.inc();
    t.depth = Some(DepthGuard(t.ctx.metrics.clone()));
    t.permit = Some(match admitted {
        Admitted::Now(p) => p,
        Admitted::Queued(q) => wait_turn(t, q).await?,
    });
    Ok(())
}

/// Waits in the limiter's fair queue; the permit when it is this turn's time.
///
/// # Errors
/// The notice instead: cancelled, or the limiter went away.
async fn wait_turn(t: &mut TurnCtx, mut q: Queued) -> Result<Permit, Stop> {
    let throttle = t.ctx.settings.throttle;
    let mut shown = None;
    let mut ahead = q.ahead;
    let mut last = Instant::now() - throttle;
    record(
        "queued",
        &t.key,
        json!({"msgid": t.job.msgid, "ahead": ahead}),
    );
    loop {
        if t.cancel.load(Ordering::Relaxed) {
            return Err(Stop::new("cancelled", CANCELLED_QUEUED));
        }
        if shown != Some(ahead) && last.elapsed() >= throttle && t.replier.streams() {
            if let Err(e) = t.replier.notice(&queued_text(ahead)).await {
                tracing::warn!(error = %e, "stream update failed");
            }
            shown = Some(ahead);
            last = Instant::now();
        }
        tokio::select! {
            u = q.next() => match u {
                Some(QueueUpdate::Ahead(n)) => ahead = n,
                Some(QueueUpdate::Granted(p)) => return Ok(p),
                None => return Err(Stop::new("restarting", RESTARTING)),
            },
            _ = tokio::time::sleep(throttle) => {}
        }
    }
}

/// The frame a queued question shows until its turn (Chinese, then English).
pub(crate) fn queued_text(ahead: usize) -> String {
    if ahead == 0 {
        "⏳ 排队中：下一个就轮到你。(Queued: you are next.)".to_string()
    } else {
        format!(
            "⏳ 排队中：前面还有 {ahead} 个问题，轮到你时我会马上回答。(Queued: {ahead} question(s) \
             ahead of yours; I will answer as soon as it is your turn.)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_text_names_the_place() {
        assert!(queued_text(0).contains("you are next"));
        assert!(queued_text(3).contains("3 question(s) ahead"));
    }
}
