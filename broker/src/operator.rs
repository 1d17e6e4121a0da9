//! Operator endpoints on their own plain-HTTP port: `/healthz` (the process
//! is alive), `/readyz` (the store is open and the gRPC listener is up, and
//! the node is not draining; in cluster mode, NATS is reachable) and `/metrics` (Prometheus text), all without
//! credentials; and the operator's status page (see [`crate::status_page`]),
//! which needs the operator token.

use std::sync::Arc;

use axum::Router;
use axum::extract::State as Extract;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::State;

pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::status_page::routes())
        .with_state(state)
}

async fn readyz(Extract(state): Extract<Arc<State>>) -> impl IntoResponse {
    let condition = state.condition();
    let status = if condition == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, format!("{condition}\n"))
}

async fn metrics(Extract(state): Extract<Arc<State>>) -> impl IntoResponse {
    if let Some(cluster) = &state.cluster {
        state
            .metrics
            .cluster_connected
            .set(i64::from(cluster.is_up()));
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
