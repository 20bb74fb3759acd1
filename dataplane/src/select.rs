//! Phase "select": the order in which a route's targets are tried.
//!
//! Today: priority order, as configured; the next target is tried when one
//! cannot be reached (connect error, reset, timeout before any byte).

use crate::snapshot::{Route, Target};

/// Targets in the order to try them.
pub fn order(route: &Route) -> impl Iterator<Item = &Target> {
    route.targets.iter()
}
