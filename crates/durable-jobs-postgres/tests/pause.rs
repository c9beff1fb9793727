//! A process frozen with SIGSTOP in the middle of an execution, past its lease: another
//! process takes the alarm over and completes the event; when the first one resumes
//! (SIGCONT) and its user code returns, its late completion is refused. Nothing is counted
//! twice and no work is lost.

mod children;

use std::time::{Duration, Instant};

use children::{
    commands, completions, create_log_tables, done_event_ids, executions, reply, Child,
    ChildConfig, ChildEnv, Completion, Execution, Recorder,
};
use durable_jobs::{
    EnqueueRequest, JobsClient, Registry, RetryPolicy, WorkerPool, WorkerPoolContext,
};
use durable_jobs_postgres::testing::{unique_name, TestServer};
use durable_jobs_postgres::tokio_postgres::Client;
use durable_jobs_postgres::{PostgresRuntime, PostgresTransport};

const LEASE: Duration = Duration::from_secs(1);
/// How long an event named `slow-*` runs: well past the lease.
const SLOW: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(100);
const CHILD_TEST: &str = "pause_child";
const ROLE: &str = "pause";

/// One instance: events run one at a time, in order.
struct Slow(Recorder);

impl WorkerPool for Slow {
    type Event = String;
    type Error = String;

    fn concurrency(&self) -> u32 {
        1
    }

    fn retry(&self) -> RetryPolicy {
        RetryPolicy::fixed(5, Duration::from_millis(100))
    }

    async fn execute(&self, ctx: &WorkerPoolContext<String>) -> Result<(), String> {
        let recording = self
            .0
            .start(
                "slow",
                ctx.execution().instance_id().to_string(),
                vec![ctx.event_id().to_owned()],
                ctx.attempt(),
                false,
            )
            .await?;
        if ctx.event().starts_with("slow") {
            tokio::time::sleep(SLOW).await;
        }
        self.0.end(recording, true).await
    }
}

/// A child: enqueues when told (`enqueue NAME`), reports the pool's status (`status`),
/// and shuts down when its stdin closes.
#[test]
#[ignore = "a child process of a_process_paused_past_its_lease_cannot_complete_late"]
fn pause_child() {
    let Some(env) = ChildEnv::for_role(ROLE) else {
        return;
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(child(env));
}

async fn child(env: ChildEnv) {
    let recorder = Recorder::connect(&env).await;
    let registry = Registry::builder()
        .worker_pool("slow", Slow(recorder.clone()))
        .build()
        .expect("a registry");
    let runtime = PostgresRuntime::builder(&env.url, registry)
        .schema(&env.schema)
        .lease(LEASE)
        .poll_interval(POLL)
        .shards(1)
        .max_connections(4)
        .shutdown_grace(Duration::from_secs(1))
        .tracker(recorder.tracker())
        .connect()
        .await
        .expect("start the runtime");
    let client = runtime.client();
    reply("READY");
    let mut commands = commands();
    while let Some(command) = commands.recv().await {
        if let Some(name) = command.strip_prefix("enqueue ") {
            let enqueued = client
                .worker_pool::<Slow>()
                .enqueue_with(&name.to_owned(), EnqueueRequest::new().event_id(name))
                .await;
            match enqueued {
                Ok(_) => reply(&format!("ENQUEUED {name}")),
                Err(error) => reply(&format!("ENQUEUED error {error}")),
            }
        } else if command == "status" {
            reply(&status(&client).await);
        }
    }
    runtime.shutdown().await;
    recorder.settle().await;
}

async fn status(client: &JobsClient<PostgresTransport>) -> String {
    match client.worker_pool::<Slow>().status().await {
        Ok(pool) => format!(
            "STATUS pending={} processed={} dead={}",
            pool.pending, pool.processed, pool.dead_letters
        ),
        Err(error) => format!("STATUS error {error}"),
    }
}

struct Setup {
    server: TestServer,
    schema: String,
    log_schema: String,
    dir: std::path::PathBuf,
    sql: Client,
}

impl Setup {
    fn spawn(&self, label: &str) -> Child {
        Child::spawn(ChildConfig {
            test: CHILD_TEST,
            role: ROLE,
            url: self.server.url(),
            schema: &self.schema,
            log_schema: &self.log_schema,
            label: label.to_owned(),
            dir: &self.dir,
        })
    }

    async fn executions_of(&self, id: &str) -> Vec<Execution> {
        executions(&self.sql, &self.log_schema)
            .await
            .into_iter()
            .filter(|e| e.ids == [id])
            .collect()
    }

    async fn completions_of(&self, id: &str) -> Vec<Completion> {
        completions(&self.sql, &self.log_schema)
            .await
            .into_iter()
            .filter(|c| c.event_id.as_deref() == Some(id))
            .collect()
    }
}

/// Waits until `check` holds, looking every 20 ms; panics naming `what` after `timeout`.
async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn enqueue(child: &mut Child, name: &str) {
    child.send(&format!("enqueue {name}"));
    let answer = child.reply("ENQUEUED", Duration::from_secs(10)).await;
    assert_eq!(answer, name, "the enqueue through {} failed", child.label);
}

#[tokio::test]
async fn a_process_paused_past_its_lease_cannot_complete_late() {
    let began = Instant::now();
    let server = TestServer::new().expect("a PostgreSQL server for the test");
    let sql = server.connect().await.expect("connect to the test server");
    let log_schema = unique_name("pause_log");
    create_log_tables(&sql, &log_schema).await;
    let dir = std::env::temp_dir().join(unique_name("durable-jobs-pause"));
    std::fs::create_dir_all(&dir).expect("a directory for the children's files");
    // Kept if the test fails: each child's acknowledged calls and stderr.
    println!("children's files in {}", dir.display());
    let setup = Setup {
        server,
        schema: unique_name("pause"),
        log_schema,
        dir,
        sql,
    };

    // `a` alone takes the slow event, and is frozen once its user code runs.
    let mut a = setup.spawn("a");
    a.reply("READY", Duration::from_secs(20)).await;
    enqueue(&mut a, "slow-x").await;
    eventually("a started slow-x", Duration::from_secs(10), || async {
        !setup.executions_of("slow-x").await.is_empty()
    })
    .await;
    a.pause();
    let paused = Instant::now();

    // `b` takes the alarm over once a's lease has run out, and completes slow-x; an event
    // enqueued meanwhile is not lost behind it.
    let mut b = setup.spawn("b");
    b.reply("READY", Duration::from_secs(20)).await;
    enqueue(&mut b, "y").await;
    eventually("b completed slow-x and y", SLOW * 4, || async {
        !setup.completions_of("slow-x").await.is_empty()
            && !setup.completions_of("y").await.is_empty()
    })
    .await;

    // `a` resumes: its user code returns at once (its sleep is long over) and its
    // completion is refused.
    a.resume();
    let paused_for = paused.elapsed();
    eventually(
        "a's execution of slow-x returned",
        Duration::from_secs(10),
        || async {
            setup
                .executions_of("slow-x")
                .await
                .iter()
                .any(|e| e.process == "a" && e.end.is_some())
        },
    )
    .await;
    // `a` works on: what is enqueued through it runs.
    enqueue(&mut a, "z").await;
    eventually("z completed", Duration::from_secs(10), || async {
        !setup.completions_of("z").await.is_empty()
    })
    .await;
    b.send("status");
    let status = b.reply("STATUS", Duration::from_secs(10)).await;
    a.close(Duration::from_secs(10)).await;
    b.close(Duration::from_secs(10)).await;

    assert_eq!(
        status, "pending=0 processed=3 dead=0",
        "slow-x, y and z each counted once"
    );
    let runs = setup.executions_of("slow-x").await;
    let [first, second] = &runs[..] else {
        panic!("slow-x ran twice, once in each process: {runs:#?}");
    };
    assert_eq!(
        (first.process.as_str(), first.attempt),
        ("a", 1),
        "{runs:#?}"
    );
    assert_eq!(
        (second.process.as_str(), second.attempt),
        ("b", 2),
        "{runs:#?}"
    );
    let lease_us = i64::try_from(LEASE.as_micros()).unwrap_or(i64::MAX);
    assert!(
        second.start - first.start >= lease_us,
        "b took slow-x over only once a's lease had run out: {runs:#?}"
    );
    let (Some(a_end), Some(b_end)) = (first.ended_ok(), second.ended_ok()) else {
        panic!("both executions returned: {runs:#?}");
    };
    assert!(
        a_end > b_end,
        "a's user code returned after b had completed slow-x: {runs:#?}"
    );
    let done = setup.completions_of("slow-x").await;
    assert_eq!(done.len(), 1, "slow-x completed once: {done:?}");
    assert_eq!(
        done[0].process, "b",
        "only b's completion committed: {done:?}"
    );
    for id in ["y", "z"] {
        assert_eq!(setup.executions_of(id).await.len(), 1, "{id} ran once");
        assert_eq!(
            setup.completions_of(id).await.len(),
            1,
            "{id} completed once"
        );
    }
    let mut recorded_done = done_event_ids(&setup.sql, &setup.schema, "slow").await;
    recorded_done.sort();
    assert_eq!(recorded_done, ["slow-x", "y", "z"]);
    println!(
        "paused a for {:.1} s (lease {LEASE:?}); slow-x ran in a (attempt 1, refused) and b \
         (attempt 2, committed); a's user code returned {} ms after b's; {:.1} s in all",
        paused_for.as_secs_f64(),
        (a_end - b_end) / 1000,
        began.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&setup.dir);
}
