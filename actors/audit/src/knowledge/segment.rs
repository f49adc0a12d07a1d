//! Words for the full-text index: Chinese segmented by jieba's search mode (a long word and
//! its dictionary sub-words, so 数据库索引 matches 索引), other scripts split by jieba into
//! runs of letters and digits; lowercased, full-width folded to half-width, stop words and
//! punctuation dropped.
//!
//! The index stores the words joined by spaces and SQLite's `unicode61` tokenizer splits them
//! again at the spaces, so the index and the query agree on word boundaries exactly
//! (FTS5's built-in tokenizers do not segment Chinese: `unicode61` would make one token of a
//! whole run of Han characters). Source: jieba `cut_for_search`
//! (<https://github.com/messense/jieba-rs>), SQLite FTS5 §4.3.1 (<https://sqlite.org/fts5.html>).

use std::sync::OnceLock;

use jieba_rs::Jieba;

fn jieba() -> &'static Jieba {
    static J: OnceLock<Jieba> = OnceLock::new();
    J.get_or_init(Jieba::new)
}

/// Function words that match almost every chunk (Chinese particles and pronouns, English
/// articles and auxiliaries): left out of queries and of the index.
const STOP_WORDS: &[&str] = &[
    "的",
    "了",
    "是",
    "在",
    "和",
    "与",
    "及",
    "或",
    "也",
    "都",
    "就",
    "而",
    "吗",
    "呢",
    "吧",
    "啊",
    "呀",
    "么",
    "嘛",
    "我",
    "你",
    "您",
    "他",
    "她",
    "它",
    "我们",
    "你们",
    "他们",
    "这",
    "那",
    "这个",
    "那个",
    "一个",
    "有",
    "没有",
    "请",
    "请问",
    "什么",
    "怎么",
    "怎样",
    "如何",
    "为什么",
    "哪些",
    "多少",
    "一下",
    "可以",
    "能",
    "会",
    "要",
    "吗？",
    "a",
    "an",
    "the",
    "is",
    "are",
    "was",
    "were",
    "be",
    "of",
    "to",
    "in",
    "on",
    "at",
    "for",
    "and",
    "or",
    "what",
    "how",
    "why",
    "do",
    "does",
    "i",
    "you",
    "we",
    "it",
    "me",
    "my",
    "your",
    "can",
    "please",
    "tell",
    "about",
];

/// Full-width ASCII (U+FF01..U+FF5E) to half-width, the ideographic space to a space.
fn fold(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        '\u{3000}' => ' ',
        c => c,
    }
}

/// The index words of `text`, in order (repeats kept: they weigh in BM25's term frequency).
pub fn words(text: &str) -> Vec<String> {
    let folded: String = text.chars().map(fold).collect::<String>().to_lowercase();
    jieba()
        .cut_for_search(&folded, true)
        .into_iter()
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
        })
        .filter(|w| !w.is_empty() && !STOP_WORDS.contains(&w.as_str()))
        .collect()
}

/// An FTS5 query matching any of `text`'s words (each quoted, so no word is read as FTS5
/// syntax); `None` when `text` has none.
pub fn any_of(text: &str) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    let terms: Vec<String> = words(text)
        .into_iter()
        .filter(|w| seen.insert(w.clone()))
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" OR "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_is_segmented_with_sub_words_and_stop_words_dropped() {
        let w = words("请问数据库索引是什么？");
        assert!(w.contains(&"数据库".to_string()), "{w:?}");
        assert!(w.contains(&"索引".to_string()), "{w:?}");
        assert!(
            !w.iter().any(|x| x == "是" || x == "什么" || x == "请问"),
            "{w:?}"
        );
    }

    #[test]
    fn english_is_lowercased_and_full_width_folded() {
        assert_eq!(
            words("The VPN Ｐａｓｓｗｏｒｄ, please!"),
            ["vpn", "password"]
        );
    }

    #[test]
    fn queries_quote_every_word_once() {
        assert_eq!(any_of("vpn VPN \"x"), Some("\"vpn\" OR \"x\"".to_string()));
        assert_eq!(any_of("的了吗？！"), None);
    }
}
