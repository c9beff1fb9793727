//! The `durable-jobs` binary against a live embedded runtime served by the admin API in
//! this process, and against the runtime's file once it stopped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use durable_jobs::inspect::{InstancePage, StatusCounts};
use durable_jobs::testing::DEFAULT_START;
use durable_jobs::{
    Continuous, ContinuousContext, Registry, Rejected, RetryPolicy, Schedule, Status, Task,
    TaskContext, WorkerPool, WorkerPoolContext,
};
use durable_jobs_admin::{serve, Access, Admin, Token};
use durable_jobs_local::LocalRuntime;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

const TOKEN: &str = "cli-test-token-0123456789abcdef";

/// Fails every event named "bad" while `failing` is set.
#[derive(Clone, Default)]
struct Tasks {
    failing: Arc<AtomicBool>,
}

impl WorkerPool for Tasks {
    type Event = String;
    type Error = String;

    fn concurrency(&self) -> u32 {
        2
    }

    fn retry(&self) -> RetryPolicy {
        RetryPolicy::none()
    }

    async fn execute(&self, ctx: &WorkerPoolContext<String>) -> Result<(), String> {
        if ctx.event() == "bad" && self.failing.load(Ordering::SeqCst) {
            return Err("bad fails".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Runs {
    runs: u32,
}

/// Counts its runs, once an hour.
struct Ticker;

impl Continuous for Ticker {
    type State = Runs;
    type Error = String;

    fn schedule(&self) -> Schedule {
        Schedule::every(Duration::from_secs(3600))
    }

    fn start_immediately(&self) -> bool {
        false
    }

    async fn execute(&self, ctx: &mut ContinuousContext<Runs>) -> Result<(), String> {
        ctx.state_mut().runs += 1;
        Ok(())
    }
}

/// Runs a day after its event, and counts its runs in its state.
struct Reminder;

impl Task for Reminder {
    type State = u32;
    type Event = ();
    type Error = String;

    fn on_event(&self, ctx: &mut TaskContext<u32>, _: ()) -> Result<(), Rejected> {
        ctx.set_state(0);
        ctx.schedule_in(Duration::from_secs(24 * 3600));
        Ok(())
    }

    async fn execute(&self, ctx: &mut TaskContext<u32>) -> Result<(), String> {
        ctx.set_state(ctx.state().copied().unwrap_or(0) + 1);
        Ok(())
    }
}

/// A runtime on a temporary file with a dead-lettered event on one pool instance and a
/// started Continuous instance, its admin API served on a loopback port.
struct Service {
    tokio: tokio::runtime::Runtime,
    runtime: Option<LocalRuntime>,
    url: String,
    path: PathBuf,
    tasks: Tasks,
    /// The pool instance holding the dead letter, and the letter's event id.
    stuck: (u32, String),
    _dir: tempfile::TempDir,
}

impl Service {
    fn start() -> Service {
        Self::start_under("")
    }

    /// The API mounted under `prefix` (empty: at the root).
    fn start_under(prefix: &str) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let tasks = Tasks::default();
        tasks.failing.store(true, Ordering::SeqCst);
        let registry = Registry::builder()
            .worker_pool("tasks", tasks.clone())
            .continuous("ticker", Ticker)
            .task("reminder", Reminder)
            .build()
            .unwrap();
        let runtime = LocalRuntime::builder(registry)
            .path(&path)
            .virtual_clock(DEFAULT_START)
            .shards(1)
            .user_code_threads(1)
            .open()
            .unwrap();
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let admin = Admin::local(&runtime, Access::Token(Token::new(TOKEN).unwrap()));
        let addr: SocketAddr = tokio.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            if prefix.is_empty() {
                tokio::spawn(serve(listener, admin));
            } else {
                let app = axum::Router::new().nest(prefix, admin.router());
                tokio::spawn(async move { axum::serve(listener, app).await });
            }
            addr
        });
        let stuck = tokio.block_on(async {
            let client = runtime.client();
            let pool = client.worker_pool::<Tasks>();
            pool.enqueue(&"good".to_string()).await.unwrap();
            let bad = pool.enqueue(&"bad".to_string()).await.unwrap();
            let ticker = client.continuous::<Ticker>();
            ticker.start("a", &Runs { runs: 0 }).await.unwrap();
            ticker.start("b", &Runs { runs: 5 }).await.unwrap();
            let reminder = client.task::<Reminder>();
            reminder.send("standing", &()).await.unwrap();
            runtime.advance(Duration::from_secs(1)).await.unwrap();
            (bad.instance_index, bad.event_id)
        });
        Service {
            tokio,
            runtime: Some(runtime),
            url: format!("http://{addr}{prefix}/"),
            path,
            tasks,
            stuck,
            _dir: dir,
        }
    }

    fn runtime(&self) -> &LocalRuntime {
        self.runtime.as_ref().unwrap()
    }

    fn advance(&self) {
        self.tokio
            .block_on(self.runtime().advance(Duration::from_secs(1)))
            .unwrap();
    }

    fn stuck_id(&self) -> String {
        format!("workerPool:tasks:{}", self.stuck.0)
    }

    /// Runs the binary against this service with the right token.
    fn cli(&self, args: &[&str]) -> Run {
        run(args, Some(&self.url), Some(TOKEN))
    }

    fn shutdown(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            self.tokio.block_on(runtime.shutdown());
        }
    }
}

/// What one run of the binary did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Its output, once it succeeded.
    fn ok(self) -> String {
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        self.stdout
    }

    /// Its JSON output, once it succeeded.
    fn json(self) -> Value {
        serde_json::from_str(&self.ok()).unwrap()
    }

    /// Its error message, once it failed with `code`.
    fn failed(self, code: i32) -> String {
        assert_eq!(self.code, code, "stdout: {}", self.stdout);
        assert!(self.stdout.is_empty(), "{}", self.stdout);
        self.stderr
    }
}

fn run(args: &[&str], url: Option<&str>, token: Option<&str>) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_durable-jobs"));
    command
        .args(args)
        .env_remove("DURABLE_JOBS_URL")
        .env_remove("DURABLE_JOBS_TOKEN");
    if let Some(url) = url {
        command.env("DURABLE_JOBS_URL", url);
    }
    if let Some(token) = token {
        command.env("DURABLE_JOBS_TOKEN", token);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().unwrap();
    Run {
        code: status.code().unwrap(),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

/// The cells of a text table's lines, split on runs of spaces.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|line| line.split("  ").map(str::trim).filter(|c| !c.is_empty()))
        .map(|cells| cells.map(String::from).collect())
        .collect()
}

#[test]
fn jobs_as_a_table_and_as_json() {
    let service = Service::start();
    let table = service.cli(&["jobs"]).ok();
    assert_eq!(
        rows(&table),
        [
            ["KIND", "NAME"],
            ["continuous", "ticker"],
            ["task", "reminder"],
            ["workerPool", "tasks"]
        ],
        "{table}"
    );
    assert_eq!(
        service.cli(&["jobs", "--json"]).json(),
        json!([
            { "kind": "continuous", "name": "ticker" },
            { "kind": "task", "name": "reminder" },
            { "kind": "workerPool", "name": "tasks" },
        ])
    );
}

#[test]
fn an_operator_finds_a_dead_letter_and_replays_it() {
    let service = Service::start();
    let id = service.stuck_id();
    let (index, event_id) = service.stuck.clone();

    let table = service
        .cli(&["instances", "workerPool", "tasks", "--dead-letters"])
        .ok();
    let found = rows(&table);
    assert_eq!(found.len(), 2, "{table}");
    assert_eq!(found[0][..4], ["ID", "STATUS", "PENDING", "DEAD LETTERS"]);
    assert_eq!(found[1][..4], [id.as_str(), "active", "0", "1"], "{table}");
    let page: InstancePage = serde_json::from_value(
        service
            .cli(&[
                "--json",
                "instances",
                "workerPool",
                "tasks",
                "--dead-letters",
            ])
            .json(),
    )
    .unwrap();
    assert_eq!(page.instances.len(), 1);
    assert_eq!(page.instances[0].id.to_string(), id);

    let letters = service.cli(&["dead-letters", &id]).ok();
    assert_eq!(rows(&letters)[1][1], event_id, "{letters}");
    assert!(letters.contains("bad fails"), "{letters}");
    let shown = service.cli(&["show", &id]).ok();
    assert!(
        rows(&shown).contains(&vec!["id".to_string(), id.clone()]),
        "{shown}"
    );
    assert!(
        rows(&shown).contains(&vec!["dead letters".to_string(), "1".to_string()]),
        "{shown}"
    );
    let view = service.cli(&["show", &id, "--json"]).json();
    assert_eq!(view["status"]["status"]["deadLetters"], 1, "{view}");

    // Discarding asks first; with no terminal to ask on, it refuses.
    let refused = service.cli(&["discard", &id]).failed(1);
    assert!(refused.contains("--yes"), "{refused}");

    let pool = service.runtime().client();
    let pool = pool.worker_pool::<Tasks>();
    let before = service.tokio.block_on(pool.instance_status(index)).unwrap();
    service.tasks.failing.store(false, Ordering::SeqCst);
    let replayed = service.cli(&["replay", &id, &event_id]).ok();
    assert_eq!(replayed, format!("replayed 1 dead letter of {id}\n"));
    service.advance();
    let after = service.tokio.block_on(pool.instance_status(index)).unwrap();
    assert_eq!(after.dead_letters, 0, "{after:?}");
    assert_eq!(
        after.processed,
        before.processed + 1,
        "the replayed event ran"
    );
    assert_eq!(
        service
            .cli(&["instances", "workerPool", "tasks", "--dead-letters"])
            .ok(),
        "no instances\n"
    );
}

#[test]
fn pause_resume_and_trigger_reach_the_instances() {
    let service = Service::start();
    let client = service.runtime().client();
    let pool = client.worker_pool::<Tasks>();
    let status = |index| service.tokio.block_on(pool.instance_status(index)).unwrap();

    let paused = service.cli(&["pause", "workerPool:tasks:1"]).ok();
    assert_eq!(paused, "paused workerPool:tasks:1\n");
    assert!(matches!(status(1).status, Status::Paused { .. }));
    assert!(matches!(status(0).status, Status::Active));
    let listed = service
        .cli(&["instances", "workerPool", "tasks", "--status", "paused"])
        .ok();
    assert_eq!(
        rows(&listed)[1][..2],
        ["workerPool:tasks:1", "paused"],
        "{listed}"
    );
    assert_eq!(rows(&listed).len(), 2, "{listed}");
    let answer = service
        .cli(&["resume", "workerPool:tasks:1", "--json"])
        .json();
    assert_eq!(answer, json!({ "type": "resumed" }));
    assert!(matches!(status(1).status, Status::Active));

    let ticker = client.continuous::<Ticker>();
    let runs = || service.tokio.block_on(ticker.state("a")).unwrap().unwrap();
    assert_eq!(runs().runs, 0);
    service.cli(&["trigger", "continuous:ticker:a"]).ok();
    service.advance();
    assert_eq!(runs().runs, 1, "the trigger ran it");
    let shown = service.cli(&["show", "continuous:ticker:a"]).ok();
    assert!(shown.contains("run count"), "{shown}");
    assert!(shown.contains("\"runs\": 1"), "{shown}");

    let reminders = client.task::<Reminder>();
    service
        .tokio
        .block_on(reminders.send("order-1", &()))
        .unwrap();
    let triggered = service.cli(&["trigger", "task:reminder:order-1"]).ok();
    assert!(
        triggered.starts_with("triggered task:reminder:order-1"),
        "{triggered}"
    );
    service.advance();
    let runs = service.tokio.block_on(reminders.state("order-1")).unwrap();
    assert_eq!(runs, Some(1), "the trigger ran the task before its timer");
    let listed = service.cli(&["instances", "task", "reminder"]).ok();
    assert!(listed.contains("task:reminder:order-1"), "{listed}");
    let unconfirmed = service.cli(&["terminate", "task:reminder:order-1"]);
    assert_ne!(unconfirmed.code, 0);
    assert!(
        unconfirmed.stderr.contains("--yes"),
        "{}",
        unconfirmed.stderr
    );
    let ended = service
        .cli(&["terminate", "task:reminder:order-1", "--yes"])
        .ok();
    assert_eq!(ended, "terminated task:reminder:order-1\n");
    let gone = service.tokio.block_on(reminders.status("order-1")).unwrap();
    assert_eq!(gone, None);
    let refused = service.cli(&["trigger", "workerPool:tasks:0"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused
            .stderr
            .contains("only continuous and task instances"),
        "{}",
        refused.stderr
    );
}

#[test]
fn discard_with_yes_deletes_every_dead_letter() {
    let service = Service::start();
    let id = service.stuck_id();
    let pool = service.runtime().client();
    let pool = pool.worker_pool::<Tasks>();
    let status = || {
        service
            .tokio
            .block_on(pool.instance_status(service.stuck.0))
            .unwrap()
    };
    let before = status();
    let answer = service.cli(&["discard", &id, "--yes", "--json"]).json();
    assert_eq!(answer, json!({ "type": "deadLettersChanged", "count": 1 }));
    service.advance();
    let after = status();
    assert_eq!(after.dead_letters, 0, "{after:?}");
    assert_eq!(after.processed, before.processed, "discarded, not run");
}

#[test]
fn a_missing_or_wrong_token_says_what_to_do() {
    let service = Service::start();
    let missing = run(&["jobs"], Some(&service.url), None).failed(1);
    assert!(missing.contains("set DURABLE_JOBS_TOKEN"), "{missing}");
    assert!(missing.contains("no admin token"), "{missing}");
    let wrong = run(
        &["pause", "workerPool:tasks:0"],
        Some(&service.url),
        Some("wrong-token-0123456789abcdef"),
    )
    .failed(1);
    assert!(wrong.contains("set DURABLE_JOBS_TOKEN"), "{wrong}");
    assert!(wrong.contains("wrong bearer token"), "{wrong}");
}

#[test]
fn bad_input_shows_the_apis_message() {
    let service = Service::start();
    let message = service.cli(&["show", "nonsense"]).failed(1);
    assert!(message.contains("not an instance id"), "{message}");
    let message = service.cli(&["pause", "workerPool:nope:0"]).failed(1);
    assert!(message.contains("nope"), "{message}");
    let message = service
        .cli(&["instances", "workerPool", "tasks", "--limit", "0"])
        .failed(1);
    assert!(message.contains("1 to 500"), "{message}");
    // What clap refuses is a usage error.
    let usage = service.cli(&["instances", "cron", "tasks"]).failed(2);
    assert!(usage.contains("possible values"), "{usage}");
}

#[test]
fn an_unreachable_service_and_a_wrong_mount_point_are_explained() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    let message = run(&["jobs", "--url", &url], None, Some(TOKEN)).failed(1);
    assert!(message.contains("cannot reach the admin API"), "{message}");

    let service = Service::start_under("/ops/admin");
    assert!(service.url.ends_with("/ops/admin/"));
    let table = service.cli(&["jobs"]).ok();
    assert_eq!(rows(&table).len(), 4, "{table}");
    let root = service.url.replace("/ops/admin/", "/");
    let message = run(&["jobs", "--url", &root], None, Some(TOKEN)).failed(1);
    assert!(
        message.contains("is --url where the admin API is mounted"),
        "{message}"
    );
}

fn file_cli(path: &Path, args: &[&str]) -> Run {
    let mut all = vec!["--file", path.to_str().unwrap()];
    all.extend_from_slice(args);
    run(&all, None, None)
}

#[test]
fn a_stopped_runtimes_file_reads_as_the_service_answered() {
    let mut service = Service::start();
    let id = service.stuck_id();
    let questions: [&[&str]; 6] = [
        &["jobs"],
        &["instances", "workerPool", "tasks"],
        &["instances", "continuous", "ticker", "--limit", "1"],
        &["counts", "workerPool", "tasks"],
        &["counts", "continuous", "ticker"],
        &["dead-letters", &id],
    ];
    let answered: Vec<(Value, String)> = questions
        .iter()
        .map(|args| {
            let mut json = args.to_vec();
            json.push("--json");
            (service.cli(&json).json(), service.cli(args).ok())
        })
        .collect();
    let counts: StatusCounts = serde_json::from_value(answered[3].0.clone()).unwrap();
    assert_eq!(counts.with_dead_letters, 1, "{counts:?}");
    service.shutdown();
    let before = std::fs::read(&service.path).unwrap();

    for (args, (json, table)) in questions.iter().zip(&answered) {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        assert_eq!(
            &file_cli(&service.path, &with_json).json(),
            json,
            "{args:?}"
        );
        assert_eq!(&file_cli(&service.path, args).ok(), table, "{args:?}");
    }
    let shown = file_cli(&service.path, &["show", "continuous:ticker:b", "--json"]).json();
    assert_eq!(shown["state"], json!({ "runs": 5 }), "{shown}");
    assert_eq!(shown["metadata"]["status"], json!({ "status": "active" }));
    let shown = file_cli(&service.path, &["show", &id]).ok();
    assert!(shown.contains("workerPool record:"), "{shown}");

    let message = file_cli(&service.path, &["show", "continuous:ticker:nobody"]).failed(1);
    assert!(message.contains("no instance"), "{message}");
    let usage = file_cli(&service.path, &["replay", &id]).failed(2);
    assert!(usage.contains("cannot be used with --file"), "{usage}");
    assert!(
        std::fs::read(&service.path).unwrap() == before,
        "reading changed the file"
    );
}
