//! `envelope::RequestBody::decode` on arbitrary bytes (the plaintext parser
//! behind `open_request`, reached here without the AEAD in the way).
//!
//! Oracles, whenever decoding succeeds:
//! - round trip: `decode(encode(x)) == x`;
//! - canonical fields: `encode(x)` is a prefix of the input (the input may
//!   only carry more zero padding blocks than the encoder writes);
//! - symmetry: `encode` accepts every `x` that `decode` returns (the
//!   decoder enforces the encoder's size limits).

#![no_main]

use envelope::RequestBody;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = RequestBody::decode(data) else {
        return;
    };
    let encoded = body
        .encode()
        .unwrap_or_else(|problem| panic!("encode refused a decoded body: {problem}"));
    assert_eq!(
        RequestBody::decode(&encoded).as_ref(),
        Ok(&body),
        "decode(encode(x)) != x"
    );
    assert!(
        data.starts_with(&encoded),
        "the encoder writes other bytes than it was given"
    );
});
