//! The phases after routing, in order: admit, select / connect / fail over
//! (with relay), account. The connection (`conn`) calls [`run`] with the
//! request's [`Exchange`] once it is parsed, authenticated and routed.

use crate::account::account;
use crate::admit::{self, Admitted};
use crate::error::GatewayError;
use crate::exchange::{Buffers, Exchange};
use crate::forward::{forward, Forwarded};
use crate::http::io::PeerClosed;
use crate::worker::WorkerCtx;
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use switchboard_shared::usage::Outcome as UsageOutcome;

/// What a routed request came to, for the connection.
pub(crate) enum Ending {
    /// The response was written; the connection may stay if this says so.
    Written { keep_alive: bool },
    /// Nothing was written: answer with this error (and the exchange's headers).
    Error(GatewayError),
    /// The response was cut off, or the client left: close the connection.
    Aborted,
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
            Forwarded::Failed(e) => {
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
        a.settle(tokens, nanos);
    }
    ending
}
