//! Operator endpoints on their own plain-HTTP port: `/healthz` (the process
//! is alive), `/readyz` (the store is open and the gRPC listener is up, and
//! the node is not draining; in cluster mode, NATS is reachable and the
//! node's copy of the tenants is confirmed current, see [`crate::lease`])
//! and `/metrics` (Prometheus text), all without
//! credentials; and the operator's status page (see [`crate::status_page`]),
//! which needs the operator token, as does `POST /backup`
//! ([`crate::backup_route`]).
//!
//! Served by [`http_serve`] with the operator port's deadlines and
//! connection caps (`limits.operator_*`): a client that opens connections
//! and never finishes a request cannot hold the broker's descriptors.

use std::sync::Arc;

use axum::Router;
use axum::extract::State as Extract;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use http_serve::{Cut, Limits};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{ClusterHealth, HttpCutLabels};
use crate::state::State;

/// The largest request body: the status page's login form holds a token.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// Serves the operator endpoints on `listener` until `drain` is cancelled.
pub async fn serve(listener: TcpListener, state: Arc<State>, drain: CancellationToken) {
    let l = &state.config.limits;
    let limits = Limits {
        header_timeout: l.operator_header_timeout,
        body_timeout: l.operator_body_timeout,
        max_body_bytes: MAX_BODY_BYTES,
        max_connections: l.operator_max_connections as usize,
        max_connections_per_source: l.operator_connections_per_source as usize,
        unlimited_sources: Vec::new(),
    };
    let on_cut = {
        let metrics = Arc::clone(&state.metrics);
        Arc::new(move |cut: Cut| {
            let labels = HttpCutLabels {
                port: "operator",
                reason: cut.as_str(),
            };
            metrics.http_cuts.get_or_create(&labels).inc();
        })
    };
    let app = router(Arc::clone(&state));
    http_serve::serve(listener, "operator", app, limits, on_cut, drain).await;
}

pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::status_page::routes())
        .merge(crate::backup_route::routes())
        .with_state(state)
}

async fn readyz(Extract(state): Extract<Arc<State>>) -> impl IntoResponse {
    let condition = state.condition();
    let status = if condition == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = match state.condition_detail() {
        Some(detail) if condition == "tenants unconfirmed" => format!("{condition}: {detail}\n"),
        _ => format!("{condition}\n"),
    };
    (status, body)
}

async fn metrics(Extract(state): Extract<Arc<State>>) -> impl IntoResponse {
    let cluster = state.cluster.as_ref().map(|c| ClusterHealth {
        node: &c.node,
        nats_connected: c.is_up(),
        disconnects: c.losses(),
        tenants_confirmed: state.tenants.current().is_ok(),
    });
    let store_open = state
        .readiness
        .store_open
        .load(std::sync::atomic::Ordering::Acquire);
    state.metrics.observe_store(store_open, cluster);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
