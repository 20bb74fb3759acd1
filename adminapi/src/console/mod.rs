//! The web console: static pages and ES modules embedded in the binary,
//! served at `/` of the admin listener, calling the same admin API as any
//! script — with a session cookie instead of a bearer token.
//!
//! Sessions: `POST /v1/admin/console/session` takes an admin token in its
//! body (never a URL), checks it like a bearer token, and answers with an
//! `HttpOnly; SameSite=Strict` cookie holding a random session id (the
//! token itself is not kept) and an anti-forgery token. A call
//! authenticated by the cookie is the session's token's call (its role; a
//! revoked token ends its sessions), and a call that may change state
//! (any method but GET/HEAD) must also carry the anti-forgery token in
//! `X-CSRF-Token` and an `Origin` naming this service. Sessions expire
//! (`[admin] console_session_ttl_ms`) and end at sign-out.

pub mod assets;
pub mod playground;
pub mod series;

use crate::api::{Admin, ApiJson, ApiQuery, ErrorBody};
use crate::error::{ApiError, ApiResult};
use crate::{store, SharedState};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// The session cookie's name.
pub const COOKIE: &str = "sb_console";
/// The anti-forgery header.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A signed-in console.
#[derive(Clone)]
struct Session {
    token_id: String,
    csrf: String,
    created_ms: i64,
    expires_ms: i64,
    /// Playground keys minted for this session, by org: (key id, secret).
    temp_keys: FxHashMap<String, (String, String)>,
}

/// Console state: sessions (in memory; a restart signs everyone out) and
/// where the playground sends its requests.
pub struct Console {
    sessions: Mutex<FxHashMap<String, Session>>,
    enabled: AtomicBool,
    ttl_ms: AtomicU64,
    max_sessions: AtomicU64,
    secure: AtomicBool,
    dataplane: Mutex<Option<playground::Dataplane>>,
}

impl Default for Console {
    fn default() -> Self {
        Console {
            sessions: Mutex::new(FxHashMap::default()),
            enabled: AtomicBool::new(true),
            ttl_ms: AtomicU64::new(8 * 3_600_000),
            max_sessions: AtomicU64::new(256),
            secure: AtomicBool::new(false),
            dataplane: Mutex::new(None),
        }
    }
}

/// What the caller of [`Console::configure`] sets.
#[derive(Clone, Copy, Debug)]
pub struct ConsoleSettings {
    pub enabled: bool,
    pub session_ttl_ms: u64,
    pub max_sessions: u64,
}

/// The session id as stored: its SHA-256, so the map holds nothing a
/// memory dump could replay as a cookie.
fn session_key(id: &str) -> String {
    Sha256::digest(id.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal strings, compared in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Console {
    pub fn configure(&self, s: ConsoleSettings) {
        self.enabled.store(s.enabled, Ordering::Relaxed);
        self.ttl_ms.store(s.session_ttl_ms.max(1_000), Ordering::Relaxed);
        self.max_sessions.store(s.max_sessions.max(1), Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// The admin listener serves HTTPS: cookies get `Secure`, origins `https://`.
    pub fn set_secure(&self, secure: bool) {
        self.secure.store(secure, Ordering::Relaxed);
    }

    fn secure(&self) -> bool {
        self.secure.load(Ordering::Relaxed)
    }

    /// Where the in-process data plane listens (the playground's target).
    pub fn set_dataplane(&self, addr: SocketAddr, tls: bool) {
        if let Ok(mut d) = self.dataplane.lock() {
            *d = Some(playground::Dataplane::new(addr, tls));
        }
    }

    fn dataplane(&self) -> Option<playground::Dataplane> {
        self.dataplane.lock().ok().and_then(|d| d.clone())
    }

    /// Start a session; returns (session id, anti-forgery token, expiry ms)
    /// and the playground keys of the sessions it pushed out (to delete).
    fn open(&self, token_id: &str, now_ms: i64) -> ApiResult<(String, String, i64, Vec<String>)> {
        let id = crate::db::random_hex(32);
        let csrf = crate::db::random_hex(32);
        let ttl = self.ttl_ms.load(Ordering::Relaxed).min(i64::MAX as u64 / 2) as i64;
        let expires_ms = now_ms.saturating_add(ttl);
        let max = self.max_sessions.load(Ordering::Relaxed) as usize;
        let mut sessions = self.sessions.lock().map_err(|_| ApiError::internal("console sessions lock poisoned"))?;
        let mut ended = Vec::new();
        sessions.retain(|_, s| {
            let keep = s.expires_ms > now_ms;
            if !keep {
                ended.extend(s.temp_keys.values().map(|(k, _)| k.clone()));
            }
            keep
        });
        while sessions.len() >= max {
            let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.created_ms).map(|(k, _)| k.clone()) else {
                break;
            };
            if let Some(s) = sessions.remove(&oldest) {
                ended.extend(s.temp_keys.into_values().map(|(k, _)| k));
            }
        }
        sessions.insert(
            session_key(&id),
            Session {
                token_id: token_id.to_string(),
                csrf: csrf.clone(),
                created_ms: now_ms,
                expires_ms,
                temp_keys: FxHashMap::default(),
            },
        );
        Ok((id, csrf, expires_ms, ended))
    }

    fn find(&self, id: &str, now_ms: i64) -> Option<Session> {
        let sessions = self.sessions.lock().ok()?;
        sessions.get(&session_key(id)).filter(|s| s.expires_ms > now_ms).cloned()
    }

    /// End a session; returns its playground keys (to delete).
    fn close(&self, id: &str) -> Vec<String> {
        let Ok(mut sessions) = self.sessions.lock() else { return Vec::new() };
        sessions
            .remove(&session_key(id))
            .map(|s| s.temp_keys.into_values().map(|(k, _)| k).collect())
            .unwrap_or_default()
    }

    fn remember_key(&self, id: &str, org: &str, key_id: &str, secret: &str) {
        if let Ok(mut sessions) = self.sessions.lock() {
            if let Some(s) = sessions.get_mut(&session_key(id)) {
                s.temp_keys.insert(org.to_string(), (key_id.to_string(), secret.to_string()));
            }
        }
    }
}

/// The session cookie's value, if the request has one.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    for v in headers.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            if let Some((k, val)) = pair.trim().split_once('=') {
                if k == COOKIE && !val.is_empty() && val.len() <= 128 {
                    return Some(val.to_string());
                }
            }
        }
    }
    None
}

/// The origin this service is reached at, from the request's `Host`.
fn own_origin(state: &SharedState, headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let scheme = if state.console.secure() { "https" } else { "http" };
    Some(format!("{scheme}://{host}"))
}

/// Refuse a request whose `Origin` is another site's. `required`: refuse a
/// request without one too (browsers send it on every state-changing fetch).
fn check_origin(state: &SharedState, headers: &HeaderMap, required: bool) -> ApiResult<()> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    match origin {
        None if !required => Ok(()),
        Some(o) if own_origin(state, headers).is_some_and(|own| same(o, &own)) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin_refused",
            "Refused: a console call that changes state must come from the console's own origin.",
        )),
    }
}

/// Authenticate a request by its console session cookie: the session's
/// token (still valid) and role. A state-changing method needs the
/// anti-forgery token and this service's origin as well.
pub async fn authenticate(state: &SharedState, method: &Method, headers: &HeaderMap) -> ApiResult<Admin> {
    let id = session_cookie(headers).ok_or_else(ApiError::unauthorized)?;
    let now = crate::db::now_millis();
    let session = state.console.find(&id, now).ok_or_else(expired)?;
    if !matches!(*method, Method::GET | Method::HEAD) {
        check_origin(state, headers, true)?;
        let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !same(sent, &session.csrf) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf_token_invalid",
                "A console call that changes state needs the session's anti-forgery token in `X-CSRF-Token`.",
            ));
        }
    }
    let st = state.clone();
    let token_id = session.token_id.clone();
    let role = crate::api::blocking(move || st.read(|c| token_role(c, &token_id))).await?;
    match role {
        Some(role) => Ok(Admin { token_id: session.token_id, can_write: role == "admin" }),
        None => {
            // The token was revoked: its sessions end.
            let keys = state.console.close(&id);
            delete_keys(state, &session.token_id, keys).await;
            Err(expired())
        }
    }
}

/// A token's role while it is not revoked.
fn token_role(c: &store::Db<'_>, token_id: &str) -> ApiResult<Option<String>> {
    use rusqlite::OptionalExtension;
    Ok(c.query_row("SELECT role FROM admin_tokens WHERE id = ?1 AND revoked_at IS NULL", [token_id], |r| r.get(0))
        .optional()?)
}

fn expired() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_admin_token",
        "The console session has expired or was signed out; sign in again.",
    )
}

/// Delete playground keys (a session ended). Failures are logged: the keys
/// expire with the session anyway.
async fn delete_keys(state: &SharedState, actor: &str, keys: Vec<String>) {
    if keys.is_empty() {
        return;
    }
    let st = state.clone();
    let actor = actor.to_string();
    let r = crate::api::blocking(move || {
        st.write(true, |c| {
            for k in &keys {
                match store::delete_key(c, &actor, k) {
                    Ok(()) => {}
                    Err(e) if e.status == StatusCode::NOT_FOUND => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
    })
    .await;
    if let Err(e) = r {
        tracing::warn!(error = %e.message, "cannot delete a console session's playground keys; they expire with it");
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// An admin token (`admin` or `read`).
    pub token: String,
}

/// A console session (the cookie itself is `HttpOnly` and not in the body).
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionInfo {
    pub object: &'static str,
    /// The admin token the session acts as.
    pub token_id: String,
    /// `admin` or `read`.
    pub role: String,
    /// Send it as `X-CSRF-Token` on every call that changes state.
    pub csrf_token: String,
    /// Unix milliseconds.
    pub expires_at_ms: i64,
    /// The data plane in this process (`{host}` stands for the console's
    /// host when it listens on every address); null when there is none.
    pub gateway_url: Option<String>,
}

/// Sign in: exchange an admin token for a session cookie and an anti-forgery token.
#[utoipa::path(post, path = "/v1/admin/console/session", tag = "console", request_body = SignIn, responses((status = 201, body = SessionInfo, description = "sets the HttpOnly, SameSite=Strict session cookie"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn sign_in(
    State(s): State<SharedState>,
    headers: HeaderMap,
    ApiJson(b): ApiJson<SignIn>,
) -> ApiResult<Response> {
    if !s.console.enabled() {
        return Err(disabled());
    }
    check_origin(&s, &headers, false)?;
    let token = b.token.trim().to_string();
    if token.is_empty() || token.len() > 512 {
        return Err(ApiError::unauthorized());
    }
    let st = s.clone();
    let found = crate::api::blocking(move || st.read(|c| store::authenticate_token(c, st.hasher(), &token))).await?;
    let Some((token_id, role)) = found else {
        tracing::info!("console sign-in refused: unknown or revoked token");
        return Err(ApiError::unauthorized());
    };
    let now = crate::db::now_millis();
    let (id, csrf, expires_ms, ended) = s.console.open(&token_id, now)?;
    delete_keys(&s, &token_id, ended).await;
    tracing::info!(token = %token_id, role = %role, "console sign-in");
    let max_age = ((expires_ms - now) / 1000).max(1);
    let secure = if s.console.secure() { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    let body = SessionInfo {
        object: "console_session",
        token_id,
        role,
        csrf_token: csrf,
        expires_at_ms: expires_ms,
        gateway_url: s.console.dataplane().map(|d| d.url()),
    };
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(|_| ApiError::internal("bad cookie"))?);
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// The current session (for a page loaded while signed in).
#[utoipa::path(get, path = "/v1/admin/console/session", tag = "console", responses((status = 200, body = SessionInfo), (status = 401, body = ErrorBody)))]
pub async fn current(State(s): State<SharedState>, headers: HeaderMap) -> ApiResult<Response> {
    let id = session_cookie(&headers).ok_or_else(expired)?;
    let a = authenticate(&s, &Method::GET, &headers).await?;
    let session = s.console.find(&id, crate::db::now_millis()).ok_or_else(expired)?;
    let body = SessionInfo {
        object: "console_session",
        token_id: a.token_id,
        role: if a.can_write { "admin" } else { "read" }.to_string(),
        csrf_token: session.csrf,
        expires_at_ms: session.expires_ms,
        gateway_url: s.console.dataplane().map(|d| d.url()),
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// Sign out: the session ends, its playground keys are deleted, the cookie is cleared.
#[utoipa::path(delete, path = "/v1/admin/console/session", tag = "console", responses((status = 200, description = "signed out"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn sign_out(State(s): State<SharedState>, method: Method, headers: HeaderMap) -> ApiResult<Response> {
    let id = session_cookie(&headers).ok_or_else(expired)?;
    let a = authenticate(&s, &method, &headers).await?;
    let keys = s.console.close(&id);
    delete_keys(&s, &a.token_id, keys).await;
    tracing::info!(token = %a.token_id, "console sign-out");
    let secure = if s.console.secure() { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}");
    Ok(([(header::SET_COOKIE, cookie)], Json(serde_json::json!({"object": "console_session", "signed_out": true})))
        .into_response())
}

fn disabled() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "unknown_url", "The console is turned off (`[admin] console = false`).")
}

/// The overview page's data in one call: series, split, totals, targets.
#[utoipa::path(get, path = "/v1/admin/console/overview", tag = "console", params(series::OverviewQuery), responses((status = 200, body = series::Overview), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
pub async fn overview(
    State(s): State<SharedState>,
    _a: Admin,
    ApiQuery(q): ApiQuery<series::OverviewQuery>,
) -> ApiResult<Response> {
    let st = s.clone();
    let now = crate::db::now_secs();
    let o = crate::api::blocking(move || st.read(|c| series::overview(c, &q, now))).await?;
    Ok(Json(o).into_response())
}

/// The key the playground uses for `org` in this session: minted on first
/// use (expiring with the session, deleted at sign-out).
async fn playground_key(s: &SharedState, a: &Admin, session_id: &str, org: &str) -> ApiResult<String> {
    let now = crate::db::now_millis();
    let session = s.console.find(session_id, now).ok_or_else(expired)?;
    if let Some((_, secret)) = session.temp_keys.get(org) {
        return Ok(secret.clone());
    }
    let actor = a.writer()?.to_string();
    let input = crate::model::KeyCreate {
        org: org.to_string(),
        name: "console-playground".to_string(),
        models: vec!["*".to_string()],
        expires_at: Some(session.expires_ms.div_euclid(1000) + 1),
        enabled: true,
        test: false,
    };
    let st = s.clone();
    let created =
        crate::api::blocking(move || st.write(true, |c| store::create_key(c, st.hasher(), &actor, &input))).await?;
    s.console.remember_key(session_id, org, &created.key.id, &created.key_secret);
    Ok(created.key_secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_are_capped_and_end_at_sign_out() {
        let c = Console::default();
        c.configure(ConsoleSettings { enabled: true, session_ttl_ms: 60_000, max_sessions: 2 });
        let (a, csrf_a, exp_a, ended) = c.open("tok_a", 1_000).unwrap();
        assert!(ended.is_empty());
        assert_eq!(exp_a, 61_000);
        let s = c.find(&a, 60_999).expect("live until it expires");
        assert_eq!(s.token_id, "tok_a");
        assert!(same(&s.csrf, &csrf_a) && !same(&s.csrf, "x") && s.csrf.len() == 64);
        assert!(c.find(&a, 61_000).is_none(), "expired");
        // At the cap the oldest session ends, and its playground keys are returned for deletion.
        c.remember_key(&a, "acme", "key_1", "sk-1");
        let (b, _, _, _) = c.open("tok_b", 2_000).unwrap();
        let (_, _, _, ended) = c.open("tok_c", 3_000).unwrap();
        assert_eq!(ended, vec!["key_1".to_string()]);
        assert!(c.find(&a, 3_000).is_none());
        assert!(c.find(&b, 3_000).is_some());
        // Sign-out ends it; an unknown id finds nothing.
        assert!(c.close(&b).is_empty());
        assert!(c.find(&b, 3_000).is_none());
        assert!(c.find("not-a-session", 3_000).is_none());
    }

    #[test]
    fn cookie_is_read_from_any_cookie_header() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; sb_console=abc; b=2"));
        assert_eq!(session_cookie(&h).as_deref(), Some("abc"));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("sb_console="));
        assert_eq!(session_cookie(&h), None);
        let long = format!("sb_console={}", "a".repeat(200));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_str(&long).unwrap());
        assert_eq!(session_cookie(&h), None, "over-long values are no session");
    }
}
