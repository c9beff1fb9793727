//! The group commit being built, and the fence that refuses commits made on top of a lost
//! one.

use std::collections::HashMap;
use std::sync::Arc;

use durable_jobs::adapters::WriteBatch;
use durable_jobs::StorageError;
use tokio::sync::oneshot;

/// A commit waiting for its group's transaction.
pub(super) struct PendingCommit {
    pub instance: Arc<str>,
    /// The generation of the engine that made it.
    pub generation: u64,
    pub batch: WriteBatch,
    /// Answered once the group's transaction committed or failed.
    pub reply: oneshot::Sender<Result<(), StorageError>>,
    /// Whether it is written into the open transaction yet.
    pub written: bool,
}

/// The commits of the group being built: received, then written into the open
/// transaction (in order, except that a read writes its instance's commits first), and
/// acknowledged once it commits.
#[derive(Default)]
pub(super) struct Group {
    /// Whether a transaction is open.
    pub open: bool,
    /// The group's commits, in the order received.
    pub commits: Vec<PendingCommit>,
    /// Commits not written yet.
    pub unwritten: usize,
    /// Fired alarms to remove, with their times, not written yet.
    pub consumed: Vec<(Arc<str>, i64)>,
    /// Where each instance's commits are in `commits`: a read finds its instance's
    /// without scanning a group of thousands.
    by_instance: HashMap<Arc<str>, Vec<usize>>,
}

impl Group {
    pub fn len(&self) -> usize {
        self.commits.len() + self.consumed.len()
    }

    pub fn push(&mut self, commit: PendingCommit) {
        self.unwritten += 1;
        self.by_instance
            .entry(commit.instance.clone())
            .or_default()
            .push(self.commits.len());
        self.commits.push(commit);
    }

    /// Where `instance`'s unwritten commits are in `commits`, in order.
    pub fn unwritten_of(&self, instance: &str) -> Vec<usize> {
        self.by_instance.get(instance).map_or_else(Vec::new, |at| {
            at.iter()
                .copied()
                .filter(|&i| !self.commits[i].written)
                .collect()
        })
    }

    /// Whether anything received is not written yet.
    pub fn has_unwritten(&self) -> bool {
        self.unwritten > 0 || !self.consumed.is_empty()
    }

    /// Whether an unwritten write touches `instance`, so a read of it must wait for it.
    pub fn touches(&self, instance: &str) -> bool {
        !self.unwritten_of(instance).is_empty()
            || self.consumed.iter().any(|(id, _)| id.as_ref() == instance)
    }

    /// Answers every commit with `result` and starts an empty group.
    pub fn answer(&mut self, result: impl Fn() -> Result<(), StorageError>) {
        for commit in self.commits.drain(..) {
            let _ = commit.reply.send(result());
        }
        *self = Group::default();
    }
}

/// Instances with a lost commit, with the newest engine generation that lost one and why:
/// commits of that generation or older are refused (see `StoreHandle::commit`).
#[derive(Default)]
pub(super) struct Fence {
    lost: HashMap<Arc<str>, (u64, Arc<str>)>,
}

impl Fence {
    /// Takes a commit, or refuses it at once if it follows a lost commit of its instance
    /// from the same engine generation (or an older one).
    pub fn admit(&mut self, commit: PendingCommit) -> Option<PendingCommit> {
        let Some((lost, cause)) = self.lost.get(&commit.instance) else {
            return Some(commit);
        };
        if commit.generation > *lost {
            // An engine loaded after the loss: the fence has done its work.
            self.lost.remove(&commit.instance);
            return Some(commit);
        }
        let _ = commit.reply.send(Err(StorageError::new(format!(
            "refused, as it was made on top of an earlier commit of this instance that was \
             lost ({cause})"
        ))));
        None
    }

    /// Remembers the instances of a failed group with their generations, so that commits
    /// their engines made on top of the lost writes are refused.
    pub fn close(&mut self, group: &Group, cause: &str) {
        let cause: Arc<str> = Arc::from(cause);
        for commit in &group.commits {
            let lost = self
                .lost
                .entry(commit.instance.clone())
                .or_insert((0, cause.clone()));
            *lost = (lost.0.max(commit.generation), cause.clone());
        }
    }
}
