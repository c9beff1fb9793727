//! What the tests that run the runtime in child processes share.
//!
//! The test binary runs itself again as each child (an ignored test, selected with
//! `--exact`, that does nothing unless [`ROLE`] is set). The parent talks to a child
//! through its stdin (one command a line; end of input means "shut down and exit", so a
//! child never outlives a parent that panicked) and reads its answers from stdout
//! (`REPLY ...` lines).
//!
//! Executions are recorded in tables of their own, through a plain `tokio_postgres`
//! connection that is not the runtime's: a row is on the server as soon as its insert
//! returns, so what a child recorded before it was killed survives it, and nothing the
//! runtime does (or fails to do) decides what is recorded. Each execution writes a
//! `start` row before its user code and an `end` row after the user code returned, each
//! with the process (its label and pid), the instance, the event ids, the attempt and the
//! time; a tracker writes a `completions` row for each lifecycle event that reports a
//! committed outcome (events are reported only once their step committed).

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child as Process, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use durable_jobs::events::{EventKind, JobEvent};
use durable_jobs::services::tracker::EventTracker;
use durable_jobs_postgres::tokio_postgres::{self, Client, NoTls, Statement};
use tokio::sync::mpsc;

/// Set for a child process: which child it is.
pub const ROLE: &str = "DJ_PG_CHILD";
const URL: &str = "DJ_PG_URL";
const SCHEMA: &str = "DJ_PG_SCHEMA";
const LOG_SCHEMA: &str = "DJ_PG_LOG_SCHEMA";
const LABEL: &str = "DJ_PG_LABEL";
const ACKS: &str = "DJ_PG_ACKS";

/// Microseconds since the epoch. Every process of a test runs on one machine, so their
/// times compare.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A small xorshift generator: the tests need no more, and print their seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from `seed` (any value; zero is avoided).
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    /// Seeded from the clock and `salt`.
    pub fn from_time(salt: &str) -> Self {
        let salt = salt.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Rng::new(now_us() as u64 ^ salt)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `low..high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low).max(1)
    }
}

/// A stable small hash of `text`, to derive durations and failures from ids.
pub fn hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// --- The parent's side ---------------------------------------------------------------

/// Creates the schema `log_schema` and the tables the children record into.
pub async fn create_log_tables(client: &Client, log_schema: &str) {
    client
        .batch_execute(&format!(
            "CREATE SCHEMA \"{log_schema}\";
             CREATE TABLE \"{log_schema}\".executions (
                 process text NOT NULL, pid bigint NOT NULL, exec bigint NOT NULL,
                 phase text NOT NULL,
                 kind text NOT NULL, instance text NOT NULL, ids text[] NOT NULL,
                 attempt int NOT NULL, ok boolean, torn boolean, at_us bigint NOT NULL);
             CREATE TABLE \"{log_schema}\".completions (
                 process text NOT NULL, instance text NOT NULL, event_id text,
                 count bigint, at_us bigint NOT NULL);"
        ))
        .await
        .expect("create the log tables");
}

/// One execution, from its `start` row and, if it ended, its `end` row.
#[derive(Debug, Clone)]
pub struct Execution {
    pub process: String,
    pub kind: String,
    pub instance: String,
    pub ids: Vec<String>,
    pub attempt: i32,
    /// A Continuous run whose state and run count disagreed when it started.
    pub torn: bool,
    pub start: i64,
    /// `(time, ok)` once its user code returned.
    pub end: Option<(i64, bool)>,
}

impl Execution {
    pub fn ended_ok(&self) -> Option<i64> {
        match self.end {
            Some((at, true)) => Some(at),
            _ => None,
        }
    }
}

/// Every execution recorded, in the order they started.
pub async fn executions(client: &Client, log_schema: &str) -> Vec<Execution> {
    let rows = client
        .query(
            &format!(
                "SELECT process, exec, phase, kind, instance, ids, attempt, ok, torn, at_us \
                 FROM \"{log_schema}\".executions ORDER BY at_us"
            ),
            &[],
        )
        .await
        .expect("read the executions");
    let mut by_exec: HashMap<(String, i64), Execution> = HashMap::new();
    for row in rows {
        let process: String = row.get(0);
        let exec: i64 = row.get(1);
        let phase: String = row.get(2);
        let at: i64 = row.get(9);
        if phase == "start" {
            by_exec.insert(
                (process.clone(), exec),
                Execution {
                    process,
                    kind: row.get(3),
                    instance: row.get(4),
                    ids: row.get(5),
                    attempt: row.get(6),
                    torn: row.get::<_, Option<bool>>(8).unwrap_or(false),
                    start: at,
                    end: None,
                },
            );
        } else {
            let ok: Option<bool> = row.get(7);
            let execution = by_exec
                .get_mut(&(process.clone(), exec))
                .unwrap_or_else(|| panic!("an end row without a start: {process} {exec}"));
            execution.end = Some((at, ok.unwrap_or(false)));
        }
    }
    let mut all: Vec<Execution> = by_exec.into_values().collect();
    all.sort_by_key(|e| e.start);
    all
}

/// A committed outcome, as the tracker of `process` reported it.
#[derive(Debug, Clone)]
pub struct Completion {
    pub process: String,
    pub instance: String,
    pub event_id: Option<String>,
    pub count: Option<i64>,
    pub at: i64,
}

pub async fn completions(client: &Client, log_schema: &str) -> Vec<Completion> {
    client
        .query(
            &format!(
                "SELECT process, instance, event_id, count, at_us \
                 FROM \"{log_schema}\".completions ORDER BY at_us"
            ),
            &[],
        )
        .await
        .expect("read the completions")
        .iter()
        .map(|row| Completion {
            process: row.get(0),
            instance: row.get(1),
            event_id: row.get(2),
            count: row.get(3),
            at: row.get(4),
        })
        .collect()
}

/// The WorkerPool event ids whose `idem:` record says `done`, in the runtime's tables.
pub async fn done_event_ids(client: &Client, schema: &str, job: &str) -> Vec<String> {
    client
        .query(
            &format!(
                "SELECT substr(key, 6) FROM \"{schema}\".rows \
                 WHERE instance LIKE $1 AND key LIKE 'idem:%' \
                 AND convert_from(value, 'UTF8')::jsonb ->> 'at' = 'done'"
            ),
            &[&format!("workerPool:{job}:%")],
        )
        .await
        .expect("read the event id records")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// What a child is told at its start.
pub struct ChildConfig<'a> {
    /// The ignored test that is the child's entry point.
    pub test: &'a str,
    /// Its role (the value of [`ROLE`]).
    pub role: &'a str,
    pub url: &'a str,
    pub schema: &'a str,
    pub log_schema: &'a str,
    /// Names the process in every row it records.
    pub label: String,
    /// Where it writes the calls that were acknowledged, and its stderr beside.
    pub dir: &'a Path,
}

/// A child process run by the parent.
pub struct Child {
    pub label: String,
    process: Process,
    stdin: Option<ChildStdin>,
    replies: std_mpsc::Receiver<String>,
    stderr: PathBuf,
}

impl Child {
    pub fn spawn(config: ChildConfig<'_>) -> Child {
        let stderr = config.dir.join(format!("{}.stderr", config.label));
        let mut process = Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                config.test,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, config.role)
            .env(URL, config.url)
            .env(SCHEMA, config.schema)
            .env(LOG_SCHEMA, config.log_schema)
            .env(LABEL, &config.label)
            .env(
                ACKS,
                config
                    .dir
                    .join(format!("{}.acks", config.label))
                    .as_os_str(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr).expect("a file for the child's stderr"))
            .spawn()
            .expect("start a child process");
        let stdin = process.stdin.take();
        let stdout = process.stdout.take().expect("the child's stdout");
        let (tx, replies) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The test harness may print on the same line before it.
                if let Some((_, reply)) = line.split_once("REPLY ") {
                    if tx.send(reply.to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        Child {
            label: config.label,
            process,
            stdin,
            replies,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Sends one command line.
    pub fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("the child's stdin is open");
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("cannot talk to {}: {e}\n{}", self.label, self.stderr()));
    }

    /// Waits for the next reply starting with `prefix`; the rest of it.
    pub async fn reply(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            match self.replies.try_recv() {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_owned();
                    }
                }
                Err(std_mpsc::TryRecvError::Empty) => {
                    if let Ok(Some(status)) = self.process.try_wait() {
                        panic!(
                            "{} exited ({status}) before answering {prefix}:\n{}",
                            self.label,
                            self.stderr()
                        );
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{} did not answer {prefix} in {timeout:?}:\n{}",
                        self.label,
                        self.stderr()
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(std_mpsc::TryRecvError::Disconnected) => panic!(
                    "{} closed its output before answering {prefix}:\n{}",
                    self.label,
                    self.stderr()
                ),
            }
        }
    }

    /// Panics with its stderr if it has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.process.try_wait() {
            panic!("{} exited ({status}):\n{}", self.label, self.stderr());
        }
    }

    /// SIGKILL; returns once it is gone, with the time then.
    pub fn kill(&mut self) -> i64 {
        self.process.kill().expect("SIGKILL a child");
        self.process.wait().expect("wait for a killed child");
        now_us()
    }

    /// SIGSTOP: the process stays, frozen, holding its connections.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        let status = Command::new("kill")
            .args([which, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {which} {} failed", self.pid());
    }

    /// Closes its stdin (it shuts its runtime down and exits) and waits up to `timeout`
    /// for it to exit; panics if it fails or does not.
    pub async fn close(&mut self, timeout: Duration) {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.try_wait().expect("wait for a child") {
                assert!(
                    status.success(),
                    "{} failed ({status}):\n{}",
                    self.label,
                    self.stderr()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit in {timeout:?}:\n{}",
                self.label,
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn stderr(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        // The end is what matters.
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // A test that fails leaves no process behind (SIGKILL also ends a stopped one).
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The acknowledged calls the children wrote, one line each, from every `*.acks` file in
/// `dir`.
pub fn ack_lines(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read the children's directory") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "acks") {
            let text = std::fs::read_to_string(&path).expect("read an acks file");
            // A line cut by a kill has no newline yet: it was not written whole.
            let complete = match text.rfind('\n') {
                Some(end) => &text[..end],
                None => "",
            };
            lines.extend(complete.lines().map(str::to_owned));
        }
    }
    lines
}

// --- The child's side ----------------------------------------------------------------

/// What a child was started with.
pub struct ChildEnv {
    pub url: String,
    pub schema: String,
    pub log_schema: String,
    pub label: String,
    pub acks: PathBuf,
}

impl ChildEnv {
    /// `None` unless this process is a child with `role`.
    pub fn for_role(role: &str) -> Option<ChildEnv> {
        if std::env::var(ROLE).ok()? != role {
            return None;
        }
        let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"));
        Some(ChildEnv {
            url: var(URL),
            schema: var(SCHEMA),
            log_schema: var(LOG_SCHEMA),
            label: var(LABEL),
            acks: PathBuf::from(var(ACKS)),
        })
    }
}

/// The parent's commands, one a line; the channel closes when the parent closes the
/// child's stdin, or dies.
pub fn commands() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Answers the parent.
pub fn reply(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "REPLY {text}");
    let _ = out.flush();
}

/// The file of acknowledged calls: each line is one `write` of an append-only file, so a
/// line is in the kernel's hands once written, and a SIGKILL cannot lose it.
#[derive(Clone)]
pub struct Acks(Arc<File>);

impl Acks {
    pub fn open(path: &Path) -> Acks {
        Acks(Arc::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("open the acks file"),
        ))
    }

    pub fn line(&self, text: String) {
        (&*self.0)
            .write_all(format!("{text}\n").as_bytes())
            .expect("write an ack");
    }
}

/// A child's recording connection.
#[derive(Clone)]
pub struct Recorder {
    client: Arc<Client>,
    process: Arc<str>,
    insert_execution: Statement,
    next_exec: Arc<AtomicI64>,
    completions: mpsc::UnboundedSender<Completion>,
    /// Completions sent and not written yet.
    unwritten: Arc<AtomicI64>,
}

/// One execution being recorded.
pub struct Recording {
    exec: i64,
    kind: &'static str,
    instance: String,
    ids: Vec<String>,
    attempt: i32,
}

impl Recorder {
    /// Connects; the connection (and the writer of completions) run on the current tokio
    /// runtime, which must outlive the recorder's use.
    pub async fn connect(env: &ChildEnv) -> Recorder {
        let (client, connection) = tokio_postgres::connect(&env.url, NoTls)
            .await
            .expect("connect the recorder");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let client = Arc::new(client);
        let log = &env.log_schema;
        let insert_execution = client
            .prepare(&format!(
                "INSERT INTO \"{log}\".executions \
                 (process, pid, exec, phase, kind, instance, ids, attempt, ok, torn, at_us) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ))
            .await
            .expect("prepare the execution insert");
        let insert_completion = client
            .prepare(&format!(
                "INSERT INTO \"{log}\".completions (process, instance, event_id, count, at_us) \
                 VALUES ($1, $2, $3, $4, $5)"
            ))
            .await
            .expect("prepare the completion insert");
        let (completions, mut pending) = mpsc::unbounded_channel::<Completion>();
        let writer = client.clone();
        let unwritten = Arc::new(AtomicI64::new(0));
        let written = unwritten.clone();
        tokio::spawn(async move {
            while let Some(c) = pending.recv().await {
                let _ = writer
                    .execute(
                        &insert_completion,
                        &[&c.process, &c.instance, &c.event_id, &c.count, &c.at],
                    )
                    .await;
                written.fetch_sub(1, Ordering::SeqCst);
            }
        });
        Recorder {
            client,
            process: Arc::from(env.label.as_str()),
            insert_execution,
            next_exec: Arc::new(AtomicI64::new(0)),
            completions,
            unwritten,
        }
    }

    /// Waits until every completion reported so far is written.
    pub async fn settle(&self) {
        while self.unwritten.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Records the start of an execution; user code may run once this returned `Ok`.
    pub async fn start(
        &self,
        kind: &'static str,
        instance: String,
        ids: Vec<String>,
        attempt: u32,
        torn: bool,
    ) -> Result<Recording, String> {
        let recording = Recording {
            exec: self.next_exec.fetch_add(1, Ordering::Relaxed),
            kind,
            instance,
            ids,
            attempt: i32::try_from(attempt).unwrap_or(i32::MAX),
        };
        let at = now_us();
        self.client
            .execute(
                &self.insert_execution,
                &[
                    &&*self.process,
                    &i64::from(std::process::id()),
                    &recording.exec,
                    &"start",
                    &recording.kind,
                    &recording.instance,
                    &recording.ids,
                    &recording.attempt,
                    &None::<bool>,
                    &torn,
                    &at,
                ],
            )
            .await
            .map_err(|e| format!("cannot record the start: {e}"))?;
        Ok(recording)
    }

    /// Records the end of an execution whose user code returned (`ok`: successfully).
    /// An `Err` must fail the execution: its outcome may then not commit unrecorded.
    pub async fn end(&self, recording: Recording, ok: bool) -> Result<(), String> {
        let at = now_us();
        self.client
            .execute(
                &self.insert_execution,
                &[
                    &&*self.process,
                    &i64::from(std::process::id()),
                    &recording.exec,
                    &"end",
                    &recording.kind,
                    &recording.instance,
                    &recording.ids,
                    &recording.attempt,
                    &Some(ok),
                    &None::<bool>,
                    &at,
                ],
            )
            .await
            .map(drop)
            .map_err(|e| format!("cannot record the end: {e}"))
    }

    /// A tracker that records committed outcomes: a WorkerPool event completed, a
    /// Debounce batch flushed, a Continuous run executed.
    pub fn tracker(&self) -> Arc<dyn EventTracker> {
        Arc::new(CompletionTracker {
            process: self.process.clone(),
            completions: self.completions.clone(),
            unwritten: self.unwritten.clone(),
        })
    }
}

struct CompletionTracker {
    process: Arc<str>,
    completions: mpsc::UnboundedSender<Completion>,
    unwritten: Arc<AtomicI64>,
}

impl EventTracker for CompletionTracker {
    fn emit(&self, event: JobEvent) {
        // The time is taken here: the outcome committed before it.
        let at = now_us();
        let (event_id, count) = match event.kind {
            EventKind::WorkerPoolCompleted { event_id, .. } => (Some(event_id), None),
            EventKind::DebounceFlushed { event_count, .. } => (None, Some(i64::from(event_count))),
            EventKind::ContinuousExecuted { run_count, .. } => {
                (None, Some(i64::try_from(run_count).unwrap_or(i64::MAX)))
            }
            _ => return,
        };
        self.unwritten.fetch_add(1, Ordering::SeqCst);
        let _ = self.completions.send(Completion {
            process: self.process.to_string(),
            instance: event.instance_id,
            event_id,
            count,
            at,
        });
    }
}
