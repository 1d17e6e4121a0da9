//! RFC 9180 known-answer tests for the suite the envelopes use, through the
//! public API of the HPKE implementation we build on. The ephemeral key comes
//! from an RNG that yields exactly the RFC's ikmE, so every byte of enc,
//! ciphertext and exported value can be compared.

#[path = "vectors/rfc9180_a2.rs"]
mod rfc9180_a2;

use std::convert::Infallible;

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, PskBundle, Serializable};
use rfc9180_a2::{INFO, PT, VECTORS, Vector};

type K = X25519HkdfSha256;

/// Yields the given bytes, then panics: the KAT must consume exactly ikmE.
struct FixedRng(Vec<u8>);

impl rand_core::TryRng for FixedRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        unreachable!("HPKE draws whole keys, not integers")
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        unreachable!("HPKE draws whole keys, not integers")
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        assert!(
            dst.len() <= self.0.len(),
            "more randomness drawn than the vector has"
        );
        let rest = self.0.split_off(dst.len());
        dst.copy_from_slice(&self.0);
        self.0 = rest;
        Ok(())
    }
}

impl rand_core::TryCryptoRng for FixedRng {}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

/// X25519 private keys are used clamped (RFC 7748 §5); the RFC prints the
/// unclamped DeriveKeyPair output, the library stores the clamped scalar.
fn clamped(mut sk: Vec<u8>) -> Vec<u8> {
    sk[0] &= 248;
    sk[31] &= 127;
    sk[31] |= 64;
    sk
}

/// The RFC's private key bytes, as the library reads them, give its public key.
fn check_private_key(sk_hex: &str, pk_hex: &str, name: &str) {
    let sk = <K as Kem>::PrivateKey::from_bytes(&h(sk_hex)).expect("private key");
    assert_eq!(
        K::sk_to_pk(&sk).to_bytes().to_vec(),
        h(pk_hex),
        "{name}: pk(sk)"
    );
}

fn aad(seq: u64) -> Vec<u8> {
    format!("Count-{seq}").into_bytes()
}

fn check(v: &Vector) {
    let (sk_r, pk_r) = K::derive_keypair(&h(v.ikm_r));
    assert_eq!(pk_r.to_bytes().to_vec(), h(v.pk_rm), "{}: pkRm", v.name);
    assert_eq!(
        sk_r.to_bytes().to_vec(),
        clamped(h(v.sk_rm)),
        "{}: skRm",
        v.name
    );
    check_private_key(v.sk_rm, v.pk_rm, v.name);
    let sender = v.ikm_s.map(|ikm| {
        let (sk_s, pk_s) = K::derive_keypair(&h(ikm));
        assert_eq!(
            pk_s.to_bytes().to_vec(),
            h(v.pk_sm.expect("pkSm")),
            "{}: pkSm",
            v.name
        );
        let sk_sm = v.sk_sm.expect("skSm");
        assert_eq!(
            sk_s.to_bytes().to_vec(),
            clamped(h(sk_sm)),
            "{}: skSm",
            v.name
        );
        check_private_key(sk_sm, v.pk_sm.expect("pkSm"), v.name);
        (sk_s, pk_s)
    });
    let psk = v.psk.map(|(psk, id)| (h(psk), h(id)));
    let bundle = psk
        .as_ref()
        .map(|(psk, id)| PskBundle::new(psk, id).expect("psk bundle"));
    let mode_s: OpModeS<K> = match (v.mode, &sender, bundle) {
        (0, None, None) => OpModeS::Base,
        (1, None, Some(b)) => OpModeS::Psk(b),
        (2, Some(s), None) => OpModeS::Auth(s.clone()),
        (3, Some(s), Some(b)) => OpModeS::AuthPsk(s.clone(), b),
        _ => panic!("{}: inconsistent vector", v.name),
    };
    let mode_r: OpModeR<K> = match (v.mode, &sender, bundle) {
        (0, None, None) => OpModeR::Base,
        (1, None, Some(b)) => OpModeR::Psk(b),
        (2, Some(s), None) => OpModeR::Auth(s.1.clone()),
        (3, Some(s), Some(b)) => OpModeR::AuthPsk(s.1.clone(), b),
        _ => unreachable!(),
    };
    let mut rng = FixedRng(h(v.ikm_e));
    let (enc, mut ctx_s) = hpke::setup_sender_with_rng::<ChaCha20Poly1305, HkdfSha256, K>(
        &mode_s,
        &pk_r,
        &h(INFO),
        &mut rng,
    )
    .expect("setup sender");
    assert!(rng.0.is_empty(), "{}: ikmE fully used", v.name);
    assert_eq!(enc.to_bytes().to_vec(), h(v.enc), "{}: enc", v.name);
    assert_eq!(h(v.pk_em), h(v.enc), "{}: enc is pkEm", v.name);

    let encapped = <K as Kem>::EncappedKey::from_bytes(&h(v.enc)).expect("enc");
    let mut ctx_r = hpke::setup_receiver::<ChaCha20Poly1305, HkdfSha256, K>(
        &mode_r,
        &sk_r,
        &encapped,
        &h(INFO),
    )
    .expect("setup receiver");

    // Seal and open in sequence; compare at the sequence numbers the RFC lists.
    let last = v.encryptions.last().expect("encryptions").0;
    let mut listed = v.encryptions.iter().peekable();
    for seq in 0..=last {
        let ct = ctx_s.seal(&h(PT), &aad(seq)).expect("seal");
        let pt = ctx_r.open(&ct, &aad(seq)).expect("open");
        assert_eq!(pt, h(PT));
        if let Some((s, expected)) = listed.peek()
            && *s == seq
        {
            assert_eq!(ct, h(expected), "{}: ciphertext {seq}", v.name);
            listed.next();
        }
    }
    assert!(listed.next().is_none());

    for (context, value) in v.exports {
        let mut out_s = [0u8; 32];
        let mut out_r = [0u8; 32];
        ctx_s.export(&h(context), &mut out_s).expect("export");
        ctx_r.export(&h(context), &mut out_r).expect("export");
        assert_eq!(out_s.to_vec(), h(value), "{}: export {context:?}", v.name);
        assert_eq!(out_r, out_s);
    }
}

#[test]
fn rfc9180_appendix_a2_vectors_pass() {
    assert_eq!(VECTORS.len(), 4);
    for v in VECTORS {
        check(v);
    }
}

#[test]
fn a_wrong_ciphertext_byte_fails_to_open() {
    let v = &VECTORS[2];
    let (sk_r, pk_r) = K::derive_keypair(&h(v.ikm_r));
    let (sk_s, pk_s) = K::derive_keypair(&h(v.ikm_s.expect("auth vector")));
    let mut rng = FixedRng(h(v.ikm_e));
    let (enc, mut ctx_s) = hpke::setup_sender_with_rng::<ChaCha20Poly1305, HkdfSha256, K>(
        &OpModeS::Auth((sk_s, pk_s.clone())),
        &pk_r,
        &h(INFO),
        &mut rng,
    )
    .expect("setup");
    let mut ct = ctx_s.seal(&h(PT), &aad(0)).expect("seal");
    ct[3] ^= 1;
    let mut ctx_r = hpke::setup_receiver::<ChaCha20Poly1305, HkdfSha256, K>(
        &OpModeR::Auth(pk_s),
        &sk_r,
        &enc,
        &h(INFO),
    )
    .expect("setup");
    assert!(ctx_r.open(&ct, &aad(0)).is_err());
}
