//! Version 2 -> 3: tenant records are sealed under the storage key
//! (`store/sealed.rs`). Before it, `broker.redb` held every tenant's Listen,
//! Send and Manage keys in the clear.
//!
//! Every clear record is read, sealed and written back in the step's one
//! write transaction: a crash leaves the store at version 2, all clear,
//! and the next start seals it all. A record already sealed is left as it
//! is, so the step can run again. Outcome records hold no tenant keys
//! (their envelopes are sealed to the portal) and are not touched.
//!
//! The pages redb freed from the clear records may still hold their bytes
//! until they are reused: the broker compacts the file after this step
//! (`Store::open`) so the clear copies do not linger in the file.

use redb::{ReadableTable, WriteTransaction};

use super::super::{StoreError, TENANTS, decode, io, sealed};
use crate::sealing::StorageKey;

pub(in crate::store) fn tenant_records_are_sealed(
    tx: &WriteTransaction,
    key: &StorageKey,
) -> Result<(), StoreError> {
    let mut tenants = tx.open_table(TENANTS).map_err(io("seal tenants"))?;
    let mut rewrites = Vec::new();
    for entry in tenants.iter().map_err(io("seal tenants"))? {
        let (name, bytes) = entry.map_err(io("seal tenants"))?;
        let (name, bytes) = (name.value(), bytes.value());
        if sealed::is_sealed(bytes) {
            continue;
        }
        // Decoded first: a corrupt record fails the step by name rather
        // than being sealed as it is.
        let record = decode(name, bytes)?;
        rewrites.push((name.to_owned(), sealed::seal(key, &record)?));
    }
    for (name, bytes) in &rewrites {
        tenants
            .insert(name.as_str(), bytes.as_slice())
            .map_err(io("seal tenants"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use redb::Database;

    use super::*;
    use crate::sealing::test_key;
    use crate::store::{TenantKeys, TenantRecord, codec};

    fn tenant(name: &str) -> TenantRecord {
        TenantRecord {
            name: name.into(),
            connector_name: format!("{name} - AAD"),
            writeback_enabled: true,
            created_unix_ms: 1,
            modified_unix_ms: 2,
            keys: TenantKeys::generate().unwrap(),
            revoked_agents: BTreeSet::new(),
            agent_keys: Vec::new(),
        }
    }

    fn values(db: &Database) -> Vec<(String, Vec<u8>)> {
        let tx = db.begin_read().unwrap();
        let table = tx.open_table(TENANTS).unwrap();
        table
            .iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value().to_owned(), v.value().to_vec())
            })
            .collect()
    }

    #[test]
    fn clear_records_are_sealed_once_and_open_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("b.redb")).unwrap();
        let (a, b) = (tenant("a"), tenant("b"));
        let key = test_key();
        let tx = db.begin_write().unwrap();
        {
            let mut tenants = tx.open_table(TENANTS).unwrap();
            let clear = codec::encode_tenant(&a).unwrap();
            tenants.insert("a", clear.as_slice()).unwrap();
            // One already sealed, as after a crash between two runs.
            let done = sealed::seal(&key, &b).unwrap();
            tenants.insert("b", done.as_slice()).unwrap();
        }
        tx.commit().unwrap();
        let before = values(&db);

        let tx = db.begin_write().unwrap();
        tenant_records_are_sealed(&tx, &key).unwrap();
        tx.commit().unwrap();
        let once = values(&db);
        for (name, value) in &once {
            assert!(sealed::is_sealed(value), "{name}");
            let record = sealed::open(&key, name, value).unwrap();
            let want = if name == "a" { &a } else { &b };
            assert_eq!(record.keys.send.primary, want.keys.send.primary);
            assert_eq!(record.connector_name, want.connector_name);
        }
        assert_eq!(once[1], before[1], "the sealed record is untouched");
        let text = String::from_utf8_lossy(&once[0].1).into_owned();
        assert!(!text.contains(a.keys.listen.primary.to_base64().as_str()));

        let tx = db.begin_write().unwrap();
        tenant_records_are_sealed(&tx, &key).unwrap();
        tx.commit().unwrap();
        assert_eq!(values(&db), once);
    }
}
