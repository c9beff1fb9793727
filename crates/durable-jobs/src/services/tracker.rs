//! Event tracking: fire-and-forget delivery of lifecycle events.
//!
//! Tracking never fails or blocks a request: `emit` only appends to a buffer, and delivery
//! happens in `flush`, which a runtime runs after the response (a Durable Object through
//! `wait_until`, the embedded runtime on a background task).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use futures::future::LocalBoxFuture;
use serde::Serialize;

use crate::events::JobEvent;

/// Receives the lifecycle events of every instance.
pub trait EventTracker: Send + Sync {
    /// Records an event. Must not block or fail.
    fn emit(&self, event: JobEvent);

    /// Delivers what is buffered. Failures are swallowed (and counted by the tracker).
    fn flush(&self) -> LocalBoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Events buffered and not yet delivered.
    fn pending(&self) -> usize {
        0
    }

    /// Whether events are wanted at all (when not, the engine does not build them).
    fn is_enabled(&self) -> bool {
        true
    }
}

/// Discards every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopTracker;

impl EventTracker for NoopTracker {
    fn emit(&self, _event: JobEvent) {}

    fn is_enabled(&self) -> bool {
        false
    }
}

/// Hands every event to several trackers (metrics, recent events, an HTTP collector...).
/// Flushing flushes each in turn.
#[derive(Default)]
pub struct FanoutTracker {
    trackers: Vec<std::sync::Arc<dyn EventTracker>>,
}

impl std::fmt::Debug for FanoutTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutTracker")
            .field("trackers", &self.trackers.len())
            .finish()
    }
}

impl FanoutTracker {
    /// No trackers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `tracker`; events reach the trackers in the order they were added.
    pub fn with(mut self, tracker: std::sync::Arc<dyn EventTracker>) -> Self {
        self.trackers.push(tracker);
        self
    }
}

impl EventTracker for FanoutTracker {
    fn emit(&self, event: JobEvent) {
        let wanting: Vec<_> = self.trackers.iter().filter(|t| t.is_enabled()).collect();
        if let Some((last, others)) = wanting.split_last() {
            for tracker in others {
                tracker.emit(event.clone());
            }
            last.emit(event);
        }
    }

    fn flush(&self) -> LocalBoxFuture<'_, ()> {
        Box::pin(async move {
            for tracker in &self.trackers {
                tracker.flush().await;
            }
        })
    }

    fn pending(&self) -> usize {
        self.trackers.iter().map(|t| t.pending()).sum()
    }

    fn is_enabled(&self) -> bool {
        self.trackers.iter().any(|t| t.is_enabled())
    }
}

/// Keeps every event in memory, for tests and debugging.
#[derive(Debug, Default)]
pub struct MemoryTracker {
    events: Mutex<Vec<JobEvent>>,
}

impl MemoryTracker {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<JobEvent>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every event so far, in order.
    pub fn events(&self) -> Vec<JobEvent> {
        self.lock().clone()
    }

    /// The `type` names of the events of one instance (`{kind}:{name}:{key}`), in order.
    pub fn types_for(&self, instance_id: &str) -> Vec<&'static str> {
        self.lock()
            .iter()
            .filter(|e| e.instance_id == instance_id)
            .map(|e| e.kind.type_name())
            .collect()
    }

    /// Forgets every event.
    pub fn clear(&self) {
        self.lock().clear();
    }
}

impl EventTracker for MemoryTracker {
    fn emit(&self, event: JobEvent) {
        self.lock().push(event);
    }
}

/// Delivers one JSON batch of events to a collector. Each runtime provides one (an HTTP
/// client on the embedded runtime, `Fetch` on Durable Objects).
pub trait HttpSink: Send + Sync {
    /// POSTs `body` (a JSON array) to the collector.
    fn post(&self, body: Vec<u8>) -> impl Future<Output = Result<(), String>>;
}

/// Settings of the HTTP batch tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTrackerConfig {
    /// Deployment environment, added to every event (`production`, `staging`...).
    pub env: String,
    /// Service key, added to every event.
    pub service_key: String,
    /// Events per POST at most.
    pub max_batch: usize,
    /// Events buffered at most; past this, new events are dropped and counted.
    pub max_buffer: usize,
}

impl Default for HttpTrackerConfig {
    fn default() -> Self {
        HttpTrackerConfig {
            env: "development".into(),
            service_key: String::new(),
            max_batch: 100,
            max_buffer: 10_000,
        }
    }
}

/// An event as sent to the collector: the event plus environment and service key.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackedEvent<'a> {
    /// The event (its timestamp included).
    #[serde(flatten)]
    pub event: &'a JobEvent,
    /// The configured environment.
    pub env: &'a str,
    /// The configured service key.
    pub service_key: &'a str,
}

/// Buffers events and POSTs them in batches through an [`HttpSink`].
///
/// The buffer is bounded: when full, new events are dropped and counted in
/// [`dropped`](Self::dropped). A batch whose POST fails goes back to the front of the
/// buffer for the next flush while there is room.
pub struct HttpBatchTracker<S> {
    config: HttpTrackerConfig,
    sink: S,
    buffer: Mutex<VecDeque<JobEvent>>,
    dropped: AtomicU64,
    failed_posts: AtomicU64,
}

impl<S: HttpSink> HttpBatchTracker<S> {
    /// A tracker delivering through `sink`.
    pub fn new(config: HttpTrackerConfig, sink: S) -> Self {
        HttpBatchTracker {
            config,
            sink,
            buffer: Mutex::new(VecDeque::new()),
            dropped: AtomicU64::new(0),
            failed_posts: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<JobEvent>> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Events dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// POSTs that failed.
    pub fn failed_posts(&self) -> u64 {
        self.failed_posts.load(Ordering::Relaxed)
    }

    fn encode(&self, events: &[JobEvent]) -> Vec<u8> {
        let wire: Vec<TrackedEvent<'_>> = events
            .iter()
            .map(|event| TrackedEvent {
                event,
                env: &self.config.env,
                service_key: &self.config.service_key,
            })
            .collect();
        // Serialising plain data to a Vec cannot fail; an empty array is a safe fallback.
        serde_json::to_vec(&wire).unwrap_or_else(|_| b"[]".to_vec())
    }

    async fn flush_all(&self) {
        loop {
            let batch: Vec<JobEvent> = {
                let mut buf = self.lock();
                let n = buf.len().min(self.config.max_batch.max(1));
                buf.drain(..n).collect()
            };
            if batch.is_empty() {
                return;
            }
            let body = self.encode(&batch);
            if let Err(error) = self.sink.post(body).await {
                self.failed_posts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, events = batch.len(), "event tracker POST failed");
                let mut buf = self.lock();
                let room = self.config.max_buffer.saturating_sub(buf.len());
                let keep = batch.len().min(room);
                self.dropped
                    .fetch_add((batch.len() - keep) as u64, Ordering::Relaxed);
                for event in batch.into_iter().take(keep).rev() {
                    buf.push_front(event);
                }
                return;
            }
        }
    }
}

impl<S: HttpSink> EventTracker for HttpBatchTracker<S> {
    fn emit(&self, event: JobEvent) {
        let mut buf = self.lock();
        if buf.len() >= self.config.max_buffer {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            buf.push_back(event);
        }
    }

    fn flush(&self) -> LocalBoxFuture<'_, ()> {
        Box::pin(self.flush_all())
    }

    fn pending(&self) -> usize {
        self.lock().len()
    }
}
