//! Prometheus metrics: a tracker that turns lifecycle events into counters and histograms
//! through the `metrics` facade, gauges of instances set when `/metrics` is scraped, and
//! the Prometheus text exposition of it all.
//!
//! Every series is labelled with `kind` (`continuous`, `debounce`, `workerPool`) and `job`
//! (the registered job name). Instance keys and event ids are never labels: there may be
//! any number of them, and each label value is a series Prometheus keeps.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use durable_jobs::inspect::StatusCounts;
use durable_jobs::services::tracker::EventTracker;
use durable_jobs::{EventKind, FlushReason, JobEvent, JobKind};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::api::Shared;
use crate::error::ApiError;

/// The content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Lifecycle events enqueued (`workerPool.enqueued`).
const ENQUEUED_TOTAL: &str = "durable_jobs_enqueued_total";
/// Events added to a Debounce batch (`debounce.eventReceived`) or sent to a Task
/// (`task.eventReceived`).
const ADDED_TOTAL: &str = "durable_jobs_added_total";
/// Successful executions: Continuous runs, Debounce flushes, WorkerPool events, Task
/// executions.
const EXECUTED_TOTAL: &str = "durable_jobs_executed_total";
/// Failed attempts of any kind.
const FAILED_TOTAL: &str = "durable_jobs_failed_total";
/// WorkerPool attempts started after the first one.
const RETRIED_TOTAL: &str = "durable_jobs_retried_total";
/// WorkerPool events moved to the dead-letter list.
const DEAD_LETTERED_TOTAL: &str = "durable_jobs_dead_lettered_total";
/// Debounce batches flushed successfully.
const FLUSHED_TOTAL: &str = "durable_jobs_flushed_total";
/// Events in the Debounce batches flushed successfully.
const FLUSHED_EVENTS_TOTAL: &str = "durable_jobs_flushed_events_total";
/// Debounce flush attempts started, by `reason`.
const FLUSH_ATTEMPTS_TOTAL: &str = "durable_jobs_flush_attempts_total";
/// Pending Debounce events discarded by a clear.
const CLEARED_EVENTS_TOTAL: &str = "durable_jobs_cleared_events_total";
/// Pending WorkerPool events cancelled.
const CANCELLED_TOTAL: &str = "durable_jobs_cancelled_total";
/// Continuous instances started.
const STARTED_TOTAL: &str = "durable_jobs_started_total";
/// Continuous instances stopped and Tasks terminated.
const STOPPED_TOTAL: &str = "durable_jobs_stopped_total";
/// Executions that passed their timeout without returning.
const OVERDUE_TOTAL: &str = "durable_jobs_overdue_total";
/// How long successful executions took, in seconds.
const EXECUTION_DURATION_SECONDS: &str = "durable_jobs_execution_duration_seconds";
/// How long WorkerPool events waited between enqueue and their first attempt, in seconds.
const QUEUE_WAIT_SECONDS: &str = "durable_jobs_queue_wait_seconds";
/// Instances per `status`, set on each scrape.
const INSTANCES: &str = "durable_jobs_instances";
/// WorkerPool instances holding dead letters, set on each scrape.
const INSTANCES_WITH_DEAD_LETTERS: &str = "durable_jobs_instances_with_dead_letters";
/// Debounce instances holding failed batches, set on each scrape.
const INSTANCES_WITH_FAILED_BATCHES: &str = "durable_jobs_instances_with_failed_batches";
/// Events waiting, as last passed to [`set_pending_events`].
const PENDING_EVENTS: &str = "durable_jobs_pending_events";
/// Instances a runtime holds in memory, as last passed to [`set_live_instances`].
const LIVE_INSTANCES: &str = "durable_jobs_live_instances";

/// Bucket bounds of `durable_jobs_execution_duration_seconds`: from a few milliseconds of quick work
/// to the minutes a slow batch may take.
const EXECUTION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Bucket bounds of `durable_jobs_queue_wait_seconds`: a backlog may hold events for hours.
const QUEUE_WAIT_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
];

/// How often [`Metrics::install`]'s thread drains histogram samples into their buckets, so
/// that memory stays bounded between scrapes (a scrape drains them too).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Enqueues remembered at most to measure queue wait. Each costs a few dozen bytes; past
/// this, the oldest are forgotten and their wait goes unmeasured.
pub const MAX_TRACKED_WAITS: usize = 100_000;

/// Why the metrics could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    /// The process already has a global metrics recorder: it is set once per process.
    #[error("a global metrics recorder is already installed in this process")]
    AlreadyInstalled,
    /// The Prometheus recorder could not be built.
    #[error("cannot build the Prometheus recorder: {0}")]
    Build(String),
}

/// The Prometheus exposition of the process's metrics, to serve with
/// [`crate::Admin::with_metrics`].
///
/// The counters and histograms come from [`MetricsTracker`] through the `metrics` facade,
/// which records into the process's global recorder: the handle must be that recorder's
/// for them to show.
#[derive(Debug, Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// Builds a Prometheus recorder (with [`Metrics::prometheus_builder`]'s buckets) and
    /// installs it as the process's global recorder; no HTTP listener is started. A thread
    /// drains histogram samples every few seconds. Fails with
    /// [`MetricsError::AlreadyInstalled`] once any global recorder is set, this one
    /// included: call it once, and clone the result.
    pub fn install() -> Result<Metrics, MetricsError> {
        let recorder = Self::prometheus_builder()?.build_recorder();
        let handle = recorder.handle();
        ::metrics::set_global_recorder(recorder).map_err(|_| MetricsError::AlreadyInstalled)?;
        describe();
        spawn_upkeep(handle.clone());
        Ok(Metrics { handle })
    }

    /// Serves the recorder behind `handle`, which the caller built, installed globally and
    /// keeps up (with [`PrometheusHandle::run_upkeep`]); for an application that records
    /// its own metrics with its own settings.
    pub fn from_handle(handle: PrometheusHandle) -> Metrics {
        describe();
        Metrics { handle }
    }

    /// A Prometheus builder with this crate's histogram buckets, for an application that
    /// builds and installs the recorder itself (see [`Metrics::from_handle`]). Without
    /// buckets, the exporter renders histograms as summaries.
    pub fn prometheus_builder() -> Result<PrometheusBuilder, MetricsError> {
        let build = |e: metrics_exporter_prometheus::BuildError| MetricsError::Build(e.to_string());
        PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(EXECUTION_DURATION_SECONDS.into()),
                EXECUTION_BUCKETS,
            )
            .map_err(build)?
            .set_buckets_for_metric(Matcher::Full(QUEUE_WAIT_SECONDS.into()), QUEUE_WAIT_BUCKETS)
            .map_err(build)
    }

    /// The recorder's handle.
    pub fn handle(&self) -> &PrometheusHandle {
        &self.handle
    }

    /// Everything recorded, in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// Keeps histogram samples from piling up between scrapes. The global recorder lives as
/// long as the process, and so does this thread.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("durable-jobs-metrics".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        });
    if let Err(error) = spawned {
        // Scrapes still drain the samples; only memory between scrapes is at stake.
        tracing::warn!(%error, "no thread to drain histogram samples between scrapes");
    }
}

/// Gives every metric its help text and unit (a recorder keeps the first it is given).
fn describe() {
    describe_counter!(ENQUEUED_TOTAL, "WorkerPool events enqueued");
    describe_counter!(ADDED_TOTAL, "Events added to Debounce batches");
    describe_counter!(
        EXECUTED_TOTAL,
        "Successful executions: Continuous runs, Debounce flushes, WorkerPool events"
    );
    describe_counter!(FAILED_TOTAL, "Failed execution attempts");
    describe_counter!(RETRIED_TOTAL, "WorkerPool attempts started after the first");
    describe_counter!(DEAD_LETTERED_TOTAL, "WorkerPool events dead-lettered");
    describe_counter!(FLUSHED_TOTAL, "Debounce batches flushed successfully");
    describe_counter!(
        FLUSHED_EVENTS_TOTAL,
        "Events in Debounce batches flushed successfully"
    );
    describe_counter!(FLUSH_ATTEMPTS_TOTAL, "Debounce flush attempts started");
    describe_counter!(CLEARED_EVENTS_TOTAL, "Pending Debounce events cleared");
    describe_counter!(CANCELLED_TOTAL, "Pending WorkerPool events cancelled");
    describe_counter!(STARTED_TOTAL, "Continuous instances started");
    describe_counter!(STOPPED_TOTAL, "Continuous instances stopped");
    describe_counter!(OVERDUE_TOTAL, "Executions past their timeout");
    describe_histogram!(
        EXECUTION_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of successful executions"
    );
    describe_histogram!(
        QUEUE_WAIT_SECONDS,
        Unit::Seconds,
        "Wait of WorkerPool events from enqueue to their first attempt"
    );
    describe_gauge!(INSTANCES, "Stored instances per status");
    describe_gauge!(
        INSTANCES_WITH_DEAD_LETTERS,
        "WorkerPool instances with dead letters"
    );
    describe_gauge!(
        INSTANCES_WITH_FAILED_BATCHES,
        "Debounce instances with failed batches"
    );
    describe_gauge!(PENDING_EVENTS, "Events waiting");
    describe_gauge!(LIVE_INSTANCES, "Instances held in memory");
}

/// An [`EventTracker`] that records lifecycle events as metrics, through the `metrics`
/// facade (so into whatever global recorder the process has, such as the one
/// [`Metrics::install`] sets).
///
/// Every metric is labelled `kind` (`continuous`, `debounce`, `workerPool`) and `job` (the
/// registered name), never by instance key or event id: there may be any number of those,
/// and Prometheus keeps a series per label value.
///
/// | event | metric |
/// | --- | --- |
/// | `workerPool.enqueued` | `durable_jobs_enqueued_total` |
/// | `debounce.eventReceived` | `durable_jobs_added_total` |
/// | `continuous.executed`, `debounce.flushed`, `workerPool.completed` | `durable_jobs_executed_total`, `durable_jobs_execution_duration_seconds` |
/// | `continuous.error`, `debounce.error`, `workerPool.failed` | `durable_jobs_failed_total` |
/// | `workerPool.processing` with attempt > 1 | `durable_jobs_retried_total` |
/// | `workerPool.processing` after `workerPool.enqueued` | `durable_jobs_queue_wait_seconds` |
/// | `workerPool.deadLettered` | `durable_jobs_dead_lettered_total` |
/// | `debounce.flushed` | `durable_jobs_flushed_total`, `durable_jobs_flushed_events_total` |
/// | `debounce.flushing` | `durable_jobs_flush_attempts_total` (label `reason`: `flushAfter`, `maxEvents`, `manual`) |
/// | `debounce.cleared` | `durable_jobs_cleared_events_total` |
/// | `workerPool.cancelled` | `durable_jobs_cancelled_total` |
/// | `continuous.started`, `continuous.stopped` | `durable_jobs_started_total`, `durable_jobs_stopped_total` |
/// | `execution.overdue` | `durable_jobs_overdue_total` |
///
/// What the events do not tell, and so is not measured:
/// - Retries of Continuous runs and Debounce flushes: no event marks the start of their
///   attempts with its number (a retried flush is one more `debounce.flushing`, counted
///   in `durable_jobs_flush_attempts_total`). Their failed attempts are in
///   `durable_jobs_failed_total`.
/// - The duration of failed attempts: failure events carry none.
/// - Queue wait beyond WorkerPool: a Debounce flush does not say when its batch began, a
///   Continuous run does not say when it started. A WorkerPool event's wait is measured
///   from its `workerPool.enqueued` to its first `workerPool.processing` when both reach
///   this tracker: not for replayed dead letters (a replay emits no enqueue), nor when
///   another process enqueued it (several PostgreSQL nodes), nor for an event first
///   attempted after more than [`MAX_TRACKED_WAITS`] later enqueues.
/// - Pausing and resuming: the instance gauges' `paused` status shows them.
/// - Errors' texts and stop reasons: free text, unbounded as label values.
#[derive(Debug, Default)]
pub struct MetricsTracker {
    waits: Mutex<Waits>,
}

impl MetricsTracker {
    /// A tracker recording into the global recorder.
    pub fn new() -> Self {
        Self::default()
    }

    fn waits(&self) -> MutexGuard<'_, Waits> {
        self.waits.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl EventTracker for MetricsTracker {
    fn emit(&self, event: JobEvent) {
        let JobEvent {
            timestamp,
            job_name: job,
            instance_id,
            kind: what,
        } = event;
        let kind = match kind_of(&what, &instance_id) {
            Some(kind) => kind.as_str(),
            None => return,
        };
        let labels = [("kind", kind.to_string()), ("job", job)];
        match what {
            EventKind::ContinuousStarted => counter!(STARTED_TOTAL, &labels).increment(1),
            EventKind::ContinuousStopped { .. } | EventKind::TaskTerminated => {
                counter!(STOPPED_TOTAL, &labels).increment(1)
            }
            EventKind::ContinuousScheduled { .. }
            | EventKind::WorkerPoolPaused
            | EventKind::WorkerPoolResumed
            | EventKind::TaskScheduled { .. }
            | EventKind::TaskIdle => {}
            EventKind::ContinuousExecuted { duration_ms, .. }
            | EventKind::WorkerPoolCompleted { duration_ms, .. }
            | EventKind::TaskExecuted { duration_ms, .. } => {
                executed(&labels, duration_ms);
            }
            EventKind::DebounceFlushed {
                event_count,
                duration_ms,
            } => {
                executed(&labels, duration_ms);
                counter!(FLUSHED_TOTAL, &labels).increment(1);
                counter!(FLUSHED_EVENTS_TOTAL, &labels).increment(u64::from(event_count));
            }
            EventKind::ContinuousError { .. }
            | EventKind::DebounceError { .. }
            | EventKind::WorkerPoolFailed { .. }
            | EventKind::TaskFailed { .. } => counter!(FAILED_TOTAL, &labels).increment(1),
            EventKind::DebounceEventReceived { .. } | EventKind::TaskEventReceived { .. } => {
                counter!(ADDED_TOTAL, &labels).increment(1)
            }
            EventKind::DebounceFlushing { reason, .. } => {
                let [kind, job] = labels;
                let with_reason = [kind, job, ("reason", reason_label(reason).to_string())];
                counter!(FLUSH_ATTEMPTS_TOTAL, &with_reason).increment(1);
            }
            EventKind::DebounceCleared { discarded_events } => {
                counter!(CLEARED_EVENTS_TOTAL, &labels).increment(u64::from(discarded_events));
            }
            EventKind::WorkerPoolEnqueued { event_id, .. } => {
                counter!(ENQUEUED_TOTAL, &labels).increment(1);
                self.waits()
                    .enqueued(wait_key(&instance_id, &event_id), timestamp);
            }
            EventKind::WorkerPoolProcessing { event_id, attempt } => {
                if attempt > 1 {
                    counter!(RETRIED_TOTAL, &labels).increment(1);
                }
                let enqueued_at = self.waits().started(wait_key(&instance_id, &event_id));
                if let Some(enqueued_at) = enqueued_at {
                    histogram_seconds(QUEUE_WAIT_SECONDS, &labels, timestamp - enqueued_at);
                }
            }
            EventKind::WorkerPoolDeadLettered { event_id, .. } => {
                counter!(DEAD_LETTERED_TOTAL, &labels).increment(1);
                // Normally gone at its first attempt; an abandoned event may have had none.
                self.waits().started(wait_key(&instance_id, &event_id));
            }
            EventKind::WorkerPoolCancelled { event_id } => {
                counter!(CANCELLED_TOTAL, &labels).increment(1);
                self.waits().started(wait_key(&instance_id, &event_id));
            }
            EventKind::ExecutionOverdue { .. } => counter!(OVERDUE_TOTAL, &labels).increment(1),
        }
    }

    /// Always: the metrics are built from the events.
    fn is_enabled(&self) -> bool {
        true
    }
}

fn executed(labels: &[(&'static str, String); 2], duration_ms: i64) {
    counter!(EXECUTED_TOTAL, labels).increment(1);
    histogram_seconds(EXECUTION_DURATION_SECONDS, labels, duration_ms);
}

/// Records `ms` milliseconds as seconds; a negative span (a clock set back) as zero.
fn histogram_seconds(name: &'static str, labels: &[(&'static str, String); 2], ms: i64) {
    ::metrics::histogram!(name, labels).record(ms.max(0) as f64 / 1000.0);
}

/// The job kind of an event: from its variant, else (`execution.overdue`) from the
/// instance id, `{kind}:{name}:{key}`.
fn kind_of(what: &EventKind, instance_id: &str) -> Option<JobKind> {
    match what {
        EventKind::ContinuousStarted
        | EventKind::ContinuousExecuted { .. }
        | EventKind::ContinuousScheduled { .. }
        | EventKind::ContinuousStopped { .. }
        | EventKind::ContinuousError { .. } => Some(JobKind::Continuous),
        EventKind::DebounceEventReceived { .. }
        | EventKind::DebounceFlushing { .. }
        | EventKind::DebounceFlushed { .. }
        | EventKind::DebounceCleared { .. }
        | EventKind::DebounceError { .. } => Some(JobKind::Debounce),
        EventKind::WorkerPoolEnqueued { .. }
        | EventKind::WorkerPoolProcessing { .. }
        | EventKind::WorkerPoolCompleted { .. }
        | EventKind::WorkerPoolFailed { .. }
        | EventKind::WorkerPoolDeadLettered { .. }
        | EventKind::WorkerPoolCancelled { .. }
        | EventKind::WorkerPoolPaused
        | EventKind::WorkerPoolResumed => Some(JobKind::WorkerPool),
        EventKind::TaskEventReceived { .. }
        | EventKind::TaskScheduled { .. }
        | EventKind::TaskExecuted { .. }
        | EventKind::TaskFailed { .. }
        | EventKind::TaskIdle
        | EventKind::TaskTerminated => Some(JobKind::Task),
        EventKind::ExecutionOverdue { .. } => instance_id.split(':').next()?.parse().ok(),
    }
}

fn reason_label(reason: FlushReason) -> &'static str {
    match reason {
        FlushReason::FlushAfter => "flushAfter",
        FlushReason::MaxEvents => "maxEvents",
        FlushReason::Manual => "manual",
    }
}

/// A waiting event's key: a 64-bit hash of its instance and id, so that remembering it
/// costs the same whatever their lengths. A collision among the waits remembered is
/// unlikely, and would only skew one sample.
fn wait_key(instance_id: &str, event_id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (instance_id, event_id).hash(&mut hasher);
    hasher.finish()
}

/// When each remembered event was enqueued, with the oldest forgotten first.
#[derive(Debug, Default)]
struct Waits {
    /// Key → (order of remembering, enqueue time in ms).
    enqueued_at: HashMap<u64, (u64, i64)>,
    /// Keys in the order remembered, a key enqueued again appearing twice.
    order: VecDeque<(u64, u64)>,
    next: u64,
}

impl Waits {
    fn enqueued(&mut self, key: u64, at: i64) {
        let seq = self.next;
        self.next = self.next.wrapping_add(1);
        self.enqueued_at.insert(key, (seq, at));
        self.order.push_back((seq, key));
        while self.order.len() > MAX_TRACKED_WAITS {
            if let Some((old_seq, old_key)) = self.order.pop_front() {
                // Only the entry that push put there: the key may have been enqueued again.
                if self
                    .enqueued_at
                    .get(&old_key)
                    .is_some_and(|(s, _)| *s == old_seq)
                {
                    self.enqueued_at.remove(&old_key);
                }
            }
        }
    }

    /// Forgets the event, returning when it was enqueued if remembered.
    fn started(&mut self, key: u64) -> Option<i64> {
        let (_, at) = self.enqueued_at.remove(&key)?;
        // `order` keeps the key until it ages out; a stale entry is skipped then.
        Some(at)
    }
}

/// Sets `durable_jobs_pending_events` for one job, from a count the caller has (for instance the sum
/// of the `pending` of its instances' summaries). The scrape does not set it: that sum
/// needs every instance read.
pub fn set_pending_events(kind: JobKind, job: &str, pending: u64) {
    gauge!(PENDING_EVENTS, "kind" => kind.as_str(), "job" => job.to_string()).set(pending as f64);
}

/// Sets `durable_jobs_live_instances` (no labels), from a count the caller has (for instance the
/// embedded runtime's `stats().live_instances`).
pub fn set_live_instances(live: u64) {
    gauge!(LIVE_INSTANCES).set(live as f64);
}

/// Sets `durable_jobs_instances` per status for one job, and where the kind has them
/// `durable_jobs_instances_with_dead_letters` or `durable_jobs_instances_with_failed_batches`. A `/metrics`
/// scrape calls it for every registered job.
pub fn set_instance_counts(kind: JobKind, job: &str, counts: &StatusCounts) {
    let by_status = [
        ("active", counts.active),
        ("paused", counts.paused),
        ("stopped", counts.stopped),
        ("error", counts.error),
    ];
    for (status, count) in by_status {
        gauge!(
            INSTANCES,
            "kind" => kind.as_str(),
            "job" => job.to_string(),
            "status" => status
        )
        .set(count as f64);
    }
    let labels = [
        ("kind", kind.as_str().to_string()),
        ("job", job.to_string()),
    ];
    match kind {
        JobKind::WorkerPool => {
            gauge!(INSTANCES_WITH_DEAD_LETTERS, &labels).set(counts.with_dead_letters as f64);
        }
        JobKind::Debounce => {
            gauge!(INSTANCES_WITH_FAILED_BATCHES, &labels).set(counts.with_failed_batches as f64);
        }
        JobKind::Continuous | JobKind::Task => {}
    }
}

/// `GET /metrics`: refreshes the instance gauges of every registered job, then renders.
pub(crate) fn route(metrics: Metrics) -> MethodRouter<Shared> {
    get(move |State(backend): State<Shared>| {
        let metrics = metrics.clone();
        async move { scrape(&backend, &metrics).await }
    })
}

async fn scrape(backend: &Shared, metrics: &Metrics) -> Result<Response, ApiError> {
    let jobs: Vec<(JobKind, String)> = backend
        .registry()
        .jobs()
        .map(|(kind, name)| (kind, name.to_string()))
        .collect();
    for (kind, name) in jobs {
        let counts = backend.counts(kind, &name).await?;
        set_instance_counts(kind, &name, &counts);
    }
    Ok(([(CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], metrics.render()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_forgotten_once_started_and_when_too_many() {
        let mut waits = Waits::default();
        waits.enqueued(1, 100);
        assert_eq!(waits.started(1), Some(100));
        assert_eq!(waits.started(1), None, "measured once");
        for key in 0..(MAX_TRACKED_WAITS as u64 + 10) {
            waits.enqueued(key, 0);
        }
        assert!(waits.enqueued_at.len() <= MAX_TRACKED_WAITS);
        assert!(waits.order.len() <= MAX_TRACKED_WAITS);
        assert_eq!(waits.started(0), None, "the oldest was forgotten");
        assert_eq!(waits.started(MAX_TRACKED_WAITS as u64 + 9), Some(0));
    }

    #[test]
    fn a_key_enqueued_again_survives_its_first_entry_aging_out() {
        let mut waits = Waits::default();
        waits.enqueued(7, 1);
        waits.enqueued(7, 2);
        for key in 100..(100 + MAX_TRACKED_WAITS as u64 - 1) {
            waits.enqueued(key, 0);
        }
        assert_eq!(waits.started(7), Some(2));
    }

    #[test]
    fn overdue_events_take_their_kind_from_the_instance_id() {
        let overdue = EventKind::ExecutionOverdue { timeout_ms: 5 };
        assert_eq!(
            kind_of(&overdue, "workerPool:mail:0"),
            Some(JobKind::WorkerPool)
        );
        assert_eq!(kind_of(&overdue, "nonsense"), None);
    }
}
