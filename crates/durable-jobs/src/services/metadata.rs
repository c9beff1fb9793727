//! Per-instance metadata: what the instance is and what state it is in.
//!
//! Stored under one key so that an alarm learns the instance's kind and name with one read:
//! a Durable Object cannot learn its own name, so the engine keeps it here.

use serde::{Deserialize, Serialize};

use crate::ids::InstanceId;

/// The storage key of the metadata record.
pub const META_KEY: &str = "meta";

/// An instance's lifecycle status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum Status {
    /// Running normally.
    Active,
    /// Paused by a client (WorkerPool).
    #[serde(rename_all = "camelCase")]
    Paused {
        /// When.
        paused_at: i64,
    },
    /// Stopped; its data is purged after the retention period.
    #[serde(rename_all = "camelCase")]
    Stopped {
        /// When.
        stopped_at: i64,
        /// Why, if given.
        reason: Option<String>,
    },
    /// The last run or flush failed after all its attempts.
    #[serde(rename_all = "camelCase")]
    Error {
        /// When.
        error_at: i64,
        /// The error's text.
        error: String,
    },
}

/// A status without its details, as errors and filters name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StatusName {
    /// [`Status::Active`].
    Active,
    /// [`Status::Paused`].
    Paused,
    /// [`Status::Stopped`].
    Stopped,
    /// [`Status::Error`].
    Error,
}

impl StatusName {
    /// The name as text: `active`, `paused`, `stopped`, `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusName::Active => "active",
            StatusName::Paused => "paused",
            StatusName::Stopped => "stopped",
            StatusName::Error => "error",
        }
    }
}

impl std::fmt::Display for StatusName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Status {
    /// The status without its details.
    pub fn name(&self) -> StatusName {
        match self {
            Status::Active => StatusName::Active,
            Status::Paused { .. } => StatusName::Paused,
            Status::Stopped { .. } => StatusName::Stopped,
            Status::Error { .. } => StatusName::Error,
        }
    }

    /// Whether the instance is stopped.
    pub fn is_stopped(&self) -> bool {
        matches!(self, Status::Stopped { .. })
    }
}

/// The metadata record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Kind, name and key of the instance.
    pub id: InstanceId,
    /// When it was first created.
    pub created_at: i64,
    /// When its status last changed.
    pub updated_at: i64,
    /// Its status.
    pub status: Status,
    /// Bumped each time a stopped instance is started again, so that the late result of a
    /// run from before the stop is recognised and discarded.
    pub epoch: u64,
    /// When the instance's data is to be deleted, if it is.
    pub purge_at: Option<i64>,
    /// When the earliest of its remembered event ids expires: the instance wakes then to
    /// sweep them, even if it has nothing else to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep_at: Option<i64>,
}

impl Metadata {
    /// Fresh metadata for a new instance.
    pub fn new(id: InstanceId, now: i64) -> Self {
        Metadata {
            id,
            created_at: now,
            updated_at: now,
            status: Status::Active,
            epoch: 0,
            purge_at: None,
            sweep_at: None,
        }
    }

    /// Changes the status and the update time.
    pub fn set_status(&mut self, status: Status, now: i64) {
        self.status = status;
        self.updated_at = now;
    }
}
