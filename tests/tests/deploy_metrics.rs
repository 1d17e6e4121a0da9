//! The deployment files and /metrics agree: every metric named by the alert
//! rules (deploy/prometheus/relay-alerts.yml, expressions and annotations)
//! and by the Grafana dashboard's expressions (deploy/grafana/
//! relay-dashboard.json) is in a real broker's scrape, as a family or one of
//! its type's series suffixes. A renamed metric fails here, not in a
//! silent alert that can never fire. And the metrics of issue 21 are there
//! with sane values: build info, the process metrics, store health, the
//! certificate's expiry, and tenant labels bounded by
//! `limits.metrics_tenant_labels`.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use tests::{BrokerBuilder, EchoAgent};

/// Names Prometheus itself makes, not the broker.
const FROM_PROMETHEUS: [&str; 1] = ["up"];

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The metric names in a text: identifiers that start with `relay_` or
/// `process_`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("relay_") || w.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// Every PromQL expression of the dashboard, its panels' and its variables'.
fn dashboard_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// `# TYPE` of each family in an OpenMetrics scrape.
fn families(scrape: &str) -> HashMap<String, String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let (name, kind) = l.split_once(' ')?;
            Some((name.to_owned(), kind.to_owned()))
        })
        .collect()
}

/// Whether `name` is a family of the scrape or one of the series its type
/// has (OpenMetrics: a counter's `_total`, a histogram's `_bucket`,
/// `_sum` and `_count`).
fn exported(families: &HashMap<String, String>, name: &str) -> bool {
    families.iter().any(|(family, kind)| {
        let suffixes: &[&str] = match kind.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "info" => &["_info"],
            _ => &[],
        };
        name == family
            || name
                .strip_prefix(family.as_str())
                .is_some_and(|rest| suffixes.contains(&rest))
    })
}

fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.split(' ').next()?.parse().ok()
    })
}

#[tokio::test]
async fn every_metric_the_alerts_and_the_dashboard_use_is_exported() {
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/relay-alerts.yml"))
        .expect("the alert rules");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/relay-dashboard.json"))
            .expect("the dashboard"),
    )
    .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() > 20, "the dashboard's expressions: {exprs:?}");
    let from_rules = metric_names(&rules);
    let from_dashboard = metric_names(&exprs.join("\n"));
    assert!(from_rules.len() > 8, "{from_rules:?}");
    for name in FROM_PROMETHEUS {
        assert!(rules.contains(&format!("{name}{{")), "{name}");
    }

    let broker = BrokerBuilder::new().start().await;
    let scrape = broker.metrics().await;
    let families = families(&scrape);
    // The check can fail: a name no family has, or a suffix its type lacks.
    assert!(!exported(&families, "relay_no_such_metric"));
    assert!(!exported(&families, "relay_agents_connected_total"));
    assert!(exported(&families, "relay_request_duration_seconds_bucket"));
    let missing: Vec<_> = from_rules
        .iter()
        .map(|n| ("relay-alerts.yml", n))
        .chain(from_dashboard.iter().map(|n| ("relay-dashboard.json", n)))
        .filter(|(_, name)| !exported(&families, name))
        .collect();
    assert!(
        missing.is_empty(),
        "named but not exported: {missing:?}\nscrape:\n{scrape}"
    );
}

#[tokio::test]
async fn build_process_store_and_certificate_metrics_and_bounded_tenant_labels() {
    let broker = BrokerBuilder::new()
        .section("[limits]\nmetrics_tenant_labels = 1")
        .start()
        .await;
    let first = broker.create_tenant("contoso").await;
    let second = broker.create_tenant("fabrikam").await;
    let third = broker.create_tenant("northwind").await;
    let _agents = [
        EchoAgent::start(&broker, &first, "dc01").await,
        EchoAgent::start(&broker, &second, "dc01").await,
        EchoAgent::start(&broker, &third, "dc01").await,
        EchoAgent::start(&broker, &third, "dc02").await,
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    let scrape = loop {
        let scrape = broker.metrics().await;
        if value(&scrape, "relay_agents_connected{tenant=\"_other\"}") == Some(3.0)
            || Instant::now() > deadline
        {
            break scrape;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The first tenant seen has its label; the others are summed.
    assert_eq!(
        value(&scrape, "relay_agents_connected{tenant=\"contoso\"}"),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        value(&scrape, "relay_agents_connected{tenant=\"_other\"}"),
        Some(3.0),
        "{scrape}"
    );
    assert!(!scrape.contains("tenant=\"fabrikam\""), "{scrape}");
    assert!(!scrape.contains("tenant=\"northwind\""), "{scrape}");

    let build = scrape
        .lines()
        .find(|l| l.starts_with("relay_build_info{"))
        .unwrap_or_else(|| panic!("no relay_build_info:\n{scrape}"));
    assert!(build.contains("version=\""), "{build}");
    assert!(build.contains("commit=\""), "{build}");
    assert!(build.ends_with(" 1"), "{build}");

    let now = proto::time::unix_secs() as f64;
    assert_eq!(value(&scrape, "relay_store_up"), Some(1.0), "{scrape}");
    let expiry = value(&scrape, "relay_tls_certificate_expiry_timestamp_seconds").expect("expiry");
    assert!(expiry > now, "the test certificate is valid: {expiry}");
    let start = value(&scrape, "process_start_time_seconds").expect("start time");
    assert!(
        start <= now + 1.0 && start > now - 600.0,
        "the broker started in this test: {start} vs {now}"
    );
    let cpu = value(&scrape, "process_cpu_seconds_total").expect("cpu");
    assert!(cpu > 0.0, "{cpu}");
    let open = value(&scrape, "process_open_fds").expect("open fds");
    let max = value(&scrape, "process_max_fds").expect("max fds");
    assert!(open > 5.0 && open < max, "{open} of {max}");
    let rss = value(&scrape, "process_resident_memory_bytes").expect("rss");
    let virt = value(&scrape, "process_virtual_memory_bytes").expect("virtual");
    assert!(rss > 1e6 && virt >= rss, "rss {rss}, virtual {virt}");
    assert!(value(&scrape, "process_threads").expect("threads") >= 1.0);
}
