//! Continuous behaviour.

use durable_jobs::{Registry, Schedule, Status};

use crate::jobs::{ten_attempts_within_25_seconds, Count, Failures, Gate, Log, Ticker};
use crate::{secs, TestRuntime};

async fn with<R: TestRuntime>(ticker: Ticker) -> R {
    R::start(
        Registry::builder()
            .continuous("ticker", ticker)
            .build()
            .unwrap(),
    )
    .await
}

fn runs(log: &Log) -> Vec<String> {
    log.matching("run ")
}

/// Start runs at once, then every period from the previous scheduled time.
pub async fn runs_immediately_then_every_period<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Ticker::every(&log, secs(10))).await;
    let t0 = rt.now();
    let client = rt.client();
    let ticker = client.continuous::<Ticker>();
    assert!(ticker.start("a", &Count { n: 0 }).await.unwrap());
    rt.advance(secs(0)).await;
    assert_eq!(runs(&log), [format!("run 0 at {t0} attempt 1")]);
    rt.advance(secs(35)).await;
    let expected: Vec<String> = (0..4)
        .map(|k| format!("run {k} at {} attempt 1", t0 + k as i64 * 10_000))
        .collect();
    assert_eq!(runs(&log), expected);
    let status = ticker.status("a").await.unwrap().unwrap();
    assert_eq!(status.run_count, 4);
    assert_eq!(status.next_run_at, Some(t0 + 40_000));
    assert_eq!(ticker.state("a").await.unwrap(), Some(Count { n: 4 }));
}

/// With `start_immediately` off, the first run waits for the schedule.
pub async fn waits_for_the_schedule_when_not_immediate<R: TestRuntime>() {
    let log = Log::default();
    let mut t = Ticker::every(&log, secs(10));
    t.immediately = false;
    let rt: R = with(t).await;
    let t0 = rt.now();
    let client = rt.client();
    client
        .continuous::<Ticker>()
        .start("a", &Count { n: 0 })
        .await
        .unwrap();
    rt.advance(secs(9)).await;
    assert!(runs(&log).is_empty());
    rt.advance(secs(1)).await;
    assert_eq!(runs(&log), [format!("run 0 at {} attempt 1", t0 + 10_000)]);
}

/// A cron schedule runs on its expression's times.
pub async fn follows_a_cron_schedule<R: TestRuntime>() {
    let log = Log::default();
    let mut t = Ticker::every(&log, secs(1));
    t.schedule = Schedule::cron("*/5 * * * *");
    t.immediately = false;
    let rt: R = with(t).await;
    let t0 = rt.now();
    assert_eq!(
        t0 % 300_000,
        0,
        "the suite's clock starts on a five-minute boundary"
    );
    let client = rt.client();
    client
        .continuous::<Ticker>()
        .start("a", &Count { n: 0 })
        .await
        .unwrap();
    rt.advance(secs(16 * 60)).await;
    let expected: Vec<String> = (1..=3)
        .map(|k| format!("run {} at {} attempt 1", k - 1, t0 + k as i64 * 300_000))
        .collect();
    assert_eq!(runs(&log), expected);
}

/// Starting an active instance again changes nothing.
pub async fn start_twice_creates_once<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Ticker::every(&log, secs(60))).await;
    let client = rt.client();
    let ticker = client.continuous::<Ticker>();
    assert!(ticker.start("a", &Count { n: 5 }).await.unwrap());
    assert!(!ticker.start("a", &Count { n: 100 }).await.unwrap());
    rt.advance(secs(0)).await;
    assert_eq!(ticker.state("a").await.unwrap(), Some(Count { n: 6 }));
    assert_eq!(runs(&log).len(), 1);
}

/// `trigger` runs now; the regular schedule stays where it was.
pub async fn trigger_runs_now_and_keeps_the_schedule<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Ticker::every(&log, secs(3600))).await;
    let t0 = rt.now();
    let client = rt.client();
    let ticker = client.continuous::<Ticker>();
    ticker.start("a", &Count { n: 0 }).await.unwrap();
    rt.advance(secs(600)).await;
    ticker.trigger("a").await.unwrap();
    rt.advance(secs(0)).await;
    assert_eq!(
        runs(&log),
        [
            format!("run 0 at {t0} attempt 1"),
            format!("run 1 at {} attempt 1", t0 + 600_000)
        ]
    );
    let status = ticker.status("a").await.unwrap().unwrap();
    assert_eq!(status.next_run_at, Some(t0 + 3_600_000));
    rt.advance(secs(3000)).await;
    assert_eq!(runs(&log).len(), 3);
    assert_eq!(
        runs(&log)[2],
        format!("run 2 at {} attempt 1", t0 + 3_600_000)
    );
    let missing = ticker.trigger("nobody").await;
    assert!(matches!(
        missing,
        Err(durable_jobs::JobError::InstanceNotFound { .. })
    ));
}

/// `stop` cancels future runs, deletes the state, keeps a Stopped status for the retention
/// period, then purges everything.
pub async fn stop_cancels_and_purges_after_retention<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Ticker::every(&log, secs(60))).await;
    let client = rt.client();
    let ticker = client.continuous::<Ticker>();
    ticker.start("a", &Count { n: 0 }).await.unwrap();
    rt.advance(secs(0)).await;
    assert!(ticker.stop_with_reason("a", "user left").await.unwrap());
    assert!(!ticker.stop("a").await.unwrap());
    let status = ticker.status("a").await.unwrap().unwrap();
    assert!(
        matches!(status.status, Status::Stopped { ref reason, .. } if reason.as_deref() == Some("user left"))
    );
    assert_eq!(ticker.state("a").await.unwrap(), None);
    rt.advance(secs(600)).await;
    assert_eq!(runs(&log).len(), 1, "no run after stop");
    assert!(ticker.status("a").await.unwrap().is_some());
    rt.advance(secs(3600)).await;
    assert_eq!(
        ticker.status("a").await.unwrap(),
        None,
        "purged after the retention period"
    );
    assert!(!ticker.stop("a").await.unwrap());
}

/// A failing run is retried with backoff; after the last attempt `on_error` runs, the
/// status shows the error, and the next regular run still happens.
pub async fn retries_then_on_error_then_next_run<R: TestRuntime>() {
    let log = Log::default();
    let mut t = Ticker::every(&log, secs(3600));
    t.failures = Failures::next(3);
    let rt: R = with(t).await;
    let t0 = rt.now();
    let client = rt.client();
    let ticker = client.continuous::<Ticker>();
    ticker.start("a", &Count { n: 0 }).await.unwrap();
    rt.advance(secs(0)).await;
    let status = ticker.status("a").await.unwrap().unwrap();
    assert_eq!(status.retry_at, Some(t0 + 10_000));
    assert_eq!(status.status, Status::Active);
    rt.advance(secs(25)).await;
    assert_eq!(
        runs(&log),
        [
            format!("run 0 at {t0} attempt 1"),
            format!("run 0 at {} attempt 2", t0 + 10_000),
            format!("run 0 at {} attempt 3", t0 + 20_000),
        ]
    );
    assert_eq!(
        log.matching("on_error"),
        ["on_error failure at attempt 3 after 3"]
    );
    let status = ticker.status("a").await.unwrap().unwrap();
    assert!(
        matches!(status.status, Status::Error { ref error, .. } if error == "failure at attempt 3")
    );
    assert_eq!(status.last_error.as_ref().map(|e| e.attempts), Some(3));
    assert_eq!(status.next_run_at, Some(t0 + 3_600_000));
    assert_eq!(status.run_count, 0);
    rt.advance(secs(3600)).await;
    let status = ticker.status("a").await.unwrap().unwrap();
    assert_eq!(status.status, Status::Active);
    assert_eq!(status.run_count, 1);
    assert_eq!(ticker.state("a").await.unwrap(), Some(Count { n: 1 }));
}

/// A retry policy's `max_duration` ends a failing run's retries before its `max_attempts`:
/// the run ends as a final failure (`on_error`, status `Error`, the next regular run still
/// scheduled), and the next run has a time limit of its own.
pub async fn max_duration_ends_a_runs_retries<R: TestRuntime>() {
    let log = Log::default();
    let mut t = Ticker::every(&log, secs(3600));
    t.failures = Failures::next(100);
    t.retry = ten_attempts_within_25_seconds();
    let rt: R = with(t).await;
    let t0 = rt.now();
    let client = rt.client();
    let ticker = client.continuous::<Ticker>();
    ticker.start("a", &Count { n: 0 }).await.unwrap();
    rt.advance(secs(60)).await;
    let attempts = |from: i64| -> Vec<String> {
        (0..3)
            .map(|k| format!("run 0 at {} attempt {}", from + k * 10_000, k + 1))
            .collect()
    };
    assert_eq!(runs(&log), attempts(t0));
    assert_eq!(
        log.matching("on_error"),
        ["on_error failure at attempt 3 after 3"]
    );
    let status = ticker.status("a").await.unwrap().unwrap();
    assert!(matches!(status.status, Status::Error { .. }));
    assert_eq!(status.last_error.as_ref().map(|e| e.attempts), Some(3));
    assert_eq!(status.retry_at, None);
    assert_eq!(status.next_run_at, Some(t0 + 3_600_000));
    // The next regular run is retried within 25 s of its own first attempt.
    rt.advance(secs(3600)).await;
    let mut expected = attempts(t0);
    expected.extend(attempts(t0 + 3_600_000));
    assert_eq!(runs(&log), expected);
    assert_eq!(log.matching("on_error").len(), 2);
}

/// `terminate` from `execute` stops the instance after that run.
pub async fn terminate_from_execute_stops<R: TestRuntime>() {
    let log = Log::default();
    let mut t = Ticker::every(&log, secs(10));
    t.terminate_at = Some(2);
    let rt: R = with(t).await;
    let client = rt.client();
    let ticker = client.continuous::<Ticker>();
    ticker.start("a", &Count { n: 0 }).await.unwrap();
    rt.advance(secs(100)).await;
    assert_eq!(runs(&log).len(), 2);
    let status = ticker.status("a").await.unwrap().unwrap();
    assert!(
        matches!(status.status, Status::Stopped { ref reason, .. } if reason.as_deref() == Some("done"))
    );
}

/// A stop that arrives while a run executes takes effect at once; the run's late state
/// write is discarded.
pub async fn stop_during_a_run_discards_its_state<R: TestRuntime>() {
    let log = Log::default();
    let (gate, control) = Gate::closed();
    let mut t = Ticker::every(&log, secs(10));
    t.gate = Some(gate);
    let rt: R = with(t).await;
    let client = rt.client();
    let ticker = client.continuous::<Ticker>();
    ticker.start("a", &Count { n: 0 }).await.unwrap();
    let test = async {
        control.started.await.unwrap();
        assert!(ticker.stop("a").await.unwrap());
        control.release.send(()).unwrap();
    };
    futures::join!(rt.advance(secs(0)), test);
    rt.advance(secs(60)).await;
    assert_eq!(ticker.state("a").await.unwrap(), None);
    let status = ticker.status("a").await.unwrap().unwrap();
    assert!(status.status.is_stopped());
    assert_eq!(runs(&log).len(), 1);
}

/// A stopped instance can be started again, fresh.
pub async fn restart_after_stop_creates_again<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Ticker::every(&log, secs(10))).await;
    let client = rt.client();
    let ticker = client.continuous::<Ticker>();
    ticker.start("a", &Count { n: 0 }).await.unwrap();
    rt.advance(secs(0)).await;
    ticker.stop("a").await.unwrap();
    assert!(ticker.start("a", &Count { n: 50 }).await.unwrap());
    rt.advance(secs(0)).await;
    assert_eq!(ticker.state("a").await.unwrap(), Some(Count { n: 51 }));
    assert_eq!(
        ticker.status("a").await.unwrap().unwrap().status,
        Status::Active
    );
}

/// A panicking run is a failed attempt like an error: retried, then the status shows the
/// panic, and the next regular run still happens.
pub async fn a_panicking_run_is_a_failed_attempt<R: TestRuntime>() {
    let log = Log::default();
    let mut t = Ticker::every(&log, secs(3600));
    t.panics = Failures::next(3);
    let rt: R = with(t).await;
    let client = rt.client();
    let ticker = client.continuous::<Ticker>();
    ticker.start("a", &Count { n: 0 }).await.unwrap();
    rt.advance(secs(25)).await;
    assert_eq!(runs(&log).len(), 3);
    let status = ticker.status("a").await.unwrap().unwrap();
    assert!(
        matches!(status.status, Status::Error { ref error, .. } if error == "panicked: ticker panics at attempt 3"),
        "{status:?}"
    );
    assert_eq!(status.last_error.as_ref().map(|e| e.attempts), Some(3));
    rt.advance(secs(3600)).await;
    let status = ticker.status("a").await.unwrap().unwrap();
    assert_eq!((status.status, status.run_count), (Status::Active, 1));
}
