//! Byte-level reading and writing, and the request header.
//!
//! ```text
//! request envelope, version 1 (all integers big-endian)
//!   u8        version = 1
//!   u8        T, tenant length (1..=63)
//!   T bytes   tenant (ASCII)
//!   8 bytes   agent key id       (recipient)
//!   8 bytes   portal key id      (sender)
//!   u8        A, agent id length (1..=64)
//!   A bytes   agent id           (addressee: [A-Za-z0-9._-])
//!   u8        R, request id length (1..=128)
//!   R bytes   request id (ASCII)
//!   u8        operation (relay.v1 Operation number)
//!   u64       issued at, Unix milliseconds
//!   u64       expires at, Unix milliseconds
//!   32 bytes  enc (HPKE encapsulated key)
//!   rest      HPKE ciphertext of the padded body, with its 16-byte tag
//! ```
//! Everything before the ciphertext is the header, and the header is the
//! AEAD's associated data.

use crate::error::OpenError;
use crate::keys::{KEY_LEN, KeyId};

pub const VERSION: u8 = 1;
pub const TAG_LEN: usize = 16;

/// A cursor over untrusted bytes; every read is bounds-checked.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], &'static str> {
        let end = self.pos.checked_add(n).ok_or(what)?;
        let slice = self.bytes.get(self.pos..end).ok_or(what)?;
        self.pos = end;
        Ok(slice)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, &'static str> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, &'static str> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, &'static str> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        rest
    }
}

/// The authenticated metadata of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub tenant: String,
    /// The agent key the envelope is sealed to.
    pub agent_key_id: KeyId,
    /// The portal key that sealed it.
    pub portal_key_id: KeyId,
    /// The one agent the envelope is addressed to (its `Hello.agent_id`):
    /// every other agent of the tenant refuses it, so that a broker cannot
    /// have it applied once per agent.
    pub agent_id: String,
    pub request_id: String,
    /// The relay.v1 Operation number.
    pub operation: u8,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
}

fn ascii_field(bytes: &[u8], max: usize, what: &'static str) -> Result<String, &'static str> {
    if bytes.is_empty() || bytes.len() > max || !bytes.iter().all(|b| b.is_ascii_graphic()) {
        return Err(what);
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| what)
}

/// The longest agent id, as `Hello.agent_id` allows.
pub const MAX_AGENT_ID_LEN: usize = 64;

/// Whether `id` is a valid agent id: 1-64 of `[A-Za-z0-9._-]`, the grammar
/// of `Hello.agent_id`.
pub fn valid_agent_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_AGENT_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl RequestHeader {
    /// Appends the header fields (without enc) to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        out.push(self.tenant.len() as u8);
        out.extend_from_slice(self.tenant.as_bytes());
        out.extend_from_slice(&self.agent_key_id.0);
        out.extend_from_slice(&self.portal_key_id.0);
        out.push(self.agent_id.len() as u8);
        out.extend_from_slice(self.agent_id.as_bytes());
        out.push(self.request_id.len() as u8);
        out.extend_from_slice(self.request_id.as_bytes());
        out.push(self.operation);
        out.extend_from_slice(&self.issued_at_ms.to_be_bytes());
        out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
    }

    /// Checks the fields a portal may choose before sealing.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.tenant.is_empty()
            || self.tenant.len() > 63
            || !self.tenant.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(("tenant", "1-63 printable ASCII characters"));
        }
        if !valid_agent_id(&self.agent_id) {
            return Err(("agent_id", "1-64 characters of [A-Za-z0-9._-]"));
        }
        if self.request_id.is_empty()
            || self.request_id.len() > 128
            || !self.request_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(("request_id", "1-128 printable ASCII characters"));
        }
        if self.expires_at_ms <= self.issued_at_ms {
            return Err(("expires_at_ms", "must be after issued_at_ms"));
        }
        Ok(())
    }
}

/// A parsed request envelope, not yet authenticated.
pub(crate) struct ParsedRequest<'a> {
    pub header: RequestHeader,
    pub enc: &'a [u8],
    /// The bytes authenticated as associated data (header and enc).
    pub aad: &'a [u8],
    pub ciphertext: &'a [u8],
}

pub(crate) fn parse_request(bytes: &[u8]) -> Result<ParsedRequest<'_>, OpenError> {
    let mut r = Reader::new(bytes);
    let version = r.u8("empty envelope").map_err(OpenError::Malformed)?;
    if version != VERSION {
        return Err(OpenError::UnsupportedVersion(version));
    }
    let fields = (|| {
        let t = r.u8("tenant length")? as usize;
        let tenant = ascii_field(r.take(t, "tenant")?, 63, "tenant")?;
        let mut agent = [0u8; 8];
        agent.copy_from_slice(r.take(8, "agent key id")?);
        let mut portal = [0u8; 8];
        portal.copy_from_slice(r.take(8, "portal key id")?);
        let a = r.u8("agent id length")? as usize;
        let agent_id = std::str::from_utf8(r.take(a, "agent id")?)
            .ok()
            .filter(|id| valid_agent_id(id))
            .ok_or("agent id")?
            .to_owned();
        let n = r.u8("request id length")? as usize;
        let request_id = ascii_field(r.take(n, "request id")?, 128, "request id")?;
        let operation = r.u8("operation")?;
        let issued_at_ms = r.u64("issued at")?;
        let expires_at_ms = r.u64("expires at")?;
        Ok(RequestHeader {
            tenant,
            agent_key_id: KeyId(agent),
            portal_key_id: KeyId(portal),
            agent_id,
            request_id,
            operation,
            issued_at_ms,
            expires_at_ms,
        })
    })()
    .map_err(OpenError::Malformed)?;
    let enc = r.take(KEY_LEN, "enc").map_err(OpenError::Malformed)?;
    let aad_len = r.position();
    let ciphertext = r.rest();
    if ciphertext.len() < TAG_LEN {
        return Err(OpenError::Malformed("ciphertext"));
    }
    Ok(ParsedRequest {
        header: fields,
        enc,
        aad: &bytes[..aad_len],
        ciphertext,
    })
}
