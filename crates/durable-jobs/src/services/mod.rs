//! Services shared by every job kind: metadata, the record codec, idempotency, the alarm
//! multiplexer, purging and event tracking. Only tracking is public: a runtime chooses
//! where lifecycle events go.

pub(crate) mod alarm;
pub(crate) mod codec;
pub(crate) mod idempotency;
pub(crate) mod metadata;
pub(crate) mod purge;
pub mod tracker;
