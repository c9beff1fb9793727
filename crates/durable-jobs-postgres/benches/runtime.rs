//! Throughput and alarm lateness of the PostgreSQL runtime on a real server, each figure
//! beside a raw PostgreSQL baseline measured in the same run on the same server.
//!
//! `cargo bench -p durable-jobs-postgres --bench runtime` runs every section;
//! `cargo bench ... -- drain lateness` runs some; `BENCH_SCALE=0.1` scales every count.
//!
//! The server is the one `DATABASE_URL` names (the run gets a fresh database there, dropped
//! at the end), or else a local one started for the run with PostgreSQL's default
//! durability (`TestServer::local_durable`): every commit is synced to disk before it is
//! acknowledged, as in production. The server's version and settings are printed first,
//! with the time one commit takes on one connection, which bounds what a single sequence
//! of transactions can do.
//!
//! Sections, each with its baseline:
//!
//! - `drain`: 20,000 events enqueued into a paused WorkerPool of 8 instances, then
//!   resumed; events/s until all have run. Baseline: the same number of rows inserted, one
//!   transaction each, then taken by concurrent workers, one `DELETE ... FOR UPDATE SKIP
//!   LOCKED` transaction each, over as many connections as the runtime's pool has.
//! - `enqueue`: 20,000 enqueues from 512 concurrent callers (64 partition keys) while the
//!   pool drains; enqueues/s. Baseline: concurrent single-row inserts, one transaction
//!   each, over as many connections.
//! - `debounce`: 20,000 Debounce adds over 2,000 keys from 512 concurrent callers; adds/s.
//!   Baseline: concurrent single-row upserts over the same keys.
//! - `lateness`: Debounce flushes due 250 ms after their first add, 200 new ones a second
//!   for 5 s (`BENCH_LATENESS_RATE` sets the rate); p50, p99 and max of the time from due
//!   to `execute`, on the real clock. Baseline: rows with a due time, inserted at the same
//!   rate, taken by one poller that sleeps until the next is due.
//!
//! `drain` and `enqueue` run with one process and again with two: the runtimes run in
//! child processes (this binary run again, told its role by an environment variable) on
//! one schema, and the rate is the two together; their baselines then use twice the
//! connections. After each runtime figure the benchmark prints what the server did per
//! event: transactions, WAL records and bytes, WAL syncs, and the CPU time of the server's
//! processes (a local server's) and of the runtime's; each baseline prints its server CPU
//! time per job too. With `BENCH_PG_STATEMENTS=1`, a
//! local server loads pg_stat_statements and the statements per event are listed too (a
//! `DATABASE_URL` server is used for this when it loads the extension itself).
//! `BENCH_PG_SETTINGS="name=value;name=value"` adds settings to a local server's
//! configuration, to price them.
//!
//! The last lines are a table of every figure beside its baseline, the ratio of the two,
//! and the goal for that figure, then how busy the machine's CPUs were during the run and
//! how much of that was the benchmark itself (the rest was other processes, which make
//! the figures lower), and the load average at the start and the end.

use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use durable_jobs::{
    Debounce, DebounceContext, EnqueueRequest, JobsClient, Registry, WorkerPool, WorkerPoolContext,
};
use durable_jobs_postgres::testing::{unique_name, LocalOptions, TestServer, DATABASE_URL};
use durable_jobs_postgres::tokio_postgres::{self, Client, NoTls, Statement};
use durable_jobs_postgres::{PostgresRuntime, PostgresTransport};
use futures::stream::{self, StreamExt};

/// Instances of the benchmark's pool.
const POOL_CONCURRENCY: u32 = 8;
/// Concurrent callers of enqueue and add (all processes together).
const CALLERS: usize = 512;
/// The runtime's pool size (its default, set explicitly so that the baselines match it).
const CONNECTIONS: usize = 16;
/// Partition keys of the `enqueue` section.
const TENANTS: usize = 64;
/// Bytes of each baseline queue row: about what the runtime stores for a small event.
const PAYLOAD: usize = 100;
/// The flush delay of the `lateness` section.
const LATE_FLUSH_MS: i64 = 250;
/// How long the `lateness` section adds.
const LATENESS_SECONDS: usize = 5;
/// Without progress for this long, a section is reported as stalled and the run ends.
const STALL: Duration = Duration::from_secs(60);

/// Tells a child process its role (its value is the role).
const ROLE_VAR: &str = "DURABLE_JOBS_BENCH_ROLE";
/// The database a worker process connects to.
const URL_VAR: &str = "DURABLE_JOBS_BENCH_URL";
/// The schema a worker process uses.
const SCHEMA_VAR: &str = "DURABLE_JOBS_BENCH_SCHEMA";

fn scaled(n: usize) -> usize {
    let scale: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * scale) as usize).max(1)
}

fn env_number(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.parse().ok()
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// CPU time (µs) process `pid` used, with that of the children it waited for when
/// `children`: fields 14 to 17 of `/proc/{pid}/stat`, in ticks of 10 ms (Linux's USER_HZ).
fn cpu_us(pid: &str, children: bool) -> Option<i64> {
    let fields = stat_fields(pid)?;
    let ticks = |n: usize| fields.get(n)?.parse::<i64>().ok();
    let mut total = ticks(14)? + ticks(15)?;
    if children {
        total += ticks(16)? + ticks(17)?;
    }
    Some(total * 10_000)
}

/// The fields of `/proc/{pid}/stat`, numbered from 1 as in proc(5) (index 0 is empty).
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; it ends at the last `)`.
    let (head, rest) = stat.rsplit_once(')')?;
    let pid_field = head.split_whitespace().next()?.to_owned();
    let mut fields = vec![String::new(), pid_field, String::new()];
    fields.extend(rest.split_whitespace().map(str::to_owned));
    Some(fields)
}

/// CPU time (µs) a single-threaded process has run, to the nanosecond: the first field of
/// `/proc/{pid}/schedstat`. The ticks of `stat` are too coarse for a process that runs
/// for a few ms at a time, as a backend serving short statements does.
fn run_time_us(pid: &str) -> Option<i64> {
    let schedstat = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    let ns: i64 = schedstat.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1000)
}

/// CPU time (µs) of a local server: the postmaster, the backends that ended (which it
/// waited for) and the processes still running under it. `None` for a server elsewhere.
fn server_cpu_us(postmaster: Option<u32>) -> Option<i64> {
    let postmaster = postmaster?.to_string();
    let ended = cpu_us(&postmaster, true)? - cpu_us(&postmaster, false)?;
    let mut total = ended + run_time_us(&postmaster)?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let child = stat_fields(&name).is_some_and(|f| f.get(4) == Some(&postmaster));
        if child {
            total += run_time_us(&name).unwrap_or(0);
        }
    }
    Some(total)
}

/// The whole machine's CPU time so far (µs), from the first line of `/proc/stat`: busy
/// (everything but idle, I/O wait and steal), and stolen by the hypervisor.
fn machine_cpu_us() -> Option<(i64, i64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<i64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let busy = at(0) + at(1) + at(2) + at(5) + at(6);
    Some((busy * 10_000, at(7) * 10_000))
}

/// CPU time (µs) used so far by this process, the workers it waited for, and the local
/// server.
fn own_cpu_us(postmaster: Option<u32>) -> i64 {
    cpu_us("self", true).unwrap_or(0) + server_cpu_us(postmaster).unwrap_or(0)
}

/// How busy the machine was between two readings, and how much of it was this benchmark:
/// what says whether the figures were taken on a quiet machine.
fn machine_line(
    before: (Option<(i64, i64)>, i64),
    after: (Option<(i64, i64)>, i64),
    elapsed: Duration,
) -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let (Some((busy0, steal0)), Some((busy1, steal1))) = (before.0, after.0) else {
        return "machine CPU: unknown".into();
    };
    let capacity = elapsed.as_micros() as f64 * cpus / 100.0;
    let busy = (busy1 - busy0) as f64 / capacity;
    let own = (after.1 - before.1) as f64 / capacity;
    format!(
        "machine CPU over the run ({cpus} CPUs): {busy:.0}% busy, of which this benchmark and its server {own:.0}% and other processes {:.0}%; {:.0}% stolen by the hypervisor",
        (busy - own).max(0.0),
        (steal1 - steal0) as f64 / capacity
    )
}

// ---- jobs ---------------------------------------------------------------------------

/// Executions in this process, and when the last one ran (µs since the epoch).
static PROCESSED: AtomicU64 = AtomicU64::new(0);
static LAST_DONE_US: AtomicI64 = AtomicI64::new(0);

struct Noop;
impl WorkerPool for Noop {
    type Event = u32;
    type Error = String;
    fn concurrency(&self) -> u32 {
        POOL_CONCURRENCY
    }
    async fn execute(&self, _: &WorkerPoolContext<u32>) -> Result<(), String> {
        PROCESSED.fetch_add(1, Ordering::Relaxed);
        LAST_DONE_US.fetch_max(now_us(), Ordering::Relaxed);
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

/// How late each flush of `Late` ran (µs).
static LATENESS: LazyLock<Mutex<Vec<i64>>> = LazyLock::new(Mutex::default);

struct Late;
impl Debounce for Late {
    type Event = u32;
    type State = u32;
    type Error = String;
    fn flush_after(&self) -> Duration {
        Duration::from_millis(LATE_FLUSH_MS as u64)
    }
    async fn execute(&self, ctx: &DebounceContext<u32>) -> Result<(), String> {
        // `started_at` is in ms: the due time is rounded down, by less than 1 ms.
        let due_us = (ctx.started_at() + LATE_FLUSH_MS) * 1000;
        if let Ok(mut v) = LATENESS.lock() {
            v.push(now_us() - due_us);
        }
        Ok(())
    }
}

fn registry() -> Registry {
    Registry::builder()
        .worker_pool("noop", Noop)
        .debounce("adds", Adds)
        .debounce("late", Late)
        .build()
        .expect("registry")
}

/// The runtime every section uses: the defaults but for the schema (and the pool size,
/// which the default is, written out because the baselines use as many connections).
async fn runtime(url: &str, schema: &str) -> PostgresRuntime {
    PostgresRuntime::builder(url, registry())
        .schema(schema)
        .max_connections(CONNECTIONS)
        .connect()
        .await
        .expect("start a runtime")
}

type Jobs = JobsClient<PostgresTransport>;

/// Enqueues events `first..first + count` from `callers` concurrent callers, routed by
/// one of `TENANTS` partition keys when `partitioned`, else round robin.
async fn enqueue_all(client: &Jobs, first: usize, count: usize, callers: usize, partitioned: bool) {
    stream::iter(first..first + count)
        .for_each_concurrent(callers.max(1), |i| {
            let pool = client.worker_pool::<Noop>();
            async move {
                let enqueued = if partitioned {
                    let options =
                        EnqueueRequest::new().partition_key(format!("tenant-{}", i % TENANTS));
                    pool.enqueue_with(&(i as u32), options).await
                } else {
                    pool.enqueue(&(i as u32)).await
                };
                enqueued.expect("enqueue");
            }
        })
        .await;
}

// ---- worker processes -----------------------------------------------------------------

/// A child process running one runtime, driven by lines on its input:
/// `resume` → `resumed`; `progress` → `progress {executions} {last execution µs}`;
/// `enqueue {count} {callers} {first}` → `enqueued {start µs} {end µs}`;
/// `quit` → `bye {CPU time of the process, µs}`.
struct Worker {
    child: Child,
    input: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Worker {
    /// Starts a worker on `schema` and waits until its runtime is connected.
    fn spawn(url: &str, schema: &str) -> Worker {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .env(ROLE_VAR, "worker")
            .env(URL_VAR, url)
            .env(SCHEMA_VAR, schema)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a worker process");
        let input = child.stdin.take().expect("worker input");
        let output = child.stdout.take().expect("worker output");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let worker = Worker {
            child,
            input,
            lines,
        };
        worker.expect("ready", STALL);
        worker
    }

    fn send(&mut self, command: &str) {
        writeln!(self.input, "{command}")
            .and_then(|()| self.input.flush())
            .expect("a worker process ended early");
    }

    /// The words after `reply` in the worker's next line.
    fn expect(&self, reply: &str, timeout: Duration) -> Vec<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                let mut words = line.split_whitespace();
                if words.next() == Some(reply) {
                    return words.map(str::to_owned).collect();
                }
                panic!("a worker process said {line:?}, where {reply:?} was expected");
            }
            Err(_) => panic!("a worker process did not say {reply:?} within {timeout:?}"),
        }
    }

    /// Executions so far, and the time of the last one (µs).
    fn progress(&mut self) -> (u64, i64) {
        self.send("progress");
        let words = self.expect("progress", STALL);
        let number = |i: usize| words.get(i).and_then(|w| w.parse().ok()).unwrap_or(0);
        (number(0) as u64, number(1))
    }

    /// Shuts the runtime down and waits for the process to exit; returns the CPU time it
    /// used (µs).
    fn quit(mut self) -> i64 {
        self.send("quit");
        let words = self.expect("bye", STALL);
        let _ = self.child.wait();
        words.first().and_then(|w| w.parse().ok()).unwrap_or(0)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // A run that ends early leaves no process behind; after `quit` it has exited.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `workers` until they executed `n` events together; returns the time of the last
/// execution (µs).
fn wait_for_executions(workers: &mut [Worker], n: u64) -> i64 {
    let mut seen = (0, Instant::now());
    loop {
        let progress: Vec<(u64, i64)> = workers.iter_mut().map(Worker::progress).collect();
        let done: u64 = progress.iter().map(|p| p.0).sum();
        if done >= n {
            return progress.iter().map(|p| p.1).max().unwrap_or(0);
        }
        if done != seen.0 {
            seen = (done, Instant::now());
        } else if seen.1.elapsed() > STALL {
            panic!("stalled at {done} of {n} executions");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The main of a worker process.
fn worker_main() {
    let url = std::env::var(URL_VAR).expect("the worker's database URL");
    let schema = std::env::var(SCHEMA_VAR).expect("the worker's schema");
    let rt = futures::executor::block_on(runtime(&url, &schema));
    let client = rt.client();
    println!("ready");
    for line in std::io::stdin().lines() {
        // The bench ended without a `quit`: stop as it would.
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["resume"] => {
                futures::executor::block_on(client.worker_pool::<Noop>().resume_all())
                    .expect("resume");
                println!("resumed");
            }
            ["progress"] => println!(
                "progress {} {}",
                PROCESSED.load(Ordering::Relaxed),
                LAST_DONE_US.load(Ordering::Relaxed)
            ),
            ["enqueue", count, callers, first] => {
                let number = |w: &str| w.parse::<usize>().expect("a number");
                let (count, callers, first) = (number(count), number(callers), number(first));
                let client = client.clone();
                // Answers `progress` meanwhile.
                std::thread::spawn(move || {
                    let start = now_us();
                    futures::executor::block_on(enqueue_all(&client, first, count, callers, true));
                    println!("enqueued {start} {}", now_us());
                });
            }
            ["quit"] => break,
            _ => panic!("a worker process was told {line:?}"),
        }
    }
    futures::executor::block_on(rt.shutdown());
    println!("bye {}", cpu_us("self", false).unwrap_or(0));
}

// ---- the server -----------------------------------------------------------------------

/// The server of the run: `DATABASE_URL`'s, or a local durable one.
fn bench_server(statements: bool) -> TestServer {
    let external = std::env::var(DATABASE_URL).is_ok_and(|url| !url.trim().is_empty());
    let server = if external {
        TestServer::new()
    } else {
        let mut options = LocalOptions::default().durable();
        if statements {
            options = options.setting("shared_preload_libraries", "pg_stat_statements");
        }
        for (name, value) in extra_settings() {
            options = options.setting(name, value);
        }
        TestServer::local_with(options)
    };
    server.expect("a PostgreSQL server for the benchmark")
}

/// `BENCH_PG_SETTINGS`: `name=value` pairs separated by `;`, added to a local server's
/// configuration, to price a setting.
fn extra_settings() -> Vec<(String, String)> {
    let text = std::env::var("BENCH_PG_SETTINGS").unwrap_or_default();
    text.split(';')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to the server");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

async fn connect_many(url: &str, n: usize) -> Vec<Client> {
    futures::future::join_all((0..n).map(|_| connect(url))).await
}

/// Prints the server's version, the settings that decide what a commit costs, and the
/// time of one commit on one connection.
async fn describe_server(admin: &Client) {
    let version: String = admin
        .query_one("SELECT version()", &[])
        .await
        .expect("version")
        .get(0);
    println!("server: {version}");
    let names = [
        "fsync",
        "synchronous_commit",
        "full_page_writes",
        "wal_sync_method",
        "commit_delay",
        "wal_level",
        "shared_buffers",
        "max_wal_size",
        "max_connections",
        "shared_preload_libraries",
        "plan_cache_mode",
    ];
    let extra: Vec<String> = extra_settings().into_iter().map(|(name, _)| name).collect();
    let names: Vec<&str> = names
        .into_iter()
        .chain(extra.iter().map(String::as_str))
        .collect();
    let rows = admin
        .query(
            "SELECT name, setting, COALESCE(unit, '') FROM pg_settings \
             WHERE name = ANY($1) ORDER BY name",
            &[&names],
        )
        .await
        .expect("settings");
    let mut line = String::from("settings:");
    let mut durable = true;
    for row in rows {
        let (name, setting, unit): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        if matches!(name.as_str(), "fsync" | "synchronous_commit") && setting != "on" {
            durable = false;
        }
        let shown = if setting.is_empty() {
            "''".into()
        } else {
            setting
        };
        line.push_str(&format!(" {name}={shown}{unit}"));
    }
    println!("{line}");
    if !durable {
        println!("WARNING: commits are not synced to disk: the figures overstate a durable server");
    }

    // One connection, one row per transaction, one after the other. A regular table:
    // a transaction that wrote only to a temporary one commits without waiting for a sync.
    let probe = unique_name("bench_probe");
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA \"{probe}\"; CREATE TABLE \"{probe}\".t (n int)"
        ))
        .await
        .expect("probe table");
    let insert = admin
        .prepare(&format!("INSERT INTO \"{probe}\".t VALUES ($1)"))
        .await
        .expect("prepare");
    let commits = 200;
    let t = Instant::now();
    for i in 0..commits {
        admin.execute(&insert, &[&i]).await.expect("insert");
    }
    println!(
        "one commit on one connection: {:.2} ms (mean of {commits} single-row inserts in a row)",
        t.elapsed().as_secs_f64() * 1000.0 / f64::from(commits)
    );
    drop_schema(admin, &probe).await;
}

/// What the server did during one figure, read from its statistics views.
struct ServerStats {
    /// pg_stat_statements is loaded and usable.
    statements: bool,
    /// The local server's postmaster, whose processes' CPU time is counted.
    postmaster: Option<u32>,
}

#[derive(Clone, Copy)]
struct Counters {
    xacts: i64,
    wal_records: i64,
    wal_bytes: i64,
    wal_syncs: i64,
    server_cpu_us: Option<i64>,
}

impl ServerStats {
    async fn new(admin: &Client, postmaster: Option<u32>) -> Self {
        let loaded: String = admin
            .query_one("SELECT current_setting('shared_preload_libraries')", &[])
            .await
            .expect("settings")
            .get(0);
        let statements = loaded.contains("pg_stat_statements")
            && admin
                .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                .await
                .is_ok();
        ServerStats {
            statements,
            postmaster,
        }
    }

    /// The counters before a figure, once the sessions of earlier work have ended; also
    /// starts the statement counts afresh.
    async fn snapshot(&self, admin: &Client) -> Counters {
        quiesce(admin).await;
        if self.statements {
            let _ = admin
                .batch_execute("SELECT pg_stat_statements_reset()")
                .await;
        }
        self.counters(admin).await
    }

    /// The counters now.
    async fn counters(&self, admin: &Client) -> Counters {
        // Each statement below is a transaction of its own, which sees fresh statistics.
        let _ = admin.batch_execute("SELECT pg_stat_clear_snapshot()").await;
        let row = admin
            .query_one(
                "SELECT (SELECT xact_commit + xact_rollback FROM pg_stat_database \
                         WHERE datname = current_database()), \
                        wal_records, wal_bytes::bigint, wal_sync FROM pg_stat_wal",
                &[],
            )
            .await
            .expect("server statistics");
        Counters {
            xacts: row.get(0),
            wal_records: row.get(1),
            wal_bytes: row.get(2),
            wal_syncs: row.get(3),
            server_cpu_us: server_cpu_us(self.postmaster),
        }
    }

    /// Prints what the server did since `before`, per `unit` of `n`, and the CPU time the
    /// runtime's processes used (`runtime_cpu_us`, when known). Backends send their
    /// statistics when their session ends, so the sessions of the figure must be closed.
    async fn report(
        &self,
        admin: &Client,
        before: Counters,
        n: usize,
        unit: &str,
        runtime_cpu_us: Option<i64>,
    ) {
        quiesce(admin).await;
        let after = self.counters(admin).await;
        let per = |a: i64, b: i64| (a - b) as f64 / n as f64;
        println!(
            "  server, per {unit}: {:.2} transactions, {:.1} WAL records, {:.0} WAL bytes, {:.3} WAL syncs",
            per(after.xacts, before.xacts),
            per(after.wal_records, before.wal_records),
            per(after.wal_bytes, before.wal_bytes),
            per(after.wal_syncs, before.wal_syncs),
        );
        let server_cpu = after.server_cpu_us.zip(before.server_cpu_us);
        if server_cpu.is_some() || runtime_cpu_us.is_some() {
            let shown = |us: Option<i64>| {
                us.map_or("-".into(), |us| format!("{:.0} µs", us as f64 / n as f64))
            };
            println!(
                "  CPU per {unit}: server processes {}, runtime processes {}",
                shown(server_cpu.map(|(a, b)| a - b)),
                shown(runtime_cpu_us)
            );
        }
        if !self.statements {
            return;
        }
        let rows = admin
            .query(
                "SELECT calls, total_exec_time, rows, query FROM pg_stat_statements \
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                   AND query NOT LIKE '%pg_stat%' \
                 ORDER BY calls DESC",
                &[],
            )
            .await
            .expect("pg_stat_statements");
        let mut calls_total = 0i64;
        let mut time_total = 0f64;
        println!("  statements per {unit} (pg_stat_statements; calls/{unit}, mean ms, rows/call):");
        for row in &rows {
            let (calls, time, returned, query): (i64, f64, i64, String) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            calls_total += calls;
            time_total += time;
            if (calls as f64) < n as f64 / 100.0 {
                continue;
            }
            let query: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
            let shown: String = query.chars().take(120).collect();
            println!(
                "    {:>6.2} {:>7.3} {:>6.2}  {shown}",
                calls as f64 / n as f64,
                time / calls as f64,
                returned as f64 / calls as f64
            );
        }
        println!(
            "    {:>6.2} statements and {:.3} ms of execution per {unit} in all",
            calls_total as f64 / n as f64,
            time_total / n as f64
        );
    }
}

/// Waits until no other client session is open on the database, then a little more: a
/// backend sends its statistics as it exits, just after it leaves `pg_stat_activity`.
async fn quiesce(admin: &Client) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let others: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .expect("sessions")
            .get(0);
        if others == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
}

async fn drop_schema(admin: &Client, schema: &str) {
    let _ = admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await;
}

// ---- baselines ------------------------------------------------------------------------

/// Runs `work(worker, i)` for `i` in `0..n` on `workers` concurrent workers, each taking
/// the next `i` as soon as it is free; returns how long it all took.
async fn spread<F, Fut>(workers: usize, n: usize, work: F) -> Duration
where
    F: Fn(usize, usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    futures::future::join_all((0..workers).map(|worker| {
        let (next, work) = (&next, &work);
        async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                work(worker, i).await;
            }
        }
    }))
    .await;
    t.elapsed()
}

/// `sql` prepared on each of `clients`.
async fn prepare_all(clients: &[Client], sql: &str) -> Vec<Statement> {
    futures::future::try_join_all(clients.iter().map(|c| c.prepare(sql)))
        .await
        .expect("prepare")
}

/// How long a part of a baseline took, and the server's CPU time meanwhile (µs).
struct Phase {
    took: Duration,
    server_cpu_us: Option<i64>,
}

impl Phase {
    /// `work`, timed.
    async fn of<T>(
        postmaster: Option<u32>,
        work: impl std::future::Future<Output = T>,
    ) -> (Phase, T) {
        let cpu = server_cpu_us(postmaster);
        let t = Instant::now();
        let out = work.await;
        let took = t.elapsed();
        let server_cpu_us = server_cpu_us(postmaster).zip(cpu).map(|(a, b)| a - b);
        (
            Phase {
                took,
                server_cpu_us,
            },
            out,
        )
    }

    fn rate(&self, n: usize) -> f64 {
        rate(n, self.took)
    }

    /// `, server CPU … µs per {unit}` when known.
    fn cpu(&self, n: usize, unit: &str) -> String {
        self.server_cpu_us.map_or(String::new(), |us| {
            format!(", server CPU {:.0} µs per {unit}", us as f64 / n as f64)
        })
    }
}

/// A plain queue: `n` rows inserted one transaction each, then taken one transaction each
/// by a worker per connection. Returns the inserts and the takes.
async fn baseline_queue(
    admin: &Client,
    postmaster: Option<u32>,
    url: &str,
    connections: usize,
    n: usize,
) -> (Phase, Phase) {
    let schema = unique_name("bench_raw");
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA \"{schema}\"; \
             CREATE TABLE \"{schema}\".q (id bigserial PRIMARY KEY, payload bytea NOT NULL)"
        ))
        .await
        .expect("baseline table");
    let clients = connect_many(url, connections).await;
    let insert = format!("INSERT INTO \"{schema}\".q (payload) VALUES ($1)");
    let take = format!(
        "DELETE FROM \"{schema}\".q WHERE id = \
         (SELECT id FROM \"{schema}\".q ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1) \
         RETURNING id, payload"
    );
    let inserts = prepare_all(&clients, &insert).await;
    let takes = prepare_all(&clients, &take).await;
    let payload = vec![7u8; PAYLOAD];
    let fill = spread(connections, n, |worker, _| {
        let (client, insert, payload) = (&clients[worker], &inserts[worker], &payload);
        async move {
            client.execute(insert, &[payload]).await.expect("insert");
        }
    });
    let (filled, _) = Phase::of(postmaster, fill).await;
    let taken = AtomicUsize::new(0);
    let drain = futures::future::join_all(clients.iter().zip(&takes).map(|(client, take)| {
        let taken = &taken;
        async move {
            // A worker stops at the first empty answer: near the end, the rows left are
            // all held by the others.
            while client.query_opt(take, &[]).await.expect("take").is_some() {
                taken.fetch_add(1, Ordering::Relaxed);
            }
        }
    }));
    let (drained, _) = Phase::of(postmaster, drain).await;
    assert_eq!(
        taken.load(Ordering::Relaxed),
        n,
        "the baseline queue lost rows"
    );
    drop_schema(admin, &schema).await;
    (filled, drained)
}

/// Concurrent single-row upserts of `n` adds over `keys` keys, one transaction each.
async fn baseline_upserts(
    admin: &Client,
    postmaster: Option<u32>,
    url: &str,
    connections: usize,
    n: usize,
    keys: usize,
) -> Phase {
    let schema = unique_name("bench_raw");
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA \"{schema}\"; \
             CREATE TABLE \"{schema}\".kv (k text PRIMARY KEY, n bigint NOT NULL)"
        ))
        .await
        .expect("baseline table");
    let clients = connect_many(url, connections).await;
    let upsert = format!(
        "INSERT INTO \"{schema}\".kv AS kv (k, n) VALUES ($1, 1) \
         ON CONFLICT (k) DO UPDATE SET n = kv.n + 1"
    );
    let upserts = prepare_all(&clients, &upsert).await;
    let all = spread(connections, n, |worker, i| {
        let (client, upsert) = (&clients[worker], &upserts[worker]);
        async move {
            let key = format!("key-{}", i % keys);
            client.execute(upsert, &[&key]).await.expect("upsert");
        }
    });
    let (phase, _) = Phase::of(postmaster, all).await;
    drop_schema(admin, &schema).await;
    phase
}

/// Rows due `LATE_FLUSH_MS` after they are inserted, `total` at `rate` a second, taken by
/// one poller that sleeps until the next is due. Returns how late each was taken (µs).
async fn baseline_lateness(admin: &Client, url: &str, rate: usize, total: usize) -> Vec<i64> {
    let schema = unique_name("bench_raw");
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA \"{schema}\"; \
             CREATE TABLE \"{schema}\".alarms (id bigserial PRIMARY KEY, due_us bigint NOT NULL); \
             CREATE INDEX ON \"{schema}\".alarms (due_us)"
        ))
        .await
        .expect("baseline table");
    let inserters = connect_many(url, CONNECTIONS).await;
    let poller = connect(url).await;
    let insert = format!("INSERT INTO \"{schema}\".alarms (due_us) VALUES ($1)");
    let take = format!(
        "DELETE FROM \"{schema}\".alarms WHERE id IN \
         (SELECT id FROM \"{schema}\".alarms WHERE due_us <= $1 ORDER BY due_us \
          LIMIT 256 FOR UPDATE SKIP LOCKED) RETURNING due_us"
    );
    let next_due = format!("SELECT min(due_us) FROM \"{schema}\".alarms");
    let inserts = prepare_all(&inserters, &insert).await;
    let late = Mutex::new(Vec::with_capacity(total));
    let delay_us = LATE_FLUSH_MS * 1000;

    let insert_all = async {
        let ticks = ticks(rate, total);
        let t = Instant::now();
        let mut sent = 0;
        for (tick, count) in ticks.into_iter().enumerate() {
            spread(count.min(CONNECTIONS), count, |worker, _| {
                let (client, insert) = (&inserters[worker], &inserts[worker]);
                async move {
                    let due = now_us() + delay_us;
                    client.execute(insert, &[&due]).await.expect("insert");
                }
            })
            .await;
            sent += count;
            let next = t + Duration::from_millis(10) * (tick as u32 + 1);
            tokio::time::sleep_until(next.into()).await;
        }
        sent
    };
    let poll = async {
        let take = poller.prepare(&take).await.expect("prepare");
        let next_due = poller.prepare(&next_due).await.expect("prepare");
        let deadline = Instant::now() + Duration::from_secs((LATENESS_SECONDS + 30) as u64);
        while late.lock().expect("lock").len() < total && Instant::now() < deadline {
            let rows = poller.query(&take, &[&now_us()]).await.expect("take");
            let taken_at = now_us();
            late.lock()
                .expect("lock")
                .extend(rows.iter().map(|row| taken_at - row.get::<_, i64>(0)));
            if rows.len() == 256 {
                continue;
            }
            let next: Option<i64> = poller
                .query_one(&next_due, &[])
                .await
                .expect("next due")
                .get(0);
            // New rows are due a whole delay after they are inserted, so nothing comes
            // due sooner than the earliest row, or than a delay from now.
            let wake = next.unwrap_or(now_us() + delay_us).min(now_us() + delay_us);
            let wait = u64::try_from(wake - now_us()).unwrap_or(0);
            tokio::time::sleep(Duration::from_micros(wait)).await;
        }
    };
    futures::join!(insert_all, poll);
    drop_schema(admin, &schema).await;
    late.into_inner().expect("lock")
}

/// How many adds each 10 ms tick makes: `rate` a second, `total` in all.
fn ticks(rate: usize, total: usize) -> Vec<usize> {
    let mut ticks = Vec::new();
    let mut sent = 0;
    let mut tick = 0usize;
    while sent < total {
        tick += 1;
        // Spread evenly: rates that are not a multiple of 100 still come out right.
        let due = (rate * tick / 100).min(total);
        ticks.push(due - sent);
        sent = due;
    }
    ticks
}

// ---- sections -------------------------------------------------------------------------

/// One line of the final table.
struct Figure {
    name: String,
    runtime: f64,
    baseline: f64,
    /// The ratio is runtime / baseline for rates, and the same for times (where more is
    /// worse).
    unit: &'static str,
    goal: &'static str,
}

struct Bench {
    tokio: tokio::runtime::Runtime,
    url: String,
    admin: Client,
    stats: ServerStats,
    figures: Vec<Figure>,
}

fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

impl Bench {
    fn drain(&mut self, processes: usize) {
        let n = scaled(20_000);
        let schema = unique_name("bench_drain");
        // The backlog is made by a runtime of this process, shut down before the workers
        // start, so that the drain is all they do.
        let filled = self.tokio.block_on(async {
            let rt = runtime(&self.url, &schema).await;
            let client = rt.client();
            client
                .worker_pool::<Noop>()
                .pause_all()
                .await
                .expect("pause");
            let t = Instant::now();
            enqueue_all(&client, 0, n, CALLERS, false).await;
            let took = t.elapsed();
            rt.shutdown().await;
            took
        });
        let before = self.tokio.block_on(self.stats.snapshot(&self.admin));
        let mut workers: Vec<Worker> = (0..processes)
            .map(|_| Worker::spawn(&self.url, &schema))
            .collect();
        let start = now_us();
        workers[0].send("resume");
        workers[0].expect("resumed", STALL);
        let last = wait_for_executions(&mut workers, n as u64);
        let took = Duration::from_micros(u64::try_from(last - start).unwrap_or(1).max(1));
        let cpu: i64 = workers.into_iter().map(Worker::quit).sum();
        let connections = CONNECTIONS * processes;
        let label = plural(processes);
        println!(
            "drain ({label}, no-op handler, pool of {POOL_CONCURRENCY}, {n} events enqueued beforehand at {:.0}/s): {:.0} events/s",
            rate(n, filled),
            rate(n, took)
        );
        self.tokio.block_on(async {
            self.stats
                .report(&self.admin, before, n, "event", Some(cpu))
                .await;
            drop_schema(&self.admin, &schema).await;
        });
        let postmaster = self.stats.postmaster;
        let (inserted, taken) = self.tokio.block_on(baseline_queue(
            &self.admin,
            postmaster,
            &self.url,
            connections,
            n,
        ));
        println!(
            "  baseline: {n} rows inserted at {:.0}/s, then taken by {connections} workers at {:.0} jobs/s{}",
            inserted.rate(n),
            taken.rate(n),
            taken.cpu(n, "job")
        );
        self.figures.push(Figure {
            name: format!("drain, {label} (events/s)"),
            runtime: rate(n, took),
            baseline: taken.rate(n),
            unit: "/s",
            goal: ">= 25000",
        });
    }

    fn enqueue(&mut self, processes: usize) {
        let n = scaled(20_000);
        let schema = unique_name("bench_enqueue");
        let before = self.tokio.block_on(self.stats.snapshot(&self.admin));
        let mut workers: Vec<Worker> = (0..processes)
            .map(|_| Worker::spawn(&self.url, &schema))
            .collect();
        let share = n.div_ceil(processes);
        let callers = CALLERS / processes;
        let mut first = 0;
        let mut sent = Vec::new();
        for worker in &mut workers {
            let count = share.min(n - first);
            worker.send(&format!("enqueue {count} {callers} {first}"));
            sent.push(count);
            first += count;
        }
        let mut start = i64::MAX;
        let mut end = 0;
        for worker in &workers {
            let words = worker.expect("enqueued", Duration::from_secs(600));
            let number = |i: usize| {
                words
                    .get(i)
                    .and_then(|w| w.parse::<i64>().ok())
                    .unwrap_or(0)
            };
            start = start.min(number(0));
            end = end.max(number(1));
        }
        let took = Duration::from_micros(u64::try_from(end - start).unwrap_or(1).max(1));
        let drained_at = wait_for_executions(&mut workers, n as u64);
        let cpu: i64 = workers.into_iter().map(Worker::quit).sum();
        let label = plural(processes);
        println!(
            "enqueue ({label}, {CALLERS} callers, {TENANTS} partition keys, while draining, {n} events): {:.0}/s; the last event ran {:.1} s after the last enqueue",
            rate(n, took),
            (drained_at - end) as f64 / 1e6
        );
        let connections = CONNECTIONS * processes;
        self.tokio.block_on(async {
            self.stats
                .report(
                    &self.admin,
                    before,
                    n,
                    "event (its enqueue and its execution)",
                    Some(cpu),
                )
                .await;
            drop_schema(&self.admin, &schema).await;
        });
        let postmaster = self.stats.postmaster;
        let (inserted, _) = self.tokio.block_on(baseline_queue(
            &self.admin,
            postmaster,
            &self.url,
            connections,
            n,
        ));
        println!(
            "  baseline: {n} single-row inserts over {connections} connections: {:.0}/s{}",
            inserted.rate(n),
            inserted.cpu(n, "insert")
        );
        self.figures.push(Figure {
            name: format!("enqueue, {label} (enqueues/s)"),
            runtime: rate(n, took),
            baseline: inserted.rate(n),
            unit: "/s",
            goal: ">= 15000",
        });
    }

    fn debounce(&mut self) {
        let n = scaled(20_000);
        let keys = scaled(2_000);
        let schema = unique_name("bench_debounce");
        let before = self.tokio.block_on(self.stats.snapshot(&self.admin));
        // The runtime runs in this process here: its CPU time includes the callers'.
        let cpu_before = cpu_us("self", false);
        let took = self.tokio.block_on(async {
            let rt = runtime(&self.url, &schema).await;
            let client = rt.client();
            let t = Instant::now();
            stream::iter(0..n)
                .for_each_concurrent(CALLERS, |i| {
                    let adds = client.debounce::<Adds>();
                    async move {
                        adds.add(&format!("key-{}", i % keys), &(i as u32))
                            .await
                            .expect("add");
                    }
                })
                .await;
            let took = t.elapsed();
            rt.shutdown().await;
            took
        });
        println!(
            "debounce adds ({CALLERS} callers, {keys} keys, {n} adds): {:.0}/s",
            rate(n, took)
        );
        self.tokio.block_on(async {
            let cpu = cpu_us("self", false).zip(cpu_before).map(|(a, b)| a - b);
            self.stats.report(&self.admin, before, n, "add", cpu).await;
            drop_schema(&self.admin, &schema).await;
        });
        let upserts = self.tokio.block_on(baseline_upserts(
            &self.admin,
            self.stats.postmaster,
            &self.url,
            CONNECTIONS,
            n,
            keys,
        ));
        println!(
            "  baseline: {n} single-row upserts over {keys} keys, {CONNECTIONS} connections: {:.0}/s{}",
            upserts.rate(n),
            upserts.cpu(n, "upsert")
        );
        self.figures.push(Figure {
            name: "debounce adds (adds/s)".into(),
            runtime: rate(n, took),
            baseline: upserts.rate(n),
            unit: "/s",
            goal: "",
        });
    }

    fn lateness(&mut self) {
        let per_second = env_number("BENCH_LATENESS_RATE").unwrap_or(200).max(1);
        let total = scaled(per_second * LATENESS_SECONDS);
        let schema = unique_name("bench_late");
        LATENESS.lock().expect("lock").clear();
        self.tokio.block_on(async {
            let rt = runtime(&self.url, &schema).await;
            let client = rt.client();
            let t = Instant::now();
            let mut key = 0usize;
            for (tick, count) in ticks(per_second, total).into_iter().enumerate() {
                stream::iter(key..key + count)
                    .for_each_concurrent(CALLERS, |i| {
                        let late = client.debounce::<Late>();
                        async move {
                            late.add(&format!("k{i}"), &1).await.expect("add");
                        }
                    })
                    .await;
                key += count;
                let next = t + Duration::from_millis(10) * (tick as u32 + 1);
                tokio::time::sleep_until(next.into()).await;
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while LATENESS.lock().expect("lock").len() < total && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            rt.shutdown().await;
            drop_schema(&self.admin, &schema).await;
        });
        let runtime = percentiles(&LATENESS.lock().expect("lock"));
        let baseline = percentiles(&self.tokio.block_on(baseline_lateness(
            &self.admin,
            &self.url,
            per_second,
            total,
        )));
        println!(
            "alarm lateness ({per_second} Debounce flushes/s due {LATE_FLUSH_MS} ms after their add, {} of {total} ran): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            runtime.count, runtime.p50, runtime.p99, runtime.max
        );
        println!(
            "  baseline ({} of {total} rows taken by a poller sleeping until the next due): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            baseline.count, baseline.p50, baseline.p99, baseline.max
        );
        for (name, r, b, goal) in [
            ("p50", runtime.p50, baseline.p50, ""),
            ("p99", runtime.p99, baseline.p99, "<= 20"),
            ("max", runtime.max, baseline.max, ""),
        ] {
            self.figures.push(Figure {
                name: format!("alarm lateness {name} (ms)"),
                runtime: r,
                baseline: b,
                unit: " ms",
                goal,
            });
        }
    }

    fn table(&self) {
        println!();
        println!(
            "{:<34} {:>12} {:>12} {:>8}  goal",
            "figure", "runtime", "baseline", "ratio"
        );
        for f in &self.figures {
            let ratio = if f.baseline > 0.0 {
                format!("{:.3}", f.runtime / f.baseline)
            } else {
                "-".into()
            };
            println!(
                "{:<34} {:>12} {:>12} {:>8}  {}",
                f.name,
                format!("{:.1}{}", f.runtime, f.unit),
                format!("{:.1}{}", f.baseline, f.unit),
                ratio,
                f.goal
            );
        }
    }
}

fn plural(processes: usize) -> String {
    if processes == 1 {
        "1 process".into()
    } else {
        format!("{processes} processes")
    }
}

struct Percentiles {
    count: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

fn percentiles(values_us: &[i64]) -> Percentiles {
    let mut v = values_us.to_vec();
    v.sort_unstable();
    let at = |p: f64| {
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    Percentiles {
        count: v.len(),
        p50: at(0.50),
        p99: at(0.99),
        max: v.last().copied().unwrap_or(0) as f64 / 1000.0,
    }
}

fn main() {
    if std::env::var_os(ROLE_VAR).is_some() {
        worker_main();
        return;
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    let statements = std::env::var("BENCH_PG_STATEMENTS").is_ok_and(|v| v == "1");
    let load_before = load_average();
    let server = bench_server(statements);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let url = server.url().to_owned();
    let (admin, stats) = tokio.block_on(async {
        let admin = connect(&url).await;
        describe_server(&admin).await;
        let stats = ServerStats::new(&admin, server.pid()).await;
        (admin, stats)
    });
    println!(
        "runtime: defaults (shards = {} CPUs, poll interval 1 s, lease 30 s), pool of {CONNECTIONS} connections per process; {CALLERS} concurrent callers; load average {load_before}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let started = Instant::now();
    let machine_before = (machine_cpu_us(), own_cpu_us(server.pid()));
    let mut bench = Bench {
        tokio,
        url,
        admin,
        stats,
        figures: Vec::new(),
    };
    if wants("drain") {
        bench.drain(1);
        bench.drain(2);
    }
    if wants("enqueue") {
        bench.enqueue(1);
        bench.enqueue(2);
    }
    if wants("debounce") {
        bench.debounce();
    }
    if wants("lateness") {
        bench.lateness();
    }
    bench.table();
    let machine_after = (machine_cpu_us(), own_cpu_us(bench.stats.postmaster));
    println!(
        "{}",
        machine_line(machine_before, machine_after, started.elapsed())
    );
    println!(
        "load average (1, 5, 15 min): {load_before} at the start, {} at the end",
        load_average()
    );
    drop(bench);
    drop(server);
}
