//! Secrets at rest under a password chosen by an administrator: Argon2id
//! (RFC 9106) derives a key from the password, ChaCha20-Poly1305 seals the
//! secret. Used for the agent's private keys (the "setup password").
//!
//! ```text
//! "RWK1" || u32 memory KiB || u32 iterations || u32 lanes || salt (16) || nonce (12) || ciphertext+tag
//! ```
//! The header is the associated data, so the parameters cannot be lowered
//! by someone who can write the file but does not know the password.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::wire::Reader;

const MAGIC: &[u8; 4] = b"RWK1";
/// OWASP's Argon2id baseline: 19 MiB, 2 iterations, 1 lane.
pub const DEFAULT_MEMORY_KIB: u32 = 19 * 1024;
pub const DEFAULT_ITERATIONS: u32 = 2;
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The most a key file may ask of Argon2id when it is opened.
pub const MAX_MEMORY_KIB: u32 = 256 * 1024;
pub const MAX_ITERATIONS: u32 = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeystoreError {
    #[error("the setup password must have at least {MIN_PASSWORD_CHARS} characters")]
    PasswordTooShort,
    #[error("not a key file (wrong magic or truncated)")]
    NotAKeyFile,
    #[error("key file parameters are out of range")]
    BadParameters,
    #[error("wrong setup password, or the key file was altered")]
    WrongPasswordOrAltered,
}

fn derive(
    password: &str,
    salt: &[u8],
    m: u32,
    t: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    let params = Params::new(m, t, p, Some(32)).map_err(|_| KeystoreError::BadParameters)?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password.as_bytes(), salt, key.as_mut())
        .map_err(|_| KeystoreError::BadParameters)?;
    Ok(key)
}

/// Seals `secret` under `password` with the default Argon2id parameters.
pub fn seal_with_password(
    secret: &[u8],
    password: &str,
    rng: &mut impl CryptoRng,
) -> Result<Vec<u8>, KeystoreError> {
    seal_with_params(
        secret,
        password,
        DEFAULT_MEMORY_KIB,
        DEFAULT_ITERATIONS,
        rng,
    )
}

/// As [`seal_with_password`], with explicit cost (tests use cheap ones).
pub fn seal_with_params(
    secret: &[u8],
    password: &str,
    memory_kib: u32,
    iterations: u32,
    rng: &mut impl CryptoRng,
) -> Result<Vec<u8>, KeystoreError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(KeystoreError::PasswordTooShort);
    }
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    rng.fill_bytes(&mut salt);
    rng.fill_bytes(&mut nonce);
    let mut out = Vec::with_capacity(48 + secret.len() + 16);
    out.extend_from_slice(MAGIC);
    for v in [memory_kib, iterations, 1] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    let key = derive(password, &salt, memory_kib, iterations, 1)?;
    let cipher =
        ChaCha20Poly1305::new_from_slice(key.as_ref()).map_err(|_| KeystoreError::BadParameters)?;
    let ct = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: secret,
                aad: &out,
            },
        )
        .map_err(|_| KeystoreError::BadParameters)?;
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens a file sealed by [`seal_with_password`].
pub fn open_with_password(
    bytes: &[u8],
    password: &str,
) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
    let mut r = Reader::new(bytes);
    let bad = |_| KeystoreError::NotAKeyFile;
    if r.take(4, "magic").map_err(bad)? != MAGIC {
        return Err(KeystoreError::NotAKeyFile);
    }
    let read_u32 = |r: &mut Reader<'_>| -> Result<u32, KeystoreError> {
        let b = r.take(4, "parameter").map_err(bad)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (m, t, p) = (read_u32(&mut r)?, read_u32(&mut r)?, read_u32(&mut r)?);
    // Bounds keep a crafted file from demanding more than 256 MiB or long
    // minutes: far above the defaults (19 MiB, 2 passes), far below harm.
    if !(8..=MAX_MEMORY_KIB).contains(&m) || !(1..=MAX_ITERATIONS).contains(&t) || p != 1 {
        return Err(KeystoreError::BadParameters);
    }
    let salt = r.take(16, "salt").map_err(bad)?;
    let nonce: [u8; 12] = r
        .take(12, "nonce")
        .map_err(bad)?
        .try_into()
        .map_err(|_| KeystoreError::NotAKeyFile)?;
    let header_len = r.position();
    let ct = r.rest();
    let key = derive(password, salt, m, t, p)?;
    let cipher =
        ChaCha20Poly1305::new_from_slice(key.as_ref()).map_err(|_| KeystoreError::BadParameters)?;
    cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ct,
                aad: &bytes[..header_len],
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| KeystoreError::WrongPasswordOrAltered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_and_refuses_wrong_passwords_and_edits() {
        let mut rng = crate::os_rng();
        let sealed = seal_with_params(
            b"private key bytes",
            "correct horse battery",
            64,
            1,
            &mut rng,
        )
        .unwrap();
        assert_eq!(
            open_with_password(&sealed, "correct horse battery")
                .unwrap()
                .as_slice(),
            b"private key bytes"
        );
        assert_eq!(
            open_with_password(&sealed, "wrong horse battery!"),
            Err(KeystoreError::WrongPasswordOrAltered)
        );
        let mut weaker = sealed.clone();
        weaker[7] = 8; // lower the memory cost
        assert!(open_with_password(&weaker, "correct horse battery").is_err());
        let mut greedy = sealed.clone();
        greedy[4..8].copy_from_slice(&(4u32 * 1024 * 1024).to_be_bytes());
        assert_eq!(
            open_with_password(&greedy, "correct horse battery"),
            Err(KeystoreError::BadParameters),
            "a file asking for 4 GiB is refused before Argon2 runs"
        );
        assert_eq!(
            seal_with_params(b"x", "short", 64, 1, &mut rng),
            Err(KeystoreError::PasswordTooShort)
        );
        assert_eq!(
            open_with_password(b"nope", "x"),
            Err(KeystoreError::NotAKeyFile)
        );
        assert!(!sealed.windows(17).any(|w| w == b"private key bytes"));
    }
}
