//! The operations a simulation is made of, and how a seed draws them.
//!
//! An operation names everything it acts on (the request itself, the future it creates or
//! polls, the instance whose alarm fires), so that a list of operations replays without the
//! generator, and a shorter list still means the same.

use std::fmt;
use std::str::FromStr;

use durable_jobs::jobs::worker_pool::jump_hash;
use durable_jobs::wire::{Operation, Request};
use durable_jobs::{AddItem, EnqueueItem};
use durable_jobs::{InstanceId, JobKind};
use serde_json::{json, Value};

use crate::config::JobsConfig;
use crate::jobs::{Item, TaskEvent, Then, TickState, BATCH, TASK, TICK, WORK};
use crate::rng::SimRng;
use crate::runtime::{Runtime, TaskId};

/// The Continuous instances' keys (one holds a colon, which ids must keep apart).
pub const TICK_KEYS: [&str; 3] = ["c0", "c1", "a:b"];
/// The Debounce instances' keys.
pub const BATCH_KEYS: [&str; 3] = ["d0", "d1", "x:y"];
/// The Task instances' keys.
pub const TASK_KEYS: [&str; 3] = ["t0", "t1", "t:z"];
/// Partition keys for WorkerPool events.
const PARTITIONS: [&str; 4] = ["p1", "p2", "p3", "p4"];

/// How many futures may be in flight before the generator stops sending requests.
const MAX_IN_FLIGHT: usize = 6;

/// Twenty years: a run time this far ahead is refused, whatever the clock did meanwhile.
const FAR_AHEAD_MS: i64 = 20 * 365 * 24 * 60 * 60 * 1000;

/// When an enqueued event may run, as the wire carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunTime {
    /// A time (ms since the epoch).
    pub run_at: Option<i64>,
    /// A delay from the instance's time (ms).
    pub delay_ms: Option<u64>,
}

impl RunTime {
    /// No time: run at once.
    pub const NOW: RunTime = RunTime {
        run_at: None,
        delay_ms: None,
    };

    /// Whether the engine must refuse it, given the time `sent` the request was sent: both
    /// a time and a delay, or one more than `MAX_DELAY` ahead. The generator keeps well
    /// away from the bound, so the time the engine reads it at does not matter.
    pub fn refused(self, sent: i64) -> bool {
        let max = i64::try_from(durable_jobs::MAX_DELAY.as_millis()).unwrap_or(i64::MAX);
        match (self.run_at, self.delay_ms) {
            (Some(_), Some(_)) => true,
            (Some(at), None) => at.saturating_sub(sent) > max,
            (None, Some(delay)) => i64::try_from(delay).map_or(true, |d| d > max),
            (None, None) => false,
        }
    }

    /// The earliest time the event may run, if the engine takes it: no step that stores
    /// it runs before `sent`.
    pub fn not_before(self, sent: i64) -> Option<i64> {
        if self.refused(sent) {
            return None;
        }
        match (self.run_at, self.delay_ms) {
            (Some(at), _) => Some(at),
            (None, Some(delay)) => Some(sent.saturating_add(i64::try_from(delay).ok()?)),
            (None, None) => None,
        }
    }
}

/// What a request is expected to end with, whatever the instance's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// A valid request: it may succeed or meet storage failures.
    Valid,
    /// Refused as malformed (wrong kind for the instance, bad instance index, empty id).
    BadRequest,
    /// Refused as oversized.
    TooLarge,
    /// Refused by the job's schema or reducer.
    Validation,
    /// Refused: no such job.
    JobNotFound,
}

/// A storage failure to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The next reads fail.
    Reads,
    /// The next commits fail (nothing written).
    Commits,
    /// The next syncs fail: unsynced commits are lost, the instance must be reloaded.
    Syncs,
}

/// One step of a simulation.
#[derive(Debug, Clone)]
pub enum Op {
    /// Send a request.
    Send {
        /// Names the request's future.
        task: TaskId,
        /// The request.
        request: Request,
        /// How it must end, if it cannot succeed.
        expected: Expected,
    },
    /// Poll a future once.
    Poll {
        /// The future.
        task: TaskId,
    },
    /// Fire an instance's alarm, if due.
    Fire {
        /// Names the alarm call's future.
        task: TaskId,
        /// The instance.
        instance: InstanceId,
    },
    /// Move the clock forward.
    Advance {
        /// By this much.
        ms: i64,
    },
    /// Make an instance's next storage calls fail.
    Fault {
        /// The instance.
        instance: InstanceId,
        /// Which calls.
        fault: Fault,
        /// How many.
        count: u32,
    },
    /// The platform makes an instance's commits durable on its own, as storage engines
    /// flush in the background (a failed flush loses them, and the instance is reloaded).
    Persist {
        /// The instance.
        instance: InstanceId,
    },
    /// Crash the process: every future and engine is dropped; storage keeps what was synced.
    Crash,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Send {
                task,
                request,
                expected,
            } => {
                let op = serde_json::to_value(&request.op).unwrap_or(Value::Null);
                write!(f, "#{task} send {} {op}", request.instance)?;
                if *expected != Expected::Valid {
                    write!(f, " (expect {expected:?})")?;
                }
                Ok(())
            }
            Op::Poll { task } => write!(f, "poll #{task}"),
            Op::Fire { task, instance } => write!(f, "#{task} fire alarm of {instance}"),
            Op::Advance { ms } => write!(f, "advance clock {ms} ms"),
            Op::Fault {
                instance,
                fault,
                count,
            } => write!(f, "fail next {count} {fault:?} of {instance}"),
            Op::Persist { instance } => write!(f, "persist {instance} in the background"),
            Op::Crash => write!(f, "CRASH"),
        }
    }
}

impl FromStr for Op {
    type Err = String;

    /// Reads an operation back from its `Display` text, so that a printed trace replays.
    fn from_str(line: &str) -> Result<Self, String> {
        let line = line.trim();
        let bad = || format!("not an operation: `{line}`");
        let instance = |text: &str| text.trim().parse::<InstanceId>().map_err(|e| e.to_string());
        if line == "CRASH" {
            return Ok(Op::Crash);
        }
        if let Some(task) = line.strip_prefix("poll #") {
            let task = task.trim().parse().map_err(|_| bad())?;
            return Ok(Op::Poll { task });
        }
        if let Some(ms) = line
            .strip_prefix("advance clock ")
            .and_then(|r| r.strip_suffix(" ms"))
        {
            let ms = ms.trim().parse().map_err(|_| bad())?;
            return Ok(Op::Advance { ms });
        }
        if let Some(rest) = line
            .strip_prefix("persist ")
            .and_then(|r| r.strip_suffix(" in the background"))
        {
            return Ok(Op::Persist {
                instance: instance(rest)?,
            });
        }
        if let Some(rest) = line.strip_prefix("fail next ") {
            return parse_fault(rest).ok_or_else(bad);
        }
        let (task, rest) = line
            .strip_prefix('#')
            .and_then(|r| r.split_once(' '))
            .ok_or_else(bad)?;
        let task: TaskId = task.parse().map_err(|_| bad())?;
        if let Some(target) = rest.strip_prefix("fire alarm of ") {
            return Ok(Op::Fire {
                task,
                instance: instance(target)?,
            });
        }
        let rest = rest.strip_prefix("send ").ok_or_else(bad)?;
        let (target, op) = rest.split_once(' ').ok_or_else(bad)?;
        let (op, expected) = match op.rsplit_once(" (expect ") {
            Some((op, expected)) => (op, parse_expected(expected.trim_end_matches(')'))?),
            None => (op, Expected::Valid),
        };
        let op: Operation = serde_json::from_str(op).map_err(|e| format!("{e} in `{line}`"))?;
        Ok(Op::Send {
            task,
            request: Request {
                instance: instance(target)?,
                op,
            },
            expected,
        })
    }
}

fn parse_fault(rest: &str) -> Option<Op> {
    let (count, rest) = rest.split_once(' ')?;
    let (fault, target) = rest.split_once(" of ")?;
    let fault = match fault {
        "Reads" => Fault::Reads,
        "Commits" => Fault::Commits,
        "Syncs" => Fault::Syncs,
        _ => return None,
    };
    Some(Op::Fault {
        instance: target.trim().parse().ok()?,
        fault,
        count: count.parse().ok()?,
    })
}

fn parse_expected(text: &str) -> Result<Expected, String> {
    Ok(match text {
        "BadRequest" => Expected::BadRequest,
        "TooLarge" => Expected::TooLarge,
        "Validation" => Expected::Validation,
        "JobNotFound" => Expected::JobNotFound,
        other => return Err(format!("unknown expectation `{other}`")),
    })
}

/// Reads a trace of operations, one per line (blank lines are skipped).
pub fn parse_ops(text: &str) -> Result<Vec<Op>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::parse)
        .collect()
}

/// The instances every seed works on, in a fixed order.
pub fn instances(cfg: &JobsConfig) -> Vec<InstanceId> {
    let mut all: Vec<InstanceId> = TICK_KEYS
        .iter()
        .map(|k| InstanceId::new(JobKind::Continuous, TICK, *k))
        .collect();
    all.extend(
        BATCH_KEYS
            .iter()
            .map(|k| InstanceId::new(JobKind::Debounce, BATCH, *k)),
    );
    all.extend(
        (0..cfg.pool_concurrency)
            .map(|i| InstanceId::new(JobKind::WorkerPool, WORK, i.to_string())),
    );
    all.extend(
        TASK_KEYS
            .iter()
            .map(|k| InstanceId::new(JobKind::Task, TASK, *k)),
    );
    all
}

/// What the generator needs to know of the past: ids already used, per instance.
pub trait History {
    /// Event ids sent to `instance` so far.
    fn ids_of(&self, instance: &str) -> &[String];
}

/// Draws operations from a seed.
pub struct Generator {
    rng: SimRng,
    cfg: JobsConfig,
    next_serial: u64,
    next_token: u64,
    next_id: u64,
    next_task: TaskId,
    /// The instance the request being drawn aims at, if any.
    focus: Option<InstanceId>,
    /// The time when the request being drawn is sent.
    now: i64,
}

impl Generator {
    /// A generator for `seed`. (No known bug is open for it to steer around; an open one
    /// would come in as an `Avoid` here.)
    pub fn new(seed: u64, cfg: &JobsConfig) -> Self {
        Generator {
            rng: SimRng::new(seed),
            cfg: cfg.clone(),
            next_serial: 1,
            next_token: 1,
            next_id: 1,
            next_task: 0,
            focus: None,
            now: 0,
        }
    }

    /// The next operation, given the runtime's state and what was sent before.
    pub fn next_op(&mut self, rt: &Runtime, history: &dyn History) -> Op {
        let tasks = rt.tasks();
        let due = rt.due_slots();
        let weights = [
            if tasks.is_empty() { 0 } else { 450 },
            if tasks.len() < MAX_IN_FLIGHT { 250 } else { 0 },
            if due.is_empty() { 0 } else { 120 },
            100,
            40,
            30,
            8,
        ];
        match self.rng.weighted(&weights) {
            0 => Op::Poll {
                task: self.rng.pick(&tasks).id,
            },
            1 => self.request(rt, history),
            2 => Op::Fire {
                task: self.task(),
                instance: rt.slots[*self.rng.pick(&due)].id.clone(),
            },
            3 => Op::Advance {
                ms: self.advance(rt),
            },
            4 => self.fault(),
            5 => Op::Persist {
                instance: self.rng.pick(&instances(&self.cfg)).clone(),
            },
            _ => Op::Crash,
        }
    }

    fn advance(&mut self, rt: &Runtime) -> i64 {
        match self.rng.below(10) {
            0..=3 => self.rng.between(1, 1_000),
            4..=6 => self.rng.between(1_000, 30_000),
            7 | 8 => rt.next_alarm().map_or(1_000, |t| (t - rt.now()).max(1)),
            _ => self
                .rng
                .between(retention(&self.cfg) / 2, retention(&self.cfg) * 2),
        }
    }

    fn fault(&mut self) -> Op {
        let all = instances(&self.cfg);
        let instance = self.rng.pick(&all).clone();
        let fault = *self
            .rng
            .pick(&[Fault::Reads, Fault::Commits, Fault::Commits, Fault::Syncs]);
        Op::Fault {
            instance,
            fault,
            count: self.rng.between(1, 3) as u32,
        }
    }

    fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial - 1
    }

    fn fresh_id(&mut self) -> String {
        self.next_id += 1;
        format!("e{}", self.next_id - 1)
    }

    fn request(&mut self, rt: &Runtime, history: &dyn History) -> Op {
        // Races between requests and a running execution are where bugs hide: often aim at
        // an instance whose alarm call is in flight.
        let busy: Vec<&InstanceId> = (0..rt.slots.len())
            .filter(|s| rt.alarm_calls(*s) > 0)
            .map(|s| &rt.slots[s].id)
            .collect();
        let focus =
            (!busy.is_empty() && self.rng.chance(400)).then(|| (*self.rng.pick(&busy)).clone());
        let kind_roll = match &focus {
            Some(id) if id.kind == JobKind::Continuous => 0,
            Some(id) if id.kind == JobKind::Debounce => 30,
            Some(id) if id.kind == JobKind::Task => 100,
            Some(_) => 63,
            None => self.rng.below(130),
        };
        self.focus = focus;
        self.now = rt.now();
        let (request, expected) = match kind_roll {
            0..=29 => self.continuous(),
            30..=62 => self.debounce(history),
            63..=96 => self.pool(history),
            97..=99 => self.malformed(),
            _ => self.task_request(history),
        };
        self.focus = None;
        Op::Send {
            task: self.task(),
            request,
            expected,
        }
    }

    fn task(&mut self) -> TaskId {
        self.next_task += 1;
        self.next_task - 1
    }

    /// The key of the instance in focus if it is of `kind`, else one of `keys`.
    fn key(&mut self, kind: JobKind, keys: &[&'static str]) -> String {
        match &self.focus {
            Some(id) if id.kind == kind => id.key.clone(),
            _ => self.rng.pick(keys).to_string(),
        }
    }

    fn continuous(&mut self) -> (Request, Expected) {
        let key = self.key(JobKind::Continuous, &TICK_KEYS);
        let instance = InstanceId::new(JobKind::Continuous, TICK, key);
        let (op, expected) = match self.rng.below(100) {
            0..=29 => {
                self.next_token += 1;
                let state = TickState {
                    token: self.next_token - 1,
                    runs: 0,
                };
                let state = serde_json::to_value(state).unwrap();
                (Operation::ContinuousStart { state }, Expected::Valid)
            }
            30..=32 => (
                Operation::ContinuousStart {
                    state: json!("not a state"),
                },
                Expected::Validation,
            ),
            33..=49 => {
                let reason = self.rng.chance(500).then(|| "why".to_string());
                (Operation::ContinuousStop { reason }, Expected::Valid)
            }
            50..=51 => (
                Operation::ContinuousStop {
                    reason: Some("r".repeat(self.cfg.limits.max_id_bytes + 1)),
                },
                Expected::TooLarge,
            ),
            52..=69 => (Operation::ContinuousTrigger, Expected::Valid),
            70..=84 => (Operation::ContinuousStatus, Expected::Valid),
            _ => (Operation::ContinuousGetState, Expected::Valid),
        };
        (Request { instance, op }, expected)
    }

    /// An event id: none, a new one, or one used before on the instance.
    fn event_id(&mut self, history: &dyn History, instance: &str) -> Option<String> {
        let used = history.ids_of(instance);
        match self.rng.below(100) {
            0..=34 => None,
            35..=74 => Some(self.fresh_id()),
            _ if used.is_empty() => Some(self.fresh_id()),
            _ => Some(self.rng.pick(used).clone()),
        }
    }

    fn item(&mut self) -> Value {
        let item = Item {
            serial: self.serial(),
            reject: false,
            pad: String::new(),
        };
        serde_json::to_value(item).unwrap()
    }

    fn debounce(&mut self, history: &dyn History) -> (Request, Expected) {
        let key = self.key(JobKind::Debounce, &BATCH_KEYS);
        let instance = InstanceId::new(JobKind::Debounce, BATCH, key);
        let name = instance.to_string();
        let max_id = self.cfg.limits.max_id_bytes;
        let (op, expected) = match self.rng.below(100) {
            0..=44 => {
                let event_id = self.event_id(history, &name);
                let event = self.item();
                (Operation::DebounceAdd { event, event_id }, Expected::Valid)
            }
            45..=49 => self.add_many(history, &name),
            50..=52 => (
                Operation::DebounceAdd {
                    event: json!("oops"),
                    event_id: None,
                },
                Expected::Validation,
            ),
            53..=55 => {
                let mut item = Item {
                    serial: self.serial(),
                    reject: true,
                    pad: String::new(),
                };
                let event_id = self.rng.chance(500).then(|| self.fresh_id());
                if self.rng.chance(300) {
                    item.pad = "x".repeat(self.cfg.limits.max_payload_bytes);
                    let event = serde_json::to_value(item).unwrap();
                    (
                        Operation::DebounceAdd { event, event_id },
                        Expected::TooLarge,
                    )
                } else {
                    let event = serde_json::to_value(item).unwrap();
                    (
                        Operation::DebounceAdd { event, event_id },
                        Expected::Validation,
                    )
                }
            }
            56..=57 => {
                let event = self.item();
                let (event_id, expected) = if self.rng.chance(500) {
                    (String::new(), Expected::BadRequest)
                } else {
                    ("i".repeat(max_id + 1), Expected::TooLarge)
                };
                (
                    Operation::DebounceAdd {
                        event,
                        event_id: Some(event_id),
                    },
                    expected,
                )
            }
            58..=71 => (Operation::DebounceFlush, Expected::Valid),
            72..=76 => (Operation::DebounceClear, Expected::Valid),
            77..=79 => (Operation::DebounceDiscardFailed, Expected::Valid),
            80..=87 => (Operation::DebounceStatus, Expected::Valid),
            88..=93 => (Operation::DebounceGetState, Expected::Valid),
            _ => (Operation::DebounceFailedBatches, Expected::Valid),
        };
        (Request { instance, op }, expected)
    }

    /// Several events for one Debounce instance in one request, each with a distinct id or
    /// none (ids reused from the instance's history make duplicates). Some are refused
    /// alone (the reducer refuses them, or they are no event at all) while the others are
    /// added; now and then one is oversized, which refuses the whole request.
    fn add_many(&mut self, history: &dyn History, instance: &str) -> (Operation, Expected) {
        let mut ids = std::collections::HashSet::new();
        let mut expected = Expected::Valid;
        let count = self.rng.between(1, 4);
        let events = (0..count)
            .map(|_| {
                let event_id = self
                    .event_id(history, instance)
                    .filter(|id| ids.insert(id.clone()));
                let mut event = self.item();
                match self.rng.below(100) {
                    0..=5 => event["reject"] = json!(true),
                    6..=8 => event = json!("oops"),
                    9 if expected == Expected::Valid => {
                        event["pad"] = json!("x".repeat(self.cfg.limits.max_payload_bytes));
                        expected = Expected::TooLarge;
                    }
                    _ => {}
                }
                AddItem { event, event_id }
            })
            .collect();
        (Operation::DebounceAddMany { events }, expected)
    }

    /// When an event may run: mostly at once; else after a delay, at a time ahead or
    /// already past; now and then a time the engine must refuse (too far ahead, a delay no
    /// `i64` holds, or a time and a delay both).
    fn run_time(&mut self) -> RunTime {
        let now = self.now;
        let (run_at, delay_ms) = match self.rng.below(100) {
            0..=63 => (None, None),
            64..=75 => {
                let delay = match self.rng.below(3) {
                    0 => 0,
                    1 => self.rng.between(1, 1_000),
                    _ => self.rng.between(1_000, 30_000),
                };
                (None, u64::try_from(delay).ok())
            }
            76..=87 => (Some(now + self.rng.between(1, 30_000)), None),
            88..=93 => (Some(now - self.rng.between(0, 20_000)), None),
            94..=95 => (None, u64::try_from(FAR_AHEAD_MS).ok()),
            96 => (Some(now + FAR_AHEAD_MS), None),
            97 => (Some(now + 1_000), Some(1_000)),
            _ => (None, Some(u64::MAX)),
        };
        RunTime { run_at, delay_ms }
    }

    /// The index of the pool instance in focus, if one is.
    fn focus_index(&self) -> Option<u32> {
        self.focus.as_ref().and_then(InstanceId::pool_index)
    }

    fn pool_instance(&self, index: u32) -> InstanceId {
        InstanceId::new(JobKind::WorkerPool, WORK, index.to_string())
    }

    fn pool(&mut self, history: &dyn History) -> (Request, Expected) {
        let n = self.cfg.pool_concurrency;
        match self.rng.below(100) {
            0..=44 => return self.enqueue(history),
            45..=49 => return self.enqueue_many(history),
            _ => {}
        }
        let index = self
            .focus_index()
            .unwrap_or_else(|| self.rng.below(u64::from(n)) as u32);
        let instance = self.pool_instance(index);
        let name = instance.to_string();
        let used = history.ids_of(&name).to_vec();
        let known = |rng: &mut SimRng| -> Option<Vec<String>> {
            (!used.is_empty() && rng.chance(600)).then(|| {
                let ids: Vec<String> = (0..rng.between(1, 3))
                    .map(|_| rng.pick(&used).clone())
                    .collect();
                ids
            })
        };
        let op = match self.rng.below(100) {
            0..=9 => Operation::WorkerPoolPause,
            10..=29 => Operation::WorkerPoolResume,
            30..=49 => {
                let event_id = match known(&mut self.rng) {
                    Some(ids) => ids[0].clone(),
                    None => self.fresh_id(),
                };
                Operation::WorkerPoolCancel { event_id }
            }
            50..=61 => Operation::WorkerPoolStatus,
            62..=67 => Operation::WorkerPoolDeadLetters {
                after: self.rng.chance(300).then(|| self.rng.below(3)),
                limit: self.rng.between(1, 5) as u32,
            },
            68..=73 => Operation::WorkerPoolPending {
                after: None,
                limit: self.rng.between(1, 5) as u32,
            },
            74..=89 => Operation::WorkerPoolReplay {
                event_ids: known(&mut self.rng),
            },
            _ => Operation::WorkerPoolDiscard {
                event_ids: known(&mut self.rng),
            },
        };
        (Request { instance, op }, Expected::Valid)
    }

    /// Several events for one instance in one request, each with a distinct id or none
    /// (ids reused from the instance's history make duplicates).
    fn enqueue_many(&mut self, history: &dyn History) -> (Request, Expected) {
        let n = self.cfg.pool_concurrency;
        let index = self
            .focus_index()
            .unwrap_or_else(|| self.rng.below(u64::from(n)) as u32);
        let instance = self.pool_instance(index);
        let name = instance.to_string();
        let mut ids = std::collections::HashSet::new();
        let count = self.rng.between(1, 4);
        let events = (0..count)
            .map(|_| {
                let event_id = self
                    .event_id(history, &name)
                    .filter(|id| ids.insert(id.clone()));
                let time = self.run_time();
                EnqueueItem {
                    event: self.item(),
                    event_id,
                    priority: *self.rng.pick(&[-1, 0, 0, 5]),
                    run_at: time.run_at,
                    delay_ms: time.delay_ms,
                }
            })
            .collect();
        let op = Operation::WorkerPoolEnqueueMany { events };
        (Request { instance, op }, Expected::Valid)
    }

    fn enqueue(&mut self, history: &dyn History) -> (Request, Expected) {
        let n = self.cfg.pool_concurrency;
        let partition = self.rng.chance(400).then(|| *self.rng.pick(&PARTITIONS));
        // Pick the instance first so that reused ids are those of its own history.
        let mut index = match partition {
            Some(p) => jump_hash(p, n),
            None => self.rng.below(u64::from(n)) as u32,
        };
        let name = self.pool_instance(index).to_string();
        let mut event_id = self.event_id(history, &name);
        if let (None, Some(id)) = (partition, &event_id) {
            // Without a partition key the client routes by event id, as duplicates must meet.
            index = jump_hash(id, n);
        }
        if let Some(focus) = self.focus_index() {
            index = focus;
        }
        if self.rng.chance(20) {
            // A user's id that looks like one the engine generates for events without one.
            event_id = Some(format!("auto-{index}-{}", self.rng.below(4)));
        }
        let priority = *self.rng.pick(&[-1, 0, 0, 0, 5]);
        let mut expected = Expected::Valid;
        let mut event = self.item();
        match self.rng.below(100) {
            0..=2 => {
                event = json!({"serial": "not a number"});
                expected = Expected::Validation;
            }
            3..=4 => {
                event["pad"] = json!("x".repeat(self.cfg.limits.max_payload_bytes));
                expected = Expected::TooLarge;
            }
            5..=6 => {
                index = n;
                expected = Expected::BadRequest;
            }
            _ => {}
        }
        let reserved = event_id
            .as_deref()
            .is_some_and(|id| id.starts_with(durable_jobs::GENERATED_ID_PREFIX));
        let time = self.run_time();
        if (reserved || time.refused(self.now)) && expected != Expected::TooLarge {
            // Ids of the shape the engine makes up, and run times out of bounds, are
            // refused before anything is read (sizes are checked first).
            expected = Expected::BadRequest;
        }
        let op = Operation::WorkerPoolEnqueue {
            event,
            event_id,
            priority,
            run_at: time.run_at,
            delay_ms: time.delay_ms,
        };
        (
            Request {
                instance: self.pool_instance(index),
                op,
            },
            expected,
        )
    }

    /// An event for the Task job: what `on_event` decides, and whether the send must be
    /// refused for it.
    fn task_event(&mut self) -> (TaskEvent, Expected) {
        let then = match self.rng.below(100) {
            0..=24 => Then::Schedule { delay_ms: 0 },
            25..=49 => Then::Schedule {
                delay_ms: self.rng.between(1, 2_000),
            },
            50..=64 => Then::Schedule {
                delay_ms: self.rng.between(10_000, 60_000),
            },
            65..=84 => Then::Cancel,
            85..=91 => Then::Terminate,
            _ => Then::Reject,
        };
        let event = TaskEvent {
            serial: self.serial(),
            then,
            wake: self.rng.chance(200),
            pad: String::new(),
        };
        let expected = match then {
            Then::Reject => Expected::Validation,
            _ => Expected::Valid,
        };
        (event, expected)
    }

    fn task_request(&mut self, history: &dyn History) -> (Request, Expected) {
        let key = self.key(JobKind::Task, &TASK_KEYS);
        let instance = InstanceId::new(JobKind::Task, TASK, key);
        let name = instance.to_string();
        let max_id = self.cfg.limits.max_id_bytes;
        let (op, expected) = match self.rng.below(100) {
            0..=49 => {
                let event_id = self.event_id(history, &name);
                let (event, expected) = self.task_event();
                let event = serde_json::to_value(event).unwrap();
                (Operation::TaskSend { event, event_id }, expected)
            }
            50..=52 => (
                Operation::TaskSend {
                    event: json!({"serial": "not a number", "then": "cancel"}),
                    event_id: self.rng.chance(500).then(|| self.fresh_id()),
                },
                Expected::Validation,
            ),
            53..=54 => {
                let (mut event, _) = self.task_event();
                event.pad = "x".repeat(self.cfg.limits.max_payload_bytes);
                let event = serde_json::to_value(event).unwrap();
                let event_id = self.event_id(history, &name);
                (Operation::TaskSend { event, event_id }, Expected::TooLarge)
            }
            55..=56 => {
                let (event, _) = self.task_event();
                let event = serde_json::to_value(event).unwrap();
                let (event_id, expected) = if self.rng.chance(500) {
                    (String::new(), Expected::BadRequest)
                } else {
                    ("i".repeat(max_id + 1), Expected::TooLarge)
                };
                let event_id = Some(event_id);
                (Operation::TaskSend { event, event_id }, expected)
            }
            57 => (Operation::ContinuousTrigger, Expected::BadRequest),
            58..=72 => (Operation::TaskTrigger, Expected::Valid),
            73..=78 => (Operation::TaskTerminate, Expected::Valid),
            79..=89 => (Operation::TaskStatus, Expected::Valid),
            _ => (Operation::TaskGetState, Expected::Valid),
        };
        (Request { instance, op }, expected)
    }

    /// Requests no instance accepts: an operation of another kind, an unknown job, an
    /// oversized key.
    fn malformed(&mut self) -> (Request, Expected) {
        let (good, _) = self.continuous();
        match self.rng.below(3) {
            0 => {
                let (other, _) = self.debounce_status();
                (
                    Request {
                        instance: good.instance,
                        op: other,
                    },
                    Expected::BadRequest,
                )
            }
            1 => (
                Request {
                    instance: InstanceId::new(JobKind::Continuous, "nosuchjob", "c0"),
                    op: Operation::ContinuousStatus,
                },
                Expected::JobNotFound,
            ),
            _ => (
                Request {
                    instance: InstanceId::new(
                        JobKind::Continuous,
                        TICK,
                        "k".repeat(self.cfg.limits.max_id_bytes + 1),
                    ),
                    op: Operation::ContinuousStatus,
                },
                Expected::TooLarge,
            ),
        }
    }

    fn debounce_status(&mut self) -> (Operation, Expected) {
        let op = match self.rng.below(2) {
            0 => Operation::DebounceStatus,
            _ => Operation::DebounceAdd {
                event: self.item(),
                event_id: None,
            },
        };
        (op, Expected::BadRequest)
    }
}

fn retention(cfg: &JobsConfig) -> i64 {
    cfg.longest_retention_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_read_back_from_their_text() {
        let cfg = JobsConfig::for_seed(3);
        let mut generator = Generator::new(3, &cfg);
        let rt = crate::sim::Sim::new(3, crate::known::Avoid::NOTHING);
        for _ in 0..500 {
            let op = generator.next_op(rt.runtime(), rt.model());
            let text = op.to_string();
            let back: Op = text.parse().unwrap();
            assert_eq!(back.to_string(), text);
        }
        for text in ["poll #7", "#9 fire alarm of debounce:batch:x:y"] {
            assert_eq!(text.parse::<Op>().unwrap().to_string(), text);
        }
    }
}
