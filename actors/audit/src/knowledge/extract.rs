//! A document file's text: Markdown and plain text (UTF-8, with or without a BOM, else
//! GB18030 — the superset of GBK that Chinese Windows tools still save), and Word `.docx`
//! (its `word/document.xml`: paragraphs in order, Heading styles as Markdown headings, tables
//! cell by cell), and PDF's text layer (the `pdf-extract` crate: simple and Type0/CID fonts
//! through their `ToUnicode` CMaps, so Chinese PDFs from Word or WPS read; a scan without a
//! text layer is refused as empty). Sources: ECMA-376 Part 1 §17.3 (paragraphs, runs, `w:t`,
//! `w:tab`, `w:br`), §17.7.2 (paragraph styles); ISO 32000-1 §9.10 (extraction of text
//! content); the WHATWG Encoding Standard's gb18030 decoder.

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
    /// `.pdf`.
    Pdf,
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
            "pdf" => Ok(Kind::Pdf),
            other => Err(KnowledgeError::Unsupported {
                path: path.display().to_string(),
                why: match other {
                    "doc" => "old Word .doc is not read: save it as .docx".into(),
                    _ => "only .md, .markdown, .txt, .text, .docx and .pdf are read".into(),
                },
            }),
        }
    }
}

/// The text of the document at `path`, and the file's bytes (refused before reading when
/// over [`MAX_FILE_BYTES`]).
///
/// # Errors
/// [`KnowledgeError`]: unsupported kind, too large, unreadable, not a valid `.docx`.
pub fn read(path: &Path) -> Result<(String, Vec<u8>), KnowledgeError> {
    Kind::of(path)?;
    let io = |e: std::io::Error| KnowledgeError::Io {
        path: path.display().to_string(),
        source: e,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_FILE_BYTES {
        return Err(too_large(&path.display().to_string(), len));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let text = of_bytes(&path.display().to_string(), &bytes)?;
    Ok((text, bytes))
}

fn too_large(name: &str, len: u64) -> KnowledgeError {
    KnowledgeError::Unsupported {
        path: name.to_string(),
        why: format!("{len} bytes, over the {MAX_FILE_BYTES}-byte limit"),
    }
}

/// The text of a document held in `bytes` (an upload); `name`'s extension says its kind.
///
/// # Errors
/// [`KnowledgeError`]: unsupported kind, too large, not a valid `.docx` or PDF.
pub fn of_bytes(name: &str, bytes: &[u8]) -> Result<String, KnowledgeError> {
    let kind = Kind::of(Path::new(name))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(name, bytes.len() as u64));
    }
    match kind {
        Kind::Markdown | Kind::Text => Ok(decode(bytes)),
        Kind::Docx => docx(bytes).map_err(|why| KnowledgeError::Unsupported {
            path: name.to_string(),
            why: format!("not a readable .docx: {why}"),
        }),
        Kind::Pdf => pdf(bytes).map_err(|why| KnowledgeError::Unsupported {
            path: name.to_string(),
            why: format!("not a readable PDF: {why}"),
        }),
    }
}

/// The text layer of a PDF held in `bytes`, pages in order. The parser panics on some
/// malformed files: that is caught and reported as an error like any other.
fn pdf(bytes: &[u8]) -> Result<String, String> {
    let r =
        std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem(bytes)).map_err(|p| {
            let why = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the parser gave up".into());
            format!("the parser gave up ({why})")
        })?;
    let text = r.map_err(|e| e.to_string())?;
    if text.trim().is_empty() {
        return Err("it has no text layer (a scan?): run OCR on it, or save it as .docx".into());
    }
    Ok(text)
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
pub(crate) mod tests {
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
        let e = Kind::of(Path::new("/x/手册.doc")).unwrap_err().to_string();
        assert!(e.contains(".doc is not read") && e.contains(".docx"), "{e}");
        let e = Kind::of(Path::new("/x/a.rtf")).unwrap_err().to_string();
        assert!(e.contains(".pdf"), "{e}");
        assert!(Kind::of(Path::new("a.MD")).is_ok());
        assert_eq!(Kind::of(Path::new("手册.PDF")).unwrap(), Kind::Pdf);
    }

    /// A PDF as Word or WPS writes Chinese text: a Type0 font (Identity-H, two-byte CIDs in
    /// hex strings) whose `ToUnicode` CMap maps each CID to its character (ISO 32000-1 §9.7,
    /// §9.10.3); one page per entry of `pages`, one text line per string.
    pub(crate) fn cid_pdf(pages: &[&[&str]]) -> Vec<u8> {
        let mut chars: Vec<char> = Vec::new();
        for c in pages.iter().flat_map(|p| p.iter()).flat_map(|l| l.chars()) {
            if !chars.contains(&c) {
                chars.push(c);
            }
        }
        let cid = |c: char| chars.iter().position(|&x| x == c).unwrap() + 1;
        let stream =
            |body: &str| format!("<< /Length {} >>\nstream\n{body}\nendstream", body.len());
        let mut cmap = String::from(
            "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n\
             /CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n\
             /CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n\
             1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n",
        );
        for block in chars.chunks(100) {
            cmap += &format!("{} beginbfchar\n", block.len());
            for &c in block {
                let mut u = [0u16; 2];
                let hex: String = c
                    .encode_utf16(&mut u)
                    .iter()
                    .map(|w| format!("{w:04X}"))
                    .collect();
                cmap += &format!("<{:04X}> <{hex}>\n", cid(c));
            }
            cmap += "endbfchar\n";
        }
        cmap += "endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend";
        let kids: Vec<String> = (0..pages.len())
            .map(|i| format!("{} 0 R", 6 + 2 * i))
            .collect();
        let mut objs =
            vec![
            "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
            format!("<< /Type /Pages /Kids [{}] /Count {} >>", kids.join(" "), pages.len()),
            "<< /Type /Font /Subtype /Type0 /BaseFont /SimSun /Encoding /Identity-H \
             /DescendantFonts [4 0 R] /ToUnicode 5 0 R >>"
                .to_string(),
            "<< /Type /Font /Subtype /CIDFontType2 /BaseFont /SimSun /CIDSystemInfo << /Registry \
             (Adobe) /Ordering (Identity) /Supplement 0 >> /DW 1000 /FontDescriptor << /Type \
             /FontDescriptor /FontName /SimSun /Flags 4 /FontBBox [0 -120 1000 880] \
             /ItalicAngle 0 /Ascent 880 /Descent -120 /CapHeight 700 /StemV 80 >> >>"
                .to_string(),
            stream(&cmap),
        ];
        for (i, lines) in pages.iter().enumerate() {
            let shown: Vec<String> = lines
                .iter()
                .map(|l| {
                    let hex: String = l.chars().map(|c| format!("{:04X}", cid(c))).collect();
                    format!("<{hex}> Tj 0 -16 Td")
                })
                .collect();
            objs.push(format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << \
                 /F1 3 0 R >> >> /Contents {} 0 R >>",
                7 + 2 * i
            ));
            objs.push(stream(&format!(
                "BT /F1 12 Tf 72 720 Td {} ET",
                shown.join(" ")
            )));
        }
        let mut out = b"%PDF-1.4\n".to_vec();
        let mut offsets = Vec::new();
        for (i, o) in objs.iter().enumerate() {
            offsets.push(out.len());
            out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
        }
        let xref = out.len();
        out.extend_from_slice(
            format!("xref\n0 {}\n0000000000 65535 f \n", objs.len() + 1).as_bytes(),
        );
        for o in offsets {
            out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
        }
        out.extend_from_slice(
            format!(
                "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
                objs.len() + 1
            )
            .as_bytes(),
        );
        out
    }

    #[test]
    fn a_chinese_pdf_is_read_and_a_broken_one_refused() {
        let bytes = cid_pdf(&[
            &["差旅报销制度", "出差住宿标准：一线城市每晚不超过六百元。"],
            &["报销须在出差结束后三十天内提交。"],
        ]);
        let text = pdf(&bytes).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(
            lines,
            [
                "差旅报销制度",
                "出差住宿标准：一线城市每晚不超过六百元。",
                "报销须在出差结束后三十天内提交。"
            ]
        );
        assert!(pdf(b"%PDF-1.7 not really").is_err());
        let e = pdf(&cid_pdf(&[&[]])).unwrap_err();
        assert!(e.contains("no text layer"), "{e}");
    }
}
