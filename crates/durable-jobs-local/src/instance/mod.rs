//! One live instance's storage: a bounded cache of its rows in front of the store. Each
//! commit updates the cache and is queued to the store at once; reads the cache cannot
//! answer go to the store, which sees every queued commit.

mod known_ranges;
mod row_cache;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use durable_jobs::adapters::{self, AlarmWrite, ListOptions, Storage, WriteBatch, WriteOp};
use durable_jobs::StorageError;
use tokio::sync::{oneshot, Notify};

use crate::clock::Clock;
use crate::commit_tracker::CommitTracker;
use crate::shard::alarm_queue::AlarmQueue;
use crate::store::{LoadedInstance, RowRange, Rows, StoreHandle};

use row_cache::{range_of, RowCache};

/// Rows read at least by a range read that misses the cache, so that walking a queue
/// costs one read of the store per this many steps, not one per step.
const PREFETCH: usize = 128;
/// A walk along a range reads ahead once fewer cached rows than this remain in front of
/// it, so the next rows arrive before they are needed and no step waits for the store.
const READ_AHEAD_BELOW: usize = PREFETCH;
/// Rows an instance reads when it becomes live: all of them if it has no more.
pub(crate) const FIRST_ROWS: usize = 64;

/// The storage of one live instance, used by its engine on its shard's thread.
pub(crate) struct InstanceStorage {
    /// The instance's id, `{kind}:{name}:{key}`: its rows' and alarm's key in the file.
    id: Arc<str>,
    /// Which load of the instance this is: higher for each load on the shard. The store
    /// uses it to refuse commits made on top of a lost one.
    generation: u64,
    /// The rows of the instance held in memory, as committed so far (durable or on its
    /// way): the hot ones, never the whole of a long queue.
    rows: RefCell<RowCache>,
    /// The alarm as stored in the index, to skip writing one that did not change.
    alarm: Cell<Option<i64>>,
    /// The writer thread that makes commits durable.
    store: StoreHandle,
    /// The runtime's clock (system or virtual).
    clock: Clock,
    /// The shard's window of upcoming alarms, kept in step with every alarm change.
    alarms: Rc<RefCell<AlarmQueue>>,
    /// Wakes the shard's loop when an alarm changes, so a sooner alarm is not slept past.
    wake: Rc<Notify>,
    /// Commits that changed the alarm so far.
    alarm_writes: Cell<u64>,
    /// Which commits are durable, and whether one was lost.
    commits: Rc<CommitTracker>,
    /// A range read sent ahead of need, not learned yet.
    ahead: RefCell<Option<ReadAhead>>,
}

/// A range read sent before the rows are needed, and the writes made to its range since:
/// the read does not hold them, so they are replayed on what it returns.
struct ReadAhead {
    range: RowRange,
    reply: oneshot::Receiver<Result<Rows, StorageError>>,
    writes: Vec<WriteOp>,
}

impl ReadAhead {
    /// Keeps the writes of `batch` that fall in the range.
    fn record(&mut self, batch: &WriteBatch) {
        let inside = |key: &String| {
            key.as_str() >= self.range.start.as_str()
                && self.range.end.as_deref().is_none_or(|e| key.as_str() < e)
        };
        let kept: Vec<WriteOp> = batch
            .ops()
            .iter()
            .filter(|op| match op {
                WriteOp::Put(key, _) | WriteOp::Delete(key) => inside(key),
            })
            .cloned()
            .collect();
        self.writes.extend(kept);
    }
}

impl InstanceStorage {
    /// The storage of the instance `id`, as `loaded` from the file by its `generation`th
    /// load.
    pub fn new(
        id: Arc<str>,
        generation: u64,
        loaded: LoadedInstance,
        store: StoreHandle,
        clock: Clock,
        alarms: Rc<RefCell<AlarmQueue>>,
        wake: Rc<Notify>,
    ) -> Self {
        InstanceStorage {
            id,
            generation,
            rows: RefCell::new(RowCache::with_first_rows(loaded.rows, loaded.complete)),
            alarm: Cell::new(loaded.alarm),
            store,
            clock,
            alarms,
            wake,
            alarm_writes: Cell::new(0),
            commits: Rc::default(),
            ahead: RefCell::new(None),
        }
    }

    /// Which load of the instance this storage comes from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether a commit was lost: the in-memory view is no longer trustworthy and the
    /// instance must be reloaded from the store.
    pub fn is_broken(&self) -> bool {
        self.commits.is_broken()
    }

    /// Commits that changed the alarm so far (to tell whether an alarm was set again).
    pub fn alarm_writes(&self) -> u64 {
        self.alarm_writes.get()
    }

    /// Rows and bytes held in memory.
    pub fn cached(&self) -> (usize, usize) {
        let rows = self.rows.borrow();
        (rows.len(), rows.bytes())
    }

    /// Forgets an alarm that fired at `at` and was not set again.
    pub fn consume_alarm(&self, at: i64) {
        if self.alarm.get() == Some(at) {
            self.alarm.set(None);
        }
    }
}

/// Range reads of the store: on a miss, and ahead of a walk along a queue.
impl InstanceStorage {
    /// Reads `range` (at least `PREFETCH` rows of it) from the store and learns it.
    async fn fetch(&self, range: RowRange) -> Result<Rows, StorageError> {
        let version = self.rows.borrow().version();
        let fetch_limit = range.limit.map(|l| l.max(PREFETCH));
        let request = RowRange {
            limit: fetch_limit,
            ..range.clone()
        };
        let fetched = self.store.list(self.id.clone(), request).await?;
        self.rows
            .borrow_mut()
            .learn_range(version, &range, fetch_limit, &fetched);
        let mut found = fetched;
        found.truncate(range.limit.unwrap_or(usize::MAX));
        Ok(found)
    }

    /// Sends a read of the rows after the cached ones along `range`, when few are left.
    async fn read_ahead(&self, range: &RowRange) {
        if self.ahead.borrow().is_some() {
            return;
        }
        let Some(start) = self.rows.borrow().read_ahead_start(range, READ_AHEAD_BELOW) else {
            return;
        };
        let ahead = RowRange {
            start,
            end: range.end.clone(),
            limit: Some(PREFETCH),
        };
        // A read that cannot be sent is simply not made: the walk reads on its next miss.
        if let Ok(reply) = self.store.list_later(self.id.clone(), ahead.clone()).await {
            *self.ahead.borrow_mut() = Some(ReadAhead {
                range: ahead,
                reply,
                writes: Vec::new(),
            });
        }
    }

    /// Learns a read ahead once it has arrived, or (`wait`) waits for it; returns whether
    /// one was learned. A failed read ahead is dropped: the walk reads on its next miss.
    async fn learn_ahead(&self, wait: bool) -> bool {
        let Some(mut ahead) = self.ahead.borrow_mut().take() else {
            return false;
        };
        let answer = match ahead.reply.try_recv() {
            Ok(answer) => answer,
            // No commit of the instance can come meanwhile, so none escapes `writes`: the
            // caller is a step, which holds the engine's lock.
            Err(oneshot::error::TryRecvError::Empty) if wait => match (&mut ahead.reply).await {
                Ok(answer) => answer,
                Err(_) => return false,
            },
            Err(oneshot::error::TryRecvError::Empty) => {
                *self.ahead.borrow_mut() = Some(ahead);
                return false;
            }
            Err(oneshot::error::TryRecvError::Closed) => return false,
        };
        let Ok(rows) = answer else {
            return false;
        };
        self.rows
            .borrow_mut()
            .learn_ahead(&ahead.range, PREFETCH, rows, &ahead.writes);
        true
    }

    /// Keeps the writes a read ahead under way must replay.
    fn note_for_read_ahead(&self, batch: &WriteBatch) {
        let mut ahead = self.ahead.borrow_mut();
        if batch.deletes_all() {
            // Everything is known now; what the read returns is older.
            *ahead = None;
        } else if let Some(ahead) = ahead.as_mut() {
            ahead.record(batch);
        }
    }
}

impl Storage for InstanceStorage {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let mut found = self.get_many(&[key]).await?;
        Ok(found.pop().flatten())
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        let (mut found, missing, version) = {
            let rows = self.rows.borrow();
            let mut found = Vec::with_capacity(keys.len());
            let mut missing = Vec::new();
            for key in keys {
                let cached = rows.get(key);
                if cached.is_none() {
                    missing.push(key.to_string());
                }
                found.push(cached.flatten());
            }
            (found, missing, rows.version())
        };
        if missing.is_empty() {
            return Ok(found);
        }
        let read = self.store.read(self.id.clone(), missing.clone()).await?;
        let mut rows = self.rows.borrow_mut();
        for (key, value) in missing.iter().zip(read) {
            rows.learn_row(version, key, value.clone());
            for (slot, _) in found.iter_mut().zip(keys).filter(|(_, k)| **k == key) {
                *slot = value.clone();
            }
        }
        Ok(found)
    }

    async fn list(&self, options: ListOptions<'_>) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let range = range_of(&options);
        self.learn_ahead(false).await;
        let cached = self.rows.borrow().list(&range);
        if let Some(found) = cached {
            self.read_ahead(&range).await;
            return Ok(found);
        }
        // A read ahead under way may hold what is missing: wait for it rather than read
        // the same rows twice.
        if self.learn_ahead(true).await {
            let cached = self.rows.borrow().list(&range);
            if let Some(found) = cached {
                return Ok(found);
            }
        }
        self.fetch(range).await
    }

    async fn commit(&self, mut batch: WriteBatch) -> Result<(), StorageError> {
        // A broken engine never commits again: its view runs ahead of the file. Commits
        // it sent before it knew are refused by the store (see `StoreHandle::commit`).
        if let Some(e) = self.commits.failure() {
            return Err(e);
        }
        // Applied to the cache at once and queued behind earlier commits; `sync` waits for
        // durability. The engine's lock orders commits of one instance.
        self.rows.borrow_mut().apply(&batch);
        self.note_for_read_ahead(&batch);
        let alarm = match batch.alarm() {
            Some(AlarmWrite::Set(t)) => Some(Some(t)),
            Some(AlarmWrite::Clear) => Some(None),
            None => None,
        };
        if let Some(at) = alarm {
            let stored = if batch.deletes_all() {
                None
            } else {
                self.alarm.get()
            };
            if stored == at {
                // Already in the index: only the in-memory queue needs re-arming.
                batch.take_alarm();
            }
            self.alarm.set(at);
            self.alarm_writes.set(self.alarm_writes.get() + 1);
            self.alarms.borrow_mut().set(&self.id, at);
            self.wake.notify_one();
        }
        match self
            .store
            .commit(self.id.clone(), self.generation, batch)
            .await
        {
            Ok(ack) => {
                self.commits.track(ack);
                Ok(())
            }
            Err(e) => {
                self.commits.track_unsent(e.to_string());
                Err(e)
            }
        }
    }

    async fn sync(&self) -> Result<(), StorageError> {
        self.commits.sync().await
    }
}

impl adapters::Clock for InstanceStorage {
    fn now(&self) -> i64 {
        self.clock.now()
    }
}
