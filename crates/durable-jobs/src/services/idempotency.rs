//! Event deduplication with a retention window (G8 in docs/ARCHITECTURE.md).
//!
//! Each seen event id has a record `idem:{id}`; an expiry index `idx:{expires_at}:{id}`
//! keeps them in time order so that expired records are swept a few at a time during
//! ordinary steps, at a cost that does not grow with the backlog.

use serde::Serialize;

use crate::adapters::{ListOptions, Storage, WriteBatch};
use crate::errors::JobError;
use crate::services::codec;

const RECORD_PREFIX: &str = "idem:";
const EXPIRY_PREFIX: &str = "idx:";
/// How many expired records a step removes at least, when there are that many.
pub const SWEEP_LIMIT: usize = 16;

/// The key of an event id's record.
pub fn record_key(event_id: &str) -> String {
    format!("{RECORD_PREFIX}{event_id}")
}

fn expiry_key(expires_at: i64, event_id: &str) -> String {
    format!("{EXPIRY_PREFIX}{:020}:{event_id}", expires_at.max(0))
}

/// Writes a record that expires at `expires_at`, replacing an older expiry entry if the
/// previous one is known.
pub fn put<T: Serialize>(
    batch: &mut WriteBatch,
    event_id: &str,
    record: &T,
    expires_at: i64,
    previous_expiry: Option<i64>,
) -> Result<(), JobError> {
    if let Some(prev) = previous_expiry {
        batch.delete(expiry_key(prev, event_id));
    }
    batch.put(record_key(event_id), codec::encode(record)?);
    batch.put(expiry_key(expires_at, event_id), Vec::new());
    Ok(())
}

/// Writes a record that never expires by itself (it is replaced later by `put`).
pub fn put_pinned<T: Serialize>(
    batch: &mut WriteBatch,
    event_id: &str,
    record: &T,
) -> Result<(), JobError> {
    batch.put(record_key(event_id), codec::encode(record)?);
    Ok(())
}

/// Adds to `batch` the deletion of up to `limit` records expired by `now`. Callers sweep
/// at least as many as they may have added since their last sweep, so the records stay
/// bounded by what one retention period brings.
pub async fn sweep<S: Storage>(
    storage: &S,
    batch: &mut WriteBatch,
    now: i64,
    limit: usize,
) -> Result<usize, JobError> {
    let end = format!("{EXPIRY_PREFIX}{:020}", now.max(0) + 1);
    let expired = storage
        .list(ListOptions::prefix(EXPIRY_PREFIX).end(&end).limit(limit))
        .await?;
    for (key, _) in &expired {
        // idx:{20 digits}:{event id}
        if let Some(event_id) = key.get(EXPIRY_PREFIX.len() + 21..) {
            batch.delete(record_key(event_id));
        }
        batch.delete(key.clone());
    }
    Ok(expired.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::MemoryStorage;
    use crate::adapters::VirtualClock;
    use futures::executor::block_on;

    #[test]
    fn expired_records_are_swept() {
        block_on(async {
            let s = MemoryStorage::new(VirtualClock::new(0));
            let mut b = WriteBatch::new();
            put(&mut b, "a:1", &1u8, 100, None).unwrap();
            put(&mut b, "b", &2u8, 300, None).unwrap();
            s.commit(b).await.unwrap();
            let mut b = WriteBatch::new();
            assert_eq!(sweep(&s, &mut b, 200, SWEEP_LIMIT).await.unwrap(), 1);
            s.commit(b).await.unwrap();
            assert_eq!(s.get(&record_key("a:1")).await.unwrap(), None);
            assert_eq!(s.get(&record_key("b")).await.unwrap(), Some(b"2".to_vec()));
        });
    }
}
