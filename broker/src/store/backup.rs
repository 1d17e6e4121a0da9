//! Backups of the single node's store, and restores from them.
//!
//! A backup is written from one read transaction, so it is one consistent
//! state of the store even while the broker writes (the running broker
//! serves it on its operator port, `POST /backup`; a stopped broker's
//! store is read directly). It holds the records exactly as the store
//! does: tenant records sealed under the storage key, outcome records
//! (whose envelopes only the portals can open). A backup is worth nothing
//! without the storage key, and gives away nothing without it.
//!
//! The file is text: a header line (JSON: format, schema version, the key
//! id the tenant records are sealed under, when, how many records), then
//! one JSON line per record (table, key, base64 value). The outcome index
//! is not copied: the broker rebuilds it at start from the records.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use redb::{ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use super::{OUTCOMES, SCHEMA_VERSION, Store, StoreError, TENANTS, io, sealed};
use crate::sealing::StorageKey;

/// The backup format this broker writes and reads.
pub const BACKUP_FORMAT: u32 = 1;
const MAGIC: &str = "relay-broker backup";

/// The first line of a backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Header {
    pub backup: String,
    pub format: u32,
    pub schema_version: u64,
    /// The id of the storage key the tenant records are sealed under.
    pub key_id: String,
    pub created_unix_ms: i64,
    pub tenants: u64,
    pub outcomes: u64,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    table: String,
    key: String,
    value: String,
}

/// A backup or restore that failed. No message holds a record's value.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot write the backup")]
    Write(#[source] std::io::Error),
    #[error("cannot read the backup")]
    Read(#[source] std::io::Error),
    #[error("line {line} of the backup is not {what}")]
    NotABackup { line: usize, what: &'static str },
    #[error("the backup has format {0}; this broker reads format {BACKUP_FORMAT}")]
    FormatTooNew(u32),
    #[error(
        "the backup is of store schema {found}; this broker restores schema {SCHEMA_VERSION} \
         (restore it with the broker that took it)"
    )]
    Schema { found: u64 },
    #[error(
        "the backup's records are sealed under storage key id {backup}, the configured key is \
         {configured}: configure the storage key that was in use when the backup was taken"
    )]
    WrongKey { backup: String, configured: String },
    #[error("the backup holds {header} {table} records by its header but {found} in its body")]
    Truncated {
        table: &'static str,
        header: u64,
        found: u64,
    },
    #[error(
        "the store {path} already holds records; restore into an empty data directory, \
         or pass --force to replace them"
    )]
    NotEmpty { path: PathBuf },
    #[error("cannot replace {path} with the restored store")]
    Replace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Writes a backup of the store as one read transaction sees it.
    pub fn backup(&self, out: &mut dyn Write) -> Result<Header, BackupError> {
        let tx = self.db.begin_read().map_err(io("read for backup"))?;
        let tenants = tx.open_table(TENANTS).map_err(io("read for backup"))?;
        let outcomes = tx.open_table(OUTCOMES).map_err(io("read for backup"))?;
        let header = Header {
            backup: MAGIC.to_owned(),
            format: BACKUP_FORMAT,
            schema_version: SCHEMA_VERSION,
            key_id: self.key.id().to_string(),
            created_unix_ms: crate::time::now_unix_ms(),
            tenants: tenants.len().map_err(io("read for backup"))?,
            outcomes: outcomes.len().map_err(io("read for backup"))?,
        };
        write_line(out, &header)?;
        for (name, table) in [("tenants", &tenants), ("outcomes", &outcomes)] {
            for entry in table.iter().map_err(io("read for backup"))? {
                let (key, value) = entry.map_err(io("read for backup"))?;
                let entry = Entry {
                    table: name.to_owned(),
                    key: key.value().to_owned(),
                    value: STANDARD.encode(value.value()),
                };
                write_line(out, &entry)?;
            }
        }
        out.flush().map_err(BackupError::Write)?;
        Ok(header)
    }

    /// Whether the store holds no tenant and no outcome.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        let tx = self.db.begin_read().map_err(io("read"))?;
        for table in [TENANTS, OUTCOMES] {
            let table = tx.open_table(table).map_err(io("read"))?;
            if !table.is_empty().map_err(io("read"))? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn write_line(out: &mut dyn Write, value: &impl Serialize) -> Result<(), BackupError> {
    let mut line = serde_json::to_vec(value).map_err(|e| BackupError::Write(e.into()))?;
    line.push(b'\n');
    out.write_all(&line).map_err(BackupError::Write)
}

/// Restores `backup` as the store at `store_path`, whose records must open
/// under `key`. The restored store is built beside it and renamed over it,
/// so an interrupted restore leaves the old store (or none) in place. A
/// store holding records is replaced only with `force`.
pub fn restore(
    store_path: &Path,
    key: Arc<StorageKey>,
    backup: &mut dyn BufRead,
    force: bool,
) -> Result<Header, BackupError> {
    let mut lines = backup.lines();
    let first = lines
        .next()
        .transpose()
        .map_err(BackupError::Read)?
        .unwrap_or_default();
    let header: Header = serde_json::from_str(&first)
        .ok()
        .filter(|h: &Header| h.backup == MAGIC)
        .ok_or(BackupError::NotABackup {
            line: 1,
            what: "a relay-broker backup header",
        })?;
    if header.format > BACKUP_FORMAT {
        return Err(BackupError::FormatTooNew(header.format));
    }
    if header.schema_version != SCHEMA_VERSION {
        return Err(BackupError::Schema {
            found: header.schema_version,
        });
    }
    if header.key_id != key.id().to_string() {
        return Err(BackupError::WrongKey {
            backup: header.key_id,
            configured: key.id().to_string(),
        });
    }
    if store_path.exists() && !force {
        let existing = Store::open(store_path, Arc::clone(&key))?;
        if !existing.is_empty()? {
            return Err(BackupError::NotEmpty {
                path: store_path.to_owned(),
            });
        }
    }

    let building = store_path.with_extension("redb.restoring");
    let _ = std::fs::remove_file(&building);
    let built = build(&building, key, lines, &header);
    if built.is_err() {
        // Nothing of a refused backup is left beside the store.
        let _ = std::fs::remove_file(&building);
    }
    built?;
    std::fs::rename(&building, store_path).map_err(|source| BackupError::Replace {
        path: store_path.to_owned(),
        source,
    })?;
    Ok(header)
}

/// Writes the records of `lines` into a new store at `building`, in one
/// transaction, each tenant record opened once under `key` first.
fn build(
    building: &Path,
    key: Arc<StorageKey>,
    lines: std::io::Lines<&mut dyn BufRead>,
    header: &Header,
) -> Result<(), BackupError> {
    let store = Store::open(building, Arc::clone(&key))?;
    let tx = store.db.begin_write().map_err(io("restore"))?;
    let (mut tenants, mut outcomes) = (0u64, 0u64);
    {
        let mut tenant_table = tx.open_table(TENANTS).map_err(io("restore"))?;
        let mut outcome_table = tx.open_table(OUTCOMES).map_err(io("restore"))?;
        for (n, line) in lines.enumerate() {
            let line = line.map_err(BackupError::Read)?;
            let bad = BackupError::NotABackup {
                line: n + 2,
                what: "a backup record",
            };
            let Ok(entry) = serde_json::from_str::<Entry>(&line) else {
                return Err(bad);
            };
            let Ok(value) = STANDARD.decode(&entry.value) else {
                return Err(bad);
            };
            let table: &mut redb::Table<&str, &[u8]> = match entry.table.as_str() {
                "tenants" => {
                    // Opened once here so that a backup that would not
                    // start the broker is refused now, by tenant.
                    sealed::open(&key, &entry.key, &value)?;
                    tenants += 1;
                    &mut tenant_table
                }
                "outcomes" => {
                    outcomes += 1;
                    &mut outcome_table
                }
                _ => return Err(bad),
            };
            table
                .insert(entry.key.as_str(), value.as_slice())
                .map_err(io("restore"))?;
        }
    }
    for (table, header, found) in [
        ("tenant", header.tenants, tenants),
        ("outcome", header.outcomes, outcomes),
    ] {
        if header != found {
            return Err(BackupError::Truncated {
                table,
                header,
                found,
            });
        }
    }
    tx.commit().map_err(io("commit restore"))?;
    Ok(())
}

/// Parses a backup's header line alone (for a CLI to report on it).
pub fn read_header(first_line: &str) -> Option<Header> {
    serde_json::from_str(first_line)
        .ok()
        .filter(|h: &Header| h.backup == MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sealing::test_key;
    use crate::store::{TenantKeys, TenantRecord};

    fn record(name: &str) -> TenantRecord {
        TenantRecord {
            name: name.into(),
            connector_name: format!("{name} - AAD"),
            writeback_enabled: true,
            created_unix_ms: 1,
            modified_unix_ms: 2,
            keys: TenantKeys::generate().unwrap(),
            revoked_agents: Default::default(),
            agent_keys: Vec::new(),
        }
    }

    #[test]
    fn a_backup_restores_the_same_sealed_records() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (record("a"), record("b"));
        let store = Store::open(&dir.path().join("one.redb"), test_key()).unwrap();
        store.put_tenant(&a).unwrap();
        store.put_tenant(&b).unwrap();
        let mut bytes = Vec::new();
        let header = store.backup(&mut bytes).unwrap();
        assert_eq!((header.tenants, header.outcomes), (2, 0));
        assert_eq!(header.key_id, test_key().id().to_string());
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains(a.keys.send.primary.to_base64().as_str()));

        let target = dir.path().join("two.redb");
        restore(&target, test_key(), &mut bytes.as_slice(), false).unwrap();
        let restored = Store::open(&target, test_key()).unwrap();
        let got = restored.get_tenant("b").unwrap().unwrap();
        assert_eq!(got.keys.listen.primary, b.keys.listen.primary);
        drop(restored);

        // A store with records is replaced only with --force.
        let err = restore(&target, test_key(), &mut bytes.as_slice(), false).unwrap_err();
        assert!(matches!(err, BackupError::NotEmpty { .. }), "{err}");
        restore(&target, test_key(), &mut bytes.as_slice(), true).unwrap();

        // Another key: refused before anything is written, naming both ids.
        let other = Arc::new(StorageKey::generate().unwrap());
        let fresh = dir.path().join("three.redb");
        let err = restore(&fresh, other, &mut bytes.as_slice(), false).unwrap_err();
        assert!(matches!(err, BackupError::WrongKey { .. }), "{err}");
        assert!(!fresh.exists());

        // A cut-off backup is refused.
        let cut = &bytes[..bytes.len() - 10];
        let err = restore(&fresh, test_key(), &mut &cut[..], false).unwrap_err();
        assert!(
            matches!(err, BackupError::NotABackup { line: 3, .. }),
            "{err}"
        );
        assert!(!fresh.exists());
        assert!(!fresh.with_extension("redb.restoring").exists());
    }
}
