//! A browser stand-in for the reset portal's tests: GET and form POST
//! through [`crate::http_request`], keeping the cookies the portal sets.

pub use crate::http_request::Response as Page;
use crate::http_request::{form_body, send};

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
        self.request("GET", path, "").await
    }

    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.request("POST", path, &form_body(fields)).await
    }

    async fn request(&mut self, method: &str, path: &str, body: &str) -> Page {
        let cookie = self
            .cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut headers = Vec::new();
        if !cookie.is_empty() {
            headers.push(("Cookie", cookie.as_str()));
        }
        if method == "POST" {
            headers.push(("Content-Type", "application/x-www-form-urlencoded"));
        }
        let page = send(&self.addr, method, path, &headers, body).await;
        for (_, value) in page.headers.iter().filter(|(n, _)| n == "set-cookie") {
            if let Some((name, value)) = value.split(';').next().and_then(|c| c.split_once('=')) {
                self.cookies.retain(|(n, _)| n != name);
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        page
    }
}
