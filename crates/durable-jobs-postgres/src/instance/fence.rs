//! The fence of an alarm pass's steps.
//!
//! A process runs an alarm pass under a lease it took with a fresh token. When its lease
//! runs out (it was paused, or cut off from the database, and could not renew it), another
//! process takes the alarm with a new token and runs the work again. The first process may
//! still be running user code; its steps must then commit nothing, or a completion could
//! land after, or beside, the other process's. So every step of a pass reads the token
//! inside its transaction, after the advisory lock, and locks the row: the token cannot
//! change before the step commits, and a step whose token is no longer current fails.

use deadpool_postgres::Object;
use durable_jobs::StorageError;

use crate::store::db_error;
use crate::store::sql::Statements;
use crate::store::tx::TxConn;

/// Whether the alarm of the instance stored as `stored_id` still carries `token`, the
/// token of the pass this process runs (`None`: it runs none), in `tx`.
pub(super) async fn check(
    tx: &TxConn,
    sql: &Statements,
    stored_id: &str,
    token: Option<i64>,
) -> Result<bool, StorageError> {
    check_on(tx.client()?, sql, stored_id, token).await
}

/// [`check`] on the connection of an open transaction.
pub(super) async fn check_on(
    conn: &Object,
    sql: &Statements,
    stored_id: &str,
    token: Option<i64>,
) -> Result<bool, StorageError> {
    let Some(token) = token else {
        return Ok(false);
    };
    let statement = conn
        .prepare_cached(&sql.fence)
        .await
        .map_err(|e| db_error("cannot prepare a statement", &e))?;
    let row = conn
        .query_opt(&statement, &[&stored_id])
        .await
        .map_err(|e| db_error("cannot read the alarm's lease", &e))?;
    let current: Option<i64> = match row {
        Some(row) => Some(
            row.try_get(0)
                .map_err(|e| db_error("cannot read the alarm's lease", &e))?,
        ),
        None => None,
    };
    Ok(current == Some(token))
}

/// The error of an alarm step of `id` that failed its fence.
pub(super) fn fenced_off(id: &str, token: Option<i64>) -> StorageError {
    match token {
        None => StorageError::new(format!(
            "an alarm step of {id} ran without a lease on its alarm; nothing was committed"
        )),
        Some(token) => StorageError::new(format!(
            "the alarm pass of {id} was fenced off: its lease (token {token}) was taken over \
             by another process, so this step committed nothing"
        )),
    }
}
