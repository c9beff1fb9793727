//! Tracks which of an instance's commits are durable, so that answers wait for their writes
//! while the next steps already run on the in-memory view (like a Durable Object's output
//! gate).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use durable_jobs::StorageError;
use tokio::sync::oneshot;

#[derive(Default)]
pub(crate) struct CommitTracker {
    sent: Cell<u64>,
    acked: Cell<u64>,
    failed: RefCell<Option<String>>,
    /// Waiters by the commit they wait for; commits are numbered in order, so the queue is
    /// sorted and an acknowledgement wakes exactly the waiters it satisfies.
    waiters: RefCell<VecDeque<(u64, oneshot::Sender<()>)>>,
}

impl CommitTracker {
    /// The error every operation returns once a commit was lost.
    pub fn failure(&self) -> Option<StorageError> {
        self.failed
            .borrow()
            .as_ref()
            .map(|m| StorageError::new(format!("a commit of this instance was lost: {m}")))
    }

    pub fn is_broken(&self) -> bool {
        self.failed.borrow().is_some()
    }

    pub fn fail(&self, message: String) {
        self.failed.borrow_mut().get_or_insert(message);
        // Waking with the sender dropped: every waiter then sees the failure.
        self.waiters.borrow_mut().clear();
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

    /// Follows a queued commit until the store answers. The store answers in queue order,
    /// so `acked` only grows.
    pub fn track(self: &Rc<Self>, ack: oneshot::Receiver<Result<(), StorageError>>) {
        let seq = self.sent.get() + 1;
        self.sent.set(seq);
        let this = self.clone();
        tokio::task::spawn_local(async move {
            match ack.await {
                Ok(Ok(())) => this.acknowledge(seq),
                Ok(Err(e)) => this.fail(e.to_string()),
                Err(_) => this.fail("the store stopped".into()),
            }
        });
    }

    /// Waits until every commit tracked so far is durable.
    pub async fn sync(&self) -> Result<(), StorageError> {
        let target = self.sent.get();
        if let Some(e) = self.failure() {
            return Err(e);
        }
        if self.acked.get() >= target {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().push_back((target, tx));
        let _ = rx.await;
        match self.failure() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
