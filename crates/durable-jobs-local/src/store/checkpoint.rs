//! Checkpoints of the write-ahead log, kept off the writer's path.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold: that
//! commit copies the log's pages into the database and syncs both files, and every call
//! waiting on the group waits with it (tens of milliseconds on an ordinary disk, the tail
//! of every latency). Here the writer only counts: after each commit SQLite reports the
//! log's length, and past [`BACKGROUND_PAGES`] the writer wakes a thread with a
//! connection of its own that checkpoints passively, copying pages while the writer
//! keeps committing.
//!
//! A passive checkpoint never blocks the writer, but the log only starts over from its
//! beginning when a write finds every frame already copied, which a busy writer, always
//! a commit ahead of the checkpoint, may never see. So past [`INLINE_PAGES`] the writer
//! checkpoints itself right after its commit: the background passes have copied all but
//! the last frames, so this is short, and the next write starts the log over. The two
//! never run at once: SQLite would make the second give up, and a writer that gave up
//! every time the thread was copying would let the log grow without end. So the writer
//! waits for a pass under way (it is copying what the writer would copy). The log thus
//! stays under a few megabytes whatever the load.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, ErrorCode};

use crate::error::OpenError;

/// Log length (in pages) past which the background thread is woken: SQLite's own
/// automatic checkpoint threshold.
pub(super) const BACKGROUND_PAGES: i32 = 1000;

/// Log length (in pages) past which the writer checkpoints itself, so that the log
/// starts over.
pub(super) const INLINE_PAGES: i32 = 4 * BACKGROUND_PAGES;

/// What the writer and the checkpoint thread share.
#[derive(Default)]
struct Signal {
    state: Mutex<Request>,
    wake: Condvar,
    /// Held by whoever copies the log, the thread or the writer.
    copying: Mutex<()>,
}

#[derive(Default)]
struct Request {
    checkpoint: bool,
    stop: bool,
}

impl Signal {
    fn set(&self, change: impl FnOnce(&mut Request)) {
        change(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner));
        self.wake.notify_one();
    }

    /// Waits for a request; `false` once asked to stop.
    fn wait(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while !state.checkpoint && !state.stop {
            state = self
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.checkpoint = false;
        !state.stop
    }
}

/// The background checkpoint thread; stopped and joined when dropped.
pub(super) struct Checkpointer {
    signal: Arc<Signal>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread on `conn`, a second connection to the writer's file, and hooks
    /// the writer's connection so that its commits wake it. SQLite's automatic checkpoint
    /// is off from then on: the hook replaces it.
    pub fn start(writer: &mut Connection, conn: Connection, path: &str) -> Result<Self, OpenError> {
        // A connection learns that the file is in WAL mode only once it reads it: until
        // then a checkpoint on it does nothing and says so with -1 frames.
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .map_err(|e| OpenError::from_sqlite(path.to_string(), e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(OpenError::Io {
                message: format!("{path}: the checkpoint connection is not in WAL mode ({mode})"),
            });
        }
        let signal = Arc::new(Signal::default());
        let thread = std::thread::Builder::new()
            .name("durable-jobs-checkpoint".into())
            .spawn({
                let signal = signal.clone();
                move || run(&conn, &signal)
            })
            .map_err(|e| OpenError::Io {
                message: format!("cannot start the checkpoint thread: {e}"),
            })?;
        // Built before the hook, so that a failure below stops the thread again.
        let checkpointer = Checkpointer {
            signal: signal.clone(),
            thread: Some(thread),
        };
        writer
            .wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: i32| {
                if pages >= INLINE_PAGES {
                    let _copying = signal
                        .copying
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    checkpoint("inline", || wal.checkpoint_v2(CheckpointMode::PASSIVE));
                } else if pages >= BACKGROUND_PAGES {
                    signal.set(|r| r.checkpoint = true);
                }
                Ok(())
            }))
            .map_err(|e| OpenError::from_sqlite(path.to_string(), e))?;
        Ok(checkpointer)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.signal.set(|r| r.stop = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: &Connection, signal: &Signal) {
    while signal.wait() {
        let _copying = signal
            .copying
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        checkpoint("background", || {
            conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE)
        });
    }
}

/// Runs one checkpoint. A failure loses nothing (the log still holds every commit), so it
/// is only reported; a checkpoint that finds the other one running simply yields to it.
fn checkpoint(which: &str, run: impl FnOnce() -> rusqlite::Result<(i32, i32)>) {
    match run() {
        Ok(_) => {}
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) => {}
        Err(e) => tracing::warn!(error = %e, which, "checkpoint failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::OpenFlags;

    /// Writes `pages` pages' worth of rows in their own transactions, as the writer does.
    fn write(conn: &Connection, transactions: usize) {
        for i in 0..transactions {
            conn.execute("INSERT INTO t (v) VALUES (?1)", [vec![i as u8; 4096 * 4]])
                .unwrap();
        }
    }

    #[test]
    fn the_thread_copies_the_log_before_the_writer_has_to() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        let mut writer = Connection::open_with_flags(&path, flags).unwrap();
        writer
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (v BLOB);")
            .unwrap();
        let second = Connection::open_with_flags(&path, flags).unwrap();
        let _checkpointer = Checkpointer::start(&mut writer, second, "db").unwrap();
        // Past the background threshold, far below the writer's own.
        write(&writer, (BACKGROUND_PAGES as usize) / 4 + 10);
        // Pages reach the database file only through a checkpoint, and the writer's own
        // threshold was not reached: a growing file is the thread's work.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::metadata(&path).unwrap().len() < 1 << 20 {
            assert!(
                std::time::Instant::now() < deadline,
                "the thread never copied the log into the file"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
