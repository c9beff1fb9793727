//! Event deduplication with a retention window (G8 in docs/ARCHITECTURE.md).
//!
//! Each remembered event id has a record `idem:{id}`; an expiry index `idx:{expires_at}:{id}`
//! keeps the records that expire in time order, so that expired ones are swept a few at a
//! time, at a cost that does not grow with the backlog. A record past its expiry reads as
//! absent whether or not it has been swept yet: callers compare its expiry with the time.

use serde::Serialize;

use crate::adapters::{ListOptions, Storage, WriteBatch};
use crate::errors::JobError;
use crate::services::codec;

const RECORD_PREFIX: &str = "idem:";
const EXPIRY_PREFIX: &str = "idx:";
/// Digits of the expiry time in an index key.
const EXPIRY_DIGITS: usize = 20;
/// How many expired records a step removes at least, when there are that many.
pub(crate) const SWEEP_LIMIT: usize = 16;

/// The key of an event id's record.
pub(crate) fn record_key(event_id: &str) -> String {
    format!("{RECORD_PREFIX}{event_id}")
}

fn expiry_key(expires_at: i64, event_id: &str) -> String {
    format!("{EXPIRY_PREFIX}{:020}:{event_id}", expires_at.max(0))
}

/// The expiry time and event id of an index key.
fn parse_expiry_key(key: &str) -> Option<(i64, &str)> {
    let rest = key.strip_prefix(EXPIRY_PREFIX)?;
    let digits = rest.get(..EXPIRY_DIGITS)?;
    let event_id = rest.get(EXPIRY_DIGITS..)?.strip_prefix(':')?;
    Some((digits.parse().ok()?, event_id))
}

/// Writes a record that expires at `expires_at`. `replaces` is the expiry of the record it
/// overwrites, if that one expired: its index entry must go, or sweeping it later would
/// delete this record.
pub(crate) fn put<T: Serialize>(
    batch: &mut WriteBatch,
    event_id: &str,
    record: &T,
    expires_at: i64,
    replaces: Option<i64>,
) -> Result<(), JobError> {
    put_pinned(batch, event_id, record, replaces)?;
    batch.put(expiry_key(expires_at, event_id), Vec::new());
    Ok(())
}

/// Writes a record that never expires by itself (it is replaced later by `put`).
pub(crate) fn put_pinned<T: Serialize>(
    batch: &mut WriteBatch,
    event_id: &str,
    record: &T,
    replaces: Option<i64>,
) -> Result<(), JobError> {
    if let Some(previous) = replaces {
        batch.delete(expiry_key(previous, event_id));
    }
    batch.put(record_key(event_id), codec::encode(record)?);
    Ok(())
}

/// What a sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Swept {
    /// Records removed.
    pub removed: usize,
    /// When the earliest record left expires, if any is left.
    pub next_expiry: Option<i64>,
}

/// Adds to `batch` the deletion of up to `limit` records expired by `now`, and finds when
/// the next one left expires. It reads at most `limit + 1` index entries.
pub(crate) async fn sweep<S: Storage>(
    storage: &S,
    batch: &mut WriteBatch,
    now: i64,
    limit: usize,
) -> Result<Swept, JobError> {
    let entries = storage
        .list(ListOptions::prefix(EXPIRY_PREFIX).limit(limit.saturating_add(1)))
        .await?;
    let mut swept = Swept {
        removed: 0,
        next_expiry: None,
    };
    for (key, _) in &entries {
        let Some((expires_at, event_id)) = parse_expiry_key(key) else {
            // Not an entry this version wrote: drop it rather than stall the sweep on it.
            batch.delete(key.clone());
            continue;
        };
        if expires_at > now || swept.removed == limit {
            swept.next_expiry = Some(expires_at);
            break;
        }
        batch.delete(record_key(event_id));
        batch.delete(key.clone());
        swept.removed += 1;
    }
    Ok(swept)
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
            let swept = sweep(&s, &mut b, 200, SWEEP_LIMIT).await.unwrap();
            assert_eq!(
                swept,
                Swept {
                    removed: 1,
                    next_expiry: Some(300)
                }
            );
            s.commit(b).await.unwrap();
            assert_eq!(s.get(&record_key("a:1")).await.unwrap(), None);
            assert_eq!(s.get(&record_key("b")).await.unwrap(), Some(b"2".to_vec()));
        });
    }

    #[test]
    fn a_sweep_stops_at_its_limit_and_says_what_is_next() {
        block_on(async {
            let s = MemoryStorage::new(VirtualClock::new(0));
            let mut b = WriteBatch::new();
            for i in 0..5 {
                put(&mut b, &format!("id-{i}"), &i, 10 + i, None).unwrap();
            }
            s.commit(b).await.unwrap();
            let mut b = WriteBatch::new();
            let swept = sweep(&s, &mut b, 100, 2).await.unwrap();
            assert_eq!(swept.removed, 2);
            assert_eq!(swept.next_expiry, Some(12));
        });
    }

    #[test]
    fn a_replaced_record_loses_its_old_expiry_entry() {
        block_on(async {
            let s = MemoryStorage::new(VirtualClock::new(0));
            let mut b = WriteBatch::new();
            put(&mut b, "x", &1u8, 100, None).unwrap();
            s.commit(b).await.unwrap();
            let mut b = WriteBatch::new();
            put_pinned(&mut b, "x", &2u8, Some(100)).unwrap();
            s.commit(b).await.unwrap();
            let mut b = WriteBatch::new();
            let swept = sweep(&s, &mut b, 1_000, SWEEP_LIMIT).await.unwrap();
            s.commit(b).await.unwrap();
            assert_eq!(swept.removed, 0);
            assert_eq!(s.get(&record_key("x")).await.unwrap(), Some(b"2".to_vec()));
        });
    }
}
