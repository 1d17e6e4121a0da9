//! The agent's event log copied to journald and syslog, read back from
//! sockets the tests own: a real agent process refuses a reset for want of
//! the Reset Password right and event 33004 arrives as a journald entry
//! with its fields, and as an RFC 5424 message over UDP and over a unix
//! datagram socket, the JSON file still holding it (with an RFC 3339 time).
//! The `init` that onboards the agent, a local admin command, sends its
//! event 31100 the same way.

use std::collections::HashMap;
use std::time::Duration;

use envelope::body::outcome;
use tests::agent_toml::quote_path;
use tests::deployment::{Deployment, upn};
use tokio::net::{UdpSocket, UnixDatagram};
use writeback_agent::eventlog::journald::message_id;

const ALAN: &str = "CN=Alan Turing,OU=Executives,OU=Users,DC=contoso,DC=example";

/// A permission refusal: event 33004, level error.
async fn refused_reset(d: &Deployment) {
    let r = d
        .reset(upn("alan@contoso.example"), "Enigma-Codebreaker-1941")
        .await;
    assert_eq!(r.outcome, outcome::PERMISSION_DENIED);
}

/// The first datagram that contains `needle`.
async fn receive_until<F, Fut>(recv: F, needle: &str) -> Vec<u8>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<u8>>,
{
    let mut all = receive_all_until(recv, needle).await;
    all.pop().expect("at least the one")
}

/// Every datagram up to and including the first that contains `needle`.
async fn receive_all_until<F, Fut>(mut recv: F, needle: &str) -> Vec<Vec<u8>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<u8>>,
{
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let data = recv().await;
            let found = String::from_utf8_lossy(&data).contains(needle);
            all.push(data);
            if found {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no datagram with {needle}"));
    all
}

/// journald's native format, simple and length-prefixed fields alike.
fn journal_fields(mut data: &[u8]) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    while let Some(end) = data.iter().position(|&b| b == b'=' || b == b'\n') {
        let name = String::from_utf8_lossy(&data[..end]).into_owned();
        let (value, rest) = if data[end] == b'=' {
            let nl = end
                + data[end..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .expect("newline");
            (&data[end + 1..nl], &data[nl + 1..])
        } else {
            let len = u64::from_le_bytes(data[end + 1..end + 9].try_into().expect("length"));
            let start = end + 9;
            let stop = start + len as usize;
            (&data[start..stop], &data[stop + 1..])
        };
        fields.insert(name, String::from_utf8_lossy(value).into_owned());
        data = rest;
    }
    fields
}

fn the_file_has_it_with_an_rfc3339_time(d: &Deployment) {
    let events = d.events();
    let refusal = events
        .iter()
        .find(|e| e["event_id"] == 33004)
        .expect("33004 in the file");
    let time = refusal["time"].as_str().expect("time");
    assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
    assert!(refusal["time_unix_ms"].is_u64());
}

#[tokio::test]
async fn events_reach_journald_and_udp_syslog_with_their_fields() {
    let sockets = tempfile::tempdir().expect("temp dir");
    let journal_path = sockets.path().join("journal.socket");
    let journal = UnixDatagram::bind(&journal_path).expect("journal socket");
    let collector = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
    let extra = format!(
        "[events]\njournald = true\njournald_socket = {}\nsyslog = \"udp:{}\"\n",
        quote_path(&journal_path),
        collector.local_addr().expect("addr")
    );
    let d = Deployment::start(&["contoso"], &extra).await;
    refused_reset(&d).await;

    let entry = receive_until(
        || async {
            let mut buf = vec![0; 65536];
            let n = journal.recv(&mut buf).await.expect("recv");
            buf.truncate(n);
            buf
        },
        "EVENT_ID=33004\n",
    )
    .await;
    let fields = journal_fields(&entry);
    let field = |k: &str| fields.get(k).map(String::as_str);
    assert_eq!(field("MESSAGE_ID"), Some(message_id(33004).as_str()));
    assert_eq!(field("PRIORITY"), Some("3"));
    assert_eq!(field("SYSLOG_IDENTIFIER"), Some("writeback-agent"));
    assert_eq!(field("SYSLOG_FACILITY"), Some("10"));
    assert_eq!(field("ACCOUNT_DN"), Some(ALAN));
    assert_eq!(field("OUTCOME"), Some("PERMISSION_DENIED"));
    assert_eq!(field("TENANT"), Some("contoso"));
    assert!(
        field("REQUEST_ID").is_some_and(|r| r.starts_with("req-")),
        "{fields:?}"
    );
    assert!(
        field("MESSAGE").is_some_and(|m| !m.is_empty()),
        "{fields:?}"
    );

    let message = receive_until(
        || async {
            let mut buf = vec![0; 65536];
            let n = collector.recv(&mut buf).await.expect("recv");
            buf.truncate(n);
            buf
        },
        "[event@32473 id=\"33004\"",
    )
    .await;
    let message = String::from_utf8(message).expect("UTF-8");
    // authpriv (10) * 8 + error (3).
    assert!(message.starts_with("<83>1 "), "{message}");
    assert!(message.contains(" writeback-agent "), "{message}");
    assert!(message.contains(" 33004 [event@32473 "), "{message}");
    assert!(
        message.contains(&format!("account_dn=\"{ALAN}\"")),
        "{message}"
    );
    assert!(message.contains(" request_id=\"req-"), "{message}");
    // Never a password, in either copy.
    let entry = String::from_utf8_lossy(&entry);
    assert!(!entry.contains("Enigma") && !message.contains("Enigma"));

    the_file_has_it_with_an_rfc3339_time(&d);
    d.stop().await;
}

#[tokio::test]
async fn events_reach_a_unix_syslog_socket_and_a_dead_journal_harms_nothing() {
    let sockets = tempfile::tempdir().expect("temp dir");
    let dev_log = sockets.path().join("log");
    let syslog = UnixDatagram::bind(&dev_log).expect("syslog socket");
    // Nobody listens at the journal socket: the agent warns and goes on.
    let extra = format!(
        "[events]\njournald = true\njournald_socket = {}\nsyslog = \"unix:{}\"\nsyslog_facility = \"local3\"\nsyslog_app_name = \"pwd-writeback\"\n",
        quote_path(&sockets.path().join("no-journal")),
        dev_log.display()
    );
    let d = Deployment::start(&["contoso"], &extra).await;
    refused_reset(&d).await;
    let messages = receive_all_until(
        || async {
            let mut buf = vec![0; 65536];
            let n = syslog.recv(&mut buf).await.expect("recv");
            buf.truncate(n);
            buf
        },
        "id=\"33004\"",
    )
    .await;
    let messages: Vec<String> = messages
        .into_iter()
        .map(|m| String::from_utf8(m).expect("UTF-8"))
        .collect();
    let refusal = messages.last().expect("33004");
    // local3 (19) * 8 + error (3).
    assert!(refusal.starts_with("<155>1 "), "{refusal}");
    assert!(refusal.contains(" pwd-writeback "), "{refusal}");
    // The deployment's `writeback-agent init`, a short-lived local admin
    // command, sent its event before exiting: local3 + information (6).
    let init = messages
        .iter()
        .find(|m| m.contains("id=\"31100\""))
        .unwrap_or_else(|| panic!("no init event in {messages:?}"));
    assert!(init.starts_with("<158>1 "), "{init}");
    assert!(init.contains(" operation=\"init\""), "{init}");
    assert!(init.contains(" actor_uid=\""), "{init}");
    the_file_has_it_with_an_rfc3339_time(&d);
    // Started, then refused: two events for the dead journal, one warning.
    let log = std::fs::read_to_string(d.dir.path().join("agent.log")).expect("agent log");
    let warnings = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("no-journal"))
        .count();
    assert_eq!(warnings, 1, "{log}");
    d.stop().await;
}
