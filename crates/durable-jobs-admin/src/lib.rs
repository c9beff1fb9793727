//! An admin HTTP API for durable-jobs runtimes: list a job's instances by status, look
//! into one (status, state, dead letters, failed batches) and act on it (trigger, flush,
//! clear, stop, pause, resume, cancel, replay, discard). A web dashboard over the same
//! API is served at `/`: it works offline and asks for the token in the page.
//!
//! [`Admin`] gives an [`axum::Router`] to mount in your own service under a prefix, or to
//! serve alone with [`serve`]. Every route needs a bearer token unless authentication is
//! explicitly turned off, which only serves clients on the loopback interface.
//!
//! ```no_run
//! # async fn run(runtime: durable_jobs_local::LocalRuntime) -> Result<(), Box<dyn std::error::Error>> {
//! use durable_jobs_admin::{serve, Access, Admin, Token};
//!
//! let token = Token::generate()?;
//! println!("admin token: {}", token.expose());
//! let admin = Admin::local(&runtime, Access::Token(token));
//! // Mounted in an app: `app.nest("/admin", admin.router())`. Or alone:
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8321").await?;
//! serve(listener, admin).await?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Metrics
//!
//! [`MetricsTracker`], given to a runtime as its event tracker, turns lifecycle events into
//! Prometheus counters and histograms through the `metrics` facade, labelled by job kind and
//! name (never by instance: their number is unbounded). [`Metrics::install`] installs a
//! Prometheus recorder as the process's global one, without an HTTP listener of its own;
//! [`Admin::with_metrics`] serves it as `GET /metrics`, behind the same access check as
//! the other routes, setting the instance gauges from the runtime's counts on each scrape.
//! [`MetricsTracker`] says which metrics there are and what the events cannot tell.
//!
//! ```no_run
//! # fn run(registry: durable_jobs::Registry) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//!
//! use durable_jobs_admin::{Access, Admin, Metrics, MetricsTracker, Token};
//! use durable_jobs_local::LocalRuntime;
//!
//! let metrics = Metrics::install()?;
//! let runtime = LocalRuntime::builder(registry)
//!     .path("jobs.db")
//!     .tracker(Arc::new(MetricsTracker::new()))
//!     .open()?;
//! let admin = Admin::local(&runtime, Access::Token(Token::generate()?)).with_metrics(metrics);
//! # Ok(())
//! # }
//! ```

mod access;
mod api;
mod backend;
mod dashboard;
mod error;
mod metrics;
mod recent;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use tokio::net::TcpListener;

pub use self::metrics::{
    set_instance_counts, set_live_instances, set_pending_events, Metrics, MetricsError,
    MetricsTracker, MAX_TRACKED_WAITS, PROMETHEUS_CONTENT_TYPE,
};
pub use access::{Access, Token, TokenError, MIN_TOKEN_LEN};
pub use backend::Backend;
/// The Prometheus exporter, to build a recorder of one's own for [`Metrics::from_handle`].
pub use metrics_exporter_prometheus;
pub use recent::{RecentEvents, DEFAULT_EVENTS_PER_INSTANCE, DEFAULT_INSTANCES};

/// The largest request body accepted, in bytes: actions are small.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The admin API over one runtime.
pub struct Admin {
    backend: Arc<dyn Backend>,
    access: Access,
    metrics: Option<Metrics>,
    recent: Option<Arc<RecentEvents>>,
}

impl Admin {
    /// The API over any [`Backend`].
    pub fn new(backend: impl Backend, access: Access) -> Self {
        Admin {
            backend: Arc::new(backend),
            access,
            metrics: None,
            recent: None,
        }
    }

    /// The API over an embedded runtime. It does not keep the runtime open: after its
    /// shutdown, routes answer 503.
    #[cfg(feature = "local")]
    pub fn local(runtime: &durable_jobs_local::LocalRuntime, access: Access) -> Self {
        Self::new(backend::Local::new(runtime), access)
    }

    /// The API over a PostgreSQL runtime (this process's view of the database).
    #[cfg(feature = "postgres")]
    pub fn postgres(runtime: &durable_jobs_postgres::PostgresRuntime, access: Access) -> Self {
        Self::new(backend::Postgres::new(runtime), access)
    }

    /// Also serves `GET /metrics`: `metrics` in the Prometheus text format
    /// ([`PROMETHEUS_CONTENT_TYPE`]). Each scrape first sets, for every registered job, from
    /// the runtime's counts (see [`set_instance_counts`]), the gauges
    /// `durable_jobs_instances{kind,job,status}` (`active`, `paused`, `stopped`, `error`),
    /// `durable_jobs_instances_with_dead_letters{kind,job}` (WorkerPool) and
    /// `durable_jobs_instances_with_failed_batches{kind,job}` (Debounce); a failed count
    /// fails the scrape. The route is behind the same access check as every other, so a
    /// Prometheus scraper sends the bearer token (`authorization.credentials` in its scrape
    /// config).
    pub fn with_metrics(mut self, metrics: Metrics) -> Admin {
        self.metrics = Some(metrics);
        self
    }

    /// Also serves `GET /api/instances/{id}/events`: the instance's latest lifecycle events
    /// that `recent` kept (it must also be the runtime's tracker, or one of them).
    pub fn with_recent_events(mut self, recent: Arc<RecentEvents>) -> Admin {
        self.recent = Some(recent);
        self
    }

    /// The routes, with bodies capped at [`MAX_BODY_BYTES`]: the API under `/api` (and
    /// `/metrics` if asked), every route behind the access check, and the web dashboard at
    /// `/` and `/assets/`, whose files hold no data and are served to anyone (the page asks
    /// for the token).
    pub fn router(self) -> Router {
        let mut routes = api::routes().route(
            "/api/instances/{id}/events",
            axum::routing::get(api::recent_events(self.recent)),
        );
        if let Some(metrics) = self.metrics {
            routes = routes.route("/metrics", self::metrics::route(metrics));
        }
        routes
            .fallback(api::no_route)
            .layer(axum::middleware::from_fn_with_state(
                self.access,
                access::check,
            ))
            .merge(dashboard::routes())
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(self.backend)
    }
}

/// Serves `admin` alone on `listener`, with the peers' addresses known (which
/// [`Access::LoopbackWithoutToken`] needs). Refuses to serve without a token on an address
/// other than loopback.
pub async fn serve(listener: TcpListener, admin: Admin) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    if matches!(admin.access, Access::LoopbackWithoutToken) && !local.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("the admin API without a token only listens on loopback, not {local}"),
        ));
    }
    let app = admin.router();
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}
