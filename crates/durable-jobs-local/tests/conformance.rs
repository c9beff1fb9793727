//! The shared behaviour suite on the embedded runtime (a SQLite file of its own for each
//! test, so that a test can restart the runtime on it; virtual clock).

use std::sync::Arc;
use std::time::Duration;

use durable_jobs::inspect::{InstancePage, InstanceQuery, StatusCounts};
use durable_jobs::services::tracker::MemoryTracker;
use durable_jobs::testing::DEFAULT_START;
use durable_jobs::{JobError, JobKind, JobsClient, Registry};
use durable_jobs_conformance::inspect::Inspect;
use durable_jobs_conformance::{Restart, TestRuntime};
use durable_jobs_local::{LocalRuntime, LocalTransport};

struct Local {
    runtime: LocalRuntime,
    tracker: Arc<MemoryTracker>,
    registry: Registry,
    /// Holds the database file; removed when the test ends.
    dir: tempfile::TempDir,
}

impl Local {
    fn open(
        registry: &Registry,
        tracker: &Arc<MemoryTracker>,
        dir: &tempfile::TempDir,
        at: i64,
    ) -> LocalRuntime {
        LocalRuntime::builder(registry.clone())
            .path(dir.path().join("jobs.db"))
            .virtual_clock(at)
            .tracker(tracker.clone())
            .open()
            .expect("open a runtime on a file of its own")
    }
}

impl TestRuntime for Local {
    type Transport = LocalTransport;

    async fn start(registry: Registry) -> Self {
        let tracker = Arc::new(MemoryTracker::new());
        let dir = tempfile::tempdir().expect("a directory for the database");
        let runtime = Local::open(&registry, &tracker, &dir, DEFAULT_START);
        Local {
            runtime,
            tracker,
            registry,
            dir,
        }
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

impl Restart for Local {
    async fn restart(self) -> Self {
        let Local {
            runtime,
            tracker,
            registry,
            dir,
        } = self;
        let now = runtime.now();
        runtime.shutdown().await;
        let runtime = Local::open(&registry, &tracker, &dir, now);
        Local {
            runtime,
            tracker,
            registry,
            dir,
        }
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
durable_jobs_conformance::restart_tests!(Local, |fut| futures::executor::block_on(fut));
