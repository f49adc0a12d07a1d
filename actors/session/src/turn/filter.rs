//! Stages **filter_in** and **filter_out**: the content filter ([`crate::filter`]) on the
//! question and on the streamed answer.
//!
//! * In: block → [`BLOCKED_IN`], no model call; mask → the model (and the history) get the
//!   question masked; flag → answered as usual.
//! * Out ([`OutputFilter`]): each frame shows the answer masked and less its last
//!   `holdback` characters; a blocked term stops the answer ([`BLOCKED_OUT`]) before any
//!   frame shows it.
//! * Each decision is one `filter` audit row — `stage` (`in`/`out`), `action`, the rule ids —
//!   and one count in `wecom_edge_filter_decisions_total{stage,action}`. The matched text
//!   is never recorded.

use serde_json::json;

use crate::filter::{Action, ContentFilter, Verdict};

use super::{record, Stop, TurnCtx};

/// The refusal of a question with a blocked term.
pub const BLOCKED_IN: &str = "⚠️ 抱歉，这个问题包含公司规定不能处理的内容，我无法回答。\
     (Sorry — this question contains content that company policy does not allow me to handle.)";

/// The notice that replaces an answer that ran into a blocked term.
pub const BLOCKED_OUT: &str = "⚠️ 抱歉，这个回答涉及公司规定不能提供的内容，已停止。请换一个问题。\
     (Sorry — the answer ran into content that company policy does not allow, so it was \
     stopped. Please ask something else.)";

/// Records the decisions of `v` at `stage` (one row and one count per action that matched).
pub(crate) fn audit(t: &TurnCtx, stage: &str, v: &Verdict) {
    for action in [Action::Block, Action::Mask, Action::Flag] {
        let rules = v.rules(action);
        if rules.is_empty() {
            continue;
        }
        t.ctx
            .metrics
            .filter_decisions
            .get_or_create(&vec![
                ("stage".into(), stage.into()),
                ("action".into(), action.name().into()),
            ])
            .inc();
        record(
            "filter",
            &t.key,
            json!({"msgid": t.job.msgid, "stage": stage, "action": action.name(), "rules": rules}),
        );
    }
}

/// filter_in: the question against the rules.
///
/// # Errors
/// [`BLOCKED_IN`] when a block rule matched.
pub(super) fn inbound(t: &mut TurnCtx) -> Result<(), Stop> {
    let v = t.filter.check(&t.question);
    if v.hits.is_empty() {
        return Ok(());
    }
    audit(t, "in", &v);
    match v.action() {
        Some(Action::Block) => Err(Stop::new("blocked_in", BLOCKED_IN)),
        Some(Action::Mask) => {
            t.question = v.masked(&t.question);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// filter_out over one answer as it streams.
pub(crate) struct OutputFilter<'a> {
    filter: &'a ContentFilter,
}

impl<'a> OutputFilter<'a> {
    /// The gate for one answer.
    pub(crate) fn new(filter: &'a ContentFilter) -> Self {
        OutputFilter { filter }
    }

    /// What a frame may show of `text` (the answer so far, as displayed); `Err` with the
    /// verdict when a block rule matched (nothing of it may be shown).
    pub(crate) fn frame(&self, text: &str) -> Result<String, Verdict> {
        let (shown, v) = self.filter.visible(text, false);
        if v.action() == Some(Action::Block) {
            return Err(v);
        }
        Ok(shown)
    }

    /// The final frame of `text`, masked, with the verdict to audit.
    pub(crate) fn finish(&self, text: &str) -> (String, Verdict) {
        self.filter.visible(text, true)
    }

    /// `answer` (what history keeps) masked.
    pub(crate) fn masked(&self, answer: &str) -> String {
        self.filter.check(answer).masked(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_frames_hold_back_and_block() {
        let f = ContentFilter::build(
            [
                ("b", Action::Block, "内部代号\n"),
                ("m", Action::Mask, "工资\n"),
            ],
            &[],
        )
        .unwrap();
        let g = OutputFilter::new(&f);
        // The longest term has 4 characters: 3 held back.
        assert_eq!(g.frame("你好，今天").unwrap(), "你好");
        assert_eq!(g.frame("你的工资是").unwrap(), "你的");
        assert_eq!(g.frame("你的工资是多少呢").unwrap(), "你的＊＊是");
        assert!(g.frame("它的内部").is_ok());
        let v = g.frame("它的内部代号是").unwrap_err();
        assert_eq!(v.rules(Action::Block), vec!["b:1"]);
        let (last, v) = g.finish("工资单");
        assert_eq!(last, "＊＊单");
        assert_eq!(v.rules(Action::Mask), vec!["m:1"]);
        assert_eq!(g.masked("查工资"), "查＊＊");
    }
}
