//! `TestServer` itself: a restart keeps the data, a `DATABASE_URL` server gets a database
//! of its own, and nothing is left behind, even by a test process that is killed.
//!
//! Some tests run this binary again as a child process, with one of the `child_*` tests
//! (ignored, so that they run only when asked for) and an environment variable that tells
//! it what to do.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use durable_jobs_postgres::testing::{unique_name, LocalOptions, TestServer, TestServerError};
use durable_jobs_postgres::tokio_postgres::Client;
use durable_jobs_postgres::{migrate, SUPPORTED_VERSION};

/// Set for the child process; the child tests do nothing without it.
const CHILD: &str = "DURABLE_JOBS_TEST_SERVER_CHILD";

fn port_of(server: &TestServer) -> u16 {
    let url = server.url();
    let after_host = &url[url.rfind(':').unwrap() + 1..];
    after_host[..after_host.find('/').unwrap()].parse().unwrap()
}

fn refuses_connections(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn notes(client: &Client, schema: &str) -> Vec<String> {
    client
        .query(
            &format!("SELECT key FROM \"{schema}\".rows ORDER BY key"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

async fn note(client: &Client, schema: &str, key: &str) {
    client
        .execute(
            &format!("INSERT INTO \"{schema}\".rows VALUES ('restart', $1, '\\x00')"),
            &[&key],
        )
        .await
        .unwrap();
}

/// Runs the child test `name` of this binary with `env`, its output piped.
fn child(name: &str, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

#[tokio::test]
async fn a_restarted_server_keeps_its_data_and_port() {
    let mut server = TestServer::local().unwrap();
    assert!(server.is_local());
    let url = server.url().to_owned();
    let first_pid = server.pid().unwrap();
    let schema = unique_name("restart");
    let mut client = server.connect().await.unwrap();
    migrate(&mut client, &schema).await.unwrap();
    note(&client, &schema, "1 before stop").await;

    server.stop().unwrap();
    assert_eq!(server.pid(), None);
    assert!(refuses_connections(port_of(&server)));
    assert!(server.connect().await.is_err());
    assert!(client.simple_query("SELECT 1").await.is_err());

    server.start().unwrap();
    let second_pid = server.pid().unwrap();
    assert_ne!(second_pid, first_pid);
    assert_eq!(server.url(), url);
    let mut client = server.connect().await.unwrap();
    assert_eq!(
        migrate(&mut client, &schema).await.unwrap(),
        SUPPORTED_VERSION
    );
    assert_eq!(notes(&client, &schema).await, ["1 before stop"]);
    note(&client, &schema, "2 before kill").await;

    // Like a crash: what was committed comes back through recovery.
    server.kill().unwrap();
    assert_eq!(server.pid(), None);
    assert!(server.connect().await.is_err());
    server.start().unwrap();
    assert!(server.log().contains("was interrupted"), "{}", server.log());
    let client = server.connect().await.unwrap();
    assert_eq!(
        notes(&client, &schema).await,
        ["1 before stop", "2 before kill"]
    );
    // Starting a running server changes nothing.
    let pid = server.pid();
    server.start().unwrap();
    assert_eq!(server.pid(), pid);
}

async fn setting(client: &Client, name: &str) -> String {
    let row = client
        .query_one("SELECT current_setting($1)", &[&name])
        .await
        .unwrap();
    row.get(0)
}

#[tokio::test]
async fn a_durable_server_syncs_its_commits_and_takes_extra_settings() {
    let fast = TestServer::local().unwrap();
    let client = fast.connect().await.unwrap();
    assert_eq!(setting(&client, "fsync").await, "off");

    let options = LocalOptions::default().durable().setting("work_mem", "5MB");
    let durable = TestServer::local_with(options).unwrap();
    let client = durable.connect().await.unwrap();
    for name in ["fsync", "full_page_writes", "synchronous_commit"] {
        assert_eq!(setting(&client, name).await, "on", "{name}");
    }
    assert_eq!(setting(&client, "work_mem").await, "5MB");
}

#[test]
fn dropping_a_server_stops_it_and_deletes_its_directory() {
    let server = TestServer::local().unwrap();
    let dir = server.directory().unwrap().to_owned();
    let port = port_of(&server);
    assert!(dir.join("data").join("PG_VERSION").is_file());
    assert!(!refuses_connections(port));
    drop(server);
    assert!(!dir.exists(), "{} is still there", dir.display());
    assert!(refuses_connections(port));
}

#[test]
fn a_server_of_a_killed_test_process_is_stopped_and_deleted() {
    let mut process = child("child_starts_a_server_and_hangs", &[])
        .spawn()
        .unwrap();
    let mut dir = None;
    let mut port = None;
    let mut said = String::new();
    for line in BufReader::new(process.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        said += &line;
        said.push('\n');
        // The test harness may have printed the test's name on the same line.
        if let Some((_, d)) = line.split_once("dir=") {
            dir = Some(PathBuf::from(d));
        }
        if let Some((_, p)) = line.split_once("port=") {
            port = Some(p.parse::<u16>().unwrap());
            break;
        }
    }
    let (Some(dir), Some(port)) = (dir, port) else {
        let _ = process.kill();
        let output = process.wait_with_output().unwrap();
        panic!(
            "the child started no server:\n{said}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    assert!(dir.is_dir());
    assert!(!refuses_connections(port));

    process.kill().unwrap();
    process.wait().unwrap();
    wait_for("the server is stopped", || refuses_connections(port));
    wait_for("its directory is deleted", || !dir.exists());
}

#[test]
#[ignore = "run by a_server_of_a_killed_test_process_is_stopped_and_deleted"]
fn child_starts_a_server_and_hangs() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let server = TestServer::local().unwrap();
    println!("dir={}", server.directory().unwrap().display());
    println!("port={}", port_of(&server));
    std::thread::sleep(Duration::from_secs(600));
}

#[tokio::test]
async fn with_database_url_each_server_is_a_fresh_database_dropped_at_the_end() {
    let host = TestServer::local().unwrap();
    let admin = host.connect().await.unwrap();
    // Test databases of earlier runs: one abandoned long ago, one recent.
    let recent = format!(
        "durable_jobs_test_{}_recent",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    for database in ["durable_jobs_test_1000_abandoned", &recent] {
        // One statement per call: CREATE DATABASE cannot share a transaction.
        admin
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .unwrap();
    }

    let output = child("child_uses_database_url", &[("DATABASE_URL", host.url())])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the child failed:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let used = stdout
        .lines()
        .find_map(|line| line.split_once("database=").map(|(_, name)| name))
        .unwrap_or_else(|| panic!("the child named no database:\n{stdout}"));
    assert!(used.starts_with("durable_jobs_test_"), "{used}");

    // The child's first database was dropped with its TestServer; the second, never
    // dropped, by its watchdog once the child ended.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let databases: Vec<String> = admin
            .query(
                "SELECT datname::text FROM pg_database WHERE datname LIKE 'durable_jobs_test_%' ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        if databases == [recent.clone()] {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {databases:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
#[ignore = "run by with_database_url_each_server_is_a_fresh_database_dropped_at_the_end"]
async fn child_uses_database_url() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let given = std::env::var("DATABASE_URL").unwrap();
    let mut server = TestServer::new().unwrap();
    assert!(!server.is_local());
    assert_eq!(server.pid(), None);
    assert!(server.directory().is_none());
    assert!(matches!(server.stop(), Err(TestServerError::NotLocal)));
    assert_ne!(server.url(), given);

    let mut client = server.connect().await.unwrap();
    let database: String = client
        .query_one("SELECT current_database()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        migrate(&mut client, "durable_jobs").await.unwrap(),
        SUPPORTED_VERSION
    );
    println!("database={database}");
    // Dropped with the client still open: the database goes all the same.
    drop(server);
    assert!(client.simple_query("SELECT 1").await.is_err());

    // One never dropped, as in a `static`: it goes when this process ends.
    let forgotten = TestServer::new().unwrap();
    forgotten.connect().await.unwrap();
    std::mem::forget(forgotten);
}
