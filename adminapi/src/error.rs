//! The admin API's one error type, rendered in one place through the shared
//! OpenAI error body (`switchboard_shared::error::ErrorBody`):
//! `{"error":{"message","type","param","code"}}`, as the data plane writes it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use switchboard_shared::error::ErrorBody;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), param: None }
    }

    pub fn param(mut self, p: impl Into<String>) -> Self {
        self.param = Some(p.into());
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message).param(field)
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        let shown: String = id.chars().take(128).collect();
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("No {what} with id or name `{shown}`."))
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_admin_token",
            "A valid admin token is required: Authorization: Bearer <token>.",
        )
    }

    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "read_only_token", "This token is read-only; writes need an admin token.")
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match &e {
            rusqlite::Error::SqliteFailure(f, msg) => match f.code {
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                    ApiError::unavailable("The database is busy; nothing was changed. Retry shortly.")
                }
                ErrorCode::DiskFull => ApiError::unavailable("The database disk is full; nothing was changed."),
                ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::SystemIoFailure => ApiError::unavailable(
                    format!("The database cannot be written ({}); nothing was changed.", f.code as i32),
                ),
                ErrorCode::ConstraintViolation => {
                    let m = msg.clone().unwrap_or_default();
                    if m.contains("UNIQUE") {
                        ApiError::conflict("A resource with that name already exists.")
                    } else if m.contains("FOREIGN KEY") {
                        ApiError::invalid_field("org", "The referenced resource does not exist.")
                    } else {
                        ApiError::bad_request("The change breaks a constraint.")
                    }
                }
                _ => ApiError::internal("Storage error; nothing was changed."),
            },
            _ => ApiError::internal("Storage error; nothing was changed."),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody::for_status(self.status, self.code, &self.message).with_param(self.param.as_deref());
        (self.status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body.to_json())
            .into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
