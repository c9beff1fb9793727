//! The reference model: what was sent, what was acknowledged, and what user code saw.
//! Every answer is checked against it, and so is storage after every step: an acknowledged
//! event stays stored until something that may remove it happened (its successful
//! execution, a cancel, a discard, a clear), and a removed event never comes back.

use std::collections::{BTreeSet, HashMap, HashSet};

use durable_jobs::wire::{Operation, Request, Response};
use durable_jobs::{DeadLetter, FailedBatch, InstanceId, JobError, JobKind};
use serde_json::Value;

use crate::config::{may_end_after, JobsConfig};
use crate::jobs::{TaskEvent, Then};
use crate::layout::{self, Place, Rows, Stored, View};
use crate::ops::{Expected, History, RunTime};
use crate::runtime::TaskId;
use crate::violation::{class, Violation};
use crate::world::{Execution, Outcome, Work};

/// A request sent and not answered yet.
#[derive(Debug, Clone)]
struct Sent {
    request: Request,
    expected: Expected,
    submitted: i64,
    /// When it was sent, in the model's order of events.
    tick: u64,
}

/// An answer being taken in, with what it answers.
struct Answer<'a> {
    task: TaskId,
    sent: &'a Sent,
    instance: &'a str,
    now: i64,
}

impl Answer<'_> {
    /// The answer disagrees with the model.
    fn bad(&self, detail: String) -> Result<(), Violation> {
        Err(violation(class::RESPONSE, self.instance, detail))
    }
}

/// Whether a sent event was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Sent, not answered.
    Sent,
    /// Its request failed or was a duplicate: nothing was stored.
    NotStored,
    /// Its request was dropped unanswered: it may have been stored.
    Unknown,
    /// Acknowledged, or seen in storage: it must stay until explained.
    Tracked,
}

/// One event (a Debounce add, a WorkerPool enqueue or a Task send) the simulator sent.
#[derive(Debug, Clone)]
struct Event {
    instance: String,
    kind: JobKind,
    event_id: Option<String>,
    /// When its request was sent, in the model's order of events.
    tick: u64,
    stage: Stage,
    /// Queue sequence numbers it was seen at (a replay gives a new one).
    seqs: BTreeSet<u64>,
    /// Seen as a dead letter or in a failed batch: a discard may remove it.
    seen_dead: bool,
    /// Gone from durable storage, for an accepted reason.
    done: bool,
    /// The earliest it may run: a WorkerPool event enqueued with a run time or a delay.
    not_before: Option<i64>,
    /// When its request was sent.
    sent_at: i64,
    /// An alarm call of its instance was in flight when it was sent: an execution's
    /// decisions may have applied after the event's.
    alarm_busy: bool,
}

/// Something that may remove events without running them.
#[derive(Debug, Clone)]
struct Removal {
    instance: String,
    what: RemovalKind,
    /// When it was answered, in the model's order of events, if it was.
    answered: Option<u64>,
}

#[derive(Debug, Clone)]
enum RemovalKind {
    Cancel(String),
    Discard(Option<Vec<String>>),
    Clear,
    DiscardFailed,
    /// A Task's terminate, or an event that makes `on_event` terminate.
    Terminate,
}

/// One add or enqueue carrying an event id.
#[derive(Debug, Clone)]
struct IdUse {
    task: TaskId,
    submitted: i64,
    /// When it was sent, in the model's order of events.
    tick: u64,
    state: IdState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdState {
    Pending,
    /// Stored at the latest by this time (acknowledged then), and at this tick.
    Stored(i64, u64),
    /// Maybe stored, at the latest by this time (dropped then).
    Maybe(i64),
    NotStored,
}

/// What may change a Continuous instance behind the model's back.
#[derive(Debug, Clone, Default)]
struct Changes {
    /// Starts and stops sent and not answered.
    in_flight: HashSet<TaskId>,
    /// When the last one was answered or dropped, in the model's order of events.
    last: u64,
    /// A run asked to stop the instance: until a stop or a new start is answered, the
    /// instance may stop at any moment.
    terminating: bool,
}

/// What may set a task's timer behind the events' backs, or end it.
#[derive(Debug, Clone, Default)]
struct TaskTrack {
    /// Triggers sent and not answered.
    triggers: HashSet<TaskId>,
    /// When the last trigger was answered or dropped, in the model's order of events.
    last_trigger: u64,
    /// When the last execution ended.
    last_execution: u64,
    /// Terminates and terminating events sent and not answered.
    terminators: HashSet<TaskId>,
    /// When the last of them was answered or dropped, or a terminating execution's alarm
    /// call ended.
    last_termination: u64,
    /// An execution asked to end the task; its completion may commit as long as an alarm
    /// call of the instance is in flight.
    self_terminating: bool,
    /// Terminations known to have happened: when they were sent, and answered.
    terminated: Vec<(u64, u64)>,
}

impl TaskTrack {
    /// Whether the task may have been terminated after `tick`.
    fn terminated_after(&self, tick: u64) -> bool {
        !self.terminators.is_empty() || self.self_terminating || self.last_termination > tick
    }
}

/// What the model expects of a Continuous instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cont {
    Absent,
    Active(Option<u64>),
    Stopped,
    Unknown,
}

/// Counts for the run's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests answered.
    pub answered: u64,
    /// Adds and enqueues acknowledged.
    pub acked_events: u64,
    /// Executions of user code that ended.
    pub executions: u64,
    /// Requests dropped unanswered by crashes and reloads.
    pub dropped: u64,
}

/// The reference model of one simulation.
pub struct Model {
    cfg: JobsConfig,
    in_flight: HashMap<TaskId, Sent>,
    events: HashMap<u64, Event>,
    /// Serials not yet done, per instance.
    open: HashMap<String, BTreeSet<u64>>,
    ids: HashMap<String, Vec<String>>,
    id_uses: HashMap<(String, String), Vec<IdUse>>,
    removals: HashMap<TaskId, Removal>,
    continuous: HashMap<String, Cont>,
    changes: HashMap<String, Changes>,
    tasks: HashMap<String, TaskTrack>,
    /// The time of the step being checked.
    now: i64,
    stopped_tokens: HashSet<u64>,
    /// Orders the model's events (sends, answers, drops, executions).
    tick: u64,
    ok_events: HashSet<(String, u64, u64)>,
    ok_flushes: HashSet<(String, u64)>,
    /// Successful Continuous runs per instance since [`Model::mark`].
    runs_since_mark: HashMap<String, u64>,
    /// Work that succeeded since faults stopped ([`Model::calm`]): with nothing failing,
    /// its completion is committed, so it must not run again.
    succeeded_calmly: Option<HashSet<(String, Work)>>,
    /// Counts for the summary.
    pub counts: Counts,
}

impl History for Model {
    fn ids_of(&self, instance: &str) -> &[String] {
        self.ids.get(instance).map_or(&[], Vec::as_slice)
    }
}

fn event_serial(event: &Value) -> Option<u64> {
    event["serial"].as_u64()
}

fn violation(class: &'static str, instance: &str, detail: impl AsRef<str>) -> Violation {
    Violation::new(class, format!("{instance}: {}", detail.as_ref()))
}

impl Model {
    /// An empty model.
    pub fn new(cfg: &JobsConfig) -> Self {
        Model {
            cfg: cfg.clone(),
            in_flight: HashMap::new(),
            events: HashMap::new(),
            open: HashMap::new(),
            ids: HashMap::new(),
            id_uses: HashMap::new(),
            removals: HashMap::new(),
            continuous: HashMap::new(),
            changes: HashMap::new(),
            tasks: HashMap::new(),
            now: 0,
            stopped_tokens: HashSet::new(),
            tick: 0,
            ok_events: HashSet::new(),
            ok_flushes: HashSet::new(),
            runs_since_mark: HashMap::new(),
            succeeded_calmly: None,
            counts: Counts::default(),
        }
    }

    fn retention(&self, kind: JobKind) -> i64 {
        match kind {
            JobKind::Debounce => self.cfg.batch_retention_ms,
            JobKind::WorkerPool => self.cfg.pool_retention_ms,
            JobKind::Task => self.cfg.task_retention_ms,
            JobKind::Continuous => self.cfg.tick_retention_ms,
        }
    }

    /// Records a request as sent; `alarm_busy`: an alarm call of its instance is in flight.
    pub fn sent(
        &mut self,
        task: TaskId,
        request: &Request,
        expected: Expected,
        now: i64,
        alarm_busy: bool,
    ) {
        let tick = self.next_tick();
        let instance = request.instance.to_string();
        if expected == Expected::Valid {
            self.note_event(task, request, &instance, now, tick);
            self.note_removal(task, request, &instance);
            for serial in sent_serials(request) {
                if let Some(e) = self.events.get_mut(&serial) {
                    e.alarm_busy = alarm_busy;
                }
            }
            let track = self.tasks.entry(instance.clone());
            match &request.op {
                Operation::TaskTrigger => {
                    track.or_default().triggers.insert(task);
                }
                Operation::TaskTerminate => {
                    track.or_default().terminators.insert(task);
                }
                Operation::TaskSend { event, .. } if task_then(event) == Some(Then::Terminate) => {
                    track.or_default().terminators.insert(task);
                }
                _ => {}
            }
        }
        if is_change(&request.op) {
            let changes = self.changes.entry(instance).or_default();
            changes.in_flight.insert(task);
        }
        self.in_flight.insert(
            task,
            Sent {
                request: request.clone(),
                expected,
                submitted: now,
                tick,
            },
        );
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Whether nothing could have changed the Continuous `instance` while request `sent`
    /// was in flight, besides `sent` itself: then the model knows its state.
    fn settled(&self, instance: &str, task: TaskId, sent: &Sent) -> bool {
        self.changes.get(instance).is_none_or(|c| {
            !c.terminating && c.last < sent.tick && c.in_flight.iter().all(|t| *t == task)
        })
    }

    /// A start or stop ended (answered or dropped).
    fn change_ended(&mut self, instance: &str, task: TaskId) {
        let tick = self.next_tick();
        let changes = self.changes.entry(instance.to_string()).or_default();
        if changes.in_flight.remove(&task) {
            changes.last = tick;
        }
    }

    fn note_event(&mut self, task: TaskId, request: &Request, instance: &str, now: i64, tick: u64) {
        for (event, event_id, time) in request_events(request) {
            let not_before = time.not_before(now);
            self.note_one_event(task, request, instance, now, tick, event, event_id);
            if let Some(e) = event_serial(event).and_then(|s| self.events.get_mut(&s)) {
                e.not_before = not_before;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn note_one_event(
        &mut self,
        task: TaskId,
        request: &Request,
        instance: &str,
        now: i64,
        tick: u64,
        event: &Value,
        event_id: &Option<String>,
    ) {
        if let Some(id) = event_id {
            let ids = self.ids.entry(instance.to_string()).or_default();
            if !ids.contains(id) {
                ids.push(id.clone());
            }
            self.id_uses
                .entry((instance.to_string(), id.clone()))
                .or_default()
                .push(IdUse {
                    task,
                    submitted: now,
                    tick,
                    state: IdState::Pending,
                });
        }
        let Some(serial) = event_serial(event) else {
            return;
        };
        self.events.insert(
            serial,
            Event {
                instance: instance.to_string(),
                kind: request.instance.kind,
                event_id: event_id.clone(),
                tick,
                stage: Stage::Sent,
                seqs: BTreeSet::new(),
                seen_dead: false,
                done: false,
                not_before: None,
                sent_at: now,
                alarm_busy: false,
            },
        );
    }

    fn note_removal(&mut self, task: TaskId, request: &Request, instance: &str) {
        let what = match &request.op {
            Operation::WorkerPoolCancel { event_id } => RemovalKind::Cancel(event_id.clone()),
            Operation::WorkerPoolDiscard { event_ids } => RemovalKind::Discard(event_ids.clone()),
            Operation::DebounceClear => RemovalKind::Clear,
            Operation::DebounceDiscardFailed => RemovalKind::DiscardFailed,
            Operation::TaskTerminate => RemovalKind::Terminate,
            Operation::TaskSend { event, .. } if task_then(event) == Some(Then::Terminate) => {
                RemovalKind::Terminate
            }
            _ => return,
        };
        self.removals.insert(
            task,
            Removal {
                instance: instance.to_string(),
                what,
                answered: None,
            },
        );
    }

    /// From now on storage does not fail: a successful execution's completion commits.
    pub fn calm(&mut self) {
        self.succeeded_calmly = Some(HashSet::new());
    }

    /// Takes in executions that ended.
    pub fn executions(&mut self, finished: Vec<Execution>) -> Result<(), Violation> {
        for e in finished {
            self.counts.executions += 1;
            if let Work::Task { .. } = &e.work {
                self.task_execution(&e)?;
                continue;
            }
            if let Work::Event { serial, .. } = &e.work {
                let due = self.events.get(serial).and_then(|ev| ev.not_before);
                if let Some(due) = due.filter(|t| e.started_at < *t) {
                    let d = format!(
                        "event #{serial} started at {}, before its run time {due}",
                        e.started_at
                    );
                    return Err(violation(class::EARLY, &e.instance, d));
                }
            }
            if e.outcome != Outcome::Succeeded {
                continue;
            }
            if let Some(done) = self.succeeded_calmly.as_mut() {
                if !done.insert((e.instance.clone(), e.work.clone())) {
                    let d = format!(
                        "{:?} succeeded again, with no fault to undo the first success",
                        e.work
                    );
                    return Err(violation(class::RAN_AFTER_DONE, &e.instance, d));
                }
            }
            match &e.work {
                Work::Event { serial, seq } => {
                    self.ok_events.insert((e.instance.clone(), *serial, *seq));
                }
                Work::Flush { serials } => {
                    for s in serials {
                        self.ok_flushes.insert((e.instance.clone(), *s));
                    }
                }
                Work::Run { .. } => {
                    *self.runs_since_mark.entry(e.instance.clone()).or_default() += 1;
                    if e.terminated {
                        // The run stops its instance if its completion commits.
                        self.continuous.insert(e.instance.clone(), Cont::Unknown);
                        let tick = self.next_tick();
                        let changes = self.changes.entry(e.instance.clone()).or_default();
                        changes.terminating = true;
                        changes.last = tick;
                    }
                }
                // Handled by `task_execution` above.
                Work::Task { .. } => {}
            }
        }
        Ok(())
    }

    /// A Task execution ended. Its state says which hook set the timer last: if it was an
    /// event, and nothing else can have set the timer since that event was sent (no
    /// trigger in flight since, no execution ending or running since, so no decision of
    /// `execute` or `on_error` nor a retry), the execution started at or after that timer,
    /// and not at all if the event cancelled it.
    fn task_execution(&mut self, e: &Execution) -> Result<(), Violation> {
        let Work::Task {
            serials,
            timer_at,
            by_idle,
        } = &e.work
        else {
            return Ok(());
        };
        let tick = self.next_tick();
        let track = self.tasks.entry(e.instance.clone()).or_default();
        let last = serials
            .last()
            .and_then(|s| self.events.get(s).map(|ev| (*s, ev)));
        if let (false, Some((serial, event))) = (*by_idle, last) {
            let quiet = !event.alarm_busy
                && track.triggers.is_empty()
                && track.last_trigger < event.tick
                && track.last_execution < event.tick;
            let early = match timer_at {
                _ if !quiet => None,
                Some(at) if e.started_at < *at => Some(format!(
                    "attempt {} started at {}, before the timer at {at} that event #{serial} set, with no trigger or other execution since",
                    e.attempt, e.started_at
                )),
                Some(_) => None,
                None => Some(format!(
                    "attempt {} started at {}, but event #{serial} cancelled the timer and nothing set one since",
                    e.attempt, e.started_at
                )),
            };
            if let Some(d) = early {
                return Err(violation(class::EARLY, &e.instance, d));
            }
        }
        track.last_execution = tick;
        if e.terminated && e.outcome == Outcome::Succeeded {
            track.self_terminating = true;
        }
        Ok(())
    }

    /// No alarm call of `instance` is in flight: an execution that asked to end the task
    /// has done so, or never will.
    pub fn alarm_quiet(&mut self, instance: &str) {
        let ended = self.tasks.get(instance).is_some_and(|t| t.self_terminating);
        if ended {
            let tick = self.next_tick();
            if let Some(t) = self.tasks.get_mut(instance) {
                t.self_terminating = false;
                t.last_termination = tick;
            }
        }
    }

    /// A trigger or a termination of a task ended (answered or dropped).
    fn task_request_ended(&mut self, instance: &str, task: TaskId) {
        let tick = self.next_tick();
        if let Some(t) = self.tasks.get_mut(instance) {
            if t.triggers.remove(&task) {
                t.last_trigger = tick;
            }
            if t.terminators.remove(&task) {
                t.last_termination = tick;
            }
        }
    }

    /// A request was dropped unanswered (a crash, or its instance reloaded): whatever it
    /// did may or may not be durable.
    pub fn dropped(&mut self, task: TaskId, now: i64) {
        let Some(sent) = self.in_flight.remove(&task) else {
            return;
        };
        self.counts.dropped += 1;
        self.maybe_done(task, &sent, now);
    }

    /// A request ended without saying whether its writes are durable.
    fn maybe_done(&mut self, task: TaskId, sent: &Sent, now: i64) {
        let instance = sent.request.instance.to_string();
        self.change_ended(&instance, task);
        self.task_request_ended(&instance, task);
        self.resolve_id(task, &sent.request, &instance, IdState::Maybe(now));
        for serial in sent_serials(&sent.request) {
            if let Some(e) = self.events.get_mut(&serial) {
                if e.stage == Stage::Sent {
                    e.stage = Stage::Unknown;
                }
            }
        }
        if matches!(
            sent.request.op,
            Operation::ContinuousStart { .. } | Operation::ContinuousStop { .. }
        ) {
            self.continuous.insert(instance, Cont::Unknown);
        }
    }

    fn resolve_id(&mut self, task: TaskId, request: &Request, instance: &str, state: IdState) {
        for (_, id, _) in request_events(request) {
            if let Some(id) = id {
                self.resolve_one_id(task, instance, id, state);
            }
        }
    }

    fn resolve_one_id(&mut self, task: TaskId, instance: &str, id: &str, state: IdState) {
        if let Some(uses) = self
            .id_uses
            .get_mut(&(instance.to_string(), id.to_string()))
        {
            if let Some(u) = uses.iter_mut().find(|u| u.task == task) {
                u.state = state;
            }
        }
    }

    /// Checks a request's answer, and learns from it. `durable` is the instance's durable
    /// storage right after the answer.
    pub fn answered(
        &mut self,
        task: TaskId,
        result: &Result<Response, JobError>,
        now: i64,
        durable: &Rows,
    ) -> Result<(), Violation> {
        let Some(sent) = self.in_flight.remove(&task) else {
            return Ok(());
        };
        self.counts.answered += 1;
        let instance = sent.request.instance.to_string();
        let settled = self.settled(&instance, task, &sent);
        self.change_ended(&instance, task);
        if sent.request.instance.kind == JobKind::Task {
            self.task_answered(&sent, &instance, result);
            self.task_request_ended(&instance, task);
        }
        let tick = self.next_tick();
        if let Some(r) = self.removals.get_mut(&task) {
            r.answered = Some(tick);
        }
        let verdict = check_error_class(&sent, result)
            .map_err(|d| violation(class::RESPONSE, &instance, d))?;
        if let Err(JobError::Storage { message }) = result {
            // A failed sync loses what was not durable yet, but an earlier sync (another
            // request's, an alarm's) may have made this request's writes durable already.
            if message.contains("sync") || message.contains("reload") {
                self.maybe_done(task, &sent, now);
                return Ok(());
            }
        }
        if verdict == Verdict::Refused || result.is_err() {
            self.not_stored(task, &sent, &instance);
            if let (Verdict::Proceed, Err(e)) = (verdict, result) {
                if sent.request.instance.kind == JobKind::Task {
                    return task_error(&sent, &instance, e);
                }
                if settled {
                    return self.continuous_error(&sent, &instance, e);
                }
            }
            return Ok(());
        }
        let Ok(response) = result else {
            return Ok(());
        };
        if !settled && sent.request.instance.kind == JobKind::Continuous {
            return self.unsettled_continuous(&sent, &instance, response);
        }
        let answer = Answer {
            task,
            sent: &sent,
            instance: &instance,
            now,
        };
        self.response(&answer, response, durable)
    }

    /// Notes a termination a Task answer confirms: a terminate that found the task, or a
    /// terminating event taken.
    fn task_answered(&mut self, sent: &Sent, instance: &str, result: &Result<Response, JobError>) {
        let confirmed = match (&sent.request.op, result) {
            (Operation::TaskTerminate, Ok(Response::Terminated { terminated })) => *terminated,
            (
                Operation::TaskSend { event, .. },
                Ok(Response::TaskSent {
                    duplicate: false, ..
                }),
            ) => task_then(event) == Some(Then::Terminate),
            _ => false,
        };
        if confirmed {
            let tick = self.tick + 1;
            let track = self.tasks.entry(instance.to_string()).or_default();
            track.terminated.push((sent.tick, tick));
        }
    }

    /// An answer about a Continuous instance that something else changed meanwhile: only
    /// what it says for sure is learnt.
    fn unsettled_continuous(
        &mut self,
        sent: &Sent,
        instance: &str,
        response: &Response,
    ) -> Result<(), Violation> {
        match (&sent.request.op, response) {
            (Operation::ContinuousStop { .. }, Response::Stopped { .. }) => {
                self.continuous.insert(instance.to_string(), Cont::Unknown);
                self.unterminate(instance);
            }
            (Operation::ContinuousStart { .. }, Response::Started { .. }) => {
                self.continuous.insert(instance.to_string(), Cont::Unknown);
            }
            _ => {}
        }
        Ok(())
    }

    /// A stop or a new start was answered: a run that asked to stop the instance before
    /// can no longer change it.
    fn unterminate(&mut self, instance: &str) {
        if let Some(c) = self.changes.get_mut(instance) {
            c.terminating = false;
        }
    }

    fn not_stored(&mut self, task: TaskId, sent: &Sent, instance: &str) {
        self.removals.remove(&task);
        self.resolve_id(task, &sent.request, instance, IdState::NotStored);
        for serial in sent_serials(&sent.request) {
            if let Some(e) = self.events.get_mut(&serial) {
                if e.stage == Stage::Sent {
                    e.stage = Stage::NotStored;
                }
            }
        }
    }

    fn response(
        &mut self,
        a: &Answer,
        response: &Response,
        durable: &Rows,
    ) -> Result<(), Violation> {
        match (&a.sent.request.op, response) {
            (
                Operation::DebounceAdd { event_id, event },
                Response::Added {
                    event_count,
                    duplicate,
                    ..
                },
            ) => {
                if let Some(max) = self.cfg.batch_max_events.filter(|max| event_count > max) {
                    let d = format!("an add answers a batch of {event_count}, max_events is {max}");
                    return Err(violation(class::BATCH_TOO_LARGE, a.instance, d));
                }
                self.event_answered(a, event_id.clone(), event, *duplicate, durable)
            }
            (Operation::DebounceAddMany { events }, Response::AddedMany { outcomes }) => {
                if outcomes.len() != events.len() {
                    return a.bad(format!(
                        "{} outcomes for {} events",
                        outcomes.len(),
                        events.len()
                    ));
                }
                for (item, outcome) in events.iter().zip(outcomes) {
                    let max = self.cfg.batch_max_events;
                    if let Some(max) = max.filter(|max| outcome.event_count > *max) {
                        let d = format!(
                            "an add of several answers a batch of {}, max_events is {max}",
                            outcome.event_count
                        );
                        return Err(violation(class::BATCH_TOO_LARGE, a.instance, d));
                    }
                    let refusable = refused_by_the_reducer(&item.event);
                    match (&outcome.rejected, refusable, outcome.duplicate) {
                        (Some(JobError::Validation { .. }), true, false) => continue,
                        (Some(error), _, _) => {
                            return a.bad(format!("event {} refused: {error}", item.event))
                        }
                        (None, true, false) => {
                            return a.bad(format!("event {} was added", item.event))
                        }
                        // A duplicate is answered before the reducer runs.
                        (None, _, _) => {}
                    }
                    self.event_answered(
                        a,
                        item.event_id.clone(),
                        &item.event,
                        outcome.duplicate,
                        durable,
                    )?;
                }
                Ok(())
            }
            (
                Operation::WorkerPoolEnqueue {
                    event_id, event, ..
                },
                Response::Enqueued {
                    event_id: answered,
                    instance_index,
                    duplicate,
                    ..
                },
            ) => {
                if a.sent.request.instance.pool_index() != Some(*instance_index) {
                    return a.bad(format!("enqueued on instance {instance_index}"));
                }
                if event_id.as_ref().is_some_and(|id| id != answered) {
                    return a.bad(format!("enqueue answers event id {answered}"));
                }
                self.event_answered(a, Some(answered.clone()), event, *duplicate, durable)
            }
            (
                Operation::WorkerPoolEnqueueMany { events },
                Response::EnqueuedMany {
                    instance_index,
                    outcomes,
                },
            ) => {
                if a.sent.request.instance.pool_index() != Some(*instance_index) {
                    return a.bad(format!("enqueued on instance {instance_index}"));
                }
                if outcomes.len() != events.len() {
                    return a.bad(format!(
                        "{} outcomes for {} events",
                        outcomes.len(),
                        events.len()
                    ));
                }
                for (item, outcome) in events.iter().zip(outcomes) {
                    let time = RunTime {
                        run_at: item.run_at,
                        delay_ms: item.delay_ms,
                    };
                    if time.refused(a.sent.submitted) {
                        if outcome.rejected.is_none() || outcome.event_id.is_some() {
                            return a.bad(format!(
                                "an event with run time {time:?} was taken: {outcome:?}"
                            ));
                        }
                        self.item_refused(a, item);
                        continue;
                    }
                    let Some(answered) = outcome
                        .event_id
                        .clone()
                        .filter(|_| outcome.rejected.is_none())
                    else {
                        return a.bad(format!("a valid event was refused: {outcome:?}"));
                    };
                    if item.event_id.as_ref().is_some_and(|id| *id != answered) {
                        return a.bad(format!("enqueue answers event id {answered}"));
                    }
                    self.event_answered(
                        a,
                        Some(answered),
                        &item.event,
                        outcome.duplicate,
                        durable,
                    )?;
                }
                Ok(())
            }
            (
                Operation::TaskSend { event_id, event },
                Response::TaskSent {
                    duplicate,
                    created,
                    next_run_at,
                },
            ) => {
                let then = task_then(event);
                if then == Some(Then::Terminate) && !duplicate && next_run_at.is_some() {
                    return a.bad(format!(
                        "a terminating event (created {created}) answers a next run at {next_run_at:?}"
                    ));
                }
                self.event_answered(a, event_id.clone(), event, *duplicate, durable)
            }
            (op, response) if op.kind() == JobKind::Continuous => {
                self.continuous_response(a, response)
            }
            (_, response) => self.admin_response(a, response),
        }
    }

    /// The answer to a request on a Debounce or WorkerPool instance other than an add or an
    /// enqueue.
    fn admin_response(&mut self, a: &Answer, response: &Response) -> Result<(), Violation> {
        match (&a.sent.request.op, response) {
            (Operation::WorkerPoolCancel { .. }, Response::Cancelled { cancelled }) => {
                if !cancelled {
                    self.removals.remove(&a.task);
                }
                Ok(())
            }
            (Operation::TaskTerminate, Response::Terminated { terminated }) => {
                // A task that does not exist holds no event.
                if !terminated {
                    self.removals.remove(&a.task);
                }
                Ok(())
            }
            (Operation::WorkerPoolDiscard { .. }, Response::DeadLettersChanged { count }) => {
                if *count == 0 {
                    self.removals.remove(&a.task);
                }
                Ok(())
            }
            (Operation::WorkerPoolDeadLetters { .. }, Response::DeadLetters { items }) => {
                let policy = &self.cfg.pool_retry;
                let ended =
                    |i: &&DeadLetter| may_end_after(policy, i.attempts, i.dead_at, i.enqueued_at);
                match items.iter().find(|i| !ended(i)) {
                    Some(i) => a.bad(format!(
                        "dead letter {} after {} attempts",
                        i.event_id, i.attempts
                    )),
                    None => Ok(()),
                }
            }
            (
                Operation::WorkerPoolPending { limit, .. },
                Response::PendingEvents { items, next },
            ) => {
                // Queue order (higher priority first, then enqueue order), then the
                // delayed events by run time, then enqueue order.
                let order = |e: &durable_jobs::QueuedEvent| match e.delayed {
                    false => (0, i64::from(e.priority).saturating_neg(), e.seq),
                    true => (1, e.run_at.unwrap_or(i64::MIN), e.seq),
                };
                let ordered = items.windows(2).all(|w| order(&w[0]) < order(&w[1]));
                if !ordered {
                    return a.bad(format!("pending events out of queue order: {items:?}"));
                }
                if items.len() > *limit as usize
                    || (next.is_some() && items.len() < *limit as usize)
                {
                    return a.bad(format!("a page of {} for a limit of {limit}", items.len()));
                }
                Ok(())
            }
            (Operation::DebounceFailedBatches, Response::FailedBatches { batches }) => {
                let policy = &self.cfg.batch_retry;
                let ended =
                    |b: &&FailedBatch| may_end_after(policy, b.attempts, b.failed_at, b.started_at);
                match batches.iter().find(|b| !ended(b)) {
                    Some(b) => a.bad(format!(
                        "failed batch {} after {} attempts",
                        b.seq, b.attempts
                    )),
                    None => Ok(()),
                }
            }
            (Operation::DebounceStatus, Response::DebounceStatus { status: Some(s) }) => {
                match self.cfg.batch_max_events {
                    Some(max) if s.event_count > max => {
                        let d = format!("status shows an open batch of {}", s.event_count);
                        Err(violation(class::BATCH_TOO_LARGE, a.instance, d))
                    }
                    _ => Ok(()),
                }
            }
            (op, response) => {
                let fits = matches!(
                    (op, response),
                    (Operation::DebounceFlush, Response::FlushRequested { .. })
                        | (Operation::DebounceClear, Response::Cleared { .. })
                        | (Operation::DebounceDiscardFailed, Response::Cleared { .. })
                        | (Operation::DebounceStatus, Response::DebounceStatus { .. })
                        | (Operation::DebounceGetState, Response::State { .. })
                        | (Operation::WorkerPoolPause, Response::Paused)
                        | (Operation::TaskTrigger, Response::Triggered)
                        | (Operation::TaskTerminate, Response::Terminated { .. })
                        | (Operation::TaskStatus, Response::TaskStatus { .. })
                        | (Operation::TaskGetState, Response::State { .. })
                        | (Operation::WorkerPoolResume, Response::Resumed)
                        | (
                            Operation::WorkerPoolStatus,
                            Response::WorkerPoolStatus { .. }
                        )
                        | (
                            Operation::WorkerPoolReplay { .. },
                            Response::DeadLettersChanged { .. }
                        )
                );
                match fits {
                    true => Ok(()),
                    false => a.bad(format!("answer {response:?} to {op:?}")),
                }
            }
        }
    }

    /// The answer to a request on a Continuous instance whose state the model knows.
    fn continuous_response(&mut self, a: &Answer, response: &Response) -> Result<(), Violation> {
        let instance = a.instance;
        match (&a.sent.request.op, response) {
            (Operation::ContinuousStart { state }, Response::Started { created }) => {
                self.started(instance, state["token"].as_u64(), *created)
            }
            (Operation::ContinuousStop { .. }, Response::Stopped { stopped }) => {
                self.stopped(instance, *stopped)
            }
            (Operation::ContinuousTrigger, Response::Triggered) => match self.cont(instance) {
                Cont::Absent | Cont::Stopped => a.bad(format!(
                    "trigger accepted, but the instance is {:?}",
                    self.cont(instance)
                )),
                _ => Ok(()),
            },
            (Operation::ContinuousStatus, Response::ContinuousStatus { status }) => {
                let name = status.as_ref().map(|s| s.status.name().as_str());
                self.continuous_seen(instance, name)
            }
            (Operation::ContinuousGetState, Response::State { state }) => {
                self.state_seen(instance, state.as_ref())
            }
            (op, response) => a.bad(format!("answer {response:?} to {op:?}")),
        }
    }

    /// An add or enqueue answered: checks its event id against the idempotency rules, and
    /// that an acknowledged event is durable.
    fn event_answered(
        &mut self,
        a: &Answer,
        event_id: Option<String>,
        event: &Value,
        duplicate: bool,
        durable: &Rows,
    ) -> Result<(), Violation> {
        let kind = a.sent.request.instance.kind;
        // A terminating event ends the task: neither it nor its id is kept.
        let ends = task_then(event) == Some(Then::Terminate);
        if let Some(id) = &event_id {
            self.check_id(a, id, duplicate)?;
            let state = match duplicate || ends {
                true => IdState::NotStored,
                false => IdState::Stored(a.now, self.tick),
            };
            self.resolve_one_id(a.task, a.instance, id, state);
        }
        let Some(serial) = event_serial(event) else {
            return Ok(());
        };
        if duplicate || ends {
            if let Some(e) = self.events.get_mut(&serial) {
                e.stage = Stage::NotStored;
            }
            let stored = layout::serials(kind, &layout::decode_all(durable));
            if duplicate && kind == JobKind::Task && stored.iter().any(|s| s.serial == serial) {
                let d =
                    format!("event #{serial} answered duplicate, but the task's state holds it");
                return Err(violation(class::IDEMPOTENCY, a.instance, d));
            }
            return Ok(());
        }
        self.counts.acked_events += 1;
        if let Some(e) = self.events.get_mut(&serial) {
            e.stage = Stage::Tracked;
            e.event_id = event_id;
        }
        self.open
            .entry(a.instance.to_string())
            .or_default()
            .insert(serial);
        // Acknowledged means durable: it must be stored now, unless already done with.
        let stored = layout::serials(kind, &layout::decode_all(durable));
        if let Some(v) = self.observe(a.instance, &stored, true) {
            return Err(v);
        }
        let present = stored.iter().any(|s| s.serial == serial);
        if !present && !self.explained(serial) {
            let d = format!("event #{serial} was acknowledged but is not durably stored");
            return Err(violation(class::LOST_ACK, a.instance, d));
        }
        Ok(())
    }

    /// An event of an enqueue of several that the engine refused: nothing of it was stored.
    fn item_refused(&mut self, a: &Answer, item: &durable_jobs::EnqueueItem) {
        if let Some(id) = &item.event_id {
            self.resolve_one_id(a.task, a.instance, id, IdState::NotStored);
        }
        if let Some(e) = event_serial(&item.event).and_then(|s| self.events.get_mut(&s)) {
            e.stage = Stage::NotStored;
        }
    }

    /// The idempotency rules: an id stored within the retention period is a duplicate; a
    /// duplicate must have been stored before; a Debounce id is accepted again once expired.
    fn check_id(&self, a: &Answer, id: &str, duplicate: bool) -> Result<(), Violation> {
        let (sent, now) = (a.sent, a.now);
        let kind = sent.request.instance.kind;
        let retention = self.retention(kind);
        let uses = self.id_uses.get(&(a.instance.to_string(), id.to_string()));
        let others: Vec<&IdUse> = uses
            .into_iter()
            .flatten()
            .filter(|u| u.task != a.task)
            .collect();
        let bad = |d: String| Err(violation(class::IDEMPOTENCY, a.instance, d));
        if !duplicate {
            // Stored before this request was sent, and not expired even if this request's
            // step ran as late as its answer.
            // A task forgets its ids when it ends, which may have happened as soon as the
            // earlier use was sent.
            let track = self.tasks.get(a.instance);
            let ended = |u: &IdUse| track.is_some_and(|t| t.terminated_after(u.tick));
            let live = others.iter().find(|u| {
                matches!(u.state, IdState::Stored(_, acked) if acked < sent.tick && now < u.submitted + retention && !ended(u))
            });
            return match live {
                Some(u) => bad(format!(
                    "id `{id}` stored at {} (retention {retention} ms) accepted again at {now}",
                    u.submitted
                )),
                None => Ok(()),
            };
        }
        // A WorkerPool id lasts as long as its event, then a retention period: any earlier
        // use may still count. A Debounce id lasts one retention period from its add.
        let terminated_between = |acked: u64| {
            self.tasks.get(a.instance).is_some_and(|t| {
                t.terminated
                    .iter()
                    .any(|(sent_at, answered)| *sent_at > acked && *answered < sent.tick)
            })
        };
        let could_count = |u: &&IdUse| match u.state {
            IdState::Pending => true,
            IdState::Stored(_, acked) if terminated_between(acked) => false,
            IdState::Stored(latest, _) | IdState::Maybe(latest) => {
                kind == JobKind::WorkerPool || latest + retention > sent.submitted
            }
            IdState::NotStored => false,
        };
        match others.iter().any(could_count) {
            true => Ok(()),
            false => bad(format!(
                "id `{id}` reported duplicate at {now}, but no earlier use of it can still count"
            )),
        }
    }

    fn cont(&self, instance: &str) -> Cont {
        self.continuous
            .get(instance)
            .copied()
            .unwrap_or(Cont::Absent)
    }

    fn started(
        &mut self,
        instance: &str,
        token: Option<u64>,
        created: bool,
    ) -> Result<(), Violation> {
        let before = self.cont(instance);
        if created {
            self.unterminate(instance);
        }
        let after = if created {
            if let Cont::Active(_) = before {
                return Err(violation(
                    class::RESPONSE,
                    instance,
                    "start created an instance that was active",
                ));
            }
            Cont::Active(token)
        } else {
            match before {
                Cont::Absent | Cont::Stopped => {
                    return Err(violation(
                        class::RESPONSE,
                        instance,
                        format!("start refused, but the instance is {before:?}"),
                    ))
                }
                Cont::Active(t) => Cont::Active(t),
                Cont::Unknown => Cont::Active(None),
            }
        };
        self.continuous.insert(instance.to_string(), after);
        Ok(())
    }

    fn stopped(&mut self, instance: &str, stopped: bool) -> Result<(), Violation> {
        let before = self.cont(instance);
        self.unterminate(instance);
        let after = match (before, stopped) {
            (Cont::Absent | Cont::Stopped, true) => {
                return Err(violation(
                    class::RESPONSE,
                    instance,
                    format!("stop stopped an instance that was {before:?}"),
                ))
            }
            (Cont::Active(_), false) => {
                return Err(violation(
                    class::RESPONSE,
                    instance,
                    "stop found nothing to stop, but the instance was active",
                ))
            }
            (Cont::Absent, false) => Cont::Absent,
            (Cont::Active(token), true) => {
                self.stopped_tokens.extend(token);
                Cont::Stopped
            }
            _ => Cont::Stopped,
        };
        self.continuous.insert(instance.to_string(), after);
        Ok(())
    }

    /// Only a trigger may fail for the instance's state, and only when the model allows it.
    fn continuous_error(
        &self,
        sent: &Sent,
        instance: &str,
        error: &JobError,
    ) -> Result<(), Violation> {
        let cont = self.cont(instance);
        let state_error = matches!(
            error,
            JobError::InstanceNotFound { .. } | JobError::InvalidState { .. }
        );
        let fits = match error {
            _ if state_error && sent.request.op != Operation::ContinuousTrigger => false,
            JobError::InstanceNotFound { .. } => {
                matches!(cont, Cont::Absent | Cont::Stopped | Cont::Unknown)
            }
            JobError::InvalidState { .. } => matches!(cont, Cont::Stopped | Cont::Unknown),
            _ => true,
        };
        if !fits {
            return Err(violation(
                class::RESPONSE,
                instance,
                format!("{error} while the model expects {cont:?}"),
            ));
        }
        Ok(())
    }

    fn continuous_seen(&self, instance: &str, status: Option<&str>) -> Result<(), Violation> {
        let cont = self.cont(instance);
        let fits = match status {
            None => matches!(cont, Cont::Absent | Cont::Stopped | Cont::Unknown),
            Some("stopped") => matches!(cont, Cont::Stopped | Cont::Unknown),
            Some(_) => matches!(cont, Cont::Active(_) | Cont::Unknown),
        };
        if !fits {
            return Err(violation(
                class::RESPONSE,
                instance,
                format!("status {status:?} while the model expects {cont:?}"),
            ));
        }
        Ok(())
    }

    fn state_seen(&self, instance: &str, state: Option<&Value>) -> Result<(), Violation> {
        let cont = self.cont(instance);
        let token = state.and_then(|s| s["token"].as_u64());
        let fits = match (cont, state) {
            (Cont::Active(Some(t)), Some(_)) => token == Some(t),
            (Cont::Active(_), None) => false,
            (Cont::Absent | Cont::Stopped, Some(_)) => false,
            _ => true,
        };
        if !fits {
            return Err(violation(
                class::RESPONSE,
                instance,
                format!("state {state:?} while the model expects {cont:?}"),
            ));
        }
        Ok(())
    }

    /// Notes where stored events are, and checks that no finished event is back. An event
    /// seen in `durable` storage is tracked from then on, acknowledged or not.
    fn observe(&mut self, instance: &str, stored: &[Stored], durable: bool) -> Option<Violation> {
        for s in stored {
            let Some(e) = self.events.get_mut(&s.serial) else {
                return Some(violation(
                    class::LAYOUT,
                    instance,
                    format!("stored event #{} was never sent", s.serial),
                ));
            };
            if e.instance != instance {
                return Some(violation(
                    class::LAYOUT,
                    instance,
                    format!("event #{} sent to {} is stored here", s.serial, e.instance),
                ));
            }
            if e.done {
                return Some(violation(
                    class::LOST_ACK,
                    instance,
                    format!("event #{} is stored again after it was done", s.serial),
                ));
            }
            if durable && e.stage != Stage::Tracked {
                e.stage = Stage::Tracked;
                self.open
                    .entry(instance.to_string())
                    .or_default()
                    .insert(s.serial);
            }
            match s.place {
                Place::Queued { seq } => {
                    e.seqs.insert(seq);
                }
                // Seen where a discard may take it: a dead letter, a failed batch.
                Place::Dead | Place::Batch { failed: true } => e.seen_dead = true,
                Place::Batch { failed: false } | Place::Task => {}
            }
            if s.event_id.is_some() {
                e.event_id.clone_from(&s.event_id);
            }
        }
        None
    }

    /// Whether an event that is no longer stored was removed for an accepted reason: it
    /// ran successfully, or a cancel, discard or clear that may have committed took it.
    fn explained(&self, serial: u64) -> bool {
        let Some(e) = self.events.get(&serial) else {
            return false;
        };
        if e.kind == JobKind::Task {
            // Gone with a termination (a client's, an event's, an execution's), or with the
            // purge of an idle task, no sooner than a retention period after the event.
            let ended = self
                .tasks
                .get(&e.instance)
                .is_some_and(|t| t.terminated_after(e.tick));
            let purged = self.now >= e.sent_at + self.cfg.task_retention_ms;
            let terminate = self.removals.values().any(|r| {
                r.instance == e.instance
                    && matches!(r.what, RemovalKind::Terminate)
                    && r.answered.is_none_or(|a| a > e.tick)
            });
            return ended || purged || terminate;
        }
        let ran = match e.kind {
            JobKind::WorkerPool => e
                .seqs
                .iter()
                .any(|seq| self.ok_events.contains(&(e.instance.clone(), serial, *seq))),
            _ => self.ok_flushes.contains(&(e.instance.clone(), serial)),
        };
        ran || self.removals.values().any(|r| {
            r.instance == e.instance
                && r.answered.is_none_or(|a| a > e.tick)
                && match (&r.what, &e.event_id) {
                    (RemovalKind::Clear, _) => true,
                    (RemovalKind::DiscardFailed, _) => e.seen_dead,
                    (RemovalKind::Cancel(id), Some(mine)) => id == mine,
                    (RemovalKind::Discard(None), _) => e.seen_dead,
                    (RemovalKind::Discard(Some(ids)), Some(mine)) => {
                        e.seen_dead && ids.contains(mine)
                    }
                    _ => false,
                }
        })
    }

    /// Checks one instance's storage after a step: `live` is what reads see, `durable` what
    /// a crash would leave. Every tracked event is durably stored or explained.
    pub fn check_storage(
        &mut self,
        id: &InstanceId,
        live: &View,
        durable: &View,
        now: i64,
    ) -> Result<(), Violation> {
        self.now = now;
        let instance = id.to_string();
        if let Some(v) = self.observe(&instance, &live.stored, false) {
            return Err(v);
        }
        if let Some(v) = self.observe(&instance, &durable.stored, true) {
            return Err(v);
        }
        if id.kind == JobKind::Continuous {
            for token in [live.token, durable.token].into_iter().flatten() {
                if self.stopped_tokens.contains(&token) {
                    return Err(violation(
                        class::RESPONSE,
                        &instance,
                        format!(
                            "the state of token {token} is stored after its stop was acknowledged"
                        ),
                    ));
                }
            }
            return Ok(());
        }
        let present: HashSet<u64> = durable.stored.iter().map(|s| s.serial).collect();
        let open: Vec<u64> = self
            .open
            .get(&instance)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for serial in open {
            if present.contains(&serial) {
                continue;
            }
            if !self.explained(serial) {
                let d = match id.kind {
                    JobKind::Task => format!("event #{serial} is no longer in the task's durable state, and the task was neither terminated nor idle for its retention period"),
                    _ => format!("event #{serial} is no longer durably stored, and neither ran successfully nor was cancelled, discarded or cleared"),
                };
                return Err(violation(class::LOST_ACK, &instance, d));
            }
            if let Some(e) = self.events.get_mut(&serial) {
                e.done = true;
            }
            if let Some(set) = self.open.get_mut(&instance) {
                set.remove(&serial);
            }
        }
        Ok(())
    }

    /// Starts counting successful Continuous runs afresh.
    pub fn mark(&mut self) {
        self.runs_since_mark.clear();
    }

    /// Continuous instances the model knows are active.
    pub fn active_continuous(&self) -> Vec<String> {
        let mut active: Vec<String> = self
            .continuous
            .iter()
            .filter(|(_, c)| matches!(c, Cont::Active(_)))
            .map(|(i, _)| i.clone())
            .collect();
        active.sort();
        active
    }

    /// Successful runs of `instance` since [`mark`](Self::mark).
    pub fn runs_since_mark(&self, instance: &str) -> u64 {
        self.runs_since_mark.get(instance).copied().unwrap_or(0)
    }

    /// Events still tracked on `instance`, with whether they sit in a place where they stay
    /// for good (a dead letter, a failed batch).
    pub fn open_events(&self, instance: &str) -> Vec<u64> {
        self.open
            .get(instance)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Requests not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Every (instance, event id) used in an add or enqueue.
    pub fn used_ids(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = self.id_uses.keys().cloned().collect();
        all.sort();
        all
    }
}

/// The events a request carries, with their ids and run times.
fn request_events(request: &Request) -> Vec<(&Value, &Option<String>, RunTime)> {
    match &request.op {
        Operation::DebounceAdd { event, event_id } | Operation::TaskSend { event, event_id } => {
            vec![(event, event_id, RunTime::NOW)]
        }
        Operation::WorkerPoolEnqueue {
            event,
            event_id,
            run_at,
            delay_ms,
            ..
        } => {
            let time = RunTime {
                run_at: *run_at,
                delay_ms: *delay_ms,
            };
            vec![(event, event_id, time)]
        }
        // Events the reducer must refuse are not tracked, as a single add of one is not: if
        // one is ever stored, it was never sent.
        Operation::DebounceAddMany { events } => events
            .iter()
            .filter(|e| !refused_by_the_reducer(&e.event))
            .map(|e| (&e.event, &e.event_id, RunTime::NOW))
            .collect(),
        Operation::WorkerPoolEnqueueMany { events } => events
            .iter()
            .map(|e| {
                let time = RunTime {
                    run_at: e.run_at,
                    delay_ms: e.delay_ms,
                };
                (&e.event, &e.event_id, time)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether the Debounce job refuses `event`: the reducer refuses it, or it is no event.
fn refused_by_the_reducer(event: &Value) -> bool {
    event_serial(event).is_none() || event["reject"].as_bool() == Some(true)
}

fn sent_serials(request: &Request) -> Vec<u64> {
    request_events(request)
        .into_iter()
        .filter_map(|(event, _, _)| event_serial(event))
        .collect()
}

/// What an answer means, given the error a malformed request must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Refused as expected: nothing was stored.
    Refused,
    /// A valid request's answer (success or a storage failure).
    Proceed,
}

/// Checks an answer against the error a malformed request must get, and that a valid one
/// gets none of those.
fn check_error_class(sent: &Sent, result: &Result<Response, JobError>) -> Result<Verdict, String> {
    let refused = |e: &JobError| match e {
        JobError::BadRequest { .. } => Some(Expected::BadRequest),
        JobError::TooLarge { .. } => Some(Expected::TooLarge),
        JobError::Validation { .. } => Some(Expected::Validation),
        JobError::JobNotFound { .. } => Some(Expected::JobNotFound),
        _ => None,
    };
    match (sent.expected, result) {
        (Expected::Valid, Ok(_)) => Ok(Verdict::Proceed),
        (Expected::Valid, Err(e)) => match refused(e) {
            Some(_) => Err(format!("a valid request was refused: {e}")),
            None => Ok(Verdict::Proceed),
        },
        (expected, Err(e)) if refused(e) == Some(expected) => Ok(Verdict::Refused),
        // The schema and the reducer are consulted after the step's first read, which may
        // fail, and after the checks that answer without them: a start on an active
        // instance, a duplicate event id.
        (Expected::Validation, Err(JobError::Storage { .. })) => Ok(Verdict::Refused),
        (Expected::Validation, Ok(Response::Started { created: false }))
        | (
            Expected::Validation,
            Ok(Response::Added {
                duplicate: true, ..
            }),
        )
        | (
            Expected::Validation,
            Ok(Response::Enqueued {
                duplicate: true, ..
            }),
        )
        | (
            Expected::Validation,
            Ok(Response::TaskSent {
                duplicate: true, ..
            }),
        ) => Ok(Verdict::Proceed),
        (expected, other) => Err(format!("expected {expected:?}, got {other:?}")),
    }
}

/// Whether an operation starts or stops a Continuous instance.
fn is_change(op: &Operation) -> bool {
    matches!(
        op,
        Operation::ContinuousStart { .. } | Operation::ContinuousStop { .. }
    )
}

/// What a Task event makes `on_event` decide, if it is one.
fn task_then(event: &Value) -> Option<Then> {
    serde_json::from_value::<TaskEvent>(event.clone())
        .ok()
        .map(|e| e.then)
}

/// The errors a valid Task request may get: a trigger finds no task; anything may meet a
/// storage failure.
fn task_error(sent: &Sent, instance: &str, error: &JobError) -> Result<(), Violation> {
    let fits = match error {
        JobError::InstanceNotFound { .. } => sent.request.op == Operation::TaskTrigger,
        JobError::InvalidState { .. } => false,
        _ => true,
    };
    match fits {
        true => Ok(()),
        false => Err(violation(
            class::RESPONSE,
            instance,
            format!("{error} answers {:?}", sent.request.op),
        )),
    }
}
