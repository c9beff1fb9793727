//! Services shared by every job kind: metadata, the record codec, idempotency, the alarm
//! multiplexer, purging and event tracking.

pub mod alarm;
pub mod codec;
pub mod idempotency;
pub mod metadata;
pub mod purge;
pub mod tracker;
