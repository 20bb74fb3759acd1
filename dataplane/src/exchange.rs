//! One request's context, from the moment it is routed to its accounting:
//! the [`Exchange`]. The connection (`conn`) parses, authenticates and
//! routes; then [`run`] takes the exchange through the remaining phases in
//! order, each in its own module:
//!
//! | phase | module | what it adds to the exchange |
//! |---|---|---|
//! | admit | [`crate::admit`] | the admission (limits, quotas) and its headers; the cache's verdict |
//! | select, connect / fail over | [`crate::forward`] | attempts, the target that answered |
//! | relay | [`crate::relay`] | the body, through the chain of body filters; usage read from it |
//! | account | [`crate::account`] | one usage record from the tally; limits settled |

use crate::account::{account, Tally};
use crate::admit::{self, Admitted};
use crate::cache;
use crate::error::GatewayError;
use crate::forward::{forward, Forwarded};
use crate::http::head::{Endpoint, RequestHead};
use crate::http::io::PeerClosed;
use crate::policy::{self, Admission};
use crate::request::BodyFields;
use crate::snapshot::{KeyEntry, Route};
use crate::worker::{RequestId, WorkerCtx};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::time::Instant;
use std::time::Duration;
use switchboard_shared::usage::Outcome as UsageOutcome;

/// Buffers a connection reuses from request to request.
#[derive(Default)]
pub(crate) struct Buffers {
    /// Bytes on their way to the client.
    pub out: Vec<u8>,
    /// The request on its way upstream.
    pub up_w: Vec<u8>,
    /// Bytes read from the upstream.
    pub up_r: Vec<u8>,
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
    pub rid: &'a RequestId,
    /// Whether the client's connection stays open after this response.
    pub keep_alive: bool,
    pub started: Instant,
    pub started_unix_ms: u64,

    // Admit.
    /// What admission took (limits, quota holds), settled at the end.
    pub admission: Option<Admission<'a>>,
    /// Header lines for the client's response (`x-ratelimit-*`, the cache's verdict).
    pub headers: Vec<u8>,
    /// Store a 200 body in the response cache under this key, for this long.
    pub capture: Option<(cache::Key, Duration)>,
    /// A stream the client did not ask usage for: the gateway asks for it
    /// with this body edit, and the relay takes the usage chunk out.
    pub usage_edit: Option<(usize, usize, Vec<u8>)>,

    // Forward, relay, account.
    pub tally: Tally,
}

/// What a routed request came to, for the connection.
pub(crate) enum Ending {
    /// The response was written; the connection may stay if this says so.
    Written { keep_alive: bool },
    /// Nothing was written: answer with this error (and the exchange's headers).
    Error(GatewayError),
    /// The response was cut off, or the client left: close the connection.
    Aborted,
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
    ) -> Exchange<'a> {
        Exchange {
            head: arrival.head,
            key,
            route,
            fields,
            body,
            rid: arrival.rid,
            keep_alive: arrival.keep_alive,
            started: arrival.started.0,
            started_unix_ms: arrival.started.1,
            admission: None,
            headers: Vec::new(),
            capture: None,
            usage_edit: None,
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

/// Phases admit, select / connect / fail over, relay and account, in order.
pub(crate) async fn run<S: AsyncReadRent + AsyncWriteRent + PeerClosed>(
    ctx: &WorkerCtx,
    io: &mut S,
    bufs: &mut Buffers,
    x: &mut Exchange<'_>,
) -> Ending {
    let ending = match admit::admit(ctx, io, bufs, x).await {
        Admitted::Refused(e) => Ending::Error(e),
        Admitted::Answered { written } => {
            if written {
                Ending::Written { keep_alive: x.keep_alive }
            } else {
                Ending::Aborted
            }
        }
        Admitted::Forward => match forward(ctx, io, bufs, x).await {
            Forwarded::Done { keep_alive } => Ending::Written { keep_alive },
            Forwarded::Failed(e) | Forwarded::Retry(e) => {
                x.tally.status = e.status;
                x.tally.outcome = UsageOutcome::Error;
                x.tally.target = None;
                Ending::Error(e)
            }
            Forwarded::Aborted => Ending::Aborted,
        },
    };
    let (tokens, nanos) = account(ctx, x);
    if let Some(a) = &x.admission {
        policy::settle(a, tokens, nanos);
    }
    ending
}
