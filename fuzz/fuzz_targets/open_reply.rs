//! `envelope::PendingReply::open` on arbitrary bytes, for the pending reply
//! of one request sealed at start-up (deterministically, so the seed
//! replies written by `examples/seeds.rs` answer the same request).
//!
//! Oracle: the reply AEAD is not malleable and the response nonce feeds the
//! key derivation, so only the replies the fixture's agent sealed open, and
//! they open to the bodies that were sealed.

#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_fuzz::{fixture, sample_replies};

fuzz_target!(
    init: {
        fixture();
    },
    |data: &[u8]| {
        let f = fixture();
        match f.pending.open(data) {
            Ok(body) => {
                let index = f
                    .replies
                    .iter()
                    .position(|sealed| sealed.as_slice() == data)
                    .unwrap_or_else(|| panic!("a reply the agent never sealed opened: {body:?}"));
                assert_eq!(body, sample_replies()[index]);
            }
            Err(refusal) => {
                let _ = refusal.to_string();
            }
        }
    }
);
