//! The requests chart: an SVG drawn on the server, so the page needs no
//! script. Top panel: one bar group per minute, stacked by outcome (delivered
//! at the bottom). Bottom panel: p50 (solid) and p95 (dashed) latency. The
//! table under it carries the same numbers for screen readers.

use std::fmt::Write;

use super::render::{Esc, latency, rfc3339};
use crate::recent::{MinuteStats, OUTCOMES};

/// Fill of each outcome, in [`OUTCOMES`] order: green for delivered, warm
/// and dark colours for the failures.
pub const COLORS: [&str; OUTCOMES.len()] = [
    "#2e7d32", "#c62828", "#ef6c00", "#ad1457", "#6a1b9a", "#d84315", "#f9a825", "#546e7a",
    "#8d6e63", "#37474f", "#9e9e9e", "#000000",
];
const P50_COLOR: &str = "#1a5fb4";
const P95_COLOR: &str = "#a51d2d";

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 270.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 12.0;
const BARS_TOP: f64 = 34.0;
const BARS_BOTTOM: f64 = 150.0;
const LATENCY_TOP: f64 = 190.0;
const LATENCY_BOTTOM: f64 = 250.0;

/// The smallest 1, 2 or 5 times a power of ten that is at least `x` (1 at
/// least), so axis maxima are round numbers.
fn nice_ceil(x: f64) -> f64 {
    if x <= 1.0 {
        return 1.0;
    }
    let power = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|v| *v >= x)
        .unwrap_or(10.0 * power)
}

pub fn requests_chart(minutes: &[MinuteStats], shown: &[usize]) -> String {
    let n = minutes.len().max(1) as f64;
    let slot = (WIDTH - LEFT - RIGHT) / n;
    let center = |i: usize| LEFT + slot * (i as f64 + 0.5);
    let max_count = nice_ceil(f64::from(
        minutes.iter().map(MinuteStats::total).max().unwrap_or(0),
    ));
    let max_ms = nice_ceil(
        minutes
            .iter()
            .filter_map(|m| m.p95)
            .map(|d| d.as_secs_f64() * 1e3)
            .fold(0.0, f64::max),
    );

    let mut svg = String::with_capacity(8 * 1024);
    let _ = writeln!(
        svg,
        "<svg id=\"requests-chart\" role=\"img\" aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" style=\"max-width:100%;height:auto\" \
         font-family=\"system-ui,sans-serif\" font-size=\"11\" fill=\"#333\">",
        Esc(&description(minutes))
    );
    legend(&mut svg, shown);
    axis(
        &mut svg,
        BARS_TOP,
        BARS_BOTTOM,
        &format!("{max_count}"),
        "requests",
    );
    axis(
        &mut svg,
        LATENCY_TOP,
        LATENCY_BOTTOM,
        &format!("{max_ms} ms"),
        "latency",
    );

    let bar_width = slot * 0.7;
    let scale = (BARS_BOTTOM - BARS_TOP) / max_count;
    for (i, m) in minutes.iter().enumerate() {
        let iso = rfc3339(m.start_unix_ms);
        let hhmm = &iso[11..16];
        let parts: Vec<String> = shown
            .iter()
            .filter(|&&o| m.counts[o] > 0)
            .map(|&o| format!("{} {}", m.counts[o], OUTCOMES[o]))
            .collect();
        let _ = write!(
            svg,
            "<g class=\"minute\" data-minute=\"{iso}\"><title>{hhmm} UTC: {}</title>",
            if parts.is_empty() {
                "no requests".to_owned()
            } else {
                parts.join(", ")
            }
        );
        let mut y = BARS_BOTTOM;
        for &o in shown {
            let h = f64::from(m.counts[o]) * scale;
            if h > 0.0 {
                y -= h;
                let _ = write!(
                    svg,
                    "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{bar_width:.1}\" height=\"{h:.1}\" fill=\"{}\"/>",
                    center(i) - bar_width / 2.0,
                    COLORS[o]
                );
            }
        }
        svg.push_str("</g>\n");
        // Every fifth minute, counted back from the current one.
        if (minutes.len() - 1 - i).is_multiple_of(5) {
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{hhmm}</text>",
                center(i),
                BARS_BOTTOM + 15.0
            );
        }
    }

    let lat_scale = (LATENCY_BOTTOM - LATENCY_TOP) / max_ms;
    let y_of = |d: std::time::Duration| LATENCY_BOTTOM - d.as_secs_f64() * 1e3 * lat_scale;
    for (is_p50, color, dash) in [
        (true, P50_COLOR, ""),
        (false, P95_COLOR, " stroke-dasharray=\"5 3\""),
    ] {
        let points: Vec<Option<(f64, f64)>> = minutes
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let d = if is_p50 { m.p50 } else { m.p95 };
                d.map(|d| (center(i), y_of(d)))
            })
            .collect();
        // A minute without requests breaks the line rather than bridging
        // it; a lone point is only its dot.
        for run in points.split(Option::is_none).filter(|r| r.len() > 1) {
            let coords: Vec<String> = run
                .iter()
                .flatten()
                .map(|(x, y)| format!("{x:.1},{y:.1}"))
                .collect();
            let _ = writeln!(
                svg,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>",
                coords.join(" ")
            );
        }
        for (x, y) in points.iter().flatten() {
            let _ = write!(
                svg,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"{color}\"/>"
            );
        }
        svg.push('\n');
    }
    svg.push_str("</svg>");
    svg
}

/// One legend row above the bars: the outcomes shown, then the two lines.
fn legend(svg: &mut String, shown: &[usize]) {
    let mut x = LEFT;
    for &o in shown {
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"6\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{:.1}\" y=\"15\">{}</text>",
            COLORS[o],
            x + 14.0,
            Esc(OUTCOMES[o])
        );
        x += 24.0 + 6.5 * OUTCOMES[o].len() as f64;
    }
    for (name, color, dash) in [
        ("p50", P50_COLOR, ""),
        ("p95", P95_COLOR, " stroke-dasharray=\"5 3\""),
    ] {
        let _ = write!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"11\" x2=\"{:.1}\" y2=\"11\" stroke=\"{color}\" stroke-width=\"2\"{dash}/><text x=\"{:.1}\" y=\"15\">{name}</text>",
            x + 16.0,
            x + 20.0
        );
        x += 48.0;
    }
    svg.push('\n');
}

/// A panel's frame: its maximum and zero, and what it measures.
fn axis(svg: &mut String, top: f64, bottom: f64, max_label: &str, name: &str) {
    let right = WIDTH - RIGHT;
    let _ = writeln!(
        svg,
        "<line x1=\"{LEFT}\" y1=\"{top}\" x2=\"{right}\" y2=\"{top}\" stroke=\"#ddd\"/>\
         <line x1=\"{LEFT}\" y1=\"{bottom}\" x2=\"{right}\" y2=\"{bottom}\" stroke=\"#999\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
         <text x=\"{:.1}\" y=\"{bottom:.1}\" text-anchor=\"end\">0</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#666\">{name}</text>",
        LEFT - 4.0,
        top + 4.0,
        Esc(max_label),
        LEFT - 4.0,
        LEFT - 4.0,
        (top + bottom) / 2.0 + 4.0,
    );
}

/// What the chart shows, in words, for its `aria-label`.
fn description(minutes: &[MinuteStats]) -> String {
    let total: u32 = minutes.iter().map(MinuteStats::total).sum();
    let delivered: u32 = minutes.iter().map(|m| m.counts[0]).sum();
    let worst_p95 = minutes.iter().filter_map(|m| m.p95).max();
    let mut text = format!(
        "Requests per minute over the last {} minutes by outcome, with p50 and p95 latency: \
         {total} requests, {delivered} delivered, {} failed",
        minutes.len(),
        total - delivered
    );
    if let Some(p95) = worst_p95 {
        let _ = write!(text, "; highest p95 {}", latency(p95));
    }
    text.push_str(". The table below lists every number.");
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::recent::{MINUTES, RecentRequests};

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn one_bar_group_per_minute_and_one_rect_per_outcome_that_happened() {
        let recent = RecentRequests::new();
        for _ in 0..4 {
            recent.record_at(NOW, "delivered", Some(Duration::from_millis(3)));
        }
        recent.record_at(NOW, "no_agent_online", Some(Duration::from_millis(1)));
        recent.record_at(NOW - 60_000, "delivered", Some(Duration::from_millis(9)));
        recent.record_at(NOW - 180_000, "delivered", Some(Duration::from_millis(2)));
        let minutes = recent.snapshot_at(NOW);
        let svg = requests_chart(&minutes, &super::super::render::shown_outcomes(&minutes));
        assert!(svg.starts_with("<svg id=\"requests-chart\" role=\"img\" aria-label=\""));
        assert_eq!(svg.matches("<g class=\"minute\"").count(), MINUTES);
        let groups: Vec<&str> = svg.split("<g class=\"minute\"").skip(1).collect();
        let last = groups[MINUTES - 1].split("</g>").next().unwrap();
        assert_eq!(last.matches("<rect").count(), 2, "{last}");
        assert!(last.contains("4 delivered, 1 no_agent_online"));
        let quiet = groups[MINUTES - 3].split("</g>").next().unwrap();
        assert!(!quiet.contains("<rect") && quiet.contains("no requests"));
        assert!(
            svg.contains("7 requests, 6 delivered, 1 failed"),
            "the aria-label sums up"
        );
        // The last two minutes make a line per percentile; the lone minute
        // before the gap is only dots.
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 6);
    }

    #[test]
    fn the_tallest_bar_fills_the_panel_and_axes_are_round() {
        assert_eq!(nice_ceil(0.0), 1.0);
        assert_eq!(nice_ceil(3.0), 5.0);
        assert_eq!(nice_ceil(17.0), 20.0);
        assert_eq!(nice_ceil(100.0), 100.0);
        let recent = RecentRequests::new();
        for _ in 0..5 {
            recent.record_at(NOW, "delivered", None);
        }
        let minutes = recent.snapshot_at(NOW);
        let svg = requests_chart(&minutes, &[0]);
        let height = BARS_BOTTOM - BARS_TOP;
        assert!(svg.contains(&format!("height=\"{height:.1}\"")), "{svg}");
    }
}
