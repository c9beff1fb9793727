//! Migrations and connecting, on a real PostgreSQL server: one server for this test binary
//! (or a fresh database on `DATABASE_URL`), and a schema of its own for each test.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use durable_jobs_postgres::testing::{unique_name, TestServer};
use durable_jobs_postgres::tokio_postgres::Client;
use durable_jobs_postgres::{
    migrate, ConnectError, Database, PostgresConfig, SchemaError, SUPPORTED_VERSION,
};
use tokio::sync::Barrier;

fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| match TestServer::new() {
        Ok(server) => server,
        Err(e) => panic!("no PostgreSQL server for the tests: {e}"),
    })
}

async fn client() -> Client {
    server().connect().await.unwrap()
}

/// The tables of `schema`, sorted.
async fn tables(client: &Client, schema: &str) -> Vec<String> {
    client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY 1",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Everything in `schema` that a migration could change: its tables, columns, indexes, and
/// every row of every table, as text.
async fn snapshot(client: &Client, schema: &str) -> String {
    let mut out = String::new();
    for row in client
        .query(
            "SELECT table_name::text, column_name::text, data_type::text, \
                    coalesce(collation_name::text, ''), is_nullable::text \
             FROM information_schema.columns WHERE table_schema = $1 \
             ORDER BY table_name, ordinal_position",
            &[&schema],
        )
        .await
        .unwrap()
    {
        let cols: Vec<String> = (0..5).map(|i| row.get(i)).collect();
        out += &format!("column {}\n", cols.join(" "));
    }
    for row in client
        .query(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 ORDER BY indexname",
            &[&schema],
        )
        .await
        .unwrap()
    {
        out += &format!("index {}\n", row.get::<_, String>(0));
    }
    for table in tables(client, schema).await {
        for row in client
            .query(
                &format!("SELECT t::text FROM \"{schema}\".\"{table}\" t ORDER BY 1"),
                &[],
            )
            .await
            .unwrap()
        {
            out += &format!("{table} {}\n", row.get::<_, String>(0));
        }
    }
    out
}

async fn versions(client: &Client, schema: &str) -> Vec<i32> {
    client
        .query(
            &format!("SELECT version FROM \"{schema}\".schema_version ORDER BY 1"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

async fn schema_exists(client: &Client, schema: &str) -> bool {
    client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0)
}

fn all_versions() -> Vec<i32> {
    (1..=SUPPORTED_VERSION as i32).collect()
}

#[tokio::test]
async fn migrations_apply_on_an_empty_schema_and_a_second_run_changes_nothing() {
    let mut client = client().await;
    let schema = unique_name("fresh");
    assert!(!schema_exists(&client, &schema).await);

    assert_eq!(
        migrate(&mut client, &schema).await.unwrap(),
        SUPPORTED_VERSION
    );
    assert_eq!(
        tables(&client, &schema).await,
        ["instances", "rows", "schema_version"]
    );
    assert_eq!(versions(&client, &schema).await, all_versions());
    let alarm_index: String = client
        .query_one(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname = 'instances_alarm_at'",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        alarm_index.ends_with("(alarm_at) WHERE (alarm_at IS NOT NULL)"),
        "{alarm_index}"
    );
    // Nothing outside the schema: the tables are created with search_path set to it.
    assert!(tables(&client, "public").await.is_empty());

    // The tables take what a runtime will write.
    client
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".instances VALUES ('pool:mail:0', 1700000000000), ('debounce:hook:a', NULL);
             INSERT INTO \"{schema}\".rows VALUES ('pool:mail:0', 'meta', '\\x7b7d'), ('pool:mail:0', 'q:1', '\\x00ff');"
        ))
        .await
        .unwrap();
    let before = snapshot(&client, &schema).await;

    assert_eq!(
        migrate(&mut client, &schema).await.unwrap(),
        SUPPORTED_VERSION
    );
    assert_eq!(snapshot(&client, &schema).await, before);
}

#[tokio::test]
async fn eight_starters_on_a_fresh_schema_all_succeed_with_one_version() {
    const STARTERS: usize = 8;
    let schema = unique_name("together");
    // One session each, as eight processes would have. Half default to serializable
    // transactions: migrate must see the work of the starter before it all the same.
    let mut clients = Vec::new();
    for i in 0..STARTERS {
        let client = client().await;
        if i % 2 == 1 {
            client
                .batch_execute("SET default_transaction_isolation = 'serializable'")
                .await
                .unwrap();
        }
        clients.push(client);
    }
    let barrier = Arc::new(Barrier::new(STARTERS));
    let mut starters = Vec::new();
    for mut client in clients {
        let barrier = barrier.clone();
        let schema = schema.clone();
        starters.push(tokio::spawn(async move {
            barrier.wait().await;
            migrate(&mut client, &schema).await
        }));
    }
    for starter in starters {
        assert_eq!(starter.await.unwrap().unwrap(), SUPPORTED_VERSION);
    }
    let client = client().await;
    assert_eq!(versions(&client, &schema).await, all_versions());
    assert_eq!(
        tables(&client, &schema).await,
        ["instances", "rows", "schema_version"]
    );
}

#[tokio::test]
async fn databases_connecting_together_share_one_migrated_schema() {
    let schema = unique_name("pools");
    let connects = (0..8).map(|_| {
        let config = PostgresConfig::new(server().url())
            .schema(schema.clone())
            .max_connections(2);
        tokio::spawn(Database::connect(config))
    });
    let mut databases = Vec::new();
    for connect in connects.collect::<Vec<_>>() {
        databases.push(connect.await.unwrap().unwrap());
    }
    for db in &databases {
        assert_eq!(db.schema_version(), SUPPORTED_VERSION);
        assert_eq!(db.schema().as_str(), schema);
    }
    // What one pool writes, another reads.
    let writer = databases[0].client().await.unwrap();
    writer
        .execute(
            &format!("INSERT INTO \"{schema}\".rows VALUES ('i', 'k', $1)"),
            &[&b"v".as_slice()],
        )
        .await
        .unwrap();
    let reader = databases[7].client().await.unwrap();
    let value: Vec<u8> = reader
        .query_one(&format!("SELECT value FROM \"{schema}\".rows"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(value, b"v");
}

#[tokio::test]
async fn a_schema_newer_than_this_build_is_refused_and_left_unchanged() {
    let mut client = client().await;
    let schema = unique_name("newer");
    migrate(&mut client, &schema).await.unwrap();
    let newer = SUPPORTED_VERSION + 3;
    client
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".schema_version (version) VALUES ({newer});
             INSERT INTO \"{schema}\".rows VALUES ('i', 'k', '\\x01');
             CREATE TABLE \"{schema}\".from_the_future (x int);"
        ))
        .await
        .unwrap();
    let before = snapshot(&client, &schema).await;

    match migrate(&mut client, &schema).await {
        Err(SchemaError::SchemaTooNew {
            schema: named,
            found,
            supported,
        }) => {
            assert_eq!(named, schema);
            assert_eq!(found, newer);
            assert_eq!(supported, SUPPORTED_VERSION);
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let err = migrate(&mut client, &schema).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("version {newer}")) && err.contains("unchanged"),
        "{err}"
    );
    assert_eq!(snapshot(&client, &schema).await, before);
    // The transaction ended: the session is usable and holds no advisory lock.
    let locks: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(locks, 0);

    let refused = Database::connect(PostgresConfig::new(server().url()).schema(schema.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ConnectError::Schema(SchemaError::SchemaTooNew { found, .. }) if found == newer
        ),
        "{refused:?}"
    );
    assert_eq!(snapshot(&client, &schema).await, before);
}

#[tokio::test]
async fn a_failing_migration_leaves_nothing_behind() {
    // A schema that already has an `instances` table of its own: the first migration
    // fails, and the version table created in the same transaction goes with it.
    let mut client = client().await;
    let schema = unique_name("occupied");
    client
        .batch_execute(&format!(
            "CREATE SCHEMA \"{schema}\"; CREATE TABLE \"{schema}\".instances (name text);"
        ))
        .await
        .unwrap();
    let before = snapshot(&client, &schema).await;
    match migrate(&mut client, &schema).await {
        Err(SchemaError::Migration { version: 1, .. }) => {}
        other => panic!("expected a failed migration 1, got {other:?}"),
    }
    assert_eq!(tables(&client, &schema).await, ["instances"]);
    assert_eq!(snapshot(&client, &schema).await, before);
}

#[tokio::test]
async fn bad_schema_names_are_refused_before_anything_is_sent() {
    let mut client = client().await;
    let count_schemas = "SELECT count(*) FROM pg_namespace";
    let schemas_before: i64 = client.query_one(count_schemas, &[]).await.unwrap().get(0);
    for name in [
        "",
        "Jobs",
        "9lives",
        "jobs-prod",
        "jobs prod",
        "jobs\"; CREATE SCHEMA injected; --",
        "jobs; CREATE SCHEMA injected",
        "pg_jobs",
        "information_schema",
        &"j".repeat(64),
    ] {
        match migrate(&mut client, name).await {
            Err(SchemaError::InvalidSchemaName {
                name: given,
                reason,
            }) => {
                assert_eq!(given, name);
                assert!(!reason.is_empty());
            }
            other => panic!("{name:?}: expected InvalidSchemaName, got {other:?}"),
        }
        let config = PostgresConfig::new(server().url()).schema(name);
        match Database::connect(config).await {
            Err(ConnectError::Schema(SchemaError::InvalidSchemaName { .. })) => {}
            other => panic!("{name:?}: expected InvalidSchemaName, got {other:?}"),
        }
    }
    let message = migrate(&mut client, "Jobs").await.unwrap_err().to_string();
    assert!(
        message.contains("\"Jobs\"") && message.contains("lowercase"),
        "{message}"
    );
    let schemas_after: i64 = client.query_one(count_schemas, &[]).await.unwrap().get(0);
    assert_eq!(schemas_after, schemas_before);
    assert!(!schema_exists(&client, "injected").await);
}

#[tokio::test]
async fn an_unreachable_server_is_named_in_the_error() {
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = PostgresConfig::new(format!("postgres://jobs:secret@127.0.0.1:{port}/app"))
        .connect_timeout(Duration::from_secs(5));
    let err = Database::connect(config).await.unwrap_err();
    let message = err.to_string();
    match &err {
        ConnectError::Connect { address, .. } => assert_eq!(address, &format!("127.0.0.1:{port}")),
        other => panic!("expected a connect error, got {other:?}"),
    }
    assert!(
        message.starts_with(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port}: "
        )),
        "{message}"
    );
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(!message.contains("secret"), "{message}");

    let err = Database::connect(PostgresConfig::new("postgres://jobs:secret@db:port/app"))
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::InvalidUrl { .. }), "{err:?}");
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[tokio::test]
async fn a_database_that_does_not_exist_is_a_connect_error() {
    let url = server().url();
    let (base, rest) = url.rsplit_once('/').unwrap();
    let query = rest.find('?').map_or("", |at| &rest[at..]);
    let missing = unique_name("missing");
    let err = Database::connect(PostgresConfig::new(format!("{base}/{missing}{query}")))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, ConnectError::Connect { .. }), "{err:?}");
    assert!(message.contains(&missing), "{message}");
}

#[tokio::test]
async fn version_2_adds_alarm_leases_to_a_version_1_schema_with_data() {
    let mut client = client().await;
    let schema = unique_name("upgrade");
    // A schema as version 1 left it, with an instance whose alarm is set.
    client
        .batch_execute(&format!(
            "CREATE SCHEMA \"{schema}\"; SET search_path TO \"{schema}\";
             CREATE TABLE schema_version (version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now());
             {}
             INSERT INTO schema_version (version) VALUES (1);
             INSERT INTO instances VALUES ('workerPool:mail:0', 1700000000000);
             RESET search_path;",
            include_str!("../src/migrations/0001_instances_and_rows.sql")
        ))
        .await
        .unwrap();

    assert_eq!(
        migrate(&mut client, &schema).await.unwrap(),
        SUPPORTED_VERSION
    );
    assert_eq!(versions(&client, &schema).await, all_versions());
    let row = client
        .query_one(
            &format!(
                "SELECT alarm_at, alarm_owner, alarm_token, alarm_lease_until, alarm_seq \
                 FROM \"{schema}\".instances"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<i64>>(0), Some(1_700_000_000_000));
    assert_eq!(row.get::<_, Option<String>>(1), None);
    assert_eq!(row.get::<_, i64>(2), 0);
    assert_eq!(row.get::<_, Option<i64>>(3), None);
    assert_eq!(row.get::<_, i64>(4), 0);
    // Tokens come from one sequence of the schema.
    let token: i64 = client
        .query_one(&format!("SELECT nextval('\"{schema}\".alarm_tokens')"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(token, 1);
}
