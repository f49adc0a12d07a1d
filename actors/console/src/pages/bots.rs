//! Bots (each WeCom endpoint and its connection) and Conversations (counts, never text).

use maud::{html, Markup};

use super::{human, layout};
use crate::backend::{Bot, Conversations};

/// The Bots page.
pub fn bots(bots: &[Bot], csrf: &str) -> Markup {
    layout(
        "Bots",
        csrf,
        None,
        html! {
            @if bots.is_empty() {
                p { "No WeCom endpoint is configured." }
            } @else {
                table #bots {
                    tr { th { "Kind" } th { "Id" } th { "State" } th { "For" } th { "Last ping" } th { "Reconnects" } th { "Messages today" } }
                    @for b in bots {
                        tr {
                            td { (b.kind) }
                            td { code { (b.id) } }
                            td { @if b.ok { span.ok { (b.state) } } @else { span.error { (b.state) } } }
                            td { (b.since.map(human).unwrap_or_else(|| "–".into())) }
                            td { (b.last_ping.map(|d| format!("{} ago", human(d))).unwrap_or_else(|| "–".into())) }
                            td { (b.reconnects.map(|n| n.to_string()).unwrap_or_else(|| "–".into())) }
                            td { (b.messages_today) }
                        }
                    }
                }
            }
        },
    )
}

/// The Conversations page.
pub fn conversations(c: &Result<Conversations, String>, csrf: &str) -> Markup {
    layout(
        "Conversations",
        csrf,
        None,
        html! {
            p.note { "Counts only: the console never shows what people wrote." }
            @match c {
                Err(e) => p.error { "The store could not be read: " (e) },
                Ok(c) => {
                    h2 { "Since midnight (UTC)" }
                    @if c.today.is_empty() {
                        p { "No messages yet today." }
                    } @else {
                        table #today {
                            tr { th { "Endpoint" } th { "Messages" } th { "Conversations" } }
                            @for (endpoint, messages, conversations) in &c.today {
                                tr { td { code { (endpoint) } } td { (messages) } td { (conversations) } }
                            }
                        }
                    }
                    h2 { "Active now: " span #active-count { (c.active.len()) } }
                    @if !c.active.is_empty() {
                        ul #active { @for k in &c.active { li { code { (k) } } } }
                    }
                    p { "Answers waiting in the outbox: " (c.outbox_pending) }
                }
            }
        },
    )
}
