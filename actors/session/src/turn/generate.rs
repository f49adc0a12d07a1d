//! Stage **generate** (with **prompt** before each attempt and **filter_out** on each frame):
//! the model's answer, streamed.
//!
//! * The first frame goes out as soon as the output filter lets any text through, then at
//!   most one update per `throttle`, a keep-alive update when nothing changed for
//!   `keepalive`; the final frame is the deliver stage's.
//! * Each attempt is counted durably before the model sees the prompt; a message that
//!   already made [`MAX_ATTEMPTS`] generations fail is settled with [`GAVE_UP`].
//! * The model actor dying mid-answer: the turn waits for its restart (bounded by
//!   `model_wait`), shows "regenerating", and generates once more.
//! * A reasoning model's `<think>` part is shown as configured ([`crate::reasoning`]); only
//!   the answer is kept as history.

use std::sync::atomic::Ordering;
use std::time::Instant;

use ractor::ActorRef;
use serde_json::json;
use wecom_edge_audit::AuditMsg;
use wecom_edge_model::serve::{ChatRequest, Ready, SubmitError};
use wecom_edge_model::{ChatMessage, GenEvent, GenFailure, GenStats, StopReason};

use super::filter::{audit as audit_filter, OutputFilter, BLOCKED_OUT};
use super::prompt::{self, PromptError};
use super::{record, Stage, Stop, TurnCtx};
use crate::reasoning::{Phase, Reasoning, ReasoningMode, THINKING};

/// Generations a message may start; one more and it is settled with [`GAVE_UP`] instead (it
/// crashed or stalled the model each time: the model actor died mid-answer, or the process
/// was killed by the watchdog and the start-up sweep replayed it).
pub const MAX_ATTEMPTS: i64 = 2;

/// What the user is told when their message is not tried again.
pub const GAVE_UP: &str =
    "⚠️ 抱歉，这个问题两次都让模型出错了，我不再重试；请换一种问法，或缩短问题。\
     (Sorry — answering this made the model fail twice, so I will not try it again. Please \
     rephrase it or ask something shorter.)";

/// Appended when max_tokens ran out inside the reasoning part.
const OUT_OF_TOKENS_THINKING: &str = "⚠️ 模型还在思考时就用完了回答长度上限（max_tokens）；请再问一次，或调大 \
     max_tokens。(The model used up max_tokens while still thinking; ask again, or raise max_tokens.)";

const MODEL_RESTARTING: &str =
    "⚠️ 模型重启中，正在重新生成回答… (The model restarted; regenerating the answer…)";

const FAILING_OVER: &str = "⚠️ 推理服务中断，正在用备用模型重新生成回答… (The inference service \
     failed; regenerating the answer with the fallback…)";

/// Closes the stream of an answer cancelled by `#reset` or `#stop`.
const CANCELLED: &str = "(已取消 — cancelled by #reset or #stop)";

/// The generated answer.
pub(crate) struct Answer {
    /// The final frame (reasoning as configured, filtered).
    pub shown: String,
    /// What history keeps (the answer without its reasoning, masked).
    pub text: String,
}

/// How one attempt ended.
enum Attempt {
    Done(GenStats),
    Failed(GenFailure),
    Prompt(PromptError),
    /// Generations for this message already failed `attempts` times; not tried again.
    GaveUp {
        attempts: i64,
    },
    /// The output filter stopped the answer.
    Blocked,
    /// The model actor went away mid-answer.
    Lost,
}

/// Generates the answer.
///
/// # Errors
/// The notice to deliver instead (audited here as `generation_failed`, or as `filter`).
pub(super) async fn run(t: &mut TurnCtx) -> Result<Answer, Stop> {
    let mut attempt_no = 0;
    let generator = t.ctx.generators.for_origin(&t.job.origin);
    let outcome = loop {
        attempt_no += 1;
        t.enter(Stage::Prompt);
        let Some(gen) = generator.ready(t.ctx.settings.model_wait).await else {
            break Attempt::Lost;
        };
        let prompt = match prompt::build(t, &*gen) {
            Ok(p) => p,
            Err(e) => break Attempt::Prompt(e),
        };
        t.knowledge_used = prompt.knowledge_used;
        t.enter(Stage::Generate);
        // Durable before the model sees it: a message that keeps killing the model (or the
        // process) is settled, not replayed at every restart.
        let attempts = if t.replier.stateless() {
            None
        } else {
            start_attempt(t.job.inbound_id).await
        };
        if let Some(n) = attempts {
            if n > MAX_ATTEMPTS {
                break Attempt::GaveUp { attempts: n - 1 };
            }
        }
        record(
            "generation_started",
            &t.key,
            json!({"msgid": t.job.msgid, "prompt_tokens": prompt.tokens, "attempt": attempt_no,
                   "knowledge": t.knowledge_used, "generator": gen.name()}),
        );
        match stream(t, &*gen, prompt.messages, attempt_no).await {
            (Attempt::Lost, _) if attempt_no < 2 && !t.cancel.load(Ordering::Relaxed) => {
                tracing::warn!(session = %t.key, "the model went away mid-answer; generating again");
                record("generation_retried", &t.key, json!({"msgid": t.job.msgid}));
                // Tell the user at once; the regenerated answer replaces this frame.
                if let Err(e) = t.replier.notice(MODEL_RESTARTING).await {
                    tracing::warn!(error = %e, "stream update failed");
                }
                continue;
            }
            (Attempt::Done(stats), r) => return finished(t, &*gen, stats, r),
            (other, _) => break other,
        }
    };
    let reason = match &outcome {
        Attempt::Blocked => return Err(Stop::new("blocked_out", BLOCKED_OUT)),
        Attempt::Prompt(PromptError::TooLong { .. }) => "message_too_long",
        Attempt::GaveUp { .. } => "gave_up",
        Attempt::Prompt(PromptError::ContextOverflow { .. })
        | Attempt::Failed(GenFailure::ContextOverflow { .. }) => "context_overflow",
        Attempt::Prompt(PromptError::Template(_)) | Attempt::Failed(_) => "model_error",
        Attempt::Lost | Attempt::Done(_) => "model_lost",
    };
    let notice = match outcome {
        Attempt::GaveUp { attempts } => {
            tracing::error!(alert = true, session = %t.key, msgid = %t.job.msgid, attempts, "a message failed the model repeatedly; settled with an apology");
            GAVE_UP.to_string()
        }
        Attempt::Prompt(PromptError::TooLong { tokens, limit }) => format!(
            "⚠️ 这条消息太长了（约 {tokens} 个词元，上限 {limit}）；请分段发送，或只发需要回答的部分。\
             (This message is too long for me: about {tokens} tokens, the limit is {limit}. \
             Please send it in shorter parts, or only the part you need answered.)"
        ),
        Attempt::Prompt(PromptError::ContextOverflow { .. })
        | Attempt::Failed(GenFailure::ContextOverflow { .. }) => {
            "⚠️ 这个问题太长了，超出了模型的上下文长度；请缩短后再问，或发送 #reset 清空对话。\
             (The question does not fit the model's context; shorten it, or send #reset.)"
                .to_string()
        }
        Attempt::Prompt(PromptError::Template(e)) => {
            format!("⚠️ 生成回答失败 (the answer could not be generated): {e}")
        }
        Attempt::Failed(f) => {
            format!("⚠️ 生成回答失败 (the answer could not be generated): {f}")
        }
        Attempt::Lost | Attempt::Done(_) | Attempt::Blocked => {
            "⚠️ 模型正在重启，未能完成回答；请再问一次。(The model restarted and could not finish \
             the answer; please ask again.)"
                .to_string()
        }
    };
    record(
        "generation_failed",
        &t.key,
        json!({"msgid": t.job.msgid, "notice": true, "reason": reason}),
    );
    Err(Stop::new(reason, notice))
}

/// A finished generation: its records, and the answer (or the cancelled stream's end).
fn finished(
    t: &mut TurnCtx,
    gen: &dyn Ready,
    stats: GenStats,
    mut r: Reasoning,
) -> Result<Answer, Stop> {
    let metrics = &t.ctx.metrics;
    let thinking_tokens = gen.text_tokens(r.thinking());
    metrics.generations.inc();
    metrics.tokens.inc_by(stats.tokens as u64);
    metrics
        .generation_seconds
        .observe((stats.prefill + stats.decode).as_secs_f64());
    record(
        "generation_finished",
        &t.key,
        json!({
            "msgid": t.job.msgid,
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
    t.replier.report(&stats);
    let gate = OutputFilter::new(&t.filter);
    if stats.stop == StopReason::Cancelled {
        // Close the stream with what was shown, marked as cut.
        let (shown, _) = gate.finish(&r.display());
        return Err(Stop::new("cancelled", format!("{shown}\n\n{CANCELLED}")));
    }
    let display = if r.phase() == Phase::Thinking && stats.stop == StopReason::MaxTokens {
        // max_tokens ran out while it was still thinking.
        format!(
            "{}{OUT_OF_TOKENS_THINKING}",
            match t.ctx.settings.reasoning {
                ReasoningMode::Quoted => r.display().replace(THINKING, ""),
                ReasoningMode::Hidden => String::new(),
            }
        )
    } else {
        r.finish();
        r.display()
    };
    let (shown, verdict) = gate.finish(&display);
    audit_filter(t, "out", &verdict);
    if verdict.action() == Some(crate::filter::Action::Block) {
        return Err(Stop::new("blocked_out", BLOCKED_OUT));
    }
    Ok(Answer {
        shown,
        text: gate.masked(r.answer()),
    })
}

/// One generation attempt, streaming frames through the output filter; how it ended and
/// the text.
async fn stream(
    t: &mut TurnCtx,
    gen: &dyn Ready,
    messages: Vec<ChatMessage>,
    attempt: u32,
) -> (Attempt, Reasoning) {
    let settings = t.ctx.settings.clone();
    let req = ChatRequest {
        messages,
        params: t.persona.generate.clone(),
        cancel: t.cancel.clone(),
        // A stateless (API) turn has no next turn to reuse its cache.
        cache_key: (!t.replier.stateless()).then(|| t.key.clone()),
        submitted: Instant::now(),
    };
    let (mut rx, mut r) = match gen.submit(req) {
        Ok(s) => (s.events, Reasoning::new(settings.reasoning, s.opens_think)),
        Err(e) => {
            let r = Reasoning::new(settings.reasoning, false);
            return match e {
                SubmitError::Lost => (Attempt::Lost, r),
                SubmitError::Template(e) => (Attempt::Prompt(PromptError::Template(e)), r),
            };
        }
    };
    let filter = t.filter.clone();
    let gate = OutputFilter::new(&filter);
    // What the user may see now, and what the last frame showed.
    let mut text = String::new();
    let mut shown = String::new();
    let mut last_frame = Instant::now();
    let mut first = true;
    loop {
        // The next frame is due one throttle after the last when there is new text, one
        // keep-alive after it otherwise.
        let next = last_frame
            + if text != shown {
                t.replier.throttle(settings.throttle)
            } else {
                settings.keepalive
            };
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(GenEvent::Started { .. }) => {}
                Some(GenEvent::Text(s)) => {
                    r.push(&s);
                    text = match gate.frame(&r.display()) {
                        Ok(v) => v,
                        Err(verdict) => {
                            // Stop the model; nothing of the blocked text is shown.
                            t.cancel.store(true, Ordering::Relaxed);
                            audit_filter(t, "out", &verdict);
                            return (Attempt::Blocked, r);
                        }
                    };
                    if first && !text.trim().is_empty() && t.replier.streams() {
                        first = false;
                        if attempt == 1 {
                            t.ctx.metrics.time_to_first_token_seconds
                                .observe(t.job.received.elapsed().as_secs_f64());
                        }
                        if let Err(e) = t.replier.update(&text).await {
                            tracing::warn!(error = %e, "stream update failed");
                        }
                        shown.clone_from(&text);
                        last_frame = Instant::now();
                    }
                }
                Some(GenEvent::Failover { from, to, reason, restart }) => {
                    record(
                        "generation_failover",
                        &t.key,
                        json!({"msgid": t.job.msgid, "from": from, "to": to, "reason": reason,
                               "restart": restart}),
                    );
                    t.ctx.metrics.generation_failovers
                        .get_or_create(&vec![("from".into(), from), ("to".into(), to)])
                        .inc();
                    if restart {
                        // The answer starts again on the fallback; this frame stands until
                        // its text comes.
                        r = Reasoning::new(settings.reasoning, false);
                        text = if t.replier.stateless() {
                            String::new()
                        } else {
                            FAILING_OVER.to_string()
                        };
                        if let Err(e) = t.replier.notice(&text).await {
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
                if let Err(e) = t.replier.update(&text).await {
                    tracing::warn!(error = %e, "stream update failed");
                }
                shown.clone_from(&text);
                last_frame = Instant::now();
            }
        }
    }
}

/// Counts a generation for inbound `id` durably; the new count (`None`: storage unavailable,
/// go on — losing the count only risks one more retry).
async fn start_attempt(id: i64) -> Option<i64> {
    let a: ActorRef<AuditMsg> =
        ractor::registry::where_is(wecom_edge_audit::AUDIT_ACTOR.into())?.into();
    match ractor::call!(a, |reply| AuditMsg::StartAttempt { id, reply }) {
        Ok(Ok(n)) => Some(n),
        _ => None,
    }
}
