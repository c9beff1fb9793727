//! The database as the runtime uses it: the pool, the statements, and the reads and writes
//! of instance rows.
//!
//! Connections are opened and driven on the runtime's I/O executor, never on a shard: a
//! shard only sends statements over a connection and awaits the answers, which works from
//! any thread, while the socket stays with the executor that outlives every shard.

pub(crate) mod keys;
pub(crate) mod rows;
pub(crate) mod sql;
pub(crate) mod tx;

use deadpool_postgres::Object;
use durable_jobs::StorageError;
use tokio::runtime::Handle;

use crate::{Database, SchemaName};
use sql::Statements;
use tx::TxConn;

/// The runtime's database: shared by its shards and background tasks.
#[derive(Debug)]
pub(crate) struct Store {
    /// The pool, its schema migrated.
    db: Database,
    /// The I/O executor, where connections are opened and driven.
    io: Handle,
    /// The statements, written for the schema.
    pub sql: Statements,
    /// The channel that commits notify when they set an alarm due soon: the schema's name.
    pub channel: String,
}

impl Store {
    /// The store of `db`, whose connections are opened on `io`.
    pub fn new(db: Database, io: Handle) -> Self {
        Store {
            sql: Statements::new(db.schema()),
            channel: db.schema().as_str().to_owned(),
            db,
            io,
        }
    }

    /// The schema.
    pub fn schema(&self) -> &SchemaName {
        self.db.schema()
    }

    /// A connection from the pool, opened on the I/O executor if none is idle. Fails
    /// quickly while the server is down: the pool then opens a new connection, which is
    /// refused; connections the server closed are not handed out again.
    pub async fn connection(&self) -> Result<Object, StorageError> {
        let db = self.db.clone();
        self.io
            .spawn(async move { db.client().await })
            .await
            .map_err(|_| StorageError::new("the PostgreSQL runtime is shut down"))?
            .map_err(|e| StorageError::with_source("no PostgreSQL connection", e))
    }

    /// A connection for a transaction, not begun yet (see [`TxConn::begin`]).
    pub async fn transaction(&self) -> Result<TxConn, StorageError> {
        Ok(TxConn::new(self.connection().await?, self.io.clone()))
    }

    /// Closes the pool: idle connections close, and those in use close when returned.
    pub fn close(&self) {
        self.db.pool().close();
    }
}

/// A storage error from a driver error, with its causes.
pub(crate) fn db_error(what: &str, error: &tokio_postgres::Error) -> StorageError {
    StorageError::new(format!("{what}: {}", crate::cause(error)))
}
