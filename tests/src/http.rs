//! A minimal HTTP/1.0 GET for the operator endpoints.

/// Returns (status code, body).
pub async fn get(addr: &str, path: &str) -> (u16, String) {
    let r = crate::http_request::get(addr, path, &[]).await;
    (r.status, r.body)
}
