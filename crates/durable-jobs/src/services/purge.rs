//! Purging: a stopped or drained instance deletes all of its data once its
//! retention period has passed, so storage does not grow with the number of ids ever used.

use crate::adapters::WriteBatch;
use crate::services::metadata::Metadata;

/// Marks the instance for deletion `retention_ms` from `now`.
pub fn schedule(meta: &mut Metadata, now: i64, retention_ms: i64) {
    meta.purge_at = Some(now.saturating_add(retention_ms));
}

/// Cancels a pending purge (the instance became busy again); says whether one was pending.
pub fn cancel(meta: &mut Metadata) -> bool {
    meta.purge_at.take().is_some()
}

/// Whether the purge is due.
pub fn is_due(meta: &Metadata, now: i64) -> bool {
    meta.purge_at.is_some_and(|at| at <= now)
}

/// A batch that deletes everything of the instance, alarm included.
pub fn purge_batch() -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.delete_all().set_alarm(None);
    batch
}
