//! Stage **prompt**: the persona's system message, the history that fits, the question — as
//! chat messages for the generator ([`wecom_edge_model::serve`]), counted as it renders them,
//! within `max_prompt_tokens` and the generator's context less the answer's room (the
//! persona's `max_tokens`).
//!
//! History is trimmed by whole user/assistant pairs, oldest first ([`crate::fit_history`]);
//! the per-turn token estimate is close but not exact, so whole pairs are dropped until the
//! rendered prompt fits.
//!
//! The retrieve stage's excerpts go into the **question's** message, not the system message:
//! the system message and the history before it stay the same from turn to turn, so the
//! model's prefix cache keeps them. They take at most `[knowledge] max_tokens` (the last
//! excerpts left out first, a single long one cut at a character boundary), and are dropped,
//! the last first, when the prompt would not fit the model's context with them; history gives
//! way to them (the question is about the documents).

use wecom_edge_audit::knowledge::Hit;
use wecom_edge_model::serve::Ready;
use wecom_edge_model::ChatMessage;

use crate::persona::Language;
use crate::{fit_history, Turn};

use super::TurnCtx;

/// Why no prompt could be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PromptError {
    /// The question alone is over `max_message_tokens`.
    TooLong {
        /// Its tokens.
        tokens: usize,
        /// The limit.
        limit: usize,
    },
    /// Even the bare question (with the system message and the answer's room) does not fit
    /// the model's context.
    ContextOverflow {
        /// Tokens needed.
        needed: usize,
        /// The model's context.
        context_length: usize,
    },
    /// The tokenizer or the template failed.
    Template(String),
}

/// A prompt: its messages, the tokens they take rendered, and how many of the turn's
/// knowledge chunks (from the first) it carries.
pub(super) struct Prompt {
    /// System message, the history that fits, the question (with its excerpts).
    pub messages: Vec<ChatMessage>,
    /// Tokens the rendered prompt takes ([`Ready::prompt_tokens`]).
    pub tokens: usize,
    /// Excerpts included.
    pub knowledge_used: usize,
}

/// The prompt, budgeted with `gen`'s token counts.
///
/// # Errors
/// [`PromptError`].
pub(super) fn build(t: &TurnCtx, gen: &dyn Ready) -> Result<Prompt, PromptError> {
    let settings = &t.ctx.settings;
    let question = t.question.as_str();
    let question_tokens = gen.text_tokens(question);
    if question_tokens > settings.max_message_tokens {
        return Err(PromptError::TooLong {
            tokens: question_tokens,
            limit: settings.max_message_tokens,
        });
    }
    let count = |turn: &Turn| gen.text_tokens(&turn.content) + 4;
    let system = t.system.clone();
    let english = match t.persona.language {
        Language::English => true,
        Language::Chinese => false,
        Language::Auto => !question.chars().any(is_cjk),
    };
    let budget = t
        .ctx
        .knowledge
        .as_ref()
        .map_or(0, |k| k.settings.max_tokens);
    let mut excerpts = excerpts(&|s: &str| gen.text_tokens(s), &t.knowledge, budget);
    let render = |hist: &[Turn], excerpts: &[String]| -> Result<Prompt, PromptError> {
        let mut messages = Vec::with_capacity(hist.len() + 2);
        if let Some(system) = &system {
            messages.push(ChatMessage::new("system", system.clone()));
        }
        messages.extend(
            hist.iter()
                .map(|h| ChatMessage::new(&h.role, h.content.clone())),
        );
        messages.push(ChatMessage::new(
            "user",
            with_excerpts(question, excerpts, english),
        ));
        let tokens = gen
            .prompt_tokens(&messages)
            .map_err(PromptError::Template)?;
        Ok(Prompt {
            messages,
            tokens,
            knowledge_used: excerpts.len(),
        })
    };
    let reserve = t.persona.generate.max_tokens;
    let context_length = gen.context_length();
    let mut bare = render(&[], &excerpts)?;
    // Excerpts that would overflow the model's context go, the last first.
    while bare.tokens + reserve > context_length && !excerpts.is_empty() {
        excerpts.pop();
        bare = render(&[], &excerpts)?;
    }
    if bare.tokens + reserve > context_length {
        return Err(PromptError::ContextOverflow {
            needed: bare.tokens + reserve,
            context_length,
        });
    }
    // The turn's prompt budget (the bare prompt always fits: the question is within its own
    // limit, a long system prompt or the excerpts only leave no room for history).
    let limit = settings
        .max_prompt_tokens
        .min(context_length - reserve)
        .max(bare.tokens);
    let hist = fit_history(&t.history, bare.tokens, 0, limit, count);
    let mut prompt = render(hist, &excerpts)?;
    let mut from = t.history.len() - hist.len();
    while prompt.tokens > limit && from < t.history.len() {
        from = (from + 2).min(t.history.len());
        prompt = render(&t.history[from..], &excerpts)?;
    }
    Ok(prompt)
}

/// The chunks as numbered excerpts (`[n] 《title》 section` and the text), the first ones
/// whose tokens (counted by `tokens`) fit `budget`; the first alone cut to fit when it is
/// longer.
fn excerpts(tokens: &dyn Fn(&str) -> usize, hits: &[Hit], budget: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut used = 0;
    for (i, h) in hits.iter().enumerate() {
        let head = if h.section.is_empty() || h.section == h.title {
            format!("[{}] 《{}》", i + 1, h.title)
        } else {
            format!("[{}] 《{}》 {}", i + 1, h.title, h.section)
        };
        let mut text = format!("{head}\n{}", h.text.trim());
        let mut n = tokens(&text);
        if used + n > budget {
            if !out.is_empty() {
                break;
            }
            // Cut the first excerpt to the budget: shrink by the overshoot's share of its
            // characters until it fits (a few tokenizer calls).
            let mut chars: Vec<char> = text.chars().collect();
            while n > budget && chars.len() > head.chars().count() + 1 {
                let keep = (chars.len() * budget / n.max(1)).min(chars.len() - 1);
                chars.truncate(keep.max(head.chars().count() + 1));
                text = chars.iter().collect::<String>() + "…";
                n = tokens(&text);
            }
            if n > budget {
                break;
            }
        }
        used += n;
        out.push(text);
    }
    out
}

/// The question's message: the excerpts, how to use them, the question.
fn with_excerpts(question: &str, excerpts: &[String], english: bool) -> String {
    if excerpts.is_empty() {
        return question.to_string();
    }
    let body = excerpts.join("\n\n");
    if english {
        format!(
            "Excerpts from the company's documents that may help:\n\n{body}\n\n\
             Answer from these excerpts; if they do not cover the question, say that the \
             documents do not say.\n\nQuestion: {question}"
        )
    } else {
        format!(
            "以下是公司文档中可能相关的摘录：\n\n{body}\n\n\
             请依据这些摘录回答；摘录中没有的内容，请说明资料中没有提到。\n\n问题：{question}"
        )
    }
}

/// CJK ideographs and kana (the question is taken as Chinese when it has any).
fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(title: &str, section: &str, text: &str) -> Hit {
        Hit {
            doc: format!("{title}.md"),
            title: title.into(),
            section: section.into(),
            score: 1.0,
            snippet: String::new(),
            position: 0,
            text: text.into(),
        }
    }

    /// One "token" per character.
    fn chars(s: &str) -> usize {
        s.chars().count()
    }

    #[test]
    fn excerpts_are_numbered_and_kept_within_the_budget() {
        let hits = [
            hit("差旅制度", "住宿", "一线城市每晚不超过六百元。"),
            hit("请假制度", "请假制度", "年假五天。"),
            hit("IT", "", "x".repeat(50).as_str()),
        ];
        let all = excerpts(&chars, &hits, 1000);
        assert_eq!(all[0], "[1] 《差旅制度》 住宿\n一线城市每晚不超过六百元。");
        assert_eq!(
            all[1], "[2] 《请假制度》\n年假五天。",
            "a section that is the title is not repeated"
        );
        assert_eq!(all.len(), 3);
        // Room for the first two only: the third is left out, not cut.
        let budget = chars(&all[0]) + chars(&all[1]) + 10;
        assert_eq!(excerpts(&chars, &hits, budget), all[..2]);
        // A first excerpt longer than the budget is cut at a character boundary.
        let cut = excerpts(&chars, &hits[2..], 20);
        assert_eq!(cut.len(), 1);
        assert!(
            chars(&cut[0]) <= 20 && cut[0].ends_with('…') && cut[0].starts_with("[1] 《IT》\nxx"),
            "{cut:?}"
        );
        assert!(
            excerpts(&chars, &hits, 3).is_empty(),
            "not even a heading fits"
        );
    }

    #[test]
    fn the_question_carries_the_excerpts_in_its_language() {
        assert_eq!(with_excerpts("住宿标准？", &[], false), "住宿标准？");
        let ex = vec!["[1] 《差旅制度》\n六百元。".to_string()];
        let zh = with_excerpts("住宿标准？", &ex, false);
        assert!(
            zh.starts_with("以下是公司文档中可能相关的摘录") && zh.ends_with("问题：住宿标准？"),
            "{zh}"
        );
        assert!(zh.contains("[1] 《差旅制度》\n六百元。"));
        let en = with_excerpts("Hotel limit?", &ex, true);
        assert!(
            en.starts_with("Excerpts from the company's documents")
                && en.ends_with("Question: Hotel limit?"),
            "{en}"
        );
        assert!(is_cjk('住') && is_cjk('カ') && !is_cjk('A') && !is_cjk('，'));
    }
}
