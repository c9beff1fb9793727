//! Job kinds, job names and instance ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::errors::JobError;

/// The four kinds of job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum JobKind {
    /// Per-id recurring work with persistent state.
    #[serde(rename = "continuous")]
    Continuous,
    /// Per-id event coalescing, flushed after a delay or a count.
    #[serde(rename = "debounce")]
    Debounce,
    /// A named queue served by N sequential instances.
    #[serde(rename = "workerPool")]
    WorkerPool,
    /// A per-id state machine driven by events, with a timer of its own.
    #[serde(rename = "task")]
    Task,
}

impl JobKind {
    /// The kind as it appears in instance ids and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Continuous => "continuous",
            JobKind::Debounce => "debounce",
            JobKind::WorkerPool => "workerPool",
            JobKind::Task => "task",
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobKind {
    type Err = JobError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "continuous" => Ok(JobKind::Continuous),
            "debounce" => Ok(JobKind::Debounce),
            "workerPool" => Ok(JobKind::WorkerPool),
            "task" => Ok(JobKind::Task),
            other => Err(JobError::BadRequest {
                message: format!("unknown job kind `{other}`"),
            }),
        }
    }
}

/// Whether `name` is a valid job name: one or more of `[A-Za-z0-9_-]`.
///
/// Names never contain `:`, so an instance id `{kind}:{name}:{key}` always splits back
/// into its parts, whatever the key holds.
pub fn is_valid_job_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The address of one job instance: `{kind}:{name}:{key}`.
///
/// For Continuous and Debounce the key is the user's id (any text, `:` included);
/// for a WorkerPool it is the instance index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceId {
    /// The job kind.
    pub kind: JobKind,
    /// The registered job name.
    pub name: String,
    /// The user's id, or the WorkerPool instance index.
    pub key: String,
}

impl InstanceId {
    /// Builds an instance id.
    pub fn new(kind: JobKind, name: impl Into<String>, key: impl Into<String>) -> Self {
        InstanceId {
            kind,
            name: name.into(),
            key: key.into(),
        }
    }

    /// The WorkerPool instance index, when this is a WorkerPool instance.
    pub fn pool_index(&self) -> Option<u32> {
        match self.kind {
            JobKind::WorkerPool => self.key.parse().ok(),
            _ => None,
        }
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.name, self.key)
    }
}

impl FromStr for InstanceId {
    type Err = JobError;

    /// Parses `{kind}:{name}:{key}`; the key is everything after the second `:`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || JobError::BadRequest {
            message: format!("`{s}` is not an instance id of the form kind:name:key"),
        };
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        let (name, key) = rest.split_once(':').ok_or_else(bad)?;
        if !is_valid_job_name(name) {
            return Err(bad());
        }
        Ok(InstanceId::new(kind.parse()?, name, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(is_valid_job_name("email_sender-2"));
        assert!(!is_valid_job_name(""));
        assert!(!is_valid_job_name("a:b"));
        assert!(!is_valid_job_name("héllo"));
        assert!(!is_valid_job_name("a b"));
    }

    #[test]
    fn ids_with_colons_round_trip() {
        let id = InstanceId::new(JobKind::Debounce, "hooks", "tenant:42:contact");
        let text = id.to_string();
        assert_eq!(text, "debounce:hooks:tenant:42:contact");
        assert_eq!(text.parse::<InstanceId>().unwrap(), id);
        let empty = InstanceId::new(JobKind::Continuous, "x", "");
        assert_eq!(empty.to_string().parse::<InstanceId>().unwrap(), empty);
    }

    #[test]
    fn malformed_ids_are_rejected() {
        assert!("continuous".parse::<InstanceId>().is_err());
        assert!("nope:x:y".parse::<InstanceId>().is_err());
        assert!("continuous:bad name:y".parse::<InstanceId>().is_err());
    }
}
