//! journald's native protocol: one datagram per entry, each field either
//! `KEY=value\n` or, when the value holds a newline, `KEY\n`, its length as
//! a little-endian u64, the value and `\n`
//! (<https://systemd.io/JOURNAL_NATIVE_PROTOCOL/>). Entries too large for a
//! datagram would need a memfd passed over the socket; events are a few
//! hundred bytes, so that path (and the unsafe code it takes) is left out.

use super::{Event, Level};

/// The first 96 bits of every event's MESSAGE_ID (random, made once for
/// this project). The last 32 bits are the event id's decimal digits read
/// as hex, so 33004 is `…00033004` and an administrator can write the id
/// down from the event id without a table.
const MESSAGE_ID_PREFIX: &str = "9732f4d5b9daceaea08f5486";

/// The event's MESSAGE_ID: 32 lowercase hex digits, stable across releases
/// (`journalctl MESSAGE_ID=...` filters and catalogs depend on it).
pub fn message_id(event_id: u32) -> String {
    // Ids are five digits; eight leave room and keep every id distinct.
    format!("{MESSAGE_ID_PREFIX}{:08}", event_id % 100_000_000)
}

/// syslog(3) severities, which journald's PRIORITY uses.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warning => 4,
        Level::Information => 6,
    }
}

/// One entry: the standard fields, then the event's own fields with
/// uppercase names (journald accepts only `[A-Z0-9_]`, not starting with
/// `_`, which marks the fields journald itself vouches for).
pub fn encode(event: &Event, identifier: &str, facility: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    field(&mut out, "MESSAGE", &event.message);
    field(&mut out, "PRIORITY", &priority(event.level).to_string());
    field(&mut out, "SYSLOG_FACILITY", &facility.to_string());
    field(&mut out, "SYSLOG_IDENTIFIER", identifier);
    field(&mut out, "MESSAGE_ID", &message_id(event.event_id));
    field(&mut out, "EVENT_ID", &event.event_id.to_string());
    field(&mut out, "EVENT_SOURCE", super::SOURCE);
    for (name, value) in event.fields() {
        field(&mut out, &name.to_ascii_uppercase(), &value);
    }
    out
}

fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    debug_assert!(is_valid_name(name), "{name}");
    out.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('_')
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::ids;

    /// Reads an entry back the way journald parses it.
    fn decode(mut data: &[u8]) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        while !data.is_empty() {
            let end = data.iter().position(|&b| b == b'=' || b == b'\n').unwrap();
            let name = String::from_utf8(data[..end].to_vec()).unwrap();
            let value;
            if data[end] == b'=' {
                let nl = data.iter().position(|&b| b == b'\n').unwrap();
                value = data[end + 1..nl].to_vec();
                data = &data[nl + 1..];
            } else {
                let len = u64::from_le_bytes(data[end + 1..end + 9].try_into().unwrap()) as usize;
                value = data[end + 9..end + 9 + len].to_vec();
                assert_eq!(data[end + 9 + len], b'\n');
                data = &data[end + 10 + len..];
            }
            fields.push((name, String::from_utf8(value).unwrap()));
        }
        fields
    }

    #[test]
    fn message_ids_are_stable_and_carry_the_event_id() {
        // Documented in the README: changing it breaks administrators' filters.
        assert_eq!(
            message_id(ids::INSUFFICIENT_PERMISSIONS),
            "9732f4d5b9daceaea08f548600033004"
        );
        let all = [
            ids::RESET_SUCCEEDED,
            ids::RATE_LIMITED,
            ids::LOCAL_ADMIN_COMMAND,
        ];
        for id in all {
            let m = message_id(id);
            assert_eq!(m.len(), 32);
            assert!(
                m.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert!(m.ends_with(&id.to_string()));
        }
        assert_ne!(message_id(31001), message_id(31002));
    }

    #[test]
    fn entries_carry_the_event_as_fields_and_newlines_length_prefixed() {
        let mut e = Event::new(ids::INSUFFICIENT_PERMISSIONS, Level::Warning, "two\nlines");
        e.request_id = Some("req-1".into());
        e.account_dn = Some("CN=Ada,OU=Staff,DC=contoso,DC=example".into());
        let data = encode(&e, "writeback-agent", 10);
        let fields = decode(&data);
        let get = |k: &str| {
            fields
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("no {k} in {fields:?}"))
        };
        assert_eq!(get("MESSAGE"), "two\nlines");
        assert_eq!(get("PRIORITY"), "4");
        assert_eq!(get("SYSLOG_FACILITY"), "10");
        assert_eq!(get("SYSLOG_IDENTIFIER"), "writeback-agent");
        assert_eq!(get("EVENT_ID"), "33004");
        assert_eq!(get("MESSAGE_ID"), message_id(33004));
        assert_eq!(get("REQUEST_ID"), "req-1");
        assert_eq!(get("ACCOUNT_DN"), "CN=Ada,OU=Staff,DC=contoso,DC=example");
        assert!(fields.iter().all(|(n, _)| is_valid_name(n)), "{fields:?}");
        // The binary-safe form, byte for byte.
        let mut expected = b"MESSAGE\n".to_vec();
        expected.extend_from_slice(&9u64.to_le_bytes());
        expected.extend_from_slice(b"two\nlines\nPRIORITY=4\n");
        assert!(data.starts_with(&expected));
    }
}
