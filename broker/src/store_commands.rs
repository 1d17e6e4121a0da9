//! The offline store commands of `relay-broker`: `backup`, `restore` and
//! `storage-key rotate`, for a single node (cluster mode keeps its
//! records in NATS: docs/CLUSTER.md). The binary only parses arguments.
//!
//! redb lets one process open the store, so these commands open it only
//! while the broker is stopped. `backup` is the exception that works
//! either way: when the store is held by a running broker it asks that
//! broker over its operator port (`POST /backup`, with an operator token
//! minted from `operator.key`), which writes the backup from one read
//! transaction.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use sas::Right;

use crate::backup_route::BACKUP_PATH;
use crate::config::BrokerConfig;
use crate::sealing::StorageKey;
use crate::server::{load_or_create_operator_key, load_or_create_storage_key};
use crate::store::files::check_private;
use crate::store::{Store, StoreError, backup};

/// How long a backup request may take on the operator port.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(300);
/// The lifetime of the operator token a backup request carries.
const TOKEN_LIFETIME_SECS: u64 = 120;

fn single_node(config: &BrokerConfig) -> anyhow::Result<()> {
    if config.cluster.is_some() {
        bail!(
            "this is a cluster node: its tenants are in NATS; back up and restore the \
             buckets as docs/CLUSTER.md says"
        );
    }
    Ok(())
}

/// The single node's storage key, refusing an exposed file. Never
/// created here: a store or backup needs the key that sealed it.
fn storage_key(config: &BrokerConfig) -> anyhow::Result<Arc<StorageKey>> {
    let (path, _) = config.storage_key_path();
    if !path.exists() {
        bail!(
            "there is no storage key at {}: put the key that sealed the store there, or set \
             storage_key_file",
            path.display()
        );
    }
    Ok(Arc::new(load_or_create_storage_key(config)?))
}

/// Whether opening the store failed because another process holds it.
fn held_by_a_broker(err: &StoreError) -> bool {
    match err {
        StoreError::Open { source, .. } => matches!(
            source.downcast_ref::<redb::Error>(),
            Some(redb::Error::DatabaseAlreadyOpen)
        ),
        _ => false,
    }
}

fn open_stopped(config: &BrokerConfig) -> anyhow::Result<Store> {
    let path = config.store_path();
    check_private(&path)?;
    let key = storage_key(config)?;
    match Store::open(&path, key) {
        Ok(store) => Ok(store),
        Err(e) if held_by_a_broker(&e) => bail!(
            "the store {} is open in a running broker: stop the broker first",
            path.display()
        ),
        Err(e) => Err(e.into()),
    }
}

/// Creates `path` 0600 (truncating a file there) for a backup.
fn private_file(path: &Path) -> anyhow::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    // An existing file keeps its mode through `open`.
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot chmod 600 {}", path.display()))?;
    Ok(file)
}

/// `relay-broker backup`: writes a backup of the store to `out` (0600),
/// from the running broker if there is one. Returns what it says.
pub fn backup(
    config: &BrokerConfig,
    out: &Path,
    operator: Option<SocketAddr>,
) -> anyhow::Result<String> {
    single_node(config)?;
    let path = config.store_path();
    if !path.exists() {
        bail!("there is no store at {}", path.display());
    }
    check_private(&path)?;
    let key = storage_key(config)?;
    let partial = partial_path(out);
    let header = match Store::open(&path, key) {
        Ok(store) => {
            let mut file = private_file(&partial)?;
            let header = store.backup(&mut file)?;
            file.sync_all()?;
            header
        }
        Err(e) if held_by_a_broker(&e) => {
            let addr = operator_addr(config, operator)?;
            let mut file = private_file(&partial)?;
            let fetched = request_backup(config, addr, &mut file)
                .and_then(|()| Ok(file.sync_all()?))
                .and_then(|()| check_backup(&partial));
            match fetched {
                Ok(header) => header,
                Err(e) => {
                    let _ = std::fs::remove_file(&partial);
                    return Err(e);
                }
            }
        }
        Err(e) => return Err(e.into()),
    };
    std::fs::rename(&partial, out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(format!(
        "wrote {}: {} tenants, {} outcomes, sealed under storage key id {}; keep the storage \
         key as safely as the backup, and apart from it",
        out.display(),
        header.tenants,
        header.outcomes,
        header.key_id
    ))
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Where the running broker's operator port is: `--operator`, else the
/// configured address (its loopback for a wildcard).
fn operator_addr(config: &BrokerConfig, given: Option<SocketAddr>) -> anyhow::Result<SocketAddr> {
    if let Some(addr) = given {
        return Ok(addr);
    }
    let mut addr = config.operator_listen;
    if addr.port() == 0 {
        bail!(
            "the store is held by a running broker whose operator port is not configured: pass --operator ADDR"
        );
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(addr)
}

/// `POST /backup` over plain HTTP/1.1, its body streamed into `file`.
fn request_backup(
    config: &BrokerConfig,
    addr: SocketAddr,
    file: &mut std::fs::File,
) -> anyhow::Result<()> {
    let key_path = config.operator_key_path();
    check_private(&key_path)?;
    let key = load_or_create_operator_key(&key_path)?;
    let expiry = crate::time::now_unix_secs() + TOKEN_LIFETIME_SECS;
    let token = sas::mint(&key, sas::OPERATOR_RESOURCE, Right::Operator, expiry);
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .with_context(|| format!("cannot reach the broker's operator port at {addr}"))?;
    stream.set_read_timeout(Some(BACKUP_TIMEOUT))?;
    let request = zeroize::Zeroizing::new(format!(
        "POST {BACKUP_PATH} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
        token.expose()
    ));
    stream.write_all(request.as_bytes())?;
    let mut response = BufReader::new(stream);
    let mut status_line = String::new();
    response.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let mut chunked = false;
    loop {
        let mut line = String::new();
        if response.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
    }
    let cut = || anyhow::anyhow!("the backup from {addr} was cut short");
    if status != "200" {
        let mut body = String::new();
        let _ = response.take(4096).read_to_string(&mut body);
        bail!("the broker refused the backup ({status}): {}", body.trim());
    }
    if !chunked {
        std::io::copy(&mut response, file)?;
        return Ok(());
    }
    loop {
        let mut size = String::new();
        response.read_line(&mut size)?;
        let size = size.split(';').next().unwrap_or_default().trim();
        let size = u64::from_str_radix(size, 16).map_err(|_| cut())?;
        if size == 0 {
            return Ok(());
        }
        let copied = std::io::copy(&mut (&mut response).take(size), file)?;
        let mut crlf = [0u8; 2];
        if copied != size || response.read_exact(&mut crlf).is_err() || &crlf != b"\r\n" {
            return Err(cut());
        }
    }
}

/// The header of a backup file, and whether its body holds the records it
/// announces (a backup streamed by a broker can only fail by stopping).
fn check_backup(path: &Path) -> anyhow::Result<backup::Header> {
    let file = std::fs::File::open(path)?;
    let mut lines = BufReader::new(file).lines();
    let first = lines.next().transpose()?.unwrap_or_default();
    let header = backup::read_header(&first).context("the broker did not answer with a backup")?;
    let mut records = 0u64;
    for line in lines {
        line?;
        records += 1;
    }
    if records != header.tenants + header.outcomes {
        bail!(
            "the backup holds {records} records, its header announces {}: it was cut short",
            header.tenants + header.outcomes
        );
    }
    Ok(header)
}

/// `relay-broker restore`: the backup at `from` becomes the store, the
/// broker stopped. Returns what it says.
pub fn restore(config: &BrokerConfig, from: &Path, force: bool) -> anyhow::Result<String> {
    single_node(config)?;
    crate::store::files::create_private_dir(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let path = config.store_path();
    check_private(&path)?;
    let key = storage_key(config)?;
    let file =
        std::fs::File::open(from).with_context(|| format!("cannot read {}", from.display()))?;
    let header = match backup::restore(&path, key, &mut BufReader::new(file), force) {
        Ok(header) => header,
        Err(backup::BackupError::Store(e)) if held_by_a_broker(&e) => bail!(
            "the store {} is open in a running broker: stop the broker first",
            path.display()
        ),
        Err(e) => return Err(e.into()),
    };
    Ok(format!(
        "restored {} tenants and {} outcomes into {}",
        header.tenants,
        header.outcomes,
        path.display()
    ))
}

/// `relay-broker storage-key rotate`: every tenant record re-sealed under
/// the key in `new_key`, in one transaction, the broker stopped.
pub fn rotate(config: &BrokerConfig, new_key: &Path) -> anyhow::Result<String> {
    single_node(config)?;
    check_private(new_key)?;
    let new = StorageKey::load(new_key)?;
    let store = open_stopped(config)?;
    let old = store.key().id();
    if old == new.id() {
        bail!(
            "{} is the key the store is sealed under already",
            new_key.display()
        );
    }
    let count = store.reseal(&new)?;
    let (configured, _) = config.storage_key_path();
    Ok(format!(
        "re-sealed {count} tenant records under storage key id {} (was {old}); the store no \
         longer opens with {}: make storage_key_file name {} (or copy it over {}) before \
         starting the broker",
        new.id(),
        configured.display(),
        new_key.display(),
        configured.display()
    ))
}

/// `relay-broker operator-key rotate`: a new operator key in
/// `data_dir/operator.key` (0600), the broker stopped (the store's lock
/// tells). Tokens signed with the old key are refused from the next start;
/// `relayctl --operator-key-file` needs the new file. Single node only: a
/// cluster's operator key lives in its NATS meta bucket, which every node
/// reads at start.
pub fn rotate_operator_key(config: &BrokerConfig) -> anyhow::Result<String> {
    single_node(config)?;
    let path = config.operator_key_path();
    if !path.exists() {
        bail!(
            "{} does not exist: the broker creates it at its first start",
            path.display()
        );
    }
    check_private(&path)?;
    // Only to learn that no broker holds the store (and so the old key).
    drop(open_stopped(config)?);
    let key = sas::Key::generate().map_err(|e| anyhow::anyhow!("cannot make a key: {e}"))?;
    let mut text = key.to_base64();
    text.push('\n');
    // Beside the old file, then renamed over it: a crash leaves one whole
    // key, never half of one.
    let next = path.with_extension("key.new");
    crate::tls::write(&next, text.as_bytes(), 0o600)?;
    std::fs::rename(&next, &path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(format!(
        "wrote a new operator key to {}; tokens signed with the old one are refused from the \
         broker's next start: give relayctl (--operator-key-file) the new file",
        path.display()
    ))
}

#[cfg(test)]
mod operator_key_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config(dir: &Path, extra: &str) -> BrokerConfig {
        BrokerConfig::from_toml(&format!(
            "data_dir = {:?}\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n{extra}",
            dir
        ))
        .expect("config")
    }

    #[test]
    fn a_stopped_single_node_gets_a_new_private_operator_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let config = config(dir.path(), "");
        let path = config.operator_key_path();
        assert!(
            rotate_operator_key(&config).is_err(),
            "nothing to rotate yet"
        );
        let old = crate::server::load_or_create_operator_key(&path).unwrap();
        // The store the broker would have made (and its storage key).
        let key = Arc::new(load_or_create_storage_key(&config).unwrap());
        drop(Store::open(&config.store_path(), key).unwrap());
        let said = rotate_operator_key(&config).expect("rotated");
        assert!(said.contains("operator.key"), "{said}");
        let new = crate::server::load_or_create_operator_key(&path).unwrap();
        assert_ne!(old.to_base64().as_str(), new.to_base64().as_str());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!path.with_extension("key.new").exists());
    }

    #[test]
    fn a_cluster_node_is_told_where_its_operator_key_lives() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(
            dir.path(),
            "[cluster]\nnode_name = \"a\"\nnats_urls = [\"nats://127.0.0.1:4222\"]\nstorage_key_file = \"s.key\"\n",
        );
        let e = rotate_operator_key(&config).unwrap_err().to_string();
        assert!(e.contains("cluster"), "{e}");
    }
}
