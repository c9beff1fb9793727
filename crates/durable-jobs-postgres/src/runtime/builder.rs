//! Configuring and starting a [`PostgresRuntime`].

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use durable_jobs::services::tracker::{EventTracker, NoopTracker};
use durable_jobs::Registry;
use tokio::sync::{mpsc, Notify};

use super::io::IoRuntime;
use super::{Background, PostgresRuntime, PostgresTransport, Shared};
use crate::activity::Activity;
use crate::alarms::ending::PendingReleases;
use crate::alarms::leases::Leases;
use crate::alarms::poller::Poller;
use crate::clock::Clock;
use crate::shard::{self, ShardConfig, ShardMsg};
use crate::store::Store;
use crate::{ConnectError, Database, PostgresConfig, DEFAULT_SCHEMA};

/// Requests queued per shard at most; callers wait beyond (backpressure).
const SHARD_QUEUE: usize = 4096;

/// How many queued events of a WorkerPool instance one claim takes unless set: enough
/// that the two transactions of a claim cost little per event, few enough that a crash
/// leaves little to run again.
pub const DEFAULT_CLAIM_SIZE: usize = 32;

/// The shortest lease accepted: it is renewed every third of it.
const MIN_LEASE: Duration = Duration::from_millis(30);

/// How long opening a connection may take when the URL does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Configures and starts a [`PostgresRuntime`]; see [`PostgresRuntime::builder`].
pub struct Builder {
    url: String,
    registry: Registry,
    schema: String,
    max_connections: usize,
    lease: Duration,
    poll_interval: Duration,
    claim_size: usize,
    shutdown_grace: Duration,
    shards: usize,
    tracker: Arc<dyn EventTracker>,
    clock: Clock,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("Builder")
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("lease", &self.lease)
            .field("poll_interval", &self.poll_interval)
            .field("claim_size", &self.claim_size)
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

impl Builder {
    pub(super) fn new(url: String, registry: Registry) -> Self {
        Builder {
            url,
            registry,
            schema: DEFAULT_SCHEMA.to_owned(),
            max_connections: 16,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            claim_size: DEFAULT_CLAIM_SIZE,
            shutdown_grace: Duration::from_secs(5),
            shards: std::thread::available_parallelism().map_or(2, |n| n.get()),
            tracker: Arc::new(NoopTracker),
            clock: Clock::System,
        }
    }

    /// The schema every table lives in ([`DEFAULT_SCHEMA`] unless set). Processes that
    /// share jobs must use the same schema; deployments that must not share use different
    /// ones. See [`SchemaName`](crate::SchemaName) for the names accepted.
    pub fn schema(mut self, name: impl Into<String>) -> Self {
        self.schema = name.into();
        self
    }

    /// The most pooled connections the runtime opens (16 unless set, at least 1). Each step
    /// holds one for its transaction; the notification listener has one more of its own.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long a claimed alarm stays this process's without a renewal (30 s unless set,
    /// at least 30 ms). Leases are renewed every third of it while their passes run, so it
    /// only matters when a process dies or loses the database: its alarms wait up to this
    /// long before another process takes them over.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(MIN_LEASE);
        self
    }

    /// How often the runtime looks for due alarms when nothing wakes it (1 s unless set).
    /// Alarms set due sooner than this are announced to every process when their step
    /// commits, so this bounds the delay only for alarms set further ahead, and for
    /// announcements lost while the notification connection was down.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How many queued events of a WorkerPool instance one claim takes at most
    /// ([`DEFAULT_CLAIM_SIZE`] unless set, at least 1). The claimed events run in order and
    /// one transaction records all their outcomes, so a larger claim costs fewer
    /// transactions per event. A claim stops early at a failure, at a pause made in this
    /// process, or after [`CLAIM_RUN_MS`](durable_jobs::CLAIM_RUN_MS) of user code.
    ///
    /// The price of a larger claim: `cancel` refuses a claimed event until the claim
    /// records its outcomes, a pause made in another process takes effect after the claim,
    /// and a process that dies mid-claim leaves every event of the claim to run again (one
    /// at a time, each attempt recorded, so an event that kills its process still ends as
    /// a dead letter). 1 gives one transaction per event and the narrowest windows.
    pub fn claim_size(mut self, events: usize) -> Self {
        self.claim_size = events.max(1);
        self
    }

    /// How long shutdown waits for running passes (5 s unless set). Passes still running
    /// then are abandoned and their leases released: another process, or this one
    /// restarted, runs their work again.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Shard threads (default: the number of CPUs).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards.max(1);
        self
    }

    /// Sends lifecycle events to `tracker`.
    pub fn tracker(mut self, tracker: Arc<dyn EventTracker>) -> Self {
        self.tracker = tracker;
        self
    }

    /// Runs on a virtual clock starting at `start` (ms since the epoch), moved only by
    /// [`PostgresRuntime::advance`]. Alarm times and leases are then virtual too. For tests.
    pub fn virtual_clock(mut self, start: i64) -> Self {
        self.clock = Clock::virtual_at(start);
        self
    }

    /// Connects, migrates the schema (see [`Database::connect`]) and starts the runtime.
    ///
    /// Fails with [`ConnectError`] if the server cannot be reached or refuses the login,
    /// if the schema was migrated by a newer build, or if the runtime's threads cannot be
    /// started. May be called from any executor.
    pub async fn connect(self) -> Result<PostgresRuntime, ConnectError> {
        let io = IoRuntime::start().map_err(|e| ConnectError::Start {
            reason: format!("cannot start the I/O executor: {e}"),
        })?;
        let listen_config = listen_config(&self.url)?;
        let config = PostgresConfig::new(self.url.clone())
            .schema(self.schema.clone())
            .max_connections(self.max_connections)
            .connect_timeout(CONNECT_TIMEOUT);
        let db = io
            .spawn(Database::connect(config))
            .await
            .map_err(|e| ConnectError::Start {
                reason: format!("connecting was interrupted: {e}"),
            })??;
        let shared = Arc::new(Shared {
            store: Store::new(db, io.handle().clone()),
            clock: self.clock.clone(),
            leases: Leases::default(),
            releases: PendingReleases::default(),
            owner: process_owner(),
            jobs: self
                .registry
                .jobs()
                .map(|(kind, name)| format!("{kind}:{name}:"))
                .collect(),
            lease: self.lease,
            poll_interval: self.poll_interval,
            claim_size: self.claim_size,
            wake_poller: Notify::new(),
            activity: Arc::new(Activity::default()),
        });
        let (senders, threads) = self.start_shards(&shared)?;
        let shards: Arc<[mpsc::Sender<ShardMsg>]> = senders.into();
        let poller = Arc::new(Poller::new(shared.clone(), shards.clone()));
        let background = Background::start(&io, &shared, &poller, listen_config);
        Ok(PostgresRuntime {
            registry: self.registry,
            transport: PostgresTransport { shards },
            shared,
            poller,
            threads,
            background,
            io,
        })
    }

    #[allow(clippy::type_complexity)]
    fn start_shards(
        &self,
        shared: &Arc<Shared>,
    ) -> Result<
        (
            Vec<mpsc::Sender<ShardMsg>>,
            Vec<std::thread::JoinHandle<()>>,
        ),
        ConnectError,
    > {
        let mut senders = Vec::with_capacity(self.shards);
        let mut threads = Vec::with_capacity(self.shards);
        for index in 0..self.shards {
            let (tx, rx) = mpsc::channel(SHARD_QUEUE);
            let cfg = ShardConfig {
                index,
                registry: self.registry.clone(),
                tracker: self.tracker.clone(),
                shared: shared.clone(),
                shutdown_grace: self.shutdown_grace,
            };
            let thread = shard::spawn(cfg, rx).map_err(|e| ConnectError::Start {
                reason: format!("cannot start a shard thread: {e}"),
            })?;
            senders.push(tx);
            threads.push(thread);
        }
        Ok((senders, threads))
    }
}

/// The configuration of the notification connection: the pool's, parsed again (the pool
/// does not give its own back).
fn listen_config(url: &str) -> Result<tokio_postgres::Config, ConnectError> {
    let mut config: tokio_postgres::Config =
        url.parse()
            .map_err(|e: tokio_postgres::Error| ConnectError::InvalidUrl {
                reason: e.to_string(),
            })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    Ok(config)
}

/// A random id for this process, `{pid}-{random}`, recorded as the owner of its leases.
/// Only for people reading the table: tokens, not owners, fence.
fn process_owner() -> String {
    let mut hasher = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    format!("{}-{:016x}", std::process::id(), hasher.finish())
}
