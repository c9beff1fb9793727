//! Services shared by every job kind (spec §6): metadata, state codec, idempotency, the
//! alarm multiplexer, purging and event tracking.

pub mod codec;
pub mod idempotency;
pub mod metadata;
pub mod purge;
pub mod schedule;
pub mod tracker;
