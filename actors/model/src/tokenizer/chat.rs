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
    /// with `add_generation_prompt` set, as llama.cpp and transformers do.
    ///
    /// # Errors
    /// [`ModelError::Template`] if the model has no template or it fails to render.
    pub fn apply_chat_template(&self, messages: &[ChatMessage]) -> Result<String> {
        let template = self.chat_template.as_deref().ok_or_else(|| {
            ModelError::Template("the model has no tokenizer.chat_template".into())
        })?;
        let mut env = Environment::new();
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template("chat", template)
            .map_err(|e| ModelError::Template(e.to_string()))?;
        let tmpl = env
            .get_template("chat")
            .map_err(|e| ModelError::Template(e.to_string()))?;
        let bos = self.bos_id.and_then(|i| self.token(i)).unwrap_or("");
        let eos = self.eos_id.and_then(|i| self.token(i)).unwrap_or("");
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => bos,
            eos_token => eos,
        })
        .map_err(|e| ModelError::Template(e.to_string()))
    }
}

/// Placeholder delimiters for [`Tokenizer::encode_chat`] (Unicode private-use characters).
const PH_OPEN: char = '\u{F8F0}';
const PH_CLOSE: char = '\u{F8F1}';
