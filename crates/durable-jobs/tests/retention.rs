//! Bounded growth (G8 in docs/ARCHITECTURE.md): id records expire and are swept as work continues, and an
//! idle Debounce instance is purged after its retention period.

use std::time::Duration;

use durable_jobs::testing::TestJobs;
use durable_jobs::{
    Debounce, DebounceContext, EnqueueRequest, InstanceId, JobKind, Registry, Rejected, WorkerPool,
    WorkerPoolContext,
};

const HOUR: Duration = Duration::from_secs(3600);

struct Hooks;
impl Debounce for Hooks {
    type Event = u32;
    type State = Vec<u32>;
    type Error = String;
    fn flush_after(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn max_events(&self) -> Option<u32> {
        Some(100)
    }
    fn retention(&self) -> Duration {
        HOUR
    }
    fn on_event(&self, state: Option<Vec<u32>>, n: u32) -> Result<Vec<u32>, Rejected> {
        let mut all = state.unwrap_or_default();
        all.push(n);
        Ok(all)
    }
    async fn execute(&self, _: &DebounceContext<Vec<u32>>) -> Result<(), String> {
        Ok(())
    }
}

struct Pool;
impl WorkerPool for Pool {
    type Event = u32;
    type Error = String;
    fn retention(&self) -> Duration {
        HOUR
    }
    async fn execute(&self, _: &WorkerPoolContext<u32>) -> Result<(), String> {
        Ok(())
    }
}

fn setup() -> TestJobs {
    TestJobs::new(
        Registry::builder()
            .debounce("hooks", Hooks)
            .worker_pool("pool", Pool)
            .build()
            .unwrap(),
    )
}

fn id_records(jobs: &TestJobs, instance: &InstanceId) -> usize {
    jobs.storage(instance)
        .snapshot()
        .keys()
        .filter(|k| k.starts_with("idem:"))
        .count()
}

#[test]
fn debounce_ids_expire_and_idle_instances_are_purged() {
    futures::executor::block_on(async {
        let jobs = setup();
        let client = jobs.client();
        let hooks = client.debounce::<Hooks>();
        let instance = InstanceId::new(JobKind::Debounce, "hooks", "k");
        for n in 0..60 {
            hooks
                .add_with_id("k", &n, &format!("old-{n}"))
                .await
                .unwrap();
        }
        jobs.advance(Duration::from_secs(1)).await;
        assert_eq!(
            id_records(&jobs, &instance),
            60,
            "remembered within the retention period"
        );
        assert!(hooks.add_with_id("k", &0, "old-0").await.unwrap().duplicate);

        // Busy past the retention period: each flush sweeps what expired.
        jobs.advance(HOUR).await;
        for n in 0..3 {
            hooks
                .add_with_id("k", &n, &format!("new-{n}"))
                .await
                .unwrap();
        }
        jobs.advance(Duration::from_secs(1)).await;
        assert_eq!(
            id_records(&jobs, &instance),
            3,
            "only the recent ids remain"
        );
        assert!(!hooks.add_with_id("k", &0, "old-0").await.unwrap().duplicate);

        // Idle past the retention period: the whole instance goes.
        jobs.advance(Duration::from_secs(1)).await;
        jobs.advance(HOUR + HOUR).await;
        assert!(jobs.storage(&instance).is_empty());
        assert_eq!(hooks.status("k").await.unwrap(), None);
    });
}

#[test]
fn worker_pool_ids_expire_as_events_complete() {
    futures::executor::block_on(async {
        let jobs = setup();
        let client = jobs.client();
        let pool = client.worker_pool::<Pool>();
        let instance = InstanceId::new(JobKind::WorkerPool, "pool", "0");
        for n in 0..40 {
            pool.enqueue_with(&n, EnqueueRequest::new().event_id(format!("old-{n}")))
                .await
                .unwrap();
        }
        jobs.advance(Duration::ZERO).await;
        assert_eq!(id_records(&jobs, &instance), 40);
        jobs.advance(HOUR).await;
        for n in 0..3 {
            pool.enqueue_with(&n, EnqueueRequest::new().event_id(format!("new-{n}")))
                .await
                .unwrap();
        }
        jobs.advance(Duration::ZERO).await;
        assert_eq!(id_records(&jobs, &instance), 3);
        let keys = jobs.storage(&instance).snapshot();
        let expiry_entries = keys.keys().filter(|k| k.starts_with("idx:")).count();
        assert_eq!(
            expiry_entries, 3,
            "expiry entries are swept with their records"
        );
    });
}

#[test]
fn idle_pool_instances_forget_expired_ids() {
    futures::executor::block_on(async {
        let jobs = setup();
        let client = jobs.client();
        let pool = client.worker_pool::<Pool>();
        let instance = InstanceId::new(JobKind::WorkerPool, "pool", "0");
        // More than one wake-up sweeps, so the instance must come back for the rest.
        for n in 0..600 {
            pool.enqueue_with(&n, EnqueueRequest::new().event_id(format!("id-{n}")))
                .await
                .unwrap();
        }
        jobs.advance(Duration::ZERO).await;
        assert_eq!(id_records(&jobs, &instance), 600);

        // Nothing runs on the instance any more; it still wakes to forget the ids.
        jobs.advance(HOUR + Duration::from_secs(1)).await;
        let keys = jobs.storage(&instance).snapshot();
        assert_eq!(id_records(&jobs, &instance), 0);
        assert!(!keys.keys().any(|k| k.starts_with("idx:")));
        assert_eq!(
            jobs.next_alarm(),
            None,
            "no more wake-ups once nothing is left to forget"
        );
    });
}

#[test]
fn events_without_an_id_leave_no_records_behind() {
    futures::executor::block_on(async {
        let jobs = setup();
        let client = jobs.client();
        let pool = client.worker_pool::<Pool>();
        let instance = InstanceId::new(JobKind::WorkerPool, "pool", "0");
        let mut generated = Vec::new();
        for n in 0..50 {
            generated.push(pool.enqueue(&n).await.unwrap().event_id);
        }
        pool.enqueue_with(&7, EnqueueRequest::new().event_id("given"))
            .await
            .unwrap();
        assert_eq!(
            id_records(&jobs, &instance),
            51,
            "a queued event can be cancelled by id"
        );
        assert!(pool.cancel(&generated[49]).await.unwrap());
        jobs.advance(Duration::ZERO).await;
        let keys = jobs.storage(&instance).snapshot();
        let left: Vec<&String> = keys
            .keys()
            .filter(|k| k.starts_with("idem:") || k.starts_with("idx:"))
            .collect();
        assert_eq!(left.len(), 2, "only the given id is remembered: {left:?}");
        assert!(left.iter().all(|k| k.ends_with("given")));
    });
}

#[test]
fn a_lone_processed_id_is_still_swept_when_its_instance_goes_idle() {
    futures::executor::block_on(async {
        let jobs = setup();
        let client = jobs.client();
        let pool = client.worker_pool::<Pool>();
        let instance = InstanceId::new(JobKind::WorkerPool, "pool", "0");
        pool.enqueue_with(&1, EnqueueRequest::new().event_id("only"))
            .await
            .unwrap();
        jobs.advance(Duration::ZERO).await;
        assert_eq!(id_records(&jobs, &instance), 1);
        // The completion that wrote the record also swept: it must keep its expiry.
        assert!(
            jobs.next_alarm().is_some(),
            "the instance wakes to forget the id"
        );
        jobs.advance(HOUR + Duration::from_secs(1)).await;
        assert_eq!(id_records(&jobs, &instance), 0);
    });
}
