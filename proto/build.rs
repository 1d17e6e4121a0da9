//! Generates the relay.v1 code with a pure-Rust protobuf compiler (protox), so a
//! fresh machine needs no system `protoc`. Generation happens on every build,
//! which means the generated code can never drift from the .proto files.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/relay/v1/common.proto",
        "proto/relay/v1/agent.proto",
        "proto/relay/v1/relay.proto",
        "proto/relay/v1/admin.proto",
        "proto/relay/v1/cluster.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    // The same descriptors, encoded, for the broker's gRPC reflection
    // service: what grpcurl and other generic clients learn the API from.
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("relay_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        // Messages that carry a token or a key get a hand-written Debug that
        // masks it (see lib.rs), so no `{:?}` can ever print a secret.
        .skip_debug([
            "relay.v1.Hello",
            "relay.v1.RenewToken",
            "relay.v1.TenantKey",
        ])
        // Envelopes are shared, not copied, between the decoded request, a
        // retry on another agent and the frame to the agent.
        .bytes(".relay.v1.SubmitRequest.envelope")
        .bytes(".relay.v1.RelayedRequest.envelope")
        .bytes(".relay.v1.ForwardedRequest.envelope")
        // Undecodable bytes become MALFORMED_MESSAGE, not a bare INTERNAL.
        .codec_path("crate::codec::RelayCodec")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
