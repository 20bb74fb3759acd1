//! The HTTP surface: `fn app() -> Router`, so tests can build it without a
//! server. Every handler authenticates, then runs its database work on a
//! blocking thread.

use crate::error::{ApiError, ApiResult};
use crate::model::*;
use crate::{store, SharedState};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// JSON body whose rejection is our error shape: syntax -> 400, a wrong,
/// missing or unknown field -> 422 naming it, too large -> 413.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::JsonDataError(e)) => {
                let detail = e.body_text();
                let field = detail.split('`').nth(1).unwrap_or("").to_string();
                let mut err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", detail);
                if !field.is_empty() {
                    err = err.param(field);
                }
                Err(err)
            }
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::bad_request(e.body_text())),
            Err(JsonRejection::MissingJsonContentType(_)) => {
                Err(ApiError::bad_request("Send the body as JSON with `Content-Type: application/json`."))
            }
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", "The request body is too large."))
            }
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

/// Query string whose rejection is our error shape.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e: QueryRejection| ApiError::bad_request(e.body_text()))
    }
}

/// The authenticated admin: token id and whether it may write.
pub struct Admin {
    pub token_id: String,
    pub can_write: bool,
}

impl Admin {
    fn writer(&self) -> ApiResult<&str> {
        if self.can_write {
            Ok(&self.token_id)
        } else {
            Err(ApiError::forbidden())
        }
    }
}

impl FromRequestParts<SharedState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        let token = match header.split_at_checked(7) {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer ") && !t.trim().is_empty() => t.trim().to_string(),
            _ => return Err(ApiError::unauthorized()),
        };
        let st = state.clone();
        let found = blocking(move || st.read(|c| store::authenticate_token(c, &token))).await?;
        match found {
            Some((id, role)) => Ok(Admin { token_id: id, can_write: role == "admin" }),
            None => Err(ApiError::unauthorized()),
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> ApiResult<T> + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|_| ApiError::internal("the database task failed"))?
}

fn created<T: Serialize>(v: T) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

fn deleted(id: &str) -> Response {
    Json(serde_json::json!({"id": id, "deleted": true})).into_response()
}

pub fn app(state: SharedState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/admin/health", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/v1/admin/orgs", get(list_orgs).post(create_org))
        .route("/v1/admin/orgs/{id}", get(get_org).patch(update_org).delete(delete_org))
        .route("/v1/admin/keys", get(list_keys).post(create_key))
        .route("/v1/admin/keys/{id}", get(get_key).patch(update_key).delete(delete_key))
        .route("/v1/admin/keys/{id}/rotate", post(rotate_key))
        .route("/v1/admin/keys/{id}/revoke", post(revoke_key))
        .route("/v1/admin/providers", get(list_providers).post(create_provider))
        .route("/v1/admin/providers/{id}", get(get_provider).patch(update_provider).delete(delete_provider))
        .route("/v1/admin/routes", get(list_routes).post(create_route))
        .route("/v1/admin/routes/{id}", get(get_route).patch(update_route).delete(delete_route))
        .route("/v1/admin/tokens", get(list_tokens).post(create_token))
        .route("/v1/admin/tokens/{id}/revoke", post(revoke_token))
        .route("/v1/admin/audit", get(list_audit))
        .route("/v1/admin/snapshot", get(watch_snapshot))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "unknown_url", "No such admin endpoint.") })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(move |req: Request, next: axum::middleware::Next| {
            refuse_declared_oversize(req, next, max_body_bytes)
        }))
        .with_state(state)
}

/// A body declared larger than the limit is refused before it is read.
async fn refuse_declared_oversize(req: Request, next: axum::middleware::Next, max: usize) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("The request body exceeds the limit of {max} bytes."),
        )
        .into_response();
    }
    next.run(req).await
}

macro_rules! read {
    ($state:expr, |$c:ident| $body:expr) => {{
        let st = $state.clone();
        blocking(move || st.read(|$c| $body)).await
    }};
}

macro_rules! write {
    ($state:expr, $routing:expr, |$c:ident| $body:expr) => {{
        let st = $state.clone();
        blocking(move || st.write($routing, |$c| $body)).await
    }};
}

// ---- orgs

async fn list_orgs(State(s): State<SharedState>, _a: Admin, ApiQuery(q): ApiQuery<PageQuery>) -> ApiResult<Response> {
    Ok(Json(read!(s, |c| store::list_orgs(c, &q))?).into_response())
}

async fn get_org(State(s): State<SharedState>, _a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(read!(s, |c| store::find_org(c, &id))?).into_response())
}

async fn create_org(State(s): State<SharedState>, a: Admin, ApiJson(b): ApiJson<OrgInput>) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    Ok(created(write!(s, true, |c| store::create_org(c, &actor, &b))?))
}

async fn update_org(
    State(s): State<SharedState>,
    a: Admin,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<OrgInput>,
) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    Ok(Json(write!(s, true, |c| store::update_org(c, &actor, &id, &b))?).into_response())
}

async fn delete_org(State(s): State<SharedState>, a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    let idc = id.clone();
    write!(s, true, |c| store::delete_org(c, &actor, &idc))?;
    Ok(deleted(&id))
}

// ---- keys

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyListQuery {
    #[serde(default)]
    offset: u64,
    #[serde(default = "fifty")]
    limit: u64,
    org: Option<String>,
}

fn fifty() -> u64 {
    50
}

async fn list_keys(
    State(s): State<SharedState>,
    _a: Admin,
    ApiQuery(q): ApiQuery<KeyListQuery>,
) -> ApiResult<Response> {
    let pq = PageQuery { offset: q.offset, limit: q.limit };
    Ok(Json(read!(s, |c| store::list_keys(c, &pq, q.org.as_deref()))?).into_response())
}

async fn get_key(State(s): State<SharedState>, _a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(read!(s, |c| store::find_key(c, &id))?).into_response())
}

async fn create_key(State(s): State<SharedState>, a: Admin, ApiJson(b): ApiJson<KeyCreate>) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    Ok(created(write!(s, true, |c| store::create_key(c, &actor, &b))?))
}

async fn update_key(
    State(s): State<SharedState>,
    a: Admin,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<KeyUpdate>,
) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    Ok(Json(write!(s, true, |c| store::update_key(c, &actor, &id, &b))?).into_response())
}

async fn rotate_key(State(s): State<SharedState>, a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    Ok(Json(write!(s, true, |c| store::rotate_key(c, &actor, &id))?).into_response())
}

async fn revoke_key(State(s): State<SharedState>, a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    let u = KeyUpdate { enabled: Some(false), ..KeyUpdate::default() };
    Ok(Json(write!(s, true, |c| store::update_key(c, &actor, &id, &u))?).into_response())
}

async fn delete_key(State(s): State<SharedState>, a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    let idc = id.clone();
    write!(s, true, |c| store::delete_key(c, &actor, &idc))?;
    Ok(deleted(&id))
}

// ---- providers

async fn list_providers(
    State(s): State<SharedState>,
    _a: Admin,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    Ok(Json(read!(s, |c| store::list_providers(c, &q))?).into_response())
}

async fn get_provider(State(s): State<SharedState>, _a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(read!(s, |c| store::find_provider(c, &id))?).into_response())
}

async fn create_provider(
    State(s): State<SharedState>,
    a: Admin,
    ApiJson(b): ApiJson<ProviderCreate>,
) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    Ok(created(write!(s, true, |c| store::create_provider(c, &actor, b))?))
}

async fn update_provider(
    State(s): State<SharedState>,
    a: Admin,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ProviderUpdate>,
) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    Ok(Json(write!(s, true, |c| store::update_provider(c, &actor, &id, b))?).into_response())
}

async fn delete_provider(State(s): State<SharedState>, a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    let idc = id.clone();
    write!(s, true, |c| store::delete_provider(c, &actor, &idc))?;
    Ok(deleted(&id))
}

// ---- routes

async fn list_routes(State(s): State<SharedState>, _a: Admin, ApiQuery(q): ApiQuery<PageQuery>) -> ApiResult<Response> {
    Ok(Json(read!(s, |c| store::list_routes(c, &q))?).into_response())
}

async fn get_route(State(s): State<SharedState>, _a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(read!(s, |c| store::find_route(c, &id))?).into_response())
}

async fn create_route(State(s): State<SharedState>, a: Admin, ApiJson(b): ApiJson<RouteCreate>) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    Ok(created(write!(s, true, |c| store::create_route(c, &actor, b))?))
}

async fn update_route(
    State(s): State<SharedState>,
    a: Admin,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<RouteUpdate>,
) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    Ok(Json(write!(s, true, |c| store::update_route(c, &actor, &id, b))?).into_response())
}

async fn delete_route(State(s): State<SharedState>, a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    let idc = id.clone();
    write!(s, true, |c| store::delete_route(c, &actor, &idc))?;
    Ok(deleted(&id))
}

// ---- admin tokens

async fn list_tokens(State(s): State<SharedState>, _a: Admin, ApiQuery(q): ApiQuery<PageQuery>) -> ApiResult<Response> {
    Ok(Json(read!(s, |c| store::list_tokens(c, &q))?).into_response())
}

async fn create_token(
    State(s): State<SharedState>,
    a: Admin,
    ApiJson(b): ApiJson<AdminTokenCreate>,
) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    let secret = store::new_token_secret();
    let sc = secret.clone();
    let token = write!(s, false, |c| store::insert_token(c, &actor, &b.name, &b.role, &sc))?;
    Ok(created(AdminTokenWithSecret { token, token_secret: secret }))
}

async fn revoke_token(State(s): State<SharedState>, a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    Ok(Json(write!(s, false, |c| store::revoke_token(c, &actor, &id))?).into_response())
}

// ---- audit

async fn list_audit(State(s): State<SharedState>, _a: Admin, ApiQuery(q): ApiQuery<AuditQuery>) -> ApiResult<Response> {
    Ok(Json(read!(s, |c| store::list_audit(c, &q))?).into_response())
}

// ---- snapshot watch (for data planes in other processes)

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchQuery {
    /// Answer once the version is greater than this.
    #[serde(default)]
    after: u64,
    /// How long to wait for a newer version (at most 60 s).
    #[serde(default = "default_wait")]
    wait_ms: u64,
}

fn default_wait() -> u64 {
    30_000
}

#[derive(Serialize)]
struct SnapshotBody<'a> {
    version: u64,
    spec: &'a switchboard_shared::RoutingSpec,
}

/// Long poll: the routing spec once its version is past `after`, or 204 when
/// `wait_ms` passes first. Carries provider secrets: admin tokens only.
async fn watch_snapshot(
    State(s): State<SharedState>,
    a: Admin,
    ApiQuery(q): ApiQuery<WatchQuery>,
) -> ApiResult<Response> {
    a.writer()?;
    let mut rx = s.subscribe();
    let wait = Duration::from_millis(q.wait_ms.min(60_000));
    let found = tokio::time::timeout(wait, async {
        loop {
            {
                let p = rx.borrow_and_update();
                if p.version > q.after {
                    return Some(p.clone());
                }
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    })
    .await;
    match found {
        Ok(Some(p)) => Ok(Json(SnapshotBody { version: p.version, spec: &p.spec }).into_response()),
        _ => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn router_builds() {
        let dir = tempfile::tempdir().unwrap();
        let dns = switchboard_dataplane::dns::DnsCache::new();
        let state = crate::State::open(&dir.path().join("t.db"), dns, None).unwrap();
        let _ = super::app(state, 1024);
    }
}
