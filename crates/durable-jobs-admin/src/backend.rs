//! What the admin API asks of a runtime: its jobs, its instances, and one way to send an
//! operation to an instance.

use futures::future::BoxFuture;

use durable_jobs::inspect::{InstancePage, InstanceQuery, StatusCounts};
use durable_jobs::wire::{Request, Response};
use durable_jobs::{JobError, JobKind, Registry};

/// A runtime as the admin API sees it. Implemented for the embedded runtime (feature
/// `local`) and the PostgreSQL runtime (feature `postgres`); see `Admin::local` and
/// `Admin::postgres`.
pub trait Backend: Send + Sync + 'static {
    /// The jobs the runtime runs.
    fn registry(&self) -> &Registry;

    /// Sends one operation to one instance.
    fn send(&self, request: Request) -> BoxFuture<'_, Result<Response, JobError>>;

    /// A page of a job's instances.
    fn instances<'a>(
        &'a self,
        query: &'a InstanceQuery,
    ) -> BoxFuture<'a, Result<InstancePage, JobError>>;

    /// A job's instances per status.
    fn counts<'a>(
        &'a self,
        kind: JobKind,
        job: &'a str,
    ) -> BoxFuture<'a, Result<StatusCounts, JobError>>;
}

/// A runtime's client and inspector as a [`Backend`]. A macro rather than a generic:
/// each runtime's transport returns a future that is `Send`, which only its concrete type
/// shows.
macro_rules! runtime_backend {
    ($feature:literal, $module:ident, $name:ident, $runtime:ty, $transport:ty, $inspector:ty) => {
        #[cfg(feature = $feature)]
        mod $module {
            use super::*;
            use durable_jobs::{JobsClient, Transport};

            /// The runtime's client and inspector.
            pub(crate) struct $name {
                client: JobsClient<$transport>,
                inspector: $inspector,
            }

            impl $name {
                pub fn new(runtime: &$runtime) -> Self {
                    $name {
                        client: runtime.client(),
                        inspector: runtime.inspector(),
                    }
                }
            }

            impl Backend for $name {
                fn registry(&self) -> &Registry {
                    self.client.registry()
                }

                fn send(&self, request: Request) -> BoxFuture<'_, Result<Response, JobError>> {
                    Box::pin(self.client.transport().send(request))
                }

                fn instances<'a>(
                    &'a self,
                    query: &'a InstanceQuery,
                ) -> BoxFuture<'a, Result<InstancePage, JobError>> {
                    Box::pin(self.inspector.instances(query))
                }

                fn counts<'a>(
                    &'a self,
                    kind: JobKind,
                    job: &'a str,
                ) -> BoxFuture<'a, Result<StatusCounts, JobError>> {
                    Box::pin(self.inspector.counts(kind, job))
                }
            }
        }

        #[cfg(feature = $feature)]
        pub(crate) use $module::$name;
    };
}

runtime_backend!(
    "local",
    local,
    Local,
    durable_jobs_local::LocalRuntime,
    durable_jobs_local::LocalTransport,
    durable_jobs_local::LocalInspector
);
runtime_backend!(
    "postgres",
    postgres,
    Postgres,
    durable_jobs_postgres::PostgresRuntime,
    durable_jobs_postgres::PostgresTransport,
    durable_jobs_postgres::PostgresInspector
);
