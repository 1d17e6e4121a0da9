//! gRPC server reflection (v1, and v1alpha for older grpcurl and grpcio
//! clients) of every service the gRPC port serves, so a generic client can
//! list and call them without the .proto files.
//!
//! Reflection only describes: the ingress layer asks a token of any right
//! for it (see `ingress::access`), and each described method still checks
//! its own token when called.

use tonic_reflection::server::{Builder, Error, v1, v1alpha};

/// The services the gRPC port serves, as reflection lists them (the
/// relay.v1 descriptors also hold cluster.proto, whose messages travel over
/// NATS, not gRPC).
const SERVICES: [&str; 4] = [
    "relay.v1.Relay",
    "relay.v1.AgentGateway",
    "relay.v1.Admin",
    "grpc.health.v1.Health",
];

/// A reflection request names a symbol or a file: a few hundred bytes.
const MESSAGE_LIMIT: usize = 4 * 1024;

/// The gRPC paths of both versions' one method.
pub const PATHS: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

fn builder(itself: &str) -> Builder<'static> {
    SERVICES.iter().chain([&itself]).fold(
        Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
        |b, name| b.with_service_name(*name),
    )
}

pub fn v1() -> Result<v1::ServerReflectionServer<impl v1::ServerReflection>, Error> {
    Ok(builder("grpc.reflection.v1.ServerReflection")
        .build_v1()?
        .max_decoding_message_size(MESSAGE_LIMIT))
}

pub fn v1alpha() -> Result<v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>, Error> {
    Ok(builder("grpc.reflection.v1alpha.ServerReflection")
        .build_v1alpha()?
        .max_decoding_message_size(MESSAGE_LIMIT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_descriptors_decode_and_name_every_service() {
        use prost::Message;
        v1().unwrap();
        v1alpha().unwrap();
        let set = prost_types::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| {
                f.service
                    .iter()
                    .map(move |s| format!("{}.{}", f.package(), s.name()))
            })
            .collect();
        for name in &SERVICES[..3] {
            assert!(services.iter().any(|s| s == name), "{name}: {services:?}");
        }
    }
}
