//! Model: `wecom-edge model inspect` of the loaded model and the imported ones.

use maud::{html, Markup};

use super::layout;
use crate::backend::ModelFile;

/// The Model page.
pub fn page(models: &[ModelFile], csrf: &str) -> Markup {
    layout(
        "Model",
        csrf,
        None,
        html! {
            @if models.is_empty() {
                p { "This box answers through an upstream inference server; it has no model file." }
            }
            @for m in models {
                h2 {
                    code { (m.name) }
                    @if m.loaded { " " span.ok.loaded { "answering now" } }
                }
                pre.report { (m.report) }
            }
        },
    )
}
