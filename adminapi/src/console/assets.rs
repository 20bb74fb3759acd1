//! The console's files, embedded in the binary (no Node, no CDN, no files
//! beside it): served at `/` (the page) and `/console/...` (modules, styles,
//! the vendored uPlot), with a Content-Security-Policy that allows scripts
//! and styles from this origin only.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::SharedState;

/// The policy every console file is served with: no inline script, no
/// other origin, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// (path under /console/, content type, bytes)
const FILES: &[(&str, &str, &[u8])] = &[
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../console/app.js")),
    ("pages.js", "text/javascript; charset=utf-8", include_bytes!("../../console/pages.js")),
    ("ui.js", "text/javascript; charset=utf-8", include_bytes!("../../console/ui.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("../../console/style.css")),
    (
        "vendor/uplot/uPlot.esm.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/vendor/uplot/uPlot.esm.js"),
    ),
    (
        "vendor/uplot/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../console/vendor/uplot/uPlot.min.css"),
    ),
    ("vendor/uplot/LICENSE", "text/plain; charset=utf-8", include_bytes!("../../console/vendor/uplot/LICENSE")),
];

const INDEX: &[u8] = include_bytes!("../../console/index.html");

fn secured(mut r: Response, cache: &'static str) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

fn not_found() -> Response {
    crate::error::ApiError::new(StatusCode::NOT_FOUND, "unknown_url", "No such console file.").into_response()
}

/// The console page (every page of it: navigation is in the page).
pub async fn index(State(s): State<SharedState>) -> Response {
    if !s.console.enabled() {
        return not_found();
    }
    secured(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response(), "no-store")
}

/// A console module, style sheet or vendored file.
pub async fn file(State(s): State<SharedState>, Path(path): Path<String>) -> Response {
    if !s.console.enabled() {
        return not_found();
    }
    match FILES.iter().find(|(p, _, _)| *p == path) {
        Some((_, ct, bytes)) => secured(([(header::CONTENT_TYPE, *ct)], *bytes).into_response(), "no-cache"),
        None => not_found(),
    }
}
