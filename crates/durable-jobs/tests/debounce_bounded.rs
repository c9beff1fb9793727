//! Debounce requests read a bounded number of rows: `clear` drops many batches in pages of
//! their own, and `failed_batches` lists only the oldest.

use std::time::Duration;

use durable_jobs::testing::TestJobs;
use durable_jobs::{Debounce, DebounceContext, InstanceId, JobKind, Registry, RetryPolicy, Status};

/// Batches of one event whose flush fails at once, with no retry.
struct Failing;

impl Debounce for Failing {
    type Event = u32;
    type State = u32;
    type Error = String;
    fn flush_after(&self) -> Duration {
        Duration::from_secs(5)
    }
    fn max_events(&self) -> Option<u32> {
        Some(1)
    }
    fn retry(&self) -> RetryPolicy {
        RetryPolicy::none()
    }
    async fn execute(&self, _ctx: &DebounceContext<u32>) -> Result<(), String> {
        Err("down".into())
    }
}

fn setup() -> (TestJobs, InstanceId) {
    let registry = Registry::builder()
        .debounce("failing", Failing)
        .build()
        .unwrap();
    let instance = InstanceId::new(JobKind::Debounce, "failing", "k");
    (TestJobs::new(registry), instance)
}

/// Adds `count` events numbered from `first`: each fills a batch of its own.
async fn add(jobs: &TestJobs, first: u32, count: u32) {
    let client = jobs.client();
    let failing = client.debounce::<Failing>();
    for n in first..first + count {
        failing.add("k", &n).await.unwrap();
    }
}

/// Makes `failed` failed batches (their flushes ran and failed), then `full` full batches
/// waiting for their flush and an open batch.
async fn fill(jobs: &TestJobs, failed: u32, full: u32) {
    add(jobs, 0, failed).await;
    jobs.run_until_idle().await;
    add(jobs, failed, full + 1).await;
    let status = jobs
        .client()
        .debounce::<Failing>()
        .status("k")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            status.failed_batches,
            status.full_batches,
            status.event_count
        ),
        (failed, full, 1)
    );
}

#[test]
fn clear_drops_more_than_a_page_of_batches() {
    futures::executor::block_on(async {
        let (jobs, instance) = setup();
        let (failed, full) = (600, 600);
        fill(&jobs, failed, full).await;
        let storage = jobs.storage(&instance);
        let client = jobs.client();
        let failing = client.debounce::<Failing>();

        let commits = storage.stats().commits;
        assert_eq!(failing.clear("k").await.unwrap(), failed + full + 1);
        // 1,200 rows at most 500 a step: 500 failed, then 100 failed and 400 full, then
        // the last 200 full.
        assert_eq!(storage.stats().commits - commits, 3);

        let rows = storage.snapshot();
        let batch_rows = rows
            .keys()
            .filter(|k| k.starts_with("failed:") || k.starts_with("full:"))
            .count();
        assert_eq!(batch_rows, 0);
        let status = failing.status("k").await.unwrap().unwrap();
        assert_eq!(
            (
                status.failed_batches,
                status.full_batches,
                status.event_count
            ),
            (0, 0, 0)
        );
        assert!(!status.flushing);
        assert_eq!(status.status, Status::Active);
        assert!(status.purge_at.is_some());
        assert!(failing.failed_batches("k").await.unwrap().is_empty());
        let cleared = jobs
            .events_of(&instance.to_string())
            .into_iter()
            .filter(|t| *t == "debounce.cleared")
            .count();
        assert_eq!(cleared, 1, "one event for the whole clear");

        // Nothing is left to flush, and the idle instance is purged after its retention.
        jobs.advance(Duration::from_secs(2 * 24 * 60 * 60)).await;
        assert!(storage.is_empty());
    });
}

#[test]
fn clear_of_exactly_a_page_ends_with_an_empty_page() {
    futures::executor::block_on(async {
        let (jobs, instance) = setup();
        fill(&jobs, 200, 300).await;
        let storage = jobs.storage(&instance);
        let client = jobs.client();
        let failing = client.debounce::<Failing>();
        let commits = storage.stats().commits;
        assert_eq!(failing.clear("k").await.unwrap(), 501);
        assert_eq!(storage.stats().commits - commits, 2);
        let status = failing.status("k").await.unwrap().unwrap();
        assert_eq!((status.failed_batches, status.full_batches), (0, 0));
        assert!(status.purge_at.is_some());
    });
}

#[test]
fn failed_batches_lists_the_oldest_thousand() {
    futures::executor::block_on(async {
        let (jobs, _) = setup();
        add(&jobs, 0, 1005).await;
        jobs.run_until_idle().await;
        let client = jobs.client();
        let failing = client.debounce::<Failing>();
        let status = failing.status("k").await.unwrap().unwrap();
        assert_eq!(status.failed_batches, 1005, "the status counts them all");

        let listed = failing.failed_batches("k").await.unwrap();
        assert_eq!(listed.len(), 1000);
        let events: Vec<u32> = listed
            .iter()
            .map(|b| serde_json::from_value(b.state.clone()).unwrap())
            .collect();
        assert_eq!(
            events,
            (0..1000).collect::<Vec<u32>>(),
            "the oldest, in order"
        );
        let seqs: Vec<u64> = listed.iter().map(|b| b.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    });
}
