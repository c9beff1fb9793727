//! Group commit: consecutive steps of one instance share one transaction.
//!
//! A commit per step costs a disk flush per step, and a busy instance (hundreds of callers
//! enqueueing into one pool instance) would do nothing else. So a step's commit only
//! writes its rows into the open transaction; the transaction commits when a caller waits
//! for durability (`sync`) and no step is running or waiting to join. Steps that queued up
//! behind the instance's lock meanwhile join the transaction and are made durable by that
//! one commit. Nobody is answered before the commit that holds their step.
//!
//! Transactions follow each other strictly: no new one opens while the last one commits,
//! so each one holds the steps numbered `(resolved, written]`, and when it fails, exactly
//! those are lost. A failed statement aborts the transaction (PostgreSQL refuses anything
//! after it), so any database error inside it loses every step in it.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use durable_jobs::adapters::WriteBatch;
use durable_jobs::StorageError;
use tokio::sync::Notify;

use crate::shared::Shared;
use crate::store::rows::{self, UnsentWrites};
use crate::store::tx::TxConn;

/// Losses remembered: a `sync` only asks about steps written since it began waiting, and
/// transactions are rarely lost, so a few suffice.
const LOSSES_KEPT: usize = 64;

/// The most steps one transaction holds: it holds the instance's lock until it commits,
/// and steps of the instance in other processes wait for that lock.
pub(super) const MAX_STEPS: usize = 128;

/// Where the instance's transaction stands.
enum TxState {
    /// None is open.
    Idle,
    /// One is open, holding the instance's lock.
    Open(Box<TxConn>),
    /// A statement runs in the open one now.
    InUse,
    /// It is committing.
    Committing,
}

/// The instance's transaction and the steps written into it.
pub(super) struct TxGroup {
    /// The database, and where announcements go.
    shared: Arc<Shared>,
    /// The instance's id as stored.
    stored_id: String,
    state: RefCell<TxState>,
    /// What the steps in the open transaction wrote, sent when it commits.
    unsent: RefCell<UnsentWrites>,
    /// Rows read in the open transaction (stored key → value), and rows it sent: the
    /// transaction holds the instance's lock, so no other process changes them before it
    /// ends.
    seen: RefCell<HashMap<String, Option<Vec<u8>>>>,
    /// A step is open (from its begin to its commit or end).
    in_step: Cell<bool>,
    /// Steps written into the open transaction.
    steps: Cell<usize>,
    /// Steps committed so far, in this process: their sequence numbers.
    written: Cell<u64>,
    /// The last step known durable or lost.
    resolved: Cell<u64>,
    /// The latest transactions lost, as ranges of steps `(after, through]`.
    losses: RefCell<VecDeque<(u64, u64)>>,
    /// A step ended, a statement or a commit finished, a transaction was lost.
    changed: Notify,
}

impl TxGroup {
    /// No transaction open, nothing written, for the instance stored as `stored_id`.
    pub fn new(shared: Arc<Shared>, stored_id: String) -> Self {
        TxGroup {
            shared,
            stored_id,
            state: RefCell::new(TxState::Idle),
            unsent: RefCell::default(),
            seen: RefCell::default(),
            in_step: Cell::new(false),
            steps: Cell::new(0),
            written: Cell::new(0),
            resolved: Cell::new(0),
            losses: RefCell::new(VecDeque::new()),
            changed: Notify::new(),
        }
    }

    /// Whether a step is open.
    pub fn in_step(&self) -> bool {
        self.in_step.get()
    }

    /// Whether an open transaction can take one more step now, without waiting.
    pub fn joinable(&self) -> bool {
        matches!(*self.state.borrow(), TxState::Open(_)) && self.steps.get() < MAX_STEPS
    }

    /// Waits until no statement or commit runs in the transaction: it is then open and
    /// free, or there is none.
    pub async fn settle(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if matches!(*self.state.borrow(), TxState::Idle | TxState::Open(_)) {
                return;
            }
            changed.await;
        }
    }

    /// Takes the open transaction for one statement (`None` if none is open): give it back
    /// with [`give_back`](Self::give_back), or report its failure with
    /// [`poison`](Self::poison). Call after [`settle`](Self::settle), with no await
    /// between.
    pub fn claim(&self) -> Result<Option<TxConn>, StorageError> {
        let mut state = self.state.borrow_mut();
        match std::mem::replace(&mut *state, TxState::InUse) {
            TxState::Open(tx) => Ok(Some(*tx)),
            TxState::Idle => {
                *state = TxState::Idle;
                Ok(None)
            }
            other => {
                *state = other;
                Err(StorageError::new(
                    "two calls used one instance's transaction at once",
                ))
            }
        }
    }

    /// Gives the transaction back after a statement that succeeded.
    pub fn give_back(&self, tx: TxConn) {
        *self.state.borrow_mut() = TxState::Open(Box::new(tx));
        self.changed.notify_waiters();
    }

    /// A new transaction, open and holding the lock, for a step that begins now.
    pub fn opened(&self, tx: TxConn) {
        // What an earlier transaction saw may have changed since it released the lock.
        self.seen.borrow_mut().clear();
        *self.state.borrow_mut() = TxState::Open(Box::new(tx));
        self.steps.set(0);
        self.in_step.set(true);
    }

    /// A step begins in the open transaction.
    pub fn joined(&self) {
        self.in_step.set(true);
    }

    /// The step open now commits `batch`: its writes join those of the transaction, sent
    /// when it commits. `announce_before`: an alarm set before this time is announced.
    pub fn written(&self, batch: WriteBatch, announce_before: i64) {
        self.unsent.borrow_mut().add(batch, announce_before);
        self.in_step.set(false);
        self.steps.set(self.steps.get() + 1);
        self.written.set(self.written.get() + 1);
        self.changed.notify_waiters();
    }

    /// What the open transaction knows of the row stored under `stored`: `None` if it
    /// must be read, `Some(None)` if it is absent.
    pub fn known_value(&self, stored: &str) -> Option<Option<Vec<u8>>> {
        if let Some(value) = self.unsent.borrow().get(stored) {
            return Some(value.map(<[u8]>::to_vec));
        }
        self.seen.borrow().get(stored).cloned()
    }

    /// Remembers rows read in the open transaction.
    pub fn saw(&self, rows: impl IntoIterator<Item = (String, Option<Vec<u8>>)>) {
        self.seen.borrow_mut().extend(rows);
    }

    /// Sends the unsent writes into the open transaction, which must be free (a range
    /// read needs the server to hold them). Returns whether an alarm was announced.
    pub async fn send_unsent(&self) -> Result<bool, StorageError> {
        if self.unsent.borrow().is_empty() {
            return Ok(false);
        }
        let Some(tx) = self.claim()? else {
            return Ok(false);
        };
        let sent = self.send_on(&tx).await;
        match sent {
            Ok(announced) => {
                self.give_back(tx);
                Ok(announced)
            }
            Err(error) => {
                self.poison(tx);
                Err(error)
            }
        }
    }

    /// Sends the unsent writes on `tx`.
    async fn send_on(&self, tx: &TxConn) -> Result<bool, StorageError> {
        let unsent = std::mem::take(&mut *self.unsent.borrow_mut());
        unsent.remember_in(&mut self.seen.borrow_mut());
        let store = &self.shared.store;
        let conn = tx.client()?;
        rows::write(conn, &store.sql, &self.stored_id, &store.channel, unsent).await
    }

    /// The step open now ended without writing. A transaction holding no step is rolled
    /// back (dropping it does), which frees the lock at once.
    pub fn step_ended(&self) {
        if !self.in_step.replace(false) {
            return;
        }
        let mut state = self.state.borrow_mut();
        match &*state {
            TxState::Open(_) if self.steps.get() == 0 => {
                *state = TxState::Idle;
                self.seen.borrow_mut().clear();
            }
            // Its statement's future was dropped, and the transaction with it.
            TxState::InUse => {
                drop(state);
                self.lose();
                return;
            }
            _ => {}
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// A statement in the transaction failed (`tx`, the transaction, is dropped, which
    /// rolls it back): every step in it is lost.
    pub fn poison(&self, tx: TxConn) {
        drop(tx);
        self.lose();
    }

    fn lose(&self) {
        *self.state.borrow_mut() = TxState::Idle;
        self.in_step.set(false);
        self.steps.set(0);
        *self.unsent.borrow_mut() = UnsentWrites::default();
        self.seen.borrow_mut().clear();
        let written = self.written.get();
        self.record_loss(written);
        self.changed.notify_waiters();
    }

    /// The steps after the last resolved one, through `through`, were lost.
    fn record_loss(&self, through: u64) {
        let after = self.resolved.get();
        if through <= after {
            return;
        }
        let mut losses = self.losses.borrow_mut();
        if losses.len() == LOSSES_KEPT {
            losses.pop_front();
        }
        losses.push_back((after, through));
        self.resolved.set(through);
    }

    /// Whether a step in `(after, through]` was lost.
    fn lost_between(&self, after: u64, through: u64) -> bool {
        self.losses
            .borrow()
            .iter()
            .any(|&(from, to)| from < through && to > after)
    }

    /// Waits until every step written so far is durable: commits the open transaction
    /// once no step is open and none waits to join. Fails if one written since the last
    /// resolved one was lost: the caller's own steps are among those, since it waits as
    /// soon as its commit returns. Returns whether the poller should be woken.
    pub async fn sync(&self) -> Result<bool, StorageError> {
        let after = self.resolved.get();
        let target = self.written.get();
        let mut wake = false;
        let mut let_others_join = true;
        loop {
            if self.resolved.get() >= target {
                if self.lost_between(after, target) {
                    return Err(lost());
                }
                return Ok(wake);
            }
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let free = matches!(*self.state.borrow(), TxState::Open(_)) && !self.in_step.get();
            if !free {
                changed.await;
                let_others_join = true;
                continue;
            }
            if let_others_join {
                // Steps waiting for the instance's lock run first: they join the
                // transaction and share its commit.
                let_others_join = false;
                tokio::task::yield_now().await;
                continue;
            }
            let_others_join = true;
            wake |= self.commit().await.unwrap_or(false);
        }
    }

    /// Commits the open transaction if it is full (and free, as it is after
    /// [`settle`](Self::settle) between steps). Returns whether the poller should be woken.
    pub async fn commit_full(&self) -> bool {
        let full = matches!(*self.state.borrow(), TxState::Open(_))
            && !self.in_step.get()
            && self.steps.get() >= MAX_STEPS;
        full && self.commit().await.unwrap_or(false)
    }

    /// Commits the open transaction, which must be free. Returns whether the poller should
    /// be woken, `None` if the commit failed.
    async fn commit(&self) -> Option<bool> {
        let tx = match std::mem::replace(&mut *self.state.borrow_mut(), TxState::Committing) {
            TxState::Open(tx) => *tx,
            other => {
                *self.state.borrow_mut() = other;
                return Some(false);
            }
        };
        let through = self.written.get();
        self.steps.set(0);
        let guard = CommitGuard { group: self };
        let committed = match self.send_on(&tx).await {
            Ok(announced) => tx.commit().await.map(|()| announced),
            Err(error) => Err(error),
        };
        std::mem::forget(guard);
        *self.state.borrow_mut() = TxState::Idle;
        self.seen.borrow_mut().clear();
        let outcome = match committed {
            Ok(announced) => {
                self.resolved.set(through);
                Some(announced)
            }
            Err(error) => {
                tracing::warn!(%error, "a transaction of an instance failed to commit");
                self.record_loss(through);
                None
            }
        };
        self.changed.notify_waiters();
        outcome
    }
}

fn lost() -> StorageError {
    StorageError::new("a transaction of the instance failed; its steps were not committed")
}

/// Declares a commit's steps lost if its future is dropped before the commit answered:
/// its outcome is unknown, so nobody may be told they are durable.
struct CommitGuard<'a> {
    group: &'a TxGroup,
}

impl Drop for CommitGuard<'_> {
    fn drop(&mut self) {
        self.group.lose();
    }
}
