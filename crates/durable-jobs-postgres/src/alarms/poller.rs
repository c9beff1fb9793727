//! The alarm poller: takes due alarms from the database and hands each to the shard that
//! hosts its instance.
//!
//! It takes alarms with one statement (`FOR UPDATE SKIP LOCKED`, so processes polling
//! together never wait on each other and never take the same alarm), each under a lease of
//! this process with a fresh token. It wakes on a notification (a commit somewhere set an
//! alarm due soon), on its own commits, when a virtual clock moves, and otherwise when the
//! next alarm it knows of falls due, at most one poll interval later.

use std::sync::Arc;
use std::time::Duration;

use durable_jobs::StorageError;
use tokio::sync::{mpsc, watch, Mutex};

use super::db;
use crate::shard::{shard_of, ShardMsg};
use crate::shared::Shared;

/// Alarms taken at most per statement.
const CLAIM_BATCH: usize = 256;

/// Passes one process runs at most (running or queued on its shards): beyond, alarms are
/// left to other processes or to later rounds.
const MAX_PASSES: usize = 1024;

/// How soon to look again while the process runs as many passes as it may: ending passes
/// do not wake the poller.
const SATURATED_RECHECK: Duration = Duration::from_millis(50);

/// Backoff after a failed round: from this, doubling...
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// ...up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Takes due alarms and dispatches them.
pub(crate) struct Poller {
    shared: Arc<Shared>,
    shards: Arc<[mpsc::Sender<ShardMsg>]>,
    /// One round at a time: a round's passes are counted as running before the next
    /// round (or a `settle`) looks.
    round: Mutex<()>,
}

impl Poller {
    /// A poller dispatching to `shards`.
    pub fn new(shared: Arc<Shared>, shards: Arc<[mpsc::Sender<ShardMsg>]>) -> Self {
        Poller {
            shared,
            shards,
            round: Mutex::new(()),
        }
    }

    /// One round: retries failed releases, then takes the alarms due now and hands them
    /// to their shards. Returns how many it took.
    pub async fn round(&self) -> Result<usize, StorageError> {
        let _one_at_a_time = self.round.lock().await;
        let shared = &self.shared;
        shared.releases.retry(&shared.store).await;
        let room = MAX_PASSES.saturating_sub(shared.activity.passes());
        let limit = room.min(CLAIM_BATCH);
        if limit == 0 {
            return Ok(0);
        }
        let now = shared.now();
        let terms = db::Terms {
            owner: &shared.owner,
            now,
            lease_until: now.saturating_add(shared.lease_ms()),
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            jobs: &shared.jobs,
        };
        let claimed = db::claim(&shared.store, terms).await?;
        let count = claimed.len();
        for db::Claimed { id, claim } in claimed {
            shared.leases.hold(id.clone(), claim);
            let running = shared.activity.pass();
            let shard = &self.shards[shard_of(&id, self.shards.len())];
            // A shard that is gone is shutting down: the lease is released with the others.
            let _ = shard.send(ShardMsg::Alarm { id, claim, running }).await;
        }
        Ok(count)
    }

    /// Runs rounds until `stop` changes.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut clock = self.shared.clock.subscribe();
        let mut wait = Duration::ZERO;
        let mut failures = 0u32;
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                () = self.shared.wake_poller.notified() => {}
                () = tokio::time::sleep(wait) => {}
                () = changed(&mut clock) => {}
            }
            wait = match self.round().await {
                Ok(count) => {
                    failures = 0;
                    if count == CLAIM_BATCH {
                        Duration::ZERO
                    } else if self.shared.activity.passes() >= MAX_PASSES {
                        SATURATED_RECHECK
                    } else {
                        self.until_next().await
                    }
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(%error, "cannot take due alarms; trying again");
                    backoff(failures)
                }
            };
        }
    }

    /// How long to sleep: until the next alarm known, at most one poll interval.
    async fn until_next(&self) -> Duration {
        let interval = self.shared.poll_interval;
        if self.shared.clock.is_virtual() {
            // A virtual clock wakes the poller when it moves.
            return interval;
        }
        let now = self.shared.now();
        match db::next_due(&self.shared.store, now, &self.shared.jobs).await {
            Ok(Some(at)) => {
                let ms = u64::try_from(at.saturating_sub(now).max(0)).unwrap_or(u64::MAX);
                Duration::from_millis(ms).min(interval)
            }
            _ => interval,
        }
    }
}

/// The delay after `failures` failed rounds in a row.
fn backoff(failures: u32) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(MAX_BACKOFF)
}

/// Resolves each time a virtual clock moves; never with the system clock.
async fn changed(rx: &mut Option<watch::Receiver<i64>>) {
    match rx {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::millis;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(6), Duration::from_millis(3200));
        assert_eq!(backoff(7), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn a_lease_in_ms_saturates() {
        assert_eq!(millis(Duration::from_secs(30)), 30_000);
        assert_eq!(millis(Duration::MAX), i64::MAX);
    }
}
