//! How the embedded forest stores passwords: salted verifiers, never the
//! plaintext. Real AD keeps NT hashes; nothing outside this model reads them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

const VERIFIER_PREFIX: &str = "sha256$";

/// A salted SHA-256 verifier of a password's UTF-8 bytes:
/// `sha256$<salt, base64>$<SHA-256(salt ‖ password), base64>`. (Real AD
/// stores NT hashes; this model only needs something that is never the
/// plaintext.)
pub fn make_verifier(password: &str, salt: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(salt)
        .chain_update(password.as_bytes())
        .finalize();
    format!(
        "{VERIFIER_PREFIX}{}${}",
        STANDARD.encode(salt),
        STANDARD.encode(digest.as_slice())
    )
}

/// Whether a verifier string is well-formed.
pub fn verifier_is_valid(verifier: &str) -> bool {
    parse_verifier(verifier).is_some()
}

fn parse_verifier(verifier: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let rest = verifier.strip_prefix(VERIFIER_PREFIX)?;
    let (salt, digest) = rest.split_once('$')?;
    let salt = STANDARD.decode(salt).ok()?;
    let digest = STANDARD.decode(digest).ok()?;
    (!salt.is_empty() && digest.len() == 32).then_some((salt, digest))
}

/// Whether `password` matches `verifier` (compared in constant time).
pub fn verify(verifier: &str, password: &str) -> bool {
    let Some((salt, expected)) = parse_verifier(verifier) else {
        return false;
    };
    let actual = Sha256::new()
        .chain_update(&salt)
        .chain_update(password.as_bytes())
        .finalize();
    let diff = actual
        .as_slice()
        .iter()
        .zip(&expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_are_salted_and_never_the_plaintext() {
        let v = make_verifier("Analytical-Engine-1843", b"0123456789abcdef");
        assert!(!v.contains("Analytical"));
        assert!(verifier_is_valid(&v));
        assert!(verify(&v, "Analytical-Engine-1843"));
        assert!(!verify(&v, "analytical-engine-1843"));
        assert!(!verify(&v, ""));
        let other_salt = make_verifier("Analytical-Engine-1843", b"fedcba9876543210");
        assert_ne!(v, other_salt);
        assert!(verify(&other_salt, "Analytical-Engine-1843"));
        assert!(!verify("sha256$AAAA$short", "x"));
        assert!(!verifier_is_valid("plaintext"));
    }
}
