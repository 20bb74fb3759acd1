//! Phase "route": the request's `model` names a route in the snapshot, and the
//! key must be allowed to use it. A model the key may not use is reported
//! exactly like a model that does not exist, so keys cannot probe the catalog.

use crate::error::GatewayError;
use crate::snapshot::{KeyEntry, Route, Snapshot};

pub fn resolve<'s>(snapshot: &'s Snapshot, key: &KeyEntry, model: &str) -> Result<&'s Route, GatewayError> {
    match snapshot.route(model) {
        Some((index, route)) if key.may_use(index) => Ok(route),
        _ => Err(GatewayError::model_not_found(model)),
    }
}

/// The routes `key` may use, for `GET /v1/models`.
pub fn visible<'s>(snapshot: &'s Snapshot, key: &'s KeyEntry) -> impl Iterator<Item = &'s Route> + 's {
    snapshot.routes.iter().enumerate().filter(move |(i, _)| key.may_use(*i)).map(|(_, r)| r)
}
