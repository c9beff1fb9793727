//! Corrupt stored records, through the public API only.
//!
//! Real instances of every kind are filled so that each record of the storage layout
//! (docs/ARCHITECTURE.md, "Storage layout per kind") exists; then one record of one instance
//! is overwritten, every kind of request is sent and the clock is moved on. Whatever the
//! bytes, nothing panics, a step that fails commits nothing, an alarm that fails is retried
//! without wedging the harness, and the other instances go on exactly as without the
//! corruption. When the bytes do not decode, every request that reads the record fails with
//! a storage error naming its key.
//!
//! The default case counts keep `cargo test` quick; set `PROPTEST_CASES` for longer runs.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use durable_jobs::adapters::{Storage, WriteBatch};
use durable_jobs::testing::TestJobs;
use durable_jobs::wire::{Operation, Request, Response};
use durable_jobs::{
    Continuous, ContinuousContext, Debounce, DebounceContext, Engine, InstanceId, JobError,
    JobKind, Registry, Rejected, RetryPolicy, Schedule, Task, TaskContext, WorkerPool,
    WorkerPoolContext,
};
use futures::executor::block_on;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};

mod mangle;
use mangle::{config, node_mut, number, Mutation, PathStep};

const HOUR: Duration = Duration::from_secs(60 * 60);

/// Counts its runs in its state; a state of 13 fails every run.
struct Tick;

impl Continuous for Tick {
    type State = u32;
    type Error = String;
    fn schedule(&self) -> Schedule {
        Schedule::every(Duration::from_secs(10 * 60))
    }
    fn retry(&self) -> RetryPolicy {
        RetryPolicy::fixed(2, Duration::from_secs(1))
    }
    fn retention(&self) -> Duration {
        HOUR
    }
    async fn execute(&self, ctx: &mut ContinuousContext<u32>) -> Result<(), String> {
        if *ctx.state() == 13 {
            return Err("thirteen".into());
        }
        let next = ctx.state().saturating_add(1);
        ctx.set_state(next);
        Ok(())
    }
}

/// Sums its events, at most three a batch; a batch summing to 13 fails every flush, one
/// summing to 20 its first.
struct Batch;

impl Debounce for Batch {
    type Event = u32;
    type State = u32;
    type Error = String;
    fn flush_after(&self) -> Duration {
        Duration::from_secs(5)
    }
    fn max_events(&self) -> Option<u32> {
        Some(3)
    }
    fn retry(&self) -> RetryPolicy {
        RetryPolicy::fixed(2, Duration::from_secs(1))
    }
    fn retention(&self) -> Duration {
        HOUR
    }
    fn on_event(&self, state: Option<u32>, event: u32) -> Result<u32, Rejected> {
        Ok(state.unwrap_or(0).saturating_add(event))
    }
    async fn execute(&self, ctx: &DebounceContext<u32>) -> Result<(), String> {
        match (ctx.state(), ctx.attempt()) {
            (13, _) => Err("thirteen".into()),
            (20, 1) => Err("twenty, first attempt".into()),
            _ => Ok(()),
        }
    }
}

/// Two instances; events starting with `bad` fail every attempt.
struct Pool;

impl WorkerPool for Pool {
    type Event = String;
    type Error = String;
    fn concurrency(&self) -> u32 {
        2
    }
    fn retry(&self) -> RetryPolicy {
        RetryPolicy::fixed(2, Duration::from_secs(1))
    }
    fn retention(&self) -> Duration {
        HOUR
    }
    async fn execute(&self, ctx: &WorkerPoolContext<String>) -> Result<(), String> {
        match ctx.event().starts_with("bad") {
            true => Err("bad event".into()),
            false => Ok(()),
        }
    }
}

/// Sums its events and runs that many minutes after each; a sum of 13 fails every run.
struct Remind;

impl Task for Remind {
    type State = u32;
    type Event = u32;
    type Error = String;
    fn retry(&self) -> RetryPolicy {
        RetryPolicy::fixed(2, Duration::from_secs(1))
    }
    fn retention(&self) -> Duration {
        HOUR
    }
    fn on_event(&self, ctx: &mut TaskContext<u32>, event: u32) -> Result<(), Rejected> {
        let sum = ctx.state().copied().unwrap_or(0).saturating_add(event);
        ctx.set_state(sum);
        ctx.schedule_in(Duration::from_secs(60 * u64::from(event)));
        Ok(())
    }
    async fn execute(&self, ctx: &mut TaskContext<u32>) -> Result<(), String> {
        match ctx.state().copied().unwrap_or(0) {
            13 => Err("thirteen".into()),
            n => {
                ctx.set_state(n.saturating_add(1));
                Ok(())
            }
        }
    }
}

fn registry() -> Registry {
    match Registry::builder()
        .continuous("tick", Tick)
        .debounce("batch", Batch)
        .worker_pool("pool", Pool)
        .task("remind", Remind)
        .build()
    {
        Ok(registry) => registry,
        Err(e) => panic!("the test registry is valid: {e}"),
    }
}

/// The instance that gets the corrupt record, for each kind.
fn target(kind: JobKind) -> InstanceId {
    match kind {
        JobKind::Continuous => InstanceId::new(kind, "tick", "a"),
        JobKind::Debounce => InstanceId::new(kind, "batch", "a"),
        JobKind::WorkerPool => InstanceId::new(kind, "pool", "0"),
        JobKind::Task => InstanceId::new(kind, "remind", "a"),
    }
}

/// Every instance the scenario fills: a target and a bystander of each kind.
fn instances() -> Vec<InstanceId> {
    vec![
        target(JobKind::Continuous),
        InstanceId::new(JobKind::Continuous, "tick", "b"),
        target(JobKind::Debounce),
        InstanceId::new(JobKind::Debounce, "batch", "b"),
        target(JobKind::WorkerPool),
        InstanceId::new(JobKind::WorkerPool, "pool", "1"),
        target(JobKind::Task),
        InstanceId::new(JobKind::Task, "remind", "b"),
    ]
}

/// Sends a raw request, through JSON as a remote client would.
async fn send(jobs: &TestJobs, instance: &InstanceId, op: Operation) -> Result<Response, JobError> {
    let request = Request {
        instance: instance.clone(),
        op,
    };
    jobs.client().send(request).await
}

/// Sends a request that must succeed while the scenario fills its instances.
async fn must(jobs: &TestJobs, instance: &InstanceId, op: Operation) {
    if let Err(e) = send(jobs, instance, op.clone()).await {
        panic!("filling {instance} with {op:?} failed: {e}");
    }
}

fn add(event: u32, event_id: Option<&str>) -> Operation {
    Operation::DebounceAdd {
        event: json!(event),
        event_id: event_id.map(str::to_string),
    }
}

fn enqueue(event: &str, event_id: Option<&str>, priority: i32) -> Operation {
    Operation::WorkerPoolEnqueue {
        event: json!(event),
        event_id: event_id.map(str::to_string),
        priority,
        run_at: None,
        delay_ms: None,
    }
}

fn send_task(event: u32, event_id: Option<&str>) -> Operation {
    Operation::TaskSend {
        event: json!(event),
        event_id: event_id.map(str::to_string),
    }
}

/// An enqueue that waits `delay` before its event may run.
fn enqueue_later(event: &str, event_id: Option<&str>, delay: Duration) -> Operation {
    Operation::WorkerPoolEnqueue {
        event: json!(event),
        event_id: event_id.map(str::to_string),
        priority: 0,
        run_at: None,
        delay_ms: Some(millis(delay) as u64),
    }
}

/// When the scenario's delayed event falls due: within the first advance.
const LATER: Duration = Duration::from_secs(10 * 60);

fn ids(event_ids: &[&str]) -> Option<Vec<String>> {
    Some(event_ids.iter().map(|id| id.to_string()).collect())
}

/// Fills every instance so that each kind of record exists: a Continuous instance that ran
/// once; a Debounce instance with a failed batch, a batch waiting for its retry, a full
/// batch, an open batch and event ids; a pool instance with a dead letter, a finished id,
/// an event waiting for its retry, events queued behind it and a delayed event.
async fn populate(jobs: &TestJobs) {
    let all = instances();
    for tick in &all[0..2] {
        must(jobs, tick, Operation::ContinuousStart { state: json!(0) }).await;
    }
    for batch in &all[2..4] {
        must(jobs, batch, add(13, Some("poison"))).await;
    }
    for pool in &all[4..6] {
        must(jobs, pool, enqueue("bad-1", Some("bad-1"), 0)).await;
        must(jobs, pool, enqueue("ok-1", Some("ok-1"), 0)).await;
    }
    // Each task sums to 13, due in nine minutes, where every run fails.
    for task in &all[6..8] {
        must(jobs, task, send_task(4, Some("t4"))).await;
        must(jobs, task, send_task(9, Some("t9"))).await;
    }
    // The first runs; the poisoned batch and `bad-1` fail all their attempts.
    jobs.advance(Duration::from_secs(10)).await;
    for batch in &all[2..4] {
        must(jobs, batch, add(9, Some("e9"))).await;
        must(jobs, batch, add(11, Some("e11"))).await;
    }
    // That batch (9 + 11) fails its first flush and waits for its retry.
    jobs.advance(Duration::from_secs(5)).await;
    for pool in &all[4..6] {
        must(jobs, pool, enqueue("bad-2", Some("bad-2"), 10)).await;
    }
    // `bad-2` fails its first attempt and waits for its retry at the head of the queue.
    jobs.run_until_idle().await;
    for pool in &all[4..6] {
        must(jobs, pool, enqueue("ok-2", Some("ok-2"), 5)).await;
        must(jobs, pool, enqueue("ok-3", Some("ok-3"), 0)).await;
        must(jobs, pool, enqueue("ok-4", None, 0)).await;
        must(jobs, pool, enqueue_later("later", Some("later"), LATER)).await;
    }
    // No alarm fires from here on: the full batch and the open one wait behind the retry.
    for batch in &all[2..4] {
        for (event, id) in [(1, "e1"), (2, "e2"), (3, "e3"), (4, "e4")] {
            must(jobs, batch, add(event, Some(id))).await;
        }
    }
}

/// Every kind of request of `kind`, naming the event ids the scenario stored.
fn requests(kind: JobKind) -> Vec<Operation> {
    match kind {
        JobKind::Continuous => vec![
            Operation::ContinuousStatus,
            Operation::ContinuousGetState,
            Operation::ContinuousTrigger,
            Operation::ContinuousStart { state: json!(7) },
            Operation::ContinuousStop {
                reason: Some("test".into()),
            },
            Operation::ContinuousTrigger,
            Operation::ContinuousStart { state: json!(1) },
            Operation::ContinuousStatus,
            Operation::ContinuousGetState,
        ],
        JobKind::Debounce => vec![
            Operation::DebounceStatus,
            Operation::DebounceGetState,
            Operation::DebounceFailedBatches,
            add(1, None),
            add(2, Some("e1")),
            add(3, Some("poison")),
            add(5, Some("new")),
            Operation::DebounceFlush,
            Operation::DebounceStatus,
            Operation::DebounceClear,
            Operation::DebounceFailedBatches,
            Operation::DebounceGetState,
        ],
        JobKind::WorkerPool => vec![
            Operation::WorkerPoolStatus,
            Operation::WorkerPoolDeadLetters {
                after: None,
                limit: 10,
            },
            Operation::WorkerPoolDeadLetters {
                after: Some(0),
                limit: 10,
            },
            enqueue("x", None, 0),
            enqueue("y", Some("ok-2"), 0),
            enqueue("z", Some("ok-1"), 0),
            enqueue("w", Some("bad-1"), 0),
            enqueue("v", Some("new"), -3),
            enqueue_later("u", Some("new-later"), LATER),
            Operation::WorkerPoolPending {
                after: None,
                limit: 100,
            },
            Operation::WorkerPoolCancel {
                event_id: "ok-3".into(),
            },
            Operation::WorkerPoolCancel {
                event_id: "bad-2".into(),
            },
            Operation::WorkerPoolPause,
            Operation::WorkerPoolStatus,
            Operation::WorkerPoolResume,
            Operation::WorkerPoolReplay {
                event_ids: ids(&["bad-1", "nope"]),
            },
            Operation::WorkerPoolDiscard {
                event_ids: ids(&["bad-1"]),
            },
            Operation::WorkerPoolReplay { event_ids: None },
            Operation::WorkerPoolDiscard { event_ids: None },
            Operation::WorkerPoolStatus,
        ],
        JobKind::Task => vec![
            Operation::TaskStatus,
            Operation::TaskGetState,
            send_task(1, None),
            send_task(2, Some("t4")),
            Operation::TaskTrigger,
            Operation::TaskStatus,
            Operation::TaskTerminate,
            Operation::TaskTrigger,
            send_task(3, Some("new")),
            Operation::TaskGetState,
        ],
    }
}

/// The requests that must read the record under `key` of `kind`'s target, as the scenario
/// left it: each must fail when the record does not decode.
fn readers(kind: JobKind, key: &str, stored: &BTreeMap<String, Vec<u8>>) -> Vec<Operation> {
    // Every step reads the metadata and the kind's own record.
    if matches!(key, "meta" | "continuous" | "debounce" | "pool" | "task") {
        return requests(kind);
    }
    if key == "state" {
        return match kind {
            JobKind::Task => vec![Operation::TaskGetState],
            _ => vec![Operation::ContinuousGetState],
        };
    }
    if let Some(id) = key.strip_prefix("idem:") {
        return match kind {
            JobKind::Debounce => vec![add(9, Some(id))],
            JobKind::Task => vec![send_task(9, Some(id))],
            // A made-up id cannot be enqueued again (it is refused before any read).
            _ if id.starts_with(durable_jobs::GENERATED_ID_PREFIX) => vec![
                Operation::WorkerPoolCancel {
                    event_id: id.to_string(),
                },
                Operation::WorkerPoolReplay {
                    event_ids: ids(&[id]),
                },
                Operation::WorkerPoolDiscard {
                    event_ids: ids(&[id]),
                },
            ],
            _ => vec![
                enqueue("again", Some(id), 0),
                Operation::WorkerPoolCancel {
                    event_id: id.to_string(),
                },
                Operation::WorkerPoolReplay {
                    event_ids: ids(&[id]),
                },
                Operation::WorkerPoolDiscard {
                    event_ids: ids(&[id]),
                },
            ],
        };
    }
    if key.starts_with("dead:") {
        let mut ops = vec![
            Operation::WorkerPoolDeadLetters {
                after: None,
                limit: 1000,
            },
            Operation::WorkerPoolReplay { event_ids: None },
            Operation::WorkerPoolDiscard { event_ids: None },
        ];
        // Through the id that points at the letter, too.
        let letter_ids = stored.iter().filter_map(|(k, v)| {
            let record: Value = serde_json::from_slice(v).ok()?;
            let points_here = record.get("key").and_then(Value::as_str) == Some(key);
            points_here.then(|| k.strip_prefix("idem:").map(str::to_string))?
        });
        for id in letter_ids {
            ops.push(Operation::WorkerPoolReplay {
                event_ids: Some(vec![id.clone()]),
            });
            ops.push(Operation::WorkerPoolDiscard {
                event_ids: Some(vec![id]),
            });
        }
        return ops;
    }
    if key.starts_with("failed:") {
        return vec![Operation::DebounceFailedBatches, Operation::DebounceClear];
    }
    if key.starts_with("full:") {
        return vec![Operation::DebounceClear];
    }
    if key.starts_with("d:") {
        // Listed after the queue; cancelled through the id that points at it.
        let mut ops = vec![Operation::WorkerPoolPending {
            after: None,
            limit: 100,
        }];
        let pointing = stored.iter().filter_map(|(k, v)| {
            let record: Value = serde_json::from_slice(v).ok()?;
            let points_here = record.get("key").and_then(Value::as_str) == Some(key);
            points_here.then(|| k.strip_prefix("idem:").map(str::to_string))?
        });
        ops.extend(pointing.map(|event_id| Operation::WorkerPoolCancel { event_id }));
        return ops;
    }
    if key.starts_with("q:") {
        // Status names the event waiting for its retry, which it reads.
        let pool: Option<Value> = stored
            .get("pool")
            .and_then(|v| serde_json::from_slice(v).ok());
        let current = pool.as_ref().and_then(|p| p.get("current"));
        if current.and_then(Value::as_str) == Some(key) {
            return vec![Operation::WorkerPoolStatus];
        }
    }
    Vec::new()
}

/// Whether the alarms that follow the corruption must reach the record under `key`, and
/// fail there: the metadata and the kind's record at once, the full batch and every queued
/// event once the work before them is done, the delayed event once it is due.
fn read_by_alarm(key: &str) -> bool {
    matches!(key, "meta" | "continuous" | "debounce" | "pool" | "task")
        || key.starts_with("full:")
        || key.starts_with("q:")
        || key.starts_with("d:")
}

/// What one instance stores: its rows and its alarm.
type Stored = (BTreeMap<String, Vec<u8>>, Option<i64>);

fn stored(jobs: &TestJobs, instance: &InstanceId) -> Stored {
    let storage = jobs.storage(instance);
    (storage.snapshot(), storage.alarm())
}

fn stored_all(jobs: &TestJobs) -> BTreeMap<String, Stored> {
    instances()
        .iter()
        .map(|i| (i.to_string(), stored(jobs, i)))
        .collect()
}

/// Long enough for retries, the flush of the due batches and the next scheduled run.
const FIRST_ADVANCE: Duration = Duration::from_secs(15 * 60);
/// Long enough for event ids to expire and idle or stopped instances to be purged.
const SECOND_ADVANCE: Duration = Duration::from_secs(6 * 60 * 60);
/// The clock moves a minute at a time, so that an alarm that keeps firing shows up.
const STEP: Duration = Duration::from_secs(60);
/// Far more alarms than a minute of the scenario fires, retries and failing alarms
/// included: an instance that fires more spins.
const MAX_ALARMS_PER_STEP: usize = 600;

/// When the requests reach the target: before the alarms that follow the corruption, so
/// that they meet the record as it was written, or after them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Order {
    RequestsFirst,
    AlarmsFirst,
}

/// What the scenario gives without corruption, for each kind of target and each order.
/// Other instances must end exactly like this whatever happens to the target.
struct Control {
    responses: Vec<Result<Response, JobError>>,
    end: BTreeMap<String, Stored>,
}

fn control(kind: JobKind, order: Order) -> &'static Control {
    static CONTROLS: OnceLock<BTreeMap<(JobKind, Order), Control>> = OnceLock::new();
    let controls = CONTROLS.get_or_init(|| {
        let mut controls = BTreeMap::new();
        for kind in [
            JobKind::Continuous,
            JobKind::Debounce,
            JobKind::WorkerPool,
            JobKind::Task,
        ] {
            for order in [Order::RequestsFirst, Order::AlarmsFirst] {
                let control = block_on(async {
                    let jobs = TestJobs::new(registry());
                    populate(&jobs).await;
                    let mut responses = Vec::new();
                    if order == Order::AlarmsFirst {
                        jobs.advance(FIRST_ADVANCE).await;
                    }
                    for op in requests(kind) {
                        responses.push(send(&jobs, &target(kind), op).await);
                    }
                    if order == Order::RequestsFirst {
                        jobs.advance(FIRST_ADVANCE).await;
                    }
                    jobs.advance(SECOND_ADVANCE).await;
                    Control {
                        responses,
                        end: stored_all(&jobs),
                    }
                });
                controls.insert((kind, order), control);
            }
        }
        controls
    });
    match controls.get(&(kind, order)) {
        Some(control) => control,
        None => unreachable!("a control exists for every kind and order"),
    }
}

// ---------------------------------------------------------------------------------------
// The scenario, with one record corrupted.

/// Overwrites (or adds) one row of an instance, as a bad disk or a faulty migration would.
async fn overwrite(jobs: &TestJobs, instance: &InstanceId, key: &str, bytes: Vec<u8>) {
    let mut batch = WriteBatch::new();
    batch.put(key, bytes);
    if let Err(e) = jobs.storage(instance).commit(batch).await {
        panic!("the in-memory storage takes any row: {e}");
    }
}

/// Which record to corrupt.
#[derive(Debug, Clone)]
enum Victim {
    /// The row at this index of the target's rows, in key order.
    Row(prop::sample::Index),
    /// A new row `idx:` followed by this text, which is not `{20 digits}:{id}`.
    MalformedIndex(String),
    /// The row under this key.
    Key(&'static str),
}

/// Whether `name` (after `idx:`) is an expiry index entry as the engine writes them.
fn is_expiry_entry(name: &str) -> bool {
    let digits = name.get(..20);
    let separator = name.get(20..21);
    digits.is_some_and(|d| d.parse::<i64>().is_ok()) && separator == Some(":")
}

fn victim() -> impl Strategy<Value = Victim> {
    prop_oneof![
        6 => any::<prop::sample::Index>().prop_map(Victim::Row),
        1 => ".{0,40}"
            .prop_filter("a well-formed entry", |name| !is_expiry_entry(name))
            .prop_map(Victim::MalformedIndex),
    ]
}

fn kind() -> impl Strategy<Value = JobKind> {
    prop_oneof![
        Just(JobKind::Continuous),
        Just(JobKind::Debounce),
        Just(JobKind::WorkerPool),
        Just(JobKind::Task)
    ]
}

fn order() -> impl Strategy<Value = Order> {
    prop_oneof![Just(Order::RequestsFirst), Just(Order::AlarmsFirst)]
}

/// What the corrupt bytes are, which says how strictly the outcome can be judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bytes {
    /// Not JSON at all: every reader of the record must fail.
    Undecodable,
    /// JSON that may or may not decode as the record: no panic, no half step, no harm to
    /// other instances.
    Json,
}

/// One corruption to try.
struct Case<F> {
    /// The same scenario without corruption (see [`control`]).
    control: &'static Control,
    kind: JobKind,
    victim: Victim,
    /// Makes the corrupt bytes from the record's stored bytes (empty for a new row).
    corrupt: F,
    bytes: Bytes,
    order: Order,
}

/// Sends one request to the target: a storage error must name the corrupt record and
/// leave the instance exactly as it was.
async fn checked_send(
    jobs: &TestJobs,
    t: &InstanceId,
    key: &str,
    op: Operation,
) -> Result<Result<Response, JobError>, TestCaseError> {
    let before = stored(jobs, t);
    let result = send(jobs, t, op.clone()).await;
    if let Err(JobError::Storage { message }) = &result {
        let named = format!("stored record `{key}` does not decode");
        prop_assert!(
            message.starts_with(&named),
            "{op:?} failed with `{message}`, not about `{key}`"
        );
        prop_assert_eq!(
            &stored(jobs, t),
            &before,
            "{:?} failed but changed storage",
            op
        );
    }
    Ok(result)
}

/// Moves the clock on: the harness must come back each minute, without firing alarms
/// without end.
async fn checked_advance(jobs: &TestJobs, by: Duration) -> Result<(), TestCaseError> {
    let end = jobs.now().saturating_add(millis(by));
    while jobs.now() < end {
        let to = end.min(jobs.now().saturating_add(millis(STEP)));
        let fired = jobs.run_until(to).await;
        prop_assert!(
            fired < MAX_ALARMS_PER_STEP,
            "{fired} alarms in a minute: an alarm spins"
        );
    }
    Ok(())
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Runs the scenario with one record of the target replaced.
async fn scenario<F: FnOnce(&[u8]) -> Vec<u8>>(case: Case<F>) -> Result<(), TestCaseError> {
    let Case {
        control,
        kind,
        victim,
        corrupt,
        bytes: expect,
        order,
    } = case;
    let jobs = TestJobs::new(registry());
    populate(&jobs).await;
    let t = target(kind);
    let (rows, _) = stored(&jobs, &t);
    let key = match &victim {
        Victim::Row(index) => match rows.keys().nth(index.index(rows.len())) {
            Some(key) => key.clone(),
            None => unreachable!("the scenario stores rows in every instance"),
        },
        Victim::MalformedIndex(name) => format!("idx:{name}"),
        Victim::Key(key) => key.to_string(),
    };
    let bytes = corrupt(rows.get(&key).map_or(&[][..], Vec::as_slice));
    if expect == Bytes::Undecodable {
        let json = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok();
        prop_assume!(!json, "the bytes happen to be JSON");
    }
    overwrite(&jobs, &t, &key, bytes.clone()).await;

    if expect == Bytes::Undecodable {
        // Every request that reads the record fails, naming it, and changes nothing.
        for op in readers(kind, &key, &rows) {
            let result = checked_send(&jobs, &t, &key, op.clone()).await?;
            prop_assert!(
                matches!(result, Err(JobError::Storage { .. })),
                "{:?} read the corrupt `{}` and answered {:?}",
                op,
                key,
                result
            );
        }
    }

    let mut responses = Vec::new();
    if order == Order::RequestsFirst {
        for op in requests(kind) {
            responses.push(checked_send(&jobs, &t, &key, op).await?);
        }
    }
    let before = stored(&jobs, &t);
    checked_advance(&jobs, FIRST_ADVANCE).await?;
    if expect == Bytes::Undecodable && order == Order::AlarmsFirst {
        let after = stored(&jobs, &t);
        if read_by_alarm(&key) {
            // The alarm failed on the record, is set again, and left it as it was; when
            // it failed at its first read, it left everything as it was.
            prop_assert_eq!(
                after.0.get(&key),
                Some(&bytes),
                "the corrupt row was replaced"
            );
            prop_assert!(after.1.is_some(), "the failing alarm is not set again");
            if !key.contains(':') {
                prop_assert_eq!(&after.0, &before.0, "a failing alarm changed storage");
            }
        }
        if key == "state" {
            // The user's state no longer decodes: its runs fail, and the status says why.
            let last_error = match kind {
                JobKind::Task => match send(&jobs, &t, Operation::TaskStatus).await {
                    Ok(Response::TaskStatus {
                        status: Some(status),
                    }) => status.last_error,
                    other => return Err(TestCaseError::fail(format!("status: {other:?}"))),
                },
                _ => match send(&jobs, &t, Operation::ContinuousStatus).await {
                    Ok(Response::ContinuousStatus {
                        status: Some(status),
                    }) => status.last_error,
                    other => return Err(TestCaseError::fail(format!("status: {other:?}"))),
                },
            };
            let error = last_error.map(|e| e.message).unwrap_or_default();
            prop_assert!(error.starts_with("invalid state"), "last error: {error}");
        }
    }
    if order == Order::AlarmsFirst {
        for op in requests(kind) {
            responses.push(checked_send(&jobs, &t, &key, op).await?);
        }
    }
    checked_advance(&jobs, SECOND_ADVANCE).await?;

    // The other instances went on exactly as without the corruption.
    let mut end = stored_all(&jobs);
    let mine = end.remove(&t.to_string());
    let mut expected = control.end.clone();
    let control_mine = expected.remove(&t.to_string());
    prop_assert_eq!(&end, &expected, "another instance was affected");

    // An index entry is never read for its value, and one with a malformed name is dropped
    // or left alone: everything goes on as if it were not there.
    if key.starts_with("idx:") {
        prop_assert_eq!(&responses, &control.responses);
        let mut mine = mine.unwrap_or_default();
        if matches!(victim, Victim::MalformedIndex(_)) {
            mine.0.remove(&key);
        }
        prop_assert_eq!(Some(mine), control_mine);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Records that are not JSON.

/// Bytes that are not JSON, made from the stored record or from nothing.
#[derive(Debug, Clone)]
enum Garbage {
    /// Arbitrary bytes.
    Bytes(Vec<u8>),
    /// The record cut short.
    Truncated(prop::sample::Index),
    /// The record with a byte that UTF-8 never uses inserted.
    NotUtf8(prop::sample::Index),
    /// The record with bytes after it.
    Trailing(Vec<u8>),
}

impl Garbage {
    fn apply(&self, record: &[u8]) -> Vec<u8> {
        match self {
            Garbage::Bytes(bytes) => bytes.clone(),
            Garbage::Truncated(at) if !record.is_empty() => {
                record[..at.index(record.len())].to_vec()
            }
            Garbage::Truncated(_) => b"{".to_vec(),
            Garbage::NotUtf8(at) => {
                let mut bytes = record.to_vec();
                bytes.insert(at.index(record.len() + 1), 0xFF);
                bytes
            }
            Garbage::Trailing(tail) => [record, b"x", tail].concat(),
        }
    }
}

fn garbage() -> impl Strategy<Value = Garbage> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Garbage::Bytes),
        any::<prop::sample::Index>().prop_map(Garbage::Truncated),
        any::<prop::sample::Index>().prop_map(Garbage::NotUtf8),
        prop::collection::vec(any::<u8>(), 0..16).prop_map(Garbage::Trailing),
    ]
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn undecodable_records_fail_their_readers_and_nothing_else(
        kind in kind(),
        victim in victim(),
        garbage in garbage(),
    ) {
        block_on(scenario(Case {
            control: control(kind, Order::AlarmsFirst),
            kind,
            victim,
            corrupt: |record: &[u8]| garbage.apply(record),
            bytes: Bytes::Undecodable,
            order: Order::AlarmsFirst,
        }))?;
    }
}

// ---------------------------------------------------------------------------------------
// Records that are still JSON: a field removed, renamed or retyped, a number out of range.

/// Any JSON value, leaning on the shapes records hold.
fn json_value() -> impl Strategy<Value = Value> + Clone {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        number(),
        ".{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "continuous",
            "debounce",
            "workerPool",
            "active",
            "paused",
            "stopped",
            "error",
            "queued",
            "done",
            "dead",
            "maxEvents",
            "manual",
            "flushAfter",
            "meta",
            "q:2147483647:00000000000000000005",
            "dead:00000000000000000000",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Long strings kept short: the scenario copies the instance around every request.
    mangle::mutation(json_value(), "[a-zA-Z]{1,10}", 4096)
}

/// The record with `mutations` made, encoded again (a record that is not JSON is taken as
/// `null`, which a mutation then replaces or leaves).
fn mutate(record: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(record).unwrap_or(Value::Null);
    for m in mutations {
        m.apply(&mut value);
    }
    match serde_json::to_vec(&value) {
        Ok(bytes) => bytes,
        Err(e) => panic!("a JSON value always encodes: {e}"),
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn mutated_records_never_panic_nor_leave_half_steps(
        kind in kind(),
        victim in victim(),
        mutations in prop::collection::vec(mutation(), 1..3),
        order in order(),
    ) {
        block_on(scenario(Case {
            control: control(kind, order),
            kind,
            victim,
            corrupt: |record: &[u8]| mutate(record, &mutations),
            bytes: Bytes::Json,
            order,
        }))?;
    }
}

// ---------------------------------------------------------------------------------------
// Engine issues these properties found, each pinned by a test of its own.

/// Numbers to set in one record of the target.
struct Edit {
    key: &'static str,
    set: Vec<(&'static [&'static str], Value)>,
    order: Order,
}

/// Sets the number at `path` (keys from the record's root) of the target's record `key`.
fn edit(key: &'static str, path: &'static [&'static str], value: Value, order: Order) -> Edit {
    Edit {
        key,
        set: vec![(path, value)],
        order,
    }
}

impl Edit {
    /// Sets another value in the same record.
    fn and(mut self, path: &'static [&'static str], value: Value) -> Self {
        self.set.push((path, value));
        self
    }
}

/// Runs the scenario with `edit` made; says how it went, or how it panicked.
fn run_edit(kind: JobKind, edit: &Edit) -> Result<(), String> {
    let corrupt = |record: &[u8]| {
        let mut record: Value = serde_json::from_slice(record).unwrap_or(Value::Null);
        for (path, value) in &edit.set {
            let path: Vec<PathStep> = path.iter().map(|k| PathStep::Key(k.to_string())).collect();
            if let Some(node) = node_mut(&mut record, &path) {
                *node = value.clone();
            }
        }
        serde_json::to_vec(&record).unwrap_or_default()
    };
    let case = Case {
        control: control(kind, edit.order),
        kind,
        victim: Victim::Key(edit.key),
        corrupt,
        bytes: Bytes::Json,
        order: edit.order,
    };
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| block_on(scenario(case))));
    match run {
        Ok(Ok(())) => Ok(()),
        Ok(Err(failure)) => Err(failure.to_string()),
        Err(panic) => Err(panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into())),
    }
}

/// Runs each edit, then fails listing those that failed; the panic messages above the list
/// say where each one panicked.
fn all_survive(kind: JobKind, edits: &[Edit]) {
    let failed: Vec<String> = edits
        .iter()
        .filter_map(|e| {
            let result = run_edit(kind, e);
            result
                .err()
                .map(|error| format!("{} {:?} ({:?}): {error}", e.key, e.set, e.order))
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

const U32_MAX: u32 = u32::MAX;
/// The state of the Debounce batch waiting for its retry: 13 fails that retry too.
const POISONED: &[&str] = &["inflight", "batch", "state"];
const U64_MAX: u64 = u64::MAX;

#[test]
fn continuous_counters_at_their_maximum_do_not_panic() {
    all_survive(
        JobKind::Continuous,
        &[
            // `start` after `stop` bumps the epoch.
            edit("meta", &["epoch"], json!(U64_MAX), Order::RequestsFirst),
            // The claim counts the attempt; the completion counts the run.
            edit(
                "continuous",
                &["attempt"],
                json!(U32_MAX),
                Order::AlarmsFirst,
            ),
            edit(
                "continuous",
                &["runCount"],
                json!(U64_MAX),
                Order::AlarmsFirst,
            ),
        ],
    );
}

#[test]
fn a_run_scheduled_before_any_representable_time_does_not_panic() {
    all_survive(
        JobKind::Continuous,
        &[edit(
            "continuous",
            &["nextRunAt"],
            json!(i64::MIN),
            Order::AlarmsFirst,
        )],
    );
}

#[test]
fn debounce_counters_at_their_maximum_do_not_panic() {
    let max = json!(U32_MAX);
    all_survive(
        JobKind::Debounce,
        &[
            // `clear` sums the events it discards in a u32.
            edit(
                "failed:00000000000000000000",
                &["eventCount"],
                max.clone(),
                Order::RequestsFirst,
            ),
            edit(
                "full:00000000000000000000",
                &["eventCount"],
                json!(U32_MAX - 1),
                Order::RequestsFirst,
            ),
            edit(
                "debounce",
                &["batch", "eventCount"],
                max.clone(),
                Order::RequestsFirst,
            ),
            edit(
                "debounce",
                &["inflight", "batch", "eventCount"],
                max.clone(),
                Order::RequestsFirst,
            ),
            // The claim counts the attempt; a final failure (of the batch waiting for its
            // retry, made to fail again) counts the failed batch and takes its number.
            edit(
                "debounce",
                &["inflight", "attempt"],
                max.clone(),
                Order::AlarmsFirst,
            ),
            edit("debounce", &["failedCount"], max, Order::AlarmsFirst).and(POISONED, json!(13)),
            edit("debounce", &["nextSeq"], json!(U64_MAX), Order::AlarmsFirst)
                .and(POISONED, json!(13)),
        ],
    );
}

#[test]
fn pool_counters_at_their_maximum_do_not_panic() {
    let max = json!(U64_MAX);
    all_survive(
        JobKind::WorkerPool,
        &[
            // `enqueue` counts the event and takes the next sequence number.
            edit("pool", &["nextSeq"], max.clone(), Order::RequestsFirst),
            edit("pool", &["pending"], max.clone(), Order::RequestsFirst),
            // A completion counts the event; a dead letter takes its sequence number.
            edit("pool", &["processed"], max.clone(), Order::AlarmsFirst),
            edit("pool", &["nextDeadSeq"], max.clone(), Order::AlarmsFirst),
            edit("pool", &["dead"], max, Order::AlarmsFirst),
            // The claim counts the attempt.
            edit(
                "q:2147483637:00000000000000000002",
                &["attempt"],
                json!(U32_MAX),
                Order::AlarmsFirst,
            ),
        ],
    );
}

#[test]
fn a_debounce_instance_with_work_and_a_purge_time_does_not_spin() {
    block_on(async {
        let jobs = TestJobs::new(registry());
        populate(&jobs).await;
        // The due batches flush; the failed batch stays, so the instance is not idle.
        jobs.advance(FIRST_ADVANCE).await;
        let t = target(JobKind::Debounce);
        let storage = jobs.storage(&t);
        let mut meta: Value = match storage.snapshot().get("meta") {
            Some(bytes) => serde_json::from_slice(bytes).unwrap_or(Value::Null),
            None => Value::Null,
        };
        meta["purgeAt"] = json!(jobs.now() - 1);
        overwrite(&jobs, &t, "meta", meta.to_string().into_bytes()).await;
        // One alarm, through an engine of the test's own over the same storage: the harness
        // would fire the alarm a million times before it gave up.
        let engine = Engine::new(registry(), storage.clone());
        let result = engine.alarm().await;
        assert!(result.is_ok(), "{result:?}");
        let alarm = storage.alarm();
        assert!(
            alarm.is_none_or(|at| at > jobs.now()),
            "the alarm is set again to {alarm:?}, already due at {}: it fires without end",
            jobs.now()
        );
    });
}

#[test]
fn a_flush_retries_each_failed_batch_once() {
    block_on(async {
        let jobs = TestJobs::new(registry());
        let t = InstanceId::new(JobKind::Debounce, "batch", "flush");
        // Two batches that fail both their attempts (at 5 s and 6 s) become failed batches.
        for _ in 0..2 {
            must(&jobs, &t, add(13, None)).await;
            jobs.advance(Duration::from_secs(10)).await;
        }
        let flushing = |jobs: &TestJobs| {
            let events = jobs.events_of(&t.to_string());
            events.iter().filter(|e| **e == "debounce.flushing").count()
        };
        assert_eq!(flushing(&jobs), 4);
        let answer = send(&jobs, &t, Operation::DebounceFlush).await;
        assert!(
            matches!(
                answer,
                Ok(Response::FlushRequested {
                    retried_batches: 2,
                    ..
                })
            ),
            "{answer:?}"
        );
        jobs.advance(HOUR).await;
        // Each failed batch had one more round of two attempts, and is failed again.
        assert_eq!(
            flushing(&jobs),
            8,
            "flush attempts in the hour after one flush"
        );
    });
}
