//! The dashboard's files through the router, without a browser: served without the token,
//! with the headers that keep data from running as code, while the API still needs it.

// The test runs over the embedded runtime.
#![cfg(feature = "local")]

use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{Request, StatusCode};
use durable_jobs::{Registry, WorkerPool, WorkerPoolContext};
use durable_jobs_admin::{Access, Admin, Token};
use durable_jobs_local::LocalRuntime;
use http_body_util::BodyExt;
use tower::ServiceExt;

struct Noop;

impl WorkerPool for Noop {
    type Event = u32;
    type Error = String;
    async fn execute(&self, _ctx: &WorkerPoolContext<u32>) -> Result<(), String> {
        Ok(())
    }
}

fn runtime() -> LocalRuntime {
    let registry = Registry::builder()
        .worker_pool("tasks", Noop)
        .build()
        .unwrap();
    LocalRuntime::builder(registry)
        .in_memory()
        .shards(1)
        .open()
        .unwrap()
}

async fn get(
    admin: Admin,
    path: &str,
    token: Option<&Token>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {}", token.expose()));
    }
    let response = admin
        .router()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn the_dashboard_is_served_without_the_token_and_the_api_is_not() {
    let rt = runtime();
    let token = Token::generate().unwrap();
    let admin = || Admin::local(&rt, Access::Token(token.clone()));

    for (path, content_type, marker) in [
        ("/", "text/html", "<form id=\"token-form\""),
        ("/assets/app.js", "text/javascript", "sessionStorage"),
        ("/assets/style.css", "text/css", "@media"),
    ] {
        let (status, headers, body) = get(admin(), path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        assert!(
            header(CONTENT_TYPE.as_str()).starts_with(content_type),
            "{path}"
        );
        assert!(
            header("content-security-policy").starts_with("default-src 'self'"),
            "{path}: {}",
            header("content-security-policy")
        );
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert!(headers.get("set-cookie").is_none(), "{path}");
        assert!(body.contains(marker), "{path}");
    }

    // The API behind the page still needs the token.
    let (status, _, _) = get(admin(), "/api/jobs", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = get(admin(), "/api/jobs", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\"tasks\""), "{body}");
    // Paths the dashboard does not have are the API's, so they say nothing without it.
    let (status, _, _) = get(admin(), "/assets/other.js", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    rt.shutdown().await;
}

#[test]
fn the_page_has_no_inline_script() {
    // The policy forbids inline script; the page must not depend on it.
    let html = include_str!("../assets/index.html");
    for tag in html.split("<script").skip(1) {
        let open = tag.split('>').next().unwrap_or("");
        assert!(open.contains("src="), "an inline script: <script{open}>");
    }
    for handler in ["onclick=", "onload=", "onsubmit=", "javascript:"] {
        assert!(!html.contains(handler), "an inline handler: {handler}");
    }
}

#[tokio::test]
async fn the_dashboard_works_nested_under_a_prefix() {
    let rt = runtime();
    let token = Token::generate().unwrap();
    let app = axum::Router::new().nest(
        "/ops/admin",
        Admin::local(&rt, Access::Token(token.clone())).router(),
    );
    let get = |path: &str| {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    // The page at `/ops/admin` names its files so that they resolve under the prefix.
    let (status, html) = get("/ops/admin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("src=\"admin/assets/app.js\""), "{html}");
    assert!(html.contains("href=\"admin/assets/style.css\""), "{html}");
    let (status, _) = get("/ops/admin/assets/app.js").await;
    assert_eq!(status, StatusCode::OK);
    // Served alone, the page is unchanged.
    let (_, html) = get_alone(&rt, &token).await;
    assert!(html.contains("src=\"assets/app.js\""), "{html}");
    rt.shutdown().await;
}

async fn get_alone(rt: &LocalRuntime, token: &Token) -> (StatusCode, String) {
    let (status, _, body) = get(Admin::local(rt, Access::Token(token.clone())), "/", None).await;
    (status, body)
}
