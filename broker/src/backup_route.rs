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
