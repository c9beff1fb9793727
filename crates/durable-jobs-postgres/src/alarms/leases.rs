//! The alarm leases this process holds, by instance: what the renewer extends, and what a
//! shard checks before it starts a pass.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// One claim of an instance's alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claim {
    /// The token the claim set: the fence of the pass's steps.
    pub token: i64,
    /// The alarm time that was due.
    pub at: i64,
    /// How many times the alarm had been written when it was claimed.
    pub seq: i64,
}

/// The leases held, by instance id. Only the latest claim of an instance counts.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    held: Mutex<HashMap<Arc<str>, Claim>>,
}

impl Leases {
    fn held(&self) -> MutexGuard<'_, HashMap<Arc<str>, Claim>> {
        // Every change is a single map operation: a panic cannot leave it half-done.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a claim; it replaces an earlier claim of the instance.
    pub fn hold(&self, id: Arc<str>, claim: Claim) {
        self.held().insert(id, claim);
    }

    /// Whether the latest claim of `id` is the one with `token`.
    pub fn is_current(&self, id: &str, token: i64) -> bool {
        self.held().get(id).is_some_and(|c| c.token == token)
    }

    /// Forgets the claim of `id` with `token`, unless a later claim replaced it.
    pub fn forget(&self, id: &str, token: i64) {
        let mut held = self.held();
        if held.get(id).is_some_and(|c| c.token == token) {
            held.remove(id);
        }
    }

    /// Every lease held: ids and tokens.
    pub fn tokens(&self) -> (Vec<Arc<str>>, Vec<i64>) {
        self.held()
            .iter()
            .map(|(id, c)| (id.clone(), c.token))
            .unzip()
    }

    /// Takes every lease out, for release at shutdown.
    pub fn take_all(&self) -> (Vec<Arc<str>>, Vec<i64>) {
        self.held().drain().map(|(id, c)| (id, c.token)).unzip()
    }
}
