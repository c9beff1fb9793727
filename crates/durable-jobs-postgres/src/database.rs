//! Connecting: a pool of connections to one database, its schema migrated at connect.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use tokio_postgres::config::Host;
use tokio_postgres::NoTls;

use crate::schema::{self, SchemaError, SchemaName, DEFAULT_SCHEMA};

/// How to reach the database, and which schema to use in it.
///
/// ```
/// use std::time::Duration;
/// use durable_jobs_postgres::PostgresConfig;
///
/// let config = PostgresConfig::new("postgres://jobs:secret@db.internal:5432/app")
///     .schema("jobs_staging")
///     .max_connections(32)
///     .connect_timeout(Duration::from_secs(5));
/// ```
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    url: String,
    schema: String,
    max_connections: usize,
    connect_timeout: Duration,
}

impl PostgresConfig {
    /// A connection string, as a `postgres://` URL or in `key=value` form (whatever
    /// `tokio_postgres::Config` parses). Connections are not encrypted: `sslmode=require`
    /// is refused when connecting.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            schema: DEFAULT_SCHEMA.to_owned(),
            max_connections: 16,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// The schema every table lives in ([`DEFAULT_SCHEMA`] unless set); checked at connect,
    /// see [`SchemaName`].
    pub fn schema(mut self, name: impl Into<String>) -> Self {
        self.schema = name.into();
        self
    }

    /// The most connections the pool opens (16 unless set, at least 1).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long opening one connection may take (10 s unless set) when the connection
    /// string sets no `connect_timeout` of its own.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The connection string does not parse. It is not repeated here, since it may hold a
    /// password.
    #[error("invalid PostgreSQL connection string: {reason}")]
    InvalidUrl {
        /// What the parser said.
        reason: String,
    },
    /// No connection could be opened: the server is down or unreachable, refused the login,
    /// or has no such database.
    #[error("cannot connect to PostgreSQL at {address}: {}", crate::cause(.source))]
    Connect {
        /// Where it tried: `host:port` pairs or socket directories, without credentials.
        address: String,
        /// The cause, as the driver reports it.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The pool failed for a reason other than opening a connection.
    #[error("PostgreSQL connection pool for {address}: {reason}")]
    Pool {
        /// Where the pool connects.
        address: String,
        /// What the pool said.
        reason: String,
    },
    /// The schema name is invalid, or the schema could not be migrated.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The runtime could not start its threads or executors.
    #[error("cannot start the PostgreSQL runtime: {reason}")]
    Start {
        /// What failed.
        reason: String,
    },
}

/// A pool of connections to one database whose schema is migrated.
///
/// Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    schema: SchemaName,
    version: u32,
    address: String,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("address", &self.address)
            .field("schema", &self.schema)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Opens a pool, checks that the server answers, and migrates the schema
    /// ([`schema::migrate`]): the schema is created on a fresh database, brought up to date
    /// on an older one, and a newer one is refused unchanged.
    ///
    /// Must be called inside a tokio runtime; connections are driven by tasks spawned on it.
    pub async fn connect(config: PostgresConfig) -> Result<Database, ConnectError> {
        let schema = SchemaName::new(&config.schema)?;
        let mut pg: tokio_postgres::Config =
            config
                .url
                .parse()
                .map_err(|e: tokio_postgres::Error| ConnectError::InvalidUrl {
                    reason: e.to_string(),
                })?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(config.connect_timeout);
        }
        let address = describe_address(&pg);
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                // A connection the server closed (a restart, an idle timeout) is noticed by
                // its driver task and dropped from the pool; one that breaks unnoticed
                // fails its next query, which callers handle anyway. Checking each one
                // with a query before handing it out would cost a round trip per use.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.max_connections)
            .build()
            .map_err(|e| ConnectError::Pool {
                address: address.clone(),
                reason: e.to_string(),
            })?;
        let database = Database {
            pool,
            schema,
            version: 0,
            address,
        };
        let mut client = database.client().await?;
        let version = schema::migrate_schema(&mut client, &database.schema).await?;
        drop(client);
        Ok(Database {
            version,
            ..database
        })
    }

    /// A connection from the pool, opened if none is idle; it goes back to the pool when
    /// dropped. Waits while all `max_connections` are in use.
    pub async fn client(&self) -> Result<Object, ConnectError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(source) => ConnectError::Connect {
                address: self.address.clone(),
                source,
            },
            other => ConnectError::Pool {
                address: self.address.clone(),
                reason: other.to_string(),
            },
        })
    }

    /// The pool itself.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The schema every table lives in.
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    /// The schema version in force since connect ([`schema::SUPPORTED_VERSION`]).
    pub fn schema_version(&self) -> u32 {
        self.version
    }

    /// Where the pool connects (`host:port` pairs or socket directories), for messages.
    pub fn address(&self) -> &str {
        &self.address
    }
}

/// `host:port` for each host of `config`, comma separated: enough to tell which server an
/// error is about, and free of the user name and password.
fn describe_address(config: &tokio_postgres::Config) -> String {
    let hosts = config.get_hosts();
    let ports = config.get_ports();
    // As the driver does: one port for every host, or one per host; 5432 when none.
    let port = |i: usize| match ports {
        [] => 5432,
        [one] => *one,
        many => many.get(i).copied().unwrap_or(5432),
    };
    if hosts.is_empty() {
        // Only `hostaddr` given: the driver connects to those addresses.
        let addrs = config.get_hostaddrs();
        if addrs.is_empty() {
            return "(no host given)".to_owned();
        }
        return addrs
            .iter()
            .enumerate()
            .map(|(i, ip)| match ip {
                std::net::IpAddr::V6(v6) => format!("[{v6}]:{}", port(i)),
                std::net::IpAddr::V4(v4) => format!("{v4}:{}", port(i)),
            })
            .collect::<Vec<_>>()
            .join(", ");
    }
    hosts
        .iter()
        .enumerate()
        .map(|(i, host)| match host {
            Host::Tcp(name) if name.contains(':') => format!("[{name}]:{}", port(i)),
            Host::Tcp(name) => format!("{name}:{}", port(i)),
            Host::Unix(dir) => format!("{} (port {})", dir.display(), port(i)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(url: &str) -> String {
        describe_address(&url.parse().unwrap())
    }

    #[test]
    fn addresses_name_hosts_and_ports_without_credentials() {
        assert_eq!(
            address("postgres://u:secret@db.example:6543/app"),
            "db.example:6543"
        );
        assert_eq!(address("postgres://u@127.0.0.1/app"), "127.0.0.1:5432");
        assert_eq!(address("postgres://[::1]:7000/app"), "[::1]:7000");
        assert_eq!(
            address("host=a,b port=1,2 user=u password=secret"),
            "a:1, b:2"
        );
        assert_eq!(
            address("host=/run/postgresql port=5433"),
            "/run/postgresql (port 5433)"
        );
        assert_eq!(address("hostaddr=127.0.0.1 port=9"), "127.0.0.1:9");
    }

    #[test]
    fn a_bad_url_is_reported_without_repeating_it() {
        let err = "postgres://u:secret@host:notaport/db"
            .parse::<tokio_postgres::Config>()
            .unwrap_err();
        let err = ConnectError::InvalidUrl {
            reason: err.to_string(),
        };
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
