//! An SVG of the latency distributions, drawn from the JSON report (so
//! `bench plot --json report.json --out latency.svg` redraws it later):
//! latency (log scale) against percentile on a "nines" scale, where 90%,
//! 99% and 99.9% are evenly spaced, so the tail is as visible as the median.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

const SERIES: &[(&str, &str)] = &[
    ("routed", "#d62728"),
    ("routed_cross_node", "#9467bd"),
    ("direct_tonic", "#1f77b4"),
    ("nats_tls", "#2ca02c"),
];
const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 76.0;
const RIGHT: f64 = 36.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
/// The x axis ends at 99.99%: four nines.
const MAX_NINES: f64 = 4.0;

/// `bench plot`.
pub fn from_json_file(json: &Path, out: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(json).with_context(|| format!("read {}", json.display()))?;
    let report: Value = serde_json::from_str(&text).context("the report is not JSON")?;
    write(&report, out)
}

pub fn write(report: &Value, out: &Path) -> anyhow::Result<()> {
    let svg = svg(report).context("the report has no latency distribution to plot")?;
    std::fs::write(out, svg).with_context(|| format!("write {}", out.display()))
}

/// A scenario's name, colour and `(percentile, µs)` points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// Percentile -> position on the nines scale: 0 -> 0, 90 -> 1, 99 -> 2.
fn nines(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(10f64.powf(-MAX_NINES));
    -rest.log10()
}

/// The SVG, or None when no scenario in the report has a distribution.
pub fn svg(report: &Value) -> Option<String> {
    let series: Vec<Series> = SERIES
        .iter()
        .filter_map(|(name, color)| {
            let points = report[name]["distribution"].as_array()?;
            let points: Vec<(f64, f64)> = points
                .iter()
                .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
                .filter(|(pct, us)| *pct < 100.0 && *us > 0.0)
                .collect();
            (!points.is_empty()).then_some((*name, *color, points))
        })
        .collect();
    if series.is_empty() {
        return None;
    }
    let all = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|(_, us)| *us));
    let (lo, hi) = all.fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo_dec, hi_dec) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |pct: f64| LEFT + nines(pct) / MAX_NINES * plot_w;
    let y = |us: f64| TOP + plot_h - (us.log10() - lo_dec) / (hi_dec - lo_dec) * plot_h;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = format!(
        "Latency, one call in flight ({} mode, {} B payload, TLS)",
        report["mode"].as_str().unwrap_or("?"),
        report["settings"]["payload_bytes"].as_u64().unwrap_or(0)
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        WIDTH / 2.0,
        escape(&title)
    );
    // Horizontal grid: decades and 2x, 5x within them.
    let mut decade = lo_dec;
    while decade <= hi_dec {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powf(decade);
            if v.log10() > hi_dec + 1e-9 {
                continue;
            }
            let yy = y(v);
            let stroke = if m == 1.0 { "#bbb" } else { "#eee" };
            let _ = writeln!(
                s,
                r#"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="{stroke}"/>"#,
                LEFT + plot_w
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                yy + 4.0,
                format_us(v)
            );
        }
        decade += 1.0;
    }
    for (pct, label) in [
        (0.0, "0%"),
        (50.0, "50%"),
        (90.0, "90%"),
        (99.0, "99%"),
        (99.9, "99.9%"),
        (99.99, "99.99%"),
    ] {
        let xx = x(pct);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            TOP + plot_h
        );
        let _ = writeln!(
            s,
            r#"<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            TOP + plot_h + 16.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">latency (µs, log scale)</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    for (i, (name, color, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|(pct, us)| format!("{:.1},{:.1}", x(*pct), y(*us)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let p50 = report[name]["p50_us"].as_f64().unwrap_or(0.0);
        let p99 = report[name]["p99_us"].as_f64().unwrap_or(0.0);
        let ly = TOP + 14.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"/>"#,
            LEFT + 12.0,
            ly - 4.0,
            LEFT + 36.0,
            ly - 4.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{ly:.1}">{} (p50 {} µs, p99 {} µs)</text>"#,
            LEFT + 42.0,
            escape(name),
            p50,
            p99
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>"##
    );
    s.push_str("</svg>\n");
    Some(s)
}

fn format_us(v: f64) -> String {
    if v >= 1000.0 {
        format!("{}k", v / 1000.0)
    } else {
        format!("{v}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_scale() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.0) - 2.0).abs() < 1e-9);
        assert!((nines(100.0) - MAX_NINES).abs() < 1e-9);
    }

    #[test]
    fn draws_the_series_present() {
        let report = serde_json::json!({
            "mode": "quick",
            "settings": {"payload_bytes": 512},
            "routed": {"p50_us": 300.0, "p99_us": 900.0,
                       "distribution": [[0.0, 200.0], [50.0, 300.0], [99.0, 900.0], [100.0, 5000.0]]},
            "nats_tls": {"p50_us": 150.0, "p99_us": 400.0,
                         "distribution": [[0.0, 100.0], [50.0, 150.0], [99.0, 400.0]]}
        });
        let drawn = svg(&report).unwrap();
        assert!(drawn.starts_with("<svg"));
        assert_eq!(drawn.matches("<polyline").count(), 2);
        assert!(drawn.contains("routed (p50 300 µs, p99 900 µs)"));
        assert!(!drawn.contains("direct_tonic"));
        assert!(svg(&serde_json::json!({})).is_none());
    }
}
