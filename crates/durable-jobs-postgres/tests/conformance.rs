//! The shared behaviour suite on the PostgreSQL runtime: one real server for the test
//! binary (or a fresh database on `DATABASE_URL`), a schema of its own for each test, and a
//! virtual clock.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use durable_jobs::inspect::{InstancePage, InstanceQuery, StatusCounts};
use durable_jobs::services::tracker::MemoryTracker;
use durable_jobs::testing::DEFAULT_START;
use durable_jobs::{JobError, JobKind, JobsClient, Registry};
use durable_jobs_conformance::inspect::Inspect;
use durable_jobs_conformance::{Restart, TestRuntime};
use durable_jobs_postgres::testing::{unique_name, TestServer};
use durable_jobs_postgres::{PostgresRuntime, PostgresTransport};

fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| match TestServer::new() {
        Ok(server) => server,
        Err(e) => panic!("no PostgreSQL server for the tests: {e}"),
    })
}

struct Postgres {
    runtime: PostgresRuntime,
    tracker: Arc<MemoryTracker>,
    registry: Registry,
    schema: String,
}

impl Postgres {
    async fn connect(
        registry: &Registry,
        tracker: &Arc<MemoryTracker>,
        schema: &str,
        at: i64,
    ) -> PostgresRuntime {
        PostgresRuntime::builder(server().url(), registry.clone())
            .schema(schema)
            .virtual_clock(at)
            .tracker(tracker.clone())
            .shards(2)
            .max_connections(4)
            .connect()
            .await
            .expect("start a runtime on the test server")
    }
}

impl TestRuntime for Postgres {
    type Transport = PostgresTransport;

    async fn start(registry: Registry) -> Self {
        let tracker = Arc::new(MemoryTracker::new());
        let schema = unique_name("conformance");
        let runtime = Postgres::connect(&registry, &tracker, &schema, DEFAULT_START).await;
        Postgres {
            runtime,
            tracker,
            registry,
            schema,
        }
    }

    fn client(&self) -> JobsClient<PostgresTransport> {
        self.runtime.client()
    }

    async fn advance(&self, by: Duration) {
        self.runtime.advance(by).await.expect("advance");
    }

    fn now(&self) -> i64 {
        self.runtime.now()
    }

    fn events_of(&self, instance_id: &str) -> Vec<&'static str> {
        self.tracker.types_for(instance_id)
    }
}

impl Restart for Postgres {
    async fn restart(self) -> Self {
        let Postgres {
            runtime,
            tracker,
            registry,
            schema,
        } = self;
        let now = runtime.now();
        runtime.shutdown().await;
        let runtime = Postgres::connect(&registry, &tracker, &schema, now).await;
        Postgres {
            runtime,
            tracker,
            registry,
            schema,
        }
    }
}

impl Inspect for Postgres {
    async fn instances(&self, query: &InstanceQuery) -> Result<InstancePage, JobError> {
        self.runtime.instances(query).await
    }

    async fn counts(&self, kind: JobKind, job: &str) -> Result<StatusCounts, JobError> {
        self.runtime.counts(kind, job).await
    }
}

durable_jobs_conformance::conformance_tests!(Postgres, |fut| futures::executor::block_on(fut));
durable_jobs_conformance::inspect_tests!(Postgres, |fut| futures::executor::block_on(fut));
durable_jobs_conformance::restart_tests!(Postgres, |fut| futures::executor::block_on(fut));
