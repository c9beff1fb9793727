//! Reads of the store: an instance's rows and the alarm index. They run on the store's
//! connection, inside the open transaction, so they see every commit written into it;
//! [`crate::FileInspector`] runs some of them on a read-only connection of its own.

use std::sync::Arc;

use durable_jobs::StorageError;
use rusqlite::{params, Connection, OptionalExtension};

use super::{AlarmPage, InstanceRows, LoadedInstance, RowRange, Rows, StoreOp};

fn storage_error(context: &str, e: rusqlite::Error) -> StorageError {
    StorageError::with_source(context.to_string(), e)
}

/// Answers a read op (`Load`, `Read`, `List`, `Alarms`); gives any other op back.
pub(super) fn answer(conn: &Connection, op: StoreOp) -> Option<StoreOp> {
    match op {
        StoreOp::Load {
            instance,
            rows,
            reply,
        } => {
            let _ = reply
                .send(load(conn, &instance, rows).map_err(|e| storage_error("load failed", e)));
        }
        StoreOp::Read {
            instance,
            keys,
            reply,
        } => {
            let _ = reply
                .send(read(conn, &instance, &keys).map_err(|e| storage_error("read failed", e)));
        }
        StoreOp::List {
            instance,
            range,
            reply,
        } => {
            let _ = reply.send(
                list(conn, &instance, &range).map_err(|e| storage_error("range read failed", e)),
            );
        }
        StoreOp::Alarms {
            after,
            before,
            limit,
            reply,
        } => {
            let _ = reply.send(
                alarms(conn, after, before, limit)
                    .map_err(|e| storage_error("alarm index read failed", e)),
            );
        }
        StoreOp::Instances {
            prefix,
            after,
            keys,
            limit,
            reply,
        } => {
            let found = instances(conn, &prefix, after, &keys, limit)
                .map_err(|e| storage_error("instance scan failed", e));
            let _ = reply.send(found);
        }
        other => return Some(other),
    }
    None
}

/// Walks the stored instances under `prefix` after `after`, one index seek each (an
/// instance's rows are never scanned, however many it holds).
pub(crate) fn instances(
    conn: &Connection,
    prefix: &str,
    after: Option<String>,
    keys: &[String],
    limit: usize,
) -> rusqlite::Result<InstanceRows> {
    let mut next = conn.prepare_cached(
        "SELECT instance FROM kv WHERE instance > ?1 AND instance >= ?2 ORDER BY instance LIMIT 1",
    )?;
    let mut found = Vec::new();
    let mut cursor = after.unwrap_or_default();
    while found.len() < limit {
        let id: Option<String> = next
            .query_row(params![cursor, prefix], |r| r.get(0))
            .optional()?;
        let Some(id) = id.filter(|id| id.starts_with(prefix)) else {
            break;
        };
        let values = read(conn, &id, keys)?;
        cursor.clone_from(&id);
        found.push((id, values));
    }
    Ok(found)
}

/// The instance a read of rows is for (`None` for other ops).
pub(super) fn instance_of(op: &StoreOp) -> Option<&Arc<str>> {
    match op {
        StoreOp::Load { instance, .. }
        | StoreOp::Read { instance, .. }
        | StoreOp::List { instance, .. } => Some(instance),
        _ => None,
    }
}

fn load(conn: &Connection, instance: &str, rows: usize) -> rusqlite::Result<LoadedInstance> {
    let mut first = list(
        conn,
        instance,
        &RowRange {
            start: String::new(),
            end: None,
            limit: Some(rows.saturating_add(1)),
        },
    )?;
    let complete = first.len() <= rows;
    first.truncate(rows);
    let alarm = conn
        .prepare_cached("SELECT at FROM alarms WHERE instance = ?1")?
        .query_row([instance], |r| r.get(0))
        .optional()?;
    Ok(LoadedInstance {
        rows: first,
        complete,
        alarm,
    })
}

pub(crate) fn read(
    conn: &Connection,
    instance: &str,
    keys: &[String],
) -> rusqlite::Result<Vec<Option<Vec<u8>>>> {
    let mut stmt = conn.prepare_cached("SELECT value FROM kv WHERE instance = ?1 AND key = ?2")?;
    keys.iter()
        .map(|key| {
            stmt.query_row(params![instance, key], |r| r.get(0))
                .optional()
        })
        .collect()
}

pub(crate) fn list(conn: &Connection, instance: &str, range: &RowRange) -> rusqlite::Result<Rows> {
    // SQLite reads a negative limit as none.
    let limit = range
        .limit
        .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
    let map = |r: &rusqlite::Row<'_>| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?));
    match &range.end {
        Some(end) => conn
            .prepare_cached(
                "SELECT key, value FROM kv WHERE instance = ?1 AND key >= ?2 AND key < ?3 \
                 ORDER BY key LIMIT ?4",
            )?
            .query_map(params![instance, range.start, end, limit], map)?
            .collect(),
        None => conn
            .prepare_cached(
                "SELECT key, value FROM kv WHERE instance = ?1 AND key >= ?2 \
                 ORDER BY key LIMIT ?3",
            )?
            .query_map(params![instance, range.start, limit], map)?
            .collect(),
    }
}

fn alarms(
    conn: &Connection,
    after: Option<(i64, Arc<str>)>,
    before: i64,
    limit: usize,
) -> rusqlite::Result<AlarmPage> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let map = |r: &rusqlite::Row<'_>| {
        Ok((
            Arc::<str>::from(r.get::<_, String>(0)?),
            r.get::<_, i64>(1)?,
        ))
    };
    match after {
        None => conn
            .prepare_cached(
                "SELECT instance, at FROM alarms WHERE at < ?1 ORDER BY at, instance LIMIT ?2",
            )?
            .query_map(params![before, limit], map)?
            .collect(),
        Some((at, instance)) => conn
            .prepare_cached(
                "SELECT instance, at FROM alarms WHERE at < ?1 AND (at, instance) > (?2, ?3) \
                 ORDER BY at, instance LIMIT ?4",
            )?
            .query_map(params![before, at, instance.as_ref(), limit], map)?
            .collect(),
    }
}
