//! What the agent knows of its local server — the models it serves and
//! whether it answers — learned without ever interrupting a generation.
//!
//! llama-cpp-python's server (its default `interrupt_requests = true`) ends a
//! running generation with `[DONE]` and no `finish_reason` whenever any other
//! request arrives, `GET /v1/models` included. So the agent lists models
//! (discovery) only at start, on SIGHUP and every `--discover-interval`, and
//! only while no request is in flight through it: a discovery that falls due
//! while busy waits until the agent is idle, and the last known models are
//! advertised meanwhile. The [`Gate`] makes "idle" exact: requests hold it
//! shared from before they are forwarded until their answer is done, a
//! discovery holds it alone.
//!
//! Between discoveries, health comes from the requests themselves (one that
//! cannot connect marks the server down at once and wakes the heartbeat; any
//! answer marks it up), and, at a heartbeat with no request outcome since the
//! last one, from a TCP connect: no request is sent, so no server takes it for
//! one. A TCP connect only ever finds the server down; a server that is down
//! comes back up through a discovery or an answered request.

use super::{net, Agent};
use serde::Deserialize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchboard_shared::config::NodeModel;
use tokio::sync::{Notify, OwnedRwLockReadGuard, RwLock};
use tokio::time::Instant;

/// `--discover-interval` bounds, in seconds.
pub const DISCOVER_INTERVAL_S_MIN: u64 = 1;
pub const DISCOVER_INTERVAL_S_MAX: u64 = 86_400;

/// How long a discovery (`GET /v1/models`) may take; requests arriving
/// meanwhile wait at most this long for it.
const DISCOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the TCP probe may take to connect.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Held (shared) by every request forwarded to the local server until its
/// answer is done; a discovery takes it alone, and only when nobody holds it.
pub type InUse = OwnedRwLockReadGuard<()>;

enum Health {
    Up,
    Down(String),
}

struct Known {
    /// The last models discovered (renamed), advertised until the next
    /// successful discovery.
    models: Vec<NodeModel>,
    /// What the last discovery left out, and why (said while healthy).
    note: String,
    health: Health,
    /// A discovery has succeeded since the start.
    discovered: bool,
    /// A request's outcome came in since the last heartbeat.
    heard: bool,
}

pub struct LocalServer {
    gate: Arc<RwLock<()>>,
    known: Mutex<Known>,
    /// Wakes the heartbeat loop when a request changed the server's health.
    pub changed: Notify,
}

impl LocalServer {
    pub fn new() -> LocalServer {
        LocalServer {
            gate: Arc::new(RwLock::new(())),
            known: Mutex::new(Known {
                models: Vec::new(),
                note: String::new(),
                health: Health::Down("the local server has not been asked yet".to_string()),
                discovered: false,
                heard: false,
            }),
            changed: Notify::new(),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Taken by a request before it is forwarded (waits only for a discovery
    /// in progress, at most [`DISCOVER_TIMEOUT`]).
    pub async fn in_use(&self) -> InUse {
        self.gate.clone().read_owned().await
    }

    /// The local server answered a request: it is up.
    pub fn answered(&self) {
        let mut k = self.known();
        k.heard = true;
        if let Health::Down(_) = k.health {
            k.health = Health::Up;
            drop(k);
            tracing::info!("the local server answers again");
            self.changed.notify_one();
        }
    }

    /// A request could not connect to the local server: it is down, and the
    /// admin hears it with the next heartbeat, now.
    pub fn refused(&self, why: String) {
        let mut k = self.known();
        k.heard = true;
        let was_up = matches!(k.health, Health::Up);
        k.health = Health::Down(why);
        drop(k);
        if was_up {
            self.changed.notify_one();
        }
    }

    /// What the next heartbeat says: models, healthy, why not.
    pub fn report(&self) -> (Vec<NodeModel>, bool, String) {
        let k = self.known();
        match &k.health {
            Health::Up => (k.models.clone(), true, k.note.clone()),
            Health::Down(why) => (k.models.clone(), false, why.clone()),
        }
    }
}

/// When the next discovery is due.
pub struct Schedule {
    interval: Duration,
    due: Instant,
    /// SIGHUP asked for one.
    asked: bool,
}

impl Schedule {
    pub fn new(interval: Duration) -> Schedule {
        Schedule { interval, due: Instant::now(), asked: false }
    }

    /// SIGHUP: discover at the next heartbeat the agent is idle for.
    pub fn ask(&mut self) {
        self.asked = true;
    }
}

/// Before a heartbeat: bring what the agent knows of its local server up to
/// date, without sending it a request while one is in flight.
pub async fn check(agent: &Agent, schedule: &mut Schedule) {
    let local = &agent.local_server;
    let (down, discovered, heard) = {
        let mut k = local.known();
        let heard = std::mem::take(&mut k.heard);
        (matches!(k.health, Health::Down(_)), k.discovered, heard)
    };
    let due = schedule.asked || Instant::now() >= schedule.due || !discovered;
    // A server found down is listed again to come back up — unless requests
    // just told us about it (their word stands until the next quiet beat).
    if due || (down && !heard) {
        match local.gate.try_write() {
            Ok(_alone) => {
                let found = discover(agent).await;
                let mut k = local.known();
                match found {
                    Ok((models, note)) => {
                        k.note = note;
                        if !k.discovered || k.models != models {
                            let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
                            tracing::info!(models = ?names, "the local server's models");
                        }
                        k.models = models;
                        k.health = Health::Up;
                        k.discovered = true;
                    }
                    Err(e) => {
                        if let Health::Up = k.health {
                            tracing::warn!(error = %e, "local server unhealthy");
                        }
                        k.health = Health::Down(e);
                    }
                }
                schedule.asked = false;
                schedule.due = Instant::now() + schedule.interval;
                return;
            }
            Err(_) => tracing::debug!("requests in flight: model discovery deferred until idle"),
        }
    }
    if heard {
        return;
    }
    if let Err(e) = probe(agent).await {
        let mut k = local.known();
        if let Health::Up = k.health {
            tracing::warn!(error = %e, "local server unhealthy");
        }
        k.health = Health::Down(e);
    }
}

/// A TCP connect to the local server, closed at once: nothing is sent, so
/// it interrupts nothing.
async fn probe(agent: &Agent) -> Result<(), String> {
    let connect = tokio::net::TcpStream::connect((agent.local.host.as_str(), agent.local.port));
    match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("the local server at {} does not answer: {e}", agent.args.local)),
        Err(_) => Err(format!(
            "the local server at {} does not answer: no connection within {} ms",
            agent.args.local,
            PROBE_TIMEOUT.as_millis()
        )),
    }
}

/// The local server's models, renamed (those the admin would take: valid
/// names, each once, at most `limits::NODE_MAX_MODELS`), and a note on what
/// was left out; or why it cannot be reached.
async fn discover(agent: &Agent) -> Result<(Vec<NodeModel>, String), String> {
    let bearer = agent.args.local_key.as_deref();
    let (status, body) =
        net::call(&agent.local, &agent.tls, hyper::Method::GET, "/v1/models", bearer, None, DISCOVER_TIMEOUT)
            .await
            .map_err(|e| format!("the local server at {} does not answer: {e}", agent.args.local))?;
    if status != 200 {
        return Err(format!("the local server's /v1/models answered {status}"));
    }
    #[derive(Deserialize)]
    struct List {
        data: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        id: String,
    }
    let list: List =
        serde_json::from_slice(&body).map_err(|e| format!("the local server's /v1/models is not a model list: {e}"))?;
    let listed = list.data.len();
    let mut seen = std::collections::HashSet::new();
    let mut models: Vec<NodeModel> = list
        .data
        .into_iter()
        .map(|m| {
            let name = agent.renames.iter().find(|(l, _)| *l == m.id).map_or_else(|| m.id.clone(), |(_, p)| p.clone());
            NodeModel { name, local: m.id }
        })
        .filter(|m| {
            use switchboard_shared::config::check_node_model;
            check_node_model(&m.name).is_ok() && check_node_model(&m.local).is_ok() && seen.insert(m.name.clone())
        })
        .collect();
    let max = switchboard_shared::limits::NODE_MAX_MODELS;
    models.truncate(max);
    let mut note = String::new();
    if models.len() < listed {
        note = format!(
            "advertising {} of the {listed} models the local server lists (at most {max}, valid names, each once)",
            models.len()
        );
        tracing::warn!("{note}");
    }
    Ok((models, note))
}
