//! The PostgreSQL runtime: shards hosting engines, an I/O executor for the connections,
//! and the background tasks that share alarms with the other processes.

mod builder;
mod io;
mod transport;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use durable_jobs::adapters::Clock as _;
use durable_jobs::inspect::{self, InstancePage, InstanceQuery, RawInstances, StatusCounts};
use durable_jobs::{JobError, JobKind, JobsClient, Registry, StorageError};
use tokio::sync::{oneshot, watch};

pub use builder::{Builder, DEFAULT_CLAIM_SIZE};
pub use transport::PostgresTransport;

use self::io::IoRuntime;
use crate::alarms::poller::Poller;
use crate::alarms::{db, listener, renewer};
use crate::shard::ShardMsg;
use crate::shared::Shared;
use crate::store::rows;
use crate::{ConnectError, SchemaName};

/// How long `advance` waits before looking again at an alarm that is due but was not
/// taken (another process's step holds its row for a moment).
const BUSY_ALARM_RETRY: Duration = Duration::from_millis(5);

/// The durable-jobs runtime on PostgreSQL: any number of processes share one database, and
/// any of them serves any instance. See the crate documentation.
///
/// Dropping it without [`shutdown`](Self::shutdown) stops it at once, as a crash would:
/// the alarms it held are taken over by other processes once their leases run out.
pub struct PostgresRuntime {
    registry: Registry,
    transport: PostgresTransport,
    shared: Arc<Shared>,
    poller: Arc<Poller>,
    threads: Vec<JoinHandle<()>>,
    background: Background,
    /// Last: the connections and background tasks go when everything else has.
    io: IoRuntime,
}

impl std::fmt::Debug for PostgresRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresRuntime")
            .field("schema", self.shared.store.schema())
            .field("process", &self.shared.owner)
            .finish_non_exhaustive()
    }
}

impl PostgresRuntime {
    /// Connects to the database at `url` (a `postgres://` URL or `key=value` pairs) with the
    /// defaults, and starts the runtime: see [`Builder::connect`].
    pub async fn connect(
        url: impl Into<String>,
        registry: Registry,
    ) -> Result<PostgresRuntime, ConnectError> {
        Self::builder(url, registry).connect().await
    }

    /// A builder with the defaults, to configure before [`Builder::connect`].
    pub fn builder(url: impl Into<String>, registry: Registry) -> Builder {
        Builder::new(url.into(), registry)
    }

    /// A typed client. Its futures are `Send`; use it from any executor or thread.
    pub fn client(&self) -> JobsClient<PostgresTransport> {
        JobsClient::new(self.registry.clone(), self.transport.clone())
    }

    /// The runtime's time (ms since the epoch).
    pub fn now(&self) -> i64 {
        self.shared.clock.now()
    }

    /// A page of a job's instances, filtered as `query` says, in id order: see
    /// [`PostgresInspector::instances`].
    pub async fn instances(&self, query: &InstanceQuery) -> Result<InstancePage, JobError> {
        self.inspector().instances(query).await
    }

    /// How many instances of the job `kind`/`name` are in each status: see
    /// [`PostgresInspector::counts`].
    pub async fn counts(&self, kind: JobKind, name: &str) -> Result<StatusCounts, JobError> {
        self.inspector().counts(kind, name).await
    }

    /// A handle that lists and counts instances, for an admin API: cheap to clone, and it
    /// does not keep the runtime open (after shutdown it answers [`JobError::ShutDown`]).
    pub fn inspector(&self) -> PostgresInspector {
        PostgresInspector {
            registry: self.registry.clone(),
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// The schema the runtime's tables live in.
    pub fn schema(&self) -> &SchemaName {
        self.shared.store.schema()
    }

    /// This process's id, recorded as the owner of the alarm leases it holds.
    pub fn process_id(&self) -> &str {
        &self.shared.owner
    }

    /// Waits until this process runs no request or alarm pass, and no alarm is due that it
    /// could take. Alarms due now have then run here, or are held by other processes (which
    /// may still be running them).
    pub async fn settle(&self) -> Result<(), JobError> {
        let activity = &self.shared.activity;
        loop {
            activity.idle().await;
            let ended = activity.ended();
            let poller = self.poller.clone();
            let claimed = self.on_io(async move { poller.round().await }).await?;
            if claimed == 0 && activity.running() == 0 && activity.ended() == ended {
                return Ok(());
            }
        }
    }

    /// With a virtual clock: moves time forward by `by`, running every alarm due on the way
    /// in time order, and returns once nothing due remains.
    pub async fn advance(&self, by: Duration) -> Result<(), JobError> {
        if !self.shared.clock.is_virtual() {
            return Err(JobError::BadRequest {
                message: "advance needs a runtime started with a virtual clock".into(),
            });
        }
        let target = self
            .now()
            .saturating_add(i64::try_from(by.as_millis()).unwrap_or(i64::MAX));
        loop {
            self.settle().await?;
            let shared = self.shared.clone();
            let next = self
                .on_io(async move { db::next_claimable(&shared.store, target, &shared.jobs).await })
                .await?;
            match next {
                Some(at) if at <= self.now() => {
                    self.on_io(async {
                        tokio::time::sleep(BUSY_ALARM_RETRY).await;
                        Ok(())
                    })
                    .await?;
                }
                Some(at) if at <= target => self.shared.clock.set(at),
                _ => {
                    self.shared.clock.set(target);
                    return self.settle().await;
                }
            }
        }
    }

    /// Runs `work` on the I/O executor, from whatever executor the caller uses.
    async fn on_io<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, StorageError>> + Send + 'static,
    ) -> Result<T, JobError> {
        match self.io.spawn(work).await {
            Ok(result) => result.map_err(JobError::from),
            Err(_) => Err(JobError::ShutDown),
        }
    }

    /// Stops taking requests and alarms, lets running passes finish (up to the shutdown
    /// grace), gives back the alarm leases still held, and closes the connections. Clients
    /// answer [`JobError::ShutDown`] afterwards.
    pub async fn shutdown(mut self) {
        self.background.stop_claims().await;
        // Every shard drains at once, each within the grace.
        let mut stopped = Vec::new();
        for shard in self.transport.shards.iter() {
            let (reply, done) = oneshot::channel();
            if shard.send(ShardMsg::Shutdown { reply }).await.is_ok() {
                stopped.push(done);
            }
        }
        for done in stopped {
            let _ = done.await;
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        self.background.stop_renewal().await;
        let shared = self.shared.clone();
        let released = self
            .on_io(async move {
                shared.releases.retry(&shared.store).await;
                let (ids, tokens) = shared.leases.take_all();
                db::release_all(&shared.store, &ids, &tokens).await
            })
            .await;
        if let Err(error) = released {
            tracing::warn!(%error, "cannot release the alarm leases; they expire by themselves");
        }
        self.shared.store.close();
    }
}

impl Drop for PostgresRuntime {
    fn drop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.background.signal();
        for shard in self.transport.shards.iter() {
            let (reply, _) = oneshot::channel();
            let _ = shard.try_send(ShardMsg::Shutdown { reply });
        }
    }
}

/// The background tasks on the I/O executor, and how to stop them.
struct Background {
    /// Stops the poller and the listener: no new alarms are taken.
    claims: watch::Sender<bool>,
    /// Stops lease renewal, once no pass runs any more.
    renewal: watch::Sender<bool>,
    poller: Option<tokio::task::JoinHandle<()>>,
    listener: Option<tokio::task::JoinHandle<()>>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl Background {
    fn start(
        io: &IoRuntime,
        shared: &Arc<Shared>,
        poller: &Arc<Poller>,
        listen: tokio_postgres::Config,
    ) -> Self {
        let (claims, claims_rx) = watch::channel(false);
        let (renewal, renewal_rx) = watch::channel(false);
        Background {
            poller: Some(io.spawn(poller.clone().run(claims_rx.clone()))),
            listener: Some(io.spawn(listener::run(shared.clone(), listen, claims_rx))),
            renewer: Some(io.spawn(renewer::run(shared.clone(), renewal_rx))),
            claims,
            renewal,
        }
    }

    /// Stops taking alarms, and waits for the round under way to hand its alarms out.
    async fn stop_claims(&mut self) {
        let _ = self.claims.send(true);
        for task in [self.poller.take(), self.listener.take()]
            .into_iter()
            .flatten()
        {
            let _ = task.await;
        }
    }

    /// Stops renewing leases.
    async fn stop_renewal(&mut self) {
        let _ = self.renewal.send(true);
        if let Some(task) = self.renewer.take() {
            let _ = task.await;
        }
    }

    /// Tells every task to stop, without waiting.
    fn signal(&self) {
        let _ = self.claims.send(true);
        let _ = self.renewal.send(true);
    }
}

/// Lists and counts instances; see [`PostgresRuntime::inspector`].
#[derive(Clone)]
pub struct PostgresInspector {
    registry: Registry,
    shared: std::sync::Weak<Shared>,
}

impl std::fmt::Debug for PostgresInspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresInspector").finish_non_exhaustive()
    }
}

impl PostgresInspector {
    /// A page of a job's instances, filtered as `query` says, in id order, as committed in
    /// the database (by any process).
    pub async fn instances(&self, query: &InstanceQuery) -> Result<InstancePage, JobError> {
        self.registry.check_job(query.kind, &query.job)?;
        let keys = inspect::summary_keys(query.kind);
        inspect::page(query, |prefix, after, limit| {
            self.fetch(prefix, after, keys, limit)
        })
        .await
    }

    /// How many instances of the job `kind`/`name` are in each status. It reads every
    /// instance of the job.
    pub async fn counts(&self, kind: JobKind, name: &str) -> Result<StatusCounts, JobError> {
        self.registry.check_job(kind, name)?;
        let keys = inspect::summary_keys(kind);
        inspect::counts(kind, name, |prefix, after, limit| {
            self.fetch(prefix, after, keys, limit)
        })
        .await
    }

    /// Stored instances for `inspect`, read on a pooled connection.
    async fn fetch(
        &self,
        prefix: String,
        after: Option<String>,
        keys: [&'static str; 2],
        limit: usize,
    ) -> Result<RawInstances, StorageError> {
        let shared = self
            .shared
            .upgrade()
            .ok_or_else(|| StorageError::new("the PostgreSQL runtime is shut down"))?;
        let store = &shared.store;
        let conn = store.connection().await?;
        rows::instances(&conn, &store.sql, &prefix, after.as_deref(), &keys, limit).await
    }
}
