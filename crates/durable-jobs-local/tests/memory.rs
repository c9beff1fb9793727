//! A busy instance's backlog stays on disk: memory holds its hot rows only, whatever the
//! backlog, before and after a restart; and the backlog still drains in order, with
//! priorities, dead letters, replays, cancels and duplicate ids all working on rows the
//! cache no longer holds.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use durable_jobs::testing::DEFAULT_START;
use durable_jobs::{EnqueueRequest, Registry, RetryPolicy, WorkerPool, WorkerPoolContext};
use durable_jobs_local::LocalRuntime;

/// Events queued on the one instance, over four times what the cache holds at most.
const BACKLOG: u32 = 10_000;
/// Events with ids on the one instance, more than the cache holds.
const IDS: u32 = 3_000;
/// Rows a live instance may cache: a few per key family, independent of the backlog.
const CACHED_ROWS_AT_MOST: usize = 2_200;

/// Records the numbers it processes; the first attempt of every twentieth one fails, and
/// with no retries it becomes a dead letter.
#[derive(Clone, Default)]
struct Numbers {
    seen: Arc<Mutex<Vec<u32>>>,
    failed_once: Arc<Mutex<HashSet<u32>>>,
}

impl WorkerPool for Numbers {
    type Event = u32;
    type Error = String;
    fn concurrency(&self) -> u32 {
        1
    }
    fn retry(&self) -> RetryPolicy {
        RetryPolicy::none()
    }
    async fn execute(&self, ctx: &WorkerPoolContext<u32>) -> Result<(), String> {
        let n = *ctx.event();
        if n.is_multiple_of(20) && self.failed_once.lock().unwrap().insert(n) {
            return Err(format!("{n} fails once"));
        }
        self.seen.lock().unwrap().push(n);
        Ok(())
    }
}

fn open(path: &Path, job: &Numbers) -> LocalRuntime {
    let registry = Registry::builder()
        .worker_pool("numbers", job.clone())
        .build()
        .unwrap();
    LocalRuntime::builder(registry)
        .path(path)
        .virtual_clock(DEFAULT_START)
        .open()
        .unwrap()
}

async fn cached_rows(rt: &LocalRuntime) -> usize {
    rt.stats().await.unwrap().cached_rows
}

/// Rows the instance keeps in the file, read after the runtime closed it.
fn rows_in_file(path: &Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("SELECT count(*) FROM kv", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_backlog_stays_on_disk_and_drains_in_order() {
    futures::executor::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let job = Numbers::default();
        let rt = open(&path, &job);
        let client = rt.client();
        let pool = client.worker_pool::<Numbers>();
        pool.pause_all().await.unwrap();
        for n in 0..BACKLOG {
            pool.enqueue(&n).await.unwrap();
        }
        // Ahead of the whole backlog, past the rows the cache holds.
        for n in BACKLOG + 1..=BACKLOG + 10 {
            let urgent = EnqueueRequest::new().priority(5);
            pool.enqueue_with(&n, urgent).await.unwrap();
        }
        let live = cached_rows(&rt).await;
        assert!(live <= CACHED_ROWS_AT_MOST, "{live} rows cached while live");
        rt.shutdown().await;

        let rt = open(&path, &job);
        let client = rt.client();
        let pool = client.worker_pool::<Numbers>();
        assert_eq!(
            pool.status().await.unwrap().pending,
            u64::from(BACKLOG) + 10
        );
        let woken = cached_rows(&rt).await;
        assert!(
            woken <= CACHED_ROWS_AT_MOST,
            "{woken} rows cached after waking"
        );

        pool.resume_all().await.unwrap();
        rt.settle().await.unwrap();
        let mut expected: Vec<u32> = (BACKLOG + 1..=BACKLOG + 10).collect();
        expected.extend((0..BACKLOG).filter(|n| n % 20 != 0));
        assert!(
            *job.seen.lock().unwrap() == expected,
            "not drained in order, once each"
        );

        let dead = pool.all_dead_letters().await.unwrap();
        let dead_numbers: Vec<u32> = dead
            .iter()
            .map(|(_, d)| d.event.as_u64().unwrap() as u32)
            .collect();
        let failing: Vec<u32> = (0..BACKLOG).filter(|n| n % 20 == 0).collect();
        assert!(
            dead_numbers == failing,
            "every dead letter, in order, across pages"
        );
        assert_eq!(pool.replay(None).await.unwrap(), failing.len() as u32);
        rt.settle().await.unwrap();
        let seen = job.seen.lock().unwrap().clone();
        assert!(
            seen[expected.len()..] == failing[..],
            "replays ran once each, in order"
        );
        assert!(pool.all_dead_letters().await.unwrap().is_empty());
        let drained = cached_rows(&rt).await;
        assert!(
            drained <= CACHED_ROWS_AT_MOST,
            "{drained} rows cached after the drain"
        );
        rt.shutdown().await;

        // Events without ids leave nothing behind once done: the pool's metadata and record.
        assert!(
            rows_in_file(&path) <= 2,
            "{} rows left",
            rows_in_file(&path)
        );
    });
}

#[test]
fn ids_of_a_big_instance_are_still_deduplicated_and_cancelled() {
    futures::executor::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let job = Numbers::default();
        let rt = open(&path, &job);
        let client = rt.client();
        let pool = client.worker_pool::<Numbers>();
        pool.pause_all().await.unwrap();
        let with_id = |n: u32| EnqueueRequest::new().event_id(format!("e{n}"));
        for n in 1..=IDS {
            let queued = pool.enqueue_with(&n, with_id(n)).await.unwrap();
            assert!(!queued.duplicate);
        }
        for n in (1..=IDS).rev() {
            let again = pool.enqueue_with(&n, with_id(n)).await.unwrap();
            assert!(again.duplicate, "e{n} was queued before");
        }
        assert!(pool.cancel("e1500").await.unwrap());
        assert!(!pool.cancel("e1500").await.unwrap());
        let live = cached_rows(&rt).await;
        assert!(live <= CACHED_ROWS_AT_MOST, "{live} rows cached");
        pool.resume_all().await.unwrap();
        rt.settle().await.unwrap();
        let expected: Vec<u32> = (1..=IDS).filter(|n| n % 20 != 0 && *n != 1500).collect();
        assert!(
            *job.seen.lock().unwrap() == expected,
            "each once, e1500 never"
        );
        rt.shutdown().await;
    });
}
