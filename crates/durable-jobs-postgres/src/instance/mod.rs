//! One instance's storage: its steps run in PostgreSQL transactions.
//!
//! A step runs inside a transaction holding the instance's advisory lock, so the steps of
//! one instance never interleave, whichever processes run them. Consecutive steps of the
//! instance in this process share the transaction, which commits when a caller waits for
//! durability (see `group`); a step that ends without writing leaves it as it was. No row
//! is kept in memory between steps: another process may have changed any of them, and a
//! backlog of any size costs no memory.
//!
//! A step of an alarm pass is also *fenced*: inside its transaction it checks that the
//! alarm's token is still the one this process took when it claimed the alarm. A process
//! whose lease was taken over (it was paused, or cut off from the database, past its
//! lease) fails such a step and commits nothing.

mod fence;
mod group;

use std::cell::Cell;
use std::sync::Arc;

use deadpool_postgres::Object;
use durable_jobs::adapters::{self, ListOptions, StepKind, Storage, WriteBatch};
use durable_jobs::StorageError;

use crate::shared::Shared;
use crate::store::keys::{encode, instance_lock_key, StoredRange};
use crate::store::rows;
use crate::store::tx::TxConn;
use group::TxGroup;

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
    /// The open transaction and the steps in it.
    group: TxGroup,
    /// The token of the alarm pass running now: its steps must find it still current.
    pass: Cell<Option<i64>>,
}

impl InstanceStorage {
    /// The storage of instance `id`.
    pub fn new(id: Arc<str>, shared: Arc<Shared>) -> Self {
        let stored_id = encode(&id).into_owned();
        InstanceStorage {
            lock_key: instance_lock_key(shared.store.schema().as_str(), &id),
            group: TxGroup::new(shared.clone(), stored_id.clone()),
            stored_id,
            id,
            shared,
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

    /// The kind of a step opened for a commit outside one: an alarm pass's when one is
    /// running, since requests always open steps.
    fn current_kind(&self) -> StepKind {
        match self.pass.get() {
            Some(_) => StepKind::Alarm,
            None => StepKind::Request,
        }
    }

    /// A new transaction holding the instance's lock, fenced for an alarm step. The
    /// fence's read is sent right behind the transaction's start: one round trip for both.
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
        let fence = fence::check(&tx, sql, &self.stored_id, self.pass.get());
        let (begun, fenced) = futures::join!(begin, fence);
        begun?;
        if !fenced? {
            return Err(fence::fenced_off(&self.id, self.pass.get()));
        }
        Ok(tx)
    }

    /// Begins a step: in the open transaction when there is one with room (an alarm step
    /// checks its fence in it first), else in a new one.
    async fn start_step(&self, kind: StepKind) -> Result<(), StorageError> {
        if self.group.in_step() {
            return Err(StorageError::new(format!(
                "a step of {} began while another was open",
                self.id
            )));
        }
        loop {
            self.group.settle().await;
            if !self.group.joinable() {
                break;
            }
            if kind == StepKind::Request {
                self.group.joined();
                return Ok(());
            }
            match self.fence_in_tx().await? {
                Some(true) => {
                    self.group.joined();
                    return Ok(());
                }
                Some(false) => return Err(fence::fenced_off(&self.id, self.pass.get())),
                // Lost meanwhile: look again.
                None => continue,
            }
        }
        // A full transaction commits first (its steps' callers learn how it went); a new
        // one then waits for its lock.
        if self.group.commit_full().await {
            self.shared.wake_poller.notify_one();
        }
        let tx = self.open(kind).await?;
        self.group.opened(tx);
        Ok(())
    }

    /// Hands the transaction back after a statement; a failure loses it (the server
    /// refuses anything after a failed statement), and every step in it.
    fn after_statement<T>(
        &self,
        tx: TxConn,
        result: Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        match result {
            Ok(value) => {
                self.group.give_back(tx);
                Ok(value)
            }
            Err(error) => {
                self.group.poison(tx);
                Err(error)
            }
        }
    }

    /// Checks the alarm's fence inside the open transaction; `None` when none is open.
    async fn fence_in_tx(&self) -> Result<Option<bool>, StorageError> {
        let Some(tx) = self.group.claim()? else {
            return Ok(None);
        };
        let sql = &self.shared.store.sql;
        let checked = match tx.client() {
            Ok(conn) => fence::check_on(conn, sql, &self.stored_id, self.pass.get()).await,
            Err(error) => Err(error),
        };
        self.after_statement(tx, checked).map(Some)
    }

    /// Adds `batch` to the writes of the open transaction, for the step open now. It is
    /// sent and committed with the transaction: the engine waits for that before it
    /// answers, and before user code runs on what an alarm step claimed.
    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        if !self.group.in_step() {
            return Err(StorageError::new(format!(
                "a commit of {} came outside a step",
                self.id
            )));
        }
        // While this process runs a pass of the instance, no commit announces its alarm:
        // the alarm is leased here, so no other process could take it, and the pass's
        // release wakes this process's poller when it leaves the alarm due. Announcing
        // each step would wake every process's poller for nothing.
        let announce_before = match self.pass.get() {
            Some(_) => i64::MIN,
            None => {
                let now = adapters::Clock::now(&self.shared.clock);
                now.saturating_add(self.shared.poll_interval_ms())
            }
        };
        self.group.written(batch, announce_before);
        Ok(())
    }

    /// Waits for every step written so far; wakes this process's poller when one of them
    /// set an alarm due soon (the other processes hear of it from the notification sent
    /// with the commit).
    async fn sync_group(&self) -> Result<(), StorageError> {
        if self.group.sync().await? {
            self.shared.wake_poller.notify_one();
        }
        Ok(())
    }

    /// Reads in the open transaction (which holds the writes of steps not committed yet),
    /// else on a connection of its own: one statement is atomic by itself.
    /// Returns what was read, and whether it was read in the transaction.
    async fn read<T>(
        &self,
        read: impl AsyncFn(&Object) -> Result<T, StorageError>,
    ) -> Result<(T, bool), StorageError> {
        self.group.settle().await;
        match self.group.claim()? {
            Some(tx) => {
                let found = match tx.client() {
                    Ok(conn) => read(conn).await,
                    Err(error) => Err(error),
                };
                self.after_statement(tx, found).map(|found| (found, true))
            }
            None => {
                let conn = self.shared.store.connection().await?;
                read(&conn).await.map(|found| (found, false))
            }
        }
    }
}

impl Storage for InstanceStorage {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let mut found = self.get_many(&[key]).await?;
        Ok(found.pop().flatten())
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        self.group.settle().await;
        let mut found: Vec<Option<Option<Vec<u8>>>> = keys
            .iter()
            .map(|key| self.group.known_value(&encode(key)))
            .collect();
        let unknown: Vec<&str> = keys
            .iter()
            .zip(&found)
            .filter(|(_, known)| known.is_none())
            .map(|(key, _)| *key)
            .collect();
        if !unknown.is_empty() {
            let sql = &self.shared.store.sql;
            let stored_id = &self.stored_id;
            let unknown = &unknown;
            let (read, in_tx) = self
                .read(async |conn| rows::get_many(conn, sql, stored_id, unknown).await)
                .await?;
            if in_tx {
                let stored = unknown.iter().map(|key| encode(key).into_owned());
                self.group.saw(stored.zip(read.iter().cloned()));
            }
            let mut read = read.into_iter();
            for slot in found.iter_mut().filter(|slot| slot.is_none()) {
                *slot = Some(read.next().flatten());
            }
        }
        Ok(found.into_iter().map(Option::flatten).collect())
    }

    async fn list(&self, options: ListOptions<'_>) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        // The server must hold every write of the transaction to answer a range.
        self.group.settle().await;
        if self.group.send_unsent().await? {
            self.shared.wake_poller.notify_one();
        }
        let sql = &self.shared.store.sql;
        let range = StoredRange::of(&options);
        let stored_id = &self.stored_id;
        let (listed, _) = self
            .read(async |conn| rows::list(conn, sql, stored_id, &range).await)
            .await?;
        Ok(listed)
    }

    async fn commit(&self, batch: WriteBatch) -> Result<(), StorageError> {
        if !self.group.in_step() {
            // A commit outside a step (the engine sets an alarm so) is a step of its own.
            self.start_step(self.current_kind()).await?;
        }
        self.write(batch)
    }

    async fn begin_step(&self, kind: StepKind) -> Result<(), StorageError> {
        self.start_step(kind).await
    }

    fn end_step(&self) {
        self.group.step_ended();
    }

    async fn sync(&self) -> Result<(), StorageError> {
        self.sync_group().await
    }
}

impl adapters::Clock for InstanceStorage {
    fn now(&self) -> i64 {
        adapters::Clock::now(&self.shared.clock)
    }
}
