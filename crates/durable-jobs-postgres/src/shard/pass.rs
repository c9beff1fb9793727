//! One alarm pass: the engine's `alarm()` under a lease this process took, then the lease
//! given back.

use std::sync::Arc;
use std::time::Duration;

use durable_jobs::{Backoff, RetryPolicy};

use super::Shard;
use crate::alarms::ending::Ending;
use crate::alarms::leases::Claim;
use crate::shared::millis;

/// Delays before a failed pass runs again: 1 s after the first failure, doubling up to
/// 5 min, as on the embedded runtime. Only the delays are used: an alarm is never given up.
const PASS_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    backoff: Backoff::Exponential {
        initial: Duration::from_secs(1),
        factor: 2.0,
        max: Duration::from_secs(300),
    },
    jitter: 0.0,
    max_duration: None,
};

/// How often a claim looks again while an earlier pass of its instance still runs here.
const BUSY_RECHECK: Duration = Duration::from_millis(10);

impl Shard {
    /// Runs the pass of the claim `claim` of `id`.
    ///
    /// An earlier pass of the instance may still run in this process: its lease ran out and
    /// this process took the alarm again. Its steps fail on the fence from now on (its
    /// token is no longer current), and this pass starts once it has ended, so one engine
    /// never runs two executions at once. A claim replaced by a later one of this process
    /// does nothing: the later one runs.
    pub(super) async fn run_pass(&self, id: Arc<str>, claim: Claim) {
        let shared = &self.shared;
        let engine = self.cache.engine(&id);
        while engine.is_executing() {
            if !shared.leases.is_current(&id, claim.token) {
                return;
            }
            tokio::time::sleep(BUSY_RECHECK).await;
        }
        if !shared.leases.is_current(&id, claim.token) {
            return;
        }
        // No await between the check above and the start of the execution.
        engine.backend().begin_pass(claim.token);
        let result = engine.alarm().await;
        engine.backend().end_pass();
        shared.leases.forget(&id, claim.token);
        let ending = match result {
            Ok(()) => {
                self.failures.borrow_mut().remove(&id);
                Ending::Done(claim)
            }
            Err(error) => {
                let at = self.retry_at(&id);
                tracing::warn!(instance = %id, %error, retry_at = at, "alarm pass failed");
                Ending::Retry {
                    token: claim.token,
                    at,
                }
            }
        };
        let left = shared.releases.release(&shared.store, id, ending).await;
        // An alarm the pass wrote again (work came meanwhile, or the pass handed back after
        // its quota of executions) was announced while this lease still held it, so no
        // poller took it then, and nothing announces it now that it is free: without a
        // wake, it would wait for the next poll, up to a poll interval.
        let soon = shared.now().saturating_add(shared.poll_interval_ms());
        if left.is_some_and(|at| at < soon) {
            shared.wake_poller.notify_one();
        }
    }

    /// When the failed pass of `id` runs again, after a delay growing with its failures in
    /// a row.
    fn retry_at(&self, id: &Arc<str>) -> i64 {
        let failures = {
            let mut map = self.failures.borrow_mut();
            let n = map.entry(id.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        // Without jitter the seed changes nothing.
        let delay = millis(PASS_RETRY.delay(failures, 0));
        self.shared.now().saturating_add(delay)
    }
}
