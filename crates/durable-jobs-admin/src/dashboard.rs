//! The web dashboard: one page, its script and its style sheet, compiled into the crate so
//! that it works offline and needs no build step.
//!
//! These files hold no data and are served without the access check: a browser's
//! navigation cannot send the `Authorization` header. The page asks the operator for the
//! token and sends it with every `/api` call; it keeps the token in `sessionStorage` only,
//! so it dies with the tab and is never sent on its own the way a cookie would be.
//!
//! Every URL in the page is relative, so the dashboard also works when the router is nested
//! under a prefix: `Router::nest("/admin", ...)` serves the page at `/admin`, where a URL
//! relative to the page would lose the prefix, so the page names its files under the
//! prefix's last segment (`admin/assets/app.js`), and the script finds the API next to
//! its own URL.

use axum::extract::rejection::NestedPathRejection;
use axum::extract::NestedPath;
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
        .route("/", get(index))
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/assets/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
}

/// The page; under a prefix, with its files' URLs relative to the prefix's last segment
/// (see the module's documentation).
async fn index(nested: Result<NestedPath, NestedPathRejection>) -> Response {
    const HTML: &str = "text/html; charset=utf-8";
    let segment = nested
        .ok()
        .and_then(|path| last_segment(path.as_str()).map(str::to_string));
    match segment {
        Some(segment) => asset(
            HTML,
            INDEX_HTML.replace("=\"assets/", &format!("=\"{segment}/assets/")),
        ),
        None => asset(HTML, INDEX_HTML),
    }
}

/// The last segment of a nesting prefix, if it can stand in a URL as it is.
fn last_segment(prefix: &str) -> Option<&str> {
    let segment = prefix.trim_end_matches('/').rsplit('/').next()?;
    let plain = segment
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    (plain && !segment.is_empty() && segment != "." && segment != "..").then_some(segment)
}

/// One embedded file with the headers every asset carries.
fn asset(content_type: &'static str, body: impl IntoResponse) -> Response {
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
