//! A reasoning model's `<think>…</think>` part, split from its answer as the text streams.
//!
//! Qwen3 opens the part itself (`<think>` as its first output); DeepSeek-R1-Distill's template
//! opens it in the prompt (`<｜Assistant｜><think>\n`), so its output starts inside it. The part
//! never reaches the user as the answer and is not kept in history: with
//! [`ReasoningMode::Hidden`] the user sees a short "thinking…" frame while it lasts, with
//! [`ReasoningMode::Quoted`] it is shown folded as a Markdown quote above the answer.

use serde::Deserialize;

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// The frame shown while the model thinks (hidden mode).
pub const THINKING: &str = "💭 思考中… (thinking…)";

/// How a reasoning part is shown (`[sessions] reasoning`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningMode {
    /// Not shown; [`THINKING`] streams while it lasts.
    #[default]
    Hidden,
    /// Shown as a `>` quote block above the answer.
    Quoted,
}

/// Where the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing but whitespace or a beginning of `<think>` yet.
    Start,
    /// Inside the reasoning part.
    Thinking,
    /// The answer (after `</think>`, or from the start for a model that does not reason).
    Answer,
}

/// The generated text so far, split into reasoning and answer.
#[derive(Debug, Clone)]
pub struct Reasoning {
    mode: ReasoningMode,
    opened: bool,
    raw: String,
    phase: Phase,
    thinking: std::ops::Range<usize>,
    answer_from: usize,
}

impl Reasoning {
    /// `opened`: the prompt itself ended inside `<think>`
    /// ([`wecom_edge_model::serve::Submitted::opens_think`]).
    pub fn new(mode: ReasoningMode, opened: bool) -> Self {
        let mut r = Self {
            mode,
            opened,
            raw: String::new(),
            phase: Phase::Start,
            thinking: 0..0,
            answer_from: 0,
        };
        r.split();
        r
    }

    /// Appends generated text.
    pub fn push(&mut self, piece: &str) {
        self.raw.push_str(piece);
        self.split();
    }

    fn split(&mut self) {
        let raw = self.raw.as_str();
        let lead = raw.len() - raw.trim_start().len();
        let body_from = if self.opened {
            Some(0)
        } else if raw[lead..].starts_with(OPEN) {
            Some(lead + OPEN.len())
        } else {
            None
        };
        match body_from {
            Some(from) => match raw[from..].find(CLOSE) {
                Some(i) => {
                    self.phase = Phase::Answer;
                    self.thinking = from..from + i;
                    let after = from + i + CLOSE.len();
                    self.answer_from =
                        after + (raw.len() - after - raw[after..].trim_start().len());
                }
                None => {
                    self.phase = Phase::Thinking;
                    // A close tag still arriving is not shown as reasoning.
                    let end = (1..CLOSE.len())
                        .rev()
                        .find(|&n| raw.len() >= from + n && raw[from..].ends_with(&CLOSE[..n]))
                        .map_or(raw.len(), |n| raw.len() - n);
                    self.thinking = from..end;
                    self.answer_from = raw.len();
                }
            },
            None if OPEN.starts_with(&raw[lead..]) => {
                self.phase = Phase::Start;
                self.answer_from = raw.len();
            }
            None => {
                self.phase = Phase::Answer;
                self.thinking = 0..0;
                self.answer_from = 0;
            }
        }
    }

    /// The generation ended on its own (end of turn): text still held back as a possible
    /// `<think>` is the answer, and a reasoning part the model never closed becomes the answer
    /// (better than an empty reply). Not for a generation cut by max_tokens while thinking.
    pub fn finish(&mut self) {
        match self.phase {
            Phase::Start => self.answer_from = 0,
            Phase::Thinking => {
                self.answer_from = self.thinking.start;
                self.thinking = 0..0;
            }
            Phase::Answer => return,
        }
        self.phase = Phase::Answer;
    }

    /// Where the stream is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The reasoning text (trimmed), empty for a model that did not reason.
    pub fn thinking(&self) -> &str {
        self.raw[self.thinking.clone()].trim()
    }

    /// The answer: what is kept in history.
    pub fn answer(&self) -> &str {
        &self.raw[self.answer_from..]
    }

    /// What the user sees now (empty: nothing to show yet).
    pub fn display(&self) -> String {
        match (self.phase, self.mode) {
            (Phase::Start, _) => String::new(),
            (Phase::Thinking, ReasoningMode::Hidden) => THINKING.into(),
            (Phase::Thinking, ReasoningMode::Quoted) => format!("{}\n\n{THINKING}", self.quote()),
            (Phase::Answer, ReasoningMode::Quoted) if !self.thinking().is_empty() => {
                format!("{}\n\n{}", self.quote(), self.answer())
            }
            (Phase::Answer, _) => self.answer().into(),
        }
    }

    /// The reasoning as a Markdown quote headed "思考过程 (reasoning)".
    fn quote(&self) -> String {
        let mut q = String::from("> 💭 思考过程 (reasoning)");
        for line in self.thinking().lines() {
            q.push_str("\n> ");
            q.push_str(line);
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(mode: ReasoningMode, opened: bool, pieces: &[&str]) -> Vec<(Phase, String)> {
        let mut r = Reasoning::new(mode, opened);
        pieces
            .iter()
            .map(|p| {
                r.push(p);
                (r.phase(), r.display())
            })
            .collect()
    }

    #[test]
    fn qwen3_style_hidden() {
        let mut r = Reasoning::new(ReasoningMode::Hidden, false);
        for (piece, phase, shown) in [
            ("<th", Phase::Start, ""),
            ("ink>\n用户问", Phase::Thinking, THINKING),
            ("索引。</thi", Phase::Thinking, THINKING),
            ("nk>\n\n索引是", Phase::Answer, "索引是"),
            ("一种数据结构。", Phase::Answer, "索引是一种数据结构。"),
        ] {
            r.push(piece);
            assert_eq!(
                (r.phase(), r.display().as_str()),
                (phase, shown),
                "after {piece:?}"
            );
        }
        assert_eq!(r.thinking(), "用户问索引。");
        assert_eq!(r.answer(), "索引是一种数据结构。");
    }

    #[test]
    fn deepseek_style_opened_in_the_prompt_quoted() {
        let got = feed(
            ReasoningMode::Quoted,
            true,
            &[
                "Okay, the user",
                " asks.\nLet me answer.",
                "</think>",
                "\n\nHello!",
            ],
        );
        assert_eq!(
            got[0],
            (
                Phase::Thinking,
                format!("> 💭 思考过程 (reasoning)\n> Okay, the user\n\n{THINKING}")
            )
        );
        assert_eq!(
            got[3],
            (
                Phase::Answer,
                "> 💭 思考过程 (reasoning)\n> Okay, the user asks.\n> Let me answer.\n\nHello!"
                    .into()
            )
        );
    }

    #[test]
    fn a_model_that_does_not_reason_streams_as_is() {
        let got = feed(
            ReasoningMode::Hidden,
            false,
            &["  ", "Hello", " <think> is a tag"],
        );
        assert_eq!(got[0], (Phase::Start, String::new()));
        assert_eq!(got[1], (Phase::Answer, "  Hello".into()));
        assert_eq!(got[2], (Phase::Answer, "  Hello <think> is a tag".into()));
        // An empty reasoning part (Qwen3 with enable_thinking off) shows nothing quoted.
        let got = feed(
            ReasoningMode::Quoted,
            false,
            &["<think>\n\n</think>\n\n", "Hi"],
        );
        assert_eq!(got[1], (Phase::Answer, "Hi".into()));
    }

    #[test]
    fn finish_keeps_what_was_held_back() {
        let mut r = Reasoning::new(ReasoningMode::Hidden, false);
        r.push("<th");
        r.finish();
        assert_eq!((r.phase(), r.display().as_str()), (Phase::Answer, "<th"));
        let mut r = Reasoning::new(ReasoningMode::Quoted, true);
        r.push("never closed");
        r.finish();
        assert_eq!(r.display(), "never closed");
        assert_eq!(r.thinking(), "");
    }
}
