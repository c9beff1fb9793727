//! One simulation: a seed's operations applied to the runtime, every invariant checked
//! after each of them, then a drain with no faults and the final checks.

use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use durable_jobs::adapters::VirtualClock;
use durable_jobs::testing::DEFAULT_START;
use durable_jobs::wire::{Operation, Request, Response};
use durable_jobs::{InstanceId, JobError, JobKind};
use serde_json::json;

use crate::config::{JobsConfig, DEFAULT_STEPS};
use crate::jobs::{self, Item, TaskEvent, Then};
use crate::known::Avoid;
use crate::layout::{self, View};
use crate::model::Model;
use crate::ops::{self, Expected, Fault, Generator, Op};
use crate::runtime::{Done, Runtime, TaskId};
use crate::storage::Latency;
use crate::violation::{class, Violation};
use crate::world::{Execution, World};

/// Lines of trace kept for a failure report (`SIM_TRACE` asks for another number).
const TRACE_LINES: usize = 50;
/// Chance per thousand that a storage call suspends.
const LATENCY_PER_MILLE: u32 = 200;
/// Polls of every future at one instant before the drain moves the clock.
const ROUNDS_PER_INSTANT: usize = 6;
/// The first future id of the drain's own operations.
const DRAIN_TASKS: TaskId = 1 << 40;
/// Rounds of polls the drain makes at most before it decides the instances never settle.
const MAX_DRAIN_STEPS: usize = 20_000;

/// A seed that broke an invariant.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// The step at which the invariant broke.
    pub step: usize,
    /// What broke.
    pub violation: Violation,
    /// The last operations and what they did.
    pub trace: Vec<String>,
    /// Every operation applied, to replay or shrink.
    pub ops: Vec<Op>,
    /// The command that runs the seed again.
    pub reproduce: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulation seed {} failed at step {}: {}",
            self.seed, self.step, self.violation
        )?;
        writeln!(f, "reproduce with: {}", self.reproduce)?;
        writeln!(f, "last {} steps:", self.trace.len())?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// What a seed did, for the run's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Steps applied, the drain included.
    pub steps: usize,
    /// Requests answered.
    pub answered: u64,
    /// Adds and enqueues acknowledged.
    pub acked_events: u64,
    /// Executions of user code.
    pub executions: u64,
    /// Requests dropped unanswered by crashes and reloads.
    pub dropped: u64,
}

/// One simulation in progress.
pub struct Sim {
    seed: u64,
    avoid: Avoid,
    cfg: JobsConfig,
    world: Arc<World>,
    rt: Runtime,
    model: Model,
    /// Operations applied before the drain (the drain is not recorded: it replays itself).
    ops: Vec<Op>,
    recording: bool,
    next_task: TaskId,
    trace: VecDeque<String>,
    trace_lines: usize,
    checked: Vec<u64>,
    /// The live and durable views of each slot as last checked.
    views: Vec<[Option<Rc<View>>; 2]>,
    step: usize,
    /// The last answer to a request, for the drain's own requests.
    last_answer: Option<(TaskId, Result<Response, JobError>)>,
    /// Operations generated, when the seed's own generator drew them.
    steps: Option<usize>,
}

impl Sim {
    /// A simulation of `seed`, before its first operation.
    pub fn new(seed: u64, avoid: Avoid) -> Self {
        let cfg = JobsConfig::for_seed(seed);
        let clock = VirtualClock::new(DEFAULT_START);
        let world = World::new(seed, clock.clone(), cfg.failure_scale);
        let registry = jobs::registry(&world, &cfg);
        let latency: Rc<Latency> = Latency::new(seed ^ 0x01A7_E1C7, LATENCY_PER_MILLE);
        let mut rt = Runtime::new(registry, clock, latency, world.clone());
        // Half the seeds run engines that record each attempt at its start.
        rt.record_attempts_at_start(seed % 2 == 1);
        // Claims of one event, or of several recorded as one (each with or without the
        // attempts recorded at their start).
        let claim_size = [1, 1, 3, 8][(seed / 2 % 4) as usize];
        rt.claim_events(claim_size);
        world.set_claims_of_several(claim_size > 1);
        for instance in ops::instances(&cfg) {
            rt.slot_of(&instance);
        }
        Sim {
            seed,
            avoid,
            model: Model::new(&cfg),
            cfg,
            world,
            rt,
            ops: Vec::new(),
            recording: true,
            next_task: DRAIN_TASKS,
            trace: VecDeque::new(),
            trace_lines: std::env::var("SIM_TRACE")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(TRACE_LINES),
            checked: Vec::new(),
            views: Vec::new(),
            step: 0,
            last_answer: None,
            steps: None,
        }
    }

    /// Runs `seed` for `steps` generated operations, then drains and checks the end state.
    pub fn run(seed: u64, steps: usize, avoid: Avoid) -> Result<Summary, Box<Failure>> {
        let mut sim = Sim::new(seed, avoid);
        sim.steps = Some(steps);
        let mut generator = Generator::new(seed, &sim.cfg);
        for _ in 0..steps {
            let op = generator.next_op(&sim.rt, &sim.model);
            sim.apply(op).map_err(|v| sim.failure(v))?;
        }
        sim.finish().map_err(|v| sim.failure(v))?;
        Ok(sim.summary())
    }

    /// Replays `ops` for `seed` (operations that no longer apply are skipped), then drains
    /// and checks the end state.
    pub fn replay(seed: u64, ops: &[Op], avoid: Avoid) -> Result<Summary, Box<Failure>> {
        let mut sim = Sim::new(seed, avoid);
        for op in ops {
            sim.apply(op.clone()).map_err(|v| sim.failure(v))?;
        }
        sim.finish().map_err(|v| sim.failure(v))?;
        Ok(sim.summary())
    }

    /// The simulated runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// The reference model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    fn summary(&self) -> Summary {
        let c = self.model.counts;
        Summary {
            steps: self.step,
            answered: c.answered,
            acked_events: c.acked_events,
            executions: c.executions,
            dropped: c.dropped,
        }
    }

    fn failure(&self, violation: Violation) -> Box<Failure> {
        Box::new(Failure {
            seed: self.seed,
            step: self.step,
            violation,
            trace: self.trace.iter().cloned().collect(),
            ops: self.ops.clone(),
            reproduce: self.reproduce(),
        })
    }

    /// The command that runs this seed again the same way.
    fn reproduce(&self) -> String {
        let env = self.avoid.env();
        match self.steps {
            None => format!(
                "run::replay of the operation list on seed {} ({env})",
                self.seed
            ),
            Some(n) => {
                let steps = match n == DEFAULT_STEPS {
                    true => String::new(),
                    false => format!("SIM_STEPS={n} "),
                };
                format!(
                    "{env}{steps}SIM_SEED={} cargo test -p durable-jobs-sim",
                    self.seed
                )
            }
        }
    }

    fn note(&mut self, line: String) {
        let t = self.clock_ms();
        if self.trace.len() >= self.trace_lines {
            self.trace.pop_front();
        }
        self.trace
            .push_back(format!("{:>5} t+{:<8} {line}", self.step, t));
    }

    fn clock_ms(&self) -> i64 {
        self.rt.now() - DEFAULT_START
    }

    /// Applies one operation, then checks every invariant.
    pub fn apply(&mut self, op: Op) -> Result<(), Violation> {
        self.step += 1;
        self.note(op.to_string());
        if self.recording {
            self.ops.push(op.clone());
        }
        let now = self.rt.now();
        match op {
            Op::Send {
                task,
                request,
                expected,
            } => {
                let busy =
                    expected == Expected::Valid && request.instance.kind == JobKind::Task && {
                        let slot = self.rt.slot_of(&request.instance);
                        self.rt.alarm_calls(slot) > 0
                    };
                self.model.sent(task, &request, expected, now, busy);
                self.rt.submit(task, request);
            }
            Op::Poll { task } => self.poll(task)?,
            Op::Fire { task, instance } => {
                let slot = self.rt.slot_of(&instance);
                if !self.rt.fire(task, slot) {
                    self.note("  (not due: skipped)".into());
                }
            }
            Op::Advance { ms } => self.rt.advance(ms),
            Op::Fault {
                instance,
                fault,
                count,
            } => {
                let slot = self.rt.slot_of(&instance);
                let storage = &self.rt.slots[slot].storage;
                match fault {
                    Fault::Reads => storage.fail_next_reads(count),
                    Fault::Commits => storage.fail_next_commits(count),
                    Fault::Syncs => storage.fail_next_syncs(count),
                }
            }
            Op::Persist { instance } => {
                let slot = self.rt.slot_of(&instance);
                let dropped = self.rt.persist(slot);
                self.take_executions()?;
                for info in dropped {
                    self.note(format!(
                        "  #{} dropped: instance reloaded after a failed flush",
                        info.id
                    ));
                    self.model.dropped(info.id, now);
                }
            }
            Op::Crash => {
                let dropped = self.rt.crash();
                self.take_executions()?;
                for info in dropped {
                    self.model.dropped(info.id, now);
                }
            }
        }
        self.take_executions()?;
        if let Some(v) = self.world.take_violations().into_iter().next() {
            return Err(v);
        }
        for slot in 0..self.rt.slots.len() {
            let s = &self.rt.slots[slot];
            if s.id.kind == JobKind::Task && self.rt.alarm_calls(slot) == 0 {
                self.model.alarm_quiet(&s.name);
            }
        }
        self.check_slots()
    }

    fn take_executions(&mut self) -> Result<(), Violation> {
        let finished: Vec<Execution> = self.world.drain_finished();
        for e in &finished {
            self.note(format!(
                "  user code {} {:?} attempt {} -> {:?}{}",
                e.instance,
                e.work,
                e.attempt,
                e.outcome,
                if e.terminated { " (terminates)" } else { "" }
            ));
        }
        self.model.executions(finished)
    }

    fn poll(&mut self, task: TaskId) -> Result<(), Violation> {
        if !self.rt.has_task(task) {
            self.note("  (gone: skipped)".into());
            return Ok(());
        }
        let polled = self.rt.poll(task);
        // Executions first: they explain events that the answer finds gone.
        self.take_executions()?;
        if let Some(message) = polled.panicked {
            return Err(Violation::new(
                class::PANIC,
                format!("#{task} panicked: {message}"),
            ));
        }
        let now = self.rt.now();
        if let Some((info, done)) = polled.done {
            match done {
                Done::Request(result) => {
                    self.note(format!("  #{task} answered {}", short(&result)));
                    let durable = self.rt.slots[info.slot].storage.durable_snapshot();
                    self.model.answered(task, &result, now, &durable)?;
                    self.last_answer = Some((task, result));
                }
                Done::Alarm(result) => self.note(format!("  #{task} alarm call -> {result:?}")),
            }
        }
        for info in polled.dropped {
            self.note(format!(
                "  #{} dropped: instance reloaded after a failed sync",
                info.id
            ));
            self.model.dropped(info.id, now);
        }
        Ok(())
    }

    /// Checks every instance whose storage or alarm changed since it was last checked.
    fn check_slots(&mut self) -> Result<(), Violation> {
        self.checked.resize(self.rt.slots.len(), u64::MAX);
        self.views.resize(self.rt.slots.len(), [None, None]);
        for slot in 0..self.rt.slots.len() {
            let version = self.rt.slots[slot].version.get();
            if self.checked[slot] == version {
                continue;
            }
            self.checked[slot] = version;
            self.check_slot(slot)?;
        }
        Ok(())
    }

    fn check_slot(&mut self, slot: usize) -> Result<(), Violation> {
        let s = &self.rt.slots[slot];
        let (id, name) = (s.id.clone(), s.name.clone());
        let live = self.view(slot, s.storage.snapshot(), None);
        let durable = self.view(slot, s.storage.durable_snapshot(), Some(&live));
        self.views[slot] = [Some(live.clone()), Some(durable.clone())];
        let at = |v: &Violation, view: &str| {
            Violation::new(v.class, format!("{name} ({view}): {}", v.detail))
        };
        live.layout.as_ref().map_err(|v| at(v, "live"))?;
        durable.layout.as_ref().map_err(|v| at(v, "durable"))?;
        let s = &self.rt.slots[slot];
        if let Some(due) = durable.due {
            if s.storage.durable_alarm().is_none() {
                let d = format!("work due at {due} is durable, but no alarm is");
                return Err(at(&Violation::new(class::MISSING_ALARM, d), "durable"));
            }
        }
        let quiet = self.rt.alarm_calls(slot) == 0 && !s.storage.needs_reload();
        if let (true, Some(due)) = (quiet, live.due) {
            match s.storage.alarm() {
                None => {
                    let d = format!("work is due at {due}, but no alarm is set");
                    return Err(at(&Violation::new(class::MISSING_ALARM, d), "live"));
                }
                Some(alarm) if alarm > due && !s.backoff.get() => {
                    let d = format!("the alarm is at {alarm}, after work due at {due}");
                    return Err(at(&Violation::new(class::LATE_ALARM, d), "live"));
                }
                Some(_) => {}
            }
        }
        if s.storage.stats().unbounded_lists > 0 {
            let d = "listed rows without a limit".to_string();
            return Err(at(&Violation::new(class::UNBOUNDED_READ, d), "live"));
        }
        self.check_forgetting(slot, &live)?;
        let now = self.rt.now();
        self.model.check_storage(&id, &live, &durable, now)
    }

    /// Id records do not outlive their expiry unnoticed: once one has expired, the instance
    /// has an alarm due to sweep it (or an alarm call running), so that what a retention
    /// period brings is all it keeps.
    fn check_forgetting(&self, slot: usize, live: &View) -> Result<(), Violation> {
        let s = &self.rt.slots[slot];
        let now = self.rt.now();
        let Some(expired) = live.first_expiry.filter(|t| *t <= now) else {
            return Ok(());
        };
        let waking = s.storage.alarm().is_some_and(|t| t <= now) || s.backoff.get();
        if waking || self.rt.alarm_calls(slot) > 0 || s.storage.needs_reload() {
            return Ok(());
        }
        let d = format!(
            "{}: an id record expired at {expired} but nothing wakes the instance to forget it (alarm {:?})",
            s.name,
            s.storage.alarm()
        );
        Err(Violation::new(class::UNBOUNDED_IDS, d))
    }

    /// What the checks derive from `rows` of `slot`, decoded again only where they differ
    /// from the views the slot was last checked with (and `also`).
    fn view(&self, slot: usize, rows: layout::Rows, also: Option<&Rc<View>>) -> Rc<View> {
        let last = self.views.get(slot).into_iter().flatten().flatten();
        let known: Vec<&Rc<View>> = last.chain(also).collect();
        if let Some(view) = known.iter().find(|v| v.rows == rows) {
            return Rc::clone(view);
        }
        let earlier: Vec<&View> = known.iter().map(|v| v.as_ref()).collect();
        Rc::new(View::new(
            self.rt.slots[slot].id.kind,
            rows,
            &self.cfg,
            &earlier,
        ))
    }

    /// A future id for the drain's own operations, apart from the generated ones.
    fn drain_task(&mut self) -> TaskId {
        self.next_task += 1;
        self.next_task - 1
    }

    /// Sends a request from the drain (not recorded: the drain replays itself).
    fn send(&mut self, request: Request) -> Result<(), Violation> {
        let task = self.drain_task();
        self.apply(Op::Send {
            task,
            request,
            expected: Expected::Valid,
        })
    }

    /// The slots whose alarm the drain fires now.
    fn fireable(&self) -> Vec<usize> {
        self.rt.due_slots()
    }

    /// Lets every future and due alarm run, moving the clock to each next alarm or user
    /// code deadline, until `ms` have passed.
    fn run_for(&mut self, ms: i64) -> Result<(), Violation> {
        let target = self.rt.now() + ms;
        let mut steps = 0;
        loop {
            for _ in 0..ROUNDS_PER_INSTANT {
                let due = self.fireable();
                let tasks = self.rt.tasks();
                if due.is_empty() && tasks.is_empty() {
                    break;
                }
                for slot in due {
                    let instance = self.rt.slots[slot].id.clone();
                    let task = self.drain_task();
                    self.apply(Op::Fire { task, instance })?;
                }
                for info in tasks {
                    self.apply(Op::Poll { task: info.id })?;
                }
                steps += 1;
            }
            if steps > MAX_DRAIN_STEPS {
                let d = format!(
                    "the drain keeps running at t+{}: {} futures in flight",
                    self.clock_ms(),
                    self.rt.tasks().len()
                );
                return Err(Violation::new(class::LIVENESS, d));
            }
            let unsynced: Vec<InstanceId> = self
                .rt
                .slots
                .iter()
                .filter(|s| s.storage.unsynced_commits() > 0)
                .map(|s| s.id.clone())
                .collect();
            for instance in unsynced {
                self.apply(Op::Persist { instance })?;
            }
            let now = self.rt.now();
            let busy = !self.rt.tasks().is_empty();
            let deadline = self.world.next_deadline();
            if (busy && deadline.is_none()) || !self.fireable().is_empty() {
                // Futures wait for each other, not for time, or alarms fell due meanwhile.
                continue;
            }
            // Alarms due but not fireable wait for an execution, which waits for time; a
            // future in flight waits for user code's deadline, even past the target.
            let alarm = self.rt.next_alarm_after(now).filter(|t| *t <= target);
            match [alarm, deadline].into_iter().flatten().min() {
                Some(t) => self.apply(Op::Advance {
                    ms: (t - now).max(1),
                })?,
                None => break,
            }
        }
        let now = self.rt.now();
        if target > now {
            self.apply(Op::Advance { ms: target - now })?;
        }
        Ok(())
    }

    /// The end of a seed: no more faults and user code that succeeds, every future run to
    /// completion, then the liveness checks.
    pub fn finish(&mut self) -> Result<(), Violation> {
        self.recording = false;
        self.world.set_calm(true);
        self.model.calm();
        for s in &self.rt.slots {
            s.storage.fail_next_reads(0);
            s.storage.fail_next_commits(0);
            s.storage.fail_next_syncs(0);
        }
        self.note("DRAIN: no more faults, user code succeeds".into());
        self.run_for(0)?;
        for index in 0..self.cfg.pool_concurrency {
            let instance = pool_instance(index);
            self.send(Request {
                instance,
                op: Operation::WorkerPoolResume,
            })?;
        }
        self.model.mark();
        let settle = self.cfg.longest_retry_chain_ms() + 3 * self.cfg.tick_every_ms + 60_000;
        self.run_for(settle)?;
        self.check_settled()?;
        self.stop_all()?;
        let forget =
            2 * self.cfg.longest_retention_ms() + self.cfg.longest_retry_chain_ms() + 60_000;
        self.run_for(forget)?;
        self.check_forgotten()?;
        self.readd_all()?;
        self.run_for(settle)?;
        self.check_settled_events()
    }

    /// After the first drain: every active Continuous instance ran, and no event waits.
    fn check_settled(&mut self) -> Result<(), Violation> {
        for instance in self.model.active_continuous() {
            if self.model.runs_since_mark(&instance) == 0 {
                let d = format!("{instance} is active but did not run during the drain");
                return Err(Violation::new(class::LIVENESS, d));
            }
        }
        self.check_settled_events()
    }

    /// No event is pending any more: each is done, a dead letter or in a failed batch.
    fn check_settled_events(&mut self) -> Result<(), Violation> {
        if self.model.in_flight() > 0 || !self.rt.tasks().is_empty() {
            let d = format!(
                "{} requests still unanswered after the drain",
                self.model.in_flight()
            );
            return Err(Violation::new(class::LIVENESS, d));
        }
        for slot in 0..self.rt.slots.len() {
            let s = &self.rt.slots[slot];
            let rows = s.storage.durable_snapshot();
            let rows = layout::decode_all(&rows);
            for found in layout::serials(s.id.kind, &rows) {
                let pending = match found.place {
                    layout::Place::Queued { .. } => true,
                    layout::Place::Dead | layout::Place::Task => false,
                    layout::Place::Batch { failed } => !failed,
                };
                if pending {
                    let d = format!(
                        "{}: event #{} is still pending ({:?}) after the drain",
                        s.name, found.serial, found.place
                    );
                    return Err(Violation::new(class::LIVENESS, d));
                }
            }
            let open = self.model.open_events(&s.name);
            let stored: Vec<u64> = layout::serials(s.id.kind, &rows)
                .iter()
                .map(|f| f.serial)
                .collect();
            if let Some(lost) = open.iter().find(|e| !stored.contains(e)) {
                let d = format!("{}: event #{lost} is neither stored nor done", s.name);
                return Err(Violation::new(class::LOST_ACK, d));
            }
        }
        Ok(())
    }

    fn stop_all(&mut self) -> Result<(), Violation> {
        for key in ops::TICK_KEYS {
            let instance = InstanceId::new(JobKind::Continuous, jobs::TICK, key);
            self.send(Request {
                instance,
                op: Operation::ContinuousStop { reason: None },
            })?;
        }
        self.run_for(0)
    }

    /// After the retention periods passed with nothing new: expired ids are gone, stopped
    /// and idle instances are purged, and no alarm is overdue.
    fn check_forgotten(&mut self) -> Result<(), Violation> {
        let now = self.rt.now();
        for s in &self.rt.slots {
            let rows = s.storage.snapshot();
            let expiring: Vec<_> =
                layout::id_records(s.id.kind, &layout::decode_all(&rows), &self.cfg)
                    .into_iter()
                    .filter(|(_, expires)| expires.is_some())
                    .collect();
            if let Some((id, expires)) = expiring.first() {
                let d = format!(
                    "{}: id record `{id}` (expires {expires:?}) is kept at {now}, with {} others",
                    s.name,
                    expiring.len() - 1
                );
                return Err(Violation::new(class::UNBOUNDED_IDS, d));
            }
            let purgeable = match s.id.kind {
                JobKind::Continuous | JobKind::Task => true,
                JobKind::Debounce => !rows.keys().any(|k| k.starts_with("failed:")),
                JobKind::WorkerPool => false,
            };
            if purgeable && !rows.is_empty() {
                let d = format!(
                    "{}: still holds {} keys after its retention period",
                    s.name,
                    rows.len()
                );
                return Err(Violation::new(class::UNBOUNDED_IDS, d));
            }
            if let Some(at) = s.storage.alarm().filter(|t| *t <= now) {
                let d = format!(
                    "{}: the alarm at {at} is overdue at the end of the drain",
                    s.name
                );
                return Err(Violation::new(class::LIVENESS, d));
            }
        }
        Ok(())
    }

    /// Once every id has expired, the same ids are accepted again (except those pinned by a
    /// queued event or a dead letter).
    fn readd_all(&mut self) -> Result<(), Violation> {
        // Serials apart from the generator's, so the model tells these events apart.
        for (serial, (instance, id)) in (1_000_000_000..).zip(self.model.used_ids()) {
            let Some(slot) = self.rt.slots.iter().position(|s| s.name == instance) else {
                continue;
            };
            let target = self.rt.slots[slot].id.clone();
            let pinned = self.pinned(slot, &id);
            let event = serde_json::to_value(Item {
                serial,
                reject: false,
                pad: String::new(),
            })
            .unwrap_or(json!(null));
            let op = match target.kind {
                JobKind::Debounce => Operation::DebounceAdd {
                    event,
                    event_id: Some(id.clone()),
                },
                JobKind::Task => Operation::TaskSend {
                    event: serde_json::to_value(TaskEvent {
                        serial,
                        then: Then::Schedule { delay_ms: 0 },
                        wake: false,
                        pad: String::new(),
                    })
                    .unwrap_or(json!(null)),
                    event_id: Some(id.clone()),
                },
                _ => Operation::WorkerPoolEnqueue {
                    event,
                    event_id: Some(id.clone()),
                    priority: 0,
                    run_at: None,
                    delay_ms: None,
                },
            };
            let task = self.next_task;
            self.send(Request {
                instance: target,
                op,
            })?;
            let duplicate = match self.answer_of(task)? {
                Ok(
                    Response::Added { duplicate, .. }
                    | Response::Enqueued { duplicate, .. }
                    | Response::TaskSent { duplicate, .. },
                ) => duplicate,
                other => {
                    let d = format!("{instance}: re-sending id `{id}` got {other:?}");
                    return Err(Violation::new(class::RESPONSE, d));
                }
            };
            if duplicate != pinned {
                let d = format!(
                    "{instance}: id `{id}` re-sent after every retention period is {}a duplicate, but its record is {}pinned",
                    if duplicate { "" } else { "not " },
                    if pinned { "" } else { "not " }
                );
                return Err(Violation::new(class::IDEMPOTENCY, d));
            }
        }
        Ok(())
    }

    /// Whether the instance keeps the id's record for good (a queued event, a dead letter).
    fn pinned(&self, slot: usize, id: &str) -> bool {
        let s = &self.rt.slots[slot];
        let rows = layout::decode_all(&s.storage.snapshot());
        layout::id_records(s.id.kind, &rows, &self.cfg)
            .iter()
            .any(|(i, expires)| i == id && expires.is_none())
    }

    /// Polls request `task` until it is answered.
    fn answer_of(&mut self, task: TaskId) -> Result<Result<Response, JobError>, Violation> {
        for _ in 0..1_000 {
            if let Some((t, result)) = self.last_answer.take() {
                if t == task {
                    return Ok(result);
                }
            }
            if !self.rt.has_task(task) {
                break;
            }
            self.apply(Op::Poll { task })?;
        }
        let d = format!("request #{task} of the drain was never answered");
        Err(Violation::new(class::LIVENESS, d))
    }
}

fn pool_instance(index: u32) -> InstanceId {
    InstanceId::new(JobKind::WorkerPool, jobs::WORK, index.to_string())
}

fn short(result: &Result<Response, JobError>) -> String {
    match result {
        Ok(r) => serde_json::to_string(r).unwrap_or_default(),
        Err(e) => format!("Err({e})"),
    }
}
