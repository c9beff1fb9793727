//! Reading an instance's stored records the way docs/ARCHITECTURE.md ("Storage layout per
//! kind") describes them, and the invariants they must keep whatever happened: counters
//! agree with rows, every id record and expiry entry has its partner, nothing is stored
//! without metadata, and due work implies an alarm.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::rc::Rc;

use durable_jobs::JobKind;
use serde_json::Value;

use crate::config::JobsConfig;
use crate::violation::{class, Violation};
use crate::world::Work;

/// An instance's keys and values.
pub type Rows = BTreeMap<String, Vec<u8>>;

/// An instance's keys with their values as stored and decoded (a value that is not JSON
/// reads as `null`). Decoded values are shared between views, so that a row decodes once.
pub type Records = BTreeMap<String, (Vec<u8>, Rc<Value>)>;

static NULL: Value = Value::Null;

/// Decodes every value of `rows` once, for the checks to share.
pub fn decode_all(rows: &Rows) -> Records {
    decode_reusing(rows, &[])
}

/// Decodes `rows`, taking the values of rows unchanged since `earlier` from there.
pub fn decode_reusing(rows: &Rows, earlier: &[&Records]) -> Records {
    rows.iter()
        .map(|(k, bytes)| {
            let known = earlier
                .iter()
                .find_map(|e| e.get(k).filter(|(b, _)| b == bytes));
            let value = match known {
                Some((_, value)) => value.clone(),
                None => Rc::new(serde_json::from_slice(bytes).unwrap_or(Value::Null)),
            };
            (k.clone(), (bytes.clone(), value))
        })
        .collect()
}

fn decode<'a>(rows: &'a Records, key: &str) -> Option<&'a Value> {
    rows.get(key).map(|(_, v)| &**v)
}

/// The records whose key starts with `prefix`, in order.
fn with_prefix<'a>(
    rows: &'a Records,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a str, &'a Value)> {
    rows.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
        .map(|(k, (_, v))| (k.as_str(), &**v))
}

fn count_prefix(rows: &Records, prefix: &str) -> u64 {
    with_prefix(rows, prefix).count() as u64
}

fn num(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or(0)
}

fn time(v: &Value, field: &str) -> Option<i64> {
    v[field].as_i64()
}

fn bad(detail: String) -> Violation {
    Violation::new(class::LAYOUT, detail)
}

/// Where a simulated event is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A WorkerPool queue row or delayed row (the same event, before and after its time),
    /// with its sequence number.
    Queued {
        /// The row's sequence number.
        seq: u64,
    },
    /// A WorkerPool dead letter.
    Dead,
    /// A Debounce batch that is not done: open, in flight, full or failed.
    Batch {
        /// Whether it is a failed batch (kept until a flush or clear).
        failed: bool,
    },
    /// A Task's state, which keeps the serials of the events it accepted.
    Task,
}

/// A simulated event found in storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its serial.
    pub serial: u64,
    /// Where it is.
    pub place: Place,
    /// Its event id (WorkerPool rows only).
    pub event_id: Option<String>,
}

/// Every simulated event stored in `rows`.
pub fn serials(kind: JobKind, rows: &Records) -> Vec<Stored> {
    match kind {
        JobKind::WorkerPool => pool_serials(rows),
        JobKind::Debounce => batches(rows)
            .into_iter()
            .flat_map(|b| {
                let place = Place::Batch { failed: b.failed };
                b.serials.into_iter().map(move |serial| Stored {
                    serial,
                    place,
                    event_id: None,
                })
            })
            .collect(),
        JobKind::Task => task_serials(rows)
            .into_iter()
            .map(|serial| Stored {
                serial,
                place: Place::Task,
                event_id: None,
            })
            .collect(),
        JobKind::Continuous => Vec::new(),
    }
}

/// The serials a task's state holds.
fn task_serials(rows: &Records) -> Vec<u64> {
    decode(rows, "state")
        .and_then(|s| s["serials"].as_array())
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

fn pool_serials(rows: &Records) -> Vec<Stored> {
    let stored = |row: &Value, place| Stored {
        serial: num(&row["event"], "serial"),
        place,
        event_id: row["eventId"].as_str().map(str::to_string),
    };
    let queued = with_prefix(rows, "q:")
        .chain(with_prefix(rows, "d:"))
        .map(|(_, row)| {
            let place = Place::Queued {
                seq: num(row, "seq"),
            };
            stored(row, place)
        });
    let dead = with_prefix(rows, "dead:").map(|(_, row)| stored(row, Place::Dead));
    queued.chain(dead).collect()
}

/// A Debounce batch as stored anywhere.
struct Batch {
    key: String,
    serials: Vec<u64>,
    event_count: u64,
    failed: bool,
}

fn batch(key: String, value: &Value, failed: bool) -> Batch {
    let serials = value["state"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    Batch {
        key,
        serials,
        event_count: num(value, "eventCount"),
        failed,
    }
}

fn batches(rows: &Records) -> Vec<Batch> {
    let mut found = Vec::new();
    if let Some(rec) = decode(rows, "debounce") {
        if !rec["batch"].is_null() {
            found.push(batch("debounce.batch".into(), &rec["batch"], false));
        }
        let inflight = &rec["inflight"];
        if !inflight.is_null() {
            found.push(batch("debounce.inflight".into(), &inflight["batch"], false));
        }
    }
    for (key, value) in with_prefix(rows, "full:") {
        found.push(batch(key.to_string(), value, false));
    }
    for (key, value) in with_prefix(rows, "failed:") {
        found.push(batch(key.to_string(), value, true));
    }
    found
}

/// What the checks derive from one view (live or durable) of an instance's rows, kept so
/// that rows seen before are not decoded again.
#[derive(Debug)]
pub struct View {
    /// The rows.
    pub rows: Rows,
    /// The rows decoded.
    pub records: Records,
    /// Whether they keep every layout invariant ([`check`]).
    pub layout: Result<(), Violation>,
    /// When something is due ([`due_at`]).
    pub due: Option<i64>,
    /// The simulated events stored ([`serials`]).
    pub stored: Vec<Stored>,
    /// A Continuous instance's state token ([`continuous_token`]).
    pub token: Option<u64>,
    /// When the first stored id record that expires does ([`id_records`]).
    pub first_expiry: Option<i64>,
}

impl View {
    /// Derives everything from `rows` of an instance of `kind`, decoding only the rows that
    /// differ from those of `earlier` views.
    pub fn new(kind: JobKind, rows: Rows, cfg: &JobsConfig, earlier: &[&View]) -> Self {
        let earlier: Vec<&Records> = earlier.iter().map(|v| &v.records).collect();
        let records = decode_reusing(&rows, &earlier);
        View {
            layout: check(kind, &records, cfg),
            due: due_at(kind, &records),
            stored: serials(kind, &records),
            token: continuous_token(&records),
            first_expiry: id_records(kind, &records, cfg)
                .into_iter()
                .filter_map(|(_, expires)| expires)
                .min(),
            rows,
            records,
        }
    }
}

/// Checks every invariant of the stored records of one instance of `kind`.
pub fn check(kind: JobKind, rows: &Records, cfg: &JobsConfig) -> Result<(), Violation> {
    let Some(meta) = decode(rows, "meta") else {
        if let Some(key) = rows.keys().next() {
            return Err(bad(format!("`{key}` is stored without metadata")));
        }
        return Ok(());
    };
    check_id_index(kind, rows, cfg)?;
    match kind {
        JobKind::Continuous => check_continuous(rows, meta),
        JobKind::Debounce => check_debounce(rows, cfg),
        JobKind::WorkerPool => check_pool(rows),
        JobKind::Task => check_task(rows, meta),
    }
}

/// A terminated task keeps neither record nor state and is purged at once; a live one has
/// its record, which counts the events its state holds (both are written in one step), and
/// an idle one (no timer, no retry) is due for its purge.
fn check_task(rows: &Records, meta: &Value) -> Result<(), Violation> {
    let record = decode(rows, "task");
    if meta["status"]["status"] == "stopped" {
        if record.is_some() || decode(rows, "state").is_some() {
            return Err(bad("a terminated task keeps its record or state".into()));
        }
        if time(meta, "purgeAt").is_none() {
            return Err(bad("a terminated task has no purge time".into()));
        }
        return Ok(());
    }
    let Some(record) = record else {
        return Err(bad("a live task lacks its record".into()));
    };
    let serials = task_serials(rows);
    let counted = num(record, "eventCount");
    if counted != serials.len() as u64 {
        return Err(bad(format!(
            "the task record counts {counted} events but its state holds {serials:?}: an event's state and count were not written together"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = serials.iter().find(|s| !seen.insert(**s)) {
        return Err(bad(format!("event #{twice} is twice in the task's state")));
    }
    let idle = time(record, "nextRunAt").is_none() && time(record, "retryAt").is_none();
    if idle && time(meta, "purgeAt").is_none() {
        return Err(bad("an idle task has no purge time".into()));
    }
    if !idle && time(meta, "purgeAt").is_some() {
        return Err(bad("a task with a timer is due for purging".into()));
    }
    Ok(())
}

fn check_continuous(rows: &Records, meta: &Value) -> Result<(), Violation> {
    let stopped = meta["status"]["status"] == "stopped";
    let record = decode(rows, "continuous");
    let state = decode(rows, "state");
    if stopped {
        if record.is_some() || state.is_some() {
            return Err(bad("a stopped instance keeps its record or state".into()));
        }
        if time(meta, "purgeAt").is_none() {
            return Err(bad("a stopped instance has no purge time".into()));
        }
        return Ok(());
    }
    let (Some(record), Some(state)) = (record, state) else {
        return Err(bad("an active instance lacks its record or state".into()));
    };
    let (runs, run_count) = (num(state, "runs"), num(record, "runCount"));
    if runs != run_count {
        return Err(bad(format!(
            "the state counts {runs} runs but the record {run_count}: a run's state and count were not written together"
        )));
    }
    Ok(())
}

fn check_debounce(rows: &Records, cfg: &JobsConfig) -> Result<(), Violation> {
    let rec = decode(rows, "debounce").unwrap_or(&NULL);
    let failed_rows = count_prefix(rows, "failed:");
    let full_rows = count_prefix(rows, "full:");
    if num(rec, "failedCount") != failed_rows || num(rec, "fullBatches") != full_rows {
        return Err(bad(format!(
            "failedCount {} / fullBatches {} but {failed_rows} failed and {full_rows} full rows",
            num(rec, "failedCount"),
            num(rec, "fullBatches")
        )));
    }
    let mut seen = HashMap::new();
    for b in batches(rows) {
        if b.serials.len() as u64 != b.event_count {
            return Err(bad(format!(
                "{} counts {} events but holds {:?}",
                b.key, b.event_count, b.serials
            )));
        }
        if let Some(max) = cfg.batch_max_events {
            if b.event_count > u64::from(max) {
                return Err(Violation::new(
                    class::BATCH_TOO_LARGE,
                    format!(
                        "{} holds {} events, max_events is {max}",
                        b.key, b.event_count
                    ),
                ));
            }
        }
        for s in b.serials {
            if let Some(other) = seen.insert(s, b.key.clone()) {
                return Err(bad(format!("event #{s} is in {other} and in {}", b.key)));
            }
        }
    }
    Ok(())
}

fn check_pool(rows: &Records) -> Result<(), Violation> {
    let pool = decode(rows, "pool").unwrap_or(&NULL);
    let queued = count_prefix(rows, "q:");
    let delayed = count_prefix(rows, "d:");
    let dead = count_prefix(rows, "dead:");
    if num(pool, "pending") != queued
        || num(pool, "delayed") != delayed
        || num(pool, "dead") != dead
    {
        return Err(bad(format!(
            "pool counts pending {} / delayed {} / dead {} but {queued} queue rows, {delayed} delayed rows and {dead} dead rows",
            num(pool, "pending"),
            num(pool, "delayed"),
            num(pool, "dead")
        )));
    }
    check_delayed(rows, pool)?;
    if let Some(current) = pool["current"].as_str() {
        if !rows.contains_key(current) {
            return Err(bad(format!("pool.current `{current}` is not in the queue")));
        }
    }
    let mut seen = HashMap::new();
    for found in pool_serials(rows) {
        if let Some(other) = seen.insert(found.serial, found.place) {
            return Err(bad(format!(
                "event #{} is stored twice: {other:?} and {:?}",
                found.serial, found.place
            )));
        }
    }
    for (prefix, tag) in [("q:", "queued"), ("d:", "queued"), ("dead:", "dead")] {
        for (key, row) in with_prefix(rows, prefix) {
            let id = row["eventId"].as_str().unwrap_or_default();
            let record = decode(rows, &format!("idem:{id}")).unwrap_or(&NULL);
            if record["at"] != tag || record["key"] != key {
                return Err(bad(format!(
                    "row `{key}` of event id `{id}` has id record {record}"
                )));
            }
        }
    }
    Ok(())
}

/// Delayed rows sit under `d:{run_at}:{seq}`, their own run time and sequence number, and
/// the pool record's `nextDelayedAt` is the first one's run time (the alarm's due time
/// for them); queue rows sit under `q:{rank}:{seq}`, whatever run time they came with.
fn check_delayed(rows: &Records, pool: &Value) -> Result<(), Violation> {
    for (key, row) in with_prefix(rows, "d:") {
        let Some(run_at) = time(row, "runAt") else {
            return Err(bad(format!("delayed row `{key}` has no run time")));
        };
        let expected = format!("d:{:020}:{:020}", run_at.max(0), num(row, "seq"));
        if key != expected {
            return Err(bad(format!(
                "delayed row `{key}` runs at {run_at}: its key should be `{expected}`"
            )));
        }
    }
    for (key, row) in with_prefix(rows, "q:") {
        let rank = i64::from(i32::MAX) - row["priority"].as_i64().unwrap_or(0);
        let expected = format!("q:{rank:010}:{:020}", num(row, "seq"));
        if key != expected {
            return Err(bad(format!(
                "queue row `{key}` of priority {}: its key should be `{expected}`",
                row["priority"]
            )));
        }
    }
    let first = with_prefix(rows, "d:")
        .next()
        .and_then(|(_, row)| time(row, "runAt"));
    let noted = time(pool, "nextDelayedAt");
    if noted != first {
        return Err(bad(format!(
            "pool.nextDelayedAt is {noted:?}, but the first delayed row runs at {first:?}"
        )));
    }
    Ok(())
}

/// Every `idx:` entry names a record that expires then, and every record that expires has
/// its entry (else no sweep would ever remove it); pinned WorkerPool records point at
/// their row.
fn check_id_index(kind: JobKind, rows: &Records, cfg: &JobsConfig) -> Result<(), Violation> {
    for (key, _) in with_prefix(rows, "idx:") {
        let (expires, id) =
            parse_index_key(key).ok_or_else(|| bad(format!("malformed expiry entry `{key}`")))?;
        let record = decode(rows, &format!("idem:{id}"));
        let record_expiry = record.as_ref().and_then(|r| expiry(kind, r, cfg));
        if record_expiry != Some(expires) {
            return Err(bad(format!(
                "expiry entry `{key}` but the id record is {record:?}"
            )));
        }
    }
    for (key, record) in with_prefix(rows, "idem:") {
        let id = &key["idem:".len()..];
        if let Some(expires) = expiry(kind, record, cfg) {
            let entry = format!("idx:{:020}:{id}", expires.max(0));
            if !rows.contains_key(&entry) {
                return Err(bad(format!(
                    "id record `{key}` = {record} expires but has no expiry entry"
                )));
            }
        } else if kind == JobKind::WorkerPool {
            let target = record["key"].as_str().unwrap_or_default();
            if !rows.contains_key(target) {
                return Err(bad(format!(
                    "id record `{key}` = {record} points at no row"
                )));
            }
        }
    }
    Ok(())
}

fn parse_index_key(key: &str) -> Option<(i64, &str)> {
    let rest = key.strip_prefix("idx:")?;
    let expires = rest.get(..20)?.parse().ok()?;
    Some((expires, rest.get(21..)?))
}

/// When an id record expires: a Debounce record always, a WorkerPool record once its event
/// is done.
fn expiry(kind: JobKind, record: &Value, cfg: &JobsConfig) -> Option<i64> {
    match kind {
        JobKind::WorkerPool => (record["at"] == "done")
            .then(|| time(record, "expires"))
            .flatten(),
        _ => time(record, "expires")
            .or_else(|| time(record, "at").map(|at| at + cfg.batch_retention_ms)),
    }
}

/// The id records stored, as (event id, expiry if it expires).
pub fn id_records(kind: JobKind, rows: &Records, cfg: &JobsConfig) -> Vec<(String, Option<i64>)> {
    with_prefix(rows, "idem:")
        .map(|(key, record)| (key["idem:".len()..].to_string(), expiry(kind, record, cfg)))
        .collect()
}

/// The earliest time the stored records say something is due (a run, retry, flush, purge,
/// sweep or queued event), which the instance's alarm must not be later than.
pub fn due_at(kind: JobKind, rows: &Records) -> Option<i64> {
    let meta = decode(rows, "meta")?;
    let sweep = time(meta, "sweepAt");
    let work = match kind {
        JobKind::Continuous => continuous_due(rows, meta),
        JobKind::Debounce => debounce_due(rows, meta),
        JobKind::WorkerPool => pool_due(rows),
        JobKind::Task => task_due(rows, meta),
    };
    [work, sweep].into_iter().flatten().min()
}

fn continuous_due(rows: &Records, meta: &Value) -> Option<i64> {
    if meta["status"]["status"] == "stopped" {
        return time(meta, "purgeAt");
    }
    let rec = decode(rows, "continuous")?;
    time(rec, "retryAt").or_else(|| {
        [time(rec, "nextRunAt"), time(rec, "triggerAt")]
            .into_iter()
            .flatten()
            .min()
    })
}

fn task_due(rows: &Records, meta: &Value) -> Option<i64> {
    let purge = time(meta, "purgeAt");
    if meta["status"]["status"] == "stopped" {
        return purge;
    }
    let rec = decode(rows, "task")?;
    time(rec, "retryAt").or(time(rec, "nextRunAt")).or(purge)
}

fn debounce_due(rows: &Records, meta: &Value) -> Option<i64> {
    let rec = decode(rows, "debounce").unwrap_or(&NULL);
    let inflight = &rec["inflight"];
    if !inflight.is_null() {
        return time(inflight, "retryAt").or(time(inflight, "claimedAt"));
    }
    let retry_failed = rec["retryFailed"] == true && num(rec, "failedCount") > 0;
    let full = num(rec, "fullBatches") > 0;
    let open = (!rec["batch"].is_null()).then(|| {
        let b = &rec["batch"];
        let flush_at = time(b, "flushAt").unwrap_or(0);
        match b["forced"].is_null() {
            true => flush_at,
            false => flush_at.min(time(b, "startedAt").unwrap_or(0)),
        }
    });
    let flush = [(retry_failed || full).then_some(0), open]
        .into_iter()
        .flatten()
        .min();
    flush.or_else(|| time(meta, "purgeAt"))
}

fn pool_due(rows: &Records) -> Option<i64> {
    let pool = decode(rows, "pool").unwrap_or(&NULL);
    if pool["paused"] == true {
        return None;
    }
    // The first delayed event is due at its time; `on_empty` waits for it.
    let delayed = with_prefix(rows, "d:")
        .next()
        .map(|(_, row)| time(row, "runAt").unwrap_or(0));
    let queue = if !pool["current"].is_null() {
        Some(time(pool, "retryAt").unwrap_or(0))
    } else {
        let work = num(pool, "pending") > 0 || count_prefix(rows, "q:") > 0;
        let empty_hook = pool["drained"] == false && delayed.is_none();
        (work || empty_hook).then_some(0)
    };
    [queue, delayed].into_iter().flatten().min()
}

/// The token of a Continuous instance's state, if it has one.
pub fn continuous_token(rows: &Records) -> Option<u64> {
    decode(rows, "state").and_then(|s| s["token"].as_u64())
}

/// A Continuous instance's status name (`active`, `error`, `stopped`), if it exists.
pub fn continuous_status(rows: &Records) -> Option<String> {
    decode(rows, "meta").and_then(|m| m["status"]["status"].as_str().map(str::to_string))
}

/// Checks, when user code starts, that the work it was given is still durably pending:
/// otherwise it runs again although its completion (or its removal) is durable.
pub fn check_work_pending(rows: &Records, work: &Work, attempt: u32) -> Result<(), Violation> {
    let attempt = u64::from(attempt);
    let done = |what: String| Err(Violation::new(class::RAN_AFTER_DONE, what));
    match work {
        Work::Run { token, run_count } => {
            let same_start = continuous_token(rows) == Some(*token)
                && continuous_status(rows).is_some_and(|s| s != "stopped");
            // Otherwise a stop came between the claim and now; the result is discarded.
            if !same_start {
                return Ok(());
            }
            // A run that failed all its attempts does not count, so only the run count
            // tells runs apart: a run must not start once a later count is stored.
            let rec = decode(rows, "continuous").unwrap_or(&NULL);
            let durable_runs = num(rec, "runCount");
            if durable_runs > *run_count {
                return done(format!(
                    "run {run_count} attempt {attempt} of token {token} starts, but storage already records {durable_runs} runs"
                ));
            }
            Ok(())
        }
        Work::Flush { serials } => {
            // Attempts start again when a failed batch is flushed once more, so only the
            // batch itself tells flushes apart.
            if batches(rows).iter().any(|b| &b.serials == serials) {
                return Ok(());
            }
            done(format!(
                "a flush of {serials:?} starts, but no stored batch holds exactly these events"
            ))
        }
        // Whether a task's execution may start depends on its timer, which the model checks
        // (an execution never starts before the timer the last event set).
        Work::Task { .. } => Ok(()),
        Work::Event { serial, seq } => {
            // A claim runs the events it moved out of the delayed rows before that move
            // is durable: a crash puts them back there, due, to run again.
            let row = with_prefix(rows, "q:")
                .chain(with_prefix(rows, "d:"))
                .find(|(_, row)| num(row, "seq") == *seq);
            match row {
                Some((_, row)) if num(&row["event"], "serial") == *serial => {
                    if num(row, "attempt") >= attempt {
                        return done(format!(
                            "attempt {attempt} of event #{serial} starts, but {} failed attempts are stored",
                            num(row, "attempt")
                        ));
                    }
                    Ok(())
                }
                _ => done(format!(
                    "event #{serial} (seq {seq}) starts, but it is no longer stored in the queue"
                )),
            }
        }
    }
}

/// Whether the queued event `seq` is the first of its queue.
pub fn is_queue_head(rows: &Records, seq: u64) -> bool {
    with_prefix(rows, "q:")
        .next()
        .is_some_and(|(_, row)| num(row, "seq") == seq)
}

/// Checks, when a WorkerPool event starts, that it is the head of its queue: the event
/// waiting for its retry if there is one, else the first by priority then enqueue order.
/// Events enqueued since its claim have a later sequence number, so an earlier one still
/// queued ahead of it was passed over, unless it is a delayed event that came into the
/// queue since: one due before this event was enqueued (or came due itself) was moved
/// into the queue by this event's claim at the latest. `ran`: events of the same claim
/// that already ran successfully, whose outcomes are not recorded yet; they are not ahead
/// any more.
pub fn check_queue_order(rows: &Records, work: &Work, ran: &[u64]) -> Result<(), Violation> {
    let Work::Event { serial, seq } = work else {
        return Ok(());
    };
    let pool = decode(rows, "pool").unwrap_or(&NULL);
    let mine = with_prefix(rows, "q:").find(|(_, row)| num(row, "seq") == *seq);
    let Some(mine) = mine else {
        return Ok(());
    };
    let key = mine.0;
    let out_of_order = |what: String| Err(Violation::new(class::ORDER, what));
    if let Some(current) = pool["current"].as_str().filter(|c| *c != key) {
        return out_of_order(format!(
            "event #{serial} starts while `{current}` waits for its retry at the head"
        ));
    }
    // This event was claimed no sooner than it was enqueued, nor (if delayed) due.
    let claimed_after = [time(mine.1, "enqueuedAt"), time(mine.1, "runAt")]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(i64::MIN);
    let ahead = with_prefix(rows, "q:")
        .take_while(|(k, _)| *k < key)
        .find(|(_, row)| {
            num(row, "seq") < *seq
                && !ran.contains(&num(row, "seq"))
                && time(row, "runAt").is_none_or(|t| t <= claimed_after)
        });
    if let Some((other, _)) = ahead {
        return out_of_order(format!(
            "event #{serial} (`{key}`) starts while `{other}`, queued before it, is ahead of it"
        ));
    }
    // A delayed event due by then that its claim left out of the queue, where it would
    // have been ahead.
    let left_out = with_prefix(rows, "d:").find(|(_, row)| {
        let rank = i64::from(i32::MAX) - row["priority"].as_i64().unwrap_or(0);
        let queue_key = format!("q:{rank:010}:{:020}", num(row, "seq"));
        queue_key.as_str() < key
            && num(row, "seq") < *seq
            && time(row, "runAt").is_some_and(|t| t <= claimed_after)
    });
    match left_out {
        Some((other, row)) => out_of_order(format!(
            "event #{serial} (`{key}`) starts while `{other}`, due at {} and ahead of it, is still delayed",
            row["runAt"]
        )),
        None => Ok(()),
    }
}
