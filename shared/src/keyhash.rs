//! Client API keys are configured and stored as hashes, never as plaintext.
//!
//! The format is `sha256:<64 lowercase hex digits>`. The data plane hashes the
//! bearer token of each request once and looks the digest up in a map, so a
//! key check is one SHA-256 computation plus one map lookup, and comparing
//! digests leaks nothing useful about the keys through timing.

use sha2::{Digest, Sha256};
use std::fmt;

/// The SHA-256 digest of a client API key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash(pub [u8; 32]);

const PREFIX: &str = "sha256:";

impl KeyHash {
    /// Hash a plaintext key.
    pub fn of(plaintext: &[u8]) -> KeyHash {
        let digest = Sha256::digest(plaintext);
        let mut out = [0u8; 32];
        out.copy_from_slice(&digest);
        KeyHash(out)
    }

    /// Parse the configured form `sha256:<hex>`.
    pub fn parse(s: &str) -> Result<KeyHash, String> {
        let hex = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| format!("key hash must start with `{PREFIX}` (got {} characters)", s.len()))?;
        if hex.len() != 64 {
            return Err(format!("key hash must have 64 hex digits after `{PREFIX}`, found {}", hex.len()));
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or("key hash has a non-hex digit")?;
            let lo = hex_val(pair[1]).ok_or("key hash has a non-hex digit")?;
            out[i] = (hi << 4) | lo;
        }
        Ok(KeyHash(out))
    }

    /// The first eight bytes, used as a ready-made hash-map hash: the digest is
    /// already uniformly distributed.
    pub fn prefix_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(b)
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PREFIX)?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        let h = KeyHash::of(b"sk-test");
        let text = h.to_string();
        assert!(text.starts_with("sha256:"));
        assert_eq!(KeyHash::parse(&text).unwrap(), h);
        assert_eq!(KeyHash::parse(&text.to_uppercase().replace("SHA256", "sha256")).unwrap(), h);
    }

    #[test]
    fn known_vector() {
        // printf 'abc' | sha256sum
        assert_eq!(
            KeyHash::of(b"abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn rejects_bad_forms() {
        assert!(KeyHash::parse("md5:abcd").is_err());
        assert!(KeyHash::parse("sha256:abcd").is_err());
        assert!(KeyHash::parse(&format!("sha256:{}", "zz".repeat(32))).is_err());
    }
}
