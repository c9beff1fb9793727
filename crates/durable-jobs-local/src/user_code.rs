//! The threads user code runs on, apart from the shards.
//!
//! Shards serve requests, claims, completions and alarms; if user code ran on them, one
//! blocking or CPU-heavy `execute` would stall every instance of its shard. Here each
//! execution runs on one of a few user-code threads (a current-thread tokio runtime each,
//! since user futures need not be `Send`). A thread whose heartbeat stops is blocked: new
//! executions go elsewhere, and when every thread is blocked the pool grows, up to a cap.
//! An execution already started on a blocked thread waits for it, as async code on any
//! executor would.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use durable_jobs::adapters::{UserCodeRunner, UserTask};
use futures::future::LocalBoxFuture;
use tokio::sync::mpsc;

/// How often a user-code thread proves it is not blocked.
const HEARTBEAT: Duration = Duration::from_millis(20);
/// A thread silent for this long is taken as blocked.
const BLOCKED_AFTER: Duration = Duration::from_millis(200);

/// The user-code threads of one runtime.
pub(crate) struct UserCodePool {
    /// The threads, in the order they started.
    threads: Mutex<Vec<UserThread>>,
    /// How many threads the pool may grow to when the ones it has are blocked.
    max_threads: usize,
    /// The time base of the heartbeats.
    epoch: Instant,
}

/// One user-code thread, as the pool sees it.
struct UserThread {
    /// Where its tasks are sent.
    tasks: mpsc::UnboundedSender<UserTask>,
    /// Its tasks started and not yet finished.
    running: Arc<AtomicUsize>,
    /// When it last proved it was not blocked (ms since the pool's epoch).
    heartbeat: Arc<AtomicU64>,
}

impl UserCodePool {
    /// A pool of `threads` threads that may grow to `max_threads` when they are all blocked.
    pub fn start(threads: usize, max_threads: usize) -> std::io::Result<Arc<Self>> {
        let pool = Arc::new(UserCodePool {
            threads: Mutex::new(Vec::new()),
            max_threads: max_threads.max(threads).max(1),
            epoch: Instant::now(),
        });
        for _ in 0..threads.max(1) {
            let thread = pool.start_thread()?;
            pool.lock().push(thread);
        }
        Ok(pool)
    }

    /// Stops taking tasks; each thread ends once its queue is closed, dropping what it
    /// still runs (those executions run again after the next start).
    pub fn close(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> MutexGuard<'_, Vec<UserThread>> {
        // The list is never left half-changed by a panic: pushes and clears are whole.
        self.threads.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn start_thread(&self) -> std::io::Result<UserThread> {
        let (tasks, queue) = mpsc::unbounded_channel();
        let running = Arc::new(AtomicUsize::new(0));
        let heartbeat = Arc::new(AtomicU64::new(self.now_ms()));
        let (count, beat, epoch) = (running.clone(), heartbeat.clone(), self.epoch);
        thread::Builder::new()
            .name("durable-jobs-user".into())
            .spawn(move || serve(queue, count, beat, epoch))?;
        Ok(UserThread {
            tasks,
            running,
            heartbeat,
        })
    }

    /// The least busy thread that is not blocked; a new one when all are blocked and the
    /// pool may grow; else the least busy of all.
    fn pick(&self, threads: &mut Vec<UserThread>) -> Option<usize> {
        let now = self.now_ms();
        let silent_ms = u64::try_from(BLOCKED_AFTER.as_millis()).unwrap_or(u64::MAX);
        let alive =
            |t: &UserThread| now.saturating_sub(t.heartbeat.load(Ordering::Relaxed)) < silent_ms;
        let least_busy = |only_alive: bool| {
            threads
                .iter()
                .enumerate()
                .filter(|(_, t)| !only_alive || alive(t))
                .min_by_key(|(_, t)| t.running.load(Ordering::Relaxed))
                .map(|(i, _)| i)
        };
        if let Some(i) = least_busy(true) {
            return Some(i);
        }
        if threads.len() < self.max_threads {
            match self.start_thread() {
                Ok(thread) => {
                    tracing::warn!(
                        threads = threads.len() + 1,
                        "every user-code thread is blocked; starting another"
                    );
                    threads.push(thread);
                    return Some(threads.len() - 1);
                }
                Err(error) => tracing::error!(%error, "cannot start a user-code thread"),
            }
        }
        least_busy(false)
    }
}

impl UserCodeRunner for UserCodePool {
    fn spawn(&self, task: UserTask) {
        let mut threads = self.lock();
        let Some(index) = self.pick(&mut threads) else {
            // Closed: dropping the task tells the engine the run was abandoned.
            return;
        };
        let thread = &threads[index];
        thread.running.fetch_add(1, Ordering::Relaxed);
        if let Err(refused) = thread.tasks.send(task) {
            thread.running.fetch_sub(1, Ordering::Relaxed);
            drop(refused);
        }
    }

    fn sleep(&self, duration: Duration) -> LocalBoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A user-code thread's life: run each task it is sent, and beat while not blocked.
fn serve(
    mut queue: mpsc::UnboundedReceiver<UserTask>,
    running: Arc<AtomicUsize>,
    heartbeat: Arc<AtomicU64>,
    epoch: Instant,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            // Its queue closes with it: the pool's sends fail, and each dropped task
            // reads to the engine as an abandoned run, tried again later.
            tracing::error!(%error, "cannot start a user-code thread's executor");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        tokio::task::spawn_local(beat(heartbeat, epoch));
        while let Some(task) = queue.recv().await {
            let running = running.clone();
            tokio::task::spawn_local(async move {
                task.start().await;
                running.fetch_sub(1, Ordering::Relaxed);
            });
        }
    });
}

async fn beat(heartbeat: Arc<AtomicU64>, epoch: Instant) {
    let mut ticks = tokio::time::interval(HEARTBEAT);
    loop {
        ticks.tick().await;
        let now = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        heartbeat.store(now, Ordering::Relaxed);
    }
}
