//! One instance's storage: each step is one PostgreSQL transaction.
//!
//! `begin_step` takes a pooled connection, begins a transaction and takes the instance's
//! advisory lock, so the steps of one instance never interleave, whichever processes run
//! them. The step's reads run inside that transaction and its commit ends it; a step that
//! ends without a commit rolls back. No row is kept in memory between steps: another
//! process may have changed any of them, and a backlog of any size costs no memory.
//!
//! A step of an alarm pass is also *fenced*: inside its transaction it checks that the
//! alarm's token is still the one this process took when it claimed the alarm. A process
//! whose lease was taken over (it was paused, or cut off from the database, past its
//! lease) fails such a step and commits nothing.

mod fence;

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use durable_jobs::adapters::{self, ListOptions, StepKind, Storage, WriteBatch};
use durable_jobs::StorageError;

use crate::shared::Shared;
use crate::store::keys::{encode, instance_lock_key, StoredRange};
use crate::store::rows::{self, Notify};
use crate::store::tx::TxConn;

/// Where the instance's step stands.
enum StepState {
    /// No step is open: a read or a commit runs on a connection of its own.
    Idle,
    /// A step's transaction is open.
    Open(Box<TxConn>),
    /// A call of the step is using its transaction now.
    InUse,
}

/// The storage of one instance, used by its engine on its shard's thread.
pub(crate) struct InstanceStorage {
    /// The instance's id as the engine names it.
    id: Arc<str>,
    /// The id as stored (escaped, see `store::keys`).
    stored_id: String,
    /// The key of the instance's advisory lock.
    lock_key: i64,
    /// The runtime's database, clock and leases.
    shared: Arc<Shared>,
    /// The open step, if any.
    step: RefCell<StepState>,
    /// The token of the alarm pass running now: its steps must find it still current.
    pass: Cell<Option<i64>>,
}

impl InstanceStorage {
    /// The storage of instance `id`.
    pub fn new(id: Arc<str>, shared: Arc<Shared>) -> Self {
        InstanceStorage {
            stored_id: encode(&id).into_owned(),
            lock_key: instance_lock_key(shared.store.schema().as_str(), &id),
            id,
            shared,
            step: RefCell::new(StepState::Idle),
            pass: Cell::new(None),
        }
    }

    /// An alarm pass under the lease with `token` begins: its steps are fenced by it.
    pub fn begin_pass(&self, token: i64) {
        self.pass.set(Some(token));
    }

    /// The alarm pass ended.
    pub fn end_pass(&self) {
        self.pass.set(None);
    }

    /// Takes the open step's transaction for one call; `None` when no step is open.
    fn take_step(&self) -> Result<Option<TxConn>, StorageError> {
        let mut state = self.step.borrow_mut();
        match std::mem::replace(&mut *state, StepState::InUse) {
            StepState::Open(tx) => Ok(Some(*tx)),
            StepState::Idle => {
                *state = StepState::Idle;
                Ok(None)
            }
            StepState::InUse => Err(StorageError::new(
                "two calls used one step's transaction at once",
            )),
        }
    }

    /// Hands the step's transaction back after a call.
    fn put_back(&self, tx: TxConn) {
        *self.step.borrow_mut() = StepState::Open(Box::new(tx));
    }

    /// A transaction holding the instance's lock, fenced for an alarm step. The fence's
    /// read is sent right behind the transaction's start: one round trip for both.
    async fn open(&self, kind: StepKind) -> Result<TxConn, StorageError> {
        // The server takes at most `i32::MAX` ms.
        let idle_limit = self.shared.lease_ms().clamp(1, i64::from(i32::MAX));
        let tx = self.shared.store.transaction().await?;
        let begin = tx.begin(self.lock_key, idle_limit);
        if kind == StepKind::Request {
            begin.await?;
            return Ok(tx);
        }
        let sql = &self.shared.store.sql;
        let fence = fence::check(&tx, sql, &self.id, &self.stored_id, self.pass.get());
        let (begun, fenced) = futures::join!(begin, fence);
        begun?;
        fenced?;
        Ok(tx)
    }

    /// Writes `batch` in `tx` and commits; wakes this process's alarm poller when the
    /// batch set an alarm due soon (the other processes hear of it from the notification
    /// sent with the commit).
    ///
    /// While this process runs a pass of the instance, no commit notifies: the alarm is
    /// leased here, so no other process could take it, and the pass's release wakes this
    /// process's poller when it leaves the alarm due. Notifying each step would wake every
    /// process's poller for nothing, several transactions per event.
    async fn write_and_commit(&self, tx: TxConn, batch: WriteBatch) -> Result<(), StorageError> {
        let now = adapters::Clock::now(&self.shared.clock);
        let before = match self.pass.get() {
            Some(_) => i64::MIN,
            None => now.saturating_add(self.shared.poll_interval_ms()),
        };
        let notify = Notify {
            channel: &self.shared.store.channel,
            before,
        };
        let soon = rows::write(
            tx.client()?,
            &self.shared.store.sql,
            &self.stored_id,
            batch,
            notify,
        )
        .await?;
        tx.commit().await?;
        if soon {
            self.shared.wake_poller.notify_one();
        }
        Ok(())
    }
}

impl Storage for InstanceStorage {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let mut found = self.get_many(&[key]).await?;
        Ok(found.pop().flatten())
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        let sql = &self.shared.store.sql;
        match self.take_step()? {
            Some(tx) => {
                let found = rows::get_many(tx.client()?, sql, &self.stored_id, keys).await;
                self.put_back(tx);
                found
            }
            // A read outside a step (the engine reads the metadata so) is one statement:
            // atomic by itself.
            None => {
                let conn = self.shared.store.connection().await?;
                rows::get_many(&conn, sql, &self.stored_id, keys).await
            }
        }
    }

    async fn list(&self, options: ListOptions<'_>) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let sql = &self.shared.store.sql;
        let range = StoredRange::of(&options);
        match self.take_step()? {
            Some(tx) => {
                let found = rows::list(tx.client()?, sql, &self.stored_id, &range).await;
                self.put_back(tx);
                found
            }
            None => {
                let conn = self.shared.store.connection().await?;
                rows::list(&conn, sql, &self.stored_id, &range).await
            }
        }
    }

    async fn commit(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let result = match self.take_step()? {
            Some(tx) => self.write_and_commit(tx, batch).await,
            // A commit outside a step (the engine sets an alarm so) is a step of its own:
            // an alarm pass's when one is running, since requests always open steps.
            None => {
                let kind = match self.pass.get() {
                    Some(_) => StepKind::Alarm,
                    None => StepKind::Request,
                };
                let tx = self.open(kind).await?;
                return self.write_and_commit(tx, batch).await;
            }
        };
        // The commit ended the step's transaction, successful or not.
        *self.step.borrow_mut() = StepState::Idle;
        result
    }

    async fn begin_step(&self, kind: StepKind) -> Result<(), StorageError> {
        if !matches!(*self.step.borrow(), StepState::Idle) {
            return Err(StorageError::new(format!(
                "a step of {} began while another was open",
                self.id
            )));
        }
        let tx = self.open(kind).await?;
        *self.step.borrow_mut() = StepState::Open(Box::new(tx));
        Ok(())
    }

    fn end_step(&self) {
        // Dropping an open transaction rolls it back (see `TxConn`).
        let ended = std::mem::replace(&mut *self.step.borrow_mut(), StepState::Idle);
        drop(ended);
    }
}

impl adapters::Clock for InstanceStorage {
    fn now(&self) -> i64 {
        adapters::Clock::now(&self.shared.clock)
    }
}
