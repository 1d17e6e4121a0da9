//! Deterministic fixtures shared by the fuzz targets and by the seed writer
//! (`examples/seeds.rs`): the same keys, the same recipient, the same sealed
//! request and its pending reply, so that seeds written by one process open
//! in another. Everything is derived from constants; nothing here is secret
//! or random, and none of it may be used outside fuzzing.

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::sync::OnceLock;

use envelope::body::operation;
use envelope::{
    Anchor, KeyId, KeyPair, Password, PendingReply, PublicKey, Recipient, ReplyBody, RequestBody,
    RequestHeader, open_request, seal_request,
};
use rand_core::{TryCryptoRng, TryRng};

pub const TENANT: &str = "contoso";
/// The agent of every target (its `Hello.agent_id`), whom the sample
/// requests are addressed to.
pub const AGENT_ID: &str = "dc1-agent";
/// The agent's clock in every target.
pub const NOW_MS: u64 = 1_800_000_000_000;
pub const MINUTE_MS: u64 = 60_000;
pub const SKEW_ALLOWANCE_MS: u64 = 30_000;
pub const MAX_LIFETIME_MS: u64 = 10 * MINUTE_MS;
/// Expiry (Unix seconds) of the seed tokens.
pub const TOKEN_EXPIRY: u64 = 1_800_000_000;

/// A deterministic generator (SplitMix64) standing in for the operating
/// system's, so that sealing is reproducible. It only claims `CryptoRng`
/// because `seal_request` asks for one; it is not one.
pub struct TestRng(u64);

impl TestRng {
    pub fn new(seed: u64) -> TestRng {
        TestRng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl TryRng for TestRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.next() as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.next())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        Ok(())
    }
}

impl TryCryptoRng for TestRng {}

/// Everything the targets share, built once per process.
pub struct Fixture {
    pub portal: KeyPair,
    pub agent: KeyPair,
    /// `[agent]`: the recipient's keys.
    pub agent_keys: Vec<KeyPair>,
    /// `[portal.public]`: the recipient's pinned portal keys.
    pub trusted_portals: Vec<PublicKey>,
    /// Valid sealed requests, each opening with [`Fixture::recipient`].
    pub requests: Vec<Vec<u8>>,
    /// What the portal kept when it sealed `requests[0]`.
    pub pending: PendingReply,
    /// Valid sealed replies to `requests[0]`, each opening with `pending`.
    pub replies: Vec<Vec<u8>>,
    /// The primary and secondary keys of the seed tokens.
    pub sas_keys: (sas::Key, sas::Key),
    /// The agent's next key, which `agent` endorses to the portal.
    pub next_agent: KeyPair,
    /// `[agent.public]`: the endorsers the portal trusts.
    pub trusted_endorsers: Vec<PublicKey>,
    /// Valid endorsements of `next_agent` by `agent` for `portal`.
    pub endorsements: Vec<Vec<u8>>,
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(Fixture::build)
}

impl Fixture {
    fn build() -> Fixture {
        let portal = KeyPair::derive(&[1u8; 32]);
        let agent = KeyPair::derive(&[2u8; 32]);
        let mut requests = Vec::new();
        let mut pendings = Vec::new();
        for (i, (header, body)) in sample_requests().iter().enumerate() {
            let (bytes, pending) = seal_request(
                &portal,
                &agent.public,
                header,
                body,
                &mut TestRng::new(1000 + i as u64),
            )
            .expect("the sample requests are valid");
            requests.push(bytes);
            pendings.push(pending);
        }
        let next_agent = KeyPair::derive(&[3u8; 32]);
        let endorsements = [NOW_MS, 0, u64::MAX]
            .iter()
            .enumerate()
            .map(|(i, &issued_at_ms)| {
                envelope::endorse::endorse(
                    &agent,
                    &next_agent.public,
                    &portal.public,
                    TENANT,
                    issued_at_ms,
                    &mut TestRng::new(3000 + i as u64),
                )
                .expect("valid endorsement")
            })
            .collect();
        let mut fixture = Fixture {
            trusted_endorsers: vec![agent.public.clone()],
            next_agent,
            endorsements,
            agent_keys: vec![agent.clone()],
            trusted_portals: vec![portal.public.clone()],
            portal,
            agent,
            requests,
            pending: pendings.swap_remove(0),
            replies: Vec::new(),
            sas_keys: (
                // Bytes 1..=32 and 33..=64.
                sas::Key::from_base64("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=")
                    .expect("fixed key"),
                sas::Key::from_base64("ISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0A=")
                    .expect("fixed key"),
            ),
        };
        let opened =
            open_request(&fixture.requests[0], &fixture.recipient()).expect("the seed opens");
        for (i, body) in sample_replies().iter().enumerate() {
            let reply = opened
                .seal_reply(body, &mut TestRng::new(2000 + i as u64))
                .expect("the sample replies are valid");
            fixture.replies.push(reply);
        }
        for request in &fixture.requests[1..] {
            open_request(request, &fixture.recipient()).expect("the seeds open");
        }
        fixture
    }

    /// The agent of every target: tenant "contoso", agent id "dc1-agent", one key, one pinned
    /// portal, its clock at [`NOW_MS`].
    pub fn recipient(&self) -> Recipient<'_> {
        Recipient {
            tenant: TENANT,
            agent_id: AGENT_ID,
            keys: &self.agent_keys,
            trusted_portals: &self.trusted_portals,
            now_ms: NOW_MS,
            skew_allowance_ms: SKEW_ALLOWANCE_MS,
            max_lifetime_ms: MAX_LIFETIME_MS,
        }
    }

    /// Valid tokens for every right, signed with the primary key.
    pub fn tokens(&self) -> Vec<String> {
        let mut out = Vec::new();
        for right in [sas::Right::Listen, sas::Right::Send, sas::Right::Manage] {
            out.push(
                sas::mint(&self.sas_keys.0, TENANT, right, TOKEN_EXPIRY)
                    .expose()
                    .to_owned(),
            );
        }
        out.push(
            sas::mint(
                &self.sas_keys.0,
                sas::OPERATOR_RESOURCE,
                sas::Right::Operator,
                TOKEN_EXPIRY,
            )
            .expose()
            .to_owned(),
        );
        out
    }
}

/// A header the agent accepts at [`NOW_MS`] (key ids are filled in by sealing).
pub fn header(request_id: &str, op: u8) -> RequestHeader {
    RequestHeader {
        tenant: TENANT.into(),
        agent_key_id: KeyId([0; 8]),
        portal_key_id: KeyId([0; 8]),
        agent_id: AGENT_ID.into(),
        request_id: request_id.into(),
        operation: op,
        issued_at_ms: NOW_MS,
        expires_at_ms: NOW_MS + 2 * MINUTE_MS,
    }
}

/// One valid request of each kind.
pub fn sample_requests() -> Vec<(RequestHeader, RequestBody)> {
    let guid = Anchor::SourceAnchor("bm90IGEgcmVhbCBndWlk".into());
    let upn = Anchor::UserPrincipalName("ada@contoso.example".into());
    let mut unlock_reset =
        RequestBody::reset(upn.clone(), Password::new("Gr\u{fc}n-\u{1f511}-2026!"));
    unlock_reset.unlock = true;
    unlock_reset.must_change = true;
    vec![
        (
            header("r-1", operation::RESET_PASSWORD),
            RequestBody::reset(guid.clone(), Password::new("Tr0ub4dor&3")),
        ),
        (header("r-2", operation::RESET_PASSWORD), unlock_reset),
        (
            header("r-3", operation::CHANGE_PASSWORD),
            RequestBody::change(
                upn.clone(),
                Password::new("old"),
                Password::new("n".repeat(300)),
            ),
        ),
        (
            header("r-4", operation::UNLOCK_ACCOUNT),
            RequestBody::without_passwords(guid),
        ),
        (
            header("r-5", operation::GET_PASSWORD_POLICY),
            RequestBody::without_passwords(upn),
        ),
    ]
}

/// Replies of each shape: success, refusal with details, many details.
pub fn sample_replies() -> Vec<ReplyBody> {
    vec![
        ReplyBody {
            outcome: 0,
            message: String::new(),
            details: vec![],
        },
        ReplyBody {
            outcome: 3,
            message: "the password is too short".into(),
            details: vec![
                ("min_length".into(), "12".into()),
                ("history".into(), "24".into()),
            ],
        },
        ReplyBody {
            outcome: 65535,
            message: "\u{00e9}chec \u{2014} r\u{e9}essayez".repeat(40),
            details: (0..32).map(|i| (format!("k{i}"), "v".repeat(i))).collect(),
        },
    ]
}
