//! The range of every duration, interval, size and count the gateway takes
//! from outside (the TOML file, the admin API, a remote admin's snapshot, a
//! node's or an upstream's usage), in one place. The config validators check
//! against these (so the file and the API refuse the same values, naming the
//! field), and docs/configuration.md and docs/admin-api.md list them. Inside
//! these bounds, arithmetic on the values cannot overflow: a timeout added to
//! "now" stays far from the end of time, and a day of requests at the largest
//! per-request counts still fits an `i64` sum.

/// An inclusive range of whole numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub min: u64,
    pub max: u64,
}

impl Range {
    pub const fn new(min: u64, max: u64) -> Range {
        Range { min, max }
    }

    pub fn contains(self, v: u64) -> bool {
        v >= self.min && v <= self.max
    }

    /// `must be between MIN and MAX, got V` when `v` is outside.
    pub fn check(self, v: u64) -> Result<(), String> {
        if self.contains(v) {
            Ok(())
        } else {
            Err(format!("must be between {} and {}, got {v}", self.min, self.max))
        }
    }
}

const SECOND_MS: u64 = 1_000;
const HOUR_MS: u64 = 3_600 * SECOND_MS;
const DAY_MS: u64 = 24 * HOUR_MS;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

// ---- durations (milliseconds) ----

/// A wait on a peer: upstream connect / first byte / read, a client's head,
/// body, write or idle keep-alive, a retry's per-attempt timeout and deadline.
pub const TIMEOUT_MS: Range = Range::new(1, HOUR_MS);
/// How long an idle pooled upstream connection is kept.
pub const POOL_IDLE_MS: Range = Range::new(1, HOUR_MS);
/// How long an ejected upstream stays out.
pub const EJECT_MS: Range = Range::new(1, DAY_MS);
/// Active health probes (0 = off; otherwise at least 100 ms).
pub const PROBE_INTERVAL_MS: Range = Range::new(0, DAY_MS);
pub const PROBE_INTERVAL_MIN_MS: u64 = 100;
/// Base of a retry's backoff.
pub const BACKOFF_MS: Range = Range::new(0, 60 * SECOND_MS);
/// A cached answer's lifetime.
pub const CACHE_TTL_MS: Range = Range::new(1, 30 * DAY_MS);
/// How long requests in flight may finish at shutdown.
pub const SHUTDOWN_GRACE_MS: Range = Range::new(0, HOUR_MS);
/// How often the config file is checked (0 = only on SIGHUP).
pub const RELOAD_POLL_MS: Range = Range::new(0, DAY_MS);
/// How long a changed config file must stay unchanged before it is reloaded.
pub const RELOAD_SETTLE_MS: Range = Range::new(0, 60 * SECOND_MS);
/// How often upstream host names are resolved again.
pub const DNS_REFRESH_MS: Range = Range::new(100, DAY_MS);
/// How often nodes heartbeat.
pub const NODE_HEARTBEAT_MS: Range = Range::new(100, HOUR_MS);
/// How long a console session lasts after sign-in.
pub const CONSOLE_SESSION_TTL_MS: Range = Range::new(60 * SECOND_MS, 7 * DAY_MS);
/// How often workers hand usage records over.
pub const FLUSH_INTERVAL_MS: Range = Range::new(1, 60 * SECOND_MS);

// ---- sizes (bytes) ----

pub const MAX_HEADER_BYTES: Range = Range::new(KIB, MIB);
pub const MAX_BODY_BYTES: Range = Range::new(KIB, GIB);
pub const MAX_UPSTREAM_HEADER_BYTES: Range = Range::new(KIB, MIB);
pub const CACHE_MAX_BYTES: Range = Range::new(0, 64 * GIB);
pub const ADMIN_MAX_BODY_BYTES: Range = Range::new(KIB, 64 * MIB);
/// Multishot receive on io_uring (`SWITCHBOARD_URING_RECV=COUNTxBYTES`): the
/// buffers in each worker's provided-buffer ring (0 = off; else a power of
/// two, the kernel's limit is 32768) and the bytes of each.
pub const URING_RECV_BUFFERS: Range = Range::new(0, 32_768);
pub const URING_RECV_BUFFER_BYTES: Range = Range::new(512, MIB);
/// …and the whole ring (COUNT × BYTES), which each io_uring worker allocates:
/// at most 256 MiB per worker (the default is 1 MiB).
pub const URING_RECV_RING_BYTES: Range = Range::new(0, 256 * MIB);

// ---- counts ----

/// Console sessions open at once.
pub const CONSOLE_MAX_SESSIONS: Range = Range::new(1, 65_536);

/// Data-plane worker threads (0 = one per core).
pub const WORKERS: Range = Range::new(0, 1024);
pub const MAX_HEADERS: Range = Range::new(8, 128);
pub const MAX_CONNECTIONS_PER_WORKER: Range = Range::new(1, 1_000_000);
/// Idle connections kept per worker and upstream.
pub const POOL_MAX_IDLE: Range = Range::new(0, 65_536);
/// Models one node may advertise (an agent advertises the first ones).
pub const NODE_MAX_MODELS: usize = 256;
/// Consecutive failures that eject an upstream.
pub const EJECT_AFTER_FAILURES: Range = Range::new(1, 1_000_000);
/// Attempts per request, first included.
pub const MAX_ATTEMPTS: Range = Range::new(1, 32);
/// A target's share in the `weighted` strategy (all of a route's together: at most 10000).
pub const WEIGHT: Range = Range::new(1, 10_000);
/// Requests or tokens per minute in a limit.
pub const PER_MINUTE: Range = Range::new(1, 1_000_000_000);
/// Tokens in a quota.
pub const QUOTA_TOKENS: Range = Range::new(1, 1_000_000_000_000_000);
/// Completion tokens reserved for a request without `max_tokens`.
pub const COMPLETION_RESERVE_TOKENS: Range = Range::new(0, MAX_TOKENS_PER_REQUEST);
/// Days the raw request log is kept (0 = forever).
pub const RETENTION_DAYS: Range = Range::new(0, 36_500);
/// A key's expiry, Unix seconds (up to the end of year 9999).
pub const EXPIRES_AT_S: Range = Range::new(0, 253_402_300_799);

// ---- the smoke check (`POST /v1/admin/smoke`, `switchboard smoke`) ----

/// `max_tokens` of every request the smoke check sends.
pub const SMOKE_MAX_TOKENS: Range = Range::new(1, 16);
/// The wait for one smoke request's whole answer.
pub const SMOKE_TIMEOUT_MS: Range = Range::new(100, 10 * 60 * SECOND_MS);
/// The wait for the smoke requests' usage records to reach the database.
pub const SMOKE_USAGE_WAIT_MS: Range = Range::new(100, 10 * 60 * SECOND_MS);
/// Routes named in one smoke run.
pub const SMOKE_MAX_ROUTES: usize = 256;
/// The prompt of the smoke requests, in bytes.
pub const SMOKE_PROMPT_BYTES: Range = Range::new(1, 4 * KIB);
/// The request limit a burst check drives a key past (a larger limit costs
/// that many requests: use a dedicated key with a small one).
pub const SMOKE_BURST_LIMIT: Range = Range::new(1, 1_000);
pub const USAGE_QUEUE_RECORDS: Range = Range::new(256, 1 << 24);
pub const USAGE_PENDING_RECORDS: Range = Range::new(256, 1 << 26);
pub const USAGE_BATCH_RECORDS: Range = Range::new(1, 1 << 20);

// ---- [cluster] (Redis) ----

/// Connecting to Redis, and one command on it.
pub const CLUSTER_TIMEOUT_MS: Range = Range::new(1, 60 * SECOND_MS);
/// Redis connections per data-plane worker.
pub const CLUSTER_POOL_SIZE: Range = Range::new(1, 64);
/// Failed commands in a row that take Redis as down.
pub const CLUSTER_DOWN_AFTER_FAILURES: Range = Range::new(1, 1_000);
/// Redis health probes (and the admin's re-seed check).
pub const CLUSTER_PROBE_INTERVAL_MS: Range = Range::new(50, HOUR_MS);
/// Largest reply accepted from Redis (a cached answer is the largest).
pub const CLUSTER_MAX_REPLY_BYTES: usize = 8 * 1024 * 1024;
/// Numbers the admission script takes: counters above this are refused
/// before they reach Redis's Lua (doubles are exact below 2^53).
pub const CLUSTER_MAX_COUNTER: u64 = 1 << 52;

// ---- names ----

/// The most characters (not bytes) a name may have.
pub const NAME_MAX_CHARS: usize = 256;

/// Whether `c` is invisible or reorders text: control characters, and the
/// format characters that hide or reverse what a name shows (zero-width
/// spaces and joiners, bidi overrides and isolates, the BOM, soft hyphens).
pub fn is_hidden_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// A name: 1 to [`NAME_MAX_CHARS`] characters, none of them hidden.
pub fn check_name(name: &str) -> Result<(), String> {
    let n = name.chars().count();
    if n == 0 || n > NAME_MAX_CHARS {
        return Err(format!("must be 1 to {NAME_MAX_CHARS} characters, got {n}"));
    }
    if name.chars().any(is_hidden_char) {
        return Err("must not contain control, zero-width or bidi-override characters".to_string());
    }
    if name.trim().is_empty() {
        return Err("must not be only blanks".to_string());
    }
    Ok(())
}

// ---- money ----

/// The longest session id (`X-Claude-Code-Session-Id`, `X-Session-Id`) a
/// usage record keeps; a longer or non-printable one is not recorded.
pub const MAX_SESSION_ID_BYTES: usize = 128;

/// The most a price may be, USD per million tokens (ten cents a token).
pub const MAX_PRICE_PER_MTOK: f64 = 100_000.0;
/// The most a quota may cap, USD.
pub const MAX_QUOTA_USD: f64 = 1_000_000_000.0;

/// A price: finite, not negative, at most [`MAX_PRICE_PER_MTOK`].
pub fn check_price(v: f64) -> Result<(), String> {
    if v.is_finite() && (0.0..=MAX_PRICE_PER_MTOK).contains(&v) {
        Ok(())
    } else {
        Err(format!("must be a price from 0 to {MAX_PRICE_PER_MTOK} USD per million tokens"))
    }
}

// ---- what upstreams and nodes report (clamped, not refused) ----

/// The most tokens of one kind (prompt, completion, total) one request is
/// accounted for. A larger count from an upstream or a node is clamped to it
/// and the record is marked `clamped`.
pub const MAX_TOKENS_PER_REQUEST: u64 = 100_000_000;
/// The most one request may cost, nano-USD: both token kinds at their
/// largest count and the largest price (2e16 nano-USD, 20 million USD).
pub const MAX_COST_NANOS_PER_REQUEST: u64 = 2 * MAX_TOKENS_PER_REQUEST * MAX_PRICE_PER_MTOK as u64 * 1_000;
/// The most a request's latencies may say: a day, in microseconds.
pub const MAX_LATENCY_US: u64 = DAY_MS * 1_000;
/// The latest time a record may carry, Unix milliseconds (end of year 9999).
pub const MAX_TS_MS: u64 = EXPIRES_AT_S.max * 1_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_of_the_largest_requests_still_fits_an_i64_sum() {
        // A million requests a second for a day, each at the largest cost.
        let per_day = 86_400u128 * 1_000_000 * MAX_COST_NANOS_PER_REQUEST as u128;
        assert!(per_day > i64::MAX as u128, "sums must saturate, not rely on this");
        // Hundreds of the costliest requests still sum exactly.
        assert!((MAX_COST_NANOS_PER_REQUEST as u128) < i64::MAX as u128 / 100);
        assert!(TIMEOUT_MS.check(0).is_err() && TIMEOUT_MS.check(u64::MAX).is_err());
        assert!(check_price(f64::NAN).is_err() && check_price(-1.0).is_err() && check_price(1e13).is_err());
        assert!(check_price(0.0).is_ok() && check_price(2.5).is_ok());
    }

    #[test]
    fn names_count_characters_and_refuse_hidden_ones() {
        assert!(check_name(&"é".repeat(256)).is_ok(), "256 characters, 512 bytes");
        assert!(check_name(&"é".repeat(257)).is_err());
        for bad in ["", "   ", "\u{3000}", "evil\u{202E}txt", "a\u{200B}b", "tab\there", "\u{FEFF}bom"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("gpt-4o-mini 😀").is_ok());
    }
}
