//! The tokenizer, built from the GGUF's own metadata, tokenizing exactly as llama.cpp's
//! `llama_vocab::tokenize` (src/llama-vocab.cpp) does.
//!
//! Keys read (GGUF spec, "Tokenizer" section): `tokenizer.ggml.model` (`gpt2`: byte-level BPE,
//! [`bpe`]; `llama`: SentencePiece, [`spm`]), `tokenizer.ggml.pre`, `tokenizer.ggml.tokens`,
//! `tokenizer.ggml.scores`, `tokenizer.ggml.token_type`, `tokenizer.ggml.merges`,
//! `tokenizer.ggml.{bos,eos,eot,unknown}_token_id`, `tokenizer.ggml.add_bos_token`,
//! `tokenizer.ggml.add_eos_token`, `tokenizer.ggml.add_space_prefix`, `tokenizer.chat_template`.
//!
//! Text is first partitioned around special tokens, as llama.cpp's `tokenizer_st_partition`:
//! user-defined tokens (type 4) are always matched whole; control (3) and unknown (2) tokens
//! only when special tokens are parsed ([`Tokenizer::encode`], not [`Tokenizer::encode_plain`]).
//! Longer special tokens are matched first. The text between them goes to the model's
//! tokenizer.

mod bpe;
mod chat;
mod spm;

use std::collections::HashMap;

use aho_corasick::AhoCorasick;

pub use chat::{render_chat_template, ChatContext, ChatMessage};

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp `llama_token_type`).
mod token_type {
    pub const NORMAL: i64 = 1;
    pub const UNKNOWN: i64 = 2;
    pub const CONTROL: i64 = 3;
    pub const USER_DEFINED: i64 = 4;
    pub const BYTE: i64 = 6;
}

/// The tokenizer model `tokenizer.ggml.model` names.
enum Model {
    /// `gpt2`: byte-level BPE, with GPT-2's char → byte table for decoding.
    Bpe(Box<bpe::Bpe>, HashMap<char, u8>),
    /// `llama`: SentencePiece BPE with scores and byte fallback.
    Spm(Box<spm::Spm>),
}

/// A GGUF's tokenizer plus its chat template and special ids.
pub struct Tokenizer {
    model: Model,
    tokens: Vec<String>,
    types: Vec<i64>,
    /// Special tokens (user-defined, control, unknown), longest text first.
    special: Vec<u32>,
    /// Finds which of `special` occur in a text (a prefilter; matching follows llama.cpp).
    special_finder: Option<AhoCorasick>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token` (default: true for SentencePiece and Llama-3, else false).
    pub add_bos: bool,
    /// `tokenizer.ggml.add_eos_token` (default false).
    pub add_eos: bool,
    /// Token ids that end a turn: EOS, EOT, `<|im_end|>`, `<|eot_id|>`, `<|end|>`,
    /// `<|endoftext|>`, `<end_of_turn>` where present.
    pub stop_ids: Vec<u32>,
    chat_template: Option<String>,
    enable_thinking: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("model", &self.model_name())
            .field("vocab", &self.tokens.len())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("add_bos", &self.add_bos)
            .field("stop_ids", &self.stop_ids)
            .finish()
    }
}

/// One piece of the text after special-token partitioning.
enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

impl Tokenizer {
    /// Builds the tokenizer from a GGUF file's metadata (a vocab-only GGUF is enough).
    ///
    /// # Errors
    /// [`ModelError::MissingKey`] / [`ModelError::BadKey`] for absent or malformed keys, and
    /// [`ModelError::Tokenizer`] for an unsupported tokenizer model or pre-tokenizer.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let bad = |key: &str, what: String| ModelError::BadKey {
            path: gguf.path().to_owned(),
            key: key.into(),
            what,
        };
        let model_name = gguf.get_str("tokenizer.ggml.model")?;
        let tokens: Vec<String> = gguf
            .get_str_array("tokenizer.ggml.tokens")?
            .into_iter()
            .map(str::to_owned)
            .collect();
        let types: Vec<i64> = match gguf.get("tokenizer.ggml.token_type") {
            Ok(v) => v
                .as_array()
                .map(|a| a.iter().map(|t| t.as_f64().unwrap_or(1.0) as i64).collect())
                .unwrap_or_default(),
            Err(_) => vec![token_type::NORMAL; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(bad(
                "tokenizer.ggml.token_type",
                format!("{} types for {} tokens", types.len(), tokens.len()),
            ));
        }
        let id_key = |key: &str| {
            gguf.get(key)
                .ok()
                .and_then(|v| v.as_u64())
                .map(|v| v as u32)
                .filter(|&id| (id as usize) < tokens.len())
        };
        let bool_key = |key: &str| match gguf.get(key) {
            Ok(crate::gguf::Value::Bool(b)) => Some(*b),
            _ => None,
        };
        let pre = gguf
            .get("tokenizer.ggml.pre")
            .ok()
            .and_then(|v| v.as_str())
            .unwrap_or("default");

        // Defaults as llama.cpp's `llama_vocab::impl::load`, then the GGUF's own keys.
        let (model, mut bos_id, mut eos_id, default_add_bos) = match model_name {
            "gpt2" => {
                let merges: Vec<(String, String)> = gguf
                    .get_str_array("tokenizer.ggml.merges")?
                    .into_iter()
                    .map(|m| {
                        // llama.cpp splits at the first space after the first byte.
                        m.bytes()
                            .skip(1)
                            .position(|b| b == b' ')
                            .map(|i| (m[..i + 1].to_owned(), m[i + 2..].to_owned()))
                            .ok_or_else(|| {
                                bad(
                                    "tokenizer.ggml.merges",
                                    format!("merge '{m}' is not two tokens separated by a space"),
                                )
                            })
                    })
                    .collect::<Result<_>>()?;
                let add_bos = matches!(pre, "llama-bpe" | "llama3" | "llama-v3");
                (
                    Model::Bpe(
                        Box::new(bpe::Bpe::new(pre, &tokens, merges)?),
                        bpe::unicode_to_byte(),
                    ),
                    None,
                    None,
                    add_bos,
                )
            }
            "llama" => {
                let scores: Vec<f32> = match gguf.get("tokenizer.ggml.scores") {
                    Ok(v) => v
                        .as_array()
                        .map(|a| a.iter().map(|s| s.as_f64().unwrap_or(0.0) as f32).collect())
                        .unwrap_or_default(),
                    Err(_) => vec![0.0; tokens.len()],
                };
                if scores.len() != tokens.len() {
                    return Err(bad(
                        "tokenizer.ggml.scores",
                        format!("{} scores for {} tokens", scores.len(), tokens.len()),
                    ));
                }
                let unk = id_key("tokenizer.ggml.unknown_token_id").or(Some(0));
                let add_space_prefix = bool_key("tokenizer.ggml.add_space_prefix").unwrap_or(true);
                (
                    Model::Spm(Box::new(spm::Spm::new(
                        &tokens,
                        scores,
                        unk,
                        add_space_prefix,
                    ))),
                    Some(1),
                    Some(2),
                    true,
                )
            }
            other => {
                return Err(bad(
                    "tokenizer.ggml.model",
                    format!(
                        "tokenizer model '{other}' is not supported (supported: gpt2 byte-level \
                         BPE, llama SentencePiece)"
                    ),
                ))
            }
        };
        bos_id = id_key("tokenizer.ggml.bos_token_id").or(bos_id);
        eos_id = id_key("tokenizer.ggml.eos_token_id").or(eos_id);
        let add_bos = bool_key("tokenizer.ggml.add_bos_token").unwrap_or(default_add_bos);
        let add_eos = bool_key("tokenizer.ggml.add_eos_token").unwrap_or(false);

        let mut special: Vec<u32> = (0..tokens.len() as u32)
            .filter(|&id| {
                matches!(
                    types[id as usize],
                    token_type::CONTROL | token_type::USER_DEFINED | token_type::UNKNOWN
                ) && !tokens[id as usize].is_empty()
            })
            .collect();
        // Longest first; equal lengths by id, so the order is the same on every run.
        special.sort_by_key(|&id| (std::cmp::Reverse(tokens[id as usize].len()), id));
        let special_finder = if special.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::new(special.iter().map(|&id| tokens[id as usize].as_str()))
                    .map_err(|e| ModelError::Tokenizer(e.to_string()))?,
            )
        };

        let mut stop_ids: Vec<u32> = eos_id.into_iter().collect();
        let named = [
            "<|im_end|>",
            "<|eot_id|>",
            "<|end|>",
            "<|endoftext|>",
            "<end_of_turn>",
        ];
        let extra = id_key("tokenizer.ggml.eot_token_id")
            .into_iter()
            .chain(named.iter().filter_map(|n| vocab_lookup(&tokens, n)));
        for id in extra {
            if !stop_ids.contains(&id) {
                stop_ids.push(id);
            }
        }
        let chat_template = gguf
            .get("tokenizer.chat_template")
            .ok()
            .and_then(|v| v.as_str())
            .map(str::to_owned);

        Ok(Self {
            model,
            tokens,
            types,
            special,
            special_finder,
            bos_id,
            eos_id,
            add_bos,
            add_eos,
            stop_ids,
            chat_template,
            enable_thinking: true,
        })
    }

    /// `gpt2` or `llama`, as `tokenizer.ggml.model` says.
    pub fn model_name(&self) -> &'static str {
        match self.model {
            Model::Bpe(..) => "gpt2",
            Model::Spm(_) => "llama",
        }
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The token string of `id` (as stored in the GGUF: byte-level encoded for BPE, with `▁`
    /// for spaces for SentencePiece).
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Tokenizes `text` as llama.cpp's `llama_tokenize(vocab, text, add_special, parse_special)`:
    /// with `add_special`, BOS/EOS as the GGUF's `add_bos_token` / `add_eos_token` say; with
    /// `parse_special`, control tokens written in the text are matched (user-defined tokens
    /// always are).
    ///
    /// # Errors
    /// [`ModelError::Tokenizer`] if the BPE fails on the text.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos_id);
        }
        // SentencePiece prefixes a space to the text and to text right after a special token.
        let mut prev_special = true;
        for fragment in self.partition(text, parse_special) {
            match fragment {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(t) => {
                    match &self.model {
                        Model::Bpe(bpe, _) => bpe.tokenize(t, &mut out)?,
                        Model::Spm(spm) => spm.tokenize(t, prev_special, &mut out),
                    }
                    prev_special = false;
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos_id);
        }
        Ok(out)
    }

    /// Encodes `text` without BOS/EOS; special tokens in the text are matched whole.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenize(text, false, true)
    }

    /// Encodes `text` as plain text: a control token's spelling in it (`<|im_end|>`) is
    /// tokenized as the characters it is made of, never as the control token. For text that
    /// comes from people (messages, history, retrieved documents).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenize(text, false, false)
    }

    /// Splits `text` around the special tokens it contains, longest token first, as
    /// llama.cpp's `tokenizer_st_partition`.
    fn partition<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        // llama.cpp makes no fragment of an empty text (so no SentencePiece space prefix).
        if text.is_empty() {
            return Vec::new();
        }
        let mut fragments = vec![Fragment::Text(text)];
        let Some(finder) = &self.special_finder else {
            return fragments;
        };
        // Which special tokens occur at all (indices into `self.special`, longest first).
        let mut present: Vec<usize> = finder
            .find_overlapping_iter(text)
            .map(|m| m.pattern().as_usize())
            .collect();
        present.sort_unstable();
        present.dedup();
        for idx in present {
            let id = self.special[idx];
            let ty = self.types[id as usize];
            if !parse_special && matches!(ty, token_type::CONTROL | token_type::UNKNOWN) {
                continue;
            }
            let needle = self.tokens[id as usize].as_str();
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                let Fragment::Text(mut rest) = fragment else {
                    next.push(fragment);
                    continue;
                };
                while let Some(at) = rest.find(needle) {
                    if at > 0 {
                        next.push(Fragment::Text(&rest[..at]));
                    }
                    next.push(Fragment::Token(id));
                    rest = &rest[at + needle.len()..];
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            fragments = next;
        }
        fragments
    }

    /// The bytes `id` stands for, as llama.cpp's `token_to_piece` with `special = true`: control
    /// and user-defined tokens as their text, byte tokens as their byte, others decoded
    /// (GPT-2 byte table for BPE, `▁` → space for SentencePiece).
    pub fn piece(&self, id: u32) -> Vec<u8> {
        let Some(text) = self.tokens.get(id as usize) else {
            return Vec::new();
        };
        match self.types[id as usize] {
            token_type::BYTE => {
                if let Some(b) = text
                    .strip_prefix("<0x")
                    .and_then(|h| h.strip_suffix('>'))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    return vec![b];
                }
                text.as_bytes().to_vec()
            }
            token_type::NORMAL => match &self.model {
                Model::Bpe(_, table) => {
                    let mut out = Vec::with_capacity(text.len());
                    for c in text.chars() {
                        match table.get(&c) {
                            Some(&b) => out.push(b),
                            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                        }
                    }
                    out
                }
                Model::Spm(_) => text.replace('\u{2581}', " ").into_bytes(),
            },
            _ => text.as_bytes().to_vec(),
        }
    }

    /// Decodes ids to text (special tokens kept, as llama.cpp's detokenizer prints them);
    /// bytes that do not form UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.piece(id)).collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A streaming decoder that yields text only once it forms complete UTF-8.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder {
            tokenizer: self,
            pending: Vec::new(),
        }
    }
}

fn vocab_lookup(tokens: &[String], name: &str) -> Option<u32> {
    tokens.iter().position(|t| t == name).map(|i| i as u32)
}

/// Incremental detokenizer: feeds ids one at a time and returns the new text once the bytes
/// decoded so far end on a whole UTF-8 character (a character may span tokens: byte-level
/// BPE pieces, SentencePiece byte fallback).
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    pending: Vec<u8>,
}

impl StreamDecoder<'_> {
    /// Adds one token; returns the text it completes, if any. Bytes that can never form
    /// UTF-8 are emitted as U+FFFD rather than held.
    pub fn step(&mut self, id: u32) -> Result<Option<String>> {
        self.pending.extend(self.tokenizer.piece(id));
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            // An incomplete character at the end: wait for the next token.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            // Invalid bytes: emit them (lossily) now.
            Err(_) => {
                let text = String::from_utf8_lossy(&self.pending).into_owned();
                self.pending.clear();
                return Ok(Some(text));
            }
        };
        if valid == 0 {
            return Ok(None);
        }
        let rest = self.pending.split_off(valid);
        let text =
            String::from_utf8(std::mem::replace(&mut self.pending, rest)).expect("checked UTF-8");
        Ok(Some(text))
    }
}
