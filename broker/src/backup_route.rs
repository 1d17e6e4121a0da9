//! `POST /backup` on the operator port: a backup of the single node's
//! store while it runs (`store/backup.rs`). redb lets one process open the
//! file, so `relay-broker backup` asks the running broker, which writes
//! the backup from one read transaction: consistent while tenants change.
//!
//! It needs the operator token (`Authorization: SharedAccessSignature
//! ...`), as the status page does. What it returns holds the tenant
//! records sealed, never their keys in the clear.

use std::sync::Arc;

use axum::Router;
use axum::extract::State as Extract;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use sas::Right;
use tracing::{info, warn};

use crate::state::State;
use crate::time::now_unix_secs;

pub const BACKUP_PATH: &str = "/backup";

pub fn routes() -> Router<Arc<State>> {
    Router::new().route(BACKUP_PATH, post(backup))
}

async fn backup(Extract(state): Extract<Arc<State>>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if let Err(refused) =
        state
            .authorizer
            .authorize(token.trim(), None, &[Right::Operator], now_unix_secs())
    {
        info!(reason = %refused, "backup refused a token");
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "SharedAccessSignature")],
            format!("backup needs the operator token: {refused}\n"),
        )
            .into_response();
    }
    let Some(store) = state.local_store.clone() else {
        return (
            StatusCode::NOT_FOUND,
            "this node keeps its tenants in NATS: back up the buckets (docs/CLUSTER.md)\n",
        )
            .into_response();
    };
    let written = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        store.backup(&mut out).map(|header| (header, out))
    })
    .await;
    match written {
        Ok(Ok((header, bytes))) => {
            info!(
                tenants = header.tenants,
                outcomes = header.outcomes,
                key_id = %header.key_id,
                "backup taken"
            );
            (
                [
                    (header::CONTENT_TYPE, "application/x-ndjson"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                bytes,
            )
                .into_response()
        }
        Ok(Err(e)) => {
            warn!(error = %e, "backup failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("backup failed: {e}\n"),
            )
                .into_response()
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "backup task failed\n").into_response(),
    }
}
