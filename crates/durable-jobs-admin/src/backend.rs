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

#[cfg(feature = "local")]
mod local {
    use super::*;
    use durable_jobs::{JobsClient, Transport};
    use durable_jobs_local::{LocalInspector, LocalRuntime, LocalTransport};

    /// The embedded runtime's client and inspector.
    pub(crate) struct Local {
        client: JobsClient<LocalTransport>,
        inspector: LocalInspector,
    }

    impl Local {
        pub fn new(runtime: &LocalRuntime) -> Self {
            Local {
                client: runtime.client(),
                inspector: runtime.inspector(),
            }
        }
    }

    impl Backend for Local {
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

#[cfg(feature = "local")]
pub(crate) use local::Local;

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use durable_jobs::{JobsClient, Transport};
    use durable_jobs_postgres::{PostgresInspector, PostgresRuntime, PostgresTransport};

    /// The PostgreSQL runtime's client and inspector.
    pub(crate) struct Postgres {
        client: JobsClient<PostgresTransport>,
        inspector: PostgresInspector,
    }

    impl Postgres {
        pub fn new(runtime: &PostgresRuntime) -> Self {
            Postgres {
                client: runtime.client(),
                inspector: runtime.inspector(),
            }
        }
    }

    impl Backend for Postgres {
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

#[cfg(feature = "postgres")]
pub(crate) use postgres::Postgres;
