//! Provider secrets (API keys, header values) are encrypted at rest with
//! ChaCha20-Poly1305 under a key that never enters the database: from
//! `SWITCHBOARD_SECRETS_KEY` (64 hex digits), a file named by
//! `SWITCHBOARD_SECRETS_KEY_FILE`, or else a key file created beside the
//! database (`<database>.key`, mode 0600) at first start.
//!
//! Stored form: `enc:v1:<hex(nonce || ciphertext || tag)>`, a fresh random
//! nonce each time. A value without the prefix (written before encryption was
//! on) is read as plaintext and encrypted at its next write.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use std::path::Path;

pub const SECRETS_KEY_ENV: &str = "SWITCHBOARD_SECRETS_KEY";
pub const SECRETS_KEY_FILE_ENV: &str = "SWITCHBOARD_SECRETS_KEY_FILE";
const PREFIX: &str = "enc:v1:";

pub struct Sealer {
    key: LessSafeKey,
}

fn parse_hex32(s: &str) -> Result<[u8; 32], String> {
    let s = s.trim();
    if s.len() != 64 {
        return Err(format!("the secrets key must be 64 hex digits (32 bytes), found {} characters", s.len()));
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
        let txt = std::str::from_utf8(pair).map_err(|_| "the secrets key is not hex".to_string())?;
        out[i] = u8::from_str_radix(txt, 16).map_err(|_| "the secrets key is not hex".to_string())?;
    }
    Ok(out)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Sealer {
    pub fn from_key(key: [u8; 32]) -> Sealer {
        // CHACHA20_POLY1305 takes exactly 32 bytes, which `key` is.
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &key).unwrap_or_else(|_| unreachable_key());
        Sealer { key: LessSafeKey::new(unbound) }
    }

    /// From the environment, or the key file beside `database` (created if missing).
    pub fn for_database(database: &Path) -> Result<Sealer, String> {
        if let Ok(k) = std::env::var(SECRETS_KEY_ENV) {
            if !k.is_empty() {
                return parse_hex32(&k).map(Sealer::from_key).map_err(|e| format!("{SECRETS_KEY_ENV}: {e}"));
            }
        }
        let path = match std::env::var(SECRETS_KEY_FILE_ENV) {
            Ok(p) if !p.is_empty() => std::path::PathBuf::from(p),
            _ => {
                let mut p = database.as_os_str().to_owned();
                p.push(".key");
                let p = std::path::PathBuf::from(p);
                if !p.exists() {
                    create_key_file(&p)?;
                    tracing::info!(path = %p.display(), "created the secrets key file: back it up with the database");
                }
                p
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        parse_hex32(&text).map(Sealer::from_key).map_err(|e| format!("`{}`: {e}", path.display()))
    }

    pub fn seal(&self, plaintext: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        if getrandom::getrandom(&mut nonce).is_err() {
            tracing::error!("the OS random source failed");
            std::process::abort();
        }
        let mut buf = plaintext.as_bytes().to_vec();
        // Sealing only fails for inputs over ChaCha20's 256 GiB limit.
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .unwrap_or_else(|_| unreachable_seal());
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        out.extend_from_slice(tag.as_ref());
        format!("{PREFIX}{}", hex(&out))
    }

    /// Decrypt a stored value; a value without the prefix is plaintext.
    pub fn open(&self, stored: &str) -> Result<String, String> {
        let Some(h) = stored.strip_prefix(PREFIX) else { return Ok(stored.to_string()) };
        if h.len() % 2 != 0 {
            return Err("a stored secret is corrupt".into());
        }
        let mut bytes = Vec::with_capacity(h.len() / 2);
        for pair in h.as_bytes().chunks_exact(2) {
            let txt = std::str::from_utf8(pair).map_err(|_| "a stored secret is corrupt".to_string())?;
            bytes.push(u8::from_str_radix(txt, 16).map_err(|_| "a stored secret is corrupt".to_string())?);
        }
        if bytes.len() < NONCE_LEN + 16 {
            return Err("a stored secret is corrupt".into());
        }
        let (nonce, rest) = bytes.split_at_mut(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "a stored secret is corrupt".to_string())?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), rest)
            .map_err(|_| "a stored secret does not decrypt: wrong secrets key?".to_string())?;
        String::from_utf8(plain.to_vec()).map_err(|_| "a stored secret is not UTF-8".to_string())
    }
}

#[allow(clippy::panic)]
fn unreachable_key() -> UnboundKey {
    panic!("a 32-byte key is always a valid ChaCha20-Poly1305 key")
}

#[allow(clippy::panic)]
fn unreachable_seal() -> ring::aead::Tag {
    panic!("sealing a provider secret failed")
}

fn create_key_file(path: &Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut key = [0u8; 32];
    getrandom::getrandom(&mut key).map_err(|e| format!("no OS randomness: {e}"))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create `{}`: {e}", path.display()))?;
    f.write_all(format!("{}\n", hex(&key)).as_bytes())
        .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_refuses_the_wrong_key() {
        let s = Sealer::from_key([7; 32]);
        let a = s.seal("sk-provider-1234");
        let b = s.seal("sk-provider-1234");
        assert!(a.starts_with("enc:v1:") && a != b, "fresh nonce each time");
        assert!(!a.contains("sk-provider"));
        assert_eq!(s.open(&a).unwrap(), "sk-provider-1234");
        assert_eq!(s.open("plain-old-value").unwrap(), "plain-old-value");
        assert!(Sealer::from_key([8; 32]).open(&a).is_err());
        let mut tampered = a.clone();
        tampered.replace_range(a.len() - 2.., "00");
        assert!(s.open(&tampered).is_err());
    }

    #[test]
    fn creates_a_private_key_file_beside_the_database() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let s1 = Sealer::for_database(&db).unwrap();
        let key = dir.path().join("x.db.key");
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        let sealed = s1.seal("v");
        assert_eq!(Sealer::for_database(&db).unwrap().open(&sealed).unwrap(), "v");
    }
}
