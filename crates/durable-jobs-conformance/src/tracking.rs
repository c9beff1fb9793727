//! Lifecycle events, in order, for each kind.

use durable_jobs::{EnqueueRequest, Registry};

use crate::jobs::{Collector, Count, Hook, Log, Task, Ticker, Worker};
use crate::{secs, TestRuntime};

/// start → scheduled → executed → scheduled ... → stopped.
pub async fn continuous_lifecycle_events<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = R::start(
        Registry::builder()
            .continuous("ticker", Ticker::every(&log, secs(10)))
            .build()
            .unwrap(),
    )
    .await;
    let client = rt.client();
    let ticker = client.continuous::<Ticker>();
    ticker.start("a", &Count { n: 0 }).await.unwrap();
    rt.advance(secs(10)).await;
    ticker.stop("a").await.unwrap();
    assert_eq!(
        rt.events_of("continuous:ticker:a"),
        [
            "continuous.started",
            "continuous.scheduled",
            "continuous.executed",
            "continuous.scheduled",
            "continuous.executed",
            "continuous.scheduled",
            "continuous.stopped"
        ]
    );
}

/// eventReceived per add → flushing (per attempt) → error or flushed; clear → cleared.
pub async fn debounce_lifecycle_events<R: TestRuntime>() {
    let log = Log::default();
    let mut c = Collector::new(&log);
    c.failures = crate::jobs::Failures::next(1);
    let rt: R = R::start(Registry::builder().debounce("hooks", c).build().unwrap()).await;
    let client = rt.client();
    let hooks = client.debounce::<Collector>();
    hooks.add("c", &Hook { n: 1 }).await.unwrap();
    hooks.add("c", &Hook { n: 2 }).await.unwrap();
    rt.advance(secs(15)).await;
    hooks.add("c", &Hook { n: 3 }).await.unwrap();
    hooks.clear("c").await.unwrap();
    assert_eq!(
        rt.events_of("debounce:hooks:c"),
        [
            "debounce.eventReceived",
            "debounce.eventReceived",
            "debounce.flushing",
            "debounce.error",
            "debounce.flushing",
            "debounce.flushed",
            "debounce.eventReceived",
            "debounce.cleared"
        ]
    );
}

/// enqueued → processing → completed; failed → deadLettered; paused / resumed.
pub async fn worker_pool_lifecycle_events<R: TestRuntime>() {
    let log = Log::default();
    let worker = Worker::new(&log, 1);
    worker.fail("bad", 5);
    let rt: R = R::start(
        Registry::builder()
            .worker_pool("tasks", worker)
            .build()
            .unwrap(),
    )
    .await;
    let client = rt.client();
    let pool = client.worker_pool::<Worker>();
    pool.pause(0).await.unwrap();
    pool.enqueue(&Task::named("ok")).await.unwrap();
    pool.enqueue_with(&Task::named("bad"), EnqueueRequest::new().event_id("b"))
        .await
        .unwrap();
    pool.resume(0).await.unwrap();
    rt.advance(secs(30)).await;
    assert_eq!(
        rt.events_of("workerPool:tasks:0"),
        [
            "workerPool.paused",
            "workerPool.enqueued",
            "workerPool.enqueued",
            "workerPool.resumed",
            "workerPool.processing",
            "workerPool.completed",
            "workerPool.processing",
            "workerPool.failed",
            "workerPool.processing",
            "workerPool.failed",
            "workerPool.processing",
            "workerPool.failed",
            "workerPool.deadLettered"
        ]
    );
}

/// eventReceived and scheduled per event; executed, then idle or terminated.
pub async fn task_lifecycle_events<R: TestRuntime>() {
    let log = Log::default();
    let mut reminder = crate::jobs::Reminder::new(&log);
    reminder.failures = crate::jobs::Failures::next(1);
    let rt: R = R::start(
        Registry::builder()
            .task("remind", reminder)
            .build()
            .unwrap(),
    )
    .await;
    let client = rt.client();
    let tasks = client.task::<crate::jobs::Reminder>();
    use crate::jobs::OrderEvent;
    tasks.send("o", &OrderEvent::Created).await.unwrap();
    rt.advance(secs(24 * 3600 + 10)).await;
    tasks.send("o", &OrderEvent::Snooze).await.unwrap();
    tasks.send("o", &OrderEvent::Paid).await.unwrap();
    assert_eq!(
        rt.events_of("task:remind:o"),
        [
            "task.eventReceived",
            "task.scheduled",
            "task.failed",
            "task.executed",
            "task.scheduled",
            "task.eventReceived",
            "task.idle",
            "task.eventReceived",
            "task.terminated",
        ]
    );
}
