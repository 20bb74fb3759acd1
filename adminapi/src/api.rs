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
use switchboard_dataplane::limits::{Scope, Unit};

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
                let mut err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", shorten(&detail));
                if let Some(field) = json_error_field(&detail) {
                    err = err.param(field);
                }
                Err(err)
            }
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::bad_request(shorten(&e.body_text()))),
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

/// The field a JSON data error is about: the path serde reports before the
/// message (`targets[0].weight: invalid value ...`), or for a missing or
/// unknown field at the top, its name. Never the value.
fn json_error_field(detail: &str) -> Option<String> {
    let rest = detail.split_once("target type: ").map_or(detail, |(_, r)| r);
    // A path has no spaces (`records[0].org`); "invalid type: ..." is no path.
    let (path, message) = match rest.split_once(": ") {
        Some((p, m)) if !p.contains(' ') => (p, m),
        _ => ("", rest),
    };
    let named = || {
        let m = message.strip_prefix("unknown field `").or_else(|| message.strip_prefix("missing field `"))?;
        m.split('`').next().map(str::to_string)
    };
    let field = match named() {
        // serde names an unknown field in its path, a missing one beside it.
        Some(n) if path == "." || path.is_empty() => n,
        Some(n) if path == n || path.ends_with(&format!(".{n}")) => path.to_string(),
        Some(n) => format!("{path}.{n}"),
        None if path.is_empty() => return None,
        None => path.to_string(),
    };
    Some(field.chars().take(128).collect())
}

/// A rejection's text, bounded: serde quotes the offending value, which may
/// be megabytes.
fn shorten(text: &str) -> String {
    const MAX_CHARS: usize = 300;
    if text.chars().count() <= MAX_CHARS {
        return text.to_string();
    }
    let mut out: String = text.chars().take(MAX_CHARS).collect();
    out.push_str("...");
    out
}

/// Query string whose rejection is our error shape.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e: QueryRejection| ApiError::bad_request(shorten(&e.body_text())))
    }
}

/// The authenticated admin: token id and whether it may write.
pub struct Admin {
    pub token_id: String,
    pub can_write: bool,
}

impl Admin {
    pub(crate) fn writer(&self) -> ApiResult<&str> {
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
        let Some(token) = bearer(&parts.headers) else {
            // The web console: a session cookie (with anti-forgery checks on writes).
            if crate::console::session_cookie(&parts.headers).is_some() {
                return crate::console::authenticate(state, &parts.method, &parts.headers).await;
            }
            return Err(ApiError::unauthorized());
        };
        let st = state.clone();
        let found = blocking(move || st.read(|c| store::authenticate_token(c, st.hasher(), &token))).await?;
        match found {
            Some((id, role)) => Ok(Admin { token_id: id, can_write: role == "admin" }),
            None => Err(ApiError::unauthorized()),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
fn bearer(headers: &axum::http::HeaderMap) -> Option<String> {
    let header = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())?;
    match header.split_at_checked(7) {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer ") && !t.trim().is_empty() => {
            Some(t.trim().to_string())
        }
        _ => None,
    }
}

pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> ApiResult<T> + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|_| ApiError::internal("the database task failed"))?
}

fn created<T: Serialize>(v: T) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

/// The answer to a DELETE.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Deleted {
    pub id: String,
    pub deleted: bool,
}

/// Every error: `{"error": {...}}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: String,
}

fn deleted(id: &str) -> Response {
    Json(Deleted { id: id.to_string(), deleted: true }).into_response()
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let comps = doc.components.get_or_insert_with(Default::default);
        comps.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of this service, served at `/v1/admin/openapi.json`.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Switchboard admin API", description = "Orgs, API keys, providers, routes, admin tokens and the audit log. Every change is published to the data plane before the response."),
    paths(
        list_orgs, create_org, get_org, update_org, delete_org,
        list_keys, create_key, get_key, update_key, delete_key, rotate_key, revoke_key,
        list_providers, create_provider, get_provider, update_provider, delete_provider,
        list_routes, create_route, get_route, update_route, delete_route,
        list_tokens, create_token, revoke_token,
        list_audit, watch_snapshot, list_targets,
        usage_report, usage_top_keys, request_log, ingest_usage,
        get_key_limits, put_key_limits, get_org_limits, put_org_limits,
        create_enrollment_token, list_enrollment_tokens, revoke_enrollment_token,
        list_nodes, get_node, update_node, delete_node,
        smoke,
        crate::console::sign_in, crate::console::current, crate::console::sign_out,
        crate::console::overview, crate::console::playground::chat,
        crate::cluster::get_cluster
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

pub fn app(state: SharedState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/admin/health", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/v1/admin/openapi.json", get(|| async { Json(<ApiDoc as utoipa::OpenApi>::openapi()) }))
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
        .route("/v1/admin/targets", get(list_targets))
        .route("/v1/admin/snapshot", get(watch_snapshot))
        .route("/v1/admin/cluster", get(crate::cluster::get_cluster))
        .route("/v1/admin/keys/{id}/limits", get(get_key_limits).put(put_key_limits))
        .route("/v1/admin/orgs/{id}/limits", get(get_org_limits).put(put_org_limits))
        .route("/v1/admin/usage", get(usage_report))
        .route("/v1/admin/usage/top-keys", get(usage_top_keys))
        .route("/v1/admin/requests", get(request_log))
        .route("/v1/admin/enrollment-tokens", get(list_enrollment_tokens).post(create_enrollment_token))
        .route("/v1/admin/enrollment-tokens/{id}/revoke", post(revoke_enrollment_token))
        .route("/v1/admin/nodes", get(list_nodes))
        .route("/v1/admin/nodes/{id}", get(get_node).patch(update_node).delete(delete_node))
        .route("/v1/admin/smoke", post(smoke))
        .route(
            "/v1/admin/console/session",
            post(crate::console::sign_in).get(crate::console::current).delete(crate::console::sign_out),
        )
        .route("/v1/admin/console/overview", get(crate::console::overview))
        .route("/v1/admin/console/playground/chat", post(crate::console::playground::chat))
        .route("/", get(crate::console::assets::index))
        .route("/console/{*path}", get(crate::console::assets::file))
        .route("/v1/nodes/enroll", post(node_enroll))
        .route("/v1/nodes/heartbeat", post(node_heartbeat))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "unknown_url", "No such admin endpoint.") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "This endpoint does not take that method.",
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(move |req: Request, next: axum::middleware::Next| {
            refuse_declared_oversize(req, next, max_body_bytes)
        }))
        // Usage batches from remote data planes: larger bodies than admin changes.
        .merge(
            Router::new()
                .route("/v1/admin/usage/ingest", post(ingest_usage))
                .layer(DefaultBodyLimit::max(INGEST_MAX_BYTES))
                .layer(axum::middleware::from_fn(|req: Request, next: axum::middleware::Next| {
                    refuse_declared_oversize(req, next, INGEST_MAX_BYTES)
                })),
        )
        .with_state(state)
}

/// Largest usage batch a remote data plane may post.
pub const INGEST_MAX_BYTES: usize = 16 * 1024 * 1024;

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

#[utoipa::path(get, path = "/v1/admin/orgs", tag = "orgs", params(PageQuery), responses((status = 200, body = Page<Org>), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn list_orgs(State(s): State<SharedState>, _a: Admin, ApiQuery(q): ApiQuery<PageQuery>) -> ApiResult<Response> {
    Ok(Json(read!(s, |c| store::list_orgs(c, &q))?).into_response())
}

#[utoipa::path(get, path = "/v1/admin/orgs/{id}", tag = "orgs", params(("id" = String, Path, description = "id or name")), responses((status = 200, body = Org), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn get_org(State(s): State<SharedState>, _a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(read!(s, |c| store::find_org(c, &id))?).into_response())
}

#[utoipa::path(post, path = "/v1/admin/orgs", tag = "orgs", request_body = OrgInput, responses((status = 201, body = Org), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn create_org(State(s): State<SharedState>, a: Admin, ApiJson(b): ApiJson<OrgInput>) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    Ok(created(write!(s, true, |c| store::create_org(c, &actor, &b))?))
}

#[utoipa::path(patch, path = "/v1/admin/orgs/{id}", tag = "orgs", params(("id" = String, Path, description = "id or name")), request_body = OrgInput, responses((status = 200, body = Org), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn update_org(
    State(s): State<SharedState>,
    a: Admin,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<OrgInput>,
) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    Ok(Json(write!(s, true, |c| store::update_org(c, &actor, &id, &b))?).into_response())
}

#[utoipa::path(delete, path = "/v1/admin/orgs/{id}", tag = "orgs", params(("id" = String, Path, description = "id or name")), responses((status = 200, body = Deleted), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn delete_org(State(s): State<SharedState>, a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    let idc = id.clone();
    write!(s, true, |c| store::delete_org(c, &actor, &idc))?;
    Ok(deleted(&id))
}

// ---- keys

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
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

#[utoipa::path(get, path = "/v1/admin/keys", tag = "keys", params(KeyListQuery), responses((status = 200, body = Page<Key>), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn list_keys(
    State(s): State<SharedState>,
    _a: Admin,
    ApiQuery(q): ApiQuery<KeyListQuery>,
) -> ApiResult<Response> {
    let pq = PageQuery { offset: q.offset, limit: q.limit };
    Ok(Json(read!(s, |c| store::list_keys(c, &pq, q.org.as_deref()))?).into_response())
}

#[utoipa::path(get, path = "/v1/admin/keys/{id}", tag = "keys", params(("id" = String, Path, description = "id or name")), responses((status = 200, body = Key), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn get_key(State(s): State<SharedState>, _a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(read!(s, |c| store::find_key(c, &id))?).into_response())
}

#[utoipa::path(post, path = "/v1/admin/keys", tag = "keys", request_body = KeyCreate, responses((status = 201, body = KeyWithSecret), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn create_key(State(s): State<SharedState>, a: Admin, ApiJson(b): ApiJson<KeyCreate>) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    let h = s.hasher().clone();
    Ok(created(write!(s, true, |c| store::create_key(c, &h, &actor, &b))?))
}

#[utoipa::path(patch, path = "/v1/admin/keys/{id}", tag = "keys", params(("id" = String, Path, description = "id or name")), request_body = KeyUpdate, responses((status = 200, body = Key), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn update_key(
    State(s): State<SharedState>,
    a: Admin,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<KeyUpdate>,
) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    Ok(Json(write!(s, true, |c| store::update_key(c, &actor, &id, &b))?).into_response())
}

#[utoipa::path(post, path = "/v1/admin/keys/{id}/rotate", tag = "keys", params(("id" = String, Path, description = "id or name")), responses((status = 200, body = KeyWithSecret), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn rotate_key(State(s): State<SharedState>, a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    let h = s.hasher().clone();
    Ok(Json(write!(s, true, |c| store::rotate_key(c, &h, &actor, &id))?).into_response())
}

#[utoipa::path(post, path = "/v1/admin/keys/{id}/revoke", tag = "keys", params(("id" = String, Path, description = "id or name")), responses((status = 200, body = Key), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn revoke_key(State(s): State<SharedState>, a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    let u = KeyUpdate { enabled: Some(false), ..KeyUpdate::default() };
    Ok(Json(write!(s, true, |c| store::update_key(c, &actor, &id, &u))?).into_response())
}

#[utoipa::path(delete, path = "/v1/admin/keys/{id}", tag = "keys", params(("id" = String, Path, description = "id or name")), responses((status = 200, body = Deleted), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn delete_key(State(s): State<SharedState>, a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    let idc = id.clone();
    write!(s, true, |c| store::delete_key(c, &actor, &idc))?;
    Ok(deleted(&id))
}

// ---- providers

#[utoipa::path(get, path = "/v1/admin/providers", tag = "providers", params(PageQuery), responses((status = 200, body = Page<Provider>), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn list_providers(
    State(s): State<SharedState>,
    _a: Admin,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    Ok(Json(read!(s, |c| store::list_providers(c, &q))?).into_response())
}

#[utoipa::path(get, path = "/v1/admin/providers/{id}", tag = "providers", params(("id" = String, Path, description = "id or name")), responses((status = 200, body = Provider), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn get_provider(State(s): State<SharedState>, _a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(read!(s, |c| store::find_provider(c, &id))?).into_response())
}

#[utoipa::path(post, path = "/v1/admin/providers", tag = "providers", request_body = ProviderCreate, responses((status = 201, body = Provider), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn create_provider(
    State(s): State<SharedState>,
    a: Admin,
    ApiJson(b): ApiJson<ProviderCreate>,
) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    Ok(created(write!(s, true, |c| store::create_provider(c, &actor, b))?))
}

#[utoipa::path(patch, path = "/v1/admin/providers/{id}", tag = "providers", params(("id" = String, Path, description = "id or name")), request_body = ProviderUpdate, responses((status = 200, body = Provider), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn update_provider(
    State(s): State<SharedState>,
    a: Admin,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ProviderUpdate>,
) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    Ok(Json(write!(s, true, |c| store::update_provider(c, &actor, &id, b))?).into_response())
}

#[utoipa::path(delete, path = "/v1/admin/providers/{id}", tag = "providers", params(("id" = String, Path, description = "id or name")), responses((status = 200, body = Deleted), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn delete_provider(State(s): State<SharedState>, a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    let idc = id.clone();
    write!(s, true, |c| store::delete_provider(c, &actor, &idc))?;
    Ok(deleted(&id))
}

// ---- routes

#[utoipa::path(get, path = "/v1/admin/routes", tag = "routes", params(PageQuery), responses((status = 200, body = Page<Route>), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn list_routes(State(s): State<SharedState>, _a: Admin, ApiQuery(q): ApiQuery<PageQuery>) -> ApiResult<Response> {
    Ok(Json(read!(s, |c| store::list_routes(c, &q))?).into_response())
}

#[utoipa::path(get, path = "/v1/admin/routes/{id}", tag = "routes", params(("id" = String, Path, description = "id or name")), responses((status = 200, body = Route), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn get_route(State(s): State<SharedState>, _a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(read!(s, |c| store::find_route(c, &id))?).into_response())
}

#[utoipa::path(post, path = "/v1/admin/routes", tag = "routes", request_body = RouteCreate, responses((status = 201, body = Route), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn create_route(State(s): State<SharedState>, a: Admin, ApiJson(b): ApiJson<RouteCreate>) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    Ok(created(write!(s, true, |c| store::create_route(c, &actor, b))?))
}

#[utoipa::path(patch, path = "/v1/admin/routes/{id}", tag = "routes", params(("id" = String, Path, description = "id or name")), request_body = RouteUpdate, responses((status = 200, body = Route), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn update_route(
    State(s): State<SharedState>,
    a: Admin,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<RouteUpdate>,
) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    Ok(Json(write!(s, true, |c| store::update_route(c, &actor, &id, b))?).into_response())
}

#[utoipa::path(delete, path = "/v1/admin/routes/{id}", tag = "routes", params(("id" = String, Path, description = "id or name")), responses((status = 200, body = Deleted), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn delete_route(State(s): State<SharedState>, a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    let idc = id.clone();
    write!(s, true, |c| store::delete_route(c, &actor, &idc))?;
    Ok(deleted(&id))
}

// ---- admin tokens

#[utoipa::path(get, path = "/v1/admin/tokens", tag = "admin tokens", params(PageQuery), responses((status = 200, body = Page<AdminToken>), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn list_tokens(State(s): State<SharedState>, _a: Admin, ApiQuery(q): ApiQuery<PageQuery>) -> ApiResult<Response> {
    Ok(Json(read!(s, |c| store::list_tokens(c, &q))?).into_response())
}

#[utoipa::path(post, path = "/v1/admin/tokens", tag = "admin tokens", request_body = AdminTokenCreate, responses((status = 201, body = AdminTokenWithSecret), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn create_token(
    State(s): State<SharedState>,
    a: Admin,
    ApiJson(b): ApiJson<AdminTokenCreate>,
) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    let secret = store::new_token_secret();
    let sc = secret.clone();
    let h = s.hasher().clone();
    let token = write!(s, false, |c| store::insert_token(c, &h, &actor, &b.name, &b.role, &sc))?;
    Ok(created(AdminTokenWithSecret { token, token_secret: secret }))
}

#[utoipa::path(post, path = "/v1/admin/tokens/{id}/revoke", tag = "admin tokens", params(("id" = String, Path)), responses((status = 200, body = AdminToken), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn revoke_token(State(s): State<SharedState>, a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    Ok(Json(write!(s, false, |c| store::revoke_token(c, &actor, &id))?).into_response())
}

// ---- smoke check

/// Run the smoke check (`switchboard smoke`): real requests through a data
/// plane with a test key, fault injection for failover, costs read back from
/// the usage records. 200 with the report whatever the checks found
/// (`passed` says); 422 for input it cannot run with.
#[utoipa::path(post, path = "/v1/admin/smoke", tag = "routing", request_body = crate::smoke::SmokeInput, responses((status = 200, body = crate::smoke::SmokeReport), (status = 422, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody)), security(("admin_token" = [])))]
async fn smoke(
    State(s): State<SharedState>,
    a: Admin,
    ApiJson(b): ApiJson<crate::smoke::SmokeInput>,
) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    Ok(Json(crate::smoke::run(&s, &actor, b).await?).into_response())
}

// ---- target health

/// One upstream's health as routing sees it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TargetStatus {
    /// The upstream (provider) name.
    pub name: String,
    /// `closed` (healthy), `open` (ejected), `half_open` (a trial request may go), `cooling` (429 Retry-After).
    pub state: String,
    /// Moving average of time to first byte, milliseconds (null until measured).
    pub ewma_ttfb_ms: Option<f64>,
    /// Failures / (failures + successes) since start.
    pub error_rate: f64,
    pub in_flight: u32,
    pub successes: u64,
    pub failures: u64,
}

/// Health of every upstream the in-process data plane has routed to.
#[utoipa::path(get, path = "/v1/admin/targets", tag = "routing", params(PageQuery), responses((status = 200, body = Page<TargetStatus>), (status = 401, body = ErrorBody)), security(("admin_token" = [])))]
async fn list_targets(
    State(s): State<SharedState>,
    _a: Admin,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    use std::sync::atomic::Ordering::Relaxed;
    let now = switchboard_dataplane::health::now_ms();
    let list: Vec<TargetStatus> = s
        .health()
        .all()
        .iter()
        .map(|h| {
            let ewma = h.ewma_ttfb_us.load(Relaxed);
            TargetStatus {
                name: h.name.to_string(),
                state: h.state(now).name().to_string(),
                ewma_ttfb_ms: (ewma > 0).then(|| ewma as f64 / 1000.0),
                error_rate: h.error_rate(),
                in_flight: h.in_flight.load(Relaxed),
                successes: h.successes.load(Relaxed),
                failures: h.failures.load(Relaxed),
            }
        })
        .collect();
    Ok(Json(page_of(list, &q)?).into_response())
}

/// A page of a list held in memory, with the same `limit` and `offset`
/// rules (and `next_offset`) as the lists read from the database.
fn page_of<T>(all: Vec<T>, q: &PageQuery) -> ApiResult<Page<T>> {
    if q.limit == 0 || q.limit > 1000 {
        return Err(ApiError::invalid_field("limit", "`limit` must be 1 to 1000"));
    }
    if q.offset > store::MAX_OFFSET {
        return Err(ApiError::invalid_field("offset", format!("`offset` must be 0 to {}", store::MAX_OFFSET)));
    }
    let total = all.len() as u64;
    let data: Vec<T> = all.into_iter().skip(q.offset.min(total) as usize).take(q.limit as usize).collect();
    let next = q.offset.saturating_add(q.limit);
    Ok(Page { object: "list", data, next_offset: (next < total).then_some(next) })
}

// ---- audit

#[utoipa::path(get, path = "/v1/admin/audit", tag = "audit", params(AuditQuery), responses((status = 200, body = Page<AuditEntry>), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn list_audit(State(s): State<SharedState>, _a: Admin, ApiQuery(q): ApiQuery<AuditQuery>) -> ApiResult<Response> {
    Ok(Json(read!(s, |c| store::list_audit(c, &q))?).into_response())
}

// ---- limits and quotas

/// A rate limit's state now (in this process's data plane).
#[derive(Serialize, utoipa::ToSchema)]
pub struct RateStatus {
    /// Per minute.
    pub limit: u64,
    pub remaining: u64,
    /// Milliseconds until the limit is back to full.
    pub reset_ms: u64,
}

/// A quota's state in its current period.
#[derive(Serialize, utoipa::ToSchema)]
pub struct QuotaReport {
    /// `day` or `month` (UTC).
    pub period: String,
    pub period_start: String,
    pub resets_at: String,
    pub max_usd: Option<f64>,
    /// Accounted spend this period (all data planes), USD.
    pub used_usd: f64,
    /// Held by requests in flight (this process), USD.
    pub held_usd: f64,
    pub remaining_usd: Option<f64>,
    pub max_tokens: Option<u64>,
    pub used_tokens: u64,
    pub held_tokens: u64,
    pub remaining_tokens: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelLimitReport {
    pub model: String,
    pub requests: Option<RateStatus>,
    pub tokens: Option<RateStatus>,
}

/// Limits, what is used and what remains.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LimitsReport {
    pub object: &'static str,
    /// `key `ID`` or `org `NAME``.
    pub scope: String,
    /// The configured limits (the body `PUT` takes).
    #[schema(value_type = Object)]
    pub limits: serde_json::Value,
    pub requests: Option<RateStatus>,
    pub tokens: Option<RateStatus>,
    pub quotas: Vec<QuotaReport>,
    /// Org only: limits per model.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelLimitReport>,
}

fn rate_status(s: &SharedState, scope: Scope<'_>, unit: Unit) -> Option<RateStatus> {
    s.policy().find_bucket(scope, unit).map(|b| RateStatus {
        limit: b.limit(),
        remaining: b.remaining(),
        reset_ms: b.reset_ns() / 1_000_000,
    })
}

fn quota_reports(
    s: &SharedState,
    c: &store::Db<'_>,
    scope: Scope<'_>,
    column: &str,
    value: &str,
    quotas: &[switchboard_shared::QuotaSpec],
) -> ApiResult<Vec<QuotaReport>> {
    let mut out = Vec::new();
    for q in quotas {
        let st = s.policy().quota(scope, q.period, q.max_usd, q.max_tokens).status();
        let (nanos, tokens) = store::spent_since(c, column, value, st.period_start as i64)?;
        let used_usd = nanos as f64 / 1e9;
        let held_usd = st.held_nanos as f64 / 1e9;
        out.push(QuotaReport {
            period: q.period.name().to_string(),
            period_start: crate::usage::format_time(st.period_start as i64),
            resets_at: crate::usage::format_time(st.resets_at as i64),
            max_usd: q.max_usd,
            used_usd,
            held_usd,
            remaining_usd: q.max_usd.map(|m| (m - used_usd - held_usd).max(0.0)),
            max_tokens: q.max_tokens,
            used_tokens: tokens,
            held_tokens: st.held_tokens,
            remaining_tokens: q.max_tokens.map(|m| m.saturating_sub(tokens + st.held_tokens)),
        });
    }
    Ok(out)
}

/// A key's rate limits and quotas: configured, used, remaining.
#[utoipa::path(get, path = "/v1/admin/keys/{id}/limits", tag = "keys", responses((status = 200, body = LimitsReport), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)), security(("admin_token" = [])))]
async fn get_key_limits(State(s): State<SharedState>, _a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    let st = s.clone();
    let report = blocking(move || {
        st.read(|c| {
            let key = store::find_key(c, &id)?;
            let limits = store::key_limits(c, &key.id)?;
            let scope = Scope::Key(&key.id);
            Ok(LimitsReport {
                object: "limits",
                requests: limits.rpm.and(rate_status(&st, scope, Unit::Requests)),
                tokens: limits.tpm.and(rate_status(&st, scope, Unit::Tokens)),
                quotas: quota_reports(&st, c, scope, "key_id", &key.id, &limits.quotas)?,
                limits: serde_json::to_value(&limits).unwrap_or_default(),
                models: Vec::new(),
                scope: scope.to_string(),
            })
        })
    })
    .await?;
    Ok(Json(report).into_response())
}

/// Replace a key's rate limits and quotas (`{"rpm","tpm","quotas":[{"period","max_usd","max_tokens"}]}`); applies to the next request.
#[utoipa::path(put, path = "/v1/admin/keys/{id}/limits", tag = "keys", request_body(content = Object, description = "rpm, tpm, quotas"), responses((status = 200, body = LimitsReport), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("admin_token" = [])))]
async fn put_key_limits(
    State(s): State<SharedState>,
    a: Admin,
    Path(id): Path<String>,
    ApiJson(limits): ApiJson<switchboard_shared::KeyLimits>,
) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    let key_id = id.clone();
    let stored = limits.clone();
    write!(s, true, |c| {
        let key = store::find_key(c, &key_id)?;
        store::set_key_limits(c, &actor, &key.id, &limits)
    })?;
    committed(get_key_limits(State(s), a, Path(id)).await, &stored)
}

/// The answer to a change already committed: its read-back, or, when that
/// fails on the server's side, 200 with what was stored (a 5xx must mean
/// that nothing changed).
fn committed<T: Serialize>(read_back: ApiResult<Response>, stored: &T) -> ApiResult<Response> {
    match read_back {
        Err(e) if e.status.is_server_error() => {
            tracing::warn!(error = %e.message, "a committed change could not be read back");
            let body = serde_json::json!({
                "object": "limits",
                "limits": stored,
                "warning": "The change was saved; the usage figures could not be read.",
            });
            Ok(Json(body).into_response())
        }
        other => other,
    }
}

/// An org's rate limits (overall and per model) and quotas: configured, used, remaining.
#[utoipa::path(get, path = "/v1/admin/orgs/{id}/limits", tag = "orgs", responses((status = 200, body = LimitsReport), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)), security(("admin_token" = [])))]
async fn get_org_limits(State(s): State<SharedState>, _a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    let st = s.clone();
    let report = blocking(move || {
        st.read(|c| {
            let (org, limits) = store::org_limits(c, &id)?;
            let scope = Scope::Org(&org.name);
            let models = limits
                .models
                .iter()
                .map(|m| {
                    let ms = Scope::OrgModel(&org.name, &m.model);
                    ModelLimitReport {
                        model: m.model.clone(),
                        requests: m.rpm.and(rate_status(&st, ms, Unit::Requests)),
                        tokens: m.tpm.and(rate_status(&st, ms, Unit::Tokens)),
                    }
                })
                .collect();
            Ok(LimitsReport {
                object: "limits",
                requests: limits.limits.rpm.and(rate_status(&st, scope, Unit::Requests)),
                tokens: limits.limits.tpm.and(rate_status(&st, scope, Unit::Tokens)),
                quotas: quota_reports(&st, c, scope, "org", &org.name, &limits.limits.quotas)?,
                limits: serde_json::to_value(&limits).unwrap_or_default(),
                models,
                scope: scope.to_string(),
            })
        })
    })
    .await?;
    Ok(Json(report).into_response())
}

/// Replace an org's rate limits and quotas (`{"rpm","tpm","quotas","models":[{"model","rpm","tpm"}]}`); applies to the next request.
#[utoipa::path(put, path = "/v1/admin/orgs/{id}/limits", tag = "orgs", request_body(content = Object, description = "rpm, tpm, quotas, models"), responses((status = 200, body = LimitsReport), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("admin_token" = [])))]
async fn put_org_limits(
    State(s): State<SharedState>,
    a: Admin,
    Path(id): Path<String>,
    ApiJson(limits): ApiJson<switchboard_shared::OrgLimits>,
) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    let org_id = id.clone();
    let stored = limits.clone();
    write!(s, true, |c| store::set_org_limits(c, &actor, &org_id, &limits))?;
    committed(get_org_limits(State(s), a, Path(id)).await, &stored)
}

// ---- usage

/// Usage totals over a time range, grouped by any of org, key, model, route and
/// target, per minute, hour, day or in total; JSON, or CSV with `format=csv`.
#[utoipa::path(get, path = "/v1/admin/usage", tag = "usage", params(crate::usage::UsageQuery), responses((status = 200, body = crate::usage::UsageReport, description = "JSON, or text/csv with format=csv"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn usage_report(
    State(s): State<SharedState>,
    _a: Admin,
    ApiQuery(q): ApiQuery<crate::usage::UsageQuery>,
) -> ApiResult<Response> {
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::invalid_field("format", "expected json or csv")),
    };
    let report = read!(s, |c| crate::usage::report(c, &q))?;
    if csv {
        let body = crate::usage::report_csv(&report);
        return Ok(([(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response());
    }
    Ok(Json(report).into_response())
}

/// The keys that spent the most (or used the most tokens or requests) in a time range.
#[utoipa::path(get, path = "/v1/admin/usage/top-keys", tag = "usage", params(crate::usage::TopKeysQuery), responses((status = 200, body = Page<crate::usage::TopKey>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("admin_token" = [])))]
async fn usage_top_keys(
    State(s): State<SharedState>,
    _a: Admin,
    ApiQuery(q): ApiQuery<crate::usage::TopKeysQuery>,
) -> ApiResult<Response> {
    let data = read!(s, |c| crate::usage::top_keys(c, &q))?;
    Ok(Json(Page { object: "list", data, next_offset: None }).into_response())
}

/// The raw request log, newest first, with filters (kept `usage.retention_days`).
#[utoipa::path(get, path = "/v1/admin/requests", tag = "usage", params(crate::usage::RequestLogQuery), responses((status = 200, body = Page<crate::usage::LoggedRequest>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)), security(("admin_token" = [])))]
async fn request_log(
    State(s): State<SharedState>,
    _a: Admin,
    ApiQuery(q): ApiQuery<crate::usage::RequestLogQuery>,
) -> ApiResult<Response> {
    let data = read!(s, |c| crate::usage::request_log(c, &q))?;
    Ok(Json(Page { object: "list", data, next_offset: None }).into_response())
}

#[derive(Serialize, utoipa::ToSchema)]
struct Ingested {
    /// Records in the batch.
    received: usize,
    /// Records accounted now (the others were already accounted).
    accounted: usize,
}

/// A batch of usage records from a data plane in another process (admin tokens).
#[utoipa::path(post, path = "/v1/admin/usage/ingest", tag = "data planes", responses((status = 200, body = Ingested), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn ingest_usage(
    State(s): State<SharedState>,
    a: Admin,
    ApiJson(batch): ApiJson<switchboard_shared::usage::UsageBatch>,
) -> ApiResult<Response> {
    a.writer()?;
    let received = batch.records.len();
    let st = s.clone();
    let accounted = blocking(move || st.ingest(&batch.records)).await?;
    Ok(Json(Ingested { received, accounted }).into_response())
}

// ---- snapshot watch (for data planes in other processes)

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct WatchQuery {
    /// Answer once the version is greater than this.
    #[serde(default)]
    after: u64,
    /// How long to wait for a newer version (at most 60 s).
    #[serde(default = "default_wait")]
    wait_ms: u64,
    /// The admin instance `after` was counted under (from the last answer).
    /// Another instance (the admin restarted, perhaps on an older database)
    /// is answered at once with its snapshot, whatever its version.
    #[serde(default)]
    instance: Option<String>,
}

fn default_wait() -> u64 {
    30_000
}

#[derive(Serialize)]
struct SnapshotBody<'a> {
    version: u64,
    /// This admin's instance id: versions compare only under the same one.
    instance: &'a str,
    spec: &'a switchboard_shared::RoutingSpec,
    /// The server's key-hash key, so a remote data plane hashes bearer tokens
    /// as the stored hashes were made.
    hash_key: Option<&'a str>,
    /// `[cluster]` (issue 18), for data planes whose own file has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<switchboard_shared::cluster::ClusterConfig>,
}

/// Long poll: the routing spec once its version is past `after`, or 204 when
/// `wait_ms` passes first. Carries provider secrets: admin tokens only.
#[utoipa::path(get, path = "/v1/admin/snapshot", tag = "data planes", params(WatchQuery), responses((status = 200, description = "the routing spec (with provider secrets) and its version"), (status = 204, description = "no newer version within wait_ms"), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn watch_snapshot(
    State(s): State<SharedState>,
    a: Admin,
    ApiQuery(q): ApiQuery<WatchQuery>,
) -> ApiResult<Response> {
    a.writer()?;
    let mut rx = s.subscribe();
    let wait = Duration::from_millis(q.wait_ms.min(60_000));
    let reset = q.instance.as_deref().is_some_and(|i| i != s.instance());
    let found = tokio::time::timeout(wait, async {
        loop {
            {
                let p = rx.borrow_and_update();
                if reset || p.version > q.after {
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
        Ok(Some(p)) => {
            let hash_key = s.hasher().secret().map(|k| k.expose());
            let cluster = switchboard_dataplane::cluster::current().map(|c| c.cfg.clone());
            Ok(Json(SnapshotBody { version: p.version, instance: s.instance(), spec: &p.spec, hash_key, cluster })
                .into_response())
        }
        _ => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn router_builds() {
        let dir = tempfile::tempdir().unwrap();
        let prep = switchboard_dataplane::snapshot::Prepare::default();
        let state = crate::State::open(&dir.path().join("t.db"), prep, None).unwrap();
        let _ = super::app(state, 1024);
    }
}

// ---- BYOI nodes

#[utoipa::path(post, path = "/v1/admin/enrollment-tokens", tag = "nodes", request_body = crate::nodes::EnrollmentTokenCreate, responses((status = 201, body = crate::nodes::EnrollmentTokenWithSecret), (status = 422, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn create_enrollment_token(
    State(s): State<SharedState>,
    a: Admin,
    ApiJson(b): ApiJson<crate::nodes::EnrollmentTokenCreate>,
) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    let st = s.clone();
    Ok(created(write!(s, false, |c| crate::nodes::create_token(c, st.hasher(), &actor, &b))?))
}

#[utoipa::path(get, path = "/v1/admin/enrollment-tokens", tag = "nodes", params(PageQuery), responses((status = 200, body = Page<crate::nodes::EnrollmentToken>), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn list_enrollment_tokens(
    State(s): State<SharedState>,
    _a: Admin,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    let data = read!(s, |c| crate::nodes::list_tokens(c))?;
    Ok(Json(page_of(data, &q)?).into_response())
}

#[utoipa::path(post, path = "/v1/admin/enrollment-tokens/{id}/revoke", tag = "nodes", params(("id" = String, Path, description = "token id")), responses((status = 200, body = crate::nodes::EnrollmentToken), (status = 404, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn revoke_enrollment_token(
    State(s): State<SharedState>,
    a: Admin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    Ok(Json(write!(s, false, |c| crate::nodes::revoke_token(c, &actor, &id))?).into_response())
}

#[utoipa::path(get, path = "/v1/admin/nodes", tag = "nodes", params(PageQuery), responses((status = 200, body = Page<crate::nodes::NodeView>), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn list_nodes(State(s): State<SharedState>, _a: Admin, ApiQuery(q): ApiQuery<PageQuery>) -> ApiResult<Response> {
    let st = s.clone();
    let data = read!(s, |c| crate::nodes::list_nodes(c, &st.live))?;
    Ok(Json(page_of(data, &q)?).into_response())
}

#[utoipa::path(get, path = "/v1/admin/nodes/{id}", tag = "nodes", params(("id" = String, Path, description = "id or name")), responses((status = 200, body = crate::nodes::NodeView), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn get_node(State(s): State<SharedState>, _a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    let st = s.clone();
    Ok(Json(read!(s, |c| crate::nodes::get_node(c, &st.live, &id))?).into_response())
}

#[utoipa::path(patch, path = "/v1/admin/nodes/{id}", tag = "nodes", params(("id" = String, Path, description = "id or name")), request_body = crate::nodes::NodeUpdate, responses((status = 200, body = crate::nodes::NodeView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn update_node(
    State(s): State<SharedState>,
    a: Admin,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<crate::nodes::NodeUpdate>,
) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    let st = s.clone();
    Ok(Json(write!(s, true, |c| crate::nodes::update_node(c, &st.live, &actor, &id, &b))?).into_response())
}

#[utoipa::path(delete, path = "/v1/admin/nodes/{id}", tag = "nodes", params(("id" = String, Path, description = "id or name")), responses((status = 200, body = Deleted), (status = 404, body = ErrorBody), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)), security(("admin_token" = [])))]
async fn delete_node(State(s): State<SharedState>, a: Admin, Path(id): Path<String>) -> ApiResult<Response> {
    let actor = a.writer()?.to_string();
    let st = s.clone();
    let gone = write!(s, true, |c| crate::nodes::delete_node(c, &st.live, &actor, &id))?;
    Ok(deleted(&gone))
}

/// A node agent exchanges its enrollment token for an identity (no admin token).
async fn node_enroll(
    State(s): State<SharedState>,
    ApiJson(b): ApiJson<switchboard_shared::node::EnrollRequest>,
) -> ApiResult<Response> {
    let st = s.clone();
    let out = blocking(move || st.enroll(&b)).await?;
    Ok(created(out))
}

/// A node's heartbeat, with its credential as bearer token.
async fn node_heartbeat(
    State(s): State<SharedState>,
    headers: axum::http::HeaderMap,
    ApiJson(b): ApiJson<switchboard_shared::node::Heartbeat>,
) -> ApiResult<Response> {
    let credential = bearer(&headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_node_credential",
            "A node credential is required: Authorization: Bearer <node id>.<secret>.",
        )
    })?;
    let st = s.clone();
    Ok(Json(blocking(move || st.node_heartbeat(&credential, b)).await?).into_response())
}
