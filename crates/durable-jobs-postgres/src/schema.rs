//! The database schema: its name, its migrations, and how they are applied.
//!
//! Every table lives in one PostgreSQL schema, [`DEFAULT_SCHEMA`] unless configured
//! otherwise, so several deployments can share a database. The schema is versioned: its
//! `schema_version` table holds one row per migration applied, and the version in force is
//! the highest. [`migrate`] brings a schema up to [`SUPPORTED_VERSION`]:
//!
//! - in one transaction, so a schema is never left half migrated;
//! - under `pg_advisory_xact_lock` on a key derived from the schema name
//!   ([`SchemaName::migration_lock_key`]), so processes that start at the same time take
//!   turns: the first applies the migrations and the others find them applied;
//! - never on a schema newer than this build: a `schema_version` above
//!   [`SUPPORTED_VERSION`] is refused with [`SchemaError::SchemaTooNew`], before anything is
//!   written.

use std::fmt;

use tokio_postgres::{Client, IsolationLevel, Transaction};

/// The schema used when none is configured.
pub const DEFAULT_SCHEMA: &str = "durable_jobs";

/// One step of the schema's history: the SQL that takes it from `version - 1` to `version`.
struct Migration {
    version: u32,
    sql: &'static str,
}

const fn migration(version: u32, sql: &'static str) -> Migration {
    Migration { version, sql }
}

/// Every migration, oldest first. Each runs once per schema, with `search_path` set to the
/// schema, so its SQL names no schema. A migration is never edited once released: changes
/// go into a new one, appended here.
const MIGRATIONS: &[Migration] = &[
    migration(1, include_str!("migrations/0001_instances_and_rows.sql")),
    migration(2, include_str!("migrations/0002_alarm_leases.sql")),
];

/// The newest schema version this build knows, the version [`migrate`] brings a schema to.
///
/// Checked at compile time: versions must be 1, 2, 3... in order, so that "the highest
/// version applied" says exactly which migrations ran.
pub const SUPPORTED_VERSION: u32 = check_versions(MIGRATIONS);

const fn check_versions(migrations: &[Migration]) -> u32 {
    assert!(
        !migrations.is_empty(),
        "there must be at least one migration"
    );
    let mut i = 0;
    while i < migrations.len() {
        assert!(
            migrations[i].version as usize == i + 1,
            "migration versions must be 1, 2, 3... in order"
        );
        i += 1;
    }
    migrations[migrations.len() - 1].version
}

/// A validated PostgreSQL schema name.
///
/// Allowed: 1 to 63 bytes of lowercase ASCII letters, digits and `_`, not starting with a
/// digit. Such a name means the same quoted or not (PostgreSQL folds unquoted names to
/// lowercase), so it can be typed in `psql` as it is, and it can never carry SQL. Names
/// starting with `pg_` are refused because PostgreSQL reserves them for its own schemas, and
/// `information_schema` because it belongs to PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SchemaName(String);

/// PostgreSQL truncates longer identifiers (NAMEDATALEN - 1), so two long names could
/// silently meet in one schema.
const MAX_NAME_BYTES: usize = 63;

impl SchemaName {
    /// Checks `name`; see the type's documentation for what is allowed.
    pub fn new(name: &str) -> Result<Self, SchemaError> {
        let invalid = |reason: &'static str| SchemaError::InvalidSchemaName {
            name: name.to_owned(),
            reason,
        };
        let Some(first) = name.bytes().next() else {
            return Err(invalid("it is empty"));
        };
        if name.len() > MAX_NAME_BYTES {
            return Err(invalid("it is longer than 63 bytes"));
        }
        if !(first.is_ascii_lowercase() || first == b'_') {
            return Err(invalid("it must start with a lowercase letter or '_'"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(invalid(
                "it may hold only lowercase ASCII letters, digits and '_'",
            ));
        }
        if name.starts_with("pg_") {
            return Err(invalid(
                "names starting with pg_ are reserved by PostgreSQL",
            ));
        }
        if name == "information_schema" {
            return Err(invalid("information_schema belongs to PostgreSQL"));
        }
        Ok(SchemaName(name.to_owned()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as an SQL identifier, in double quotes, ready to be put into a statement.
    /// Quoting is not needed for safety (the name's characters are checked) but keeps
    /// names that are SQL keywords, such as `user`, usable.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }

    /// The key of the transaction-scoped advisory lock that [`migrate`] holds while it
    /// reads and changes this schema (`pg_locks.objid` and `classid` show its two halves).
    ///
    /// A fixed function of the name (64-bit FNV-1a), the same in every build and on every
    /// platform, since processes of different versions must take the same lock.
    pub fn migration_lock_key(&self) -> i64 {
        const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash = OFFSET_BASIS;
        for byte in b"durable_jobs.migrate:".iter().chain(self.0.as_bytes()) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
        i64::from_le_bytes(hash.to_le_bytes())
    }
}

impl Default for SchemaName {
    fn default() -> Self {
        SchemaName(DEFAULT_SCHEMA.to_owned())
    }
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a schema could not be checked or migrated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The configured schema name is not acceptable; nothing was sent to the database.
    #[error("invalid schema name {name:?}: {reason}")]
    InvalidSchemaName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The schema was migrated by a newer build; it was left as it is.
    #[error(
        "schema \"{schema}\" is at version {found}, newer than version {supported}, the \
         newest this build of durable-jobs-postgres knows; it was left unchanged \
         (run a newer build)"
    )]
    SchemaTooNew {
        /// The schema.
        schema: String,
        /// The version the database holds.
        found: u32,
        /// The newest version this build knows ([`SUPPORTED_VERSION`]).
        supported: u32,
    },
    /// The schema's `schema_version` table holds something no build writes.
    #[error("schema \"{schema}\" has an unusable schema_version table: {detail}")]
    InvalidVersionTable {
        /// The schema.
        schema: String,
        /// What was found.
        detail: String,
    },
    /// A migration's SQL failed; its transaction, and so every migration of this run, was
    /// rolled back.
    #[error("applying migration {version} to schema \"{schema}\" failed: {}", crate::cause(.source))]
    Migration {
        /// The schema.
        schema: String,
        /// The migration that failed.
        version: u32,
        /// What PostgreSQL said.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database failed while the version was read or the transaction was opened,
    /// locked or committed (a lost connection, missing privileges...).
    #[error("migrating schema \"{schema}\" failed: {}", crate::cause(.source))]
    Database {
        /// The schema.
        schema: String,
        /// What went wrong.
        #[source]
        source: tokio_postgres::Error,
    },
}

/// Brings `schema` up to [`SUPPORTED_VERSION`], creating it if needed, and returns the
/// version in force afterwards.
///
/// Safe to call from many processes at once (they take turns, see the module
/// documentation) and on every start: on an up-to-date schema it only reads the version. A
/// schema newer than this build is refused with [`SchemaError::SchemaTooNew`] and not
/// changed; an invalid `schema` is refused before anything is sent.
pub async fn migrate(client: &mut Client, schema: &str) -> Result<u32, SchemaError> {
    let schema = SchemaName::new(schema)?;
    migrate_schema(client, &schema).await
}

/// [`migrate`] for a name already checked.
pub(crate) async fn migrate_schema(
    client: &mut Client,
    schema: &SchemaName,
) -> Result<u32, SchemaError> {
    let db = |source| SchemaError::Database {
        schema: schema.to_string(),
        source,
    };
    // Read committed, whatever the session's default: each statement then sees everything
    // committed before it began, so the version read once the lock is granted includes
    // the migrations of whoever held the lock before. Under repeatable read the snapshot
    // would date from before the wait, and a second starter would apply them again.
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await
        .map_err(db)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&schema.migration_lock_key()],
    )
    .await
    .map_err(db)?;

    let found = read_version(&tx, schema).await?;
    if found > SUPPORTED_VERSION {
        // Nothing was written; ending the transaction only releases the lock. Should the
        // rollback fail, the connection is gone and the server ends the transaction.
        let _ = tx.rollback().await;
        return Err(SchemaError::SchemaTooNew {
            schema: schema.to_string(),
            found,
            supported: SUPPORTED_VERSION,
        });
    }
    if found == SUPPORTED_VERSION {
        tx.commit().await.map_err(db)?;
        return Ok(found);
    }

    let quoted = schema.quoted();
    // The version table is not part of any migration: its shape never changes, since
    // every build, older ones included, must be able to read it to refuse a newer schema.
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {quoted};
         SET LOCAL search_path TO {quoted};
         CREATE TABLE IF NOT EXISTS {quoted}.schema_version (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await
    .map_err(db)?;
    let record = format!("INSERT INTO {quoted}.schema_version (version) VALUES ($1)");
    for step in MIGRATIONS.iter().filter(|m| m.version > found) {
        let failed = |source| SchemaError::Migration {
            schema: schema.to_string(),
            version: step.version,
            source,
        };
        tx.batch_execute(step.sql).await.map_err(failed)?;
        // Versions are small (checked 1, 2, 3... at compile time), so they fit an integer.
        let version = i32::try_from(step.version).unwrap_or(i32::MAX);
        tx.execute(&record, &[&version]).await.map_err(failed)?;
    }
    tx.commit().await.map_err(db)?;
    Ok(SUPPORTED_VERSION)
}

/// The version in force: the highest recorded, 0 for a schema (or database) without a
/// version table.
async fn read_version(tx: &Transaction<'_>, schema: &SchemaName) -> Result<u32, SchemaError> {
    let db = |source| SchemaError::Database {
        schema: schema.to_string(),
        source,
    };
    let exists: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables \
             WHERE schemaname = $1 AND tablename = 'schema_version')",
            &[&schema.as_str()],
        )
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)?;
    if !exists {
        return Ok(0);
    }
    let highest: Option<i32> = tx
        .query_one(
            &format!(
                "SELECT max(version) FROM {}.schema_version",
                schema.quoted()
            ),
            &[],
        )
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)?;
    match highest {
        // An empty table: the first migration has not run (it records itself in the
        // transaction that creates the table, so only a hand-made table is empty).
        None => Ok(0),
        Some(v) => u32::try_from(v).map_err(|_| SchemaError::InvalidVersionTable {
            schema: schema.to_string(),
            detail: format!("version {v} is negative"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_one() {
        assert_eq!(SUPPORTED_VERSION as usize, MIGRATIONS.len());
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
            assert!(!m.sql.trim().is_empty());
        }
    }

    #[test]
    fn plain_names_are_accepted() {
        for name in ["durable_jobs", "a", "_x", "jobs_2", "user", &"a".repeat(63)] {
            let schema = SchemaName::new(name).unwrap();
            assert_eq!(schema.as_str(), name);
            assert_eq!(schema.quoted(), format!("\"{name}\""));
        }
        assert_eq!(SchemaName::default().as_str(), DEFAULT_SCHEMA);
        assert!(SchemaName::new(DEFAULT_SCHEMA).is_ok());
    }

    #[test]
    fn other_names_are_refused() {
        for name in [
            "",
            "Jobs",
            "1jobs",
            "jobs-2",
            "jobs 2",
            "jobs\"; DROP TABLE x; --",
            "jobs.rows",
            "jöbs",
            "pg_jobs",
            "information_schema",
            &"a".repeat(64),
        ] {
            match SchemaName::new(name) {
                Err(SchemaError::InvalidSchemaName { name: given, .. }) => {
                    assert_eq!(given, name)
                }
                other => panic!("{name:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn the_lock_key_never_changes() {
        // Processes of different builds must take the same lock: this value is part of the
        // on-disk contract, like the tables.
        let key = SchemaName::default().migration_lock_key();
        assert_eq!(key, SchemaName::default().migration_lock_key());
        assert_eq!(key, LOCK_KEY_OF_DEFAULT_SCHEMA);
        assert_ne!(key, SchemaName::new("other").unwrap().migration_lock_key());
    }

    const LOCK_KEY_OF_DEFAULT_SCHEMA: i64 = 6_023_491_171_360_947_352;
}
