//! Documents cut into chunks for retrieval: at Markdown headings (a chunk never spans two
//! sections; its section is the nearest heading), then at blank lines, paragraphs packed up to
//! [`CHUNK_CHARS`] characters; a longer paragraph is cut after a sentence end (。！？.!? or a
//! line break) where one falls in its second half, else at the limit.

/// Most characters in a chunk (about 300–600 tokens for Chinese text in Qwen's vocabulary).
pub const CHUNK_CHARS: usize = 600;

/// One chunk of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The nearest heading above it (empty before the first).
    pub section: String,
    /// Its text (trimmed).
    pub text: String,
}

fn heading(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let hashes = t.chars().take_while(|&c| c == '#').count();
    (1..=6)
        .contains(&hashes)
        .then(|| &t[hashes..])
        .filter(|rest| rest.is_empty() || rest.starts_with(' '))
        .map(|rest| rest.trim().trim_end_matches('#').trim())
}

/// The document's title: its first level-1 heading, else `fallback` (the file's stem).
pub fn title(text: &str, fallback: &str) -> String {
    text.lines()
        .find_map(|l| {
            let t = l.trim_start();
            (t.starts_with("# ")).then(|| heading(t)).flatten()
        })
        .filter(|t| !t.is_empty())
        .unwrap_or(fallback)
        .to_string()
}

/// `text`'s chunks, in order; none for a blank text.
pub fn split(text: &str) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut para = String::new();
    let mut current = String::new();
    let flush_para =
        |para: &mut String, current: &mut String, section: &str, out: &mut Vec<Chunk>| {
            let p = para.trim();
            if p.is_empty() {
                para.clear();
                return;
            }
            for piece in pieces(p) {
                let n = current.chars().count();
                if n > 0 && n + 2 + piece.chars().count() > CHUNK_CHARS {
                    push(out, section, current);
                }
                if !current.is_empty() {
                    current.push_str("\n\n");
                }
                current.push_str(piece);
            }
            para.clear();
        };
    for line in text.lines() {
        if let Some(h) = heading(line) {
            flush_para(&mut para, &mut current, &section, &mut out);
            push(&mut out, &section, &mut current);
            section = h.to_string();
        } else if line.trim().is_empty() {
            flush_para(&mut para, &mut current, &section, &mut out);
        } else {
            if !para.is_empty() {
                para.push('\n');
            }
            para.push_str(line.trim_end());
        }
    }
    flush_para(&mut para, &mut current, &section, &mut out);
    push(&mut out, &section, &mut current);
    out
}

fn push(out: &mut Vec<Chunk>, section: &str, current: &mut String) {
    let t = current.trim();
    if !t.is_empty() {
        out.push(Chunk {
            section: section.to_string(),
            text: t.to_string(),
        });
    }
    current.clear();
}

/// A paragraph in pieces of at most [`CHUNK_CHARS`] characters.
fn pieces(p: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = p;
    while rest.chars().count() > CHUNK_CHARS {
        let limit = rest
            .char_indices()
            .nth(CHUNK_CHARS)
            .map_or(rest.len(), |(i, _)| i);
        let half = rest
            .char_indices()
            .nth(CHUNK_CHARS / 2)
            .map_or(0, |(i, _)| i);
        let cut = rest[..limit]
            .char_indices()
            .rev()
            .find(|&(i, c)| i >= half && matches!(c, '。' | '！' | '？' | '.' | '!' | '?' | '\n'))
            .map_or(limit, |(i, c)| i + c.len_utf8());
        out.push(rest[..cut].trim());
        rest = rest[cut..].trim_start();
    }
    if !rest.trim().is_empty() {
        out.push(rest.trim());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_start_sections_and_give_the_title() {
        let doc = "# 请假制度\n\n年假五天。\n\n## 病假\n\n病假需要证明。\n";
        assert_eq!(title(doc, "leave"), "请假制度");
        assert_eq!(title("no heading", "leave"), "leave");
        let c = split(doc);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(
            (c[0].section.as_str(), c[0].text.as_str()),
            ("请假制度", "年假五天。")
        );
        assert_eq!(
            (c[1].section.as_str(), c[1].text.as_str()),
            ("病假", "病假需要证明。")
        );
    }

    #[test]
    fn paragraphs_pack_and_long_ones_cut_at_sentence_ends() {
        let sentence = "这是一个句子。"; // 7 characters
        let long = sentence.repeat(200); // 1400 characters, one paragraph
        let c = split(&long);
        assert!(c.len() >= 3, "{}", c.len());
        for ch in &c {
            assert!(ch.text.chars().count() <= CHUNK_CHARS);
            assert!(
                ch.text.ends_with('。'),
                "cut inside a sentence: {:?}",
                &ch.text[ch.text.len() - 6..]
            );
        }
        let joined: String = c.iter().map(|x| x.text.as_str()).collect();
        assert_eq!(joined, long, "no character lost");

        let short = "a\n\nb\n\nc";
        assert_eq!(
            split(short),
            vec![Chunk {
                section: String::new(),
                text: "a\n\nb\n\nc".into()
            }]
        );
        assert!(split(" \n\n ").is_empty());
        // A text without any break at all is still cut at the limit.
        let c = split(&"字".repeat(1300));
        assert_eq!(
            c.iter().map(|x| x.text.chars().count()).collect::<Vec<_>>(),
            [600, 600, 100]
        );
    }
}
