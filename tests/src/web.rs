//! A browser stand-in for the reset portal's tests: GET and form POST over
//! HTTP/1.0 (one connection per request), keeping the cookies the portal
//! sets, and reading hidden form fields back as a browser would.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of the first `<input>` named `name`, unescaped.
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

/// Cookies kept across requests, as `name=value`.
pub struct Browser {
    addr: String,
    cookies: Vec<(String, String)>,
}

impl Browser {
    pub fn new(addr: impl Into<String>) -> Browser {
        Browser {
            addr: addr.into(),
            cookies: Vec::new(),
        }
    }

    /// A browser that forgets its cookies (another person's browser).
    pub fn without_cookies(&self) -> Browser {
        Browser::new(self.addr.clone())
    }

    pub async fn get(&mut self, path: &str) -> Page {
        self.send("GET", path, None).await
    }

    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.send("POST", path, Some(form_encode(fields))).await
    }

    async fn send(&mut self, method: &str, path: &str, body: Option<String>) -> Page {
        let mut stream = TcpStream::connect(&self.addr)
            .await
            .expect("connect to the portal");
        let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {}\r\n", self.addr);
        if !self.cookies.is_empty() {
            let cookies: Vec<String> = self
                .cookies
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect();
            request.push_str(&format!("Cookie: {}\r\n", cookies.join("; ")));
        }
        if let Some(body) = &body {
            request.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        request.push_str(body.as_deref().unwrap_or(""));
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        for (_, value) in headers.iter().filter(|(n, _)| n == "set-cookie") {
            if let Some((name, value)) = value.split(';').next().and_then(|c| c.split_once('=')) {
                self.cookies.retain(|(n, _)| n != name);
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        Page {
            status,
            headers,
            body: body.to_owned(),
        }
    }
}

/// `application/x-www-form-urlencoded`.
pub fn form_encode(fields: &[(&str, &str)]) -> String {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_owned(),
                b => format!("%{b:02X}"),
            })
            .collect()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The entities the portal's escaping produces.
fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}
