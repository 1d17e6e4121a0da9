//! Compare-and-set writes that hold on nats-server 2.9.
//!
//! A write conditioned on a key's revision alone
//! (`Nats-Expected-Last-Subject-Sequence`, what async-nats'
//! `kv::Store::update` sends) is checked by the stream leader before the
//! write is proposed to the replicas, not when it is applied: two nodes
//! updating one key within milliseconds can both succeed, the second
//! silently undoing the first (nats-server issue 4320, fixed in 2.9.21;
//! Debian ships 2.9.10). Only a create (revision 0) is checked when
//! applied. The stream-wide condition `Nats-Expected-Last-Sequence` is
//! checked when applied, in log order, on every replica.
//!
//! So a write here carries both: the key's revision as read (a stale read
//! is refused at once) and the stream's last sequence, read before the key
//! (any write that got in between is refused). A write to another key of
//! the bucket in between is a conflict too: the caller reads again and
//! retries. Tenant writes are rare enough for that.

use std::time::Duration;

use async_nats::HeaderValue;
use async_nats::header::{NATS_EXPECTED_LAST_SEQUENCE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE};
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::kv::{self, EntryErrorKind};
use async_nats::jetstream::{self};

use super::KvError;
use super::retry::{failed, retry, retry_all};

/// A key as read, with what a write needs to be conditioned on it.
pub(crate) struct Snapshot {
    /// The key's latest entry: a value, a deletion, or nothing.
    pub(crate) entry: Option<kv::Entry>,
    /// The stream's last sequence, read before the entry.
    stream_last: u64,
}

impl Snapshot {
    /// The entry if it holds a value (not deleted).
    pub(crate) fn value(&self) -> Option<&kv::Entry> {
        self.entry
            .as_ref()
            .filter(|e| e.operation == kv::Operation::Put)
    }
}

/// What to write.
pub(crate) enum Change<'a> {
    Put(&'a [u8]),
    Delete,
}

/// Reads `key` for a conditional write.
pub(crate) async fn read(
    store: &kv::Store,
    key: &str,
    window: Duration,
) -> Result<Snapshot, KvError> {
    let bucket = store.name.as_str();
    // From the stream leader: the state the condition is checked against.
    let stream_last = retry_all(bucket, "read the bucket's state", window, || {
        store.stream.get_info()
    })
    .await?
    .state
    .last_sequence;
    let is_final = |e: &kv::EntryError| e.kind() == EntryErrorKind::InvalidKey;
    let entry = retry(bucket, "read a key", window, is_final, || store.entry(key))
        .await?
        .map_err(|e| failed(bucket, "read a key", e))?;
    Ok(Snapshot { entry, stream_last })
}

/// Writes `change` to `key` if neither the key nor the stream changed
/// since `snapshot`: the new revision, or `None` on a conflict.
pub(crate) async fn write(
    js: &jetstream::Context,
    store: &kv::Store,
    key: &str,
    change: Change<'_>,
    snapshot: &Snapshot,
    window: Duration,
) -> Result<Option<u64>, KvError> {
    let bucket = store.name.as_str();
    let mut headers = async_nats::HeaderMap::new();
    let revision = snapshot.entry.as_ref().map_or(0, |e| e.revision);
    headers.insert(
        NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
        HeaderValue::from(revision),
    );
    headers.insert(
        NATS_EXPECTED_LAST_SEQUENCE,
        HeaderValue::from(snapshot.stream_last),
    );
    let payload = match change {
        Change::Put(value) => value.to_vec(),
        Change::Delete => {
            headers.insert("KV-Operation", "DEL");
            Vec::new()
        }
    };
    let subject = format!("{}{}", store.prefix, key);
    let is_final = |e: &PublishError| e.kind() == PublishErrorKind::WrongLastSequence;
    let written = retry(bucket, "write a key", window, is_final, || async {
        js.publish_with_headers(subject.clone(), headers.clone(), payload.clone().into())
            .await?
            .await
    })
    .await?;
    match written {
        Ok(ack) => Ok(Some(ack.sequence)),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
        Err(e) => Err(failed(bucket, "write a key", e)),
    }
}
