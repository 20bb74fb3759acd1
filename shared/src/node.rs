//! What a node agent and the admin service say to each other: enrollment
//! (an enrollment token for a node identity) and heartbeats (what the node
//! serves, how busy and healthy it is).

use crate::config::{NodeModel, NodeReach};
use crate::Secret;
use serde::{Deserialize, Serialize};

/// `POST /v1/nodes/enroll`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The enrollment token an admin created.
    pub token: Secret,
    /// The node's name (unique; its target is `node:<name>`).
    pub name: String,
    /// The agent's version.
    #[serde(default)]
    pub version: String,
}

/// The node identity, given once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub node_id: String,
    pub name: String,
    pub org: String,
    /// `<node id>.<secret>`: the node's credential for heartbeats and attach.
    pub credential: Secret,
    /// What the gateway presents to the agent with each request.
    pub gateway_token: Secret,
    /// How often to send heartbeats.
    pub heartbeat_ms: u64,
}

/// `POST /v1/nodes/heartbeat`, with the node credential as bearer token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub version: String,
    /// Models served (public name and the local server's name).
    pub models: Vec<NodeModel>,
    /// Most requests at once.
    pub capacity: u32,
    pub reach: NodeReach,
    /// `always-on` or `idle-time` (with its hours and load threshold).
    pub mode: String,
    /// Inside its availability window (always true when always-on).
    pub available: bool,
    /// The local server answers.
    pub healthy: bool,
    /// Why it is unhealthy or unavailable.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Shutting down: finish what is in flight, take nothing new.
    pub draining: bool,
    /// Requests in flight at the agent.
    pub in_flight: u32,
    /// One-minute load average per CPU.
    pub load: f64,
}

/// The admin's answer to a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// online, draining, unhealthy, unavailable.
    pub status: String,
    /// Whether gateways route new requests to it now.
    pub routable: bool,
    pub heartbeat_ms: u64,
}
