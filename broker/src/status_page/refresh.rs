//! Reloading the status page on request only (WCAG 2.2.1, timing
//! adjustable): by default the page stays as it is until the reader follows
//! its Refresh link. `?refresh=N` opts in to a meta refresh every N seconds,
//! with a visible link that stops it; no script, so the strict CSP holds.

use std::fmt::Write;

/// The interval the opt-in link offers.
pub const OFFERED_SECS: u32 = 30;
/// Faster than this would reload the page under a reader still reading it,
/// and cost an audited request each time; slower is pointless.
const MIN_SECS: u32 = 10;
const MAX_SECS: u32 = 3600;

/// The interval a query asks for, within the bounds; `None` (no automatic
/// reload) when it asks for none or for something that is not a number.
pub fn requested(query: Option<&str>) -> Option<u32> {
    let value = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("refresh="))?;
    match value.parse::<u32>() {
        Ok(0) | Err(_) => None,
        Ok(secs) => Some(secs.clamp(MIN_SECS, MAX_SECS)),
    }
}

/// The `<meta>` that reloads the page, when the reader asked for it. The
/// reload keeps the query, so it goes on until the reader stops it.
pub fn meta(out: &mut String, secs: Option<u32>) {
    if let Some(secs) = secs {
        let _ = writeln!(out, "<meta http-equiv=\"refresh\" content=\"{secs}\">");
    }
}

/// The controls under the heading: refresh now, and start or stop the
/// automatic reload. Links rather than buttons: they are plain GETs.
pub fn controls(secs: Option<u32>) -> String {
    match secs {
        None => format!(
            "<a id=\"refresh\" href=\"/status\">Refresh</a> · \
             <a id=\"auto-refresh\" href=\"/status?refresh={OFFERED_SECS}\">Refresh every {OFFERED_SECS} s</a>"
        ),
        Some(secs) => format!(
            "This page reloads every {secs} s. \
             <a id=\"refresh\" href=\"/status?refresh={secs}\">Refresh now</a> · \
             <a id=\"stop-refresh\" href=\"/status\">Stop refreshing</a>"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_query_or_no_number_means_no_automatic_reload() {
        assert_eq!(requested(None), None);
        assert_eq!(requested(Some("")), None);
        assert_eq!(requested(Some("refresh=")), None);
        assert_eq!(requested(Some("refresh=soon")), None);
        assert_eq!(requested(Some("refresh=0")), None);
        assert_eq!(requested(Some("refresh=-5")), None);
        assert_eq!(requested(Some("norefresh=30")), None);
    }

    #[test]
    fn a_requested_interval_is_kept_within_bounds() {
        assert_eq!(requested(Some("refresh=30")), Some(30));
        assert_eq!(requested(Some("x=1&refresh=120")), Some(120));
        assert_eq!(requested(Some("refresh=1")), Some(MIN_SECS));
        assert_eq!(requested(Some("refresh=999999")), Some(MAX_SECS));
    }

    #[test]
    fn the_controls_offer_the_opt_in_and_then_the_way_out() {
        let off = controls(None);
        assert!(off.contains("href=\"/status\">Refresh</a>"), "{off}");
        assert!(off.contains("href=\"/status?refresh=30\""), "{off}");
        assert!(!off.contains("Stop"));
        let on = controls(Some(45));
        assert!(on.contains("reloads every 45 s"), "{on}");
        assert!(on.contains("href=\"/status\">Stop refreshing</a>"), "{on}");
        let mut head = String::new();
        meta(&mut head, None);
        assert!(head.is_empty());
        meta(&mut head, Some(45));
        assert_eq!(head, "<meta http-equiv=\"refresh\" content=\"45\">\n");
    }
}
