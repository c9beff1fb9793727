//! A shard: one thread, one single-threaded executor, and the live instances whose ids
//! hash to it. Like a Durable Object's own thread, it runs an instance's requests and
//! alarms concurrently while the core engine serialises its storage transitions.

mod alarm_driver;
pub(crate) mod alarm_queue;
mod cache;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use durable_jobs::adapters::UserCodeRunner;
use durable_jobs::services::tracker::EventTracker;
use durable_jobs::wire::{Request, Response};
use durable_jobs::{JobError, Registry};
use tokio::sync::{mpsc, oneshot, Notify};

use self::alarm_driver::AlarmDriver;
use self::cache::InstanceCache;
use crate::clock::Clock;
use crate::store::StoreHandle;
use durable_jobs::adapters::Clock as _;

/// How often a shard tops up its alarm window and evicts idle instances.
const MAINTENANCE_EVERY: Duration = Duration::from_millis(500);

/// How often shutdown looks whether running work has finished.
const DRAIN_POLL: Duration = Duration::from_millis(2);

/// What the runtime asks of a shard.
pub(crate) enum ShardMsg {
    /// A request for one of the shard's instances.
    Request {
        /// `request.instance` as text, formatted once by the transport (it routes by it).
        id: Arc<str>,
        /// What to do.
        request: Request,
        /// Gets the instance's answer.
        reply: oneshot::Sender<Result<Response, JobError>>,
    },
    /// The earliest alarm of the shard, looking at least up to `up_to`.
    NextAlarm {
        /// The window is extended past this time first, so that an alarm due by then
        /// cannot hide in the index.
        up_to: i64,
        /// Gets the earliest alarm, if any.
        reply: oneshot::Sender<Result<Option<i64>, JobError>>,
    },
    /// Answers once nothing runs and no alarm is due; `true` if that was already so.
    WhenIdle {
        /// Gets the answer once the shard is idle.
        reply: oneshot::Sender<bool>,
    },
    /// What the shard holds now.
    Stats {
        /// Gets the counts.
        reply: oneshot::Sender<ShardStats>,
    },
    /// Stop taking work, let running work finish (up to the grace period), then exit.
    Shutdown {
        /// Answered once the shard has stopped.
        reply: oneshot::Sender<()>,
    },
}

/// What a shard holds, for monitoring and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Instances held in memory.
    pub live_instances: usize,
    /// Rows of those instances held in memory.
    pub cached_rows: usize,
    /// Bytes of those rows, with an estimate of their bookkeeping.
    pub cached_bytes: usize,
    /// Alarms in the in-memory window.
    pub alarms_in_window: usize,
    /// Requests and alarms running now.
    pub in_flight: usize,
}

/// What a shard is started with.
#[derive(Clone)]
pub(crate) struct ShardConfig {
    /// This shard's number, from 0; it owns the instances [`shard_of`] maps to it.
    pub index: usize,
    /// How many shards the runtime runs.
    pub count: usize,
    /// The job kinds the instances run.
    pub registry: Registry,
    /// Where engines report lifecycle events.
    pub tracker: Arc<dyn EventTracker>,
    /// The runtime's clock, system or virtual.
    pub clock: Clock,
    /// The SQLite store, shared by all shards.
    pub store: StoreHandle,
    /// How far ahead of the clock the in-memory alarm window reaches.
    pub window: Duration,
    /// How long an unused instance stays in memory.
    pub evict_after: Duration,
    /// Bytes of cached rows the shard holds at most before evicting unused instances early.
    pub cache_budget: usize,
    /// How long shutdown waits for running work.
    pub shutdown_grace: Duration,
    /// Where instances run user code; `None` runs it on the shard.
    pub runner: Option<Arc<dyn UserCodeRunner>>,
    /// Whether engines record each attempt before its user code runs.
    pub attempts_recorded_at_start: bool,
    /// How many queued events one WorkerPool claim takes.
    pub claim_size: usize,
}

/// The shard an instance id belongs to (FNV-1a).
pub(crate) fn shard_of(id: &str, count: usize) -> usize {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (h % count.max(1) as u64) as usize
}

/// One shard's state, owned by its thread.
struct Shard {
    /// This shard's number, for logs.
    index: usize,
    /// The runtime's clock; a virtual one wakes the loop when moved.
    clock: Clock,
    /// How long shutdown waits for running work.
    shutdown_grace: Duration,
    /// The live instances.
    cache: InstanceCache,
    /// The alarm window and the firing of due alarms.
    alarms: AlarmDriver,
    /// Wakes the loop when work ends, an alarm is set or the window is refilled, since
    /// any of these may fire an alarm or make the shard idle.
    wake: Rc<Notify>,
    /// Requests and alarms running now; shutdown and idleness wait for it to reach 0.
    in_flight: Cell<usize>,
    /// Callers of `WhenIdle` waiting for the shard to become idle.
    idle_waiters: RefCell<Vec<oneshot::Sender<bool>>>,
    /// Set once shutdown began: requests are refused and alarms no longer fire.
    stopping: Cell<bool>,
}

/// Starts a shard on its own thread.
pub(crate) fn spawn(
    cfg: ShardConfig,
    rx: mpsc::Receiver<ShardMsg>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("durable-jobs-shard-{}", cfg.index))
        .spawn(move || run_on_this_thread(cfg, rx))
}

/// Runs a shard to its end on the calling thread, on an executor of its own.
fn run_on_this_thread(cfg: ShardConfig, rx: mpsc::Receiver<ShardMsg>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            tracing::error!(%error, "cannot start a shard executor");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, Shard::new(cfg).run(rx));
}

impl Shard {
    fn new(cfg: ShardConfig) -> Rc<Self> {
        let wake = Rc::new(Notify::new());
        let alarms = AlarmDriver::new(&cfg, wake.clone());
        Rc::new(Shard {
            index: cfg.index,
            clock: cfg.clock.clone(),
            shutdown_grace: cfg.shutdown_grace,
            cache: InstanceCache::new(&cfg, alarms.queue(), wake.clone()),
            alarms,
            wake,
            in_flight: Cell::new(0),
            idle_waiters: RefCell::default(),
            stopping: Cell::new(false),
        })
    }

    async fn run(self: Rc<Self>, mut rx: mpsc::Receiver<ShardMsg>) {
        self.fill_window().await;
        let shutdown = self.serve(&mut rx).await;
        self.stopping.set(true);
        self.drain().await;
        if let Some(reply) = shutdown {
            let _ = reply.send(());
        }
    }

    /// Reads the first window from the index, so that alarms overdue at start fire first.
    async fn fill_window(&self) {
        if let Err(error) = self.alarms.fill_from(self.clock.now()).await {
            tracing::error!(%error, shard = self.index, "cannot read the alarm index");
        }
    }

    /// Serves messages and fires alarms until shutdown is asked for (its reply is
    /// returned) or the runtime is gone.
    async fn serve(
        self: &Rc<Self>,
        rx: &mut mpsc::Receiver<ShardMsg>,
    ) -> Option<oneshot::Sender<()>> {
        let mut clock_rx = self.clock.subscribe();
        let mut maintenance = tokio::time::interval(MAINTENANCE_EVERY);
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.fire_due();
            self.check_idle();
            let sleep_for = self.alarms.time_to_next();
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(ShardMsg::Shutdown { reply }) => return Some(reply),
                    Some(msg) => self.handle(msg),
                    None => return None,
                },
                _ = sleep_opt(sleep_for) => {}
                _ = changed(&mut clock_rx) => {}
                _ = self.wake.notified() => {}
                _ = maintenance.tick() => self.maintain(),
            }
        }
    }

    /// Waits for running work up to the grace period. Executions still running then are
    /// abandoned: they run again after the next start.
    async fn drain(&self) {
        let deadline = Instant::now() + self.shutdown_grace;
        while self.in_flight.get() > 0 && Instant::now() < deadline {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        if self.in_flight.get() > 0 {
            tracing::warn!(
                shard = self.index,
                running = self.in_flight.get(),
                "shutting down with work still running; it will run again after restart"
            );
        }
    }

    fn handle(self: &Rc<Self>, msg: ShardMsg) {
        match msg {
            ShardMsg::Request { id, request, reply } => self.request(id, request, reply),
            ShardMsg::NextAlarm { up_to, reply } => self.next_alarm(up_to, reply),
            ShardMsg::WhenIdle { reply } => self.when_idle(reply),
            ShardMsg::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            // Taken by the loop itself, which stops serving on it.
            ShardMsg::Shutdown { .. } => {}
        }
    }

    fn request(
        self: &Rc<Self>,
        id: Arc<str>,
        request: Request,
        reply: oneshot::Sender<Result<Response, JobError>>,
    ) {
        if self.stopping.get() {
            let _ = reply.send(Err(JobError::ShutDown));
            return;
        }
        let shard = self.clone();
        self.track(async move {
            let _ = reply.send(shard.serve_request(&id, request).await);
        });
    }

    /// Runs a request on its instance's engine.
    async fn serve_request(&self, id: &Arc<str>, request: Request) -> Result<Response, JobError> {
        let engine = self.cache.engine(id).await?;
        let result = engine.handle(request).await;
        if engine.backend().is_broken() {
            // The window may hold the alarm of the lost writes, or none, while the file
            // holds an earlier one that lies behind the horizon, where no refill reads.
            self.alarms.recheck(id);
        }
        result
    }

    fn next_alarm(
        self: &Rc<Self>,
        up_to: i64,
        reply: oneshot::Sender<Result<Option<i64>, JobError>>,
    ) {
        let shard = self.clone();
        self.track(async move {
            let _ = reply.send(shard.alarms.next_alarm(up_to).await);
        });
    }

    fn when_idle(&self, reply: oneshot::Sender<bool>) {
        if self.is_idle() {
            let _ = reply.send(true);
        } else {
            self.idle_waiters.borrow_mut().push(reply);
        }
    }

    fn stats(&self) -> ShardStats {
        let (cached_rows, cached_bytes) = self.cache.cached();
        ShardStats {
            live_instances: self.cache.len(),
            cached_rows,
            cached_bytes,
            alarms_in_window: self.alarms.len(),
            in_flight: self.in_flight.get(),
        }
    }

    /// Runs `work` as a task counted in `in_flight`.
    fn track(self: &Rc<Self>, work: impl std::future::Future<Output = ()> + 'static) {
        self.in_flight.set(self.in_flight.get() + 1);
        let shard = self.clone();
        tokio::task::spawn_local(async move {
            work.await;
            shard.in_flight.set(shard.in_flight.get() - 1);
            shard.wake.notify_one();
        });
    }

    fn is_idle(&self) -> bool {
        self.in_flight.get() == 0 && self.alarms.is_quiet()
    }

    /// Answers the `WhenIdle` callers once the shard has become idle.
    fn check_idle(&self) {
        if !self.idle_waiters.borrow().is_empty() && self.is_idle() {
            for waiter in self.idle_waiters.borrow_mut().drain(..) {
                let _ = waiter.send(false);
            }
        }
    }

    /// Starts every alarm due now, each as its own task.
    fn fire_due(self: &Rc<Self>) {
        if self.stopping.get() {
            return;
        }
        for (id, at) in self.alarms.take_due() {
            let shard = self.clone();
            self.track(async move { shard.alarms.fire(&shard.cache, id, at).await });
        }
    }

    /// Keeps the window ahead of the clock and drops instances idle for a while.
    fn maintain(self: &Rc<Self>) {
        let now = self.clock.now();
        if self.alarms.runs_low(now) {
            let shard = self.clone();
            // Not counted in `in_flight`: shutdown need not wait for a refill, and idleness
            // already waits for it through the window's refilling mark.
            tokio::task::spawn_local(async move {
                if let Err(error) = shard.alarms.fill_from(now).await {
                    tracing::error!(%error, "alarm window refill failed");
                }
            });
        }
        self.cache.evict_idle();
    }
}

/// Sleeps for `d`, or forever without one.
async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Resolves each time a virtual clock moves; never with the system clock, which has no
/// sender.
async fn changed(rx: &mut Option<tokio::sync::watch::Receiver<i64>>) {
    match rx {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}
