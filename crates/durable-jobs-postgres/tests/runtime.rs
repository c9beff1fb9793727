//! The runtime's boundaries: connect errors, calls after shutdown, ids and keys that
//! PostgreSQL text cannot hold as they are.

mod common;

use std::time::Duration;

use common::{registry, server, Batcher, Recorder};
use durable_jobs::testing::DEFAULT_START;
use durable_jobs::{EnqueueRequest, JobError};
use durable_jobs_conformance::jobs::{Hook, Log, Task};
use durable_jobs_postgres::testing::unique_name;
use durable_jobs_postgres::{migrate, ConnectError, PostgresRuntime, SchemaError};

fn jobs(log: &Log) -> durable_jobs::Registry {
    registry(
        Recorder::new("p", log, 2),
        Batcher {
            label: "p",
            log: log.clone(),
        },
    )
}

async fn virtual_runtime(log: &Log) -> PostgresRuntime {
    PostgresRuntime::builder(server().url(), jobs(log))
        .schema(unique_name("runtime"))
        .virtual_clock(DEFAULT_START)
        .shards(2)
        .max_connections(4)
        .connect()
        .await
        .expect("start a runtime on the test server")
}

#[tokio::test]
async fn an_unreachable_server_is_a_connect_error() {
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://jobs:secret@127.0.0.1:{port}/app");
    let error = PostgresRuntime::connect(url, jobs(&Log::default()))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, ConnectError::Connect { .. }), "{error:?}");
    assert!(
        message.starts_with(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port}: "
        )),
        "{message}"
    );
    assert!(!message.contains("secret"), "{message}");

    let error = PostgresRuntime::connect("postgres://u:secret@db:port/app", jobs(&Log::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ConnectError::InvalidUrl { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_schema_newer_than_this_build_is_refused() {
    let schema = unique_name("newer");
    let mut sql = server().connect().await.unwrap();
    let version = migrate(&mut sql, &schema).await.unwrap();
    sql.execute(
        &format!("INSERT INTO \"{schema}\".schema_version (version) VALUES ($1)"),
        &[&(version as i32 + 1)],
    )
    .await
    .unwrap();
    let error = PostgresRuntime::builder(server().url(), jobs(&Log::default()))
        .schema(&schema)
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            ConnectError::Schema(SchemaError::SchemaTooNew { found, .. }) if *found == version + 1
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("newer"), "{error}");
}

#[tokio::test]
async fn calls_after_shutdown_are_refused() {
    let log = Log::default();
    let runtime = virtual_runtime(&log).await;
    let client = runtime.client();
    client
        .worker_pool::<Recorder>()
        .enqueue(&Task::named("t"))
        .await
        .unwrap();
    runtime.shutdown().await;
    let error = client
        .worker_pool::<Recorder>()
        .enqueue(&Task::named("u"))
        .await
        .unwrap_err();
    assert_eq!(error, JobError::ShutDown);
}

#[tokio::test]
async fn advance_needs_a_virtual_clock() {
    let runtime = PostgresRuntime::builder(server().url(), jobs(&Log::default()))
        .schema(unique_name("system"))
        .connect()
        .await
        .unwrap();
    let error = runtime.advance(Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(error, JobError::BadRequest { .. }), "{error:?}");
    runtime.settle().await.unwrap();
    runtime.shutdown().await;
}

/// PostgreSQL `text` cannot hold NUL, which instance keys and event ids may contain: they
/// are stored escaped, and behave as any other.
#[tokio::test]
async fn ids_and_keys_with_nul_work_like_any_other() {
    let log = Log::default();
    let runtime = virtual_runtime(&log).await;
    let client = runtime.client();
    let batcher = client.debounce::<Batcher>();
    assert!(
        !batcher
            .add_with_id("a\0b", &Hook { n: 1 }, "e\0")
            .await
            .unwrap()
            .duplicate
    );
    assert!(
        batcher
            .add_with_id("a\0b", &Hook { n: 2 }, "e\0")
            .await
            .unwrap()
            .duplicate
    );
    assert!(
        !batcher
            .add_with_id("a\0b", &Hook { n: 3 }, "e\u{1}")
            .await
            .unwrap()
            .duplicate
    );
    batcher.add("a\0c", &Hook { n: 4 }).await.unwrap();
    batcher.add("a\u{1}b", &Hook { n: 5 }).await.unwrap();
    assert_eq!(batcher.state("a\0b").await.unwrap(), Some(vec![1, 3]));
    assert_eq!(batcher.state("a\0c").await.unwrap(), Some(vec![4]));
    assert_eq!(batcher.state("a\u{1}b").await.unwrap(), Some(vec![5]));

    let pool = client.worker_pool::<Recorder>();
    pool.pause_all().await.unwrap();
    let with_nul = EnqueueRequest::new().event_id("x\0y").partition_key("p\0");
    pool.enqueue_with(&Task::named("x"), with_nul.clone())
        .await
        .unwrap();
    assert!(
        pool.enqueue_with(&Task::named("x"), with_nul)
            .await
            .unwrap()
            .duplicate
    );
    pool.enqueue_with(&Task::named("z"), EnqueueRequest::new().event_id("x\0z"))
        .await
        .unwrap();
    assert!(pool.cancel("x\0y").await.unwrap());
    assert!(!pool.cancel("x\0y").await.unwrap());
    pool.resume_all().await.unwrap();
    runtime.advance(Duration::from_secs(1)).await.unwrap();
    let mut lines = log.lines();
    lines.sort();
    assert_eq!(
        lines,
        [
            "p flush [1, 3]",
            "p flush [4]",
            "p flush [5]",
            "p z attempt 1"
        ]
    );

    // Stored escaped: no NUL reached the server, and the escape is visible in the table.
    let sql = server().connect().await.unwrap();
    let schema = runtime.schema().as_str();
    let escaped: i64 = sql
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{schema}\".rows WHERE key = 'idem:x' || chr(1) || chr(1) || 'z'"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(escaped, 1, "the id record of x\\0z, escaped");
    runtime.shutdown().await;
}

fn assert_send<T: Send>(value: T) -> T {
    value
}

fn assert_send_sync<T: Send + Sync>(value: &T) -> &T {
    value
}

/// The runtime can be shared between tasks and threads, and the client's futures can be
/// spawned on a multi-threaded executor: a web server's handlers can enqueue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_is_shared_and_client_futures_are_send() {
    let log = Log::default();
    let runtime = std::sync::Arc::new(virtual_runtime(&log).await);
    assert_send_sync(runtime.as_ref());
    let client = assert_send(runtime.client());
    let enqueued = tokio::spawn(async move {
        assert_send(client.worker_pool::<Recorder>().enqueue(&Task::named("t"))).await
    });
    enqueued.await.unwrap().unwrap();
    let shared = runtime.clone();
    tokio::spawn(async move { shared.advance(Duration::ZERO).await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(log.lines(), ["p t attempt 1"]);
    std::sync::Arc::try_unwrap(runtime)
        .unwrap()
        .shutdown()
        .await;
}

/// An alarm pass that fails (here a stored record that no longer decodes) gives its lease
/// back held until a retry 1 s later, then 2 s...; once the record is readable again, the
/// work runs.
#[tokio::test]
async fn a_failing_alarm_pass_is_retried_with_backoff() {
    let log = Log::default();
    let runtime = virtual_runtime(&log).await;
    let schema = runtime.schema().as_str().to_owned();
    let pool = runtime.client();
    let pool = pool.worker_pool::<Recorder>();
    pool.pause_all().await.unwrap();
    let queued = pool
        .enqueue_with(&Task::named("x"), EnqueueRequest::new().event_id("x"))
        .await
        .unwrap();
    let instance = format!("workerPool:recorder:{}", queued.instance_index);
    let sql = server().connect().await.unwrap();
    let event =
        format!("SELECT value FROM \"{schema}\".rows WHERE instance = $1 AND key LIKE 'q:%'");
    let stored: Vec<u8> = sql.query_one(&event, &[&instance]).await.unwrap().get(0);
    let write =
        format!("UPDATE \"{schema}\".rows SET value = $2 WHERE instance = $1 AND key LIKE 'q:%'");
    sql.execute(&write, &[&instance, &b"not json".as_slice()])
        .await
        .unwrap();
    let held_until = || async {
        let lease = format!(
            "SELECT alarm_owner, alarm_lease_until FROM \"{schema}\".instances WHERE id = $1"
        );
        let row = sql.query_one(&lease, &[&instance]).await.unwrap();
        let owner: Option<String> = row.get(0);
        assert_eq!(owner, None, "the lease was given back");
        row.get::<_, Option<i64>>(1).map(|t| t - runtime.now())
    };

    pool.resume_all().await.unwrap();
    runtime.advance(Duration::ZERO).await.unwrap();
    assert_eq!(held_until().await, Some(999), "held back for 1 s");
    runtime.advance(Duration::from_secs(1)).await.unwrap();
    assert_eq!(held_until().await, Some(1_999), "then for 2 s");
    assert!(log.lines().is_empty());

    sql.execute(&write, &[&instance, &stored]).await.unwrap();
    runtime.advance(Duration::from_secs(2)).await.unwrap();
    assert_eq!(log.lines(), ["p x attempt 1"]);
    assert_eq!(held_until().await, None, "released");
    runtime.shutdown().await;
}

/// A pass hands back after 64 executions with its alarm due again: the process takes it
/// again at once, not at its next poll, so one busy instance drains without pauses. Six
/// hand-backs: a poller woken by the pass's last commit may look just after the lease is
/// given back and find the alarm, so a single one would not always show a pause.
#[tokio::test]
async fn a_busy_instance_goes_on_after_its_pass_hands_back() {
    const EVENTS: usize = 400;
    let log = Log::default();
    let registry = common::registry(
        Recorder::new("p", &log, 1),
        Batcher {
            label: "p",
            log: log.clone(),
        },
    );
    // Polling alone would leave a minute between passes.
    let poll = Duration::from_secs(60);
    let runtime = common::start(
        server().url(),
        &unique_name("busy"),
        registry,
        poll,
        Duration::from_secs(30),
    )
    .await;
    let pool = runtime.client();
    let pool = pool.worker_pool::<Recorder>();
    pool.pause_all().await.unwrap();
    for i in 0..EVENTS {
        pool.enqueue(&Task::named(&i.to_string())).await.unwrap();
    }
    pool.resume_all().await.unwrap();
    common::eventually(
        "every event ran, over seven passes",
        Duration::from_secs(20),
        || async { log.lines().len() == EVENTS },
    )
    .await;
    runtime.shutdown().await;
}
