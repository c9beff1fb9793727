//! The runtime's I/O executor: a small multi-threaded tokio runtime of its own that opens
//! and drives every connection and runs the background tasks (poller, renewal, listener).
//!
//! Its own, not the caller's: the runtime's API may be called from any executor (the
//! behaviour suite drives it with `futures::executor::block_on`), and connections must
//! outlive whatever task happened to open them.

use std::future::Future;

use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

/// Threads of the I/O executor: it only waits on sockets and timers.
const IO_THREADS: usize = 1;

/// Owns the I/O executor; shuts it down without blocking when dropped.
#[derive(Debug)]
pub(crate) struct IoRuntime {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl IoRuntime {
    /// Starts the executor.
    pub fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(IO_THREADS)
            .thread_name("durable-jobs-pg-io")
            .enable_all()
            .build()?;
        Ok(IoRuntime {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    /// A handle to spawn on it.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `future` there.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another executor's task;
        // shutting it down in the background does not.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
