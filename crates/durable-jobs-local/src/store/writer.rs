//! Writing commits into the open transaction, with each statement prepared once for a
//! whole pass over the group.

use durable_jobs::adapters::{AlarmWrite, WriteBatch, WriteOp};
use rusqlite::{params, CachedStatement, Connection};

/// The statements that write commits.
pub(super) struct Writer<'c> {
    put: CachedStatement<'c>,
    delete: CachedStatement<'c>,
    delete_all: CachedStatement<'c>,
    set_alarm: CachedStatement<'c>,
    clear_alarm: CachedStatement<'c>,
    consume: CachedStatement<'c>,
}

impl<'c> Writer<'c> {
    pub fn prepare(conn: &'c Connection) -> rusqlite::Result<Self> {
        Ok(Writer {
            put: conn.prepare_cached(
                "INSERT OR REPLACE INTO kv (instance, key, value) VALUES (?1, ?2, ?3)",
            )?,
            delete: conn.prepare_cached("DELETE FROM kv WHERE instance = ?1 AND key = ?2")?,
            delete_all: conn.prepare_cached("DELETE FROM kv WHERE instance = ?1")?,
            set_alarm: conn
                .prepare_cached("INSERT OR REPLACE INTO alarms (instance, at) VALUES (?1, ?2)")?,
            clear_alarm: conn.prepare_cached("DELETE FROM alarms WHERE instance = ?1")?,
            consume: conn.prepare_cached("DELETE FROM alarms WHERE instance = ?1 AND at = ?2")?,
        })
    }

    /// Writes one instance's batch: its rows and its alarm.
    pub fn write(&mut self, instance: &str, batch: &WriteBatch) -> rusqlite::Result<()> {
        if batch.deletes_all() {
            self.delete_all.execute([instance])?;
            self.clear_alarm.execute([instance])?;
        }
        for op in batch.ops() {
            match op {
                WriteOp::Put(k, v) => self.put.execute(params![instance, k, v])?,
                WriteOp::Delete(k) => self.delete.execute(params![instance, k])?,
            };
        }
        match batch.alarm() {
            Some(AlarmWrite::Set(at)) => self.set_alarm.execute(params![instance, at])?,
            Some(AlarmWrite::Clear) => self.clear_alarm.execute([instance])?,
            None => 0,
        };
        Ok(())
    }

    /// Removes an alarm that fired, if it still has that time.
    pub fn consume(&mut self, instance: &str, at: i64) -> rusqlite::Result<()> {
        self.consume.execute(params![instance, at])?;
        Ok(())
    }
}
