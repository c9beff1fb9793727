//! Lifecycle events reach an HTTP collector in enriched batches; a failing or unreachable
//! collector never fails a request, and what it refused is delivered later, at shutdown
//! too, within the shutdown grace.

use std::fmt::{Debug, Write as _};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use durable_jobs::testing::DEFAULT_START;
use durable_jobs::Registry;
use durable_jobs_conformance::jobs::{Log, Task, Worker};
use durable_jobs_local::{Builder, HttpTrackerConfig, LocalRuntime};
use serde_json::Value;
use tracing::field::Field;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata};

/// A collector on loopback: records each POSTed JSON array; answers 500 to the first
/// `refuse` requests.
struct Collector {
    url: String,
    batches: Arc<Mutex<Vec<Value>>>,
    refused: Arc<AtomicUsize>,
}

impl Collector {
    fn start(refuse: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let batches = Arc::new(Mutex::new(Vec::new()));
        let seen = batches.clone();
        let refused = Arc::new(AtomicUsize::new(0));
        let counted = refused.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let status = if counted.load(Ordering::SeqCst) < refuse {
                    counted.fetch_add(1, Ordering::SeqCst);
                    "500 Internal Server Error"
                } else {
                    seen.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    "200 OK"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Collector {
            url,
            batches,
            refused,
        }
    }

    fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    fn events(&self) -> Vec<Value> {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| b.as_array().cloned().unwrap_or_default())
            .collect()
    }
}

fn config() -> HttpTrackerConfig {
    HttpTrackerConfig {
        env: "test".into(),
        service_key: "svc-9".into(),
        ..HttpTrackerConfig::default()
    }
}

fn builder(endpoint: &str, log: &Log) -> Builder {
    let registry = Registry::builder()
        .worker_pool("tasks", Worker::new(log, 1))
        .build()
        .unwrap();
    LocalRuntime::builder(registry)
        .in_memory()
        .virtual_clock(DEFAULT_START)
        .http_tracking(endpoint, config())
}

fn run(endpoint: &str) -> (LocalRuntime, Log) {
    let log = Log::default();
    let rt = builder(endpoint, &log).open().unwrap();
    (rt, log)
}

/// A runtime whose tracker never flushes on its own before shutdown (the interval is an
/// hour), so that every event meets the collector at shutdown.
fn run_flushing_at_shutdown(endpoint: &str, grace: Duration) -> LocalRuntime {
    builder(endpoint, &Log::default())
        .flush_tracker_every(Duration::from_secs(3600))
        .shutdown_grace(grace)
        .open()
        .unwrap()
}

/// Two tasks enqueued and run: their events wait in the tracker's buffer.
fn two_tasks(rt: &LocalRuntime) {
    futures::executor::block_on(async {
        let client = rt.client();
        let pool = client.worker_pool::<Worker>();
        pool.enqueue(&Task::named("a")).await.unwrap();
        pool.enqueue(&Task::named("b")).await.unwrap();
        rt.advance(Duration::ZERO).await.unwrap();
    });
}

fn count_of(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| e["type"] == kind).count()
}

fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn events_are_posted_enriched_and_in_order() {
    let collector = Collector::start(0);
    let (rt, _log) = run(&collector.url);
    futures::executor::block_on(async {
        let pool = rt.client();
        let pool = pool.worker_pool::<Worker>();
        pool.enqueue(&Task::named("a")).await.unwrap();
        pool.enqueue(&Task::named("b")).await.unwrap();
        rt.advance(Duration::ZERO).await.unwrap();
    });
    wait_for(|| collector.events().len() >= 6);
    let events = collector.events();
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == "workerPool.completed")
            .count(),
        2,
        "{types:?}"
    );
    assert_eq!(types[0], "workerPool.enqueued");
    assert!(events
        .iter()
        .all(|e| e["env"] == "test" && e["serviceKey"] == "svc-9"));
    assert!(events
        .iter()
        .all(|e| e["timestamp"].as_i64() >= Some(DEFAULT_START)));
    futures::executor::block_on(rt.shutdown());
}

#[test]
fn a_failing_collector_fails_no_request_and_loses_nothing() {
    let collector = Collector::start(2);
    let (rt, log) = run(&collector.url);
    futures::executor::block_on(async {
        let client = rt.client();
        let pool = client.worker_pool::<Worker>();
        for name in ["a", "b", "c"] {
            pool.enqueue(&Task::named(name)).await.unwrap();
        }
        rt.advance(Duration::ZERO).await.unwrap();
    });
    assert_eq!(log.matching("exec").len(), 3);
    // The refused batches stay buffered and go out with a later flush.
    wait_for(|| collector.events().len() >= 9);
    futures::executor::block_on(rt.shutdown());
    let completed = collector
        .events()
        .iter()
        .filter(|e| e["type"] == "workerPool.completed")
        .count();
    assert_eq!(completed, 3);
}

#[test]
fn an_unreachable_collector_fails_no_request() {
    // A port nothing listens on: bind, then close.
    let url = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/events", l.local_addr().unwrap())
    };
    let log = Log::default();
    // Shutdown tries to deliver for the whole grace: keep it short.
    let rt = builder(&url, &log)
        .shutdown_grace(Duration::from_millis(200))
        .open()
        .unwrap();
    futures::executor::block_on(async {
        let client = rt.client();
        client
            .worker_pool::<Worker>()
            .enqueue(&Task::named("a"))
            .await
            .unwrap();
        rt.advance(Duration::ZERO).await.unwrap();
        assert_eq!(
            client
                .worker_pool::<Worker>()
                .status()
                .await
                .unwrap()
                .processed,
            1
        );
    });
    assert_eq!(log.matching("exec").len(), 1);
    futures::executor::block_on(rt.shutdown());
}

#[test]
fn shutdown_retries_what_the_collector_refuses() {
    let collector = Collector::start(3);
    let rt = run_flushing_at_shutdown(&collector.url, Duration::from_secs(10));
    two_tasks(&rt);
    assert!(
        collector.events().is_empty(),
        "nothing flushed before shutdown"
    );
    let started = Instant::now();
    futures::executor::block_on(rt.shutdown());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the retries wait briefly, not the whole grace: {:?}",
        started.elapsed()
    );
    assert_eq!(collector.refused(), 3);
    let events = collector.events();
    assert_eq!(count_of(&events, "workerPool.enqueued"), 2, "{events:?}");
    assert_eq!(count_of(&events, "workerPool.completed"), 2, "{events:?}");
    assert_eq!(events.len(), 6, "{events:?}");
}

#[test]
fn shutdown_gives_up_on_a_refusing_collector_when_the_grace_runs_out() {
    capture_warnings();
    let collector = Collector::start(usize::MAX);
    let rt = run_flushing_at_shutdown(&collector.url, Duration::from_millis(400));
    two_tasks(&rt);
    let started = Instant::now();
    futures::executor::block_on(rt.shutdown());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "retried through the grace: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "bounded by the grace: {took:?}"
    );
    assert!(collector.refused() > 2, "{} posts", collector.refused());
    assert!(collector.events().is_empty());
    let warnings = WARNINGS.lock().unwrap();
    let dropped: Vec<&String> = warnings
        .iter()
        .filter(|w| w.contains("shutdown grace ran out"))
        .collect();
    assert_eq!(dropped.len(), 1, "{warnings:?}");
    // Every event of the two tasks, as delivered in the test above.
    assert!(dropped[0].contains("dropped=6"), "{dropped:?}");
}

/// The warnings logged by any thread of this test binary, as `name=value` lines.
static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records warnings in [`WARNINGS`]: the tracker logs from its own thread, so the
/// subscriber must be the process-wide default.
struct WarningRecorder;

fn capture_warnings() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| tracing::subscriber::set_global_default(WarningRecorder).unwrap());
}

impl tracing::Subscriber for WarningRecorder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::WARN
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = String::new();
        event.record(&mut |field: &Field, value: &dyn Debug| {
            let _ = write!(line, "{}={value:?} ", field.name());
        });
        WARNINGS.lock().unwrap().push(line);
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}
