//! Task behaviour: events decide, the timer runs.

use durable_jobs::{JobError, Registry, Status, TaskPhase};

use crate::jobs::{
    ten_attempts_within_25_seconds, Failures, Gate, Log, Order, OrderEvent, Reminder,
};
use crate::{secs, TestRuntime};

const DAY_MS: i64 = 24 * 3600 * 1000;

async fn with<R: TestRuntime>(reminder: Reminder) -> R {
    R::start(
        Registry::builder()
            .task("remind", reminder)
            .build()
            .unwrap(),
    )
    .await
}

fn reminders(log: &Log) -> Vec<String> {
    log.matching("remind ")
}

/// The first event creates the task and `on_event` sets its timer; a second event finds
/// it.
pub async fn send_creates_and_on_event_schedules<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Reminder::new(&log)).await;
    let t0 = rt.now();
    let client = rt.client();
    let tasks = client.task::<Reminder>();
    assert_eq!(tasks.status("o1").await.unwrap(), None);
    let sent = tasks.send("o1", &OrderEvent::Created).await.unwrap();
    assert!(sent.created && !sent.duplicate);
    assert_eq!(sent.next_run_at, Some(t0 + DAY_MS));
    let again = tasks.send("o1", &OrderEvent::Created).await.unwrap();
    assert!(!again.created);
    let status = tasks.status("o1").await.unwrap().unwrap();
    assert_eq!(status.phase, TaskPhase::Scheduled);
    assert_eq!((status.event_count, status.execution_count), (2, 0));
    assert_eq!(status.next_run_at, Some(t0 + DAY_MS));
    assert_eq!(status.status, Status::Active);
    assert_eq!(
        tasks.state("o1").await.unwrap(),
        Some(Order { reminders: 0 })
    );
}

/// The timer runs `execute`, which sets the next one; after three reminders the task ends
/// itself, and a payment before the first ends it without any.
pub async fn the_timer_runs_until_the_task_ends_itself<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Reminder::new(&log)).await;
    let t0 = rt.now();
    let client = rt.client();
    let tasks = client.task::<Reminder>();
    tasks.send("late", &OrderEvent::Created).await.unwrap();
    tasks.send("paid", &OrderEvent::Created).await.unwrap();
    rt.advance(secs(23 * 3600)).await;
    assert!(reminders(&log).is_empty());
    tasks.send("paid", &OrderEvent::Paid).await.unwrap();
    assert_eq!(tasks.status("paid").await.unwrap(), None);
    rt.advance(secs(3600)).await;
    assert_eq!(
        reminders(&log),
        [format!("remind late #1 at {} attempt 1", t0 + DAY_MS)]
    );
    let status = tasks.status("late").await.unwrap().unwrap();
    assert_eq!(status.execution_count, 1);
    assert_eq!(status.next_run_at, Some(t0 + 2 * DAY_MS));
    assert_eq!(
        tasks.state("late").await.unwrap(),
        Some(Order { reminders: 1 })
    );
    rt.advance(secs(3 * 24 * 3600)).await;
    assert_eq!(reminders(&log).len(), 3);
    assert_eq!(tasks.status("late").await.unwrap(), None);
    assert_eq!(tasks.state("late").await.unwrap(), None);
}

/// `trigger` runs the task now and leaves what `execute` decides; a task that does not
/// exist cannot be triggered.
pub async fn trigger_runs_now<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Reminder::new(&log)).await;
    let t0 = rt.now();
    let client = rt.client();
    let tasks = client.task::<Reminder>();
    tasks.send("o", &OrderEvent::Created).await.unwrap();
    rt.advance(secs(60)).await;
    tasks.trigger("o").await.unwrap();
    rt.advance(secs(0)).await;
    assert_eq!(
        reminders(&log),
        [format!("remind o #1 at {} attempt 1", t0 + 60_000)]
    );
    let status = tasks.status("o").await.unwrap().unwrap();
    assert_eq!(status.next_run_at, Some(t0 + 60_000 + DAY_MS));
    assert!(matches!(
        tasks.trigger("nobody").await,
        Err(JobError::InstanceNotFound { .. })
    ));
}

/// `terminate` cancels the timer and deletes the task; its next event creates it afresh.
pub async fn terminate_deletes_and_a_new_event_creates_again<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Reminder::new(&log)).await;
    let client = rt.client();
    let tasks = client.task::<Reminder>();
    tasks.send("o", &OrderEvent::Created).await.unwrap();
    assert!(tasks.terminate("o").await.unwrap());
    assert!(!tasks.terminate("o").await.unwrap());
    assert_eq!(tasks.status("o").await.unwrap(), None);
    assert_eq!(tasks.state("o").await.unwrap(), None);
    rt.advance(secs(2 * 24 * 3600)).await;
    assert!(reminders(&log).is_empty());
    let sent = tasks.send("o", &OrderEvent::Created).await.unwrap();
    assert!(sent.created);
    let status = tasks.status("o").await.unwrap().unwrap();
    assert_eq!((status.event_count, status.execution_count), (1, 0));
}

/// An event id counts once within the retention period.
pub async fn a_repeated_event_id_counts_once<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Reminder::new(&log)).await;
    let client = rt.client();
    let tasks = client.task::<Reminder>();
    let first = tasks
        .send_with_id("o", &OrderEvent::Created, "e1")
        .await
        .unwrap();
    assert!(first.created && !first.duplicate);
    let again = tasks
        .send_with_id("o", &OrderEvent::Snooze, "e1")
        .await
        .unwrap();
    assert!(again.duplicate && !again.created);
    assert_eq!(again.next_run_at, first.next_run_at);
    let status = tasks.status("o").await.unwrap().unwrap();
    assert_eq!(status.event_count, 1);
    assert_eq!(status.phase, TaskPhase::Scheduled);
    assert_eq!(log.matching("event ").len(), 1);
}

/// A failing execution is retried by the policy; after the last attempt `on_error` may
/// set the timer again, and the status shows the error until a run succeeds.
pub async fn retries_then_on_error_sets_the_timer<R: TestRuntime>() {
    let log = Log::default();
    let mut reminder = Reminder::new(&log);
    reminder.failures = Failures::next(2);
    reminder.retry_later = Some(secs(3600));
    let rt: R = with(reminder).await;
    let t0 = rt.now();
    let client = rt.client();
    let tasks = client.task::<Reminder>();
    tasks.send("o", &OrderEvent::Created).await.unwrap();
    rt.advance(secs(24 * 3600 + 10)).await;
    assert_eq!(
        reminders(&log),
        [
            format!("remind o #1 at {} attempt 1", t0 + DAY_MS),
            format!("remind o #1 at {} attempt 2", t0 + DAY_MS + 10_000),
        ]
    );
    assert_eq!(log.matching("on_error "), ["on_error o mail server down"]);
    let status = tasks.status("o").await.unwrap().unwrap();
    assert!(matches!(status.status, Status::Error { .. }));
    assert_eq!(status.last_error.as_ref().map(|e| e.attempts), Some(2));
    assert_eq!(status.next_run_at, Some(t0 + DAY_MS + 10_000 + 3_600_000));
    rt.advance(secs(3600)).await;
    let status = tasks.status("o").await.unwrap().unwrap();
    assert_eq!(status.status, Status::Active);
    assert_eq!(status.execution_count, 1);
}

/// With no timer left, `on_idle` may set one; a task still idle is purged after its
/// retention period unless an event comes first.
pub async fn an_idle_task_wakes_by_on_idle_or_is_purged<R: TestRuntime>() {
    let log = Log::default();
    let mut reminder = Reminder::new(&log);
    reminder.wake_when_idle = true;
    let rt: R = with(reminder).await;
    let t0 = rt.now();
    let client = rt.client();
    let tasks = client.task::<Reminder>();
    let sent = tasks.send("o", &OrderEvent::Snooze).await.unwrap();
    assert!(sent.created);
    assert_eq!(
        sent.next_run_at,
        Some(t0 + 3_600_000),
        "on_idle set a timer"
    );
    rt.advance(secs(3600)).await;
    assert_eq!(reminders(&log).len(), 1);
    // That run set the next reminder; snoozing leaves it idle for good (one wake only).
    tasks.send("o", &OrderEvent::Snooze).await.unwrap();
    let status = tasks.status("o").await.unwrap().unwrap();
    assert_eq!(status.phase, TaskPhase::Idle);
    assert_eq!(status.next_run_at, None);
    let purge_at = status.purge_at.expect("an idle task is due for its purge");
    assert_eq!(purge_at, rt.now() + 3_600_000);
    assert_eq!(log.matching("idle o").len(), 2);
    rt.advance(secs(3600)).await;
    assert_eq!(tasks.status("o").await.unwrap(), None);
}

/// The timer that started an execution is spent: one that sets no other leaves the task
/// idle, with its state, until an event comes.
pub async fn an_execution_without_a_new_timer_leaves_the_task_idle<R: TestRuntime>() {
    let log = Log::default();
    let mut reminder = Reminder::new(&log);
    reminder.once = true;
    let rt: R = with(reminder).await;
    let client = rt.client();
    let tasks = client.task::<Reminder>();
    tasks.send("o", &OrderEvent::Created).await.unwrap();
    rt.advance(secs(3 * 24 * 3600)).await;
    assert_eq!(reminders(&log).len(), 1);
    assert_eq!(log.matching("idle o").len(), 1);
    let status = tasks.status("o").await;
    // Idle for three days, past its retention of an hour: purged.
    assert_eq!(status.unwrap(), None);
    tasks.send("p", &OrderEvent::Created).await.unwrap();
    rt.advance(secs(24 * 3600)).await;
    let status = tasks.status("p").await.unwrap().unwrap();
    assert_eq!(status.phase, TaskPhase::Idle);
    assert_eq!((status.execution_count, status.next_run_at), (1, None));
    assert_eq!(
        tasks.state("p").await.unwrap(),
        Some(Order { reminders: 1 })
    );
}

/// A refused or panicking `on_event` fails its send and changes nothing.
pub async fn a_refused_or_panicking_event_changes_nothing<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Reminder::new(&log)).await;
    let client = rt.client();
    let tasks = client.task::<Reminder>();
    assert!(matches!(
        tasks.send("new", &OrderEvent::Invalid).await,
        Err(JobError::Validation { .. })
    ));
    assert_eq!(tasks.status("new").await.unwrap(), None);
    tasks.send("o", &OrderEvent::Created).await.unwrap();
    let before = tasks.status("o").await.unwrap();
    assert!(matches!(
        tasks.send("o", &OrderEvent::Explode).await,
        Err(JobError::Execution { .. })
    ));
    assert_eq!(tasks.status("o").await.unwrap(), before);
}

/// A terminate that arrives while `execute` runs takes effect at once; the execution's
/// decisions are discarded when it returns.
pub async fn terminate_during_an_execution_discards_its_result<R: TestRuntime>() {
    let log = Log::default();
    let (gate, control) = Gate::closed();
    let mut reminder = Reminder::new(&log);
    reminder.gate = Some(gate);
    let rt: R = with(reminder).await;
    let client = rt.client();
    let tasks = client.task::<Reminder>();
    tasks.send("o", &OrderEvent::Created).await.unwrap();
    tasks.trigger("o").await.unwrap();
    let test = async {
        control.started.await.unwrap();
        assert!(tasks.terminate("o").await.unwrap());
        control.release.send(()).unwrap();
    };
    futures::join!(rt.advance(secs(0)), test);
    rt.advance(secs(3 * 24 * 3600)).await;
    assert_eq!(reminders(&log).len(), 1);
    assert_eq!(tasks.status("o").await.unwrap(), None);
    assert_eq!(tasks.state("o").await.unwrap(), None);
}

/// A retry policy's `max_duration` ends an execution's retries: three attempts, then
/// `on_error`; the next execution has a time limit of its own.
pub async fn max_duration_ends_an_executions_retries<R: TestRuntime>() {
    let log = Log::default();
    let mut reminder = Reminder::new(&log);
    reminder.failures = Failures::next(100);
    reminder.retry = ten_attempts_within_25_seconds();
    reminder.retry_later = Some(secs(3600));
    let rt: R = with(reminder.clone()).await;
    let t0 = rt.now();
    let client = rt.client();
    let tasks = client.task::<Reminder>();
    tasks.send("o", &OrderEvent::Created).await.unwrap();
    rt.advance(secs(24 * 3600 + 60)).await;
    let first = t0 + DAY_MS;
    let expected: Vec<String> = (0..3)
        .map(|k| format!("remind o #1 at {} attempt {}", first + k * 10_000, k + 1))
        .collect();
    assert_eq!(reminders(&log), expected);
    assert_eq!(log.matching("on_error ").len(), 1);
    let status = tasks.status("o").await.unwrap().unwrap();
    assert_eq!(status.last_error.map(|e| e.attempts), Some(3));
    assert_eq!(status.next_run_at, Some(first + 20_000 + 3_600_000));
    rt.advance(secs(3600)).await;
    assert_eq!(
        reminders(&log).len(),
        6,
        "the next execution gets three attempts again"
    );
}

/// An event that cancels the timer while a failing attempt runs leaves the retry in the
/// timer's place: the task stays scheduled, not due for its purge, and the retry runs.
pub async fn a_retry_keeps_a_task_whose_timer_was_cancelled_meanwhile<R: TestRuntime>() {
    let log = Log::default();
    let (gate, control) = Gate::closed();
    let mut reminder = Reminder::new(&log);
    reminder.gate = Some(gate);
    reminder.failures = Failures::next(1);
    let rt: R = with(reminder).await;
    let client = rt.client();
    let tasks = client.task::<Reminder>();
    tasks.send("o", &OrderEvent::Created).await.unwrap();
    tasks.trigger("o").await.unwrap();
    let test = async {
        control.started.await.unwrap();
        tasks.send("o", &OrderEvent::Snooze).await.unwrap();
        control.release.send(()).unwrap();
    };
    futures::join!(rt.advance(secs(0)), test);
    let status = tasks.status("o").await.unwrap().unwrap();
    assert_eq!(status.phase, TaskPhase::Scheduled);
    assert!(status.retry_at.is_some());
    assert_eq!(status.purge_at, None);
    rt.advance(secs(10)).await;
    assert_eq!(reminders(&log).len(), 2);
    assert_eq!(tasks.status("o").await.unwrap().unwrap().execution_count, 1);
}

/// A terminated task forgets its event ids, also when an event creates it again before
/// its data is purged: an id from its earlier life is new to it.
pub async fn a_task_created_again_forgets_the_ids_of_its_earlier_life<R: TestRuntime>() {
    let log = Log::default();
    let rt: R = with(Reminder::new(&log)).await;
    let client = rt.client();
    let tasks = client.task::<Reminder>();
    tasks
        .send_with_id("o", &OrderEvent::Created, "e1")
        .await
        .unwrap();
    assert!(tasks.terminate("o").await.unwrap());
    assert!(tasks.send("o", &OrderEvent::Created).await.unwrap().created);
    let again = tasks
        .send_with_id("o", &OrderEvent::Snooze, "e1")
        .await
        .unwrap();
    assert!(!again.duplicate && !again.created);
    let status = tasks.status("o").await.unwrap().unwrap();
    assert_eq!(status.event_count, 2);
    assert_eq!(status.phase, TaskPhase::Idle);
    let repeated = tasks
        .send_with_id("o", &OrderEvent::Created, "e1")
        .await
        .unwrap();
    assert!(repeated.duplicate);
}
