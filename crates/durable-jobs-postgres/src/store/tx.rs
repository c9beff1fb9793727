//! A pooled connection inside an open transaction.
//!
//! A step's transaction holds the instance's advisory lock until it ends, so it must end
//! on every path: a commit, an error, a step dropped half-way (a read-only request ends
//! that way), a future cancelled mid-query. [`TxConn`] ends it when dropped: it rolls back
//! in the background, then the connection goes back to the pool; a connection that cannot
//! roll back is closed instead, so a connection still inside a transaction is never
//! handed out again.

use deadpool_postgres::Object;
use durable_jobs::StorageError;
use tokio::runtime::Handle;

use super::db_error;

/// A pooled connection inside a transaction that this value ends.
pub(crate) struct TxConn {
    /// `None` only once committed or handed to a rollback.
    conn: Option<Object>,
    /// Where the rollback of a dropped transaction runs.
    io: Handle,
}

impl TxConn {
    /// `conn`, about to begin a transaction: from here on, dropping it rolls back.
    pub fn new(conn: Object, io: Handle) -> Self {
        TxConn {
            conn: Some(conn),
            io,
        }
    }

    /// Begins a read-committed transaction and takes the advisory lock `lock` (one round
    /// trip). Read committed, whatever the session's default: each statement after the
    /// lock then sees every step committed before it was granted. Statements sent after
    /// this one, before it is answered, run inside the transaction.
    ///
    /// The server ends the transaction, and so releases the lock, if it sits idle for
    /// `idle_limit_ms`: a step never waits on anything but the database while it is open,
    /// so only a process that was paused or cut off mid-step gets there, and it must not
    /// hold up the instance's steps in other processes for longer than a lease.
    pub async fn begin(&self, lock: i64, idle_limit_ms: i64) -> Result<(), StorageError> {
        // Numbers only, so they can go into the text of a simple query, which may hold
        // several statements. The steps' statements are the same few, each on one
        // instance's rows, so a generic plan serves every execution: planning each one
        // afresh cost the server more than running it.
        let begin = format!(
            "BEGIN ISOLATION LEVEL READ COMMITTED; \
             SET LOCAL idle_in_transaction_session_timeout = {idle_limit_ms}; \
             SET LOCAL plan_cache_mode = force_generic_plan; \
             SELECT pg_advisory_xact_lock({lock})"
        );
        self.client()?
            .batch_execute(&begin)
            .await
            .map_err(|e| db_error("cannot begin a step's transaction", &e))
    }

    /// The connection, for the statements of the transaction.
    pub fn client(&self) -> Result<&Object, StorageError> {
        self.conn
            .as_ref()
            .ok_or_else(|| StorageError::new("the step's transaction has already ended"))
    }

    /// Commits. The connection goes back to the pool, or is closed if the commit failed
    /// (its outcome, and the connection's state, are then unknown).
    pub async fn commit(mut self) -> Result<(), StorageError> {
        let Some(conn) = self.conn.take() else {
            return Err(StorageError::new(
                "the step's transaction has already ended",
            ));
        };
        match conn.batch_execute("COMMIT").await {
            Ok(()) => Ok(()),
            Err(e) => {
                discard(conn);
                Err(db_error("the step's commit failed", &e))
            }
        }
    }
}

impl Drop for TxConn {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // If the executor is gone, the task is dropped unrun and `Rollback` closes the
            // connection: the server then ends the transaction itself.
            drop(self.io.spawn(Rollback(Some(conn)).run()));
        }
    }
}

/// A connection whose transaction must be rolled back before it is reused.
struct Rollback(Option<Object>);

impl Rollback {
    async fn run(mut self) {
        if let Some(conn) = self.0.take() {
            match conn.batch_execute("ROLLBACK").await {
                // Back to the pool, outside any transaction.
                Ok(()) => drop(conn),
                Err(error) => {
                    tracing::debug!(%error, "a rollback failed; closing its connection");
                    discard(conn);
                }
            }
        }
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            discard(conn);
        }
    }
}

/// Takes a connection out of the pool and closes it.
pub(crate) fn discard(conn: Object) {
    drop(Object::take(conn));
}
