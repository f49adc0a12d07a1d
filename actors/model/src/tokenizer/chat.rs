//! Chat templates as the GGUF ships them (`tokenizer.chat_template`, Jinja), rendered with
//! minijinja, and their tokenization with message contents kept as plain text.

use minijinja::{context, Environment};
use serde::Serialize;

use super::Tokenizer;
use crate::error::{ModelError, Result};

/// One chat message, as chat templates expect it (`role`: `system`, `user` or `assistant`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

impl Tokenizer {
    /// Renders the chat template over `messages` and tokenizes the result so that only the
    /// template's own text can produce control tokens: each message's content is tokenized
    /// with [`Tokenizer::encode_plain`], the text around it with [`Tokenizer::encode`].
    ///
    /// The template is rendered with a placeholder per message (a private-use character pair
    /// around the message index), so wherever the template places a content — and however many
    /// times — that place is filled with the content's plain tokens. A template that alters a
    /// content beyond placing it (`| trim`, slicing, case changes) alters the placeholder
    /// instead, so the content goes in as given: callers pass trimmed text.
    ///
    /// # Errors
    /// [`ModelError::Template`] as [`Tokenizer::apply_chat_template`]; [`ModelError::Tokenizer`].
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let placeholders: Vec<ChatMessage> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| ChatMessage::new(&m.role, format!("{PH_OPEN}{i}{PH_CLOSE}")))
            .collect();
        let rendered = self.apply_chat_template(&placeholders)?;
        let mut ids = Vec::new();
        let mut rest = rendered.as_str();
        while let Some(start) = rest.find(PH_OPEN) {
            let after = &rest[start + PH_OPEN.len_utf8()..];
            let Some(end) = after.find(PH_CLOSE) else {
                break;
            };
            let Some(msg) = after[..end]
                .parse::<usize>()
                .ok()
                .and_then(|i| messages.get(i))
            else {
                break;
            };
            if start > 0 {
                ids.extend(self.encode(&rest[..start])?);
            }
            ids.extend(self.encode_plain(&msg.content)?);
            rest = &after[end + PH_CLOSE.len_utf8()..];
        }
        if !rest.is_empty() {
            ids.extend(self.encode(rest)?);
        }
        Ok(ids)
    }

    /// Whether the GGUF carries a chat template.
    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// Renders `messages` with the GGUF's `tokenizer.chat_template` (Jinja, via minijinja),
    /// with `add_generation_prompt` set, as llama.cpp and transformers do
    /// ([`render_chat_template`]); `enable_thinking` as [`Tokenizer::set_enable_thinking`] set.
    ///
    /// # Errors
    /// [`ModelError::Template`] if the model has no template or it fails to render.
    pub fn apply_chat_template(&self, messages: &[ChatMessage]) -> Result<String> {
        let template = self.chat_template.as_deref().ok_or_else(|| {
            ModelError::Template(
                "the model has no tokenizer.chat_template (a base model: use `complete`, or \
                 bring the instruct GGUF)"
                    .into(),
            )
        })?;
        let token = |id: Option<u32>| id.and_then(|i| self.token(i)).unwrap_or("").to_owned();
        render_chat_template(
            template,
            messages,
            &ChatContext {
                bos_token: token(self.bos_id),
                eos_token: token(self.eos_id),
                enable_thinking: self.enable_thinking,
                now: std::time::SystemTime::now(),
            },
        )
    }

    /// Whether chat prompts let a reasoning model think (`enable_thinking`, default true as
    /// llama.cpp passes it; Qwen3's and DeepSeek-R1's templates then open or close
    /// `<think>`).
    pub fn set_enable_thinking(&mut self, on: bool) {
        self.enable_thinking = on;
    }
}

/// What a chat template sees besides the messages.
#[derive(Debug, Clone)]
pub struct ChatContext {
    /// `bos_token` (the text of `tokenizer.ggml.bos_token_id`).
    pub bos_token: String,
    /// `eos_token`.
    pub eos_token: String,
    /// `enable_thinking` (Qwen3, DeepSeek-R1 templates).
    pub enable_thinking: bool,
    /// The time `strftime_now` formats (UTC; Llama-3.x prints today's date).
    pub now: std::time::SystemTime,
}

/// Renders a Jinja chat template as transformers' `apply_chat_template` does: `trim_blocks` and
/// `lstrip_blocks`, Python string methods (`startswith`, `split`, `strip`, … via
/// minijinja-contrib's pycompat), `raise_exception(msg)`, `strftime_now(fmt)`, and
/// `add_generation_prompt = true`.
///
/// # Errors
/// [`ModelError::Template`] when the template fails to parse or raises.
pub fn render_chat_template(
    template: &str,
    messages: &[ChatMessage],
    ctx: &ChatContext,
) -> Result<String> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    let now = ctx.now;
    env.add_function("strftime_now", move |fmt: String| strftime_utc(&fmt, now));
    env.add_template("chat", template)
        .map_err(|e| ModelError::Template(e.to_string()))?;
    let tmpl = env
        .get_template("chat")
        .map_err(|e| ModelError::Template(e.to_string()))?;
    tmpl.render(context! {
        messages => messages,
        add_generation_prompt => true,
        bos_token => ctx.bos_token,
        eos_token => ctx.eos_token,
        enable_thinking => ctx.enable_thinking,
    })
    .map_err(|e| ModelError::Template(e.to_string()))
}

/// `strftime` of `t` in UTC for the conversions chat templates use: `%d %m %Y %y %b %B %a %A
/// %H %M %S %j %%` (others are kept as written).
fn strftime_utc(fmt: &str, t: std::time::SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let before = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334][month as usize - 1];
    let yday = before + day + i64::from(leap && month > 2);
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out += &format!("{day:02}"),
            Some('m') => out += &format!("{month:02}"),
            Some('Y') => out += &year.to_string(),
            Some('y') => out += &format!("{:02}", year % 100),
            Some('b') => out += &MONTHS[month as usize - 1][..3],
            Some('B') => out += MONTHS[month as usize - 1],
            Some('a') => out += &DAYS[days.rem_euclid(7) as usize][..3],
            Some('A') => out += DAYS[days.rem_euclid(7) as usize],
            Some('H') => out += &format!("{:02}", sod / 3600),
            Some('M') => out += &format!("{:02}", sod / 60 % 60),
            Some('S') => out += &format!("{:02}", sod % 60),
            Some('j') => out += &format!("{yday:03}"),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Placeholder delimiters for [`Tokenizer::encode_chat`] (Unicode private-use characters).
const PH_OPEN: char = '\u{F8F0}';
const PH_CLOSE: char = '\u{F8F1}';

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_formats_utc_dates() {
        let at = |s: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
        assert_eq!(strftime_utc("%d %b %Y", at(0)), "01 Jan 1970");
        // 2026-12-05 13:45:06 UTC, a Saturday, day 339.
        let t = at(1_796_478_306);
        assert_eq!(strftime_utc("%d %b %Y", t), "05 Dec 2026");
        assert_eq!(
            strftime_utc("%A %B %j %H:%M:%S %%", t),
            "Saturday December 339 13:45:06 %"
        );
        // 2024-02-29, a leap day.
        assert_eq!(
            strftime_utc("%Y-%m-%d %a %j", at(1_709_164_800)),
            "2024-02-29 Thu 060"
        );
    }
}
