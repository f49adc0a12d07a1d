//! The tokenizer and chat template, built from the GGUF's own metadata.
//!
//! Keys read (GGUF spec, "Tokenizer" section): `tokenizer.ggml.model` (must be `gpt2`, a
//! byte-level BPE), `tokenizer.ggml.pre` (the pre-tokenizer), `tokenizer.ggml.tokens`,
//! `tokenizer.ggml.token_type`, `tokenizer.ggml.merges`, `tokenizer.ggml.{bos,eos}_token_id`,
//! `tokenizer.chat_template`.
//!
//! The BPE is assembled with the `tokenizers` crate. Pre-tokenizers follow llama.cpp's
//! `llama-vocab.cpp`: `smollm` (like `starcoder`, `refact`) splits every digit apart, then applies
//! the GPT-2 byte-level regex; `gpt2`/`default` apply the GPT-2 regex alone. Control tokens
//! (type 3, e.g. `<|im_start|>`) and user-defined tokens (type 4) are matched whole in the text,
//! as llama.cpp does with `parse_special = true`.

use std::collections::HashMap;

use minijinja::{context, Environment};
use serde::Serialize;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer as HfTokenizer};

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

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

/// A byte-level BPE tokenizer plus the model's chat template and special ids.
pub struct Tokenizer {
    inner: HfTokenizer,
    /// The same tokenizer with control tokens treated as plain text (message contents).
    plain: HfTokenizer,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// Token ids that end a turn: EOS, `<|im_end|>`, `<|eot_id|>`, `<|end|>` where present.
    pub stop_ids: Vec<u32>,
    chat_template: Option<String>,
    tokens: Vec<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.tokens.len())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("stop_ids", &self.stop_ids)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Builds the tokenizer from a GGUF file's metadata.
    ///
    /// # Errors
    /// [`ModelError::MissingKey`] / [`ModelError::BadKey`] for absent or malformed keys, and
    /// [`ModelError::Tokenizer`] for an unsupported tokenizer model or pre-tokenizer.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let model = gguf.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(ModelError::BadKey {
                path: gguf.path().to_owned(),
                key: "tokenizer.ggml.model".into(),
                what: format!(
                    "tokenizer model '{model}' is not supported (supported: gpt2 byte-level BPE)"
                ),
            });
        }
        let pre = gguf
            .get("tokenizer.ggml.pre")
            .ok()
            .and_then(|v| v.as_str())
            .unwrap_or("default");
        let tokens: Vec<String> = gguf
            .get_str_array("tokenizer.ggml.tokens")?
            .into_iter()
            .map(str::to_owned)
            .collect();
        let merges: Vec<(String, String)> = gguf
            .get_str_array("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or_else(|| ModelError::BadKey {
                        path: gguf.path().to_owned(),
                        key: "tokenizer.ggml.merges".into(),
                        what: format!("merge '{m}' is not two tokens separated by a space"),
                    })
            })
            .collect::<Result<_>>()?;
        let types: Vec<i64> = match gguf.get("tokenizer.ggml.token_type") {
            Ok(v) => v
                .as_array()
                .map(|a| a.iter().map(|t| t.as_f64().unwrap_or(1.0) as i64).collect())
                .unwrap_or_default(),
            Err(_) => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(ModelError::BadKey {
                path: gguf.path().to_owned(),
                key: "tokenizer.ggml.token_type".into(),
                what: format!("{} types for {} tokens", types.len(), tokens.len()),
            });
        }

        let vocab: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(
                vocab
                    .into_iter()
                    .collect::<tokenizers::models::bpe::Vocab>(),
                merges,
            )
            .build()
            .map_err(tok_err)?;
        let mut inner = HfTokenizer::new(bpe);
        let byte_level = ByteLevel::new(false, false, true);
        let pre_tokenizer: PreTokenizerWrapper = match pre {
            // llama.cpp LLAMA_VOCAB_PRE_TYPE_SMOLLM / STARCODER / REFACT: "\p{N}" then the GPT-2 regex.
            "smollm" | "starcoder" | "refact" => Sequence::new(vec![
                Digits::new(true).into(),
                byte_level.into(),
            ])
            .into(),
            "gpt2" | "default" => byte_level.into(),
            other => {
                return Err(ModelError::Tokenizer(format!(
                    "pre-tokenizer '{other}' is not supported (supported: smollm, starcoder, refact, gpt2)"
                )))
            }
        };
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
            .map(|(tok, &t)| AddedToken::from(tok.clone(), t == TOKEN_TYPE_CONTROL))
            .collect();
        let (special, normal): (Vec<_>, Vec<_>) = added.into_iter().partition(|t| t.special);
        inner.add_special_tokens(&special);
        inner.add_tokens(&normal);
        let mut plain = inner.clone();
        plain.set_encode_special_tokens(true);

        let id_key = |key: &str| {
            gguf.get(key)
                .ok()
                .and_then(|v| v.as_u64())
                .map(|v| v as u32)
        };
        let bos_id = id_key("tokenizer.ggml.bos_token_id");
        let eos_id = id_key("tokenizer.ggml.eos_token_id");
        let mut stop_ids: Vec<u32> = eos_id.into_iter().collect();
        if let Some(eot) = id_key("tokenizer.ggml.eot_token_id") {
            stop_ids.push(eot);
        }
        for name in ["<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>"] {
            if let Some(id) = vocab_lookup(&tokens, name) {
                if !stop_ids.contains(&id) {
                    stop_ids.push(id);
                }
            }
        }
        let chat_template = gguf
            .get("tokenizer.chat_template")
            .ok()
            .and_then(|v| v.as_str())
            .map(str::to_owned);

        Ok(Self {
            inner,
            plain,
            bos_id,
            eos_id,
            stop_ids,
            chat_template,
            tokens,
        })
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The token string of `id` (byte-level encoded, as stored in the GGUF).
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Encodes `text` without adding BOS; special tokens in the text are matched whole.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode_fast(text, false).map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encodes `text` as plain text: a control token's spelling in it (`<|im_end|>`) is
    /// tokenized as the characters it is made of, never as the control token. For text that
    /// comes from people (messages, history, retrieved documents).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.plain.encode_fast(text, false).map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

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

    /// Decodes ids to text (special tokens kept, as llama.cpp's detokenizer prints them).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tok_err)
    }

    /// A streaming decoder that yields text only once it forms complete UTF-8.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder {
            tokenizer: self,
            ids: Vec::new(),
            prefix_len: 0,
            prefix_offset: 0,
        }
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

fn vocab_lookup(tokens: &[String], name: &str) -> Option<u32> {
    tokens.iter().position(|t| t == name).map(|i| i as u32)
}

/// Incremental detokenizer: feeds ids one at a time and returns the new text once the bytes
/// decoded so far end on a whole UTF-8 character (byte-level BPE may split one across tokens).
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    prefix_len: usize,
    prefix_offset: usize,
}

impl StreamDecoder<'_> {
    /// Adds one token; returns the text it completes, if any.
    pub fn step(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        // Decode a short window so the work per token stays constant.
        let window = &self.ids[self.prefix_offset..];
        let text = self.tokenizer.decode(window)?;
        if text.len() > self.prefix_len && !text.ends_with('\u{FFFD}') {
            let new = text[self.prefix_len..].to_owned();
            // Keep the last token as context for the next step.
            let keep_from = self.ids.len() - 1;
            let prefix = self.tokenizer.decode(&self.ids[keep_from..])?;
            self.prefix_offset = keep_from;
            self.prefix_len = prefix.len();
            Ok(Some(new))
        } else {
            Ok(None)
        }
    }
}
