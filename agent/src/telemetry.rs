//! Log output to stderr, text or JSON lines (standard output stays free for
//! machine-readable lines),
//! filtered by `RUST_LOG` (default `info`); and, when `[telemetry]
//! otlp_endpoint` is set, the same `tracing` spans exported as OpenTelemetry
//! traces over OTLP/gRPC. Off by default: no exporter, no task, no layer.
//!
//! Span fields become span attributes, so the rule that no secret goes into
//! a log line covers the traces too.

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::{LogFormat, TelemetryConfig};

/// The W3C header (and gRPC metadata key) that carries the trace context.
pub const TRACEPARENT: &str = "traceparent";

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP trace exporter")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The exporter, when there is one; [`Telemetry::shutdown`] flushes it.
#[must_use = "shut it down on exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered and stops the exporter. Blocking
    /// work (the batch processor's thread waits on the runtime's gRPC
    /// client), so off the async threads.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let done = tokio::task::spawn_blocking(move || provider.shutdown());
            match tokio::time::timeout(Duration::from_secs(5), done).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => eprintln!("trace exporter shutdown: {e}"),
                Ok(Err(_)) | Err(_) => eprintln!("trace exporter shutdown did not finish"),
            }
        }
    }
}

/// Installs the global subscriber. Must run inside the Tokio runtime when
/// export is on: the OTLP client's connection lives there.
pub fn init(format: LogFormat, telemetry: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let provider = match &telemetry.otlp_endpoint {
        Some(endpoint) => Some(provider(
            endpoint,
            telemetry
                .service_name
                .as_deref()
                .unwrap_or("writeback-agent"),
            telemetry.sample_ratio,
        )?),
        None => None,
    };
    // RUST_LOG filters the log lines only: the info spans are exported
    // whatever the log level. Spans alone, not the log events inside them:
    // the trace keeps to the span fields (ids, names, outcomes), and a log
    // line's details (an account's DN, say) stay in the logs.
    let otel = provider.as_ref().map(|p| {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("writeback-agent"))
            .with_filter(filter_fn(|m| m.is_span() && *m.level() <= Level::INFO))
    });
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours for a person at a terminal only: in a file or the journal
    // the escape sequences are noise, and none may come from elsewhere.
    let ansi = std::io::stderr().is_terminal();
    let text = matches!(format, LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_filter(filter.clone())
    });
    let json = matches!(format, LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .json()
            .flatten_event(true)
            .with_filter(filter)
    });
    // A second init (as in tests that start several nodes, or an agent
    // started in-process) keeps the first.
    let _ = tracing_subscriber::registry()
        .with(otel)
        .with(text)
        .with(json)
        .try_init();
    Ok(Telemetry { provider })
}

fn provider(
    endpoint: &str,
    service_name: &str,
    sample_ratio: f64,
) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    // A caller's sampling decision (the traceparent's flag) is kept; the
    // ratio applies to traces that start here.
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(sample_ratio)));
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(resource)
        .build())
}

/// Makes `span` a child of the W3C `traceparent` given (by a portal, or a
/// forwarding node). An absent or malformed one leaves the span a root.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent.filter(|t| !t.is_empty()) else {
        return;
    };
    let parent = TraceContextPropagator::new().extract(&One(traceparent));
    if parent.span().span_context().is_valid() {
        // Without the OpenTelemetry layer (export off) this does nothing.
        let _ = span.set_parent(parent);
    }
}

/// The `traceparent` of `span`, for the next hop; empty when export is off.
pub fn traceparent_of(span: &tracing::Span) -> String {
    let mut out = One(String::new());
    TraceContextPropagator::new().inject_context(&span.context(), &mut out);
    out.0
}

/// A carrier of the `traceparent` field alone (tracestate is not relayed).
struct One<T>(T);

impl Extractor for One<&str> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }
    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

impl Injector for One<String> {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = value;
        }
    }
}
