//! The little XML WeCom speaks: one `<xml>` root with flat child elements whose values come
//! with or without CDATA (/document/path/90238, 接收消息与事件).
//!
//! Hostile input is refused, never expanded: any `<!DOCTYPE` (entity bombs, external entities),
//! unknown entity references, nesting deeper than [`MAX_DEPTH`], more than [`MAX_ELEMENTS`]
//! elements.

use std::collections::BTreeMap;

use quick_xml::events::Event;
use quick_xml::Reader;

/// Deepest element nesting accepted (WeCom's event XML nests at most 3 levels).
pub const MAX_DEPTH: usize = 8;
/// Most elements accepted in one document.
pub const MAX_ELEMENTS: usize = 1024;

/// Why a WeCom XML document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Not well-formed, or an unknown entity.
    #[error("malformed XML: {0}")]
    Malformed(String),
    /// A `<!DOCTYPE …>` declaration: WeCom never sends one; entity definitions are how XML bombs
    /// and external-entity attacks work.
    #[error("XML with a DOCTYPE declaration is refused")]
    DocType,
    /// Over [`MAX_DEPTH`] or [`MAX_ELEMENTS`].
    #[error("XML too deep or too large")]
    TooLarge,
    /// No root element.
    #[error("XML has no root element")]
    Empty,
}

/// Parses a WeCom XML document into `element name → text` for every leaf element below the root
/// (nested leaves by their own name; the first occurrence of a name wins). CDATA and escaped
/// text are both decoded; CDATA is kept byte for byte, whitespace-only text between elements
/// is dropped.
///
/// # Errors
/// [`XmlError`].
pub fn parse_flat(xml: &[u8]) -> Result<BTreeMap<String, String>, XmlError> {
    let mut reader = Reader::from_reader(xml);
    reader.config_mut().trim_text(true);
    let mut out = BTreeMap::new();
    let mut stack: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut elements = 0usize;
    let mut saw_root = false;
    let mut buf = Vec::new();
    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| XmlError::Malformed(e.to_string()))?;
        match ev {
            Event::DocType(_) => return Err(XmlError::DocType),
            Event::Start(e) => {
                elements += 1;
                if stack.len() >= MAX_DEPTH || elements > MAX_ELEMENTS {
                    return Err(XmlError::TooLarge);
                }
                saw_root = true;
                stack.push(String::from_utf8_lossy(e.name().as_ref()).into_owned());
                text.clear();
            }
            Event::Empty(e) => {
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(XmlError::TooLarge);
                }
                if stack.is_empty() {
                    saw_root = true;
                } else {
                    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                    out.entry(name).or_insert_with(String::new);
                }
            }
            Event::Text(t) => {
                let s = t
                    .unescape()
                    .map_err(|e| XmlError::Malformed(e.to_string()))?;
                text.push_str(&s);
            }
            Event::CData(c) => {
                text.push_str(&String::from_utf8_lossy(&c.into_inner()));
            }
            Event::End(_) => {
                let name = stack
                    .pop()
                    .ok_or_else(|| XmlError::Malformed("unbalanced end tag".into()))?;
                if !stack.is_empty() {
                    out.entry(name).or_insert_with(|| text.clone());
                }
                text.clear();
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed(
            "document ends inside an element".into(),
        ));
    }
    if !saw_root {
        return Err(XmlError::Empty);
    }
    Ok(out)
}

/// Escapes text for an XML element body (`&`, `<`, `>`).
pub fn escape_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Escapes text for a CDATA section: `]]>` is split across two sections.
pub fn escape_cdata(s: &str) -> String {
    s.replace("]]>", "]]]]><![CDATA[>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdata_and_plain_values() {
        let m = parse_flat(
            b"<xml><ToUserName><![CDATA[ww1]]></ToUserName>\n<CreateTime>1409659813</CreateTime><Content>a &amp; b</Content><Empty/><ScanCodeInfo><ScanType><![CDATA[qrcode]]></ScanType></ScanCodeInfo></xml>",
        )
        .unwrap();
        assert_eq!(m["ToUserName"], "ww1");
        assert_eq!(m["CreateTime"], "1409659813");
        assert_eq!(m["Content"], "a & b");
        assert_eq!(m["Empty"], "");
        assert_eq!(m["ScanType"], "qrcode");
    }

    #[test]
    fn hostile_documents_are_refused() {
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><xml><a>&lol2;</a></xml>"#;
        assert_eq!(parse_flat(bomb), Err(XmlError::DocType));
        let xxe = br#"<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><a>&e;</a></xml>"#;
        assert_eq!(parse_flat(xxe), Err(XmlError::DocType));
        assert!(matches!(
            parse_flat(b"<xml><a>&e;</a></xml>"),
            Err(XmlError::Malformed(_))
        ));
        let deep = format!("<xml>{}{}</xml>", "<a>".repeat(20), "</a>".repeat(20));
        assert_eq!(parse_flat(deep.as_bytes()), Err(XmlError::TooLarge));
        let wide = format!("<xml>{}</xml>", "<a/>".repeat(2000));
        assert_eq!(parse_flat(wide.as_bytes()), Err(XmlError::TooLarge));
        assert!(parse_flat(b"<xml><a>").is_err());
        assert_eq!(parse_flat(b"   "), Err(XmlError::Empty));
    }

    #[test]
    fn cdata_escape_round_trips() {
        let v = "x]]>y";
        let doc = format!("<xml><a><![CDATA[{}]]></a></xml>", escape_cdata(v));
        assert_eq!(parse_flat(doc.as_bytes()).unwrap()["a"], v);
    }
}
