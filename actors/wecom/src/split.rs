//! Splitting long answers into WeCom-sized messages.
//!
//! WeCom counts limits in UTF-8 **bytes** (text 2048, markdown 2048 for `message/send`
//! (/document/path/90236), 4096 for group-robot markdown and markdown_v2 (/document/path/91770),
//! 20480 for AI-bot stream content (/document/path/101031)) and silently truncates or rejects
//! what is over. Parts are cut on a paragraph boundary, else a line break, else a sentence end,
//! else a character boundary — never inside a UTF-8 sequence — and carry an ordered `(i/n) `
//! prefix that counts against the limit.

/// Group robot `text.content` and `message/send` / `appchat/send` text limit (bytes).
pub const TEXT_MAX_BYTES: usize = 2048;
/// `message/send` / `appchat/send` markdown limit (bytes).
pub const APP_MARKDOWN_MAX_BYTES: usize = 2048;
/// Group robot `markdown` and `markdown_v2` limit (bytes).
pub const ROBOT_MARKDOWN_MAX_BYTES: usize = 4096;
/// AI-bot stream / markdown content limit (bytes).
pub const AIBOT_CONTENT_MAX_BYTES: usize = 20480;

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary (`s`
/// itself when it fits).
pub fn prefix_bytes(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Splits `text` into parts of at most `max_bytes` UTF-8 bytes each, every part (when there is
/// more than one) prefixed with `(i/n) `. One part is returned unchanged. Empty text gives one
/// empty part.
///
/// # Panics
/// If `max_bytes` < 32 (no room for a prefix and a 4-byte character).
pub fn split_message(text: &str, max_bytes: usize) -> Vec<String> {
    assert!(
        max_bytes >= 32,
        "max_bytes must leave room for the (i/n) prefix"
    );
    if text.len() <= max_bytes {
        return vec![text.to_string()];
    }
    // The prefix length depends on n; grow the digit budget until the split fits it.
    let mut digits = 1;
    loop {
        let budget = max_bytes - prefix_len(digits);
        let chunks = chunk(text, budget);
        let n = chunks.len();
        if n.to_string().len() <= digits {
            return chunks
                .iter()
                .enumerate()
                .map(|(i, c)| format!("({}/{n}) {c}", i + 1))
                .collect();
        }
        digits = n.to_string().len();
    }
}

/// Bytes taken by `(i/n) ` with both numbers of `digits` digits.
fn prefix_len(digits: usize) -> usize {
    2 * digits + 4
}

fn chunk(text: &str, budget: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > budget {
        let cut = cut_point(rest, budget);
        let (head, tail) = rest.split_at(cut);
        if !head.trim_end().is_empty() {
            out.push(head.trim_end());
        }
        rest = tail.trim_start_matches(['\n', ' ']);
    }
    if !rest.is_empty() || out.is_empty() {
        out.push(rest);
    }
    out
}

/// The best place ≤ `budget` to cut `s` (which is longer than `budget`).
fn cut_point(s: &str, budget: usize) -> usize {
    let window = prefix_bytes(s, budget);
    let hard = window.len();
    // Only take a soft boundary that keeps the part at least half full.
    let min = hard / 2;
    let soft = [
        window.rfind("\n\n").map(|i| i + 2),
        window.rfind('\n').map(|i| i + 1),
        ["。", "！", "？", ". ", "! ", "? "]
            .iter()
            .filter_map(|p| window.rfind(p).map(|i| i + p.len()))
            .max(),
    ];
    soft.into_iter()
        .flatten()
        .find(|&i| i >= min && i > 0)
        .unwrap_or(hard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prefixes_end_on_a_character() {
        assert_eq!(prefix_bytes("日本語", 4), "日");
        assert_eq!(prefix_bytes("日本語", 6), "日本");
        assert_eq!(prefix_bytes("abc", 10), "abc");
        assert_eq!(prefix_bytes("", 0), "");
    }

    #[test]
    fn short_text_is_untouched() {
        assert_eq!(split_message("hello", 2048), vec!["hello"]);
        assert_eq!(split_message("", 2048), vec![""]);
    }

    #[test]
    fn paragraphs_are_preferred_and_parts_are_numbered() {
        let para = "x".repeat(1500);
        let text = format!("{para}\n\n{para}\n\n{para}");
        let parts = split_message(&text, 2048);
        assert_eq!(parts.len(), 3);
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(*p, format!("({}/3) {para}", i + 1));
        }
    }

    #[test]
    fn chinese_is_cut_on_characters_not_bytes() {
        let text = "企业微信".repeat(1000); // 12000 bytes, no boundaries
        let parts = split_message(&text, 2048);
        assert!(parts.iter().all(|p| p.len() <= 2048));
        let joined: String = parts
            .iter()
            .map(|p| p.split_once(") ").unwrap().1)
            .collect();
        assert_eq!(joined, text);
    }

    proptest! {
        #[test]
        fn parts_fit_and_keep_every_character(text in "[a-z 。\n企]{0,3000}", max in 32usize..600) {
            let parts = split_message(&text, max);
            prop_assert!(parts.iter().all(|p| p.len() <= max));
            if parts.len() > 1 {
                let n = parts.len();
                let mut rebuilt = String::new();
                for (i, p) in parts.iter().enumerate() {
                    let prefix = format!("({}/{n}) ", i + 1);
                    prop_assert!(p.starts_with(&prefix));
                    rebuilt.push_str(&p[prefix.len()..]);
                }
                let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
                prop_assert_eq!(squash(&rebuilt), squash(&text));
            } else {
                prop_assert_eq!(&parts[0], &text);
            }
        }
    }
}
