//! Errors opening the runtime.

/// The runtime could not open its database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Another process (or runtime) has the file open.
    #[error("{path} is in use by another durable-jobs runtime")]
    Locked {
        /// The file.
        path: String,
    },
    /// The file is not an SQLite database, or is damaged.
    #[error("{path} is not a durable-jobs database (not SQLite, or damaged): {message}")]
    Corrupt {
        /// The file.
        path: String,
        /// What SQLite said.
        message: String,
    },
    /// The file is an SQLite database of another application.
    #[error("{path} is an SQLite database of another application; refusing to use it")]
    Foreign {
        /// The file.
        path: String,
    },
    /// The file was written by a newer version of durable-jobs.
    #[error("{path} has schema version {found}; this version supports up to {supported}")]
    Version {
        /// The file.
        path: String,
        /// Its version.
        found: i32,
        /// The newest this build reads.
        supported: i32,
    },
    /// The file or its directory cannot be read or written.
    #[error("cannot open the database: {message}")]
    Io {
        /// What failed.
        message: String,
    },
    /// The registry is not usable.
    #[error("invalid registry: {message}")]
    Registry {
        /// What is wrong.
        message: String,
    },
}

impl OpenError {
    pub(crate) fn from_sqlite(path: String, e: rusqlite::Error) -> Self {
        use rusqlite::ffi::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => {
                OpenError::Locked { path }
            }
            Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
                OpenError::Corrupt {
                    path,
                    message: e.to_string(),
                }
            }
            _ => OpenError::Io {
                message: format!("{path}: {e}"),
            },
        }
    }
}
