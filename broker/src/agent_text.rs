//! Text an agent chooses, its version string and the message of an
//! `AgentError`, reaches the broker's log, its status page, the operator's
//! `ListAgents` and the portal's status message. A log line is one line: a
//! newline or a terminal escape sequence in that text could forge a line of
//! the broker's own or rewrite the operator's terminal. So such text is made
//! printable once, where it enters the broker, and every later use is safe.

/// `text`, at most `max` characters of it, with each control character
/// (newline, carriage return, escape, DEL, the C1 range...) written as its
/// Rust escape (`\n`, `\r`, `\u{1b}`): visible, and still telling.
pub fn printable(text: &str, max: usize) -> String {
    text.chars()
        .flat_map(|c| {
            let (escaped, plain) = if c.is_control() {
                (Some(c.escape_default()), None)
            } else {
                (None, Some(c))
            };
            escaped.into_iter().flatten().chain(plain)
        })
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_escaped_and_the_rest_is_kept() {
        assert_eq!(
            printable(
                "1.2\n2026-12-05 ERROR forged\r\u{1b}[31mred\u{7f}\u{9b}",
                200
            ),
            "1.2\\n2026-12-05 ERROR forged\\r\\u{1b}[31mred\\u{7f}\\u{9b}"
        );
        assert_eq!(
            printable("dc01 version ünïcode ✓", 200),
            "dc01 version ünïcode ✓"
        );
        assert!(!printable("a\nb\u{1b}", 200).chars().any(char::is_control));
    }

    #[test]
    fn the_bound_counts_the_escaped_text() {
        assert_eq!(printable("abcdef", 3), "abc");
        assert_eq!(printable("\n\n\n", 4), "\\n\\n");
        assert_eq!(printable(&"x".repeat(10_000), 64).len(), 64);
    }
}
