//! The registry: every job definition under its name, validated once.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::Arc;

use crate::errors::{JobError, RegistryError};
use crate::ids::{is_valid_job_name, JobKind};
use crate::jobs::continuous::erased::{ContinuousEntry, ErasedContinuous};
use crate::jobs::continuous::Continuous;
use crate::jobs::debounce::erased::{DebounceEntry, ErasedDebounce};
use crate::jobs::debounce::Debounce;
use crate::jobs::task::erased::{ErasedTask, TaskEntry};
use crate::jobs::task::Task;
use crate::jobs::worker_pool::erased::{ErasedWorkerPool, WorkerPoolEntry};
use crate::jobs::worker_pool::WorkerPool;

/// Size limits applied to every request before anything is read or stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest state or event, as JSON bytes (default 128 KiB, Durable Objects' value limit).
    pub max_payload_bytes: usize,
    /// Longest instance id, event id or stop reason, in bytes (default 512).
    pub max_id_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 128 * 1024,
            max_id_bytes: 512,
        }
    }
}

#[derive(Clone)]
pub(crate) enum Entry {
    Continuous(Arc<dyn ErasedContinuous>),
    Debounce(Arc<dyn ErasedDebounce>),
    WorkerPool(Arc<dyn ErasedWorkerPool>),
    Task(Arc<dyn ErasedTask>),
}

struct Inner {
    /// By kind, then name: looked up on every request without building a key.
    entries: HashMap<JobKind, HashMap<String, Entry>>,
    by_type: HashMap<(JobKind, TypeId), Vec<String>>,
    limits: Limits,
}

/// Every job of an application, by kind and name. Cheap to clone; shared by the runtime,
/// its engines and clients.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut jobs: Vec<String> = self.jobs().map(|(k, n)| format!("{k}:{n}")).collect();
        jobs.sort();
        f.debug_struct("Registry").field("jobs", &jobs).finish()
    }
}

impl Registry {
    /// Starts a registry.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    pub(crate) fn entry(&self, kind: JobKind, name: &str) -> Result<&Entry, JobError> {
        self.inner
            .entries
            .get(&kind)
            .and_then(|by_name| by_name.get(name))
            .ok_or_else(|| JobError::JobNotFound {
                kind,
                name: name.to_string(),
            })
    }

    /// Fails with [`JobError::JobNotFound`] unless a job `name` of `kind` is registered.
    pub fn check_job(&self, kind: JobKind, name: &str) -> Result<(), JobError> {
        self.entry(kind, name).map(|_| ())
    }

    /// Every registered job, as kind and name.
    pub fn jobs(&self) -> impl Iterator<Item = (JobKind, &str)> {
        self.inner
            .entries
            .iter()
            .flat_map(|(kind, by_name)| by_name.keys().map(move |n| (*kind, n.as_str())))
    }

    /// The name under which the job type `J` of `kind` is registered.
    ///
    /// Fails when it is not registered, or registered under several names (then use the
    /// client's `*_named` accessors).
    pub fn name_of<J: 'static>(&self, kind: JobKind) -> Result<&str, JobError> {
        let not_found = || JobError::JobNotFound {
            kind,
            name: std::any::type_name::<J>().to_string(),
        };
        match self.inner.by_type.get(&(kind, TypeId::of::<J>())) {
            Some(names) if names.len() == 1 => Ok(&names[0]),
            Some(names) => Err(JobError::bad_request(format!(
                "{} is registered as several {kind} jobs ({}); name the one you mean",
                std::any::type_name::<J>(),
                names.join(", ")
            ))),
            None => Err(not_found()),
        }
    }

    /// The concurrency of a WorkerPool.
    pub fn concurrency(&self, name: &str) -> Result<u32, JobError> {
        match self.entry(JobKind::WorkerPool, name)? {
            Entry::WorkerPool(job) => Ok(job.config().concurrency),
            _ => Err(JobError::JobNotFound {
                kind: JobKind::WorkerPool,
                name: name.to_string(),
            }),
        }
    }

    /// The request size limits.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }
}

/// Collects job definitions; [`build`](Self::build) validates them.
#[derive(Default)]
pub struct RegistryBuilder {
    entries: Vec<(JobKind, String, TypeId, Result<Entry, String>)>,
    limits: Limits,
}

impl RegistryBuilder {
    /// Registers a Continuous job under `name`.
    pub fn continuous<J: Continuous>(mut self, name: impl Into<String>, job: J) -> Self {
        let entry = ContinuousEntry::new(job).map(|e| Entry::Continuous(Arc::new(e)));
        self.entries
            .push((JobKind::Continuous, name.into(), TypeId::of::<J>(), entry));
        self
    }

    /// Registers a Debounce job under `name`.
    pub fn debounce<J: Debounce>(mut self, name: impl Into<String>, job: J) -> Self {
        let entry = DebounceEntry::new(job).map(|e| Entry::Debounce(Arc::new(e)));
        self.entries
            .push((JobKind::Debounce, name.into(), TypeId::of::<J>(), entry));
        self
    }

    /// Registers a WorkerPool job under `name`.
    pub fn worker_pool<J: WorkerPool>(mut self, name: impl Into<String>, job: J) -> Self {
        let entry = WorkerPoolEntry::new(job).map(|e| Entry::WorkerPool(Arc::new(e)));
        self.entries
            .push((JobKind::WorkerPool, name.into(), TypeId::of::<J>(), entry));
        self
    }

    /// Registers a Task job under `name`.
    pub fn task<J: Task>(mut self, name: impl Into<String>, job: J) -> Self {
        let entry = TaskEntry::new(job).map(|e| Entry::Task(Arc::new(e)));
        self.entries
            .push((JobKind::Task, name.into(), TypeId::of::<J>(), entry));
        self
    }

    /// Replaces the request size limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Validates names (`[A-Za-z0-9_-]+`, unique per kind) and configurations.
    pub fn build(self) -> Result<Registry, RegistryError> {
        let mut entries: HashMap<JobKind, HashMap<String, Entry>> = HashMap::new();
        let mut by_type: HashMap<(JobKind, TypeId), Vec<String>> = HashMap::new();
        for (kind, name, type_id, entry) in self.entries {
            if !is_valid_job_name(&name) {
                return Err(RegistryError::InvalidName { name });
            }
            let entry = entry.map_err(|message| RegistryError::InvalidConfig {
                kind,
                name: name.clone(),
                message,
            })?;
            if entries
                .entry(kind)
                .or_default()
                .insert(name.clone(), entry)
                .is_some()
            {
                return Err(RegistryError::DuplicateName { kind, name });
            }
            by_type.entry((kind, type_id)).or_default().push(name);
        }
        Ok(Registry {
            inner: Arc::new(Inner {
                entries,
                by_type,
                limits: self.limits,
            }),
        })
    }
}
