//! Reading a runtime's database file without the runtime: for an operator looking into a
//! stopped service (its jobs, its instances, one instance's records, its dead letters).
//!
//! The file is opened read-only: nothing is ever written to it. The reads are those the
//! runtime's own inspector makes, on a connection of their own, and the pages and counts
//! come from the same core functions ([`durable_jobs::inspect`]), so they read the same.

use std::path::Path;
use std::time::Duration;

use durable_jobs::adapters::prefix_end;
use durable_jobs::inspect::{self, InstancePage, InstanceQuery, StatusCounts};
use durable_jobs::{DeadLetter, InstanceId, JobError, JobKind, StorageError};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::Serialize;
use serde_json::Value;

use crate::error::OpenError;
use crate::store::sqlite::{APPLICATION_ID, SCHEMA_VERSION};
use crate::store::RowRange;
use crate::store::{lock, reads};

/// Where a Continuous instance keeps its user state, apart from its record.
const STATE_KEY: &str = "state";

/// The key prefix of a pool instance's dead letters, each under `dead:{seq:020}`.
const DEAD_PREFIX: &str = "dead:";

/// How long a read waits for a lock another connection holds before it reports it.
const BUSY_WAIT: Duration = Duration::from_millis(200);

/// One instance as its file holds it: its records decoded to JSON, as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredInstance {
    /// Its id.
    pub id: InstanceId,
    /// Its metadata record: status, creation and update times, purge time.
    pub metadata: Value,
    /// Its kind's record (a Continuous schedule, a Debounce batch, a pool's counters),
    /// if it has one.
    pub record: Option<Value>,
    /// A Continuous or Task instance's state, if it has one.
    pub state: Option<Value>,
    /// When its alarm is due (ms since the epoch), if it has one.
    pub alarm: Option<i64>,
}

/// A read-only view of a runtime's database file: which jobs have instances, pages of a
/// job's instances and their counts, one instance's records, a pool instance's dead
/// letters.
///
/// It opens the file with `SQLITE_OPEN_READ_ONLY`, so it never changes it, and needs no
/// runtime. Commits still in the write-ahead log (`-wal`) beside the file, as a crash
/// leaves them, are read too; to read that log SQLite may leave an empty `-wal` and a
/// `-shm` file beside the database, which a runtime opening it later takes over. A
/// running runtime holds a lock on `<database>-lock` (one process per file), so opening a
/// file in use fails with [`OpenError::Locked`]: ask the running service's admin API
/// then. Every call reads one consistent snapshot of the file.
///
/// ```no_run
/// use durable_jobs::inspect::InstanceQuery;
/// use durable_jobs::JobKind;
/// use durable_jobs_local::FileInspector;
///
/// # fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let file = FileInspector::open("jobs.db")?;
/// for (kind, name) in file.jobs()? {
///     println!("{kind} {name}: {:?}", file.counts(kind, &name)?);
/// }
/// let page = file.instances(&InstanceQuery::all(JobKind::WorkerPool, "mail"))?;
/// # Ok(()) }
/// ```
pub struct FileInspector {
    conn: Connection,
}

impl std::fmt::Debug for FileInspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileInspector")
            .field("path", &self.conn.path())
            .finish_non_exhaustive()
    }
}

fn storage(context: &str, e: rusqlite::Error) -> JobError {
    StorageError::with_source(context.to_string(), e).into()
}

fn decode(key: &str, bytes: &[u8]) -> Result<Value, JobError> {
    serde_json::from_slice(bytes).map_err(|e| JobError::Storage {
        message: format!("stored record `{key}` does not decode: {e}"),
    })
}

impl FileInspector {
    /// Opens the database file at `path` read-only. Fails if it does not exist, is not a
    /// durable-jobs database, was written by a newer version, or is locked by a running
    /// runtime.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        // SQLite would say only "unable to open database file".
        if !path.is_file() {
            return Err(OpenError::Io {
                message: format!("{name}: no such file"),
            });
        }
        lock::check_unlocked(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let fail = |e| OpenError::from_sqlite(name.clone(), e);
        let conn = Connection::open_with_flags(path, flags).map_err(fail)?;
        conn.busy_timeout(BUSY_WAIT).map_err(fail)?;
        let app_id: i32 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(fail)?;
        if app_id != APPLICATION_ID {
            return Err(OpenError::Foreign { path: name });
        }
        let version: i32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(fail)?;
        if version > SCHEMA_VERSION {
            return Err(OpenError::Version {
                path: name,
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(FileInspector { conn })
    }

    /// Runs `read` in one read transaction, so that its several queries see one state of
    /// the file even if a runtime writes to it meanwhile. The transaction only reads: it
    /// is rolled back when `read` returns.
    fn snapshot<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, JobError>,
    ) -> Result<T, JobError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| storage("cannot start a read", e))?;
        read(&tx)
    }

    /// The jobs that have instances in the file, as `(kind, name)`, ordered by kind and
    /// name. One index seek per job, however many instances each has.
    pub fn jobs(&self) -> Result<Vec<(JobKind, String)>, JobError> {
        self.snapshot(|conn| {
            let fail = |e| storage("cannot list the jobs", e);
            let mut at_or_after = conn
                .prepare_cached(
                    "SELECT instance FROM kv WHERE instance >= ?1 ORDER BY instance LIMIT 1",
                )
                .map_err(fail)?;
            let mut after = conn
                .prepare_cached(
                    "SELECT instance FROM kv WHERE instance > ?1 ORDER BY instance LIMIT 1",
                )
                .map_err(fail)?;
            let mut jobs = Vec::new();
            // The next id to look at: the first at or after `cursor`, or after it.
            let (mut cursor, mut inclusive) = (String::new(), true);
            loop {
                let stmt = if inclusive {
                    &mut at_or_after
                } else {
                    &mut after
                };
                let id: Option<String> = stmt
                    .query_row([&cursor], |r| r.get(0))
                    .optional()
                    .map_err(fail)?;
                let Some(id) = id else { break };
                match id.parse::<InstanceId>() {
                    Ok(parsed) => {
                        // Names hold no `:`, so the job's ids are exactly those under this
                        // prefix: skip them all in one seek.
                        let prefix = format!("{}:{}:", parsed.kind, parsed.name);
                        jobs.push((parsed.kind, parsed.name));
                        match prefix_end(&prefix) {
                            Some(end) => (cursor, inclusive) = (end, true),
                            None => break,
                        }
                    }
                    // Not an instance of any job: step over that one row's id.
                    Err(_) => (cursor, inclusive) = (id, false),
                }
            }
            Ok(jobs)
        })
    }

    /// A page of a job's instances, filtered as `query` says, in id order: the page the
    /// runtime's [`LocalInspector::instances`](crate::LocalInspector::instances) would
    /// give for the same file. A job with no instance in the file has an empty page.
    pub fn instances(&self, query: &InstanceQuery) -> Result<InstancePage, JobError> {
        let keys: Vec<String> = inspect::summary_keys(query.kind).map(String::from).into();
        self.snapshot(|conn| {
            futures::executor::block_on(inspect::page(query, |prefix, after, limit| {
                std::future::ready(fetch(conn, &prefix, after, &keys, limit))
            }))
        })
    }

    /// How many instances of the job `kind`/`name` are in each status. It reads every
    /// instance of the job.
    pub fn counts(&self, kind: JobKind, name: &str) -> Result<StatusCounts, JobError> {
        let keys: Vec<String> = inspect::summary_keys(kind).map(String::from).into();
        self.snapshot(|conn| {
            futures::executor::block_on(inspect::counts(kind, name, |prefix, after, limit| {
                std::future::ready(fetch(conn, &prefix, after, &keys, limit))
            }))
        })
    }

    /// One instance's records; `None` when the file holds no metadata for it.
    pub fn instance(&self, id: &InstanceId) -> Result<Option<StoredInstance>, JobError> {
        let [meta_key, record_key] = inspect::summary_keys(id.kind);
        let instance = id.to_string();
        self.snapshot(|conn| {
            let keys = [meta_key, record_key, STATE_KEY].map(String::from);
            let [meta, record, state]: [Option<Vec<u8>>; 3] = reads::read(conn, &instance, &keys)
                .map_err(|e| storage("cannot read the instance", e))?
                .try_into()
                .map_err(|_| JobError::Storage {
                    message: "a read of three keys gave another number of values".into(),
                })?;
            let Some(meta) = meta else {
                return Ok(None);
            };
            let alarm = conn
                .prepare_cached("SELECT at FROM alarms WHERE instance = ?1")
                .and_then(|mut stmt| stmt.query_row([&instance], |r| r.get(0)).optional())
                .map_err(|e| storage("cannot read the alarm index", e))?;
            let state = match id.kind {
                JobKind::Continuous | JobKind::Task => {
                    state.map(|s| decode(STATE_KEY, &s)).transpose()?
                }
                JobKind::Debounce | JobKind::WorkerPool => None,
            };
            Ok(Some(StoredInstance {
                id: id.clone(),
                metadata: decode(meta_key, &meta)?,
                record: record.map(|r| decode(record_key, &r)).transpose()?,
                state,
                alarm,
            }))
        })
    }

    /// Up to `limit` dead letters of a pool instance, oldest first, after the one
    /// numbered `after` if given (a page's last `seq`). Only WorkerPool instances have
    /// dead letters: any other id is a bad request.
    pub fn dead_letters(
        &self,
        id: &InstanceId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, JobError> {
        if id.kind != JobKind::WorkerPool {
            return Err(JobError::BadRequest {
                message: format!("{id} is not a WorkerPool instance: only those have dead letters"),
            });
        }
        let start = match after {
            Some(seq) => format!("{DEAD_PREFIX}{:020}", seq.saturating_add(1)),
            None => DEAD_PREFIX.to_string(),
        };
        let range = RowRange {
            start,
            end: prefix_end(DEAD_PREFIX),
            limit: Some(limit),
        };
        let instance = id.to_string();
        self.snapshot(|conn| {
            reads::list(conn, &instance, &range)
                .map_err(|e| storage("cannot read the dead letters", e))?
                .into_iter()
                .map(|(key, value)| {
                    serde_json::from_slice(&value).map_err(|e| JobError::Storage {
                        message: format!("stored record `{key}` does not decode: {e}"),
                    })
                })
                .collect()
        })
    }
}

/// The store's walk over a job's instances, as the core's page and count functions ask.
fn fetch(
    conn: &Connection,
    prefix: &str,
    after: Option<String>,
    keys: &[String],
    limit: usize,
) -> Result<inspect::RawInstances, StorageError> {
    reads::instances(conn, prefix, after, keys, limit)
        .map_err(|e| StorageError::with_source("instance scan failed", e))
}
