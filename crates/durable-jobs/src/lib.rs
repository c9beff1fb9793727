//! Durable, per-key background jobs.
//!
//! Three kinds of job sit on one engine, each *instance* a tiny actor with its own storage,
//! one durable alarm, and one request or alarm handled at a time:
//!
//! - [`Continuous`]: per-id recurring work with persistent state (every N, or cron);
//! - [`Debounce`]: per-id events folded through a reducer and flushed after a delay or a count;
//! - [`WorkerPool`]: a named queue served by N sequential instances, with partition keys,
//!   priorities, retries and dead letters.
//!
//! Calls that carry many events commit each instance's share in one step and answer one
//! result per event, in the order given:
//! [`DebounceClient::add_many`](jobs::debounce::DebounceClient::add_many) and
//! [`WorkerPoolClient::enqueue_many`](jobs::worker_pool::WorkerPoolClient::enqueue_many).
//!
//! This crate is the platform-free core: it compiles to `wasm32-unknown-unknown` and knows
//! no executor. Runtimes (the embedded SQLite runtime, Cloudflare Durable Objects, and the
//! in-memory [`testing::TestJobs`] harness) provide [`adapters`] and a [`Transport`].
//!
//! ```
//! use std::time::Duration;
//! use durable_jobs::testing::TestJobs;
//! use durable_jobs::{Continuous, ContinuousContext, Registry, Schedule};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Tokens { refreshed: u32 }
//!
//! struct TokenRefresher;
//!
//! impl Continuous for TokenRefresher {
//!     type State = Tokens;
//!     type Error = String;
//!     fn schedule(&self) -> Schedule { Schedule::every(Duration::from_secs(30 * 60)) }
//!     async fn execute(&self, ctx: &mut ContinuousContext<Tokens>) -> Result<(), String> {
//!         ctx.state_mut().refreshed += 1;
//!         Ok(())
//!     }
//! }
//!
//! # futures::executor::block_on(async {
//! let registry = Registry::builder()
//!     .continuous("tokenRefresher", TokenRefresher)
//!     .build()
//!     .unwrap();
//! let jobs = TestJobs::new(registry);
//! let client = jobs.client();
//! let refresher = client.continuous::<TokenRefresher>();
//! assert!(refresher.start("user-123", &Tokens { refreshed: 0 }).await.unwrap());
//! jobs.advance(Duration::from_secs(60 * 60)).await;   // the first run, then two more
//! assert_eq!(refresher.state("user-123").await.unwrap().unwrap().refreshed, 3);
//! # });
//! ```

#![warn(missing_docs)]

pub mod adapters;
pub mod client;
pub mod engine;
pub mod errors;
pub mod events;
pub mod ids;
pub mod inspect;
pub mod jobs;
pub mod registry;
pub mod retry;
pub mod services;
pub mod testing;
pub mod wire;

pub use client::{JobsClient, Transport};
pub use engine::{Engine, CLAIM_RUN_MS, MAX_EVENTS_PER_REQUEST};
pub use errors::{JobError, RegistryError, Rejected, StorageError};
pub use events::{EventKind, FlushReason, JobEvent};
pub use ids::{InstanceId, JobKind};
pub use jobs::continuous::{Continuous, ContinuousContext, ContinuousStatus, Schedule};
pub use jobs::debounce::{
    AddItem, AddOutcome, Debounce, DebounceContext, DebounceStatus, FailedBatch,
};
pub use jobs::execution::Execution;
pub use jobs::task::{ScheduledBy, Sent, Task, TaskContext, TaskPhase, TaskStatus};
pub use jobs::worker_pool::{
    DeadLetter, EmptyContext, EnqueueItem, EnqueueOutcome, EnqueueRequest, PoolInstanceStatus,
    PoolStatus, QueuedEvent, RunAt, WorkerPool, WorkerPoolContext, GENERATED_ID_PREFIX, MAX_DELAY,
};
pub use registry::{Limits, Registry, RegistryBuilder};
pub use retry::{Backoff, RetryPolicy};
pub use services::metadata::{Status, StatusName};
