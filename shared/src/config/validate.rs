//! The routing spec's checks: every number in its range
//! ([`crate::limits`]), names, and cross-references (a target's upstream, a
//! key's models), each error with the path of the offending value.

use super::policy::check_limits;
use super::routing::*;
use super::{in_range, ConfigError};
use crate::limits::{self, Range};
use crate::url::BaseUrl;
use std::collections::HashSet;

/// Header names the gateway sets itself and an upstream's `headers` may not override.
const RESERVED_HEADERS: [&str; 7] =
    ["host", "content-length", "transfer-encoding", "connection", "authorization", "x-request-id", "accept-encoding"];

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl RoutingSpec {
    /// Bring every number into its range ([`crate::limits`]), for state
    /// stored before the ranges were checked (an absurd timeout saved through
    /// an older admin API): start-up must not depend on it. Returns the paths
    /// changed. New input is refused by [`RoutingSpec::validate`] instead.
    pub fn clamp_to_ranges(&mut self) -> Vec<String> {
        let mut changed = Vec::new();
        let mut clamp = |path: String, v: &mut u64, r: Range| {
            let c = (*v).clamp(r.min, r.max);
            if c != *v {
                *v = c;
                changed.push(path);
            }
        };
        let price = |v: &mut f64| {
            let ok = if v.is_finite() { v.clamp(0.0, limits::MAX_PRICE_PER_MTOK) } else { 0.0 };
            let same = ok == *v;
            *v = ok;
            same
        };
        let mut prices_changed = Vec::new();
        for (i, u) in self.upstreams.iter_mut().enumerate() {
            let p = format!("upstreams[{i}]");
            clamp(format!("{p}.connect_timeout_ms"), &mut u.connect_timeout_ms, limits::TIMEOUT_MS);
            clamp(format!("{p}.first_byte_timeout_ms"), &mut u.first_byte_timeout_ms, limits::TIMEOUT_MS);
            clamp(format!("{p}.read_timeout_ms"), &mut u.read_timeout_ms, limits::TIMEOUT_MS);
            clamp(format!("{p}.pool_idle_timeout_ms"), &mut u.pool_idle_timeout_ms, limits::POOL_IDLE_MS);
            clamp(format!("{p}.eject_ms"), &mut u.eject_ms, limits::EJECT_MS);
            clamp(format!("{p}.probe_interval_ms"), &mut u.probe_interval_ms, limits::PROBE_INTERVAL_MS);
            let mut eject = u64::from(u.eject_after_failures);
            clamp(format!("{p}.eject_after_failures"), &mut eject, limits::EJECT_AFTER_FAILURES);
            u.eject_after_failures = u32::try_from(eject).unwrap_or(u32::MAX);
            for (j, pr) in u.prices.iter_mut().enumerate() {
                let mut same = price(&mut pr.prompt_per_mtok) & price(&mut pr.completion_per_mtok);
                for v in [&mut pr.cache_read_per_mtok, &mut pr.cache_write_per_mtok].into_iter().flatten() {
                    same &= price(v);
                }
                if !same {
                    prices_changed.push(format!("{p}.prices[{j}]"));
                }
            }
        }
        for (i, m) in self.models.iter_mut().enumerate() {
            let p = format!("models[{i}]");
            for (field, v, r) in [
                ("per_attempt_timeout_ms", &mut m.retry.per_attempt_timeout_ms, limits::TIMEOUT_MS),
                ("deadline_ms", &mut m.retry.deadline_ms, limits::TIMEOUT_MS),
                ("backoff_ms", &mut m.retry.backoff_ms, limits::BACKOFF_MS),
            ] {
                if let Some(v) = v {
                    clamp(format!("{p}.retry.{field}"), v, r);
                }
            }
            clamp(format!("{p}.cache.ttl_ms"), &mut m.cache.ttl_ms, limits::CACHE_TTL_MS);
            for (j, t) in m.targets.iter_mut().enumerate() {
                for v in [&mut t.prompt_per_mtok, &mut t.completion_per_mtok].into_iter().flatten() {
                    if !price(v) {
                        prices_changed.push(format!("{p}.targets[{j}]"));
                    }
                }
            }
        }
        for (i, k) in self.keys.iter_mut().enumerate() {
            if let Some(t) = k.expires_at.as_mut() {
                clamp(format!("keys[{i}].expires_at"), t, limits::EXPIRES_AT_S);
            }
        }
        changed.extend(prices_changed);
        changed
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut upstream_names = HashSet::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            let p = format!("upstreams[{i}]");
            if u.name.is_empty() {
                return Err(ConfigError::at(format!("{p}.name"), "must not be empty"));
            }
            if u.name.starts_with(NODE_TARGET_PREFIX) {
                return Err(ConfigError::at(format!("{p}.name"), "names starting with `node:` are for nodes"));
            }
            if !upstream_names.insert(u.name.as_str()) {
                return Err(ConfigError::at(format!("{p}.name"), format!("duplicate upstream name `{}`", u.name)));
            }
            BaseUrl::parse(&u.base_url).map_err(|e| ConfigError::at(format!("{p}.base_url"), e))?;
            if u.api_key.is_some() && u.api_key_env.is_some() {
                return Err(ConfigError::at(p, "set either api_key or api_key_env, not both"));
            }
            in_range(format!("{p}.probe_interval_ms"), u.probe_interval_ms, limits::PROBE_INTERVAL_MS)?;
            if u.probe_interval_ms > 0 && u.probe_interval_ms < limits::PROBE_INTERVAL_MIN_MS {
                return Err(ConfigError::at(format!("{p}.probe_interval_ms"), "must be 0 (off) or at least 100"));
            }
            if !u.probe_path.starts_with('/') || u.probe_path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err(ConfigError::at(format!("{p}.probe_path"), "must start with / and have no spaces"));
            }
            in_range(format!("{p}.eject_after_failures"), u.eject_after_failures.into(), limits::EJECT_AFTER_FAILURES)?;
            in_range(format!("{p}.eject_ms"), u.eject_ms, limits::EJECT_MS)?;
            in_range(format!("{p}.pool_max_idle"), u.pool_max_idle as u64, limits::POOL_MAX_IDLE)?;
            let mut priced = HashSet::new();
            for (j, price) in u.prices.iter().enumerate() {
                for (field, v) in [
                    ("prompt_per_mtok", Some(price.prompt_per_mtok)),
                    ("completion_per_mtok", Some(price.completion_per_mtok)),
                    ("cache_read_per_mtok", price.cache_read_per_mtok),
                    ("cache_write_per_mtok", price.cache_write_per_mtok),
                ] {
                    let Some(v) = v else { continue };
                    limits::check_price(v).map_err(|m| ConfigError::at(format!("{p}.prices[{j}].{field}"), m))?;
                }
                if !priced.insert(price.model.as_str()) {
                    return Err(ConfigError::at(
                        format!("{p}.prices[{j}].model"),
                        format!("`{}` is priced twice", price.model),
                    ));
                }
            }
            for (name, value) in &u.headers {
                if !is_token(name) {
                    return Err(ConfigError::at(
                        format!("{p}.headers"),
                        format!("`{name}` is not a valid header name"),
                    ));
                }
                if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                    return Err(ConfigError::at(
                        format!("{p}.headers"),
                        format!("`{name}` is set by the gateway and cannot be overridden"),
                    ));
                }
                if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
                    return Err(ConfigError::at(format!("{p}.headers.{name}"), "value has control characters"));
                }
            }
            for (field, v, range) in [
                ("connect_timeout_ms", u.connect_timeout_ms, limits::TIMEOUT_MS),
                ("first_byte_timeout_ms", u.first_byte_timeout_ms, limits::TIMEOUT_MS),
                ("read_timeout_ms", u.read_timeout_ms, limits::TIMEOUT_MS),
                ("pool_idle_timeout_ms", u.pool_idle_timeout_ms, limits::POOL_IDLE_MS),
            ] {
                in_range(format!("{p}.{field}"), v, range)?;
            }
        }
        let mut model_names = HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            let p = format!("models[{i}]");
            if m.name.is_empty() || m.name.len() > 256 {
                return Err(ConfigError::at(format!("{p}.name"), "must be 1 to 256 characters"));
            }
            if m.name == "*" {
                return Err(ConfigError::at(format!("{p}.name"), "`*` is reserved (it means every model in keys)"));
            }
            if !model_names.insert(m.name.as_str()) {
                return Err(ConfigError::at(format!("{p}.name"), format!("duplicate model name `{}`", m.name)));
            }
            if m.targets.is_empty() {
                return Err(ConfigError::at(format!("{p}.targets"), "needs at least one target"));
            }
            if m.targets.len() > MAX_TARGETS {
                return Err(ConfigError::at(format!("{p}.targets"), format!("at most {MAX_TARGETS} targets")));
            }
            if let Some(n) = m.retry.max_attempts {
                in_range(format!("{p}.retry.max_attempts"), n.into(), limits::MAX_ATTEMPTS)?;
            }
            if !m.cache.is_off() {
                in_range(format!("{p}.cache.ttl_ms"), m.cache.ttl_ms, limits::CACHE_TTL_MS)?;
            }
            for (field, v, range) in [
                ("per_attempt_timeout_ms", m.retry.per_attempt_timeout_ms, limits::TIMEOUT_MS),
                ("deadline_ms", m.retry.deadline_ms, limits::TIMEOUT_MS),
                ("backoff_ms", m.retry.backoff_ms, limits::BACKOFF_MS),
            ] {
                if let Some(v) = v {
                    in_range(format!("{p}.retry.{field}"), v, range)?;
                }
            }
            if m.targets.iter().map(|t| t.weight as u64).sum::<u64>() > 10_000 {
                return Err(ConfigError::at(format!("{p}.targets"), "weights must add up to at most 10000"));
            }
            for (j, t) in m.targets.iter().enumerate() {
                match &t.nodes {
                    Some(pool) => {
                        if !t.upstream.is_empty() {
                            return Err(ConfigError::at(
                                format!("{p}.targets[{j}]"),
                                "set either upstream or nodes, not both",
                            ));
                        }
                        if pool.is_empty() || pool.len() > 256 {
                            return Err(ConfigError::at(
                                format!("{p}.targets[{j}].nodes"),
                                "must be 1 to 256 characters",
                            ));
                        }
                        if t.model.is_some() {
                            return Err(ConfigError::at(
                                format!("{p}.targets[{j}].model"),
                                "a node pool takes each node's own name for the model",
                            ));
                        }
                    }
                    None if !upstream_names.contains(t.upstream.as_str()) => {
                        return Err(ConfigError::at(
                            format!("{p}.targets[{j}].upstream"),
                            format!("unknown upstream `{}`", t.upstream),
                        ));
                    }
                    None => {}
                }
                for (field, v) in
                    [("prompt_per_mtok", t.prompt_per_mtok), ("completion_per_mtok", t.completion_per_mtok)]
                {
                    if let Some(v) = v {
                        limits::check_price(v).map_err(|m| ConfigError::at(format!("{p}.targets[{j}].{field}"), m))?;
                    }
                }
                if t.model.as_deref() == Some("") {
                    return Err(ConfigError::at(format!("{p}.targets[{j}].model"), "must not be empty"));
                }
                in_range(format!("{p}.targets[{j}].weight"), t.weight.into(), limits::WEIGHT)?;
            }
        }
        let mut ids = HashSet::new();
        let mut hashes = HashSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            let p = format!("keys[{i}]");
            if k.id.is_empty() {
                return Err(ConfigError::at(format!("{p}.id"), "must not be empty"));
            }
            if !ids.insert(k.id.as_str()) {
                return Err(ConfigError::at(format!("{p}.id"), format!("duplicate key id `{}`", k.id)));
            }
            let h = crate::keyhash::parse_any(&k.hash).map_err(|e| ConfigError::at(format!("{p}.hash"), e))?;
            if !hashes.insert(h) {
                return Err(ConfigError::at(format!("{p}.hash"), "the same key is configured twice"));
            }
            for (j, m) in k.models.iter().enumerate() {
                if m != "*" && !model_names.contains(m.as_str()) {
                    return Err(ConfigError::at(format!("{p}.models[{j}]"), format!("unknown model `{m}`")));
                }
            }
            if let Some(t) = k.expires_at {
                in_range(format!("{p}.expires_at"), t, limits::EXPIRES_AT_S)?;
            }
            k.limits.check(&p)?;
        }
        let mut node_names = HashSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let p = format!("nodes[{i}]");
            if n.id.is_empty() || !node_names.insert(n.name.as_str()) {
                return Err(ConfigError::at(format!("{p}.name"), format!("duplicate or empty node `{}`", n.name)));
            }
            crate::keyhash::parse_any(&n.secret_hash).map_err(|e| ConfigError::at(format!("{p}.secret_hash"), e))?;
            n.reach.check().map_err(|(field, e)| ConfigError::at(format!("{p}.reach.{field}"), e))?;
            let mut seen = HashSet::new();
            for (j, m) in n.models.iter().enumerate() {
                if let Err(e) = check_node_model(&m.name).and_then(|_| check_node_model(&m.local)) {
                    return Err(ConfigError::at(format!("{p}.models[{j}]"), e));
                }
                if !seen.insert(m.name.as_str()) {
                    return Err(ConfigError::at(format!("{p}.models[{j}]"), format!("`{}` is listed twice", m.name)));
                }
            }
        }
        let mut org_names = HashSet::new();
        for (i, o) in self.orgs.iter().enumerate() {
            let p = format!("orgs[{i}]");
            if o.name.is_empty() {
                return Err(ConfigError::at(format!("{p}.name"), "must not be empty"));
            }
            if !org_names.insert(o.name.as_str()) {
                return Err(ConfigError::at(format!("{p}.name"), format!("duplicate org `{}`", o.name)));
            }
            o.limits.check(&p)?;
            let mut seen = HashSet::new();
            for (j, m) in o.models.iter().enumerate() {
                let mp = format!("{p}.models[{j}]");
                if !model_names.contains(m.model.as_str()) {
                    return Err(ConfigError::at(format!("{mp}.model"), format!("unknown model `{}`", m.model)));
                }
                if !seen.insert(m.model.as_str()) {
                    return Err(ConfigError::at(format!("{mp}.model"), "listed twice"));
                }
                check_limits(&mp, m.rpm, m.tpm, &[])?;
            }
        }
        Ok(())
    }
}
