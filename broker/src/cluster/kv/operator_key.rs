//! The operator key signs operator tokens, and every node checks them: the
//! cluster has exactly one. It lives in the meta bucket, sealed with the
//! storage key. The first node to start uploads its own (the key file of a
//! single node being turned into a cluster, or a fresh one) with a KV
//! create, which only one node can win (a create is the one condition
//! nats-server 2.9 checks when it applies a write, see [`super::cas`]); the
//! others take the winner's.
//! Every node then writes it to its own key file, so that `relayctl
//! --operator-key-file <data_dir>/operator.key` works on any node.

use std::path::Path;

use async_nats::jetstream::kv::{self, CreateErrorKind, EntryErrorKind, Operation};
use sas::Key;
use tracing::{info, warn};
use zeroize::Zeroizing;

use super::retry::{RETRY_FOR, failed, retry};
use super::{KvError, RecordError, context};
use crate::cluster::storage_key::StorageKey;

/// Its key in the meta bucket.
pub const OPERATOR_KEY: &str = "operator-key";

/// How often a node may find the key both absent and, a moment later,
/// taken: once in a race, twice only if someone deletes it meanwhile.
const ATTEMPTS: u32 = 3;

/// Settles the cluster's operator key (see the module documentation) and
/// writes it to `local_path` with mode 0600, replacing what was there.
pub async fn converge_operator_key(
    meta: &kv::Store,
    storage_key: &StorageKey,
    local_path: &Path,
) -> Result<Key, KvError> {
    let bucket = meta.name.as_str();
    let context = context(bucket, OPERATOR_KEY);
    for _ in 0..ATTEMPTS {
        let entry = retry(
            bucket,
            "read the operator key",
            RETRY_FOR,
            is_invalid_key,
            || meta.entry(OPERATOR_KEY),
        )
        .await?
        .map_err(|e| failed(bucket, "read the operator key", e))?;
        if let Some(entry) = entry.filter(|e| e.operation == Operation::Put) {
            let key = open(storage_key, bucket, &context, &entry.value)?;
            write_local(local_path, &key)?;
            return Ok(key);
        }
        let local = read_local(local_path)?;
        let candidate = match &local {
            Some(key) => key.clone(),
            None => Key::generate().map_err(|_| KvError::Random)?,
        };
        let sealed = storage_key
            .seal(&context, candidate.to_base64().as_bytes())
            .map_err(KvError::Seal)?;
        let created = retry(
            bucket,
            "store the operator key",
            RETRY_FOR,
            |e: &kv::CreateError| {
                matches!(
                    e.kind(),
                    CreateErrorKind::AlreadyExists | CreateErrorKind::InvalidKey
                )
            },
            || meta.create(OPERATOR_KEY, sealed.clone().into()),
        )
        .await?;
        match created {
            Ok(_) => {
                info!(
                    from = if local.is_some() {
                        "this node's key file"
                    } else {
                        "a fresh key"
                    },
                    "stored the cluster's operator key"
                );
                write_local(local_path, &candidate)?;
                return Ok(candidate);
            }
            // Another node won the race (or this one, on an attempt whose
            // answer was lost): read what is there.
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => continue,
            Err(e) => return Err(failed(bucket, "store the operator key", e)),
        }
    }
    Err(KvError::Contended {
        bucket: bucket.to_owned(),
        key: OPERATOR_KEY.to_owned(),
        attempts: ATTEMPTS,
    })
}

fn is_invalid_key(e: &kv::EntryError) -> bool {
    e.kind() == EntryErrorKind::InvalidKey
}

fn open(
    storage_key: &StorageKey,
    bucket: &str,
    context: &str,
    sealed: &[u8],
) -> Result<Key, KvError> {
    let unreadable = |source| KvError::Unreadable {
        bucket: bucket.to_owned(),
        key: OPERATOR_KEY.to_owned(),
        source,
    };
    let text = storage_key
        .unseal(context, sealed)
        .map_err(|e| unreadable(RecordError::Sealed(e)))?;
    std::str::from_utf8(&text)
        .ok()
        .and_then(|text| Key::from_base64(text).ok())
        .ok_or_else(|| {
            unreadable(RecordError::Decode {
                expected: "base64 key",
                category: "data",
                column: 0,
            })
        })
}

fn read_local(path: &Path) -> Result<Option<Key>, KvError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Key::from_base64(&Zeroizing::new(text))
            .map(Some)
            .map_err(|_| KvError::OperatorKeyFile {
                path: path.to_owned(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KvError::ReadOperatorKey {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `key` unless the file holds it already: to a temp file created
/// 0600, then renamed over the old one, so the file is never half written
/// nor readable by others.
fn write_local(path: &Path, key: &Key) -> Result<(), KvError> {
    let current = std::fs::read_to_string(path).ok().map(Zeroizing::new);
    let held = current.as_deref().and_then(|t| Key::from_base64(t).ok());
    if held.as_ref() == Some(key) {
        return Ok(());
    }
    let err = |source| KvError::WriteOperatorKey {
        path: path.to_owned(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "operator.key".into());
    let temp = path.with_file_name(format!(".{file_name}.tmp"));
    let _ = std::fs::remove_file(&temp);
    let mut text = key.to_base64();
    text.push('\n');
    crate::tls::write(&temp, text.as_bytes(), 0o600).map_err(err)?;
    std::fs::rename(&temp, path).map_err(|source| {
        err(crate::tls::TlsError::Write {
            path: path.to_owned(),
            source,
        })
    })?;
    if current.is_some() {
        warn!(
            path = %path.display(),
            "replaced this node's operator key file with the cluster's operator key; tokens signed with the old key no longer pass"
        );
    } else {
        info!(path = %path.display(), "wrote the cluster's operator key");
    }
    Ok(())
}
