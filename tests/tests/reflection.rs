//! gRPC server reflection on the broker's gRPC port: a generic client lists
//! every service and calls `Relay.Ping` from the descriptors reflection
//! hands it alone (grpcio with grpcio-reflection, v1alpha), and tonic's v1
//! client lists the same services. Reflection needs a token of any right,
//! and describing a method grants nothing: a Listen token that may read the
//! descriptors is still refused Ping.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use proto::time::unix_secs;
use sas::{KeySlot, Right};
use tests::{BrokerBuilder, BrokerProcess, EchoAgent, Tenant};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

/// What reflection lists: the four services the port serves and the
/// reflection service itself.
const SERVICES: [&str; 4] = [
    "grpc.health.v1.Health",
    "relay.v1.Admin",
    "relay.v1.AgentGateway",
    "relay.v1.Relay",
];

fn token(tenant: &Tenant, right: Right) -> String {
    sas::mint(
        &tenant.key(right, KeySlot::Primary),
        &tenant.name,
        right,
        unix_secs() + 600,
    )
    .expose()
    .to_owned()
}

/// The Python interpreter of the venv scripts/python/install makes.
fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(root.join("scripts/python/install"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/python/install");
    assert!(out.status.success(), "scripts/python/install failed");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    PathBuf::from(stdout.lines().last().expect("the venv's python").trim())
}

async fn reflect_in_python(
    python: &Path,
    broker: &BrokerProcess,
    token: &str,
) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tokio::process::Command::new(python)
        .arg(root.join("tests/python/reflection.py"))
        .args(["--target", &broker.grpc_addr])
        .arg("--ca")
        .arg(&broker.ca_file)
        .args(["--tenant", "contoso"])
        .env("RELAY_TOKEN", token)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run reflection.py");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "reflection.py failed: {stderr}");
    let line = String::from_utf8(out.stdout).expect("utf-8");
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line:?} {stderr}"))
}

#[tokio::test]
async fn a_client_with_no_proto_files_lists_the_services_and_pings_from_reflection() {
    let python = tokio::task::spawn_blocking(python).await.expect("install");
    let broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    let _agent = EchoAgent::start(&broker, &tenant, "dc01").await;

    let answer = reflect_in_python(&python, &broker, &token(&tenant, Right::Send)).await;
    eprintln!("grpcio-reflection, Send token: {answer}");
    let services: Vec<&str> = answer["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    for name in SERVICES {
        assert!(services.contains(&name), "{name} not in {services:?}");
    }
    assert!(
        services.iter().all(|s| !s.starts_with("relay.v1.Cluster")),
        "{services:?}"
    );
    assert_eq!(answer["ping"]["code"], "OK", "{answer}");
    assert_eq!(answer["ping"]["agent_id"], "dc01", "{answer}");
    assert!(
        answer["ping"]["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .any(|f| f == "broker_agent_rtt_us"),
        "{answer}"
    );
    assert_eq!(answer["without_token"], "UNAUTHENTICATED", "{answer}");

    // Reading the descriptors is not calling the methods.
    let answer = reflect_in_python(&python, &broker, &token(&tenant, Right::Listen)).await;
    eprintln!("grpcio-reflection, Listen token: {answer}");
    assert!(answer["services"].as_array().expect("services").len() >= SERVICES.len());
    assert_ne!(answer["ping"]["code"], "OK", "{answer}");
}

#[tokio::test]
async fn reflection_v1_lists_every_service_and_describes_ping() {
    let broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    let channel = broker.endpoint().connect().await.expect("channel");
    let mut client = ServerReflectionClient::new(channel);
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("relay.v1.Relay.Ping".into()),
    ]
    .map(|message_request| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message_request),
    });

    let status = client
        .server_reflection_info(tokio_stream::iter(requests.clone()))
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // An operator token, as README's grpcurl example uses, reads them too.
    let operator = sas::mint(
        &broker.operator_key(),
        sas::OPERATOR_RESOURCE,
        Right::Operator,
        unix_secs() + 600,
    );
    let mut request = tonic::Request::new(tokio_stream::iter(requests.clone()));
    request.metadata_mut().insert(
        "authorization",
        operator.expose().parse().expect("metadata"),
    );
    let mut answers = client
        .server_reflection_info(request)
        .await
        .expect("reflection with an operator token")
        .into_inner();
    assert!(matches!(
        answers
            .next()
            .await
            .expect("an answer")
            .expect("ok")
            .message_response,
        Some(MessageResponse::ListServicesResponse(_))
    ));

    let mut request = tonic::Request::new(tokio_stream::iter(requests));
    request.metadata_mut().insert(
        "authorization",
        token(&tenant, Right::Manage).parse().expect("metadata"),
    );
    let mut answers = client
        .server_reflection_info(request)
        .await
        .expect("reflection")
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = answers
        .next()
        .await
        .expect("an answer")
        .expect("ok")
        .message_response
    else {
        panic!("not a list of services");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for name in SERVICES
        .iter()
        .chain(&["grpc.reflection.v1.ServerReflection"])
    {
        assert!(names.contains(name), "{name} not in {names:?}");
    }
    let Some(MessageResponse::FileDescriptorResponse(files)) = answers
        .next()
        .await
        .expect("an answer")
        .expect("ok")
        .message_response
    else {
        panic!("not a file descriptor");
    };
    let file = <prost_types::FileDescriptorProto as prost::Message>::decode(
        files.file_descriptor_proto[0].as_slice(),
    )
    .expect("a file descriptor");
    assert_eq!(file.name(), "relay/v1/relay.proto");
    let relay = file
        .service
        .iter()
        .find(|s| s.name() == "Relay")
        .expect("Relay");
    assert!(relay.method.iter().any(|m| m.name() == "Ping"));
}
