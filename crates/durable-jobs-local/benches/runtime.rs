//! Throughput, lateness, memory and restart figures of the embedded runtime, on a SQLite
//! file with `synchronous = NORMAL`.
//!
//! `cargo bench -p durable-jobs-local --bench runtime` runs them all at full scale;
//! `BENCH_SCALE=0.1` scales every count down; `cargo bench ... -- drain enqueue` runs a few.
//!
//! Before the throughput figures it measures plain SQLite on the same disk and settings
//! (rusqlite, WAL, `synchronous = NORMAL`) doing the work of one job as one insert and one
//! delete, 100 jobs per transaction; it ends with a table of every throughput figure beside
//! its ratio to that baseline and the ratio aimed at. Machines differ, the ratio less.
//! `latency` sends single enqueues at half the concurrent enqueue rate just measured and
//! prints the p50 and p99 time to their acknowledgement; `debounce` measures single adds,
//! then `add_many` in calls of 1,000.
//!
//! Two more sections run only when named:
//!
//! - `backlog` fills one paused WorkerPool instance with 1M events (scaled by
//!   `BENCH_SCALE`) from concurrent callers and prints the enqueue rate; the RSS growth
//!   and heap per pending event, right after the enqueues and again after a restart once
//!   the instance is loaded (measured in a fresh process); the file's size; and the time
//!   from the start of `open` to the first execution after `resume_all`, next to the
//!   same time for 1,000 pending and the ratio of the two. The rest of the backlog is
//!   never run.
//! - `soak` runs steady load for `SOAK_SECONDS` (600 by default): WorkerPool enqueues (one
//!   in ten with its own id, remembered for a short retention) and Debounce adds on a
//!   few thousand keys, as fast as callers can while the pool keeps its backlog under
//!   1,000. Every 30 s (or a twentieth of a shorter run) it prints elapsed time, RSS, file
//!   size (database and `-wal`, then the `-wal` alone), enqueue, add and flush rates over
//!   the interval, the pending backlog and the most a flush ran past its due time; at the
//!   end, the RSS spread after the first minute (or tenth of the run) and the file size
//!   over the last half. Steady state shows as a flat RSS and file.
//!
//! `cargo bench -p durable-jobs-local --bench runtime -- backlog` and
//! `SOAK_SECONDS=60 cargo bench -p durable-jobs-local --bench runtime -- soak` run them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use durable_jobs::{
    Continuous, ContinuousContext, Debounce, DebounceContext, EnqueueRequest, Registry, Schedule,
    WorkerPool, WorkerPoolContext,
};
use durable_jobs_local::LocalRuntime;
use futures::stream::{self, StreamExt};

/// Counts live heap bytes, so memory per instance is measured without allocator noise.
struct Counting;
static HEAP: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HEAP.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn scaled(n: usize) -> usize {
    let scale: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * scale) as usize).max(1)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<usize>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn per_second(n: usize, d: Duration) -> String {
    format!("{:>9.0}/s", n as f64 / d.as_secs_f64())
}

// ---- jobs ---------------------------------------------------------------------------

static PROCESSED: AtomicU64 = AtomicU64::new(0);

struct Noop;
impl WorkerPool for Noop {
    type Event = u32;
    type Error = String;
    fn concurrency(&self) -> u32 {
        4
    }
    async fn execute(&self, _: &WorkerPoolContext<u32>) -> Result<(), String> {
        PROCESSED.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

struct Adds;
impl Debounce for Adds {
    type Event = u32;
    type State = u32;
    type Error = String;
    fn flush_after(&self) -> Duration {
        Duration::from_secs(3600)
    }
    async fn execute(&self, _: &DebounceContext<u32>) -> Result<(), String> {
        Ok(())
    }
}

/// Records how late each flush ran against its due time (`started_at + flush_after`).
struct Late(Arc<Mutex<Vec<i64>>>);
const LATE_FLUSH_MS: i64 = 1000;
impl Debounce for Late {
    type Event = u32;
    type State = u32;
    type Error = String;
    fn flush_after(&self) -> Duration {
        Duration::from_millis(LATE_FLUSH_MS as u64)
    }
    async fn execute(&self, ctx: &DebounceContext<u32>) -> Result<(), String> {
        let due_us = (ctx.started_at() + LATE_FLUSH_MS) * 1000;
        if let Ok(mut v) = self.0.lock() {
            v.push(now_us() - due_us);
        }
        Ok(())
    }
}

struct Idle;
impl Continuous for Idle {
    type State = u32;
    type Error = String;
    fn schedule(&self) -> Schedule {
        Schedule::every(Duration::from_secs(3600))
    }
    fn start_immediately(&self) -> bool {
        false
    }
    async fn execute(&self, _: &mut ContinuousContext<u32>) -> Result<(), String> {
        Ok(())
    }
}

static CANARY_SENT: Mutex<Option<mpsc::Sender<()>>> = Mutex::new(None);
static CANARY_AT: AtomicI64 = AtomicI64::new(0);

struct Canary;
impl Continuous for Canary {
    type State = u32;
    type Error = String;
    fn schedule(&self) -> Schedule {
        Schedule::every(Duration::from_secs(1))
    }
    fn start_immediately(&self) -> bool {
        false
    }
    async fn execute(&self, _: &mut ContinuousContext<u32>) -> Result<(), String> {
        CANARY_AT.store(now_us(), Ordering::SeqCst);
        if let Some(tx) = CANARY_SENT.lock().ok().and_then(|g| g.clone()) {
            let _ = tx.send(());
        }
        Ok(())
    }
}

/// Hands the first execution after a restart its signal; later executions find it taken.
static FIRST_RUN: Mutex<Option<mpsc::Sender<()>>> = Mutex::new(None);

/// One instance, so that a whole backlog waits on it.
struct Backlog;
impl WorkerPool for Backlog {
    type Event = u32;
    type Error = String;
    fn concurrency(&self) -> u32 {
        1
    }
    async fn execute(&self, _: &WorkerPoolContext<u32>) -> Result<(), String> {
        if let Some(tx) = FIRST_RUN.lock().ok().and_then(|mut g| g.take()) {
            let _ = tx.send(());
        }
        Ok(())
    }
}

/// How long `soak` runs: `SOAK_SECONDS`, 600 by default.
fn soak_seconds() -> u64 {
    env_number("SOAK_SECONDS").map_or(600, |s| s.max(1) as u64)
}

/// Short enough that the records kept for caller-given ids expire and are swept well
/// within the run, so that what the soak shows is the steady state with them included.
fn soak_retention() -> Duration {
    Duration::from_secs(30).min(Duration::from_secs(soak_seconds()) / 4)
}

struct SoakPool(Duration);
impl WorkerPool for SoakPool {
    type Event = u64;
    type Error = String;
    fn concurrency(&self) -> u32 {
        4
    }
    fn retention(&self) -> Duration {
        self.0
    }
    async fn execute(&self, _: &WorkerPoolContext<u64>) -> Result<(), String> {
        Ok(())
    }
}

static SOAK_FLUSHES: AtomicU64 = AtomicU64::new(0);
/// How late, at most, flushes ran since the last report (ms), `i64::MIN` if none ran.
static SOAK_FLUSH_LATE_MS: AtomicI64 = AtomicI64::new(i64::MIN);
const SOAK_FLUSH_AFTER_MS: i64 = 5000;

/// Flushes a few seconds after each batch starts, so that flush alarms run all along.
struct SoakAdds(Duration);
impl Debounce for SoakAdds {
    type Event = u64;
    type State = u64;
    type Error = String;
    fn flush_after(&self) -> Duration {
        Duration::from_millis(SOAK_FLUSH_AFTER_MS as u64)
    }
    fn retention(&self) -> Duration {
        self.0
    }
    async fn execute(&self, ctx: &DebounceContext<u64>) -> Result<(), String> {
        let late = now_us() / 1000 - (ctx.started_at() + SOAK_FLUSH_AFTER_MS);
        SOAK_FLUSH_LATE_MS.fetch_max(late, Ordering::Relaxed);
        SOAK_FLUSHES.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn registry() -> Registry {
    Registry::builder()
        .worker_pool("noop", Noop)
        .worker_pool("backlog", Backlog)
        .worker_pool("soak", SoakPool(soak_retention()))
        .debounce("soak-adds", SoakAdds(soak_retention()))
        .debounce("adds", Adds)
        .debounce("late", Late(LATENESS.clone()))
        .continuous("idle", Idle)
        .continuous("canary", Canary)
        .build()
        .expect("registry")
}

static LATENESS: std::sync::LazyLock<Arc<Mutex<Vec<i64>>>> = std::sync::LazyLock::new(Arc::default);

// ---- scenarios ------------------------------------------------------------------------

const CONCURRENT_CALLERS: usize = 512;

// ---- the raw baseline ----------------------------------------------------------------

/// Jobs per transaction in the baseline.
const BASELINE_GROUP: usize = 100;

/// Plain SQLite doing the storage work of `n` jobs: each job's row inserted, then deleted,
/// `BASELINE_GROUP` jobs per transaction, on a file of its own in `dir`. Answers jobs/s.
fn sqlite_baseline(dir: &std::path::Path, n: usize) -> f64 {
    let path = dir.join("baseline.db");
    let conn = rusqlite::Connection::open(&path).expect("open the baseline file");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         CREATE TABLE jobs (id INTEGER PRIMARY KEY, payload BLOB NOT NULL);",
    )
    .expect("baseline schema");
    let payload = vec![7u8; 64];
    let t = Instant::now();
    let ids: Vec<i64> = (0..n as i64).collect();
    for group in ids.chunks(BASELINE_GROUP) {
        let tx = conn.unchecked_transaction().expect("begin");
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO jobs (id, payload) VALUES (?1, ?2)")
                .expect("prepare");
            for id in group {
                insert
                    .execute(rusqlite::params![id, payload])
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    for group in ids.chunks(BASELINE_GROUP) {
        let tx = conn.unchecked_transaction().expect("begin");
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM jobs WHERE id = ?1")
                .expect("prepare");
            for id in group {
                delete.execute([id]).expect("delete");
            }
        }
        tx.commit().expect("commit");
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    drop(conn);
    remove_database(&path);
    rate
}

/// A throughput figure, for the closing table.
struct Figure {
    name: &'static str,
    per_second: f64,
    /// The ratio to the baseline aimed at, if one is.
    goal: Option<f64>,
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn print_ratios(baseline: f64, figures: &[Figure]) {
    println!();
    println!("figure                             runtime   baseline   ratio   goal");
    for f in figures {
        let goal = f.goal.map_or("-".to_string(), |g| format!(">= {g:.2}"));
        println!(
            "{:<32} {:>9.0}/s {:>8.0}/s {:>7.3}   {goal}",
            f.name,
            f.per_second,
            baseline,
            f.per_second / baseline,
        );
    }
}

async fn drain(rt: &LocalRuntime, figures: &mut Vec<Figure>) {
    let n = scaled(100_000);
    let client = rt.client();
    let pool = client.worker_pool::<Noop>();
    pool.pause_all().await.expect("pause");
    let t = Instant::now();
    stream::iter(0..n as u32)
        .for_each_concurrent(CONCURRENT_CALLERS, |i| {
            let pool = client.worker_pool::<Noop>();
            async move {
                pool.enqueue(&i).await.expect("enqueue");
            }
        })
        .await;
    let enqueue = t.elapsed();
    PROCESSED.store(0, Ordering::SeqCst);
    let t = Instant::now();
    pool.resume_all().await.expect("resume");
    let mut last = (0, Instant::now());
    while (PROCESSED.load(Ordering::Relaxed) as usize) < n {
        std::thread::sleep(Duration::from_millis(2));
        let done = PROCESSED.load(Ordering::Relaxed);
        if done != last.0 {
            last = (done, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(10) {
            eprintln!("drain stalled at {done} of {n}: {:?}", pool.status().await);
            std::process::exit(1);
        }
    }
    let drain = t.elapsed();
    println!(
        "enqueue (paused pool, {CONCURRENT_CALLERS} concurrent callers, {n} events): {}",
        per_second(n, enqueue)
    );
    println!(
        "drain   (no-op handler, concurrency 4, {n} events):               {}",
        per_second(n, drain)
    );
    figures.push(Figure {
        name: "drain",
        per_second: rate(n, drain),
        goal: Some(0.25),
    });
    figures.push(Figure {
        name: "enqueue (paused pool)",
        per_second: rate(n, enqueue),
        goal: Some(0.15),
    });
}

async fn enqueue(rt: &LocalRuntime, figures: &mut Vec<Figure>) {
    let n = scaled(100_000);
    let client = rt.client();
    PROCESSED.store(0, Ordering::SeqCst);
    let t = Instant::now();
    stream::iter(0..n as u32)
        .for_each_concurrent(CONCURRENT_CALLERS, |i| {
            let pool = client.worker_pool::<Noop>();
            async move {
                let options = EnqueueRequest::new().partition_key(format!("tenant-{}", i % 64));
                pool.enqueue_with(&i, options).await.expect("enqueue");
            }
        })
        .await;
    let took = t.elapsed();
    println!(
        "enqueue (while draining, {CONCURRENT_CALLERS} concurrent callers, {n} events):  {}",
        per_second(n, took)
    );
    figures.push(Figure {
        name: "enqueue (while draining)",
        per_second: rate(n, took),
        goal: Some(0.15),
    });
    rt.settle().await.ok();
}

/// `enqueue_many` in calls of 1,000 events, a few callers at once, into a paused pool
/// (drained afterwards, so the next section starts empty).
async fn enqueue_many(rt: &LocalRuntime, figures: &mut Vec<Figure>) {
    const BATCH: usize = 1000;
    let n = scaled(100_000).max(BATCH);
    let client = rt.client();
    let pool = client.worker_pool::<Noop>();
    pool.pause_all().await.expect("pause");
    let t = Instant::now();
    stream::iter((0..n).step_by(BATCH))
        .for_each_concurrent(4, |first| {
            let pool = client.worker_pool::<Noop>();
            async move {
                let events: Vec<(u32, EnqueueRequest)> = (first..(first + BATCH).min(n))
                    .map(|i| (i as u32, EnqueueRequest::new()))
                    .collect();
                for result in pool.enqueue_many(&events).await.expect("enqueue_many") {
                    result.expect("an event of enqueue_many");
                }
            }
        })
        .await;
    let took = t.elapsed();
    println!(
        "enqueue_many (paused pool, calls of {BATCH}, 4 callers, {n} events):  {}",
        per_second(n, took)
    );
    figures.push(Figure {
        name: "enqueue_many (1,000 a call)",
        per_second: rate(n, took),
        goal: Some(0.5),
    });
    PROCESSED.store(0, Ordering::SeqCst);
    pool.resume_all().await.expect("resume");
    rt.settle().await.ok();
}

/// Acknowledgement latency of single enqueues sent at a steady `rate`, while the pool
/// drains them. Calls leave on a fixed schedule whether or not earlier ones have been
/// answered, and each latency counts from the call's planned start, so a stall shows in
/// the figures instead of slowing the sender down.
async fn latency(rt: &LocalRuntime, rate: f64) {
    const SECONDS: f64 = 5.0;
    const TICK: Duration = Duration::from_millis(1);
    let total = (rate * SECONDS) as usize;
    let per_tick = (rate / 1000.0).max(1.0);
    let client = rt.client();
    let mut latencies = Vec::with_capacity(total);
    let sender = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    let start = Instant::now();
    sender.block_on(async {
        let mut calls = stream::FuturesUnordered::new();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut sent = 0usize;
        let mut tick = 0f64;
        while sent < total || !calls.is_empty() {
            tokio::select! {
                _ = ticker.tick(), if sent < total => {
                    tick += 1.0;
                    let due = ((tick * per_tick) as usize).min(total);
                    let planned = start + TICK.mul_f64(tick - 1.0);
                    for i in sent..due {
                        let pool = client.worker_pool::<Noop>();
                        calls.push(async move {
                            let options =
                                EnqueueRequest::new().partition_key(format!("tenant-{}", i % 64));
                            pool.enqueue_with(&(i as u32), options).await.expect("enqueue");
                            planned.elapsed().as_micros() as i64
                        });
                    }
                    sent = due;
                }
                Some(took) = calls.next(), if !calls.is_empty() => {
                    latencies.push(took);
                }
            }
        }
    });
    let mut v = latencies;
    v.sort_unstable();
    let pct = |p: f64| {
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "enqueue latency at {rate:.0}/s, half the concurrent rate ({} calls): p50 {:.2} ms, \
         p99 {:.2} ms, max {:.2} ms",
        v.len(),
        pct(0.50),
        pct(0.99),
        v.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    rt.settle().await.ok();
}

async fn debounce(rt: &LocalRuntime, figures: &mut Vec<Figure>) {
    let n = scaled(100_000);
    let keys = scaled(10_000);
    let client = rt.client();
    let t = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(CONCURRENT_CALLERS, |i| {
            let adds = client.debounce::<Adds>();
            async move {
                adds.add(&format!("key-{}", i % keys), &(i as u32))
                    .await
                    .expect("add");
            }
        })
        .await;
    let took = t.elapsed();
    println!(
        "debounce adds ({keys} keys, {n} adds):                             {}",
        per_second(n, took)
    );
    figures.push(Figure {
        name: "debounce adds",
        per_second: rate(n, took),
        goal: Some(0.15),
    });
    debounce_add_many(rt, figures).await;
}

/// `add_many` in calls of 1,000 events over the same keys, a few callers at once: each
/// call sends one request per key it names.
async fn debounce_add_many(rt: &LocalRuntime, figures: &mut Vec<Figure>) {
    const BATCH: usize = 1000;
    let n = scaled(100_000).max(BATCH);
    let keys = scaled(10_000).max(1);
    let client = rt.client();
    let t = Instant::now();
    stream::iter((0..n).step_by(BATCH))
        .for_each_concurrent(4, |first| {
            let adds = client.debounce::<Adds>();
            async move {
                let names: Vec<(String, u32)> = (first..(first + BATCH).min(n))
                    .map(|i| (format!("key-{}", i % keys), i as u32))
                    .collect();
                let events = names.iter().map(|(key, event)| (key.as_str(), event, None));
                for result in adds.add_many(events).await.expect("add_many") {
                    result.expect("an event of add_many");
                }
            }
        })
        .await;
    let took = t.elapsed();
    println!(
        "debounce add_many (calls of {BATCH}, 4 callers, {keys} keys, {n} adds):     {}",
        per_second(n, took)
    );
    figures.push(Figure {
        name: "debounce add_many (1,000 a call)",
        per_second: rate(n, took),
        goal: None,
    });
}

async fn lateness(rt: &LocalRuntime) {
    let rate = 10_000usize;
    let seconds = 5usize;
    let total = scaled(rate * seconds);
    let client = rt.client();
    LATENESS.lock().expect("lock").clear();
    let t = Instant::now();
    let per_tick = (total / (seconds * 100)).max(1);
    let mut sent = 0usize;
    let mut tick = 0u32;
    while sent < total {
        // 100 ticks a second, each adding to fresh keys: `rate` new flush alarms a second.
        let batch: Vec<usize> = (sent..(sent + per_tick).min(total)).collect();
        sent += batch.len();
        stream::iter(batch)
            .for_each_concurrent(CONCURRENT_CALLERS, |i| {
                let late = client.debounce::<Late>();
                async move {
                    late.add(&format!("k{i}"), &1).await.expect("add");
                }
            })
            .await;
        tick += 1;
        let next = t + Duration::from_millis(10) * tick;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while LATENESS.lock().expect("lock").len() < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut v = LATENESS.lock().expect("lock").clone();
    v.sort_unstable();
    let pct = |p: f64| {
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "alarm lateness at {} alarms/s ({} flushes): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        total / seconds,
        v.len(),
        pct(0.50) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0,
        v.last().copied().unwrap_or(0) as f64 / 1000.0
    );
}

fn memory_and_restart(path: &std::path::Path) {
    let n = scaled(1_000_000);
    let heap_before = HEAP.load(Ordering::SeqCst);
    let rss_before = rss_bytes();
    let rt = LocalRuntime::builder(registry())
        .path(path)
        .evict_after(Duration::from_millis(500))
        .open()
        .expect("open");
    let client = rt.client();
    let t = Instant::now();
    futures::executor::block_on(async {
        stream::iter(0..n)
            .for_each_concurrent(CONCURRENT_CALLERS, |i| {
                let idle = client.continuous::<Idle>();
                async move {
                    idle.start(&format!("user-{i}"), &0).await.expect("start");
                }
            })
            .await;
    });
    let started = t.elapsed();
    // Let every instance go idle and leave memory.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let stats = futures::executor::block_on(rt.stats()).expect("stats");
        if stats.live_instances == 0 || Instant::now() > deadline {
            break;
        }
    }
    let heap = HEAP.load(Ordering::SeqCst).saturating_sub(heap_before);
    let rss = rss_bytes().saturating_sub(rss_before);
    println!(
        "start {n} Continuous instances:                                  {}",
        per_second(n, started)
    );
    println!(
        "memory per idle Continuous instance ({n} scheduled): {:.1} bytes of heap ({} bytes RSS growth in all, allocator caches included)",
        heap as f64 / n as f64,
        rss
    );

    // A canary due during the downtime: time from open to its alarm running.
    futures::executor::block_on(client.continuous::<Canary>().start("c", &0)).expect("canary");
    futures::executor::block_on(rt.shutdown());
    std::thread::sleep(Duration::from_millis(1500));
    let (tx, rx) = mpsc::channel();
    *CANARY_SENT.lock().expect("lock") = Some(tx);
    let t = Instant::now();
    let rt = LocalRuntime::open(path, registry()).expect("reopen");
    let opened = t.elapsed();
    rx.recv_timeout(Duration::from_secs(60))
        .expect("canary alarm after restart");
    let first = t.elapsed();
    println!(
        "restart with {n} scheduled: open {:.1} ms, first (overdue) alarm ran {:.1} ms after open began",
        opened.as_secs_f64() * 1000.0,
        first.as_secs_f64() * 1000.0
    );
    futures::executor::block_on(rt.shutdown());
}

/// Fills `path` with `n` pending events on the paused one-instance pool and shuts down.
/// Returns the time the enqueues took and the RSS and heap growth from before the open.
fn fill_backlog(path: &std::path::Path, n: usize) -> (Duration, usize, usize) {
    let heap_before = HEAP.load(Ordering::SeqCst);
    let rss_before = rss_bytes();
    let rt = LocalRuntime::builder(registry())
        .path(path)
        .open()
        .expect("open");
    let client = rt.client();
    let took = futures::executor::block_on(async {
        client
            .worker_pool::<Backlog>()
            .pause_all()
            .await
            .expect("pause");
        let t = Instant::now();
        stream::iter(0..n as u32)
            .for_each_concurrent(CONCURRENT_CALLERS, |i| {
                let pool = client.worker_pool::<Backlog>();
                async move {
                    pool.enqueue(&i).await.expect("enqueue");
                }
            })
            .await;
        t.elapsed()
    });
    let rss = rss_bytes().saturating_sub(rss_before);
    let heap = HEAP.load(Ordering::SeqCst).saturating_sub(heap_before);
    futures::executor::block_on(rt.shutdown());
    (took, rss, heap)
}

/// Reopens a filled backlog, resumes it and returns how long after the start of `open` the
/// first event ran, with the times `open` and `resume_all` returned.
fn first_execution_after_restart(path: &std::path::Path) -> (Duration, Duration, Duration) {
    let (tx, rx) = mpsc::channel();
    *FIRST_RUN.lock().expect("lock") = Some(tx);
    let t = Instant::now();
    let rt = LocalRuntime::builder(registry())
        .path(path)
        .open()
        .expect("reopen");
    let opened = t.elapsed();
    let client = rt.client();
    futures::executor::block_on(client.worker_pool::<Backlog>().resume_all()).expect("resume");
    let resumed = t.elapsed();
    rx.recv_timeout(Duration::from_secs(600))
        .expect("first execution after restart");
    let first = t.elapsed();
    // The rest of the backlog is left pending: only the first execution is timed.
    futures::executor::block_on(rt.shutdown());
    (opened, resumed, first)
}

/// Run in a fresh process by `backlog`: the allocator keeps the pages the first load
/// freed, so a second load in the same process would reuse them and hide its own cost.
fn backlog_reload(path: &std::path::Path, n: usize) {
    let heap_before = HEAP.load(Ordering::SeqCst);
    let rss_before = rss_bytes();
    let t = Instant::now();
    let rt = LocalRuntime::builder(registry())
        .path(path)
        .open()
        .expect("reopen");
    let client = rt.client();
    // The instance is loaded by the first request that reaches it.
    let status =
        futures::executor::block_on(client.worker_pool::<Backlog>().status()).expect("status");
    let loaded = t.elapsed();
    let rss = rss_bytes().saturating_sub(rss_before);
    let heap = HEAP.load(Ordering::SeqCst).saturating_sub(heap_before);
    if status.pending != n as u64 {
        eprintln!(
            "backlog after restart: {} pending, {n} expected",
            status.pending
        );
        std::process::exit(1);
    }
    println!(
        "memory per pending event after a restart (fresh process, loaded by status in {:.0} ms): {:.1} bytes RSS growth, {:.1} bytes heap",
        loaded.as_secs_f64() * 1000.0,
        rss as f64 / n as f64,
        heap as f64 / n as f64
    );
    futures::executor::block_on(rt.shutdown());
}

fn backlog(dir: &std::path::Path) {
    let n = scaled(1_000_000);
    let small = 1_000;
    let path = dir.join("backlog.db");
    let (took, rss, heap) = fill_backlog(&path, n);
    println!(
        "enqueue (one paused instance, {CONCURRENT_CALLERS} concurrent callers, {n} events):  {}",
        per_second(n, took)
    );
    println!(
        "memory per pending event ({n} pending on one instance): {:.1} bytes RSS growth, {:.1} bytes heap",
        rss as f64 / n as f64,
        heap as f64 / n as f64
    );
    let file = file_size(&path);
    println!(
        "file with {n} pending, after shutdown: {:.1} MB ({:.1} bytes per event)",
        megabytes(file),
        file as f64 / n as f64
    );
    let reload = std::process::Command::new(std::env::current_exe().expect("own path"))
        .arg(RELOAD_ARG)
        .arg(&path)
        .arg(n.to_string())
        .status()
        .expect("start the reload process");
    if !reload.success() {
        eprintln!("backlog reload process failed: {reload}");
        std::process::exit(1);
    }
    let (opened, resumed, first) = first_execution_after_restart(&path);
    println!(
        "restart with {n} pending: open {:.1} ms, resume_all returned {:.1} ms and the first event ran {:.1} ms after open began",
        opened.as_secs_f64() * 1000.0,
        resumed.as_secs_f64() * 1000.0,
        first.as_secs_f64() * 1000.0
    );
    let small_path = dir.join("backlog-small.db");
    fill_backlog(&small_path, small);
    let (_, _, small_first) = first_execution_after_restart(&small_path);
    println!(
        "restart with {small} pending: the first event ran {:.1} ms after open began; {n} pending take {:.1}x as long",
        small_first.as_secs_f64() * 1000.0,
        first.as_secs_f64() / small_first.as_secs_f64()
    );
    remove_database(&path);
    remove_database(&small_path);
}

/// Keys the soak's Debounce adds go to.
const SOAK_KEYS: u64 = 2_000;
/// Pending pool events above which the soak's callers wait: the pool must keep up.
const SOAK_MAX_PENDING: u64 = 1_000;

/// One look at the process during the soak.
struct Sample {
    at: Duration,
    rss: usize,
    file: u64,
    wal: u64,
}

/// The database and its write-ahead log, together.
fn file_size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len()) + wal_size(path)
}

/// The write-ahead log alone: it keeps its largest size between checkpoints, so growth
/// there says more about bursts of writes than about what is stored.
fn wal_size(path: &std::path::Path) -> u64 {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).map_or(0, |m| m.len())
}

fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn soak(path: &std::path::Path) {
    let total = Duration::from_secs(soak_seconds());
    let every = Duration::from_secs(30).min(total / 20);
    // Memory is expected to grow while caches and the file fill; the spread is taken after.
    let warm_up = Duration::from_secs(60).min(total / 10);
    let rt = LocalRuntime::builder(registry())
        .path(path)
        .open()
        .expect("open");
    let driver = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("driver");
    println!(
        "soak for {} s: {CONCURRENT_CALLERS} callers, each a pool enqueue (1 in 10 with its own id, kept {} s) then a Debounce add ({SOAK_KEYS} keys, flushed after {} s); callers wait while more than {SOAK_MAX_PENDING} events are pending",
        total.as_secs(),
        soak_retention().as_secs(),
        SOAK_FLUSH_AFTER_MS / 1000
    );
    let (samples, enqueued, added) = driver.block_on(soak_load(&rt, path, total, every));
    driver.block_on(rt.shutdown());

    let secs = total.as_secs_f64();
    println!(
        "soak averages: {:.0} enqueues/s, {:.0} adds/s, {:.0} flushes/s",
        enqueued as f64 / secs,
        added as f64 / secs,
        SOAK_FLUSHES.load(Ordering::Relaxed) as f64 / secs
    );
    let settled: Vec<&Sample> = samples.iter().filter(|s| s.at >= warm_up).collect();
    let min = settled.iter().map(|s| s.rss).min().unwrap_or(0);
    let max = settled.iter().map(|s| s.rss).max().unwrap_or(0);
    println!(
        "RSS after the first {} s: min {:.1} MB, max {:.1} MB, spread {:.1} MB",
        warm_up.as_secs(),
        megabytes(min as u64),
        megabytes(max as u64),
        megabytes((max - min) as u64)
    );
    let half: Vec<&Sample> = samples.iter().filter(|s| s.at >= total / 2).collect();
    if let (Some(first), Some(last)) = (half.first(), half.last()) {
        println!(
            "file size over the last half: {:.1} MB (wal {:.1}) at {:.0} s, {:.1} MB (wal {:.1}) at {:.0} s ({:+.1} MB)",
            megabytes(first.file),
            megabytes(first.wal),
            first.at.as_secs_f64(),
            megabytes(last.file),
            megabytes(last.wal),
            last.at.as_secs_f64(),
            megabytes(last.file) - megabytes(first.file)
        );
    }
    remove_database(path);
}

/// Runs the soak's callers for `total`, printing a line every `every`; returns one sample
/// a second (or a share of `every` if shorter) and the enqueues and adds made.
async fn soak_load(
    rt: &LocalRuntime,
    path: &std::path::Path,
    total: Duration,
    every: Duration,
) -> (Vec<Sample>, u64, u64) {
    let client = rt.client();
    let enqueued = &AtomicU64::new(0);
    let added = &AtomicU64::new(0);
    let pending = &AtomicU64::new(0);
    let next = &AtomicU64::new(0);
    let stop = &AtomicBool::new(false);
    let (gate, open) = tokio::sync::watch::channel(true);
    let client = &client;

    let callers = futures::future::join_all((0..CONCURRENT_CALLERS).map(|_| {
        let mut open = open.clone();
        async move {
            loop {
                let _ = open.wait_for(|open| *open).await;
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let pool = client.worker_pool::<SoakPool>();
                if i.is_multiple_of(10) {
                    let options = EnqueueRequest::new().event_id(format!("soak-{i}"));
                    pool.enqueue_with(&i, options).await.expect("enqueue");
                } else {
                    pool.enqueue(&i).await.expect("enqueue");
                }
                enqueued.fetch_add(1, Ordering::Relaxed);
                client
                    .debounce::<SoakAdds>()
                    .add(&format!("key-{}", i % SOAK_KEYS), &i)
                    .await
                    .expect("add");
                added.fetch_add(1, Ordering::Relaxed);
            }
        }
    }));

    // Holds the callers back while the pool is behind, so the rate settles at its drain rate.
    let monitor = async {
        let pool = client.worker_pool::<SoakPool>();
        while !stop.load(Ordering::Relaxed) {
            let now = pool.status().await.expect("status").pending;
            pending.store(now, Ordering::Relaxed);
            let keep_up = now <= SOAK_MAX_PENDING;
            gate.send_if_modified(|open| std::mem::replace(open, keep_up) != keep_up);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        gate.send_replace(true);
    };

    let reporter = async {
        let ticks_per_line = (every.as_secs_f64().ceil() as u32).max(1);
        let tick = every / ticks_per_line;
        let start = tokio::time::Instant::now();
        let mut samples = Vec::new();
        let mut last = (Duration::ZERO, 0u64, 0u64, 0u64);
        println!(
            "{:>9} {:>9} {:>9} {:>9} {:>11} {:>9} {:>9} {:>10} {:>15}",
            "elapsed",
            "RSS MB",
            "file MB",
            "wal MB",
            "enqueue/s",
            "adds/s",
            "pending",
            "flushes/s",
            "late max ms"
        );
        for n in 1.. {
            let at = tick * n;
            if at > total {
                break;
            }
            tokio::time::sleep_until(start + at).await;
            let sample = Sample {
                at,
                rss: rss_bytes(),
                file: file_size(path),
                wal: wal_size(path),
            };
            if n % ticks_per_line == 0 {
                let counts = (
                    enqueued.load(Ordering::Relaxed),
                    added.load(Ordering::Relaxed),
                    SOAK_FLUSHES.load(Ordering::Relaxed),
                );
                let secs = (at - last.0).as_secs_f64();
                let late = SOAK_FLUSH_LATE_MS.swap(i64::MIN, Ordering::Relaxed);
                println!(
                    "{:>8.0}s {:>9.1} {:>9.1} {:>9.1} {:>11.0} {:>9.0} {:>9} {:>10.0} {:>15}",
                    at.as_secs_f64(),
                    megabytes(sample.rss as u64),
                    megabytes(sample.file),
                    megabytes(sample.wal),
                    (counts.0 - last.1) as f64 / secs,
                    (counts.1 - last.2) as f64 / secs,
                    pending.load(Ordering::Relaxed),
                    (counts.2 - last.3) as f64 / secs,
                    if late == i64::MIN {
                        "-".to_string()
                    } else {
                        late.to_string()
                    },
                );
                last = (at, counts.0, counts.1, counts.2);
            }
            samples.push(sample);
        }
        stop.store(true, Ordering::Relaxed);
        samples
    };

    let (_, _, samples) = futures::join!(callers, monitor, reporter);
    (
        samples,
        enqueued.load(Ordering::Relaxed),
        added.load(Ordering::Relaxed),
    )
}

/// Deletes a database file with the write-ahead log and shared-memory files beside it.
fn remove_database(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(name);
    }
}

/// The argument that makes the benchmark process measure one reload of a backlog.
const RELOAD_ARG: &str = "--backlog-reload";

fn main() {
    let raw: Vec<String> = std::env::args().collect();
    if raw.get(1).map(String::as_str) == Some(RELOAD_ARG) {
        let path = std::path::PathBuf::from(raw.get(2).expect("path"));
        let n = raw.get(3).and_then(|s| s.parse().ok()).expect("count");
        backlog_reload(&path, n);
        return;
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    // Long or disk-hungry sections run only when named.
    let named = |name: &str| args.iter().any(|a| a == name);
    let dir = std::env::temp_dir().join(format!("durable-jobs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    println!(
        "durable-jobs-local benchmark: SQLite WAL, synchronous NORMAL, {} CPUs",
        num_cpus()
    );

    if ["drain", "enqueue", "latency", "debounce", "lateness"]
        .iter()
        .any(|section| wants(section))
    {
        let baseline = sqlite_baseline(&dir, scaled(1_000_000));
        println!(
            "baseline: plain SQLite, one insert and one delete per job, {BASELINE_GROUP} jobs \
             per transaction: {baseline:.0} jobs/s"
        );
        let rt = throughput_runtime(&dir.join("throughput.db"));
        let mut figures = Vec::new();
        futures::executor::block_on(async {
            if wants("drain") {
                drain(&rt, &mut figures).await;
            }
            if wants("enqueue") || wants("latency") {
                enqueue(&rt, &mut figures).await;
            }
            if wants("latency") {
                let max = figures.last().map_or(0.0, |f| f.per_second);
                latency(&rt, max / 2.0).await;
            }
            if wants("enqueue") {
                enqueue_many(&rt, &mut figures).await;
            }
            if wants("debounce") {
                debounce(&rt, &mut figures).await;
            }
            if wants("lateness") {
                lateness(&rt).await;
            }
            rt.shutdown().await;
        });
        print_ratios(baseline, &figures);
    }
    if wants("memory") || wants("restart") {
        memory_and_restart(&dir.join("idle.db"));
    }
    if named("backlog") {
        backlog(&dir);
    }
    if named("soak") {
        soak(&dir.join("soak.db"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The runtime the throughput figures use: the defaults, or what `BENCH_USER_CODE_THREADS`,
/// `BENCH_RECORD_ATTEMPTS` (0 or 1) and `BENCH_CLAIM_SIZE` ask for, to price those settings.
fn throughput_runtime(path: &std::path::Path) -> LocalRuntime {
    let mut builder = LocalRuntime::builder(registry()).path(path);
    if let Some(threads) = env_number("BENCH_USER_CODE_THREADS") {
        builder = builder.user_code_threads(threads);
    }
    if let Some(record) = env_number("BENCH_RECORD_ATTEMPTS") {
        builder = builder.record_attempts_at_start(record != 0);
    }
    if let Some(events) = env_number("BENCH_CLAIM_SIZE") {
        builder = builder.claim_size(events);
    }
    println!(
        "settings: user-code threads {}, attempts recorded at start {}, claim size {}",
        std::env::var("BENCH_USER_CODE_THREADS").unwrap_or_else(|_| "default".into()),
        std::env::var("BENCH_RECORD_ATTEMPTS").unwrap_or_else(|_| "default".into()),
        std::env::var("BENCH_CLAIM_SIZE").unwrap_or_else(|_| "default".into()),
    );
    builder.open().expect("open")
}

fn env_number(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.parse().ok()
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
