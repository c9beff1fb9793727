//! The unified router (spec §8.2): requests by their operation's kind, alarms by the kind
//! stored in the instance's metadata.

use std::io;

use serde_json::Value;
use tracing::Instrument;

use super::Engine;
use crate::adapters::{Runtime, Scheduler, Storage, WriteBatch};
use crate::errors::JobError;
use crate::jobs::{continuous, debounce, worker_pool};
use crate::registry::{Entry, Limits};
use crate::services::codec;
use crate::services::metadata::{Metadata, META_KEY};
use crate::wire::{Operation, Request, Response};

impl<B: Storage + Scheduler + Runtime> Engine<B> {
    /// Handles one request. It never runs `execute` or a hook: what it changes is committed
    /// (or not at all) before it returns.
    pub async fn handle(&self, request: Request) -> Result<Response, JobError> {
        let span = tracing::debug_span!("request", instance = %request.instance, op = op_name(&request.op));
        async move {
            check_request(&request, self.registry.limits())?;
            let entry = self
                .registry
                .entry(request.instance.kind, &request.instance.name)?;
            let _lock = self.lock.lock().await;
            let Request { instance, op } = request;
            let result = match entry {
                Entry::Continuous(job) => {
                    continuous::handle(self, job.as_ref(), &instance, op).await
                }
                Entry::Debounce(job) => debounce::handle(self, job.as_ref(), &instance, op).await,
                Entry::WorkerPool(job) => {
                    worker_pool::handle(self, job.as_ref(), &instance, op).await
                }
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
    /// returns at once; that execution sets the alarm when it completes.
    pub async fn alarm(&self) -> Result<(), JobError> {
        let Some(_executing) = self.begin_execution() else {
            return Ok(());
        };
        let meta: Option<Metadata> = {
            let _lock = self.lock.lock().await;
            codec::read(&self.backend, META_KEY).await?
        };
        let Some(meta) = meta else {
            let mut batch = WriteBatch::new();
            batch.set_alarm(None);
            return self.commit(batch, Vec::new()).await;
        };
        let span = tracing::debug_span!("alarm", instance = %meta.id);
        async move {
            let entry = match self.registry.entry(meta.id.kind, &meta.id.name) {
                Ok(entry) => entry,
                Err(error) => {
                    // The job was removed from the registry: keep the data, stop waking.
                    tracing::error!(%error, "alarm for an unregistered job; data kept");
                    let mut batch = WriteBatch::new();
                    batch.set_alarm(None);
                    return self.commit(batch, Vec::new()).await;
                }
            };
            let result = match entry {
                Entry::Continuous(job) => continuous::alarm(self, job.as_ref()).await,
                Entry::Debounce(job) => debounce::alarm(self, job.as_ref()).await,
                Entry::WorkerPool(job) => worker_pool::alarm(self, job.as_ref()).await,
            };
            if let Err(error) = &result {
                tracing::warn!(%error, "alarm failed; it will be retried");
            }
            result
        }
        .instrument(span)
        .await
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
        DebounceFlush => "debounceFlush",
        DebounceClear => "debounceClear",
        DebounceStatus => "debounceStatus",
        DebounceGetState => "debounceGetState",
        DebounceFailedBatches => "debounceFailedBatches",
        WorkerPoolEnqueue { .. } => "workerPoolEnqueue",
        WorkerPoolPause => "workerPoolPause",
        WorkerPoolResume => "workerPoolResume",
        WorkerPoolCancel { .. } => "workerPoolCancel",
        WorkerPoolStatus => "workerPoolStatus",
        WorkerPoolDeadLetters { .. } => "workerPoolDeadLetters",
        WorkerPoolReplay { .. } => "workerPoolReplay",
        WorkerPoolDiscard { .. } => "workerPoolDiscard",
    }
}

/// Rejects requests that do not fit the instance or the limits, before anything is read.
pub(crate) fn check_request(request: &Request, limits: &Limits) -> Result<(), JobError> {
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
        Operation::WorkerPoolEnqueue {
            event, event_id, ..
        } => {
            check_len("event", json_size(event), limits.max_payload_bytes)?;
            check_id(event_id.as_deref(), limits)
        }
        Operation::WorkerPoolCancel { event_id } => check_id(Some(event_id), limits),
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
