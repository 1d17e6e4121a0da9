//! `envelope::endorse::verify_endorsement` on arbitrary bytes: the portal's
//! parser of key endorsements, which reach it through the broker. Fixed
//! setup: the portal key pair, the agent's current key as the one trusted
//! endorser, the agent's next key as the announced one, tenant "contoso".
//!
//! Oracle: only the endorsements the agent sealed (the seeds) verify, byte
//! for byte, and they name the agent's key as the endorser.

#![no_main]

use envelope::endorse::verify_endorsement;
use libfuzzer_sys::fuzz_target;
use relay_fuzz::{TENANT, fixture};

fuzz_target!(
    init: {
        fixture();
    },
    |data: &[u8]| {
        let f = fixture();
        let verdict = verify_endorsement(
            data,
            &f.next_agent.public,
            &f.portal,
            &f.trusted_endorsers,
            TENANT,
        );
        match verdict {
            Ok((endorser, _issued_at_ms)) => {
                assert!(
                    f.endorsements.iter().any(|e| e.as_slice() == data),
                    "an endorsement the agent never sealed verified"
                );
                assert_eq!(endorser, f.agent.public.key_id());
            }
            Err(refusal) => {
                let _ = refusal.to_string();
            }
        }
    }
);
