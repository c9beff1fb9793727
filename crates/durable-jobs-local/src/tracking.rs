//! Lifecycle events to an HTTP collector: the core's batch tracker buffers and enriches
//! them; here a background thread flushes it, posting each batch with a blocking HTTP
//! client, so tracking never delays or fails a request. At shutdown, that thread retries
//! what the collector refuses until the shutdown grace runs out.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use durable_jobs::services::tracker::EventTracker;

/// Posts event batches (JSON arrays) to a collector's URL.
#[cfg(feature = "http-tracker")]
pub struct HttpPost {
    agent: ureq::Agent,
    endpoint: String,
}

#[cfg(feature = "http-tracker")]
impl HttpPost {
    /// A sink posting to `endpoint` (http or https), giving up on a POST after `timeout`.
    pub fn new(endpoint: impl Into<String>, timeout: Duration) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .build();
        HttpPost {
            agent: config.into(),
            endpoint: endpoint.into(),
        }
    }
}

#[cfg(feature = "http-tracker")]
impl durable_jobs::services::tracker::HttpSink for HttpPost {
    /// Blocking, on purpose: it only ever runs on the runtime's tracker thread.
    async fn post(&self, body: Vec<u8>) -> Result<(), String> {
        self.agent
            .post(&self.endpoint)
            .header("content-type", "application/json")
            .send(&body[..])
            .map(drop)
            .map_err(|e| format!("POST {}: {e}", self.endpoint))
    }
}

/// The first wait before posting again, at shutdown, what the collector refused; it
/// doubles after each refusal up to [`MAX_RETRY_WAIT`]. Short, because shutdown is waiting.
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(50);

/// The longest wait between two posts at shutdown.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(1);

/// The thread that flushes a tracker every interval and, when stopped, delivers what is
/// left until a deadline.
pub(crate) struct Flusher {
    stop: mpsc::Sender<Instant>,
    thread: JoinHandle<()>,
}

impl Flusher {
    pub fn start(tracker: Arc<dyn EventTracker>, every: Duration) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<Instant>();
        let thread = std::thread::Builder::new()
            .name("durable-jobs-tracker".into())
            .spawn(move || run(tracker.as_ref(), every, &stopped))?;
        Ok(Flusher { stop, thread })
    }

    /// Delivers what is left, retrying refused batches until `deadline`, and waits for the
    /// thread.
    pub fn stop(self, deadline: Instant) {
        let _ = self.stop.send(deadline);
        let _ = self.thread.join();
    }

    /// Asks the thread to deliver what is left until `deadline` and stop, without waiting.
    pub fn signal(&self, deadline: Instant) {
        let _ = self.stop.send(deadline);
    }
}

/// Flushes every `every` until told to stop, then delivers what is left.
///
/// While the runtime runs, a refused batch simply waits for the next interval: requests
/// never wait for the collector.
fn run(tracker: &dyn EventTracker, every: Duration, stop: &mpsc::Receiver<Instant>) {
    let deadline = loop {
        match stop.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => flush(tracker),
            Ok(deadline) => break deadline,
            // The runtime went away without a deadline: one last try.
            Err(RecvTimeoutError::Disconnected) => break Instant::now(),
        }
    };
    deliver_until(tracker, deadline);
}

/// Flushes, then flushes again after a growing wait while events are left and `deadline`
/// has not passed: there is no later interval, so what stays buffered is lost, and the
/// loss is logged. The first flush runs even when the deadline has already passed, so the
/// events of the runtime's last steps always get one try.
fn deliver_until(tracker: &dyn EventTracker, deadline: Instant) {
    let mut wait = FIRST_RETRY_WAIT;
    loop {
        flush(tracker);
        let left = tracker.pending();
        if left == 0 {
            return;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            tracing::warn!(
                dropped = left,
                "the shutdown grace ran out before the event collector accepted every event; \
                 dropping the rest"
            );
            return;
        }
        std::thread::sleep(wait.min(remaining));
        wait = (wait * 2).min(MAX_RETRY_WAIT);
    }
}

fn flush(tracker: &dyn EventTracker) {
    futures::executor::block_on(tracker.flush());
}
