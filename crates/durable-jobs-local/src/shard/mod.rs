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

use durable_jobs::services::tracker::EventTracker;
use durable_jobs::wire::{Request, Response};
use durable_jobs::{JobError, Registry};
use tokio::sync::{mpsc, oneshot, Notify};

use self::alarm_driver::AlarmDriver;
use self::cache::InstanceCache;
use crate::clock::Clock;
use crate::store::StoreHandle;
use durable_jobs::adapters::Clock as _;

pub(crate) enum ShardMsg {
    Request {
        /// `request.instance` as text, formatted once by the transport (it routes by it).
        id: Arc<str>,
        request: Request,
        reply: oneshot::Sender<Result<Response, JobError>>,
    },
    /// The earliest alarm of the shard, looking at least up to `up_to`.
    NextAlarm {
        up_to: i64,
        reply: oneshot::Sender<Result<Option<i64>, JobError>>,
    },
    /// Answers once nothing runs and no alarm is due; `true` if that was already so.
    WhenIdle {
        reply: oneshot::Sender<bool>,
    },
    Stats {
        reply: oneshot::Sender<ShardStats>,
    },
    /// Stop taking work, let running work finish (up to the grace period), then exit.
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// What a shard holds, for monitoring and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Instances held in memory.
    pub live_instances: usize,
    /// Alarms in the in-memory window.
    pub alarms_in_window: usize,
    /// Requests and alarms running now.
    pub in_flight: usize,
}

#[derive(Clone)]
pub(crate) struct ShardConfig {
    pub index: usize,
    pub count: usize,
    pub registry: Registry,
    pub tracker: Arc<dyn EventTracker>,
    pub clock: Clock,
    pub store: StoreHandle,
    pub window: Duration,
    pub evict_after: Duration,
    pub shutdown_grace: Duration,
}

/// The shard an instance id belongs to (FNV-1a).
pub(crate) fn shard_of(id: &str, count: usize) -> usize {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (h % count.max(1) as u64) as usize
}

struct Shard {
    cfg: ShardConfig,
    cache: InstanceCache,
    alarms: AlarmDriver,
    wake: Rc<Notify>,
    in_flight: Cell<usize>,
    idle_waiters: RefCell<Vec<oneshot::Sender<bool>>>,
    stopping: Cell<bool>,
}

/// Starts a shard on its own thread.
pub(crate) fn spawn(
    cfg: ShardConfig,
    rx: mpsc::Receiver<ShardMsg>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("durable-jobs-shard-{}", cfg.index))
        .spawn(move || {
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
            let wake = Rc::new(Notify::new());
            let alarms = AlarmDriver::new(&cfg, wake.clone());
            let shard = Rc::new(Shard {
                cache: InstanceCache::new(&cfg, alarms.queue(), wake.clone()),
                cfg,
                alarms,
                wake,
                in_flight: Cell::new(0),
                idle_waiters: RefCell::default(),
                stopping: Cell::new(false),
            });
            local.block_on(&rt, shard.run(rx));
        })
}

impl Shard {
    async fn run(self: Rc<Self>, mut rx: mpsc::Receiver<ShardMsg>) {
        let now = self.cfg.clock.now();
        if let Err(error) = self.alarms.fill_from(now).await {
            tracing::error!(%error, shard = self.cfg.index, "cannot read the alarm index");
        }
        let mut clock_rx = self.cfg.clock.subscribe();
        let mut maintenance = tokio::time::interval(Duration::from_millis(500));
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown: Option<oneshot::Sender<()>> = None;
        loop {
            self.fire_due();
            self.check_idle();
            let sleep_for = self.alarms.time_to_next();
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(ShardMsg::Shutdown { reply }) => {
                        shutdown = Some(reply);
                        break;
                    }
                    Some(msg) => self.handle(msg),
                    None => break,
                },
                _ = sleep_opt(sleep_for) => {}
                _ = changed(&mut clock_rx) => {}
                _ = self.wake.notified() => {}
                _ = maintenance.tick() => self.maintain(),
            }
        }
        self.stopping.set(true);
        let deadline = Instant::now() + self.cfg.shutdown_grace;
        while self.in_flight.get() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if self.in_flight.get() > 0 {
            tracing::warn!(
                shard = self.cfg.index,
                running = self.in_flight.get(),
                "shutting down with work still running; it will run again after restart"
            );
        }
        if let Some(reply) = shutdown {
            let _ = reply.send(());
        }
    }

    fn handle(self: &Rc<Self>, msg: ShardMsg) {
        match msg {
            ShardMsg::Request { id, request, reply } => {
                if self.stopping.get() {
                    let _ = reply.send(Err(JobError::ShutDown));
                    return;
                }
                let shard = self.clone();
                self.track(async move {
                    let result = match shard.cache.engine(&id).await {
                        Ok(engine) => engine.handle(request).await,
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(result);
                });
            }
            ShardMsg::NextAlarm { up_to, reply } => {
                let shard = self.clone();
                self.track(async move {
                    let _ = reply.send(shard.alarms.next_alarm(up_to).await);
                });
            }
            ShardMsg::WhenIdle { reply } => {
                if self.is_idle() {
                    let _ = reply.send(true);
                } else {
                    self.idle_waiters.borrow_mut().push(reply);
                }
            }
            ShardMsg::Stats { reply } => {
                let _ = reply.send(ShardStats {
                    live_instances: self.cache.len(),
                    alarms_in_window: self.alarms.len(),
                    in_flight: self.in_flight.get(),
                });
            }
            ShardMsg::Shutdown { .. } => {}
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

    fn check_idle(&self) {
        if !self.idle_waiters.borrow().is_empty() && self.is_idle() {
            for waiter in self.idle_waiters.borrow_mut().drain(..) {
                let _ = waiter.send(false);
            }
        }
    }

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
        let now = self.cfg.clock.now();
        if self.alarms.runs_low(now) {
            let shard = self.clone();
            tokio::task::spawn_local(async move {
                if let Err(error) = shard.alarms.fill_from(now).await {
                    tracing::error!(%error, "alarm window refill failed");
                }
            });
        }
        self.cache.evict_idle();
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

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
