//! An instance wakes only when it has due work: one alarm, the earliest due time
//! (G5 in docs/ARCHITECTURE.md).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use durable_jobs::testing::TestJobs;
use durable_jobs::{Debounce, DebounceContext, Registry, Rejected, RetryPolicy};

/// Fails its first flush; writes every flush to a log.
#[derive(Clone, Default)]
struct FailsOnce {
    calls: Arc<AtomicU32>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Debounce for FailsOnce {
    type Event = u32;
    type State = Vec<u32>;
    type Error = String;
    fn flush_after(&self) -> Duration {
        Duration::from_secs(5)
    }
    fn max_events(&self) -> Option<u32> {
        Some(2)
    }
    fn retry(&self) -> RetryPolicy {
        RetryPolicy::fixed(3, Duration::from_secs(60))
    }
    fn on_event(&self, state: Option<Vec<u32>>, n: u32) -> Result<Vec<u32>, Rejected> {
        let mut all = state.unwrap_or_default();
        all.push(n);
        Ok(all)
    }
    async fn execute(&self, ctx: &DebounceContext<Vec<u32>>) -> Result<(), String> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let mut log = self.log.lock().unwrap();
        log.push(format!("{:?} attempt {}", ctx.state(), ctx.attempt()));
        if call == 0 {
            return Err("down".into());
        }
        Ok(())
    }
}

/// While a flush waits for its retry, later batches wait too, and the instance sleeps
/// until the retry is due instead of waking again and again for them.
#[test]
fn later_batches_wait_for_a_retry_without_waking_the_instance() {
    futures::executor::block_on(async {
        let job = FailsOnce::default();
        let registry = Registry::builder()
            .debounce("hooks", job.clone())
            .build()
            .unwrap();
        let jobs = TestJobs::new(registry);
        let client = jobs.client();
        let hooks = client.debounce::<FailsOnce>();
        hooks.add("k", &1).await.unwrap();
        jobs.advance(Duration::from_secs(5)).await;
        // The first flush failed; its retry is a minute away. A full batch, then an open
        // one whose flush time passes while the retry is awaited.
        for n in 2..=4 {
            hooks.add("k", &n).await.unwrap();
        }
        let woken = jobs.advance(Duration::from_secs(30)).await;
        assert_eq!(woken, 0, "nothing is due before the retry");
        jobs.advance(Duration::from_secs(60)).await;
        assert_eq!(
            *job.log.lock().unwrap(),
            [
                "[1] attempt 1",
                "[1] attempt 2",
                "[2, 3] attempt 1",
                "[4] attempt 1"
            ]
        );
    });
}
