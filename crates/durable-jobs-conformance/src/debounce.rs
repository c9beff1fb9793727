//! Debounce behaviour.

use durable_jobs::{JobError, Registry, Status};

use crate::jobs::{
    ten_attempts_within_25_seconds, Collector, Failures, Gate, Hook, Latest, Log, PANICKING_EVENT,
};
use crate::{secs, TestRuntime};

async fn with<R: TestRuntime>(collector: Collector) -> R {
    R::start(
        Registry::builder()
            .debounce("hooks", collector)
            .build()
            .unwrap(),
    )
    .await
}

fn hook(n: u32) -> Hook {
    Hook { n }
}

/// The batch flushes `flush_after` after its first event, with the reduced state.
pub async fn flushes_after_delay_from_first_event<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Collector::new(&log)).await;
    let client = rt.client();
    let hooks = client.debounce::<Collector>();
    let first = hooks.add("c1", &hook(1)).await.unwrap();
    assert_eq!(first.event_count, 1);
    assert_eq!(first.flush_at, Some(rt.now() + 5_000));
    rt.advance(secs(1)).await;
    let second = hooks.add("c1", &hook(2)).await.unwrap();
    assert_eq!(second.event_count, 2);
    assert_eq!(
        second.flush_at, first.flush_at,
        "the delay counts from the first event"
    );
    assert_eq!(hooks.state("c1").await.unwrap(), Some(vec![1, 2]));
    rt.advance(secs(3)).await;
    assert!(log.lines().is_empty());
    rt.advance(secs(1)).await;
    assert_eq!(log.lines(), ["flush [1, 2] count 2 FlushAfter attempt 1"]);
    assert_eq!(hooks.state("c1").await.unwrap(), None);
    let status = hooks.status("c1").await.unwrap().unwrap();
    assert_eq!(status.event_count, 0);
    assert!(!status.flushing);
}

/// Reaching `max_events` flushes at once.
pub async fn flushes_at_max_events<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Collector::new(&log)).await;
    let client = rt.client();
    let hooks = client.debounce::<Collector>();
    for n in 1..=3 {
        hooks.add("c1", &hook(n)).await.unwrap();
    }
    rt.advance(secs(0)).await;
    assert_eq!(log.lines(), ["flush [1, 2, 3] count 3 MaxEvents attempt 1"]);
    hooks.add("c1", &hook(4)).await.unwrap();
    rt.advance(secs(5)).await;
    assert_eq!(log.lines()[1], "flush [4] count 1 FlushAfter attempt 1");
}

/// `flush` flushes now.
pub async fn manual_flush<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Collector::new(&log)).await;
    let client = rt.client();
    let hooks = client.debounce::<Collector>();
    assert_eq!(hooks.flush("nobody").await.unwrap(), 0);
    hooks.add("c1", &hook(7)).await.unwrap();
    assert_eq!(hooks.flush("c1").await.unwrap(), 1);
    rt.advance(secs(0)).await;
    assert_eq!(log.lines(), ["flush [7] count 1 Manual attempt 1"]);
    rt.advance(secs(10)).await;
    assert_eq!(log.lines().len(), 1, "nothing left to flush");
}

/// `clear` discards the pending batch.
pub async fn clear_discards<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Collector::new(&log)).await;
    let client = rt.client();
    let hooks = client.debounce::<Collector>();
    hooks.add("c1", &hook(1)).await.unwrap();
    hooks.add("c1", &hook(2)).await.unwrap();
    assert_eq!(hooks.clear("c1").await.unwrap(), 2);
    rt.advance(secs(10)).await;
    assert!(log.lines().is_empty());
    assert_eq!(hooks.status("c1").await.unwrap().unwrap().event_count, 0);
    assert_eq!(hooks.state("c1").await.unwrap(), None);
}

/// A repeated event id is reported and ignored, before and after its batch flushed.
pub async fn duplicate_event_ids_are_ignored_also_after_flush<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Collector::new(&log)).await;
    let client = rt.client();
    let hooks = client.debounce::<Collector>();
    assert!(
        !hooks
            .add_with_id("c1", &hook(1), "evt-1")
            .await
            .unwrap()
            .duplicate
    );
    let again = hooks.add_with_id("c1", &hook(1), "evt-1").await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.event_count, 1);
    rt.advance(secs(5)).await;
    assert_eq!(log.lines(), ["flush [1] count 1 FlushAfter attempt 1"]);
    assert!(
        hooks
            .add_with_id("c1", &hook(1), "evt-1")
            .await
            .unwrap()
            .duplicate
    );
    rt.advance(secs(10)).await;
    assert_eq!(log.lines().len(), 1);
    assert!(
        !hooks
            .add_with_id("c1", &hook(2), "evt-2")
            .await
            .unwrap()
            .duplicate
    );
}

/// An event added while a flush is executing is not lost: it forms the next batch.
pub async fn event_during_flush_joins_the_next_batch<R: TestRuntime>() {
    let log = Log::default();
    let (gate, control) = Gate::closed();
    let mut c = Collector::new(&log);
    c.gate = Some(gate);
    let rt: R = with(c).await;
    let client = rt.client();
    let hooks = client.debounce::<Collector>();
    hooks.add("c1", &hook(1)).await.unwrap();
    let test = async {
        control.started.await.unwrap();
        let added = hooks.add("c1", &hook(2)).await.unwrap();
        assert_eq!(added.event_count, 1, "a new batch");
        assert!(hooks.status("c1").await.unwrap().unwrap().flushing);
        control.release.send(()).unwrap();
    };
    futures::join!(rt.advance(secs(5)), test);
    rt.advance(secs(5)).await;
    assert_eq!(
        log.lines(),
        [
            "flush [1] count 1 FlushAfter attempt 1",
            "flush [2] count 1 FlushAfter attempt 1"
        ]
    );
}

/// A flush that fails all its attempts keeps its batch (status Error, listed as a failed
/// batch); newer events flush as usual; `flush` retries the failed batch.
pub async fn failed_flush_keeps_the_batch<R: TestRuntime>() {
    let log = Log::default();
    let mut c = Collector::new(&log);
    c.failures = Failures::next(3);
    let rt: R = with(c).await;
    let client = rt.client();
    let hooks = client.debounce::<Collector>();
    hooks.add("c1", &hook(1)).await.unwrap();
    rt.advance(secs(5)).await;
    assert_eq!(
        hooks.status("c1").await.unwrap().unwrap().retry_at,
        Some(rt.now() + 10_000)
    );
    rt.advance(secs(20)).await;
    assert_eq!(log.matching("flush").len(), 3);
    assert_eq!(log.matching("on_error"), ["on_error collector down [1]"]);
    let status = hooks.status("c1").await.unwrap().unwrap();
    assert!(matches!(status.status, Status::Error { .. }));
    assert_eq!(status.failed_batches, 1);
    let failed = hooks.failed_batches("c1").await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].state, serde_json::json!([1]));
    assert_eq!(failed[0].attempts, 3);

    hooks.add("c1", &hook(2)).await.unwrap();
    rt.advance(secs(5)).await;
    assert_eq!(
        log.lines().last().unwrap(),
        "flush [2] count 1 FlushAfter attempt 1"
    );
    assert_eq!(hooks.status("c1").await.unwrap().unwrap().failed_batches, 1);

    hooks.flush("c1").await.unwrap();
    rt.advance(secs(0)).await;
    assert_eq!(
        log.lines().last().unwrap(),
        "flush [1] count 1 Manual attempt 1"
    );
    let status = hooks.status("c1").await.unwrap().unwrap();
    assert_eq!(status.failed_batches, 0);
    assert_eq!(status.status, Status::Active);
    assert!(hooks.failed_batches("c1").await.unwrap().is_empty());
}

/// A retry policy's `max_duration` ends a failing flush's retries before its
/// `max_attempts`: the batch is kept as a failed batch, and a flush that retries it has a
/// time limit of its own.
pub async fn max_duration_ends_a_flushs_retries<R: TestRuntime>() {
    let log = Log::default();
    let mut c = Collector::new(&log);
    c.failures = Failures::next(100);
    c.retry = ten_attempts_within_25_seconds();
    let rt: R = with(c).await;
    let client = rt.client();
    let hooks = client.debounce::<Collector>();
    hooks.add("c1", &hook(1)).await.unwrap();
    rt.advance(secs(60)).await;
    let attempts: Vec<String> = (1..=3)
        .map(|a| format!("flush [1] count 1 FlushAfter attempt {a}"))
        .collect();
    assert_eq!(log.matching("flush"), attempts);
    assert_eq!(log.matching("on_error"), ["on_error collector down [1]"]);
    let status = hooks.status("c1").await.unwrap().unwrap();
    assert!(matches!(status.status, Status::Error { .. }));
    assert!(!status.flushing);
    assert_eq!(status.retry_at, None);
    let failed = hooks.failed_batches("c1").await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].attempts, 3);

    hooks.flush("c1").await.unwrap();
    rt.advance(secs(60)).await;
    assert_eq!(log.matching("flush [1] count 1 Manual").len(), 3);
    let failed = hooks.failed_batches("c1").await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].attempts, 3);
    assert_eq!(log.matching("on_error").len(), 2);
}

/// Without an `on_event`, the state is the latest event.
pub async fn default_reducer_keeps_the_latest_event<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = R::start(
        Registry::builder()
            .debounce("latest", Latest { log: log.clone() })
            .build()
            .unwrap(),
    )
    .await;
    let client = rt.client();
    let latest = client.debounce::<Latest>();
    for n in [3, 1, 4] {
        latest.add("k", &hook(n)).await.unwrap();
    }
    rt.advance(secs(1)).await;
    assert_eq!(log.lines(), ["latest 4 of 3"]);
}

/// A day, the default retention period of event ids.
const DAY: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// An event id past its retention period counts as new, whether or not it was swept.
pub async fn an_expired_event_id_counts_as_new<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Collector::new(&log)).await;
    let client = rt.client();
    let hooks = client.debounce::<Collector>();
    let first = hooks.add_with_id("c1", &hook(1), "evt-1").await.unwrap();
    assert!(!first.duplicate);
    rt.advance(secs(5)).await;
    rt.advance(DAY - secs(4)).await;
    let again = hooks.add_with_id("c1", &hook(1), "evt-1").await.unwrap();
    assert!(!again.duplicate, "the id expired a second ago");
    assert!(
        hooks
            .add_with_id("c1", &hook(1), "evt-1")
            .await
            .unwrap()
            .duplicate
    );
    rt.advance(secs(5)).await;
    assert_eq!(log.matching("flush").len(), 2);
}

/// `max_events` bounds every flush: events that arrive while a full batch flushes form
/// batches of their own, flushed in order, none larger than `max_events`.
pub async fn no_batch_exceeds_max_events<R: TestRuntime>() {
    let log = Log::default();
    let (gate, control) = Gate::closed();
    let mut c = Collector::new(&log);
    c.gate = Some(gate);
    let rt: R = with(c).await;
    let client = rt.client();
    let hooks = client.debounce::<Collector>();
    for n in 1..=3 {
        hooks.add("c1", &hook(n)).await.unwrap();
    }
    let test = async {
        control.started.await.unwrap();
        for n in 4..=10 {
            hooks.add("c1", &hook(n)).await.unwrap();
        }
        let status = hooks.status("c1").await.unwrap().unwrap();
        assert_eq!((status.full_batches, status.event_count), (2, 1));
        control.release.send(()).unwrap();
    };
    futures::join!(rt.advance(secs(0)), test);
    rt.advance(secs(5)).await;
    assert_eq!(
        log.lines(),
        [
            "flush [1, 2, 3] count 3 MaxEvents attempt 1",
            "flush [4, 5, 6] count 3 MaxEvents attempt 1",
            "flush [7, 8, 9] count 3 MaxEvents attempt 1",
            "flush [10] count 1 FlushAfter attempt 1",
        ]
    );
    let status = hooks.status("c1").await.unwrap().unwrap();
    assert_eq!((status.full_batches, status.event_count), (0, 0));
}

/// A panicking flush is a failed attempt: retried, then kept as a failed batch whose error
/// is the panic.
pub async fn a_panicking_flush_keeps_the_batch<R: TestRuntime>() {
    let log = Log::default();
    let mut c = Collector::new(&log);
    c.panics = Failures::next(3);
    let rt: R = with(c).await;
    let client = rt.client();
    let hooks = client.debounce::<Collector>();
    hooks.add("c1", &hook(1)).await.unwrap();
    rt.advance(secs(30)).await;
    assert_eq!(log.matching("flush").len(), 3);
    let failed = hooks.failed_batches("c1").await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].error, "panicked: collector panics");
    hooks.add("c1", &hook(2)).await.unwrap();
    rt.advance(secs(5)).await;
    assert_eq!(
        log.lines().last().unwrap(),
        "flush [2] count 1 FlushAfter attempt 1"
    );
}

/// A panicking reducer fails only its own add, with an error that says so and that a
/// client should not retry; nothing of it is stored, and the instance works on.
pub async fn a_panicking_reducer_fails_only_its_add<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Collector::new(&log)).await;
    let client = rt.client();
    let hooks = client.debounce::<Collector>();
    let error = hooks
        .add("c1", &hook(PANICKING_EVENT))
        .await
        .expect_err("the reducer panics");
    assert!(
        matches!(error, JobError::Execution { ref message, .. } if message.contains("panicked")),
        "{error:?}"
    );
    assert!(!error.is_transient());
    assert_eq!(hooks.status("c1").await.unwrap(), None);
    hooks.add("c1", &hook(1)).await.unwrap();
    rt.advance(secs(5)).await;
    assert_eq!(log.lines(), ["flush [1] count 1 FlushAfter attempt 1"]);
}

/// `discard_failed` drops the failed batches and keeps the open one, which still flushes.
pub async fn discard_failed_keeps_the_open_batch<R: TestRuntime>() {
    let log = Log::default();
    let mut c = Collector::new(&log);
    c.failures = Failures::next(3);
    let rt: R = with(c).await;
    let client = rt.client();
    let hooks = client.debounce::<Collector>();
    hooks.add("c1", &hook(1)).await.unwrap();
    hooks.add("c1", &hook(2)).await.unwrap();
    rt.advance(secs(30)).await;
    assert_eq!(hooks.status("c1").await.unwrap().unwrap().failed_batches, 1);
    hooks.add("c1", &hook(3)).await.unwrap();

    assert_eq!(
        hooks.discard_failed("c1").await.unwrap(),
        2,
        "the failed batch's events"
    );
    let status = hooks.status("c1").await.unwrap().unwrap();
    assert_eq!(
        (status.failed_batches, status.event_count),
        (0, 1),
        "{status:?}"
    );
    assert!(hooks.failed_batches("c1").await.unwrap().is_empty());
    rt.advance(secs(5)).await;
    assert_eq!(
        log.lines().last().unwrap(),
        "flush [3] count 1 FlushAfter attempt 1"
    );
    assert_eq!(
        hooks.discard_failed("c1").await.unwrap(),
        0,
        "nothing left to drop"
    );
}

/// `add_many` takes each event as an `add` of it alone would at its turn, on the instance
/// of its id: the reducer sees them in order, `max_events` closes batches among them, a
/// repeated id (of an earlier call, or earlier in the same call) is a duplicate, and an
/// event the reducer refuses or that does not fit the event type fails alone. One result
/// per event, in the order given.
pub async fn add_many_answers_each_event<R: TestRuntime>() {
    use durable_jobs::wire::{Operation, Request, Response};
    use durable_jobs::{AddItem, InstanceId, JobKind, Transport, MAX_EVENTS_PER_REQUEST};

    let log = Log::default();
    let rt: R = with(Collector::new(&log)).await;
    let client = rt.client();
    let hooks = client.debounce::<Collector>();
    hooks
        .add_with_id("c1", &hook(1), "evt-early")
        .await
        .unwrap();
    let flush_at = Some(rt.now() + 5_000);
    let h: Vec<Hook> = [2, 10, 3, 4, 5, PANICKING_EVENT, 6, 7, 11]
        .into_iter()
        .map(hook)
        .collect();
    let events = vec![
        ("c1", &h[0], Some("evt-a")),
        ("c2", &h[1], None),
        ("c1", &h[2], None),
        ("c1", &h[3], Some("evt-a")),
        ("c1", &h[4], Some("evt-early")),
        ("c1", &h[5], None),
        ("c1", &h[6], None),
        ("c1", &h[7], None),
        ("c2", &h[8], None),
    ];
    let results = hooks.add_many(events).await.unwrap();
    assert_eq!(results.len(), 9);
    let answered: Vec<Option<(u32, bool)>> = results
        .iter()
        .map(|r| r.as_ref().ok().map(|a| (a.event_count, a.duplicate)))
        .collect();
    assert_eq!(
        answered,
        [
            Some((2, false)),
            Some((1, false)),
            Some((3, false)),
            Some((3, true)),
            Some((3, true)),
            None,
            // The batch of three is closed: 6 opens the next one.
            Some((1, false)),
            Some((2, false)),
            Some((2, false)),
        ],
        "{results:?}"
    );
    match &results[5] {
        Err(JobError::Execution { message, .. }) => assert!(message.contains("panicked")),
        other => panic!("the reducer panics: {other:?}"),
    }
    assert_eq!(results[0].as_ref().unwrap().flush_at, flush_at);
    // Runtimes that run what is due at once may be flushing the full batch already.
    assert_eq!(hooks.state("c1").await.unwrap(), Some(vec![6, 7]));
    assert_eq!(hooks.state("c2").await.unwrap(), Some(vec![10, 11]));

    // Raw requests: an event that does not fit the type is refused alone, with the error
    // an add of it gets; sizes are checked before anything is read.
    let instance = InstanceId::new(JobKind::Debounce, "hooks", "c3");
    let many = |events: Vec<AddItem>| Request {
        instance: instance.clone(),
        op: Operation::DebounceAddMany { events },
    };
    let raw = |event: serde_json::Value| AddItem {
        event,
        event_id: None,
    };
    let answer = client
        .transport()
        .send(many(vec![
            raw(serde_json::json!("oops")),
            raw(serde_json::json!({"n": 12})),
        ]))
        .await
        .unwrap();
    let Response::AddedMany { outcomes } = answer else {
        panic!("{answer:?}")
    };
    assert!(
        matches!(outcomes[0].rejected, Some(JobError::Validation { .. })),
        "{outcomes:?}"
    );
    assert!(outcomes[1].rejected.is_none() && outcomes[1].event_count == 1);
    for events in [
        Vec::new(),
        vec![raw(serde_json::json!({"n": 0})); MAX_EVENTS_PER_REQUEST + 1],
    ] {
        assert!(matches!(
            client.transport().send(many(events)).await,
            Err(JobError::BadRequest { .. })
        ));
    }
    assert_eq!(hooks.state("c3").await.unwrap(), Some(vec![12]));

    // The full batch is due at once, as after single adds; the others after the delay.
    rt.advance(secs(0)).await;
    assert_eq!(log.lines(), ["flush [1, 2, 3] count 3 MaxEvents attempt 1"]);
    rt.advance(secs(5)).await;
    let mut flushed = log.lines();
    flushed.sort();
    assert_eq!(
        flushed,
        [
            "flush [1, 2, 3] count 3 MaxEvents attempt 1",
            "flush [10, 11] count 2 FlushAfter attempt 1",
            "flush [12] count 1 FlushAfter attempt 1",
            "flush [6, 7] count 2 FlushAfter attempt 1",
        ]
    );
    assert_eq!(received(&rt, "c2"), 2, "one event per event added");
    assert!(
        hooks
            .add_with_id("c1", &hook(8), "evt-a")
            .await
            .unwrap()
            .duplicate,
        "ids of an add of several are remembered"
    );
}

/// An instance's share goes in requests of up to `MAX_EVENTS_PER_REQUEST`, in order, one
/// per instance when it fits; once one of them fails, the rest of the share is not sent
/// and fails with it, and what was taken before stays.
pub async fn add_many_sends_each_share_in_order<R: TestRuntime>() {
    use durable_jobs::{JobsClient, MAX_EVENTS_PER_REQUEST};

    let log = Log::default();
    let rt: R = with(Collector::new(&log)).await;
    let plain = rt.client();
    let counting = crate::jobs::Counting::new(plain.transport(), "lossy", 1);
    let client = JobsClient::new(plain.registry().clone(), &counting);
    let hooks = client.debounce::<Collector>();

    let big = 2 * MAX_EVENTS_PER_REQUEST + 500;
    // Numbered from 1,001, clear of the reducer's panicking event.
    let h: Vec<Hook> = (1..=big as u32).map(|n| hook(1000 + n)).collect();
    let mut events: Vec<(&str, &Hook, Option<&str>)> = h.iter().map(|e| ("big", e, None)).collect();
    events.insert(7, ("small", &h[0], None));
    events.push(("small", &h[1], None));
    let results = hooks.add_many(events).await.unwrap();
    assert_eq!(counting.sizes("big"), [1000, 1000, 500]);
    assert_eq!(
        counting.sizes("small"),
        [2],
        "one request for a small share"
    );
    let counts: Vec<u32> = results
        .iter()
        .map(|r| r.as_ref().unwrap().event_count)
        .collect();
    assert_eq!(counts[7], 1, "small's first event");
    assert_eq!(counts[big + 1], 2, "small's second event");
    // Batches of three, in the order given, across the requests.
    let big_counts: Vec<u32> = counts
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 7 && *i != big + 1)
        .map(|(_, c)| *c)
        .collect();
    assert!(
        big_counts
            .iter()
            .enumerate()
            .all(|(i, c)| *c == (i % 3) as u32 + 1),
        "{:?}",
        &big_counts[..12]
    );
    assert_eq!(received(&rt, "big"), big);
    assert_eq!(
        hooks.state("big").await.unwrap(),
        Some(vec![1000 + big as u32])
    );

    let events: Vec<(&str, &Hook, Option<&str>)> = h.iter().map(|e| ("lossy", e, None)).collect();
    let results = hooks.add_many(events).await.unwrap();
    assert_eq!(
        counting.sizes("lossy"),
        [1000, 1000],
        "the third is not sent"
    );
    assert!(results[..1000].iter().all(Result::is_ok));
    assert!(results[1000..]
        .iter()
        .all(|r| matches!(r, Err(JobError::Storage { .. }))));
    assert_eq!(received(&rt, "lossy"), 1000);
    assert_eq!(hooks.state("lossy").await.unwrap(), Some(vec![2000]));
}

/// Events instance `key` of the job `hooks` took.
fn received<R: TestRuntime>(rt: &R, key: &str) -> usize {
    rt.events_of(&format!("debounce:hooks:{key}"))
        .into_iter()
        .filter(|e| *e == "debounce.eventReceived")
        .count()
}
