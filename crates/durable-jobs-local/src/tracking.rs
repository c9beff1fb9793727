//! Lifecycle events to an HTTP collector: the core's batch tracker buffers and enriches
//! them; here a background thread flushes it, posting each batch with a blocking HTTP
//! client, so tracking never delays or fails a request.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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

/// The thread that flushes a tracker every interval, and once more when stopped.
pub(crate) struct Flusher {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Flusher {
    pub fn start(tracker: Arc<dyn EventTracker>, every: Duration) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("durable-jobs-tracker".into())
            .spawn(move || loop {
                let last = !matches!(stopped.recv_timeout(every), Err(RecvTimeoutError::Timeout));
                futures::executor::block_on(tracker.flush());
                if last {
                    return;
                }
            })?;
        Ok(Flusher { stop, thread })
    }

    /// Flushes one last time and waits for the thread.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }

    /// Asks the thread to flush and stop, without waiting.
    pub fn signal(&self) {
        let _ = self.stop.send(());
    }
}
