//! Two engines on one storage, as two processes sharing a database see an instance: where
//! attempts are recorded at their start, a request on one engine knows that the other is
//! executing, although it runs nothing itself.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use durable_jobs::adapters::memory::MemoryStorage;
use durable_jobs::adapters::VirtualClock;
use durable_jobs::wire::{Operation, Request, Response};
use durable_jobs::{
    Debounce, DebounceContext, Engine, InstanceId, JobKind, Registry, WorkerPool, WorkerPoolContext,
};
use futures::channel::oneshot;
use futures::future::join;

/// Holds its first execution until released, and says when it started.
#[derive(Clone, Default)]
struct Gate {
    started: Arc<Mutex<Option<oneshot::Sender<()>>>>,
    release: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
}

impl Gate {
    fn closed() -> (Gate, oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (started_tx, started_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        let gate = Gate {
            started: Arc::new(Mutex::new(Some(started_tx))),
            release: Arc::new(Mutex::new(Some(release_rx))),
        };
        (gate, started_rx, release_tx)
    }

    async fn pass(&self) {
        if let Some(started) = self.started.lock().unwrap().take() {
            let _ = started.send(());
        }
        let release = self.release.lock().unwrap().take();
        if let Some(release) = release {
            let _ = release.await;
        }
    }
}

struct Pool(Gate);
impl WorkerPool for Pool {
    type Event = u32;
    type Error = String;
    async fn execute(&self, _: &WorkerPoolContext<u32>) -> Result<(), String> {
        self.0.pass().await;
        Ok(())
    }
}

/// Fails its first flush at once; holds the retry at the gate, then succeeds.
struct Batches(Gate, Arc<Mutex<u32>>);
impl Debounce for Batches {
    type Event = u32;
    type State = u32;
    type Error = String;
    fn flush_after(&self) -> Duration {
        Duration::from_secs(1)
    }
    async fn execute(&self, _: &DebounceContext<u32>) -> Result<(), String> {
        let call = {
            let mut calls = self.1.lock().unwrap();
            *calls += 1;
            *calls
        };
        if call == 1 {
            return Err("fails once".into());
        }
        self.0.pass().await;
        Ok(())
    }
}

fn engines(registry: &Registry, storage: &MemoryStorage) -> [Engine<MemoryStorage>; 2] {
    [0, 1].map(|_| Engine::new(registry.clone(), storage.clone()).with_attempts_recorded_at_start())
}

async fn send(engine: &Engine<MemoryStorage>, instance: &InstanceId, op: Operation) -> Response {
    let request = Request {
        instance: instance.clone(),
        op,
    };
    engine.handle(request).await.unwrap()
}

#[test]
fn a_cancel_elsewhere_leaves_a_running_event_alone() {
    futures::executor::block_on(async {
        let (gate, started, release) = Gate::closed();
        let registry = Registry::builder()
            .worker_pool("pool", Pool(gate))
            .build()
            .unwrap();
        let clock = VirtualClock::new(1_000_000);
        let storage = MemoryStorage::new(clock.clone());
        let [a, b] = engines(&registry, &storage);
        let instance = InstanceId::new(JobKind::WorkerPool, "pool", "0");
        let enqueue = Operation::WorkerPoolEnqueue {
            event: serde_json::json!(7),
            event_id: Some("e".into()),
            priority: 0,
            run_at: None,
            delay_ms: None,
        };
        send(&a, &instance, enqueue).await;
        let cancel_during_run = async {
            started.await.unwrap();
            let cancel = Operation::WorkerPoolCancel {
                event_id: "e".into(),
            };
            let answer = send(&b, &instance, cancel).await;
            release.send(()).unwrap();
            answer
        };
        let (ran, answer) = join(a.alarm(), cancel_during_run).await;
        ran.unwrap();
        assert!(
            matches!(answer, Response::Cancelled { cancelled: false }),
            "{answer:?}"
        );
        let status = send(&b, &instance, Operation::WorkerPoolStatus).await;
        let Response::WorkerPoolStatus { status: s } = status else {
            panic!("{status:?}")
        };
        assert_eq!((s.pending, s.processed), (0, 1), "ran once, counted once");
    });
}

#[test]
fn a_clear_elsewhere_lets_a_retry_being_flushed_finish() {
    futures::executor::block_on(async {
        let (gate, started, release) = Gate::closed();
        let calls = Arc::new(Mutex::new(0));
        let registry = Registry::builder()
            .debounce("batches", Batches(gate, calls.clone()))
            .build()
            .unwrap();
        let clock = VirtualClock::new(1_000_000);
        let storage = MemoryStorage::new(clock.clone());
        let [a, b] = engines(&registry, &storage);
        let instance = InstanceId::new(JobKind::Debounce, "batches", "k");
        let add = Operation::DebounceAdd {
            event: serde_json::json!(1),
            event_id: None,
        };
        send(&a, &instance, add).await;
        clock.set(1_001_000);
        a.alarm().await.unwrap();
        assert_eq!(*calls.lock().unwrap(), 1, "the first flush failed");
        // The retry runs on A; B clears meanwhile.
        clock.set(1_601_000);
        let clear_during_retry = async {
            started.await.unwrap();
            let answer = send(&b, &instance, Operation::DebounceClear).await;
            release.send(()).unwrap();
            answer
        };
        let (ran, answer) = join(a.alarm(), clear_during_retry).await;
        ran.unwrap();
        assert!(
            matches!(answer, Response::Cleared { discarded: 0 }),
            "the batch being flushed is not the clear's: {answer:?}"
        );
        let status = send(&b, &instance, Operation::DebounceStatus).await;
        let Response::DebounceStatus { status: Some(s) } = status else {
            panic!("{status:?}")
        };
        assert!(!s.flushing && s.retry_at.is_none(), "{s:?}");
        assert_eq!(s.failed_batches, 0, "{s:?}");
    });
}
