//! A document file's text: Markdown and plain text (UTF-8, with or without a BOM, else
//! GB18030 — the superset of GBK that Chinese Windows tools still save), and Word `.docx`
//! (its `word/document.xml`: paragraphs in order, Heading styles as Markdown headings, tables
//! cell by cell). Sources: ECMA-376 Part 1 §17.3 (paragraphs, runs, `w:t`, `w:tab`, `w:br`),
//! §17.7.2 (paragraph styles); the WHATWG Encoding Standard's gb18030 decoder.

use std::io::Read;
use std::path::Path;

use quick_xml::events::Event;

use super::KnowledgeError;

/// Largest document accepted (bytes on disk).
pub const MAX_FILE_BYTES: u64 = 32 << 20;

/// Largest `word/document.xml` read from a `.docx` (decompressed bytes: a zip bomb stops here).
const MAX_DOCX_XML: u64 = 64 << 20;

/// The file's kind by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `.md`, `.markdown`.
    Markdown,
    /// `.txt`, `.text`.
    Text,
    /// `.docx`.
    Docx,
}

impl Kind {
    /// The kind of `path`; an error names what is supported.
    ///
    /// # Errors
    /// [`KnowledgeError::Unsupported`].
    pub fn of(path: &Path) -> Result<Kind, KnowledgeError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            "md" | "markdown" => Ok(Kind::Markdown),
            "txt" | "text" => Ok(Kind::Text),
            "docx" => Ok(Kind::Docx),
            other => Err(KnowledgeError::Unsupported {
                path: path.display().to_string(),
                why: match other {
                    "pdf" => "PDF is not read yet: save it as .docx, .md or .txt".into(),
                    "doc" => "old Word .doc is not read: save it as .docx".into(),
                    _ => "only .md, .markdown, .txt, .text and .docx are read".into(),
                },
            }),
        }
    }
}

/// The text of the document at `path`.
///
/// # Errors
/// [`KnowledgeError`]: unsupported kind, too large, unreadable, not a valid `.docx`.
pub fn text(path: &Path) -> Result<String, KnowledgeError> {
    let kind = Kind::of(path)?;
    let io = |e: std::io::Error| KnowledgeError::Io {
        path: path.display().to_string(),
        source: e,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_FILE_BYTES {
        return Err(KnowledgeError::Unsupported {
            path: path.display().to_string(),
            why: format!("{len} bytes, over the {MAX_FILE_BYTES}-byte limit"),
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    match kind {
        Kind::Markdown | Kind::Text => Ok(decode(&bytes)),
        Kind::Docx => docx(&bytes).map_err(|why| KnowledgeError::Unsupported {
            path: path.display().to_string(),
            why: format!("not a readable .docx: {why}"),
        }),
    }
}

/// UTF-8 (a BOM dropped), else GB18030.
pub fn decode(bytes: &[u8]) -> String {
    let b = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => encoding_rs::GB18030.decode(b).0.into_owned(),
    }
}

/// The text of a `.docx` held in `bytes`.
fn docx(bytes: &[u8]) -> Result<String, String> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| e.to_string())?;
    let mut xml = Vec::new();
    zip.by_name("word/document.xml")
        .map_err(|e| format!("word/document.xml: {e}"))?
        .take(MAX_DOCX_XML)
        .read_to_end(&mut xml)
        .map_err(|e| e.to_string())?;
    document_xml(&xml)
}

/// Paragraphs of WordprocessingML, blank-line separated; `Heading N` / `Title` styles become
/// Markdown headings.
fn document_xml(xml: &[u8]) -> Result<String, String> {
    let mut r = quick_xml::Reader::from_reader(xml);
    let mut out = String::new();
    let mut para = String::new();
    let mut level = 0usize;
    let mut in_text = false;
    let mut buf = Vec::new();
    loop {
        match r.read_event_into(&mut buf).map_err(|e| e.to_string())? {
            Event::Start(e) if e.local_name().as_ref() == b"t" => in_text = true,
            Event::End(e) if e.local_name().as_ref() == b"t" => in_text = false,
            Event::Text(t) if in_text => {
                para.push_str(&t.unescape().map_err(|e| e.to_string())?);
            }
            Event::Empty(e) | Event::Start(e) => match e.local_name().as_ref() {
                b"tab" => para.push('\t'),
                b"br" | b"cr" => para.push('\n'),
                b"pStyle" => {
                    let val = e
                        .attributes()
                        .flatten()
                        .find(|a| a.key.local_name().as_ref() == b"val")
                        .map(|a| String::from_utf8_lossy(&a.value).to_ascii_lowercase())
                        .unwrap_or_default();
                    level = if val == "title" {
                        1
                    } else {
                        val.strip_prefix("heading")
                            .and_then(|n| n.trim().parse::<usize>().ok())
                            .map_or(0, |n| n.clamp(1, 6))
                    };
                }
                _ => {}
            },
            Event::End(e) if matches!(e.local_name().as_ref(), b"p" | b"tc") => {
                let p = para.trim();
                if !p.is_empty() {
                    if level > 0 {
                        out.push_str(&"#".repeat(level));
                        out.push(' ');
                    }
                    out.push_str(p);
                    out.push_str("\n\n");
                }
                para.clear();
                level = 0;
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gbk_text_is_decoded_and_a_bom_dropped() {
        // "请假" in GBK.
        assert_eq!(decode(&[0xC7, 0xEB, 0xBC, 0xD9]), "请假");
        assert_eq!(decode("\u{FEFF}年假".as_bytes()), "年假");
    }

    #[test]
    fn wordprocessingml_paragraphs_and_headings() {
        let xml = r#"<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>
<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>报销制度</w:t></w:r></w:p>
<w:p><w:r><w:t xml:space="preserve">发票须在 </w:t></w:r><w:r><w:t>30 天内提交。</w:t></w:r></w:p>
<w:p><w:r><w:t>A &amp; B</w:t><w:tab/><w:t>c</w:t></w:r></w:p>
</w:body></w:document>"#;
        assert_eq!(
            document_xml(xml.as_bytes()).unwrap(),
            "# 报销制度\n\n发票须在 30 天内提交。\n\nA & B\tc\n\n"
        );
    }

    #[test]
    fn unsupported_kinds_say_what_to_do() {
        let e = Kind::of(Path::new("/x/手册.pdf")).unwrap_err().to_string();
        assert!(e.contains("PDF") && e.contains(".docx"), "{e}");
        assert!(Kind::of(Path::new("a.MD")).is_ok());
    }
}
