//! `bench median`: the median of each figure and ratio over several
//! reports (the targets are judged on the median of 3 runs).

/// The figures `bench median` reports, as JSON pointers into a report.
const MEDIAN_FIGURES: &[&str] = &[
    "/routed/p50_us",
    "/routed/p99_us",
    "/routed/rps",
    "/routed_cross_node/p50_us",
    "/routed_cross_node/p99_us",
    "/routed_cross_node/rps",
    "/routed_cross_node/cpu_us_per_call/total",
    "/direct_tonic/p50_us",
    "/direct_tonic/p99_us",
    "/direct_tonic/rps",
    "/nats_tls/p50_us",
    "/nats_tls/p99_us",
    "/nats_tls/rps",
    "/sessions/count",
    "/sessions/broker_rss_bytes_per_session",
    "/reconnect/count",
    "/reconnect/seconds",
    "/crypto/seal_open_us",
];

/// The ratios `bench median` reports: name, numerator, denominator.
const MEDIAN_RATIOS: &[(&str, &str, &str)] = &[
    (
        "routed_over_direct_p50",
        "/routed/p50_us",
        "/direct_tonic/p50_us",
    ),
    (
        "routed_over_direct_p99",
        "/routed/p99_us",
        "/direct_tonic/p99_us",
    ),
    ("routed_over_direct_rps", "/routed/rps", "/direct_tonic/rps"),
    ("routed_over_nats_p50", "/routed/p50_us", "/nats_tls/p50_us"),
    ("routed_over_nats_p99", "/routed/p99_us", "/nats_tls/p99_us"),
    ("routed_over_nats_rps", "/routed/rps", "/nats_tls/rps"),
    (
        "cross_node_over_routed_p50",
        "/routed_cross_node/p50_us",
        "/routed/p50_us",
    ),
    (
        "cross_node_over_routed_p99",
        "/routed_cross_node/p99_us",
        "/routed/p99_us",
    ),
    (
        "cross_node_over_routed_rps",
        "/routed_cross_node/rps",
        "/routed/rps",
    ),
    (
        "cross_node_over_routed_cpu",
        "/routed_cross_node/cpu_us_per_call/total",
        "/routed/cpu_us_per_call/total",
    ),
];

/// The median of each ratio (computed per report from its figures, so that
/// the rounding of the stored ratios does not matter) and of each figure
/// over `reports`: (name, median, how many reports had it).
pub fn medians(reports: &[serde_json::Value]) -> Vec<(String, f64, usize)> {
    let median_of = |mut values: Vec<f64>| {
        let n = values.len();
        crate::stats::median(&mut values).map(|m| (m, n))
    };
    let ratios = MEDIAN_RATIOS.iter().filter_map(|(name, a, b)| {
        let values = reports
            .iter()
            .filter_map(|r| {
                let b = r.pointer(b)?.as_f64().filter(|b| *b > 0.0)?;
                Some(r.pointer(a)?.as_f64()? / b)
            })
            .collect();
        median_of(values).map(|(m, n)| (format!("ratios.{name}"), m, n))
    });
    let figures = MEDIAN_FIGURES.iter().filter_map(|pointer| {
        let values = reports
            .iter()
            .filter_map(|r| r.pointer(pointer)?.as_f64())
            .collect();
        median_of(values).map(|(m, n)| (pointer.trim_start_matches('/').replace('/', "."), m, n))
    });
    ratios.chain(figures).collect()
}

/// `bench median`.
pub fn print_medians(paths: &[std::path::PathBuf]) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("read {}: {e}", path.display()))?;
        reports.push(serde_json::from_str(&text)?);
    }
    for (key, median, n) in medians(&reports) {
        let shown = if key.starts_with("ratios.") {
            format!("{median:.3}x")
        } else {
            format!("{median:.1}")
        };
        println!("{key:<40} {shown:>12}  (median of {n})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn medians_over_reports() {
        let run = |routed: f64, nats: f64| {
            serde_json::json!({"routed": {"p50_us": routed, "rps": 100.0},
                               "nats_tls": {"p50_us": nats}})
        };
        let reports = [run(120.0, 100.0), run(100.0, 100.0), run(280.0, 200.0)];
        let m = super::medians(&reports);
        assert!(
            m.contains(&("ratios.routed_over_nats_p50".into(), 1.2, 3)),
            "{m:?}"
        );
        assert!(m.contains(&("routed.p50_us".into(), 120.0, 3)), "{m:?}");
        assert!(m.contains(&("routed.rps".into(), 100.0, 3)), "{m:?}");
        assert!(!m.iter().any(|(k, _, _)| k == "crypto.seal_open_us"));
        assert!(!m.iter().any(|(k, _, _)| k == "ratios.routed_over_nats_rps"));
    }
}
