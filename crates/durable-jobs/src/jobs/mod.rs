//! The four job kinds, each with its definition trait, context, request handler, alarm
//! executor and typed client.

pub mod continuous;
pub mod debounce;
pub mod execution;
pub mod lifecycle;
pub mod task;
pub(crate) mod unwind;
pub mod worker_pool;
