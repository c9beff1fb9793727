//! The platform boundary: per-instance storage with its one alarm, the clock, and
//! (optionally) where user code runs.
//!
//! Each runtime implements these for one job instance: the in-memory harness with a map and
//! a virtual clock, the embedded runtime with SQLite, Durable Objects with their own
//! storage. The engine sees nothing else of the platform.
//!
//! Futures here carry no `Send` bound: Durable Object futures are not `Send`, and every
//! runtime drives one instance from one thread.

mod batch;
pub mod clock;
pub mod memory;
mod range;
mod runner;

use std::future::Future;

pub use batch::{AlarmWrite, WriteBatch, WriteOp};
pub use clock::{Clock, VirtualClock};
pub use range::{list_sorted, prefix_end, ListOptions};
pub use runner::{UserCodeRunner, UserTask};

use crate::errors::StorageError;

/// What a step runs for, so that a runtime shared by several processes can fence the
/// steps of an alarm pass it no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// A request from a client.
    Request,
    /// An alarm pass: a claim, or the step that records an execution's outcome.
    Alarm,
}

/// One instance's key/value storage, with an atomic commit of a step's writes and alarm.
///
/// Values are opaque bytes; keys are ordered by their bytes.
pub trait Storage {
    /// Reads one key.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, StorageError>>;

    /// Reads several keys at once (one round trip where the platform allows it).
    fn get_many(
        &self,
        keys: &[&str],
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>, StorageError>>;

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

    /// Begins a step: the reads from here to the step's commit, and the commit, form one
    /// transaction that no step of the instance in another process interleaves with. A
    /// runtime where one process owns each instance has nothing to do (the engine's lock
    /// already orders the steps of its instances), hence the default.
    ///
    /// An error ends the step before it read anything: the request or alarm fails.
    fn begin_step(&self, kind: StepKind) -> impl Future<Output = Result<(), StorageError>> {
        let _ = kind;
        async { Ok(()) }
    }

    /// Ends the current step: after its commit (which may have ended it already), or
    /// without one (a read-only request, an error). Called when the step is dropped, so it
    /// cannot wait; it must release whatever [`begin_step`](Self::begin_step) took.
    fn end_step(&self) {}

    /// Waits until every batch committed so far is durable. Once this fails, the instance's
    /// in-memory view may hold writes that were lost: the runtime must discard it.
    fn sync(&self) -> impl Future<Output = Result<(), StorageError>> {
        async { Ok(()) }
    }
}
