//! WorkerPool behaviour.

use durable_jobs::{EnqueueRequest, JobError, Registry, Status, GENERATED_ID_PREFIX};

use crate::jobs::{Gate, Log, Task, Worker};
use crate::{secs, TestRuntime};

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
