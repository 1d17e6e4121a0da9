//! The agent's event log: one JSON object per line, with the event ids of
//! Entra's password write-back (source PasswordResetService) so that
//! administrators and their tooling find what they know. Rotated by size.
//!
//! An [`Event`] has no field that could hold a password: secrets cannot
//! reach the log by construction.
//!
//! Each line has `time` (RFC 3339, UTC, milliseconds) and, for tooling
//! written before it, `time_unix_ms`. Copies may also go to journald
//! ([`journald`]) and syslog ([`syslog`]); the file stays the record.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

mod forward;
pub mod journald;
pub mod syslog;

use forward::Forwarder;
pub use forward::Sinks;

/// The `source` of every line, Entra's event source name.
pub const SOURCE: &str = "PasswordResetService";

/// Entra write-back event ids.
pub mod ids {
    pub const RESET_STARTED: u32 = 31001;
    pub const RESET_SUCCEEDED: u32 = 31002;
    pub const RESET_FAILED: u32 = 31003;
    pub const ONBOARDING_STARTED: u32 = 31004;
    pub const ONBOARDING_SUCCEEDED: u32 = 31005;
    pub const CHANGE_STARTED: u32 = 31006;
    pub const CHANGE_SUCCEEDED: u32 = 31007;
    pub const CHANGE_FAILED: u32 = 31008;
    pub const ADMIN_RESET_STARTED: u32 = 31009;
    pub const ADMIN_RESET_SUCCEEDED: u32 = 31010;
    pub const ADMIN_RESET_FAILED: u32 = 31011;
    pub const SERVICE_STARTED: u32 = 31015;
    pub const SERVICE_STOPPED: u32 = 31016;
    pub const KEY_PAIR_CREATED: u32 = 31018;
    pub const HEARTBEAT: u32 = 31019;
    pub const RELAY_ERROR: u32 = 32002;
    pub const DECRYPTION_ERROR: u32 = 32004;
    pub const AUTH_TOKEN_ERROR: u32 = 32009;
    pub const RELAY_RETRY: u32 = 32014;
    pub const USER_NOT_FOUND: u32 = 33002;
    pub const SEVERAL_MATCHES: u32 = 33003;
    pub const INSUFFICIENT_PERMISSIONS: u32 = 33004;
    pub const ACCOUNT_DISABLED: u32 = 33005;
    pub const ACCOUNT_LOCKED: u32 = 33006;
    pub const WRONG_CURRENT_PASSWORD: u32 = 33007;
    pub const POLICY_VIOLATION: u32 = 33008;
    pub const DIRECTORY_CONFIGURATION_ERROR: u32 = 33009;
    /// Not an Entra id: Entra's write-back has no per-account limit. An
    /// attempt refused by the agent's `[limits]` (outcome RATE_LIMITED), with
    /// the account's DN. In the 33xxx failure-reason family, numbered apart
    /// from Entra's 33001-33009 so it cannot collide with an id it adds.
    pub const RATE_LIMITED: u32 = 33100;
    /// Not an Entra id: a local admin command (`init`, `rotate-key`,
    /// `directory grant`) ran, with the OS user who ran it as `actor`.
    pub const LOCAL_ADMIN_COMMAND: u32 = 31100;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Information,
    Warning,
    Error,
}

/// One event. Deliberately no free-form payload: every field is an id, a
/// name or a code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub event_id: u32,
    pub level: Level,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_dn: Option<String>,
    /// The outcome name (SUCCESS, PASSWORD_TOO_SHORT, ...) or refusal code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// For a permission refusal: the container holding the account, the
    /// protected DACL that blocks the grant, the object whose deny decides.
    /// Here and not in the reply, which reaches an anonymous end user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denied_at: Option<String>,
    /// Local admin commands: who ran them, on which host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<LocalActor>,
}

/// The OS user running this process, as the audit trail of the broker
/// names its callers: the uid and its name, and under sudo who invoked it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalActor {
    pub uid: Option<u32>,
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sudo_user: Option<String>,
    pub host: String,
}

impl LocalActor {
    /// From /proc (no libc in this crate) and the environment.
    pub fn current() -> LocalActor {
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| real_uid(&status));
        let user = uid
            .and_then(|uid| {
                let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
                user_name(&passwd, uid)
            })
            .or_else(|| std::env::var("USER").ok());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        LocalActor {
            uid,
            user,
            sudo_user: std::env::var("SUDO_USER").ok().filter(|u| !u.is_empty()),
            host,
        }
    }
}

/// Records a local admin command (`init`, `rotate-key`, `directory grant`)
/// in the event log in `dir` (and `sinks`), with the OS user who ran it.
/// `done` is what it did, or that it failed (the error is printed to the
/// person running it, not logged: the event log holds ids and names only).
pub fn record_local_command(
    dir: &Path,
    max_bytes: u64,
    sinks: Sinks,
    command: &str,
    tenant: &str,
    done: Result<String, ()>,
) {
    let (level, outcome, message) = match done {
        Ok(message) => (Level::Information, "SUCCESS", message),
        Err(()) => (Level::Error, "FAILED", format!("{command} failed")),
    };
    let mut event = Event::new(ids::LOCAL_ADMIN_COMMAND, level, message);
    event.operation = Some(command.to_owned());
    event.tenant = Some(tenant.to_owned());
    event.outcome = Some(outcome.to_owned());
    event.actor = Some(LocalActor::current());
    match EventLog::open(dir, max_bytes, DEFAULT_KEEP) {
        Ok(log) => log.with_sinks(sinks).write(&event),
        Err(e) => {
            tracing::warn!(error = %e, dir = %dir.display(), "local command not recorded in the event log")
        }
    }
}

/// The real uid of a `/proc/<pid>/status` text (`Uid: real effective ...`).
fn real_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
    })
}

impl Event {
    pub fn new(event_id: u32, level: Level, message: impl Into<String>) -> Event {
        Event {
            event_id,
            level,
            message: message.into(),
            tenant: None,
            request_id: None,
            operation: None,
            forest: None,
            account_dn: None,
            outcome: None,
            container: None,
            blocked_at: None,
            denied_at: None,
            actor: None,
        }
    }

    /// The optional fields that are set, by their JSON names, for the
    /// sinks that carry them as fields of their own.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let text = [
            ("tenant", &self.tenant),
            ("request_id", &self.request_id),
            ("operation", &self.operation),
            ("forest", &self.forest),
            ("account_dn", &self.account_dn),
            ("outcome", &self.outcome),
            ("container", &self.container),
            ("blocked_at", &self.blocked_at),
            ("denied_at", &self.denied_at),
        ];
        let mut fields: Vec<_> = text
            .into_iter()
            .filter_map(|(name, value)| Some((name, value.clone()?)))
            .collect();
        if let Some(actor) = &self.actor {
            let actor_fields = [
                ("actor_uid", actor.uid.map(|uid| uid.to_string())),
                ("actor_user", actor.user.clone()),
                ("actor_sudo_user", actor.sudo_user.clone()),
                ("actor_host", Some(actor.host.clone())),
            ];
            fields.extend(
                actor_fields
                    .into_iter()
                    .filter_map(|(name, value)| Some((name, value?))),
            );
        }
        fields
    }
}

#[derive(Serialize)]
struct Line<'a> {
    /// RFC 3339, UTC, milliseconds: what people and log tools read.
    time: String,
    /// The same instant for readers of the first format.
    time_unix_ms: u64,
    source: &'static str,
    #[serde(flatten)]
    event: &'a Event,
}

/// A size-rotated JSON-lines file: `events.jsonl`, then `.1` … `.N`.
pub struct EventLog {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Mutex<Option<File>>,
    /// journald and syslog, when configured.
    forward: Option<Forwarder>,
}

pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;
pub const DEFAULT_KEEP: u32 = 5;

impl EventLog {
    pub fn open(dir: &Path, max_bytes: u64, keep: u32) -> std::io::Result<EventLog> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("events.jsonl");
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(EventLog {
            path,
            max_bytes: max_bytes.max(1024),
            keep: keep.max(1),
            file: Mutex::new(Some(file)),
            forward: None,
        })
    }

    /// Also sends every event to the configured journald and syslog.
    pub fn with_sinks(mut self, sinks: Sinks) -> EventLog {
        self.forward = Forwarder::start(sinks);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends an event, rotating first when the file is full, then queues
    /// it for journald and syslog. Failures are reported to the tracing
    /// log, never to the caller: losing an event must not fail a password
    /// reset.
    pub fn write(&self, event: &Event) {
        let now = SystemTime::now();
        self.write_file(event, now);
        if let Some(forward) = &self.forward {
            forward.send(event, now);
        }
    }

    fn write_file(&self, event: &Event, now: SystemTime) {
        let time_unix_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut line = match serde_json::to_vec(&Line {
            time: humantime::format_rfc3339_millis(now).to_string(),
            time_unix_ms,
            source: SOURCE,
            event,
        }) {
            Ok(l) => l,
            Err(e) => return tracing::warn!(error = %e, "event not serialisable"),
        };
        line.push(b'\n');
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let full = guard
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .is_some_and(|m| m.len() + line.len() as u64 > self.max_bytes);
        if full && let Err(e) = self.rotate(&mut guard) {
            tracing::warn!(error = %e, "event log rotation failed");
        }
        if let Some(f) = guard.as_mut()
            && let Err(e) = f.write_all(&line)
        {
            tracing::warn!(error = %e, path = %self.path.display(), "event not written");
        }
    }

    fn rotate(&self, guard: &mut Option<File>) -> std::io::Result<()> {
        *guard = None;
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = std::fs::remove_file(numbered(self.keep));
        for n in (1..self.keep).rev() {
            if numbered(n).exists() {
                std::fs::rename(numbered(n), numbered(n + 1))?;
            }
        }
        std::fs::rename(&self.path, numbered(1))?;
        *guard = Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_actor_is_read_from_proc_and_passwd() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1000\n";
        assert_eq!(real_uid(status), Some(1000));
        let passwd = "root:x:0:0:root:/root:/bin/sh\nada:x:1000:1000::/home/ada:/bin/sh\n";
        assert_eq!(user_name(passwd, 1000).as_deref(), Some("ada"));
        assert_eq!(user_name(passwd, 7), None);
        let me = LocalActor::current();
        assert!(me.uid.is_some() && !me.host.is_empty(), "{me:?}");
        let mut e = Event::new(ids::LOCAL_ADMIN_COMMAND, Level::Information, "x");
        e.actor = Some(me);
        let line = serde_json::to_value(&e).unwrap();
        assert!(line["actor"]["uid"].is_u64(), "{line}");
    }

    #[test]
    fn the_sinks_get_every_field_the_file_gets() {
        let some = |s: &str| Some(s.to_owned());
        // A struct literal, no `..`: a new field fails to compile here
        // until it is added, and then this test until fields() has it.
        let event = Event {
            event_id: ids::INSUFFICIENT_PERMISSIONS,
            level: Level::Error,
            message: "m".into(),
            tenant: some("t"),
            request_id: some("r"),
            operation: some("o"),
            forest: some("f"),
            account_dn: some("a"),
            outcome: some("PERMISSION_DENIED"),
            container: some("c"),
            blocked_at: some("b"),
            denied_at: some("d"),
            actor: Some(LocalActor {
                uid: Some(0),
                user: some("root"),
                sudo_user: some("ada"),
                host: "h".into(),
            }),
        };
        let json = serde_json::to_value(&event).unwrap();
        let mut expected: Vec<String> = json
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(key, value)| match value.as_object() {
                Some(nested) => nested.keys().map(|k| format!("{key}_{k}")).collect(),
                None => vec![key.clone()],
            })
            .filter(|key| !matches!(key.as_str(), "event_id" | "level" | "message"))
            .collect();
        let mut named: Vec<String> = event.fields().iter().map(|(n, _)| n.to_string()).collect();
        expected.sort();
        named.sort();
        assert_eq!(named, expected);
    }

    #[test]
    fn events_are_json_lines_and_rotate_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path(), 2048, 2).unwrap();
        for i in 0..40 {
            let mut e = Event::new(ids::RESET_SUCCEEDED, Level::Information, "password reset");
            e.request_id = Some(format!("r-{i}"));
            e.tenant = Some("contoso".into());
            log.write(&e);
        }
        let current = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
        let line: serde_json::Value =
            serde_json::from_str(current.lines().last().unwrap()).unwrap();
        assert_eq!(line["event_id"], 31002);
        assert_eq!(line["request_id"], "r-39");
        assert_eq!(line["source"], "PasswordResetService");
        let time = humantime::parse_rfc3339(line["time"].as_str().unwrap()).unwrap();
        let unix_ms = time.duration_since(UNIX_EPOCH).unwrap().as_millis();
        assert_eq!(line["time_unix_ms"].as_u64(), Some(unix_ms as u64));
        assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
        assert!(dir.path().join("events.jsonl.1").exists());
        assert!(dir.path().join("events.jsonl.2").exists());
        assert!(
            !dir.path().join("events.jsonl.3").exists(),
            "only `keep` old files stay"
        );
        assert!(
            std::fs::metadata(dir.path().join("events.jsonl"))
                .unwrap()
                .len()
                <= 2048
        );
    }
}
