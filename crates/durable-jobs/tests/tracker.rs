//! The HTTP batch tracker batches, enriches, stays within its bound, and never fails a
//! request when its transport fails.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use durable_jobs::adapters::memory::MemoryStorage;
use durable_jobs::adapters::VirtualClock;
use durable_jobs::services::tracker::{
    EventTracker, HttpBatchTracker, HttpSink, HttpTrackerConfig,
};
use durable_jobs::wire::{Operation, Request, Response};
use durable_jobs::{
    Debounce, DebounceContext, Engine, EventKind, InstanceId, JobEvent, JobKind, Registry,
};
use serde_json::Value;

#[derive(Default)]
struct Sink {
    bodies: Mutex<Vec<Value>>,
    failing: AtomicBool,
}

#[derive(Clone)]
struct Shared(Arc<Sink>);

impl HttpSink for Shared {
    async fn post(&self, body: Vec<u8>) -> Result<(), String> {
        let this = &self.0;
        if this.failing.load(Ordering::SeqCst) {
            return Err("collector unreachable".into());
        }
        this.bodies
            .lock()
            .unwrap()
            .push(serde_json::from_slice(&body).unwrap());
        Ok(())
    }
}

fn config(max_batch: usize, max_buffer: usize) -> HttpTrackerConfig {
    HttpTrackerConfig {
        env: "staging".into(),
        service_key: "svc-1".into(),
        max_batch,
        max_buffer,
    }
}

fn event(i: i64) -> JobEvent {
    JobEvent {
        timestamp: 1000 + i,
        job_name: "mail".into(),
        instance_id: "workerPool:mail:0".into(),
        kind: EventKind::WorkerPoolEnqueued {
            event_id: format!("e{i}"),
            position: 1,
        },
    }
}

#[test]
fn batches_and_enriches() {
    futures::executor::block_on(async {
        let sink = Arc::new(Sink::default());
        let tracker = HttpBatchTracker::new(config(100, 1000), Shared(sink.clone()));
        for i in 0..250 {
            tracker.emit(event(i));
        }
        assert_eq!(tracker.pending(), 250);
        tracker.flush().await;
        assert_eq!(tracker.pending(), 0);
        let bodies = sink.bodies.lock().unwrap();
        let sizes: Vec<usize> = bodies.iter().map(|b| b.as_array().unwrap().len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        let first = &bodies[0][0];
        assert_eq!(first["type"], "workerPool.enqueued");
        assert_eq!(first["env"], "staging");
        assert_eq!(first["serviceKey"], "svc-1");
        assert_eq!(first["timestamp"], 1000);
        assert_eq!(first["eventId"], "e0");
        assert_eq!(bodies[2][49]["eventId"], "e249");
    });
}

#[test]
fn drops_only_past_its_bound() {
    let tracker = HttpBatchTracker::new(config(10, 10), Shared(Arc::new(Sink::default())));
    for i in 0..15 {
        tracker.emit(event(i));
    }
    assert_eq!(tracker.pending(), 10);
    assert_eq!(tracker.dropped(), 5);
}

#[test]
fn a_failing_collector_loses_nothing_under_the_bound() {
    futures::executor::block_on(async {
        let sink = Arc::new(Sink::default());
        sink.failing.store(true, Ordering::SeqCst);
        let tracker = HttpBatchTracker::new(config(4, 100), Shared(sink.clone()));
        for i in 0..10 {
            tracker.emit(event(i));
        }
        tracker.flush().await;
        assert_eq!(tracker.failed_posts(), 1);
        assert_eq!(
            tracker.pending(),
            10,
            "the failed batch went back to the buffer"
        );
        sink.failing.store(false, Ordering::SeqCst);
        tracker.flush().await;
        let ids: Vec<String> = sink
            .bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| b.as_array().unwrap().clone())
            .map(|e| e["eventId"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, (0..10).map(|i| format!("e{i}")).collect::<Vec<_>>());
        assert_eq!(tracker.dropped(), 0);
    });
}

struct Hooks;
impl Debounce for Hooks {
    type Event = u32;
    type State = u32;
    type Error = String;
    fn flush_after(&self) -> Duration {
        Duration::from_secs(1)
    }
    async fn execute(&self, _: &DebounceContext<u32>) -> Result<(), String> {
        Ok(())
    }
}

#[test]
fn requests_succeed_when_the_collector_fails() {
    futures::executor::block_on(async {
        let sink = Arc::new(Sink::default());
        sink.failing.store(true, Ordering::SeqCst);
        let tracker = Arc::new(HttpBatchTracker::new(config(10, 100), Shared(sink.clone())));
        let registry = Registry::builder()
            .debounce("hooks", Hooks)
            .build()
            .unwrap();
        let storage = MemoryStorage::new(VirtualClock::new(5));
        let engine = Engine::new(registry, storage).with_tracker(tracker.clone());
        let request = Request {
            instance: InstanceId::new(JobKind::Debounce, "hooks", "k"),
            op: Operation::DebounceAdd {
                event: 1.into(),
                event_id: None,
            },
        };
        let response = engine.handle(request).await.unwrap();
        assert!(matches!(response, Response::Added { event_count: 1, .. }));
        tracker.flush().await;
        assert_eq!(tracker.pending(), 1);
        assert_eq!(tracker.failed_posts(), 1);
    });
}
