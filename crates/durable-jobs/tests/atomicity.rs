//! A storage failure in the middle of a step leaves the instance unchanged, and the step
//! is retried later (guarantees 1 and 4), shown with the failing in-memory adapter.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use durable_jobs::testing::TestJobs;
use durable_jobs::{
    Continuous, ContinuousContext, Debounce, DebounceContext, InstanceId, JobError, JobKind,
    Registry, RetryPolicy, Schedule, WorkerPool, WorkerPoolContext,
};

type Log = Arc<Mutex<Vec<String>>>;

struct Pool(Log);
impl WorkerPool for Pool {
    type Event = String;
    type Error = String;
    async fn execute(&self, ctx: &WorkerPoolContext<String>) -> Result<(), String> {
        self.0
            .lock()
            .unwrap()
            .push(format!("{} attempt {}", ctx.event(), ctx.attempt()));
        Ok(())
    }
}

struct Batcher(Log);
impl Debounce for Batcher {
    type Event = u32;
    type State = u32;
    type Error = String;
    fn flush_after(&self) -> Duration {
        Duration::from_secs(5)
    }
    async fn execute(&self, ctx: &DebounceContext<u32>) -> Result<(), String> {
        self.0
            .lock()
            .unwrap()
            .push(format!("flush {}", ctx.state()));
        Ok(())
    }
}

struct Tick(Log);
impl Continuous for Tick {
    type State = u32;
    type Error = String;
    fn schedule(&self) -> Schedule {
        Schedule::every(Duration::from_secs(60))
    }
    fn retry(&self) -> RetryPolicy {
        RetryPolicy::none()
    }
    async fn execute(&self, ctx: &mut ContinuousContext<u32>) -> Result<(), String> {
        self.0.lock().unwrap().push(format!("run {}", ctx.state()));
        *ctx.state_mut() += 1;
        Ok(())
    }
}

fn setup() -> (TestJobs, Log) {
    let log = Log::default();
    let registry = Registry::builder()
        .worker_pool("pool", Pool(log.clone()))
        .debounce("batcher", Batcher(log.clone()))
        .continuous("tick", Tick(log.clone()))
        .build()
        .unwrap();
    (TestJobs::new(registry), log)
}

fn lines(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

#[test]
fn failed_enqueue_stores_nothing() {
    futures::executor::block_on(async {
        let (jobs, log) = setup();
        let storage = jobs.storage(&InstanceId::new(JobKind::WorkerPool, "pool", "0"));
        let client = jobs.client();
        let pool = client.worker_pool::<Pool>();
        storage.fail_next_commits(1);
        let err = pool.enqueue(&"a".to_string()).await.unwrap_err();
        assert!(matches!(err, JobError::Storage { .. }), "{err}");
        assert!(err.is_transient());
        assert!(storage.is_empty());
        assert_eq!(storage.alarm(), None);
        jobs.advance(Duration::from_secs(10)).await;
        assert!(lines(&log).is_empty());
        pool.enqueue(&"a".to_string()).await.unwrap();
        jobs.advance(Duration::ZERO).await;
        assert_eq!(lines(&log), ["a attempt 1"]);
    });
}

#[test]
fn failed_completion_is_retried_and_leaves_no_half_step() {
    futures::executor::block_on(async {
        let (jobs, log) = setup();
        let storage = jobs.storage(&InstanceId::new(JobKind::WorkerPool, "pool", "0"));
        let client = jobs.client();
        let pool = client.worker_pool::<Pool>();
        pool.enqueue(&"a".to_string()).await.unwrap();
        let before = storage.snapshot();
        storage.fail_next_commits(1);
        jobs.advance(Duration::ZERO).await;
        // The execution ran, but its completion did not commit: nothing changed.
        assert_eq!(lines(&log), ["a attempt 1"]);
        assert_eq!(storage.snapshot(), before);
        assert_eq!(pool.status().await.unwrap().pending, 1);
        let retry_at = storage.alarm().expect("the failed alarm is set again");
        assert!(retry_at > jobs.now());
        // The platform retries the alarm: the event runs again (at least once) and completes.
        jobs.advance(Duration::from_secs(2)).await;
        assert_eq!(lines(&log), ["a attempt 1", "a attempt 1"]);
        let status = pool.status().await.unwrap();
        assert_eq!((status.pending, status.processed), (0, 1));
    });
}

#[test]
fn failed_flush_claim_keeps_the_batch_pending() {
    futures::executor::block_on(async {
        let (jobs, log) = setup();
        let storage = jobs.storage(&InstanceId::new(JobKind::Debounce, "batcher", "k"));
        let client = jobs.client();
        let batcher = client.debounce::<Batcher>();
        batcher.add("k", &7).await.unwrap();
        let before = storage.snapshot();
        storage.fail_next_commits(1);
        jobs.advance(Duration::from_secs(5)).await;
        assert!(lines(&log).is_empty(), "the claim failed, so nothing ran");
        assert_eq!(storage.snapshot(), before);
        assert_eq!(batcher.state("k").await.unwrap(), Some(7));
        jobs.advance(Duration::from_secs(2)).await;
        assert_eq!(lines(&log), ["flush 7"]);
    });
}

#[test]
fn failed_run_completion_does_not_count_the_run() {
    futures::executor::block_on(async {
        let (jobs, log) = setup();
        let storage = jobs.storage(&InstanceId::new(JobKind::Continuous, "tick", "t"));
        let client = jobs.client();
        let tick = client.continuous::<Tick>();
        tick.start("t", &0).await.unwrap();
        storage.fail_next_commits(1);
        jobs.advance(Duration::ZERO).await;
        assert_eq!(tick.state("t").await.unwrap(), Some(0));
        assert_eq!(tick.status("t").await.unwrap().unwrap().run_count, 0);
        jobs.advance(Duration::from_secs(2)).await;
        assert_eq!(lines(&log), ["run 0", "run 0"]);
        assert_eq!(tick.state("t").await.unwrap(), Some(1));
        assert_eq!(tick.status("t").await.unwrap().unwrap().run_count, 1);
    });
}

#[test]
fn failed_reads_fail_the_request_only() {
    futures::executor::block_on(async {
        let (jobs, _log) = setup();
        let storage = jobs.storage(&InstanceId::new(JobKind::Continuous, "tick", "t"));
        let client = jobs.client();
        let tick = client.continuous::<Tick>();
        storage.fail_next_reads(1);
        assert!(matches!(
            tick.start("t", &0).await,
            Err(JobError::Storage { .. })
        ));
        assert!(storage.is_empty());
        assert!(tick.start("t", &0).await.unwrap());
        assert!(tick.start("other", &0).await.unwrap());
    });
}

/// Every step the engine begins in storage is ended, whether it commits, reads only, or
/// fails on a read or a commit: a runtime that holds a lock or a transaction for a step
/// would otherwise keep it.
#[test]
fn every_step_begun_is_ended() {
    futures::executor::block_on(async {
        let (jobs, log) = setup();
        let storage = jobs.storage(&InstanceId::new(JobKind::WorkerPool, "pool", "0"));
        let client = jobs.client();
        let pool = client.worker_pool::<Pool>();
        let balanced = |what: &str| {
            let stats = storage.stats();
            assert!(stats.steps_begun > 0, "{what}: no step begun");
            assert_eq!(stats.steps_begun, stats.steps_ended, "{what}");
        };
        pool.enqueue(&"a".to_string()).await.unwrap();
        balanced("a committed request");
        pool.status().await.unwrap();
        balanced("a read-only request");
        storage.fail_next_reads(1);
        pool.enqueue(&"b".to_string()).await.unwrap_err();
        balanced("a failed read");
        storage.fail_next_commits(1);
        pool.enqueue(&"b".to_string()).await.unwrap_err();
        balanced("a failed commit");
        jobs.advance(Duration::ZERO).await;
        assert_eq!(lines(&log), ["a attempt 1"]);
        balanced("an alarm pass that ran user code");
    });
}
