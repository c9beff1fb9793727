//! Crash safety: a child process does real work (enqueues, debounce adds, scheduled runs)
//! and is killed with SIGKILL at random moments, many rounds; then a final run drains
//! everything and the log of what happened is checked:
//!
//! - every acknowledged enqueue and add was eventually executed;
//! - no event ran again after its completion was committed;
//! - every step was all there or not at all (counters agree with what ran).
//!
//! `CRASH_ROUNDS` sets the number of kills (default 6; e.g. `CRASH_ROUNDS=200` for a soak).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durable_jobs::events::{EventKind, JobEvent};
use durable_jobs::services::tracker::EventTracker;
use durable_jobs::{
    Continuous, ContinuousContext, Debounce, DebounceContext, EnqueueRequest, Registry, Rejected,
    RetryPolicy, Schedule, WorkerPool, WorkerPoolContext,
};
use durable_jobs_local::LocalRuntime;

const CHILD_ENV: &str = "DURABLE_JOBS_CRASH_CHILD";

#[derive(Clone)]
struct Lines(Arc<File>);

impl Lines {
    fn open(path: &Path) -> Self {
        Lines(Arc::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("open log"),
        ))
    }

    /// One `write` per line: appends from several threads never interleave.
    fn line(&self, text: String) {
        let _ = (&*self.0).write_all(format!("{text}\n").as_bytes());
    }
}

struct Pool(Lines);
impl WorkerPool for Pool {
    type Event = u32;
    type Error = String;
    fn concurrency(&self) -> u32 {
        3
    }
    async fn execute(&self, ctx: &WorkerPoolContext<u32>) -> Result<(), String> {
        self.0.line(format!("exec {}", ctx.event_id()));
        Ok(())
    }
}

struct Batches(Lines);
impl Debounce for Batches {
    type Event = String;
    type State = Vec<String>;
    type Error = String;
    fn flush_after(&self) -> Duration {
        Duration::from_millis(30)
    }
    fn max_events(&self) -> Option<u32> {
        Some(10)
    }
    fn on_event(&self, state: Option<Vec<String>>, id: String) -> Result<Vec<String>, Rejected> {
        let mut ids = state.unwrap_or_default();
        ids.push(id);
        Ok(ids)
    }
    async fn execute(&self, ctx: &DebounceContext<Vec<String>>) -> Result<(), String> {
        self.0
            .line(format!("flush {} {}", ctx.id(), ctx.state().join(" ")));
        Ok(())
    }
}

/// Counts its runs in its state; each run checks, from one consistent read, that the state
/// and the engine's run count were committed together.
struct Ticks(Lines);
impl Continuous for Ticks {
    type State = u64;
    type Error = String;
    fn schedule(&self) -> Schedule {
        Schedule::every(Duration::from_millis(20))
    }
    fn retry(&self) -> RetryPolicy {
        RetryPolicy::none()
    }
    async fn execute(&self, ctx: &mut ContinuousContext<u64>) -> Result<(), String> {
        if *ctx.state() != ctx.run_count() {
            self.0.line(format!(
                "torn state={} runs={}",
                ctx.state(),
                ctx.run_count()
            ));
        }
        *ctx.state_mut() += 1;
        Ok(())
    }
}

/// Writes `done {id}` once a completion is committed (events are emitted after commits).
struct Completions(Lines);
impl EventTracker for Completions {
    fn emit(&self, event: JobEvent) {
        if let EventKind::WorkerPoolCompleted { event_id, .. } = event.kind {
            self.0.line(format!("done {event_id}"));
        }
    }
}

fn runtime(db: &Path, lines: &Lines) -> LocalRuntime {
    let registry = Registry::builder()
        .worker_pool("pool", Pool(lines.clone()))
        .debounce("batches", Batches(lines.clone()))
        .continuous("ticks", Ticks(lines.clone()))
        .build()
        .expect("registry");
    LocalRuntime::builder(registry)
        .path(db)
        .tracker(Arc::new(Completions(lines.clone())))
        .open()
        .expect("open")
}

/// The child: work until killed, or drain and report.
#[test]
#[ignore = "entry point of the crash test's child process"]
fn crash_child() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let db = std::path::PathBuf::from(std::env::var("CRASH_DB").expect("CRASH_DB"));
    let lines = Lines::open(Path::new(&std::env::var("CRASH_LOG").expect("CRASH_LOG")));
    let round = std::env::var("CRASH_ROUND").unwrap_or_default();
    let rt = runtime(&db, &lines);
    let client = rt.client();
    if mode == "drain" {
        futures::executor::block_on(async {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let pool = client.worker_pool::<Pool>().status().await.expect("status");
                let mut busy = pool.pending > 0;
                for key in ["d0", "d1", "d2"] {
                    if let Some(s) = client
                        .debounce::<Batches>()
                        .status(key)
                        .await
                        .expect("status")
                    {
                        busy |= s.event_count > 0 || s.flushing;
                    }
                }
                if busy && Instant::now() > deadline {
                    for key in ["d0", "d1", "d2"] {
                        let s = client.debounce::<Batches>().status(key).await;
                        println!("STALLED debounce {key}: {s:?}");
                    }
                }
                if !busy || Instant::now() > deadline {
                    let ticks = client
                        .continuous::<Ticks>()
                        .status("t")
                        .await
                        .expect("status");
                    println!(
                        "RESULT pending={} processed={} dead={} runs={}",
                        pool.pending,
                        pool.processed,
                        pool.dead_letters,
                        ticks.map_or(0, |t| t.run_count)
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        return;
    }
    futures::executor::block_on(async {
        // Kept running across rounds: every run checks its state against its run count.
        let _ = client.continuous::<Ticks>().start("t", &0).await;
    });
    let enqueuer = {
        let client = client.clone();
        let lines = lines.clone();
        let round = round.clone();
        std::thread::spawn(move || {
            futures::executor::block_on(async {
                for i in 0u32.. {
                    let id = format!("{round}-{i}");
                    let opts = EnqueueRequest::new()
                        .event_id(&id)
                        .partition_key(format!("k{}", i % 5));
                    if client
                        .worker_pool::<Pool>()
                        .enqueue_with(&i, opts)
                        .await
                        .is_ok()
                    {
                        lines.line(format!("ack-enq {id}"));
                    }
                }
            })
        })
    };
    futures::executor::block_on(async {
        for i in 0u32.. {
            let key = format!("d{}", i % 3);
            let id = format!("{round}-a{i}");
            if client
                .debounce::<Batches>()
                .add_with_id(&key, &id, &id)
                .await
                .is_ok()
            {
                lines.line(format!("ack-add {key} {id}"));
            }
            if i % 4 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let _ = enqueuer.join();
}

fn child(mode: &str, db: &Path, log: &Path, round: usize) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([
        "--exact",
        "crash_child",
        "--ignored",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(CHILD_ENV, mode)
    .env("CRASH_DB", db)
    .env("CRASH_LOG", log)
    .env("CRASH_ROUND", round.to_string())
    .stdin(Stdio::null())
    .stderr(Stdio::null());
    cmd
}

#[test]
fn killed_at_random_moments_loses_nothing() {
    let rounds: usize = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    // CRASH_KEEP=1 keeps the database and the log for inspection.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let _cleanup = if std::env::var_os("CRASH_KEEP").is_some() {
        eprintln!("keeping {}", tmp.keep().display());
        None
    } else {
        Some(tmp)
    };
    let db = root.join("jobs.db");
    let log = root.join("log.txt");
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for round in 0..rounds {
        let mut proc = child("work", &db, &log, round)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = 150 + (seed >> 33) % 500;
        std::thread::sleep(Duration::from_millis(delay));
        proc.kill().unwrap(); // SIGKILL
        proc.wait().unwrap();
    }
    let out = child("drain", &db, &log, rounds).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = stdout
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("the drain run reported nothing: {stdout}"));
    let field = |name: &str| -> u64 {
        result
            .split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {result}"))
    };

    let text = std::fs::read_to_string(&log).unwrap();
    let mut acked_enqueues = HashSet::new();
    let mut acked_adds: Vec<(String, String)> = Vec::new();
    let mut executed: HashMap<String, usize> = HashMap::new();
    let mut done = HashSet::new();
    let mut flushed: HashSet<(String, String)> = HashSet::new();
    for line in text.lines() {
        let mut parts = line.split(' ');
        match parts.next() {
            Some("ack-enq") => {
                acked_enqueues.insert(parts.next().unwrap_or_default().to_string());
            }
            Some("ack-add") => {
                let key = parts.next().unwrap_or_default().to_string();
                acked_adds.push((key, parts.next().unwrap_or_default().to_string()));
            }
            Some("exec") => {
                let id = parts.next().unwrap_or_default().to_string();
                assert!(
                    !done.contains(&id),
                    "{id} ran again after its completion was committed"
                );
                *executed.entry(id).or_default() += 1;
            }
            Some("done") => {
                done.insert(parts.next().unwrap_or_default().to_string());
            }
            Some("flush") => {
                let key = parts.next().unwrap_or_default().to_string();
                for id in parts {
                    flushed.insert((key.clone(), id.to_string()));
                }
            }
            Some("torn") => {
                panic!("a scheduled run's state and count were committed apart: {line}")
            }
            _ => {}
        }
    }
    assert!(
        !acked_enqueues.is_empty() && !acked_adds.is_empty(),
        "the children did no work"
    );
    for id in &acked_enqueues {
        assert!(
            executed.contains_key(id),
            "acknowledged enqueue {id} never ran"
        );
    }
    for (key, id) in &acked_adds {
        assert!(
            flushed.contains(&(key.clone(), id.clone())),
            "acknowledged add {id} on {key} never flushed"
        );
    }
    assert_eq!(field("pending"), 0, "the drain run finished the queue");
    assert_eq!(field("dead"), 0);
    assert_eq!(
        field("processed") as usize,
        executed.len(),
        "each event that ran completed exactly once"
    );
    eprintln!(
        "{rounds} kills: {} acked enqueues, {} acked adds, {} events ran ({} re-runs after a kill), {} scheduled runs",
        acked_enqueues.len(),
        acked_adds.len(),
        executed.len(),
        executed.values().map(|n| n - 1).sum::<usize>(),
        field("runs"),
    );
}
