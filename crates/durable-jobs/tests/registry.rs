//! Registration validates names and configurations with clear errors.

use std::time::Duration;

use durable_jobs::testing::TestJobs;
use durable_jobs::{
    Continuous, ContinuousContext, Debounce, DebounceContext, JobError, JobKind, Registry,
    RegistryError, RetryPolicy, Schedule, WorkerPool, WorkerPoolContext,
};

struct Tick(Schedule);
impl Continuous for Tick {
    type State = ();
    type Error = String;
    fn schedule(&self) -> Schedule {
        self.0.clone()
    }
    async fn execute(&self, _: &mut ContinuousContext<()>) -> Result<(), String> {
        Ok(())
    }
}

struct Pool(u32);
impl WorkerPool for Pool {
    type Event = ();
    type Error = String;
    fn concurrency(&self) -> u32 {
        self.0
    }
    async fn execute(&self, _: &WorkerPoolContext<()>) -> Result<(), String> {
        Ok(())
    }
}

struct Batch(Option<u32>, RetryPolicy);
impl Debounce for Batch {
    type Event = ();
    type State = ();
    type Error = String;
    fn flush_after(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn max_events(&self) -> Option<u32> {
        self.0
    }
    fn retry(&self) -> RetryPolicy {
        self.1
    }
    async fn execute(&self, _: &DebounceContext<()>) -> Result<(), String> {
        Ok(())
    }
}

fn every() -> Tick {
    Tick(Schedule::every(Duration::from_secs(1)))
}

#[test]
fn names_must_be_plain() {
    for bad in ["", "a:b", "with space", "ünï", "a/b"] {
        let err = Registry::builder()
            .continuous(bad, every())
            .build()
            .unwrap_err();
        assert_eq!(err, RegistryError::InvalidName { name: bad.into() });
        assert!(err.to_string().contains("A-Z a-z 0-9 _ -"));
    }
    assert!(Registry::builder()
        .continuous("Token_Refresher-2", every())
        .build()
        .is_ok());
}

#[test]
fn duplicate_names_are_rejected_per_kind() {
    let err = Registry::builder()
        .continuous("x", every())
        .continuous("x", every())
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        RegistryError::DuplicateName {
            kind: JobKind::Continuous,
            name: "x".into()
        }
    );
    assert!(Registry::builder()
        .continuous("x", every())
        .worker_pool("x", Pool(1))
        .build()
        .is_ok());
}

#[test]
fn bad_configurations_are_rejected() {
    let cases = [
        Registry::builder().worker_pool("p", Pool(0)).build(),
        Registry::builder().worker_pool("p", Pool(5000)).build(),
        Registry::builder()
            .continuous("c", Tick(Schedule::cron("every day")))
            .build(),
        Registry::builder()
            .continuous("c", Tick(Schedule::every(Duration::ZERO)))
            .build(),
        Registry::builder()
            .debounce("d", Batch(Some(0), RetryPolicy::none()))
            .build(),
        Registry::builder()
            .debounce("d", Batch(None, RetryPolicy::fixed(0, Duration::ZERO)))
            .build(),
    ];
    for case in cases {
        match case {
            Err(RegistryError::InvalidConfig { message, .. }) => assert!(!message.is_empty()),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }
}

#[test]
fn a_bad_time_zone_is_rejected_at_build() {
    let err = Registry::builder()
        .continuous(
            "nightly",
            Tick(Schedule::cron_in("30 2 * * *", "Europe/Berlim")),
        )
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        RegistryError::InvalidConfig {
            kind: JobKind::Continuous,
            name: "nightly".into(),
            message: "`Europe/Berlim` is not an IANA time zone name \
                      (such as `Europe/Berlin`, `America/New_York` or `UTC`)"
                .into(),
        }
    );
    assert!(Registry::builder()
        .continuous(
            "nightly",
            Tick(Schedule::cron_in("30 2 * * *", "Europe/Berlin"))
        )
        .build()
        .is_ok());
}

#[test]
fn a_type_registered_twice_is_reached_by_name() {
    futures::executor::block_on(async {
        let registry = Registry::builder()
            .continuous("fast", every())
            .continuous("slow", Tick(Schedule::every(Duration::from_secs(3600))))
            .build()
            .unwrap();
        let jobs = TestJobs::new(registry);
        let client = jobs.client();
        let err = client
            .continuous::<Tick>()
            .start("a", &())
            .await
            .unwrap_err();
        assert!(
            matches!(err, JobError::BadRequest { ref message } if message.contains("fast")),
            "{err}"
        );
        assert!(client
            .continuous_named::<Tick>("slow")
            .start("a", &())
            .await
            .unwrap());
        let status = client
            .continuous_named::<Tick>("slow")
            .status("a")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.next_run_at, Some(jobs.now()));
        assert_eq!(
            client
                .continuous_named::<Tick>("fast")
                .status("a")
                .await
                .unwrap(),
            None
        );
    });
}
