//! Time, as the engine reads it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// The platform's clock, as seen by one instance.
pub trait Clock {
    /// Milliseconds since the Unix epoch.
    fn now(&self) -> i64;
}

/// A clock that moves only when told to. Cloning shares the same time.
#[derive(Debug, Clone, Default)]
pub struct VirtualClock {
    now: Arc<AtomicI64>,
}

impl VirtualClock {
    /// A clock reading `start` (ms since the epoch).
    pub fn new(start: i64) -> Self {
        VirtualClock {
            now: Arc::new(AtomicI64::new(start)),
        }
    }

    /// Sets the time; a clock never goes back, so an earlier time is ignored.
    pub fn set(&self, at: i64) {
        self.now.fetch_max(at, Ordering::SeqCst);
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }
}
