//! One runtime per database file, across processes.
//!
//! SQLite's exclusive locking mode would give that, but it also keeps every other
//! connection out, the checkpoint thread's included. So the runtime holds an advisory lock
//! on a file beside the database, `<database>-lock`, for as long as it is open; the
//! operating system releases it when the process ends, however it ends. The file itself
//! stays: removing it could let a second runtime lock a new file while the first still
//! holds the old one.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::OpenError;

/// The path of the lock file of the database at `database`.
pub(crate) fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-lock");
    PathBuf::from(name)
}

/// The runtime's hold on its database file; released when dropped.
pub(crate) struct ProcessLock {
    _file: File,
}

impl ProcessLock {
    /// Takes the lock of the database at `database`, or fails with [`OpenError::Locked`]
    /// if another runtime holds it.
    pub fn acquire(database: &Path) -> Result<Self, OpenError> {
        let path = lock_path(database);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| OpenError::Io {
                message: format!("{}: {e}", path.display()),
            })?;
        match file.try_lock() {
            Ok(()) => Ok(ProcessLock { _file: file }),
            Err(e) => Err(refusal(database, &path, e)),
        }
    }
}

/// Fails if a runtime holds the lock of the database at `database`; a reader calls it
/// before opening the file. A missing lock file means no runtime has it open.
pub(crate) fn check_unlocked(database: &Path) -> Result<(), OpenError> {
    let path = lock_path(database);
    let Ok(file) = File::open(&path) else {
        return Ok(());
    };
    file.try_lock_shared()
        .map_err(|e| refusal(database, &path, e))
}

fn refusal(database: &Path, lock: &Path, e: TryLockError) -> OpenError {
    match e {
        TryLockError::WouldBlock => OpenError::Locked {
            path: database.display().to_string(),
        },
        TryLockError::Error(e) => OpenError::Io {
            message: format!("cannot lock {}: {e}", lock.display()),
        },
    }
}
