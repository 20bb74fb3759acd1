//! Reads and writes of every resource, inside the caller's transaction. Each
//! write records an audit entry (secrets redacted) in the same transaction,
//! so a change and its record commit or fail together.

use crate::crypt::Sealer;
use crate::db::{new_id, now_millis, now_secs, random_hex};
use crate::error::{ApiError, ApiResult};
use crate::model::*;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::{json, Value};
use switchboard_shared::config::{
    default_triggers, KeySpec, ModelSpec, PriceSpec, RetrySpec, RoutingSpec, Strategy, TargetSpec, UpstreamSpec,
};
use switchboard_shared::{KeyHasher, Secret};

/// The largest list `offset` (an `i64` in SQLite, with room for a page).
pub const MAX_OFFSET: u64 = (i64::MAX as u64) - 2_000;

/// The database as store functions see it: the connection (in the caller's
/// transaction) and the sealer for provider secrets at rest.
pub struct Db<'a> {
    pub conn: &'a Connection,
    pub sealer: &'a Sealer,
}

impl std::ops::Deref for Db<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

/// A provider spec as stored: secrets sealed.
fn seal_spec(sealer: &Sealer, spec: &ProviderSpec) -> String {
    let mut sealed = spec.clone();
    sealed.api_keys = spec.api_keys.iter().map(|k| Secret::new(sealer.seal(k.expose()))).collect();
    sealed.headers = spec.headers.iter().map(|(n, v)| (n.clone(), Secret::new(sealer.seal(v.expose())))).collect();
    json!(sealed).to_string()
}

/// A stored provider spec, secrets opened.
fn open_spec(sealer: &Sealer, stored: &str) -> ApiResult<ProviderSpec> {
    let mut spec: ProviderSpec =
        serde_json::from_str(stored).map_err(|_| ApiError::internal("a stored provider is unreadable"))?;
    let open = |v: &Secret| sealer.open(v.expose()).map(Secret::new).map_err(ApiError::internal);
    spec.api_keys = spec.api_keys.iter().map(open).collect::<ApiResult<_>>()?;
    spec.headers = spec.headers.iter().map(|(n, v)| Ok((n.clone(), open(v)?))).collect::<ApiResult<_>>()?;
    Ok(spec)
}

pub fn check_name(field: &str, name: &str) -> ApiResult<()> {
    switchboard_shared::limits::check_name(name).map_err(|m| ApiError::invalid_field(field, format!("`{field}` {m}")))
}

/// An org's name may not be another org's id (it could never be found by name).
fn check_org_name(c: &Db<'_>, name: &str) -> ApiResult<()> {
    check_name("name", name)?;
    let taken: bool = c.query_row("SELECT EXISTS (SELECT 1 FROM orgs WHERE id = ?1)", [name], |r| r.get(0))?;
    if taken {
        return Err(ApiError::conflict("That name is another org's id; choose another."));
    }
    Ok(())
}

/// The id of the newest audit entry (0 when there is none).
pub fn last_audit_id(c: &Db<'_>) -> ApiResult<i64> {
    Ok(c.query_row("SELECT COALESCE(MAX(id), 0) FROM audit_log", [], |r| r.get(0))?)
}

pub fn audit(c: &Db<'_>, actor: &str, action: &str, resource: &str, id: &str, change: Value) -> ApiResult<()> {
    c.execute(
        "INSERT INTO audit_log (at, actor, action, resource, resource_id, change) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![now_millis(), actor, action, resource, id, change.to_string()],
    )?;
    Ok(())
}

fn page<T>(mut data: Vec<T>, q: &PageQuery) -> Page<T> {
    let more = data.len() as u64 > q.limit;
    data.truncate(q.limit as usize);
    Page { object: "list", data, next_offset: more.then_some(q.offset.saturating_add(q.limit)) }
}

fn limit(q: &PageQuery) -> ApiResult<(i64, i64)> {
    if q.limit == 0 || q.limit > 1000 {
        return Err(ApiError::invalid_field("limit", "`limit` must be 1 to 1000"));
    }
    // SQLite takes an i64; past it an offset would wrap to the first page.
    if q.offset > MAX_OFFSET {
        return Err(ApiError::invalid_field("offset", format!("`offset` must be 0 to {MAX_OFFSET}")));
    }
    Ok((q.limit as i64 + 1, q.offset as i64))
}

fn json_col<T: serde::de::DeserializeOwned>(r: &Row, i: usize) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    serde_json::from_str(&s)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
}

// ---------------------------------------------------------------- orgs

fn org_row(r: &Row) -> rusqlite::Result<Org> {
    Ok(Org { id: r.get(0)?, name: r.get(1)?, created_at: r.get(2)?, updated_at: r.get(3)? })
}

pub fn list_orgs(c: &Db<'_>, q: &PageQuery) -> ApiResult<Page<Org>> {
    let (n, off) = limit(q)?;
    let mut st = c.prepare("SELECT id, name, created_at, updated_at FROM orgs ORDER BY rowid LIMIT ?1 OFFSET ?2")?;
    let rows = st.query_map(params![n, off], org_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(page(rows, q))
}

pub fn find_org(c: &Db<'_>, id_or_name: &str) -> ApiResult<Org> {
    c.query_row("SELECT id, name, created_at, updated_at FROM orgs WHERE id = ?1 OR name = ?1", [id_or_name], org_row)
        .optional()?
        .ok_or_else(|| ApiError::not_found("org", id_or_name))
}

pub fn create_org(c: &Db<'_>, actor: &str, input: &OrgInput) -> ApiResult<Org> {
    create_org_with_id(c, actor, &new_id("org"), &input.name)
}

fn create_org_with_id(c: &Db<'_>, actor: &str, id: &str, name: &str) -> ApiResult<Org> {
    check_org_name(c, name)?;
    let now = now_secs();
    c.execute("INSERT INTO orgs (id, name, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)", params![id, name, now])?;
    audit(c, actor, "create", "org", id, json!({"name": name}))?;
    find_org(c, id)
}

pub fn update_org(c: &Db<'_>, actor: &str, id: &str, input: &OrgInput) -> ApiResult<Org> {
    let org = find_org(c, id)?;
    if org.name == input.name {
        return Ok(org);
    }
    check_org_name(c, &input.name)?;
    c.execute("UPDATE orgs SET name = ?2, updated_at = ?3 WHERE id = ?1", params![org.id, input.name, now_secs()])?;
    audit(c, actor, "update", "org", &org.id, json!({"name": {"from": org.name, "to": input.name}}))?;
    find_org(c, &org.id)
}

pub fn delete_org(c: &Db<'_>, actor: &str, id: &str) -> ApiResult<()> {
    let org = find_org(c, id)?;
    let keys: i64 = c.query_row("SELECT COUNT(*) FROM api_keys WHERE org_id = ?1", [&org.id], |r| r.get(0))?;
    c.execute("DELETE FROM orgs WHERE id = ?1", [&org.id])?;
    audit(c, actor, "delete", "org", &org.id, json!({"name": org.name, "keys_deleted": keys}))?;
    Ok(())
}

// ---------------------------------------------------------------- API keys

const KEY_COLS: &str =
    "k.id, k.org_id, o.name, k.name, k.hint, k.models, k.expires_at, k.enabled, k.created_at, k.updated_at, k.test";

fn key_row(r: &Row) -> rusqlite::Result<Key> {
    Ok(Key {
        id: r.get(0)?,
        org_id: r.get(1)?,
        org: r.get(2)?,
        name: r.get(3)?,
        hint: r.get(4)?,
        models: json_col(r, 5)?,
        expires_at: r.get(6)?,
        enabled: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
        test: r.get(10)?,
    })
}

pub fn list_keys(c: &Db<'_>, q: &PageQuery, org: Option<&str>) -> ApiResult<Page<Key>> {
    let (n, off) = limit(q)?;
    let org_id = match org {
        Some(o) => Some(find_org(c, o)?.id),
        None => None,
    };
    let mut st = c.prepare(&format!(
        "SELECT {KEY_COLS} FROM api_keys k JOIN orgs o ON o.id = k.org_id \
         WHERE (?3 IS NULL OR k.org_id = ?3) ORDER BY k.rowid LIMIT ?1 OFFSET ?2"
    ))?;
    let rows = st.query_map(params![n, off, org_id], key_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(page(rows, q))
}

pub fn find_key(c: &Db<'_>, id: &str) -> ApiResult<Key> {
    c.query_row(
        &format!("SELECT {KEY_COLS} FROM api_keys k JOIN orgs o ON o.id = k.org_id WHERE k.id = ?1"),
        [id],
        key_row,
    )
    .optional()?
    .ok_or_else(|| ApiError::not_found("key", id))
}

/// A new client key: `sk-sb-` and 64 hex digits (256 random bits).
fn new_secret(h: &KeyHasher) -> (String, String, String) {
    let secret = format!("sk-sb-{}", random_hex(32));
    let hash = h.hash_str(secret.as_bytes());
    let hint = format!("sk-sb-...{}", &secret[secret.len() - 4..]);
    (secret, hash, hint)
}

/// A key's expiry (Unix seconds), in the range the file takes too.
fn check_expiry(expires_at: Option<i64>) -> ApiResult<()> {
    match expires_at {
        None => Ok(()),
        Some(t) => u64::try_from(t)
            .map_err(|_| {
                format!("must be between 0 and {}, got a negative number", switchboard_shared::limits::EXPIRES_AT_S.max)
            })
            .and_then(|t| switchboard_shared::limits::EXPIRES_AT_S.check(t))
            .map_err(|m| ApiError::invalid_field("expires_at", m)),
    }
}

fn check_models(models: &[String]) -> ApiResult<()> {
    if models.is_empty() {
        return Err(ApiError::invalid_field("models", "`models` needs at least one name, or \"*\" for all"));
    }
    for m in models {
        check_name("models", m)?;
    }
    Ok(())
}

pub fn create_key(c: &Db<'_>, h: &KeyHasher, actor: &str, input: &KeyCreate) -> ApiResult<KeyWithSecret> {
    let org = find_org(c, &input.org).map_err(|_| ApiError::invalid_field("org", format!("no org `{}`", input.org)))?;
    check_name("name", &input.name)?;
    check_models(&input.models)?;
    check_expiry(input.expires_at)?;
    let (secret, hash, hint) = new_secret(h);
    let id = new_id("key");
    let now = now_secs();
    c.execute(
        "INSERT INTO api_keys (id, org_id, name, hash, hint, models, expires_at, enabled, created_at, updated_at, test) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)",
        params![
            id,
            org.id,
            input.name,
            hash,
            hint,
            json!(input.models).to_string(),
            input.expires_at,
            input.enabled,
            now,
            input.test
        ],
    )?;
    audit(
        c,
        actor,
        "create",
        "key",
        &id,
        json!({"org": org.id, "name": input.name, "models": input.models, "expires_at": input.expires_at, "enabled": input.enabled, "test": input.test, "hint": hint}),
    )?;
    Ok(KeyWithSecret { key: find_key(c, &id)?, key_secret: secret })
}

pub fn update_key(c: &Db<'_>, actor: &str, id: &str, u: &KeyUpdate) -> ApiResult<Key> {
    let before = find_key(c, id)?;
    let mut after = before.clone();
    if let Some(n) = &u.name {
        check_name("name", n)?;
        after.name = n.clone();
    }
    if let Some(m) = &u.models {
        check_models(m)?;
        after.models = m.clone();
    }
    if let Some(e) = u.expires_at {
        check_expiry(e)?;
        after.expires_at = e;
    }
    if let Some(en) = u.enabled {
        after.enabled = en;
    }
    if let Some(t) = u.test {
        after.test = t;
    }
    if after == before {
        return Ok(before);
    }
    c.execute(
        "UPDATE api_keys SET name = ?2, models = ?3, expires_at = ?4, enabled = ?5, updated_at = ?6, test = ?7 WHERE id = ?1",
        params![id, after.name, json!(after.models).to_string(), after.expires_at, after.enabled, now_secs(), after.test],
    )?;
    audit(c, actor, "update", "key", id, diff(&json!(before), &json!(after)))?;
    find_key(c, id)
}

pub fn rotate_key(c: &Db<'_>, h: &KeyHasher, actor: &str, id: &str) -> ApiResult<KeyWithSecret> {
    let before = find_key(c, id)?;
    let (secret, hash, hint) = new_secret(h);
    c.execute(
        "UPDATE api_keys SET hash = ?2, hint = ?3, updated_at = ?4 WHERE id = ?1",
        params![id, hash, hint, now_secs()],
    )?;
    audit(c, actor, "rotate", "key", id, json!({"hint": {"from": before.hint, "to": hint}}))?;
    Ok(KeyWithSecret { key: find_key(c, id)?, key_secret: secret })
}

pub fn delete_key(c: &Db<'_>, actor: &str, id: &str) -> ApiResult<()> {
    let k = find_key(c, id)?;
    c.execute("DELETE FROM api_keys WHERE id = ?1", [id])?;
    audit(c, actor, "delete", "key", id, json!({"org": k.org_id, "name": k.name, "hint": k.hint}))?;
    Ok(())
}

// ---------------------------------------------------------------- providers

fn provider_view(id: String, name: String, spec: ProviderSpec, created_at: i64, updated_at: i64) -> Provider {
    Provider {
        id,
        name,
        base_url: spec.base_url,
        api_keys: spec.api_keys.iter().map(Secret::hint).collect(),
        headers: spec.headers.iter().map(|(k, v)| (k.clone(), v.hint())).collect(),
        kind: spec.kind.unwrap_or_default().as_str(),
        ca_file: spec.ca_file,
        connect_timeout_ms: spec.connect_timeout_ms,
        first_byte_timeout_ms: spec.first_byte_timeout_ms,
        read_timeout_ms: spec.read_timeout_ms,
        models: spec.models,
        eject_after_failures: spec.eject_after_failures,
        eject_ms: spec.eject_ms,
        probe_interval_ms: spec.probe_interval_ms,
        probe_path: spec.probe_path,
        require_finish_reason: spec.require_finish_reason,
        created_at,
        updated_at,
    }
}

type ProviderRow = (String, String, ProviderSpec, i64, i64);

fn provider_row(r: &Row) -> rusqlite::Result<(String, String, String, i64, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn opened(c: &Db<'_>, row: (String, String, String, i64, i64)) -> ApiResult<ProviderRow> {
    let (id, name, stored, created, updated) = row;
    Ok((id, name, open_spec(c.sealer, &stored)?, created, updated))
}

fn find_provider_raw(c: &Db<'_>, id_or_name: &str) -> ApiResult<ProviderRow> {
    let row = c
        .query_row(
            "SELECT id, name, spec, created_at, updated_at FROM providers WHERE id = ?1 OR name = ?1",
            [id_or_name],
            provider_row,
        )
        .optional()?
        .ok_or_else(|| ApiError::not_found("provider", id_or_name))?;
    opened(c, row)
}

pub fn find_provider(c: &Db<'_>, id_or_name: &str) -> ApiResult<Provider> {
    let (id, name, spec, ca, ua) = find_provider_raw(c, id_or_name)?;
    Ok(provider_view(id, name, spec, ca, ua))
}

pub fn list_providers(c: &Db<'_>, q: &PageQuery) -> ApiResult<Page<Provider>> {
    let (n, off) = limit(q)?;
    let mut st =
        c.prepare("SELECT id, name, spec, created_at, updated_at FROM providers ORDER BY rowid LIMIT ?1 OFFSET ?2")?;
    let rows = st
        .query_map(params![n, off], provider_row)?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .map(|row| opened(c, row).map(|(id, name, spec, ca, ua)| provider_view(id, name, spec, ca, ua)))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(page(rows, q))
}

/// What the audit log keeps of a provider: everything but secret values.
fn provider_audit(name: &str, spec: &ProviderSpec) -> Value {
    json!(provider_view(String::new(), name.to_string(), spec.clone(), 0, 0))
        .as_object()
        .map(|o| {
            let mut o = o.clone();
            for k in ["id", "created_at", "updated_at"] {
                o.remove(k);
            }
            Value::Object(o)
        })
        .unwrap_or(Value::Null)
}

fn check_provider(spec: &ProviderSpec) -> ApiResult<()> {
    switchboard_shared::url::BaseUrl::parse(&spec.base_url).map_err(|e| ApiError::invalid_field("base_url", e))?;
    let mut seen = std::collections::HashSet::new();
    for (i, p) in spec.models.iter().enumerate() {
        check_name(&format!("models[{i}].name"), &p.name)?;
        let cache = [("cache_read_per_mtok", p.cache_read_per_mtok), ("cache_write_per_mtok", p.cache_write_per_mtok)];
        let cache = cache.into_iter().filter_map(|(f, v)| v.map(|v| (f, v)));
        for (field, v) in [("prompt_per_mtok", p.prompt_per_mtok), ("completion_per_mtok", p.completion_per_mtok)]
            .into_iter()
            .chain(cache)
        {
            switchboard_shared::limits::check_price(v)
                .map_err(|m| ApiError::invalid_field(&format!("models[{i}].{field}"), format!("`{field}` {m}")))?;
        }
        if !seen.insert(p.name.as_str()) {
            return Err(ApiError::invalid_field(&format!("models[{i}].name"), format!("`{}` is priced twice", p.name)));
        }
    }
    Ok(())
}

pub fn create_provider(c: &Db<'_>, actor: &str, input: ProviderCreate) -> ApiResult<Provider> {
    let (name, spec) = input.into_parts();
    insert_provider(c, actor, &new_id("prov"), &name, &spec)
}

fn insert_provider(c: &Db<'_>, actor: &str, id: &str, name: &str, spec: &ProviderSpec) -> ApiResult<Provider> {
    check_name("name", name)?;
    check_provider(spec)?;
    let now = now_secs();
    c.execute(
        "INSERT INTO providers (id, name, spec, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)",
        params![id, name, seal_spec(c.sealer, spec), now],
    )?;
    audit(c, actor, "create", "provider", id, provider_audit(name, spec))?;
    find_provider(c, id)
}

pub fn update_provider(c: &Db<'_>, actor: &str, id: &str, u: ProviderUpdate) -> ApiResult<Provider> {
    let (id, name, before, _, _) = find_provider_raw(c, id)?;
    let mut spec = before.clone();
    let mut new_name = name.clone();
    if let Some(n) = u.name {
        check_name("name", &n)?;
        new_name = n;
    }
    if let Some(v) = u.base_url {
        spec.base_url = v;
    }
    if let Some(v) = u.api_keys {
        spec.api_keys = v.unwrap_or_default();
    }
    if let Some(v) = u.headers {
        spec.headers = v.unwrap_or_default();
    }
    if let Some(v) = u.ca_file {
        spec.ca_file = v;
    }
    if let Some(v) = u.connect_timeout_ms {
        spec.connect_timeout_ms = v;
    }
    if let Some(v) = u.first_byte_timeout_ms {
        spec.first_byte_timeout_ms = v;
    }
    if let Some(v) = u.read_timeout_ms {
        spec.read_timeout_ms = v;
    }
    if let Some(v) = u.models {
        spec.models = v.unwrap_or_default();
    }
    if let Some(v) = u.eject_after_failures {
        spec.eject_after_failures = v;
    }
    if let Some(v) = u.eject_ms {
        spec.eject_ms = v;
    }
    if let Some(v) = u.probe_interval_ms {
        spec.probe_interval_ms = v;
    }
    if let Some(v) = u.probe_path {
        spec.probe_path = v;
    }
    if let Some(v) = u.require_finish_reason {
        spec.require_finish_reason = v;
    }
    if let Some(k) = u.kind {
        spec.kind = (!k.is_openai()).then_some(k);
    }
    write_provider(c, actor, &id, &name, &before, &new_name, &spec)
}

fn write_provider(
    c: &Db<'_>,
    actor: &str,
    id: &str,
    name: &str,
    before: &ProviderSpec,
    new_name: &str,
    spec: &ProviderSpec,
) -> ApiResult<Provider> {
    if new_name == name && spec == before {
        return find_provider(c, id);
    }
    check_provider(spec)?;
    c.execute(
        "UPDATE providers SET name = ?2, spec = ?3, updated_at = ?4 WHERE id = ?1",
        params![id, new_name, seal_spec(c.sealer, spec), now_secs()],
    )?;
    let mut change = diff(&provider_audit(name, before), &provider_audit(new_name, spec));
    if before.api_keys != spec.api_keys
        && provider_audit(name, before)["api_keys"] == provider_audit(new_name, spec)["api_keys"]
    {
        // Same hints, different keys: say so without saying what.
        change["api_keys"] = json!("changed");
    }
    audit(c, actor, "update", "provider", id, change)?;
    find_provider(c, id)
}

pub fn delete_provider(c: &Db<'_>, actor: &str, id: &str) -> ApiResult<()> {
    let (id, name, spec, _, _) = find_provider_raw(c, id)?;
    let users: Vec<String> = routes_all(c)?
        .into_iter()
        .filter(|r| r.spec.targets.iter().any(|t| t.provider == id))
        .map(|r| r.name)
        .collect();
    if !users.is_empty() {
        return Err(ApiError::conflict(format!("Provider `{name}` is used by routes: {}.", users.join(", "))));
    }
    c.execute("DELETE FROM providers WHERE id = ?1", [&id])?;
    audit(c, actor, "delete", "provider", &id, provider_audit(&name, &spec))?;
    Ok(())
}

// ---------------------------------------------------------------- routes

fn route_row(r: &Row) -> rusqlite::Result<Route> {
    Ok(Route { id: r.get(0)?, name: r.get(1)?, spec: json_col(r, 2)?, created_at: r.get(3)?, updated_at: r.get(4)? })
}

fn routes_all(c: &Db<'_>) -> ApiResult<Vec<Route>> {
    let mut st = c.prepare("SELECT id, name, spec, created_at, updated_at FROM routes ORDER BY rowid")?;
    let rows = st.query_map([], route_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn list_routes(c: &Db<'_>, q: &PageQuery) -> ApiResult<Page<Route>> {
    let (n, off) = limit(q)?;
    let mut st =
        c.prepare("SELECT id, name, spec, created_at, updated_at FROM routes ORDER BY rowid LIMIT ?1 OFFSET ?2")?;
    let rows = st.query_map(params![n, off], route_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(page(rows, q))
}

pub fn find_route(c: &Db<'_>, id_or_name: &str) -> ApiResult<Route> {
    c.query_row(
        "SELECT id, name, spec, created_at, updated_at FROM routes WHERE id = ?1 OR name = ?1",
        [id_or_name],
        route_row,
    )
    .optional()?
    .ok_or_else(|| ApiError::not_found("route", id_or_name))
}

/// Check a route and store its targets by provider id.
fn normalize_route(c: &Db<'_>, spec: &mut RouteSpec) -> ApiResult<()> {
    if Strategy::parse(&spec.strategy).is_none() {
        return Err(ApiError::invalid_field(
            "strategy",
            "`strategy` must be priority, weighted, round_robin, least_latency, cheapest or least_busy",
        ));
    }
    if spec.targets.is_empty() {
        return Err(ApiError::invalid_field("targets", "a route needs at least one target"));
    }
    for (i, t) in spec.targets.iter_mut().enumerate() {
        for (field, v) in [("prompt_per_mtok", t.prompt_per_mtok), ("completion_per_mtok", t.completion_per_mtok)] {
            if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                return Err(ApiError::invalid_field(
                    &format!("targets[{i}].{field}"),
                    "must be finite and not negative",
                ));
            }
        }
        if let Some(pool) = &t.nodes {
            if !t.provider.is_empty() || t.model.is_some() {
                return Err(ApiError::invalid_field(
                    &format!("targets[{i}]"),
                    "a node pool target takes `nodes` (the advertised model), not `provider` or `model`",
                ));
            }
            check_name(&format!("targets[{i}].nodes"), pool)?;
            continue;
        }
        let (id, ..) = find_provider_raw(c, &t.provider).map_err(|_| {
            ApiError::invalid_field(&format!("targets[{i}].provider"), format!("no provider `{}`", t.provider))
        })?;
        t.provider = id;
        if let Some(m) = &t.model {
            check_name(&format!("targets[{i}].model"), m)?;
        }
        if t.weight == 0 {
            return Err(ApiError::invalid_field(&format!("targets[{i}].weight"), "weight must be at least 1"));
        }
    }
    Ok(())
}

pub fn create_route(c: &Db<'_>, actor: &str, input: RouteCreate) -> ApiResult<Route> {
    let (name, spec) = input.into_parts();
    insert_route(c, actor, &new_id("route"), &name, spec)
}

fn insert_route(c: &Db<'_>, actor: &str, id: &str, name: &str, mut spec: RouteSpec) -> ApiResult<Route> {
    check_name("name", name)?;
    if name == "*" {
        return Err(ApiError::invalid_field("name", "`*` is reserved"));
    }
    normalize_route(c, &mut spec)?;
    let now = now_secs();
    c.execute(
        "INSERT INTO routes (id, name, spec, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)",
        params![id, name, json!(spec).to_string(), now],
    )?;
    audit(c, actor, "create", "route", id, json!({"name": name, "spec": spec}))?;
    find_route(c, id)
}

pub fn update_route(c: &Db<'_>, actor: &str, id: &str, u: RouteUpdate) -> ApiResult<Route> {
    let before = find_route(c, id)?;
    let mut after = before.clone();
    if let Some(n) = u.name {
        check_name("name", &n)?;
        after.name = n;
    }
    if let Some(s) = u.strategy {
        after.spec.strategy = s;
    }
    if let Some(t) = u.targets {
        after.spec.targets = t;
    }
    if let Some(r) = u.retry {
        after.spec.retry = r.unwrap_or_default();
    }
    if let Some(a) = u.allow_strategy_header {
        after.spec.allow_strategy_header = a;
    }
    if let Some(f) = u.failover_on {
        after.spec.failover_on = f;
    }
    if let Some(cache) = u.cache {
        after.spec.cache = cache.unwrap_or_default();
    }
    normalize_route(c, &mut after.spec)?;
    if after.name == before.name && after.spec == before.spec {
        return Ok(before);
    }
    c.execute(
        "UPDATE routes SET name = ?2, spec = ?3, updated_at = ?4 WHERE id = ?1",
        params![before.id, after.name, json!(after.spec).to_string(), now_secs()],
    )?;
    audit(
        c,
        actor,
        "update",
        "route",
        &before.id,
        diff(&json!({"name": before.name, "spec": before.spec}), &json!({"name": after.name, "spec": after.spec})),
    )?;
    find_route(c, &before.id)
}

pub fn delete_route(c: &Db<'_>, actor: &str, id: &str) -> ApiResult<()> {
    let r = find_route(c, id)?;
    let mut st = c.prepare("SELECT id, models FROM api_keys ORDER BY rowid")?;
    let users: Vec<String> = st
        .query_map([], |row| Ok((row.get::<_, String>(0)?, json_col::<Vec<String>>(row, 1)?)))?
        .filter_map(Result::ok)
        .filter(|(_, models)| models.contains(&r.name))
        .map(|(id, _)| id)
        .collect();
    if !users.is_empty() {
        return Err(ApiError::conflict(format!(
            "Route `{}` is named by keys: {}. Take it out of their `models` first.",
            r.name,
            users.join(", ")
        )));
    }
    c.execute("DELETE FROM routes WHERE id = ?1", [&r.id])?;
    audit(c, actor, "delete", "route", &r.id, json!({"name": r.name, "spec": r.spec}))?;
    Ok(())
}

// ---------------------------------------------------------------- admin tokens

fn token_row(r: &Row) -> rusqlite::Result<AdminToken> {
    Ok(AdminToken { id: r.get(0)?, name: r.get(1)?, role: r.get(2)?, created_at: r.get(3)?, revoked_at: r.get(4)? })
}

pub fn list_tokens(c: &Db<'_>, q: &PageQuery) -> ApiResult<Page<AdminToken>> {
    let (n, off) = limit(q)?;
    let mut st =
        c.prepare("SELECT id, name, role, created_at, revoked_at FROM admin_tokens ORDER BY rowid LIMIT ?1 OFFSET ?2")?;
    let rows = st.query_map(params![n, off], token_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(page(rows, q))
}

pub fn token_count(c: &Db<'_>) -> ApiResult<i64> {
    Ok(c.query_row("SELECT COUNT(*) FROM admin_tokens WHERE revoked_at IS NULL", [], |r| r.get(0))?)
}

/// Store a token by its hash; returns the record.
pub fn insert_token(
    c: &Db<'_>,
    h: &KeyHasher,
    actor: &str,
    name: &str,
    role: &str,
    secret: &str,
) -> ApiResult<AdminToken> {
    check_name("name", name)?;
    if role != "admin" && role != "read" {
        return Err(ApiError::invalid_field("role", "`role` must be `admin` or `read`"));
    }
    let id = new_id("tok");
    c.execute(
        "INSERT INTO admin_tokens (id, name, hash, role, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, name, h.hash_str(secret.as_bytes()), role, now_secs()],
    )?;
    audit(c, actor, "create", "admin_token", &id, json!({"name": name, "role": role}))?;
    Ok(c.query_row("SELECT id, name, role, created_at, revoked_at FROM admin_tokens WHERE id = ?1", [&id], token_row)?)
}

pub fn new_token_secret() -> String {
    format!("sba-{}", random_hex(32))
}

pub fn revoke_token(c: &Db<'_>, actor: &str, id_or_name: &str) -> ApiResult<AdminToken> {
    let id: String = c
        .query_row("SELECT id FROM admin_tokens WHERE id = ?1 OR name = ?1", [id_or_name], |r| r.get(0))
        .optional()?
        .ok_or_else(|| ApiError::not_found("admin token", id_or_name))?;
    let id = id.as_str();
    let admins_left: i64 = c.query_row(
        "SELECT COUNT(*) FROM admin_tokens WHERE role = 'admin' AND revoked_at IS NULL AND id != ?1",
        [id],
        |r| r.get(0),
    )?;
    let is_live_admin: bool = c.query_row(
        "SELECT EXISTS (SELECT 1 FROM admin_tokens WHERE id = ?1 AND role = 'admin' AND revoked_at IS NULL)",
        [id],
        |r| r.get(0),
    )?;
    if is_live_admin && admins_left == 0 {
        // Nothing could write again (every admin call would be 401).
        return Err(ApiError::conflict("This is the last admin token; create another admin token before revoking it."));
    }
    let n = c.execute(
        "UPDATE admin_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![id, now_secs()],
    )?;
    let t = c
        .query_row("SELECT id, name, role, created_at, revoked_at FROM admin_tokens WHERE id = ?1", [id], token_row)
        .optional()?
        .ok_or_else(|| ApiError::not_found("admin token", id))?;
    if n > 0 {
        audit(c, actor, "revoke", "admin_token", id, json!({"name": t.name}))?;
    }
    Ok(t)
}

/// The id of a revoked token with this secret, if there is one.
pub fn revoked_token_id(c: &Db<'_>, h: &KeyHasher, secret: &str) -> ApiResult<Option<String>> {
    Ok(c.query_row(
        "SELECT id FROM admin_tokens WHERE hash = ?1 AND revoked_at IS NOT NULL",
        [h.hash_str(secret.as_bytes())],
        |r| r.get(0),
    )
    .optional()?)
}

/// The token presented, if valid and not revoked: (id, role). The secret is
/// compared by its SHA-256 (an index lookup), which says nothing about it.
pub fn authenticate_token(c: &Db<'_>, h: &KeyHasher, secret: &str) -> ApiResult<Option<(String, String)>> {
    Ok(c.query_row(
        "SELECT id, role FROM admin_tokens WHERE hash = ?1 AND revoked_at IS NULL",
        [h.hash_str(secret.as_bytes())],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?)
}

// ---------------------------------------------------------------- audit

pub fn list_audit(c: &Db<'_>, q: &AuditQuery) -> ApiResult<Page<AuditEntry>> {
    let pq = PageQuery { offset: q.offset, limit: q.limit };
    let (n, off) = limit(&pq)?;
    let order = match q.order.as_deref() {
        None | Some("asc") => "",
        Some("desc") => " DESC",
        Some(_) => return Err(ApiError::invalid_field("order", "expected asc or desc")),
    };
    let mut st = c.prepare(&format!(
        "SELECT id, at, actor, action, resource, resource_id, change FROM audit_log \
         WHERE (?1 IS NULL OR at >= ?1) AND (?2 IS NULL OR at < ?2) AND (?3 IS NULL OR actor = ?3) \
           AND (?4 IS NULL OR resource = ?4) AND (?5 IS NULL OR resource_id = ?5) \
         ORDER BY id{order} LIMIT ?6 OFFSET ?7"
    ))?;
    let rows = st
        .query_map(params![q.since, q.until, q.actor, q.resource, q.resource_id, n, off], |r| {
            Ok(AuditEntry {
                id: r.get(0)?,
                at: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                resource: r.get(4)?,
                resource_id: r.get(5)?,
                change: json_col(r, 6)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page(rows, &pq))
}

/// `{field: {"from": a, "to": b}}` for each top-level field that changed.
pub fn diff(before: &Value, after: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let (Some(b), Some(a)) = (before.as_object(), after.as_object()) {
        for (k, av) in a {
            let bv = b.get(k).unwrap_or(&Value::Null);
            if bv != av && !matches!(k.as_str(), "updated_at" | "created_at") {
                out.insert(k.clone(), json!({"from": bv, "to": av}));
            }
        }
    }
    Value::Object(out)
}

// ---------------------------------------------------------------- snapshot

pub fn snapshot_version(c: &Db<'_>) -> ApiResult<u64> {
    let v: String = c.query_row("SELECT value FROM meta WHERE key = 'snapshot_version'", [], |r| r.get(0))?;
    Ok(v.parse().unwrap_or(0))
}

pub fn bump_snapshot_version(c: &Db<'_>) -> ApiResult<u64> {
    let v = snapshot_version(c)? + 1;
    c.execute("UPDATE meta SET value = ?1 WHERE key = 'snapshot_version'", [v.to_string()])?;
    Ok(v)
}

/// The routing spec the data plane compiles, from the database.
pub fn routing_spec(c: &Db<'_>) -> ApiResult<RoutingSpec> {
    let mut st = c.prepare("SELECT id, name, spec FROM providers ORDER BY rowid")?;
    let stored: Vec<(String, String, String)> =
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?;
    let providers: Vec<(String, String, ProviderSpec)> = stored
        .into_iter()
        .map(|(id, name, spec)| Ok((id, name, open_spec(c.sealer, &spec)?)))
        .collect::<ApiResult<_>>()?;
    let name_of = |id: &str| providers.iter().find(|p| p.0 == id).map(|p| p.1.clone());
    let upstreams = providers
        .iter()
        .map(|(_, name, p)| {
            let d = |v: Option<u64>, dflt: u64| v.unwrap_or(dflt);
            UpstreamSpec {
                name: name.clone(),
                kind: p.kind.unwrap_or_default(),
                base_url: p.base_url.clone(),
                api_key: None,
                api_keys: p.api_keys.clone(),
                api_key_env: None,
                ca_file: p.ca_file.as_ref().map(Into::into),
                headers: p.headers.iter().map(|(k, v)| (k.clone(), v.expose().to_string())).collect(),
                connect_timeout_ms: d(p.connect_timeout_ms, 5_000),
                first_byte_timeout_ms: d(p.first_byte_timeout_ms, 300_000),
                read_timeout_ms: d(p.read_timeout_ms, 300_000),
                pool_idle_timeout_ms: 30_000,
                pool_max_idle: 256,
                prices: p
                    .models
                    .iter()
                    .map(|m| PriceSpec {
                        cache_read_per_mtok: m.cache_read_per_mtok,
                        cache_write_per_mtok: m.cache_write_per_mtok,
                        model: m.name.clone(),
                        prompt_per_mtok: m.prompt_per_mtok,
                        completion_per_mtok: m.completion_per_mtok,
                    })
                    .collect(),
                eject_after_failures: p.eject_after_failures.unwrap_or(5),
                eject_ms: p.eject_ms.unwrap_or(10_000),
                probe_interval_ms: p.probe_interval_ms.unwrap_or(0),
                probe_path: p.probe_path.clone().unwrap_or_else(|| "/models".to_string()),
                require_finish_reason: p.require_finish_reason.unwrap_or(true),
            }
        })
        .collect();
    let models = routes_all(c)?
        .into_iter()
        .map(|r| ModelSpec {
            targets: r
                .spec
                .targets
                .iter()
                .map(|t| TargetSpec {
                    upstream: if t.nodes.is_some() { String::new() } else { name_of(&t.provider).unwrap_or_default() },
                    nodes: t.nodes.clone(),
                    prompt_per_mtok: t.prompt_per_mtok,
                    completion_per_mtok: t.completion_per_mtok,
                    model: t.model.clone(),
                    weight: t.weight,
                })
                .collect(),
            strategy: Strategy::parse(&r.spec.strategy).unwrap_or_default(),
            allow_strategy_header: r.spec.allow_strategy_header,
            failover_on: r.spec.failover_on.clone().unwrap_or_else(default_triggers),
            retry: RetrySpec {
                max_attempts: r.spec.retry.max_attempts,
                per_attempt_timeout_ms: r.spec.retry.per_attempt_timeout_ms,
                deadline_ms: r.spec.retry.deadline_ms,
                backoff_ms: r.spec.retry.backoff_ms,
            },
            cache: r.spec.cache,
            name: r.name,
        })
        .collect();
    let mut st = c.prepare(
        "SELECT k.id, k.hash, o.name, k.models, k.enabled, k.expires_at, k.limits, k.test FROM api_keys k \
         JOIN orgs o ON o.id = k.org_id ORDER BY k.rowid",
    )?;
    let keys = st
        .query_map([], |r| {
            let limits: switchboard_shared::KeyLimits = json_col(r, 6)?;
            Ok(KeySpec {
                id: r.get(0)?,
                hash: r.get(1)?,
                org: r.get(2)?,
                models: json_col(r, 3)?,
                enabled: r.get(4)?,
                expires_at: r.get::<_, Option<i64>>(5)?.map(|t| t.max(0) as u64),
                limits,
                test: r.get(7)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut st = c.prepare("SELECT name, limits FROM orgs WHERE limits != '{}' ORDER BY rowid")?;
    let orgs = st
        .query_map([], |r| {
            let l: switchboard_shared::OrgLimits = json_col(r, 1)?;
            Ok(switchboard_shared::OrgSpec { name: r.get(0)?, limits: l.limits, models: l.models })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RoutingSpec { orgs, keys, upstreams, models, nodes: Vec::new() })
}

// ---------------------------------------------------------------- seed

/// Import a routing spec (the TOML file's) into the database: providers and
/// routes by name, keys by id, orgs by name. Same input twice changes nothing.
pub fn seed(c: &Db<'_>, h: &KeyHasher, spec: &RoutingSpec) -> ApiResult<usize> {
    let actor = "seed";
    let before = last_audit_id(c)?;
    for u in &spec.upstreams {
        let p = ProviderSpec {
            kind: (!u.kind.is_openai()).then_some(u.kind),
            base_url: u.base_url.clone(),
            api_keys: match (&u.api_key, &u.api_key_env) {
                (Some(k), _) => vec![k.clone()],
                (None, Some(var)) => match std::env::var(var) {
                    Ok(v) => vec![Secret::new(v)],
                    Err(_) => return Err(ApiError::invalid_field("api_key_env", format!("`{var}` is not set"))),
                },
                (None, None) => vec![],
            }
            .into_iter()
            .chain(u.api_keys.iter().cloned())
            .collect(),
            headers: u.headers.iter().map(|(k, v)| (k.clone(), Secret::new(v.clone()))).collect(),
            ca_file: u.ca_file.as_ref().map(|p| p.display().to_string()),
            connect_timeout_ms: Some(u.connect_timeout_ms),
            first_byte_timeout_ms: Some(u.first_byte_timeout_ms),
            read_timeout_ms: Some(u.read_timeout_ms),
            models: u
                .prices
                .iter()
                .map(|p| ModelPrice {
                    name: p.model.clone(),
                    prompt_per_mtok: p.prompt_per_mtok,
                    completion_per_mtok: p.completion_per_mtok,
                    cache_read_per_mtok: p.cache_read_per_mtok,
                    cache_write_per_mtok: p.cache_write_per_mtok,
                })
                .collect(),
            eject_after_failures: Some(u.eject_after_failures),
            eject_ms: Some(u.eject_ms),
            probe_interval_ms: (u.probe_interval_ms > 0).then_some(u.probe_interval_ms),
            probe_path: (u.probe_path != "/models").then(|| u.probe_path.clone()),
            require_finish_reason: (!u.require_finish_reason).then_some(false),
        };
        match find_provider_raw(c, &u.name) {
            Ok((id, name, before, ..)) => {
                let mut p = p;
                if u.prices.is_empty() {
                    // Prices set through the API stay unless the file sets its own.
                    p.models = before.models.clone();
                }
                write_provider(c, actor, &id, &name, &before, &name, &p)?;
            }
            Err(_) => {
                insert_provider(c, actor, &new_id("prov"), &u.name, &p)?;
            }
        }
    }
    for m in &spec.models {
        let targets = m
            .targets
            .iter()
            .map(|t| RouteTarget {
                provider: t.upstream.clone(),
                nodes: t.nodes.clone(),
                prompt_per_mtok: t.prompt_per_mtok,
                completion_per_mtok: t.completion_per_mtok,
                model: t.model.clone(),
                weight: t.weight,
            })
            .collect();
        let strategy = serde_json::to_value(m.strategy).ok().and_then(|v| v.as_str().map(str::to_string));
        let retry = RetrySettings {
            max_attempts: m.retry.max_attempts,
            per_attempt_timeout_ms: m.retry.per_attempt_timeout_ms,
            deadline_ms: m.retry.deadline_ms,
            backoff_ms: m.retry.backoff_ms,
        };
        let rs = RouteSpec {
            strategy: strategy.unwrap_or_else(|| "priority".into()),
            targets,
            retry,
            allow_strategy_header: m.allow_strategy_header,
            failover_on: Some(m.failover_on.clone()),
            cache: m.cache,
        };
        match find_route(c, &m.name) {
            Ok(r) => {
                let u = RouteUpdate {
                    strategy: Some(rs.strategy),
                    targets: Some(rs.targets),
                    retry: Some(Some(rs.retry)),
                    allow_strategy_header: Some(rs.allow_strategy_header),
                    failover_on: Some(rs.failover_on),
                    cache: Some(Some(rs.cache)),
                    ..RouteUpdate::default()
                };
                update_route(c, actor, &r.id, u)?;
            }
            Err(_) => {
                insert_route(c, actor, &new_id("route"), &m.name, rs)?;
            }
        }
    }
    for k in &spec.keys {
        let org = match find_org(c, &k.org) {
            Ok(o) => o,
            Err(_) => create_org_with_id(c, actor, &new_id("org"), &k.org)?,
        };
        let hash = h.format(&h.parse(&k.hash).map_err(|e| ApiError::invalid_field("hash", e))?);
        let hint = format!("{}...", &hash[..hash.len().min(h.scheme().len() + 9)]);
        let expires = k.expires_at.map(|t| t as i64);
        match find_key(c, &k.id) {
            Ok(existing) => {
                let stored: String = c.query_row("SELECT hash FROM api_keys WHERE id = ?1", [&k.id], |r| r.get(0))?;
                let u = KeyUpdate {
                    name: None,
                    models: Some(k.models.clone()),
                    expires_at: Some(expires),
                    enabled: Some(k.enabled),
                    test: Some(k.test),
                };
                update_key(c, actor, &existing.id, &u)?;
                if stored != hash || existing.org_id != org.id {
                    c.execute(
                        "UPDATE api_keys SET hash = ?2, hint = ?3, org_id = ?4, updated_at = ?5 WHERE id = ?1",
                        params![k.id, hash, hint, org.id, now_secs()],
                    )?;
                    audit(c, actor, "update", "key", &k.id, json!({"hash": "changed", "org": org.id}))?;
                }
            }
            Err(_) => {
                check_models(&k.models)?;
                let now = now_secs();
                c.execute(
                    "INSERT INTO api_keys (id, org_id, name, hash, hint, models, expires_at, enabled, created_at, updated_at, test) \
                     VALUES (?1, ?2, ?1, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)",
                    params![k.id, org.id, hash, hint, json!(k.models).to_string(), expires, k.enabled, now, k.test],
                )?;
                audit(
                    c,
                    actor,
                    "create",
                    "key",
                    &k.id,
                    json!({"org": org.id, "name": k.id, "models": k.models, "test": k.test, "hint": hint}),
                )?;
            }
        }
    }
    for k in &spec.keys {
        set_key_limits(c, actor, &k.id, &k.limits)?;
    }
    for o in &spec.orgs {
        let org = match find_org(c, &o.name) {
            Ok(org) => org,
            Err(_) => create_org_with_id(c, actor, &new_id("org"), &o.name)?,
        };
        let limits = switchboard_shared::OrgLimits { limits: o.limits.clone(), models: o.models.clone() };
        set_org_limits(c, actor, &org.id, &limits)?;
    }
    let after = last_audit_id(c)?;
    Ok((after - before) as usize)
}

// ---------------------------------------------------------------- limits

pub fn key_limits(c: &Db<'_>, id: &str) -> ApiResult<switchboard_shared::KeyLimits> {
    let text: Option<String> =
        c.query_row("SELECT limits FROM api_keys WHERE id = ?1", [id], |r| r.get(0)).optional()?;
    let text = text.ok_or_else(|| ApiError::not_found("key", id))?;
    serde_json::from_str(&text).map_err(|_| ApiError::internal("stored limits are unreadable"))
}

pub fn org_limits(c: &Db<'_>, id: &str) -> ApiResult<(Org, switchboard_shared::OrgLimits)> {
    let org = find_org(c, id)?;
    let text: String = c.query_row("SELECT limits FROM orgs WHERE id = ?1", [&org.id], |r| r.get(0))?;
    let limits = serde_json::from_str(&text).map_err(|_| ApiError::internal("stored limits are unreadable"))?;
    Ok((org, limits))
}

/// Replace a key's limits (audited when they change).
pub fn set_key_limits(c: &Db<'_>, actor: &str, id: &str, limits: &switchboard_shared::KeyLimits) -> ApiResult<()> {
    let before = key_limits(c, id)?;
    if &before == limits {
        return Ok(());
    }
    let text = serde_json::to_string(limits).map_err(|_| ApiError::internal("cannot store limits"))?;
    c.execute("UPDATE api_keys SET limits = ?2, updated_at = ?3 WHERE id = ?1", params![id, text, now_secs()])?;
    audit(c, actor, "update", "key", id, json!({"limits": {"from": before, "to": limits}}))
}

/// Replace an org's limits (audited when they change).
pub fn set_org_limits(c: &Db<'_>, actor: &str, id: &str, limits: &switchboard_shared::OrgLimits) -> ApiResult<()> {
    let (org, before) = org_limits(c, id)?;
    if &before == limits {
        return Ok(());
    }
    let text = serde_json::to_string(limits).map_err(|_| ApiError::internal("cannot store limits"))?;
    c.execute("UPDATE orgs SET limits = ?2, updated_at = ?3 WHERE id = ?1", params![org.id, text, now_secs()])?;
    audit(c, actor, "update", "org", &org.id, json!({"limits": {"from": before, "to": limits}}))
}

/// Accounted spend (nano-USD) and tokens of a key (`key_id`) or an org
/// (`org` name) since `since` (Unix seconds).
pub fn spent_since(c: &Db<'_>, column: &str, value: &str, since: i64) -> ApiResult<(u64, u64)> {
    let col = if column == "org" { "org" } else { "key_id" };
    let sql = format!(
        "SELECT CAST(TOTAL(MAX(cost_nanos, 0)) AS INTEGER), CAST(TOTAL(MAX(total_tokens, 0)) AS INTEGER) \
         FROM usage_minute WHERE {col} = ?1 AND minute >= ?2"
    );
    let (n, t): (i64, i64) = c.query_row(&sql, params![value, since.div_euclid(60)], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok((n.max(0) as u64, t.max(0) as u64))
}
