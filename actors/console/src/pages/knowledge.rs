//! Knowledge (the company documents: list, upload, remove) and Filter (the term lists'
//! sizes and a "test a phrase" box).

use maud::{html, Markup};

use super::{bytes, layout};
use crate::backend::{Document, FilterTest, FilterView};

/// What the last action on the page did: `Ok(message)` or `Err(why)`.
pub type Outcome = Option<Result<String, String>>;

/// What the last action did, above a page's content.
pub(crate) fn outcome(o: &Outcome) -> Markup {
    html! {
        @match o {
            None => {},
            Some(Ok(m)) => p.ok #outcome { (m) },
            Some(Err(e)) => p.error #outcome { (e) },
        }
    }
}

/// The Knowledge page; `docs` is `None` when the box has no knowledge base.
pub fn knowledge(
    docs: &Option<Result<Vec<Document>, String>>,
    done: &Outcome,
    csrf: &str,
) -> Markup {
    layout(
        "Knowledge",
        csrf,
        None,
        html! {
            (outcome(done))
            @match docs {
                None => p { "The knowledge base could not be opened (see the journal)." },
                Some(Err(e)) => p.error { "The knowledge base could not be read: " (e) },
                Some(Ok(docs)) => {
                    form #upload method="post" action="/knowledge/add" enctype="multipart/form-data" {
                        input type="hidden" name="csrf" value=(csrf);
                        label { "Add a document (.md, .txt, .docx, .pdf; at most 32 MiB) "
                            input #file type="file" name="file" accept=".md,.markdown,.txt,.text,.docx,.pdf" required; }
                        " "
                        button #add type="submit" { "Upload" }
                    }
                    @if docs.is_empty() {
                        p { "No documents yet." }
                    } @else {
                        table #documents {
                            tr { th { "Document" } th { "Title" } th { "Chunks" } th { "Size" } th { "From" } th {} }
                            @for d in docs {
                                tr {
                                    td { code { (d.doc) } }
                                    td.title { (d.title) }
                                    td { (d.chunks) }
                                    td { (bytes(d.bytes)) }
                                    td { (d.source) }
                                    td {
                                        form method="post" action="/knowledge/remove" {
                                            input type="hidden" name="csrf" value=(csrf);
                                            input type="hidden" name="doc" value=(d.doc);
                                            button.remove type="submit" { "Remove" }
                                        }
                                    }
                                }
                            }
                        }
                        p.note { "Documents from the configured folder come back at the next reload unless removed there." }
                    }
                }
            }
        },
    )
}

/// The Filter page; `test` is the phrase tested and what the filter did to it.
pub fn filter(view: &Option<FilterView>, test: Option<(&str, &FilterTest)>, csrf: &str) -> Markup {
    layout(
        "Filter",
        csrf,
        None,
        html! {
            @match view {
                None => p { "No content filter is configured ([filter] in the configuration)." },
                Some(v) => p #sizes { "In force: " (v.terms) " term(s), " (v.regexes) " regular expression(s)." },
            }
            form #test method="post" action="/filter/test" {
                input type="hidden" name="csrf" value=(csrf);
                label { "Test a phrase " input #phrase name="phrase" size="50" value=(test.map_or("", |t| t.0)) required; }
                " "
                button type="submit" { "Test" }
            }
            @if let Some((_, t)) = test {
                @if t.hits.is_empty() {
                    p.ok #verdict { "No rule matches: it would pass unchanged." }
                } @else {
                    table #verdict {
                        tr { th { "Rule" } th { "Action" } th { "Matched" } }
                        @for (rule, action, matched) in &t.hits {
                            tr { td { code { (rule) } } td { (action) } td { (matched) } }
                        }
                    }
                    p { "The model would get: " q #masked { (t.masked) } }
                }
            }
        },
    )
}
