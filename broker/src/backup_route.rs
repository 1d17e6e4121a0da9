//! `POST /backup` on the operator port: a backup of the single node's
//! store while it runs (`store/backup.rs`). redb lets one process open the
//! file, so `relay-broker backup` asks the running broker, which writes
//! the backup from one read transaction: consistent while tenants change.
//!
//! It needs the operator token (`Authorization: SharedAccessSignature
//! ...`), as the status page does. What it returns holds the tenant
//! records sealed, never their keys in the clear.

use std::io::Write;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State as Extract;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use sas::Right;
use tracing::{info, warn};

use crate::state::State;

pub const BACKUP_PATH: &str = "/backup";

pub fn routes() -> Router<Arc<State>> {
    Router::new().route(BACKUP_PATH, post(backup))
}

async fn backup(
    Extract(state): Extract<Arc<State>>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default().trim());
    let call = crate::audit::Call {
        rpc: "operator/backup",
        peer: extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0),
    };
    let checked = state
        .audit
        .authorize(&state.authorizer, call, token, None, &[Right::Operator]);
    if let Ok(principal) = &checked {
        let actor = state.audit.actor(principal, token);
        let ok = Ok::<(), crate::error::RelayError>(());
        state.audit.done(call, None, &actor, None, &ok);
    }
    if let Err(refused) = checked {
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
    // Streamed as it is read: a store with many late outcomes need not fit
    // in the broker's memory. A failure after the first bytes can only cut
    // the body short; the CLI and `restore` check the counts the header
    // announces.
    let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            tx: tx.clone(),
            buffer: Vec::with_capacity(CHUNK),
        };
        match store.backup(&mut out) {
            Ok(header) => info!(
                tenants = header.tenants,
                outcomes = header.outcomes,
                key_id = %header.key_id,
                "backup taken"
            ),
            Err(e) => {
                warn!(error = %e, "backup failed");
                let _ = tx.blocking_send(Err(std::io::Error::other("the backup failed")));
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response()
}

/// What one message on the channel holds, and how many may wait in it.
const CHUNK: usize = 64 * 1024;
const CHUNKS_IN_FLIGHT: usize = 4;

/// The blocking backup's `Write`, in chunks to the response body. A
/// client gone closes the channel, which fails the write and ends the
/// backup's read transaction.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
