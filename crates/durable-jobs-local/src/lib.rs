//! The embedded durable-jobs runtime: one process, one SQLite file, no other service.
//!
//! Instances live on a few single-threaded *shards* (one thread each); while an instance
//! is live, a bounded cache holds its hot rows (metadata, its kind's record, the heads of
//! its queues) and every commit is written through to SQLite, where commits from many
//! instances share one transaction; a backlog stays on disk. Alarms sit in a persistent
//! index; each shard keeps only a short window of upcoming alarms in memory, so idle
//! instances cost nothing but their rows on disk.
//!
//! If a write fails (a full disk, or the cap set with [`Builder::max_file_size`]), the
//! calls whose writes shared the failed transaction get [`JobError::Storage`] and nothing
//! of them is written; the instances involved reload from the file and the runtime goes
//! on, with no restart and never two executions of one instance at once.
//!
//! A stopped runtime's file can be looked into with [`FileInspector`], which only reads it.
//!
//! ```no_run
//! # use durable_jobs::Registry;
//! # async fn run(registry: Registry) -> Result<(), Box<dyn std::error::Error>> {
//! use durable_jobs_local::LocalRuntime;
//!
//! let runtime = LocalRuntime::open("jobs.db", registry)?;
//! let client = runtime.client();
//! // client.debounce::<WebhookBatcher>().add("contact-456", &hook).await?;
//! runtime.shutdown().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod clock;
mod commit_tracker;
mod error;
mod file;
mod instance;
mod shard;
mod store;
mod tracking;
mod transport;
mod user_code;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use durable_jobs::inspect::{self, InstancePage, InstanceQuery, StatusCounts};
use durable_jobs::services::tracker::{EventTracker, NoopTracker};
use durable_jobs::{JobError, JobKind, JobsClient, Registry};
use tokio::sync::{mpsc, oneshot};

pub use durable_jobs::services::tracker::HttpTrackerConfig;
pub use error::OpenError;
pub use file::{FileInspector, StoredInstance};
pub use shard::ShardStats;
pub use store::{Durability, Location};
#[cfg(feature = "http-tracker")]
pub use tracking::HttpPost;
pub use transport::LocalTransport;

use clock::Clock;
use durable_jobs::adapters::{Clock as _, UserCodeRunner};
use shard::{ShardConfig, ShardMsg};
use store::{StoreHandle, WeakStoreHandle};
use tracking::Flusher;
use user_code::UserCodePool;

/// User-code threads the pool may grow to when all it has are blocked.
const MAX_USER_CODE_THREADS: usize = 64;

/// Requests queued per shard at most; callers wait beyond (backpressure).
const SHARD_QUEUE: usize = 4096;

/// How many queued events of a WorkerPool instance one claim takes unless set: enough that
/// the claim's two steps cost little per event, few enough that a crash runs little again.
pub const DEFAULT_CLAIM_SIZE: usize = 32;

/// Configures and opens a [`LocalRuntime`].
pub struct Builder {
    registry: Registry,
    location: Location,
    durability: Durability,
    shards: usize,
    clock: Clock,
    tracker: Arc<dyn EventTracker>,
    flush_every: Option<Duration>,
    window: Duration,
    evict_after: Duration,
    cache_budget: usize,
    shutdown_grace: Duration,
    user_code_threads: usize,
    max_file_size: Option<u64>,
    attempts_recorded_at_start: bool,
    claim_size: usize,
}

impl Builder {
    /// The database file (default `durable-jobs.db` in the working directory).
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.location = Location::File(path.into());
        self
    }

    /// A private in-memory database: nothing survives the process (for tests).
    pub fn in_memory(mut self) -> Self {
        self.location = Location::Memory;
        self
    }

    /// How commits are synced (default [`Durability::Normal`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Shard threads (default: the number of CPUs).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards.max(1);
        self
    }

    /// Runs on a virtual clock starting at `start` (ms since the epoch), moved only by
    /// [`LocalRuntime::advance`]. For tests.
    pub fn virtual_clock(mut self, start: i64) -> Self {
        self.clock = Clock::virtual_at(start);
        self
    }

    /// Sends lifecycle events to `tracker`.
    pub fn tracker(mut self, tracker: Arc<dyn EventTracker>) -> Self {
        self.tracker = tracker;
        self
    }

    /// Flushes the tracker from a background thread every `every` (for trackers that
    /// buffer, such as the core's `HttpBatchTracker` over your own `HttpSink`).
    pub fn flush_tracker_every(mut self, every: Duration) -> Self {
        self.flush_every = Some(every.max(Duration::from_millis(10)));
        self
    }

    /// Posts lifecycle events in batches to `endpoint` (a JSON array per POST, each event
    /// enriched with `config`'s environment and service key), flushed every 250 ms. A slow
    /// or failing collector never delays or fails a request; events beyond the buffer bound
    /// are dropped and counted. At shutdown, refused batches are retried within the
    /// [shutdown grace](Self::shutdown_grace).
    #[cfg(feature = "http-tracker")]
    pub fn http_tracking(self, endpoint: impl Into<String>, config: HttpTrackerConfig) -> Self {
        use durable_jobs::services::tracker::HttpBatchTracker;
        let sink = HttpPost::new(endpoint, Duration::from_secs(10));
        self.tracker(Arc::new(HttpBatchTracker::new(config, sink)))
            .flush_tracker_every(Duration::from_millis(250))
    }

    /// How far ahead alarms are held in memory (default 10 s).
    pub fn alarm_window(mut self, window: Duration) -> Self {
        self.window = window.max(Duration::from_millis(100));
        self
    }

    /// How long an instance stays in memory after its last use (default 30 s).
    pub fn evict_after(mut self, idle: Duration) -> Self {
        self.evict_after = idle;
        self
    }

    /// Bytes of instance rows held in memory at most, for the whole runtime (default
    /// 256 MiB). Beyond it, instances not in use are dropped from memory, least recently
    /// used first, before their idle time is up. Each live instance holds its metadata,
    /// its kind's record and the first rows of its queues, never a whole backlog, so the
    /// budget bounds memory whatever the backlogs.
    pub fn cache_budget(mut self, bytes: usize) -> Self {
        self.cache_budget = bytes;
        self
    }

    /// How long shutdown waits for running executions (default 5 s). Executions still
    /// running then are abandoned safely: they run again after the next start. Within the
    /// same period, counted from the start of shutdown, a buffering tracker's refused
    /// batches are posted again.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Threads that run user code (default: the number of CPUs, at least 2), apart from
    /// the shards, so that a blocking or CPU-heavy `execute` never holds up requests or
    /// other instances; when all of them are blocked, more are started (up to 64, or
    /// `threads` if higher). This is also what enforces the jobs' timeouts. `0` runs user
    /// code on the shards themselves: faster for async code that never blocks, but then a
    /// blocking `execute` stalls its whole shard and timeouts are not enforced.
    pub fn user_code_threads(mut self, threads: usize) -> Self {
        self.user_code_threads = threads;
        self
    }

    /// Records each attempt in the file before its `execute` runs (default off). Panics
    /// are caught and counted either way; this is for jobs that can take the whole
    /// process down (an abort, an out-of-memory kill, a crash in native code): each such
    /// attempt is then counted too, and the job ends as a dead letter, a failed batch or
    /// an `Error` status instead of running again after every restart. It costs one more
    /// commit per execution.
    pub fn record_attempts_at_start(mut self, record: bool) -> Self {
        self.attempts_recorded_at_start = record;
        self
    }

    /// How many queued events of a WorkerPool instance one claim takes at most
    /// ([`DEFAULT_CLAIM_SIZE`] unless set, at least 1): the claimed events run in order and
    /// one step records all their outcomes, a fraction of the steps per event. A claim ends
    /// early at a failure, a pause, or after `CLAIM_RUN_MS` of user code. Until their outcomes are recorded, `cancel` refuses claimed
    /// events as running, and a crash runs all of the claim's events again (see
    /// `Engine::with_claim_size`).
    pub fn claim_size(mut self, events: usize) -> Self {
        self.claim_size = events.max(1);
        self
    }

    /// Caps the database's size at `bytes` (whole pages; no cap by default). A commit that
    /// would grow the database past it fails with [`JobError::Storage`] ("database or disk
    /// is full"), and so does every call whose writes shared its group commit; nothing of
    /// them is written, and what was acknowledged before stays intact. Calls that need no
    /// new space keep working, and raising the cap with
    /// [`set_max_file_size`](LocalRuntime::set_max_file_size) recovers without a restart.
    ///
    /// The cap counts the database's pages, those still in the write-ahead log included;
    /// the `-wal` file beside it is extra: a few megabytes, reused from its start once a
    /// checkpoint has copied it into the database. A file
    /// already larger than the cap opens, but cannot grow.
    pub fn max_file_size(mut self, bytes: u64) -> Self {
        self.max_file_size = Some(bytes);
        self
    }

    /// Opens the database and starts the runtime. Blocks briefly while the file is opened.
    pub fn open(self) -> Result<LocalRuntime, OpenError> {
        let (store, store_thread) =
            StoreHandle::open(self.location, self.durability, self.max_file_size)?;
        let user_code = match self.user_code_threads {
            0 => None,
            threads => Some(
                UserCodePool::start(threads, threads.max(MAX_USER_CODE_THREADS)).map_err(|e| {
                    OpenError::Io {
                        message: format!("cannot start a user-code thread: {e}"),
                    }
                })?,
            ),
        };
        let runner = user_code
            .clone()
            .map(|pool| pool as Arc<dyn UserCodeRunner>);
        let mut senders = Vec::with_capacity(self.shards);
        let mut threads = Vec::with_capacity(self.shards);
        for index in 0..self.shards {
            let (tx, rx) = mpsc::channel(SHARD_QUEUE);
            let cfg = ShardConfig {
                index,
                count: self.shards,
                registry: self.registry.clone(),
                tracker: self.tracker.clone(),
                clock: self.clock.clone(),
                store: store.clone(),
                window: self.window,
                evict_after: self.evict_after,
                cache_budget: self.cache_budget / self.shards.max(1),
                shutdown_grace: self.shutdown_grace,
                runner: runner.clone(),
                attempts_recorded_at_start: self.attempts_recorded_at_start,
                claim_size: self.claim_size,
            };
            let thread = shard::spawn(cfg, rx).map_err(|e| OpenError::Io {
                message: format!("cannot start a shard thread: {e}"),
            })?;
            senders.push(tx);
            threads.push(thread);
        }
        let flusher =
            match self.flush_every {
                Some(every) => Some(Flusher::start(self.tracker.clone(), every).map_err(|e| {
                    OpenError::Io {
                        message: format!("cannot start the tracker thread: {e}"),
                    }
                })?),
                None => None,
            };
        Ok(LocalRuntime {
            registry: self.registry,
            transport: LocalTransport {
                shards: senders.into(),
            },
            clock: self.clock,
            threads,
            store: Some(store),
            store_thread: Some(store_thread),
            flusher,
            user_code,
            shutdown_grace: self.shutdown_grace,
        })
    }
}

/// The embedded runtime. Dropping it stops it like [`shutdown`](Self::shutdown) without
/// waiting.
pub struct LocalRuntime {
    registry: Registry,
    transport: LocalTransport,
    clock: Clock,
    threads: Vec<JoinHandle<()>>,
    /// Reaches the store for settings changed while running; dropped before the store
    /// thread is joined, since that thread ends once every handle is gone.
    store: Option<StoreHandle>,
    store_thread: Option<JoinHandle<()>>,
    flusher: Option<Flusher>,
    user_code: Option<Arc<UserCodePool>>,
    shutdown_grace: Duration,
}

impl LocalRuntime {
    /// A builder with the defaults.
    pub fn builder(registry: Registry) -> Builder {
        Builder {
            registry,
            location: Location::File(PathBuf::from("durable-jobs.db")),
            durability: Durability::Normal,
            shards: std::thread::available_parallelism().map_or(2, |n| n.get()),
            clock: Clock::System,
            tracker: Arc::new(NoopTracker),
            flush_every: None,
            window: Duration::from_secs(10),
            evict_after: Duration::from_secs(30),
            cache_budget: 256 << 20,
            shutdown_grace: Duration::from_secs(5),
            user_code_threads: std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            max_file_size: None,
            attempts_recorded_at_start: false,
            claim_size: DEFAULT_CLAIM_SIZE,
        }
    }

    /// Opens `path` with the defaults.
    pub fn open(path: impl Into<PathBuf>, registry: Registry) -> Result<Self, OpenError> {
        Self::builder(registry).path(path).open()
    }

    /// A typed client. Its futures are `Send`; use it from any executor or thread.
    pub fn client(&self) -> JobsClient<LocalTransport> {
        JobsClient::new(self.registry.clone(), self.transport.clone())
    }

    /// The runtime's time (ms since the epoch).
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    async fn ask<T>(
        &self,
        make: impl Fn(oneshot::Sender<T>) -> ShardMsg,
    ) -> Result<Vec<T>, JobError> {
        let mut out = Vec::with_capacity(self.transport.shards.len());
        for shard in self.transport.shards.iter() {
            let (tx, rx) = oneshot::channel();
            shard.send(make(tx)).await.map_err(|_| JobError::ShutDown)?;
            out.push(rx.await.map_err(|_| JobError::ShutDown)?);
        }
        Ok(out)
    }

    /// Waits until no request or alarm runs and none is due.
    pub async fn settle(&self) -> Result<(), JobError> {
        loop {
            let answers = self.ask(|reply| ShardMsg::WhenIdle { reply }).await?;
            if answers.into_iter().all(|already_idle| already_idle) {
                return Ok(());
            }
        }
    }

    /// With a virtual clock: moves time forward by `by`, firing every alarm due on the way
    /// in time order, and returns once nothing due remains.
    pub async fn advance(&self, by: Duration) -> Result<(), JobError> {
        if !self.clock.is_virtual() {
            return Err(JobError::BadRequest {
                message: "advance needs a runtime opened with a virtual clock".into(),
            });
        }
        let target = self
            .clock
            .now()
            .saturating_add(i64::try_from(by.as_millis()).unwrap_or(i64::MAX));
        loop {
            self.settle().await?;
            let next = self
                .ask(|reply| ShardMsg::NextAlarm {
                    up_to: target,
                    reply,
                })
                .await?
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(at) if at <= target => self.clock.set(at),
                _ => {
                    self.clock.set(target);
                    return self.settle().await;
                }
            }
        }
    }

    /// Changes the cap on the database's size while running (see
    /// [`Builder::max_file_size`]); `None` lifts it. It applies to the commits made after
    /// the call. Returns the cap now in force, in bytes: SQLite never sets it below the
    /// database's current size, so a smaller cap stops all growth. Raising the cap once
    /// space is available again is how a runtime that reached it recovers, without a
    /// restart.
    pub async fn set_max_file_size(&self, bytes: Option<u64>) -> Result<u64, JobError> {
        let store = self.store.as_ref().ok_or(JobError::ShutDown)?;
        Ok(store.set_max_size(bytes).await?)
    }

    /// A page of a job's instances, filtered as `query` says, in id order: see
    /// [`LocalInspector::instances`].
    pub async fn instances(&self, query: &InstanceQuery) -> Result<InstancePage, JobError> {
        self.inspector().instances(query).await
    }

    /// How many instances of the job `kind`/`name` are in each status: see
    /// [`LocalInspector::counts`].
    pub async fn counts(&self, kind: JobKind, name: &str) -> Result<StatusCounts, JobError> {
        self.inspector().counts(kind, name).await
    }

    /// A handle that lists and counts instances, for an admin API: cheap to clone, and it
    /// does not keep the runtime open (after shutdown it answers [`JobError::ShutDown`]).
    pub fn inspector(&self) -> LocalInspector {
        LocalInspector {
            registry: self.registry.clone(),
            store: self.store.as_ref().map(StoreHandle::downgrade),
        }
    }

    /// What the shards hold now.
    pub async fn stats(&self) -> Result<ShardStats, JobError> {
        let all = self.ask(|reply| ShardMsg::Stats { reply }).await?;
        Ok(all
            .into_iter()
            .fold(ShardStats::default(), |a, s| ShardStats {
                live_instances: a.live_instances + s.live_instances,
                cached_rows: a.cached_rows + s.cached_rows,
                cached_bytes: a.cached_bytes + s.cached_bytes,
                alarms_in_window: a.alarms_in_window + s.alarms_in_window,
                in_flight: a.in_flight + s.in_flight,
            }))
    }

    /// Stops taking requests, lets running work finish (up to the grace period), writes
    /// everything out and closes the file. Clients answer "shut down" afterwards.
    ///
    /// Buffered lifecycle events are then delivered: a batch the collector refuses is
    /// posted again, with a short backoff, until the grace period (counted from this call)
    /// runs out; what is still undelivered then is dropped, and its count logged. A post
    /// under way at that moment may finish first (the HTTP tracker gives up on one after
    /// 10 s).
    pub async fn shutdown(mut self) {
        let deadline = deadline_after(self.shutdown_grace);
        let _ = self.ask(|reply| ShardMsg::Shutdown { reply }).await;
        self.join(deadline);
    }

    fn join(&mut self, tracker_deadline: Instant) {
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        if let Some(user_code) = self.user_code.take() {
            user_code.close();
        }
        self.store.take();
        if let Some(store) = self.store_thread.take() {
            let _ = store.join();
        }
        // Last, so the events of the final steps are delivered too.
        if let Some(flusher) = self.flusher.take() {
            flusher.stop(tracker_deadline);
        }
    }
}

/// `grace` from now; a grace too long to represent waits a year instead.
fn deadline_after(grace: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(grace)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

impl Drop for LocalRuntime {
    fn drop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        for shard in self.transport.shards.iter() {
            let (reply, _) = oneshot::channel();
            let _ = shard.try_send(ShardMsg::Shutdown { reply });
        }
        if let Some(flusher) = &self.flusher {
            flusher.signal(deadline_after(self.shutdown_grace));
        }
        if let Some(user_code) = &self.user_code {
            user_code.close();
        }
    }
}

/// Lists and counts a runtime's instances; see [`LocalRuntime::inspector`].
#[derive(Clone)]
pub struct LocalInspector {
    registry: Registry,
    store: Option<WeakStoreHandle>,
}

impl std::fmt::Debug for LocalInspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalInspector").finish_non_exhaustive()
    }
}

impl LocalInspector {
    fn store(&self) -> Result<StoreHandle, JobError> {
        self.store
            .as_ref()
            .and_then(WeakStoreHandle::upgrade)
            .ok_or(JobError::ShutDown)
    }

    /// A page of a job's instances, filtered as `query` says, in id order. It reads the
    /// file (after writing out what is queued), not the shards' memory, so it sees
    /// instances of any age and costs their requests no more than a read of the file.
    pub async fn instances(&self, query: &InstanceQuery) -> Result<InstancePage, JobError> {
        self.registry.check_job(query.kind, &query.job)?;
        let store = self.store()?;
        let keys: Vec<String> = inspect::summary_keys(query.kind).map(String::from).into();
        inspect::page(query, |prefix, after, limit| {
            store.instances(prefix, after, keys.clone(), limit)
        })
        .await
    }

    /// How many instances of the job `kind`/`name` are in each status. It reads every
    /// instance of the job.
    pub async fn counts(&self, kind: JobKind, name: &str) -> Result<StatusCounts, JobError> {
        self.registry.check_job(kind, name)?;
        let store = self.store()?;
        let keys: Vec<String> = inspect::summary_keys(kind).map(String::from).into();
        inspect::counts(kind, name, |prefix, after, limit| {
            store.instances(prefix, after, keys.clone(), limit)
        })
        .await
    }
}
