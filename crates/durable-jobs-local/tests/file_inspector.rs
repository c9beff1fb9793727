//! A stopped runtime's file, read with `FileInspector`: the same jobs, pages, counts and
//! dead letters the runtime reported, and the file left as it was.

use std::path::Path;
use std::time::Duration;

use durable_jobs::inspect::{InstanceQuery, StatusCounts};
use durable_jobs::testing::DEFAULT_START;
use durable_jobs::{EnqueueRequest, InstanceId, JobKind, Registry};
use durable_jobs_conformance::jobs::{Collector, Count, Hook, Log, Task, Ticker, Worker};
use durable_jobs_local::{FileInspector, LocalRuntime, OpenError};
use serde_json::json;

fn registry(log: &Log, worker: &Worker) -> Registry {
    let mut ticker = Ticker::every(log, Duration::from_secs(60));
    ticker.immediately = false;
    Registry::builder()
        .continuous("ticker", ticker)
        .debounce("hooks", Collector::new(log))
        .worker_pool("tasks", worker.clone())
        .build()
        .unwrap()
}

const JOBS: [(JobKind, &str); 3] = [
    (JobKind::Continuous, "ticker"),
    (JobKind::Debounce, "hooks"),
    (JobKind::WorkerPool, "tasks"),
];

fn every_page(file: &FileInspector, mut query: InstanceQuery) -> Vec<InstanceId> {
    let mut ids = Vec::new();
    loop {
        let page = file.instances(&query).unwrap();
        ids.extend(page.instances.into_iter().map(|s| s.id));
        match page.next {
            Some(next) => query.after = Some(next),
            None => return ids,
        }
    }
}

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn a_stopped_runtimes_file_reads_as_the_runtime_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let log = Log::default();
    let worker = Worker::new(&log, 3);
    worker.fail("bad", 3);
    let (pages, counts, state, letters) = futures::executor::block_on(async {
        let rt = LocalRuntime::builder(registry(&log, &worker))
            .path(&path)
            .virtual_clock(DEFAULT_START)
            .open()
            .unwrap();
        let client = rt.client();
        let ticker = client.continuous::<Ticker>();
        for id in ["a", "b:with:colons", "c"] {
            ticker.start(id, &Count { n: 7 }).await.unwrap();
        }
        ticker.stop("c").await.unwrap();
        client
            .debounce::<Collector>()
            .add("h", &Hook { n: 1 })
            .await
            .unwrap();
        let pool = client.worker_pool::<Worker>();
        for (i, name) in ["bad", "ok", "ok", "ok"].into_iter().enumerate() {
            let options = EnqueueRequest::new().partition_key(format!("p{i}"));
            pool.enqueue_with(&Task::named(name), options.event_id(format!("e{i}")))
                .await
                .unwrap();
        }
        rt.advance(Duration::from_secs(30)).await.unwrap();

        let mut pages = Vec::new();
        let mut counts = Vec::new();
        for (kind, name) in JOBS {
            pages.push(rt.instances(&InstanceQuery::all(kind, name)).await.unwrap());
            counts.push(rt.counts(kind, name).await.unwrap());
        }
        let state = ticker.state("a").await.unwrap().unwrap();
        let letters = pool.all_dead_letters().await.unwrap();
        rt.shutdown().await;
        (pages, counts, state, letters)
    });
    assert_eq!(letters.len(), 1, "{letters:?}");
    let before = bytes(&path);

    let file = FileInspector::open(&path).unwrap();
    let jobs: Vec<(JobKind, String)> = JOBS.iter().map(|&(k, n)| (k, n.to_string())).collect();
    assert_eq!(file.jobs().unwrap(), jobs);
    for (i, (kind, name)) in JOBS.into_iter().enumerate() {
        let query = InstanceQuery::all(kind, name);
        assert_eq!(file.instances(&query).unwrap(), pages[i], "{name}");
        assert_eq!(file.counts(kind, name).unwrap(), counts[i], "{name}");
        // A page at a time, through the cursor, gives the same instances.
        let one_by_one = every_page(&file, InstanceQuery { limit: 1, ..query });
        let all: Vec<InstanceId> = pages[i].instances.iter().map(|s| s.id.clone()).collect();
        assert_eq!(one_by_one, all, "{name}");
    }
    let stopped = file
        .instances(&InstanceQuery {
            status: Some(durable_jobs::StatusName::Stopped),
            ..InstanceQuery::all(JobKind::Continuous, "ticker")
        })
        .unwrap();
    assert_eq!(stopped.instances.len(), 1);
    assert_eq!(stopped.instances[0].id.key, "c");

    let a = InstanceId::new(JobKind::Continuous, "ticker", "a");
    let shown = file.instance(&a).unwrap().unwrap();
    assert_eq!(shown.id, a);
    assert_eq!(shown.metadata["status"], json!({ "status": "active" }));
    assert_eq!(shown.state, Some(serde_json::to_value(&state).unwrap()));
    assert!(shown.record.is_some() && shown.alarm.is_some(), "{shown:?}");
    let missing = InstanceId::new(JobKind::Continuous, "ticker", "nobody");
    assert_eq!(file.instance(&missing).unwrap(), None);

    let (index, letter) = &letters[0];
    let pool = InstanceId::new(JobKind::WorkerPool, "tasks", index.to_string());
    assert_eq!(
        file.dead_letters(&pool, None, 10).unwrap(),
        std::slice::from_ref(letter)
    );
    assert_eq!(file.dead_letters(&pool, Some(letter.seq), 10).unwrap(), []);
    assert!(file.dead_letters(&a, None, 10).is_err(), "not a pool");
    drop(file);

    assert!(bytes(&path) == before, "reading changed the file");
    // Zero counts, not an error, for a job with no instance in the file.
    let file = FileInspector::open(&path).unwrap();
    assert_eq!(
        file.counts(JobKind::Debounce, "other").unwrap(),
        StatusCounts::default()
    );
    drop(file);

    // What reading leaves beside the file does not stand in the runtime's way.
    futures::executor::block_on(async {
        let rt = LocalRuntime::builder(registry(&log, &worker))
            .path(&path)
            .virtual_clock(DEFAULT_START + 30_000)
            .open()
            .unwrap();
        let client = rt.client();
        assert_eq!(
            client.continuous::<Ticker>().state("a").await.unwrap(),
            Some(state)
        );
        rt.shutdown().await;
    });
}

#[test]
fn only_durable_jobs_files_open() {
    let dir = tempfile::tempdir().unwrap();
    let missing = FileInspector::open(dir.path().join("none.db")).unwrap_err();
    assert!(missing.to_string().contains("no such file"), "{missing}");
    assert!(
        !dir.path().join("none.db").exists(),
        "opening does not create"
    );

    let foreign = dir.path().join("other.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE t (x INTEGER);")
        .unwrap();
    assert!(matches!(
        FileInspector::open(&foreign),
        Err(OpenError::Foreign { .. })
    ));
}

#[test]
fn a_running_runtimes_file_is_in_use_and_its_uncheckpointed_commits_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let log = Log::default();
    let rt = LocalRuntime::builder(registry(&log, &Worker::new(&log, 1)))
        .path(&path)
        .virtual_clock(DEFAULT_START)
        .open()
        .unwrap();
    futures::executor::block_on(async {
        let ticker = rt.client();
        let ticker = ticker.continuous::<Ticker>();
        ticker.start("a", &Count { n: 1 }).await.unwrap();
        rt.settle().await.unwrap();
    });
    // The runtime holds its file for itself.
    assert!(matches!(
        FileInspector::open(&path),
        Err(OpenError::Locked { .. })
    ));
    // A copy taken now, as a crash leaves it, has its last commits in the log only.
    let copy = tempfile::tempdir().unwrap();
    for name in ["jobs.db", "jobs.db-wal"] {
        std::fs::copy(dir.path().join(name), copy.path().join(name)).unwrap();
    }
    futures::executor::block_on(rt.shutdown());
    let file = FileInspector::open(copy.path().join("jobs.db")).unwrap();
    assert_eq!(
        file.jobs().unwrap(),
        [(JobKind::Continuous, "ticker".to_string())]
    );
    let a = InstanceId::new(JobKind::Continuous, "ticker", "a");
    assert_eq!(
        file.instance(&a).unwrap().unwrap().state,
        Some(json!({ "n": 1 }))
    );
}
