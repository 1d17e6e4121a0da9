//! Beyond the byte-level targets: fuzzed *contents* sealed by the pinned
//! portal, then opened by the agent. A mutated envelope never gets past
//! authentication, so `open_request`'s checks after decryption (body against
//! operation, validity window, clock skew) are reached only this way.
//!
//! The input chooses the header (tenant, request id, operation, issued and
//! expiry times — near the agent's clock or anywhere in u64) and the body.
//! If `seal_request` refuses, the input is skipped. Otherwise the agent's
//! answer must match a model of the documented rules computed in i128, so
//! neither overflow nor sign errors go unnoticed, and an accepted request
//! must round-trip its header, its body and a reply.

#![no_main]

use envelope::body::operation;
use envelope::{Anchor, Password, RequestBody, RequestHeader, open_request, seal_request};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use relay_fuzz::{
    AGENT_ID, MAX_LIFETIME_MS, NOW_MS, SKEW_ALLOWANCE_MS, TENANT, TestRng, fixture, sample_replies,
};

fn time_near(u: &mut Unstructured<'_>, base: u64) -> Result<u64> {
    Ok(if u.arbitrary()? {
        base.wrapping_add_signed(i64::from(u.arbitrary::<i32>()?))
    } else {
        u.arbitrary()?
    })
}

fn input(u: &mut Unstructured<'_>) -> Result<(RequestHeader, RequestBody)> {
    let tenant = if u.ratio(1, 16)? {
        u.arbitrary()?
    } else {
        TENANT.to_owned()
    };
    let agent_id = if u.ratio(1, 16)? {
        u.arbitrary()?
    } else {
        AGENT_ID.to_owned()
    };
    let request_id: String = u.arbitrary()?;
    let operation = if u.arbitrary()? {
        *u.choose(&[
            operation::RESET_PASSWORD,
            operation::CHANGE_PASSWORD,
            operation::UNLOCK_ACCOUNT,
            operation::GET_PASSWORD_POLICY,
        ])?
    } else {
        u.arbitrary()?
    };
    let issued_at_ms = time_near(u, NOW_MS)?;
    let expires_at_ms = time_near(u, issued_at_ms)?;
    let anchor: String = u.arbitrary()?;
    let anchor = if u.arbitrary()? {
        Anchor::SourceAnchor(anchor)
    } else {
        Anchor::UserPrincipalName(anchor)
    };
    let unlock = u.arbitrary()?;
    let must_change = u.arbitrary()?;
    let new_password = u.arbitrary::<Option<String>>()?.map(Password::new);
    let current_password = u.arbitrary::<Option<String>>()?.map(Password::new);
    let header = RequestHeader {
        tenant,
        agent_key_id: envelope::KeyId([0; 8]),
        portal_key_id: envelope::KeyId([0; 8]),
        agent_id,
        request_id,
        operation,
        issued_at_ms,
        expires_at_ms,
    };
    let body = RequestBody {
        anchor,
        unlock,
        must_change,
        new_password,
        current_password,
    };
    Ok((header, body))
}

/// The agent's rules, in exact arithmetic: the refusal code, or `None` for
/// acceptance. (The body was checked against the operation when sealing.)
fn model(h: &RequestHeader) -> Option<&'static str> {
    if h.tenant != TENANT {
        return Some("WRONG_TENANT");
    }
    if h.agent_id != AGENT_ID {
        return Some("WRONG_AGENT");
    }
    let (now, skew, max) = (
        i128::from(NOW_MS),
        i128::from(SKEW_ALLOWANCE_MS),
        i128::from(MAX_LIFETIME_MS),
    );
    let (issued, expires) = (i128::from(h.issued_at_ms), i128::from(h.expires_at_ms));
    if expires <= issued || expires - issued > max {
        return Some("LIFETIME_TOO_LONG");
    }
    if now > expires + skew {
        return Some("EXPIRED");
    }
    if issued > now + skew {
        return Some("NOT_YET_VALID");
    }
    None
}

/// The body as the agent sees it: an empty password travels as none.
fn as_received(body: &RequestBody) -> RequestBody {
    let nonempty = |p: &Option<Password>| p.clone().filter(|p| !p.expose().is_empty());
    RequestBody {
        new_password: nonempty(&body.new_password),
        current_password: nonempty(&body.current_password),
        ..body.clone()
    }
}

fuzz_target!(
    init: {
        fixture();
    },
    |data: &[u8]| {
        let Ok((header, body)) = input(&mut Unstructured::new(data)) else {
            return;
        };
        let f = fixture();
        let Ok((sealed, pending)) = seal_request(
            &f.portal,
            &f.agent.public,
            &header,
            &body,
            &mut TestRng::new(7),
        ) else {
            return;
        };
        let expected = model(&pending.header);
        match open_request(&sealed, &f.recipient()) {
            Ok(opened) => {
                assert_eq!(expected, None, "accepted {:?}", pending.header);
                assert_eq!(opened.header, pending.header);
                assert_eq!(opened.body, as_received(&body));
                let answer = &sample_replies()[1];
                let reply = opened
                    .seal_reply(answer, &mut TestRng::new(8))
                    .expect("seal reply");
                assert_eq!(pending.open(&reply).as_ref(), Ok(answer));
            }
            Err(refusal) => assert_eq!(
                expected,
                Some(refusal.code()),
                "refused {:?}: {refusal}",
                pending.header
            ),
        }
    }
);
