//! The HTML of the status and login pages. Everything here is a pure
//! function of a view, so tests render pages without a broker. Every value
//! goes through [`Esc`], even the ones of restricted alphabets: the agent
//! version comes from the agent, and one forgotten escape is enough.

use std::fmt::{self, Write};
use std::time::Duration;

use proto::pb::AgentInfo;

use super::{chart, refresh};
use crate::recent::{MinuteStats, OUTCOMES};

/// Inline CSS: the CSP allows inline styles and nothing from elsewhere.
/// Wide tables scroll sideways inside `.scroll`, a focusable region (so a
/// keyboard can scroll it too), and the rest of the page reflows on a phone
/// (WCAG 1.4.10).
const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:1.5rem;color:#1b1b1b;max-width:72rem}\
h1{font-size:1.4rem;margin:0 0 .3rem}h2{font-size:1.15rem;margin:1.6rem 0 .5rem}\
table{border-collapse:collapse;margin:.4rem 0 1rem}.scroll{overflow-x:auto;max-width:100%}caption{text-align:left;font-weight:600;padding:.3rem 0}\
th,td{border:1px solid #c8c8c8;padding:.25rem .55rem;text-align:left;vertical-align:top}\
thead th{background:#eef0f3}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
tbody th[scope=rowgroup]{background:#f6f7f9;font-weight:normal}\
.ok{color:#1e6b24}.warn{color:#a4161a;font-weight:600}.muted{color:#555}\
.sw{display:inline-block;width:.8em;height:.8em;margin-right:.3em;vertical-align:-.05em}\
label{display:block;font-weight:600;margin:.8rem 0 .3rem}input{font:inherit;width:100%;max-width:44rem;padding:.35rem}\
button{font:inherit;margin-top:.8rem;padding:.35rem 1.2rem}\
:focus-visible{outline:3px solid #1a5fb4;outline-offset:2px}\
.error{border-left:4px solid #a4161a;padding:.3rem .7rem;background:#fdecec}code{font-size:.92em}";

/// HTML-escapes a value on output, for text and double-quoted attributes.
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// What the status page shows: names, ids, versions, addresses and counts,
/// never a key or a token.
pub struct StatusView {
    pub now_unix_ms: i64,
    pub node: NodeView,
    /// Cluster mode: this node's name and the other nodes.
    pub cluster: Option<ClusterView>,
    pub tenants: Vec<TenantView>,
    /// Oldest first, the current minute last.
    pub minutes: Vec<MinuteStats>,
    /// Seconds between automatic reloads, when the reader asked for them
    /// ([`refresh`]); `None`: the page reloads only on request.
    pub refresh_secs: Option<u32>,
}

pub struct NodeView {
    pub version: &'static str,
    /// "ready", "starting", "draining", "cluster unreachable" or "tenants
    /// unconfirmed", as /readyz says.
    pub condition: &'static str,
    /// Why, where the condition alone does not say: the lapsed lease on
    /// the tenants ([`crate::lease`]), with its cause.
    pub detail: Option<String>,
    pub started_unix_ms: i64,
    pub uptime: Duration,
}

pub struct ClusterView {
    pub this: String,
    /// Sorted by name.
    pub others: Vec<PeerView>,
}

/// Another node, as it last announced itself.
pub struct PeerView {
    pub name: String,
    pub version: String,
    pub condition: String,
    pub started_unix_ms: i64,
    pub seen_ago: Duration,
    pub agents: u32,
    pub in_flight: u64,
}

/// A node that has not announced itself for this long is shown as lost.
const PEER_LOST_AFTER: Duration = Duration::from_secs(15);

pub struct TenantView {
    pub name: String,
    pub connector_name: String,
    pub writeback_enabled: bool,
    /// Sorted by agent id.
    pub agents: Vec<AgentInfo>,
}

/// `2025-11-25T10:55:01Z`, for `datetime` attributes.
pub fn rfc3339(unix_ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(unix_ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `2025-11-25 10:55:01 UTC` inside a `<time>` element.
fn time_utc(unix_ms: i64) -> String {
    let iso = rfc3339(unix_ms);
    format!(
        "<time datetime=\"{iso}\">{} UTC</time>",
        iso.trim_end_matches('Z').replace('T', " ")
    )
}

pub fn latency(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    match ms {
        ms if ms < 10.0 => format!("{ms:.2} ms"),
        ms if ms < 1000.0 => format!("{ms:.0} ms"),
        ms => format!("{:.2} s", ms / 1e3),
    }
}

fn head(out: &mut String, title: &str, refresh_secs: Option<u32>) {
    out.push_str("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    refresh::meta(out, refresh_secs);
    let _ = write!(
        out,
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        Esc(title)
    );
}

pub fn status_page(view: &StatusView) -> String {
    let mut out = String::with_capacity(16 * 1024);
    head(&mut out, "Relay broker status", view.refresh_secs);
    let _ = writeln!(
        out,
        "<header><h1>Relay broker status</h1>\n<p id=\"as-of\">As of {}. {}</p></header>\n<main>",
        time_utc(view.now_unix_ms),
        refresh::controls(view.refresh_secs)
    );
    summary(&mut out, view);
    nodes(&mut out, view);
    agents(&mut out, view);
    requests(&mut out, &view.minutes);
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

/// The answer to "is every tenant connected?" before any table.
fn summary(out: &mut String, view: &StatusView) {
    let without: Vec<&str> = view
        .tenants
        .iter()
        .filter(|t| t.agents.is_empty())
        .map(|t| t.name.as_str())
        .collect();
    let agents: usize = view.tenants.iter().map(|t| t.agents.len()).sum();
    let _ = write!(out, "<p id=\"summary\" ");
    if view.tenants.is_empty() {
        out.push_str("class=\"muted\">No tenants yet.");
    } else if without.is_empty() {
        let _ = write!(
            out,
            "class=\"ok\">Every tenant ({}) has an agent online; {agents} agents in all.",
            view.tenants.len()
        );
    } else {
        let _ = write!(
            out,
            "class=\"warn\">{} of {} tenants have no agent online: {}.",
            without.len(),
            view.tenants.len(),
            Esc(&without.join(", "))
        );
    }
    out.push_str("</p>\n");
}

fn nodes(out: &mut String, view: &StatusView) {
    let node = &view.node;
    let agents: usize = view.tenants.iter().map(|t| t.agents.len()).sum();
    let in_flight: u64 = view
        .tenants
        .iter()
        .flat_map(|t| &t.agents)
        .map(|a| u64::from(a.in_flight))
        .sum();
    let uptime = Duration::from_secs(node.uptime.as_secs());
    let (intro, this_name) = match &view.cluster {
        None => (
            "Single node: this broker runs alone. A cluster would list every node here.".to_owned(),
            "this node".to_owned(),
        ),
        Some(c) => (
            format!(
                "Cluster of {} nodes, as they last announced themselves (every {} s).",
                c.others.len() + 1,
                crate::cluster::nodes::ANNOUNCE_EVERY.as_secs()
            ),
            format!("{} (this node)", c.this),
        ),
    };
    let _ = writeln!(
        out,
        "<section id=\"nodes\" aria-labelledby=\"nodes-h\">\n<h2 id=\"nodes-h\">Nodes</h2>\n\
         <p>{}</p>\n\
         <div class=\"scroll\" role=\"region\" tabindex=\"0\" aria-labelledby=\"nodes-caption\">\n\
         <table>\n<caption id=\"nodes-caption\">Nodes and their state</caption>\n<thead><tr><th scope=\"col\">Node</th><th scope=\"col\">Version</th><th scope=\"col\">State</th>\
         <th scope=\"col\">Up since</th><th scope=\"col\">Uptime</th><th scope=\"col\" class=\"n\">Agents online</th>\
         <th scope=\"col\" class=\"n\">Requests in flight</th></tr></thead>\n\
         <tbody><tr data-node=\"this\"><th scope=\"row\">{}</th><td>{}</td><td class=\"{}\">{}</td><td>{}</td>\
         <td>{}</td><td class=\"n\">{agents}</td><td class=\"n\">{in_flight}</td></tr>",
        Esc(&intro),
        Esc(&this_name),
        Esc(node.version),
        if node.condition == "ready" {
            "ok"
        } else {
            "warn"
        },
        Esc(&match &node.detail {
            Some(detail) => format!("{}: {detail}", node.condition),
            None => node.condition.to_owned(),
        }),
        time_utc(node.started_unix_ms),
        Esc(&humantime::format_duration(uptime).to_string()),
    );
    for peer in view.cluster.iter().flat_map(|c| &c.others) {
        let lost = peer.seen_ago > PEER_LOST_AFTER;
        let condition = if lost {
            format!(
                "not seen for {}",
                humantime::format_duration(Duration::from_secs(peer.seen_ago.as_secs()))
            )
        } else {
            peer.condition.clone()
        };
        let uptime = Duration::from_millis(
            (view.now_unix_ms - peer.started_unix_ms).max(0) as u64 / 1000 * 1000,
        );
        let _ = writeln!(
            out,
            "<tr data-node=\"{}\"><th scope=\"row\">{}</th><td>{}</td><td class=\"{}\">{}</td><td>{}</td>\
             <td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            Esc(&peer.name),
            Esc(&peer.name),
            Esc(&peer.version),
            if !lost && peer.condition == "ready" {
                "ok"
            } else {
                "warn"
            },
            Esc(&condition),
            time_utc(peer.started_unix_ms),
            if lost {
                "-".to_owned()
            } else {
                Esc(&humantime::format_duration(uptime).to_string()).to_string()
            },
            peer.agents,
            peer.in_flight,
        );
    }
    out.push_str("</tbody>\n</table>\n</div>\n</section>\n");
}

const AGENT_COLUMNS: usize = 6;

/// One table; one row group per tenant, headed by the tenant's settings.
fn agents(out: &mut String, view: &StatusView) {
    out.push_str(
        "<section id=\"tenants\" aria-labelledby=\"tenants-h\">\n<h2 id=\"tenants-h\">Tenants and agents</h2>\n\
         <div class=\"scroll\" role=\"region\" tabindex=\"0\" aria-labelledby=\"agents-caption\">\n\
         <table id=\"agents\">\n<caption id=\"agents-caption\">Agents online, per tenant</caption>\n\
         <thead><tr><th scope=\"col\">Agent id</th><th scope=\"col\">Version</th><th scope=\"col\">Remote address</th>\
         <th scope=\"col\">Connected since</th><th scope=\"col\">Last heartbeat</th><th scope=\"col\" class=\"n\">In flight</th></tr></thead>\n",
    );
    if view.tenants.is_empty() {
        let _ = writeln!(
            out,
            "<tbody><tr><td colspan=\"{AGENT_COLUMNS}\" class=\"muted\">No tenants yet.</td></tr></tbody>"
        );
    }
    for t in &view.tenants {
        let name = Esc(&t.name);
        let _ = write!(
            out,
            "<tbody id=\"tenant-{name}\" data-tenant=\"{name}\">\n<tr><th scope=\"rowgroup\" colspan=\"{AGENT_COLUMNS}\">\
             Tenant <strong>{name}</strong> · connector <span data-field=\"connector\">{}</span> · {} · ",
            Esc(&t.connector_name),
            if t.writeback_enabled {
                "<span data-field=\"writeback\" class=\"ok\">write-back enabled</span>"
            } else {
                "<span data-field=\"writeback\" class=\"warn\">write-back disabled</span>"
            },
        );
        match t.agents.len() {
            0 => out.push_str("<span class=\"warn\">no agent online</span>"),
            1 => out.push_str("1 agent online"),
            n => {
                let _ = write!(out, "{n} agents online");
            }
        }
        out.push_str("</th></tr>\n");
        for a in &t.agents {
            agent_row(out, a, view.now_unix_ms);
        }
        out.push_str("</tbody>\n");
    }
    out.push_str("</table>\n</div>\n</section>\n");
}

fn agent_row(out: &mut String, a: &AgentInfo, now_unix_ms: i64) {
    let ago = (now_unix_ms - a.last_heartbeat_unix_ms).max(0) / 1000;
    let remote = if a.remote_addr.is_empty() {
        "unknown"
    } else {
        &a.remote_addr
    };
    let id = Esc(&a.agent_id);
    let _ = writeln!(
        out,
        "<tr data-agent-id=\"{id}\"><td>{id}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ({ago} s ago)</td>\
         <td class=\"n\">{}</td></tr>",
        Esc(&a.agent_version),
        Esc(remote),
        time_utc(a.connected_since_unix_ms),
        time_utc(a.last_heartbeat_unix_ms),
        a.in_flight
    );
}

/// Outcomes to show: delivered always, failures only if they happened.
pub fn shown_outcomes(minutes: &[MinuteStats]) -> Vec<usize> {
    (0..OUTCOMES.len())
        .filter(|&i| i == 0 || minutes.iter().any(|m| m.counts[i] > 0))
        .collect()
}

fn requests(out: &mut String, minutes: &[MinuteStats]) {
    let shown = shown_outcomes(minutes);
    let _ = writeln!(
        out,
        "<section id=\"requests\" aria-labelledby=\"requests-h\">\n<h2 id=\"requests-h\">Requests, last {} minutes</h2>\n{}",
        minutes.len(),
        chart::requests_chart(minutes, &shown)
    );
    out.push_str(
        "<div class=\"scroll\" role=\"region\" tabindex=\"0\" aria-labelledby=\"requests-caption\">\n\
         <table id=\"requests-table\">\n<caption id=\"requests-caption\">Requests per minute by outcome, and latency</caption>\n<thead><tr><th scope=\"col\">Minute (UTC)</th>",
    );
    for &i in &shown {
        let _ = write!(
            out,
            "<th scope=\"col\" class=\"n\" data-outcome=\"{0}\"><span class=\"sw\" style=\"background:{1}\"></span>{0}</th>",
            Esc(OUTCOMES[i]),
            chart::COLORS[i]
        );
    }
    out.push_str("<th scope=\"col\" class=\"n\">Total</th><th scope=\"col\" class=\"n\">p50</th><th scope=\"col\" class=\"n\">p95</th></tr></thead>\n<tbody>\n");
    for m in minutes {
        let iso = rfc3339(m.start_unix_ms);
        let _ = write!(
            out,
            "<tr data-minute=\"{iso}\"><th scope=\"row\"><time datetime=\"{iso}\">{}</time></th>",
            &iso[11..16]
        );
        for &i in &shown {
            let _ = write!(
                out,
                "<td class=\"n\" data-outcome=\"{}\">{}</td>",
                Esc(OUTCOMES[i]),
                m.counts[i]
            );
        }
        let dash = || "–".to_owned();
        let _ = writeln!(
            out,
            "<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            m.total(),
            m.p50.map_or_else(dash, latency),
            m.p95.map_or_else(dash, latency)
        );
    }
    out.push_str("</tbody>\n<tfoot><tr id=\"requests-total\"><th scope=\"row\">All</th>");
    for &i in &shown {
        let sum: u32 = minutes.iter().map(|m| m.counts[i]).sum();
        let _ = write!(
            out,
            "<td class=\"n\" data-outcome=\"{}\">{sum}</td>",
            Esc(OUTCOMES[i])
        );
    }
    let total: u32 = minutes.iter().map(MinuteStats::total).sum();
    let _ = writeln!(
        out,
        "<td class=\"n\">{total}</td><td colspan=\"2\"></td></tr></tfoot>\n</table>\n</div>\n\
         <p class=\"muted\">Latency runs from a request's arrival to its answer; percentiles are estimated from a coarse histogram.</p>\n</section>"
    );
}

/// The login form, with the reason the last token was refused, if any. The
/// token field is never filled in again: a refused token is not echoed.
pub fn login_page(refused: Option<&str>) -> String {
    let mut out = String::with_capacity(4 * 1024);
    head(&mut out, "Relay broker status: sign in", None);
    out.push_str(
        "<main>\n<h1>Relay broker status</h1>\n\
         <p>Sign in with an operator token. Mint one where the operator key is:<br>\
         <code>relayctl --operator-key-file operator.key operator-token --lifetime 1h</code></p>\n",
    );
    let described = if let Some(reason) = refused {
        let _ = writeln!(
            out,
            "<p id=\"error\" class=\"error\" role=\"alert\">Refused: {}</p>",
            Esc(reason)
        );
        "token-help error"
    } else {
        "token-help"
    };
    let _ = writeln!(
        out,
        "<form method=\"post\" action=\"/status/login\">\n\
         <label for=\"token\">Operator token</label>\n\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" spellcheck=\"false\" aria-describedby=\"{described}\">\n\
         <p id=\"token-help\" class=\"muted\">It starts with <code>SharedAccessSignature</code>. \
         This browser keeps it in a cookie for this page until the token expires.</p>\n\
         <button id=\"submit\" type=\"submit\">Sign in</button>\n</form>\n</main>\n</body>\n</html>"
    );
    out
}

/// The answer to a script whose `Authorization` header was refused.
pub fn refused_page(reason: &str) -> String {
    let mut out = String::with_capacity(2 * 1024);
    head(&mut out, "Relay broker status: refused", None);
    let _ = writeln!(
        out,
        "<main>\n<h1>Access refused</h1>\n<p id=\"error\" class=\"error\" role=\"alert\">{}</p>\n\
         <p><a href=\"/status/login\">Sign in with another token</a></p>\n</main>\n</body>\n</html>",
        Esc(reason)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recent::{MINUTES, RecentRequests};

    const NOW: i64 = 1_700_000_000_000;

    fn agent(id: &str, version: &str) -> AgentInfo {
        AgentInfo {
            agent_id: id.into(),
            agent_version: version.into(),
            connected_since_unix_ms: NOW - 3_600_000,
            last_heartbeat_unix_ms: NOW - 7_000,
            session_id: "0123456789abcdef".into(),
            in_flight: 2,
            remote_addr: "192.0.2.7:50123".into(),
        }
    }

    fn view(tenants: Vec<TenantView>, recent: &RecentRequests) -> StatusView {
        StatusView {
            now_unix_ms: NOW,
            node: NodeView {
                version: "0.1.0",
                condition: "ready",
                detail: None,
                started_unix_ms: NOW - 90_000,
                uptime: Duration::from_secs(90),
            },
            cluster: None,
            tenants,
            minutes: recent.snapshot_at(NOW),
            refresh_secs: None,
        }
    }

    fn tenant(name: &str, agents: Vec<AgentInfo>) -> TenantView {
        TenantView {
            name: name.into(),
            connector_name: format!("{name} - AAD"),
            writeback_enabled: true,
            agents,
        }
    }

    #[test]
    fn a_cluster_lists_every_node_and_flags_the_silent_one() {
        let mut v = view(Vec::new(), &RecentRequests::new());
        let peer = |name: &str, seen_ago| PeerView {
            name: name.into(),
            version: "0.1.0".into(),
            condition: "ready".into(),
            started_unix_ms: NOW - 60_000,
            seen_ago: Duration::from_secs(seen_ago),
            agents: 2,
            in_flight: 1,
        };
        v.cluster = Some(ClusterView {
            this: "a".into(),
            others: vec![peer("b", 3), peer("<c>", 40)],
        });
        let page = status_page(&v);
        assert!(page.contains("Cluster of 3 nodes"), "{page}");
        assert!(page.contains("a (this node)"));
        assert!(page.contains("data-node=\"b\""));
        assert!(page.contains("&lt;c&gt;"), "names are escaped");
        assert!(!page.contains("<c>"));
        assert!(page.contains("not seen for 40s"), "{page}");
    }

    #[test]
    fn escapes_every_special_character() {
        assert_eq!(
            Esc(r#"<a href="x">&'</a>"#).to_string(),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(Esc("plain ünïcode").to_string(), "plain ünïcode");
    }

    #[test]
    fn a_hostile_agent_version_is_shown_as_text() {
        let recent = RecentRequests::new();
        let page = status_page(&view(
            vec![tenant(
                "contoso",
                vec![agent("dc01", "<script>alert(1)</script>\"'")],
            )],
            &recent,
        ));
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;"));
    }

    #[test]
    fn a_tenant_with_two_agents_renders_both_rows_in_its_section() {
        let recent = RecentRequests::new();
        let page = status_page(&view(
            vec![
                tenant("contoso", vec![agent("dc01", "1.0"), agent("dc02", "1.1")]),
                tenant("fabrikam", vec![]),
            ],
            &recent,
        ));
        let section = page
            .split("<tbody id=\"tenant-contoso\"")
            .nth(1)
            .and_then(|s| s.split("</tbody>").next())
            .expect("contoso section");
        assert_eq!(section.matches("<tr data-agent-id=").count(), 2);
        assert!(
            section.contains("data-agent-id=\"dc01\"")
                && section.contains("data-agent-id=\"dc02\"")
        );
        assert!(section.contains("192.0.2.7:50123") && section.contains("(7 s ago)"));
        assert!(section.contains("2023-11-14 21:13:20 UTC"), "{section}");
        assert!(page.contains("<table id=\"agents\">"));
        assert!(page.contains("<tbody id=\"tenant-fabrikam\""));
        assert!(page.contains("1 of 2 tenants have no agent online: fabrikam."));
        assert!(page.contains("Nodes") && page.contains("Single node"));
    }

    #[test]
    fn the_page_reloads_only_when_the_reader_asks() {
        let recent = RecentRequests::new();
        let mut v = view(vec![], &recent);
        let still = status_page(&v);
        assert!(!still.contains("http-equiv=\"refresh\""), "{still}");
        assert!(still.contains("<a id=\"refresh\" href=\"/status\">Refresh</a>"));
        assert!(still.contains("href=\"/status?refresh=30\""));
        v.refresh_secs = Some(30);
        let moving = status_page(&v);
        assert!(moving.contains("<meta http-equiv=\"refresh\" content=\"30\">"));
        assert!(moving.contains("<a id=\"stop-refresh\" href=\"/status\">Stop refreshing</a>"));
    }

    #[test]
    fn every_table_scrolls_in_its_own_labelled_region() {
        let page = status_page(&view(
            vec![tenant("contoso", vec![])],
            &RecentRequests::new(),
        ));
        let tables = page.matches("<table").count();
        assert_eq!(tables, 3);
        assert_eq!(
            page.matches("<div class=\"scroll\" role=\"region\" tabindex=\"0\" aria-labelledby=\"")
                .count(),
            tables
        );
        for caption in ["nodes-caption", "agents-caption", "requests-caption"] {
            assert!(
                page.contains(&format!("<caption id=\"{caption}\">")),
                "{caption}"
            );
        }
    }

    #[test]
    fn the_requests_table_repeats_the_chart_numbers() {
        let recent = RecentRequests::new();
        for _ in 0..3 {
            recent.record_at(NOW, "delivered", Some(Duration::from_millis(4)));
        }
        recent.record_at(
            NOW - 60_000,
            "no_agent_online",
            Some(Duration::from_millis(1)),
        );
        let page = status_page(&view(vec![], &recent));
        let total = page.split("id=\"requests-total\"").nth(1).unwrap();
        assert!(total.contains("data-outcome=\"delivered\">3</td>"));
        assert!(total.contains("data-outcome=\"no_agent_online\">1</td>"));
        assert!(
            !page.contains("data-outcome=\"agents_busy\""),
            "outcomes that did not happen are left out"
        );
        assert_eq!(page.matches("<tr data-minute=").count(), MINUTES);
    }

    #[test]
    fn the_login_page_names_the_reason_and_labels_its_field() {
        let page = login_page(Some("the token expired"));
        assert!(page.contains("Refused: the token expired"));
        assert!(page.contains("<label for=\"token\">") && page.contains("id=\"token\""));
        assert!(page.contains("id=\"submit\""));
        assert!(
            !page.contains("http-equiv=\"refresh\""),
            "a reload would wipe the field"
        );
        assert!(!login_page(None).contains("id=\"error\""));
    }
}
