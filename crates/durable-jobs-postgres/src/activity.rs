//! What runs in the process now: requests on the shards, and alarm passes from the moment
//! the poller hands them to a shard. `settle` waits on it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Counts running work and work ended.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Requests and passes running, or passes on their way to a shard.
    running: AtomicUsize,
    /// Of those, the passes.
    passes: AtomicUsize,
    /// Work ended so far: tells whether anything ended between two looks.
    ended: AtomicU64,
    /// Woken when `running` falls to zero.
    idle: Notify,
}

/// One piece of running work; it counts as ended when dropped, however its future ends.
#[derive(Debug)]
pub(crate) struct Running {
    activity: Arc<Activity>,
    pass: bool,
}

impl Activity {
    /// Counts a request until the returned guard drops.
    pub fn request(self: &Arc<Self>) -> Running {
        self.running.fetch_add(1, Ordering::SeqCst);
        Running {
            activity: self.clone(),
            pass: false,
        }
    }

    /// Counts an alarm pass until the returned guard drops.
    pub fn pass(self: &Arc<Self>) -> Running {
        self.passes.fetch_add(1, Ordering::SeqCst);
        self.running.fetch_add(1, Ordering::SeqCst);
        Running {
            activity: self.clone(),
            pass: true,
        }
    }

    /// Requests and passes running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Passes running now (or on their way to a shard).
    pub fn passes(&self) -> usize {
        self.passes.load(Ordering::SeqCst)
    }

    /// Work ended so far.
    pub fn ended(&self) -> u64 {
        self.ended.load(Ordering::SeqCst)
    }

    /// Waits until nothing runs.
    pub async fn idle(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Registered before the check, so an end between the two is not missed.
            idle.as_mut().enable();
            if self.running() == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let activity = &self.activity;
        if self.pass {
            activity.passes.fetch_sub(1, Ordering::SeqCst);
        }
        activity.ended.fetch_add(1, Ordering::SeqCst);
        if activity.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            activity.idle.notify_waiters();
        }
    }
}
