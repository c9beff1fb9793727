//! A Continuous job on a cron schedule in a time zone, run by the engine on a virtual
//! clock across both daylight saving changes of a year.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::DateTime;
use chrono_tz::Tz;
use durable_jobs::testing::TestJobs;
use durable_jobs::{Continuous, ContinuousContext, Registry, Schedule};
use futures::executor::block_on;

/// Records when it runs.
struct Nightly {
    runs: Arc<Mutex<Vec<i64>>>,
}

impl Continuous for Nightly {
    type State = ();
    type Error = String;
    fn schedule(&self) -> Schedule {
        Schedule::parse("CRON_TZ=Europe/Berlin 30 2 * * *").unwrap()
    }
    fn start_immediately(&self) -> bool {
        false
    }
    async fn execute(&self, ctx: &mut ContinuousContext<()>) -> Result<(), String> {
        self.runs.lock().unwrap().push(ctx.now());
        Ok(())
    }
}

fn ms(rfc3339: &str) -> i64 {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

fn berlin(at: i64) -> String {
    let zone: Tz = "Europe/Berlin".parse().unwrap();
    DateTime::from_timestamp_millis(at)
        .unwrap()
        .with_timezone(&zone)
        .to_rfc3339()
}

#[test]
fn a_nightly_berlin_job_runs_once_each_night_through_both_clock_changes() {
    block_on(async {
        let runs = Arc::new(Mutex::new(Vec::new()));
        let nightly = Nightly { runs: runs.clone() };
        let registry = Registry::builder()
            .continuous("nightly", nightly)
            .build()
            .unwrap();
        // Berlin's clock jumps from 02:00 to 03:00 on 29 March 2026 and falls back from
        // 03:00 to 02:00 on 25 October 2026.
        let start = ms("2026-03-27T12:00:00Z");
        let jobs = TestJobs::starting_at(registry, start);
        let client = jobs.client();
        client
            .continuous::<Nightly>()
            .start("berlin", &())
            .await
            .unwrap();
        let until = ms("2026-10-27T12:00:00Z");
        jobs.advance(Duration::from_millis((until - start) as u64))
            .await;
        let shown: Vec<String> = runs.lock().unwrap().iter().map(|t| berlin(*t)).collect();
        assert_eq!(
            shown.len(),
            214,
            "one run a night from 28 March to 27 October"
        );
        assert_eq!(shown[0], "2026-03-28T02:30:00+01:00");
        // 02:30 does not exist: the run comes at the end of the jump.
        assert_eq!(shown[1], "2026-03-29T03:00:00+02:00");
        assert_eq!(shown[2], "2026-03-30T02:30:00+02:00");
        // 02:30 happens twice: the job runs at the first only.
        let fall_back: Vec<&String> = shown
            .iter()
            .filter(|s| s.starts_with("2026-10-25"))
            .collect();
        assert_eq!(fall_back, ["2026-10-25T02:30:00+02:00"]);
        assert_eq!(shown[213], "2026-10-27T02:30:00+01:00");
        let mut days: Vec<&str> = shown.iter().map(|s| &s[..10]).collect();
        days.dedup();
        assert_eq!(days.len(), shown.len());
    });
}
