//! Model: `wecom-edge model inspect` of the loaded model and the imported ones.

use maud::{html, Markup};

use super::knowledge::{outcome, Outcome};
use super::layout;
use crate::backend::ModelFile;

/// The Model page; `done` is what a switch request came to.
pub fn page(models: &[ModelFile], done: &Outcome, csrf: &str) -> Markup {
    layout(
        "Model",
        csrf,
        None,
        html! {
            (outcome(done))
            @if models.is_empty() {
                p { "This box answers through an upstream inference server; it has no model file." }
            }
            @for m in models {
                h2 {
                    code { (m.name) }
                    @if m.loaded { " " span.ok.loaded { "answering now" } }
                }
                @if m.switchable {
                    form.switch method="post" action="/model/switch" {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="model" value=(m.name);
                        button type="submit" { "Switch to this model" }
                        " It is checked first (it loads, scores a text and generates a token), then the box restarts on it; the one it replaces stays here."
                    }
                }
                pre.report { (m.report) }
            }
        },
    )
}
