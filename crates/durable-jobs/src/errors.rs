//! Error types, one per boundary.

use std::error::Error as StdError;

use serde::{Deserialize, Serialize};

use crate::ids::JobKind;
use crate::services::metadata::StatusName;

/// A hook that decides what an event does (a Debounce reducer, a Task's `on_event`) refused
/// it: the call fails with a validation error carrying this text and nothing is stored (in
/// an `add_many`, that event's result is the error, and the other events are added).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected(pub String);

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A storage operation failed. The step it belonged to was not committed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StorageError {
    message: String,
    #[source]
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl StorageError {
    /// An error with a message only.
    pub fn new(message: impl Into<String>) -> Self {
        StorageError {
            message: message.into(),
            source: None,
        }
    }

    /// An error wrapping the platform's own error.
    pub fn with_source(
        message: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        StorageError {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The message, without the source.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A registry could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// A job name is empty or holds characters outside `[A-Za-z0-9_-]`.
    #[error("invalid job name `{name}`: use one or more of A-Z a-z 0-9 _ -")]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// Two jobs of the same kind share a name.
    #[error("a {kind} job named `{name}` is already registered")]
    DuplicateName {
        /// The kind both jobs have.
        kind: JobKind,
        /// The name registered twice.
        name: String,
    },
    /// A job's configuration is unusable (a zero concurrency, a malformed cron...).
    #[error("invalid configuration for {kind} job `{name}`: {message}")]
    InvalidConfig {
        /// The job's kind.
        kind: JobKind,
        /// The job's name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// Every error a request can end with, on every transport.
///
/// It is serialisable so that a remote transport returns the same error a local call would.
/// New variants may be added, so a `match` needs a catch-all arm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "camelCase")]
#[non_exhaustive]
pub enum JobError {
    /// No job of this kind and name is registered.
    #[error("no {kind} job named `{name}` is registered")]
    JobNotFound {
        /// The kind asked for.
        kind: JobKind,
        /// The name asked for.
        name: String,
    },
    /// The instance does not exist (never started, or purged).
    #[error("{kind} instance `{key}` of job `{name}` does not exist")]
    InstanceNotFound {
        /// The job's kind.
        kind: JobKind,
        /// The job's name.
        name: String,
        /// The instance key (user id or pool index).
        key: String,
    },
    /// The operation does not apply in the instance's current state.
    #[error("cannot {operation}: the instance is {actual}, not {expected}")]
    InvalidState {
        /// The operation refused (`trigger`...).
        operation: String,
        /// The status the operation needs.
        expected: StatusName,
        /// The status the instance is in.
        actual: StatusName,
    },
    /// A value does not match the job's schema.
    #[error("invalid {schema} at `{path}`: {message}")]
    Validation {
        /// What was being decoded (`event`, `state`).
        schema: String,
        /// Where decoding failed (`.` for the root).
        path: String,
        /// What the decoder said.
        message: String,
    },
    /// User code failed.
    #[error("{kind} job `{name}` failed: {message}")]
    Execution {
        /// The job's kind.
        kind: JobKind,
        /// The job's name.
        name: String,
        /// The user error's text.
        message: String,
    },
    /// Storage failed; nothing of the step was committed.
    #[error("storage error: {message}")]
    Storage {
        /// What failed.
        message: String,
    },
    /// The request is malformed (bad JSON, wrong kind for the instance, unknown operation...).
    #[error("bad request: {message}")]
    BadRequest {
        /// What is wrong.
        message: String,
    },
    /// A payload or id is larger than the configured limit.
    #[error("{what} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// What was too large.
        what: String,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The runtime is shut down, or shutting down: it takes no more requests. Another
    /// process, or the runtime once restarted, can take the request.
    #[error("the runtime is shut down")]
    ShutDown,
    /// The transport failed to deliver the request or its answer.
    #[error("transport error (status {status}): {message}")]
    Client {
        /// A status code (HTTP-like; 0 when there is none).
        status: u16,
        /// What failed.
        message: String,
    },
}

impl JobError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        JobError::BadRequest {
            message: message.into(),
        }
    }

    /// An operation sent to an instance of another kind.
    pub(crate) fn wrong_kind(op: &crate::wire::Operation, kind: JobKind) -> Self {
        JobError::bad_request(format!(
            "operation {:?} does not apply to a {kind} job",
            op.kind()
        ))
    }

    /// The instance `id` does not exist (a trigger of an instance never created).
    pub(crate) fn instance_not_found(id: &crate::ids::InstanceId) -> Self {
        JobError::InstanceNotFound {
            kind: id.kind,
            name: id.name.clone(),
            key: id.key.clone(),
        }
    }

    pub(crate) fn corrupt(key: &str, err: impl std::fmt::Display) -> Self {
        JobError::Storage {
            message: format!("stored record `{key}` does not decode: {err}"),
        }
    }

    /// Whether retrying the same request later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            JobError::Storage { .. } | JobError::ShutDown | JobError::Client { .. }
        )
    }
}

impl From<StorageError> for JobError {
    fn from(e: StorageError) -> Self {
        let mut message = e.message.clone();
        let mut source = StdError::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        JobError::Storage { message }
    }
}
