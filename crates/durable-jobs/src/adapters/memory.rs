//! In-memory storage: a map per instance, an alarm slot, and failure injection for testing
//! what a failed step leaves behind.
//!
//! By default every commit is durable at once, and nothing is ever lost. Storage made with
//! [`MemoryStorage::durable_on_sync`] keeps, beside the view that reads see, the state a
//! crash would leave: a commit becomes durable only when a later `sync` returns, so that a
//! test can lose what was committed but not yet synced ([`MemoryStorage::crash`]), as a
//! platform that acknowledges a commit before it reaches the disk can.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    list_sorted, AlarmWrite, Clock, ListOptions, StepKind, Storage, VirtualClock, WriteBatch,
    WriteOp,
};
use crate::errors::StorageError;

/// Counts of the operations an instance's storage served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Calls to `get` and `get_many`.
    pub reads: u64,
    /// Calls to `list`.
    pub lists: u64,
    /// Calls to `list` without a limit, whose cost follows the rows stored: the engine
    /// makes none, so that no step reads a whole backlog.
    pub unbounded_lists: u64,
    /// Calls to `commit` that succeeded.
    pub commits: u64,
    /// Steps begun, by requests and by alarms.
    pub steps_begun: u64,
    /// Steps ended: equal to `steps_begun` whenever no step is open.
    pub steps_ended: u64,
}

/// Keys and values with the alarm: what reads see, or what survives a crash.
#[derive(Debug, Clone, Default)]
struct State {
    data: BTreeMap<String, Vec<u8>>,
    alarm: Option<i64>,
}

impl State {
    fn apply(&mut self, batch: WriteBatch) {
        let (delete_all, ops, alarm) = batch.into_parts();
        if delete_all {
            self.data.clear();
        }
        for op in ops {
            match op {
                WriteOp::Put(k, v) => {
                    self.data.insert(k, v);
                }
                WriteOp::Delete(k) => {
                    self.data.remove(&k);
                }
            }
        }
        match alarm {
            Some(AlarmWrite::Set(t)) => self.alarm = Some(t),
            Some(AlarmWrite::Clear) => self.alarm = None,
            None => {}
        }
    }
}

/// What a crash would leave, for storage whose commits become durable at `sync`.
#[derive(Debug, Clone, Default)]
struct Durability {
    /// The state as of the last successful sync (and confirmed alarm changes).
    durable: State,
    /// Batches committed since the last sync, in commit order.
    unsynced: Vec<WriteBatch>,
    /// The alarm as the runtime last set it directly (`Some(None)`: consumed), since the
    /// last commit that wrote the alarm; durable only once the alarm call is confirmed.
    runtime_alarm: Option<Option<i64>>,
    /// A sync failed: the view holds writes that were lost, until [`MemoryStorage::crash`].
    broken: bool,
}

#[derive(Debug, Default)]
struct Inner {
    view: State,
    /// `None` when every commit is durable at once.
    durability: Option<Durability>,
    fail_commits: u32,
    fail_reads: u32,
    fail_syncs: u32,
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
    /// Empty storage, reading time from `clock`. Every commit is durable at once.
    pub fn new(clock: VirtualClock) -> Self {
        MemoryStorage {
            inner: Arc::default(),
            clock,
        }
    }

    /// Empty storage whose commits become durable only when a later `sync` returns, as on
    /// a platform that acknowledges a commit before it is on disk. [`crash`](Self::crash)
    /// then loses what was not synced.
    ///
    /// The alarm changes a runtime makes directly ([`set_alarm`](Self::set_alarm): consuming
    /// a fired alarm, scheduling a retry) become durable only when the runtime confirms the
    /// alarm call with [`alarm_handled`](Self::alarm_handled), as a platform forgets an
    /// alarm only once its handler succeeded.
    pub fn durable_on_sync(clock: VirtualClock) -> Self {
        let storage = Self::new(clock);
        storage.lock().durability = Some(Durability::default());
        storage
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

    /// Makes the next `n` syncs fail. On storage made with
    /// [`durable_on_sync`](Self::durable_on_sync), a failed sync loses every commit not yet
    /// synced, and the storage refuses every operation until [`crash`](Self::crash), as the
    /// `Storage` contract tells a runtime to discard its view after a failed sync.
    pub fn fail_next_syncs(&self, n: u32) {
        self.lock().fail_syncs = n;
    }

    /// A copy of every key and value.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.lock().view.data.clone()
    }

    /// A copy of every key and value that a crash would leave (the same as
    /// [`snapshot`](Self::snapshot) unless made with [`durable_on_sync`](Self::durable_on_sync)).
    pub fn durable_snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        let inner = self.lock();
        match &inner.durability {
            Some(d) => d.durable.data.clone(),
            None => inner.view.data.clone(),
        }
    }

    /// The alarm's time, read without going through the async trait.
    pub fn alarm(&self) -> Option<i64> {
        self.lock().view.alarm
    }

    /// The alarm a crash would leave.
    pub fn durable_alarm(&self) -> Option<i64> {
        let inner = self.lock();
        match &inner.durability {
            Some(d) => d.durable.alarm,
            None => inner.view.alarm,
        }
    }

    /// Sets or clears the alarm directly (the harness does this when an alarm fires).
    ///
    /// On storage made with [`durable_on_sync`](Self::durable_on_sync) this is a runtime's
    /// own change, durable only once [`alarm_handled`](Self::alarm_handled) confirms it.
    pub fn set_alarm(&self, at: Option<i64>) {
        let mut inner = self.lock();
        inner.view.alarm = at;
        if let Some(d) = inner.durability.as_mut() {
            d.runtime_alarm = Some(at);
        }
    }

    /// Confirms that the alarm call made after the runtime's last [`set_alarm`](Self::set_alarm)
    /// succeeded: that change becomes durable, unless a commit has set the alarm since.
    pub fn alarm_handled(&self) {
        let mut inner = self.lock();
        let Some(d) = inner.durability.as_mut() else {
            return;
        };
        let Some(at) = d.runtime_alarm.take() else {
            return;
        };
        if d.unsynced.is_empty() {
            d.durable.alarm = at;
        } else {
            // After the commits that precede it, which are not durable yet.
            let mut batch = WriteBatch::new();
            batch.set_alarm(at);
            d.unsynced.push(batch);
        }
    }

    /// Loses every commit not yet synced and every unconfirmed alarm change, as a crash of
    /// the process would: reads see the durable state again. Injected failures are cleared
    /// too, and storage refused after a failed sync is usable again. Returns how many
    /// commits were lost.
    pub fn crash(&self) -> usize {
        let mut inner = self.lock();
        inner.fail_commits = 0;
        inner.fail_reads = 0;
        inner.fail_syncs = 0;
        let Some(d) = inner.durability.as_mut() else {
            return 0;
        };
        let lost = d.unsynced.len();
        d.unsynced.clear();
        d.runtime_alarm = None;
        d.broken = false;
        let durable = d.durable.clone();
        inner.view = durable;
        lost
    }

    /// Whether a sync failed since the last [`crash`](Self::crash): the view holds lost
    /// writes, and every operation fails until the runtime reloads the instance.
    pub fn needs_reload(&self) -> bool {
        self.lock().durability.as_ref().is_some_and(|d| d.broken)
    }

    /// How many commits are not yet durable.
    pub fn unsynced_commits(&self) -> usize {
        self.lock()
            .durability
            .as_ref()
            .map_or(0, |d| d.unsynced.len())
    }

    /// Operation counts so far.
    pub fn stats(&self) -> StorageStats {
        self.lock().stats
    }

    /// Whether the instance holds no data at all.
    pub fn is_empty(&self) -> bool {
        self.lock().view.data.is_empty()
    }

    fn check_usable(inner: &Inner) -> Result<(), StorageError> {
        if inner.durability.as_ref().is_some_and(|d| d.broken) {
            return Err(StorageError::new(
                "a sync failed: the instance must be reloaded",
            ));
        }
        Ok(())
    }

    fn check_read(inner: &mut Inner) -> Result<(), StorageError> {
        Self::check_usable(inner)?;
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
        Ok(inner.view.data.get(key).cloned())
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        let mut inner = self.lock();
        Self::check_read(&mut inner)?;
        inner.stats.reads += 1;
        Ok(keys
            .iter()
            .map(|k| inner.view.data.get(*k).cloned())
            .collect())
    }

    async fn list(&self, options: ListOptions<'_>) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let mut inner = self.lock();
        Self::check_read(&mut inner)?;
        inner.stats.lists += 1;
        if options.limit.is_none() {
            inner.stats.unbounded_lists += 1;
        }
        Ok(list_sorted(&inner.view.data, options))
    }

    async fn begin_step(&self, _kind: StepKind) -> Result<(), StorageError> {
        self.lock().stats.steps_begun += 1;
        Ok(())
    }

    fn end_step(&self) {
        self.lock().stats.steps_ended += 1;
    }

    async fn commit(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut inner = self.lock();
        Self::check_usable(&inner)?;
        if inner.fail_commits > 0 {
            inner.fail_commits -= 1;
            return Err(StorageError::new("injected commit failure"));
        }
        if let Some(d) = inner.durability.as_mut() {
            if batch.alarm().is_some() {
                // The step's alarm replaces whatever the runtime set directly.
                d.runtime_alarm = None;
            }
            d.unsynced.push(batch.clone());
        }
        inner.view.apply(batch);
        inner.stats.commits += 1;
        Ok(())
    }

    async fn sync(&self) -> Result<(), StorageError> {
        let mut inner = self.lock();
        Self::check_usable(&inner)?;
        let failing = inner.fail_syncs > 0;
        if failing {
            inner.fail_syncs -= 1;
        }
        let Some(d) = inner.durability.as_mut() else {
            return match failing {
                true => Err(StorageError::new("injected sync failure")),
                false => Ok(()),
            };
        };
        if failing {
            d.unsynced.clear();
            d.broken = true;
            return Err(StorageError::new(
                "injected sync failure: unsynced commits lost",
            ));
        }
        for batch in d.unsynced.drain(..) {
            d.durable.apply(batch);
        }
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

    fn lossy() -> MemoryStorage {
        MemoryStorage::durable_on_sync(VirtualClock::new(0))
    }

    fn put(key: &str, alarm: Option<i64>) -> WriteBatch {
        let mut b = WriteBatch::new();
        b.put(key, vec![1]);
        if let Some(t) = alarm {
            b.set_alarm(Some(t));
        }
        b
    }

    #[test]
    fn by_default_a_commit_is_durable_at_once() {
        block_on(async {
            let s = store();
            s.commit(put("a", Some(5))).await.unwrap();
            assert_eq!(s.crash(), 0);
            assert_eq!(s.get("a").await.unwrap(), Some(vec![1]));
            assert_eq!(s.durable_alarm(), Some(5));
        });
    }

    #[test]
    fn a_crash_loses_what_was_committed_but_not_synced() {
        block_on(async {
            let s = lossy();
            s.commit(put("a", Some(5))).await.unwrap();
            s.sync().await.unwrap();
            s.commit(put("b", Some(9))).await.unwrap();
            // Reads see the commit at once; a crash does not keep it.
            assert_eq!(s.get("b").await.unwrap(), Some(vec![1]));
            assert_eq!(s.unsynced_commits(), 1);
            assert_eq!(s.durable_snapshot().len(), 1);
            assert_eq!(s.crash(), 1);
            assert_eq!(s.get("b").await.unwrap(), None);
            assert_eq!(s.get("a").await.unwrap(), Some(vec![1]));
            assert_eq!(s.alarm(), Some(5));
        });
    }

    #[test]
    fn a_failed_sync_loses_unsynced_commits_and_refuses_work_until_reloaded() {
        block_on(async {
            let s = lossy();
            s.commit(put("a", None)).await.unwrap();
            s.fail_next_syncs(1);
            assert!(s.sync().await.is_err());
            assert!(s.needs_reload());
            assert!(s.get("a").await.is_err());
            assert!(s.commit(put("b", None)).await.is_err());
            s.crash();
            assert!(!s.needs_reload());
            assert!(s.is_empty());
            s.commit(put("b", None)).await.unwrap();
            s.sync().await.unwrap();
            assert_eq!(s.durable_snapshot().len(), 1);
        });
    }

    #[test]
    fn a_consumed_alarm_is_forgotten_only_once_its_call_is_confirmed() {
        block_on(async {
            let s = lossy();
            s.commit(put("a", Some(5))).await.unwrap();
            s.sync().await.unwrap();
            s.set_alarm(None);
            s.sync().await.unwrap();
            assert_eq!(s.durable_alarm(), Some(5), "not confirmed yet");
            s.crash();
            assert_eq!(s.alarm(), Some(5), "a crash finds the alarm again");
            s.set_alarm(None);
            s.alarm_handled();
            assert_eq!(s.durable_alarm(), None);
            // A step that writes the alarm wins over the runtime's change.
            s.set_alarm(None);
            s.commit(put("b", Some(7))).await.unwrap();
            s.alarm_handled();
            s.sync().await.unwrap();
            assert_eq!(s.durable_alarm(), Some(7));
        });
    }
}
