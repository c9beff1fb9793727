//! The threads user code runs on, apart from the shards.
//!
//! Shards serve requests, claims, completions and alarms; if user code ran on them, one
//! blocking or CPU-heavy `execute` would stall every instance of its shard. Here each
//! execution runs on one of a few user-code threads (a current-thread tokio runtime each,
//! since user futures need not be `Send`). The threads take executions from one shared
//! queue, so a blocked thread takes no new work; when work waits and every thread is
//! blocked, a watchdog starts another, up to a cap. An execution already started on a
//! thread that then blocks waits for it, as async code on any executor would.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use durable_jobs::adapters::{UserCodeRunner, UserTask};
use futures::future::LocalBoxFuture;

/// How often a user-code thread proves it is not blocked, and the watchdog looks.
const HEARTBEAT: Duration = Duration::from_millis(20);
/// A thread silent for this long is taken as blocked.
const BLOCKED_AFTER: Duration = Duration::from_millis(100);

/// The user-code threads of one runtime.
pub(crate) struct UserCodePool {
    /// Where executions wait for a free thread.
    tasks: async_channel::Sender<UserTask>,
    /// Threads take executions from here.
    queue: async_channel::Receiver<UserTask>,
    /// When each thread last proved it was not blocked (ms since `epoch`).
    heartbeats: Mutex<Vec<Arc<AtomicU64>>>,
    /// How many threads the pool may grow to when the ones it has are blocked.
    max_threads: usize,
    /// The time base of the heartbeats.
    epoch: Instant,
    /// Set when the runtime shuts down: the watchdog stops.
    closed: AtomicBool,
}

impl UserCodePool {
    /// A pool of `threads` threads that may grow to `max_threads` when they are all blocked.
    pub fn start(threads: usize, max_threads: usize) -> std::io::Result<Arc<Self>> {
        let (tasks, queue) = async_channel::unbounded();
        let pool = Arc::new(UserCodePool {
            tasks,
            queue,
            heartbeats: Mutex::new(Vec::new()),
            max_threads: max_threads.max(threads).max(1),
            epoch: Instant::now(),
            closed: AtomicBool::new(false),
        });
        for _ in 0..threads.max(1) {
            pool.start_thread()?;
        }
        let watched = Arc::downgrade(&pool);
        thread::Builder::new()
            .name("durable-jobs-user-watchdog".into())
            .spawn(move || watch(watched))?;
        Ok(pool)
    }

    /// Stops taking executions; each thread ends once the queue is closed, dropping what
    /// it still runs (those executions run again after the next start).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.tasks.close();
    }

    fn heartbeats(&self) -> MutexGuard<'_, Vec<Arc<AtomicU64>>> {
        // The list is only ever pushed to: a panic cannot leave it half-changed.
        self.heartbeats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start_thread(&self) -> std::io::Result<()> {
        let heartbeat = Arc::new(AtomicU64::new(since(self.epoch)));
        let (queue, beat, epoch) = (self.queue.clone(), heartbeat.clone(), self.epoch);
        thread::Builder::new()
            .name("durable-jobs-user".into())
            .spawn(move || serve(queue, beat, epoch))?;
        self.heartbeats().push(heartbeat);
        Ok(())
    }

    /// Starts one more thread if executions wait while every thread is blocked.
    fn grow_if_stuck(&self) {
        if self.queue.is_empty() {
            return;
        }
        let now = since(self.epoch);
        let silent_ms = u64::try_from(BLOCKED_AFTER.as_millis()).unwrap_or(u64::MAX);
        let (all_blocked, count) = {
            let beats = self.heartbeats();
            let blocked =
                |b: &Arc<AtomicU64>| now.saturating_sub(b.load(Ordering::Relaxed)) >= silent_ms;
            (beats.iter().all(blocked), beats.len())
        };
        if !all_blocked || count >= self.max_threads {
            return;
        }
        match self.start_thread() {
            Ok(()) => tracing::warn!(
                threads = count + 1,
                "every user-code thread is blocked while executions wait; started another"
            ),
            Err(error) => tracing::error!(%error, "cannot start a user-code thread"),
        }
    }
}

impl UserCodeRunner for UserCodePool {
    fn spawn(&self, task: UserTask) {
        // Refused only once closed: dropping the task tells the engine the run was
        // abandoned, and it runs again after the next start.
        let _ = self.tasks.try_send(task);
    }

    fn sleep(&self, duration: Duration) -> LocalBoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

fn since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Looks at the pool every heartbeat until it is closed or gone.
fn watch(pool: std::sync::Weak<UserCodePool>) {
    loop {
        thread::sleep(HEARTBEAT);
        let Some(pool) = pool.upgrade() else { return };
        if pool.closed.load(Ordering::Relaxed) {
            return;
        }
        pool.grow_if_stuck();
    }
}

/// A user-code thread's life: take executions while not blocked, and beat.
fn serve(queue: async_channel::Receiver<UserTask>, heartbeat: Arc<AtomicU64>, epoch: Instant) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            // Its heartbeat stops, so the watchdog starts another thread if work waits.
            tracing::error!(%error, "cannot start a user-code thread's executor");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        tokio::task::spawn_local(beat(heartbeat, epoch));
        while let Ok(task) = queue.recv().await {
            tokio::task::spawn_local(task.start());
        }
    });
}

async fn beat(heartbeat: Arc<AtomicU64>, epoch: Instant) {
    let mut ticks = tokio::time::interval(HEARTBEAT);
    loop {
        ticks.tick().await;
        heartbeat.store(since(epoch), Ordering::Relaxed);
    }
}
