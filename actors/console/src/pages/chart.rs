//! A line chart drawn on the server as inline SVG (no script; presentation attributes, not
//! `style`, so the CSP's `style-src 'self'` holds).

use std::time::Duration;

use maud::{html, Markup};

use super::human;

/// The chart's size in SVG user units.
const W: f64 = 600.0;
const H: f64 = 120.0;
/// Room for the axis labels.
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 18.0;

/// `values` (oldest first, one every `every`) as a line from 0 to their maximum; the y axis
/// is labelled with the maximum, the x axis with how long ago the first value is.
pub fn svg(title: &str, values: &[f64], every: Duration) -> Markup {
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    let top = if max > 0.0 { nice(max) } else { 1.0 };
    let n = values.len();
    let (plot_w, plot_h) = (W - LEFT, H - BOTTOM);
    let x = |i: usize| {
        LEFT + if n > 1 {
            plot_w * i as f64 / (n - 1) as f64
        } else {
            plot_w
        }
    };
    let y = |v: f64| plot_h - plot_h * (v.max(0.0) / top).min(1.0);
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| format!("{:.1},{:.1}", x(i), y(v)))
        .collect();
    let ago = every * n.saturating_sub(1) as u32;
    html! {
        figure.chart {
            figcaption { (title) }
            svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (W) " " (H) } role="img" aria-label=(title) {
                line x1=(LEFT) y1=(plot_h) x2=(W) y2=(plot_h) stroke="#8c959f" stroke-width="1" {}
                line x1=(LEFT) y1="0" x2=(LEFT) y2=(plot_h) stroke="#8c959f" stroke-width="1" {}
                text x=(LEFT - 4.0) y="10" text-anchor="end" font-size="11" fill="#57606a" { (label(top)) }
                text x=(LEFT - 4.0) y=(plot_h) text-anchor="end" font-size="11" fill="#57606a" { "0" }
                text x=(LEFT) y=(H - 4.0) font-size="11" fill="#57606a" { (human(ago)) " ago" }
                text x=(W) y=(H - 4.0) text-anchor="end" font-size="11" fill="#57606a" { "now" }
                @if n > 0 {
                    polyline points=(points.join(" ")) fill="none" stroke="#1f6feb" stroke-width="2" {}
                }
            }
        }
    }
}

/// The smallest of 1, 2, 5 × 10^k at or above `v`.
fn nice(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * p)
}

fn label(v: f64) -> String {
    if v >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_spans_the_plot_and_tops_out_at_a_round_maximum() {
        assert_eq!(nice(37.0), 50.0);
        assert_eq!(nice(0.3), 0.5);
        assert_eq!(nice(100.0), 100.0);
        let s = svg("Tokens/s", &[0.0, 18.0, 37.0], Duration::from_secs(60)).into_string();
        // First point at the left edge on the axis, last at the right edge; 50 is the top.
        assert!(
            s.contains(r#"points="48.0,102.0 324.0,65.3 600.0,26.5""#),
            "{s}"
        );
        assert!(s.contains(">50<"), "{s}");
        assert!(s.contains("2 min ago"), "{s}");
        assert!(!s.contains("style="));
        let empty = svg("Queue", &[], Duration::from_secs(10)).into_string();
        assert!(!empty.contains("polyline"));
    }
}
