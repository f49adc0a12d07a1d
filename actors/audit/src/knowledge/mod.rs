//! Company knowledge: documents cut into chunks in the box's SQLite (`knowledge.sqlite3` in the
//! data directory, beside the audit database: the chunks can always be imported again, the
//! chain cannot, so neither file's recovery touches the other), retrieved by BM25 over an
//! FTS5 index of jieba-segmented words.
//!
//! Tables: `kb_doc` (one row per document: its name — the file name, or its path inside an
//! imported folder — title, SHA-256, where it came from), `kb_chunk` (document, position,
//! section, text), and `kb_fts`, an FTS5 table whose rowid is the chunk's id, with two
//! columns: the title and section's words, and the text's words ([`segment`]). Ranking is
//! FTS5's `bm25()` with the heading column weighted 2 : 1 (a question naming a document's
//! subject finds it even where its body says it differently). Source: SQLite FTS5 §5.1.1
//! (<https://sqlite.org/fts5.html#the_bm25_function>).
//!
//! Writers are the `wecom-edge kb` commands and the box's start-up import of its knowledge
//! folder; readers are the turns' retrieve stage. WAL with a 5 s busy timeout lets a `kb add`
//! run while the box answers.

mod chunk;
mod extract;
pub mod segment;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use chunk::{Chunk, CHUNK_CHARS};
pub use extract::{Kind, MAX_FILE_BYTES};

/// The knowledge database's file name in the data directory.
pub const KB_FILE: &str = "knowledge.sqlite3";

/// Characters of a chunk shown as a search result's snippet.
pub const SNIPPET_CHARS: usize = 120;

/// What went wrong with the knowledge base or a document.
#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    /// A file or directory could not be read or created.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A file this box cannot read, and what to do about it.
    #[error("{path}: {why}")]
    Unsupported {
        /// The path.
        path: String,
        /// Why, and what would work.
        why: String,
    },
    /// A document with no text.
    #[error("{0}: no text in it")]
    Empty(String),
    /// No document of that name.
    #[error("no document named {0:?} (see `wecom-edge kb list`)")]
    NoSuchDocument(String),
    /// SQLite.
    #[error("knowledge database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// One stored document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Document {
    /// Its name: the file name, or its path inside the imported folder.
    pub doc: String,
    /// Its first level-1 heading, else the file's stem.
    pub title: String,
    /// Its chunks.
    pub chunks: usize,
    /// Its size (bytes of the file).
    pub bytes: u64,
    /// `cli` (`wecom-edge kb add`) or `dir` (the configured knowledge folder).
    pub source: String,
    /// When it was stored (unix ms).
    pub added_ms: i64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

/// What [`Knowledge::add_file`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// A new document.
    New(Document),
    /// A document of that name, replaced (its content had changed).
    Updated(Document),
    /// A document of that name with the same content: nothing written.
    Unchanged(Document),
}

impl Added {
    /// The document.
    pub fn document(&self) -> &Document {
        match self {
            Added::New(d) | Added::Updated(d) | Added::Unchanged(d) => d,
        }
    }
}

/// [`Knowledge::retrieve`]'s default floor: a chunk is kept when it scores at least this
/// fraction of the best chunk's BM25 score.
pub const MIN_RELATIVE_SCORE: f64 = 0.3;

/// One retrieved chunk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// The document's name.
    pub doc: String,
    /// The document's title.
    pub title: String,
    /// The chunk's section (nearest heading; may be empty).
    pub section: String,
    /// Its BM25 score (higher is better; FTS5's `bm25()` negated).
    pub score: f64,
    /// Up to [`SNIPPET_CHARS`] characters of the chunk around the first query word found.
    pub snippet: String,
    /// The chunk's position in its document (0-based).
    pub position: usize,
    /// The chunk's whole text.
    #[serde(skip)]
    pub text: String,
}

/// What [`Knowledge::sync_dir`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Documents new in the folder.
    pub added: Vec<String>,
    /// Documents whose file changed.
    pub updated: Vec<String>,
    /// Documents whose file is gone from the folder.
    pub removed: Vec<String>,
    /// Unchanged documents.
    pub unchanged: usize,
    /// Files not imported, with why.
    pub failed: Vec<(String, String)>,
}

/// The knowledge base (one SQLite connection).
pub struct Knowledge {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Knowledge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Knowledge")
            .field("path", &self.path)
            .finish()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kb_doc (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  title TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  source TEXT NOT NULL,
  added_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kb_chunk (
  id INTEGER PRIMARY KEY,
  doc INTEGER NOT NULL REFERENCES kb_doc(id),
  pos INTEGER NOT NULL,
  section TEXT NOT NULL,
  text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS kb_chunk_doc ON kb_chunk(doc);
CREATE VIRTUAL TABLE IF NOT EXISTS kb_fts USING fts5(heading, body, tokenize = 'unicode61');
";

impl Knowledge {
    /// Opens (creating) `dir/knowledge.sqlite3`: WAL, 5 s busy timeout, schema created.
    ///
    /// # Errors
    /// [`KnowledgeError::Io`] creating `dir`; [`KnowledgeError::Sqlite`].
    pub fn open(dir: &Path) -> Result<Knowledge, KnowledgeError> {
        std::fs::create_dir_all(dir).map_err(|source| KnowledgeError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join(KB_FILE);
        let conn = Connection::open(&path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Knowledge { conn, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores the document at `path` under `name` (replacing one of that name whose content
    /// differs); `source` is `cli` or `dir`.
    ///
    /// # Errors
    /// [`KnowledgeError`]: unreadable or unsupported file, no text, SQLite.
    pub fn add_file(
        &mut self,
        path: &Path,
        name: &str,
        source: &str,
    ) -> Result<Added, KnowledgeError> {
        let (text, bytes) = extract::read(path)?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(name)
            .to_string();
        self.add_text(name, &stem, &text, &bytes, source)
    }

    /// Stores a document held in `bytes` (an upload) under `name`, whose extension says how
    /// it is read (as for a file); `source` is `console`. Nothing touches the filesystem but
    /// the knowledge database.
    ///
    /// # Errors
    /// [`KnowledgeError`]: unsupported or unreadable kind, too large, no text, SQLite.
    pub fn add_bytes(
        &mut self,
        name: &str,
        bytes: &[u8],
        source: &str,
    ) -> Result<Added, KnowledgeError> {
        let text = extract::of_bytes(name, bytes)?;
        let stem = std::path::Path::new(name)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(name)
            .to_string();
        self.add_text(name, &stem, &text, bytes, source)
    }

    /// Stores `text` as document `name` (`fallback_title` where it has no level-1 heading;
    /// `raw` is what its SHA-256 and size are taken of).
    ///
    /// # Errors
    /// [`KnowledgeError::Empty`]; [`KnowledgeError::Sqlite`].
    pub fn add_text(
        &mut self,
        name: &str,
        fallback_title: &str,
        text: &str,
        raw: &[u8],
        source: &str,
    ) -> Result<Added, KnowledgeError> {
        let sha256 = hex(&Sha256::digest(raw));
        if let Some(d) = self.document(name)? {
            if d.sha256 == sha256 {
                return Ok(Added::Unchanged(d));
            }
        }
        let chunks = chunk::split(text);
        if chunks.is_empty() {
            return Err(KnowledgeError::Empty(name.to_string()));
        }
        let title = chunk::title(text, fallback_title);
        let tx = self.conn.transaction()?;
        let existed = delete_in(&tx, name)?;
        let added_ms = crate::now_ms();
        tx.execute(
            "INSERT INTO kb_doc(name, title, sha256, bytes, source, added_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![name, title, sha256, raw.len() as i64, source, added_ms],
        )?;
        let doc = tx.last_insert_rowid();
        for (pos, c) in chunks.iter().enumerate() {
            tx.execute(
                "INSERT INTO kb_chunk(doc, pos, section, text) VALUES (?1, ?2, ?3, ?4)",
                params![doc, pos as i64, c.section, c.text],
            )?;
            let id = tx.last_insert_rowid();
            let heading = segment::words(&format!("{title} {}", c.section)).join(" ");
            let body = segment::words(&c.text).join(" ");
            tx.execute(
                "INSERT INTO kb_fts(rowid, heading, body) VALUES (?1, ?2, ?3)",
                params![id, heading, body],
            )?;
        }
        tx.commit()?;
        let d = Document {
            doc: name.to_string(),
            title,
            chunks: chunks.len(),
            bytes: raw.len() as u64,
            source: source.to_string(),
            added_ms,
            sha256,
        };
        Ok(if existed {
            Added::Updated(d)
        } else {
            Added::New(d)
        })
    }

    /// Removes document `name`.
    ///
    /// # Errors
    /// [`KnowledgeError::NoSuchDocument`]; [`KnowledgeError::Sqlite`].
    pub fn remove(&mut self, name: &str) -> Result<(), KnowledgeError> {
        let tx = self.conn.transaction()?;
        if !delete_in(&tx, name)? {
            return Err(KnowledgeError::NoSuchDocument(name.to_string()));
        }
        tx.commit()?;
        Ok(())
    }

    /// Document `name`, if stored.
    ///
    /// # Errors
    /// [`KnowledgeError::Sqlite`].
    pub fn document(&self, name: &str) -> Result<Option<Document>, KnowledgeError> {
        Ok(self
            .conn
            .query_row(&format!("{DOC_SELECT} WHERE d.name = ?1"), [name], doc_row)
            .optional()?)
    }

    /// Every document, by name.
    ///
    /// # Errors
    /// [`KnowledgeError::Sqlite`].
    pub fn list(&self) -> Result<Vec<Document>, KnowledgeError> {
        let mut st = self
            .conn
            .prepare(&format!("{DOC_SELECT} ORDER BY d.name"))?;
        let rows = st.query_map([], doc_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many documents are stored.
    ///
    /// # Errors
    /// [`KnowledgeError::Sqlite`].
    pub fn len(&self) -> Result<usize, KnowledgeError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM kb_doc", [], |r| r.get(0))?;
        Ok(n as usize)
    }

    /// Whether no document is stored.
    ///
    /// # Errors
    /// [`KnowledgeError::Sqlite`].
    pub fn is_empty(&self) -> Result<bool, KnowledgeError> {
        Ok(self.len()? == 0)
    }

    /// The `limit` chunks that best match `query` (any of its words; BM25, best first). A
    /// query of stop words only finds nothing.
    ///
    /// # Errors
    /// [`KnowledgeError::Sqlite`].
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<Hit>, KnowledgeError> {
        let Some(expr) = segment::any_of(query) else {
            return Ok(Vec::new());
        };
        let words: Vec<String> = segment::words(query);
        let mut st = self.conn.prepare_cached(
            "SELECT d.name, d.title, c.section, c.pos, c.text, bm25(kb_fts, 2.0, 1.0) AS s
             FROM kb_fts JOIN kb_chunk c ON c.id = kb_fts.rowid JOIN kb_doc d ON d.id = c.doc
             WHERE kb_fts MATCH ?1 ORDER BY s LIMIT ?2",
        )?;
        let rows = st.query_map(params![expr, limit as i64], |r| {
            let text: String = r.get(4)?;
            Ok(Hit {
                doc: r.get(0)?,
                title: r.get(1)?,
                section: r.get(2)?,
                position: r.get::<_, i64>(3)? as usize,
                score: -r.get::<_, f64>(5)?,
                snippet: snippet(&text, &words),
                text,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// What a turn uses for `query`: [`Knowledge::search`]'s best `top_k` chunks, keeping
    /// those scoring above 0 and at least `min_relative_score` × the best one's (so a question
    /// that matches one document well does not drag in chunks sharing one common word with
    /// it; [`MIN_RELATIVE_SCORE`] by default). `kb search` and the retrieve stage both call it.
    ///
    /// # Errors
    /// [`KnowledgeError::Sqlite`].
    pub fn retrieve(
        &self,
        query: &str,
        top_k: usize,
        min_relative_score: f64,
    ) -> Result<Vec<Hit>, KnowledgeError> {
        let hits = self.search(query, top_k)?;
        let best = hits.first().map_or(0.0, |h| h.score);
        Ok(hits
            .into_iter()
            .filter(|h| h.score > 0.0 && h.score >= min_relative_score * best)
            .collect())
    }

    /// Makes the documents imported from `dir` (source `dir`) what the folder holds now:
    /// new and changed files stored, documents whose file is gone removed; each document
    /// named by its path inside `dir`. Hidden files and folders are skipped; a file that
    /// cannot be imported is reported and the rest go on.
    ///
    /// # Errors
    /// [`KnowledgeError::Io`] when `dir` cannot be listed; [`KnowledgeError::Sqlite`].
    pub fn sync_dir(&mut self, dir: &Path) -> Result<SyncReport, KnowledgeError> {
        let mut files = Vec::new();
        walk(dir, dir, &mut files)?;
        files.sort();
        let mut report = SyncReport::default();
        let mut present = HashSet::new();
        for (name, path) in files {
            present.insert(name.clone());
            match self.add_file(&path, &name, "dir") {
                Ok(Added::New(_)) => report.added.push(name),
                Ok(Added::Updated(_)) => report.updated.push(name),
                Ok(Added::Unchanged(_)) => report.unchanged += 1,
                Err(e) => report.failed.push((name, e.to_string())),
            }
        }
        for d in self.list()? {
            if d.source == "dir" && !present.contains(&d.doc) {
                self.remove(&d.doc)?;
                report.removed.push(d.doc);
            }
        }
        Ok(report)
    }
}

const DOC_SELECT: &str =
    "SELECT d.name, d.title, (SELECT count(*) FROM kb_chunk c WHERE c.doc = d.id),
    d.bytes, d.source, d.added_ms, d.sha256 FROM kb_doc d";

fn doc_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Document> {
    Ok(Document {
        doc: r.get(0)?,
        title: r.get(1)?,
        chunks: r.get::<_, i64>(2)? as usize,
        bytes: r.get::<_, i64>(3)? as u64,
        source: r.get(4)?,
        added_ms: r.get(5)?,
        sha256: r.get(6)?,
    })
}

/// Deletes document `name` with its chunks and index rows; whether it existed.
fn delete_in(tx: &rusqlite::Transaction<'_>, name: &str) -> rusqlite::Result<bool> {
    let Some(id) = tx
        .query_row("SELECT id FROM kb_doc WHERE name = ?1", [name], |r| {
            r.get::<_, i64>(0)
        })
        .optional()?
    else {
        return Ok(false);
    };
    tx.execute(
        "DELETE FROM kb_fts WHERE rowid IN (SELECT id FROM kb_chunk WHERE doc = ?1)",
        [id],
    )?;
    tx.execute("DELETE FROM kb_chunk WHERE doc = ?1", [id])?;
    tx.execute("DELETE FROM kb_doc WHERE id = ?1", [id])?;
    Ok(true)
}

/// Files under `dir` whose kind is known or not (unknown kinds are reported by the import),
/// as (path inside `root` with `/`, path).
fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<(), KnowledgeError> {
    let io = |e| KnowledgeError::Io {
        path: dir.display().to_string(),
        source: e,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let ft = entry.file_type().map_err(io)?;
        if ft.is_dir() {
            walk(root, &path, out)?;
        } else if ft.is_file() {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push((rel, path));
        }
    }
    Ok(())
}

/// Up to [`SNIPPET_CHARS`] characters of `text` from a little before the first of `words`
/// found in it (its start when none is).
fn snippet(text: &str, words: &[String]) -> String {
    let chars: Vec<char> = text.chars().collect();
    let lower: Vec<char> = chars
        .iter()
        .map(|c| c.to_lowercase().next().unwrap_or(*c))
        .collect();
    let at = words
        .iter()
        .filter_map(|w| {
            let w: Vec<char> = w.chars().collect();
            (!w.is_empty())
                .then(|| lower.windows(w.len()).position(|x| x == w.as_slice()))
                .flatten()
        })
        .min()
        .unwrap_or(0);
    let start = at.saturating_sub(SNIPPET_CHARS / 4);
    let end = (start + SNIPPET_CHARS).min(chars.len());
    let mut s: String = chars[start..end]
        .iter()
        .map(|&c| if c == '\n' { ' ' } else { c })
        .collect();
    if start > 0 {
        s.insert(0, '…');
    }
    if end < chars.len() {
        s.push('…');
    }
    s
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("wecom-edge-kb-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const LEAVE: &str = "# 请假制度\n\n员工每年享有五天带薪年假，需提前三天在系统中申请。\n\n## 病假\n\n病假需提供医院证明。\n";
    const INDEX: &str =
        "# 数据库索引规范\n\n所有查询频繁的字段必须建立索引；联合索引遵循最左前缀原则。\n";
    const VPN: &str =
        "VPN access\n\nConnect to vpn.example.com with your WeCom account and the one-time code.\n";

    #[test]
    fn chinese_and_english_questions_find_the_right_document() {
        let dir = tmp();
        let mut kb = Knowledge::open(&dir).unwrap();
        assert!(kb.is_empty().unwrap());
        for (name, text) in [("leave.md", LEAVE), ("index.md", INDEX), ("vpn.txt", VPN)] {
            let a = kb
                .add_text(name, "fallback", text, text.as_bytes(), "cli")
                .unwrap();
            assert!(matches!(a, Added::New(_)), "{a:?}");
        }
        let hits = kb.search("联合索引怎么建？", 5).unwrap();
        assert_eq!(hits[0].doc, "index.md", "{hits:?}");
        assert_eq!(hits[0].title, "数据库索引规范");
        assert!(hits[0].snippet.contains("联合索引"), "{}", hits[0].snippet);
        let hits = kb.search("我想请年假", 5).unwrap();
        assert_eq!(hits[0].doc, "leave.md", "{hits:?}");
        assert_eq!(hits[0].section, "请假制度");
        let hits = kb.search("How do I connect to the VPN?", 5).unwrap();
        assert_eq!(hits[0].doc, "vpn.txt", "{hits:?}");
        assert_eq!(hits[0].title, "fallback");
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(kb.search("什么是？", 5).unwrap().is_empty());
        // "病假需要什么证明" matches the leave document well; index.md shares no word with it
        // and vpn.txt none: search may rank more, retrieve keeps only the strong match.
        let all = kb.search("年假和病假需要什么证明？", 5).unwrap();
        let kept = kb
            .retrieve("年假和病假需要什么证明？", 5, MIN_RELATIVE_SCORE)
            .unwrap();
        assert!(
            !kept.is_empty() && kept.iter().all(|h| h.doc == "leave.md"),
            "{kept:?}"
        );
        assert!(kept.len() <= all.len());
        assert!(kept
            .iter()
            .all(|h| h.score >= MIN_RELATIVE_SCORE * kept[0].score));
        assert_eq!(
            kb.retrieve("年假", 1, 0.0).unwrap().len(),
            1,
            "top_k bounds it"
        );
        assert!(kb.search("量子计算", 5).unwrap().is_empty());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn same_content_is_unchanged_new_content_replaces_and_remove_forgets() {
        let dir = tmp();
        let mut kb = Knowledge::open(&dir).unwrap();
        kb.add_text("leave.md", "x", LEAVE, LEAVE.as_bytes(), "cli")
            .unwrap();
        let a = kb
            .add_text("leave.md", "x", LEAVE, LEAVE.as_bytes(), "cli")
            .unwrap();
        assert!(matches!(a, Added::Unchanged(_)));
        let a = kb
            .add_text("leave.md", "x", INDEX, INDEX.as_bytes(), "cli")
            .unwrap();
        assert!(matches!(a, Added::Updated(_)));
        assert!(
            kb.search("年假", 5).unwrap().is_empty(),
            "the old chunks are gone from the index"
        );
        assert_eq!(kb.search("索引", 5).unwrap()[0].doc, "leave.md");
        assert_eq!(kb.list().unwrap().len(), 1);
        kb.remove("leave.md").unwrap();
        assert!(kb.is_empty().unwrap());
        assert!(kb.search("索引", 5).unwrap().is_empty());
        assert!(matches!(
            kb.remove("leave.md"),
            Err(KnowledgeError::NoSuchDocument(_))
        ));
        let e = kb
            .add_text("blank.md", "x", "\n \n", b"\n \n", "cli")
            .unwrap_err();
        assert!(matches!(e, KnowledgeError::Empty(_)));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_folder_is_mirrored_and_cli_documents_are_left_alone() {
        let dir = tmp();
        let folder = dir.join("knowledge");
        std::fs::create_dir_all(folder.join("hr")).unwrap();
        std::fs::write(folder.join("hr/leave.md"), LEAVE).unwrap();
        std::fs::write(folder.join("index.md"), INDEX).unwrap();
        std::fs::write(folder.join("manual.pdf"), b"%PDF-1.7").unwrap();
        std::fs::write(folder.join(".hidden.md"), INDEX).unwrap();
        let mut kb = Knowledge::open(&dir.join("data")).unwrap();
        kb.add_text("vpn.txt", "vpn", VPN, VPN.as_bytes(), "cli")
            .unwrap();
        let r = kb.sync_dir(&folder).unwrap();
        assert_eq!(r.added, ["hr/leave.md", "index.md"]);
        assert_eq!(r.failed.len(), 1);
        assert!(
            r.failed[0].0 == "manual.pdf" && r.failed[0].1.contains("PDF"),
            "{r:?}"
        );
        std::fs::remove_file(folder.join("index.md")).unwrap();
        std::fs::write(folder.join("hr/leave.md"), INDEX).unwrap();
        let r = kb.sync_dir(&folder).unwrap();
        assert_eq!(
            (r.updated.as_slice(), r.removed.as_slice()),
            (
                &["hr/leave.md".to_string()][..],
                &["index.md".to_string()][..]
            )
        );
        let names: Vec<String> = kb.list().unwrap().into_iter().map(|d| d.doc).collect();
        assert_eq!(names, ["hr/leave.md", "vpn.txt"]);
        let r = kb.sync_dir(&folder).unwrap();
        assert_eq!(r.unchanged, 1);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_chinese_pdf_is_stored_and_found() {
        let dir = tmp();
        let pdf = dir.join("差旅.pdf");
        std::fs::write(
            &pdf,
            extract::tests::cid_pdf(&[
                &["差旅报销制度", "出差住宿标准：一线城市每晚不超过六百元。"],
                &["报销须在出差结束后三十天内提交。"],
            ]),
        )
        .unwrap();
        let mut kb = Knowledge::open(&dir.join("data")).unwrap();
        let a = kb.add_file(&pdf, "差旅.pdf", "cli").unwrap();
        assert_eq!(a.document().title, "差旅");
        let hits = kb
            .retrieve("出差住宿标准是多少？", 3, MIN_RELATIVE_SCORE)
            .unwrap();
        assert_eq!(hits[0].doc, "差旅.pdf", "{hits:?}");
        assert!(hits[0].text.contains("六百元"), "{:?}", hits[0].text);
        std::fs::remove_dir_all(dir).ok();
    }
}
