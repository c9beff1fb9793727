//! The web dashboard: one page, its script and its style sheet, compiled into the crate so
//! that it works offline and needs no build step.
//!
//! These files hold no data and are served without the access check: a browser's
//! navigation cannot send the `Authorization` header. The page asks the operator for the
//! token and sends it with every `/api` call; it keeps the token in `sessionStorage` only,
//! so it dies with the tab and is never sent on its own the way a cookie would be.
//!
//! Every URL in the page is relative, so the dashboard also works when the router is nested
//! under a prefix (open it with a trailing slash then: `/admin/`).

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

/// Scripts, styles and fetches from this origin only, and no inline script: data shown
/// by the page can never run as code. No framing, so another site cannot overlay the
/// dashboard's buttons.
pub(crate) const POLICY: &str = "default-src 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The dashboard's routes: `/` and `/assets/...`.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/assets/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
}

/// One embedded file with the headers every asset carries.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY)),
            // A browser must not guess another type for the script or the style sheet.
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            // The files change with the crate's version, not while a server runs, but a
            // stale script after an upgrade would call routes that moved.
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}
