//! A throwaway PostgreSQL server for tests (the `testing` feature).
//!
//! [`TestServer::new`] gives each test binary (or each test) a database of its own:
//!
//! - When `DATABASE_URL` is set, it creates a fresh, uniquely named database on that server
//!   and drops it when the `TestServer` is dropped.
//! - Otherwise it starts a server of its own: `initdb` into a temporary directory (trust
//!   authentication, superuser `postgres`), then `pg_ctl start` on a free port of
//!   127.0.0.1 with its Unix socket inside that directory. The binaries are looked up on
//!   `PATH`, then in `/usr/lib/postgresql/<version>/bin` (Debian's layout), newest version
//!   first. initdb refuses to run as root, so as root every PostgreSQL binary runs as the
//!   `postgres` user (through `runuser`, or `su`), which owns the directory.
//!
//! A local server is stopped and its directory deleted when the `TestServer` is dropped,
//! and also when the test process ends without dropping it (a `static`, a panic, a kill):
//! a small watchdog process, started with the server, waits for the test process's end of
//! a pipe to close and cleans up then. A `DATABASE_URL` database is dropped the same ways
//! (the watchdog's part with `psql`, where there is one); one left behind all the same is
//! dropped by a later `TestServer` on that server once it is a day old.
//!
//! A local server syncs nothing to disk (`fsync = off`): its data need not survive the
//! machine going down. [`TestServer::local_durable`] starts one with PostgreSQL's default
//! durability instead, for benchmarks, and [`TestServer::local_with`] takes other settings.
//!
//! initdb's output is kept as a template under the temporary directory
//! (`durable-jobs-pg-template-*`, one per PostgreSQL build and user) and copied for each
//! new server, which takes a fraction of initdb's time.
//!
//! ```no_run
//! use std::sync::OnceLock;
//! use durable_jobs_postgres::testing::{unique_name, TestServer};
//!
//! // One server for the whole test binary; each test takes a schema of its own.
//! fn server() -> &'static TestServer {
//!     static SERVER: OnceLock<TestServer> = OnceLock::new();
//!     SERVER.get_or_init(|| TestServer::new().expect("a PostgreSQL server for the tests"))
//! }
//!
//! # async fn test() {
//! let mut client = server().connect().await.unwrap();
//! let schema = unique_name("jobs");
//! durable_jobs_postgres::migrate(&mut client, &schema).await.unwrap();
//! # }
//! ```

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_postgres::NoTls;

/// Names the server or database the tests should use instead of starting their own.
pub const DATABASE_URL: &str = "DATABASE_URL";

/// The superuser of a local server.
const SUPERUSER: &str = "postgres";

/// Databases made on a `DATABASE_URL` server start with this, followed by their creation
/// time in seconds since the epoch.
const DATABASE_PREFIX: &str = "durable_jobs_test_";

/// A test database on a `DATABASE_URL` server is dropped with its `TestServer`; one held by
/// a `static` never is, so creating a test database also drops those of this prefix older
/// than this (no test runs that long).
const ABANDONED_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// A template cluster is made again once this old: cleaners of the temporary directory may
/// have removed some of its files by then.
const TEMPLATE_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a local server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A PostgreSQL server, or a database on one, for tests; see the module documentation.
///
/// Shareable between the tests of one binary (it is `Sync`, and [`url`](Self::url) and
/// [`connect`](Self::connect) take `&self`); give each test a schema of its own with
/// [`unique_name`]. [`stop`](Self::stop), [`kill`](Self::kill) and
/// [`start`](Self::start) restart a local server on the same data and port.
#[derive(Debug)]
pub struct TestServer {
    url: String,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Local(LocalServer),
    External {
        /// `DATABASE_URL` as given: where the test database is dropped from.
        admin_url: String,
        database: String,
        /// Drops the database with `psql` if the process ends without dropping this
        /// `TestServer`; `None` where there is no `psql`.
        watchdog: Option<Watchdog>,
    },
}

/// Why a test server could not be set up or driven.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestServerError {
    /// No PostgreSQL server binaries were found.
    #[error(
        "PostgreSQL's initdb and pg_ctl were not found (looked in {searched}); install \
         PostgreSQL (Debian: apt-get install postgresql) or set DATABASE_URL to a server"
    )]
    NotFound {
        /// The directories searched.
        searched: String,
    },
    /// The tests run as root, and there is no way to run the server as another user.
    #[error("running as root, which initdb refuses, and {reason}")]
    Root {
        /// What is missing.
        reason: String,
    },
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A PostgreSQL command failed.
    #[error("{what} failed ({status}):\n{output}")]
    Command {
        /// The command.
        what: String,
        /// How it exited.
        status: String,
        /// What it printed.
        output: String,
    },
    /// The server did not come up.
    #[error("the PostgreSQL server did not start: {reason}\n--- server log ---\n{log}")]
    Start {
        /// What happened.
        reason: String,
        /// The end of the server's log.
        log: String,
    },
    /// A statement on the server failed.
    #[error("{what}: {}", crate::cause(.source))]
    Database {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Only a server started by the tests can be stopped and started.
    #[error("the server given by DATABASE_URL cannot be stopped or started by tests")]
    NotLocal,
    /// A setting asked for in [`LocalOptions`] has a name postgresql.conf cannot hold.
    #[error("{name:?} is not a PostgreSQL setting name")]
    InvalidSetting {
        /// The name given.
        name: String,
    },
}

/// How a local server is set up: see [`TestServer::local_with`].
///
/// ```no_run
/// use durable_jobs_postgres::testing::{LocalOptions, TestServer};
///
/// let options = LocalOptions::default()
///     .durable()
///     .setting("shared_preload_libraries", "pg_stat_statements");
/// let server = TestServer::local_with(options).unwrap();
/// ```
#[derive(Debug, Clone, Default)]
pub struct LocalOptions {
    durable: bool,
    settings: Vec<(String, String)>,
}

impl LocalOptions {
    /// Keeps PostgreSQL's default durability: every commit is synced to disk before it is
    /// acknowledged. Without it, nothing is synced (`fsync = off`), which makes tests
    /// faster and loses nothing unless the machine itself goes down.
    pub fn durable(mut self) -> Self {
        self.durable = true;
        self
    }

    /// Adds `name = 'value'` to the server's configuration, after the settings of its own
    /// (so it overrides them). The value is quoted, as postgresql.conf accepts for every
    /// kind of setting; names are letters, digits, `_` and `.`.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// The lines these options add to postgresql.conf.
    fn conf_lines(&self) -> Result<String, TestServerError> {
        let mut lines = String::new();
        if self.durable {
            // The defaults, written out so that a configuration file with other defaults
            // cannot change what a benchmark measures.
            lines.push_str("fsync = on\nfull_page_writes = on\nsynchronous_commit = on\n");
        } else {
            // Durability against power loss is not needed, so nothing is synced; against
            // a crash of the server it is kept, since a commit still writes its WAL to the
            // OS before it returns (`synchronous_commit` stays on), which tests that kill
            // the server rely on.
            lines.push_str("fsync = off\nfull_page_writes = off\n");
        }
        for (name, value) in &self.settings {
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            if !valid {
                return Err(TestServerError::InvalidSetting { name: name.clone() });
            }
            let _ = writeln!(lines, "{name} = '{}'", conf_quote(value));
        }
        Ok(lines)
    }
}

impl TestServer {
    /// A database for tests: a fresh one on the `DATABASE_URL` server when that is set,
    /// else a new local server.
    ///
    /// Blocks while the server starts (about a second); call it from a `OnceLock` to share
    /// one server between the tests of a binary.
    pub fn new() -> Result<TestServer, TestServerError> {
        match std::env::var(DATABASE_URL) {
            Ok(url) if !url.trim().is_empty() => TestServer::external(url),
            _ => TestServer::local(),
        }
    }

    /// A new local server, whether `DATABASE_URL` is set or not: for tests that stop and
    /// start the server.
    pub fn local() -> Result<TestServer, TestServerError> {
        TestServer::local_with(LocalOptions::default())
    }

    /// A new local server with PostgreSQL's default durability (`fsync`,
    /// `full_page_writes` and `synchronous_commit` on), as a production server runs: for
    /// benchmarks, whose figures would otherwise leave out the cost of syncing each commit.
    pub fn local_durable() -> Result<TestServer, TestServerError> {
        TestServer::local_with(LocalOptions::default().durable())
    }

    /// A new local server set up as `options` say.
    pub fn local_with(options: LocalOptions) -> Result<TestServer, TestServerError> {
        let server = LocalServer::create(&options)?;
        Ok(TestServer {
            url: server.url(),
            kind: Kind::Local(server),
        })
    }

    fn external(admin_url: String) -> Result<TestServer, TestServerError> {
        let database = format!(
            "{DATABASE_PREFIX}{}_{}",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            unique_name("db")
        );
        let url = with_database(&admin_url, &database);
        let admin = admin_url.clone();
        let create = format!("CREATE DATABASE \"{database}\"");
        on_own_runtime(move || async move {
            let client = connect_on_this_runtime(&admin).await.map_err(|source| {
                TestServerError::Database {
                    what: format!("connecting to {DATABASE_URL}"),
                    source,
                }
            })?;
            drop_abandoned_databases(&client).await;
            client
                .batch_execute(&create)
                .await
                .map_err(|source| TestServerError::Database {
                    what: format!("creating a test database on the {DATABASE_URL} server"),
                    source,
                })
        })??;
        Ok(TestServer {
            url,
            kind: Kind::External {
                watchdog: database_watchdog(&admin_url, &database),
                admin_url,
                database,
            },
        })
    }

    /// A `postgres://` URL of the test database, for `tokio_postgres` or
    /// [`PostgresConfig`](crate::PostgresConfig). With `DATABASE_URL`, it is that URL with
    /// the database name replaced.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this is a server the tests started (and so can stop and start).
    pub fn is_local(&self) -> bool {
        matches!(self.kind, Kind::Local(_))
    }

    /// Opens a connection to the test database; its driver task is spawned on the current
    /// tokio runtime.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
        // A failure of the connection shows in the client's next call.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// The process id of the local server's postmaster while it runs.
    pub fn pid(&self) -> Option<u32> {
        match &self.kind {
            Kind::Local(server) => server.pid,
            Kind::External { .. } => None,
        }
    }

    /// Stops the local server cleanly (`pg_ctl stop -m fast`): open connections are closed
    /// and the data is kept for [`start`](Self::start).
    pub fn stop(&mut self) -> Result<(), TestServerError> {
        self.local_server()?.stop("fast")
    }

    /// Stops the local server the way a crash would (`pg_ctl stop -m immediate`): no
    /// checkpoint, so the next [`start`](Self::start) recovers from the write-ahead log.
    pub fn kill(&mut self) -> Result<(), TestServerError> {
        self.local_server()?.stop("immediate")
    }

    /// Starts the local server again, on the same data directory and port, and waits until
    /// it accepts connections. Does nothing if it is running.
    pub fn start(&mut self) -> Result<(), TestServerError> {
        self.local_server()?.start()
    }

    /// The local server's directory: its data (`data/`), log (`server.log`) and Unix
    /// socket (`sockets/`). `None` for a `DATABASE_URL` server.
    pub fn directory(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Local(server) => Some(&server.dir),
            Kind::External { .. } => None,
        }
    }

    /// The local server's log so far (empty for a `DATABASE_URL` server).
    pub fn log(&self) -> String {
        match &self.kind {
            Kind::Local(server) => fs::read_to_string(&server.log).unwrap_or_default(),
            Kind::External { .. } => String::new(),
        }
    }

    fn local_server(&mut self) -> Result<&mut LocalServer, TestServerError> {
        match &mut self.kind {
            Kind::Local(server) => Ok(server),
            Kind::External { .. } => Err(TestServerError::NotLocal),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // A local server is stopped by its watchdog when `LocalServer` drops.
        if let Kind::External {
            admin_url,
            database,
            watchdog,
        } = &mut self.kind
        {
            let admin = admin_url.clone();
            let name = database.clone();
            // Best effort: a database left behind is dropped by a later run as abandoned.
            let _ = on_own_runtime(move || async move {
                if let Ok(client) = connect_on_this_runtime(&admin).await {
                    drop_database(&client, &name).await;
                }
            });
            // Its drop, if the one above failed, finds nothing left to do otherwise.
            if let Some(watchdog) = watchdog {
                watchdog.fire();
            }
        }
    }
}

/// A name no other call in this process returns, `{prefix}_{pid}_{n}`: a schema or table
/// of one's own on a shared test server. Lowercase when `prefix` is, so it is a valid
/// schema name for such a prefix.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A server started by the tests, in a directory of its own.
#[derive(Debug)]
struct LocalServer {
    dir: PathBuf,
    data: PathBuf,
    log: PathBuf,
    pg_ctl: PathBuf,
    runner: Runner,
    port: u16,
    pid: Option<u32>,
    /// Stops the server and deletes `dir` when this drops or the process ends.
    watchdog: Option<Watchdog>,
}

impl LocalServer {
    fn create(options: &LocalOptions) -> Result<LocalServer, TestServerError> {
        let extra = options.conf_lines()?;
        let bin = find_binaries()?;
        let runner = Runner::for_current_user()?;
        let dir = make_private_dir()?;
        let mut server = LocalServer {
            data: dir.join("data"),
            log: dir.join("server.log"),
            pg_ctl: bin.join("pg_ctl"),
            dir,
            runner,
            port: 0,
            pid: None,
            watchdog: None,
        };
        // From here on, dropping `server` stops whatever was started and deletes the
        // directory, on every error path too.
        server.watchdog = Some(server.spawn_watchdog()?);
        let sockets = server.dir.join("sockets");
        fs::create_dir(&sockets).map_err(io_error(format!("creating {}", sockets.display())))?;
        server.runner.give(&server.dir)?;
        server.runner.give(&sockets)?;

        init_data_dir(&server.runner, &bin, &server.data)?;

        // Settings go into the configuration file, so a restart reuses them, the port
        // included.
        let settings = format!(
            "\n# durable-jobs TestServer\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             {extra}",
            conf_quote(&sockets.to_string_lossy()),
        );
        server.append_conf(&settings)?;

        // Another process may take the port between our probe and the server's bind:
        // then try another one.
        let mut attempts = 0;
        loop {
            attempts += 1;
            server.port = free_port()?;
            server.append_conf(&format!("port = {}\n", server.port))?;
            match server.start() {
                Ok(()) => return Ok(server),
                Err(e) if attempts < 5 && server.log_tail().contains("could not bind") => {
                    drop(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn url(&self) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/postgres", self.port)
    }

    fn append_conf(&self, text: &str) -> Result<(), TestServerError> {
        use std::io::Write as _;
        let path = self.data.join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(io_error(format!("writing {}", path.display())))
    }

    fn start(&mut self) -> Result<(), TestServerError> {
        if self.pid.is_some() {
            return Ok(());
        }
        let timeout = START_TIMEOUT.as_secs().to_string();
        let started = self.run(
            &self.pg_ctl,
            &[
                OsStr::new("start"),
                OsStr::new("-D"),
                self.data.as_os_str(),
                OsStr::new("-l"),
                self.log.as_os_str(),
                OsStr::new("-w"),
                OsStr::new("-t"),
                OsStr::new(&timeout),
            ],
        );
        if let Err(e) = started {
            return Err(TestServerError::Start {
                reason: e.to_string(),
                log: self.log_tail(),
            });
        }
        self.pid = read_pid(&self.data);
        // pg_ctl waited for the server to report itself ready; check that a client gets
        // in over TCP, as the tests will.
        let url = self.url();
        let deadline = Instant::now() + START_TIMEOUT;
        let reached = on_own_runtime(move || async move {
            loop {
                match connect_on_this_runtime(&url).await {
                    Ok(client) => return client.simple_query("SELECT 1").await.map(|_| ()),
                    Err(e) if Instant::now() >= deadline => return Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        })?;
        reached.map_err(|e| TestServerError::Start {
            reason: format!(
                "it does not accept connections on port {}: {}",
                self.port,
                crate::cause(&e)
            ),
            log: self.log_tail(),
        })
    }

    fn stop(&mut self, mode: &str) -> Result<(), TestServerError> {
        if self.pid.is_none() {
            return Ok(());
        }
        self.run(
            &self.pg_ctl,
            &[
                OsStr::new("stop"),
                OsStr::new("-D"),
                self.data.as_os_str(),
                OsStr::new("-m"),
                OsStr::new(mode),
                OsStr::new("-w"),
            ],
        )?;
        self.pid = None;
        Ok(())
    }

    /// Runs a PostgreSQL binary as the server's user, in the server's directory.
    fn run(&self, program: &Path, args: &[&OsStr]) -> Result<Output, TestServerError> {
        self.runner.run(&self.dir, program, args)
    }

    /// Stops the server, if its data directory says it runs, and deletes the directory,
    /// when `LocalServer` drops or the process ends.
    fn spawn_watchdog(&self) -> Result<Watchdog, TestServerError> {
        let stop = self.runner.argv(
            &self.pg_ctl,
            &[
                OsStr::new("stop"),
                OsStr::new("-D"),
                self.data.as_os_str(),
                OsStr::new("-m"),
                OsStr::new("immediate"),
                OsStr::new("-w"),
            ],
        );
        Watchdog::spawn(
            r#"if [ -f "$DJ_DATA/postmaster.pid" ]; then "$@"; fi
               rm -rf -- "$DJ_DIR""#,
            stop,
            &[
                ("DJ_DATA", self.data.as_os_str()),
                ("DJ_DIR", self.dir.as_os_str()),
            ],
        )
    }

    /// The last lines of the server's log, for error messages.
    fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        match &mut self.watchdog {
            Some(watchdog) => watchdog.fire(),
            None => {
                let _ = fs::remove_dir_all(&self.dir);
            }
        }
    }
}

/// A shell that waits for end-of-file on its input, then runs a cleanup script. Its input
/// is a pipe only this process writes to, so the cleanup runs when [`Watchdog::fire`] is
/// called or when the process ends, however it ends: a `TestServer` in a `static` is never
/// dropped, and a test process may be killed. It has a process group of its own, so Ctrl-C
/// in a terminal, which ends the tests, does not end it too.
#[derive(Debug)]
struct Watchdog {
    child: Child,
    input: Option<ChildStdin>,
}

impl Watchdog {
    /// `script` runs with `args` as `"$@"` and `env` added to the environment.
    fn spawn(
        script: &str,
        args: Vec<OsString>,
        env: &[(&str, &OsStr)],
    ) -> Result<Watchdog, TestServerError> {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("cat >/dev/null\n{script}"))
            .arg("durable-jobs-test-server-watchdog")
            .args(args)
            .envs(env.iter().copied())
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(io_error(
                "starting the test server's watchdog (/bin/sh)".into(),
            ))?;
        let input = child.stdin.take();
        Ok(Watchdog { child, input })
    }

    /// Runs the cleanup now and waits for it to finish.
    fn fire(&mut self) {
        drop(self.input.take());
        let _ = self.child.wait();
    }
}

/// How PostgreSQL binaries are run: directly, or as the `postgres` user when the tests
/// run as root.
#[derive(Debug, Clone)]
enum Runner {
    Direct,
    As {
        /// `runuser -u USER --`, or `su -s /bin/sh USER -c 'exec "$0" "$@"'`.
        prefix: Vec<OsString>,
        uid: u32,
        gid: u32,
    },
}

impl Runner {
    fn for_current_user() -> Result<Runner, TestServerError> {
        if id(&["-u"])? != 0 {
            return Ok(Runner::Direct);
        }
        let user = "postgres";
        let (uid, gid) = match (id(&["-u", user]), id(&["-g", user])) {
            (Ok(uid), Ok(gid)) => (uid, gid),
            _ => {
                return Err(TestServerError::Root {
                    reason: format!(
                        "there is no `{user}` user to run the server as (Debian's \
                         postgresql package creates it)"
                    ),
                })
            }
        };
        let prefix: Vec<OsString> = if let Some(runuser) = find_program("runuser") {
            vec![runuser.into(), "-u".into(), user.into(), "--".into()]
        } else if let Some(su) = find_program("su") {
            vec![
                su.into(),
                "-s".into(),
                "/bin/sh".into(),
                user.into(),
                "-c".into(),
                r#"exec "$0" "$@""#.into(),
            ]
        } else {
            return Err(TestServerError::Root {
                reason: "neither runuser nor su was found to run the server as another user".into(),
            });
        };
        Ok(Runner::As { prefix, uid, gid })
    }

    /// Who owns the server's files: `uid:gid` of the server's user, or `self` for the
    /// current user.
    fn owner(&self) -> String {
        match self {
            Runner::Direct => format!("self:{}", id(&["-u"]).unwrap_or(u32::MAX)),
            Runner::As { uid, gid, .. } => format!("{uid}:{gid}"),
        }
    }

    fn argv(&self, program: &Path, args: &[&OsStr]) -> Vec<OsString> {
        let mut argv = match self {
            Runner::Direct => Vec::new(),
            Runner::As { prefix, .. } => prefix.clone(),
        };
        argv.push(program.into());
        argv.extend(args.iter().map(|a| a.to_os_string()));
        argv
    }

    /// Runs a PostgreSQL binary as the server's user, in `dir` (as root, the test's
    /// working directory may be closed to that user); fails with its output unless it
    /// succeeds.
    fn run(&self, dir: &Path, program: &Path, args: &[&OsStr]) -> Result<Output, TestServerError> {
        let argv = self.argv(program, args);
        let what = argv
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let output = command(&argv)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(io_error(format!("running {what}")))?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(TestServerError::Command {
                what,
                status: output.status.to_string(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
            })
        }
    }

    /// Makes the server's user own `path`.
    fn give(&self, path: &Path) -> Result<(), TestServerError> {
        match self {
            Runner::Direct => Ok(()),
            Runner::As { uid, gid, .. } => std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
                .map_err(io_error(format!(
                    "giving {} to the server's user",
                    path.display()
                ))),
        }
    }
}

/// Fills `data` with a new cluster: a copy of a cached template when one can be had, else
/// the output of `initdb`.
///
/// initdb takes one to several seconds (most of it building the system catalogs), a copy a
/// fraction of that, and test binaries each start a server. The template is made once per
/// set of binaries and user, under the temporary directory, by running initdb into a
/// directory of its own that is then renamed into place: a template is complete or absent,
/// and processes racing to make it just keep the first. It is never changed afterwards;
/// settings are appended to each copy's configuration.
fn init_data_dir(runner: &Runner, bin: &Path, data: &Path) -> Result<(), TestServerError> {
    if let Some(template) = template_data_dir(runner, bin) {
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if matches!(copied, Ok(status) if status.success()) {
            return Ok(());
        }
        // Whatever went wrong with the copy, initdb still gives a server.
        let _ = fs::remove_dir_all(data);
    }
    initdb(runner, bin, data)
}

fn initdb(runner: &Runner, bin: &Path, data: &Path) -> Result<(), TestServerError> {
    let dir = data.parent().unwrap_or(Path::new("/"));
    runner.run(
        dir,
        &bin.join("initdb"),
        &[
            OsStr::new("-D"),
            data.as_os_str(),
            OsStr::new("-U"),
            OsStr::new(SUPERUSER),
            OsStr::new("-A"),
            OsStr::new("trust"),
            OsStr::new("-E"),
            OsStr::new("UTF8"),
            OsStr::new("--locale=C"),
            // Test data need not survive a power loss.
            OsStr::new("--no-sync"),
        ],
    )?;
    Ok(())
}

/// The cached template cluster for these binaries and this user, made if missing; `None`
/// if it cannot be had (the caller then runs initdb itself).
fn template_data_dir(runner: &Runner, bin: &Path) -> Option<PathBuf> {
    // The binaries' identity: a reinstalled or upgraded PostgreSQL gets a new template.
    let binary = fs::canonicalize(bin.join("initdb")).ok()?;
    let meta = fs::metadata(&binary).ok()?;
    let modified = meta
        .modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_nanos();
    let identity = format!(
        "{}|{}|{modified}|{}|{SUPERUSER}",
        binary.display(),
        meta.len(),
        runner.owner()
    );
    let base = std::env::temp_dir();
    let template = base.join(format!(
        "durable-jobs-pg-template-{:016x}",
        fnv1a(&identity)
    ));
    let data = template.join("data");
    let age = fs::metadata(&template)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    match age {
        Some(age) if age < TEMPLATE_MAX_AGE && data.join("PG_VERSION").is_file() => {
            return Some(data);
        }
        Some(age) if age >= TEMPLATE_MAX_AGE => {
            // Moved aside before it is deleted, so that no copy starts from a template
            // half gone.
            if let Ok(trash) = make_private_dir() {
                let _ = fs::rename(&template, trash.join("old"));
                let _ = fs::remove_dir_all(&trash);
            }
        }
        _ => {}
    }
    let staging = make_private_dir().ok()?;
    let made = runner.give(&staging).is_ok()
        && initdb(runner, bin, &staging.join("data")).is_ok()
        // Renaming a directory onto one that is not empty fails, so the first template
        // made stays.
        && fs::rename(&staging, &template).is_ok();
    if !made {
        let _ = fs::remove_dir_all(&staging);
    }
    data.join("PG_VERSION").is_file().then_some(data)
}

/// 64-bit FNV-1a: a stable name for a template.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn command(argv: &[OsString]) -> Command {
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    command
}

/// `id ARGS`: a user or group id.
fn id(args: &[&str]) -> Result<u32, TestServerError> {
    let output = Command::new("id")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(io_error("running id".into()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    match text.trim().parse() {
        Ok(id) if output.status.success() => Ok(id),
        _ => Err(TestServerError::Command {
            what: format!("id {}", args.join(" ")),
            status: output.status.to_string(),
            output: format!("{text}{}", String::from_utf8_lossy(&output.stderr)),
        }),
    }
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `name` on `PATH` or in the usual system directories (root's `PATH` in a container may
/// lack the `sbin` ones).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// The directory holding both `initdb` and `pg_ctl`: the first on `PATH`, else the newest
/// version under `/usr/lib/postgresql` (Debian and Ubuntu keep them off `PATH`).
fn find_binaries() -> Result<PathBuf, TestServerError> {
    let has_both =
        |dir: &Path| is_executable(&dir.join("initdb")) && is_executable(&dir.join("pg_ctl"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = std::env::split_paths(&path).find(|dir| has_both(dir)) {
        return Ok(dir);
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version: Option<Vec<u32>> = name.split('.').map(|p| p.parse().ok()).collect();
            Some((version?, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_both(bin))
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => Ok(bin),
        None => Err(TestServerError::NotFound {
            searched: format!("PATH and {}/*/bin", root.display()),
        }),
    }
}

/// A new directory only this user can enter, under the system's temporary directory.
fn make_private_dir() -> Result<PathBuf, TestServerError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    loop {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!(
            "durable-jobs-pg-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(TestServerError::Io {
                    what: format!("creating {}", dir.display()),
                    source: e,
                })
            }
        }
    }
}

/// A port of 127.0.0.1 that nothing listens on right now.
fn free_port() -> Result<u16, TestServerError> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(io_error("finding a free port on 127.0.0.1".into()))
}

/// The postmaster's pid: the first line of `postmaster.pid`.
fn read_pid(data: &Path) -> Option<u32> {
    fs::read_to_string(data.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// `text` inside single quotes in postgresql.conf.
fn conf_quote(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "''")
}

fn io_error(what: String) -> impl FnOnce(io::Error) -> TestServerError {
    move |source| TestServerError::Io { what, source }
}

/// `url` with its database replaced by `database`: the path of a `postgres://` URL, or a
/// `dbname` appended to a `key=value` string (the last one counts).
fn with_database(url: &str, database: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return format!("{url} dbname={database}");
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let query_at = rest.find('?').unwrap_or(rest.len());
    let path_at = rest[..query_at].find('/').unwrap_or(query_at);
    let mut out = String::with_capacity(url.len() + database.len());
    out.push_str(&url[..rest_start + path_at]);
    let _ = write!(out, "/{database}");
    out.push_str(&rest[query_at..]);
    out
}

/// Runs `f` to completion on a runtime of its own, on a thread of its own: usable from
/// synchronous code, from inside another runtime, and in `Drop`.
fn on_own_runtime<T, F, Fut>(f: F) -> Result<T, TestServerError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let thread = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|runtime| runtime.block_on(f()))
    });
    match thread.join() {
        Ok(result) => result.map_err(io_error("starting a tokio runtime".into())),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Connects with the driver task spawned on the current runtime.
async fn connect_on_this_runtime(
    url: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn drop_database(client: &tokio_postgres::Client, database: &str) {
    // FORCE ends sessions still open on it (a pool the test did not close); servers
    // before 13 lack it and get the plain form.
    let force = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
    if client.batch_execute(&force).await.is_err() {
        let _ = client
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{database}\""))
            .await;
    }
}

/// A watchdog that drops `database` with `psql`, should the process end without dropping
/// its `TestServer`; `None` if there is no `psql` or the URL does not parse.
fn database_watchdog(admin_url: &str, database: &str) -> Option<Watchdog> {
    let psql = find_program("psql").or_else(|| {
        find_binaries()
            .ok()
            .map(|bin| bin.join("psql"))
            .filter(|p| is_executable(p))
    })?;
    // psql is told where to connect through libpq's environment variables, not its command
    // line, which every user can read and which could show a password.
    let config: tokio_postgres::Config = admin_url.parse().ok()?;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(dir) => dir.to_string_lossy().into_owned(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    let admin_database = config.get_dbname().unwrap_or("postgres");
    let mut env: Vec<(&str, OsString)> = vec![
        ("PGDATABASE", admin_database.into()),
        ("PGCONNECT_TIMEOUT", "10".into()),
        ("DJ_DATABASE", database.into()),
    ];
    if !hosts.is_empty() {
        env.push(("PGHOST", hosts.join(",").into()));
    }
    if !ports.is_empty() {
        env.push(("PGPORT", ports.join(",").into()));
    }
    if let Some(user) = config.get_user() {
        env.push(("PGUSER", user.into()));
    }
    if let Some(password) = config.get_password() {
        env.push((
            "PGPASSWORD",
            String::from_utf8_lossy(password).into_owned().into(),
        ));
    }
    let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    Watchdog::spawn(
        r#""$@" -c "DROP DATABASE IF EXISTS \"$DJ_DATABASE\" WITH (FORCE)" ||
             "$@" -c "DROP DATABASE IF EXISTS \"$DJ_DATABASE\"""#,
        vec![
            psql.into(),
            "-X".into(),
            "-q".into(),
            "-v".into(),
            "ON_ERROR_STOP=1".into(),
        ],
        &env,
    )
    .ok()
}

/// Drops test databases that outlived [`ABANDONED_AFTER`]: those of `TestServer`s that
/// were never dropped. Best effort.
async fn drop_abandoned_databases(client: &tokio_postgres::Client) {
    let Ok(rows) = client
        .query("SELECT datname::text FROM pg_catalog.pg_database", &[])
        .await
    else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for row in rows {
        let Ok(name) = row.try_get::<_, String>(0) else {
            continue;
        };
        let created = name
            .strip_prefix(DATABASE_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if let Some(created) = created {
            if now.saturating_sub(created) > ABANDONED_AFTER.as_secs() {
                drop_database(client, &name).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/app?sslmode=disable", "t"),
            "postgres://u:p@h:5432/t?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t"), "postgres://h/t");
        assert_eq!(with_database("postgresql://h/", "t"), "postgresql://h/t");
        assert_eq!(
            with_database("postgres:///app?host=/run/postgresql", "t"),
            "postgres:///t?host=/run/postgresql"
        );
        let key_value = with_database("host=h user=u dbname=app", "t");
        let parsed: tokio_postgres::Config = key_value.parse().unwrap();
        assert_eq!(parsed.get_dbname(), Some("t"));
    }

    #[test]
    fn unique_names_are_unique_schema_names() {
        let a = unique_name("jobs");
        let b = unique_name("jobs");
        assert_ne!(a, b);
        assert!(crate::SchemaName::new(&a).is_ok());
    }

    #[test]
    fn conf_values_are_quoted() {
        assert_eq!(conf_quote("/tmp/it's"), "/tmp/it''s");
    }

    #[test]
    fn a_durable_server_syncs_and_settings_come_last() {
        let fast = LocalOptions::default().conf_lines().unwrap();
        assert!(fast.contains("fsync = off"), "{fast}");
        let durable = LocalOptions::default()
            .durable()
            .setting("shared_preload_libraries", "pg_stat_statements")
            .setting("work_mem", "8MB")
            .conf_lines()
            .unwrap();
        assert_eq!(
            durable,
            "fsync = on\nfull_page_writes = on\nsynchronous_commit = on\n\
             shared_preload_libraries = 'pg_stat_statements'\nwork_mem = '8MB'\n"
        );
        for bad in ["", "a b", "x\nfsync", "a=b"] {
            let refused = LocalOptions::default().setting(bad, "1").conf_lines();
            assert!(
                matches!(refused, Err(TestServerError::InvalidSetting { .. })),
                "{bad:?}"
            );
        }
    }
}
