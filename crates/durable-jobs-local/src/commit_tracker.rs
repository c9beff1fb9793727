//! Tracks which of an instance's commits are durable, so that answers wait for their writes
//! while the next steps already run on the in-memory view (like a Durable Object's output
//! gate).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use durable_jobs::StorageError;
use tokio::sync::oneshot;

/// One engine's commits, numbered in the order they were sent to the store (from 1).
#[derive(Default)]
pub(crate) struct CommitTracker {
    /// Commits sent so far: the number of the latest one.
    sent: Cell<u64>,
    /// Every commit up to this number is durable. The store answers in order and refuses
    /// every commit that follows a lost one of the same engine, so an acknowledged commit
    /// means that every earlier one is durable too.
    acked: Cell<u64>,
    /// The first lost commit's number, and why it was lost.
    lost: RefCell<Option<(u64, String)>>,
    /// Waiters by the commit they wait for; commits are numbered in order, so the queue is
    /// sorted and an acknowledgement wakes exactly the waiters it satisfies.
    waiters: RefCell<VecDeque<(u64, oneshot::Sender<()>)>>,
}

impl CommitTracker {
    /// The error every commit returns once one was lost.
    pub fn failure(&self) -> Option<StorageError> {
        self.lost
            .borrow()
            .as_ref()
            .map(|(_, m)| StorageError::new(format!("a commit of this instance was lost: {m}")))
    }

    /// Whether a commit was lost.
    pub fn is_broken(&self) -> bool {
        self.lost.borrow().is_some()
    }

    /// Records that commit `seq` was lost.
    fn fail(&self, seq: u64, message: String) {
        {
            let mut lost = self.lost.borrow_mut();
            if lost.as_ref().is_none_or(|(first, _)| seq < *first) {
                *lost = Some((seq, message));
            }
        }
        // Woken with their sender dropped, the waiters for this commit or a later one see
        // the loss. Those for earlier commits keep waiting: their own may well be durable,
        // and their callers must not be told otherwise.
        self.waiters
            .borrow_mut()
            .retain(|(target, _)| *target < seq);
    }

    fn acknowledge(&self, seq: u64) {
        self.acked.set(self.acked.get().max(seq));
        let mut waiters = self.waiters.borrow_mut();
        while waiters.front().is_some_and(|(target, _)| *target <= seq) {
            if let Some((_, waiter)) = waiters.pop_front() {
                let _ = waiter.send(());
            }
        }
    }

    /// Numbers the next commit.
    fn next(&self) -> u64 {
        let seq = self.sent.get() + 1;
        self.sent.set(seq);
        seq
    }

    /// Follows a queued commit until the store answers.
    pub fn track(self: &Rc<Self>, ack: oneshot::Receiver<Result<(), StorageError>>) {
        let seq = self.next();
        let this = self.clone();
        tokio::task::spawn_local(async move {
            match ack.await {
                Ok(Ok(())) => this.acknowledge(seq),
                Ok(Err(e)) => this.fail(seq, e.to_string()),
                Err(_) => this.fail(seq, "the store stopped".into()),
            }
        });
    }

    /// Records a commit that could not even be queued. It counts as sent and lost: its
    /// writes are already in the in-memory view, which must not be trusted any more.
    pub fn track_unsent(&self, message: String) {
        let seq = self.next();
        self.fail(seq, message);
    }

    /// Waits until every commit tracked so far is durable; fails if one of them was lost.
    pub async fn sync(&self) -> Result<(), StorageError> {
        let target = self.sent.get();
        if !self.settled(target) {
            let (tx, rx) = oneshot::channel();
            self.waiters.borrow_mut().push_back((target, tx));
            let _ = rx.await;
        }
        if self.acked.get() >= target {
            return Ok(());
        }
        Err(self
            .failure()
            .unwrap_or_else(|| StorageError::new("the store stopped")))
    }

    /// Whether the commits up to `target` are all known durable, or one of them lost.
    fn settled(&self, target: u64) -> bool {
        self.acked.get() >= target
            || self
                .lost
                .borrow()
                .as_ref()
                .is_some_and(|(seq, _)| *seq <= target)
    }
}
