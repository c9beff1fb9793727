//! In-memory storage: a map per instance, an alarm slot, and failure injection for testing
//! what a failed step leaves behind.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    list_sorted, AlarmWrite, Clock, ListOptions, Storage, VirtualClock, WriteBatch, WriteOp,
};
use crate::errors::StorageError;

/// Counts of the operations an instance's storage served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Calls to `get` and `get_many`.
    pub reads: u64,
    /// Calls to `list`.
    pub lists: u64,
    /// Calls to `commit` that succeeded.
    pub commits: u64,
}

#[derive(Debug, Default)]
struct Inner {
    data: BTreeMap<String, Vec<u8>>,
    alarm: Option<i64>,
    fail_commits: u32,
    fail_reads: u32,
    stats: StorageStats,
}

/// One instance's storage and alarm, held in memory.
///
/// Cloning gives another handle on the same data, which is how tests inspect an instance
/// that the engine is using.
#[derive(Debug, Clone)]
pub struct MemoryStorage {
    inner: Arc<Mutex<Inner>>,
    clock: VirtualClock,
}

impl MemoryStorage {
    /// Empty storage, reading time from `clock`.
    pub fn new(clock: VirtualClock) -> Self {
        MemoryStorage {
            inner: Arc::default(),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a test panicked while holding it; the map is intact.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the next `n` commits fail without writing anything.
    pub fn fail_next_commits(&self, n: u32) {
        self.lock().fail_commits = n;
    }

    /// Makes the next `n` reads fail.
    pub fn fail_next_reads(&self, n: u32) {
        self.lock().fail_reads = n;
    }

    /// A copy of every key and value.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.lock().data.clone()
    }

    /// The alarm's time, read without going through the async trait.
    pub fn alarm(&self) -> Option<i64> {
        self.lock().alarm
    }

    /// Sets or clears the alarm directly (the harness does this when an alarm fires).
    pub fn set_alarm(&self, at: Option<i64>) {
        self.lock().alarm = at;
    }

    /// Operation counts so far.
    pub fn stats(&self) -> StorageStats {
        self.lock().stats
    }

    /// Whether the instance holds no data at all.
    pub fn is_empty(&self) -> bool {
        self.lock().data.is_empty()
    }

    fn check_read(inner: &mut Inner) -> Result<(), StorageError> {
        if inner.fail_reads > 0 {
            inner.fail_reads -= 1;
            return Err(StorageError::new("injected read failure"));
        }
        Ok(())
    }
}

impl Storage for MemoryStorage {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let mut inner = self.lock();
        Self::check_read(&mut inner)?;
        inner.stats.reads += 1;
        Ok(inner.data.get(key).cloned())
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        let mut inner = self.lock();
        Self::check_read(&mut inner)?;
        inner.stats.reads += 1;
        Ok(keys.iter().map(|k| inner.data.get(*k).cloned()).collect())
    }

    async fn list(&self, options: ListOptions<'_>) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let mut inner = self.lock();
        Self::check_read(&mut inner)?;
        inner.stats.lists += 1;
        Ok(list_sorted(&inner.data, options))
    }

    async fn commit(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut inner = self.lock();
        if inner.fail_commits > 0 {
            inner.fail_commits -= 1;
            return Err(StorageError::new("injected commit failure"));
        }
        let (delete_all, ops, alarm) = batch.into_parts();
        if delete_all {
            inner.data.clear();
        }
        for op in ops {
            match op {
                WriteOp::Put(k, v) => {
                    inner.data.insert(k, v);
                }
                WriteOp::Delete(k) => {
                    inner.data.remove(&k);
                }
            }
        }
        match alarm {
            Some(AlarmWrite::Set(t)) => inner.alarm = Some(t),
            Some(AlarmWrite::Clear) => inner.alarm = None,
            None => {}
        }
        inner.stats.commits += 1;
        Ok(())
    }
}

impl Clock for MemoryStorage {
    fn now(&self) -> i64 {
        self.clock.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    fn store() -> MemoryStorage {
        MemoryStorage::new(VirtualClock::new(0))
    }

    #[test]
    fn list_is_ordered_and_bounded() {
        block_on(async {
            let s = store();
            let mut b = WriteBatch::new();
            for k in ["q:3", "q:1", "q:2", "r:1", "p:9"] {
                b.put(k, k.as_bytes().to_vec());
            }
            s.commit(b).await.unwrap();
            let keys =
                |v: Vec<(String, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
            assert_eq!(
                keys(s.list(ListOptions::prefix("q:")).await.unwrap()),
                ["q:1", "q:2", "q:3"]
            );
            assert_eq!(
                keys(s.list(ListOptions::prefix("q:").limit(1)).await.unwrap()),
                ["q:1"]
            );
            assert_eq!(
                keys(
                    s.list(ListOptions::prefix("q:").start("q:2"))
                        .await
                        .unwrap()
                ),
                ["q:2", "q:3"]
            );
            assert_eq!(
                keys(s.list(ListOptions::prefix("q:").end("q:3")).await.unwrap()),
                ["q:1", "q:2"]
            );
        });
    }

    #[test]
    fn failed_commit_writes_nothing() {
        block_on(async {
            let s = store();
            s.fail_next_commits(1);
            let mut b = WriteBatch::new();
            b.put("a", vec![1]).set_alarm(Some(5));
            assert!(s.commit(b.clone()).await.is_err());
            assert!(s.is_empty());
            assert_eq!(s.alarm(), None);
            s.commit(b).await.unwrap();
            assert_eq!(s.get("a").await.unwrap(), Some(vec![1]));
            assert_eq!(s.alarm(), Some(5));
        });
    }
}
