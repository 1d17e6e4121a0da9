//! Secrets at rest on a single node (issue 20, points 3 and 4): no tenant
//! key anywhere in the data directory, its files private and checked at
//! start, online backups restored on a new node, storage key rotation.
//! The step from a clear (version 2) store to a sealed one is tested on the
//! committed fixture in `broker/tests/store_fixture.rs`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proto::pb::Operation;
use relay_client::Reason;
use relay_client::credential::Credential;
use relay_client::portal_client::PortalClient;
use sas::{Key, KeySlot, Right};
use tests::{BrokerBuilder, BrokerProcess, EchoAgent, Tenant, bin, reason};

/// A key as a reader of a file could find it: base64, hex, raw bytes.
fn forms(what: &str, key: &Key) -> Vec<(String, Vec<u8>)> {
    let text = key.to_base64().to_string();
    let raw = STANDARD.decode(&text).unwrap();
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        (format!("{what} base64"), text.into_bytes()),
        (format!("{what} hex"), hex.into_bytes()),
        (format!("{what} raw"), raw),
    ]
}

fn tenant_forms(tenant: &Tenant) -> Vec<(String, Vec<u8>)> {
    tenant
        .keys
        .0
        .iter()
        .flat_map(|((right, slot), key)| forms(&format!("{} {right}/{slot}", tenant.name), key))
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Every file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// `relay-broker ARGS`: (success, stdout, stderr).
async fn relay_broker(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = tokio::process::Command::new(bin("relay-broker"))
        .args(args)
        .output()
        .await
        .expect("run relay-broker");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config_of(broker: &BrokerProcess) -> PathBuf {
    broker.dir().join("broker.toml")
}

/// Whether `key` is `tenant`'s Send key on `broker`: a ping with it gets
/// past authentication (there is no agent, or there is one).
async fn send_key_works(broker: &BrokerProcess, tenant: &str, key: &Key) -> bool {
    let credential = Credential::new(tenant, Right::Send, key.clone());
    let portal = PortalClient::connect(&broker.endpoint(), tenant, credential)
        .await
        .expect("portal client");
    match portal.ping(None).await {
        Ok(_) => true,
        Err(e) => reason::<()>(Err(e)) == Reason::NoAgentOnline,
    }
}

#[tokio::test]
async fn after_a_full_session_no_tenant_key_is_in_the_data_dir() {
    let mut broker = BrokerBuilder::new().start().await;
    let mut secrets = Vec::new();
    let mut tenants = Vec::new();
    for name in ["contoso", "fabrikam", "tailspin"] {
        let tenant = broker.create_tenant(name).await;
        secrets.extend(tenant_forms(&tenant));
        tenants.push(tenant);
    }
    let mut agent = EchoAgent::start(&broker, &tenants[0], "dc01").await;
    let portal = broker.portal(&tenants[0], Right::Send).await;
    for i in 0..3 {
        portal
            .submit(
                &format!("r{i}"),
                Operation::ResetPassword,
                "dc01",
                vec![7; 64],
                None,
            )
            .await
            .expect("submit");
        agent.answered(&format!("r{i}")).await;
    }
    let (rotated, _) = broker
        .admin()
        .await
        .rotate_key("fabrikam", Right::Send, KeySlot::Primary)
        .await
        .expect("rotate");
    secrets.extend(forms("fabrikam rotated send", &rotated));
    assert!(send_key_works(&broker, "fabrikam", &rotated).await);
    broker.terminate().await;

    let data = broker.data_dir();
    assert_eq!(mode(&data), 0o700, "the data directory");
    let all = files(&data);
    let names: Vec<_> = all.iter().filter_map(|p| p.file_name()).collect();
    for expected in ["broker.redb", "operator.key", "storage.key"] {
        assert!(
            names.iter().any(|n| *n == expected),
            "{expected} in {names:?}"
        );
    }
    for file in &all {
        assert_eq!(mode(file), 0o600, "{}", file.display());
        let bytes = std::fs::read(file).unwrap();
        for (what, secret) in &secrets {
            assert!(!contains(&bytes, secret), "{what} is in {}", file.display());
        }
    }
    // The storage key was created and said so, without its content.
    let logs = broker.logs();
    assert!(logs.contains("created the storage key"), "{logs}");
    let key_text = std::fs::read_to_string(data.join("storage.key")).unwrap();
    assert!(!logs.contains(key_text.trim()));
}

#[tokio::test]
async fn a_store_or_key_file_readable_by_others_is_refused_at_start() {
    let mut broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    broker.terminate().await;
    let data = broker.data_dir();
    let config = config_of(&broker);
    for (name, exposed) in [
        ("broker.redb", 0o644),
        ("operator.key", 0o640),
        ("storage.key", 0o604),
    ] {
        let file = data.join(name);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(exposed)).unwrap();
        let (ok, _, stderr) = relay_broker(&["--config".as_ref(), config.as_os_str()]).await;
        assert!(!ok, "the broker started with {name} {exposed:o}");
        assert!(stderr.contains(&file.display().to_string()), "{stderr}");
        assert!(stderr.contains(&format!("mode {exposed:04o}")), "{stderr}");
        assert!(
            stderr.contains(&format!("chmod 600 {}", file.display())),
            "{stderr}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    // Fixed as the errors say, it starts; a data directory open to others
    // only warns (brokers before this one created it 0755).
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    broker.restart().await;
    let key = tenant.key(Right::Send, KeySlot::Primary);
    assert!(send_key_works(&broker, "contoso", &key).await);
    assert!(
        broker
            .logs()
            .contains("the data directory is open to other users")
    );
}

/// What the admin API lists, with each tenant's write-back switch.
async fn listed(broker: &BrokerProcess) -> Vec<(String, bool)> {
    let mut out: Vec<_> = broker
        .admin()
        .await
        .list_tenants()
        .await
        .expect("list")
        .into_iter()
        .map(|t| (t.tenant, t.writeback_enabled))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn an_online_backup_under_load_restores_on_a_new_node() {
    let broker = Arc::new(BrokerBuilder::new().start().await);
    let mut base = Vec::new();
    for i in 0..4 {
        base.push(broker.create_tenant(&format!("base-{i}")).await);
    }
    // Enough records that the backup streams in several chunks (64 KiB).
    let admin = broker.admin().await;
    for i in 0..150 {
        admin
            .create_tenant(&format!("bulk-{i}"), None, false)
            .await
            .expect("create");
    }
    // Load: tenants created and keys rotated until told to stop; every
    // key ever issued is kept, by tenant.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (broker, stop) = (Arc::clone(&broker), Arc::clone(&stop));
        async move {
            let admin = broker.admin().await;
            let mut issued: Vec<(String, Key)> = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("load-{i}");
                let tenant = broker.create_tenant(&name).await;
                issued.push((name, tenant.key(Right::Send, KeySlot::Primary)));
                let (key, _) = admin
                    .rotate_key("base-0", Right::Send, KeySlot::Primary)
                    .await
                    .expect("rotate");
                issued.push(("base-0".into(), key));
                i += 1;
            }
            issued
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The endpoint wants the operator token; a tenant's Manage key is not it.
    let manage = base[0].key(Right::Manage, KeySlot::Primary);
    let tenant_token = sas::mint(
        &manage,
        "base-0",
        Right::Manage,
        proto::time::unix_secs() + 300,
    );
    for headers in [vec![], vec![("Authorization", tenant_token.expose())]] {
        let refused =
            tests::http_request::send(&broker.operator_addr, "POST", "/backup", &headers, "").await;
        assert_eq!(refused.status, 401, "{}", refused.body);
    }
    let work = tempfile::tempdir().unwrap();
    let backup = work.path().join("under-load.backup");
    let config = config_of(&broker);
    let (ok, stdout, stderr) = relay_broker(&[
        "backup".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--out".as_ref(),
        backup.as_os_str(),
        "--operator".as_ref(),
        broker.operator_addr.as_ref(),
    ])
    .await;
    assert!(ok, "backup failed: {stderr}");
    assert!(stdout.contains("sealed under storage key id"), "{stdout}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let issued = load.await.unwrap();
    assert!(issued.len() >= 4, "the load ran during the backup");
    assert_eq!(mode(&backup), 0o600);
    assert!(std::fs::metadata(&backup).unwrap().len() > 2 * 64 * 1024);
    let bytes = std::fs::read(&backup).unwrap();
    for tenant in &base {
        for (what, secret) in tenant_forms(tenant) {
            assert!(!contains(&bytes, &secret), "{what} is in the backup");
        }
    }

    // A new node, its storage key the first one's (configured, not copied
    // into its data directory), restored while stopped.
    let key_file = broker.data_dir().join("storage.key");
    let mut restored = BrokerBuilder::new()
        .config(format!("storage_key_file = {key_file:?}"))
        .start()
        .await;
    restored.terminate().await;
    let new_config = config_of(&restored);
    let restore = |from: PathBuf, force: bool| {
        let new_config = new_config.clone();
        async move {
            let mut args: Vec<std::ffi::OsString> = vec![
                "restore".into(),
                "--config".into(),
                new_config.into(),
                "--from".into(),
                from.into(),
            ];
            if force {
                args.push("--force".into());
            }
            let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
            relay_broker(&args).await
        }
    };
    let (ok, _, stderr) = restore(backup.clone(), false).await;
    assert!(ok, "restore failed: {stderr}");
    restored.restart().await;

    // The snapshot: every base tenant, a prefix of the load's tenants, and
    // for each tenant restored one of the keys issued to it.
    let names: Vec<String> = listed(&restored).await.into_iter().map(|t| t.0).collect();
    for tenant in &base {
        assert!(names.contains(&tenant.name), "{} missing", tenant.name);
        for right in [Right::Listen, Right::Send, Right::Manage] {
            assert!(tenant.keys.get(right, KeySlot::Secondary).is_some());
        }
        let key = tenant.key(Right::Send, KeySlot::Secondary);
        assert!(send_key_works(&restored, &tenant.name, &key).await);
    }
    for name in names.iter().filter(|n| n.starts_with("load-")) {
        let (_, key) = issued.iter().find(|(n, _)| n == name).unwrap();
        assert!(send_key_works(&restored, name, key).await, "{name}");
    }
    let mut base_0_works = false;
    for (_, key) in issued.iter().filter(|(n, _)| n == "base-0") {
        base_0_works |= send_key_works(&restored, "base-0", key).await;
    }
    let original = base[0].key(Right::Send, KeySlot::Primary);
    base_0_works |= send_key_works(&restored, "base-0", &original).await;
    assert!(
        base_0_works,
        "no key issued to base-0 works after the restore"
    );
    // An agent authenticates with a restored Listen key.
    let _agent = EchoAgent::start(&restored, &base[1], "dc01").await;

    // A backup after the load holds exactly what the first node lists, and
    // replaces the restored store only with --force.
    let quiet = work.path().join("quiet.backup");
    let (ok, _, stderr) = relay_broker(&[
        "backup".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--out".as_ref(),
        quiet.as_os_str(),
        "--operator".as_ref(),
        broker.operator_addr.as_ref(),
    ])
    .await;
    assert!(ok, "{stderr}");
    restored.terminate().await;
    let (ok, _, stderr) = restore(quiet.clone(), false).await;
    assert!(!ok);
    assert!(stderr.contains("--force"), "{stderr}");
    let (ok, _, stderr) = restore(quiet, true).await;
    assert!(ok, "{stderr}");
    restored.restart().await;
    assert_eq!(listed(&restored).await, listed(&broker).await);
    for (name, key) in issued.iter().filter(|(n, _)| n.starts_with("load-")) {
        assert!(send_key_works(&restored, name, key).await, "{name}");
    }
    let (_, last) = issued.iter().rfind(|(n, _)| n == "base-0").unwrap();
    assert!(send_key_works(&restored, "base-0", last).await);
}

#[tokio::test]
async fn a_rotated_storage_key_opens_the_store_and_the_old_one_is_named() {
    let mut broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    let config = config_of(&broker);
    let new_key = broker::sealing::StorageKey::generate().unwrap();
    let new_path = tests::write_key(
        broker.dir(),
        "new-storage.key",
        &Key::from_base64(&new_key.to_base64()).unwrap(),
    );
    let rotate = [
        "storage-key".as_ref(),
        "rotate".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--new-key".as_ref(),
        new_path.as_os_str(),
    ];
    // Offline only: the running broker holds the store.
    let (ok, _, stderr) = relay_broker(&rotate).await;
    assert!(!ok);
    assert!(stderr.contains("stop the broker first"), "{stderr}");
    broker.terminate().await;

    let key_file = broker.data_dir().join("storage.key");
    let old_key = broker::sealing::StorageKey::load(&key_file).unwrap();
    let (ok, stdout, stderr) = relay_broker(&rotate).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&new_key.id().to_string()), "{stdout}");

    // The old key no longer opens the store, and says which key would.
    let (ok, _, stderr) = relay_broker(&["--config".as_ref(), config.as_os_str()]).await;
    assert!(!ok, "the broker started with the old key");
    let want = format!(
        "sealed under storage key id {}, the configured key is {}",
        new_key.id(),
        old_key.id()
    );
    assert!(stderr.contains(&want), "{stderr}");

    std::fs::copy(&new_path, &key_file).unwrap();
    // With the broker stopped, a backup reads the store itself; it names
    // the key the records are now sealed under.
    let backup = broker.dir().join("stopped.backup");
    let (ok, stdout, stderr) = relay_broker(&[
        "backup".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--out".as_ref(),
        backup.as_os_str(),
    ])
    .await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("1 tenants"), "{stdout}");
    let header = std::fs::read_to_string(&backup).unwrap();
    let header = header.lines().next().unwrap();
    assert!(
        header.contains(&format!("\"key_id\":\"{}\"", new_key.id())),
        "{header}"
    );
    broker.restart().await;
    let key = tenant.key(Right::Send, KeySlot::Secondary);
    assert!(send_key_works(&broker, "contoso", &key).await);
    let _agent = EchoAgent::start(&broker, &tenant, "dc01").await;
    let portal = broker.portal(&tenant, Right::Send).await;
    assert_eq!(portal.ping(None).await.expect("ping").agent_id, "dc01");
}
