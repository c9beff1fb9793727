//! The read-only commands on a stopped runtime's database file. `--json` prints what the
//! admin API would for the same question, except `show`, which prints the stored records.

use std::path::Path;

use durable_jobs::inspect::{InstanceQuery, DEFAULT_PAGE};
use durable_jobs::wire::Response;
use durable_jobs::{InstanceId, JobError, JobKind, StatusName};
use durable_jobs_local::{FileInspector, OpenError};
use serde::Serialize;
use serde_json::json;

use crate::{render, Command, Failure};

/// Dead letters one page holds at most, as in the admin API.
const MAX_DEAD_LETTERS: u32 = 500;

fn failed(e: JobError) -> Failure {
    Failure(e.to_string())
}

fn to_json(value: &impl Serialize) -> Result<String, Failure> {
    serde_json::to_string(value)
        .map(|text| format!("{text}\n"))
        .map_err(|e| Failure(format!("cannot encode the answer: {e}")))
}

fn kind(text: &str) -> Result<JobKind, Failure> {
    text.parse().map_err(failed)
}

fn instance_id(text: &str) -> Result<InstanceId, Failure> {
    text.parse().map_err(failed)
}

/// Runs a read-only `command` on the file at `path`; answers what to print.
pub fn run(path: &Path, command: &Command, json: bool) -> Result<String, Failure> {
    let file = FileInspector::open(path).map_err(|e| match e {
        OpenError::Locked { .. } => Failure(format!(
            "{e}: while it runs, ask its admin API (--url) instead"
        )),
        other => Failure(other.to_string()),
    })?;
    match command {
        Command::Jobs => {
            let jobs = file.jobs().map_err(failed)?;
            if json {
                let list: Vec<_> = jobs
                    .iter()
                    .map(|(kind, name)| json!({ "kind": kind, "name": name }))
                    .collect();
                return to_json(&list);
            }
            if jobs.is_empty() {
                return Ok("no jobs\n".into());
            }
            Ok(render::jobs(
                jobs.iter()
                    .map(|(kind, name)| (kind.as_str(), name.as_str())),
            ))
        }
        Command::Instances {
            kind: job_kind,
            name,
            status,
            dead_letters,
            failed_batches,
            prefix,
            after,
            limit,
        } => {
            let status = status
                .as_deref()
                .map(|s| serde_json::from_value::<StatusName>(json!(s)))
                .transpose()
                .map_err(|e| Failure(format!("bad status: {e}")))?;
            let query = InstanceQuery {
                kind: kind(job_kind)?,
                job: name.clone(),
                status,
                has_dead_letters: *dead_letters,
                has_failed_batches: *failed_batches,
                key_prefix: prefix.clone().unwrap_or_default(),
                after: after.clone(),
                limit: limit.unwrap_or(DEFAULT_PAGE),
            };
            let page = file.instances(&query).map_err(failed)?;
            if json {
                return to_json(&page);
            }
            Ok(render::instances(&page))
        }
        Command::Counts {
            kind: job_kind,
            name,
        } => {
            let counts = file.counts(kind(job_kind)?, name).map_err(failed)?;
            if json {
                return to_json(&counts);
            }
            Ok(render::counts(&counts))
        }
        Command::Show { id } => {
            let id = instance_id(id)?;
            let Some(stored) = file.instance(&id).map_err(failed)? else {
                return Err(Failure(format!("no instance {id} in {}", path.display())));
            };
            if json {
                return to_json(&stored);
            }
            let mut table = render::Table::plain();
            table.row(vec!["id".into(), id.to_string()]);
            render::fields(&mut table, &stored.metadata, &["id"]);
            table.row(vec!["alarm".into(), render::optional_time(stored.alarm)]);
            let mut out = table.render();
            if let Some(record) = &stored.record {
                let mut table = render::Table::plain();
                render::fields(&mut table, record, &[]);
                out.push_str(&format!("{} record:\n{}", id.kind, table.render()));
            }
            if let Some(state) = &stored.state {
                out.push_str(&render::state(state));
            }
            Ok(out)
        }
        Command::DeadLetters { id, after, limit } => {
            if *limit == 0 || *limit > MAX_DEAD_LETTERS {
                return Err(Failure(format!(
                    "a page holds 1 to {MAX_DEAD_LETTERS} dead letters, not {limit}"
                )));
            }
            let id = instance_id(id)?;
            let items = file
                .dead_letters(&id, *after, *limit as usize)
                .map_err(failed)?;
            if json {
                return to_json(&Response::DeadLetters { items });
            }
            Ok(render::dead_letters(&items, *limit))
        }
        Command::Replay { .. }
        | Command::Discard { .. }
        | Command::Trigger { .. }
        | Command::Terminate { .. }
        | Command::Pause { .. }
        | Command::Resume { .. } => Err(Failure(
            "actions need a running service: use --url, not --file".into(),
        )),
    }
}
