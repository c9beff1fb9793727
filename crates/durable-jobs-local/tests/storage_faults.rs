//! Real SQLite write failures, injected by capping the file's size: a group commit that
//! cannot grow the file fails every call in it with a clear storage error and writes nothing
//! of them, everything acknowledged before stays, and the runtime recovers once the cap is
//! raised, without a restart. Alarms whose step failed are retried with backoff.

use std::time::Duration;

use durable_jobs::testing::DEFAULT_START;
use durable_jobs::{Continuous, ContinuousContext, Registry, RetryPolicy, Schedule};
use durable_jobs_conformance::jobs::Log;
use durable_jobs_local::LocalRuntime;

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
        .continuous("grower", Grower(log.clone()))
        .build()
        .unwrap()
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
