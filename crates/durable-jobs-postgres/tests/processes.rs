//! Two runtimes on one database and one schema, as two processes would run: requests
//! through either reach the same instances, work is shared and runs once, and a process
//! whose alarm lease was taken over can no longer commit.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, registry, server, start, Batcher, Recorder};
use durable_jobs::services::tracker::MemoryTracker;
use durable_jobs::{EnqueueRequest, JobsClient};
use durable_jobs_conformance::jobs::{Gate, Hook, Log, Task};
use durable_jobs_postgres::testing::unique_name;
use durable_jobs_postgres::{PostgresRuntime, PostgresTransport};

const POLL: Duration = Duration::from_millis(50);
const LEASE: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(20);

/// Two processes, `a` and `b`, on one schema; each writes to its own log.
struct Pair {
    a: PostgresRuntime,
    b: PostgresRuntime,
    log_a: Log,
    log_b: Log,
}

async fn pair(concurrency: u32) -> Pair {
    let schema = unique_name("pair");
    let (log_a, log_b) = (Log::default(), Log::default());
    let process = |label, log: &Log| {
        registry(
            Recorder::new(label, log, concurrency),
            Batcher {
                label,
                log: log.clone(),
            },
        )
    };
    let a = start(server().url(), &schema, process("a", &log_a), POLL, LEASE).await;
    let b = start(server().url(), &schema, process("b", &log_b), POLL, LEASE).await;
    Pair { a, b, log_a, log_b }
}

/// How many times each line was written, in both logs.
fn counts(logs: &[&Log]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in logs.iter().flat_map(|log| log.lines()) {
        let task = line
            .split_once(' ')
            .map_or(line.clone(), |(_, t)| t.to_owned());
        *counts.entry(task).or_insert(0) += 1;
    }
    counts
}

async fn processed(client: &JobsClient<PostgresTransport>) -> u64 {
    match client.worker_pool::<Recorder>().status().await {
        Ok(status) => status.processed,
        Err(_) => 0,
    }
}

#[tokio::test]
async fn requests_through_either_process_reach_the_same_instance() {
    let p = pair(2).await;
    let (a, b) = (p.a.client(), p.b.client());

    let added = a
        .debounce::<Batcher>()
        .add("k", &Hook { n: 1 })
        .await
        .unwrap();
    assert_eq!(added.event_count, 1);
    let seen = b.debounce::<Batcher>().status("k").await.unwrap().unwrap();
    assert_eq!(seen.event_count, 1);
    let added = b
        .debounce::<Batcher>()
        .add("k", &Hook { n: 2 })
        .await
        .unwrap();
    assert_eq!(added.event_count, 2, "b added to the batch a started");
    assert_eq!(
        a.debounce::<Batcher>().state("k").await.unwrap(),
        Some(vec![1, 2])
    );

    a.worker_pool::<Recorder>().pause_all().await.unwrap();
    let queued = b
        .worker_pool::<Recorder>()
        .enqueue_with(&Task::named("t"), EnqueueRequest::new().event_id("t"))
        .await
        .unwrap();
    let status = a.worker_pool::<Recorder>().status().await.unwrap();
    assert_eq!((status.pending, status.paused), (1, 2));
    assert!(a.worker_pool::<Recorder>().cancel("t").await.unwrap());
    let again = b
        .worker_pool::<Recorder>()
        .instance_status(queued.instance_index)
        .await
        .unwrap();
    assert_eq!(again.pending, 0, "a's cancel is seen by b");

    p.a.shutdown().await;
    p.b.shutdown().await;
}

#[tokio::test]
async fn each_event_runs_once_across_both_processes() {
    const ROUNDS: usize = 8;
    const PER_ROUND: usize = 24;
    let p = pair(4).await;
    let (a, b) = (p.a.client(), p.b.client());
    // Rounds enqueued alternately through each process, each drained before the next:
    // the process that enqueues wakes first, so both take alarms.
    for round in 0..ROUNDS {
        let through = if round % 2 == 0 { &a } else { &b };
        for i in 0..PER_ROUND {
            let name = format!("r{round}-{i}");
            through
                .worker_pool::<Recorder>()
                .enqueue(&Task::named(&name))
                .await
                .unwrap();
        }
        let done = ((round + 1) * PER_ROUND) as u64;
        eventually("the round is processed", WAIT, || async {
            processed(&a).await == done
        })
        .await;
    }
    let counts = counts(&[&p.log_a, &p.log_b]);
    assert_eq!(counts.len(), ROUNDS * PER_ROUND);
    for (task, n) in &counts {
        assert_eq!(*n, 1, "{task} ran {n} times");
        assert!(task.ends_with("attempt 1"), "{task}");
    }
    let (ran_a, ran_b) = (p.log_a.lines().len(), p.log_b.lines().len());
    assert!(ran_a > 0 && ran_b > 0, "a ran {ran_a}, b ran {ran_b}");
    let status = b.worker_pool::<Recorder>().status().await.unwrap();
    assert_eq!((status.pending, status.dead_letters), (0, 0));

    p.a.shutdown().await;
    p.b.shutdown().await;
}

#[tokio::test]
async fn an_alarm_set_through_one_process_fires_once_on_either() {
    const INSTANCES: u32 = 12;
    let p = pair(1).await;
    let a = p.a.client();
    for n in 0..INSTANCES {
        let key = format!("k{n}");
        a.debounce::<Batcher>()
            .add(&key, &Hook { n })
            .await
            .unwrap();
    }
    let flushes = || {
        let mut all: Vec<String> = p.log_a.lines();
        all.extend(p.log_b.lines());
        all
    };
    eventually("every batch flushed", WAIT, || async {
        flushes().len() >= INSTANCES as usize
    })
    .await;
    // Past another poll or two: nothing flushes twice.
    tokio::time::sleep(POLL * 4).await;
    let mut seen: Vec<String> = flushes()
        .iter()
        .map(|l| {
            l.split_once(' ')
                .map_or(l.clone(), |(_, rest)| rest.to_owned())
        })
        .collect();
    seen.sort();
    let mut expected: Vec<String> = (0..INSTANCES).map(|n| format!("flush [{n}]")).collect();
    expected.sort();
    assert_eq!(seen, expected);

    p.a.shutdown().await;
    p.b.shutdown().await;
}

/// A process whose lease was taken over while its user code ran (it was paused, or cut
/// off from the database) gets its completion refused: the event runs again in the other
/// process, and completes there once.
#[tokio::test]
async fn a_process_whose_lease_was_taken_over_cannot_complete() {
    let schema = unique_name("fence");
    let (log_a, log_b) = (Log::default(), Log::default());
    let (gate, control) = Gate::closed();
    let mut slow = Recorder::new("a", &log_a, 1);
    slow.gate = Some(gate);
    let batcher = |label, log: &Log| Batcher {
        label,
        log: log.clone(),
    };
    let tracker_a = Arc::new(MemoryTracker::new());
    // `a` polls rarely: once its lease is gone it does not take the alarm back, as a
    // process cut off from the database could not.
    let a = PostgresRuntime::builder(server().url(), registry(slow, batcher("a", &log_a)))
        .schema(&schema)
        .poll_interval(Duration::from_secs(3600))
        .tracker(tracker_a.clone())
        .shards(1)
        .connect()
        .await
        .unwrap();
    a.client()
        .worker_pool::<Recorder>()
        .enqueue_with(&Task::named("x"), EnqueueRequest::new().event_id("x"))
        .await
        .unwrap();
    control.started.await.unwrap();
    let b_registry = registry(Recorder::new("b", &log_b, 1), batcher("b", &log_b));
    let b = start(server().url(), &schema, b_registry, POLL, LEASE).await;

    // The lease of `a` runs out and is taken over: a new token, an expired lease.
    let sql = server().connect().await.unwrap();
    let taken = sql
        .execute(
            &format!(
                "UPDATE \"{schema}\".instances SET alarm_token = nextval('\"{schema}\".alarm_tokens'), \
                 alarm_owner = 'another', alarm_lease_until = 0 WHERE alarm_owner = $1"
            ),
            &[&a.process_id()],
        )
        .await
        .unwrap();
    assert_eq!(taken, 1, "a held the pool instance's alarm");

    let client_b = b.client();
    eventually("b processed the event", WAIT, || async {
        processed(&client_b).await == 1
    })
    .await;
    control.release.send(()).unwrap();
    a.settle().await.unwrap();
    b.settle().await.unwrap();

    assert_eq!(log_a.lines(), ["a x attempt 1"]);
    assert_eq!(
        log_b.lines(),
        ["b x attempt 2"],
        "the attempt a started counts"
    );
    let status = client_b.worker_pool::<Recorder>().status().await.unwrap();
    assert_eq!(
        (status.processed, status.pending, status.dead_letters),
        (1, 0, 0),
        "completed once, by b"
    );
    let events_a = tracker_a.types_for("workerPool:recorder:0");
    assert!(
        !events_a.contains(&"workerPool.completed"),
        "a's completion was refused: {events_a:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// A process that shuts down with a pass still running past its grace gives the lease
/// back: another process runs the work at once, without waiting for the lease to expire.
#[tokio::test]
async fn shutdown_hands_abandoned_work_over_at_once() {
    let schema = unique_name("handover");
    let (log_a, log_b) = (Log::default(), Log::default());
    let (gate, control) = Gate::closed();
    let mut stuck = Recorder::new("a", &log_a, 1);
    stuck.gate = Some(gate);
    let batcher = |label, log: &Log| Batcher {
        label,
        log: log.clone(),
    };
    let a = PostgresRuntime::builder(server().url(), registry(stuck, batcher("a", &log_a)))
        .schema(&schema)
        .lease(LEASE)
        .shutdown_grace(Duration::from_millis(100))
        .shards(1)
        .connect()
        .await
        .unwrap();
    a.client()
        .worker_pool::<Recorder>()
        .enqueue(&Task::named("x"))
        .await
        .unwrap();
    let _still_closed = control.release;
    control.started.await.unwrap();
    let b_registry = registry(Recorder::new("b", &log_b, 1), batcher("b", &log_b));
    let b = start(server().url(), &schema, b_registry, POLL, LEASE).await;

    let stopped = std::time::Instant::now();
    a.shutdown().await;
    let client_b = b.client();
    eventually("b processed the event", WAIT, || async {
        processed(&client_b).await == 1
    })
    .await;
    assert!(
        stopped.elapsed() < LEASE / 2,
        "taken over after {:?}, not at the lease's end",
        stopped.elapsed()
    );
    assert_eq!(log_a.lines(), ["a x attempt 1"]);
    assert_eq!(log_b.lines(), ["b x attempt 2"]);
    b.shutdown().await;
}

/// A running event is not cancelled, through whichever process the cancel comes: the
/// process executing it knows from memory, the others from the attempt its claim recorded.
#[tokio::test]
async fn a_running_event_is_not_cancelled_through_another_process() {
    let schema = unique_name("cancel");
    let (log_a, log_b) = (Log::default(), Log::default());
    let (gate, control) = Gate::closed();
    let mut slow = Recorder::new("a", &log_a, 1);
    slow.gate = Some(gate);
    let batcher = |label, log: &Log| Batcher {
        label,
        log: log.clone(),
    };
    let a = start(
        server().url(),
        &schema,
        registry(slow, batcher("a", &log_a)),
        POLL,
        LEASE,
    )
    .await;
    a.client()
        .worker_pool::<Recorder>()
        .enqueue_with(&Task::named("x"), EnqueueRequest::new().event_id("x"))
        .await
        .unwrap();
    control.started.await.unwrap();
    let b_registry = registry(Recorder::new("b", &log_b, 1), batcher("b", &log_b));
    let b = start(server().url(), &schema, b_registry, POLL, LEASE).await;
    let through_a = a
        .client()
        .worker_pool::<Recorder>()
        .cancel("x")
        .await
        .unwrap();
    let through_b = b
        .client()
        .worker_pool::<Recorder>()
        .cancel("x")
        .await
        .unwrap();
    control.release.send(()).unwrap();
    a.settle().await.unwrap();
    assert!(!through_a, "the executing process refuses");
    assert!(!through_b, "the other process must refuse too");
    a.shutdown().await;
    b.shutdown().await;
}

/// During a rolling deploy, a process whose registry lacks a job (an older build) leaves
/// that job's alarms to the processes that run it, instead of taking them and finding
/// nothing to run.
#[tokio::test]
async fn a_process_without_a_job_leaves_its_alarms_to_those_with_it() {
    let schema = unique_name("rolling");
    let (log_old, log_new) = (Log::default(), Log::default());
    let old_jobs = durable_jobs::Registry::builder()
        .debounce(
            "batcher",
            Batcher {
                label: "old",
                log: log_old.clone(),
            },
        )
        .build()
        .unwrap();
    let old = start(server().url(), &schema, old_jobs, POLL, LEASE).await;
    let new_jobs = || {
        registry(
            Recorder::new("new", &log_new, 1),
            Batcher {
                label: "new",
                log: log_new.clone(),
            },
        )
    };
    // An event queued while its pool is paused: stored, with no alarm.
    let first = start(server().url(), &schema, new_jobs(), POLL, LEASE).await;
    let pool = first.client();
    pool.worker_pool::<Recorder>().pause_all().await.unwrap();
    pool.worker_pool::<Recorder>()
        .enqueue(&Task::named("x"))
        .await
        .unwrap();
    first.shutdown().await;
    // Only the old process runs when the pool's alarm falls due.
    let sql = server().connect().await.unwrap();
    let alarm = format!(
        "INSERT INTO \"{schema}\".instances (id, alarm_at) VALUES ('workerPool:recorder:0', 0) \
         ON CONFLICT (id) DO UPDATE SET alarm_at = 0"
    );
    sql.execute(&alarm, &[]).await.unwrap();
    old.settle().await.unwrap();
    tokio::time::sleep(POLL * 4).await;
    let row = sql
        .query_one(
            &format!(
                "SELECT alarm_at, alarm_owner FROM \"{schema}\".instances \
                 WHERE id = 'workerPool:recorder:0'"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<i64>>(0),
        Some(0),
        "the alarm is still due"
    );
    assert_eq!(row.get::<_, Option<String>>(1), None, "nobody took it");

    let second = start(server().url(), &schema, new_jobs(), POLL, LEASE).await;
    let client = second.client();
    client.worker_pool::<Recorder>().resume_all().await.unwrap();
    eventually("the new process ran the event", WAIT, || async {
        processed(&client).await == 1
    })
    .await;
    assert_eq!(log_new.lines(), ["new x attempt 1"]);
    assert!(log_old.lines().is_empty());
    old.shutdown().await;
    second.shutdown().await;
}
