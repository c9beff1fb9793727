//! The durable-jobs runtime for many processes sharing one PostgreSQL database.
//!
//! Every process runs a [`PostgresRuntime`] on the same database (and schema); any of them
//! serves any job instance, with the same job code, the same typed client and the same
//! behaviour as the embedded runtime. The database holds everything; a process holds only
//! the engines of the instances it is working on.
//!
//! - **One step, one transaction.** Each step of an instance (a request, a claim, a
//!   completion) is one transaction that holds a transaction-scoped advisory lock on the
//!   instance, so the steps of an instance never interleave, whichever processes run them.
//! - **Alarms under a lease.** A due alarm is taken by one process with a fresh token and a
//!   lease it renews while the pass runs; every step of the pass checks the token inside its
//!   transaction, so a process whose lease was taken over commits nothing more. A process
//!   that dies holds its alarms until their leases run out ([`Builder::lease`], 30 s by
//!   default); another process then takes them over, and counts the interrupted execution
//!   as an attempt. Alarm times and leases are read on each process's own clock: replicas
//!   need roughly synchronised clocks, as any lease does.
//! - **Alarms due soon are announced** on a notification channel named after the schema,
//!   so another process runs them at once; others are found by polling
//!   ([`Builder::poll_interval`]).
//! - [`Database`] and [`schema`]: the pool, and the versioned schema that processes starting
//!   together migrate once. `testing` (the `testing` feature): `TestServer`, a throwaway
//!   PostgreSQL server for tests.
//!
//! ```no_run
//! # use durable_jobs::Registry;
//! # async fn run(registry: Registry) -> Result<(), Box<dyn std::error::Error>> {
//! use durable_jobs_postgres::PostgresRuntime;
//!
//! // Creates or upgrades the `durable_jobs` schema, or refuses one newer than this build.
//! let runtime = PostgresRuntime::connect("postgres://jobs@db.internal/app", registry).await?;
//! let client = runtime.client();
//! // client.worker_pool::<EmailSender>().enqueue(&email).await?;   // Ok = committed
//! runtime.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The foundation can also be used alone:
//!
//! ```no_run
//! use durable_jobs_postgres::{Database, PostgresConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let db = Database::connect(PostgresConfig::new("postgres://jobs@localhost/app")).await?;
//! println!("schema {} at version {}", db.schema(), db.schema_version());
//! let client = db.client().await?;
//! let sql = format!("SELECT count(*) FROM {}.instances", db.schema().quoted());
//! let instances: i64 = client.query_one(&sql, &[]).await?.get(0);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod activity;
mod alarms;
mod clock;
mod database;
mod instance;
mod runtime;
pub mod schema;
mod shard;
mod shared;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use database::{ConnectError, Database, PostgresConfig};
pub use runtime::{
    Builder, PostgresInspector, PostgresRuntime, PostgresTransport, DEFAULT_CLAIM_SIZE,
};
pub use schema::{migrate, SchemaError, SchemaName, DEFAULT_SCHEMA, SUPPORTED_VERSION};

/// A driver error with its causes, `error connecting to server: Connection refused (os
/// error 111)`: the driver's own message names only the kind of failure.
fn cause(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The driver and the pool, re-exported so that users name the same versions.
pub use {deadpool_postgres, tokio_postgres};
