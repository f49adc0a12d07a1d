//! Audit: the trail filtered by kind and time, `verify` and its result, export links.

use maud::{html, Markup};

use super::{layout, utc};
use crate::backend::{AuditPage, AuditQuery, AUDIT_PAGE_ROWS};

/// The filter's fields as the form sends them (`kind`, `since`, `until`: `datetime-local`,
/// UTC), echoed back into the form and the export links.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct AuditForm {
    /// A kind, `prefix*`, or empty for every kind.
    #[serde(default)]
    pub kind: String,
    /// `YYYY-MM-DDTHH:MM` (UTC) or empty.
    #[serde(default)]
    pub since: String,
    /// `YYYY-MM-DDTHH:MM` (UTC) or empty.
    #[serde(default)]
    pub until: String,
}

impl AuditForm {
    /// The query it means; a time that does not parse is an error naming the field.
    ///
    /// # Errors
    /// `since` or `until` is not a `YYYY-MM-DDTHH:MM` time.
    pub fn query(&self, limit: Option<usize>) -> Result<AuditQuery, String> {
        let time = |name: &str, v: &str| -> Result<Option<i64>, String> {
            if v.trim().is_empty() {
                return Ok(None);
            }
            super::parse_utc(v)
                .map(Some)
                .ok_or_else(|| format!("{name}: {v:?} is not a time like 2026-12-07T08:30"))
        };
        let kind = self.kind.trim();
        Ok(AuditQuery {
            kind: (!kind.is_empty()).then(|| kind.to_string()),
            since_ms: time("since", &self.since)?,
            until_ms: time("until", &self.until)?,
            limit,
        })
    }

    /// The filter as a query string (`kind=…&since=…&until=…`), URL-encoded.
    pub fn query_string(&self) -> String {
        [
            ("kind", &self.kind),
            ("since", &self.since),
            ("until", &self.until),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// `application/x-www-form-urlencoded` encoding of a value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'*' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What `verify` found, shown above the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// Not run on this page.
    NotRun,
    /// Intact: the summary.
    Intact(String),
    /// Broken or unreadable: the problems.
    Broken(String),
}

/// The Audit page.
pub fn page(
    form: &AuditForm,
    rows: &Result<AuditPage, String>,
    verified: &Verified,
    csrf: &str,
) -> Markup {
    let qs = form.query_string();
    layout(
        "Audit",
        csrf,
        None,
        html! {
            form #verify-form method="post" action="/audit/verify" {
                input type="hidden" name="csrf" value=(csrf);
                button #verify type="submit" { "Verify the chain" }
                " Walks every row's keyed hash and the head file, as " code { "wecom-edge audit verify" } " does."
            }
            @match verified {
                Verified::NotRun => {},
                Verified::Intact(s) => p.ok #verified { "Intact: " (s) },
                Verified::Broken(s) => p.error #verified { "NOT intact: " (s) },
            }
            form #filter method="get" action="/audit" {
                label { "Kind " input name="kind" list="kinds" value=(form.kind) placeholder="every kind (or prefix*)"; }
                " "
                label { "From " input type="datetime-local" name="since" value=(form.since); }
                " "
                label { "Until " input type="datetime-local" name="until" value=(form.until); }
                " (UTC) "
                button type="submit" { "Show" }
                @if let Ok(p) = rows {
                    datalist #kinds { @for k in &p.kinds { option value=(k) {} } }
                }
            }
            p {
                "Download these rows: "
                a #export-jsonl href={ "/audit/export?format=jsonl&" (qs) } { "JSONL" }
                " · "
                a #export-csv href={ "/audit/export?format=csv&" (qs) } { "CSV" }
            }
            @match rows {
                Err(e) => p.error { (e) },
                Ok(p) if p.rows.is_empty() => p { "No rows match." },
                Ok(p) => {
                    @if p.rows.len() >= AUDIT_PAGE_ROWS {
                        p.note { "The newest " (AUDIT_PAGE_ROWS) " rows; narrow the time range or download them all." }
                    }
                    table #rows {
                        tr { th { "Seq" } th { "Time" } th { "Kind" } th { "Actor" } th { "Subject" } th { "Detail" } }
                        @for r in &p.rows {
                            tr {
                                td { (r.seq) }
                                td.nowrap { (utc(r.ts_ms)) }
                                td.nowrap { code { (r.kind) } }
                                td { (r.actor) }
                                td { code { (r.subject) } }
                                td { code.detail { (r.detail) } }
                            }
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_means_a_query_and_round_trips_into_links() {
        let f = AuditForm {
            kind: " console_* ".into(),
            since: "2026-12-07T08:30".into(),
            until: String::new(),
        };
        let q = f.query(Some(5)).unwrap();
        assert_eq!(q.kind.as_deref(), Some("console_*"));
        assert_eq!(q.since_ms, Some(1_796_632_200_000));
        assert_eq!(q.until_ms, None);
        assert_eq!(
            f.query_string(),
            "kind=%20console_*%20&since=2026-12-07T08:30&until="
        );
        let bad = AuditForm {
            until: "yesterday".into(),
            ..AuditForm::default()
        };
        assert!(bad.query(None).unwrap_err().starts_with("until:"));
    }
}
