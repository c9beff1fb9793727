//! Claims of several WorkerPool events (`Engine::with_claim_size`): the events run in
//! order, one step records their outcomes, a failure or a pause ends the claim, a cancel
//! leaves claimed events alone, and after a crash mid-claim the events run one at a time
//! so that one that kills its host still ends as a dead letter.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use durable_jobs::adapters::memory::MemoryStorage;
use durable_jobs::adapters::VirtualClock;
use durable_jobs::wire::{Operation, Request, Response};
use durable_jobs::{
    Engine, InstanceId, JobKind, PoolInstanceStatus, Registry, RetryPolicy, WorkerPool,
    WorkerPoolContext,
};
use futures::channel::oneshot;
use futures::future::{join, select, Either};

const START: i64 = 1_000_000;

/// What the pool does with each event (by its number).
#[derive(Clone, Default)]
struct Script {
    /// Events run so far, with their attempt.
    ran: Arc<Mutex<Vec<(u32, u32)>>>,
    /// Fails the first attempt of this event.
    fail_once: Option<u32>,
    /// Says when this event starts, then waits until released (every attempt).
    hold: Option<u32>,
    started: Arc<Mutex<Option<oneshot::Sender<()>>>>,
    release: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
}

impl Script {
    fn ran(&self) -> Vec<(u32, u32)> {
        self.ran.lock().unwrap().clone()
    }

    /// Arms the hold: returns when the held event starts, and how to release it.
    fn arm(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (started_tx, started_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        *self.started.lock().unwrap() = Some(started_tx);
        *self.release.lock().unwrap() = Some(release_rx);
        (started_rx, release_tx)
    }
}

struct Pool(Script);

impl WorkerPool for Pool {
    type Event = u32;
    type Error = String;

    fn retry(&self) -> RetryPolicy {
        RetryPolicy::fixed(2, Duration::from_secs(10))
    }

    async fn execute(&self, ctx: &WorkerPoolContext<u32>) -> Result<(), String> {
        let event = *ctx.event();
        self.0.ran.lock().unwrap().push((event, ctx.attempt()));
        if self.0.hold == Some(event) {
            let started = self.0.started.lock().unwrap().take();
            if let Some(started) = started {
                let _ = started.send(());
            }
            let release = self.0.release.lock().unwrap().take();
            if let Some(release) = release {
                let _ = release.await;
            }
        }
        if self.0.fail_once == Some(event) && ctx.attempt() == 1 {
            return Err(format!("event {event} fails once"));
        }
        Ok(())
    }
}

struct Setup {
    script: Script,
    registry: Registry,
    clock: VirtualClock,
    storage: MemoryStorage,
    instance: InstanceId,
}

impl Setup {
    fn new(script: Script) -> Self {
        let registry = Registry::builder()
            .worker_pool("pool", Pool(script.clone()))
            .build()
            .unwrap();
        let clock = VirtualClock::new(START);
        Setup {
            script,
            registry,
            storage: MemoryStorage::new(clock.clone()),
            clock,
            instance: InstanceId::new(JobKind::WorkerPool, "pool", "0"),
        }
    }

    /// An engine on the storage (another one is another process, or a restart).
    fn engine(&self, claim_size: usize) -> Engine<MemoryStorage> {
        Engine::new(self.registry.clone(), self.storage.clone())
            .with_attempts_recorded_at_start()
            .with_claim_size(claim_size)
    }

    async fn send(&self, engine: &Engine<MemoryStorage>, op: Operation) -> Response {
        let request = Request {
            instance: self.instance.clone(),
            op,
        };
        engine.handle(request).await.unwrap()
    }

    async fn enqueue(&self, engine: &Engine<MemoryStorage>, events: std::ops::Range<u32>) {
        for n in events {
            let op = Operation::WorkerPoolEnqueue {
                event: serde_json::json!(n),
                event_id: Some(format!("e{n}")),
                priority: 0,
                run_at: None,
                delay_ms: None,
            };
            self.send(engine, op).await;
        }
    }

    async fn cancel(&self, engine: &Engine<MemoryStorage>, n: u32) -> bool {
        let op = Operation::WorkerPoolCancel {
            event_id: format!("e{n}"),
        };
        match self.send(engine, op).await {
            Response::Cancelled { cancelled } => cancelled,
            other => panic!("{other:?}"),
        }
    }

    async fn status(&self, engine: &Engine<MemoryStorage>) -> PoolInstanceStatus {
        match self.send(engine, Operation::WorkerPoolStatus).await {
            Response::WorkerPoolStatus { status } => status,
            other => panic!("{other:?}"),
        }
    }
}

fn first_attempts(events: std::ops::Range<u32>) -> Vec<(u32, u32)> {
    events.map(|n| (n, 1)).collect()
}

#[test]
fn one_step_records_the_outcomes_of_a_claim() {
    futures::executor::block_on(async {
        let commits_for = |claim_size: usize| async move {
            let setup = Setup::new(Script::default());
            let engine = setup.engine(claim_size);
            setup.enqueue(&engine, 0..24).await;
            let before = setup.storage.stats().commits;
            engine.alarm().await.unwrap();
            assert_eq!(
                setup.script.ran(),
                first_attempts(0..24),
                "in order, once each"
            );
            let status = setup.status(&engine).await;
            assert_eq!((status.pending, status.processed), (0, 24));
            setup.storage.stats().commits - before
        };
        let one_by_one = commits_for(1).await;
        let by_eight = commits_for(8).await;
        // One event per claim: its claim and its outcome. Eight: the same two per claim.
        assert!(one_by_one >= 48, "{one_by_one} commits for 24 events");
        assert!(
            by_eight <= 8,
            "{by_eight} commits for 24 events in claims of 8"
        );
    });
}

#[test]
fn a_failure_ends_the_claim_and_the_events_behind_wait_for_its_retry() {
    futures::executor::block_on(async {
        let setup = Setup::new(Script {
            fail_once: Some(2),
            ..Script::default()
        });
        let engine = setup.engine(8);
        setup.enqueue(&engine, 0..6).await;
        engine.alarm().await.unwrap();
        assert_eq!(setup.script.ran(), [(0, 1), (1, 1), (2, 1)]);
        let status = setup.status(&engine).await;
        assert_eq!((status.pending, status.processed), (4, 2));

        setup.clock.set(START + 10_000);
        engine.alarm().await.unwrap();
        let mut expected = vec![(0, 1), (1, 1), (2, 1), (2, 2)];
        expected.extend(first_attempts(3..6));
        assert_eq!(
            setup.script.ran(),
            expected,
            "the retry first, then the rest"
        );
    });
}

#[test]
fn a_cancel_leaves_claimed_events_alone_and_takes_the_others() {
    futures::executor::block_on(async {
        let setup = Setup::new(Script {
            hold: Some(0),
            ..Script::default()
        });
        let (started, release) = setup.script.arm();
        let (a, b) = (setup.engine(4), setup.engine(4));
        setup.enqueue(&a, 0..8).await;
        let cancels = async {
            started.await.unwrap();
            // The claim took events 0 to 3; `b` knows it only from the stored claim.
            let answers = [
                setup.cancel(&a, 2).await,
                setup.cancel(&b, 3).await,
                setup.cancel(&b, 5).await,
            ];
            release.send(()).unwrap();
            answers
        };
        let (ran, answers) = join(a.alarm(), cancels).await;
        ran.unwrap();
        assert_eq!(answers, [false, false, true]);
        let ran: Vec<u32> = setup.script.ran().iter().map(|(n, _)| *n).collect();
        assert_eq!(
            ran,
            [0, 1, 2, 3, 4, 6, 7],
            "every event but the cancelled one"
        );
    });
}

#[test]
fn a_pause_stops_the_claim_after_the_running_event() {
    futures::executor::block_on(async {
        let setup = Setup::new(Script {
            hold: Some(1),
            ..Script::default()
        });
        let (started, release) = setup.script.arm();
        let engine = setup.engine(8);
        setup.enqueue(&engine, 0..6).await;
        let pause = async {
            started.await.unwrap();
            setup.send(&engine, Operation::WorkerPoolPause).await;
            release.send(()).unwrap();
        };
        let (ran, ()) = join(engine.alarm(), pause).await;
        ran.unwrap();
        assert_eq!(setup.script.ran(), first_attempts(0..2));
        let status = setup.status(&engine).await;
        assert_eq!((status.pending, status.processed), (4, 2));
    });
}

#[test]
fn an_event_that_kills_its_host_mid_claim_still_uses_up_its_attempts() {
    futures::executor::block_on(async {
        let setup = Setup::new(Script {
            hold: Some(2),
            ..Script::default()
        });
        setup.enqueue(&setup.engine(8), 0..5).await;
        // Event 2 "kills the process" each time it runs: its alarm call is dropped. The
        // first time it runs inside a claim of several, which records no attempt of its
        // own; then one at a time, each attempt recorded (the pool allows two).
        for _ in 0..3 {
            let engine = setup.engine(8);
            let (started, _release) = setup.script.arm();
            let alarm = Box::pin(engine.alarm());
            match select(alarm, started).await {
                Either::Right((started, alarm)) => {
                    started.unwrap();
                    drop(alarm);
                }
                Either::Left((result, _)) => panic!("the alarm ended: {result:?}"),
            };
        }
        // The next run finds event 2 out of attempts and dead-letters it unrun.
        let engine = setup.engine(8);
        engine.alarm().await.unwrap();
        let status = setup.status(&engine).await;
        assert_eq!(
            (status.pending, status.dead_letters),
            (0, 1),
            "{status:?} {:?}",
            setup.script.ran()
        );
        let ran = setup.script.ran();
        let runs_of = |n: u32| ran.iter().filter(|(e, _)| *e == n).count();
        assert_eq!(runs_of(2), 3, "in the claim, then two attempts: {ran:?}");
        assert!(
            ran.contains(&(2, 2)),
            "its second attempt counted as such: {ran:?}"
        );
        // The events the crashed claim had run before it ran again, once.
        assert_eq!((runs_of(0), runs_of(1)), (2, 2), "{ran:?}");
        assert_eq!((runs_of(3), runs_of(4)), (1, 1), "{ran:?}");
    });
}
