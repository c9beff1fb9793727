//! The thread that owns the SQLite connection.

use std::collections::VecDeque;

use durable_jobs::StorageError;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::mpsc;

use super::checkpoint::Checkpointer;
use super::group::{Fence, Group, PendingCommit};
use super::lock::ProcessLock;
use super::reads;
use super::writer::Writer;
use super::{Durability, Location, StoreOp};
use crate::error::OpenError;

/// Marks our files (`PRAGMA application_id`), so a foreign SQLite file is refused.
pub(crate) const APPLICATION_ID: i32 = 0x444a_4f42; // "DJOB"
pub(crate) const SCHEMA_VERSION: i32 = 1;
/// Commits grouped into one transaction at most.
const GROUP: usize = 4096;
/// Commits written between two looks for reads waiting in the channel.
const READS_EVERY: usize = 64;

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

pub(super) struct Db {
    conn: Connection,
    /// Refuses commits made on top of a lost one.
    fence: Fence,
    /// The file's page size: `max_page_count` counts pages, the size cap counts bytes.
    page_size: u64,
    /// SQLite's own page limit, which lifting the size cap restores.
    unlimited_pages: u64,
    /// Copies the log into the file off the writer's path (none in memory).
    checkpointer: Option<Checkpointer>,
    /// Declared last so that it is released after the connections close.
    _lock: Option<ProcessLock>,
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
        let mut lock = None;
        let (mut conn, path) = match location {
            Location::File(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    if !dir.is_dir() {
                        return Err(OpenError::Io {
                            message: format!("the directory {} does not exist", dir.display()),
                        });
                    }
                }
                lock = Some(ProcessLock::acquire(path)?);
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
        let checkpointer = match location {
            Location::File(file) => {
                let second = Connection::open_with_flags(file, flags).map_err(fail)?;
                Some(Checkpointer::start(&mut conn, second, &path)?)
            }
            Location::Memory => None,
        };
        let page_size = query_u64(&conn, "page_size").map_err(fail)?;
        let unlimited_pages = query_u64(&conn, "max_page_count").map_err(fail)?;
        let db = Db {
            conn,
            fence: Fence::default(),
            page_size: page_size.max(1),
            unlimited_pages,
            checkpointer,
            _lock: lock,
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
    /// connection, inside that transaction, so they see the group's writes; a read that
    /// arrives while a group is being written is answered between two commits, not after
    /// the whole group, so that an instance reading its queue's next rows does not wait
    /// for thousands of other instances' writes.
    pub fn run(mut self, rx: mpsc::Receiver<StoreOp>) {
        let mut inbox = Inbox {
            rx,
            deferred: VecDeque::new(),
        };
        let mut group = Group::default();
        while let Some(first) = inbox.next_blocking() {
            let mut next = Some(first);
            while let Some(op) = next.take() {
                self.serve(op, &mut group, &mut inbox);
                if group.len() < GROUP {
                    next = inbox.try_next();
                }
            }
            self.flush(&mut group, &mut inbox);
        }
        drop(self.checkpointer.take());
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::warn!(error = %e, "checkpoint at close failed");
        }
    }

    fn serve(&mut self, op: StoreOp, group: &mut Group, inbox: &mut Inbox) {
        let op = match receive(&mut self.fence, group, op) {
            Some(op) => op,
            None => return,
        };
        if let Some(instance) = reads::instance_of(&op) {
            if group.touches(instance) {
                self.write_pending(group, inbox);
            }
            reads::answer(&self.conn, op);
            return;
        }
        // The alarm driver trusts what it reads to be durable, and a new size cap applies
        // to the commits received after it: both wait for the group.
        self.flush(group, inbox);
        match op {
            StoreOp::MaxSize { bytes, reply } => {
                let _ = reply.send(
                    self.cap(bytes)
                        .map_err(|e| StorageError::with_source("cannot change the size cap", e)),
                );
            }
            other => {
                reads::answer(&self.conn, other);
            }
        }
    }

    /// Writes what the group received and has not written; a failure loses the group.
    fn write_pending(&mut self, group: &mut Group, inbox: &mut Inbox) {
        while group.has_unwritten() {
            let Db { conn, fence, .. } = self;
            let result = begin(conn, group).and_then(|()| write_pass(conn, fence, group, inbox));
            if let Err(e) = result {
                self.abort(group, &e.to_string());
                return;
            }
        }
    }

    /// Writes what is pending, commits the group's transaction and answers its commits.
    fn flush(&mut self, group: &mut Group, inbox: &mut Inbox) {
        self.write_pending(group, inbox);
        if !group.open {
            return;
        }
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            self.abort(group, &e.to_string());
            return;
        }
        group.answer(|| Ok(()));
    }

    /// Rolls the group back, fences its instances and fails its commits.
    fn abort(&mut self, group: &mut Group, cause: &str) {
        tracing::error!(error = %cause, "group commit failed");
        if !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::error!(error = %e, "rollback failed");
            }
        }
        self.fence.close(group, cause);
        group.answer(|| {
            Err(StorageError::new(format!(
                "the group commit was rolled back: {cause}"
            )))
        });
    }
}

/// Where ops come from: the channel, and ops set aside while a group was being written.
struct Inbox {
    rx: mpsc::Receiver<StoreOp>,
    /// Ops that must wait for the group being written (an alarm index read, a size cap).
    deferred: VecDeque<StoreOp>,
}

impl Inbox {
    fn next_blocking(&mut self) -> Option<StoreOp> {
        self.deferred
            .pop_front()
            .or_else(|| self.rx.blocking_recv())
    }

    fn try_next(&mut self) -> Option<StoreOp> {
        self.deferred
            .pop_front()
            .or_else(|| self.rx.try_recv().ok())
    }
}

/// Takes a write op into the group (admitted past the fence); gives any other op back.
fn receive(fence: &mut Fence, group: &mut Group, op: StoreOp) -> Option<StoreOp> {
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
                written: false,
            };
            if let Some(commit) = fence.admit(commit) {
                group.push(commit);
            }
            None
        }
        StoreOp::ConsumeAlarm { instance, at } => {
            group.consumed.push((instance, at));
            None
        }
        other => Some(other),
    }
}

fn begin(conn: &Connection, group: &mut Group) -> rusqlite::Result<()> {
    if !group.open {
        conn.execute_batch("BEGIN")?;
        group.open = true;
    }
    Ok(())
}

/// One pass over the group: writes its unwritten commits in order, with statements
/// prepared once, and every few commits answers the reads that arrived meanwhile.
fn write_pass(
    conn: &Connection,
    fence: &mut Fence,
    group: &mut Group,
    inbox: &mut Inbox,
) -> rusqlite::Result<()> {
    let mut writer = Writer::prepare(conn)?;
    for (instance, at) in std::mem::take(&mut group.consumed) {
        writer.consume(&instance, at)?;
    }
    let mut i = 0;
    while i < group.commits.len() {
        write_commit(&mut writer, group, i)?;
        i += 1;
        if i % READS_EVERY == 0 {
            answer_reads(conn, &mut writer, fence, group, inbox)?;
        }
    }
    Ok(())
}

fn write_commit(writer: &mut Writer<'_>, group: &mut Group, i: usize) -> rusqlite::Result<()> {
    let commit = &mut group.commits[i];
    if !commit.written {
        writer.write(&commit.instance, &commit.batch)?;
        commit.written = true;
        group.unwritten -= 1;
    }
    Ok(())
}

/// Answers the reads waiting in the channel, each after writing its instance's pending
/// commits; takes the commits that arrived with them into the group, and sets aside the
/// ops that must wait for the group.
fn answer_reads(
    conn: &Connection,
    writer: &mut Writer<'_>,
    fence: &mut Fence,
    group: &mut Group,
    inbox: &mut Inbox,
) -> rusqlite::Result<()> {
    for _ in 0..READS_EVERY {
        // A full group stops taking ops: its commits wait for its sync, and growing it
        // would make every one of them wait longer.
        if group.len() >= GROUP {
            break;
        }
        let Ok(op) = inbox.rx.try_recv() else {
            break;
        };
        let Some(op) = receive(fence, group, op) else {
            continue;
        };
        let Some(instance) = reads::instance_of(&op).cloned() else {
            inbox.deferred.push_back(op);
            continue;
        };
        for i in group.unwritten_of(&instance) {
            write_commit(writer, group, i)?;
        }
        for (id, at) in std::mem::take(&mut group.consumed) {
            writer.consume(&id, at)?;
        }
        reads::answer(conn, op);
        #[cfg(test)]
        READS_DURING_WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

/// Reads answered while a group was being written, so a test can tell it covered them.
#[cfg(test)]
pub(super) static READS_DURING_WRITES: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);
