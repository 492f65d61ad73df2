//! Bar charts drawn on the server as inline SVG (no script, no external resources).

use maud::{Markup, html};

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 36.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 10.0;

/// One bar per `(label, value)`; every `label_every`-th label is printed under its bar, and
/// each bar's `<title>` gives its exact value on hover.
pub(super) fn bars(title: &str, points: &[(String, i64)], label_every: usize) -> Markup {
    let max = points.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1);
    let plot_height = HEIGHT - TOP - BOTTOM;
    let slot = (WIDTH - LEFT) / points.len().max(1) as f64;
    let bar_width = (slot * 0.75).max(1.0);
    html! {
        svg.chart viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label=(title) {
            title { (title) }
            line x1=(LEFT) y1=(TOP) x2=(WIDTH) y2=(TOP) {}
            line x1=(LEFT) y1=(HEIGHT - BOTTOM) x2=(WIDTH) y2=(HEIGHT - BOTTOM) {}
            text x="2" y=(TOP + 8.0) { (max) }
            text x="2" y=(HEIGHT - BOTTOM) { "0" }
            @for (i, (label, value)) in points.iter().enumerate() {
                @let height = plot_height * (*value as f64) / (max as f64);
                @let x = LEFT + slot * i as f64 + (slot - bar_width) / 2.0;
                rect.bar x=(format!("{x:.1}")) y=(format!("{:.1}", HEIGHT - BOTTOM - height))
                    width=(format!("{bar_width:.1}")) height=(format!("{height:.1}")) {
                    title { (label) ": " (value) }
                }
                @if i.is_multiple_of(label_every.max(1)) {
                    text x=(format!("{x:.1}")) y=(HEIGHT - 6.0) { (label) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tallest_bar_fills_the_plot_and_labels_are_escaped() {
        let svg = bars("Exports", &[("a<b".into(), 0), ("b".into(), 5), ("c".into(), 10)], 1).into_string();
        assert_eq!(svg.matches("<rect").count(), 3);
        // Plot height 150: the maximum reaches the top line, zero has no height.
        assert!(svg.contains(r#"height="150.0""#), "{svg}");
        assert!(svg.contains(r#"height="0.0""#), "{svg}");
        assert!(svg.contains("a&lt;b: 0"), "{svg}");
    }
}
