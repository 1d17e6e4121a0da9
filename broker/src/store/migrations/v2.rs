//! Version 1 -> 2: every record names its format. Tenant records gain the
//! `format` field ([`codec`] format 2) and outcome records of format 1
//! (before an error's refusal was kept) become format 2, so a store at
//! version 2 holds only current records and a later broker can stop
//! reading the old forms of a single-node store.
//!
//! The step reads each record with the codec and writes it back as the
//! codec writes it now; a record already in the current format is left
//! as it is, so running the step again (a crash before its transaction
//! committed, then a restart) changes nothing more. A record that cannot
//! be read fails the step: the store stays at version 1 and says which.

use redb::{ReadableTable, WriteTransaction};

use super::super::{OUTCOMES, StoreError, TENANTS, codec, decode, io};
use crate::sealing::StorageKey;

pub(in crate::store) fn records_name_their_format(
    tx: &WriteTransaction,
    _: &StorageKey,
) -> Result<(), StoreError> {
    let mut tenants = tx.open_table(TENANTS).map_err(io("migrate tenants"))?;
    let mut rewrites = Vec::new();
    for entry in tenants.iter().map_err(io("migrate tenants"))? {
        let (name, bytes) = entry.map_err(io("migrate tenants"))?;
        let (name, bytes) = (name.value(), bytes.value());
        let format = codec::tenant_format(bytes).map_err(|source| StoreError::Corrupt {
            tenant: name.to_owned(),
            source,
        })?;
        if format < codec::TENANT_FORMAT {
            let record = decode(name, bytes)?;
            let encoded = codec::encode_tenant(&record).map_err(|source| StoreError::Corrupt {
                tenant: name.to_owned(),
                source,
            })?;
            rewrites.push((name.to_owned(), encoded));
        }
    }
    for (name, bytes) in &rewrites {
        tenants
            .insert(name.as_str(), bytes.as_slice())
            .map_err(io("migrate tenants"))?;
    }

    let mut outcomes = tx.open_table(OUTCOMES).map_err(io("migrate outcomes"))?;
    let mut rewrites = Vec::new();
    for entry in outcomes.iter().map_err(io("migrate outcomes"))? {
        let (key, bytes) = entry.map_err(io("migrate outcomes"))?;
        let bytes = bytes.value();
        // An undecodable outcome record is left for the reads to skip and
        // the purge to remove, as before: it holds no tenant's keys.
        if bytes.first() == Some(&1)
            && let Some(record) = codec::decode_outcome(bytes)
        {
            rewrites.push((key.value().to_owned(), codec::encode_outcome(&record)));
        }
    }
    for (key, bytes) in &rewrites {
        outcomes
            .insert(key.as_str(), bytes.as_slice())
            .map_err(io("migrate outcomes"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use redb::Database;

    use super::*;
    use crate::store::{OutcomeRecord, StoredAnswer, TenantKeys, TenantRecord};

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

    /// Every (table, key, value), in order.
    fn contents(db: &Database) -> Vec<(&'static str, String, Vec<u8>)> {
        let tx = db.begin_read().unwrap();
        let mut out = Vec::new();
        for (name, table) in [("tenants", TENANTS), ("outcomes", OUTCOMES)] {
            for entry in tx.open_table(table).unwrap().iter().unwrap() {
                let (k, v) = entry.unwrap();
                out.push((name, k.value().to_owned(), v.value().to_vec()));
            }
        }
        out
    }

    #[test]
    fn old_records_are_rewritten_once_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("b.redb")).unwrap();
        let (old, new) = (tenant("old"), tenant("new"));
        let error = OutcomeRecord {
            agent_id: "dc01".into(),
            acknowledged: true,
            expires_unix_ms: 77,
            answer: Some(StoredAnswer::Error {
                code: 3,
                refusal: 0,
                message: "no".into(),
            }),
        };
        // Format 1 of an outcome: format 2 without the refusal.
        let mut format_1 = codec::encode_outcome(&error);
        format_1[0] = 1;
        let at = 2 + 8 + 4 + 2 + "dc01".len();
        format_1.drain(at..at + 4);
        let tx = db.begin_write().unwrap();
        {
            let mut tenants = tx.open_table(TENANTS).unwrap();
            let v1 = codec::encode_tenant_as(&old, 1).unwrap();
            tenants.insert("old", v1.as_slice()).unwrap();
            let v2 = codec::encode_tenant(&new).unwrap();
            tenants.insert("new", v2.as_slice()).unwrap();
            let mut outcomes = tx.open_table(OUTCOMES).unwrap();
            outcomes.insert("old/r1", format_1.as_slice()).unwrap();
            outcomes.insert("old/junk", &[9u8, 9][..]).unwrap();
        }
        tx.commit().unwrap();
        let before = contents(&db);

        let tx = db.begin_write().unwrap();
        records_name_their_format(&tx, &crate::sealing::test_key()).unwrap();
        tx.commit().unwrap();
        let once = contents(&db);
        for (table, key, value) in &once {
            match (*table, key.as_str()) {
                ("tenants", name) => {
                    assert_eq!(codec::tenant_format(value).unwrap(), 2, "{name}");
                    let record = codec::decode_tenant(value).unwrap();
                    let want = if name == "old" { &old } else { &new };
                    assert_eq!(record.keys.send.primary, want.keys.send.primary);
                }
                ("outcomes", "old/r1") => {
                    assert_eq!(codec::decode_outcome(value), Some(error.clone()));
                    assert_eq!(value[0], 2);
                }
                _ => {}
            }
        }
        // The record already current and the unreadable one are untouched.
        let same = |k: &str| {
            let find = |c: &[(&'static str, String, Vec<u8>)]| {
                c.iter().find(|e| e.1 == k).map(|e| e.2.clone())
            };
            assert_eq!(find(&before), find(&once), "{k}");
        };
        same("new");
        same("old/junk");

        // Again, as after a crash before the version was recorded.
        let tx = db.begin_write().unwrap();
        records_name_their_format(&tx, &crate::sealing::test_key()).unwrap();
        tx.commit().unwrap();
        assert_eq!(contents(&db), once);
    }
}
