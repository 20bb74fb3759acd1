//! Nodes in outbound mode (BYOI behind NAT): the agent opens connections to
//! the gateway's own port and sends `POST /v1/nodes/attach` with its node
//! credential (`<node id>.<secret>`). Once it checks out, the gateway answers
//! `101 Switching Protocols` and the connection changes direction: it goes
//! into this worker's upstream pool under the node's key, and requests routed
//! to the node are sent down it (the agent serves HTTP/1.1 on it).
//!
//! Each worker pools only the connections it accepted, so the answer tells
//! the agent which worker took the connection (`x-switchboard-worker: i/n`)
//! and the agent dials until every worker holds its share.

use crate::error::GatewayError;
use crate::http::head::Credential;
use crate::snapshot::{NodeEntry, Snapshot};

/// Check an attach request's credential; the node it names.
pub fn authenticate<'s>(
    snapshot: &'s Snapshot,
    credential: &Credential,
    head: &[u8],
) -> Result<&'s NodeEntry, GatewayError> {
    let token = credential.token(head).ok_or_else(|| {
        GatewayError::node_refused("Attach needs the node credential as `Authorization: Bearer <node id>.<secret>`.")
    })?;
    let split = token.iter().position(|&b| b == b'.');
    let (id, secret) = match split {
        Some(i) => (&token[..i], &token[i + 1..]),
        None => return Err(GatewayError::node_refused("Malformed node credential.")),
    };
    let id = std::str::from_utf8(id).map_err(|_| GatewayError::node_refused("Malformed node credential."))?;
    let node = snapshot.nodes.get(id).ok_or_else(|| {
        GatewayError::node_refused(format!(
            "Node `{id}` is not online at this gateway (unknown, removed, disabled, or no heartbeat yet)."
        ))
    })?;
    if snapshot.hasher.hash(secret) != node.secret_hash {
        return Err(GatewayError::node_refused("Incorrect node credential."));
    }
    if !node.outbound {
        return Err(GatewayError::node_refused(format!(
            "Node `{}` advertised direct mode; restart its agent with --connect to attach.",
            node.name
        )));
    }
    Ok(node)
}

/// The `101` that turns the connection around.
pub fn switching_response(out: &mut Vec<u8>, worker: usize, workers: usize, instance: u64) {
    use crate::fmt::push_dec;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: switchboard-node\r\nconnection: upgrade\r\nx-switchboard-worker: ");
    push_dec(out, worker as u64);
    out.push(b'/');
    push_dec(out, workers as u64);
    out.extend_from_slice(b"\r\nx-switchboard-instance: ");
    out.extend_from_slice(format!("{instance:016x}").as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}
