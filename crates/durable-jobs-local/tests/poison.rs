//! A job that takes its whole process down on every attempt is a poison pill: without a
//! record of its attempts it would run again after every restart, forever. With attempts
//! recorded at their start it uses them up and ends as a dead letter.
//!
//! The test runs a child process (this test binary again) whose `execute` aborts the
//! process, and restarts it until the event is dead-lettered.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use durable_jobs::{EnqueueRequest, Registry, RetryPolicy, WorkerPool, WorkerPoolContext};
use durable_jobs_local::LocalRuntime;

const CHILD_ENV: &str = "POISON_CHILD_DB";
const ATTEMPTS: u32 = 3;
/// Child runs the test allows: one per attempt, one that dead-letters, and slack.
const MAX_RUNS: usize = 8;

/// Writes a line for each attempt, then takes the process down.
struct Abort {
    attempts_log: PathBuf,
}

impl WorkerPool for Abort {
    type Event = u32;
    type Error = String;
    fn retry(&self) -> RetryPolicy {
        RetryPolicy::fixed(ATTEMPTS, Duration::from_millis(10))
    }
    async fn execute(&self, ctx: &WorkerPoolContext<u32>) -> Result<(), String> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.attempts_log)
            .map_err(|e| e.to_string())?;
        writeln!(log, "attempt {}", ctx.attempt()).map_err(|e| e.to_string())?;
        log.sync_all().map_err(|e| e.to_string())?;
        std::process::abort();
    }
}

fn runtime(db: &Path) -> LocalRuntime {
    let job = Abort {
        attempts_log: db.with_extension("attempts"),
    };
    let registry = Registry::builder()
        .worker_pool("abort", job)
        .build()
        .unwrap();
    LocalRuntime::builder(registry)
        .path(db)
        .record_attempts_at_start(true)
        .open()
        .expect("open")
}

/// The child: enqueue the event (once: its id makes a repeat a duplicate), then wait until
/// it is dead-lettered, unless `execute` aborts the process first.
#[test]
#[ignore = "entry point of the poison test's child process"]
fn poison_child() {
    let Ok(db) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = runtime(Path::new(&db));
    futures::executor::block_on(async {
        let pool = rt.client();
        let pool = pool.worker_pool::<Abort>();
        pool.enqueue_with(&1, EnqueueRequest::new().event_id("poison"))
            .await
            .unwrap();
        let start = Instant::now();
        while pool.status().await.unwrap().dead_letters == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "never dead-lettered"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let dead = pool.all_dead_letters().await.unwrap();
        println!("DEAD {} {}", dead[0].1.attempts, dead[0].1.error);
    });
}

fn run_child(db: &Path) -> std::process::Output {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "poison_child", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD_ENV, db)
        .stdin(Stdio::null())
        .output()
        .expect("run the child")
}

#[test]
fn a_job_that_aborts_its_process_ends_as_a_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let mut report = None;
    for _ in 0..MAX_RUNS {
        let output = run_child(&db);
        let stdout = String::from_utf8_lossy(&output.stdout);
        if let Some(at) = stdout.find("DEAD ") {
            report = stdout[at..].lines().next().map(str::to_string);
            break;
        }
        assert!(
            !output.status.success(),
            "the child neither aborted nor dead-lettered: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let report = report.expect("the event is dead-lettered within the restarts allowed");
    assert!(
        report.starts_with(&format!("DEAD {ATTEMPTS} abandoned")),
        "{report}"
    );
    let attempts = std::fs::read_to_string(db.with_extension("attempts")).unwrap();
    assert_eq!(
        attempts.lines().collect::<Vec<_>>(),
        ["attempt 1", "attempt 2", "attempt 3"],
        "each attempt ran once, and none after the last"
    );
}
