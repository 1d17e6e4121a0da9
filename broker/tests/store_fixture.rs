//! The store as the broker of schema version 1 wrote it, committed in
//! `tests/fixtures/store-v1`: whatever later changes the store (new records,
//! other backends), a broker must still open this file and read back every
//! piece of it, or migrate it forward (the tests at the end follow the step
//! to version 2, see `broker/src/store/migrations/v2.rs`, and to version 3,
//! which seals the tenant records, `migrations/v3.rs`). The fixture is
//! written by
//! `write_fixture` below with the broker's own code (see the fixture's
//! README); the tests open a copy, never the committed file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use broker::auth::Authorizer;
use broker::config::Limits;
use broker::outcomes::{Admission, OutcomeRecord, Outcomes, Settled, StoredAnswer};
use broker::sealing::StorageKey;
use broker::server::load_or_create_operator_key;
use broker::store::{
    AgentKeyRecord, KeySlots, SCHEMA_VERSION, Store, StoreError, TenantKeys, TenantRecord, codec,
    sealed,
};
use broker::tenants::Tenants;
use redb::{Database, ReadableTable, TableDefinition, TableHandle};
use sas::{Key, KeySlot, Right};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const OUTCOMES: TableDefinition<&str, &[u8]> = TableDefinition::new("outcomes");
const OUTCOME_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("outcome_counts");

/// Long enough that the fixture's outcomes never expire under the tests.
const RETENTION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// 2026-12-05; only the far future matters.
const WRITTEN_UNIX_MS: i64 = 1_796_428_800_000;

/// The committed store of `version`: the tests read version 1's.
fn fixture_dir_of(version: u64) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/store-v{version}"))
}

fn fixture_dir() -> PathBuf {
    fixture_dir_of(1)
}

/// A test key: 32 copies of `byte`. Never a real secret.
fn key(byte: u8) -> Key {
    Key::from_base64(&STANDARD.encode([byte; 32])).unwrap()
}

/// Distinct keys per tenant, right and slot: `base` + 0..6.
fn keys(base: u8) -> TenantKeys {
    let pair = |n: u8| KeySlots {
        primary: key(base + 2 * n),
        secondary: key(base + 2 * n + 1),
    };
    TenantKeys {
        listen: pair(0),
        send: pair(1),
        manage: pair(2),
    }
}

/// The storage key the tests open the store with: 32 bytes of 0x5a.
fn storage_key() -> Arc<StorageKey> {
    Arc::new(StorageKey::from_base64(&STANDARD.encode([0x5a; 32])).unwrap())
}

fn open(path: &Path) -> Result<Store, StoreError> {
    Store::open(path, storage_key())
}

fn operator_key() -> Key {
    key(0xee)
}

fn fixture_tenants() -> Vec<TenantRecord> {
    vec![
        TenantRecord {
            name: "contoso".into(),
            connector_name: "contoso - AAD".into(),
            writeback_enabled: true,
            created_unix_ms: WRITTEN_UNIX_MS,
            modified_unix_ms: WRITTEN_UNIX_MS + 1,
            keys: keys(0x10),
            revoked_agents: BTreeSet::from(["dc-retired".to_owned()]),
            agent_keys: vec![
                AgentKeyRecord {
                    key_id: "agent-key-1".into(),
                    public_key: vec![0x04; 65],
                    registered_unix_ms: WRITTEN_UNIX_MS,
                    endorsements: vec![("portal-key-1".into(), vec![0x30; 72])],
                },
                AgentKeyRecord {
                    key_id: "agent-key-2".into(),
                    public_key: vec![0x05; 65],
                    registered_unix_ms: WRITTEN_UNIX_MS + 2,
                    endorsements: Vec::new(),
                },
            ],
        },
        TenantRecord {
            name: "fabrikam".into(),
            connector_name: "Fabrikam writeback".into(),
            writeback_enabled: false,
            created_unix_ms: WRITTEN_UNIX_MS + 3,
            modified_unix_ms: WRITTEN_UNIX_MS + 4,
            keys: keys(0x40),
            revoked_agents: BTreeSet::new(),
            agent_keys: vec![AgentKeyRecord {
                key_id: "fab-agent".into(),
                public_key: vec![0x06; 33],
                registered_unix_ms: WRITTEN_UNIX_MS + 5,
                endorsements: vec![
                    ("portal-a".into(), vec![1, 2, 3]),
                    ("portal-b".into(), vec![4, 5, 6]),
                ],
            }],
        },
    ]
}

fn envelope() -> Vec<u8> {
    (0..=255u8).collect()
}

/// (tenant, request id, what a read must find, but for the expiry).
fn fixture_outcomes() -> Vec<(&'static str, &'static str, OutcomeRecord)> {
    let outcome = |agent_id: &str, acknowledged, answer| OutcomeRecord {
        agent_id: agent_id.into(),
        acknowledged,
        expires_unix_ms: 0,
        answer,
    };
    vec![
        ("contoso", "req-awaited", outcome("", false, None)),
        ("contoso", "req-acknowledged", outcome("dc01", true, None)),
        (
            "contoso",
            "req-envelope",
            outcome("dc01", true, Some(StoredAnswer::Envelope(envelope()))),
        ),
        (
            "contoso",
            "req-late-error",
            outcome(
                "dc02",
                true,
                Some(StoredAnswer::Error {
                    code: 3,
                    refusal: 5,
                    message: "unknown key".into(),
                }),
            ),
        ),
        (
            "contoso",
            "req-refused",
            outcome(
                "dc01",
                true,
                Some(StoredAnswer::Failed {
                    refusal: 10,
                    message: "expired (refusal EXPIRED; AGENT_ERROR_CODE_REJECTED)".into(),
                }),
            ),
        ),
        (
            "fabrikam",
            "req-envelope",
            outcome("fab01", true, Some(StoredAnswer::Envelope(vec![7; 40]))),
        ),
    ]
}

/// Writes the fixture with the broker's code paths: tenants through the
/// store, outcomes as routing tasks and late answers settle them.
#[tokio::test]
#[ignore = "writes the committed fixture; run by hand, see its README"]
async fn write_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.redb");
    {
        let store = open(&path).unwrap();
        for record in fixture_tenants() {
            store.put_tenant(&record).unwrap();
        }
        let outcomes = Outcomes::new(store, RETENTION, &Limits::default()).unwrap();
        for (tenant, request_id, want) in fixture_outcomes() {
            // Every request starts awaited from an agent not known yet.
            assert!(
                outcomes
                    .expect(tenant, request_id, "", false)
                    .await
                    .unwrap()
            );
            let settled = match want.answer {
                None if want.agent_id.is_empty() => continue,
                None => Settled::Awaited {
                    agent_id: want.agent_id,
                    acknowledged: want.acknowledged,
                },
                Some(answer @ StoredAnswer::Error { .. }) => {
                    // An agent's error arrives late, over its awaited record.
                    let agent = want.agent_id;
                    outcomes
                        .expect(tenant, request_id, &agent, true)
                        .await
                        .unwrap();
                    let late = Admission::Late;
                    let kept = outcomes.record(tenant, request_id, &agent, answer, late);
                    assert!(kept.await.unwrap());
                    continue;
                }
                Some(answer) => Settled::Answered {
                    agent_id: want.agent_id,
                    answer,
                },
            };
            assert!(outcomes.settle(tenant, request_id, settled).await.unwrap());
        }
    }
    // Dropped the store's threads: compact so the committed file is small.
    Database::open(&path).unwrap().compact().unwrap();
    // The version this broker writes, never over an older one's fixture.
    let out = fixture_dir_of(SCHEMA_VERSION);
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(&path, out.join("broker.redb")).unwrap();
    let mut text = operator_key().to_base64();
    text.push('\n');
    std::fs::write(out.join("operator.key"), text.as_bytes()).unwrap();
}

/// A copy of the fixture's data directory.
fn copy_of_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in ["broker.redb", "operator.key"] {
        std::fs::copy(fixture_dir().join(file), dir.path().join(file)).unwrap();
    }
    dir
}

fn schema_version(path: &Path) -> Option<u64> {
    let db = Database::open(path).unwrap();
    let tx = db.begin_read().unwrap();
    let meta = tx.open_table(META).unwrap();
    meta.get("schema_version").unwrap().map(|v| v.value())
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn the_fixture_is_at_version_1_and_opens_at_the_current_version() {
    let dir = copy_of_fixture();
    let path = dir.path().join("broker.redb");
    assert_eq!(schema_version(&path), Some(1));
    drop(open(&path).unwrap());
    assert_eq!(schema_version(&path), Some(SCHEMA_VERSION));
    // A second start finds nothing to do and changes nothing it reads.
    drop(open(&path).unwrap());
    assert_eq!(schema_version(&path), Some(SCHEMA_VERSION));
    let store = open(&path).unwrap();
    assert_eq!(store.load_tenants().unwrap().len(), 2);
}

#[test]
fn every_tenant_reads_back_exactly() {
    let dir = copy_of_fixture();
    let store = open(&dir.path().join("broker.redb")).unwrap();
    let mut found = store.load_tenants().unwrap();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    let want = fixture_tenants();
    assert_eq!(found.len(), want.len());
    for (got, want) in found.iter().zip(&want) {
        assert_eq!(got.name, want.name);
        assert_eq!(got.connector_name, want.connector_name);
        assert_eq!(got.writeback_enabled, want.writeback_enabled);
        assert_eq!(got.created_unix_ms, want.created_unix_ms);
        assert_eq!(got.modified_unix_ms, want.modified_unix_ms);
        assert_eq!(got.revoked_agents, want.revoked_agents);
        assert_eq!(got.agent_keys, want.agent_keys);
        for right in [Right::Listen, Right::Send, Right::Manage] {
            let (got, want) = (
                got.keys.pair(right).unwrap(),
                want.keys.pair(right).unwrap(),
            );
            assert_eq!(got.primary, want.primary, "{right}");
            assert_eq!(got.secondary, want.secondary, "{right}");
        }
    }
}

#[test]
fn the_keys_authorize_tokens_as_before() {
    let dir = copy_of_fixture();
    let store = open(&dir.path().join("broker.redb")).unwrap();
    let tenants = Arc::new(Tenants::load(store).unwrap());
    let operator = load_or_create_operator_key(&dir.path().join("operator.key")).unwrap();
    assert_eq!(operator, operator_key());
    let auth = Authorizer::new(Arc::clone(&tenants), operator, Duration::from_secs(3600));
    let now = now_unix();
    let expiry = now + 600;
    for record in fixture_tenants() {
        for right in [Right::Listen, Right::Send, Right::Manage] {
            let pair = record.keys.pair(right).unwrap();
            for (slot, key) in [
                (KeySlot::Primary, &pair.primary),
                (KeySlot::Secondary, &pair.secondary),
            ] {
                let token = sas::mint(key, &record.name, right, expiry);
                let principal = auth
                    .authorize(token.expose(), Some(&record.name), &[right], now)
                    .unwrap();
                assert_eq!((principal.right, principal.slot), (right, slot));
            }
        }
    }
    // One tenant's key proves nothing for the other.
    let fabrikam = &fixture_tenants()[1];
    let token = sas::mint(&fabrikam.keys.send.primary, "contoso", Right::Send, expiry);
    assert!(
        auth.authorize(token.expose(), Some("contoso"), &[Right::Send], now)
            .is_err()
    );
    let token = sas::mint(
        &operator_key(),
        sas::OPERATOR_RESOURCE,
        Right::Operator,
        expiry,
    );
    let principal = auth
        .authorize(token.expose(), Some("fabrikam"), &[Right::Operator], now)
        .unwrap();
    assert_eq!(principal.right, Right::Operator);
}

#[tokio::test]
async fn every_outcome_reads_back_exactly() {
    let dir = copy_of_fixture();
    let store = open(&dir.path().join("broker.redb")).unwrap();
    let outcomes = Outcomes::new(store, RETENTION, &Limits::default()).unwrap();
    let after = WRITTEN_UNIX_MS + RETENTION.as_millis() as i64;
    for (tenant, request_id, want) in fixture_outcomes() {
        let got = outcomes.get(tenant, request_id).await.unwrap();
        let got = got.unwrap_or_else(|| panic!("{tenant}/{request_id} is missing"));
        assert!(got.expires_unix_ms >= after, "{tenant}/{request_id}");
        let want = OutcomeRecord {
            expires_unix_ms: got.expires_unix_ms,
            ..want
        };
        assert_eq!(got, want, "{tenant}/{request_id}");
    }
    assert_eq!(outcomes.get("contoso", "req-never").await.unwrap(), None);
}

/// The tables and the outcome index as version 1 lays them out: the
/// records, and the per-tenant counts the index keeps beside its version.
#[test]
fn the_tables_hold_what_version_1_wrote() {
    let dir = copy_of_fixture();
    let db = Database::open(dir.path().join("broker.redb")).unwrap();
    let tx = db.begin_read().unwrap();
    let mut tables: Vec<String> = tx
        .list_tables()
        .unwrap()
        .map(|t| t.name().to_owned())
        .collect();
    tables.sort();
    let expected = [
        "meta",
        "outcome_counts",
        "outcome_expiries",
        "outcomes",
        "tenants",
    ];
    assert_eq!(tables, expected);
    let records = tx.open_table(OUTCOMES).unwrap();
    let mut keys = Vec::new();
    for entry in records.iter().unwrap() {
        let (k, v) = entry.unwrap();
        // Format 2 of the outcome records.
        assert_eq!(v.value().first(), Some(&2), "{}", k.value());
        keys.push(k.value().to_owned());
    }
    let mut expected: Vec<String> = fixture_outcomes()
        .iter()
        .map(|(tenant, request_id, _)| format!("{tenant}/{request_id}"))
        .collect();
    expected.sort();
    assert_eq!(keys, expected);
    let counts = tx.open_table(OUTCOME_COUNTS).unwrap();
    let counts: Vec<(String, u64)> = counts
        .iter()
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            (k.value().to_owned(), v.value())
        })
        .collect();
    let expected = [("#index-version", 1), ("contoso", 5), ("fabrikam", 1)];
    let expected: Vec<(String, u64)> = expected.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(counts, expected);
}

#[test]
fn a_store_of_a_newer_broker_is_refused_untouched() {
    let dir = copy_of_fixture();
    let path = dir.path().join("broker.redb");
    let newer = SCHEMA_VERSION + 1;
    {
        let db = Database::open(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert("schema_version", newer)
            .unwrap();
        tx.commit().unwrap();
    }
    let err = open(&path).err().expect("a newer store is refused");
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, supported }
            if found == newer && supported == SCHEMA_VERSION),
        "{err}"
    );
    assert!(err.to_string().contains("newer broker"), "{err}");
    assert_eq!(schema_version(&path), Some(newer));
}

/// Every entry of every table, raw: (table, key, value).
fn contents(path: &Path) -> Vec<(&'static str, String, Vec<u8>)> {
    const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");
    const EXPIRIES: TableDefinition<&str, ()> = TableDefinition::new("outcome_expiries");
    let db = Database::open(path).unwrap();
    let tx = db.begin_read().unwrap();
    let mut out = Vec::new();
    for (name, table) in [("tenants", TENANTS), ("outcomes", OUTCOMES)] {
        for entry in tx.open_table(table).unwrap().iter().unwrap() {
            let (k, v) = entry.unwrap();
            out.push((name, k.value().to_owned(), v.value().to_vec()));
        }
    }
    // Tenant records sealed since version 3: compared by what they hold.
    for (table, key, value) in &mut out {
        if *table == "tenants" && sealed::is_sealed(value) {
            let context = sealed::context(key);
            *value = storage_key().unseal(&context, value).unwrap().to_vec();
        }
    }
    for (name, table) in [("meta", META), ("outcome_counts", OUTCOME_COUNTS)] {
        for entry in tx.open_table(table).unwrap().iter().unwrap() {
            let (k, v) = entry.unwrap();
            out.push((name, k.value().to_owned(), v.value().to_be_bytes().to_vec()));
        }
    }
    for entry in tx.open_table(EXPIRIES).unwrap().iter().unwrap() {
        out.push((
            "outcome_expiries",
            entry.unwrap().0.value().to_owned(),
            Vec::new(),
        ));
    }
    out
}

/// A tenant record's fields as JSON, without the format it names.
fn fields(bytes: &[u8]) -> serde_json::Value {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    value.as_object_mut().unwrap().remove("format");
    value
}

/// Step 1 -> 2 rewrites each tenant record in format 2 with the same
/// fields, and leaves every other record as version 1 wrote it.
#[test]
fn the_migration_to_version_2_names_every_tenant_format_and_keeps_the_rest() {
    let dir = copy_of_fixture();
    let path = dir.path().join("broker.redb");
    let before = contents(&path);
    let tenants = |c: &[(&str, String, Vec<u8>)]| -> Vec<(String, Vec<u8>)> {
        c.iter()
            .filter(|(table, ..)| *table == "tenants")
            .map(|(_, k, v)| (k.clone(), v.clone()))
            .collect()
    };
    for (name, bytes) in tenants(&before) {
        assert_eq!(codec::tenant_format(&bytes).unwrap(), 1, "{name}");
    }
    drop(open(&path).unwrap());
    assert_eq!(schema_version(&path), Some(SCHEMA_VERSION));
    let after = contents(&path);
    let (old, new) = (tenants(&before), tenants(&after));
    assert_eq!(old.len(), 2);
    assert_eq!(new.len(), old.len());
    for ((name, was), (again, now)) in old.iter().zip(&new) {
        assert_eq!(name, again);
        assert_eq!(codec::tenant_format(now).unwrap(), 2, "{name}");
        assert_eq!(fields(now), fields(was), "{name}");
    }
    let others = |c: &[(&'static str, String, Vec<u8>)]| {
        c.iter()
            .filter(|(table, key, _)| *table != "tenants" && key != "schema_version")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(others(&after), others(&before));
}

/// A broker that stops right after the migration's transaction, or any
/// time after, starts again on the migrated store and changes nothing.
#[tokio::test]
async fn a_restart_after_the_migration_changes_nothing() {
    let dir = copy_of_fixture();
    let path = dir.path().join("broker.redb");
    drop(open(&path).unwrap());
    let migrated = contents(&path);
    for _ in 0..2 {
        let store = open(&path).unwrap();
        let tenants = Tenants::load(store.clone()).unwrap();
        assert_eq!(tenants.len(), 2);
        let outcomes = Outcomes::new(store, RETENTION, &Limits::default()).unwrap();
        let found = outcomes.get("contoso", "req-envelope").await.unwrap();
        assert!(found.is_some());
        drop((tenants, outcomes));
        assert_eq!(schema_version(&path), Some(SCHEMA_VERSION));
        assert_eq!(contents(&path), migrated);
    }
}

#[test]
fn a_store_of_the_next_version_is_refused_and_left_byte_for_byte() {
    let dir = copy_of_fixture();
    let path = dir.path().join("broker.redb");
    let next = SCHEMA_VERSION + 1;
    {
        let db = Database::open(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert("schema_version", next)
            .unwrap();
        tx.commit().unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    let err = open(&path).err().expect("a newer store is refused");
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew { found, supported }
                if found == next && supported == SCHEMA_VERSION
        ),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "the file was changed");
}

/// A version 2 store, as the broker before sealing left it: the v1
/// fixture with each tenant record rewritten in format 2 and the version
/// set to 2, which is what the step to version 2 does.
fn version_2_store() -> tempfile::TempDir {
    const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");
    let dir = copy_of_fixture();
    let db = Database::open(dir.path().join("broker.redb")).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let mut tenants = tx.open_table(TENANTS).unwrap();
        for record in fixture_tenants() {
            let bytes = codec::encode_tenant(&record).unwrap();
            tenants
                .insert(record.name.as_str(), bytes.as_slice())
                .unwrap();
        }
        tx.open_table(META)
            .unwrap()
            .insert("schema_version", 2)
            .unwrap();
    }
    tx.commit().unwrap();
    dir
}

/// Every key of the fixture's tenants as the texts and bytes a reader of
/// the file could find.
fn secret_forms() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for record in fixture_tenants() {
        for right in [Right::Listen, Right::Send, Right::Manage] {
            let pair = record.keys.pair(right).unwrap();
            for key in [&pair.primary, &pair.secondary] {
                let text = key.to_base64();
                let raw = STANDARD.decode(text.as_str()).unwrap();
                let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                let name = format!("{}/{right}", record.name);
                out.push((format!("{name} base64"), text.as_bytes().to_vec()));
                out.push((format!("{name} hex"), hex.into_bytes()));
                out.push((format!("{name} raw"), raw));
            }
        }
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Step 2 -> 3 seals every tenant record: the keys are in the file before
/// and nowhere in it after (the broker compacts it after the step), and
/// every record reads back the same.
#[test]
fn the_migration_to_version_3_seals_every_tenant_record() {
    let dir = version_2_store();
    let path = dir.path().join("broker.redb");
    assert_eq!(schema_version(&path), Some(2));
    let before = std::fs::read(&path).unwrap();
    let secrets = secret_forms();
    assert!(
        secrets.iter().any(|(_, s)| find(&before, s)),
        "the version 2 store holds the keys in the clear"
    );
    drop(open(&path).unwrap());
    assert_eq!(schema_version(&path), Some(3));
    let raw = contents(&path);
    let after = std::fs::read(&path).unwrap();
    for (what, secret) in &secrets {
        assert!(!find(&after, secret), "{what} is in the migrated file");
    }
    // Sealed under the configured key: another one is named, not guessed.
    let other = Arc::new(StorageKey::generate().unwrap());
    let err = Store::open(&path, Arc::clone(&other))
        .unwrap()
        .load_tenants()
        .unwrap_err()
        .to_string();
    assert!(err.contains(&storage_key().id().to_string()), "{err}");
    assert!(err.contains(&other.id().to_string()), "{err}");
    // Read back the same, and a second start changes nothing.
    let store = open(&path).unwrap();
    let mut found = store.load_tenants().unwrap();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    for (got, want) in found.iter().zip(fixture_tenants()) {
        assert_eq!(got.name, want.name);
        assert_eq!(got.agent_keys, want.agent_keys);
        assert_eq!(got.keys.manage.secondary, want.keys.manage.secondary);
    }
    drop(store);
    assert_eq!(contents(&path), raw);
}
