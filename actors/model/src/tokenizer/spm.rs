//! SentencePiece BPE (`tokenizer.ggml.model = llama`): Llama-2, Gemma, Baichuan, Phi-3.
//!
//! As llama.cpp's `llm_tokenizer_spm_session` (src/llama-vocab.cpp): the text (spaces
//! escaped to `▁`) starts as one symbol per UTF-8 character; the adjacent pair whose
//! concatenation is a vocabulary piece with the highest `tokenizer.ggml.scores` entry is merged
//! first (ties: the leftmost pair), until no pair forms a piece. A final symbol is a piece
//! (only pieces are ever formed) or a single character the vocabulary lacks, which falls back
//! to its UTF-8 bytes as `<0xXX>` tokens. (llama.cpp also keeps a reverse-merge map for
//! symbols that are not pieces; since merges only form pieces, it is never consulted.)

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// A SentencePiece vocabulary: what the merge and the byte fallback need.
pub(super) struct Spm {
    /// Piece text → id (the last id wins for duplicate texts, as llama.cpp's `token_to_id`).
    ids: HashMap<String, u32>,
    /// `tokenizer.ggml.scores`, one per id.
    scores: Vec<f32>,
    /// `<0xXX>` byte token ids, indexed by byte (llama.cpp `byte_to_token`: else the ASCII
    /// character's own piece; a byte with neither becomes `unk`).
    bytes: [Option<u32>; 256],
    /// `tokenizer.ggml.unknown_token_id`.
    unk: Option<u32>,
    /// `tokenizer.ggml.add_space_prefix`: a space before the text and after each special token.
    add_space_prefix: bool,
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Higher score first; on equal scores the leftmost pair (llama.cpp `llm_bigram_spm::comparator`).
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl Spm {
    /// The vocabulary over `tokens` (GGUF order) with one score per token.
    pub fn new(
        tokens: &[String],
        scores: Vec<f32>,
        unk: Option<u32>,
        add_space_prefix: bool,
    ) -> Self {
        let ids: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut bytes = [None; 256];
        for (b, slot) in bytes.iter_mut().enumerate() {
            *slot = ids
                .get(&format!("<0x{b:02X}>"))
                .or_else(|| {
                    ids.get(&char::from(b as u8).to_string())
                        .filter(|_| b < 128)
                })
                .copied();
        }
        Self {
            ids,
            scores,
            bytes,
            unk,
            add_space_prefix,
        }
    }

    /// Appends the ids of `text`, a fragment between special tokens, to `out`: spaces escaped
    /// to `▁` and, with `add_space_prefix`, one prefixed when the fragment starts the text or
    /// follows a special token (`after_special`), as llama.cpp's `llama_vocab::impl::tokenize`.
    pub fn tokenize(&self, text: &str, after_special: bool, out: &mut Vec<u32>) {
        let mut escaped = String::with_capacity(text.len() + 4);
        if self.add_space_prefix && after_special {
            escaped.push('\u{2581}');
        }
        escaped.extend(text.chars().map(|c| if c == ' ' { '\u{2581}' } else { c }));
        self.merge(&escaped, out);
    }

    /// The merge itself over `text` (whitespace already escaped).
    fn merge(&self, text: &str, out: &mut Vec<u32>) {
        let mut symbols: Vec<Symbol> = text
            .char_indices()
            .map(|(start, ch)| Symbol {
                start,
                len: ch.len_utf8(),
                prev: None,
                next: None,
            })
            .collect();
        let n = symbols.len();
        for (i, s) in symbols.iter_mut().enumerate() {
            s.prev = i.checked_sub(1);
            s.next = (i + 1 < n).then_some(i + 1);
        }
        if n == 0 {
            return;
        }
        let mut queue = BinaryHeap::new();
        for i in 1..n {
            self.try_add(text, &symbols, &mut queue, Some(i - 1), Some(i));
        }
        while let Some(bigram) = queue.pop() {
            let (l, r) = (symbols[bigram.left], symbols[bigram.right]);
            // Skip pairs one of whose symbols has since been merged into another.
            if l.len == 0 || r.len == 0 || l.len + r.len != bigram.len {
                continue;
            }
            symbols[bigram.left].len += r.len;
            symbols[bigram.right].len = 0;
            symbols[bigram.left].next = r.next;
            if let Some(next) = r.next {
                symbols[next].prev = Some(bigram.left);
            }
            let (prev, next) = (symbols[bigram.left].prev, symbols[bigram.left].next);
            self.try_add(text, &symbols, &mut queue, prev, Some(bigram.left));
            self.try_add(text, &symbols, &mut queue, Some(bigram.left), next);
        }
        let mut i = Some(0);
        while let Some(s) = i {
            let sym = symbols[s];
            let piece = &text[sym.start..sym.start + sym.len];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => out.extend(
                    piece
                        .bytes()
                        .filter_map(|b| self.bytes[b as usize].or(self.unk)),
                ),
            }
            i = sym.next;
        }
    }

    fn try_add(
        &self,
        text: &str,
        symbols: &[Symbol],
        queue: &mut BinaryHeap<Bigram>,
        left: Option<usize>,
        right: Option<usize>,
    ) {
        let (Some(l), Some(r)) = (left, right) else {
            return;
        };
        let (a, b) = (symbols[l], symbols[r]);
        let piece = &text[a.start..a.start + a.len + b.len];
        if let Some(&score) = self
            .ids
            .get(piece)
            .and_then(|&id| self.scores.get(id as usize))
        {
            queue.push(Bigram {
                left: l,
                right: r,
                score,
                len: piece.len(),
            });
        }
    }
}
