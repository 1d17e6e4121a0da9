//! RFC 5424 syslog messages, the event's fields as structured data, for a
//! unix datagram socket (`/dev/log`), UDP (RFC 5426, one message per
//! datagram) or TCP (RFC 6587 octet counting: `LEN SP MSG`, so a message
//! may hold any byte without breaking the framing).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::Deserialize;

use super::{Event, Level};

/// The SD-ID of the event's structured data. 32473 is the private
/// enterprise number RFC 5612 reserves for documentation and examples: the
/// project has no PEN of its own. Collectors key on the whole SD-ID, so a
/// registered number would be a breaking change, announced as one.
pub const SD_ID: &str = "event@32473";

/// Where syslog messages go: `unix:/dev/log`, `udp:host:port` or
/// `tcp:host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SyslogTarget {
    /// A unix datagram socket (syslog daemons' `/dev/log`).
    Unix(PathBuf),
    /// `host:port`, resolved at every (re)connection.
    Udp(String),
    Tcp(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SyslogTargetError {
    #[error("syslog target {0:?} must start with unix:, udp: or tcp:")]
    Scheme(String),
    #[error("syslog target {0:?} needs an absolute socket path after unix:")]
    Path(String),
    #[error("syslog target {0:?} needs host:port with a port from 1 to 65535")]
    HostPort(String),
}

impl TryFrom<String> for SyslogTarget {
    type Error = SyslogTargetError;

    fn try_from(text: String) -> Result<SyslogTarget, SyslogTargetError> {
        let host_port = |rest: &str| {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| SyslogTargetError::HostPort(text.clone()))?;
            match port.parse::<u16>() {
                Ok(p) if p > 0 && !host.is_empty() => Ok(rest.to_owned()),
                _ => Err(SyslogTargetError::HostPort(text.clone())),
            }
        };
        if let Some(path) = text.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(SyslogTargetError::Path(text));
            }
            Ok(SyslogTarget::Unix(PathBuf::from(path)))
        } else if let Some(rest) = text.strip_prefix("udp:") {
            host_port(rest).map(SyslogTarget::Udp)
        } else if let Some(rest) = text.strip_prefix("tcp:") {
            host_port(rest).map(SyslogTarget::Tcp)
        } else {
            Err(SyslogTargetError::Scheme(text))
        }
    }
}

impl std::fmt::Display for SyslogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyslogTarget::Unix(path) => write!(f, "unix:{}", path.display()),
            SyslogTarget::Udp(addr) => write!(f, "udp:{addr}"),
            SyslogTarget::Tcp(addr) => write!(f, "tcp:{addr}"),
        }
    }
}

/// The facilities an agent's events may be filed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Facility {
    User,
    Daemon,
    Auth,
    /// Password events name accounts: by default they go where only
    /// administrators read (`/var/log/secure`, `auth.log` with mode 0640).
    #[default]
    Authpriv,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    pub fn code(self) -> u8 {
        match self {
            Facility::User => 1,
            Facility::Daemon => 3,
            Facility::Auth => 4,
            Facility::Authpriv => 10,
            Facility::Local0 => 16,
            Facility::Local1 => 17,
            Facility::Local2 => 18,
            Facility::Local3 => 19,
            Facility::Local4 => 20,
            Facility::Local5 => 21,
            Facility::Local6 => 22,
            Facility::Local7 => 23,
        }
    }
}

/// The header fields that do not come from the event.
pub struct Origin<'a> {
    pub facility: Facility,
    pub hostname: &'a str,
    pub app_name: &'a str,
    pub pid: u32,
}

/// One RFC 5424 message. MSGID is the event id, so collectors can filter
/// on it without parsing the structured data.
pub fn format(event: &Event, time: SystemTime, origin: &Origin) -> String {
    let severity = super::journald::priority(event.level);
    let pri = u32::from(origin.facility.code()) * 8 + u32::from(severity);
    let mut out = format!(
        "<{pri}>1 {} {} {} {} {} [{SD_ID}",
        humantime::format_rfc3339_millis(time),
        header_field(origin.hostname, 255),
        header_field(origin.app_name, 48),
        origin.pid,
        event.event_id,
    );
    let level = match event.level {
        Level::Information => "information",
        Level::Warning => "warning",
        Level::Error => "error",
    };
    let _ = write!(out, " id=\"{}\" level=\"{level}\"", event.event_id);
    for (name, value) in event.fields() {
        let _ = write!(out, " {name}=\"{}\"", escape_param(&value));
    }
    out.push_str("] ");
    // RFC 5424 6.4: a UTF-8 MSG starts with a BOM. Plain ASCII is valid
    // as it is, and many collectors show a BOM as noise, so only then.
    if !event.message.is_ascii() {
        out.push('\u{feff}');
    }
    out.push_str(&event.message);
    out
}

/// RFC 6587 octet counting, for TCP.
pub fn octet_counted(message: &[u8]) -> Vec<u8> {
    let mut out = format!("{} ", message.len()).into_bytes();
    out.extend_from_slice(message);
    out
}

/// A header field: printable US-ASCII without spaces, at most `max`
/// characters, or the NILVALUE `-` when nothing is left.
fn header_field(value: &str, max: usize) -> String {
    let clean: String = value
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if clean.is_empty() {
        "-".to_owned()
    } else {
        clean
    }
}

/// RFC 5424 6.3.3: `"`, `\` and `]` are escaped with a backslash inside
/// PARAM-VALUE.
pub fn escape_param(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::ids;
    use std::time::Duration;

    fn origin() -> Origin<'static> {
        Origin {
            facility: Facility::Authpriv,
            hostname: "dc01.contoso.example",
            app_name: "writeback-agent",
            pid: 4242,
        }
    }

    #[test]
    fn a_message_has_the_rfc5424_header_and_the_event_as_structured_data() {
        let mut e = Event::new(
            ids::INSUFFICIENT_PERMISSIONS,
            Level::Warning,
            "permission denied",
        );
        e.request_id = Some("req-7".into());
        e.account_dn = Some(r#"CN=Ada \"A\" [x],OU=Staff\, Ltd,DC=contoso"#.into());
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_936_000_123);
        let text = format(&e, time, &origin());
        assert_eq!(
            text,
            "<84>1 2025-12-05T12:00:00.123Z dc01.contoso.example writeback-agent 4242 33004 \
             [event@32473 id=\"33004\" level=\"warning\" request_id=\"req-7\" \
             account_dn=\"CN=Ada \\\\\\\"A\\\\\\\" [x\\],OU=Staff\\\\, Ltd,DC=contoso\"] \
             permission denied"
        );
    }

    #[test]
    fn param_values_escape_quote_backslash_and_bracket_only() {
        assert_eq!(escape_param(r#"a"b\c]d[e="#), r#"a\"b\\c\]d[e="#);
        assert_eq!(escape_param("Zoë"), "Zoë");
    }

    #[test]
    fn utf8_messages_get_a_bom_and_header_fields_stay_printable() {
        let e = Event::new(
            ids::RESET_SUCCEEDED,
            Level::Information,
            "Zoë's password reset",
        );
        let o = Origin {
            hostname: "",
            app_name: "my app",
            ..origin()
        };
        let text = format(&e, SystemTime::UNIX_EPOCH, &o);
        assert!(
            text.starts_with("<86>1 1970-01-01T00:00:00.000Z - myapp 4242 31002 "),
            "{text}"
        );
        assert!(text.ends_with("] \u{feff}Zoë's password reset"), "{text}");
    }

    #[test]
    fn tcp_frames_count_octets_not_characters() {
        assert_eq!(octet_counted("ë".as_bytes()), b"2 \xc3\xab".to_vec());
    }

    #[test]
    fn targets_parse_and_bad_ones_say_why() {
        let parse = |s: &str| SyslogTarget::try_from(s.to_owned());
        assert_eq!(
            parse("unix:/dev/log"),
            Ok(SyslogTarget::Unix("/dev/log".into()))
        );
        assert_eq!(
            parse("udp:127.0.0.1:514"),
            Ok(SyslogTarget::Udp("127.0.0.1:514".into()))
        );
        assert_eq!(
            parse("tcp:[::1]:6514"),
            Ok(SyslogTarget::Tcp("[::1]:6514".into()))
        );
        assert!(matches!(
            parse("/dev/log"),
            Err(SyslogTargetError::Scheme(_))
        ));
        assert!(matches!(
            parse("unix:dev/log"),
            Err(SyslogTargetError::Path(_))
        ));
        assert!(matches!(
            parse("udp:host"),
            Err(SyslogTargetError::HostPort(_))
        ));
        assert!(matches!(
            parse("tcp:host:0"),
            Err(SyslogTargetError::HostPort(_))
        ));
        assert_eq!(parse("tcp:h:1").unwrap().to_string(), "tcp:h:1");
    }
}
