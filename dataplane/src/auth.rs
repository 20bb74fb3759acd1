//! Phase "authenticate": the bearer token was hashed while the head was parsed
//! (see `http::head`); here it is one map lookup in the snapshot.

use crate::error::GatewayError;
use crate::http::head::Credential;
use crate::snapshot::{KeyEntry, Snapshot};

pub fn authenticate(snapshot: &Snapshot, credential: Credential) -> Result<&KeyEntry, GatewayError> {
    match credential {
        Credential::Missing => Err(GatewayError::missing_key()),
        Credential::Malformed => Err(GatewayError::invalid_key()),
        Credential::Bearer(hash) => match snapshot.key(&hash) {
            Some(key) if !key.expired() => Ok(key),
            _ => Err(GatewayError::invalid_key()),
        },
    }
}
