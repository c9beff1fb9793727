//! What the shards, the instances' storage and the background tasks of one runtime share.

use std::sync::Arc;
use std::time::Duration;

use durable_jobs::adapters::Clock as _;
use tokio::sync::Notify;

use crate::activity::Activity;
use crate::alarms::ending::PendingReleases;
use crate::alarms::leases::Leases;
use crate::clock::Clock;
use crate::store::Store;

/// The state of one runtime (one process's view of the database).
#[derive(Debug)]
pub(crate) struct Shared {
    /// The database.
    pub store: Store,
    /// The runtime's clock, system or virtual: alarm times and leases are read on it.
    pub clock: Clock,
    /// The alarm leases this process holds.
    pub leases: Leases,
    /// Lease releases that failed, to try again.
    pub releases: PendingReleases,
    /// This process's random id, recorded as the owner of its leases.
    pub owner: String,
    /// The id prefix (`{kind}:{name}:`) of each job registered here: the alarms this
    /// process takes.
    pub jobs: Vec<String>,
    /// How long a claim holds an alarm before another process may take it over.
    pub lease: Duration,
    /// How often the poller looks for due alarms when nothing wakes it.
    pub poll_interval: Duration,
    /// How many queued events one claim of a WorkerPool instance takes at most.
    pub claim_size: usize,
    /// Wakes the poller: a notification, or a commit of this process setting an alarm due
    /// soon.
    pub wake_poller: Notify,
    /// What runs now.
    pub activity: Arc<Activity>,
}

impl Shared {
    /// The time now, on the runtime's clock (ms since the epoch).
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The lease, in ms.
    pub fn lease_ms(&self) -> i64 {
        millis(self.lease)
    }

    /// The poll interval, in ms.
    pub fn poll_interval_ms(&self) -> i64 {
        millis(self.poll_interval)
    }
}

/// A duration in ms, saturating.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
