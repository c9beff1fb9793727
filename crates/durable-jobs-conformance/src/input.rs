//! Bad input: each a clear typed error, and nothing stored.

use durable_jobs::wire::{Operation, Request};
use durable_jobs::{InstanceId, JobError, JobKind, Registry};
use serde_json::json;

use crate::jobs::{Collector, Count, Hook, Log, Task, Ticker, Worker};
use crate::{secs, TestRuntime};

/// Every kind; the ticker waits for its schedule, so no run happens while the clock stands.
async fn all<R: TestRuntime>(log: &Log) -> R {
    let mut ticker = Ticker::every(log, secs(60));
    ticker.immediately = false;
    R::start(
        Registry::builder()
            .continuous("ticker", ticker)
            .debounce("hooks", Collector::new(log))
            .worker_pool("tasks", Worker::new(log, 2))
            .build()
            .unwrap(),
    )
    .await
}

fn request(kind: JobKind, name: &str, key: &str, op: Operation) -> Request {
    Request {
        instance: InstanceId::new(kind, name, key),
        op,
    }
}

/// A job type or name that is not registered.
pub async fn unknown_job_names_are_errors<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = R::start(
        Registry::builder()
            .debounce("hooks", Collector::new(&log))
            .build()
            .unwrap(),
    )
    .await;
    let client = rt.client();
    let err = client
        .continuous::<Ticker>()
        .start("a", &Count { n: 0 })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            JobError::JobNotFound {
                kind: JobKind::Continuous,
                ..
            }
        ),
        "{err}"
    );
    let err = client
        .send(request(
            JobKind::Debounce,
            "nope",
            "a",
            Operation::DebounceStatus,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        JobError::JobNotFound {
            kind: JobKind::Debounce,
            name: "nope".into()
        }
    );
    let err = client
        .debounce_named::<Collector>("other")
        .add("a", &Hook { n: 1 })
        .await
        .unwrap_err();
    assert!(matches!(err, JobError::JobNotFound { .. }));
}

/// Events and states that do not match the job's types fail with the path, and store nothing.
pub async fn schema_invalid_values_store_nothing<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = all(&log).await;
    let client = rt.client();
    let add = Operation::DebounceAdd {
        event: json!({"n": "seven"}),
        event_id: Some("e1".into()),
    };
    match client
        .send(request(JobKind::Debounce, "hooks", "c", add))
        .await
    {
        Err(JobError::Validation { schema, path, .. }) => {
            assert_eq!((schema.as_str(), path.as_str()), ("event", "n"));
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
    assert_eq!(
        client.debounce::<Collector>().status("c").await.unwrap(),
        None
    );
    // The id was not consumed by the rejected event.
    assert!(
        !client
            .debounce::<Collector>()
            .add_with_id("c", &Hook { n: 7 }, "e1")
            .await
            .unwrap()
            .duplicate
    );

    let start = Operation::ContinuousStart {
        state: json!({"n": -1}),
    };
    let err = client
        .send(request(JobKind::Continuous, "ticker", "a", start))
        .await
        .unwrap_err();
    assert!(
        matches!(err, JobError::Validation { ref path, .. } if path == "n"),
        "{err}"
    );
    assert_eq!(
        client.continuous::<Ticker>().status("a").await.unwrap(),
        None
    );

    let enqueue = Operation::WorkerPoolEnqueue {
        event: json!({"title": "x"}),
        event_id: None,
        priority: 0,
        run_at: None,
        delay_ms: None,
    };
    let err = client
        .send(request(JobKind::WorkerPool, "tasks", "0", enqueue))
        .await
        .unwrap_err();
    assert!(matches!(err, JobError::Validation { .. }), "{err}");
    assert_eq!(
        client
            .worker_pool::<Worker>()
            .status()
            .await
            .unwrap()
            .pending,
        0
    );
    rt.advance(secs(60)).await;
    assert!(log.matching("exec").is_empty());
}

/// User ids may hold `:`; `a:b` and `a` are different instances.
pub async fn ids_with_colons_are_distinct_instances<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = all(&log).await;
    let client = rt.client();
    let ticker = client.continuous::<Ticker>();
    ticker
        .start("tenant:1:user", &Count { n: 10 })
        .await
        .unwrap();
    ticker.start("tenant:1", &Count { n: 20 }).await.unwrap();
    ticker.start("", &Count { n: 30 }).await.unwrap();
    assert_eq!(
        ticker.state("tenant:1:user").await.unwrap(),
        Some(Count { n: 10 })
    );
    assert_eq!(
        ticker.state("tenant:1").await.unwrap(),
        Some(Count { n: 20 })
    );
    assert_eq!(ticker.state("").await.unwrap(), Some(Count { n: 30 }));
    assert_eq!(ticker.state("tenant").await.unwrap(), None);
}

/// Payloads and ids over the limits are refused before anything is stored.
pub async fn oversized_values_are_rejected<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = all(&log).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    let huge = Task::named(&"x".repeat(200 * 1024));
    let err = pool.enqueue(&huge).await.unwrap_err();
    assert!(
        matches!(err, JobError::TooLarge { ref what, .. } if what == "event"),
        "{err}"
    );
    let long_id = "i".repeat(10_000);
    let err = pool
        .enqueue_with(
            &Task::named("t"),
            durable_jobs::EnqueueRequest::new().event_id(long_id),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, JobError::TooLarge { ref what, .. } if what == "event id"),
        "{err}"
    );
    let err = client
        .continuous::<Ticker>()
        .start(&"k".repeat(10_000), &Count { n: 0 })
        .await
        .unwrap_err();
    assert!(matches!(err, JobError::TooLarge { .. }));
    let err = pool
        .enqueue_with(
            &Task::named("t"),
            durable_jobs::EnqueueRequest::new().event_id(""),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, JobError::BadRequest { .. }));
    assert_eq!(pool.status().await.unwrap().pending, 0);
}

/// An operation sent to an instance of another kind, or a pool index out of range.
pub async fn wrong_kind_requests_are_rejected<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = all(&log).await;
    let client = rt.client();
    let add = Operation::DebounceAdd {
        event: json!({"n": 1}),
        event_id: None,
    };
    let err = client
        .send(request(JobKind::Continuous, "ticker", "a", add))
        .await
        .unwrap_err();
    assert!(matches!(err, JobError::BadRequest { .. }), "{err}");
    let enqueue = Operation::WorkerPoolEnqueue {
        event: json!({"name": "x"}),
        event_id: None,
        priority: 0,
        run_at: None,
        delay_ms: None,
    };
    let err = client
        .send(request(JobKind::WorkerPool, "tasks", "7", enqueue.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, JobError::BadRequest { .. }), "{err}");
    let err = client
        .send(request(JobKind::WorkerPool, "tasks", "zero", enqueue))
        .await
        .unwrap_err();
    assert!(matches!(err, JobError::BadRequest { .. }), "{err}");
    assert!(matches!(
        Request::from_json(b"{not json"),
        Err(JobError::BadRequest { .. })
    ));
    assert!(matches!(
        Request::from_json(
            br#"{"instance":{"kind":"continuous","name":"ticker","key":"a"},"op":"explode"}"#
        ),
        Err(JobError::BadRequest { .. })
    ));
}
