//! Everything survives a restart on the same file, and overdue alarms fire.

use std::time::Duration;

use durable_jobs::testing::DEFAULT_START;
use durable_jobs::{EnqueueRequest, Registry};
use durable_jobs_conformance::jobs::{Collector, Count, Gate, Hook, Log, Task, Ticker, Worker};
use durable_jobs_local::LocalRuntime;

fn registry(log: &Log, worker: &Worker, gate: Option<Gate>) -> Registry {
    let mut ticker = Ticker::every(log, Duration::from_secs(60));
    ticker.immediately = false;
    let mut worker = worker.clone();
    worker.gate = gate;
    Registry::builder()
        .continuous("ticker", ticker)
        .debounce("hooks", Collector::new(log))
        .worker_pool("tasks", worker)
        .build()
        .unwrap()
}

fn open(path: &std::path::Path, registry: Registry, at: i64) -> LocalRuntime {
    LocalRuntime::builder(registry)
        .path(path)
        .virtual_clock(at)
        .open()
        .unwrap()
}

#[test]
fn state_queues_schedules_dead_letters_and_ids_survive() {
    futures::executor::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let log = Log::default();
        let worker = Worker::new(&log, 2);
        worker.fail("bad", 3);

        let rt = open(&path, registry(&log, &worker, None), DEFAULT_START);
        let client = rt.client();
        client
            .continuous::<Ticker>()
            .start("a", &Count { n: 7 })
            .await
            .unwrap();
        client
            .debounce::<Collector>()
            .add_with_id("c", &Hook { n: 1 }, "e1")
            .await
            .unwrap();
        let pool = client.worker_pool::<Worker>();
        let p = || EnqueueRequest::new().partition_key("p");
        pool.enqueue_with(&Task::named("bad"), p().event_id("bad-1"))
            .await
            .unwrap();
        pool.enqueue_with(&Task::named("done"), p().event_id("d1"))
            .await
            .unwrap();
        rt.advance(Duration::from_secs(25)).await.unwrap();
        assert_eq!(log.matching("dead"), ["dead bad (bad failed)"]);
        pool.pause_all().await.unwrap();
        pool.enqueue_with(&Task::named("later"), p().event_id("l1"))
            .await
            .unwrap();
        assert_eq!(
            log.matching("flush").len(),
            1,
            "the debounce flushed at 5 s"
        );
        client
            .debounce::<Collector>()
            .add_with_id("c", &Hook { n: 2 }, "e2")
            .await
            .unwrap();
        rt.shutdown().await;

        // Reopened at the time it stopped: nothing is due, everything is there.
        let rt = open(&path, registry(&log, &worker, None), DEFAULT_START + 25_000);
        let client = rt.client();
        let ticker = client.continuous::<Ticker>();
        let status = ticker.status("a").await.unwrap().unwrap();
        assert_eq!(status.next_run_at, Some(DEFAULT_START + 60_000));
        assert_eq!(ticker.state("a").await.unwrap(), Some(Count { n: 7 }));
        let hooks = client.debounce::<Collector>();
        assert_eq!(hooks.state("c").await.unwrap(), Some(vec![2]));
        assert!(
            hooks
                .add_with_id("c", &Hook { n: 1 }, "e1")
                .await
                .unwrap()
                .duplicate
        );
        let pool = client.worker_pool::<Worker>();
        let status = pool.status().await.unwrap();
        assert_eq!(
            (
                status.pending,
                status.processed,
                status.dead_letters,
                status.paused
            ),
            (1, 1, 1, 2)
        );
        assert!(
            pool.enqueue_with(&Task::named("done"), p().event_id("d1"))
                .await
                .unwrap()
                .duplicate
        );
        assert_eq!(
            pool.all_dead_letters().await.unwrap()[0].1.event_id,
            "bad-1"
        );
        rt.shutdown().await;

        // Reopened after ten minutes of downtime: overdue alarms fire at once.
        let rt = open(
            &path,
            registry(&log, &worker, None),
            DEFAULT_START + 600_000,
        );
        let client = rt.client();
        let ticker = client.continuous::<Ticker>();
        let pool = client.worker_pool::<Worker>();
        rt.advance(Duration::ZERO).await.unwrap();
        let runs = log.matching("run ");
        assert_eq!(runs.len(), 1, "missed runs collapse into one: {runs:?}");
        assert_eq!(
            runs[0],
            format!("run 7 at {} attempt 1", DEFAULT_START + 600_000)
        );
        assert_eq!(
            log.lines()
                .iter()
                .filter(|l| l.starts_with("flush [2]"))
                .count(),
            1
        );
        assert_eq!(
            ticker.status("a").await.unwrap().unwrap().next_run_at,
            Some(DEFAULT_START + 660_000),
            "the schedule continues on its grid"
        );
        pool.resume_all().await.unwrap();
        rt.advance(Duration::ZERO).await.unwrap();
        assert!(log.lines().iter().any(|l| l.starts_with("exec later")));
        assert_eq!(pool.replay(None).await.unwrap(), 1);
        rt.advance(Duration::ZERO).await.unwrap();
        let status = pool.status().await.unwrap();
        assert_eq!(
            (status.pending, status.processed, status.dead_letters),
            (0, 3, 0)
        );
        rt.shutdown().await;
    });
}

#[test]
fn work_running_at_shutdown_runs_again_after_restart() {
    futures::executor::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let log = Log::default();
        let worker = Worker::new(&log, 1);
        let (gate, control) = Gate::closed();
        let rt = LocalRuntime::builder(registry(&log, &worker, Some(gate)))
            .path(&path)
            .virtual_clock(DEFAULT_START)
            .shutdown_grace(Duration::from_millis(50))
            .open()
            .unwrap();
        let client = rt.client();
        client
            .worker_pool::<Worker>()
            .enqueue(&Task::named("slow"))
            .await
            .unwrap();
        control.started.await.unwrap();
        // The execution is still running: shutdown abandons it after the grace period.
        rt.shutdown().await;
        drop(control.release);

        let rt = open(&path, registry(&log, &worker, None), DEFAULT_START);
        rt.advance(Duration::ZERO).await.unwrap();
        assert_eq!(
            log.matching("exec slow").len(),
            2,
            "at least once: it ran again"
        );
        let status = rt.client().worker_pool::<Worker>().status().await.unwrap();
        assert_eq!((status.pending, status.processed), (0, 1));
        rt.shutdown().await;
    });
}
