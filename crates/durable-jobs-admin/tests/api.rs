//! The admin API through its router: who may call it, how bad input is answered, and an
//! operator's round trip on a live runtime (find the dead letter, replay it, see it run).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use durable_jobs::testing::DEFAULT_START;
use durable_jobs::{Registry, RetryPolicy, WorkerPool, WorkerPoolContext};
use durable_jobs_admin::{serve, Access, Admin, Token, TokenError, MAX_BODY_BYTES};
use durable_jobs_local::LocalRuntime;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const TOKEN: &str = "test-token-0123456789abcdef";

/// Fails every event named "bad" while `failing` is set.
#[derive(Clone, Default)]
struct Tasks {
    failing: Arc<AtomicBool>,
}

impl WorkerPool for Tasks {
    type Event = String;
    type Error = String;

    fn concurrency(&self) -> u32 {
        2
    }

    fn retry(&self) -> RetryPolicy {
        RetryPolicy::none()
    }

    async fn execute(&self, ctx: &WorkerPoolContext<String>) -> Result<(), String> {
        if ctx.event() == "bad" && self.failing.load(Ordering::SeqCst) {
            return Err("bad fails".into());
        }
        Ok(())
    }
}

fn runtime(tasks: Tasks) -> LocalRuntime {
    let registry = Registry::builder()
        .worker_pool("tasks", tasks)
        .build()
        .unwrap();
    LocalRuntime::builder(registry)
        .in_memory()
        .virtual_clock(DEFAULT_START)
        .open()
        .unwrap()
}

fn token_router(runtime: &LocalRuntime) -> Router {
    Admin::local(runtime, Access::Token(Token::new(TOKEN).unwrap())).router()
}

async fn call(router: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

fn get(path: &str, token: Option<&str>) -> Request<Body> {
    let mut request = Request::builder().uri(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    request.body(Body::empty()).unwrap()
}

fn post(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn every_route_needs_the_token() {
    let rt = runtime(Tasks::default());
    let router = token_router(&rt);
    for path in [
        "/api/jobs",
        "/api/jobs/workerPool/tasks/counts",
        "/api/nothing",
    ] {
        let (status, body) = call(&router, get(path, None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(message(&body).contains("Authorization: Bearer"), "{body}");
        let (status, body) = call(&router, get(path, Some("wrong-token-0123456789abcdef"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(message(&body), "wrong bearer token");
    }
    let (status, body) = call(&router, get("/api/jobs", Some(TOKEN))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!([{ "kind": "workerPool", "name": "tasks" }]));
    let (status, _) = call(&router, get("/api/nothing", Some(TOKEN))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    rt.shutdown().await;
}

#[test]
fn weak_tokens_are_refused() {
    assert_eq!(
        Token::new("short").unwrap_err(),
        TokenError::TooShort { len: 5 }
    );
    assert_eq!(
        Token::new("a token with spaces in it, long enough").unwrap_err(),
        TokenError::NotVisibleAscii
    );
    let generated = Token::generate().unwrap();
    assert_eq!(generated.expose().len(), 64);
    assert_ne!(generated.expose(), Token::generate().unwrap().expose());
    assert!(!format!("{generated:?}").contains(generated.expose()));
}

#[tokio::test]
async fn without_a_token_only_loopback_peers_are_served() {
    let rt = runtime(Tasks::default());
    let open = || Admin::local(&rt, Access::LoopbackWithoutToken).router();
    let from = |ip: [u8; 4]| open().layer(MockConnectInfo(SocketAddr::from((ip, 40_000))));
    let (status, _) = call(&from([127, 0, 0, 1]), get("/api/jobs", None)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&from([10, 0, 0, 7]), get("/api/jobs", None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(message(&body).contains("only loopback"), "{body}");
    let (status, body) = call(&open(), get("/api/jobs", None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no peer address: refused");
    assert!(message(&body).contains("peer address is unknown"), "{body}");

    let everywhere = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let refused = serve(everywhere, Admin::local(&rt, Access::LoopbackWithoutToken)).await;
    assert_eq!(
        refused.unwrap_err().kind(),
        std::io::ErrorKind::PermissionDenied
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_a_clear_4xx() {
    let rt = runtime(Tasks::default());
    let router = token_router(&rt);
    let cases = [
        (
            "/api/instances/nonsense",
            StatusCode::BAD_REQUEST,
            "not an instance id",
        ),
        (
            "/api/instances/workerPool:nope:0",
            StatusCode::NOT_FOUND,
            "nope",
        ),
        (
            "/api/instances/workerPool:tasks:7",
            StatusCode::BAD_REQUEST,
            "not an instance index",
        ),
        (
            "/api/jobs/cron/tasks/counts",
            StatusCode::BAD_REQUEST,
            "not a job kind",
        ),
        (
            "/api/jobs/workerPool/tasks/instances?limit=abc",
            StatusCode::BAD_REQUEST,
            "bad query",
        ),
        (
            "/api/jobs/workerPool/tasks/instances?limit=0",
            StatusCode::BAD_REQUEST,
            "1 to 500",
        ),
        (
            "/api/jobs/workerPool/tasks/instances?color=red",
            StatusCode::BAD_REQUEST,
            "bad query",
        ),
        (
            "/api/jobs/workerPool/tasks/instances?status=sleepy",
            StatusCode::BAD_REQUEST,
            "bad query",
        ),
        (
            "/api/instances/workerPool:tasks:0/dead-letters?limit=501",
            StatusCode::BAD_REQUEST,
            "1 to 500",
        ),
        (
            "/api/instances/workerPool:tasks:0/pending?limit=501",
            StatusCode::BAD_REQUEST,
            "1 to 500",
        ),
    ];
    for (path, want, says) in cases {
        let (status, body) = call(&router, get(path, Some(TOKEN))).await;
        assert_eq!(status, want, "{path}: {body}");
        assert!(message(&body).contains(says), "{path}: {body}");
    }

    let actions = "/api/instances/workerPool:tasks:0/actions";
    let (status, body) = call(&router, post(actions, "{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let enqueue = json!({ "op": "workerPoolEnqueue", "event": "x", "priority": 0 });
    let (status, body) = call(&router, post(actions, enqueue.to_string())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(message(&body).contains("not an operator action"), "{body}");
    let huge = json!({ "op": "workerPoolReplay", "eventIds": ["x".repeat(MAX_BODY_BYTES)] });
    let (status, _) = call(&router, post(actions, huge.to_string())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    rt.shutdown().await;
}

#[tokio::test]
async fn an_operator_finds_a_dead_letter_and_replays_it() {
    let tasks = Tasks::default();
    tasks.failing.store(true, Ordering::SeqCst);
    let rt = runtime(tasks.clone());
    let router = token_router(&rt);
    let pool = rt.client();
    let pool = pool.worker_pool::<Tasks>();
    pool.enqueue(&"good".to_string()).await.unwrap();
    let bad = pool.enqueue(&"bad".to_string()).await.unwrap();
    rt.advance(Duration::from_secs(1)).await.unwrap();

    let list = "/api/jobs/workerPool/tasks/instances?deadLetters=true";
    let (status, page) = call(&router, get(list, Some(TOKEN))).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let stuck = &page["instances"][0];
    assert_eq!(stuck["deadLetters"], 1, "{page}");
    let id = format!("workerPool:tasks:{}", bad.instance_index);
    assert_eq!(stuck["id"]["key"], bad.instance_index.to_string());

    let (_, counts) = call(
        &router,
        get("/api/jobs/workerPool/tasks/counts", Some(TOKEN)),
    )
    .await;
    assert_eq!(counts["withDeadLetters"], 1, "{counts}");
    let (_, letters) = call(
        &router,
        get(&format!("/api/instances/{id}/dead-letters"), Some(TOKEN)),
    )
    .await;
    assert_eq!(letters["items"][0]["eventId"], bad.event_id, "{letters}");
    let pending = format!("/api/instances/{id}/pending?limit=10");
    let (status, queued) = call(&router, get(&pending, Some(TOKEN))).await;
    assert_eq!(status, StatusCode::OK, "{queued}");
    assert_eq!(
        queued["items"],
        json!([]),
        "the dead letter is out of the queue: {queued}"
    );

    tasks.failing.store(false, Ordering::SeqCst);
    let replay = json!({ "op": "workerPoolReplay", "eventIds": [bad.event_id] });
    let (status, answer) = call(
        &router,
        post(&format!("/api/instances/{id}/actions"), replay.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    rt.advance(Duration::from_secs(1)).await.unwrap();

    let (status, view) = call(&router, get(&format!("/api/instances/{id}"), Some(TOKEN))).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["status"]["status"]["deadLetters"], 0, "{view}");
    let (_, page) = call(&router, get(list, Some(TOKEN))).await;
    assert_eq!(page["instances"], json!([]), "{page}");
    rt.shutdown().await;
}

#[tokio::test]
async fn after_shutdown_the_api_answers_503() {
    let rt = runtime(Tasks::default());
    let router = token_router(&rt);
    rt.shutdown().await;
    let (status, _) = call(
        &router,
        get("/api/jobs/workerPool/tasks/counts", Some(TOKEN)),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = call(
        &router,
        get("/api/instances/workerPool:tasks:0", Some(TOKEN)),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn an_instance_shows_its_recent_events_when_they_are_kept() {
    let recent = Arc::new(durable_jobs_admin::RecentEvents::default());
    let registry = Registry::builder()
        .worker_pool("tasks", Tasks::default())
        .build()
        .unwrap();
    let rt = LocalRuntime::builder(registry)
        .in_memory()
        .virtual_clock(DEFAULT_START)
        .tracker(recent.clone())
        .open()
        .unwrap();
    let client = rt.client();
    let done = client
        .worker_pool::<Tasks>()
        .enqueue(&"good".to_string())
        .await
        .unwrap();
    rt.advance(Duration::from_secs(1)).await.unwrap();
    let id = format!("workerPool:tasks:{}", done.instance_index);
    let path = format!("/api/instances/{id}/events");

    let (status, body) = call(&token_router(&rt), get(&path, Some(TOKEN))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(message(&body).contains("with_recent_events"), "{body}");

    let admin = Admin::local(&rt, Access::Token(Token::new(TOKEN).unwrap()))
        .with_recent_events(recent)
        .router();
    let (status, body) = call(&admin, get(&path, Some(TOKEN))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let types: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "workerPool.enqueued",
            "workerPool.processing",
            "workerPool.completed"
        ]
    );
    rt.shutdown().await;
}

#[tokio::test]
async fn a_whole_pool_is_paused_and_resumed() {
    let rt = runtime(Tasks::default());
    let router = token_router(&rt);
    let (status, body) = call(&router, post("/api/jobs/workerPool/tasks/pause", "")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["instances"], 2);
    let pool = rt.client();
    let pool = pool.worker_pool::<Tasks>();
    assert_eq!(pool.status().await.unwrap().paused, 2);
    let (status, _) = call(&router, post("/api/jobs/workerPool/tasks/resume", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pool.status().await.unwrap().paused, 0);
    let (status, _) = call(&router, post("/api/jobs/workerPool/nope/pause", "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    rt.shutdown().await;
}
