//! `proto/google/rpc/` ships the two googleapis files every error detail of
//! relay.v1 is written in, so a client in another language generates its
//! stubs from `proto/` alone. They must describe exactly the messages the
//! broker encodes (tonic-types' compiled copy): a field renumbered or retyped
//! in the vendored text would make other implementations decode ErrorInfo
//! wrongly while every Rust test still passed.

use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorSet};

fn messages(set: &FileDescriptorSet) -> Vec<(String, &DescriptorProto)> {
    set.file
        .iter()
        .filter(|f| f.package() == "google.rpc")
        .flat_map(|f| f.message_type.iter().map(|m| (m.name().to_owned(), m)))
        .collect()
}

/// Field shape as the wire sees it: number, name, type, label, message type,
/// recursively for nested messages (map entries included).
fn shape(message: &DescriptorProto) -> Vec<String> {
    let mut out: Vec<String> = message
        .field
        .iter()
        .map(|f| {
            format!(
                "{}.{} {:?} {:?} {}",
                message.name(),
                f.number(),
                f.r#type(),
                f.label(),
                f.type_name()
            ) + &format!(" {}", f.name())
        })
        .collect();
    for nested in &message.nested_type {
        out.extend(shape(nested));
    }
    out.sort();
    out
}

#[test]
fn the_vendored_google_rpc_protos_describe_the_messages_the_broker_sends() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let vendored = protox::compile(
        ["google/rpc/status.proto", "google/rpc/error_details.proto"],
        [root],
    )
    .expect("the vendored google.rpc protos compile");
    let compiled = FileDescriptorSet::decode(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .expect("tonic-types' descriptor set decodes");

    let ours = messages(&vendored);
    let theirs = messages(&compiled);
    for used in ["Status", "ErrorInfo"] {
        assert!(
            ours.iter().any(|(n, _)| n == used),
            "{used} is not vendored"
        );
    }
    assert_eq!(
        ours.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        theirs.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "the vendored files define other messages than the broker's"
    );
    for ((name, a), (_, b)) in ours.iter().zip(&theirs) {
        assert_eq!(
            shape(a),
            shape(b),
            "google.rpc.{name} differs from the broker's"
        );
    }
}
