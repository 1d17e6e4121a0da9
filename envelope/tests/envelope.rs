//! Envelopes as a compromised broker would meet them: it can read nothing,
//! forge nothing, replay nothing, redirect nothing and alter no byte.

use envelope::body::operation;
use envelope::{
    Anchor, KeyPair, OpenError, Password, Recipient, ReplayWindow, ReplyBody, ReplyError,
    RequestBody, RequestHeader, open_request, os_rng, seal_request,
};
use proptest::prelude::*;

const NOW: u64 = 1_800_000_000_000;
const MINUTE: u64 = 60_000;

struct World {
    portal: KeyPair,
    agent: KeyPair,
    old_agent: KeyPair,
}

fn world() -> World {
    let mut rng = os_rng();
    World {
        portal: KeyPair::generate(&mut rng),
        agent: KeyPair::generate(&mut rng),
        old_agent: KeyPair::generate(&mut rng),
    }
}

fn header(tenant: &str, request_id: &str, op: u8) -> RequestHeader {
    RequestHeader {
        tenant: tenant.into(),
        agent_key_id: envelope::KeyId([0; 8]),
        portal_key_id: envelope::KeyId([0; 8]),
        agent_id: "dc1-agent".into(),
        request_id: request_id.into(),
        operation: op,
        issued_at_ms: NOW,
        expires_at_ms: NOW + 2 * MINUTE,
    }
}

fn reset_body(password: &str) -> RequestBody {
    RequestBody::reset(
        Anchor::SourceAnchor("bm90IGEgcmVhbCBndWlk".into()),
        Password::new(password),
    )
}

fn recipient<'a>(portals: &'a [envelope::PublicKey], keys: &'a [KeyPair]) -> Recipient<'a> {
    Recipient {
        tenant: "contoso",
        agent_id: "dc1-agent",
        keys,
        trusted_portals: portals,
        now_ms: NOW + 1_000,
        skew_allowance_ms: 30_000,
        max_lifetime_ms: 10 * MINUTE,
    }
}

fn seal(w: &World, h: &RequestHeader, body: &RequestBody) -> (Vec<u8>, envelope::PendingReply) {
    seal_request(&w.portal, &w.agent.public, h, body, &mut os_rng()).expect("seal")
}

#[test]
fn a_sealed_reset_opens_at_the_agent_and_its_reply_at_the_portal() {
    let w = world();
    let (bytes, pending) = seal(
        &w,
        &header("contoso", "r-1", operation::RESET_PASSWORD),
        &reset_body("Tr0ub4dor&3"),
    );
    assert!(
        !bytes.windows(11).any(|win| win == b"Tr0ub4dor&3"),
        "the password travels encrypted"
    );
    let portals = [w.portal.public.clone()];
    let keys = [w.old_agent.clone(), w.agent.clone()];
    let opened = open_request(&bytes, &recipient(&portals, &keys)).expect("open");
    assert_eq!(opened.header.request_id, "r-1");
    assert_eq!(opened.header.tenant, "contoso");
    assert_eq!(
        opened.body.new_password.as_ref().map(Password::expose),
        Some("Tr0ub4dor&3")
    );
    assert!(
        !format!("{opened:?}").contains("Tr0ub4dor"),
        "Debug hides passwords"
    );

    let answer = ReplyBody {
        outcome: 3,
        message: "the password is too short".into(),
        details: vec![("min_length".into(), "12".into())],
    };
    let reply = opened
        .seal_reply(&answer, &mut os_rng())
        .expect("seal reply");
    assert_eq!(pending.open(&reply).expect("open reply"), answer);
}

#[test]
fn each_operation_carries_exactly_its_fields() {
    let w = world();
    let anchor = Anchor::UserPrincipalName("ada@contoso.example".into());
    let ok = [
        (
            operation::CHANGE_PASSWORD,
            RequestBody::change(anchor.clone(), Password::new("old"), Password::new("new")),
        ),
        (
            operation::UNLOCK_ACCOUNT,
            RequestBody::without_passwords(anchor.clone()),
        ),
        (
            operation::GET_PASSWORD_POLICY,
            RequestBody::without_passwords(anchor.clone()),
        ),
    ];
    let portals = [w.portal.public.clone()];
    let keys = [w.agent.clone()];
    for (op, body) in ok {
        let (bytes, _) = seal(&w, &header("contoso", "r", op), &body);
        assert_eq!(
            open_request(&bytes, &recipient(&portals, &keys))
                .expect("open")
                .body,
            body
        );
    }
    let mismatched = seal_request(
        &w.portal,
        &w.agent.public,
        &header("contoso", "r", operation::UNLOCK_ACCOUNT),
        &reset_body("pw"),
        &mut os_rng(),
    );
    assert!(matches!(
        mismatched,
        Err(envelope::SealError::Invalid { field: "body", .. })
    ));
}

#[test]
fn lengths_reveal_neither_the_password_nor_the_outcome() {
    let w = world();
    let h = header("contoso", "r", operation::RESET_PASSWORD);
    let short = seal(&w, &h, &reset_body("a")).0;
    let long = seal(&w, &h, &reset_body(&"x".repeat(120))).0;
    assert_eq!(short.len(), long.len());

    let portals = [w.portal.public.clone()];
    let keys = [w.agent.clone()];
    let opened = open_request(&short, &recipient(&portals, &keys)).expect("open");
    let ok = ReplyBody {
        outcome: 0,
        message: "done".into(),
        details: vec![],
    };
    let refused = ReplyBody {
        outcome: 4,
        message: "the password does not meet the complexity rules".into(),
        details: vec![
            ("missing".into(), "uppercase, digit".into()),
            ("contains".into(), "account name".into()),
        ],
    };
    let a = opened.seal_reply(&ok, &mut os_rng()).expect("reply");
    let b = opened.seal_reply(&refused, &mut os_rng()).expect("reply");
    assert_eq!(a.len(), b.len());
}

#[test]
fn every_refusal_has_its_own_error() {
    let w = world();
    let portals = [w.portal.public.clone()];
    let keys = [w.agent.clone()];
    let to = recipient(&portals, &keys);
    let h = header("contoso", "r", operation::RESET_PASSWORD);
    let body = reset_body("S3cret!pass");

    // Redirected: sealed for another tenant's agent.
    let (other_tenant, _) = seal(
        &w,
        &header("fabrikam", "r", operation::RESET_PASSWORD),
        &body,
    );
    assert!(matches!(
        open_request(&other_tenant, &to),
        Err(OpenError::WrongTenant { .. })
    ));

    // Addressed to another agent of the same tenant (which may share this
    // agent's key pair): refused before any public-key operation.
    let mut to_other = h.clone();
    to_other.agent_id = "dc2-agent".into();
    let (other_agent, _) = seal(&w, &to_other, &body);
    assert_eq!(
        open_request(&other_agent, &to).unwrap_err(),
        OpenError::WrongAgent {
            expected: "dc1-agent".into(),
            found: "dc2-agent".into(),
        }
    );
    assert_eq!(
        OpenError::WrongAgent {
            expected: String::new(),
            found: String::new(),
        }
        .code(),
        "WRONG_AGENT"
    );
    // The same envelope opens at the agent it names.
    let addressed = Recipient {
        agent_id: "dc2-agent",
        ..recipient(&portals, &keys)
    };
    assert!(open_request(&other_agent, &addressed).is_ok());

    // Sealed to a key this agent does not hold (e.g. substituted by the broker).
    let stranger = KeyPair::generate(&mut os_rng());
    let (to_stranger, _) =
        seal_request(&w.portal, &stranger.public, &h, &body, &mut os_rng()).expect("seal");
    assert_eq!(
        open_request(&to_stranger, &to).unwrap_err(),
        OpenError::UnknownKey(stranger.public.key_id())
    );

    // Forged: sealed by a key the agent never pinned.
    let forger = KeyPair::generate(&mut os_rng());
    let (forged, _) =
        seal_request(&forger, &w.agent.public, &h, &body, &mut os_rng()).expect("seal");
    assert_eq!(
        open_request(&forged, &to).unwrap_err(),
        OpenError::UnknownSender(forger.public.key_id())
    );
    // Forged while claiming the pinned portal's key id: authentication fails.
    let mut claimed = forged.clone();
    let at = 1 + 1 + "contoso".len() + 8;
    claimed[at..at + 8].copy_from_slice(&w.portal.public.key_id().0);
    assert_eq!(
        open_request(&claimed, &to).unwrap_err(),
        OpenError::AuthenticationFailed
    );

    // Time: expired, not yet valid, too long a window.
    let (bytes, _) = seal(&w, &h, &body);
    let late = Recipient {
        now_ms: NOW + 2 * MINUTE + 31_000,
        ..recipient(&portals, &keys)
    };
    assert!(matches!(
        open_request(&bytes, &late),
        Err(OpenError::Expired {
            expired_ms_ago: 31_000,
            allowance_ms: 30_000
        })
    ));
    let early = Recipient {
        now_ms: NOW - 31_000,
        ..recipient(&portals, &keys)
    };
    assert!(matches!(
        open_request(&bytes, &early),
        Err(OpenError::NotYetValid {
            ahead_ms: 31_000,
            ..
        })
    ));
    let mut long = h.clone();
    long.expires_at_ms = NOW + 11 * MINUTE;
    let (long, _) = seal(&w, &long, &body);
    assert!(matches!(
        open_request(&long, &to),
        Err(OpenError::LifetimeTooLong { .. })
    ));

    // Replayed.
    let mut window = ReplayWindow::new();
    let opened = open_request(&bytes, &to).expect("open");
    window
        .check_and_insert(opened.enc, opened.header.expires_at_ms + 30_000, NOW)
        .expect("first");
    let again = open_request(&bytes, &to).expect("still authentic");
    assert_eq!(
        window.check_and_insert(again.enc, again.header.expires_at_ms + 30_000, NOW + 5),
        Err(OpenError::Replayed)
    );

    // Another version.
    let mut v2 = bytes.clone();
    v2[0] = 2;
    assert_eq!(
        open_request(&v2, &to).unwrap_err(),
        OpenError::UnsupportedVersion(2)
    );
    assert!(matches!(
        open_request(&[], &to),
        Err(OpenError::Malformed(_))
    ));
}

#[test]
fn altering_any_single_byte_of_a_request_is_refused() {
    let w = world();
    let portals = [w.portal.public.clone()];
    let keys = [w.agent.clone()];
    let to = recipient(&portals, &keys);
    let (bytes, _) = seal(
        &w,
        &header("contoso", "r-7", operation::RESET_PASSWORD),
        &reset_body("pw-1234567"),
    );
    for i in 0..bytes.len() {
        for flip in [0x01u8, 0x80] {
            let mut altered = bytes.clone();
            altered[i] ^= flip;
            let err = open_request(&altered, &to).expect_err("an altered envelope never opens");
            assert!(
                matches!(
                    err,
                    OpenError::AuthenticationFailed
                        | OpenError::WrongTenant { .. }
                        | OpenError::WrongAgent { .. }
                        | OpenError::UnknownKey(_)
                        | OpenError::UnknownSender(_)
                        | OpenError::Malformed(_)
                        | OpenError::UnsupportedVersion(_)
                ),
                "byte {i}: {err:?}"
            );
        }
    }
    // Truncation and extension too.
    assert!(open_request(&bytes[..bytes.len() - 1], &to).is_err());
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        open_request(&longer, &to).unwrap_err(),
        OpenError::AuthenticationFailed
    );
}

#[test]
fn a_reply_opens_only_for_its_own_request_and_only_unaltered() {
    let w = world();
    let portals = [w.portal.public.clone()];
    let keys = [w.agent.clone()];
    let to = recipient(&portals, &keys);
    let h = header("contoso", "r-1", operation::RESET_PASSWORD);
    let (first, pending_first) = seal(&w, &h, &reset_body("pw-one"));
    let (_, pending_second) = seal(&w, &h, &reset_body("pw-two"));
    let reply = open_request(&first, &to)
        .expect("open")
        .seal_reply(
            &ReplyBody {
                outcome: 0,
                message: "ok".into(),
                details: vec![],
            },
            &mut os_rng(),
        )
        .expect("reply");
    assert!(pending_first.open(&reply).is_ok());
    assert_eq!(
        pending_second.open(&reply).unwrap_err(),
        ReplyError::AuthenticationFailed
    );
    for i in 0..reply.len() {
        let mut altered = reply.clone();
        altered[i] ^= 0x20;
        let err = pending_first
            .open(&altered)
            .expect_err("an altered reply never opens");
        assert!(
            matches!(
                err,
                ReplyError::AuthenticationFailed | ReplyError::UnsupportedVersion(_)
            ),
            "byte {i}: {err:?}"
        );
    }
    assert!(matches!(
        pending_first.open(&reply[..20]),
        Err(ReplyError::Malformed(_))
    ));
}

#[test]
fn an_agent_keeps_older_keys_for_the_overlap() {
    let w = world();
    let portals = [w.portal.public.clone()];
    let (to_old, _) = seal_request(
        &w.portal,
        &w.old_agent.public,
        &header("contoso", "r", operation::RESET_PASSWORD),
        &reset_body("pw"),
        &mut os_rng(),
    )
    .expect("seal");
    let both = [w.agent.clone(), w.old_agent.clone()];
    assert!(open_request(&to_old, &recipient(&portals, &both)).is_ok());
    let only_new = [w.agent.clone()];
    assert!(matches!(
        open_request(&to_old, &recipient(&portals, &only_new)),
        Err(OpenError::UnknownKey(_))
    ));
}

#[test]
fn fingerprints_and_key_ids_round_trip() {
    let k = KeyPair::generate(&mut os_rng());
    let fp = k.public.fingerprint();
    assert_eq!(
        envelope::Fingerprint::parse(&fp.to_string()).expect("parse"),
        fp
    );
    assert_eq!(fp.to_string().split(' ').count(), 16);
    let id = k.public.key_id();
    assert_eq!(envelope::KeyId::from_hex(&id.to_hex()).expect("parse"), id);
    let back = KeyPair::from_private_bytes(k.private_bytes().as_ref()).expect("restore");
    assert_eq!(back.public, k.public);
    let shown = format!("{k:?}");
    let private_hex: String = k
        .private_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        shown.contains("***") && !shown.contains(&private_hex),
        "{shown}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_requests_round_trip(
        tenant in "[a-z0-9][a-z0-9-]{0,40}",
        request_id in "[A-Za-z0-9._:-]{1,100}",
        anchor in "\\PC{1,200}",
        new_password in "\\PC{1,300}",
        current in proptest::option::of("\\PC{1,300}"),
        unlock in any::<bool>(),
    ) {
        let w = world();
        let (op, body) = match current {
            Some(c) => (operation::CHANGE_PASSWORD, RequestBody::change(Anchor::SourceAnchor(anchor), Password::new(c), Password::new(new_password))),
            None => {
                let mut b = RequestBody::reset(Anchor::UserPrincipalName(anchor), Password::new(new_password));
                b.unlock = unlock;
                (operation::RESET_PASSWORD, b)
            }
        };
        let (bytes, pending) = seal_request(&w.portal, &w.agent.public, &header(&tenant, &request_id, op), &body, &mut os_rng()).expect("seal");
        let portals = [w.portal.public.clone()];
        let keys = [w.agent.clone()];
        let to = Recipient { tenant: &tenant, ..recipient(&portals, &keys) };
        let opened = open_request(&bytes, &to).expect("open");
        prop_assert_eq!(&opened.body, &body);
        prop_assert_eq!(&opened.header.request_id, &request_id);
        let answer = ReplyBody { outcome: 9, message: request_id.clone(), details: vec![("k".into(), tenant.clone())] };
        let reply = opened.seal_reply(&answer, &mut os_rng()).expect("reply");
        prop_assert_eq!(pending.open(&reply).expect("open reply"), answer);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parsers(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let w = world();
        let portals = [w.portal.public.clone()];
        let keys = [w.agent.clone()];
        let _ = open_request(&bytes, &recipient(&portals, &keys));
        let (_, pending) = seal(&w, &header("contoso", "r", operation::UNLOCK_ACCOUNT), &RequestBody::without_passwords(Anchor::SourceAnchor("a".into())));
        prop_assert!(pending.open(&bytes).is_err());
    }
}

#[test]
fn the_last_accepted_millisecond_still_refuses_a_replay() {
    let w = world();
    let portals = [w.portal.public.clone()];
    let keys = [w.agent.clone()];
    let (bytes, _) = seal(
        &w,
        &header("contoso", "r", operation::RESET_PASSWORD),
        &reset_body("pw"),
    );
    let skew = 30_000;
    let edge = NOW + 2 * MINUTE + skew;
    let mut window = ReplayWindow::new();
    let first = open_request(&bytes, &recipient(&portals, &keys)).expect("open");
    window
        .check_and_insert(first.enc, first.header.expires_at_ms + skew, NOW)
        .expect("first");
    let at_edge = Recipient {
        now_ms: edge,
        ..recipient(&portals, &keys)
    };
    let again = open_request(&bytes, &at_edge).expect("still inside the window");
    assert_eq!(
        window.check_and_insert(again.enc, edge, edge),
        Err(OpenError::Replayed)
    );
}

#[test]
fn extreme_times_are_refused_without_overflow() {
    let w = world();
    let portals = [w.portal.public.clone()];
    let keys = [w.agent.clone()];
    for (issued, expires) in [
        (u64::MAX - 10, u64::MAX),
        (0, 1),
        (1 << 63, (1 << 63) + 1000),
    ] {
        let mut h = header("contoso", "r", operation::RESET_PASSWORD);
        h.issued_at_ms = issued;
        h.expires_at_ms = expires;
        let (bytes, _) = seal(&w, &h, &reset_body("pw"));
        assert!(open_request(&bytes, &recipient(&portals, &keys)).is_err());
    }
    assert!(envelope::KeyId::from_hex("+f00112233445566").is_err());
}

#[test]
fn a_seal_prepared_ahead_opens_like_any_other_and_only_once() {
    let w = world();
    let prepared = envelope::prepare_seal(&w.portal, &w.agent.public, &mut os_rng()).unwrap();
    assert_eq!(prepared.agent_key_id(), w.agent.public.key_id());
    assert!(
        !format!("{prepared:?}").contains("ctx"),
        "no secret in Debug"
    );
    let h = header("contoso", "r-prepared", operation::RESET_PASSWORD);
    let (bytes, pending) =
        envelope::seal_prepared(prepared, &h, &reset_body("Tr0ub4dor&3")).unwrap();
    let portals = [w.portal.public.clone()];
    let keys = [w.agent.clone()];
    let opened = open_request(&bytes, &recipient(&portals, &keys)).expect("open");
    assert_eq!(opened.header.request_id, "r-prepared");
    assert_eq!(opened.header.agent_key_id, w.agent.public.key_id());
    assert_eq!(opened.header.portal_key_id, w.portal.public.key_id());
    let reply = ReplyBody {
        outcome: envelope::body::outcome::SUCCESS,
        message: "done".into(),
        details: Vec::new(),
    };
    let sealed = opened.seal_reply(&reply, &mut os_rng()).unwrap();
    assert_eq!(pending.open(&sealed).unwrap(), reply);
    // Two preparations never share an encapsulation (each is single use).
    let a = envelope::prepare_seal(&w.portal, &w.agent.public, &mut os_rng()).unwrap();
    let b = envelope::prepare_seal(&w.portal, &w.agent.public, &mut os_rng()).unwrap();
    let (x, _) = envelope::seal_prepared(a, &h, &reset_body("x-Passw0rd")).unwrap();
    let (y, _) = envelope::seal_prepared(b, &h, &reset_body("x-Passw0rd")).unwrap();
    assert_ne!(x, y);
    // An invalid header is refused before anything is sealed.
    let c = envelope::prepare_seal(&w.portal, &w.agent.public, &mut os_rng()).unwrap();
    let mut bad = h.clone();
    bad.expires_at_ms = bad.issued_at_ms;
    assert!(matches!(
        envelope::seal_prepared(c, &bad, &reset_body("x-Passw0rd")),
        Err(envelope::SealError::Invalid {
            field: "expires_at_ms",
            ..
        })
    ));
}

#[test]
fn refusals_after_decryption_can_be_sealed_to_the_portal_and_only_those() {
    let w = world();
    let portals = [w.portal.public.clone()];
    let keys = [w.agent.clone()];
    let h = header("contoso", "r", operation::RESET_PASSWORD);
    let body = reset_body("S3cret!pass");
    let (bytes, pending) = seal(&w, &h, &body);
    let late = Recipient {
        now_ms: NOW + 2 * MINUTE + 31_000,
        ..recipient(&portals, &keys)
    };
    let refused = envelope::open_request_sealing_refusals(&bytes, &late).unwrap_err();
    assert!(matches!(refused.error, OpenError::Expired { .. }));
    let answer = ReplyBody {
        outcome: envelope::body::outcome::NOT_APPLIED,
        message: "expired".into(),
        details: vec![("reason".into(), "EXPIRED".into())],
    };
    let sealed = refused
        .reply
        .expect("decrypted before the refusal")
        .seal_reply(&answer, &mut os_rng())
        .expect("seal");
    assert_eq!(pending.open(&sealed).expect("the portal opens it"), answer);

    // Before decryption there is nobody to seal to.
    let stranger = KeyPair::generate(&mut os_rng());
    let (to_stranger, _) =
        seal_request(&w.portal, &stranger.public, &h, &body, &mut os_rng()).expect("seal");
    let refused =
        envelope::open_request_sealing_refusals(&to_stranger, &recipient(&portals, &keys))
            .unwrap_err();
    assert!(matches!(refused.error, OpenError::UnknownKey(_)));
    assert!(refused.reply.is_none());
    let mut altered = bytes.clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    let refused =
        envelope::open_request_sealing_refusals(&altered, &recipient(&portals, &keys)).unwrap_err();
    assert_eq!(refused.error, OpenError::AuthenticationFailed);
    assert!(refused.reply.is_none());
}
