//! The payloads every scenario carries: 512 bytes each way. The routed
//! scenario's request body is a password reset whose plaintext is padded to
//! exactly 512 bytes (the envelope format pads to 256-byte blocks), and its
//! reply body a success padded to 512 (replies pad to 512-byte blocks); the
//! sealed envelopes add the header, the HPKE encapsulated key and the tags.

use envelope::body::outcome;
use envelope::{Anchor, Password, ReplyBody, RequestBody};

/// Bytes of payload each way in every scenario.
pub const PAYLOAD_BYTES: usize = 512;

/// The direct_tonic and nats_tls payload.
pub fn bytes() -> Vec<u8> {
    (0..PAYLOAD_BYTES).map(|i| (i % 251) as u8).collect()
}

/// A reset whose encoded (padded) body is [`PAYLOAD_BYTES`] long.
pub fn request_body() -> RequestBody {
    // 8 bytes of framing + anchor + password, padded to a 256-byte block:
    // 300 + 32 + 8 = 340 fills two blocks.
    let anchor = format!("{}@contoso.example", "a".repeat(300 - 16));
    RequestBody::reset(
        Anchor::UserPrincipalName(anchor),
        Password::new("correct horse battery staple 42!"),
    )
}

/// What the bench agent answers: success, padded to [`PAYLOAD_BYTES`].
pub fn reply_body() -> ReplyBody {
    ReplyBody {
        outcome: outcome::SUCCESS,
        message: "the password was changed".into(),
        details: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_512_bytes_of_plaintext() {
        assert_eq!(request_body().encode().unwrap().len(), PAYLOAD_BYTES);
        assert_eq!(reply_body().encode().unwrap().len(), PAYLOAD_BYTES);
        assert_eq!(bytes().len(), PAYLOAD_BYTES);
    }
}
