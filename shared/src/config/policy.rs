//! Rate limits and quotas: one block ([`Limits`]: `rpm`, `tpm`, `quotas`)
//! for keys and orgs, written flat in their tables (`[[keys]] rpm = 60`) and
//! in the admin API's limits bodies.

use super::{in_range, ConfigError};
use crate::limits;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::HashSet;

/// The one limits block: requests and tokens per minute, and spend or token
/// caps per day or month. A key (`[[keys]]`) and an org (`[[orgs]]`) carry it
/// flattened, so the TOML stays `rpm = 60` beside `id = ...`; the admin API
/// takes and stores it as a key's limits body.
///
/// Unknown fields are still refused where it is flattened: serde rejects
/// what neither the outer struct nor the flattened block takes (tested in
/// `config/tests.rs` and the admin API's tests). What flattening costs is the
/// position in a TOML error (it points at the table, not the line), so a
/// type error here names its field itself (`rpm: invalid type ...`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "de_rpm")]
    pub rpm: Option<u64>,
    /// Tokens (prompt + completion) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "de_tpm")]
    pub tpm: Option<u64>,
    /// Spend and token caps per day or calendar month (UTC).
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "de_quotas")]
    pub quotas: Vec<QuotaSpec>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// Check the block's ranges; errors name `{path}.rpm` and the like.
    pub fn check(&self, path: &str) -> Result<(), ConfigError> {
        check_limits(path, self.rpm, self.tpm, &self.quotas)
    }
}

/// Deserialize a field of a flattened block, naming the field in an error
/// (a flattened field's error has no position of its own).
fn named<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D, field: &str) -> Result<T, D::Error> {
    T::deserialize(d).map_err(|e| serde::de::Error::custom(format_args!("{field}: {e}")))
}

fn de_rpm<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    named(d, "rpm")
}

fn de_tpm<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    named(d, "tpm")
}

fn de_quotas<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<QuotaSpec>, D::Error> {
    named(d, "quotas")
}

/// A key's limits as the admin API stores and takes them: the block itself.
pub type KeyLimits = Limits;

/// Limits of an org: over all its keys, and per model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgSpec {
    pub name: String,
    #[serde(flatten)]
    pub limits: Limits,
    /// Limits of the org's traffic to one model (route name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelLimitSpec>,
}

/// An org's rates for one model: per-minute limits only (quotas are the
/// org's, over all models).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelLimitSpec {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
}

/// An org's limits as the admin API stores and takes them: the block and
/// the per-model rates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgLimits {
    #[serde(flatten)]
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelLimitSpec>,
}

impl OrgLimits {
    pub fn is_empty(&self) -> bool {
        *self == OrgLimits::default()
    }
}

/// A cap on spend or tokens (or both) per period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSpec {
    pub period: Period,
    /// USD, from the targets' price tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_usd: Option<f64>,
    /// Prompt + completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
}

/// A quota's period, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn name(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    /// The UTC period holding `now` (Unix seconds): its start and its end.
    pub fn bounds(self, now: i64) -> (i64, i64) {
        match self {
            Period::Day => {
                let d = crate::time::day_start(now);
                (d, d + 86_400)
            }
            Period::Month => (crate::time::month_start(now), crate::time::next_month_start(now)),
        }
    }
}

/// The most requests or tokens per minute a limit may name.
pub const MAX_PER_MINUTE: u64 = limits::PER_MINUTE.max;

pub(crate) fn check_limits(
    p: &str,
    rpm: Option<u64>,
    tpm: Option<u64>,
    quotas: &[QuotaSpec],
) -> Result<(), ConfigError> {
    for (name, v) in [("rpm", rpm), ("tpm", tpm)] {
        if let Some(v) = v {
            in_range(format!("{p}.{name}"), v, limits::PER_MINUTE)?;
        }
    }
    let mut periods = HashSet::new();
    for (j, q) in quotas.iter().enumerate() {
        let qp = format!("{p}.quotas[{j}]");
        if q.max_usd.is_none() && q.max_tokens.is_none() {
            return Err(ConfigError::at(qp, "set max_usd, max_tokens or both"));
        }
        if q.max_usd.is_some_and(|v| !v.is_finite() || !(0.0..=limits::MAX_QUOTA_USD).contains(&v)) {
            return Err(ConfigError::at(
                format!("{qp}.max_usd"),
                format!("must be a finite amount from 0 to {} USD", limits::MAX_QUOTA_USD),
            ));
        }
        if let Some(t) = q.max_tokens {
            in_range(format!("{qp}.max_tokens"), t, limits::QUOTA_TOKENS)?;
        }
        if !periods.insert(q.period) {
            return Err(ConfigError::at(format!("{qp}.period"), "one quota per period"));
        }
    }
    Ok(())
}
