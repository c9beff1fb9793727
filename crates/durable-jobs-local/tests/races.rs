//! Requests racing executions on real threads: nothing is left behind.
//!
//! Alarms fire as soon as they are due, so enqueues land while earlier events execute and
//! while executions finish; every event must still run, in partition order.

use std::time::Duration;

use durable_jobs::testing::DEFAULT_START;
use durable_jobs::{EnqueueRequest, Registry};
use durable_jobs_conformance::jobs::{Log, Task, Worker};
use durable_jobs_local::LocalRuntime;

#[test]
fn enqueues_racing_executions_all_run_in_order() {
    for round in 0..30 {
        futures::executor::block_on(async {
            let log = Log::default();
            let registry = Registry::builder()
                .worker_pool("tasks", Worker::new(&log, 4))
                .build()
                .unwrap();
            let rt = LocalRuntime::builder(registry)
                .in_memory()
                .virtual_clock(DEFAULT_START)
                .open()
                .unwrap();
            let client = rt.client();
            let pool = client.worker_pool::<Worker>();
            for i in 0..10 {
                for tenant in ["acme", "globex", "initech"] {
                    let options = EnqueueRequest::new().partition_key(tenant);
                    pool.enqueue_with(&Task::named(&format!("{tenant}-{i}")), options)
                        .await
                        .unwrap();
                }
            }
            rt.advance(Duration::ZERO).await.unwrap();
            let ran = log.matching("exec ");
            assert_eq!(ran.len(), 30, "round {round}: {ran:?}");
            for tenant in ["acme", "globex", "initech"] {
                let order: Vec<&String> = ran.iter().filter(|l| l.contains(tenant)).collect();
                let expected: Vec<String> =
                    (0..10).map(|i| format!("exec {tenant}-{i} ")).collect();
                for (line, prefix) in order.iter().zip(&expected) {
                    assert!(
                        line.starts_with(prefix.as_str()),
                        "round {round}: {order:?}"
                    );
                }
            }
            assert_eq!(pool.status().await.unwrap().pending, 0);
            rt.shutdown().await;
        });
    }
}
