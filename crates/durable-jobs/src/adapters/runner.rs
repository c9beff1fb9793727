//! Where user code runs.
//!
//! By default the engine polls user code on its own task, which is all a single-threaded
//! platform (Durable Objects, the test harness) can do. A runtime with threads gives the
//! engine a [`UserCodeRunner`] instead: user code then runs where a blocking or CPU-heavy
//! `execute` holds only its own execution, never the engine's thread, and executions may
//! have a timeout.

use std::time::Duration;

use futures::future::LocalBoxFuture;

/// Builds the future of one run of user code.
type Build = Box<dyn FnOnce() -> LocalBoxFuture<'static, ()> + Send>;

/// One run of user code, packaged to start on another thread. User futures need not be
/// `Send`, so the task carries a `Send` closure that builds the future on the thread that
/// will poll it. The outcome travels back to the engine by itself; dropping the task (or
/// its future) tells the engine the run was abandoned.
pub struct UserTask {
    build: Build,
}

impl UserTask {
    pub(crate) fn new(build: Build) -> Self {
        UserTask { build }
    }

    /// Builds the future: call this on the thread that will poll it.
    pub fn start(self) -> LocalBoxFuture<'static, ()> {
        (self.build)()
    }
}

impl std::fmt::Debug for UserTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserTask")
    }
}

/// Runs user code away from the engine's thread, and measures time for its timeouts.
pub trait UserCodeRunner: Send + Sync {
    /// Starts `task` where it cannot block the thread that called this.
    fn spawn(&self, task: UserTask);

    /// A future, polled on the engine's thread, that completes after `duration`.
    fn sleep(&self, duration: Duration) -> LocalBoxFuture<'static, ()>;
}
