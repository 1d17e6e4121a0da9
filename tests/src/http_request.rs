//! HTTP/1.0 requests with headers and a body, for the operator endpoints
//! and the portal's pages (one connection per request). No HTTP client
//! dependency: the tests need nothing more.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response: status, headers in order (names lower-cased), body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of the first `<input>` named `name`, unescaped, as a
    /// browser would submit it.
    pub fn field(&self, name: &str) -> Option<String> {
        let named = format!(" name=\"{name}\"");
        self.body
            .split("<input")
            .skip(1)
            .map(|rest| &rest[..rest.find('>').unwrap_or(rest.len())])
            .find(|tag| tag.contains(&named))
            .and_then(|tag| {
                let start = tag.find(" value=\"")? + 8;
                let end = start + tag[start..].find('"')?;
                Some(unescape(&tag[start..end]))
            })
    }
}

/// The entities HTML escaping produces.
fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Sends one request and reads the whole response (the server closes an
/// HTTP/1.0 connection after it).
pub async fn send(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    exchange(stream, addr, method, path, headers, body).await
}

/// [`send`] from 127.0.0.`source` (any loopback address works on Linux),
/// for limits counted per source address.
pub async fn send_from(
    source: u8,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let stream = connect_from(source, addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr} from 127.0.0.{source}: {e}"));
    exchange(stream, addr, method, path, headers, body).await
}

/// A TCP connection from 127.0.0.`source` to `addr`.
pub async fn connect_from(source: u8, addr: &str) -> std::io::Result<TcpStream> {
    let to: std::net::SocketAddr = addr.parse().expect("an IP address and port");
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from(([127, 0, 0, source], 0)))?;
    socket.connect(to).await
}

async fn exchange(
    mut stream: TcpStream,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_owned(),
    }
}

pub async fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    send(addr, "GET", path, headers, "").await
}

/// POSTs `application/x-www-form-urlencoded` fields, as a browser's form.
pub async fn post_form(addr: &str, path: &str, fields: &[(&str, &str)]) -> Response {
    send(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &form_body(fields),
    )
    .await
}

/// A form's body: `name=value` pairs joined with `&`.
pub fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(n, v)| format!("{}={}", form_encode(n), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Form encoding: unreserved characters as they are, space as `+`, the rest
/// percent-encoded.
pub fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
