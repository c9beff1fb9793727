//! The behaviour suite on the in-memory harness.

use durable_jobs::testing::TestJobs;

durable_jobs_conformance::conformance_tests!(TestJobs, |fut| futures::executor::block_on(fut));
durable_jobs_conformance::restart_tests!(TestJobs, |fut| futures::executor::block_on(fut));
