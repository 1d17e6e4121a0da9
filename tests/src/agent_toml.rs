//! An agent's TOML configuration, built the one way every test builds it:
//! the broker, the CA, the tenant, the agent id and its Listen key file,
//! reconnecting fast (100 ms to 1 s) as tests want, and whatever a test adds.

use std::path::Path;

/// A TOML basic string: quotes, backslashes and control characters escaped.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A path as a TOML string (test paths are UTF-8).
pub fn quote_path(path: &Path) -> String {
    quote(&path.to_string_lossy())
}

/// The agent's `agent.toml`.
#[derive(Debug, Clone)]
pub struct AgentToml {
    broker: String,
    lines: Vec<String>,
    sections: Vec<String>,
}

impl AgentToml {
    /// An agent of `tenant` at `broker_url`, trusting `ca_file`.
    pub fn new(
        broker_url: &str,
        ca_file: &Path,
        tenant: &str,
        agent_id: &str,
        listen_key_file: &Path,
    ) -> AgentToml {
        AgentToml {
            broker: quote(broker_url),
            lines: vec![
                format!("ca_file = {}", quote_path(ca_file)),
                format!("tenant = {}", quote(tenant)),
                format!("agent_id = {}", quote(agent_id)),
                format!("listen_key_file = {}", quote_path(listen_key_file)),
                "reconnect_min = \"100ms\"".to_owned(),
                "reconnect_max = \"1s\"".to_owned(),
            ],
            sections: Vec::new(),
        }
    }

    /// The `broker` setting as a TOML value of its own: a list of
    /// addresses, as a cluster's agents have.
    pub fn broker_value(mut self, toml_value: impl Into<String>) -> AgentToml {
        self.broker = toml_value.into();
        self
    }

    /// `key = "path"`.
    pub fn path(mut self, key: &str, path: &Path) -> AgentToml {
        self.lines.push(format!("{key} = {}", quote_path(path)));
        self
    }

    /// A top-level `key = value` line, the value already TOML.
    pub fn line(mut self, line: impl Into<String>) -> AgentToml {
        self.lines.push(line.into());
        self
    }

    /// A table (`[[forests]]` and its keys), after every top-level line.
    pub fn section(mut self, text: impl Into<String>) -> AgentToml {
        self.sections.push(text.into());
        self
    }

    pub fn build(&self) -> String {
        let mut out = format!("broker = {}\n", self.broker);
        for line in self.lines.iter().chain(&self.sections) {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// Writes it to `path`.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.build()).expect("agent config");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_toml_strings_and_the_agent_reads_them() {
        assert_eq!(quote(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(quote("x\ny\u{1b}"), r#""x\u000Ay\u001B""#);
        let ca = Path::new("/ca \"x\"");
        let text = AgentToml::new("https://h:1", ca, "t", "a", Path::new("/k"))
            .line("drain_grace = \"2s\"")
            .build();
        let config = writeback_agent::AgentConfig::from_toml(&text).expect("valid");
        assert_eq!(
            (config.tenant.as_str(), config.agent_id().as_str()),
            ("t", "a")
        );
        assert_eq!(config.ca_file.as_deref(), Some(ca));
    }
}
