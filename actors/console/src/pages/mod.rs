//! The console's pages, rendered on the server with maud: every interpolated value is
//! HTML-escaped by the macro, and nothing is marked pre-escaped. No page carries an inline
//! script or style (the CSP forbids both); "Try it" loads the one script, `/static/try.js`.
//!
//! One file per page: [`overview`] (with its [`chart`]), [`bots`] (Bots and Conversations),
//! [`audit`], [`knowledge`] (Knowledge and Filter), [`model`], [`try_it`].

pub mod audit;
pub mod bots;
pub mod chart;
pub mod knowledge;
pub mod model;
pub mod overview;
pub mod try_it;

use std::time::Duration;

use maud::{html, Markup, DOCTYPE};

pub use overview::{Overview, Sample};

/// The pages in the navigation bar: path and title.
pub const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/bots", "Bots"),
    ("/conversations", "Conversations"),
    ("/audit", "Audit"),
    ("/knowledge", "Knowledge"),
    ("/filter", "Filter"),
    ("/model", "Model"),
    ("/try", "Try it"),
];

/// A page of a logged-in session: the navigation (the current one marked), the logout form
/// with the session's CSRF token, and `body`; `script` adds `/static/{script}`.
pub fn layout(title: &str, csrf: &str, script: Option<&str>, body: Markup) -> Markup {
    frame(
        title,
        script,
        html! {
            nav {
                strong { "wecom-edge" }
                @for (path, name) in NAV {
                    @if *name == title { a.current href=(path) { (name) } } @else { a href=(path) { (name) } }
                }
                form method="post" action="/logout" {
                    input type="hidden" name="csrf" value=(csrf);
                    button #logout type="submit" { "Log out" }
                }
            }
        },
        body,
    )
}

fn frame(title: &str, script: Option<&str>, header: Markup, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · wecom-edge" }
                link rel="stylesheet" href="/static/console.css";
                @if let Some(s) = script { script src={ "/static/" (s) } defer {} }
            }
            body {
                header { (header) }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// The login form; `error` above it (a wrong password, a lock).
pub fn login(error: Option<&str>) -> Markup {
    frame(
        "Log in",
        None,
        html! { nav { strong { "wecom-edge" } } },
        html! {
            @if let Some(e) = error { p.error #error { (e) } }
            form method="post" action="/login" {
                p {
                    label for="password" { "Console password" } br;
                    input #password type="password" name="password" autocomplete="current-password" autofocus required;
                }
                p { button #login type="submit" { "Log in" } }
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

/// Bytes as people read them: `512 B`, `3.4 KiB`, `77.0 MiB`, `1.2 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A unix-ms time as `2026-12-07 08:30:05 UTC`.
pub fn utc(ts_ms: i64) -> String {
    let secs = ts_ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 as (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms", `civil_from_days`).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `1970-01-01T00:00` (an HTML `datetime-local` value, read as UTC) as unix ms.
pub fn parse_utc(s: &str) -> Option<i64> {
    let (date, time) = s.trim().split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm) = (t.next()??, t.next()??);
    let ss = t.next().flatten().unwrap_or(0);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    // days_from_civil (the inverse of `civil`).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400) + hh * 3600 + mm * 60 + ss) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_say_them() {
        assert_eq!(human(Duration::from_secs(42)), "42 s");
        assert_eq!(human(Duration::from_secs(125)), "2 min");
        assert_eq!(human(Duration::from_secs(7500)), "2 h 5 min");
        assert_eq!(human(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3 d 4 h");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(80_740_352), "77.0 MiB");
    }

    #[test]
    fn times_are_utc_both_ways() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        // 2026-12-07T08:30:05Z (date -u -d … +%s).
        assert_eq!(utc(1_796_632_205_000), "2026-12-07 08:30:05 UTC");
        assert_eq!(parse_utc("2026-12-07T08:30:05"), Some(1_796_632_205_000));
        assert_eq!(parse_utc("2026-12-07T08:30"), Some(1_796_632_200_000));
        assert_eq!(parse_utc("2024-02-29T00:00"), Some(1_709_164_800_000));
        for bad in [
            "",
            "2026-13-01T00:00",
            "2026-12-07",
            "x-y-zT1:2",
            "2026-12-07T24:00",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }
}
