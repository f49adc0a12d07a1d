//! The console's pages, rendered on the server with maud (every interpolated value is
//! HTML-escaped by the macro; nothing is marked pre-escaped except the fixed markup).

use std::time::Duration;

use maud::{html, Markup, DOCTYPE};

/// What the Overview page shows, read from the running box at each request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
}

fn layout(title: &str, csrf: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · wecom-edge" }
                link rel="stylesheet" href="/static/console.css";
            }
            body {
                header {
                    strong { "wecom-edge" }
                    @if let Some(csrf) = csrf {
                        a href="/" { "Overview" }
                        form method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The login form; `error` above it (a wrong password, a lock).
pub fn login(error: Option<&str>) -> Markup {
    layout(
        "Log in",
        None,
        html! {
            h1 { "Log in" }
            @if let Some(e) = error { p.error { (e) } }
            form method="post" action="/login" {
                p {
                    label for="password" { "Console password" } br;
                    input #password type="password" name="password" autocomplete="current-password" autofocus required;
                }
                p { button type="submit" { "Log in" } }
            }
        },
    )
}

/// How long, as people read it: `3 d 4 h`, `2 h 5 min`, `42 s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The Overview page.
pub fn overview(o: &Overview, fingerprint: &str, csrf: &str) -> Markup {
    layout(
        "Overview",
        Some(csrf),
        html! {
            h1 { "Overview" }
            table {
                tr { th { "State" } td {
                    @if o.ready { span.ok #state { "READY" } } @else { span.error #state { "NOT READY" } }
                } }
                tr { th { "Model" } td #model { (o.model) } }
                tr { th { "Device" } td { (o.device) } }
                tr { th { "Version" } td { (o.version) } }
                tr { th { "Uptime" } td { (human(o.uptime)) } }
                tr { th { "Certificate SHA-256" } td { code #fingerprint { (fingerprint) } } }
            }
            @if !o.health.is_empty() {
                h2 { "Needs attention" }
                ul #health { @for h in &o.health { li { (h) } } }
            }
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
        let page = overview(&o, "AB:CD", "tok\"en").into_string();
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

    #[test]
    fn durations_read_like_people_say_them() {
        assert_eq!(human(Duration::from_secs(42)), "42 s");
        assert_eq!(human(Duration::from_secs(125)), "2 min");
        assert_eq!(human(Duration::from_secs(7500)), "2 h 5 min");
        assert_eq!(human(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3 d 4 h");
    }
}
