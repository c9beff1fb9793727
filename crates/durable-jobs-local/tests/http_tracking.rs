//! Lifecycle events reach an HTTP collector in enriched batches; a failing or unreachable
//! collector never fails a request, and what it refused is delivered later.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use durable_jobs::testing::DEFAULT_START;
use durable_jobs::Registry;
use durable_jobs_conformance::jobs::{Log, Task, Worker};
use durable_jobs_local::{HttpTrackerConfig, LocalRuntime};
use serde_json::Value;

/// A collector on loopback: records each POSTed JSON array; answers 500 to the first
/// `refuse` requests.
struct Collector {
    url: String,
    batches: Arc<Mutex<Vec<Value>>>,
}

impl Collector {
    fn start(refuse: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let batches = Arc::new(Mutex::new(Vec::new()));
        let seen = batches.clone();
        std::thread::spawn(move || {
            let mut refused = 0;
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
                let status = if refused < refuse {
                    refused += 1;
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
        Collector { url, batches }
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

fn run(endpoint: &str) -> (LocalRuntime, Log) {
    let log = Log::default();
    let registry = Registry::builder()
        .worker_pool("tasks", Worker::new(&log, 1))
        .build()
        .unwrap();
    let rt = LocalRuntime::builder(registry)
        .in_memory()
        .virtual_clock(DEFAULT_START)
        .http_tracking(endpoint, config())
        .open()
        .unwrap();
    (rt, log)
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
    let (rt, log) = run(&url);
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
