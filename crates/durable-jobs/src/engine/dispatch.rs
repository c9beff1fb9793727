//! The unified router: requests by their operation's kind, alarms by the kind
//! stored in the instance's metadata.

use std::io;

use serde_json::Value;
use tracing::Instrument;

use super::{Engine, KindRecord};
use crate::adapters::{Clock, Storage, WriteBatch};
use crate::errors::JobError;
use crate::ids::InstanceId;
use crate::jobs::worker_pool::GENERATED_ID_PREFIX;
use crate::jobs::{continuous, debounce, task, worker_pool};
use crate::registry::{Entry, Limits};
use crate::services::codec;
use crate::services::metadata::{Metadata, META_KEY};
use crate::wire::{Operation, Request, Response};

/// Passes one `alarm` call makes at most when alarms keep arriving while it runs.
const MAX_RERUNS: usize = 8;

/// Expired event ids one alarm forgets at most when it wakes only for them; if more are
/// left, the alarm is due again at once.
const IDLE_SWEEP_LIMIT: usize = 256;

impl<B: Storage + Clock> Engine<B> {
    /// Handles one request. It never runs `execute` or a hook: what it changes is committed
    /// (or not at all) before it returns.
    pub async fn handle(&self, request: Request) -> Result<Response, JobError> {
        let span = tracing::debug_span!("request", instance = %request.instance, op = op_name(&request.op));
        async move {
            check_request(&request, self.registry.limits(), self.now())?;
            let _in_flight = super::RequestGuard::new(&self.requests_in_flight);
            let entry = self
                .registry
                .entry(request.instance.kind, &request.instance.name)?;
            let result = {
                let Request { instance, op } = request;
                match entry {
                    Entry::Continuous(job) => {
                        continuous::handle(self, job.as_ref(), &instance, op).await
                    }
                    Entry::Debounce(job) => {
                        debounce::handle(self, job.as_ref(), &instance, op).await
                    }
                    Entry::WorkerPool(job) => {
                        worker_pool::handle(self, job.as_ref(), &instance, op).await
                    }
                    Entry::Task(job) => task::handle(self, job.as_ref(), &instance, op).await,
                }
            };
            // Outside the lock, so the next request's step proceeds while this one's writes
            // (and all before them) become durable; nothing is answered before they are.
            let result = match self.make_durable().await {
                Ok(()) => result,
                Err(e) => Err(e),
            };
            if let Err(error) = &result {
                tracing::debug!(%error, "request failed");
            }
            result
        }
        .instrument(span)
        .await
    }

    /// Handles the instance's alarm: runs what is due, then sets the alarm to the next due
    /// work. An `Err` means an engine-level failure (storage); the runtime calls again
    /// later with backoff, and nothing of the failed step was committed.
    ///
    /// Runtimes call this when the alarm's time is reached, treating the alarm as consumed
    /// (the engine sets it again if work remains). A call made while an execution runs
    /// ([`is_executing`](Self::is_executing)) returns at once and makes the running call
    /// look again before it returns; such a call consumes nothing, so a runtime that keeps
    /// its alarms durably must leave that alarm in place (the running call sets it again
    /// when it completes, and until then a crash must still find work scheduled).
    pub async fn alarm(&self) -> Result<(), JobError> {
        let exhausted = {
            let Some(_executing) = self.begin_execution() else {
                self.rerun.set(true);
                return Ok(());
            };
            let mut passes = 0;
            loop {
                self.rerun.set(false);
                if let Err(error) = self.alarm_pass().await {
                    tracing::warn!(%error, "alarm failed; it will be retried");
                    return Err(error);
                }
                // No await between this check and the end of the execution: an alarm
                // arriving later finds the instance free and runs a pass of its own.
                if !self.rerun.get() {
                    break false;
                }
                passes += 1;
                if passes == MAX_RERUNS {
                    break true;
                }
            }
        };
        if exhausted {
            // Still asked for more: hand back to the runtime with the alarm due now.
            self.set_alarm(Some(self.now())).await?;
        }
        // The alarm counts as handled only once what it wrote is durable. This wait is
        // outside the execution, so an alarm set meanwhile is never consumed unseen.
        self.make_durable().await
    }

    /// One look at what is due, run to completion.
    async fn alarm_pass(&self) -> Result<(), JobError> {
        let meta: Option<Metadata> = {
            let _lock = self.lock.lock().await;
            let bytes = self.backend.get(META_KEY).await?;
            codec::decode_opt(META_KEY, bytes.as_ref())?
        };
        let Some(meta) = meta else {
            return self.set_alarm(None).await;
        };
        let span = tracing::debug_span!("alarm", instance = %meta.id);
        async move {
            let instance = &meta.id;
            let entry = match self.registry.entry(instance.kind, &instance.name) {
                Ok(entry) => entry,
                Err(error) => {
                    // The job was removed from the registry: keep the data, stop waking.
                    tracing::error!(%error, "alarm for an unregistered job; data kept");
                    return self.set_alarm(None).await;
                }
            };
            let sweep_due = meta.sweep_at.is_some_and(|t| t <= self.now());
            match entry {
                Entry::Continuous(job) => continuous::alarm(self, job, instance).await,
                Entry::Debounce(job) => {
                    if sweep_due {
                        self.sweep_ids::<debounce::Record>(instance).await?;
                    }
                    debounce::alarm(self, job, instance).await
                }
                Entry::WorkerPool(job) => {
                    if sweep_due {
                        self.sweep_ids::<worker_pool::PoolRecord>(instance).await?;
                    }
                    worker_pool::alarm(self, job, instance).await
                }
                Entry::Task(job) => {
                    if sweep_due {
                        self.sweep_ids::<task::Record>(instance).await?;
                    }
                    task::alarm(self, job, instance).await
                }
            }
        }
        .instrument(span)
        .await
    }

    /// A step that forgets expired event ids: an idle instance wakes for it alone.
    async fn sweep_ids<R: KindRecord>(&self, instance: &InstanceId) -> Result<(), JobError> {
        let mut step = self.alarm_step::<R>(instance, &[]).await?;
        step.sweep_ids(IDLE_SWEEP_LIMIT).await?;
        step.finish().await
    }

    /// A step that only sets the alarm.
    async fn set_alarm(&self, at: Option<i64>) -> Result<(), JobError> {
        let _lock = self.lock.lock().await;
        let mut batch = WriteBatch::new();
        batch.set_alarm(at);
        self.commit(batch, Vec::new()).await
    }
}

fn op_name(op: &Operation) -> &'static str {
    use Operation::*;
    match op {
        ContinuousStart { .. } => "continuousStart",
        ContinuousStop { .. } => "continuousStop",
        ContinuousTrigger => "continuousTrigger",
        ContinuousStatus => "continuousStatus",
        ContinuousGetState => "continuousGetState",
        DebounceAdd { .. } => "debounceAdd",
        DebounceAddMany { .. } => "debounceAddMany",
        DebounceFlush => "debounceFlush",
        DebounceClear => "debounceClear",
        DebounceDiscardFailed => "debounceDiscardFailed",
        DebounceStatus => "debounceStatus",
        DebounceGetState => "debounceGetState",
        DebounceFailedBatches => "debounceFailedBatches",
        WorkerPoolEnqueue { .. } => "workerPoolEnqueue",
        WorkerPoolEnqueueMany { .. } => "workerPoolEnqueueMany",
        WorkerPoolPause => "workerPoolPause",
        WorkerPoolResume => "workerPoolResume",
        WorkerPoolCancel { .. } => "workerPoolCancel",
        WorkerPoolStatus => "workerPoolStatus",
        WorkerPoolDeadLetters { .. } => "workerPoolDeadLetters",
        WorkerPoolPending { .. } => "workerPoolPending",
        WorkerPoolReplay { .. } => "workerPoolReplay",
        WorkerPoolDiscard { .. } => "workerPoolDiscard",
        TaskSend { .. } => "taskSend",
        TaskTrigger => "taskTrigger",
        TaskTerminate => "taskTerminate",
        TaskStatus => "taskStatus",
        TaskGetState => "taskGetState",
    }
}

/// Events one request of several events carries at most: they are written in one step.
pub const MAX_EVENTS_PER_REQUEST: usize = 1000;

/// Rejects requests that do not fit the instance or the limits, before anything is read;
/// `now` is the instance's time, which bounds how far ahead an event may be delayed (an
/// enqueue of several refuses such an event alone, in its step).
pub(crate) fn check_request(request: &Request, limits: &Limits, now: i64) -> Result<(), JobError> {
    if request.op.kind() != request.instance.kind {
        return Err(JobError::bad_request(format!(
            "operation {} is for {} jobs, but the instance `{}` is a {} job",
            op_name(&request.op),
            request.op.kind(),
            request.instance,
            request.instance.kind
        )));
    }
    check_len(
        "instance key",
        request.instance.key.len(),
        limits.max_id_bytes,
    )?;
    match &request.op {
        Operation::ContinuousStart { state } => {
            check_len("state", json_size(state), limits.max_payload_bytes)
        }
        Operation::DebounceAdd { event, event_id } => {
            check_len("event", json_size(event), limits.max_payload_bytes)?;
            check_id(event_id.as_deref(), limits)
        }
        Operation::DebounceAddMany { events } => {
            if events.is_empty() || events.len() > MAX_EVENTS_PER_REQUEST {
                return Err(JobError::bad_request(format!(
                    "an add of several events takes 1 to {MAX_EVENTS_PER_REQUEST}, not {}",
                    events.len()
                )));
            }
            for item in events {
                check_len("event", json_size(&item.event), limits.max_payload_bytes)?;
                check_id(item.event_id.as_deref(), limits)?;
            }
            Ok(())
        }
        Operation::WorkerPoolEnqueue {
            event,
            event_id,
            run_at,
            delay_ms,
            ..
        } => {
            check_len("event", json_size(event), limits.max_payload_bytes)?;
            check_id(event_id.as_deref(), limits)?;
            check_not_generated(event_id.as_deref())?;
            worker_pool::run_time(now, *run_at, *delay_ms).map(drop)
        }
        Operation::WorkerPoolEnqueueMany { events } => {
            if events.is_empty() || events.len() > MAX_EVENTS_PER_REQUEST {
                return Err(JobError::bad_request(format!(
                    "an enqueue of several events takes 1 to {MAX_EVENTS_PER_REQUEST}, not {}",
                    events.len()
                )));
            }
            for item in events {
                check_len("event", json_size(&item.event), limits.max_payload_bytes)?;
                check_id(item.event_id.as_deref(), limits)?;
                check_not_generated(item.event_id.as_deref())?;
            }
            Ok(())
        }
        Operation::WorkerPoolCancel { event_id } => check_id(Some(event_id), limits),
        Operation::TaskSend { event, event_id } => {
            check_len("event", json_size(event), limits.max_payload_bytes)?;
            check_id(event_id.as_deref(), limits)
        }
        Operation::ContinuousStop { reason: Some(r) } => {
            check_len("reason", r.len(), limits.max_id_bytes)
        }
        _ => Ok(()),
    }
}

fn check_id(id: Option<&str>, limits: &Limits) -> Result<(), JobError> {
    match id {
        Some("") => Err(JobError::bad_request("an event id must not be empty")),
        Some(id) => check_len("event id", id.len(), limits.max_id_bytes),
        None => Ok(()),
    }
}

fn check_not_generated(id: Option<&str>) -> Result<(), JobError> {
    match id {
        Some(id) if id.starts_with(GENERATED_ID_PREFIX) => Err(JobError::bad_request(format!(
            "event ids starting with `{GENERATED_ID_PREFIX}` are reserved for the ids made up \
             for events enqueued without one"
        ))),
        _ => Ok(()),
    }
}

fn check_len(what: &str, size: usize, limit: usize) -> Result<(), JobError> {
    if size > limit {
        return Err(JobError::TooLarge {
            what: what.to_string(),
            size,
            limit,
        });
    }
    Ok(())
}

/// The size of a value's JSON encoding, without building it.
pub(crate) fn json_size(value: &Value) -> usize {
    struct Counter(usize);
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}
