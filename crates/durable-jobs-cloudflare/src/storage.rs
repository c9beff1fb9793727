//! `Storage` over the Durable Object's SQLite database.
//!
//! Every key of the instance is a row of one table, `jobs_kv(key TEXT PRIMARY KEY, value
//! BLOB)`, so `list` is an ordered range scan with prefix, start, end and limit.
//!
//! Values are opaque bytes to the adapter. They are written as TEXT when they are UTF-8, as
//! everything the engine stores is (JSON), and as BLOB otherwise; a `BLOB` column keeps
//! either type as given, and reads accept both. Measured in workerd, an upsert plus a read
//! of a 300-byte JSON value took about 15-35% less time as TEXT than as BLOB: workers-rs
//! passes strings through wasm-bindgen's string path, but copies BLOBs through a fresh
//! `Uint8Array` on the way in and an `ArrayBuffer` on the way out. TEXT also keeps the
//! stored records readable in Cloudflare's data browser.
//!
//! SQL calls are synchronous (the database is local to the object), so reads never yield
//! to other requests; and a commit is one synchronous `transactionSync` callback, so no
//! request or alarm can interleave with it either.

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;

use durable_jobs::adapters::{AlarmWrite, Clock, ListOptions, Storage, WriteBatch, WriteOp};
use durable_jobs::StorageError;
use js_sys::{Function, Object, Promise, Reflect};
use serde::{Deserialize, Serialize};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::worker_sys::DurableObjectStorage;
use worker::{SqlCursor, SqlStorage, SqlStorageValue, State};

use crate::errors::{js_text, storage_error};
use crate::key_range::{self, Bind, Query};

/// Operation counts of one object's storage since it was loaded: what Durable Objects bill
/// (rows read and written) and how many calls the engine made.
///
/// Every call is one synchronous SQL statement, or one transaction for a commit: SQLite-backed
/// objects have no network round trip per call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageStats {
    /// `get` and `get_many` calls.
    pub reads: u64,
    /// `list` calls.
    pub lists: u64,
    /// `commit` calls that succeeded.
    pub commits: u64,
    /// SQL statements run (reads, lists and every statement inside commits).
    pub statements: u64,
    /// Rows SQLite read (billed as rows read).
    pub rows_read: u64,
    /// Rows SQLite wrote (billed as rows written).
    pub rows_written: u64,
}

impl StorageStats {
    /// What was counted since `earlier`, a previous reading of the same counters.
    pub fn since(&self, earlier: &StorageStats) -> StorageStats {
        StorageStats {
            reads: self.reads.saturating_sub(earlier.reads),
            lists: self.lists.saturating_sub(earlier.lists),
            commits: self.commits.saturating_sub(earlier.commits),
            statements: self.statements.saturating_sub(earlier.statements),
            rows_read: self.rows_read.saturating_sub(earlier.rows_read),
            rows_written: self.rows_written.saturating_sub(earlier.rows_written),
        }
    }
}

/// The storage counts of one engine object, as its stats path answers them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageReport {
    /// Everything since the object was loaded (requests and alarms).
    pub total: StorageStats,
    /// The last request alone: a request's reads and commit are synchronous, so nothing
    /// else of the object runs between its first and last storage call.
    pub last_request: StorageStats,
}

/// One job instance's storage, alarm and clock, over its Durable Object.
///
/// Implements the core's `Storage` and `Clock`; an
/// [`Engine`](durable_jobs::Engine) runs over it.
pub struct DurableObjectBackend {
    pub(crate) storage: worker::Storage,
    sql: OnceCell<SqlStorage>,
    pub(crate) stats: Cell<StorageStats>,
}

impl DurableObjectBackend {
    /// The backend of the object whose state is `state`.
    pub fn new(state: &State) -> Self {
        DurableObjectBackend {
            storage: state.storage(),
            sql: OnceCell::new(),
            stats: Cell::new(StorageStats::default()),
        }
    }

    /// Counts so far.
    pub fn stats(&self) -> StorageStats {
        self.stats.get()
    }

    pub(crate) fn count(&self, update: impl FnOnce(&mut StorageStats)) {
        let mut stats = self.stats.get();
        update(&mut stats);
        self.stats.set(stats);
    }

    /// The SQL handle, with the table created on first use.
    fn sql(&self) -> Result<&SqlStorage, StorageError> {
        if let Some(sql) = self.sql.get() {
            return Ok(sql);
        }
        // `storage.sql` throws for classes that are not SQLite-backed; probe it through
        // `Reflect` so that this becomes an error instead of an exception through wasm.
        Reflect::get(self.storage.as_raw(), &JsValue::from_str("sql")).map_err(|e| {
            storage_error(
                "SQL storage is unavailable (declare the class in `new_sqlite_classes`)",
                js_text(&e),
            )
        })?;
        let sql = self.storage.sql();
        sql.exec(key_range::CREATE_TABLE, None)
            .map_err(|e| storage_error("creating the table", e))?;
        Ok(self.sql.get_or_init(|| sql))
    }

    /// Runs one query and collects its `(key, value)` rows.
    fn select(&self, query: Query) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let cursor = exec(self.sql()?, query).map_err(|e| storage_error("read", e))?;
        let mut rows = Vec::new();
        for row in cursor.raw() {
            let row = row.map_err(|e| storage_error("read", e))?;
            let mut columns = row.into_iter();
            let key = match columns.next() {
                Some(SqlStorageValue::String(key)) => key,
                other => return Err(storage_error("read", format!("unexpected key {other:?}"))),
            };
            let value = match columns.next() {
                Some(SqlStorageValue::Blob(bytes)) => bytes,
                Some(SqlStorageValue::String(text)) => text.into_bytes(),
                other => {
                    return Err(storage_error(
                        "read",
                        format!("unexpected value for `{key}`: {other:?}"),
                    ))
                }
            };
            rows.push((key, value));
        }
        let rows_read = cursor.rows_read() as u64;
        self.count(|s| {
            s.statements += 1;
            s.rows_read += rows_read;
        });
        Ok(rows)
    }

    /// Applies `batch` inside one `transactionSync` callback.
    ///
    /// Why this and not another API: workers-rs 0.8 has no binding for `transactionSync`,
    /// so it is called through `Reflect`. It wraps the callback in a SQLite savepoint and
    /// rolls everything back if the callback throws, which is what makes the step atomic
    /// even when a statement fails half-way. The implicit transaction that coalesces the
    /// writes of one synchronous turn would commit what ran before a failure; the
    /// asynchronous `storage.transaction()` would let other events interleave at its awaits.
    /// `setAlarm`/`deleteAlarm` on a SQLite-backed object write the alarm into the same
    /// database synchronously, so the alarm change commits, or rolls back, with the rows.
    /// (They report an invalid time through their promise, too late to roll back: hence
    /// the check of the time before the transaction starts.)
    fn apply(&self, mut batch: WriteBatch) -> Result<Vec<Promise>, StorageError> {
        if let Some(AlarmWrite::Set(at)) = batch.alarm() {
            batch.set_alarm(Some(platform_alarm_time(at, Clock::now(self))?));
        }
        let sql = self.sql()?.clone();
        let storage_handle: JsValue = AsRef::<JsValue>::as_ref(self.storage.as_raw()).clone();
        // A second handle on the same object, moved into the callback.
        let raw_storage: DurableObjectStorage = storage_handle.clone().unchecked_into();
        let transaction_sync: Function =
            Reflect::get(&storage_handle, &JsValue::from_str("transactionSync"))
                .ok()
                .and_then(|f| f.dyn_into().ok())
                .ok_or_else(|| {
                    storage_error(
                        "commit",
                        "storage.transactionSync is unavailable (declare the class in `new_sqlite_classes`)",
                    )
                })?;

        let tally = Rc::new(Cell::new((0u64, 0u64))); // (statements, rows written)
        let alarm_promises: Rc<RefCell<Vec<Promise>>> = Rc::default();
        let callback = {
            let tally = tally.clone();
            let alarm_promises = alarm_promises.clone();
            Closure::once(move || -> Result<JsValue, JsValue> {
                let run = |query: Query| -> Result<(), JsValue> {
                    let cursor = exec(&sql, query).map_err(JsValue::from)?;
                    let (statements, written) = tally.get();
                    tally.set((statements + 1, written + cursor.rows_written() as u64));
                    Ok(())
                };
                let (delete_all, ops, alarm) = batch.into_parts();
                if delete_all {
                    run(plain(key_range::DELETE_ALL))?;
                }
                for op in ops {
                    let query = match op {
                        WriteOp::Put(key, value) => Query {
                            sql: key_range::UPSERT.to_string(),
                            binds: vec![Bind::Text(key), value_bind(value)],
                        },
                        WriteOp::Delete(key) => Query {
                            sql: key_range::DELETE_ONE.to_string(),
                            binds: vec![Bind::Text(key)],
                        },
                    };
                    run(query)?;
                }
                let promise = match alarm {
                    Some(AlarmWrite::Set(at)) => {
                        let date = js_sys::Date::new(&JsValue::from_f64(at as f64));
                        Some(raw_storage.set_alarm(date, Object::new())?)
                    }
                    Some(AlarmWrite::Clear) => Some(raw_storage.delete_alarm(Object::new())?),
                    None => None,
                };
                alarm_promises.borrow_mut().extend(promise);
                Ok(JsValue::UNDEFINED)
            })
        };
        transaction_sync
            .call1(&storage_handle, callback.as_ref())
            .map_err(|e| storage_error("commit rolled back", js_text(&e)))?;
        let (statements, rows_written) = tally.get();
        self.count(|s| {
            s.statements += statements;
            s.rows_written += rows_written;
        });
        let promises = alarm_promises.take();
        Ok(promises)
    }
}

/// The latest time a JavaScript `Date` can hold, in ms since the epoch.
const MAX_DATE_MS: i64 = 8_640_000_000_000_000;

/// The alarm time to give the platform for the engine's `at`.
///
/// The engine asks for "due now" with any past time, `0` included, but `setAlarm` rejects
/// times `<= 0`, and it does so through its promise, after the transaction has committed;
/// so every time is checked here, before anything is written: past times become `now`
/// (an alarm in the past fires at once), and times past the end of `Date` are an error.
fn platform_alarm_time(at: i64, now: i64) -> Result<i64, StorageError> {
    if at > MAX_DATE_MS {
        return Err(storage_error(
            "alarm",
            format!("{at} ms is past the latest time a Date can hold"),
        ));
    }
    Ok(at.max(now).max(1))
}

impl Storage for DurableObjectBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.get_many(&[key]).await?.pop().flatten())
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        self.count(|s| s.reads += 1);
        let mut found = std::collections::HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(key_range::MAX_BINDINGS) {
            found.extend(self.select(key_range::select_keys(chunk))?);
        }
        Ok(keys.iter().map(|k| found.get(*k).cloned()).collect())
    }

    async fn list(&self, options: ListOptions<'_>) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        self.count(|s| s.lists += 1);
        match key_range::select_range(&options) {
            Some(query) => self.select(query),
            None => Ok(Vec::new()),
        }
    }

    async fn commit(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let alarm_changes = self.apply(batch)?;
        // On SQLite-backed objects these promises are already settled: the alarm was written
        // inside the transaction. Awaiting them surfaces an error rather than dropping it.
        for promise in alarm_changes {
            JsFuture::from(promise)
                .await
                .map_err(|e| storage_error("alarm change", js_text(&e)))?;
        }
        self.count(|s| s.commits += 1);
        Ok(())
    }
}

/// A value as TEXT when it is UTF-8 (no copy), as BLOB otherwise.
fn value_bind(value: Vec<u8>) -> Bind {
    match String::from_utf8(value) {
        Ok(text) => Bind::Text(text),
        Err(not_text) => Bind::Blob(not_text.into_bytes()),
    }
}

fn plain(sql: &str) -> Query {
    Query {
        sql: sql.to_string(),
        binds: Vec::new(),
    }
}

fn exec(sql: &SqlStorage, query: Query) -> worker::Result<SqlCursor> {
    let binds = query
        .binds
        .into_iter()
        .map(|bind| match bind {
            Bind::Text(text) => SqlStorageValue::String(text),
            Bind::Integer(n) => SqlStorageValue::Integer(n),
            Bind::Blob(bytes) => SqlStorageValue::Blob(bytes),
        })
        .collect::<Vec<_>>();
    sql.exec(&query.sql, binds)
}
