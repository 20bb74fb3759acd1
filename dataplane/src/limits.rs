//! The live state of rate limits and quotas, for the admin API and the
//! binary: looked up by [`Scope`] (a key, an org, an org on one model), so
//! nothing outside the data plane builds the names it keeps them under. The
//! state is shared with the in-process data plane through the
//! [`PolicyRegistry`] in its snapshot preparation (`snapshot::Prepare`).

pub use crate::policy::{
    now_unix_ms, set_clock_offset_ms, Bucket, PolicyRegistry, QuotaState, QuotaStatus, Scope, Unit,
};
