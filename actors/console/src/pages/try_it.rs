//! Try it: a question sent through the same pipeline as a WeCom user's. With the page's
//! script (`/static/try.js`) the answer streams in as server-sent events; without it the
//! form posts and the page comes back with the whole answer.

use maud::{html, Markup};

use super::layout;

/// The Try it page; `answer` is a question asked without the script and its answer.
pub fn page(answer: Option<(&str, &str)>, csrf: &str) -> Markup {
    layout(
        "Try it",
        csrf,
        Some("try.js"),
        html! {
            p.note { "Asked as the console user: it goes through the rate limits, the filter, the knowledge base and the model like any WeCom message, and is audited under its own actor id." }
            form #ask method="post" action="/try" {
                input type="hidden" name="csrf" value=(csrf);
                textarea #question name="question" rows="3" cols="70" required { (answer.map_or("", |a| a.0)) }
                br;
                button #send type="submit" { "Ask" }
            }
            div #answer aria-live="polite" { (answer.map_or("", |a| a.1)) }
        },
    )
}
