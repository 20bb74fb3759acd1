//! Client API keys (and admin tokens) are configured and stored as hashes,
//! never as plaintext.
//!
//! With a server-side key (`SWITCHBOARD_HASH_KEY`, or a file named by
//! `SWITCHBOARD_HASH_KEY_FILE`) the hash is keyed: `hmac-sha256:<hex>`, so a
//! stolen database or config file does not let anyone test guesses offline.
//! Without one it is `sha256:<hex>`. The data plane hashes the bearer token of
//! each request once and looks the digest up in a map: one (keyed) SHA-256
//! computation plus one map lookup, and comparing digests leaks nothing useful
//! about the keys through timing.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// The SHA-256 digest of a client API key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash(pub [u8; 32]);

const PREFIX: &str = "sha256:";

impl KeyHash {
    /// Hash a plaintext key.
    pub fn of(plaintext: &[u8]) -> KeyHash {
        KeyHash::from_digest(&Sha256::digest(plaintext))
    }

    /// From a 32-byte SHA-256 output.
    fn from_digest(d: &[u8]) -> KeyHash {
        let mut out = [0u8; 32];
        out.copy_from_slice(d);
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

/// Hashes keys: HMAC-SHA256 (the `hmac` crate over `sha2`) with the
/// server-side key when there is one, plain SHA-256 otherwise. The keyed
/// state holds the inner and outer digests computed once (cloned per hash),
/// so a keyed hash costs two more block compressions than a plain one.
///
/// Why `hmac` + `sha2` and not `ring`: both give the same outputs, but on
/// this hot path (every request hashes its bearer token) `sha2` uses the
/// CPU's SHA extensions where `ring` 0.17 does not; measured with
/// `cargo bench -p switchboard-benches -- key_lookup`, ring's HMAC + lookup
/// took 508-526 ns against 334-351 ns (docs/performance.md).
#[derive(Clone)]
pub struct KeyHasher {
    hmac: Option<HmacSha256>,
    /// The key itself, for handing to data planes in other processes.
    secret: Option<crate::Secret>,
}

/// The environment variables that give the server-side key.
pub const HASH_KEY_ENV: &str = "SWITCHBOARD_HASH_KEY";
pub const HASH_KEY_FILE_ENV: &str = "SWITCHBOARD_HASH_KEY_FILE";

const HMAC_PREFIX: &str = "hmac-sha256:";

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHasher({})", self.scheme())
    }
}

impl Default for KeyHasher {
    fn default() -> Self {
        KeyHasher::unkeyed()
    }
}

impl KeyHasher {
    pub fn unkeyed() -> KeyHasher {
        KeyHasher { hmac: None, secret: None }
    }

    /// Keyed with `secret` (at least 16 bytes).
    pub fn keyed(secret: &[u8]) -> Result<KeyHasher, String> {
        if secret.len() < 16 {
            return Err("the hash key must be at least 16 bytes".into());
        }
        // Text, so it can be handed to remote data planes as it is.
        let text = std::str::from_utf8(secret).map_err(|_| "the hash key must be UTF-8 text".to_string())?;
        // A key longer than a block is hashed first (RFC 2104); `hmac` does that.
        let key = HmacSha256::new_from_slice(secret).map_err(|_| "the hash key cannot key an HMAC".to_string())?;
        Ok(KeyHasher { hmac: Some(key), secret: Some(crate::Secret::new(text)) })
    }

    /// From `SWITCHBOARD_HASH_KEY` (the key itself) or
    /// `SWITCHBOARD_HASH_KEY_FILE` (a file holding it; trailing newline
    /// ignored); unkeyed when neither is set.
    pub fn from_env() -> Result<KeyHasher, String> {
        if let Ok(k) = std::env::var(HASH_KEY_ENV) {
            if !k.is_empty() {
                return KeyHasher::keyed(k.as_bytes()).map_err(|e| format!("{HASH_KEY_ENV}: {e}"));
            }
        }
        if let Ok(path) = std::env::var(HASH_KEY_FILE_ENV) {
            if !path.is_empty() {
                let bytes =
                    std::fs::read(&path).map_err(|e| format!("{HASH_KEY_FILE_ENV}: cannot read `{path}`: {e}"))?;
                let trimmed = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
                let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
                return KeyHasher::keyed(trimmed).map_err(|e| format!("{HASH_KEY_FILE_ENV}: {e}"));
            }
        }
        Ok(KeyHasher::unkeyed())
    }

    /// The server-side key, if any (to ship with a snapshot to a remote data plane).
    pub fn secret(&self) -> Option<&crate::Secret> {
        self.secret.as_ref()
    }

    pub fn is_keyed(&self) -> bool {
        self.hmac.is_some()
    }

    /// `hmac-sha256` or `sha256`.
    pub fn scheme(&self) -> &'static str {
        if self.is_keyed() {
            "hmac-sha256"
        } else {
            "sha256"
        }
    }

    pub fn hash(&self, token: &[u8]) -> KeyHash {
        match &self.hmac {
            None => KeyHash::of(token),
            Some(key) => {
                let mut mac = key.clone();
                mac.update(token);
                KeyHash::from_digest(&mac.finalize().into_bytes())
            }
        }
    }

    /// The stored form: `hmac-sha256:<hex>` or `sha256:<hex>`.
    pub fn format(&self, h: &KeyHash) -> String {
        let plain = h.to_string();
        if self.is_keyed() {
            format!("{HMAC_PREFIX}{}", &plain[PREFIX.len()..])
        } else {
            plain
        }
    }

    /// Hash `token` and format it.
    pub fn hash_str(&self, token: &[u8]) -> String {
        self.format(&self.hash(token))
    }

    /// Parse a stored hash, which must be of this hasher's scheme.
    pub fn parse(&self, s: &str) -> Result<KeyHash, String> {
        match (self.is_keyed(), s.strip_prefix(HMAC_PREFIX)) {
            (true, Some(hex)) => KeyHash::parse(&format!("{PREFIX}{hex}")),
            (false, None) if s.starts_with(PREFIX) => KeyHash::parse(s),
            (true, None) => Err(format!(
                "this hash is not keyed, but the server has a hash key ({HASH_KEY_ENV}): hash the key again with `switchboard hash-key`"
            )),
            (false, _) => Err(format!(
                "this hash is keyed (hmac-sha256), but the server has no hash key: set {HASH_KEY_ENV} or {HASH_KEY_FILE_ENV}"
            )),
        }
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

/// Check the form of a stored hash of either scheme (`sha256:` or
/// `hmac-sha256:`); which one a server accepts is [`KeyHasher::parse`]'s call.
pub fn parse_any(s: &str) -> Result<KeyHash, String> {
    match s.strip_prefix(HMAC_PREFIX) {
        Some(hex) => KeyHash::parse(&format!("{PREFIX}{hex}")),
        None => KeyHash::parse(s),
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
    fn hmac_matches_rfc4231() {
        // RFC 4231 test cases 6 (a 131-byte key, hashed first) and 1 (20 bytes of 0x0b):
        // ASCII-range keys, as the server's key must be text.
        let key = [0x2au8; 131];
        let h = KeyHasher::keyed(&key).unwrap().hash(b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(h, rfc_hmac(&key, b"Test Using Larger Than Block-Size Key - Hash Key First"));
        let h = KeyHasher::keyed(&[0x0b; 20]).unwrap().hash(b"Hi There");
        assert_eq!(h.to_string(), "sha256:b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
        assert!(KeyHasher::keyed(&[0xff; 20]).is_err(), "not UTF-8");
    }

    /// HMAC straight from its definition (RFC 2104), over plain SHA-256.
    fn rfc_hmac(key: &[u8], msg: &[u8]) -> KeyHash {
        let k: Vec<u8> = if key.len() > 64 { Sha256::digest(key).to_vec() } else { key.to_vec() };
        let mut block = [0u8; 64];
        block[..k.len()].copy_from_slice(&k);
        let inner = Sha256::new().chain_update(block.map(|b| b ^ 0x36)).chain_update(msg).finalize();
        let outer = Sha256::new().chain_update(block.map(|b| b ^ 0x5c)).chain_update(inner).finalize();
        KeyHash::from_digest(&outer)
    }

    /// Hashes stored before the HMAC came from a library (the hand-rolled
    /// precomputed-state version) must still verify: these are its outputs.
    #[test]
    fn stored_hashes_still_verify() {
        let keyed = KeyHasher::keyed(b"0123456789abcdef-server-key").unwrap();
        let stored = "hmac-sha256:3ee37a030df3ac9b3f28c840c0e15dc71c9468575c9ac8f3abd2037742f9442d";
        assert_eq!(keyed.hash_str(b"sk-live-0123456789"), stored);
        assert_eq!(keyed.parse(stored).unwrap(), keyed.hash(b"sk-live-0123456789"));
        // A key longer than one SHA-256 block (hashed first).
        let long = KeyHasher::keyed(&[b'x'; 100]).unwrap();
        assert_eq!(
            long.hash_str(b"sk-live-0123456789"),
            "hmac-sha256:d8437b008a38aa0f3f2d049546ae38379bce791499c12fcb454dbd0709ab8356"
        );
    }

    #[test]
    fn schemes_do_not_mix() {
        let keyed = KeyHasher::keyed(b"0123456789abcdef-server-key").unwrap();
        let plain = KeyHasher::unkeyed();
        let stored = keyed.hash_str(b"sk-1");
        assert!(stored.starts_with("hmac-sha256:"));
        assert_eq!(keyed.parse(&stored).unwrap(), keyed.hash(b"sk-1"));
        assert_ne!(keyed.hash(b"sk-1"), plain.hash(b"sk-1"));
        assert!(plain.parse(&stored).is_err());
        assert!(keyed.parse(&plain.hash_str(b"sk-1")).is_err());
        assert!(KeyHasher::keyed(b"short").is_err());
        assert_eq!(format!("{keyed:?}"), "KeyHasher(hmac-sha256)");
    }

    #[test]
    fn rejects_bad_forms() {
        assert!(KeyHash::parse("md5:abcd").is_err());
        assert!(KeyHash::parse("sha256:abcd").is_err());
        assert!(KeyHash::parse(&format!("sha256:{}", "zz".repeat(32))).is_err());
    }
}
