//! What the nodes of a cluster share, in replicated JetStream key-value
//! buckets (`<prefix>_tenants`, `<prefix>_outcomes`, `<prefix>_meta`):
//! - [`open_buckets`] opens them, creating them on the first start;
//! - [`tenants`]: tenant records, sealed with the cluster
//!   [`StorageKey`](super::storage_key::StorageKey), written with
//!   compare-and-set ([`cas`]); [`watch`] loads them and applies every
//!   change from any node to this node's cache;
//! - [`outcomes`]: late outcomes, sealed already by the agent;
//! - [`converge_operator_key`]: the one operator key of the cluster;
//! - [`retry`]: bounded retries over a NATS failover.

mod buckets;
pub mod cas;
mod operator_key;
pub mod outcomes;
pub mod retry;
pub mod tenants;
pub mod watch;

use std::path::PathBuf;
use std::time::Duration;

pub use buckets::{Buckets, open_buckets};
pub use operator_key::{OPERATOR_KEY, converge_operator_key};
pub use retry::RETRY_FOR;

use super::storage_key::{StorageKeyError, UnsealError};
use crate::store::StoreError;
use crate::store::codec::CodecError;

/// A key-value bucket operation failed. Messages name the bucket, the key
/// and the operation, never a value.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("cannot create the key-value bucket {bucket} with {replicas} replicas")]
    CreateBucket {
        bucket: String,
        replicas: usize,
        #[source]
        source: async_nats::jetstream::context::CreateStreamError,
    },
    #[error("cannot open the key-value bucket {bucket}")]
    OpenBucket {
        bucket: String,
        #[source]
        source: async_nats::jetstream::context::KeyValueError,
    },
    #[error(
        "{operation} in the key-value bucket {bucket} still failed after {} of retries (is NATS reachable, and does the bucket's stream have a leader?)",
        humantime::format_duration(*.waited)
    )]
    GaveUp {
        bucket: String,
        operation: &'static str,
        waited: Duration,
        #[source]
        source: async_nats::Error,
    },
    #[error("{operation} in the key-value bucket {bucket} failed")]
    Failed {
        bucket: String,
        operation: &'static str,
        #[source]
        source: async_nats::Error,
    },
    #[error(
        "the tenants in the key-value bucket {bucket} did not load within {}",
        humantime::format_duration(*.waited)
    )]
    LoadTimeout { bucket: String, waited: Duration },
    #[error("the value of {key:?} in the key-value bucket {bucket} cannot be read")]
    Unreadable {
        bucket: String,
        key: String,
        #[source]
        source: RecordError,
    },
    #[error(
        "{key:?} in the key-value bucket {bucket} changed concurrently {attempts} times in a row; nothing was written"
    )]
    Contended {
        bucket: String,
        key: String,
        attempts: u32,
    },
    #[error("cannot seal a value for the key-value bucket")]
    Seal(#[source] StorageKeyError),
    #[error("cannot read the operator key file {path}")]
    ReadOperatorKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the operator key file {path} holds no key (32 bytes in standard base64)")]
    OperatorKeyFile { path: PathBuf },
    #[error("cannot write the cluster's operator key to {path}")]
    WriteOperatorKey {
        path: PathBuf,
        #[source]
        source: crate::tls::TlsError,
    },
    #[error("the system random number generator failed")]
    Random,
}

/// Why a value read from a bucket is unusable.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Sealed(#[from] UnsealError),
    #[error(transparent)]
    Record(#[from] CodecError),
    #[error("the opened value is not a {expected} ({category} error at column {column})")]
    Decode {
        expected: &'static str,
        category: &'static str,
        column: usize,
    },
    #[error("the record names tenant {found:?}")]
    OtherTenant { found: String },
}

impl From<KvError> for StoreError {
    fn from(e: KvError) -> StoreError {
        StoreError::Shared(Box::new(e))
    }
}

/// Where a sealed value lives, its associated data: a value moved to
/// another key or bucket does not open.
fn context(bucket: &str, key: &str) -> String {
    format!("{bucket}/{key}")
}
