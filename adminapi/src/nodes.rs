//! BYOI nodes on the admin side: enrollment tokens, node identities (secret
//! hashed at rest, the gateway's token sealed), the live view built from
//! heartbeats, and the part of the routing spec nodes make up.
//!
//! Identities and admin decisions (enabled, shared) are in SQLite; liveness
//! (last heartbeat, load, health, draining) is in memory: after a restart
//! every node is offline until its next heartbeat. A heartbeat that changes
//! what gateways route to (models, capacity, reach, routable) publishes a new
//! snapshot; one that changes nothing but load does not.

use crate::db::{new_id, now_secs, random_hex};
use crate::error::{ApiError, ApiResult};
use crate::store::{audit, check_name, find_org, Db};
use axum::http::StatusCode;
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;
use switchboard_shared::config::{check_node_model, NodeModel, NodeReach, NodeSpec};
use switchboard_shared::node::{EnrollRequest, EnrollResponse, Heartbeat};
use switchboard_shared::{KeyHasher, Secret};
use utoipa::ToSchema;

/// Heartbeats missed (in intervals) before a node is offline.
pub const OFFLINE_AFTER_INTERVALS: f64 = 2.5;
/// Usage reports past the documented maxima (clamped records) after which a
/// node is taken out of routing until an admin re-enables it: it is broken or
/// hostile either way.
pub const NONSENSE_REPORTS_LIMIT: u64 = 3;
/// The most requests at once a node may advertise.
pub const MAX_CAPACITY: u32 = 4096;
/// The most models one node may advertise.
pub const MAX_MODELS: usize = switchboard_shared::limits::NODE_MAX_MODELS;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentTokenCreate {
    /// Org id or name: the org every node enrolled with it belongs to.
    pub org: String,
    /// A label for the token.
    #[serde(default)]
    pub name: Option<String>,
    /// Seconds until it expires (default one day, at most 365 days).
    #[serde(default = "day")]
    pub expires_in_s: u64,
    /// Nodes that may enroll with it: 1 (default) is single-use, 0 any number.
    #[serde(default = "one")]
    pub max_uses: u32,
}

fn day() -> u64 {
    86_400
}
fn one() -> u32 {
    1
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentToken {
    pub id: String,
    pub name: String,
    pub org: String,
    pub expires_at: i64,
    /// 0: any number of nodes.
    pub max_uses: u32,
    pub uses: u32,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentTokenWithSecret {
    #[serde(flatten)]
    pub token: EnrollmentToken,
    /// Shown once: pass it to `switchboard node --enroll`.
    pub secret: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeUpdate {
    /// false: the node is cut off (its heartbeats are refused with `reason`).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// true: keys of every org may be served by it.
    #[serde(default)]
    pub shared: Option<bool>,
    /// Why it was disabled (told to the node).
    #[serde(default)]
    pub reason: Option<String>,
}

/// A node as admins see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeView {
    pub id: String,
    pub name: String,
    pub org: String,
    /// online, offline, draining, unhealthy, unavailable (outside its idle-time window) or disabled.
    pub status: String,
    /// Whether gateways route new requests to it.
    pub routable: bool,
    /// Usage reports past the documented maxima (clamped) since the admin
    /// started or the node was last re-enabled; at 3 the node is `flagged`
    /// and out of routing.
    pub usage_flags: u64,
    pub enabled: bool,
    pub shared: bool,
    pub disabled_reason: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub models: Vec<NodeModel>,
    pub capacity: u32,
    /// `direct` (with its URL) or `outbound`.
    pub reach: Option<String>,
    /// always-on or idle-time (with its window).
    pub mode: Option<String>,
    pub agent_version: Option<String>,
    pub in_flight: Option<u32>,
    pub load: Option<f64>,
    pub message: Option<String>,
    /// Unix milliseconds of the last heartbeat this admin service received.
    pub last_heartbeat_ms: Option<i64>,
    pub created_at: i64,
}

/// What a node said in its last heartbeat, and when.
#[derive(Clone)]
struct LiveNode {
    seen: Instant,
    seen_unix_ms: i64,
    beat: Heartbeat,
}

impl LiveNode {
    fn routable(&self) -> bool {
        self.beat.healthy && self.beat.available && !self.beat.draining && !self.beat.models.is_empty()
    }

    fn status(&self) -> &'static str {
        if self.beat.draining {
            "draining"
        } else if !self.beat.healthy {
            "unhealthy"
        } else if !self.beat.available {
            "unavailable"
        } else {
            "online"
        }
    }

    /// What gateways route on (a change here publishes a snapshot).
    fn facts(&self) -> (bool, &[NodeModel], u32, &NodeReach) {
        (self.routable(), &self.beat.models, self.beat.capacity, &self.beat.reach)
    }
}

/// Heartbeats by node id.
#[derive(Default)]
pub struct Live {
    nodes: Mutex<HashMap<String, LiveNode>>,
    /// Clamped usage records by node name (in memory: an admin restart or
    /// `PATCH {"enabled": true}` clears them).
    flags: Mutex<HashMap<String, u64>>,
}

impl Live {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LiveNode>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a heartbeat; true when it changes what gateways route on.
    fn record(&self, id: &str, beat: Heartbeat) -> bool {
        let now = LiveNode { seen: Instant::now(), seen_unix_ms: crate::db::now_millis(), beat };
        let mut map = self.lock();
        let changed = map.get(id).is_none_or(|old| old.facts() != now.facts());
        map.insert(id.to_string(), now);
        changed
    }

    /// Forget nodes whose heartbeats stopped; true when any went offline.
    pub fn expire(&self, heartbeat_ms: u64) -> bool {
        let limit = std::time::Duration::from_millis((heartbeat_ms as f64 * OFFLINE_AFTER_INTERVALS) as u64);
        let mut map = self.lock();
        let before = map.len();
        map.retain(|id, n| {
            let alive = n.seen.elapsed() <= limit;
            if !alive {
                tracing::warn!(node = %id, "node missed its heartbeats; offline");
            }
            alive
        });
        map.len() != before
    }

    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    fn flag_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.flags.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Count a usage report past the documented maxima from the node named
    /// `name`; true when this one takes it out of routing.
    pub fn flag(&self, name: &str) -> bool {
        let mut map = self.flag_map();
        let n = map.entry(name.to_string()).or_default();
        *n = n.saturating_add(1);
        *n == NONSENSE_REPORTS_LIMIT
    }

    /// Clamped usage reports counted against the node named `name`.
    pub fn flags(&self, name: &str) -> u64 {
        self.flag_map().get(name).copied().unwrap_or(0)
    }

    /// Whether the node named `name` reported nonsense too often to route to.
    pub fn quarantined(&self, name: &str) -> bool {
        self.flags(name) >= NONSENSE_REPORTS_LIMIT
    }

    fn clear_flags(&self, name: &str) -> bool {
        self.flag_map().remove(name).is_some()
    }

    fn get(&self, id: &str) -> Option<LiveNode> {
        self.lock().get(id).cloned()
    }
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EnrollmentToken> {
    Ok(EnrollmentToken {
        id: r.get(0)?,
        name: r.get(1)?,
        org: r.get(2)?,
        expires_at: r.get(3)?,
        max_uses: r.get(4)?,
        uses: r.get(5)?,
        created_at: r.get(6)?,
        revoked_at: r.get(7)?,
    })
}

const TOKEN_COLS: &str = "t.id, t.name, o.name, t.expires_at, t.max_uses, t.uses, t.created_at, t.revoked_at \
     FROM enrollment_tokens t JOIN orgs o ON o.id = t.org_id";

pub fn create_token(
    c: &Db<'_>,
    hasher: &KeyHasher,
    actor: &str,
    input: &EnrollmentTokenCreate,
) -> ApiResult<EnrollmentTokenWithSecret> {
    let org = find_org(c, &input.org).map_err(|_| ApiError::invalid_field("org", format!("no org `{}`", input.org)))?;
    if input.expires_in_s == 0 || input.expires_in_s > 365 * 86_400 {
        return Err(ApiError::invalid_field("expires_in_s", "must be 1 second to 365 days"));
    }
    let id = new_id("enroll");
    let name = input.name.clone().unwrap_or_else(|| id.clone());
    check_name("name", &name)?;
    let taken: bool =
        c.query_row("SELECT EXISTS (SELECT 1 FROM enrollment_tokens WHERE name = ?1 OR id = ?1)", [&name], |r| {
            r.get(0)
        })?;
    if taken {
        return Err(ApiError::conflict("An enrollment token with that name already exists."));
    }
    let secret = format!("sbe-{}", random_hex(24));
    let now = now_secs();
    let expires_at = now + input.expires_in_s as i64;
    c.execute(
        "INSERT INTO enrollment_tokens (id, org_id, name, hash, expires_at, max_uses, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![id, org.id, name, hasher.hash_str(secret.as_bytes()), expires_at, input.max_uses, now],
    )?;
    audit(
        c,
        actor,
        "create",
        "enrollment_token",
        &id,
        json!({"org": org.name, "name": name, "expires_at": expires_at, "max_uses": input.max_uses}),
    )?;
    Ok(EnrollmentTokenWithSecret { token: find_token(c, &id)?, secret })
}

pub fn find_token(c: &Db<'_>, id: &str) -> ApiResult<EnrollmentToken> {
    // By id, or by name (names are unique since they are checked at creation).
    c.query_row(
        &format!("SELECT {TOKEN_COLS} WHERE t.id = ?1 OR t.name = ?1 ORDER BY t.id = ?1 DESC LIMIT 1"),
        [id],
        token_row,
    )
    .optional()?
    .ok_or_else(|| ApiError::not_found("enrollment token", id))
}

pub fn list_tokens(c: &Db<'_>) -> ApiResult<Vec<EnrollmentToken>> {
    let mut st = c.prepare(&format!("SELECT {TOKEN_COLS} ORDER BY t.rowid"))?;
    let rows = st.query_map([], token_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn revoke_token(c: &Db<'_>, actor: &str, id: &str) -> ApiResult<EnrollmentToken> {
    let t = find_token(c, id)?;
    if t.revoked_at.is_none() {
        c.execute("UPDATE enrollment_tokens SET revoked_at = ?2 WHERE id = ?1", params![t.id, now_secs()])?;
        audit(c, actor, "revoke", "enrollment_token", &t.id, json!({}))?;
    }
    find_token(c, &t.id)
}

fn enroll_refused(message: String) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_enrollment_token", message)
}

/// Exchange an enrollment token for a node identity.
pub fn enroll(c: &Db<'_>, hasher: &KeyHasher, req: &EnrollRequest, heartbeat_ms: u64) -> ApiResult<EnrollResponse> {
    let hash = hasher.hash_str(req.token.expose().as_bytes());
    /// id, org id, org name, expires_at, max_uses, uses, revoked_at.
    type TokenState = (String, String, String, i64, u32, u32, Option<i64>);
    let found: Option<TokenState> = c
        .query_row(
            "SELECT t.id, t.org_id, o.name, t.expires_at, t.max_uses, t.uses, t.revoked_at \
             FROM enrollment_tokens t JOIN orgs o ON o.id = t.org_id WHERE t.hash = ?1",
            [&hash],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
        )
        .optional()?;
    let Some((token_id, org_id, org, expires_at, max_uses, uses, revoked_at)) = found else {
        return Err(enroll_refused("Unknown enrollment token.".into()));
    };
    if revoked_at.is_some() {
        return Err(enroll_refused("This enrollment token was revoked by an admin.".into()));
    }
    if now_secs() >= expires_at {
        return Err(enroll_refused(format!(
            "This enrollment token expired at {}.",
            switchboard_shared::time::format_rfc3339(expires_at)
        )));
    }
    if max_uses > 0 && uses >= max_uses {
        let what = if max_uses == 1 {
            "single-use and already used".to_string()
        } else {
            format!("used {uses} times already, its limit")
        };
        return Err(enroll_refused(format!("This enrollment token is {what}.")));
    }
    check_name("name", &req.name)?;
    if req.name.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(ApiError::invalid_field("name", "a node name has no spaces or slashes"));
    }
    let taken: bool = c.query_row("SELECT COUNT(*) > 0 FROM nodes WHERE name = ?1", [&req.name], |r| r.get(0))?;
    if taken {
        return Err(ApiError::conflict(format!(
            "A node named `{}` is enrolled already: pick another name (--name), or remove that node first.",
            req.name
        )));
    }
    let id = new_id("node");
    let secret = format!("sbn-{}", random_hex(32));
    let gateway_token = format!("sbg-{}", random_hex(32));
    let now = now_secs();
    c.execute(
        "INSERT INTO nodes (id, name, org_id, secret_hash, gateway_token, enrolled_with, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
        params![id, req.name, org_id, hasher.hash_str(secret.as_bytes()), c.sealer.seal(&gateway_token), token_id, now],
    )?;
    c.execute("UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = ?1", [&token_id])?;
    audit(
        c,
        &format!("enrollment:{token_id}"),
        "create",
        "node",
        &id,
        json!({"name": req.name, "org": org, "agent_version": req.version}),
    )?;
    Ok(EnrollResponse {
        credential: Secret::new(format!("{id}.{secret}")),
        node_id: id,
        name: req.name.clone(),
        org,
        gateway_token: Secret::new(gateway_token),
        heartbeat_ms,
    })
}

struct NodeRow {
    id: String,
    name: String,
    org: String,
    secret_hash: String,
    gateway_token: String,
    shared: bool,
    enabled: bool,
    disabled_reason: Option<String>,
    advert: Option<String>,
    created_at: i64,
}

const NODE_COLS: &str = "n.id, n.name, o.name, n.secret_hash, n.gateway_token, n.shared, n.enabled, \
     n.disabled_reason, n.advert, n.created_at FROM nodes n JOIN orgs o ON o.id = n.org_id";

fn node_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NodeRow> {
    Ok(NodeRow {
        id: r.get(0)?,
        name: r.get(1)?,
        org: r.get(2)?,
        secret_hash: r.get(3)?,
        gateway_token: r.get(4)?,
        shared: r.get(5)?,
        enabled: r.get(6)?,
        disabled_reason: r.get(7)?,
        advert: r.get(8)?,
        created_at: r.get(9)?,
    })
}

fn find_node_row(c: &Db<'_>, id_or_name: &str) -> ApiResult<NodeRow> {
    c.query_row(&format!("SELECT {NODE_COLS} WHERE n.id = ?1 OR n.name = ?1"), [id_or_name], node_row)
        .optional()?
        .ok_or_else(|| ApiError::not_found("node", id_or_name))
}

fn all_nodes(c: &Db<'_>) -> ApiResult<Vec<NodeRow>> {
    let mut st = c.prepare(&format!("SELECT {NODE_COLS} ORDER BY n.rowid"))?;
    let rows = st.query_map([], node_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn view(row: NodeRow, live: &Live) -> NodeView {
    let now = live.get(&row.id);
    let stored: Option<Heartbeat> = row.advert.as_deref().and_then(|a| serde_json::from_str(a).ok());
    let beat = now.as_ref().map(|n| &n.beat).or(stored.as_ref());
    let flags = live.flags(&row.name);
    let quarantined = live.quarantined(&row.name);
    let status = match (&now, row.enabled) {
        (_, false) => "disabled",
        (None, true) => "offline",
        (Some(_), true) if quarantined => "flagged",
        (Some(n), true) => n.status(),
    };
    let flag_message = (flags > 0).then(|| {
        format!(
            "reported usage past the documented maxima {flags} time(s){}",
            if quarantined { "; out of routing until re-enabled (PATCH {\"enabled\": true})" } else { "" }
        )
    });
    NodeView {
        status: status.to_string(),
        routable: row.enabled && !quarantined && now.as_ref().is_some_and(LiveNode::routable),
        usage_flags: flags,
        enabled: row.enabled,
        shared: row.shared,
        disabled_reason: row.disabled_reason,
        models: beat.map(|b| b.models.clone()).unwrap_or_default(),
        capacity: beat.map_or(0, |b| b.capacity),
        reach: beat.map(|b| match &b.reach {
            NodeReach::Direct { url, tls_pin: None } => format!("direct {url}"),
            NodeReach::Direct { url, tls_pin: Some(pin) } => format!("direct {url} pinned {pin}"),
            NodeReach::Outbound => "outbound".to_string(),
        }),
        mode: beat.map(|b| b.mode.clone()),
        agent_version: beat.map(|b| b.version.clone()),
        in_flight: now.as_ref().map(|n| n.beat.in_flight),
        load: now.as_ref().map(|n| n.beat.load),
        message: flag_message.or_else(|| beat.map(|b| b.message.clone()).filter(|m| !m.is_empty())),
        last_heartbeat_ms: now.as_ref().map(|n| n.seen_unix_ms),
        id: row.id,
        name: row.name,
        org: row.org,
        created_at: row.created_at,
    }
}

pub fn list_nodes(c: &Db<'_>, live: &Live) -> ApiResult<Vec<NodeView>> {
    Ok(all_nodes(c)?.into_iter().map(|r| view(r, live)).collect())
}

pub fn get_node(c: &Db<'_>, live: &Live, id: &str) -> ApiResult<NodeView> {
    Ok(view(find_node_row(c, id)?, live))
}

pub fn update_node(c: &Db<'_>, live: &Live, actor: &str, id: &str, u: &NodeUpdate) -> ApiResult<NodeView> {
    let row = find_node_row(c, id)?;
    let enabled = u.enabled.unwrap_or(row.enabled);
    let shared = u.shared.unwrap_or(row.shared);
    let reason = if enabled { None } else { u.reason.clone().or(row.disabled_reason.clone()) };
    if let Some(r) = &reason {
        if r.len() > 500 || r.chars().any(char::is_control) {
            return Err(ApiError::invalid_field("reason", "at most 500 printable characters"));
        }
    }
    if enabled != row.enabled || shared != row.shared || reason != row.disabled_reason {
        c.execute(
            "UPDATE nodes SET enabled = ?2, shared = ?3, disabled_reason = ?4, updated_at = ?5 WHERE id = ?1",
            params![row.id, enabled, shared, reason, now_secs()],
        )?;
        audit(c, actor, "update", "node", &row.id, json!({"enabled": enabled, "shared": shared, "reason": reason}))?;
    }
    if u.enabled == Some(true) && live.clear_flags(&row.name) {
        audit(c, actor, "update", "node", &row.id, json!({"usage_flags": "cleared"}))?;
    }
    get_node(c, live, &row.id)
}

pub fn delete_node(c: &Db<'_>, live: &Live, actor: &str, id: &str) -> ApiResult<String> {
    let row = find_node_row(c, id)?;
    c.execute("DELETE FROM nodes WHERE id = ?1", [&row.id])?;
    audit(c, actor, "delete", "node", &row.id, json!({"name": row.name}))?;
    live.forget(&row.id);
    Ok(row.id)
}

fn node_refused(code: &'static str, status: StatusCode, message: String) -> ApiError {
    ApiError::new(status, code, message)
}

/// Check a heartbeat's credential and content, and record it. Returns the
/// node's id, whether the routed facts changed, and the reply's status.
pub fn heartbeat(
    c: &Db<'_>,
    hasher: &KeyHasher,
    live: &Live,
    credential: &str,
    beat: Heartbeat,
) -> ApiResult<(String, bool, String, bool)> {
    let (id, secret) = credential.split_once('.').ok_or_else(|| {
        node_refused("invalid_node_credential", StatusCode::UNAUTHORIZED, "Malformed node credential.".into())
    })?;
    let row =
        c.query_row(&format!("SELECT {NODE_COLS} WHERE n.id = ?1"), [id], node_row).optional()?.ok_or_else(|| {
            node_refused(
                "node_unknown",
                StatusCode::UNAUTHORIZED,
                format!("Node `{id}` is not enrolled here (an admin removed it, or it never was): enroll it again."),
            )
        })?;
    if hasher.hash_str(secret.as_bytes()) != row.secret_hash {
        return Err(node_refused(
            "invalid_node_credential",
            StatusCode::UNAUTHORIZED,
            "Incorrect node credential.".into(),
        ));
    }
    if !row.enabled {
        live.forget(&row.id);
        let why = row.disabled_reason.as_deref().unwrap_or("no reason given");
        return Err(node_refused(
            "node_revoked",
            StatusCode::FORBIDDEN,
            format!("Node `{}` was disabled by an admin: {why}.", row.name),
        ));
    }
    check_heartbeat(&beat)?;
    let changed = live.record(&row.id, beat.clone());
    if changed {
        c.execute(
            "UPDATE nodes SET advert = ?2, last_seen_at = ?3 WHERE id = ?1",
            params![row.id, serde_json::to_string(&beat).unwrap_or_default(), now_secs()],
        )?;
    }
    let node = live.get(&row.id);
    let status = node.as_ref().map_or("online", LiveNode::status).to_string();
    let routable = node.as_ref().is_some_and(LiveNode::routable);
    Ok((row.id, changed, status, routable))
}

/// Check a heartbeat's content (models, capacity, reach, sizes).
pub fn check_heartbeat(b: &Heartbeat) -> ApiResult<()> {
    if b.models.len() > MAX_MODELS {
        return Err(ApiError::invalid_field("models", format!("at most {MAX_MODELS} models")));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, m) in b.models.iter().enumerate() {
        check_node_model(&m.name)
            .and_then(|_| check_node_model(&m.local))
            .map_err(|e| ApiError::invalid_field(&format!("models[{i}]"), e))?;
        if !seen.insert(m.name.as_str()) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "model_name_clash",
                format!("Two local models are advertised as `{}`: rename one (--rename local=public).", m.name),
            )
            .param(format!("models[{i}].name")));
        }
    }
    if b.capacity == 0 || b.capacity > MAX_CAPACITY {
        return Err(ApiError::invalid_field("capacity", format!("must be 1 to {MAX_CAPACITY}")));
    }
    b.reach.check().map_err(|(field, e)| ApiError::invalid_field(&format!("reach.{field}"), e))?;
    if b.version.len() > 64 || b.mode.len() > 200 || b.message.len() > 1000 {
        return Err(ApiError::invalid_field("version", "version, mode or message too long"));
    }
    if !b.load.is_finite() || b.load < 0.0 {
        return Err(ApiError::invalid_field("load", "must be a finite number, not negative"));
    }
    Ok(())
}

/// At start: take each enabled node's last advertisement (stored with every
/// heartbeat that changed what gateways route on) as if it had just arrived,
/// so an admin restart does not drop every node out of routing until its next
/// heartbeat (and outbound agents' connections with it). A node that is
/// really gone expires like any silent one, after 2.5 intervals; until then
/// gateways fail over from it. Returns how many were restored.
pub fn restore_live(c: &Db<'_>, live: &Live) -> ApiResult<usize> {
    let mut restored = 0;
    for row in all_nodes(c)? {
        let advert = row.advert.as_deref().filter(|_| row.enabled);
        let Some(beat) = advert.and_then(|a| serde_json::from_str::<Heartbeat>(a).ok()) else { continue };
        live.record(&row.id, beat);
        restored += 1;
    }
    Ok(restored)
}

/// The nodes gateways should know: enabled and online.
pub fn spec_nodes(c: &Db<'_>, live: &Live) -> ApiResult<Vec<NodeSpec>> {
    let mut out = Vec::new();
    for row in all_nodes(c)? {
        if !row.enabled {
            continue;
        }
        let Some(n) = live.get(&row.id) else { continue };
        let gateway_token = c.sealer.open(&row.gateway_token).map_err(ApiError::internal)?;
        out.push(NodeSpec {
            routable: n.routable() && !live.quarantined(&row.name),
            id: row.id,
            name: row.name,
            org: row.org,
            shared: row.shared,
            models: n.beat.models,
            capacity: n.beat.capacity,
            reach: n.beat.reach,
            gateway_token: Secret::new(gateway_token),
            secret_hash: row.secret_hash,
        });
    }
    Ok(out)
}
