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
//! # async fn run(runtime: durable_jobs_local::LocalRuntime) -> std::io::Result<()> {
//! use durable_jobs_admin::{serve, Access, Admin, Token};
//!
//! let token = Token::generate().expect("a random token");
//! println!("admin token: {}", token.expose());
//! let admin = Admin::local(&runtime, Access::Token(token));
//! // Mounted in an app: `app.nest("/admin", admin.router())`. Or alone:
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8321").await?;
//! serve(listener, admin).await
//! # }
//! ```

mod access;
mod api;
mod backend;
mod dashboard;
mod error;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use tokio::net::TcpListener;

pub use access::{Access, Token, TokenError, MIN_TOKEN_LEN};
pub use backend::Backend;

/// The largest request body accepted, in bytes: actions are small.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The admin API over one runtime.
pub struct Admin {
    backend: Arc<dyn Backend>,
    access: Access,
}

impl Admin {
    /// The API over any [`Backend`].
    pub fn new(backend: impl Backend, access: Access) -> Self {
        Admin {
            backend: Arc::new(backend),
            access,
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

    /// The routes, with bodies capped at [`MAX_BODY_BYTES`]: the API under `/api`, every
    /// route behind the access check, and the web dashboard at `/` and `/assets/`, whose
    /// files hold no data and are served to anyone (the page asks for the token).
    pub fn router(self) -> Router {
        api::routes()
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
