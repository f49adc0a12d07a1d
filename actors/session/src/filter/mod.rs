//! The content filter: word lists and a bounded set of regexes, each rule with an action —
//! block, mask or flag — matched on normalised text ([`normalize`]) in the question before the
//! model sees it and in the answer as it streams.
//!
//! * **Terms**: files with one term per line (UTF-8; a BOM, blank lines and lines starting with
//!   `#` are skipped), thousands of them, matched all at once with one Aho-Corasick automaton
//!   (the `aho-corasick` crate). A term listed twice keeps its strongest action
//!   (block > mask > flag).
//! * **Regexes**: at most [`MAX_REGEXES`], each compiled with the `regex` crate under
//!   [`REGEX_SIZE_LIMIT`] (no backtracking: matching time stays linear in the text).
//! * A rule's id is `FILE:LINE` for a term (the file's name, the 1-based line) and the
//!   configured id for a regex: audit rows name rules by id, never by the matched text.
//! * Streaming ([`ContentFilter::visible`]): the last [`ContentFilter::holdback`] characters of
//!   an unfinished answer are held back, so a term split across tokens is masked or blocked
//!   before any frame shows it whole. A regex match longer than [`REGEX_HOLDBACK_CHARS`] may
//!   show in part before it completes.

pub mod normalize;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};
use regex::{Regex, RegexBuilder};

pub use normalize::{normalize, Normalized};

/// Most regex rules (LangBot allows 64; word lists, not regexes, carry the thousands).
pub const MAX_REGEXES: usize = 256;
/// Compiled size limit of one regex, in bytes (`RegexBuilder::size_limit`).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Characters held back for regex rules in a streamed answer.
pub const REGEX_HOLDBACK_CHARS: usize = 32;
/// The masking character (full-width asterisk), one per masked character.
pub const MASK: char = '＊';

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Answer as usual, and audit the match.
    Flag,
    /// Replace each matched character with [`MASK`].
    Mask,
    /// Refuse politely: inbound, the model is not called; outbound, the answer stops.
    Block,
}

impl Action {
    /// `block`, `mask` or `flag`.
    pub fn name(self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Mask => "mask",
            Action::Flag => "flag",
        }
    }

    /// The action named `s` (`block`, `mask`, `flag`).
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "block" => Some(Action::Block),
            "mask" => Some(Action::Mask),
            "flag" => Some(Action::Flag),
            _ => None,
        }
    }
}

/// One regex rule as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegexRule {
    /// Its id in audit rows.
    pub id: String,
    /// The pattern (`regex` crate syntax), matched against normalised (lower-case,
    /// half-width) text.
    pub pattern: String,
    /// What a match does.
    pub action: Action,
}

/// Where the rules come from (the `[filter]` section).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterSpec {
    /// Term files whose terms block.
    pub block: Vec<PathBuf>,
    /// Term files whose terms are masked.
    pub mask: Vec<PathBuf>,
    /// Term files whose terms are flagged.
    pub flag: Vec<PathBuf>,
    /// Regex rules.
    pub regex: Vec<RegexRule>,
}

impl FilterSpec {
    /// Whether no rule is configured.
    pub fn is_empty(&self) -> bool {
        self.block.is_empty()
            && self.mask.is_empty()
            && self.flag.is_empty()
            && self.regex.is_empty()
    }

    /// Every term file with its action.
    fn files(&self) -> impl Iterator<Item = (&PathBuf, Action)> {
        self.block
            .iter()
            .map(|p| (p, Action::Block))
            .chain(self.mask.iter().map(|p| (p, Action::Mask)))
            .chain(self.flag.iter().map(|p| (p, Action::Flag)))
    }
}

/// Why the rules could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// A term file could not be read (or is not UTF-8).
    #[error("filter term file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS's or the decoder's reason.
        error: String,
    },
    /// A regex does not compile within the limits.
    #[error("filter regex {id:?}: {error}")]
    Regex {
        /// The rule's id.
        id: String,
        /// The compiler's reason.
        error: String,
    },
    /// More than [`MAX_REGEXES`] regexes.
    #[error(
        "filter: {0} regexes, at most {MAX_REGEXES} are allowed (put plain terms in term files)"
    )]
    TooManyRegexes(usize),
    /// The automaton could not be built.
    #[error("filter: building the term matcher: {0}")]
    Build(String),
}

/// One match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The rule's id (`FILE:LINE` or the regex's id).
    pub rule: Arc<str>,
    /// Its action.
    pub action: Action,
    /// The matched bytes in the original text.
    pub span: std::ops::Range<usize>,
}

/// Every match in one text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The matches, in order of their end.
    pub hits: Vec<Hit>,
}

impl Verdict {
    /// The strongest action among the matches (`None`: nothing matched).
    pub fn action(&self) -> Option<Action> {
        self.hits.iter().map(|h| h.action).max()
    }

    /// The distinct ids of the rules that matched with `action`, in first-match order.
    pub fn rules(&self, action: Action) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for h in self.hits.iter().filter(|h| h.action == action) {
            if !out.contains(&&*h.rule) {
                out.push(&h.rule);
            }
        }
        out
    }

    /// `text` with every character of a mask (or block) match replaced by [`MASK`].
    pub fn masked(&self, text: &str) -> String {
        self.masked_prefix(text, text.len())
    }

    /// `text[..cut]` masked as [`masked`](Self::masked) does (a match reaching past `cut`
    /// is masked up to it).
    pub fn masked_prefix(&self, text: &str, cut: usize) -> String {
        let text = &text[..cut];
        let mut spans: Vec<_> = self
            .hits
            .iter()
            .filter(|h| h.action >= Action::Mask && h.span.start < cut)
            .map(|h| h.span.start..h.span.end.min(cut))
            .collect();
        if spans.is_empty() {
            return text.to_string();
        }
        spans.sort_by_key(|s| s.start);
        let mut out = String::with_capacity(text.len() + 8);
        let mut at = 0;
        for s in spans {
            let start = s.start.max(at);
            if start >= s.end {
                continue;
            }
            out.push_str(&text[at..start]);
            out.extend(text[start..s.end].chars().map(|_| MASK));
            at = s.end;
        }
        out.push_str(&text[at..]);
        out
    }
}

#[derive(Debug)]
struct TermRule {
    rule: Arc<str>,
    action: Action,
}

/// The compiled rules.
#[derive(Debug, Default)]
pub struct ContentFilter {
    terms: Option<AhoCorasick>,
    term_rules: Vec<TermRule>,
    regexes: Vec<(Arc<str>, Action, Regex)>,
    holdback: usize,
}

impl ContentFilter {
    /// A filter with no rules (every text passes).
    pub fn none() -> ContentFilter {
        ContentFilter::default()
    }

    /// Reads the term files and compiles the rules of `spec`.
    ///
    /// # Errors
    /// [`FilterError`]: an unreadable file, a bad or oversized regex, too many regexes.
    pub fn load(spec: &FilterSpec) -> Result<ContentFilter, FilterError> {
        let mut lists = Vec::new();
        for (path, action) in spec.files() {
            let text = std::fs::read_to_string(path).map_err(|e| FilterError::Read {
                path: path.clone(),
                error: e.to_string(),
            })?;
            lists.push((file_label(path), action, text));
        }
        ContentFilter::build(
            lists.iter().map(|(l, a, t)| (l.as_str(), *a, t.as_str())),
            &spec.regex,
        )
    }

    /// Compiles term lists given as `(label, action, text)` (the text holds one term per
    /// line; rule ids are `label:LINE`) and regex rules.
    ///
    /// # Errors
    /// As [`load`](Self::load), less the reading.
    pub fn build<'a>(
        lists: impl IntoIterator<Item = (&'a str, Action, &'a str)>,
        regex: &[RegexRule],
    ) -> Result<ContentFilter, FilterError> {
        // Normalised term → index into term_rules (the strongest action wins).
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut patterns: Vec<String> = Vec::new();
        let mut term_rules: Vec<TermRule> = Vec::new();
        let mut longest = 0;
        for (label, action, text) in lists {
            let text = text.strip_prefix('\u{feff}').unwrap_or(text);
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let term = normalize(line);
                let term = term.trim();
                if term.is_empty() {
                    continue;
                }
                let rule = TermRule {
                    rule: format!("{label}:{}", n + 1).into(),
                    action,
                };
                match index.get(term) {
                    Some(&i) if term_rules[i].action >= action => {}
                    Some(&i) => term_rules[i] = rule,
                    None => {
                        longest = longest.max(term.chars().count());
                        index.insert(term.to_string(), patterns.len());
                        patterns.push(term.to_string());
                        term_rules.push(rule);
                    }
                }
            }
        }
        if regex.len() > MAX_REGEXES {
            return Err(FilterError::TooManyRegexes(regex.len()));
        }
        let mut regexes = Vec::with_capacity(regex.len());
        for r in regex {
            let re = RegexBuilder::new(&r.pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| FilterError::Regex {
                    id: r.id.clone(),
                    error: e.to_string(),
                })?;
            regexes.push((Arc::from(r.id.as_str()), r.action, re));
        }
        let terms = if patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .build(&patterns)
                    .map_err(|e| FilterError::Build(e.to_string()))?,
            )
        };
        let mut holdback = longest.saturating_sub(1);
        if !regexes.is_empty() {
            holdback = holdback.max(REGEX_HOLDBACK_CHARS);
        }
        Ok(ContentFilter {
            terms,
            term_rules,
            regexes,
            holdback,
        })
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.terms.is_none() && self.regexes.is_empty()
    }

    /// Number of distinct terms and of regexes.
    pub fn sizes(&self) -> (usize, usize) {
        (self.term_rules.len(), self.regexes.len())
    }

    /// Characters of an unfinished answer held back: one less than the longest term, at
    /// least [`REGEX_HOLDBACK_CHARS`] when there are regexes.
    pub fn holdback(&self) -> usize {
        self.holdback
    }

    /// Every match in `text` (normalised first; spans refer to `text`).
    pub fn check(&self, text: &str) -> Verdict {
        if self.is_empty() {
            return Verdict::default();
        }
        self.check_normalized(&Normalized::new(text))
    }

    fn check_normalized(&self, n: &Normalized) -> Verdict {
        let mut hits = Vec::new();
        if let Some(ac) = &self.terms {
            for m in ac.find_overlapping_iter(&n.text) {
                let r = &self.term_rules[m.pattern().as_usize()];
                hits.push(Hit {
                    rule: r.rule.clone(),
                    action: r.action,
                    span: n.original(m.start(), m.end()),
                });
            }
        }
        for (id, action, re) in &self.regexes {
            for m in re.find_iter(&n.text).filter(|m| !m.is_empty()) {
                hits.push(Hit {
                    rule: id.clone(),
                    action: *action,
                    span: n.original(m.start(), m.end()),
                });
            }
        }
        hits.sort_by_key(|h| (h.span.end, h.span.start));
        Verdict { hits }
    }

    /// What may be shown of the answer `text` so far: masked, and — unless `finished` —
    /// without its last [`holdback`](Self::holdback) characters; with the verdict over the
    /// whole text (the caller stops on [`Action::Block`], and then shows nothing of it).
    pub fn visible(&self, text: &str, finished: bool) -> (String, Verdict) {
        if self.is_empty() {
            return (text.to_string(), Verdict::default());
        }
        let n = Normalized::new(text);
        let verdict = self.check_normalized(&n);
        let cut = if finished {
            text.len()
        } else {
            n.original_start_of_last(self.holdback, text.len())
        };
        (verdict.masked_prefix(text, cut), verdict)
    }
}

/// A term file's label in rule ids: its file name.
fn file_label(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The filter in force, swapped whole on reload (SIGHUP, config import); turns take the
/// current one at their start.
#[derive(Debug, Clone)]
pub struct FilterHandle {
    spec: Arc<FilterSpec>,
    current: Arc<RwLock<Arc<ContentFilter>>>,
}

impl FilterHandle {
    /// Loads `spec`.
    ///
    /// # Errors
    /// As [`ContentFilter::load`].
    pub fn load(spec: FilterSpec) -> Result<FilterHandle, FilterError> {
        let f = ContentFilter::load(&spec)?;
        Ok(FilterHandle {
            spec: Arc::new(spec),
            current: Arc::new(RwLock::new(Arc::new(f))),
        })
    }

    /// A handle with no rules.
    pub fn none() -> FilterHandle {
        FilterHandle {
            spec: Arc::default(),
            current: Arc::new(RwLock::new(Arc::new(ContentFilter::none()))),
        }
    }

    /// The filter in force.
    pub fn current(&self) -> Arc<ContentFilter> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the term files again; on an error the filter in force stays.
    ///
    /// # Errors
    /// As [`ContentFilter::load`].
    pub fn reload(&self) -> Result<(usize, usize), FilterError> {
        let f = ContentFilter::load(&self.spec)?;
        let sizes = f.sizes();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(f);
        Ok(sizes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(block: &str, mask: &str, flag: &str) -> ContentFilter {
        ContentFilter::build(
            [
                ("block.txt", Action::Block, block),
                ("mask.txt", Action::Mask, mask),
                ("flag.txt", Action::Flag, flag),
            ],
            &[],
        )
        .unwrap()
    }

    #[test]
    fn terms_match_after_normalisation_with_rule_ids() {
        let f = filter("# comment\n\n机密项目\nSecret Plan\n", "手机号\n", "竞品\n");
        assert_eq!(f.sizes(), (4, 0));
        let v = f.check("请介绍ＳＥＣＲＥＴ\u{200b} plan和机密项目");
        assert_eq!(v.action(), Some(Action::Block));
        // Line numbers count the comment and the blank line.
        assert_eq!(v.rules(Action::Block), vec!["block.txt:4", "block.txt:3"]);
        let v = f.check("我的手机号是多少，和竞品比呢");
        assert_eq!(v.action(), Some(Action::Mask));
        assert_eq!(v.rules(Action::Flag), vec!["flag.txt:1"]);
        assert_eq!(
            v.masked("我的手机号是多少，和竞品比呢"),
            "我的＊＊＊是多少，和竞品比呢"
        );
        assert_eq!(f.check("nothing here").action(), None);
    }

    #[test]
    fn a_term_listed_twice_keeps_its_strongest_action() {
        let f = filter("alpha\n", "alpha\nbeta\n", "BETA\n");
        let v = f.check("alpha beta");
        assert_eq!(v.rules(Action::Block), vec!["block.txt:1"]);
        assert_eq!(v.rules(Action::Mask), vec!["mask.txt:2"]);
        assert!(v.rules(Action::Flag).is_empty());
    }

    #[test]
    fn thousands_of_terms() {
        let list: String = (0..5000).map(|i| format!("禁词{i:05}\n")).collect();
        let f = filter(&list, "", "");
        assert_eq!(f.sizes().0, 5000);
        let v = f.check("前文禁词04999后文");
        assert_eq!(v.rules(Action::Block), vec!["block.txt:5000"]);
        assert_eq!(f.check("禁词5").action(), None);
        // The longest term has 7 characters: hold back 6.
        assert_eq!(f.holdback(), 6);
    }

    #[test]
    fn overlapping_mask_matches_mask_their_union() {
        let f = filter("", "abc\nbcd\n", "");
        let v = f.check("xabcdx");
        assert_eq!(v.masked("xabcdx"), "x＊＊＊＊x");
    }

    #[test]
    fn regexes_are_bounded() {
        let phone = RegexRule {
            id: "phone".into(),
            pattern: r"1[3-9]\d{9}".into(),
            action: Action::Mask,
        };
        let f = ContentFilter::build([], std::slice::from_ref(&phone)).unwrap();
        // Full-width digits are matched too.
        let text = "call １３８００１３８０００ now";
        let v = f.check(text);
        assert_eq!(v.rules(Action::Mask), vec!["phone"]);
        assert_eq!(v.masked(text), "call ＊＊＊＊＊＊＊＊＊＊＊ now");
        assert_eq!(f.holdback(), REGEX_HOLDBACK_CHARS);
        let many = vec![phone.clone(); MAX_REGEXES + 1];
        assert!(matches!(
            ContentFilter::build([], &many),
            Err(FilterError::TooManyRegexes(_))
        ));
        let huge = RegexRule {
            id: "huge".into(),
            pattern: r"\w{1000}\w{1000}\w{1000}".into(),
            action: Action::Flag,
        };
        let e = ContentFilter::build([], &[huge]).unwrap_err();
        assert!(e.to_string().contains("\"huge\""), "{e}");
        let bad = RegexRule {
            id: "bad".into(),
            pattern: "(".into(),
            action: Action::Flag,
        };
        assert!(ContentFilter::build([], &[bad]).is_err());
    }

    /// Every prefix of an answer, as tokens arrive: no frame ever shows a blocked or masked
    /// term whole, whatever the split.
    #[test]
    fn streamed_text_never_shows_a_term_split_across_tokens() {
        let f = filter("机密项目\n", "password\n", "");
        let answer = "好的。这是机密项目的说明，密码 PassWord 在这里。";
        let chars: Vec<(usize, char)> = answer.char_indices().collect();
        let mut blocked_at = None;
        for (k, &(i, c)) in chars.iter().enumerate() {
            let so_far = &answer[..i + c.len_utf8()];
            let (shown, v) = f.visible(so_far, false);
            assert!(
                answer.starts_with(&shown) || shown.contains(MASK),
                "{shown}"
            );
            assert!(!normalize(&shown).contains("机密项目"), "{shown}");
            assert!(!normalize(&shown).contains("password"), "{shown}");
            // Held back: at most holdback() characters (7: the longest term, `password`,
            // has 8).
            assert!(so_far.chars().count() - shown.chars().count() <= f.holdback());
            if v.action() == Some(Action::Block) && blocked_at.is_none() {
                blocked_at = Some(k);
            }
        }
        // Blocked exactly when the term's last character arrived.
        let end = answer.find("机密项目").unwrap() + "机密项目".len();
        assert_eq!(
            chars[blocked_at.unwrap()].0 + chars[blocked_at.unwrap()].1.len_utf8(),
            end
        );
        // Finished: nothing held back, the mask applied.
        let f = filter("", "password\n", "");
        let (shown, _) = f.visible("密码 PassWord 在这里", true);
        assert_eq!(shown, "密码 ＊＊＊＊＊＊＊＊ 在这里");
        let (shown, _) = f.visible("密码 PassWo", false);
        assert_eq!(shown, "密码");
    }

    #[test]
    fn load_reads_files_and_reload_swaps() {
        let dir = std::env::temp_dir().join(format!("wecom-edge-filter-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("words.txt");
        std::fs::write(&path, "\u{feff}甲\n").unwrap();
        let spec = FilterSpec {
            block: vec![path.clone()],
            ..Default::default()
        };
        let h = FilterHandle::load(spec).unwrap();
        assert_eq!(
            h.current().check("甲").rules(Action::Block),
            vec!["words.txt:1"]
        );
        std::fs::write(&path, "乙\n丙\n").unwrap();
        assert_eq!(h.reload().unwrap(), (2, 0));
        assert_eq!(h.current().check("甲").action(), None);
        assert_eq!(
            h.current().check("丙").rules(Action::Block),
            vec!["words.txt:2"]
        );
        // A file gone: the reload fails, the rules in force stay.
        std::fs::remove_file(&path).unwrap();
        let e = h.reload().unwrap_err();
        assert!(e.to_string().contains("words.txt"), "{e}");
        assert_eq!(h.current().sizes(), (2, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
