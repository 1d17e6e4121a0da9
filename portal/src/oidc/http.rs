//! The HTTP client the `openidconnect` crate calls the provider with
//! (discovery, keys, the code exchange): one HTTP/1.1 request per
//! connection over hyper and rustls, which the workspace already has,
//! instead of a second HTTP stack. Redirects are not followed; answers are
//! bounded in time and size.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::debug;

/// Discovery documents, key sets and token answers are a few KiB.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0:?} is not an http(s) URL with a host")]
    Url(String),
    #[error("cannot connect to {host}")]
    Connect {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS with {host} failed")]
    Tls {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the provider's HTTP answer is unreadable")]
    Http(#[source] hyper::Error),
    #[error("the provider's answer is larger than 1 MiB or cut short")]
    Body,
    #[error("the provider did not answer within 15 s")]
    Timeout,
    #[error("no CA certificate to trust the provider with: {0}")]
    Roots(String),
}

/// Trusts the system roots, or `ca_pem` alone when given.
#[derive(Clone)]
pub struct HttpClient {
    tls: TlsConnector,
}

impl HttpClient {
    pub fn new(ca_pem: Option<&[u8]>) -> Result<HttpClient, HttpError> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_pem {
            Some(mut pem) => {
                for cert in rustls_pemfile::certs(&mut pem) {
                    let cert = cert.map_err(|e| HttpError::Roots(e.to_string()))?;
                    roots
                        .add(cert)
                        .map_err(|e| HttpError::Roots(e.to_string()))?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        if roots.is_empty() {
            return Err(HttpError::Roots(
                "the CA file or system store is empty".into(),
            ));
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Roots(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(HttpClient {
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let url = request.uri().to_string();
        let (scheme, host, port) = {
            let uri = request.uri();
            let scheme = uri.scheme_str().unwrap_or("");
            let host = uri.host().ok_or_else(|| HttpError::Url(url.clone()))?;
            let default = match scheme {
                "https" => 443,
                "http" => 80,
                _ => return Err(HttpError::Url(url)),
            };
            (
                scheme.to_owned(),
                host.trim_matches(['[', ']']).to_owned(),
                uri.port_u16().unwrap_or(default),
            )
        };
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|source| HttpError::Connect {
                host: host.clone(),
                source,
            })?;
        let (mut parts, body) = request.into_parts();
        // HTTP/1.1 wants the path in the request line, the host in a header.
        parts.uri = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|_| HttpError::Url(url.clone()))?;
        if let Ok(value) = authority.parse() {
            parts.headers.insert(hyper::header::HOST, value);
        }
        let request = hyper::Request::from_parts(parts, Full::new(Bytes::from(body)));
        debug!(%url, "calling the identity provider");
        if scheme == "https" {
            let name = ServerName::try_from(host.clone()).map_err(|_| HttpError::Url(url))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|source| HttpError::Tls { host, source })?;
            exchange(TokioIo::new(tls), request).await
        } else {
            exchange(TokioIo::new(tcp), request).await
        }
    }
}

async fn exchange<T>(io: T, request: hyper::Request<Full<Bytes>>) -> Result<HttpResponse, HttpError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(HttpError::Http)?;
    // The connection drives the I/O; it ends with the one exchange.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(HttpError::Http)?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|_| HttpError::Body)?
        .to_bytes();
    Ok(HttpResponse::from_parts(parts, body.to_vec()))
}

impl<'c> AsyncHttpClient<'c> for HttpClient {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            tokio::time::timeout(CALL_TIMEOUT, self.send(request))
                .await
                .map_err(|_| HttpError::Timeout)?
        })
    }
}
