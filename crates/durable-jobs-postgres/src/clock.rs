//! The runtime's clock: the system's, or a virtual one that tests move by hand.

use std::time::{SystemTime, UNIX_EPOCH};

use durable_jobs::adapters::{self, Clock as _, VirtualClock};
use tokio::sync::watch;

/// Where the runtime reads time.
#[derive(Clone, Debug)]
pub(crate) enum Clock {
    System,
    Virtual {
        clock: VirtualClock,
        changed: watch::Sender<i64>,
    },
}

impl Clock {
    pub fn virtual_at(start: i64) -> Self {
        let (changed, _) = watch::channel(start);
        Clock::Virtual {
            clock: VirtualClock::new(start),
            changed,
        }
    }

    /// Sets a virtual clock and wakes the shards; no effect on the system clock.
    pub fn set(&self, at: i64) {
        if let Clock::Virtual { clock, changed } = self {
            clock.set(at);
            changed.send_replace(clock.now());
        }
    }

    pub fn is_virtual(&self) -> bool {
        matches!(self, Clock::Virtual { .. })
    }

    pub fn subscribe(&self) -> Option<watch::Receiver<i64>> {
        match self {
            Clock::System => None,
            Clock::Virtual { changed, .. } => Some(changed.subscribe()),
        }
    }
}

impl adapters::Clock for Clock {
    fn now(&self) -> i64 {
        match self {
            Clock::System => system_now(),
            Clock::Virtual { clock, .. } => clock.now(),
        }
    }
}

fn system_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
