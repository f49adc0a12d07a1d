//! Byte-level BPE (`tokenizer.ggml.model = gpt2`) with the pre-tokenizer `tokenizer.ggml.pre`
//! names, assembled with the `tokenizers` crate.
//!
//! The pre-tokenizers are llama.cpp's (`llm_tokenizer_bpe` in src/llama-vocab.cpp): a list of
//! regular expressions applied in turn, each splitting the pieces the previous one left (matches
//! and the text between them both kept), then the GPT-2 byte-to-unicode mapping. Llama-3
//! (`llama-bpe`) also sets `ignore_merges`: a pre-token that is itself a vocabulary entry is
//! taken whole.

use std::collections::HashMap;

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer as HfTokenizer};

use crate::error::{ModelError, Result};

/// GPT-2's pre-tokenizer regex (`LLAMA_VOCAB_PRE_TYPE_GPT2`).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// Llama-3's regex as llama.cpp adapts it (case-insensitive contractions spelled out).
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's regex: Llama-3's with single digits.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// DeepSeek-LLM's chain (`LLAMA_VOCAB_PRE_TYPE_DEEPSEEK_LLM`).
const DEEPSEEK_LLM: &[&str] = &[
    "[\r\n]",
    "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
    "\\s?[!-/:-~！-／：-～‘-‟　-。]+",
    "\\s+$",
    "[一-龥ࠀ-一가-퟿]+",
    "\\p{N}+",
];

/// Qwen3.5's regex: Qwen2's with combining marks joined to letters.
const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// DeepSeek-Coder's chain (`LLAMA_VOCAB_PRE_TYPE_DEEPSEEK_CODER`).
const DEEPSEEK_CODER: &[&str] = &[
    "[\r\n]",
    "\\s?\\p{L}+",
    "\\s?\\p{P}+",
    "[一-龥ࠀ-一가-퟿]+",
    "\\p{N}",
];

/// Falcon's chain (`LLAMA_VOCAB_PRE_TYPE_FALCON`).
const FALCON: &[&str] = &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"];

/// llama.cpp's chain for a GGUF without a known pre-tokenizer (`LLAMA_VOCAB_PRE_TYPE_DEFAULT`).
const DEFAULT: &[&str] = &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"];

/// The pre-tokenizer names accepted, for error messages.
pub(super) const SUPPORTED: &str = "default, gpt2, gpt-2, mpt, phi-2, olmo, smollm, starcoder, \
     refact, command-r, qwen2, deepseek-r1-qwen, qwen35, llama-bpe, llama3, llama-v3, deepseek-llm, \
     deepseek-coder, falcon";

/// The regex chain and `ignore_merges` for a `tokenizer.ggml.pre` name.
fn pre_tokenizer(pre: &str) -> Option<(Vec<&'static str>, bool)> {
    Some(match pre {
        "default" => (DEFAULT.to_vec(), false),
        "gpt2" | "gpt-2" | "mpt" | "phi-2" | "olmo" => (vec![GPT2], false),
        // LLAMA_VOCAB_PRE_TYPE_SMOLLM / STARCODER / REFACT / COMMAND_R: every digit apart,
        // then GPT-2.
        "smollm" | "starcoder" | "refact" | "command-r" => (vec![r"\p{N}", GPT2], false),
        "qwen2" | "deepseek-r1-qwen" => (vec![QWEN2], false),
        "qwen35" => (vec![QWEN35], false),
        "deepseek-coder" => (DEEPSEEK_CODER.to_vec(), false),
        "falcon" => (FALCON.to_vec(), false),
        "llama-bpe" | "llama3" | "llama-v3" => (vec![LLAMA3], true),
        "deepseek-llm" => (DEEPSEEK_LLM.to_vec(), false),
        _ => return None,
    })
}

/// A byte-level BPE over one vocabulary and merge list.
pub(super) struct Bpe {
    inner: HfTokenizer,
}

impl Bpe {
    /// Builds the BPE for `pre` over `tokens` (GGUF order) and `merges` (rank order).
    ///
    /// # Errors
    /// [`ModelError::Tokenizer`] for an unknown pre-tokenizer or a vocabulary the BPE rejects.
    pub fn new(pre: &str, tokens: &[String], merges: Vec<(String, String)>) -> Result<Self> {
        let (chain, ignore_merges) = pre_tokenizer(pre).ok_or_else(|| {
            ModelError::Tokenizer(format!(
                "pre-tokenizer '{pre}' is not supported (supported: {SUPPORTED})"
            ))
        })?;
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
            .ignore_merges(ignore_merges)
            .build()
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let mut steps: Vec<PreTokenizerWrapper> = Vec::with_capacity(chain.len() + 1);
        for re in chain {
            let split = Split::new(
                SplitPattern::Regex(re.to_owned()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| ModelError::Tokenizer(format!("pre-tokenizer regex {re:?}: {e}")))?;
            steps.push(split.into());
        }
        steps.push(ByteLevel::new(false, false, false).into());
        let mut inner = HfTokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(Sequence::new(steps)));
        Ok(Self { inner })
    }

    /// Appends the ids of `text` (no special tokens in it) to `out`.
    pub fn tokenize(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        out.extend_from_slice(enc.get_ids());
        Ok(())
    }
}

/// GPT-2's byte ↔ unicode table (`bytes_to_unicode`): the printable Latin-1 bytes map to
/// themselves, the other 68 bytes to U+0100 onward. Returns the reverse map char → byte.
pub(super) fn unicode_to_byte() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (u32::from(b'!')..=u32::from(b'~')).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut map = HashMap::with_capacity(256);
    let mut extra = 0u32;
    for b in 0u32..256 {
        let c = if printable.contains(&b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        map.insert(char::from_u32(c).expect("valid code point"), b as u8);
    }
    map
}
