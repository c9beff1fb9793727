//! A shard: one thread, one single-threaded executor, and the engines of the instances
//! whose ids hash to it. Requests and alarm passes of an instance run as tasks there; the
//! engine's lock orders the instance's steps within the process, the advisory lock across
//! processes.
//!
//! User code runs on the shard too (the engines get no separate runner): an `execute` that
//! blocks its thread holds up the shard's other instances, and job timeouts are not
//! enforced. Lease renewal runs elsewhere, so a long execution keeps its lease.

mod cache;
mod pass;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use durable_jobs::services::tracker::EventTracker;
use durable_jobs::wire::{Request, Response};
use durable_jobs::{JobError, Registry};
use tokio::sync::{mpsc, oneshot};

use self::cache::EngineCache;
use crate::activity::Running;
use crate::alarms::leases::Claim;
use crate::shared::Shared;

/// How often a shard drops idle engines.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(1);

/// How long an unused engine stays.
const EVICT_AFTER: Duration = Duration::from_secs(30);

/// How often shutdown looks whether running work has finished.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// What the runtime asks of a shard.
pub(crate) enum ShardMsg {
    /// A request for one of the shard's instances.
    Request {
        /// `request.instance` as text (the transport routes by it).
        id: Arc<str>,
        /// What to do.
        request: Request,
        /// Gets the answer.
        reply: oneshot::Sender<Result<Response, JobError>>,
    },
    /// An alarm this process took: run its pass.
    Alarm {
        /// The instance.
        id: Arc<str>,
        /// The lease it was taken under.
        claim: Claim,
        /// Counts the pass as running until it ends.
        running: Running,
    },
    /// Stop taking work, let running work finish (up to the grace period), then exit.
    Shutdown {
        /// Answered once the shard has stopped.
        reply: oneshot::Sender<()>,
    },
}

/// The shard an instance id belongs to (FNV-1a).
pub(crate) fn shard_of(id: &str, count: usize) -> usize {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (h % count.max(1) as u64) as usize
}

/// What a shard is started with.
pub(crate) struct ShardConfig {
    /// This shard's number, for its thread's name and logs.
    pub index: usize,
    /// The job kinds the instances run.
    pub registry: Registry,
    /// Where engines report lifecycle events.
    pub tracker: Arc<dyn EventTracker>,
    /// The runtime's shared state.
    pub shared: Arc<Shared>,
    /// How long shutdown waits for running work.
    pub shutdown_grace: Duration,
}

/// One shard's state, owned by its thread.
pub(crate) struct Shard {
    index: usize,
    shared: Arc<Shared>,
    shutdown_grace: Duration,
    cache: EngineCache,
    /// Consecutive failed passes of each instance, which set the next retry's delay.
    failures: RefCell<HashMap<Arc<str>, u32>>,
    /// Requests and passes running on this shard.
    in_flight: Cell<usize>,
    /// Set once shutdown began: requests are refused and passes no longer start.
    stopping: Cell<bool>,
}

/// Starts a shard on its own thread.
pub(crate) fn spawn(
    cfg: ShardConfig,
    rx: mpsc::Receiver<ShardMsg>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("durable-jobs-pg-shard-{}", cfg.index))
        .spawn(move || run_on_this_thread(cfg, rx))
}

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
        Rc::new(Shard {
            index: cfg.index,
            cache: EngineCache::new(cfg.registry, cfg.tracker, cfg.shared.clone(), EVICT_AFTER),
            shared: cfg.shared,
            shutdown_grace: cfg.shutdown_grace,
            failures: RefCell::default(),
            in_flight: Cell::new(0),
            stopping: Cell::new(false),
        })
    }

    async fn run(self: Rc<Self>, mut rx: mpsc::Receiver<ShardMsg>) {
        let shutdown = self.serve(&mut rx).await;
        self.stopping.set(true);
        self.drain().await;
        if let Some(reply) = shutdown {
            let _ = reply.send(());
        }
    }

    /// Serves messages until shutdown is asked for (its reply is returned) or the runtime
    /// is gone.
    async fn serve(
        self: &Rc<Self>,
        rx: &mut mpsc::Receiver<ShardMsg>,
    ) -> Option<oneshot::Sender<()>> {
        let mut maintenance = tokio::time::interval(MAINTENANCE_EVERY);
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(ShardMsg::Shutdown { reply }) => return Some(reply),
                    Some(msg) => self.handle(msg),
                    None => return None,
                },
                _ = maintenance.tick() => self.cache.evict_idle(),
            }
        }
    }

    /// Waits for running work up to the grace period. Passes still running then are
    /// abandoned when the shard's executor drops them; their leases are released by the
    /// runtime, and their work runs again in another process or after a restart.
    async fn drain(&self) {
        let deadline = Instant::now() + self.shutdown_grace;
        while self.in_flight.get() > 0 && Instant::now() < deadline {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        if self.in_flight.get() > 0 {
            tracing::warn!(
                shard = self.index,
                running = self.in_flight.get(),
                "shutting down with work still running; it will run again"
            );
        }
    }

    fn handle(self: &Rc<Self>, msg: ShardMsg) {
        match msg {
            ShardMsg::Request { id, request, reply } => self.request(id, request, reply),
            ShardMsg::Alarm { id, claim, running } => self.alarm(id, claim, running),
            // Taken by the loop itself.
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
        let running = self.shared.activity.request();
        let shard = self.clone();
        self.track(async move {
            let engine = shard.cache.engine(&id);
            let _ = reply.send(engine.handle(request).await);
            drop(running);
        });
    }

    fn alarm(self: &Rc<Self>, id: Arc<str>, claim: Claim, running: Running) {
        let shard = self.clone();
        self.track(async move {
            shard.run_pass(id, claim).await;
            drop(running);
        });
    }

    /// Runs `work` as a task counted in `in_flight`.
    fn track(self: &Rc<Self>, work: impl std::future::Future<Output = ()> + 'static) {
        self.in_flight.set(self.in_flight.get() + 1);
        let shard = self.clone();
        tokio::task::spawn_local(async move {
            work.await;
            shard.in_flight.set(shard.in_flight.get() - 1);
        });
    }
}
