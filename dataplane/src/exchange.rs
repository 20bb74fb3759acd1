//! One request's context, from the moment it is routed to its accounting:
//! the [`Exchange`]. The connection (`conn`) parses, authenticates and
//! routes; then `pipeline::run` takes the exchange through the remaining
//! phases in order, each in its own module, each filling in its part:
//!
//! | phase | module | what it sets |
//! |---|---|---|
//! | admit | `admit` | `admission`, `headers`, `capture`, `usage_edit` |
//! | select, connect / fail over | `forward` | `tally` (attempts, target, status) |
//! | relay | `relay` | `tally` (usage read from the body, first byte, outcome) |
//! | account | `account` | (reads it all: one usage record; limits settled) |

use crate::cache;
use crate::cluster::limits::Taken;
use crate::http::head::{Endpoint, RequestHead};
use crate::request::BodyFields;
use crate::snapshot::{KeyEntry, Route};
use crate::translate::{RequestFacts, Translation};
use crate::usage::scan::UsageScan;
use crate::worker::RequestId;
use monoio::time::Instant;
use std::time::Duration;
use switchboard_shared::usage::Outcome;

/// Buffers a connection reuses from request to request.
#[derive(Default)]
pub(crate) struct Buffers {
    /// Bytes on their way to the client.
    pub out: Vec<u8>,
    /// The request on its way upstream.
    pub up_w: Vec<u8>,
    /// Bytes read from the upstream.
    pub up_r: Vec<u8>,
    /// A request body translated for a target that speaks the other API.
    pub translated: Vec<u8>,
}

/// A routed request: what it is (set by the connection before [`run`]) and
/// what became of it (set by the phases).
pub(crate) struct Exchange<'a> {
    // What the request is: parse, authenticate, route.
    pub head: &'a RequestHead,
    pub key: &'a KeyEntry,
    pub route: &'a Route,
    pub fields: &'a BodyFields<'a>,
    /// The client's body, forwarded as is (but for the edits below).
    pub body: &'a [u8],
    /// The client's request head as it came (`head`'s spans point into it).
    pub raw_head: &'a [u8],
    pub rid: &'a RequestId,
    /// Whether the client's connection stays open after this response.
    pub keep_alive: bool,
    pub started: Instant,
    pub started_unix_ms: u64,

    // Admit.
    /// What admission took (limits, quota holds: this process's, or
    /// Redis's with `[cluster]`), settled at the end.
    pub admission: Option<Taken<'a>>,
    /// Header lines for the client's response (`x-ratelimit-*`, the cache's verdict).
    pub headers: Vec<u8>,
    /// Store a 200 body in the response cache under this key, for this long.
    pub capture: Option<(cache::Key, Duration)>,
    /// A stream the client did not ask usage for: the gateway asks for it
    /// with this body edit, and the relay takes the usage chunk out.
    pub usage_edit: Option<(usize, usize, Vec<u8>)>,

    /// A test key's injected fault or forced target (`crate::fault`).
    pub fault: Option<crate::fault::Fault>,

    /// The attempt under way speaks the other API: how its request was
    /// translated (set by `forward` per attempt; the relay translates back).
    pub translation: Option<(Translation, RequestFacts)>,

    // Forward, relay, account.
    pub tally: Tally,
}

/// A request as it arrived on the connection, before its body is read.
#[derive(Clone, Copy)]
pub(crate) struct Arrival<'a> {
    pub head: &'a RequestHead,
    pub rid: &'a RequestId,
    pub keep_alive: bool,
    /// When its head was read (monotonic, and Unix milliseconds).
    pub started: (Instant, u64),
}

impl<'a> Exchange<'a> {
    pub fn new(
        arrival: Arrival<'a>,
        key: &'a KeyEntry,
        route: &'a Route,
        fields: &'a BodyFields<'a>,
        body: &'a [u8],
        raw_head: &'a [u8],
    ) -> Exchange<'a> {
        Exchange {
            head: arrival.head,
            key,
            route,
            fields,
            body,
            raw_head,
            rid: arrival.rid,
            keep_alive: arrival.keep_alive,
            started: arrival.started.0,
            started_unix_ms: arrival.started.1,
            admission: None,
            headers: Vec::new(),
            capture: None,
            usage_edit: None,
            fault: None,
            translation: None,
            tally: Tally::default(),
        }
    }

    pub fn endpoint(&self) -> &'a Endpoint {
        &self.head.endpoint
    }

    pub fn request_id(&self) -> &'a [u8] {
        self.rid.as_bytes()
    }

    /// A chat or completion (a generation, whose end the relay checks).
    pub fn generation(&self) -> bool {
        matches!(self.head.endpoint, Endpoint::ChatCompletions | Endpoint::Completions)
    }
}

/// What serving a request came to, filled in by the phases.
pub(crate) struct Tally {
    /// Upstream attempts made.
    pub attempts: u32,
    /// The route's target that answered, if any did.
    pub target: Option<usize>,
    /// The status the client got (0 until known).
    pub status: u16,
    pub outcome: Outcome,
    /// When the first token (streams) or the response head reached the client.
    pub first_byte: Option<Instant>,
    /// Time spent waiting on upstreams, all attempts.
    pub upstream: Duration,
    /// Usage read from the relayed body.
    pub reply: UsageScan,
    /// Answered from the response cache.
    pub cache_hit: bool,
    /// An attempt failed by fault injection (`crate::fault`).
    pub injected: bool,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            attempts: 0,
            target: None,
            status: 0,
            outcome: Outcome::Ok,
            first_byte: None,
            upstream: Duration::ZERO,
            reply: UsageScan::default(),
            cache_hit: false,
            injected: false,
        }
    }
}

/// The status recorded for a request whose client left before any byte of
/// the answer reached it (nginx's "client closed request").
pub(crate) const CLIENT_CLOSED_STATUS: u16 = 499;
