//! WorkerPool behaviour.

use durable_jobs::{EnqueueRequest, JobError, Registry, Status, GENERATED_ID_PREFIX};

use crate::jobs::{ten_attempts_within_25_seconds, Gate, Log, Task, Worker};
use crate::{secs, Restart, TestRuntime};

async fn with<R: TestRuntime>(worker: Worker) -> R {
    R::start(
        Registry::builder()
            .worker_pool("tasks", worker)
            .build()
            .unwrap(),
    )
    .await
}

fn executed(log: &Log) -> Vec<String> {
    log.matching("exec ")
        .into_iter()
        .map(|l| l.split(' ').nth(1).unwrap_or_default().to_string())
        .collect()
}

/// Events with the same partition key go to the same instance and run in order.
pub async fn same_partition_same_instance_in_order<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Worker::new(&log, 4)).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    let mut instances = std::collections::HashMap::new();
    for i in 0..10 {
        for tenant in ["acme", "globex", "initech"] {
            let name = format!("{tenant}-{i}");
            let done = pool
                .enqueue_with(
                    &Task::named(&name),
                    EnqueueRequest::new().partition_key(tenant),
                )
                .await
                .unwrap();
            let first = *instances.entry(tenant).or_insert(done.instance_index);
            assert_eq!(first, done.instance_index, "{tenant} moved instance");
        }
    }
    rt.advance(secs(0)).await;
    let all = executed(&log);
    assert_eq!(all.len(), 30);
    for tenant in ["acme", "globex", "initech"] {
        let order: Vec<&String> = all.iter().filter(|n| n.starts_with(tenant)).collect();
        let expected: Vec<String> = (0..10).map(|i| format!("{tenant}-{i}")).collect();
        assert_eq!(order, expected.iter().collect::<Vec<_>>());
        let on: Vec<String> = log
            .matching(&format!("exec {tenant}-"))
            .into_iter()
            .map(|l| l.split(' ').nth(3).unwrap_or_default().to_string())
            .collect();
        assert!(on.windows(2).all(|w| w[0] == w[1]));
    }
}

/// Higher priority first, FIFO within a priority.
pub async fn higher_priority_first<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Worker::new(&log, 1)).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    pool.pause_all().await.unwrap();
    for (name, priority) in [("a", 0), ("b", 5), ("c", 0), ("d", 9), ("e", -3), ("f", 5)] {
        pool.enqueue_with(&Task::named(name), EnqueueRequest::new().priority(priority))
            .await
            .unwrap();
    }
    pool.resume_all().await.unwrap();
    rt.advance(secs(0)).await;
    assert_eq!(executed(&log), ["d", "b", "f", "a", "c", "e"]);
}

/// A failing event is retried at the head of its instance (later events wait), then
/// dead-lettered: kept, listable, and replayable.
pub async fn retries_then_dead_letter_then_replay<R: TestRuntime>() {
    let log = Log::default();
    let worker = Worker::new(&log, 2);
    worker.fail("bad", 3);
    let rt: R = with(worker.clone()).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    let t0 = rt.now();
    let opts = || EnqueueRequest::new().partition_key("p");
    let bad = pool
        .enqueue_with(&Task::named("bad"), opts().event_id("bad-1"))
        .await
        .unwrap();
    pool.enqueue_with(&Task::named("good"), opts())
        .await
        .unwrap();
    rt.advance(secs(0)).await;
    assert_eq!(
        executed(&log),
        ["bad"],
        "the next event waits behind the retry"
    );
    let st = pool.instance_status(bad.instance_index).await.unwrap();
    assert_eq!(st.retrying.as_deref(), Some("bad-1"));
    assert_eq!(st.retry_at, Some(t0 + 10_000));
    rt.advance(secs(20)).await;
    assert_eq!(executed(&log), ["bad", "bad", "bad", "good"]);
    assert_eq!(log.matching("dead"), ["dead bad (bad failed)"]);
    let dead = pool.all_dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, bad.instance_index);
    assert_eq!(dead[0].1.event_id, "bad-1");
    assert_eq!(dead[0].1.attempts, 3);
    assert_eq!(dead[0].1.error, "bad failed");
    let status = pool.status().await.unwrap();
    assert_eq!(
        (status.dead_letters, status.processed, status.pending),
        (1, 1, 0)
    );
    // The same id is still known: enqueueing it again is a duplicate, not a second copy.
    assert!(
        pool.enqueue_with(&Task::named("bad"), opts().event_id("bad-1"))
            .await
            .unwrap()
            .duplicate
    );

    assert_eq!(pool.replay(None).await.unwrap(), 1);
    rt.advance(secs(0)).await;
    assert_eq!(executed(&log).last().unwrap(), "bad");
    let status = pool.status().await.unwrap();
    assert_eq!((status.dead_letters, status.processed), (0, 2));
    assert!(pool.all_dead_letters().await.unwrap().is_empty());
}

/// A retry policy's `max_duration` ends a failing event's retries before its
/// `max_attempts`: the event is dead-lettered, and a replay has a time limit of its own.
pub async fn max_duration_ends_an_events_retries<R: TestRuntime>() {
    let log = Log::default();
    let mut worker = Worker::new(&log, 1);
    worker.retry = ten_attempts_within_25_seconds();
    worker.fail("bad", 100);
    let rt: R = with(worker).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    let t0 = rt.now();
    pool.enqueue_with(&Task::named("bad"), EnqueueRequest::new().event_id("bad-1"))
        .await
        .unwrap();
    rt.advance(secs(60)).await;
    let attempts: Vec<String> = (1..=3)
        .map(|a| format!("exec bad on 0 attempt {a}"))
        .collect();
    assert_eq!(log.matching("exec "), attempts);
    assert_eq!(log.matching("dead"), ["dead bad (bad failed)"]);
    let dead = pool.all_dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1.attempts, 3);
    assert_eq!(dead[0].1.dead_at, t0 + 20_000);
    let status = pool.status().await.unwrap();
    assert_eq!((status.dead_letters, status.pending), (1, 0));

    assert_eq!(pool.replay(None).await.unwrap(), 1);
    rt.advance(secs(60)).await;
    assert_eq!(log.matching("exec ").len(), 6);
    let dead = pool.all_dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1.attempts, 3);
    assert_eq!(log.matching("dead").len(), 2);
}

/// Pausing stops processing (events are kept); resuming restarts it.
pub async fn pause_and_resume<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Worker::new(&log, 2)).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    pool.pause_all().await.unwrap();
    for i in 0..4 {
        pool.enqueue(&Task::named(&format!("t{i}"))).await.unwrap();
    }
    rt.advance(secs(60)).await;
    assert!(executed(&log).is_empty());
    let status = pool.status().await.unwrap();
    assert_eq!((status.paused, status.pending), (2, 4));
    pool.resume(0).await.unwrap();
    rt.advance(secs(0)).await;
    assert_eq!(executed(&log).len(), 2, "only instance 0 ran");
    pool.resume_all().await.unwrap();
    rt.advance(secs(0)).await;
    assert_eq!(executed(&log).len(), 4);
    assert!(pool.pause(9).await.is_err(), "index out of range");
}

/// A pending event can be cancelled; it never runs.
pub async fn cancel_a_pending_event<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Worker::new(&log, 3)).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    pool.pause_all().await.unwrap();
    pool.enqueue_with(&Task::named("x"), EnqueueRequest::new().event_id("x-1"))
        .await
        .unwrap();
    pool.enqueue_with(&Task::named("y"), EnqueueRequest::new().event_id("y-1"))
        .await
        .unwrap();
    assert!(pool.cancel("x-1").await.unwrap());
    assert!(!pool.cancel("x-1").await.unwrap());
    assert!(!pool.cancel("never-enqueued").await.unwrap());
    assert_eq!(pool.status().await.unwrap().pending, 1);
    pool.resume_all().await.unwrap();
    rt.advance(secs(0)).await;
    assert_eq!(executed(&log), ["y"]);
}

/// `on_empty` runs once when an instance drains.
pub async fn on_empty_runs_when_drained<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Worker::new(&log, 2)).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    let opts = || EnqueueRequest::new().partition_key("k");
    // Paused, so that both events are queued before processing starts.
    pool.pause_all().await.unwrap();
    let first = pool.enqueue_with(&Task::named("a"), opts()).await.unwrap();
    pool.enqueue_with(&Task::named("b"), opts()).await.unwrap();
    pool.resume_all().await.unwrap();
    rt.advance(secs(0)).await;
    let index = first.instance_index;
    assert_eq!(
        log.lines(),
        [
            format!("exec a on {index} attempt 1"),
            format!("exec b on {index} attempt 1"),
            format!("empty {index}")
        ]
    );
    rt.advance(secs(60)).await;
    assert_eq!(log.matching("empty").len(), 1);
    pool.enqueue_with(&Task::named("c"), opts()).await.unwrap();
    rt.advance(secs(0)).await;
    assert_eq!(log.matching("empty").len(), 2);
}

/// The pool's status sums its instances.
pub async fn status_aggregates_instances<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Worker::new(&log, 3)).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    pool.pause_all().await.unwrap();
    for i in 0..6 {
        pool.enqueue(&Task::named(&format!("t{i}"))).await.unwrap();
    }
    let status = pool.status().await.unwrap();
    assert_eq!(status.instances.len(), 3);
    assert_eq!(status.pending, 6);
    assert_eq!(
        status
            .instances
            .iter()
            .map(|s| s.pending)
            .collect::<Vec<_>>(),
        [2, 2, 2],
        "round robin"
    );
    assert!(status
        .instances
        .iter()
        .all(|s| matches!(s.status, Status::Paused { .. })));
    pool.resume_all().await.unwrap();
    rt.advance(secs(0)).await;
    let status = pool.status().await.unwrap();
    assert_eq!((status.pending, status.processed, status.paused), (0, 6, 0));
}

/// While an instance runs a long execution, `enqueue` and `status` on it answer at once.
pub async fn enqueue_answers_during_a_long_execute<R: TestRuntime>() {
    let log = Log::default();
    let (gate, control) = Gate::closed();
    let mut worker = Worker::new(&log, 1);
    worker.gate = Some(gate);
    let rt: R = with(worker).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    pool.enqueue(&Task::named("slow")).await.unwrap();
    let test = async {
        control.started.await.unwrap();
        let more = pool.enqueue(&Task::named("next")).await.unwrap();
        assert_eq!(more.position, 2);
        assert_eq!(pool.status().await.unwrap().pending, 2);
        assert!(
            !pool.cancel("auto-0-0").await.unwrap(),
            "a running event is not cancelled"
        );
        control.release.send(()).unwrap();
    };
    futures::join!(rt.advance(secs(0)), test);
    rt.advance(secs(0)).await;
    assert_eq!(executed(&log), ["slow", "next"]);
}

/// A repeated event id is reported and ignored, while pending and after processing.
pub async fn duplicate_event_ids_are_ignored<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Worker::new(&log, 4)).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    let once = || EnqueueRequest::new().event_id("order-42");
    assert!(
        !pool
            .enqueue_with(&Task::named("o"), once())
            .await
            .unwrap()
            .duplicate
    );
    assert!(
        pool.enqueue_with(&Task::named("o"), once())
            .await
            .unwrap()
            .duplicate
    );
    rt.advance(secs(0)).await;
    assert!(
        pool.enqueue_with(&Task::named("o"), once())
            .await
            .unwrap()
            .duplicate
    );
    rt.advance(secs(0)).await;
    assert_eq!(executed(&log), ["o"]);
}

/// A processed event's id counts as new again once its retention period has passed, also
/// on an instance that has been idle since.
pub async fn a_processed_event_id_expires<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Worker::new(&log, 2)).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    let once = || EnqueueRequest::new().event_id("order-7");
    pool.enqueue_with(&Task::named("o"), once()).await.unwrap();
    rt.advance(secs(0)).await;
    rt.advance(secs(2 * 24 * 60 * 60)).await;
    let again = pool.enqueue_with(&Task::named("o"), once()).await.unwrap();
    assert!(!again.duplicate, "its id expired a day ago");
    rt.advance(secs(0)).await;
    assert_eq!(executed(&log), ["o", "o"]);
}

/// A panicking event is a failed attempt: retried, then dead-lettered with the panic as
/// its error, while later events of its partition run. A panicking `on_dead_letter` does
/// not lose the dead letter.
pub async fn a_panicking_event_is_dead_lettered<R: TestRuntime>() {
    let log = Log::default();
    let worker = Worker::new(&log, 2);
    worker.fail("hook-1", 3);
    let rt: R = with(worker).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    let on_p = || EnqueueRequest::new().partition_key("p");
    for name in ["panic-1", "hook-1", "after"] {
        pool.enqueue_with(&Task::named(name), on_p()).await.unwrap();
    }
    rt.advance(secs(60)).await;
    assert_eq!(
        executed(&log),
        ["panic-1", "panic-1", "panic-1", "hook-1", "hook-1", "hook-1", "after"]
    );
    let dead = pool.all_dead_letters().await.unwrap();
    let errors: Vec<&str> = dead.iter().map(|(_, d)| d.error.as_str()).collect();
    assert_eq!(errors, ["panicked: panic-1 panics", "hook-1 failed"]);
    assert_eq!(pool.status().await.unwrap().pending, 0);
}

/// An id named twice in one replay is one dead letter, replayed once; ids of the form the
/// runtime makes up for events without one are refused at enqueue.
pub async fn replays_once_per_dead_letter_and_refuses_reserved_ids<R: TestRuntime>() {
    let log = Log::default();
    let worker = Worker::new(&log, 1);
    worker.fail("x", 3);
    let rt: R = with(worker).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    pool.enqueue_with(&Task::named("x"), EnqueueRequest::new().event_id("x-1"))
        .await
        .unwrap();
    rt.advance(secs(60)).await;
    assert_eq!(pool.status().await.unwrap().dead_letters, 1);
    assert_eq!(pool.replay(Some(&["x-1", "x-1"])).await.unwrap(), 1);
    rt.advance(secs(0)).await;
    assert_eq!(executed(&log), ["x", "x", "x", "x"], "replayed once");
    let status = pool.status().await.unwrap();
    assert_eq!((status.pending, status.dead_letters), (0, 0));

    let reserved = EnqueueRequest::new().event_id(format!("{GENERATED_ID_PREFIX}0-7"));
    let error = pool
        .enqueue_with(&Task::named("y"), reserved)
        .await
        .expect_err("a reserved id");
    assert!(matches!(error, JobError::BadRequest { .. }), "{error:?}");
}

/// `pending` lists an instance's queue in order (priority, then enqueue order), a page at
/// a time, and refuses a cursor that is not one.
pub async fn lists_pending_events_in_queue_order<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Worker::new(&log, 1)).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    pool.pause_all().await.unwrap();
    for (name, priority) in [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -1)] {
        let options = EnqueueRequest::new().priority(priority);
        pool.enqueue_with(&Task::named(name), options)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let (items, next) = pool.pending(0, after, 2).await.unwrap();
        seen.extend(
            items
                .iter()
                .map(|e| e.event["name"].as_str().unwrap_or("").to_string()),
        );
        match next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, ["b", "d", "a", "c", "e"]);
    assert!(matches!(
        pool.pending(0, Some("not-a-cursor".into()), 2).await,
        Err(JobError::BadRequest { .. })
    ));
    pool.resume_all().await.unwrap();
    rt.advance(secs(0)).await;
    let (items, next) = pool.pending(0, None, 10).await.unwrap();
    assert!(items.is_empty() && next.is_none());
}

/// `enqueue_many` routes each event as `enqueue` would, queues each instance's share in
/// one step, and answers one result per event, in order: duplicates (of earlier calls or
/// of the same call) change nothing, and an event that does not fit the job's type is
/// refused alone.
pub async fn enqueue_many_answers_each_event<R: TestRuntime>() {
    use durable_jobs::wire::{Operation, Request, Response};
    use durable_jobs::{EnqueueItem, InstanceId, JobKind, Transport, MAX_EVENTS_PER_REQUEST};

    let log = Log::default();
    let rt: R = with(Worker::new(&log, 2)).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    pool.pause_all().await.unwrap();
    pool.enqueue_with(
        &Task::named("early"),
        EnqueueRequest::new().event_id("e-early"),
    )
    .await
    .unwrap();
    let item = |name: &str, key: &str, id: Option<&str>| {
        let mut options = EnqueueRequest::new().partition_key(key);
        if let Some(id) = id {
            options = options.event_id(id);
        }
        (Task::named(name), options)
    };
    let events = vec![
        item("a1", "a", Some("e-a1")),
        item("b1", "b", None),
        // Routed by its id, as "early" was: the two meet on one instance.
        (Task::named("a2"), EnqueueRequest::new().event_id("e-early")),
        item("a3", "a", Some("e-a1")),
        item("b2", "b", Some("e-b2")),
        item("a4", "a", None),
    ];
    let results = pool.enqueue_many(&events).await.unwrap();
    let duplicates: Vec<bool> = results
        .iter()
        .map(|r| r.as_ref().unwrap().duplicate)
        .collect();
    assert_eq!(duplicates, [false, false, true, true, false, false]);
    assert_eq!(results[0].as_ref().unwrap().event_id, "e-a1");
    assert_eq!(results[3].as_ref().unwrap().event_id, "e-a1");
    let a = results[0].as_ref().unwrap().instance_index;
    assert!(results.iter().zip(&events).all(|(r, (_, o))| {
        o.partition_key.as_deref() != Some("a") || r.as_ref().unwrap().instance_index == a
    }));
    assert_eq!(
        pool.status().await.unwrap().pending,
        5,
        "early and four new"
    );

    // Raw requests: a refused event leaves the others queued; sizes are checked first.
    let instance = InstanceId::new(JobKind::WorkerPool, "tasks", a.to_string());
    let many = |events: Vec<EnqueueItem>| Request {
        instance: instance.clone(),
        op: Operation::WorkerPoolEnqueueMany { events },
    };
    let raw = |event: serde_json::Value| EnqueueItem {
        event,
        event_id: None,
        priority: 0,
        run_at: None,
        delay_ms: None,
    };
    let answer = client
        .transport()
        .send(many(vec![
            raw(serde_json::json!(42)),
            raw(serde_json::json!({"name": "a5"})),
        ]))
        .await
        .unwrap();
    let Response::EnqueuedMany { outcomes, .. } = answer else {
        panic!("{answer:?}")
    };
    assert!(outcomes[0].rejected.is_some() && outcomes[0].event_id.is_none());
    assert!(outcomes[1].rejected.is_none() && outcomes[1].event_id.is_some());
    for events in [
        Vec::new(),
        vec![raw(serde_json::json!({"name": "x"})); MAX_EVENTS_PER_REQUEST + 1],
    ] {
        assert!(matches!(
            client.transport().send(many(events)).await,
            Err(JobError::BadRequest { .. })
        ));
    }

    pool.resume_all().await.unwrap();
    rt.advance(secs(0)).await;
    let ran = executed(&log);
    let order = |names: &[&str]| {
        let at: Vec<usize> = names
            .iter()
            .map(|n| ran.iter().position(|r| r == n).unwrap_or(usize::MAX))
            .collect();
        at.windows(2).all(|w| w[0] < w[1])
    };
    assert_eq!(ran.len(), 6, "{ran:?}");
    assert!(
        order(&["a1", "a4", "a5"]) && order(&["b1", "b2"]),
        "{ran:?}"
    );
}

/// Milliseconds, as the API's times are.
fn ms(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A delayed event runs at its time, not before, while events enqueued after it run at
/// once; `on_empty` waits for it; a run time already past runs at once.
pub async fn delayed_events_run_at_their_time<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Worker::new(&log, 1)).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    let t0 = rt.now();
    pool.enqueue_with(&Task::named("later"), EnqueueRequest::new().delay(secs(10)))
        .await
        .unwrap();
    pool.enqueue_with(&Task::named("at"), EnqueueRequest::new().run_at(t0 + 4_000))
        .await
        .unwrap();
    let now = pool.enqueue(&Task::named("now")).await.unwrap();
    assert_eq!(now.position, 3, "delayed events count as waiting");
    pool.enqueue_with(
        &Task::named("past"),
        EnqueueRequest::new().run_at(t0 - 60_000),
    )
    .await
    .unwrap();
    pool.enqueue_with(&Task::named("zero"), EnqueueRequest::new().delay(secs(0)))
        .await
        .unwrap();
    rt.advance(secs(0)).await;
    assert_eq!(executed(&log), ["now", "past", "zero"]);
    assert!(
        log.matching("empty").is_empty(),
        "delayed events are waiting"
    );
    rt.advance(std::time::Duration::from_millis(3_999)).await;
    assert_eq!(executed(&log), ["now", "past", "zero"]);
    rt.advance(std::time::Duration::from_millis(1)).await;
    assert_eq!(executed(&log), ["now", "past", "zero", "at"]);
    rt.advance(std::time::Duration::from_millis(5_999)).await;
    assert_eq!(executed(&log).len(), 4, "`later` is due at 10 s");
    assert!(log.matching("empty").is_empty());
    rt.advance(std::time::Duration::from_millis(1)).await;
    assert_eq!(executed(&log), ["now", "past", "zero", "at", "later"]);
    assert_eq!(log.matching("empty"), ["empty 0"]);
    let status = pool.status().await.unwrap();
    assert_eq!(
        (status.pending, status.delayed, status.processed),
        (0, 0, 5)
    );
}

/// A delayed event holds up nothing: the events of its partition enqueued after it run at
/// once, and it runs at its time on the same instance.
pub async fn a_delayed_event_does_not_hold_up_its_partition<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Worker::new(&log, 3)).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    let on_p = || EnqueueRequest::new().partition_key("p");
    let first = pool
        .enqueue_with(&Task::named("first"), on_p().delay(secs(60)))
        .await
        .unwrap();
    for name in ["second", "third"] {
        let done = pool.enqueue_with(&Task::named(name), on_p()).await.unwrap();
        assert_eq!(done.instance_index, first.instance_index);
    }
    rt.advance(secs(59)).await;
    assert_eq!(executed(&log), ["second", "third"]);
    rt.advance(secs(1)).await;
    assert_eq!(executed(&log), ["second", "third", "first"]);
    let index = first.instance_index;
    assert_eq!(
        log.matching("exec first"),
        [format!("exec first on {index} attempt 1")]
    );
}

/// Among runnable events the order stays priority, then enqueue order: a delayed event of
/// high priority does not hold up runnable events of lower priority, and once due it takes
/// its place by its priority and enqueue order, ahead of lower priorities and of later
/// events of its own.
pub async fn due_delayed_events_take_their_place_in_the_queue<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Worker::new(&log, 1)).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    let at = |priority: i32| EnqueueRequest::new().priority(priority);
    pool.enqueue_with(&Task::named("urgent-later"), at(9).delay(secs(10)))
        .await
        .unwrap();
    pool.enqueue_with(&Task::named("low-1"), at(0))
        .await
        .unwrap();
    pool.enqueue_with(&Task::named("low-2"), at(0))
        .await
        .unwrap();
    rt.advance(secs(0)).await;
    assert_eq!(executed(&log), ["low-1", "low-2"]);
    rt.advance(secs(10)).await;
    assert_eq!(executed(&log), ["low-1", "low-2", "urgent-later"]);

    // Paused, so that everything is queued when the delayed events fall due.
    pool.pause_all().await.unwrap();
    for (name, priority, delay) in [
        ("d-early", 0, Some(5)),
        ("d-high", 9, Some(5)),
        ("a", 0, None),
        ("d-mid", 5, Some(5)),
        ("b", 0, None),
        ("c", 7, None),
        ("d-late", 9, Some(60)),
    ] {
        let mut options = at(priority);
        if let Some(delay) = delay {
            options = options.delay(secs(delay));
        }
        pool.enqueue_with(&Task::named(name), options)
            .await
            .unwrap();
    }
    rt.advance(secs(5)).await;
    assert_eq!(executed(&log).len(), 3, "paused");
    pool.resume_all().await.unwrap();
    rt.advance(secs(0)).await;
    assert_eq!(
        executed(&log)[3..],
        ["d-high", "c", "d-mid", "d-early", "a", "b"]
    );
    rt.advance(secs(60)).await;
    assert_eq!(executed(&log).last().map(String::as_str), Some("d-late"));
}

/// A delayed event can be cancelled; it never runs, and the alarm moves on to the next
/// delayed event.
pub async fn cancel_a_delayed_event<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Worker::new(&log, 1)).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    let t0 = rt.now();
    let later = |id: &str, delay: u64| EnqueueRequest::new().event_id(id).delay(secs(delay));
    pool.enqueue_with(&Task::named("soon"), later("soon-1", 10))
        .await
        .unwrap();
    pool.enqueue_with(&Task::named("late"), later("late-1", 30))
        .await
        .unwrap();
    let kept = pool
        .enqueue_with(&Task::named("kept"), EnqueueRequest::new().delay(secs(20)))
        .await
        .unwrap();
    assert!(pool.cancel("soon-1").await.unwrap());
    assert!(!pool.cancel("soon-1").await.unwrap());
    let status = pool.instance_status(0).await.unwrap();
    assert_eq!((status.pending, status.delayed), (0, 2));
    assert_eq!(status.next_delayed_at, Some(t0 + 20_000));
    assert!(pool.cancel(&kept.event_id).await.unwrap(), "a made-up id");
    let status = pool.instance_status(0).await.unwrap();
    assert_eq!(
        (status.delayed, status.next_delayed_at),
        (1, Some(t0 + 30_000))
    );
    rt.advance(secs(60)).await;
    assert_eq!(executed(&log), ["late"]);
    assert!(
        pool.enqueue_with(
            &Task::named("soon"),
            EnqueueRequest::new().event_id("soon-1")
        )
        .await
        .unwrap()
        .duplicate,
        "a cancelled id is remembered"
    );
}

/// Status counts delayed events apart from queued ones, with the first run time; `pending`
/// lists the queue, then the delayed events by run time, each with its run time, a page at
/// a time.
pub async fn status_and_pending_show_delayed_events<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Worker::new(&log, 2)).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    let t0 = rt.now();
    pool.pause_all().await.unwrap();
    let on = |index: u32| EnqueueRequest::new().partition_key(format!("k{index}"));
    // Partition keys that route to instance 0 and to instance 1.
    let keys: Vec<u32> = (0..64)
        .filter(|k| pool.route(&on(*k)).unwrap() == 0)
        .take(1)
        .chain(
            (0..64)
                .filter(|k| pool.route(&on(*k)).unwrap() == 1)
                .take(1),
        )
        .collect();
    let (zero, one) = (keys[0], keys[1]);
    for (name, key, delay) in [
        ("q-1", zero, None),
        ("d-30", zero, Some(30)),
        ("d-10", zero, Some(10)),
        ("q-2", zero, None),
        ("d-20", zero, Some(20)),
        ("d-5", one, Some(5)),
    ] {
        let mut options = on(key);
        if let Some(delay) = delay {
            options = options.delay(secs(delay));
        }
        pool.enqueue_with(&Task::named(name), options)
            .await
            .unwrap();
    }
    let status = pool.status().await.unwrap();
    assert_eq!((status.pending, status.delayed), (2, 4));
    let per_instance: Vec<(u64, u64, Option<i64>)> = status
        .instances
        .iter()
        .map(|s| (s.pending, s.delayed, s.next_delayed_at))
        .collect();
    assert_eq!(
        per_instance,
        [(2, 3, Some(t0 + 10_000)), (0, 1, Some(t0 + 5_000))]
    );

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let (items, next) = pool.pending(0, after, 2).await.unwrap();
        seen.extend(items.into_iter().map(|e| {
            let name = e.event["name"].as_str().unwrap_or("").to_string();
            (name, e.delayed, e.run_at.map(|t| t - t0))
        }));
        match next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    let expected: Vec<(String, bool, Option<i64>)> = [
        ("q-1", false, None),
        ("q-2", false, None),
        ("d-10", true, Some(10_000)),
        ("d-20", true, Some(20_000)),
        ("d-30", true, Some(30_000)),
    ]
    .into_iter()
    .map(|(n, d, t)| (n.to_string(), d, t))
    .collect();
    assert_eq!(seen, expected);

    // Due while paused: still delayed until a claim moves them; then listed in the queue
    // with the time they were given.
    rt.advance(secs(15)).await;
    assert_eq!(pool.status().await.unwrap().delayed, 4);
    pool.resume(1).await.unwrap();
    rt.advance(secs(0)).await;
    assert_eq!(executed(&log), ["d-5"]);
    pool.resume(0).await.unwrap();
    rt.advance(secs(0)).await;
    assert_eq!(executed(&log), ["d-5", "q-1", "d-10", "q-2"]);
    let status = pool.status().await.unwrap();
    assert_eq!(
        (status.pending, status.delayed, status.processed),
        (0, 2, 4)
    );
    assert_eq!(status.instances[0].next_delayed_at, Some(t0 + 20_000));
    assert_eq!(status.instances[1].next_delayed_at, None);
    rt.advance(secs(15)).await;
    let status = pool.status().await.unwrap();
    assert_eq!(
        (status.pending, status.delayed, status.processed),
        (0, 0, 6)
    );
}

/// `enqueue_many` takes a run time per event; one too far ahead is refused alone.
pub async fn enqueue_many_with_delays<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Worker::new(&log, 2)).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    let t0 = rt.now();
    // Paused, so that the counts are read before anything runs.
    pool.pause_all().await.unwrap();
    let too_far = durable_jobs::MAX_DELAY + secs(1);
    let events = vec![
        (Task::named("in-20"), EnqueueRequest::new().delay(secs(20))),
        (Task::named("now"), EnqueueRequest::new()),
        (Task::named("too-far"), EnqueueRequest::new().delay(too_far)),
        (
            Task::named("at-10"),
            EnqueueRequest::new().run_at(t0 + 10_000).event_id("at-10"),
        ),
        (
            Task::named("again"),
            EnqueueRequest::new().event_id("at-10").delay(secs(1)),
        ),
    ];
    let results = pool.enqueue_many(&events).await.unwrap();
    assert!(
        matches!(results[2], Err(JobError::BadRequest { .. })),
        "{:?}",
        results[2]
    );
    assert!(results[4].as_ref().unwrap().duplicate);
    assert!([0, 1, 3].iter().all(|i| results[*i].is_ok()), "{results:?}");
    let status = pool.status().await.unwrap();
    assert_eq!((status.pending, status.delayed), (1, 2));
    pool.resume_all().await.unwrap();
    rt.advance(secs(0)).await;
    assert_eq!(executed(&log), ["now"]);
    rt.advance(secs(10)).await;
    assert_eq!(executed(&log), ["now", "at-10"]);
    rt.advance(secs(10)).await;
    assert_eq!(executed(&log), ["now", "at-10", "in-20"]);
}

/// A run time more than `MAX_DELAY` ahead, a delay longer than that (even one that no
/// milliseconds count holds) and a request giving both a time and a delay are refused
/// with a bad request, and store nothing; `MAX_DELAY` itself is accepted.
pub async fn run_times_out_of_bounds_are_refused<R: TestRuntime>() {
    use durable_jobs::wire::{Operation, Request};
    use durable_jobs::{InstanceId, JobKind, Transport, MAX_DELAY};

    let log = Log::default();
    let rt: R = with(Worker::new(&log, 1)).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    let now = rt.now();
    for options in [
        EnqueueRequest::new().delay(MAX_DELAY + std::time::Duration::from_millis(1)),
        EnqueueRequest::new().delay(std::time::Duration::MAX),
        EnqueueRequest::new().run_at(now + ms(MAX_DELAY) + 1),
        EnqueueRequest::new().run_at(i64::MAX),
    ] {
        let error = pool
            .enqueue_with(&Task::named("x"), options.clone())
            .await
            .expect_err("out of bounds");
        assert!(
            matches!(&error, JobError::BadRequest { message } if message.contains("10 years")),
            "{options:?}: {error:?}"
        );
    }
    let both = Request {
        instance: InstanceId::new(JobKind::WorkerPool, "tasks", "0"),
        op: Operation::WorkerPoolEnqueue {
            event: serde_json::json!({"name": "x"}),
            event_id: None,
            priority: 0,
            run_at: Some(now + 1_000),
            delay_ms: Some(1_000),
        },
    };
    assert!(matches!(
        client.transport().send(both).await,
        Err(JobError::BadRequest { .. })
    ));
    let status = pool.status().await.unwrap();
    assert_eq!((status.pending, status.delayed), (0, 0), "nothing stored");

    let furthest = pool
        .enqueue_with(&Task::named("far"), EnqueueRequest::new().delay(MAX_DELAY))
        .await
        .unwrap();
    let status = pool.instance_status(0).await.unwrap();
    assert_eq!(status.next_delayed_at, Some(now + ms(MAX_DELAY)));
    assert!(pool.cancel(&furthest.event_id).await.unwrap());
    pool.enqueue_with(
        &Task::named("long-ago"),
        EnqueueRequest::new().run_at(i64::MIN),
    )
    .await
    .unwrap();
    rt.advance(secs(0)).await;
    assert_eq!(executed(&log), ["long-ago"]);
}

/// Delayed events are stored like queued ones: after a restart they are still counted,
/// listed and cancellable, and run at their time, not before.
pub async fn delayed_events_survive_a_restart<R: Restart>() {
    let log = Log::default();
    let rt: R = with(Worker::new(&log, 1)).await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    let t0 = rt.now();
    for (id, delay) in [("in-30", 30), ("in-40", 40), ("in-50", 50)] {
        let options = EnqueueRequest::new().event_id(id).delay(secs(delay));
        pool.enqueue_with(&Task::named(id), options).await.unwrap();
    }
    pool.enqueue(&Task::named("now")).await.unwrap();
    rt.advance(secs(10)).await;
    assert_eq!(executed(&log), ["now"]);

    let rt = rt.restart().await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    let status = pool.instance_status(0).await.unwrap();
    assert_eq!((status.pending, status.delayed), (0, 3));
    assert_eq!(status.next_delayed_at, Some(t0 + 30_000));
    let (items, _) = pool.pending(0, None, 10).await.unwrap();
    let listed: Vec<(&str, bool)> = items
        .iter()
        .map(|e| (e.event_id.as_str(), e.delayed))
        .collect();
    assert_eq!(listed, [("in-30", true), ("in-40", true), ("in-50", true)]);
    assert!(pool.cancel("in-40").await.unwrap());
    rt.advance(secs(19)).await;
    assert_eq!(executed(&log), ["now"], "not before its time");
    rt.advance(secs(1)).await;
    assert_eq!(executed(&log), ["now", "in-30"]);
    rt.advance(secs(30)).await;
    assert_eq!(executed(&log), ["now", "in-30", "in-50"]);
    assert!(
        pool.enqueue_with(
            &Task::named("in-30"),
            EnqueueRequest::new().event_id("in-30")
        )
        .await
        .unwrap()
        .duplicate
    );
}

/// An instance's share goes in requests of up to `MAX_EVENTS_PER_REQUEST`, in order; once
/// one of them fails, the rest of the share is not sent and fails with it, so the instance
/// never queues later events without the earlier ones, and what it took before stays.
pub async fn enqueue_many_stops_a_share_at_a_failed_request<R: TestRuntime>() {
    use durable_jobs::{JobError, JobsClient, MAX_EVENTS_PER_REQUEST};

    let log = Log::default();
    let rt: R = with(Worker::new(&log, 2)).await;
    let plain = rt.client();
    let pool = plain.worker_pool::<Worker>();
    pool.pause_all().await.unwrap();
    let on_p = || EnqueueRequest::new().partition_key("p");
    let probe = pool
        .enqueue_with(&Task::named("probe"), on_p())
        .await
        .unwrap();
    let key = probe.instance_index.to_string();
    let counting = crate::jobs::Counting::new(plain.transport(), key.as_str(), 1);
    let client = JobsClient::new(plain.registry().clone(), &counting);

    let big = 2 * MAX_EVENTS_PER_REQUEST + 500;
    let events: Vec<(Task, EnqueueRequest)> = (0..big)
        .map(|i| (Task::named(&format!("t{i}")), on_p()))
        .collect();
    let results = client
        .worker_pool::<Worker>()
        .enqueue_many(&events)
        .await
        .unwrap();
    assert_eq!(counting.sizes(&key), [1000, 1000], "the third is not sent");
    assert!(results[..1000].iter().all(Result::is_ok));
    assert!(results[1000..]
        .iter()
        .all(|r| matches!(r, Err(JobError::Storage { .. }))));
    let status = pool.instance_status(probe.instance_index).await.unwrap();
    assert_eq!(
        status.pending, 1001,
        "the probe and the first request's events"
    );
}
