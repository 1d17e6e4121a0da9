//! The interoperability vectors in `docs/test-vectors/envelope-v1.json`.
//!
//! The file is produced by this code from fixed inputs, so it cannot drift
//! from what the crate actually does: `the_committed_vectors_are_what_the_code_produces`
//! regenerates it and compares byte for byte. Two further tests read the
//! committed file alone: one opens it through the public API (what an agent
//! and a portal built on this crate do), the other re-derives every byte
//! from `docs/PROTOCOL.md`'s description with the HPKE, HKDF and AEAD
//! primitives directly, so that the document, the vectors and the code are
//! checked against each other.
//!
//! Regenerate after an intended format change with
//! `UPDATE_TEST_VECTORS=1 cargo test -p envelope --test test_vectors`.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::OnceLock;

use envelope::body::operation;
use envelope::{
    Anchor, Fingerprint, KeyId, KeyPair, Password, PublicKey, Recipient, ReplyBody, RequestBody,
    RequestHeader, open_request, seal_request,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

const UPDATE_VAR: &str = "UPDATE_TEST_VECTORS";
const REGENERATE: &str = "UPDATE_TEST_VECTORS=1 cargo test -p envelope --test test_vectors";

// The fixed inputs. Everything else in the file is computed from these.
const PORTAL_IKM: &[u8] = b"relay.v1 test vector portal key ikm";
const AGENT_IKM: &[u8] = b"relay.v1 test vector agent key ikm";
const PORTAL_RNG_SEED: &[u8] = b"relay.v1 test vector portal rng";
const AGENT_RNG_SEED: &[u8] = b"relay.v1 test vector agent rng";
const TENANT: &str = "contoso";
/// The agent the request is addressed to (its `Hello.agent_id`).
const AGENT_ID: &str = "dc1.contoso.example";
const REQUEST_ID: &str = "pwreset-20260101-0001";
/// 2026-01-01T00:00:00Z.
const ISSUED_AT_MS: u64 = 1_767_225_600_000;
/// The portal's default validity, two minutes.
const EXPIRES_AT_MS: u64 = ISSUED_AT_MS + 120_000;
/// base64 of the 16-byte objectGUID 00 01 02 .. 0f.
const ANCHOR: &str = "AAECAwQFBgcICQoLDA0ODw==";
const NEW_PASSWORD: &str = "Correct-Horse-Battery-9";
const REPLY_OUTCOME: u16 = 0;
/// What the agent answers a successful reset (agent::writeback): the
/// example shows the real reply, not an illustration.
const REPLY_MESSAGE: &str = "the password was changed";

// The protocol's constants, written out here rather than taken from the
// crate so that a change to them shows up as a failing test, not as
// silently regenerated vectors.
const INFO: &[u8] = b"relay.v1 request";
const EXPORTER_LABEL: &[u8] = b"relay.v1 response";
const KEY_ID_LABEL: &[u8] = b"relay.v1 key id";
const FINGERPRINT_LABEL: &[u8] = b"relay.v1 fingerprint";

// The agent and portal configuration defaults the document states.
const SKEW_ALLOWANCE_MS: u64 = 60_000;
const MAX_LIFETIME_MS: u64 = 600_000;

/// A documented, reproducible byte stream standing in for a CSPRNG:
/// block i is SHA-256(seed || u64 big-endian i), for i = 0, 1, 2, ...,
/// and the blocks are handed out in order, however the caller slices its
/// requests. It also records what it handed out, so the vectors can show
/// ikmE and the response nonce as drawn.
struct CounterRng {
    seed: &'static [u8],
    counter: u64,
    block: Vec<u8>,
    drawn: Vec<u8>,
}

impl CounterRng {
    fn new(seed: &'static [u8]) -> CounterRng {
        CounterRng {
            seed,
            counter: 0,
            block: Vec::new(),
            drawn: Vec::new(),
        }
    }
}

impl rand_core::TryRng for CounterRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for byte in dst.iter_mut() {
            if self.block.is_empty() {
                let digest = Sha256::new()
                    .chain_update(self.seed)
                    .chain_update(self.counter.to_be_bytes())
                    .finalize();
                // Reversed so that pop() hands out the block's bytes in order.
                self.block = digest.iter().rev().copied().collect();
                self.counter += 1;
            }
            *byte = self.block.pop().expect("refilled above");
            self.drawn.push(*byte);
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for CounterRng {}

/// Yields exactly the given bytes, then panics: used to replay the
/// committed ikmE and response nonce, so that re-sealing depends on the
/// file and not on `CounterRng`.
struct FixedRng(Vec<u8>);

impl rand_core::TryRng for FixedRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        unreachable!("sealing draws whole byte strings, not integers")
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        unreachable!("sealing draws whole byte strings, not integers")
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        assert!(
            dst.len() <= self.0.len(),
            "sealing drew more randomness than the vectors record"
        );
        let rest = self.0.split_off(dst.len());
        dst.copy_from_slice(&self.0);
        self.0 = rest;
        Ok(())
    }
}

impl rand_core::TryCryptoRng for FixedRng {}

// ---------------------------------------------------------------------------
// Writing the JSON.
//
// serde_json's map orders keys by name or by insertion depending on a cargo
// feature that any crate in the build may switch on, so the text is written
// by hand: the byte-for-byte comparison must not depend on feature
// unification, and the fields read best in protocol order anyway.

enum Json {
    Str(String),
    Num(u64),
    Bool(bool),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

fn s(text: impl Into<String>) -> Json {
    Json::Str(text.into())
}

fn hx(bytes: impl AsRef<[u8]>) -> Json {
    Json::Str(hex::encode(bytes))
}

fn write_json(value: &Json, indent: usize, out: &mut String) {
    let pad = |n: usize| "  ".repeat(n);
    match value {
        Json::Str(text) => out.push_str(&serde_json::to_string(text).expect("string")),
        Json::Num(n) => out.push_str(&n.to_string()),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        // Arrays hold only short scalars here; one line reads best.
        Json::Arr(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(item, indent, out);
            }
            out.push(']');
        }
        Json::Obj(fields) => {
            out.push_str("{\n");
            for (i, (key, item)) in fields.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                out.push_str(&serde_json::to_string(key).expect("key"));
                out.push_str(": ");
                write_json(item, indent + 1, out);
                out.push_str(if i + 1 < fields.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push('}');
        }
    }
}

fn key_pair_json(ikm: &[u8], k: &KeyPair) -> Json {
    Json::Obj(vec![
        ("ikm", hx(ikm)),
        ("ikm_text", s(std::str::from_utf8(ikm).expect("ASCII ikm"))),
        ("private_key", hx(k.private_bytes().as_ref())),
        ("public_key", hx(k.public.as_bytes())),
        ("key_id", s(k.public.key_id().to_hex())),
        ("fingerprint", s(k.public.fingerprint().to_string())),
    ])
}

fn header() -> RequestHeader {
    RequestHeader {
        tenant: TENANT.into(),
        // seal_request fills both key ids in from the keys it is given.
        agent_key_id: KeyId([0; 8]),
        portal_key_id: KeyId([0; 8]),
        agent_id: AGENT_ID.into(),
        request_id: REQUEST_ID.into(),
        operation: operation::RESET_PASSWORD,
        issued_at_ms: ISSUED_AT_MS,
        expires_at_ms: EXPIRES_AT_MS,
    }
}

fn request_body() -> RequestBody {
    RequestBody::reset(
        Anchor::SourceAnchor(ANCHOR.into()),
        Password::new(NEW_PASSWORD),
    )
}

fn reply_body() -> ReplyBody {
    ReplyBody {
        outcome: REPLY_OUTCOME,
        message: REPLY_MESSAGE.into(),
        details: Vec::new(),
    }
}

/// The exported reply secret, and the reply AEAD's key and nonce, computed
/// from the documented derivation: the crate keeps these private.
fn reply_secrets(
    agent: &KeyPair,
    portal: &PublicKey,
    enc: &[u8],
    response_nonce: &[u8],
) -> ([u8; 32], [u8; 32], [u8; 12]) {
    let ctx = receiver_context(agent.private_bytes().as_ref(), portal.as_bytes(), enc);
    let mut secret = [0u8; 32];
    ctx.export(EXPORTER_LABEL, &mut secret).expect("export");
    let (key, nonce) = reply_key_nonce(&secret, enc, response_nonce);
    (secret, key, nonce)
}

type ReceiverCtx = hpke::aead::AeadCtxR<
    hpke::aead::ChaCha20Poly1305,
    hpke::kdf::HkdfSha256,
    hpke::kem::X25519HkdfSha256,
>;

/// SetupAuthR(enc, skR, info, pkS) of RFC 9180 §5.1.3, straight from the
/// HPKE library, bypassing the crate under test.
fn receiver_context(sk_r: &[u8], pk_s: &[u8], enc: &[u8]) -> ReceiverCtx {
    use hpke::{Deserializable, Kem};
    type K = hpke::kem::X25519HkdfSha256;
    let sk = <K as Kem>::PrivateKey::from_bytes(sk_r).expect("agent private key");
    let pk = <K as Kem>::PublicKey::from_bytes(pk_s).expect("portal public key");
    let enc = <K as Kem>::EncappedKey::from_bytes(enc).expect("enc");
    hpke::setup_receiver::<hpke::aead::ChaCha20Poly1305, hpke::kdf::HkdfSha256, K>(
        &hpke::OpModeR::Auth(pk),
        &sk,
        &enc,
        INFO,
    )
    .expect("SetupAuthR")
}

/// The RFC 9458 §4.4-style key schedule of a reply.
fn reply_key_nonce(secret: &[u8], enc: &[u8], response_nonce: &[u8]) -> ([u8; 32], [u8; 12]) {
    let salt = [enc, response_nonce].concat();
    let hk = hkdf::Hkdf::<Sha256>::new(Some(&salt), secret);
    let mut key = [0u8; 32];
    let mut nonce = [0u8; 12];
    hk.expand(b"key", &mut key).expect("HKDF key");
    hk.expand(b"nonce", &mut nonce).expect("HKDF nonce");
    (key, nonce)
}

fn chacha_open(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    let cipher = chacha20poly1305::ChaCha20Poly1305::new_from_slice(key).expect("key");
    cipher
        .decrypt(
            &chacha20poly1305::Nonce::from(*nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .expect("the reply decrypts under the documented key and nonce")
}

/// Everything, from the fixed inputs, as the JSON text to commit.
fn generate() -> String {
    let portal = KeyPair::derive(PORTAL_IKM);
    let agent = KeyPair::derive(AGENT_IKM);

    let mut portal_rng = CounterRng::new(PORTAL_RNG_SEED);
    let (request, pending) = seal_request(
        &portal,
        &agent.public,
        &header(),
        &request_body(),
        &mut portal_rng,
    )
    .expect("seal request");
    assert_eq!(portal_rng.drawn.len(), 32, "sealing draws exactly ikmE");
    let ikm_e = portal_rng.drawn.clone();

    let recipient_keys = [agent.clone()];
    let trusted = [portal.public.clone()];
    let opened = open_request(&request, &recipient(&recipient_keys, &trusted)).expect("open");
    let mut agent_rng = CounterRng::new(AGENT_RNG_SEED);
    let reply = opened
        .seal_reply(&reply_body(), &mut agent_rng)
        .expect("seal reply");
    assert_eq!(
        agent_rng.drawn.len(),
        32,
        "sealing a reply draws exactly the response nonce"
    );
    assert_eq!(pending.open(&reply).expect("open reply"), reply_body());
    let response_nonce = agent_rng.drawn.clone();

    // Split the envelope where the document says: the header's fixed and
    // length-prefixed fields, then the 32-byte enc, then the ciphertext.
    let enc = &opened.enc[..];
    let header_len =
        1 + 1 + TENANT.len() + 8 + 8 + 1 + AGENT_ID.len() + 1 + REQUEST_ID.len() + 1 + 8 + 8;
    assert_eq!(&request[header_len..header_len + 32], enc);
    let aad = &request[..header_len + 32];
    let request_plaintext = request_body().encode().expect("encode request");
    let reply_plaintext = reply_body().encode().expect("encode reply");
    let (secret, reply_key, reply_nonce) =
        reply_secrets(&agent, &portal.public, enc, &response_nonce);

    let h = &opened.header;
    let doc = Json::Obj(vec![
        (
            "description",
            s(
                "relay.v1 end-to-end envelope test vectors: one reset request sealed by a portal \
               to an agent, and the agent's reply. Byte strings are lowercase hex; *_text fields \
               repeat ASCII inputs for reading. See docs/PROTOCOL.md.",
            ),
        ),
        (
            "generated_by",
            s(format!(
                "envelope/tests/test_vectors.rs; regenerate with {REGENERATE}"
            )),
        ),
        (
            "suite",
            Json::Obj(vec![
                ("mode", Json::Num(2)),
                ("mode_name", s("mode_auth")),
                ("kem_id", Json::Num(0x0020)),
                ("kem", s("DHKEM(X25519, HKDF-SHA256)")),
                ("kdf_id", Json::Num(0x0001)),
                ("kdf", s("HKDF-SHA256")),
                ("aead_id", Json::Num(0x0003)),
                ("aead", s("ChaCha20Poly1305")),
                ("info", hx(INFO)),
                ("info_text", s("relay.v1 request")),
                ("exporter_label", hx(EXPORTER_LABEL)),
                ("exporter_label_text", s("relay.v1 response")),
                ("key_id_label_text", s("relay.v1 key id")),
                ("fingerprint_label_text", s("relay.v1 fingerprint")),
            ]),
        ),
        (
            "randomness",
            Json::Obj(vec![
                (
                    "construction",
                    s(
                        "block i = SHA-256(seed || uint64_be(i)) for i = 0, 1, ...; \
                       bytes are drawn from the concatenated blocks in order",
                    ),
                ),
                ("portal_seed_text", s("relay.v1 test vector portal rng")),
                ("agent_seed_text", s("relay.v1 test vector agent rng")),
            ]),
        ),
        ("portal", key_pair_json(PORTAL_IKM, &portal)),
        ("agent", key_pair_json(AGENT_IKM, &agent)),
        (
            "request",
            Json::Obj(vec![
                (
                    "header",
                    Json::Obj(vec![
                        ("version", Json::Num(1)),
                        ("tenant", s(&h.tenant)),
                        ("agent_key_id", s(h.agent_key_id.to_hex())),
                        ("portal_key_id", s(h.portal_key_id.to_hex())),
                        ("agent_id", s(&h.agent_id)),
                        ("request_id", s(&h.request_id)),
                        ("operation", Json::Num(u64::from(h.operation))),
                        ("issued_at_ms", Json::Num(h.issued_at_ms)),
                        ("expires_at_ms", Json::Num(h.expires_at_ms)),
                    ]),
                ),
                (
                    "body",
                    Json::Obj(vec![
                        ("anchor_kind", Json::Num(1)),
                        ("anchor", s(ANCHOR)),
                        ("unlock", Json::Bool(false)),
                        ("must_change", Json::Bool(false)),
                        ("new_password", s(NEW_PASSWORD)),
                        ("current_password", s("")),
                    ]),
                ),
                ("padded_plaintext", hx(request_plaintext.as_slice())),
                ("ikm_e", hx(&ikm_e)),
                ("enc", hx(enc)),
                ("aad", hx(aad)),
                ("ciphertext", hx(&request[aad.len()..])),
                ("envelope", hx(&request)),
            ]),
        ),
        (
            "open_at",
            Json::Obj(vec![
                ("now_ms", Json::Num(ISSUED_AT_MS + 1_000)),
                ("skew_allowance_ms", Json::Num(SKEW_ALLOWANCE_MS)),
                ("max_lifetime_ms", Json::Num(MAX_LIFETIME_MS)),
            ]),
        ),
        (
            "reply",
            Json::Obj(vec![
                ("exported_secret", hx(secret)),
                ("response_nonce", hx(&response_nonce)),
                ("hkdf_salt", hx([enc, &response_nonce[..]].concat())),
                ("aead_key", hx(reply_key)),
                ("aead_nonce", hx(reply_nonce)),
                (
                    "body",
                    Json::Obj(vec![
                        ("outcome", Json::Num(u64::from(REPLY_OUTCOME))),
                        ("message", s(REPLY_MESSAGE)),
                        ("details", Json::Arr(Vec::new())),
                    ]),
                ),
                ("padded_plaintext", hx(reply_plaintext.as_slice())),
                ("envelope", hx(&reply)),
            ]),
        ),
    ]);
    let mut out = String::new();
    write_json(&doc, 0, &mut out);
    out.push('\n');
    out
}

fn recipient<'a>(keys: &'a [KeyPair], trusted: &'a [PublicKey]) -> Recipient<'a> {
    Recipient {
        tenant: TENANT,
        agent_id: AGENT_ID,
        keys,
        trusted_portals: trusted,
        now_ms: ISSUED_AT_MS + 1_000,
        skew_allowance_ms: SKEW_ALLOWANCE_MS,
        max_lifetime_ms: MAX_LIFETIME_MS,
    }
}

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/test-vectors/envelope-v1.json")
}

/// The committed file's text. With UPDATE_TEST_VECTORS set it is first
/// (re)written, once, before any test reads it: the tests run in parallel.
fn committed_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let path = vectors_path();
        if std::env::var_os(UPDATE_VAR).is_some() {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("create directory");
            std::fs::write(&path, generate()).expect("write the vectors");
        }
        std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e}\nGenerate it with: {REGENERATE}",
                path.display()
            )
        })
    })
}

fn committed() -> Value {
    serde_json::from_str(committed_text()).expect("the vectors file is JSON")
}

fn field<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, key| {
        v.get(key).unwrap_or_else(|| panic!("no {path}"))
    })
}

fn text<'a>(v: &'a Value, path: &str) -> &'a str {
    field(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string"))
}

fn bytes(v: &Value, path: &str) -> Vec<u8> {
    hex::decode(text(v, path)).unwrap_or_else(|e| panic!("{path} is not hex: {e}"))
}

fn number(v: &Value, path: &str) -> u64 {
    field(v, path)
        .as_u64()
        .unwrap_or_else(|| panic!("{path} is not a number"))
}

#[test]
fn the_committed_vectors_are_what_the_code_produces() {
    let fresh = generate();
    assert_eq!(
        generate(),
        fresh,
        "generating the vectors twice gave different bytes"
    );
    let committed = committed_text();
    if committed != fresh {
        let line = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || "the files differ in length".to_owned(),
                |i| format!("first difference at line {}", i + 1),
            );
        panic!(
            "{} does not match what the code produces now ({line}).\n\
             If the envelope format changed on purpose, regenerate it with\n    {REGENERATE}\n\
             and update docs/PROTOCOL.md; otherwise the change breaks interoperability.",
            vectors_path().display()
        );
    }
}

/// What an agent and a portal built on this crate do with the committed
/// bytes. Nothing here comes from `generate()`: keys, enc randomness and
/// envelopes are read from the file.
#[test]
fn the_committed_envelopes_open_with_the_public_api() {
    let v = committed();
    let portal = KeyPair::from_private_bytes(&bytes(&v, "portal.private_key")).expect("portal");
    let agent = KeyPair::from_private_bytes(&bytes(&v, "agent.private_key")).expect("agent");
    for (k, who) in [(&portal, "portal"), (&agent, "agent")] {
        assert_eq!(
            k.public.as_bytes().to_vec(),
            bytes(&v, &format!("{who}.public_key"))
        );
        assert_eq!(
            k.public.key_id(),
            KeyId::from_hex(text(&v, &format!("{who}.key_id"))).expect("key id")
        );
        let fp = text(&v, &format!("{who}.fingerprint"));
        assert_eq!(k.public.fingerprint().to_string(), fp);
        assert_eq!(
            Fingerprint::parse(fp).expect("fingerprint"),
            k.public.fingerprint()
        );
    }

    let envelope = bytes(&v, "request.envelope");
    let keys = [agent.clone()];
    let trusted = [portal.public.clone()];
    let to = Recipient {
        now_ms: number(&v, "open_at.now_ms"),
        skew_allowance_ms: number(&v, "open_at.skew_allowance_ms"),
        max_lifetime_ms: number(&v, "open_at.max_lifetime_ms"),
        ..recipient(&keys, &trusted)
    };
    // Another agent of the tenant, even holding the same key pair, refuses
    // it before any public-key operation: it is addressed to one agent.
    let other = Recipient {
        agent_id: "dc2.contoso.example",
        ..recipient(&keys, &trusted)
    };
    assert_eq!(
        open_request(&envelope, &other).unwrap_err().code(),
        "WRONG_AGENT"
    );
    let opened = open_request(&envelope, &to).expect("the committed request opens");
    let h = &opened.header;
    assert_eq!(h.tenant, text(&v, "request.header.tenant"));
    assert_eq!(h.agent_id, text(&v, "request.header.agent_id"));
    assert_eq!(h.request_id, text(&v, "request.header.request_id"));
    assert_eq!(
        u64::from(h.operation),
        number(&v, "request.header.operation")
    );
    assert_eq!(h.issued_at_ms, number(&v, "request.header.issued_at_ms"));
    assert_eq!(h.expires_at_ms, number(&v, "request.header.expires_at_ms"));
    assert_eq!(h.agent_key_id, agent.public.key_id());
    assert_eq!(h.portal_key_id, portal.public.key_id());
    assert_eq!(opened.enc.to_vec(), bytes(&v, "request.enc"));
    assert_eq!(number(&v, "request.body.anchor_kind"), 1);
    assert_eq!(
        opened.body,
        RequestBody::reset(
            Anchor::SourceAnchor(text(&v, "request.body.anchor").into()),
            Password::new(text(&v, "request.body.new_password")),
        )
    );

    // The portal side: sealing the committed header and body with the
    // committed ikmE gives the committed envelope, and the PendingReply it
    // returns opens the committed reply.
    let sealed_header = RequestHeader {
        tenant: h.tenant.clone(),
        agent_key_id: KeyId([0; 8]),
        portal_key_id: KeyId([0; 8]),
        agent_id: h.agent_id.clone(),
        request_id: h.request_id.clone(),
        operation: h.operation,
        issued_at_ms: h.issued_at_ms,
        expires_at_ms: h.expires_at_ms,
    };
    let (resealed, pending) = seal_request(
        &portal,
        &agent.public,
        &sealed_header,
        &opened.body,
        &mut FixedRng(bytes(&v, "request.ikm_e")),
    )
    .expect("seal");
    assert_eq!(resealed, envelope, "sealing is deterministic given ikmE");
    let details = field(&v, "reply.body.details")
        .as_array()
        .expect("details")
        .iter()
        .map(|d| {
            let kv = d.as_array().expect("a detail is [key, value]");
            (
                kv[0].as_str().expect("key").to_owned(),
                kv[1].as_str().expect("value").to_owned(),
            )
        })
        .collect();
    let expected_reply = ReplyBody {
        outcome: u16::try_from(number(&v, "reply.body.outcome")).expect("u16"),
        message: text(&v, "reply.body.message").into(),
        details,
    };
    let reply = bytes(&v, "reply.envelope");
    assert_eq!(
        pending.open(&reply).expect("the committed reply opens"),
        expected_reply
    );

    // And the agent side: the same response nonce gives the same reply.
    let resealed_reply = opened
        .seal_reply(
            &expected_reply,
            &mut FixedRng(bytes(&v, "reply.response_nonce")),
        )
        .expect("seal reply");
    assert_eq!(resealed_reply, reply);
}

/// Re-derives the committed bytes from docs/PROTOCOL.md's description
/// alone, with the primitives used directly: this is what an
/// implementation in another language has to reproduce.
#[test]
fn the_committed_vectors_follow_the_documented_construction() {
    let v = committed();

    // Key ids and fingerprints.
    for who in ["portal", "agent"] {
        let pk = bytes(&v, &format!("{who}.public_key"));
        let id = Sha256::new()
            .chain_update(KEY_ID_LABEL)
            .chain_update(&pk)
            .finalize();
        assert_eq!(hex::encode(&id[..8]), text(&v, &format!("{who}.key_id")));
        let fp = hex::encode(
            Sha256::new()
                .chain_update(FINGERPRINT_LABEL)
                .chain_update(&pk)
                .finalize(),
        );
        let groups: Vec<&str> = (0..16).map(|i| &fp[i * 4..i * 4 + 4]).collect();
        assert_eq!(groups.join(" "), text(&v, &format!("{who}.fingerprint")));
        // DeriveKeyPair(ikm) of RFC 9180 §7.1.3 gives the committed key pair.
        let derived = KeyPair::derive(&bytes(&v, &format!("{who}.ikm")));
        assert_eq!(derived.public.as_bytes().to_vec(), pk);
    }

    // The request header, field by field, as the layout table says.
    let tenant = text(&v, "request.header.tenant");
    let agent_id = text(&v, "request.header.agent_id");
    let request_id = text(&v, "request.header.request_id");
    let mut header = vec![1u8, tenant.len() as u8];
    header.extend_from_slice(tenant.as_bytes());
    header.extend(hex::decode(text(&v, "agent.key_id")).expect("hex"));
    header.extend(hex::decode(text(&v, "portal.key_id")).expect("hex"));
    header.push(agent_id.len() as u8);
    header.extend_from_slice(agent_id.as_bytes());
    header.push(request_id.len() as u8);
    header.extend_from_slice(request_id.as_bytes());
    header.push(number(&v, "request.header.operation") as u8);
    header.extend(number(&v, "request.header.issued_at_ms").to_be_bytes());
    header.extend(number(&v, "request.header.expires_at_ms").to_be_bytes());
    let enc = bytes(&v, "request.enc");
    let aad = [&header[..], &enc].concat();
    assert_eq!(aad, bytes(&v, "request.aad"));
    let ciphertext = bytes(&v, "request.ciphertext");
    assert_eq!(
        [&aad[..], &ciphertext].concat(),
        bytes(&v, "request.envelope")
    );

    // The padded request body.
    let anchor = text(&v, "request.body.anchor");
    let password = text(&v, "request.body.new_password");
    let mut body = vec![number(&v, "request.body.anchor_kind") as u8];
    body.extend((anchor.len() as u16).to_be_bytes());
    body.extend_from_slice(anchor.as_bytes());
    body.push(0); // flags: neither unlock nor must-change
    body.extend((password.len() as u16).to_be_bytes());
    body.extend_from_slice(password.as_bytes());
    body.extend(0u16.to_be_bytes()); // no current password
    body.resize(256, 0);
    assert_eq!(body, bytes(&v, "request.padded_plaintext"));

    // The ephemeral key is DeriveKeyPair(ikmE), so enc is its public key.
    assert_eq!(
        KeyPair::derive(&bytes(&v, "request.ikm_e"))
            .public
            .as_bytes()
            .to_vec(),
        enc
    );

    // HPKE: SetupAuthR with info "relay.v1 request", then Open(aad, ct).
    let mut ctx = receiver_context(
        &bytes(&v, "agent.private_key"),
        &bytes(&v, "portal.public_key"),
        &enc,
    );
    assert_eq!(hex::encode(INFO), text(&v, "suite.info"));
    assert_eq!(
        ctx.open(&ciphertext, &aad).expect("HPKE open"),
        body,
        "the ciphertext decrypts to the padded body with the header as aad"
    );
    let mut secret = [0u8; 32];
    ctx.export(EXPORTER_LABEL, &mut secret).expect("export");
    assert_eq!(secret.to_vec(), bytes(&v, "reply.exported_secret"));

    // The reply: HKDF over enc || response_nonce, ChaCha20-Poly1305, empty aad.
    let reply = bytes(&v, "reply.envelope");
    assert_eq!(reply[0], 1, "reply version");
    let response_nonce = &reply[1..33];
    assert_eq!(response_nonce.to_vec(), bytes(&v, "reply.response_nonce"));
    assert_eq!(
        [&enc[..], response_nonce].concat(),
        bytes(&v, "reply.hkdf_salt")
    );
    let (key, nonce) = reply_key_nonce(&secret, &enc, response_nonce);
    assert_eq!(key.to_vec(), bytes(&v, "reply.aead_key"));
    assert_eq!(nonce.to_vec(), bytes(&v, "reply.aead_nonce"));
    let reply_plaintext = chacha_open(&key, &nonce, b"", &reply[33..]);
    assert_eq!(reply_plaintext, bytes(&v, "reply.padded_plaintext"));

    // The padded reply body.
    let message = text(&v, "reply.body.message");
    let mut expected = (number(&v, "reply.body.outcome") as u16)
        .to_be_bytes()
        .to_vec();
    expected.extend((message.len() as u16).to_be_bytes());
    expected.extend_from_slice(message.as_bytes());
    let details = field(&v, "reply.body.details").as_array().expect("details");
    expected.push(details.len() as u8);
    for d in details {
        let (k, val) = (d[0].as_str().expect("key"), d[1].as_str().expect("value"));
        expected.push(k.len() as u8);
        expected.extend_from_slice(k.as_bytes());
        expected.extend((val.len() as u16).to_be_bytes());
        expected.extend_from_slice(val.as_bytes());
    }
    expected.resize(512, 0);
    assert_eq!(reply_plaintext, expected);
}
