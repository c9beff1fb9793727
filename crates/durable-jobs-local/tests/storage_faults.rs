//! Real SQLite write failures, injected by capping the file's size: a group commit that
//! cannot grow the file fails every call in it with a clear storage error and writes nothing
//! of them, everything acknowledged before stays, and the runtime recovers once the cap is
//! raised, without a restart. Alarms whose step failed are retried with backoff.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durable_jobs::testing::DEFAULT_START;
use durable_jobs::{
    Continuous, ContinuousContext, Debounce, DebounceContext, EnqueueRequest, JobError, Registry,
    RetryPolicy, Schedule, WorkerPool, WorkerPoolContext,
};
use durable_jobs_conformance::jobs::{Gate, Log};
use durable_jobs_local::LocalRuntime;
use futures::future::{join, join_all};
use serde::{Deserialize, Serialize};

/// A queued upload: its padding makes each enqueue need new pages in the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Blob {
    pad: String,
}

impl Blob {
    fn of(bytes: usize) -> Self {
        Blob {
            pad: "x".repeat(bytes),
        }
    }
}

/// Logs `exec {event_id}` for each event it processes.
struct Uploads(Log);
impl WorkerPool for Uploads {
    type Event = Blob;
    type Error = String;
    fn concurrency(&self) -> u32 {
        8
    }
    async fn execute(&self, ctx: &WorkerPoolContext<Blob>) -> Result<(), String> {
        self.0.push(format!("exec {}", ctx.event_id()));
        Ok(())
    }
}

/// Collects numbers for an hour, then logs `flush {numbers:?}`.
struct Bag(Log);
impl Debounce for Bag {
    type Event = u32;
    type State = Vec<u32>;
    type Error = String;
    fn flush_after(&self) -> Duration {
        Duration::from_secs(3600)
    }
    fn on_event(
        &self,
        state: Option<Vec<u32>>,
        n: u32,
    ) -> Result<Vec<u32>, durable_jobs::Rejected> {
        let mut all = state.unwrap_or_default();
        all.push(n);
        Ok(all)
    }
    async fn execute(&self, ctx: &DebounceContext<Vec<u32>>) -> Result<(), String> {
        let mut numbers = ctx.state().clone();
        numbers.sort_unstable();
        self.0.push(format!("flush {numbers:?}"));
        Ok(())
    }
}

/// One instance whose executions count how many of them run at once; the first waits at
/// its gate. Logs `start {event_id}` and `end {event_id}`.
#[derive(Clone)]
struct Exclusive {
    log: Log,
    gate: Gate,
    running: Arc<AtomicU32>,
    most_at_once: Arc<AtomicU32>,
}

impl WorkerPool for Exclusive {
    type Event = Blob;
    type Error = String;
    fn concurrency(&self) -> u32 {
        1
    }
    async fn execute(&self, ctx: &WorkerPoolContext<Blob>) -> Result<(), String> {
        let at_once = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(at_once, Ordering::SeqCst);
        self.log.push(format!("start {}", ctx.event_id()));
        self.gate.pass().await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.log.push(format!("end {}", ctx.event_id()));
        Ok(())
    }
}

/// Runs hourly, and is purged 5 s after a stop.
struct Brief;
impl Continuous for Brief {
    type State = String;
    type Error = String;
    fn schedule(&self) -> Schedule {
        Schedule::every(Duration::from_secs(3600))
    }
    fn start_immediately(&self) -> bool {
        false
    }
    fn retention(&self) -> Duration {
        Duration::from_secs(5)
    }
    async fn execute(&self, _: &mut ContinuousContext<String>) -> Result<(), String> {
        Ok(())
    }
}

/// Grows its state by 200 KB each run, so every completion needs new pages; logs
/// `run {seconds since start} len {state length} count {run count}`.
struct Grower(Log);
impl Continuous for Grower {
    type State = String;
    type Error = String;
    fn schedule(&self) -> Schedule {
        Schedule::every(Duration::from_secs(60))
    }
    fn start_immediately(&self) -> bool {
        false
    }
    fn retry(&self) -> RetryPolicy {
        RetryPolicy::none()
    }
    async fn execute(&self, ctx: &mut ContinuousContext<String>) -> Result<(), String> {
        self.0.push(format!(
            "run {} len {} count {}",
            (ctx.now() - DEFAULT_START) / 1000,
            ctx.state().len(),
            ctx.run_count()
        ));
        ctx.state_mut().push_str(&"x".repeat(200_000));
        Ok(())
    }
}

fn registry(log: &Log) -> Registry {
    Registry::builder()
        .worker_pool("uploads", Uploads(log.clone()))
        .debounce("bag", Bag(log.clone()))
        .continuous("grower", Grower(log.clone()))
        .continuous("brief", Brief)
        .build()
        .unwrap()
}

/// The error of a call whose group commit could not grow the file.
fn assert_full<T: std::fmt::Debug>(result: &Result<T, JobError>) {
    match result {
        Err(JobError::Storage { message }) => assert!(
            message.contains("database or disk is full"),
            "unclear message: {message}"
        ),
        other => panic!("expected a storage error, got {other:?}"),
    }
}

#[test]
fn a_full_file_fails_whole_group_commits_and_lifting_the_cap_recovers() {
    futures::executor::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::default();
        let rt = LocalRuntime::builder(registry(&log))
            .path(dir.path().join("jobs.db"))
            .virtual_clock(DEFAULT_START)
            .max_file_size(256 * 1024)
            .open()
            .unwrap();
        let client = rt.client();
        let pool = client.worker_pool::<Uploads>();
        let bag = client.debounce::<Bag>();
        // Paused, the queue keeps exactly what was stored.
        pool.pause_all().await.unwrap();

        // Rounds of concurrent calls, so that commits of several instances share group
        // commits, until the file is full; one more round once it is.
        let (mut acked, mut failed, mut added, mut not_added) = (vec![], vec![], vec![], vec![]);
        for round in 0..40u32 {
            let enqueues = (0..16).map(|i| {
                let id = format!("{round}-{i}");
                let options = EnqueueRequest::new().event_id(&id);
                let pool = &pool;
                async move { (id, pool.enqueue_with(&Blob::of(6_000), options).await) }
            });
            let adds = (0..4).map(|i| {
                let n = round * 4 + i;
                let bag = &bag;
                async move { (n, bag.add("b", &n).await) }
            });
            let full_before = !failed.is_empty();
            let (enqueued, adds) = join(join_all(enqueues), join_all(adds)).await;
            for (id, result) in enqueued {
                match result {
                    Ok(_) => acked.push(id),
                    Err(_) => {
                        assert_full(&result);
                        failed.push(id);
                    }
                }
            }
            for (n, result) in adds {
                match result {
                    Ok(_) => added.push(n),
                    Err(_) => {
                        assert_full(&result);
                        not_added.push(n);
                    }
                }
            }
            if full_before {
                break;
            }
        }
        assert!(!failed.is_empty(), "the cap was never reached");
        assert!(!acked.is_empty());

        // Raising the cap recovers the running runtime.
        assert!(rt.set_max_file_size(None).await.unwrap() > 1 << 30);
        assert_eq!(
            pool.status().await.unwrap().pending,
            acked.len() as u64,
            "exactly the acknowledged enqueues are stored"
        );
        for id in &acked {
            let again = pool
                .enqueue_with(&Blob::of(10), EnqueueRequest::new().event_id(id))
                .await
                .unwrap();
            assert!(again.duplicate, "acknowledged {id} was lost");
        }
        for id in &failed {
            let again = pool
                .enqueue_with(&Blob::of(10), EnqueueRequest::new().event_id(id))
                .await
                .unwrap();
            assert!(!again.duplicate, "failed {id} was stored");
        }
        let mut state = bag.state("b").await.unwrap().unwrap_or_default();
        state.sort_unstable();
        added.sort_unstable();
        assert_eq!(state, added, "exactly the acknowledged adds are stored");

        // Alarms continue: every stored event runs once, the batch flushes.
        pool.resume_all().await.unwrap();
        rt.advance(Duration::from_secs(3600)).await.unwrap();
        let status = pool.status().await.unwrap();
        let stored = acked.len() + failed.len();
        assert_eq!((status.pending, status.processed), (0, stored as u64));
        assert_eq!(log.matching("exec ").len(), stored);
        assert_eq!(log.matching("flush "), [format!("flush {added:?}")]);
        rt.shutdown().await;
    });
}

#[test]
fn a_lost_request_commit_does_not_strand_the_instances_alarm() {
    futures::executor::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let rt = LocalRuntime::builder(registry(&Log::default()))
            .path(dir.path().join("jobs.db"))
            .virtual_clock(DEFAULT_START)
            .open()
            .unwrap();
        let client = rt.client();
        let brief = client.continuous::<Brief>();
        brief.start("x", &String::new()).await.unwrap();
        brief.stop("x").await.unwrap();
        // Purged at 5 s. A start with a big state would move the alarm to its first run,
        // an hour away, but its commit is lost: the file keeps the purge at 5 s.
        rt.set_max_file_size(Some(1)).await.unwrap();
        assert_full(&brief.start("x", &"x".repeat(100_000)).await);
        rt.set_max_file_size(None).await.unwrap();
        rt.advance(Duration::from_secs(10)).await.unwrap();
        assert!(
            brief.status("x").await.unwrap().is_none(),
            "the purge the file holds ran"
        );
        rt.shutdown().await;
    });
}

#[test]
fn an_alarm_whose_step_fails_is_retried_with_backoff() {
    futures::executor::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::default();
        let rt = LocalRuntime::builder(registry(&log))
            .path(dir.path().join("jobs.db"))
            .virtual_clock(DEFAULT_START)
            .open()
            .unwrap();
        let client = rt.client();
        let grower = client.continuous::<Grower>();
        grower.start("g", &String::new()).await.unwrap();
        // No growth from here: each run's completion is rolled back.
        let size = rt.set_max_file_size(Some(1)).await.unwrap();
        assert!(
            size > 0 && size < 1 << 20,
            "capped at the current size: {size}"
        );

        // Due at 60 s, then retried after 1, 2 and 4 s, each time from what the file holds.
        rt.advance(Duration::from_secs(67)).await.unwrap();
        let failing = "len 0 count 0";
        assert_eq!(
            log.matching("run "),
            [60, 61, 63, 67].map(|s| format!("run {s} {failing}"))
        );
        rt.set_max_file_size(None).await.unwrap();
        rt.advance(Duration::from_secs(8)).await.unwrap();
        assert_eq!(
            log.matching("run ").last().unwrap(),
            &format!("run 75 {failing}")
        );
        let status = grower.status("g").await.unwrap().unwrap();
        assert_eq!(status.run_count, 1);
        assert_eq!(
            grower.state("g").await.unwrap().map(|s| s.len()),
            Some(200_000)
        );

        // The schedule goes on from 60 s: the next run is at 120 s, on the grown state.
        rt.advance(Duration::from_secs(45)).await.unwrap();
        assert_eq!(
            log.matching("run ").last().unwrap(),
            "run 120 len 200000 count 1"
        );
        assert_eq!(grower.status("g").await.unwrap().unwrap().run_count, 2);
        rt.shutdown().await;
    });
}

/// Waits on this thread, up to `limit`, until `done` holds; says whether it did.
fn wait_until(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

#[test]
fn an_execution_whose_instance_lost_a_commit_never_overlaps_the_next() {
    futures::executor::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::default();
        let (gate, control) = Gate::closed();
        let job = Exclusive {
            log: log.clone(),
            gate,
            running: Arc::default(),
            most_at_once: Arc::default(),
        };
        let registry = Registry::builder()
            .worker_pool("exclusive", job.clone())
            .build()
            .unwrap();
        let rt = LocalRuntime::builder(registry)
            .path(dir.path().join("jobs.db"))
            .virtual_clock(DEFAULT_START)
            .open()
            .unwrap();
        let client = rt.client();
        let pool = client.worker_pool::<Exclusive>();
        let id = |id: &str| EnqueueRequest::new().event_id(id);
        pool.enqueue_with(&Blob::of(10), id("a")).await.unwrap();
        control.started.await.unwrap();

        // While "a" runs, a commit of its instance is lost: the instance is reloaded from
        // the file, where "a" is still queued.
        rt.set_max_file_size(Some(1)).await.unwrap();
        assert_full(&pool.enqueue_with(&Blob::of(100_000), id("b")).await);
        rt.set_max_file_size(None).await.unwrap();
        // Requests are served by the reloaded instance meanwhile; resuming sets its alarm.
        pool.pause_all().await.unwrap();
        pool.resume_all().await.unwrap();
        // A second execution would start at once; give it the chance.
        let overlapped = wait_until(Duration::from_millis(300), || {
            log.matching("start ").len() > 1
        });
        assert!(!overlapped, "a second execution started: {:?}", log.lines());
        assert_eq!(pool.status().await.unwrap().pending, 1);

        drop(control.release);
        rt.advance(Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            job.most_at_once.load(Ordering::SeqCst),
            1,
            "{:?}",
            log.lines()
        );
        // "a" ran again: its completion was refused, as its instance had lost a commit.
        assert_eq!(
            log.lines(),
            ["start a", "end a", "start a", "end a"].map(String::from)
        );
        let status = pool.status().await.unwrap();
        assert_eq!((status.pending, status.processed), (0, 1));
        let b = pool.enqueue_with(&Blob::of(10), id("b")).await.unwrap();
        assert!(!b.duplicate, "the failed enqueue was not stored");
        rt.shutdown().await;
    });
}
