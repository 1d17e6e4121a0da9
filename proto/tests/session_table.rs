//! docs/PROTOCOL.md describes the agent session as two tables, one row per
//! frame. A frame kind or Goodbye reason added to agent.proto without a row
//! would leave a second implementation guessing, so this test reads the
//! tables and the .proto descriptor and fails on any frame or reason the
//! document does not cover.

use prost_types::FileDescriptorSet;

const PROTOCOL: &str = include_str!("../../docs/PROTOCOL.md");

fn section(heading: &str) -> &'static str {
    let start = PROTOCOL
        .find(heading)
        .unwrap_or_else(|| panic!("PROTOCOL.md has no {heading:?}"));
    let rest = &PROTOCOL[start + heading.len()..];
    let end = rest
        .find("\n### ")
        .or_else(|| rest.find("\n## "))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// The table whose header row starts with `| {first_column} |`.
fn table<'a>(text: &'a str, first_column: &str) -> Vec<&'a str> {
    let header = format!("| {first_column} |");
    let start = text
        .find(&header)
        .unwrap_or_else(|| panic!("no table headed {header:?}"));
    text[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect()
}

/// The message type of each field of `message`'s `frame` oneof.
fn frame_kinds(set: &FileDescriptorSet, message: &str) -> Vec<String> {
    let m = set
        .file
        .iter()
        .flat_map(|f| &f.message_type)
        .find(|m| m.name() == message)
        .unwrap_or_else(|| panic!("agent.proto has no {message}"));
    m.field
        .iter()
        .filter(|f| f.oneof_index.is_some())
        .map(|f| {
            f.type_name()
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[test]
fn every_frame_and_goodbye_reason_has_its_row_in_the_session_tables() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let set = protox::compile(["relay/v1/agent.proto"], [root]).expect("agent.proto compiles");
    let session = section("### The session, frame by frame");

    for (message, column) in [
        ("AgentFrame", "agent frame"),
        ("BrokerFrame", "broker frame"),
    ] {
        let rows = table(session, column);
        for kind in frame_kinds(&set, message) {
            let cell = format!("| `{kind}");
            assert!(
                rows.iter().any(|r| r.starts_with(&cell)),
                "the {column} table has no row for {kind}"
            );
        }
    }

    let reasons = set
        .file
        .iter()
        .flat_map(|f| &f.enum_type)
        .find(|e| e.name() == "GoodbyeReason")
        .expect("GoodbyeReason");
    for value in reasons.value.iter().filter(|v| v.number() != 0) {
        let name = value.name().trim_start_matches("GOODBYE_REASON_");
        assert!(
            session.contains(name),
            "the session section never says when Goodbye {name} is sent"
        );
    }
}
