//! Reads and writes of one instance's rows and alarm, on a connection the caller holds
//! (inside the step's transaction, or alone for a read outside a step).

use std::collections::BTreeMap;

use deadpool_postgres::Object;
use durable_jobs::adapters::{AlarmWrite, WriteBatch, WriteOp};
use durable_jobs::StorageError;
use futures::future::{try_join_all, LocalBoxFuture};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::db_error;
use super::keys::{decode, encode, encode_owned, StoredRange};
use super::sql::Statements;

/// Runs `sql` with `params`, prepared once per connection.
async fn query(
    conn: &Object,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, StorageError> {
    let statement = conn
        .prepare_cached(sql)
        .await
        .map_err(|e| db_error("cannot prepare a statement", &e))?;
    conn.query(&statement, params)
        .await
        .map_err(|e| db_error("a read or write of instance rows failed", &e))
}

/// [`query`] owning its list of parameters, so that several can be in flight at once.
async fn query_with<'a>(
    conn: &'a Object,
    sql: &'a str,
    params: Vec<&'a (dyn ToSql + Sync)>,
) -> Result<Vec<Row>, StorageError> {
    query(conn, sql, &params).await
}

/// A value as a statement parameter.
fn param<T: ToSql + Sync>(value: &T) -> &(dyn ToSql + Sync) {
    value
}

/// The values of `keys` (in their order) of the instance stored as `instance`.
pub(crate) async fn get_many(
    conn: &Object,
    sql: &Statements,
    instance: &str,
    keys: &[&str],
) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
    let stored: Vec<String> = keys.iter().map(|k| encode(k).into_owned()).collect();
    let rows = query(conn, &sql.get_many, &[&instance, &stored]).await?;
    let mut found = BTreeMap::new();
    for row in rows {
        let (key, value) = key_value(&row)?;
        found.insert(key, value);
    }
    Ok(stored.iter().map(|k| found.get(k).cloned()).collect())
}

/// The rows of `range`, in key order, keys decoded.
pub(crate) async fn list(
    conn: &Object,
    sql: &Statements,
    instance: &str,
    range: &StoredRange,
) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
    let rows = match &range.end {
        Some(end) => {
            if *end <= range.start {
                return Ok(Vec::new());
            }
            let params: [&(dyn ToSql + Sync); 4] = [&instance, &range.start, end, &range.limit];
            query(conn, &sql.list_between, &params).await?
        }
        None => {
            let params: [&(dyn ToSql + Sync); 3] = [&instance, &range.start, &range.limit];
            query(conn, &sql.list_from, &params).await?
        }
    };
    rows.iter()
        .map(|row| {
            let (stored, value) = key_value(row)?;
            Ok((decode(&stored)?.into_owned(), value))
        })
        .collect()
}

fn key_value(row: &Row) -> Result<(String, Vec<u8>), StorageError> {
    let key: String = row
        .try_get(0)
        .map_err(|e| db_error("a stored key does not read", &e))?;
    let value: Vec<u8> = row
        .try_get(1)
        .map_err(|e| db_error("a stored value does not read", &e))?;
    Ok((key, value))
}

/// Where a batch that sets an alarm due soon tells the other processes.
pub(crate) struct Notify<'a> {
    /// The channel they listen on.
    pub channel: &'a str,
    /// Alarms due before this time are announced; later ones are found by polling.
    pub before: i64,
}

/// Writes `batch` for the instance stored as `instance`, inside the caller's transaction:
/// everything of the instance first if asked, then the puts and deletes (the last write
/// of a key wins, as in order), then the alarm. Returns whether it set an alarm due soon
/// (and announced it, delivered when the transaction commits).
///
/// The statements after the delete-all touch different rows, so they are sent together
/// and their answers awaited together: one round trip instead of one each.
pub(crate) async fn write(
    conn: &Object,
    sql: &Statements,
    instance: &str,
    batch: WriteBatch,
    notify: Notify<'_>,
) -> Result<bool, StorageError> {
    let (delete_all, ops, alarm) = batch.into_parts();
    if delete_all {
        query(conn, &sql.delete_all_rows, &[&instance]).await?;
        query(conn, &sql.delete_instance, &[&instance]).await?;
    }
    let (put_keys, put_values, deletes) = last_writes(ops);
    let mut writes: Vec<LocalBoxFuture<'_, Result<Vec<Row>, StorageError>>> = Vec::new();
    if !put_keys.is_empty() {
        let params = vec![param(&instance), &put_keys, &put_values];
        writes.push(Box::pin(query_with(conn, &sql.put_rows, params)));
    }
    if !deletes.is_empty() {
        let params = vec![param(&instance), &deletes];
        writes.push(Box::pin(query_with(conn, &sql.delete_rows, params)));
    }
    let mut soon = false;
    match &alarm {
        Some(AlarmWrite::Set(at)) => {
            let params = vec![param(&instance), at];
            writes.push(Box::pin(query_with(conn, &sql.set_alarm, params)));
            if *at < notify.before {
                let params = vec![param(&notify.channel)];
                writes.push(Box::pin(query_with(conn, sql.notify, params)));
                soon = true;
            }
        }
        // After a delete-all the alarm row is gone already.
        Some(AlarmWrite::Clear) if !delete_all => {
            let params = vec![param(&instance)];
            writes.push(Box::pin(query_with(conn, &sql.clear_alarm, params)));
        }
        _ => {}
    }
    try_join_all(writes).await?;
    Ok(soon)
}

/// The final write of each key, stored form: puts (keys, values) and deletes.
fn last_writes(ops: Vec<WriteOp>) -> (Vec<String>, Vec<Vec<u8>>, Vec<String>) {
    let mut last: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    for op in ops {
        match op {
            WriteOp::Put(key, value) => last.insert(encode_owned(key), Some(value)),
            WriteOp::Delete(key) => last.insert(encode_owned(key), None),
        };
    }
    let (mut put_keys, mut put_values, mut deletes) = (Vec::new(), Vec::new(), Vec::new());
    for (key, value) in last {
        match value {
            Some(value) => {
                put_keys.push(key);
                put_values.push(value);
            }
            None => deletes.push(key),
        }
    }
    (put_keys, put_values, deletes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_write_of_a_key_wins() {
        let ops = vec![
            WriteOp::Put("a".into(), b"1".to_vec()),
            WriteOp::Delete("a".into()),
            WriteOp::Delete("b".into()),
            WriteOp::Put("b".into(), b"2".to_vec()),
            WriteOp::Put("c\0".into(), b"3".to_vec()),
            WriteOp::Put("c\0".into(), b"4".to_vec()),
        ];
        let (keys, values, deletes) = last_writes(ops);
        assert_eq!(keys, ["b", "c\u{1}\u{1}"]);
        assert_eq!(values, [b"2".to_vec(), b"4".to_vec()]);
        assert_eq!(deletes, ["a"]);
    }
}
