//! Text normalisation before matching: full-width → half-width, lower case, zero-width
//! characters removed — applied alike to the terms and to the text they are matched in, so
//! `ＢＡＤ`, `Bad` and `b\u{200b}ad` all match the term `bad`.
//!
//! Each byte of the normalised text maps back to the original character it came from, so a
//! match can be masked in (or cut from) the text as written.

/// Characters removed before matching: zero-width space, non-joiner and joiner, word joiner,
/// the byte-order mark (zero-width no-break space), soft hyphen, and the invisible
/// separators U+2061–U+2064 (Unicode's `Default_Ignorable_Code_Point`s that people use to
/// split a word without it showing).
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{00AD}'
    )
}

/// The half-width form of a full-width ASCII variant (U+FF01–U+FF5E → U+0021–U+007E) and of
/// the ideographic space (U+3000 → space); other characters unchanged.
pub fn half_width(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        '\u{3000}' => ' ',
        _ => c,
    }
}

/// A text in normalised form, with the way back to the original.
#[derive(Debug, Clone, Default)]
pub struct Normalized {
    /// The normalised text.
    pub text: String,
    /// For each byte of `text`: the byte range `[start, end)` in the original of the
    /// character it came from.
    origin: Vec<(u32, u32)>,
}

impl Normalized {
    /// Normalises `s`: each character is made half-width, then lower-cased
    /// (`char::to_lowercase`, which may give more than one character); invisible characters
    /// are dropped.
    pub fn new(s: &str) -> Normalized {
        let mut text = String::with_capacity(s.len());
        let mut origin = Vec::with_capacity(s.len());
        for (i, c) in s.char_indices() {
            if is_invisible(c) {
                continue;
            }
            let span = (i as u32, (i + c.len_utf8()) as u32);
            for l in half_width(c).to_lowercase() {
                text.push(l);
                origin.extend(std::iter::repeat_n(span, l.len_utf8()));
            }
        }
        Normalized { text, origin }
    }

    /// The original byte range that the normalised byte range `[start, end)` came from
    /// (`start < end ≤ text.len()`).
    pub fn original(&self, start: usize, end: usize) -> std::ops::Range<usize> {
        self.origin[start].0 as usize..self.origin[end - 1].1 as usize
    }

    /// The original byte offset where the last `n` normalised characters begin (the
    /// original's length when `n` is 0; 0 when the text has at most `n` characters).
    pub fn original_start_of_last(&self, n: usize, original_len: usize) -> usize {
        if n == 0 {
            return original_len;
        }
        match self.text.char_indices().rev().nth(n - 1) {
            Some((i, _)) => self.origin[i].0 as usize,
            None => 0,
        }
    }
}

/// `s` normalised (the text only).
pub fn normalize(s: &str) -> String {
    Normalized::new(s).text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn width_case_and_invisibles() {
        assert_eq!(normalize("ＢＡＤ　Ｗｏｒｄ！"), "bad word!");
        assert_eq!(normalize("b\u{200b}a\u{feff}d\u{00ad}"), "bad");
        assert_eq!(normalize("数据库"), "数据库");
        // Full-width digits too.
        assert_eq!(normalize("１３８"), "138");
    }

    #[test]
    fn maps_back_to_the_original() {
        let s = "Ａ\u{200b}b数";
        let n = Normalized::new(s);
        assert_eq!(n.text, "ab数");
        // "b" (normalised byte 1) came from the original's "b" after the zero-width space.
        assert_eq!(&s[n.original(1, 2)], "b");
        assert_eq!(&s[n.original(0, 2)], "Ａ\u{200b}b");
        assert_eq!(&s[n.original(2, 5)], "数");
        assert_eq!(n.original_start_of_last(1, s.len()), s.len() - "数".len());
        assert_eq!(n.original_start_of_last(0, s.len()), s.len());
        assert_eq!(n.original_start_of_last(9, s.len()), 0);
        // A character whose lower case is two characters maps both back to itself.
        let n = Normalized::new("İx");
        assert_eq!(n.text.chars().count(), 3);
        assert_eq!(n.original(0, n.text.len() - 1), 0.."İ".len());
    }
}
