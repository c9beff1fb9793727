//! PostgreSQL foundation for durable-jobs: what a runtime whose processes share one
//! database builds on.
//!
//! - [`schema`]: the tables, in one configurable PostgreSQL schema, and their versioned
//!   migrations. [`migrate`] applies them in one transaction under an advisory lock, so
//!   processes that start together take turns, and refuses a schema migrated by a newer
//!   build without touching it.
//! - [`Database`]: a pool of connections ([`deadpool_postgres`] over [`tokio_postgres`])
//!   whose schema is migrated at connect; a server that cannot be reached gives a
//!   [`ConnectError`] naming the address and the cause.
//! - `testing` (the `testing` feature): `TestServer`, a throwaway PostgreSQL server for
//!   tests, or a fresh database on the server named by `DATABASE_URL`.
//!
//! ```no_run
//! use durable_jobs_postgres::{Database, PostgresConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Creates or upgrades the `durable_jobs` schema, or refuses one newer than this build.
//! let db = Database::connect(PostgresConfig::new("postgres://jobs@localhost/app")).await?;
//! println!("schema {} at version {}", db.schema(), db.schema_version());
//! let client = db.client().await?;
//! let sql = format!("SELECT count(*) FROM {}.instances", db.schema().quoted());
//! let instances: i64 = client.query_one(&sql, &[]).await?.get(0);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod database;
pub mod schema;
#[cfg(feature = "testing")]
pub mod testing;

pub use database::{ConnectError, Database, PostgresConfig};
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
