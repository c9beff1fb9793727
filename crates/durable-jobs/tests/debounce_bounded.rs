//! Debounce requests read a bounded number of rows: `failed_batches` lists only the oldest.

use std::time::Duration;

use durable_jobs::testing::TestJobs;
use durable_jobs::{Debounce, DebounceContext, Registry, RetryPolicy};

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

fn setup() -> TestJobs {
    let registry = Registry::builder()
        .debounce("failing", Failing)
        .build()
        .unwrap();
    TestJobs::new(registry)
}

/// Adds `count` events numbered from `first`: each fills a batch of its own.
async fn add(jobs: &TestJobs, first: u32, count: u32) {
    let client = jobs.client();
    let failing = client.debounce::<Failing>();
    for n in first..first + count {
        failing.add("k", &n).await.unwrap();
    }
}

#[test]
fn failed_batches_lists_the_oldest_thousand() {
    futures::executor::block_on(async {
        let jobs = setup();
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
