//! The dashboard in a real browser: Debian's Chromium, headless, driven over WebDriver
//! through `chromedriver`.
//!
//! A WorkerPool job whose event "bad" fails until a flag is flipped leaves a dead letter.
//! The test signs in with the token, checks the overview's counts against the API, opens
//! the pool instance holding the dead letter, fixes the job, replays the event from the
//! page and waits until the page shows it processed. Screenshots go to
//! `<target>/screenshots/`.
//!
//! Needs the Debian packages `chromium` and `chromium-driver`; without them the test fails
//! and says so, unless `DJ_SKIP_BROWSER=1` is set.

// The test runs over the embedded runtime.
#![cfg(feature = "local")]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::header::AUTHORIZATION;
use axum::http::Request;
use durable_jobs::inspect::StatusCounts;
use durable_jobs::{
    Continuous, ContinuousContext, EnqueueRequest, Registry, Rejected, RetryPolicy, Schedule, Task,
    TaskContext, WorkerPool, WorkerPoolContext,
};
use durable_jobs_admin::{serve, Access, Admin, RecentEvents, Token};
use durable_jobs_local::LocalRuntime;
use fantoccini::{Client, ClientBuilder, Locator};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

const SKIP_ENV: &str = "DJ_SKIP_BROWSER";
/// How long the page may take to show what the test waits for.
const WAIT: Duration = Duration::from_secs(10);

/// Fails the event "bad" while `healthy` is false (a service it calls is down).
struct Tasks {
    healthy: Arc<AtomicBool>,
}

impl WorkerPool for Tasks {
    type Event = String;
    type Error = String;
    fn retry(&self) -> RetryPolicy {
        RetryPolicy::fixed(2, Duration::from_millis(10))
    }
    async fn execute(&self, ctx: &WorkerPoolContext<String>) -> Result<(), String> {
        if ctx.event() == "bad" && !self.healthy.load(Ordering::SeqCst) {
            return Err("the upstream service is down".into());
        }
        Ok(())
    }
}

/// Counts its runs in its state, so the overview has a second kind of job to show.
struct Ticks;

impl Continuous for Ticks {
    type State = u64;
    type Error = String;
    fn schedule(&self) -> Schedule {
        Schedule::every(Duration::from_secs(60))
    }
    async fn execute(&self, ctx: &mut ContinuousContext<u64>) -> Result<(), String> {
        *ctx.state_mut() += 1;
        Ok(())
    }
}

/// Counts the events it is sent and runs an hour after each, so the dashboard has a task
/// with a timer to show, run and end.
struct Reminders;

impl Task for Reminders {
    type State = u32;
    type Event = u32;
    type Error = String;
    fn on_event(&self, ctx: &mut TaskContext<u32>, event: u32) -> Result<(), Rejected> {
        ctx.set_state(ctx.state().copied().unwrap_or(0) + event);
        ctx.schedule_in(Duration::from_secs(3600));
        Ok(())
    }
    async fn execute(&self, _: &mut TaskContext<u32>) -> Result<(), String> {
        Ok(())
    }
}

/// A file on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Kills chromedriver when the test ends, passed or not.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn start_chromedriver(binary: &Path) -> (Driver, u16) {
    let port = free_port();
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < WAIT,
            "chromedriver did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (driver, port)
}

/// Polls `probe` until it gives a value, for up to [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(start.elapsed() < WAIT, "waited {WAIT:?} for {what} in vain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of the element with `id`, if it is on the page.
async fn text_of(client: &Client, id: &str) -> Option<String> {
    client.find(Locator::Id(id)).await.ok()?.text().await.ok()
}

/// GETs an API route with the token, as any client would.
async fn api_get(base: &str, path: &str, token: &Token) -> serde_json::Value {
    let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(HttpConnector::new());
    let request = Request::get(format!("{base}{path}"))
        .header(AUTHORIZATION, format!("Bearer {}", token.expose()))
        .body(Empty::new())
        .unwrap();
    let response = http.request(request).await.expect("the API answers");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).expect("JSON")
}

/// Clicks the element with id `id`.
async fn click(client: &Client, id: &str) {
    client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("#{id}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Waits for the element `locator` finds, then clicks it.
async fn click_when_shown(client: &Client, locator: Locator<'_>) {
    client
        .wait()
        .at_most(WAIT)
        .for_element(locator)
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Saves a screenshot as `<target>/screenshots/<name>.png` and prints its path.
async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("screenshots");
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    let path = dir.join(format!("{name}.png"));
    let png = client.screenshot().await.expect("a screenshot");
    std::fs::write(&path, png).expect("write the screenshot");
    println!("screenshot: {}", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_replays_a_dead_letter_in_a_real_browser() {
    if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
        println!("skipped: {SKIP_ENV}=1, the dashboard was not tried in a browser");
        return;
    }
    let chromedriver = on_path("chromedriver");
    let chromium = on_path("chromium");
    let (Some(chromedriver), Some(chromium)) = (chromedriver.clone(), chromium.clone()) else {
        panic!(
            "this test drives Chromium through chromedriver, and {} missing: install the \
             Debian packages with `apt-get install -y chromium chromium-driver`, or set \
             {SKIP_ENV}=1 to skip it",
            match (chromedriver, chromium) {
                (None, None) => "both are",
                (None, Some(_)) => "chromedriver (package chromium-driver) is",
                _ => "chromium (package chromium) is",
            }
        );
    };

    // The runtime, with a dead letter on pool instance 0 and two events processed.
    let healthy = Arc::new(AtomicBool::new(false));
    let registry = Registry::builder()
        .worker_pool(
            "tasks",
            Tasks {
                healthy: healthy.clone(),
            },
        )
        .continuous("ticks", Ticks)
        .task("reminders", Reminders)
        .build()
        .unwrap();
    let recent = Arc::new(RecentEvents::default());
    let rt = LocalRuntime::builder(registry)
        .in_memory()
        .shards(1)
        .tracker(recent.clone())
        .open()
        .unwrap();
    let jobs = rt.client();
    let pool = jobs.worker_pool::<Tasks>();
    for event in ["ok-1", "bad", "ok-2"] {
        pool.enqueue_with(&event.to_string(), EnqueueRequest::new().event_id(event))
            .await
            .unwrap();
    }
    jobs.continuous::<Ticks>()
        .start("acct-1", &0)
        .await
        .unwrap();
    jobs.task::<Reminders>().send("order-1", &2).await.unwrap();
    let start = Instant::now();
    loop {
        let status = pool.status().await.unwrap();
        if status.dead_letters == 1 && status.processed == 2 {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "the pool did not settle: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The admin server.
    let token = Token::generate().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(serve(
        listener,
        Admin::local(&rt, Access::Token(token.clone())).with_recent_events(recent),
    ));

    // The browser.
    let (driver, port) = start_chromedriver(&chromedriver);
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,900",
            ],
        }),
    );
    let client = ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session in Chromium");
    client.set_window_size(1280, 900).await.unwrap();
    let c = &client;

    // A wrong token is refused and the form says why.
    c.goto(&base).await.unwrap();
    let input = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("token-input"))
        .await
        .unwrap();
    input.send_keys(&"x".repeat(64)).await.unwrap();
    click(c, "token-submit").await;
    eventually("the wrong token's error", || async move {
        text_of(c, "login-error")
            .await
            .filter(|t| t.contains("wrong bearer token"))
    })
    .await;

    // The right one opens the overview.
    let input = c.find(Locator::Id("token-input")).await.unwrap();
    input.send_keys(token.expose()).await.unwrap();
    click(c, "token-submit").await;

    // The counts shown are the API's.
    for (kind, name) in [("workerPool", "tasks"), ("continuous", "ticks")] {
        let api: StatusCounts = serde_json::from_value(
            api_get(&base, &format!("api/jobs/{kind}/{name}/counts"), &token).await,
        )
        .unwrap();
        let mut expected = vec![
            ("active", api.active),
            ("paused", api.paused),
            ("stopped", api.stopped),
            ("error", api.error),
        ];
        if kind == "workerPool" {
            expected.push(("withDeadLetters", api.with_dead_letters));
        }
        for (field, value) in expected {
            let id = format!("count-{kind}-{name}-{field}");
            let shown = eventually(&format!("#{id}"), || {
                let id = id.clone();
                async move { text_of(c, &id).await.filter(|t| t != "…") }
            })
            .await;
            assert_eq!(shown, value.to_string(), "#{id}");
        }
    }
    assert_eq!(
        api_get(&base, "api/jobs/workerPool/tasks/counts", &token).await["withDeadLetters"],
        1
    );
    eventually("the pool's processed events", || async move {
        text_of(c, "processed-workerPool-tasks")
            .await
            .filter(|t| t == "2")
    })
    .await;
    let overview_png = screenshot(c, "dashboard-overview").await;

    // To the instance holding the dead letter: the job's list, filtered.
    click(c, "job-link-workerPool-tasks").await;
    click_when_shown(c, Locator::Id("filter-dead-letters")).await;
    click(c, "filter-apply").await;
    click_when_shown(c, Locator::LinkText("workerPool:tasks:0")).await;
    let replay = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("button.replay[data-event-id=\"bad\"]"))
        .await
        .unwrap();
    let processed_before: u64 = eventually("the processed count", || async move {
        text_of(c, "processed-count").await?.parse().ok()
    })
    .await;
    assert_eq!(processed_before, 2);
    let status_json = text_of(c, "instance-status").await.unwrap();
    assert!(status_json.contains("\"deadLetters\": 1"), "{status_json}");
    // Its lifecycle, newest first, and an empty queue.
    eventually("the recent events", || async move {
        text_of(c, "recent-events")
            .await
            .filter(|t| t.contains("workerPool.deadLettered") && t.contains("workerPool.enqueued"))
    })
    .await;
    let nothing_queued = c.find(Locator::Id("no-queued-events")).await.unwrap();
    assert!(nothing_queued.is_displayed().await.unwrap());
    let instance_png = screenshot(c, "dashboard-instance").await;

    // Fix the job, then replay from the page.
    healthy.store(true, Ordering::SeqCst);
    replay.click().await.unwrap();
    eventually(
        "no dead letter and one more event processed",
        || async move {
            let none_left = c
                .find(Locator::Id("no-dead-letters"))
                .await
                .ok()?
                .is_displayed()
                .await
                .ok()?;
            let processed: u64 = text_of(c, "processed-count").await?.parse().ok()?;
            (none_left && processed > processed_before).then_some(())
        },
    )
    .await;
    assert_eq!(
        c.find_all(Locator::Css("tr.dead-letter"))
            .await
            .unwrap()
            .len(),
        0
    );
    let replayed_png = screenshot(c, "dashboard-instance-replayed").await;
    let status = pool.status().await.unwrap();
    assert_eq!((status.dead_letters, status.processed), (0, 3));

    // A Continuous instance, found by key prefix: its state, its next run, and a stop
    // that asks first.
    c.goto(&format!("{base}#/jobs/continuous/ticks"))
        .await
        .unwrap();
    let prefix = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("filter-prefix"))
        .await
        .unwrap();
    prefix.send_keys("acct-").await.unwrap();
    click(c, "filter-apply").await;
    click_when_shown(c, Locator::LinkText("continuous:ticks:acct-1")).await;
    eventually("the instance's state and next run", || async move {
        let state = text_of(c, "instance-state").await?;
        let alarm = text_of(c, "next-alarm").await?;
        (state == "1" && alarm.starts_with("next run at")).then_some(())
    })
    .await;
    let stop = c.find(Locator::Id("action-stop")).await.unwrap();
    stop.click().await.unwrap();
    assert!(c
        .get_alert_text()
        .await
        .unwrap()
        .contains("Stop continuous:ticks:acct-1"));
    c.dismiss_alert().await.unwrap();
    assert_eq!(
        text_of(c, "instance-status-name").await.as_deref(),
        Some("active"),
        "a dismissed confirmation stops nothing"
    );
    stop.click().await.unwrap();
    c.accept_alert().await.unwrap();
    eventually("the stopped status", || async move {
        text_of(c, "instance-status-name")
            .await
            .filter(|t| t == "stopped")
    })
    .await;
    assert!(!c
        .find(Locator::Id("action-stop"))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap());
    let continuous_png = screenshot(c, "dashboard-continuous").await;

    // A Task: its timer and counts, a run now, and an end that asks first.
    c.goto(&format!("{base}#/jobs/task/reminders"))
        .await
        .unwrap();
    click_when_shown(c, Locator::LinkText("task:reminders:order-1")).await;
    eventually("the task's timer and state", || async move {
        let phase = text_of(c, "task-phase").await?;
        let events = text_of(c, "task-event-count").await?;
        let state = text_of(c, "instance-state").await?;
        (phase == "set" && events == "1" && state == "2").then_some(())
    })
    .await;
    click(c, "action-trigger").await;
    eventually("the triggered execution", || async move {
        let runs = text_of(c, "execution-count").await?;
        let phase = text_of(c, "task-phase").await?;
        (runs == "1" && phase == "none (idle)").then_some(())
    })
    .await;
    click(c, "action-terminate").await;
    assert!(c
        .get_alert_text()
        .await
        .unwrap()
        .contains("Terminate task:reminders:order-1"));
    c.accept_alert().await.unwrap();
    eventually("the ended task", || async move {
        text_of(c, "instance-status-name")
            .await
            .filter(|t| t == "not found")
    })
    .await;
    assert!(!c
        .find(Locator::Id("action-terminate"))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap());
    assert_eq!(
        jobs.task::<Reminders>().status("order-1").await.unwrap(),
        None
    );

    // On a phone's width the overview still fits: nothing scrolls sideways.
    client.set_window_size(390, 844).await.unwrap();
    c.goto(&base).await.unwrap();
    eventually("the overview on a phone", || async move {
        text_of(c, "processed-workerPool-tasks")
            .await
            .filter(|t| t == "3")
    })
    .await;
    let overflow = c
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        overflow,
        serde_json::json!(0),
        "the page is wider than the phone"
    );
    let phone_png = screenshot(c, "dashboard-overview-phone").await;

    for png in [
        overview_png,
        instance_png,
        replayed_png,
        continuous_png,
        phone_png,
    ] {
        let bytes = std::fs::read(&png).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{}", png.display());
    }

    client.close().await.unwrap();
    drop(driver);
    server.abort();
    rt.shutdown().await;
}
