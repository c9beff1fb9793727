//! What the simulated jobs share with the simulator: how each execution behaves (drawn
//! from the seed), the log of executions, and the checks made when user code starts.
//!
//! Job structs must be `Send + Sync`, so the world sits behind a mutex; the simulator is
//! single-threaded, so the lock is never contended.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use durable_jobs::adapters::memory::MemoryStorage;
use durable_jobs::adapters::{Clock, VirtualClock};
use durable_jobs::InstanceId;

use crate::layout;
use crate::rng::mix;
use crate::violation::{class, Violation};

/// What one execution works on, as user code sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Work {
    /// A Continuous run of the instance started with state `token`, after `run_count`
    /// successful runs.
    Run {
        /// The token of the `start` that created this state.
        token: u64,
        /// Successful runs before this one.
        run_count: u64,
    },
    /// A Debounce flush of a batch holding these events.
    Flush {
        /// The events' serials, in the order they were added.
        serials: Vec<u64>,
    },
    /// A WorkerPool event.
    Event {
        /// The event's serial.
        serial: u64,
        /// Its queue sequence number (a replay gives a new one).
        seq: u64,
    },
    /// A Task execution, with the state it started from.
    Task {
        /// The serials of the events the task accepted.
        serials: Vec<u64>,
        /// The time the last hook that wrote the state set the timer for.
        timer_at: Option<i64>,
        /// That hook was `on_idle` (else `on_event`).
        by_idle: bool,
    },
}

/// How an execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `execute` returned `Ok`.
    Succeeded,
    /// `execute` returned `Err`.
    Failed,
    /// Its future was dropped before it returned (a crash, or an instance reloaded).
    Abandoned,
    /// `execute` panicked: the engine catches it and counts a failed attempt.
    Panicked,
}

/// One execution of user code, as logged when it ended.
#[derive(Debug, Clone)]
pub struct Execution {
    /// The instance it ran on.
    pub instance: String,
    /// What it worked on.
    pub work: Work,
    /// Its attempt number, from 1.
    pub attempt: u32,
    /// When it started.
    pub started_at: i64,
    /// How it ended.
    pub outcome: Outcome,
    /// A Continuous run or a Task execution asked to end its instance.
    pub terminated: bool,
}

/// How long user code takes before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delay {
    /// It returns at once.
    None,
    /// It is pending for this many polls (other futures of the instance run meanwhile).
    Polls(u32),
    /// It is pending until the virtual clock has moved this far.
    Millis(i64),
    /// It never returns.
    Forever,
}

/// Whether a behaviour is a healthy one or a fault, whose weight the seed scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Succeeds.
    Healthy,
    /// Fails in some way.
    Faulty,
}

/// One way user code can behave: how long it takes and what it then does.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// A name for traces.
    pub name: &'static str,
    /// How often it is chosen, relative to the others.
    pub weight: u32,
    /// Whether the seed's failure scale applies to its weight.
    pub health: Health,
    /// How long it takes.
    pub delay: Delay,
    /// What it does once the delay is over: return `Ok`, return `Err`, or anything else a
    /// user's code might do.
    pub act: fn() -> Result<(), String>,
}

fn succeed() -> Result<(), String> {
    Ok(())
}

fn fail() -> Result<(), String> {
    Err("simulated failure".to_string())
}

/// The message of every simulated panic, which the panic hook keeps quiet about.
const SIMULATED_PANIC: &str = "simulated panic";

fn panic_now() -> Result<(), String> {
    panic!("{SIMULATED_PANIC}")
}

/// Keeps the default panic hook from printing each simulated panic (thousands a run);
/// other panics are printed as usual.
pub fn quiet_simulated_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let simulated = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|m| m == SIMULATED_PANIC);
            if !simulated {
                default(info);
            }
        }));
    });
}

impl Behaviour {
    /// A behaviour: its name, weight, health, delay and what it does after the delay.
    pub const fn new(
        name: &'static str,
        weight: u32,
        health: Health,
        delay: Delay,
        act: fn() -> Result<(), String>,
    ) -> Self {
        Behaviour {
            name,
            weight,
            health,
            delay,
            act,
        }
    }
}

use Delay::{Millis, Polls};
use Health::{Faulty, Healthy};

/// Every behaviour the simulated jobs draw from. A new behaviour is one more row; user code
/// that never returns (for timeouts, which need a runner the simulation does not have yet)
/// would be `Behaviour::new("hangs", 5, Faulty, Delay::Forever, succeed)`. An execution whose future is dropped before it returns is
/// logged as [`Outcome::Abandoned`].
pub const BEHAVIOURS: &[Behaviour] = &[
    Behaviour::new("fast ok", 50, Healthy, Delay::None, succeed),
    Behaviour::new("slow ok", 15, Healthy, Polls(4), succeed),
    Behaviour::new("long ok", 10, Healthy, Millis(3_000), succeed),
    Behaviour::new("fast error", 15, Faulty, Delay::None, fail),
    Behaviour::new("slow error", 5, Faulty, Polls(3), fail),
    Behaviour::new("long error", 5, Faulty, Millis(2_000), fail),
    Behaviour::new("panic", 4, Faulty, Polls(1), panic_now),
];

/// The behaviour every execution has once the simulation drains: quick success.
const CALM: Behaviour = BEHAVIOURS[0];

/// Chance, per thousand, that a successful Continuous run or Task execution ends its own
/// instance.
const TERMINATE_PER_MILLE: u64 = 15;
/// Chance, per thousand, that a successful Task execution sets another timer.
const AGAIN_PER_MILLE: u64 = 300;
/// How far ahead a Task execution sets its next timer, when it sets one.
const AGAIN_MS: [i64; 3] = [0, 1_000, 10_000];

#[derive(Default)]
struct Inner {
    calm: bool,
    storages: HashMap<String, MemoryStorage>,
    running: HashMap<String, u32>,
    in_request: bool,
    started: HashMap<(String, Work, u32), u64>,
    finished: Vec<Execution>,
    violations: Vec<Violation>,
    deadlines: BTreeMap<u64, i64>,
    next_id: u64,
    failure_scale: u32,
    /// Whether WorkerPool claims may take several events.
    claims_of_several: bool,
    /// Per pool instance, the events (by seq) that ran successfully in a row since the
    /// last one started at the head of the queue: with claims of several, their outcomes
    /// are recorded together later, so they are still stored, yet no longer ahead.
    claim_ran: HashMap<String, Vec<u64>>,
}

/// What the simulated jobs share with the simulator.
pub struct World {
    seed: u64,
    clock: VirtualClock,
    inner: Mutex<Inner>,
}

impl World {
    /// A world for `seed`, on `clock`; `failure_scale` multiplies the weight of failing
    /// behaviours (0: user code never fails).
    pub fn new(seed: u64, clock: VirtualClock, failure_scale: u32) -> Arc<Self> {
        Arc::new(World {
            seed,
            clock,
            inner: Mutex::new(Inner {
                failure_scale,
                ..Inner::default()
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on every execution succeeds at once (the final drain).
    pub fn set_calm(&self, calm: bool) {
        self.lock().calm = calm;
    }

    /// Lets the checks made when user code starts read `instance`'s durable storage.
    pub fn register(&self, instance: &str, storage: MemoryStorage) {
        self.lock().storages.insert(instance.to_string(), storage);
    }

    /// Says whether WorkerPool claims may take several events (see the queue order check).
    pub fn set_claims_of_several(&self, several: bool) {
        self.lock().claims_of_several = several;
    }

    /// Says whether the future polled now is a request (user code must not run there).
    pub fn set_in_request(&self, in_request: bool) {
        self.lock().in_request = in_request;
    }

    /// Executions that ended since the last call.
    pub fn drain_finished(&self) -> Vec<Execution> {
        std::mem::take(&mut self.lock().finished)
    }

    /// Invariants broken inside user code since the last call.
    pub fn take_violations(&self) -> Vec<Violation> {
        std::mem::take(&mut self.lock().violations)
    }

    /// The earliest time a slow execution waits for, if one waits.
    pub fn next_deadline(&self) -> Option<i64> {
        self.lock().deadlines.values().min().copied()
    }

    /// Whether any user code is running now.
    pub fn anything_running(&self) -> bool {
        self.lock().running.values().any(|n| *n > 0)
    }

    /// Reports a broken invariant seen from inside user code.
    pub fn report(&self, violation: Violation) {
        self.lock().violations.push(violation);
    }

    /// Starts an execution: checks it may run, and draws how it behaves.
    pub fn begin(self: &Arc<Self>, instance: &InstanceId, work: Work, attempt: u32) -> Running {
        let id = instance.to_string();
        let now = self.clock.now();
        let mut inner = self.lock();
        if inner.in_request {
            let v = Violation::new(
                class::USER_CODE_IN_REQUEST,
                format!("{id}: {work:?} ran inside a request"),
            );
            inner.violations.push(v);
        }
        let running = inner.running.entry(id.clone()).or_insert(0);
        *running += 1;
        if *running > 1 {
            let v = Violation::new(
                class::DOUBLE_EXECUTION,
                format!("{id}: {work:?} started while another execution runs"),
            );
            inner.violations.push(v);
        }
        if let Some(storage) = inner.storages.get(&id) {
            let durable = layout::decode_all(&storage.durable_snapshot());
            let live = layout::decode_all(&storage.snapshot());
            let ran = match (inner.claims_of_several, &work) {
                (true, Work::Event { seq, .. }) => {
                    let ran = inner.claim_ran.entry(id.clone()).or_default();
                    if layout::is_queue_head(&live, *seq) {
                        ran.clear();
                    }
                    ran.clone()
                }
                _ => Vec::new(),
            };
            let checks = layout::check_work_pending(&durable, &work, attempt)
                .and_then(|()| layout::check_queue_order(&live, &work, &ran));
            if let Err(v) = checks {
                inner
                    .violations
                    .push(Violation::new(v.class, format!("{id}: {}", v.detail)));
            }
        }
        let nth = inner
            .started
            .entry((id.clone(), work.clone(), attempt))
            .or_insert(0);
        *nth += 1;
        let roll = mix(
            self.seed,
            &[u64::from(attempt), *nth],
            &format!("{id}/{work:?}"),
        );
        let behaviour = if inner.calm {
            CALM
        } else {
            pick(roll, inner.failure_scale)
        };
        let terminate = !inner.calm && (roll >> 40) % 1000 < TERMINATE_PER_MILLE;
        // Never while draining, so that every task ends idle and is purged.
        let again = (!inner.calm && (roll >> 20) % 1000 < AGAIN_PER_MILLE)
            .then(|| AGAIN_MS[((roll >> 52) % 3) as usize]);
        inner.next_id += 1;
        let exec = inner.next_id;
        Running {
            world: self.clone(),
            exec,
            log: Some(Execution {
                instance: id,
                work,
                attempt,
                started_at: now,
                outcome: Outcome::Abandoned,
                terminated: false,
            }),
            behaviour,
            terminate,
            again,
            polls: 0,
        }
    }

    /// Starts a hook (`on_error`, `on_dead_letter`, `on_empty`): it counts as user code of
    /// the instance while it runs.
    pub fn hook(self: &Arc<Self>, instance: &InstanceId, name: &str) -> HookGuard {
        let id = instance.to_string();
        let mut inner = self.lock();
        if inner.in_request {
            let v = Violation::new(
                class::USER_CODE_IN_REQUEST,
                format!("{id}: {name} ran inside a request"),
            );
            inner.violations.push(v);
        }
        let running = inner.running.entry(id.clone()).or_insert(0);
        *running += 1;
        if *running > 1 {
            let v = Violation::new(
                class::DOUBLE_EXECUTION,
                format!("{id}: {name} started while another execution runs"),
            );
            inner.violations.push(v);
        }
        HookGuard {
            world: self.clone(),
            instance: id,
        }
    }

    fn end(&self, instance: &str, exec: u64, log: Option<Execution>) {
        let mut inner = self.lock();
        inner.deadlines.remove(&exec);
        if let Some(n) = inner.running.get_mut(instance) {
            *n = n.saturating_sub(1);
        }
        if let Some(log) = log {
            if let Work::Event { seq, .. } = &log.work {
                let ran = inner.claim_ran.entry(log.instance.clone()).or_default();
                match log.outcome {
                    Outcome::Succeeded => ran.push(*seq),
                    _ => ran.clear(),
                }
            }
            inner.finished.push(log);
        }
    }
}

fn pick(roll: u64, failure_scale: u32) -> Behaviour {
    let weight = |b: &Behaviour| match b.health {
        Health::Healthy => u64::from(b.weight),
        Health::Faulty => u64::from(b.weight * failure_scale),
    };
    let total: u64 = BEHAVIOURS.iter().map(weight).sum();
    let mut r = roll % total.max(1);
    for b in BEHAVIOURS {
        if r < weight(b) {
            return *b;
        }
        r -= weight(b);
    }
    CALM
}

/// One execution in progress. Dropping it before [`finish`](Self::finish) logs the
/// execution as abandoned.
pub struct Running {
    world: Arc<World>,
    exec: u64,
    log: Option<Execution>,
    behaviour: Behaviour,
    terminate: bool,
    again: Option<i64>,
    polls: u32,
}

impl Running {
    /// Waits as the behaviour says, then returns what it does.
    pub async fn perform(&mut self) -> Result<(), String> {
        let started = self.log.as_ref().map_or(0, |l| l.started_at);
        match self.behaviour.delay {
            Delay::None => {}
            Delay::Polls(n) => {
                self.polls = n;
                Wait {
                    running: self,
                    until: None,
                }
                .await;
            }
            Delay::Millis(ms) => {
                Wait {
                    running: self,
                    until: Some(started + ms),
                }
                .await
            }
            Delay::Forever => {
                Wait {
                    running: self,
                    until: Some(i64::MAX),
                }
                .await
            }
        }
        match std::panic::catch_unwind(self.behaviour.act) {
            Ok(result) => result,
            Err(panic) => {
                // Logged as such, then passed on for the engine to catch.
                if let Some(log) = self.log.as_mut() {
                    log.outcome = Outcome::Panicked;
                }
                std::panic::resume_unwind(panic)
            }
        }
    }

    /// Whether a successful Continuous run should stop its instance.
    pub fn terminates(&self) -> bool {
        self.terminate
    }

    /// How far ahead a successful Task execution sets its next timer, if it sets one.
    pub fn next_timer(&self) -> Option<i64> {
        self.again
    }

    /// Logs how the execution ended.
    pub fn finish(mut self, result: &Result<(), String>, terminated: bool) {
        if let Some(log) = self.log.as_mut() {
            log.outcome = match result {
                Ok(()) => Outcome::Succeeded,
                Err(_) => Outcome::Failed,
            };
            log.terminated = terminated;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let instance = self
            .log
            .as_ref()
            .map(|l| l.instance.clone())
            .unwrap_or_default();
        self.world.end(&instance, self.exec, self.log.take());
    }
}

/// Pending until enough polls or virtual time have passed.
struct Wait<'a> {
    running: &'a mut Running,
    until: Option<i64>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.running.polls > 0 {
            self.running.polls -= 1;
            return Poll::Pending;
        }
        let Some(until) = self.until else {
            return Poll::Ready(());
        };
        let world = self.running.world.clone();
        if world.clock.now() >= until {
            return Poll::Ready(());
        }
        // No time ever ends a wait without end: it is no deadline for the drain to move to.
        if until != i64::MAX {
            let exec = self.running.exec;
            world.lock().deadlines.insert(exec, until);
        }
        Poll::Pending
    }
}

/// A hook in progress.
pub struct HookGuard {
    world: Arc<World>,
    instance: String,
}

impl Drop for HookGuard {
    fn drop(&mut self) {
        self.world.end(&self.instance, 0, None);
    }
}
