//! Upgrades of the store's schema. A store records the schema version that
//! wrote it in its `meta` table; a broker brings an older store forward one
//! step at a time, each step in its own write transaction that also records
//! the version it reached, so a crash mid-upgrade leaves the store at the
//! last version fully reached and the next start carries on from there. A
//! store written by a newer broker is refused: an older broker cannot know
//! what the newer records mean, and writing to them could lose data.
//!
//! The format of version 1 is pinned by the fixture in
//! `broker/tests/fixtures/store-v1` (see `broker/tests/store_fixture.rs`):
//! a change to the records must come with a step here and a test that the
//! fixture still reads back.

use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};
use tracing::info;

use super::{StoreError, io};
use crate::sealing::StorageKey;

mod v2;
mod v3;

pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const VERSION_KEY: &str = "schema_version";

/// The schema this broker writes.
pub const SCHEMA_VERSION: u64 = 3;
/// The first schema whose tenant records are sealed.
pub(super) const SEALED_SINCE: u64 = 3;

/// Brings a store from version `from` to `from + 1`. It runs inside the
/// transaction that records the new version, so it must not commit. It
/// is given the storage key the store is opened with.
pub(super) type Step = fn(&WriteTransaction, &StorageKey) -> Result<(), StoreError>;

/// One step per version below [`SCHEMA_VERSION`], in order. Version 1 is
/// the first versioned schema. The outcome index of stores written before
/// it existed is built at start by `outcomes::index::ensure_built`, which
/// also rebuilds an index found missing, so it stays there rather than here.
pub(super) const MIGRATIONS: &[(u64, Step)] = &[
    (1, v2::records_name_their_format),
    (2, v3::tenant_records_are_sealed),
];

/// The store's recorded version; `None` for a store nothing was written to.
pub(super) fn version(db: &Database) -> Result<Option<u64>, StoreError> {
    let tx = db.begin_write().map_err(io("read schema version"))?;
    let found = {
        let meta = tx.open_table(META).map_err(io("read schema version"))?;
        meta.get(VERSION_KEY)
            .map_err(io("read schema version"))?
            .map(|v| v.value())
    };
    // Nothing written: dropping the transaction leaves the file as it was.
    tx.abort().map_err(io("read schema version"))?;
    Ok(found)
}

/// Runs the steps of `steps` from the store's version up to `target`, one
/// write transaction each; a store at `target` is left untouched.
pub(super) fn migrate(
    db: &Database,
    steps: &[(u64, Step)],
    target: u64,
    key: &StorageKey,
) -> Result<(), StoreError> {
    let Some(mut current) = version(db)? else {
        return Ok(());
    };
    if current > target {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: target,
        });
    }
    while current < target {
        let step = steps
            .iter()
            .find(|(from, _)| *from == current)
            .map(|(_, step)| step)
            .ok_or(StoreError::NoMigration { from: current })?;
        let failed = |source| StoreError::Migration {
            from: current,
            source: Box::new(source),
        };
        let tx = db.begin_write().map_err(io("migrate")).map_err(failed)?;
        step(&tx, key).map_err(failed)?;
        {
            let mut meta = tx.open_table(META).map_err(io("migrate")).map_err(failed)?;
            meta.insert(VERSION_KEY, current + 1)
                .map_err(io("migrate"))
                .map_err(failed)?;
        }
        tx.commit()
            .map_err(io("commit migration"))
            .map_err(failed)?;
        info!(from = current, to = current + 1, "migrated the store");
        current += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sealing::test_key;

    const MARKS: TableDefinition<&str, u64> = TableDefinition::new("test_marks");

    fn mark(tx: &WriteTransaction, name: &str) -> Result<(), StoreError> {
        let mut marks = tx.open_table(MARKS).map_err(io("test"))?;
        marks.insert(name, 1).map_err(io("test"))?;
        Ok(())
    }

    fn one_to_two(tx: &WriteTransaction, _: &StorageKey) -> Result<(), StoreError> {
        mark(tx, "two")
    }

    fn two_to_three(tx: &WriteTransaction, _: &StorageKey) -> Result<(), StoreError> {
        mark(tx, "three")
    }

    /// Writes its mark, then fails: the mark must not survive.
    fn broken(tx: &WriteTransaction, _: &StorageKey) -> Result<(), StoreError> {
        mark(tx, "broken")?;
        Err(StoreError::Random)
    }

    fn at_version(version: u64) -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("b.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert(VERSION_KEY, version)
            .unwrap();
        tx.commit().unwrap();
        (dir, db)
    }

    fn marks(db: &Database) -> Vec<String> {
        let tx = db.begin_write().unwrap();
        let table = tx.open_table(MARKS).unwrap();
        let out = table
            .iter()
            .unwrap()
            .map(|e| e.unwrap().0.value().to_owned())
            .collect();
        drop(table);
        tx.abort().unwrap();
        out
    }

    #[test]
    fn steps_run_in_order_and_record_each_version() {
        let (_dir, db) = at_version(1);
        migrate(&db, &[(2, two_to_three), (1, one_to_two)], 3, &test_key()).unwrap();
        assert_eq!(version(&db).unwrap(), Some(3));
        assert_eq!(marks(&db), ["three", "two"]);
        // Again: nothing left to run.
        migrate(&db, &[(2, broken), (1, broken)], 3, &test_key()).unwrap();
        assert_eq!(marks(&db), ["three", "two"]);
    }

    #[test]
    fn a_failed_step_leaves_the_last_version_reached() {
        let (_dir, db) = at_version(1);
        let err = migrate(&db, &[(1, one_to_two), (2, broken)], 3, &test_key()).unwrap_err();
        assert!(
            matches!(err, StoreError::Migration { from: 2, .. }),
            "{err}"
        );
        assert_eq!(version(&db).unwrap(), Some(2));
        assert_eq!(marks(&db), ["two"]);
        // The next start carries on from version 2.
        migrate(&db, &[(2, two_to_three)], 3, &test_key()).unwrap();
        assert_eq!(version(&db).unwrap(), Some(3));
    }

    #[test]
    fn a_gap_in_the_steps_is_refused() {
        let (_dir, db) = at_version(1);
        let err = migrate(&db, &[(2, two_to_three)], 3, &test_key()).unwrap_err();
        assert!(matches!(err, StoreError::NoMigration { from: 1 }), "{err}");
        assert_eq!(version(&db).unwrap(), Some(1));
    }

    #[test]
    fn a_newer_store_is_refused_untouched() {
        let (_dir, db) = at_version(SCHEMA_VERSION + 1);
        let err = migrate(&db, MIGRATIONS, SCHEMA_VERSION, &test_key()).unwrap_err();
        assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
        assert_eq!(version(&db).unwrap(), Some(SCHEMA_VERSION + 1));
    }

    /// Every version below the current one has exactly one step.
    #[test]
    fn the_steps_cover_every_older_version() {
        let mut froms: Vec<u64> = MIGRATIONS.iter().map(|(from, _)| *from).collect();
        froms.sort_unstable();
        let expected: Vec<u64> = (1..SCHEMA_VERSION).collect();
        assert_eq!(froms, expected);
    }
}
