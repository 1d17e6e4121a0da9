//! `sas::Token::parse` on arbitrary UTF-8 (other inputs are skipped: tokens
//! arrive as `&str`).
//!
//! Oracles, whenever parsing succeeds:
//! - the token obeys the documented shape (length limit, prefix, printable
//!   resource);
//! - what was parsed can be minted again: `mint(key, resource, right,
//!   expiry)` is no longer than the input, parses back to the same
//!   resource, right and expiry, and verifies with `key` and only with it;
//! - `verify` and `is_expired` never panic on parsed tokens.

#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_fuzz::{TOKEN_EXPIRY, fixture};
use sas::{KeySlot, Token};

fuzz_target!(
    init: {
        fixture();
    },
    |data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let Ok(token) = Token::parse(text) else {
            return;
        };
        assert!(text.len() <= sas::MAX_TOKEN_LEN);
        assert!(text.starts_with(sas::TOKEN_PREFIX));
        assert!(!token.resource.is_empty());
        assert!(token.resource.bytes().all(|b| b.is_ascii_graphic()));

        let (primary, secondary) = &fixture().sas_keys;
        let _ = token.verify(primary, secondary);
        let _ = token.is_expired(TOKEN_EXPIRY);

        let minted = sas::mint(primary, &token.resource, token.right, token.expiry_unix);
        // The same four fields, `se` without leading zeros: never longer.
        assert!(minted.expose().len() <= text.len());
        let again = Token::parse(minted.expose()).expect("a minted token parses");
        assert_eq!(again.resource, token.resource);
        assert_eq!(again.right, token.right);
        assert_eq!(again.expiry_unix, token.expiry_unix);
        assert_eq!(again.verify(primary, secondary), Some(KeySlot::Primary));
        assert_eq!(again.verify(secondary, secondary), None);
    }
);
