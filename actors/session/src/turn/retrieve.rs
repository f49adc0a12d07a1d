//! Stage **retrieve**: the company documents that may answer the question
//! ([`crate::knowledge`]), found by BM25 over jieba words; what was found is audited as
//! `knowledge_retrieved` (document names, titles, sections and scores — never their text).
//!
//! A failing knowledge base does not fail the turn: the failure is audited
//! (`knowledge_failed`) and logged as an alert, and the model answers without excerpts.

use serde_json::json;

use super::{record, TurnCtx};

/// Fills [`TurnCtx::knowledge`] (empty when no knowledge base is configured, nothing
/// matched, or the search failed).
pub(super) async fn run(t: &mut TurnCtx) {
    let Some(kb) = t.ctx.knowledge.clone() else {
        return;
    };
    match kb.retrieve(&t.question).await {
        Ok(hits) => {
            if !hits.is_empty() {
                let docs: Vec<_> = hits
                    .iter()
                    .map(|h| json!({"doc": h.doc, "title": h.title, "section": h.section, "score": h.score}))
                    .collect();
                record(
                    "knowledge_retrieved",
                    &t.key,
                    json!({"msgid": t.job.msgid, "docs": docs}),
                );
            }
            t.knowledge = hits;
        }
        Err(e) => {
            tracing::error!(alert = true, session = %t.key, error = %e, "knowledge search failed; answering without excerpts");
            record(
                "knowledge_failed",
                &t.key,
                json!({"msgid": t.job.msgid, "error": e.to_string()}),
            );
        }
    }
}
