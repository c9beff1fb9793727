//! The platform boundary (spec §5): per-instance storage, its one alarm, and the clock.
//!
//! Each runtime implements these for one job instance: the in-memory harness with a map and
//! a virtual clock, the embedded runtime with SQLite, Durable Objects with their own
//! storage. The engine sees nothing else of the platform.
//!
//! Futures here carry no `Send` bound: Durable Object futures are not `Send`, and every
//! runtime drives one instance from one thread.

pub mod memory;

use std::future::Future;

use crate::errors::{SchedulerError, StorageError};

/// One change to the instance's alarm, committed with the writes of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmWrite {
    /// Fire at this time (ms since the epoch); replaces any earlier alarm.
    Set(i64),
    /// No alarm.
    Clear,
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Store `value` under `key`.
    Put(String, Vec<u8>),
    /// Remove `key`.
    Delete(String),
}

/// The writes of one step, committed all together or not at all (guarantee 1).
///
/// `delete_all` is applied first, then the operations in order, then the alarm change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// Remove every key of the instance before the other writes (and its alarm).
    pub delete_all: bool,
    /// Puts and deletes, in order.
    pub ops: Vec<WriteOp>,
    /// The alarm change, if any.
    pub alarm: Option<AlarmWrite>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, key: impl Into<String>, value: Vec<u8>) -> &mut Self {
        self.ops.push(WriteOp::Put(key.into(), value));
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: impl Into<String>) -> &mut Self {
        self.ops.push(WriteOp::Delete(key.into()));
        self
    }

    /// Sets or clears the alarm as part of the batch.
    pub fn set_alarm(&mut self, at: Option<i64>) -> &mut Self {
        self.alarm = Some(match at {
            Some(t) => AlarmWrite::Set(t),
            None => AlarmWrite::Clear,
        });
        self
    }

    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        !self.delete_all && self.ops.is_empty() && self.alarm.is_none()
    }
}

/// A range read: keys with `prefix`, from `start` (inclusive) to `end` (exclusive), in
/// ascending byte order, at most `limit` of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListOptions<'a> {
    /// Only keys starting with this.
    pub prefix: &'a str,
    /// First key to return (inclusive).
    pub start: Option<&'a str>,
    /// Key to stop before (exclusive).
    pub end: Option<&'a str>,
    /// At most this many entries.
    pub limit: Option<usize>,
}

impl<'a> ListOptions<'a> {
    /// Every key with `prefix`.
    pub fn prefix(prefix: &'a str) -> Self {
        ListOptions {
            prefix,
            ..Default::default()
        }
    }

    /// Sets the first key (inclusive).
    pub fn start(mut self, start: &'a str) -> Self {
        self.start = Some(start);
        self
    }

    /// Sets the key to stop before.
    pub fn end(mut self, end: &'a str) -> Self {
        self.end = Some(end);
        self
    }

    /// Sets the maximum count.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Whether `key` falls inside the range (ignoring the limit).
    pub fn contains(&self, key: &str) -> bool {
        key.starts_with(self.prefix)
            && self.start.is_none_or(|s| key >= s)
            && self.end.is_none_or(|e| key < e)
    }
}

/// One instance's key/value storage (spec §5.1), with an atomic commit of a step's writes.
///
/// Values are opaque bytes (the engine stores JSON).
pub trait Storage {
    /// Reads one key.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, StorageError>>;

    /// Reads several keys at once (one round trip where the platform allows it).
    fn get_many(
        &self,
        keys: &[&str],
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>, StorageError>> {
        async move {
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                out.push(self.get(key).await?);
            }
            Ok(out)
        }
    }

    /// Reads an ordered range of keys.
    fn list(
        &self,
        options: ListOptions<'_>,
    ) -> impl Future<Output = Result<Vec<(String, Vec<u8>)>, StorageError>>;

    /// Applies every write of `batch`, alarm included, atomically.
    ///
    /// An implementation may return once the batch is applied and ordered after every
    /// earlier one, before it is durable, provided [`sync`](Self::sync) waits for it; reads
    /// then see it at once. The engine answers no request, and ends no alarm, before `sync`.
    fn commit(&self, batch: WriteBatch) -> impl Future<Output = Result<(), StorageError>>;

    /// Waits until every batch committed so far is durable. Once this fails, the instance's
    /// in-memory view may hold writes that were lost: the runtime must discard it.
    fn sync(&self) -> impl Future<Output = Result<(), StorageError>> {
        async { Ok(()) }
    }

    /// Stores one value.
    fn put(&self, key: &str, value: Vec<u8>) -> impl Future<Output = Result<(), StorageError>> {
        let mut batch = WriteBatch::new();
        batch.put(key, value);
        self.commit(batch)
    }

    /// Stores several values atomically.
    fn put_batch(
        &self,
        entries: Vec<(String, Vec<u8>)>,
    ) -> impl Future<Output = Result<(), StorageError>> {
        let mut batch = WriteBatch::new();
        for (k, v) in entries {
            batch.put(k, v);
        }
        self.commit(batch)
    }

    /// Removes one key; says whether it existed.
    fn delete(&self, key: &str) -> impl Future<Output = Result<bool, StorageError>> {
        async move {
            let existed = self.get(key).await?.is_some();
            let mut batch = WriteBatch::new();
            batch.delete(key);
            self.commit(batch).await?;
            Ok(existed)
        }
    }

    /// Removes every key of the instance and its alarm.
    fn delete_all(&self) -> impl Future<Output = Result<(), StorageError>> {
        self.commit(WriteBatch {
            delete_all: true,
            ops: Vec::new(),
            alarm: Some(AlarmWrite::Clear),
        })
    }
}

/// The instance's single durable alarm (spec §5.2).
///
/// The engine changes the alarm through [`WriteBatch::alarm`] so that it commits with the
/// step; these methods serve inspection and direct use.
pub trait Scheduler {
    /// Sets the alarm to `at` (ms since the epoch).
    fn schedule(&self, at: i64) -> impl Future<Output = Result<(), SchedulerError>>;
    /// Removes the alarm.
    fn cancel(&self) -> impl Future<Output = Result<(), SchedulerError>>;
    /// The alarm's time, if one is set.
    fn scheduled(&self) -> impl Future<Output = Result<Option<i64>, SchedulerError>>;
}

/// What the engine needs of the platform besides storage (spec §5.3).
pub trait Runtime {
    /// The platform's name for this instance (used in logs and as a jitter seed).
    fn instance_key(&self) -> &str;
    /// Milliseconds since the Unix epoch, on the platform's clock.
    fn now(&self) -> i64;
}
