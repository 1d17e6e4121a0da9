//! axe-core, the accessibility rule engine, run in the page under test.
//! `scripts/web/install` puts it in tests/web/node_modules.
//!
//! Injected through WebDriver's execute-script, which Chromium runs through
//! the DevTools protocol, outside the page's CSP: the pages' strict
//! `default-src 'none'` would refuse a `<script>` element, but not this.

use std::path::PathBuf;
use std::sync::OnceLock;

use fantoccini::Client;
use serde_json::Value;

/// WCAG 2.0, 2.1 and 2.2 at levels A and AA, and axe's best practices.
pub const TAGS: &[&str] = &[
    "wcag2a",
    "wcag2aa",
    "wcag21a",
    "wcag21aa",
    "wcag22a",
    "wcag22aa",
    "best-practice",
];

/// One rule a page breaks, and where.
#[derive(Debug, Clone)]
pub struct Violation {
    pub id: String,
    /// `minor`, `moderate`, `serious` or `critical`.
    pub impact: String,
    pub help: String,
    pub help_url: String,
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
pub struct Node {
    /// A CSS selector of the element.
    pub target: String,
    /// Its opening HTML, as axe quotes it.
    pub html: String,
    /// What to fix, in axe's words.
    pub summary: String,
}

impl Violation {
    /// Serious and critical violations fail a page; the others are printed.
    pub fn blocks(&self) -> bool {
        matches!(self.impact.as_str(), "serious" | "critical")
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "[{}] {}: {} ({})",
            self.impact, self.id, self.help, self.help_url
        )?;
        for node in &self.nodes {
            writeln!(f, "    at {}: {}", node.target, node.html)?;
            for line in node.summary.lines() {
                writeln!(f, "      {line}")?;
            }
        }
        Ok(())
    }
}

fn script_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web/node_modules/axe-core/axe.min.js")
}

/// The library's source, read once per test binary.
fn source() -> &'static str {
    static SOURCE: OnceLock<String> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let path = script_path();
        std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run scripts/web/install to install axe-core",
                path.display()
            )
        })
    })
}

const RUN: &str = r#"
const done = arguments[arguments.length - 1];
const tags = arguments[0];
axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] })
  .then(r => done({ violations: r.violations.map(v => ({
      id: v.id, impact: v.impact || 'minor', help: v.help, helpUrl: v.helpUrl,
      nodes: v.nodes.map(n => ({
        target: [].concat(n.target).join(' '),
        html: n.html,
        summary: n.failureSummary || '',
      })),
    })) }),
    e => done({ error: String(e && e.stack || e) }));
"#;

/// Runs axe on the current page. A new page has lost the library, so it is
/// injected again whenever `window.axe` is missing.
pub async fn violations(client: &Client) -> Vec<Violation> {
    let present = client
        .execute("return typeof window.axe === 'object';", vec![])
        .await
        .expect("look for axe");
    if present != Value::Bool(true) {
        let script = format!("{}\nreturn typeof window.axe;", source());
        let kind = client.execute(&script, vec![]).await.expect("inject axe");
        assert_eq!(kind, "object", "axe-core did not load into the page");
    }
    let result = client
        .execute_async(RUN, vec![serde_json::json!(TAGS)])
        .await
        .expect("run axe");
    if let Some(error) = result.get("error") {
        panic!("axe.run failed: {error}");
    }
    let text = |v: &Value, key: &str| v[key].as_str().unwrap_or_default().to_owned();
    result["violations"]
        .as_array()
        .expect("axe violations")
        .iter()
        .map(|v| Violation {
            id: text(v, "id"),
            impact: text(v, "impact"),
            help: text(v, "help"),
            help_url: text(v, "helpUrl"),
            nodes: v["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| Node {
                    target: text(n, "target"),
                    html: text(n, "html"),
                    summary: text(n, "summary"),
                })
                .collect(),
        })
        .collect()
}
