//! Fault injection, for tests of a live deployment (`switchboard smoke`).
//!
//! A key marked `test = true` may send
//!
//! - `x-switchboard-fault: fail=TARGET[,status=503|connect|timeout|reset]`:
//!   every attempt at TARGET (an upstream name, or `node:NAME`) fails as the
//!   named failure would, without contacting it; the request fails over
//!   exactly as it would on the real failure (the route's triggers, attempts
//!   and deadline), but the target's health (circuit breaker, error counts,
//!   moving averages, in-flight count) is left alone. The usage record says
//!   `injected`.
//! - `x-switchboard-target-only: TARGET`: only TARGET is tried.
//!
//! Any other key sending either header gets a 400 (never silently ignored),
//! so a production key cannot trip it; so does a malformed value, or a
//! TARGET the route does not have.

use crate::error::GatewayError;
use crate::snapshot::Route;
use switchboard_shared::config::Trigger;

/// The fault headers as they came, filled in by the head parser (owned only
/// when present: test traffic).
#[derive(Debug, Clone, Default)]
pub struct RawHeaders {
    pub fault: Option<Box<[u8]>>,
    pub target_only: Option<Box<[u8]>>,
    /// One of them came twice.
    pub repeated: bool,
}

impl RawHeaders {
    pub fn is_empty(&self) -> bool {
        self.fault.is_none() && self.target_only.is_none() && !self.repeated
    }
}

/// The longest value of either header.
pub const MAX_HEADER_BYTES: usize = 256;

/// What an injected failure looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The upstream answered this status (400–599).
    Status(u16),
    /// The TCP connection could not be made.
    Connect,
    /// No response head in time (reported at once: nothing is waited for).
    Timeout,
    /// The connection was reset before an answer.
    Reset,
}

/// What a test request asked for, checked against its route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Fail every attempt at this target this way.
    pub fail: Option<(Box<str>, Kind)>,
    /// Try only this target.
    pub only: Option<Box<str>>,
}

pub const FAULT_HEADER: &str = "x-switchboard-fault";
pub const TARGET_ONLY_HEADER: &str = "x-switchboard-target-only";

fn bad(param: &'static str, message: String) -> GatewayError {
    GatewayError::invalid_param(param, "invalid_fault_header", message)
}

/// The fault a request carries, if any: `Ok(None)` without the headers; a
/// 400 when a key that is not a test key sends them, when a value is
/// malformed, or when it names a target `route` does not have.
pub fn from_request(raw: &RawHeaders, test_key: bool, route: &Route) -> Result<Option<Fault>, GatewayError> {
    if raw.is_empty() {
        return Ok(None);
    }
    let which = if raw.fault.is_some() { FAULT_HEADER } else { TARGET_ONLY_HEADER };
    allowed(raw, test_key)?;
    if raw.repeated {
        return Err(bad(which, format!("`{which}` was sent more than once.")));
    }
    let fault = Fault {
        fail: raw.fault.as_deref().map(parse_fault).transpose()?,
        only: raw.target_only.as_deref().map(|v| target_name(TARGET_ONLY_HEADER, v)).transpose()?,
    };
    for (header, name) in
        [(FAULT_HEADER, fault.fail.as_ref().map(|(t, _)| t)), (TARGET_ONLY_HEADER, fault.only.as_ref())]
    {
        if let Some(name) = name {
            if !route.targets.iter().any(|t| *t.upstream.name == **name) {
                return Err(bad(
                    header,
                    format!("`{header}` names `{name}`, which is not a target of route `{}`.", route.name),
                ));
            }
        }
    }
    Ok(Some(fault))
}

/// A 400 when a key that is not a test key sends either header, on any
/// endpoint (a test key's headers mean nothing on the model list, and are
/// not read there).
pub fn allowed(raw: &RawHeaders, test_key: bool) -> Result<(), GatewayError> {
    if raw.is_empty() || test_key {
        return Ok(());
    }
    let which = if raw.fault.is_some() { FAULT_HEADER } else { TARGET_ONLY_HEADER };
    Err(GatewayError::invalid_param(
        which,
        "fault_injection_not_allowed",
        format!("`{which}` is only accepted from keys marked `test = true`; this key is not one."),
    ))
}

fn text<'a>(header: &'static str, v: &'a [u8]) -> Result<&'a str, GatewayError> {
    if v.len() > MAX_HEADER_BYTES {
        return Err(bad(header, format!("`{header}` is longer than {MAX_HEADER_BYTES} bytes.")));
    }
    std::str::from_utf8(v).map(str::trim).map_err(|_| bad(header, format!("`{header}` is not UTF-8.")))
}

fn target_name(header: &'static str, v: &[u8]) -> Result<Box<str>, GatewayError> {
    let name = text(header, v)?;
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == ',' || c == '=') {
        return Err(bad(header, format!("`{header}` must name one target (an upstream, or `node:NAME`).")));
    }
    Ok(name.into())
}

/// `fail=TARGET[,status=503|connect|timeout|reset]` (the status defaults to 503).
fn parse_fault(v: &[u8]) -> Result<(Box<str>, Kind), GatewayError> {
    let h = FAULT_HEADER;
    let usage = || bad(h, format!("`{h}` must be `fail=TARGET` or `fail=TARGET,status=503|connect|timeout|reset`."));
    let s = text(h, v)?;
    let mut target = None;
    let mut kind = None;
    for part in s.split(',').map(str::trim) {
        let (k, val) = part.split_once('=').ok_or_else(usage)?;
        match k.trim() {
            "fail" if target.is_none() => target = Some(target_name(h, val.as_bytes())?),
            "status" if kind.is_none() => kind = Some(parse_kind(val.trim()).ok_or_else(usage)?),
            _ => return Err(usage()),
        }
    }
    let target = target.ok_or_else(usage)?;
    Ok((target, kind.unwrap_or(Kind::Status(503))))
}

fn parse_kind(v: &str) -> Option<Kind> {
    Some(match v {
        "connect" => Kind::Connect,
        "timeout" => Kind::Timeout,
        "reset" => Kind::Reset,
        _ if v.len() == 3 && v.bytes().all(|b| b.is_ascii_digit()) => {
            let n: u16 = v.parse().ok()?;
            if !(400..=599).contains(&n) {
                return None;
            }
            Kind::Status(n)
        }
        _ => return None,
    })
}

impl Fault {
    /// The target whose attempts fail, if any (tried first, whatever the
    /// route's strategy, so that the failure is always met).
    pub fn failed_target(&self) -> Option<&str> {
        self.fail.as_ref().map(|(t, _)| &**t)
    }

    /// Whether `target` (an upstream name) is to be tried at all.
    pub fn allows(&self, target: &str) -> bool {
        self.only.as_deref().is_none_or(|o| o == target)
    }

    /// The failure to inject at this attempt, if `target` is the one to fail:
    /// the error the real failure would give, with its failover trigger, so
    /// the attempt loop treats it exactly like one (minus the health
    /// bookkeeping, which it skips for injected faults).
    pub fn inject(&self, target: &str) -> Option<GatewayError> {
        let (name, kind) = self.fail.as_ref()?;
        if **name != *target {
            return None;
        }
        let why = |what: &str| format!("Upstream `{target}`: {what} (injected by {FAULT_HEADER}).");
        Some(match *kind {
            Kind::Connect => GatewayError::upstream(why("connection failed")).because(Trigger::Connect),
            Kind::Reset => GatewayError::upstream(why("connection reset before an answer")),
            Kind::Timeout => GatewayError::upstream_timeout(why("no answer in time")),
            Kind::Status(status) => {
                let trigger = match status {
                    429 => Some(Trigger::Status429),
                    408 => Some(Trigger::Status408),
                    409 => Some(Trigger::Status409),
                    500..=599 => Some(Trigger::Status5xx),
                    _ => None,
                };
                GatewayError::injected_status(status, why(&format!("answered {status}")), trigger)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_values_parse() {
        assert_eq!(parse_fault(b"fail=a").unwrap(), ("a".into(), Kind::Status(503)));
        assert_eq!(parse_fault(b" fail=node:gpu1 , status=connect ").unwrap(), ("node:gpu1".into(), Kind::Connect));
        assert_eq!(parse_fault(b"fail=a,status=timeout").unwrap().1, Kind::Timeout);
        assert_eq!(parse_fault(b"fail=a,status=reset").unwrap().1, Kind::Reset);
        assert_eq!(parse_fault(b"status=429,fail=b").unwrap(), ("b".into(), Kind::Status(429)));
        for bad in [
            &b""[..],
            b"a",
            b"fail=",
            b"fail=a,status=200",
            b"fail=a,status=5000",
            b"fail=a,status=oops",
            b"fail=a,fail=b",
            b"fail=a,status=503,status=500",
            b"fail=a,extra=1",
            b"fail=a b",
            b"fail=\xff",
        ] {
            assert!(parse_fault(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(parse_fault(&[b'a'; MAX_HEADER_BYTES + 1]).is_err());
    }

    #[test]
    fn injected_errors_carry_their_trigger() {
        let f = Fault { fail: Some(("a".into(), Kind::Status(503))), only: None };
        assert!(f.inject("b").is_none());
        let e = f.inject("a").unwrap();
        assert_eq!((e.status, e.cause, e.retryable), (503, Some(Trigger::Status5xx), true));
        let f = Fault { fail: Some(("a".into(), Kind::Connect)), only: Some("a".into()) };
        assert_eq!(f.inject("a").unwrap().cause, Some(Trigger::Connect));
        assert!(f.allows("a") && !f.allows("b"));
        let f = Fault { fail: Some(("a".into(), Kind::Status(400))), only: None };
        assert_eq!(f.inject("a").unwrap().cause, None);
    }
}
