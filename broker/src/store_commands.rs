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

use std::io::{BufReader, Read, Write};
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
            let bytes = request_backup(config, addr)?;
            let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
            let header = std::str::from_utf8(first)
                .ok()
                .and_then(backup::read_header)
                .with_context(|| format!("the broker at {addr} did not answer with a backup"))?;
            let mut file = private_file(&partial)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            header
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

/// `POST /backup` over plain HTTP/1.1; the body of a 200.
fn request_backup(config: &BrokerConfig, addr: SocketAddr) -> anyhow::Result<Vec<u8>> {
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
    let mut response = Vec::new();
    BufReader::new(stream)
        .read_to_end(&mut response)
        .with_context(|| format!("reading the backup from {addr}"))?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("{addr} answered something other than HTTP"))?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let body = response.split_off(split + 4);
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        bail!(
            "the broker refused the backup ({status}): {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return dechunk(&body).context("the backup's chunked body is cut short");
    }
    Ok(body)
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
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
