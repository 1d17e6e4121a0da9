//! Traces across portal, broker and agent: a reset submitted through the
//! SDK with the caller's `traceparent` must come back from an OTLP receiver
//! as one trace (portal span -> relay.submit in relay-broker ->
//! agent.request -> directory.apply in writeback-agent) carrying the request
//! id and never the password or the envelope. With `[telemetry]` unset the
//! broker exports nothing.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envelope::body::outcome;
use envelope::{Anchor, KeyPair, Password, RequestBody};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use proto::pb::Operation;
use relay_client::enrollment::EnrollmentBundle;
use relay_client::sealed::SealedPortal;
use sas::{KeySlot, Right};
use tests::agent_toml::AgentToml;
use tests::sealed::SETUP_PASSWORD;
use tests::{BrokerBuilder, write_key};
use tokio_util::sync::CancellationToken;
use writeback_agent::{AgentConfig, AgentEvent};

const ADA_ANCHOR: &str = "LkwaO199ik6bbB0uP0BRYg==";
const PASSWORD: &str = "Traced-Horse-Battery-Staple-42";
const TRACE_ID: &str = "5b8efff798038103d269b633813fc60c";
const ROOT_SPAN_ID: &str = "eee19b7ec3c1b174";

/// An OTLP/gRPC trace collector that keeps every export it is sent.
#[derive(Clone, Default)]
struct Receiver {
    exports: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.exports.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    /// Serves on a port of 127.0.0.1 the kernel picks.
    async fn start() -> (Receiver, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let receiver = Receiver::default();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (receiver, format!("http://{addr}"))
    }

    fn exports(&self) -> Vec<ExportTraceServiceRequest> {
        self.exports.lock().unwrap().clone()
    }

    /// Every span received, with its service.name.
    fn spans(&self) -> Vec<(String, Span)> {
        let mut out = Vec::new();
        for export in self.exports() {
            for resource in export.resource_spans {
                let service = resource
                    .resource
                    .as_ref()
                    .and_then(|r| string_attr(&r.attributes, "service.name"))
                    .unwrap_or_default();
                for scope in resource.scope_spans {
                    for span in scope.spans {
                        out.push((service.clone(), span));
                    }
                }
            }
        }
        out
    }
}

fn string_attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        }
    })
}

/// Every string and byte value in an attribute value, nested ones too.
fn values(value: &AnyValue, out: &mut Vec<Vec<u8>>) {
    match &value.value {
        Some(Value::StringValue(s)) => out.push(s.as_bytes().to_vec()),
        Some(Value::BytesValue(b)) => out.push(b.clone()),
        Some(Value::ArrayValue(a)) => a.values.iter().for_each(|v| values(v, out)),
        Some(Value::KvlistValue(l)) => l
            .values
            .iter()
            .filter_map(|kv| kv.value.as_ref())
            .for_each(|v| values(v, out)),
        _ => {}
    }
}

fn attrs(kvs: &[KeyValue], out: &mut Vec<Vec<u8>>) {
    for kv in kvs {
        out.push(kv.key.as_bytes().to_vec());
        if let Some(v) = &kv.value {
            values(v, out);
        }
    }
}

/// Every string a receiver got: names, attribute keys and values, events,
/// links, resources, scopes, statuses.
fn every_string(export: &ExportTraceServiceRequest) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for resource in &export.resource_spans {
        if let Some(r) = &resource.resource {
            attrs(&r.attributes, &mut out);
        }
        for scope in &resource.scope_spans {
            if let Some(s) = &scope.scope {
                out.push(s.name.as_bytes().to_vec());
                attrs(&s.attributes, &mut out);
            }
            for span in &scope.spans {
                out.push(span.name.as_bytes().to_vec());
                out.push(span.trace_state.as_bytes().to_vec());
                attrs(&span.attributes, &mut out);
                for event in &span.events {
                    out.push(event.name.as_bytes().to_vec());
                    attrs(&event.attributes, &mut out);
                }
                for link in &span.links {
                    attrs(&link.attributes, &mut out);
                }
                if let Some(status) = &span.status {
                    out.push(status.message.as_bytes().to_vec());
                }
            }
        }
    }
    out
}

/// The OTLP batch exporter's threads in process `pid` (the SDK names them
/// `OpenTelemetry.Traces.BatchProcessor`; the kernel keeps 15 bytes).
fn exporter_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the broker's threads")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("OpenTelemetry"))
        .count()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_the_portal_through_broker_and_agent_without_secrets() {
    let (receiver, endpoint) = Receiver::start().await;
    let broker = BrokerBuilder::new()
        .section(format!("[telemetry]\notlp_endpoint = {endpoint:?}\n"))
        .start()
        .await;
    let tenant = broker.create_tenant("contoso").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let listen = write_key(
        d,
        "listen.key",
        &tenant.key(Right::Listen, KeySlot::Primary),
    );
    std::fs::write(d.join("setup-password"), SETUP_PASSWORD).expect("password file");
    let forest = d.join("contoso.json");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/forests/contoso.json"),
        &forest,
    )
    .expect("copy sample forest");
    let text = AgentToml::new(&broker.url(), &broker.ca_file, "contoso", "dc01", &listen)
        .path("key_file", &d.join("agent.keys"))
        .path("setup_password_file", &d.join("setup-password"))
        .path("state_dir", &d.join("state"))
        .section(format!(
            "[[forests]]\nname = \"contoso\"\nkind = \"embedded\"\npath = {forest:?}\n"
        ))
        .section(format!("[telemetry]\notlp_endpoint = {endpoint:?}\n"))
        .build();
    let config = AgentConfig::from_toml(&text).expect("agent config");
    // The agent's exporter, in this process, as its binary sets it up.
    let telemetry = writeback_agent::telemetry::init(Default::default(), &config.telemetry)
        .expect("agent telemetry");

    let portal_key = KeyPair::generate(&mut envelope::os_rng());
    let bundle = EnrollmentBundle::new("contoso", std::slice::from_ref(&portal_key.public));
    let report = writeback_agent::onboarding::init(&config, &bundle, SETUP_PASSWORD)
        .await
        .expect("init");
    let shutdown = CancellationToken::new();
    let mut agent = writeback_agent::start(config, shutdown.clone())
        .await
        .expect("start");
    let mut events = agent.events();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.recv().await.expect("events") {
                AgentEvent::Connected { .. } => return,
                AgentEvent::Refused { reason } => panic!("refused: {reason}"),
                _ => {}
            }
        }
    })
    .await
    .expect("the agent connects");

    // The portal's own span, as a portal with its own tracer would send it.
    let client = broker
        .portal(&tenant, Right::Send)
        .await
        .with_traceparent(format!("00-{TRACE_ID}-{ROOT_SPAN_ID}-01"));
    let portal = SealedPortal::new(client, portal_key, vec![report.fingerprint]);
    let request_id = "traced-reset-1";
    let reply = portal
        .submit(
            request_id,
            Operation::ResetPassword,
            &RequestBody::reset(
                Anchor::SourceAnchor(ADA_ANCHOR.into()),
                Password::new(PASSWORD),
            ),
            None,
        )
        .await
        .expect("the agent answers")
        .reply;
    assert_eq!(reply.outcome, outcome::SUCCESS, "{reply:?}");

    assert_eq!(exporter_threads(broker.pid()), 1, "the exporting broker");
    // Both exporters flush on their shutdown path.
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), agent.wait())
        .await
        .expect("the agent stops")
        .expect("cleanly");
    telemetry.shutdown().await;
    let mut broker = broker;
    broker.terminate().await;

    let ours = |spans: &[(String, Span)]| -> Vec<(String, Span)> {
        spans
            .iter()
            .filter(|(_, s)| hex(&s.trace_id) == TRACE_ID)
            .cloned()
            .collect()
    };
    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = ours(&receiver.spans());
        let has = |name: &str| spans.iter().any(|(_, s)| s.name == name);
        if has("relay.submit") && has("agent.request") && has("directory.apply") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let summary: Vec<String> = spans
        .iter()
        .map(|(service, s)| {
            format!(
                "{service}/{} {} <- {}",
                s.name,
                hex(&s.span_id),
                hex(&s.parent_span_id)
            )
        })
        .collect();
    let named = |name: &str| {
        spans
            .iter()
            .find(|(_, s)| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span in the trace: {summary:#?}"))
    };
    let (submit_service, submit) = named("relay.submit");
    let (request_service, request) = named("agent.request");
    let (apply_service, apply) = named("directory.apply");
    assert_eq!(submit_service, "relay-broker");
    assert_eq!(request_service, "writeback-agent");
    assert_eq!(apply_service, "writeback-agent");
    // One tree rooted at the portal's span.
    assert_eq!(hex(&submit.parent_span_id), ROOT_SPAN_ID, "{summary:#?}");
    assert_eq!(request.parent_span_id, submit.span_id, "{summary:#?}");
    assert_eq!(apply.parent_span_id, request.span_id, "{summary:#?}");
    for (_, span) in &spans {
        assert!(span.events.is_empty(), "log events exported: {span:?}");
        let parent = hex(&span.parent_span_id);
        assert!(
            parent == ROOT_SPAN_ID || spans.iter().any(|(_, s)| s.span_id == span.parent_span_id),
            "{} has a parent outside the trace: {summary:#?}",
            span.name
        );
    }
    for span in [submit, request] {
        assert_eq!(
            string_attr(&span.attributes, "relay.request_id").as_deref(),
            Some(request_id),
            "{span:?}"
        );
    }
    assert_eq!(
        string_attr(&submit.attributes, "relay.outcome").as_deref(),
        Some("answered")
    );
    assert_eq!(
        string_attr(&apply.attributes, "directory.forest").as_deref(),
        Some("contoso")
    );
    assert_eq!(
        string_attr(&apply.attributes, "directory.outcome").as_deref(),
        Some("SUCCESS"),
        "{apply:?}"
    );

    // Nothing secret in anything either service exported, in this trace or
    // any other: not the password, no byte values (an envelope), no
    // string long enough to hold a sealed envelope.
    let exports = receiver.exports();
    assert!(!exports.is_empty());
    for export in &exports {
        for s in every_string(export) {
            assert!(
                !s.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()),
                "the password in an exported span: {}",
                String::from_utf8_lossy(&s)
            );
            assert!(
                s.len() < 256,
                "a long value exported (an envelope?): {}",
                String::from_utf8_lossy(&s)
            );
        }
        let text = format!("{export:?}");
        // Spans only: no log event (with its details) inside them.
        assert!(!text.contains("CN="), "a DN exported: {text}");
        assert!(!text.contains(PASSWORD));
        assert!(!text.contains("BytesValue"), "{text}");
    }
}

#[tokio::test]
async fn without_an_otlp_endpoint_nothing_is_exported() {
    let (receiver, _endpoint) = Receiver::start().await;
    // A [telemetry] section without otlp_endpoint: export stays off.
    let broker = BrokerBuilder::new()
        .section("[telemetry]\nservice_name = \"relay-broker-quiet\"\n")
        .start()
        .await;
    let tenant = broker.create_tenant("contoso").await;
    let client = broker
        .portal(&tenant, Right::Send)
        .await
        .with_traceparent(format!("00-{TRACE_ID}-{ROOT_SPAN_ID}-01"));
    // No agent: the ping fails, its span ends all the same.
    let _ = client.ping(Some(Duration::from_millis(500))).await;
    // No exporter was built: no batch thread, nothing sent anywhere.
    assert_eq!(exporter_threads(broker.pid()), 0);
    let mut broker = broker;
    broker.terminate().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.exports().is_empty());
    assert!(
        !broker.logs().contains("trace exporter"),
        "{}",
        broker.logs()
    );
}

/// Across nodes: a request submitted on node a for an agent held by node b
/// is one trace, the portal's span -> relay.submit (a) -> relay.forwarded
/// (b), through `ForwardedRequest.traceparent`.
#[tokio::test]
async fn a_forwarded_request_continues_the_trace_on_the_serving_node() {
    let (receiver, endpoint) = Receiver::start().await;
    let mut cluster = tests::cluster::BrokerCluster::builder(2)
        .config(format!("telemetry = {{ otlp_endpoint = {endpoint:?} }}"))
        .start()
        .await;
    let tenant = cluster.create_tenant("contoso").await;
    let _on_b = cluster.echo_agent(1, &tenant, "on-b").start().await;
    cluster.await_serving(&tenant, 1).await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let portal = cluster
        .portal(0, &tenant)
        .await
        .with_traceparent(format!("00-{trace_id}-{ROOT_SPAN_ID}-01"));
    let request_id = "forwarded-1";
    portal
        .submit(
            request_id,
            Operation::ResetPassword,
            "on-b",
            b"opaque".to_vec(),
            Some(Duration::from_secs(10)),
        )
        .await
        .expect("the agent on b answers");
    for i in 0..2 {
        cluster.node_mut(i).terminate().await;
    }

    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = receiver
            .spans()
            .into_iter()
            .filter(|(_, s)| hex(&s.trace_id) == trace_id)
            .collect::<Vec<_>>();
        let has = |name: &str| spans.iter().any(|(_, s)| s.name == name);
        if has("relay.submit") && has("relay.forwarded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let summary: Vec<String> = spans
        .iter()
        .map(|(service, s)| {
            format!(
                "{service}/{} {} <- {}",
                s.name,
                hex(&s.span_id),
                hex(&s.parent_span_id)
            )
        })
        .collect();
    let named = |name: &str| {
        spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span in the trace: {summary:#?}"))
    };
    let submit = named("relay.submit");
    let forwarded = named("relay.forwarded");
    assert_eq!(hex(&submit.parent_span_id), ROOT_SPAN_ID, "{summary:#?}");
    assert_eq!(forwarded.parent_span_id, submit.span_id, "{summary:#?}");
    assert_eq!(
        string_attr(&forwarded.attributes, "relay.request_id").as_deref(),
        Some(request_id)
    );
    assert_eq!(
        string_attr(&forwarded.attributes, "relay.origin_node").as_deref(),
        Some(cluster.name(0))
    );
}
