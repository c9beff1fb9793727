//! Bad files and bad stored data: clear errors, no panic, other instances unaffected.

use std::time::Duration;

use durable_jobs::testing::DEFAULT_START;
use durable_jobs::{Continuous, ContinuousContext, JobError, Registry, Schedule, Status};
use durable_jobs_local::{LocalRuntime, OpenError};
use serde::{Deserialize, Serialize};

struct Noop;
impl Continuous for Noop {
    type State = u32;
    type Error = String;
    fn schedule(&self) -> Schedule {
        Schedule::every(Duration::from_secs(60))
    }
    async fn execute(&self, _: &mut ContinuousContext<u32>) -> Result<(), String> {
        Ok(())
    }
}

fn registry() -> Registry {
    Registry::builder()
        .continuous("noop", Noop)
        .build()
        .unwrap()
}

#[test]
fn a_file_that_is_not_sqlite_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    std::fs::write(
        &path,
        "this is not a database, just some text\n".repeat(200),
    )
    .unwrap();
    let err = LocalRuntime::open(&path, registry())
        .err()
        .expect("refused");
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("not a durable-jobs database"));
    // The file is left as it was.
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .starts_with("this is not"));
}

#[test]
fn another_applications_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users VALUES (1, 'ann');")
        .unwrap();
    drop(conn);
    let err = LocalRuntime::open(&path, registry())
        .err()
        .expect("refused");
    assert!(matches!(err, OpenError::Foreign { .. }), "{err}");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1, "untouched");
}

#[test]
fn a_file_in_use_is_refused_until_released() {
    futures::executor::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let first = LocalRuntime::open(&path, registry()).unwrap();
        first
            .client()
            .continuous::<Noop>()
            .start("a", &1)
            .await
            .unwrap();
        let err = LocalRuntime::open(&path, registry()).err().expect("locked");
        assert!(matches!(err, OpenError::Locked { .. }), "{err}");
        first.shutdown().await;
        let second = LocalRuntime::open(&path, registry()).unwrap();
        assert!(second
            .client()
            .continuous::<Noop>()
            .status("a")
            .await
            .unwrap()
            .is_some());
        second.shutdown().await;
    });
}

#[test]
fn unusable_locations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("jobs.db");
    let err = LocalRuntime::open(&missing, registry())
        .err()
        .expect("refused");
    assert!(matches!(err, OpenError::Io { .. }), "{err}");
    assert!(err.to_string().contains("does not exist"));

    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = LocalRuntime::open(file.join("jobs.db"), registry())
        .err()
        .expect("refused");
    assert!(matches!(err, OpenError::Io { .. }), "{err}");

    let read_only = dir.path().join("read-only");
    std::fs::create_dir(&read_only).unwrap();
    let mut perms = std::fs::metadata(&read_only).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&read_only, perms).unwrap();
    if std::fs::write(read_only.join("probe"), b"x").is_ok() {
        eprintln!("running with privileges that ignore directory permissions: read-only case not checkable here");
        return;
    }
    let err = LocalRuntime::open(read_only.join("jobs.db"), registry())
        .err()
        .expect("refused");
    assert!(matches!(err, OpenError::Io { .. }), "{err}");
}

#[derive(Serialize, Deserialize)]
struct Old {
    n: u32,
}

#[derive(Serialize, Deserialize)]
struct New {
    n: u32,
    owner: String,
}

struct V1;
impl Continuous for V1 {
    type State = Old;
    type Error = String;
    fn schedule(&self) -> Schedule {
        Schedule::every(Duration::from_secs(60))
    }
    async fn execute(&self, _: &mut ContinuousContext<Old>) -> Result<(), String> {
        Ok(())
    }
}

struct V2;
impl Continuous for V2 {
    type State = New;
    type Error = String;
    fn schedule(&self) -> Schedule {
        Schedule::every(Duration::from_secs(60))
    }
    fn retry(&self) -> durable_jobs::RetryPolicy {
        durable_jobs::RetryPolicy::none()
    }
    async fn execute(&self, ctx: &mut ContinuousContext<New>) -> Result<(), String> {
        ctx.state_mut().n += 1;
        Ok(())
    }
}

#[test]
fn a_state_stored_under_an_older_schema_is_a_clear_error() {
    futures::executor::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let open = |registry| {
            LocalRuntime::builder(registry)
                .path(&path)
                .virtual_clock(DEFAULT_START)
                .open()
                .unwrap()
        };
        let rt = open(Registry::builder().continuous("job", V1).build().unwrap());
        rt.client()
            .continuous::<V1>()
            .start("old", &Old { n: 1 })
            .await
            .unwrap();
        rt.shutdown().await;

        let rt = open(Registry::builder().continuous("job", V2).build().unwrap());
        let client = rt.client();
        let job = client.continuous::<V2>();
        match job.state("old").await {
            Err(JobError::Validation { message, .. }) => {
                assert!(message.contains("owner"), "{message}")
            }
            other => panic!(
                "expected a validation error, got {:?}",
                other.map(|s| s.map(|s| s.n))
            ),
        }
        rt.advance(Duration::from_secs(60)).await.unwrap();
        let status = job.status("old").await.unwrap().unwrap();
        assert!(
            matches!(status.status, Status::Error { ref error, .. } if error.contains("owner")),
            "{:?}",
            status.status
        );
        // New instances of the same job, and the runtime itself, keep working.
        let fresh = New {
            n: 0,
            owner: "ann".into(),
        };
        job.start("new", &fresh).await.unwrap();
        rt.advance(Duration::ZERO).await.unwrap();
        assert_eq!(job.state("new").await.unwrap().map(|s| s.n), Some(1));
        rt.shutdown().await;
    });
}
