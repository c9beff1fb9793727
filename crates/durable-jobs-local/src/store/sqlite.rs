//! The thread that owns the SQLite connection.

use std::collections::HashMap;
use std::sync::Arc;

use durable_jobs::adapters::{AlarmWrite, WriteBatch, WriteOp};
use durable_jobs::StorageError;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use super::{AlarmPage, Durability, LoadedInstance, Location, RowRange, Rows, StoreOp};
use crate::error::OpenError;

/// Marks our files (`PRAGMA application_id`), so a foreign SQLite file is refused.
const APPLICATION_ID: i32 = 0x444a_4f42; // "DJOB"
const SCHEMA_VERSION: i32 = 1;
/// Commits grouped into one transaction at most.
const GROUP: usize = 4096;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    instance TEXT NOT NULL,
    key      TEXT NOT NULL,
    value    BLOB NOT NULL,
    PRIMARY KEY (instance, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alarms (
    instance TEXT PRIMARY KEY,
    at       INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alarms_by_time ON alarms (at, instance);
";

/// The commits of the group being built: queued, then written into the open
/// transaction, and acknowledged once it commits.
#[derive(Default)]
struct Group {
    /// Whether a transaction is open.
    open: bool,
    /// Commits written into the open transaction.
    written: Vec<PendingCommit>,
    /// Commits not written yet: they are written together, with statements prepared
    /// once, when the group commits or a read needs them.
    queued: Vec<PendingCommit>,
    /// Fired alarms to remove, with their times, not written yet.
    consumed: Vec<(Arc<str>, i64)>,
}

impl Group {
    fn len(&self) -> usize {
        self.written.len() + self.queued.len() + self.consumed.len()
    }

    /// Whether a queued write touches `instance`, so a read of it must wait for it.
    fn touches(&self, instance: &str) -> bool {
        self.queued.iter().any(|c| c.instance.as_ref() == instance)
            || self.consumed.iter().any(|(id, _)| id.as_ref() == instance)
    }
}

/// A commit waiting for its group's transaction.
struct PendingCommit {
    instance: Arc<str>,
    /// The generation of the engine that made it.
    generation: u64,
    batch: WriteBatch,
    /// Answered once the group's transaction committed or failed.
    reply: oneshot::Sender<Result<(), StorageError>>,
}

pub(super) struct Db {
    conn: Connection,
    /// Instances with a lost commit, with the newest engine generation that lost one and
    /// why: commits of that generation or older are refused (see `StoreHandle::commit`).
    lost: HashMap<Arc<str>, (u64, Arc<str>)>,
    /// The file's page size: `max_page_count` counts pages, the size cap counts bytes.
    page_size: u64,
    /// SQLite's own page limit, which lifting the size cap restores.
    unlimited_pages: u64,
}

fn storage_error(context: &str, e: rusqlite::Error) -> StorageError {
    StorageError::with_source(context.to_string(), e)
}

/// A pragma whose value is a count (a page size, a number of pages).
fn query_u64(conn: &Connection, pragma: &str) -> rusqlite::Result<u64> {
    let value: i64 = conn.pragma_query_value(None, pragma, |r| r.get(0))?;
    Ok(u64::try_from(value).unwrap_or(0))
}

impl Db {
    pub fn open(
        location: &Location,
        durability: Durability,
        max_size: Option<u64>,
    ) -> Result<Self, OpenError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let (conn, path) = match location {
            Location::File(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    if !dir.is_dir() {
                        return Err(OpenError::Io {
                            message: format!("the directory {} does not exist", dir.display()),
                        });
                    }
                }
                let conn = Connection::open_with_flags(path, flags)
                    .map_err(|e| OpenError::from_sqlite(path.display().to_string(), e))?;
                (conn, path.display().to_string())
            }
            Location::Memory => (
                Connection::open_in_memory()
                    .map_err(|e| OpenError::from_sqlite(":memory:".into(), e))?,
                ":memory:".to_string(),
            ),
        };
        let fail = |e: rusqlite::Error| OpenError::from_sqlite(path.clone(), e);
        conn.busy_timeout(std::time::Duration::from_millis(200))
            .map_err(fail)?;
        // One process per file: the exclusive lock is taken at the first write below and
        // held until the connection closes, so a second runtime on the same file fails fast.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(fail)?;
        let app_id: i32 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(fail)?;
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(fail)?;
        if app_id != APPLICATION_ID && (app_id != 0 || tables > 0) {
            return Err(OpenError::Foreign { path });
        }
        if matches!(location, Location::File(_)) {
            let mode: String = conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
                .map_err(fail)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(OpenError::Io {
                    message: format!("{path}: cannot use WAL mode (got {mode})"),
                });
            }
        }
        let sync = match durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(fail)?;
        let version: i32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(fail)?;
        if version > SCHEMA_VERSION {
            return Err(OpenError::Version {
                path,
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        conn.execute_batch(SCHEMA).map_err(fail)?;
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(fail)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(fail)?;
        conn.set_prepared_statement_cache_capacity(32);
        let page_size = query_u64(&conn, "page_size").map_err(fail)?;
        let unlimited_pages = query_u64(&conn, "max_page_count").map_err(fail)?;
        let db = Db {
            conn,
            lost: HashMap::new(),
            page_size: page_size.max(1),
            unlimited_pages,
        };
        if let Some(bytes) = max_size {
            let cap = db.cap(Some(bytes)).map_err(fail)?;
            if cap > bytes {
                tracing::warn!(
                    requested = bytes,
                    cap,
                    "the database is already larger than its size cap: it may not grow further"
                );
            }
        }
        Ok(db)
    }

    /// Caps the database at `bytes` (rounded down to whole pages), or lifts the cap, and
    /// returns the cap in force. SQLite keeps the cap at least at the current size, so a
    /// cap below it stops all growth; a write that would grow past it fails with
    /// `SQLITE_FULL` ("database or disk is full") and its transaction rolls back.
    fn cap(&self, bytes: Option<u64>) -> rusqlite::Result<u64> {
        // At least one page: `max_page_count = 0` would only read the limit.
        let pages = bytes.map_or(self.unlimited_pages, |b| (b / self.page_size).max(1));
        let pages = i64::try_from(pages).unwrap_or(i64::MAX);
        let in_force: i64 =
            self.conn
                .pragma_update_and_check(None, "max_page_count", pages, |r| r.get(0))?;
        Ok(u64::try_from(in_force)
            .unwrap_or(0)
            .saturating_mul(self.page_size))
    }

    /// Serves ops until every handle is dropped.
    ///
    /// Commits are acknowledged when their group's transaction commits: once the queue is
    /// empty or the group is full, so one sync covers many commits. Reads run on the same
    /// connection, inside that transaction, so they see the group's writes.
    pub fn run(mut self, mut rx: mpsc::Receiver<StoreOp>) {
        let mut group = Group::default();
        while let Some(first) = rx.blocking_recv() {
            let mut next = Some(first);
            while let Some(op) = next.take() {
                self.serve(op, &mut group);
                if group.len() < GROUP {
                    next = rx.try_recv().ok();
                }
            }
            self.flush(&mut group);
        }
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::warn!(error = %e, "checkpoint at close failed");
        }
    }

    fn serve(&mut self, op: StoreOp, group: &mut Group) {
        match op {
            StoreOp::Commit {
                instance,
                generation,
                batch,
                reply,
            } => {
                let commit = PendingCommit {
                    instance,
                    generation,
                    batch,
                    reply,
                };
                if let Some(commit) = self.admit(commit) {
                    group.queued.push(commit);
                }
            }
            StoreOp::ConsumeAlarm { instance, at } => group.consumed.push((instance, at)),
            // The alarm driver trusts what it reads to be durable, and a new size cap
            // applies to the commits queued after it: both wait for the group.
            other @ (StoreOp::Alarms { .. } | StoreOp::MaxSize { .. }) => {
                self.flush(group);
                self.answer(other);
            }
            other => {
                let instance = match &other {
                    StoreOp::Load { instance, .. }
                    | StoreOp::Read { instance, .. }
                    | StoreOp::List { instance, .. } => Some(instance.clone()),
                    _ => None,
                };
                if instance.is_some_and(|id| group.touches(&id)) {
                    self.write_queued(group);
                }
                self.answer(other);
            }
        }
    }

    /// Writes the queued commits into the open transaction; a failure loses the group.
    fn write_queued(&mut self, group: &mut Group) {
        if group.queued.is_empty() && group.consumed.is_empty() {
            return;
        }
        let result = self.begin(group).and_then(|()| self.write_all(group));
        group.written.append(&mut group.queued);
        group.consumed.clear();
        if let Err(e) = result {
            self.abort(group, &e.to_string());
        }
    }

    fn begin(&self, group: &mut Group) -> rusqlite::Result<()> {
        if !group.open {
            self.conn.execute_batch("BEGIN")?;
            group.open = true;
        }
        Ok(())
    }

    /// Writes the queued commits and removes the fired alarms, with each statement
    /// prepared once.
    fn write_all(&self, group: &Group) -> rusqlite::Result<()> {
        let conn = &self.conn;
        let mut put = conn.prepare_cached(
            "INSERT OR REPLACE INTO kv (instance, key, value) VALUES (?1, ?2, ?3)",
        )?;
        let mut delete = conn.prepare_cached("DELETE FROM kv WHERE instance = ?1 AND key = ?2")?;
        let mut delete_all = conn.prepare_cached("DELETE FROM kv WHERE instance = ?1")?;
        let mut set_alarm =
            conn.prepare_cached("INSERT OR REPLACE INTO alarms (instance, at) VALUES (?1, ?2)")?;
        let mut clear_alarm = conn.prepare_cached("DELETE FROM alarms WHERE instance = ?1")?;
        let mut consume =
            conn.prepare_cached("DELETE FROM alarms WHERE instance = ?1 AND at = ?2")?;
        for (instance, at) in &group.consumed {
            consume.execute(params![instance.as_ref(), at])?;
        }
        for PendingCommit {
            instance, batch, ..
        } in &group.queued
        {
            let id = instance.as_ref();
            if batch.deletes_all() {
                delete_all.execute([id])?;
                clear_alarm.execute([id])?;
            }
            for op in batch.ops() {
                match op {
                    WriteOp::Put(k, v) => put.execute(params![id, k, v])?,
                    WriteOp::Delete(k) => delete.execute(params![id, k])?,
                };
            }
            match batch.alarm() {
                Some(AlarmWrite::Set(at)) => set_alarm.execute(params![id, at])?,
                Some(AlarmWrite::Clear) => clear_alarm.execute([id])?,
                None => 0,
            };
        }
        Ok(())
    }

    /// Writes what is queued, commits the group's transaction and answers its commits.
    fn flush(&mut self, group: &mut Group) {
        self.write_queued(group);
        if !group.open {
            return;
        }
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            self.abort(group, &e.to_string());
            return;
        }
        for commit in group.written.drain(..) {
            let _ = commit.reply.send(Ok(()));
        }
        *group = Group::default();
    }

    /// Rolls the group back, fences its instances and fails its commits.
    fn abort(&mut self, group: &mut Group, cause: &str) {
        tracing::error!(error = %cause, "group commit failed");
        if !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::error!(error = %e, "rollback failed");
            }
        }
        group.written.append(&mut group.queued);
        self.fence(&group.written, cause);
        for commit in group.written.drain(..) {
            let _ = commit.reply.send(Err(StorageError::new(format!(
                "the group commit was rolled back: {cause}"
            ))));
        }
        *group = Group::default();
    }

    /// Takes a commit into the group, or refuses it at once if it follows a lost commit
    /// of its instance from the same engine generation (or an older one).
    fn admit(&mut self, commit: PendingCommit) -> Option<PendingCommit> {
        let Some((lost, cause)) = self.lost.get(&commit.instance) else {
            return Some(commit);
        };
        if commit.generation > *lost {
            // An engine loaded after the loss: the fence has done its work.
            self.lost.remove(&commit.instance);
            return Some(commit);
        }
        let _ = commit.reply.send(Err(StorageError::new(format!(
            "refused, as it was made on top of an earlier commit of this instance that was \
             lost ({cause})"
        ))));
        None
    }

    /// Remembers the instances of a failed group with their generations, so that commits
    /// their engines made on top of the lost writes are refused.
    fn fence(&mut self, group: &[PendingCommit], cause: &str) {
        let cause: Arc<str> = Arc::from(cause);
        for commit in group {
            let lost = self
                .lost
                .entry(commit.instance.clone())
                .or_insert((0, cause.clone()));
            *lost = (lost.0.max(commit.generation), cause.clone());
        }
    }

    /// Answers an op that is not a write: a read, or a change of the size cap.
    fn answer(&mut self, op: StoreOp) {
        match op {
            StoreOp::Load {
                instance,
                rows,
                reply,
            } => {
                let _ = reply.send(
                    self.load(&instance, rows)
                        .map_err(|e| storage_error("load failed", e)),
                );
            }
            StoreOp::Read {
                instance,
                keys,
                reply,
            } => {
                let _ = reply.send(
                    self.read(&instance, &keys)
                        .map_err(|e| storage_error("read failed", e)),
                );
            }
            StoreOp::List {
                instance,
                range,
                reply,
            } => {
                let _ = reply.send(
                    self.list(&instance, &range)
                        .map_err(|e| storage_error("range read failed", e)),
                );
            }
            StoreOp::Alarms {
                after,
                before,
                limit,
                reply,
            } => {
                let _ = reply.send(
                    self.alarms(after, before, limit)
                        .map_err(|e| storage_error("alarm index read failed", e)),
                );
            }
            StoreOp::MaxSize { bytes, reply } => {
                let _ = reply.send(
                    self.cap(bytes)
                        .map_err(|e| storage_error("cannot change the size cap", e)),
                );
            }
            StoreOp::Commit { .. } | StoreOp::ConsumeAlarm { .. } => {}
        }
    }

    fn load(&self, instance: &str, rows: usize) -> rusqlite::Result<LoadedInstance> {
        let mut first = self.list(
            instance,
            &RowRange {
                start: String::new(),
                end: None,
                limit: Some(rows.saturating_add(1)),
            },
        )?;
        let complete = first.len() <= rows;
        first.truncate(rows);
        let alarm = self
            .conn
            .prepare_cached("SELECT at FROM alarms WHERE instance = ?1")?
            .query_row([instance], |r| r.get(0))
            .optional()?;
        Ok(LoadedInstance {
            rows: first,
            complete,
            alarm,
        })
    }

    fn read(&self, instance: &str, keys: &[String]) -> rusqlite::Result<Vec<Option<Vec<u8>>>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT value FROM kv WHERE instance = ?1 AND key = ?2")?;
        keys.iter()
            .map(|key| {
                stmt.query_row(params![instance, key], |r| r.get(0))
                    .optional()
            })
            .collect()
    }

    fn list(&self, instance: &str, range: &RowRange) -> rusqlite::Result<Rows> {
        // SQLite reads a negative limit as none.
        let limit = range
            .limit
            .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        let map = |r: &rusqlite::Row<'_>| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?));
        match &range.end {
            Some(end) => self
                .conn
                .prepare_cached(
                    "SELECT key, value FROM kv WHERE instance = ?1 AND key >= ?2 AND key < ?3 \
                     ORDER BY key LIMIT ?4",
                )?
                .query_map(params![instance, range.start, end, limit], map)?
                .collect(),
            None => self
                .conn
                .prepare_cached(
                    "SELECT key, value FROM kv WHERE instance = ?1 AND key >= ?2 \
                     ORDER BY key LIMIT ?3",
                )?
                .query_map(params![instance, range.start, limit], map)?
                .collect(),
        }
    }

    fn alarms(
        &self,
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
            None => self
                .conn
                .prepare_cached(
                    "SELECT instance, at FROM alarms WHERE at < ?1 ORDER BY at, instance LIMIT ?2",
                )?
                .query_map(params![before, limit], map)?
                .collect(),
            Some((at, instance)) => self
                .conn
                .prepare_cached(
                    "SELECT instance, at FROM alarms WHERE at < ?1 AND (at, instance) > (?2, ?3) \
                     ORDER BY at, instance LIMIT ?4",
                )?
                .query_map(params![before, at, instance.as_ref(), limit], map)?
                .collect(),
        }
    }
}
