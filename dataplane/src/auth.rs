//! Phase "authenticate": the bearer token, found in place while the head was
//! parsed (see `http::head`), is hashed with the snapshot's key hasher
//! (HMAC-SHA256 with the server's hash key, or SHA-256) and looked up: one
//! hash, one map lookup.

use crate::error::GatewayError;
use crate::http::head::Credential;
use crate::snapshot::{KeyEntry, Snapshot};

/// `head` is the request head the credential was parsed from.
pub fn authenticate<'s>(
    snapshot: &'s Snapshot,
    credential: &Credential,
    head: &[u8],
) -> Result<&'s KeyEntry, GatewayError> {
    match credential {
        Credential::Missing => Err(GatewayError::missing_key()),
        Credential::Malformed => Err(GatewayError::invalid_key()),
        Credential::Bearer { .. } => {
            let token = credential.token(head).ok_or_else(GatewayError::invalid_key)?;
            match snapshot.key(&snapshot.hasher.hash(token)) {
                Some(key) if !key.expired() => Ok(key),
                _ => Err(GatewayError::invalid_key()),
            }
        }
    }
}
