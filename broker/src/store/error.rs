//! The store's one error type, whichever backend holds the records, and
//! its conversion into the [`RelayError`] callers see. The conversion lives
//! here, on the store's side, so that the broker's error type knows nothing
//! of the store: it carries a store failure as an opaque source.
//!
//! Backend failures keep their specific messages (a redb operation, a
//! key-value bucket and key) but arrive type-erased, so nothing above the
//! store names a backend.

use crate::error::RelayError;

/// A backend's own failure, as the store passes it on.
pub type Source = Box<dyn std::error::Error + Send + Sync>;

/// A store failure. The messages name the operation, never a key.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}")]
    Open {
        path: String,
        #[source]
        source: Source,
    },
    #[error("store {operation} failed")]
    Io {
        operation: &'static str,
        #[source]
        source: Source,
    },
    #[error("tenant record {tenant:?} in the store is corrupt")]
    Corrupt {
        tenant: String,
        #[source]
        source: crate::store::codec::CodecError,
    },
    /// Written by a newer broker: opening it could lose what it added.
    #[error(
        "the store has schema version {found}, newer than the {supported} this broker \
         writes: it was written by a newer broker; run that one, or restore the copy of \
         data_dir taken before the upgrade"
    )]
    SchemaTooNew { found: u64, supported: u64 },
    #[error("no migration from store schema version {from}")]
    NoMigration { from: u64 },
    #[error("migrating the store from schema version {from} failed; it is still at {from}")]
    Migration {
        from: u64,
        #[source]
        source: Box<StoreError>,
    },
    /// The record does not open under the configured storage key; the
    /// source says whether another key sealed it (and which) or it was
    /// altered.
    #[error("tenant record {tenant:?} in the store does not open: {source}")]
    Unseal {
        tenant: String,
        source: crate::sealing::UnsealError,
    },
    #[error("cannot seal tenant record {tenant:?}")]
    Seal {
        tenant: String,
        #[source]
        source: crate::sealing::StorageKeyError,
    },
    #[error("the store task was cancelled")]
    Cancelled,
    /// The outcome store's readers have this many reads queued already.
    #[error("the outcome store has {queued} reads queued; try again")]
    Busy { queued: usize },
    #[error("the system random number generator failed")]
    Random,
    /// `place` names the record and where it lives, as its backend says it.
    #[error("{place} changed concurrently {attempts} times in a row; nothing was written")]
    Contended { place: String, attempts: u32 },
    /// A change to a shared store did not finish within its bound (see
    /// `TenantStore::write_bound`). Its last attempt may still land: the
    /// message says to read the tenant again rather than claim nothing
    /// changed.
    #[error(
        "changing {place} did not finish within {}; NATS may have no quorum here. It was most likely not changed: read it again before retrying",
        humantime::format_duration(*.bound)
    )]
    WriteTimedOut {
        place: String,
        bound: std::time::Duration,
    },
    /// The store the cluster's nodes share failed; the message names the
    /// bucket, the key and the operation.
    #[error(transparent)]
    Shared(Source),
}

impl StoreError {
    /// The store failure a [`RelayError::Store`] carries, if it is one.
    pub fn of(err: &RelayError) -> Option<&StoreError> {
        match err {
            RelayError::Store(source) => source.downcast_ref(),
            _ => None,
        }
    }
}

impl From<StoreError> for RelayError {
    fn from(err: StoreError) -> RelayError {
        RelayError::Store(Box::new(err))
    }
}

/// Maps a redb failure of `operation` to a [`StoreError::Io`].
pub(crate) fn io<E: Into<redb::Error>>(operation: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Io {
        operation,
        source: Box::new(e.into()),
    }
}
