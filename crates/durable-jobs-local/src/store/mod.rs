//! The SQLite store: one thread owns the connection; everything else talks to it through
//! [`StoreHandle`].
//!
//! Commits from many instances are grouped into one transaction (one sync), and each is
//! acknowledged only after that transaction is durable.

mod sqlite;

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

/// An instance's rows and alarm, as loaded when it becomes live.
pub(crate) struct LoadedInstance {
    pub rows: Vec<(String, Vec<u8>)>,
    pub alarm: Option<i64>,
}

/// A page of the alarm index.
pub(crate) type AlarmPage = Vec<(Arc<str>, i64)>;

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
    Load {
        instance: Arc<str>,
        reply: oneshot::Sender<Result<LoadedInstance, StorageError>>,
    },
    /// Alarms with `at < before`, after the cursor `(at, instance)`, in order.
    Alarms {
        after: Option<(i64, Arc<str>)>,
        before: i64,
        limit: usize,
        reply: oneshot::Sender<Result<AlarmPage, StorageError>>,
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

/// Ops queued for the store thread at most (backpressure beyond).
const QUEUE: usize = 65_536;

fn closed() -> StorageError {
    StorageError::new("the store is shut down")
}

impl StoreHandle {
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
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(StoreOp::Commit {
                instance,
                generation,
                batch,
                reply,
            })
            .await
            .map_err(|_| closed())?;
        Ok(rx)
    }

    pub async fn load(&self, instance: Arc<str>) -> Result<LoadedInstance, StorageError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(StoreOp::Load { instance, reply })
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    pub async fn alarms(
        &self,
        after: Option<(i64, Arc<str>)>,
        before: i64,
        limit: usize,
    ) -> Result<AlarmPage, StorageError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(StoreOp::Alarms {
                after,
                before,
                limit,
                reply,
            })
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    pub async fn consume_alarm(&self, instance: Arc<str>, at: i64) {
        let _ = self.tx.send(StoreOp::ConsumeAlarm { instance, at }).await;
    }

    /// Caps the database's size from the next group commit on (`None` lifts the cap);
    /// returns the cap in force, which SQLite never sets below the current size.
    pub async fn set_max_size(&self, bytes: Option<u64>) -> Result<u64, StorageError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(StoreOp::MaxSize { bytes, reply })
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
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
                .load("i".into())
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
