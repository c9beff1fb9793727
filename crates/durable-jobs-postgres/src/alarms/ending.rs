//! Giving a lease back when its pass ends.
//!
//! A lease that is not given back holds its alarm until the lease runs out (30 s by
//! default): after a database outage, the passes that failed could not release theirs.
//! Releases that fail are kept and tried again before the next claims, so the work they
//! hold is taken again soon after the database returns.

use std::sync::{Arc, Mutex, MutexGuard};

use super::db;
use super::leases::Claim;
use crate::store::Store;

/// How a pass ended, and so what its release does.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ending {
    /// It succeeded: remove the alarm that fired unless it was set again.
    Done(Claim),
    /// It failed: keep the alarm, and let no process take it before `at`.
    Retry {
        /// The lease's token.
        token: i64,
        /// When it may run again.
        at: i64,
    },
}

/// Releases not done yet, because the database could not be reached.
#[derive(Debug, Default)]
pub(crate) struct PendingReleases {
    pending: Mutex<Vec<(Arc<str>, Ending)>>,
}

impl PendingReleases {
    fn pending(&self) -> MutexGuard<'_, Vec<(Arc<str>, Ending)>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Releases the lease of `id` as `ending` says, or keeps it for later. Returns the
    /// alarm a successful pass left set (it wrote the alarm again during the pass), which
    /// any process may take from now on.
    pub async fn release(&self, store: &Store, id: Arc<str>, ending: Ending) -> Option<i64> {
        match apply(store, &id, ending).await {
            Ok(left) => left,
            Err(error) => {
                tracing::warn!(instance = %id, %error, "cannot release an alarm lease; will try again");
                self.pending().push((id, ending));
                None
            }
        }
    }

    /// Tries again the releases that failed; keeps those that fail again.
    pub async fn retry(&self, store: &Store) {
        let waiting = std::mem::take(&mut *self.pending());
        for (id, ending) in waiting {
            if apply(store, &id, ending).await.is_err() {
                self.pending().push((id, ending));
            }
        }
    }
}

/// Releases as `ending` says; returns the alarm left claimable, for a pass that succeeded.
async fn apply(
    store: &Store,
    id: &str,
    ending: Ending,
) -> Result<Option<i64>, durable_jobs::StorageError> {
    match ending {
        Ending::Done(claim) => db::release(store, id, claim).await,
        // Held back until its retry time, which polling finds.
        Ending::Retry { token, at } => db::hold_back(store, id, token, at).await.map(|()| None),
    }
}
