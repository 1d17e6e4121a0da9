//! `envelope::open_request` on arbitrary bytes, for a fixed agent (tenant
//! "contoso", one agent key, one pinned portal key, a fixed clock).
//!
//! Besides "never panics", one oracle: HPKE with the whole header as
//! associated data is not malleable, so the only inputs that open are the
//! envelopes the fixture's portal sealed (the seeds), byte for byte.
//! Mutated seeds get through the header parser and the key lookups and then
//! fail authentication, which is expected.

#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_fuzz::{AGENT_ID, TENANT, fixture};

fuzz_target!(
    init: {
        fixture();
    },
    |data: &[u8]| {
        let f = fixture();
        match envelope::open_request(data, &f.recipient()) {
            Ok(opened) => {
                assert!(
                    f.requests.iter().any(|sealed| sealed.as_slice() == data),
                    "an envelope the portal never sealed opened: {opened:?}"
                );
                assert_eq!(opened.header.tenant, TENANT);
                assert_eq!(opened.header.agent_id, AGENT_ID);
                assert_eq!(opened.header.agent_key_id, f.agent.public.key_id());
                assert_eq!(opened.header.portal_key_id, f.portal.public.key_id());
                assert_eq!(opened.body.check(opened.header.operation), Ok(()));
            }
            Err(refusal) => {
                // Every refusal has a stable code and a message.
                assert!(!refusal.code().is_empty());
                let _ = refusal.to_string();
            }
        }
    }
);
