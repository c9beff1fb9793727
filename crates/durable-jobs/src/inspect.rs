//! What operators ask of a runtime beyond one instance's own operations: which instances a
//! job has, in which status, and how many of each.
//!
//! A runtime finds the instances (it alone knows where they are stored) and hands each
//! one's metadata and kind record to [`summarize`]; the filters and the page shape are the
//! same on every runtime. None of this runs on the hot path: a runtime walks its stored
//! instances in id order, a page at a time.

use serde::{Deserialize, Serialize};

use crate::engine::KindRecord;
use crate::errors::JobError;
use crate::ids::{InstanceId, JobKind};
use crate::jobs::{continuous, debounce, task, worker_pool};
use crate::services::codec;
use crate::services::metadata::{Metadata, Status, StatusName, META_KEY};

/// The most instances one page holds.
pub const MAX_PAGE: usize = 500;

/// The page size when a query does not say.
pub const DEFAULT_PAGE: usize = 50;

/// Which instances of one job to list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceQuery {
    /// The job's kind.
    pub kind: JobKind,
    /// The job's name.
    pub job: String,
    /// Only instances in this status.
    #[serde(default)]
    pub status: Option<StatusName>,
    /// Only pool instances with dead letters.
    #[serde(default)]
    pub has_dead_letters: bool,
    /// Only Debounce instances with failed batches.
    #[serde(default)]
    pub has_failed_batches: bool,
    /// Only instances whose key starts with this.
    #[serde(default)]
    pub key_prefix: String,
    /// The cursor: only instances whose key comes after this one (a page's `next`).
    #[serde(default)]
    pub after: Option<String>,
    /// At most this many (1 to [`MAX_PAGE`]).
    #[serde(default = "default_page")]
    pub limit: usize,
}

fn default_page() -> usize {
    DEFAULT_PAGE
}

impl InstanceQuery {
    /// Every instance of the job `kind`/`job`, a default page at a time.
    pub fn all(kind: JobKind, job: impl Into<String>) -> Self {
        InstanceQuery {
            kind,
            job: job.into(),
            status: None,
            has_dead_letters: false,
            has_failed_batches: false,
            key_prefix: String::new(),
            after: None,
            limit: DEFAULT_PAGE,
        }
    }

    /// Fails on a limit outside 1 to [`MAX_PAGE`].
    pub fn check(&self) -> Result<(), JobError> {
        if self.limit == 0 || self.limit > MAX_PAGE {
            return Err(JobError::bad_request(format!(
                "a page holds 1 to {MAX_PAGE} instances, not {}",
                self.limit
            )));
        }
        Ok(())
    }

    /// The stored id prefix of the job's instances: `{kind}:{job}:`.
    pub fn job_prefix(&self) -> String {
        format!("{}:{}:", self.kind, self.job)
    }

    /// The stored id to start after: the cursor's, else none (start at the key prefix).
    pub fn start_after(&self) -> Option<String> {
        self.after
            .as_ref()
            .map(|key| format!("{}{key}", self.job_prefix()))
    }

    /// The stored id prefix every listed instance has.
    pub fn id_prefix(&self) -> String {
        format!("{}{}", self.job_prefix(), self.key_prefix)
    }

    /// Whether `summary` passes the filters.
    pub fn matches(&self, summary: &InstanceSummary) -> bool {
        self.status.is_none_or(|s| summary.status.name() == s)
            && (!self.has_dead_letters || summary.dead_letters > 0)
            && (!self.has_failed_batches || summary.failed_batches > 0)
    }
}

/// One instance, as a list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSummary {
    /// Its id.
    pub id: InstanceId,
    /// Its status.
    pub status: Status,
    /// When it was created (ms since the epoch).
    pub created_at: i64,
    /// When its status last changed.
    pub updated_at: i64,
    /// Events waiting: a pool's queue and delayed events, a Debounce instance's open
    /// batch.
    pub pending: u64,
    /// A pool instance's dead letters.
    pub dead_letters: u64,
    /// A Debounce instance's failed batches.
    pub failed_batches: u64,
}

/// A page of instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstancePage {
    /// In id order.
    pub instances: Vec<InstanceSummary>,
    /// The cursor of the next page (`InstanceQuery::after`), if there may be more.
    pub next: Option<String>,
}

/// How many instances of a job are in each status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusCounts {
    /// Running normally.
    pub active: u64,
    /// Paused.
    pub paused: u64,
    /// Stopped, not purged yet.
    pub stopped: u64,
    /// Failed after all attempts.
    pub error: u64,
    /// Pool instances with dead letters.
    pub with_dead_letters: u64,
    /// Debounce instances with failed batches.
    pub with_failed_batches: u64,
}

impl StatusCounts {
    /// Counts `summary`.
    pub fn add(&mut self, summary: &InstanceSummary) {
        let count = match summary.status.name() {
            StatusName::Active => &mut self.active,
            StatusName::Paused => &mut self.paused,
            StatusName::Stopped => &mut self.stopped,
            StatusName::Error => &mut self.error,
        };
        *count += 1;
        self.with_dead_letters += u64::from(summary.dead_letters > 0);
        self.with_failed_batches += u64::from(summary.failed_batches > 0);
    }

    /// All instances counted.
    pub fn total(&self) -> u64 {
        self.active + self.paused + self.stopped + self.error
    }
}

/// The keys a runtime reads of each instance to summarize it: the metadata, then the kind's
/// record.
pub fn summary_keys(kind: JobKind) -> [&'static str; 2] {
    let record = match kind {
        JobKind::Continuous => <continuous::Record as KindRecord>::KEY,
        JobKind::Debounce => <debounce::Record as KindRecord>::KEY,
        JobKind::WorkerPool => <worker_pool::PoolRecord as KindRecord>::KEY,
        JobKind::Task => <task::Record as KindRecord>::KEY,
    };
    [META_KEY, record]
}

/// Summarizes an instance from the values under [`summary_keys`]; `None` without metadata
/// (nothing lives there any more).
pub fn summarize(
    meta: Option<&[u8]>,
    record: Option<&[u8]>,
) -> Result<Option<InstanceSummary>, JobError> {
    let Some(meta) = meta
        .map(|m| codec::decode::<Metadata>(META_KEY, m))
        .transpose()?
    else {
        return Ok(None);
    };
    let mut summary = InstanceSummary {
        status: meta.status,
        created_at: meta.created_at,
        updated_at: meta.updated_at,
        pending: 0,
        dead_letters: 0,
        failed_batches: 0,
        id: meta.id,
    };
    let [_, key] = summary_keys(summary.id.kind);
    match summary.id.kind {
        JobKind::Continuous | JobKind::Task => {}
        JobKind::Debounce => {
            if let Some(r) = record
                .map(|r| codec::decode::<debounce::Record>(key, r))
                .transpose()?
            {
                summary.pending = r.batch.as_ref().map_or(0, |b| u64::from(b.event_count));
                summary.failed_batches = u64::from(r.failed_count);
            }
        }
        JobKind::WorkerPool => {
            if let Some(r) = record
                .map(|r| codec::decode::<worker_pool::PoolRecord>(key, r))
                .transpose()?
            {
                summary.pending = r.waiting();
                summary.dead_letters = r.dead;
            }
        }
    }
    Ok(Some(summary))
}

/// Stored instances as a runtime reads them: each id with its values under
/// [`summary_keys`].
pub type RawInstances = Vec<(String, Vec<Option<Vec<u8>>>)>;

/// Instances a runtime reads at a time while it looks for a page.
const FETCH: usize = 100;

/// Instances one query looks at, at most: a filter that matches few of many instances
/// returns a short page (with its cursor) instead of walking them all at once.
pub const SCAN_LIMIT: usize = 10 * MAX_PAGE;

/// Finds a page of `query` through `fetch(prefix, after, limit)`, which returns up to
/// `limit` stored instances whose id starts with `prefix`, after the id `after`, in id
/// order, with their values under [`summary_keys`].
pub async fn page<F, Fut>(query: &InstanceQuery, mut fetch: F) -> Result<InstancePage, JobError>
where
    F: FnMut(String, Option<String>, usize) -> Fut,
    Fut: std::future::Future<Output = Result<RawInstances, crate::StorageError>>,
{
    query.check()?;
    let job_prefix = query.job_prefix();
    let mut after = query.start_after();
    let mut page = InstancePage {
        instances: Vec::new(),
        next: None,
    };
    let mut scanned = 0;
    loop {
        let batch = fetch(query.id_prefix(), after.clone(), FETCH).await?;
        let exhausted = batch.len() < FETCH;
        for (id, values) in batch {
            scanned += 1;
            let key = id.strip_prefix(&job_prefix).unwrap_or(&id).to_string();
            after = Some(id);
            let summary = summarize(values[0].as_deref(), values[1].as_deref())?;
            if let Some(summary) = summary.filter(|s| query.matches(s)) {
                page.instances.push(summary);
            }
            if page.instances.len() == query.limit || scanned == SCAN_LIMIT {
                page.next = Some(key);
                return Ok(page);
            }
        }
        if exhausted {
            return Ok(page);
        }
    }
}

/// Counts the instances of the job `kind`/`job` per status through `fetch` (see
/// [`page`]). It reads every instance of the job: an operator's query, not one for a hot
/// path.
pub async fn counts<F, Fut>(
    kind: JobKind,
    job: &str,
    mut fetch: F,
) -> Result<StatusCounts, JobError>
where
    F: FnMut(String, Option<String>, usize) -> Fut,
    Fut: std::future::Future<Output = Result<RawInstances, crate::StorageError>>,
{
    let mut query = InstanceQuery::all(kind, job);
    query.limit = MAX_PAGE;
    let mut counts = StatusCounts::default();
    loop {
        let found = page(&query, &mut fetch).await?;
        for summary in &found.instances {
            counts.add(summary);
        }
        match found.next {
            Some(next) => query.after = Some(next),
            None => return Ok(counts),
        }
    }
}
