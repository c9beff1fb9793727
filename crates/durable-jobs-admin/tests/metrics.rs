//! `GET /metrics` over an embedded runtime whose tracker is a `MetricsTracker`: the body
//! is parsed as the Prometheus text format, strictly, and its counters, histograms and
//! gauges are checked against the work done and the runtime's own counts.
//!
//! The global recorder can be installed once per process, so every check of recorded
//! values is in one test; the access test serves a recorder of its own that is not
//! installed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use durable_jobs::inspect::InstanceQuery;
use durable_jobs::testing::DEFAULT_START;
use durable_jobs::{
    Debounce, DebounceContext, JobKind, Registry, RetryPolicy, WorkerPool, WorkerPoolContext,
};
use durable_jobs_admin::metrics_exporter_prometheus::PrometheusBuilder;
use durable_jobs_admin::{
    set_live_instances, set_pending_events, Access, Admin, Metrics, MetricsError, MetricsTracker,
    Token, PROMETHEUS_CONTENT_TYPE,
};
use durable_jobs_local::LocalRuntime;
use http_body_util::BodyExt;
use tower::ServiceExt;

/// The event that fails every attempt, and so is dead-lettered.
const ALWAYS_FAILS: u32 = 0;
/// The event whose first attempt fails and whose retry succeeds.
const FAILS_ONCE: u32 = 1;

/// Two attempts one second apart; event [`ALWAYS_FAILS`] fails both, [`FAILS_ONCE`] the
/// first.
#[derive(Clone, Default)]
struct Mail {
    failed_once: Arc<Mutex<HashSet<u32>>>,
}

impl WorkerPool for Mail {
    type Event = u32;
    type Error = String;
    fn concurrency(&self) -> u32 {
        1
    }
    fn retry(&self) -> RetryPolicy {
        RetryPolicy::fixed(2, Duration::from_secs(1))
    }
    async fn execute(&self, ctx: &WorkerPoolContext<u32>) -> Result<(), String> {
        let n = *ctx.event();
        if n == ALWAYS_FAILS {
            return Err("always fails".into());
        }
        if n == FAILS_ONCE && self.failed_once.lock().unwrap().insert(n) {
            return Err("fails once".into());
        }
        Ok(())
    }
}

/// Flushes five seconds after a batch's first event, or at three events.
struct Digest;

impl Debounce for Digest {
    type Event = u32;
    type State = u32;
    type Error = String;
    fn flush_after(&self) -> Duration {
        Duration::from_secs(5)
    }
    fn max_events(&self) -> Option<u32> {
        Some(3)
    }
    async fn execute(&self, _ctx: &DebounceContext<u32>) -> Result<(), String> {
        Ok(())
    }
}

fn token() -> Token {
    Token::new("metrics-test-token-0123456789abcdef").unwrap()
}

fn get(path: &str, token: Option<&Token>) -> Request<Body> {
    let mut request = Request::builder().uri(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {}", token.expose()));
    }
    request.body(Body::empty()).unwrap()
}

async fn call(router: &Router, request: Request<Body>) -> (StatusCode, String, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

/// One sample line: `name{labels} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: each family's type, and every sample.
#[derive(Debug, Default)]
struct Exposition {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

fn is_name(s: &str, colons: bool) -> bool {
    let mut chars = s.chars();
    let first_ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':');
    chars.next().is_some_and(first_ok) && chars.all(|c| first_ok(c) || c.is_ascii_digit())
}

/// Parses the Prometheus text format, failing on anything it does not define: comments
/// other than `# HELP` and `# TYPE`, a family typed twice, a sample before its family's
/// type or of no typed family, a malformed label, a repeated series, a timestamp.
fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut seen: HashSet<(String, Vec<(String, String)>)> = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let at = |why: &str| format!("line {}: {why}: {line:?}", i + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !is_name(name, true) {
                        return Err(at("bad family name"));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at("unknown type"));
                    }
                    if out.types.insert(name.into(), kind.into()).is_some() {
                        return Err(at("family typed twice"));
                    }
                }
                (Some("HELP"), Some(name), _) if is_name(name, true) => {}
                _ => return Err(at("a comment other than HELP or TYPE")),
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(at("a comment other than HELP or TYPE"));
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value"))?;
        let name = &line[..name_end];
        if !is_name(name, true) {
            return Err(at("bad metric name"));
        }
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(after) = rest.strip_prefix('{') {
            rest = after;
            loop {
                if let Some(after) = rest.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let eq = rest.find("=\"").ok_or_else(|| at("label without =\""))?;
                let key = &rest[..eq];
                if !is_name(key, false) {
                    return Err(at("bad label name"));
                }
                rest = &rest[eq + 2..];
                let mut value = String::new();
                let mut chars = rest.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            _ => return Err(at("bad escape in a label value")),
                        },
                        Some((j, '"')) => break j,
                        Some((_, c)) => value.push(c),
                        None => return Err(at("unterminated label value")),
                    }
                };
                if labels.insert(key.to_string(), value).is_some() {
                    return Err(at("label repeated"));
                }
                rest = &rest[end + 1..];
                if let Some(after) = rest.strip_prefix(',') {
                    rest = after;
                } else if !rest.starts_with('}') {
                    return Err(at("labels not separated by commas"));
                }
            }
        }
        let value = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value"))?;
        if value.contains(' ') {
            return Err(at("a timestamp or trailing text"));
        }
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| at("bad value"))?,
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|base| {
                matches!(
                    out.types.get(*base).map(String::as_str),
                    Some("histogram" | "summary")
                )
            })
            .unwrap_or(name);
        if !out.types.contains_key(family) {
            return Err(at("a sample of no typed family"));
        }
        let series = (
            name.to_string(),
            labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        );
        if !seen.insert(series) {
            return Err(at("series repeated"));
        }
        out.samples.push(Sample {
            name: name.into(),
            labels,
            value,
        });
    }
    Ok(out)
}

impl Exposition {
    /// The value of the series `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .map(|s| s.value)
    }

    fn kind_of(&self, family: &str) -> Option<&str> {
        self.types.get(family).map(String::as_str)
    }
}

#[test]
fn the_parser_is_strict() {
    let good = "# HELP a_total help text\n# TYPE a_total counter\na_total{kind=\"x\",job=\"a\\\"b\"} 3\n\n\
                # TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n";
    let parsed = parse(good).unwrap();
    assert_eq!(
        parsed.value("a_total", &[("kind", "x"), ("job", "a\"b")]),
        Some(3.0)
    );
    assert_eq!(parsed.value("h_count", &[]), Some(1.0));
    for bad in [
        "a_total 1\n",
        "# TYPE a counter\na 1 1700000000\n",
        "# TYPE a counter\na{kind=x} 1\n",
        "# TYPE a counter\na{kind=\"x\"} one\n",
        "# TYPE a counter\na 1\na 2\n",
        "# TYPE a counter\n# TYPE a gauge\n",
        "# a stray comment\n",
        "# TYPE a counter\na{kind=\"x\" job=\"y\"} 1\n",
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}

/// The metrics seen through `/metrics` after a pool event was retried then dead-lettered,
/// another retried then done, two more done, and two Debounce batches flushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_work_and_the_counts() {
    let metrics = Metrics::install().unwrap();
    assert_eq!(
        Metrics::install().unwrap_err(),
        MetricsError::AlreadyInstalled,
        "a second install fails instead of panicking"
    );

    let registry = Registry::builder()
        .worker_pool("mail", Mail::default())
        .debounce("digest", Digest)
        .build()
        .unwrap();
    let runtime = LocalRuntime::builder(registry)
        .in_memory()
        .virtual_clock(DEFAULT_START)
        .tracker(Arc::new(MetricsTracker::new()))
        .open()
        .unwrap();
    let client = runtime.client();
    let mail = client.worker_pool::<Mail>();
    for n in 0..4u32 {
        mail.enqueue(&n).await.unwrap();
    }
    let digest = client.debounce::<Digest>();
    for n in 0..3u32 {
        digest.add("full", &n).await.unwrap();
    }
    digest.add("late", &9).await.unwrap();
    runtime.advance(Duration::from_secs(30)).await.unwrap();
    runtime.settle().await.unwrap();

    // Values only the application knows, passed in.
    let live = runtime.stats().await.unwrap().live_instances as u64;
    set_live_instances(live);
    let page = runtime
        .instances(&InstanceQuery::all(JobKind::WorkerPool, "mail"))
        .await
        .unwrap();
    let pending: u64 = page.instances.iter().map(|i| i.pending).sum();
    set_pending_events(JobKind::WorkerPool, "mail", pending);

    let token = token();
    let router = Admin::local(&runtime, Access::Token(token.clone()))
        .with_metrics(metrics)
        .router();
    let (status, content_type, body) = call(&router, get("/metrics", Some(&token))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(content_type, PROMETHEUS_CONTENT_TYPE);
    let m = parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));

    let pool = [("kind", "workerPool"), ("job", "mail")];
    let batches = [("kind", "debounce"), ("job", "digest")];
    for family in [
        "durable_jobs_enqueued_total",
        "durable_jobs_added_total",
        "durable_jobs_executed_total",
        "durable_jobs_failed_total",
        "durable_jobs_retried_total",
        "durable_jobs_dead_lettered_total",
        "durable_jobs_flushed_total",
    ] {
        assert_eq!(m.kind_of(family), Some("counter"), "{family}");
    }
    let count = |name: &str, labels: &[(&str, &str)]| m.value(name, labels).unwrap_or(0.0);
    assert_eq!(count("durable_jobs_enqueued_total", &pool), 4.0);
    assert_eq!(count("durable_jobs_executed_total", &pool), 3.0);
    // Two attempts of the dead-lettered event, the first of the one that failed once.
    assert_eq!(count("durable_jobs_failed_total", &pool), 3.0);
    assert_eq!(count("durable_jobs_retried_total", &pool), 2.0);
    assert_eq!(count("durable_jobs_dead_lettered_total", &pool), 1.0);
    assert_eq!(count("durable_jobs_added_total", &batches), 4.0);
    assert_eq!(count("durable_jobs_executed_total", &batches), 2.0);
    assert_eq!(count("durable_jobs_flushed_total", &batches), 2.0);
    assert_eq!(count("durable_jobs_flushed_events_total", &batches), 4.0);
    assert_eq!(count("durable_jobs_failed_total", &batches), 0.0);
    for (reason, n) in [("maxEvents", 1.0), ("flushAfter", 1.0)] {
        let labels = [("kind", "debounce"), ("job", "digest"), ("reason", reason)];
        assert_eq!(
            count("durable_jobs_flush_attempts_total", &labels),
            n,
            "{reason}"
        );
    }
    assert!(
        m.samples
            .iter()
            .all(|s| !s.labels.contains_key("instance")
                && s.labels.values().all(|v| !v.contains(':'))),
        "no instance id in any label"
    );

    let duration = "durable_jobs_execution_duration_seconds";
    assert_eq!(m.kind_of(duration), Some("histogram"));
    for (labels, n) in [(&pool, 3.0), (&batches, 2.0)] {
        assert_eq!(m.value(&format!("{duration}_count"), labels), Some(n));
        let mut inf = labels.to_vec();
        inf.push(("le", "+Inf"));
        assert_eq!(m.value(&format!("{duration}_bucket"), &inf), Some(n));
        assert!(m.value(&format!("{duration}_sum"), labels).is_some());
    }
    let wait = "durable_jobs_queue_wait_seconds";
    assert_eq!(m.kind_of(wait), Some("histogram"));
    assert_eq!(m.value(&format!("{wait}_count"), &pool), Some(4.0));
    // The three events behind the dead-lettered one waited at least for its retry, 1 s.
    assert!(m.value(&format!("{wait}_sum"), &pool).unwrap() >= 3.0);

    assert_eq!(m.kind_of("durable_jobs_instances"), Some("gauge"));
    for (kind, job) in [(JobKind::WorkerPool, "mail"), (JobKind::Debounce, "digest")] {
        let counts = runtime.counts(kind, job).await.unwrap();
        for (status, n) in [
            ("active", counts.active),
            ("paused", counts.paused),
            ("stopped", counts.stopped),
            ("error", counts.error),
        ] {
            let labels = [("kind", kind.as_str()), ("job", job), ("status", status)];
            assert_eq!(
                m.value("durable_jobs_instances", &labels),
                Some(n as f64),
                "{kind} {job} {status}"
            );
        }
        assert!(counts.total() > 0, "{kind} {job} has instances");
    }
    let counts = runtime.counts(JobKind::WorkerPool, "mail").await.unwrap();
    assert_eq!(counts.with_dead_letters, 1);
    assert_eq!(
        m.value("durable_jobs_instances_with_dead_letters", &pool),
        Some(1.0)
    );
    assert_eq!(
        m.value("durable_jobs_instances_with_failed_batches", &batches),
        Some(0.0)
    );
    assert_eq!(
        m.value("durable_jobs_live_instances", &[]),
        Some(live as f64)
    );
    assert_eq!(
        m.value("durable_jobs_pending_events", &pool),
        Some(pending as f64)
    );

    runtime.shutdown().await;
}

/// `/metrics` is behind the access check like every route, and absent unless asked for.
#[tokio::test]
async fn metrics_need_the_token() {
    let runtime = LocalRuntime::builder(
        Registry::builder()
            .worker_pool("mail", Mail::default())
            .build()
            .unwrap(),
    )
    .in_memory()
    .open()
    .unwrap();
    // A recorder that is not installed: this test must not take the process's one.
    let metrics = Metrics::from_handle(PrometheusBuilder::new().build_recorder().handle());
    let token = token();
    let router = Admin::local(&runtime, Access::Token(token.clone()))
        .with_metrics(metrics)
        .router();
    let (status, _, _) = call(&router, get("/metrics", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let wrong = Token::new("not-the-metrics-token-0123456789").unwrap();
    let (status, _, _) = call(&router, get("/metrics", Some(&wrong))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, content_type, _) = call(&router, get("/metrics", Some(&token))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, PROMETHEUS_CONTENT_TYPE);

    let without = Admin::local(&runtime, Access::Token(token.clone())).router();
    let (status, _, _) = call(&without, get("/metrics", Some(&token))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    runtime.shutdown().await;
}
