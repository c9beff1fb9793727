//! The database goes away mid-work and comes back: calls made meanwhile fail with a
//! storage error, nothing acknowledged is lost, and work resumes without restarting the
//! runtime. A server of its own, since it is stopped.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{eventually, registry, start, Batcher, Recorder};
use durable_jobs::{JobError, JobsClient};
use durable_jobs_conformance::jobs::{Log, Task};
use durable_jobs_postgres::testing::{unique_name, TestServer};
use durable_jobs_postgres::PostgresTransport;

const BEFORE: usize = 30;
const AFTER: usize = 30;

async fn enqueue(client: &JobsClient<PostgresTransport>, name: &str) -> Result<(), JobError> {
    client
        .worker_pool::<Recorder>()
        .enqueue(&Task::named(name))
        .await
        .map(drop)
}

#[tokio::test]
async fn a_server_restart_mid_work_loses_nothing_acknowledged() {
    let mut server = TestServer::local().expect("a local PostgreSQL server");
    let log = Log::default();
    let mut recorder = Recorder::new("p", &log, 3);
    // Slow enough that executions are under way when the server stops.
    recorder.work = Duration::from_millis(30);
    let batcher = Batcher {
        label: "p",
        log: Log::default(),
    };
    let schema = unique_name("outage");
    // A short lease: alarms whose lease could not be given back during the outage are
    // taken again soon after.
    let runtime = start(
        server.url(),
        &schema,
        registry(recorder, batcher),
        Duration::from_millis(50),
        Duration::from_secs(1),
    )
    .await;
    let client = runtime.client();
    let mut acknowledged = BTreeSet::new();
    for i in 0..BEFORE {
        let name = format!("before-{i}");
        enqueue(&client, &name).await.unwrap();
        acknowledged.insert(name);
    }

    let ran_before = log.lines().len();
    server.stop().unwrap();
    assert!(
        ran_before < BEFORE,
        "work was still under way when the server stopped"
    );
    for call in 0..3 {
        let error = enqueue(&client, &format!("lost-{call}")).await.unwrap_err();
        assert!(
            matches!(&error, JobError::Storage { .. }) && error.is_transient(),
            "{error:?}"
        );
        let error = client.worker_pool::<Recorder>().status().await.unwrap_err();
        assert!(matches!(error, JobError::Storage { .. }), "{error:?}");
    }

    server.start().unwrap();
    let back = Instant::now();
    eventually("calls work again", Duration::from_secs(10), || async {
        client.worker_pool::<Recorder>().status().await.is_ok()
    })
    .await;
    let recovered = back.elapsed();
    // The notification connection is back too.
    let sql = server.connect().await.unwrap();
    let listen = format!("LISTEN \"{schema}\"");
    eventually(
        "the runtime listens again",
        Duration::from_secs(10),
        || async {
            let listening: i64 = sql
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = $1",
                    &[&listen],
                )
                .await
                .unwrap()
                .get(0);
            listening == 1
        },
    )
    .await;
    for i in 0..AFTER {
        let name = format!("after-{i}");
        enqueue(&client, &name).await.unwrap();
        acknowledged.insert(name);
    }
    let total = acknowledged.len() as u64;
    eventually(
        "every acknowledged event is processed",
        Duration::from_secs(20),
        || async {
            let status = client.worker_pool::<Recorder>().status().await;
            status.is_ok_and(|s| s.processed == total && s.pending == 0)
        },
    )
    .await;

    let ran: BTreeSet<String> = log
        .lines()
        .iter()
        .filter_map(|line| line.split(' ').nth(1).map(str::to_owned))
        .collect();
    assert_eq!(
        ran, acknowledged,
        "every acknowledged event ran, and nothing else"
    );
    let status = client.worker_pool::<Recorder>().status().await.unwrap();
    assert_eq!(status.dead_letters, 0);
    assert!(recovered < Duration::from_secs(5), "took {recovered:?}");
    runtime.shutdown().await;
}
