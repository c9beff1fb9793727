//! Listing and counting a job's instances, for runtimes that can enumerate them.

use std::future::Future;
use std::time::Duration;

use durable_jobs::inspect::{InstancePage, InstanceQuery, StatusCounts, MAX_PAGE};
use durable_jobs::{EnqueueRequest, JobError, JobKind, Registry, StatusName};

use crate::jobs::{Count, Log, Task, Ticker, Worker};
use crate::{secs, TestRuntime};

/// A runtime that lists and counts instances.
pub trait Inspect: TestRuntime {
    /// A page of a job's instances.
    fn instances(
        &self,
        query: &InstanceQuery,
    ) -> impl Future<Output = Result<InstancePage, JobError>>;

    /// A job's instances per status.
    fn counts(
        &self,
        kind: JobKind,
        job: &str,
    ) -> impl Future<Output = Result<StatusCounts, JobError>>;
}

/// Instantiates every test of this module for a runtime, as [`conformance_tests!`] does.
#[macro_export]
macro_rules! inspect_tests {
    ($rt:ty, $run:expr) => {
        $crate::conformance_tests!(@each $rt, $run;
            inspect::lists_filters_and_pages_instances,
            inspect::finds_pool_instances_by_status_and_dead_letters,
            inspect::refuses_unknown_jobs_and_bad_pages,
        );
    };
}

async fn with<R: Inspect>(log: &Log) -> R {
    let worker = Worker::new(log, 3);
    worker.fail("bad", 3);
    let registry = Registry::builder()
        .continuous("ticks", Ticker::every(log, Duration::from_secs(3600)))
        .worker_pool("tasks", worker)
        .build()
        .unwrap();
    R::start(registry).await
}

fn keys(page: &InstancePage) -> Vec<&str> {
    page.instances.iter().map(|s| s.id.key.as_str()).collect()
}

/// Every instance in key order, narrowed by status and key prefix, a page at a time.
pub async fn lists_filters_and_pages_instances<R: Inspect>() {
    let log = Log::default();
    let rt: R = with(&log).await;
    let client = rt.client();
    let ticks = client.continuous::<Ticker>();
    for key in ["acct-2", "acct-1", "other-1", "acct-3"] {
        ticks.start(key, &Count { n: 0 }).await.unwrap();
    }
    ticks.stop("acct-2").await.unwrap();
    rt.advance(secs(0)).await;

    let all = InstanceQuery::all(JobKind::Continuous, "ticks");
    let page = rt.instances(&all).await.unwrap();
    assert_eq!(keys(&page), ["acct-1", "acct-2", "acct-3", "other-1"]);
    assert_eq!(page.next, None);
    assert_eq!(page.instances[1].status.name(), StatusName::Stopped);

    let accounts = InstanceQuery {
        key_prefix: "acct-".into(),
        ..all.clone()
    };
    assert_eq!(
        keys(&rt.instances(&accounts).await.unwrap()),
        ["acct-1", "acct-2", "acct-3"]
    );
    let stopped = InstanceQuery {
        status: Some(StatusName::Stopped),
        ..all.clone()
    };
    assert_eq!(keys(&rt.instances(&stopped).await.unwrap()), ["acct-2"]);

    let mut query = InstanceQuery { limit: 3, ..all };
    let first = rt.instances(&query).await.unwrap();
    assert_eq!(keys(&first), ["acct-1", "acct-2", "acct-3"]);
    query.after = first.next;
    let second = rt.instances(&query).await.unwrap();
    assert_eq!(keys(&second), ["other-1"]);
    assert_eq!(second.next, None);

    let counts = rt.counts(JobKind::Continuous, "ticks").await.unwrap();
    assert_eq!((counts.active, counts.stopped, counts.total()), (3, 1, 4));
}

/// Pool instances show their queue, their pause and their dead letters.
pub async fn finds_pool_instances_by_status_and_dead_letters<R: Inspect>() {
    let log = Log::default();
    let rt: R = with(&log).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    let bad = pool
        .enqueue_with(
            &Task::named("bad"),
            EnqueueRequest::new().partition_key("p"),
        )
        .await
        .unwrap();
    rt.advance(secs(60)).await;
    let other = (bad.instance_index + 1) % 3;
    pool.pause(other).await.unwrap();
    // One event lands on the paused instance (the others run theirs).
    for n in 0.. {
        let key = format!("k{n}");
        let options = EnqueueRequest::new().partition_key(&key);
        let done = pool
            .enqueue_with(&Task::named(&key), options)
            .await
            .unwrap();
        if done.instance_index == other {
            break;
        }
    }
    rt.advance(secs(0)).await;

    let all = InstanceQuery::all(JobKind::WorkerPool, "tasks");
    let dead = InstanceQuery {
        has_dead_letters: true,
        ..all.clone()
    };
    let page = rt.instances(&dead).await.unwrap();
    assert_eq!(keys(&page), [bad.instance_index.to_string()]);
    assert_eq!(page.instances[0].dead_letters, 1);

    let paused = InstanceQuery {
        status: Some(StatusName::Paused),
        ..all
    };
    let page = rt.instances(&paused).await.unwrap();
    assert_eq!(keys(&page), [other.to_string()]);
    assert_eq!(page.instances[0].pending, 1);

    let counts = rt.counts(JobKind::WorkerPool, "tasks").await.unwrap();
    assert_eq!((counts.paused, counts.with_dead_letters), (1, 1));
}

/// An unknown job, or a page size out of bounds, is the caller's error.
pub async fn refuses_unknown_jobs_and_bad_pages<R: Inspect>() {
    let log = Log::default();
    let rt: R = with(&log).await;
    let unknown = InstanceQuery::all(JobKind::Debounce, "ticks");
    assert!(matches!(
        rt.instances(&unknown).await,
        Err(JobError::JobNotFound { .. })
    ));
    assert!(matches!(
        rt.counts(JobKind::WorkerPool, "nope").await,
        Err(JobError::JobNotFound { .. })
    ));
    for limit in [0, MAX_PAGE + 1] {
        let query = InstanceQuery {
            limit,
            ..InstanceQuery::all(JobKind::Continuous, "ticks")
        };
        assert!(matches!(
            rt.instances(&query).await,
            Err(JobError::BadRequest { .. })
        ));
    }
}
