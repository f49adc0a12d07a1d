//! Overview: READY, uptime, version, model and device, tokens/s and queue now and over the
//! last hour, the health checks that fail, the certificate's fingerprint.

use std::time::Duration;

use maud::{html, Markup};

use super::{chart, human, layout};

/// One sample of the box's load ([`Overview::history`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Tokens generated per second over the sample's interval.
    pub tokens_per_s: f64,
    /// Turns waiting for a generation slot at the sample's end.
    pub queue: i64,
}

/// What the Overview page shows, read from the running box at each request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overview {
    /// `/readyz` passes.
    pub ready: bool,
    /// The failing checks, `name: reason` (`/readyz`'s lines).
    pub health: Vec<String>,
    /// The binary's version.
    pub version: String,
    /// The model (file name or the upstream's name).
    pub model: String,
    /// Where it runs (`cpu`, `cuda`, `upstream …`).
    pub device: String,
    /// Since the box started.
    pub uptime: Duration,
    /// The load over the last hour, oldest first, one sample every [`Overview::sample_every`]
    /// (the last one is "now").
    pub history: Vec<Sample>,
    /// The time between two samples.
    pub sample_every: Duration,
}

/// The Overview page.
pub fn page(o: &Overview, fingerprint: &str, csrf: &str) -> Markup {
    let now = o.history.last().copied().unwrap_or_default();
    let span = o.sample_every * o.history.len().saturating_sub(1) as u32;
    layout(
        "Overview",
        csrf,
        None,
        html! {
            table {
                tr { th { "State" } td {
                    @if o.ready { span.ok #state { "READY" } } @else { span.error #state { "NOT READY" } }
                } }
                tr { th { "Model" } td #model { (o.model) } }
                tr { th { "Device" } td #device { (o.device) } }
                tr { th { "Version" } td { (o.version) } }
                tr { th { "Uptime" } td { (human(o.uptime)) } }
                tr { th { "Tokens/s now" } td #tokens-per-s { (format!("{:.1}", now.tokens_per_s)) } }
                tr { th { "Queue now" } td #queue { (now.queue) } }
                tr { th { "Certificate SHA-256" } td { code #fingerprint { (fingerprint) } } }
            }
            @if !o.health.is_empty() {
                h2 { "Needs attention" }
                ul #health { @for h in &o.health { li { (h) } } }
            }
            h2 { "The last " (human(span.max(o.sample_every))) }
            (chart::svg("Tokens/s", &o.history.iter().map(|s| s.tokens_per_s).collect::<Vec<_>>(), o.sample_every))
            (chart::svg("Queue", &o.history.iter().map(|s| s.queue as f64).collect::<Vec<_>>(), o.sample_every))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        let o = Overview {
            model: "<img src=x onerror=alert(1)>".into(),
            health: vec!["disk: \"full\" & <b>".into()],
            ..Overview::default()
        };
        let page = page(&o, "AB:CD", "tok\"en").into_string();
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(page.contains("&quot;full&quot; &amp; &lt;b&gt;"));
        assert!(page.contains(r#"value="tok&quot;en""#));
        assert!(!page.contains("<script"), "no script at all");
        assert!(
            !page.contains("style="),
            "no inline style (the CSP forbids it)"
        );
    }
}
