//! The write-ahead log beside the database is copied into it as the runtime writes, off
//! the path of its commits, and so stays a few megabytes long however much is written.

use std::path::Path;

use durable_jobs::{Registry, WorkerPool, WorkerPoolContext};
use durable_jobs_local::LocalRuntime;
use futures::stream::{self, StreamExt};

/// Bytes of each event, and events: 80 MB in all, over three times the bound.
const EVENT_BYTES: usize = 4096;
const EVENTS: usize = 20_000;
/// The log's bound: four thousand pages of 4 KiB, and room for the groups written while
/// the last copy ran.
const LOG_BOUND: u64 = 24 << 20;

struct Blobs;

impl WorkerPool for Blobs {
    type Event = String;
    type Error = String;
    async fn execute(&self, _: &WorkerPoolContext<String>) -> Result<(), String> {
        Ok(())
    }
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn the_log_stays_bounded_under_sustained_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let wal = dir.path().join("jobs.db-wal");
    let registry = Registry::builder()
        .worker_pool("blobs", Blobs)
        .build()
        .unwrap();
    let rt = LocalRuntime::open(&path, registry).unwrap();
    let client = rt.client();
    let pool = client.worker_pool::<Blobs>();
    let largest_log = futures::executor::block_on(async {
        pool.pause_all().await.unwrap();
        let blob = "x".repeat(EVENT_BYTES);
        let mut largest = 0;
        for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(1000) {
            stream::iter(chunk)
                .for_each_concurrent(64, |_| async {
                    pool.enqueue(&blob).await.unwrap();
                })
                .await;
            largest = largest.max(size(&wal));
        }
        largest
    });
    assert!(
        largest_log <= LOG_BOUND,
        "the log grew to {largest_log} bytes, over {LOG_BOUND}"
    );
    futures::executor::block_on(rt.shutdown());
    assert_eq!(size(&wal), 0, "a clean shutdown leaves an empty log");
}
