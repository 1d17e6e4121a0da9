//! TLS material: loading the broker's certificate, and generating a private
//! development CA with a server certificate for local runs and tests.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} from {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM {what}")]
    NotPem { what: &'static str, path: PathBuf },
    #[error("certificate generation failed")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate and private key do not make a usable TLS configuration")]
    Config(#[from] tokio_rustls::rustls::Error),
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("the first certificate in {path} cannot be parsed")]
    BadCertificate { path: PathBuf },
    #[error("{path} holds a private key of a kind rustls cannot use")]
    UnusableKey {
        path: PathBuf,
        #[source]
        source: tokio_rustls::rustls::Error,
    },
    #[error("the private key {key} does not match the certificate {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
}

/// A certificate chain and its private key, checked to belong together.
pub struct Identity {
    pub certified: Arc<CertifiedKey>,
    /// The leaf certificate's notAfter, in Unix seconds.
    pub not_after_unix: i64,
}

/// Reads and checks the broker's certificate and key: both PEM, the key
/// usable by rustls and matching the leaf certificate's public key.
pub fn load_identity_checked(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    let (cert_pem, key_pem) = read_pem(cert, key)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::NotPem {
            what: "certificate",
            path: cert.to_owned(),
        })?;
    let leaf = certs.first().ok_or_else(|| TlsError::NoCertificate {
        path: cert.to_owned(),
    })?;
    let not_after_unix = x509_parser::parse_x509_certificate(leaf)
        .map_err(|_| TlsError::BadCertificate {
            path: cert.to_owned(),
        })?
        .1
        .validity()
        .not_after
        .timestamp();
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NotPem {
        what: "private key",
        path: key.to_owned(),
    })?;
    let provider = tokio_rustls::rustls::crypto::ring::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(private_key)
        .map_err(|source| TlsError::UnusableKey {
            path: key.to_owned(),
            source,
        })?;
    let certified = CertifiedKey::new(certs, signing_key);
    // A key whose public half rustls cannot tell is let through, as
    // rustls' own `with_single_cert` does; only a proven mismatch is refused.
    match certified.keys_match() {
        Ok(())
        | Err(tokio_rustls::rustls::Error::InconsistentKeys(
            tokio_rustls::rustls::InconsistentKeys::Unknown,
        )) => {}
        Err(tokio_rustls::rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::Mismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            });
        }
        Err(_) => {
            return Err(TlsError::BadCertificate {
                path: cert.to_owned(),
            });
        }
    }
    Ok(Identity {
        certified: Arc::new(certified),
        not_after_unix,
    })
}

/// The certificate new handshakes get. A reload swaps it; connections
/// already established keep the one they were made with.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertResolver {
    pub fn new(certified: Arc<CertifiedKey>) -> CertResolver {
        CertResolver {
            current: RwLock::new(certified),
        }
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn set(&self, certified: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = certified;
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The TLS configuration of the gRPC listener: the PEM certificate chain and
/// private key the broker presents, TLS 1.2 and 1.3 with rustls' default
/// (ring) suites and no client certificates, ALPN `h2`, as tonic would build
/// it. It sends no TLS 1.3 session tickets: an agent builds a new TLS client
/// for every connection and could never use one, and tickets held in memory
/// would not survive a restart anyway.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let identity = load_identity_checked(cert, key)?;
    server_config_with(Arc::new(CertResolver::new(identity.certified)))
}

/// [`server_config`] presenting whatever `resolver` holds at each handshake.
pub fn server_config_with(resolver: Arc<CertResolver>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Reads the PEM certificate chain and private key the broker presents.
pub fn load_identity(cert: &Path, key: &Path) -> Result<tonic::transport::Identity, TlsError> {
    let (cert_pem, key_pem) = read_pem(cert, key)?;
    Ok(tonic::transport::Identity::from_pem(
        cert_pem,
        key_pem.as_slice(),
    ))
}

/// The two files, each checked to hold PEM.
fn read_pem(cert: &Path, key: &Path) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), TlsError> {
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read("the certificate", cert)?;
    let key_pem = Zeroizing::new(read("the private key", key)?);
    if !cert_pem.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(TlsError::NotPem {
            what: "certificate",
            path: cert.to_owned(),
        });
    }
    if !key_pem.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(TlsError::NotPem {
            what: "private key",
            path: key.to_owned(),
        });
    }
    Ok((cert_pem, key_pem))
}

/// Files written by [`generate_dev_pki`].
#[derive(Debug, Clone)]
pub struct DevPki {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Creates a throwaway CA and a server certificate for `names` (DNS names
/// or IP addresses) in `dir`: `ca.pem`, `server.pem`, `server.key` (0600).
/// The CA key is not kept, so nothing else can ever be signed by it.
pub fn generate_dev_pki(dir: &Path, names: &[String]) -> Result<DevPki, TlsError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "relay development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("relay-broker", String::as_str),
    );
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;

    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let pki = DevPki {
        ca_cert: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
    };
    write(&pki.ca_cert, ca.pem().as_bytes(), 0o644)?;
    write(&pki.server_cert, cert.pem().as_bytes(), 0o644)?;
    write(
        &pki.server_key,
        zeroize::Zeroizing::new(key.serialize_pem()).as_bytes(),
        0o600,
    )?;
    Ok(pki)
}

/// Writes a file created with `mode` from the start, so a secret is never
/// readable by others even for a moment.
pub fn write(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(contents).map_err(err)?;
    f.sync_all().map_err(err)
}
