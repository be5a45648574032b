//! API key format, generation and verification.
//!
//! A key reads `nxs_<id>_<secret>`: `id` (16 hex digits) finds the stored key without scanning,
//! `secret` (48 hex digits, 192 random bits) is what proves possession. Only the SHA-256 of the
//! whole key is stored; a fast hash is right for high-entropy secrets (nothing to brute-force), and
//! digests are compared in constant time.

use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const KEY_PREFIX: &str = "nxs_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 24;

/// A new key: `plaintext` is shown once and never stored.
pub struct GeneratedKey {
    pub id: String,
    pub plaintext: String,
    pub hash: [u8; 32],
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.try_fill_bytes(&mut buf).expect("the operating system's random source works");
    hex::encode(buf)
}

pub fn generate() -> GeneratedKey {
    let id = random_hex(ID_BYTES);
    let plaintext = format!("{KEY_PREFIX}{id}_{}", random_hex(SECRET_BYTES));
    let hash = hash_key(&plaintext);
    GeneratedKey { id, plaintext, hash }
}

/// A master key for the key file: the same alphabet, 256 random bits.
pub fn generate_master() -> String {
    format!("{KEY_PREFIX}master_{}", random_hex(32))
}

/// The id part of a well-formed key, or `None`.
pub fn key_id(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex_of = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex_of(id, ID_BYTES * 2) && hex_of(secret, SECRET_BYTES * 2)).then_some(id)
}

pub fn hash_key(presented: &str) -> [u8; 32] {
    Sha256::digest(presented.as_bytes()).into()
}

/// Constant time in the content of both digests.
pub fn hash_matches(presented: &str, expected: &[u8; 32]) -> bool {
    hash_key(presented).ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_verify() {
        let key = generate();
        assert!(key.plaintext.starts_with("nxs_"));
        assert_eq!(key_id(&key.plaintext), Some(key.id.as_str()));
        assert!(hash_matches(&key.plaintext, &key.hash));
        let mut wrong = key.plaintext.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        assert!(!hash_matches(&wrong, &key.hash));
        assert_ne!(generate().plaintext, key.plaintext);
    }

    #[test]
    fn malformed_keys_have_no_id() {
        for bad in [
            "",
            "nxs_",
            "nxs_abc_def",
            "Bearer x",
            "nxs_master_00",
            &format!("xx_{}_{}", "a".repeat(16), "b".repeat(48)),
        ] {
            assert_eq!(key_id(bad), None, "{bad}");
        }
    }

    /// Verification time must not depend on where a wrong key differs. Digests are compared with
    /// `subtle`; this guards against a later change to a short-circuiting comparison of the keys.
    #[test]
    fn comparison_time_does_not_depend_on_the_first_differing_byte() {
        let key = "x".repeat(4096);
        let expected = hash_key(&key);
        let early = format!("y{}", &key[1..]);
        let late = format!("{}y", &key[..key.len() - 1]);
        let time = |candidate: &str| {
            let mut best = std::time::Duration::MAX;
            for _ in 0..25 {
                let start = std::time::Instant::now();
                for _ in 0..200 {
                    std::hint::black_box(hash_matches(std::hint::black_box(candidate), &expected));
                }
                best = best.min(start.elapsed());
            }
            best.as_secs_f64()
        };
        let (early, late) = (time(&early), time(&late));
        let ratio = early / late;
        assert!((0.7..1.4).contains(&ratio), "early {early:.6}s vs late {late:.6}s");
    }
}
