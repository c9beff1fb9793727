//! The SQLite store: one thread owns the connection; everything else talks to it through
//! [`StoreHandle`].
//!
//! Commits from many instances are grouped into one transaction (one sync), and each is
//! acknowledged only after that transaction is durable.

mod checkpoint;
mod group;
pub(crate) mod lock;
pub(crate) mod reads;
pub(crate) mod sqlite;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use durable_jobs::adapters::WriteBatch;
use durable_jobs::StorageError;
use tokio::sync::{mpsc, oneshot};

use crate::error::OpenError;

/// How hard a commit tries to survive a power loss.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous = NORMAL` in WAL mode: a commit survives a crash of the process; a power
    /// loss may lose the last commits (never corrupts). The default.
    #[default]
    Normal,
    /// `synchronous = FULL`: every group commit is synced to disk before it is acknowledged.
    Full,
}

/// What loading an instance reads: its first rows and its alarm.
pub(crate) struct LoadedInstance {
    /// The instance's first rows in key order, at most the number asked for.
    pub rows: Rows,
    /// Whether `rows` is every row of the instance.
    pub complete: bool,
    /// The instance's alarm in the index.
    pub alarm: Option<i64>,
}

/// A range of one instance's rows to read: half-open, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RowRange {
    /// The first key (inclusive).
    pub start: String,
    /// The key to stop before; `None`: the end of the key space.
    pub end: Option<String>,
    /// At most this many rows.
    pub limit: Option<usize>,
}

/// Rows of one instance: keys and values, in key order.
pub(crate) type Rows = Vec<(String, Vec<u8>)>;

/// A page of the alarm index.
pub(crate) type AlarmPage = Vec<(Arc<str>, i64)>;

/// Stored instances, each with the values of the keys asked for.
pub(crate) type InstanceRows = Vec<(String, Vec<Option<Vec<u8>>>)>;

pub(crate) enum StoreOp {
    Commit {
        instance: Arc<str>,
        /// The generation of the engine that made it: its fencing token (see
        /// [`StoreHandle::commit`]).
        generation: u64,
        batch: WriteBatch,
        /// Answered once the batch is durable.
        reply: oneshot::Sender<Result<(), StorageError>>,
    },
    /// An instance's first `rows` rows and its alarm.
    Load {
        instance: Arc<str>,
        rows: usize,
        reply: oneshot::Sender<Result<LoadedInstance, StorageError>>,
    },
    /// Rows of an instance by key. Reads see every commit queued before them, durable
    /// or not: an instance's rows are only written by its own engine, which a lost commit
    /// fences off.
    Read {
        instance: Arc<str>,
        keys: Vec<String>,
        reply: oneshot::Sender<Result<Vec<Option<Vec<u8>>>, StorageError>>,
    },
    /// A key range of an instance's rows, in order; like `Read`, it sees queued commits.
    List {
        instance: Arc<str>,
        range: RowRange,
        reply: oneshot::Sender<Result<Rows, StorageError>>,
    },
    /// Alarms with `at < before`, after the cursor `(at, instance)`, in order.
    Alarms {
        after: Option<(i64, Arc<str>)>,
        before: i64,
        limit: usize,
        reply: oneshot::Sender<Result<AlarmPage, StorageError>>,
    },
    /// Up to `limit` stored instances whose id starts with `prefix`, after `after`, in id
    /// order, each with its values under `keys`.
    Instances {
        prefix: String,
        after: Option<String>,
        keys: Vec<String>,
        limit: usize,
        reply: oneshot::Sender<Result<InstanceRows, StorageError>>,
    },
    /// Removes an alarm that fired and was not set again, if it still has that time.
    ConsumeAlarm { instance: Arc<str>, at: i64 },
    /// Caps the database's size for the commits queued after this op (`None`: SQLite's
    /// own maximum); answers the cap now in force, in bytes.
    MaxSize {
        bytes: Option<u64>,
        reply: oneshot::Sender<Result<u64, StorageError>>,
    },
}

/// Where the database lives.
#[derive(Debug, Clone)]
pub enum Location {
    /// A file.
    File(PathBuf),
    /// A private in-memory database (tests).
    Memory,
}

/// A cheap handle on the store thread.
#[derive(Clone)]
pub(crate) struct StoreHandle {
    tx: mpsc::Sender<StoreOp>,
}

/// Reaches the store without keeping it open: the store thread ends once every
/// [`StoreHandle`] is gone, whatever weak ones remain.
#[derive(Clone)]
pub(crate) struct WeakStoreHandle {
    tx: mpsc::WeakSender<StoreOp>,
}

impl WeakStoreHandle {
    /// The store, unless it is shut down.
    pub fn upgrade(&self) -> Option<StoreHandle> {
        self.tx.upgrade().map(|tx| StoreHandle { tx })
    }
}

/// Ops queued for the store thread at most (backpressure beyond).
const QUEUE: usize = 65_536;

fn closed() -> StorageError {
    StorageError::new("the store is shut down")
}

impl StoreHandle {
    /// A handle that does not keep the store open.
    pub fn downgrade(&self) -> WeakStoreHandle {
        WeakStoreHandle {
            tx: self.tx.downgrade(),
        }
    }

    /// Opens the database, capped at `max_size` bytes if given, and starts its thread.
    pub fn open(
        location: Location,
        durability: Durability,
        max_size: Option<u64>,
    ) -> Result<(Self, JoinHandle<()>), OpenError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("durable-jobs-store".into())
            .spawn(
                move || match sqlite::Db::open(&location, durability, max_size) {
                    Ok(db) => {
                        let _ = ready_tx.send(Ok(()));
                        db.run(rx);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                },
            )
            .map_err(|e| OpenError::Io {
                message: format!("cannot start the store thread: {e}"),
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok((StoreHandle { tx }, thread)),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(OpenError::Io {
                message: "the store thread stopped while opening".into(),
            }),
        }
    }

    /// Queues a batch behind every earlier one; the receiver answers once it is durable.
    ///
    /// `generation` numbers the engine that made the batch: each load of an instance gets
    /// a higher one. Once a commit of an instance is lost, the store refuses every later
    /// commit of that instance from the same or an older generation, since those were
    /// computed on top of the lost writes; only an engine loaded afresh from the file
    /// commits again.
    pub async fn commit(
        &self,
        instance: Arc<str>,
        generation: u64,
        batch: WriteBatch,
    ) -> Result<oneshot::Receiver<Result<(), StorageError>>, StorageError> {
        self.send(|reply| StoreOp::Commit {
            instance,
            generation,
            batch,
            reply,
        })
        .await
    }

    /// Sends an op built around a reply channel; the receiver answers it later.
    async fn send<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, StorageError>>) -> StoreOp,
    ) -> Result<oneshot::Receiver<Result<T, StorageError>>, StorageError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(op(reply)).await.map_err(|_| closed())?;
        Ok(rx)
    }

    /// Sends an op built around a reply channel and waits for the answer.
    async fn ask<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, StorageError>>) -> StoreOp,
    ) -> Result<T, StorageError> {
        self.send(op).await?.await.map_err(|_| closed())?
    }

    /// An instance's alarm and first `rows` rows, with whether those are all of them.
    pub async fn load(
        &self,
        instance: Arc<str>,
        rows: usize,
    ) -> Result<LoadedInstance, StorageError> {
        self.ask(|reply| StoreOp::Load {
            instance,
            rows,
            reply,
        })
        .await
    }

    /// Rows of an instance by key, as of every commit queued so far.
    pub async fn read(
        &self,
        instance: Arc<str>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        self.ask(|reply| StoreOp::Read {
            instance,
            keys,
            reply,
        })
        .await
    }

    /// Sends a range read of an instance's rows, as of every commit queued so far; the
    /// receiver answers it later.
    pub async fn list_later(
        &self,
        instance: Arc<str>,
        range: RowRange,
    ) -> Result<oneshot::Receiver<Result<Rows, StorageError>>, StorageError> {
        self.send(|reply| StoreOp::List {
            instance,
            range,
            reply,
        })
        .await
    }

    /// A range of an instance's rows, as of every commit queued so far.
    pub async fn list(&self, instance: Arc<str>, range: RowRange) -> Result<Rows, StorageError> {
        self.list_later(instance, range)
            .await?
            .await
            .map_err(|_| closed())?
    }

    /// Alarms due before `before`, after the cursor, in order.
    pub async fn alarms(
        &self,
        after: Option<(i64, Arc<str>)>,
        before: i64,
        limit: usize,
    ) -> Result<AlarmPage, StorageError> {
        self.ask(|reply| StoreOp::Alarms {
            after,
            before,
            limit,
            reply,
        })
        .await
    }

    /// Up to `limit` stored instances whose id starts with `prefix`, after `after`, in id
    /// order, with their values under `keys`.
    pub async fn instances(
        &self,
        prefix: String,
        after: Option<String>,
        keys: Vec<String>,
        limit: usize,
    ) -> Result<InstanceRows, StorageError> {
        self.ask(|reply| StoreOp::Instances {
            prefix,
            after,
            keys,
            limit,
            reply,
        })
        .await
    }

    pub async fn consume_alarm(&self, instance: Arc<str>, at: i64) {
        let _ = self.tx.send(StoreOp::ConsumeAlarm { instance, at }).await;
    }

    /// Caps the database's size from the next group commit on (`None` lifts the cap);
    /// returns the cap in force, which SQLite never sets below the current size.
    pub async fn set_max_size(&self, bytes: Option<u64>) -> Result<u64, StorageError> {
        self.ask(|reply| StoreOp::MaxSize { bytes, reply }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(key: &str, bytes: usize) -> WriteBatch {
        let mut batch = WriteBatch::new();
        batch.put(key, vec![7; bytes]);
        batch
    }

    async fn commit(store: &StoreHandle, generation: u64, batch: WriteBatch) -> bool {
        let ack = store.commit("i".into(), generation, batch).await.unwrap();
        ack.await.unwrap().is_ok()
    }

    /// Many instances commit and read at once, so that reads arrive while groups are being
    /// written: each read sees every commit its instance sent before it.
    #[test]
    fn reads_see_their_instances_commits_while_groups_are_written() {
        use futures::future::join_all;
        use std::sync::atomic::Ordering;
        futures::executor::block_on(async {
            let (store, thread) = StoreHandle::open(Location::Memory, Durability::Normal, None)
                .expect("open an in-memory store");
            let before = sqlite::READS_DURING_WRITES.load(Ordering::Relaxed);
            let instances = (0..300).map(|n| {
                let store = store.clone();
                async move {
                    let id: Arc<str> = format!("i{n}").into();
                    for round in 0..40u8 {
                        let mut batch = WriteBatch::new();
                        batch.put(format!("q:{round:03}"), vec![round]);
                        if round > 0 {
                            batch.delete(format!("q:{:03}", round - 1));
                        }
                        let ack = store.commit(id.clone(), 1, batch).await.unwrap();
                        let range = RowRange {
                            start: "q:".into(),
                            end: Some("q;".into()),
                            limit: Some(2),
                        };
                        let rows = store.list(id.clone(), range).await.unwrap();
                        assert_eq!(rows, [(format!("q:{round:03}"), vec![round])], "{id}");
                        let read = store.read(id.clone(), vec![format!("q:{round:03}")]);
                        assert_eq!(read.await.unwrap(), [Some(vec![round])]);
                        if round % 8 == 0 {
                            ack.await.unwrap().unwrap();
                        }
                    }
                }
            });
            join_all(instances).await;
            let during = sqlite::READS_DURING_WRITES.load(Ordering::Relaxed) - before;
            assert!(
                during > 0,
                "no read arrived while a group was being written"
            );
            drop(store);
            thread.join().unwrap();
        });
    }

    #[test]
    fn commits_made_on_top_of_a_lost_one_are_refused_until_a_reload() {
        futures::executor::block_on(async {
            let (store, thread) = StoreHandle::open(Location::Memory, Durability::Normal, None)
                .expect("open an in-memory store");
            assert!(commit(&store, 1, batch("a", 10)).await);
            store.set_max_size(Some(1)).await.unwrap();
            assert!(
                !commit(&store, 1, batch("big", 100_000)).await,
                "over the cap"
            );
            store.set_max_size(None).await.unwrap();
            // Fits now, but its engine's view held the lost write: refused.
            assert!(!commit(&store, 1, batch("b", 10)).await);
            // An engine loaded afresh commits again, and the fence is gone.
            assert!(commit(&store, 2, batch("c", 10)).await);
            assert!(commit(&store, 2, batch("d", 10)).await);
            let keys: Vec<String> = store
                .load("i".into(), 10)
                .await
                .unwrap()
                .rows
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            assert_eq!(keys, ["a", "c", "d"]);
            drop(store);
            thread.join().unwrap();
        });
    }
}
