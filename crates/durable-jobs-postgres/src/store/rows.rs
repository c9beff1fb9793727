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

/// Up to `limit` stored instances whose id starts with `prefix`, after `after`, in id
/// order, each with its values under `keys` (ids and keys decoded).
pub(crate) async fn instances(
    conn: &Object,
    sql: &Statements,
    prefix: &str,
    after: Option<&str>,
    keys: &[&str],
    limit: usize,
) -> Result<durable_jobs::inspect::RawInstances, StorageError> {
    let prefix = encode(prefix).into_owned();
    let stored_keys: Vec<String> = keys.iter().map(|k| encode(k).into_owned()).collect();
    let mut cursor = after.map(|a| encode(a).into_owned()).unwrap_or_default();
    let mut found = Vec::new();
    while found.len() < limit {
        let rows = query(conn, &sql.next_instance, &[&cursor, &prefix, &stored_keys]).await?;
        let Some(first) = rows.first() else {
            break;
        };
        let id: String = first
            .try_get(0)
            .map_err(|e| db_error("a stored instance id does not read", &e))?;
        if !id.starts_with(&prefix) {
            break;
        }
        let mut values = vec![None; keys.len()];
        for row in &rows {
            let key: Option<String> = row
                .try_get(1)
                .map_err(|e| db_error("a stored key does not read", &e))?;
            let value: Option<Vec<u8>> = row
                .try_get(2)
                .map_err(|e| db_error("a stored value does not read", &e))?;
            if let Some(i) = key.and_then(|k| stored_keys.iter().position(|s| *s == k)) {
                values[i] = value;
            }
        }
        found.push((decode(&id)?.into_owned(), values));
        cursor = id;
    }
    Ok(found)
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

/// The writes of steps that share a transaction, not sent to the server yet: the final
/// value of each key they wrote, and their last alarm. Sending them at the commit costs a
/// round trip for the lot, and writes each row once however often the steps changed it (a
/// pool's record changes at every enqueue).
#[derive(Debug, Default)]
pub(crate) struct UnsentWrites {
    /// Everything of the instance is deleted before the rows below are written.
    delete_all: bool,
    /// Stored key → its value, or `None` for a delete.
    rows: BTreeMap<String, Option<Vec<u8>>>,
    /// The last alarm written.
    alarm: Option<AlarmWrite>,
    /// A step set an alarm due soon: announce it with the commit.
    announce: bool,
}

impl UnsentWrites {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        !self.delete_all && self.rows.is_empty() && self.alarm.is_none()
    }

    /// Adds the writes of a step, after those added before. `announce_before`: an alarm
    /// set before this time is announced to the other processes.
    pub fn add(&mut self, batch: WriteBatch, announce_before: i64) {
        let (delete_all, ops, alarm) = batch.into_parts();
        if delete_all {
            self.delete_all = true;
            self.rows.clear();
        }
        for op in ops {
            match op {
                WriteOp::Put(key, value) => self.rows.insert(encode_owned(key), Some(value)),
                WriteOp::Delete(key) => self.rows.insert(encode_owned(key), None),
            };
        }
        if let Some(alarm) = alarm {
            if matches!(alarm, AlarmWrite::Set(at) if at < announce_before) {
                self.announce = true;
            }
            self.alarm = Some(alarm);
        }
    }

    /// Records in `seen` what the rows hold once these writes are sent (a delete-all
    /// forgets every row seen before).
    pub fn remember_in(&self, seen: &mut std::collections::HashMap<String, Option<Vec<u8>>>) {
        if self.delete_all {
            seen.clear();
        }
        seen.extend(self.rows.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    /// What the unsent writes say of the row under `stored` (the key as stored): `None`
    /// if they do not know it, `Some(None)` if they deleted it.
    pub fn get(&self, stored: &str) -> Option<Option<&[u8]>> {
        match self.rows.get(stored) {
            Some(value) => Some(value.as_deref()),
            None if self.delete_all => Some(None),
            None => None,
        }
    }
}

/// Sends `writes` for the instance stored as `instance`, inside the caller's transaction:
/// everything of the instance first if asked, then the puts and deletes, then the alarm.
/// Returns whether it announced an alarm due soon (delivered when the transaction
/// commits).
///
/// The statements after the delete-all touch different rows, so they are sent together
/// and their answers awaited together: one round trip instead of one each.
pub(crate) async fn write(
    conn: &Object,
    sql: &Statements,
    instance: &str,
    channel: &str,
    writes: UnsentWrites,
) -> Result<bool, StorageError> {
    let UnsentWrites {
        delete_all,
        rows,
        alarm,
        announce,
    } = writes;
    if delete_all {
        query(conn, &sql.delete_all_rows, &[&instance]).await?;
        query(conn, &sql.delete_instance, &[&instance]).await?;
    }
    let (put_keys, put_values, deletes) = split(rows);
    let mut statements: Vec<LocalBoxFuture<'_, Result<Vec<Row>, StorageError>>> = Vec::new();
    if !put_keys.is_empty() {
        let params = vec![param(&instance), &put_keys, &put_values];
        statements.push(Box::pin(query_with(conn, &sql.put_rows, params)));
    }
    if !deletes.is_empty() {
        let params = vec![param(&instance), &deletes];
        statements.push(Box::pin(query_with(conn, &sql.delete_rows, params)));
    }
    let mut announced = false;
    match &alarm {
        Some(AlarmWrite::Set(at)) => {
            let params = vec![param(&instance), at];
            statements.push(Box::pin(query_with(conn, &sql.set_alarm, params)));
            if announce {
                let params = vec![param(&channel)];
                statements.push(Box::pin(query_with(conn, sql.notify, params)));
                announced = true;
            }
        }
        // After a delete-all the alarm row is gone already.
        Some(AlarmWrite::Clear) if !delete_all => {
            let params = vec![param(&instance)];
            statements.push(Box::pin(query_with(conn, &sql.clear_alarm, params)));
        }
        _ => {}
    }
    try_join_all(statements).await?;
    Ok(announced)
}

/// Puts (keys, values) and deletes.
fn split(rows: BTreeMap<String, Option<Vec<u8>>>) -> (Vec<String>, Vec<Vec<u8>>, Vec<String>) {
    let (mut put_keys, mut put_values, mut deletes) = (Vec::new(), Vec::new(), Vec::new());
    for (key, value) in rows {
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

    fn batch(ops: &[(&str, Option<&str>)]) -> WriteBatch {
        let mut batch = WriteBatch::new();
        for (key, value) in ops {
            match value {
                Some(v) => batch.put(*key, v.as_bytes().to_vec()),
                None => batch.delete(*key),
            };
        }
        batch
    }

    #[test]
    fn the_last_write_of_a_key_wins_across_steps() {
        let mut unsent = UnsentWrites::default();
        unsent.add(batch(&[("a", Some("1")), ("a", None), ("b", None)]), 0);
        unsent.add(batch(&[("b", Some("2")), ("c\0", Some("3"))]), 0);
        unsent.add(batch(&[("c\0", Some("4"))]), 0);
        assert_eq!(unsent.get("a"), Some(None));
        assert_eq!(unsent.get("b"), Some(Some(&b"2"[..])));
        assert_eq!(
            unsent.get("x"),
            None,
            "unknown keys are read from the server"
        );
        let (keys, values, deletes) = split(unsent.rows);
        assert_eq!(keys, ["b", "c\u{1}\u{1}"]);
        assert_eq!(values, [b"2".to_vec(), b"4".to_vec()]);
        assert_eq!(deletes, ["a"]);
    }

    #[test]
    fn a_delete_all_hides_every_row_written_before_it() {
        let mut unsent = UnsentWrites::default();
        unsent.add(batch(&[("a", Some("1"))]), 0);
        let mut purge = WriteBatch::new();
        purge.delete_all();
        unsent.add(purge, 0);
        unsent.add(batch(&[("b", Some("2"))]), 0);
        assert_eq!(unsent.get("a"), Some(None));
        assert_eq!(
            unsent.get("z"),
            Some(None),
            "nothing is left on the server either"
        );
        assert_eq!(unsent.get("b"), Some(Some(&b"2"[..])));
    }

    #[test]
    fn an_alarm_due_soon_in_any_step_is_announced() {
        let mut unsent = UnsentWrites::default();
        let mut soon = WriteBatch::new();
        soon.set_alarm(Some(5));
        unsent.add(soon, 10);
        let mut later = WriteBatch::new();
        later.set_alarm(Some(50));
        unsent.add(later, 10);
        assert!(unsent.announce);
        assert_eq!(unsent.alarm, Some(AlarmWrite::Set(50)));
    }
}
