//! Tenant records sealed at rest in the single node's store.
//!
//! The whole record value is sealed, not only its keys: one rule that
//! cannot miss a field added later, and the same as the cluster's bucket
//! does. The table key (the tenant's name) stays in the clear so lookups
//! need no key; the seal's context is `tenants/<name>`, so a value copied
//! under another name no longer opens. A sealed value names the key that
//! sealed it (its key id, see [`crate::sealing`]): a store opened with
//! another key says which key it needs instead of reading garbage.

use crate::sealing::{KeyId, SEALED_VERSION, StorageKey};

use super::records::TenantRecord;
use super::{StoreError, codec};

/// Where a tenant's record lives, bound into its seal.
pub fn context(tenant: &str) -> String {
    format!("tenants/{tenant}")
}

/// Whether `bytes` is a sealed value rather than a clear JSON record
/// (which starts with `{`). Schema 3 holds only sealed ones.
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.first() == Some(&SEALED_VERSION)
}

/// The id of the key that sealed a stored value, if it is one.
pub fn sealed_by(bytes: &[u8]) -> Option<KeyId> {
    KeyId::of_sealed(bytes)
}

/// A record as the tenants table holds it.
pub(crate) fn seal(key: &StorageKey, record: &TenantRecord) -> Result<Vec<u8>, StoreError> {
    let clear = codec::encode_tenant(record).map_err(|source| StoreError::Corrupt {
        tenant: record.name.clone(),
        source,
    })?;
    seal_bytes(key, &record.name, &clear)
}

pub(crate) fn seal_bytes(
    key: &StorageKey,
    tenant: &str,
    clear: &[u8],
) -> Result<Vec<u8>, StoreError> {
    key.seal(&context(tenant), clear)
        .map_err(|source| StoreError::Seal {
            tenant: tenant.to_owned(),
            source,
        })
}

/// A stored value's clear record bytes.
pub(crate) fn open_bytes(
    key: &StorageKey,
    tenant: &str,
    sealed: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>, StoreError> {
    key.unseal(&context(tenant), sealed)
        .map_err(|source| StoreError::Unseal {
            tenant: tenant.to_owned(),
            source,
        })
}

/// A stored value's record.
pub(crate) fn open(
    key: &StorageKey,
    tenant: &str,
    sealed: &[u8],
) -> Result<TenantRecord, StoreError> {
    let clear = open_bytes(key, tenant, sealed)?;
    super::decode(tenant, &clear)
}
