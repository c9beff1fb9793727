//! The shared behaviour suite on the embedded runtime (SQLite in memory, virtual clock).

use std::sync::Arc;
use std::time::Duration;

use durable_jobs::inspect::{InstancePage, InstanceQuery, StatusCounts};
use durable_jobs::services::tracker::MemoryTracker;
use durable_jobs::testing::DEFAULT_START;
use durable_jobs::{JobError, JobKind, JobsClient, Registry};
use durable_jobs_conformance::inspect::Inspect;
use durable_jobs_conformance::TestRuntime;
use durable_jobs_local::{LocalRuntime, LocalTransport};

struct Local {
    runtime: LocalRuntime,
    tracker: Arc<MemoryTracker>,
}

impl TestRuntime for Local {
    type Transport = LocalTransport;

    async fn start(registry: Registry) -> Self {
        let tracker = Arc::new(MemoryTracker::new());
        let runtime = LocalRuntime::builder(registry)
            .in_memory()
            .virtual_clock(DEFAULT_START)
            .tracker(tracker.clone())
            .open()
            .expect("open an in-memory runtime");
        Local { runtime, tracker }
    }

    fn client(&self) -> JobsClient<LocalTransport> {
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

impl Inspect for Local {
    async fn instances(&self, query: &InstanceQuery) -> Result<InstancePage, JobError> {
        self.runtime.instances(query).await
    }

    async fn counts(&self, kind: JobKind, job: &str) -> Result<StatusCounts, JobError> {
        self.runtime.counts(kind, job).await
    }
}

durable_jobs_conformance::conformance_tests!(Local, |fut| futures::executor::block_on(fut));
durable_jobs_conformance::inspect_tests!(Local, |fut| futures::executor::block_on(fut));
