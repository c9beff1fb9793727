//! Group commit: concurrent calls to one instance share transactions, and each is
//! answered only once its own writes are committed.

mod common;

use common::{registry, server, Batcher, Recorder};
use durable_jobs_conformance::jobs::{Log, Task};
use durable_jobs_postgres::testing::unique_name;
use durable_jobs_postgres::PostgresRuntime;
use futures::stream::{self, StreamExt};

const CALLS: usize = 400;

/// The write transactions the server began so far (each takes a transaction id).
async fn transactions(admin: &tokio_postgres::Client) -> i64 {
    let row = admin
        .query_one("SELECT pg_current_xact_id()::text::bigint", &[])
        .await
        .unwrap();
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_to_one_instance_share_transactions() {
    let log = Log::default();
    let jobs = registry(
        Recorder::new("g", &log, 1),
        Batcher {
            label: "g",
            log: log.clone(),
        },
    );
    let rt = PostgresRuntime::builder(server().url(), jobs)
        .schema(unique_name("group"))
        .shards(2)
        .max_connections(4)
        .connect()
        .await
        .unwrap();
    let client = rt.client();
    let pool = client.worker_pool::<Recorder>();
    pool.pause_all().await.unwrap();
    let admin = server().connect().await.unwrap();

    let before = transactions(&admin).await;
    let answers: Vec<_> = stream::iter(0..CALLS)
        .map(|i| {
            let client = &client;
            async move {
                let task = Task::named(&format!("task-{i}"));
                client.worker_pool::<Recorder>().enqueue(&task).await
            }
        })
        .buffer_unordered(CALLS)
        .collect()
        .await;
    let used = transactions(&admin).await - before;
    eprintln!("{CALLS} enqueues, {used} write transactions");

    for answer in &answers {
        answer.as_ref().expect("every enqueue is answered");
    }
    let status = pool.status().await.unwrap();
    assert_eq!(
        status.pending, CALLS as u64,
        "every acknowledged enqueue is stored"
    );
    // One transaction per call would be CALLS; the reading transactions take none.
    assert!(
        used <= (CALLS / 4) as i64,
        "{CALLS} concurrent enqueues took {used} write transactions"
    );
    rt.shutdown().await;
}

/// What a transaction read is forgotten when it ends: another process may change it as
/// soon as the instance's lock is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_sees_what_another_process_committed_after_its_last_read() {
    let log = Log::default();
    let schema = unique_name("group_reads");
    let start = |label: &'static str| {
        let jobs = registry(
            Recorder::new(label, &log, 1),
            Batcher {
                label,
                log: log.clone(),
            },
        );
        PostgresRuntime::builder(server().url(), jobs)
            .schema(schema.clone())
            .shards(1)
            .max_connections(2)
            .connect()
    };
    let a = start("a").await.unwrap();
    let b = start("b").await.unwrap();
    let pool_a = a.client();
    let pool_a = pool_a.worker_pool::<Recorder>();
    let pool_b = b.client();
    let pool_b = pool_b.worker_pool::<Recorder>();
    pool_a.pause_all().await.unwrap();
    for n in 1..=3u64 {
        pool_b
            .enqueue(&Task::named(&format!("t{n}")))
            .await
            .unwrap();
        // A read-only step in `a`, right after `b` committed.
        assert_eq!(pool_a.status().await.unwrap().pending, n);
    }
    a.shutdown().await;
    b.shutdown().await;
}
