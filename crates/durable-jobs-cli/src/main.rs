//! `durable-jobs`: look into a service's jobs and act on them through its admin API, or
//! read the database file of a stopped embedded runtime.

mod api;
mod file;
mod render;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use durable_jobs::inspect::{InstancePage, StatusCounts};
use durable_jobs::wire::{Operation, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use api::{encode, Api, TOKEN_VAR};

/// A failure, as the message shown to the user; the command exits with 1.
#[derive(Debug)]
pub struct Failure(pub String);

/// Look into durable jobs and act on them, through a service's admin API or, read-only,
/// in the database file of a stopped embedded runtime.
#[derive(Debug, Parser)]
#[command(
    name = "durable-jobs",
    version,
    after_help = "The admin token is read from the environment variable DURABLE_JOBS_TOKEN \
                  (never from a flag, which would show in the process list).\n\
                  Instance ids are kind:name:key, e.g. workerPool:emails:3 or \
                  continuous:refresh:user-42."
)]
struct Cli {
    /// Where the service's admin API is mounted.
    #[arg(
        long,
        global = true,
        env = "DURABLE_JOBS_URL",
        default_value = "http://127.0.0.1:8321/"
    )]
    url: String,

    /// Read this database file of a stopped embedded runtime instead (read-only; for
    /// jobs, instances, counts, show and dead-letters).
    #[arg(long, global = true, value_name = "PATH")]
    file: Option<PathBuf>,

    /// Print the JSON answers as they come, for scripts.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the jobs.
    Jobs,
    /// List a job's instances, a page at a time, in id order.
    Instances {
        /// The job's kind.
        #[arg(value_parser = KINDS)]
        kind: String,
        /// The job's name.
        name: String,
        /// Only instances in this status.
        #[arg(long, value_parser = STATUSES)]
        status: Option<String>,
        /// Only pool instances with dead letters.
        #[arg(long)]
        dead_letters: bool,
        /// Only Debounce instances with failed batches.
        #[arg(long)]
        failed_batches: bool,
        /// Only instances whose key starts with this.
        #[arg(long, value_name = "KEY_PREFIX")]
        prefix: Option<String>,
        /// Start after this key (the `more: --after` of the previous page).
        #[arg(long, value_name = "KEY")]
        after: Option<String>,
        /// Instances per page (1 to 500; 50 when not given).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Count a job's instances per status.
    Counts {
        /// The job's kind.
        #[arg(value_parser = KINDS)]
        kind: String,
        /// The job's name.
        name: String,
    },
    /// Show one instance: its status and, where it has one, its state.
    Show {
        /// The instance id, kind:name:key.
        id: String,
    },
    /// List a pool instance's dead letters, oldest first.
    DeadLetters {
        /// The instance id, workerPool:name:index.
        id: String,
        /// Start after this sequence number (the `more: --after` of the previous page).
        #[arg(long, value_name = "SEQ")]
        after: Option<u64>,
        /// Dead letters per page (1 to 500).
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: u32,
    },
    /// Put dead letters back in their instance's queue (all of them when no id is given).
    Replay {
        /// The instance id, workerPool:name:index.
        id: String,
        /// The dead letters' event ids.
        event_ids: Vec<String>,
    },
    /// Delete dead letters for good (all of them when no id is given).
    Discard {
        /// The instance id, workerPool:name:index.
        id: String,
        /// The dead letters' event ids.
        event_ids: Vec<String>,
        /// Do not ask for confirmation (needed when standard input is not a terminal).
        #[arg(long, short)]
        yes: bool,
    },
    /// Run a Continuous instance now, keeping its schedule, or a Task now, whatever its
    /// timer.
    Trigger {
        /// The instance id, continuous:name:key or task:name:key.
        id: String,
    },
    /// End a task: cancel its timer and delete its state.
    Terminate {
        /// The instance id, task:name:key.
        id: String,
        /// Do not ask for confirmation (needed when standard input is not a terminal).
        #[arg(long, short)]
        yes: bool,
    },
    /// Pause a pool instance: it keeps its queue and runs nothing until resumed.
    Pause {
        /// The instance id, workerPool:name:index.
        id: String,
    },
    /// Resume a paused pool instance.
    Resume {
        /// The instance id, workerPool:name:index.
        id: String,
    },
}

const KINDS: [&str; 4] = ["continuous", "debounce", "workerPool", "task"];
const STATUSES: [&str; 4] = ["active", "paused", "stopped", "error"];

impl Command {
    /// The name of a command that acts on a service, which a file cannot do.
    fn action(&self) -> Option<&'static str> {
        match self {
            Command::Replay { .. } => Some("replay"),
            Command::Discard { .. } => Some("discard"),
            Command::Trigger { .. } => Some("trigger"),
            Command::Terminate { .. } => Some("terminate"),
            Command::Pause { .. } => Some("pause"),
            Command::Resume { .. } => Some("resume"),
            _ => None,
        }
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if cli.file.is_some() {
        // Usage errors, reported (and exited with 2) as clap reports its own.
        let mut command = Cli::command();
        if matches.value_source("url") == Some(ValueSource::CommandLine) {
            command
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    "--url and --file read from two places: give one",
                )
                .exit();
        }
        if let Some(action) = cli.command.action() {
            command
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("`{action}` acts on a running service: it cannot be used with --file"),
                )
                .exit();
        }
    }
    let result = match &cli.file {
        Some(path) => file::run(path, &cli.command, cli.json),
        None => remote(&cli),
    };
    match result.and_then(|out| print(&out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `out` to standard output; a closed pipe (`| head`) is no failure.
fn print(out: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure(format!("cannot write the output: {e}")))
        }
        _ => Ok(()),
    }
}

/// The API's JSON as it came, on one line.
fn raw(body: String) -> String {
    format!("{}\n", body.trim_end())
}

fn parse<T: for<'de> Deserialize<'de>>(body: &str) -> Result<T, Failure> {
    serde_json::from_str(body)
        .map_err(|e| Failure(format!("the admin API answered something unexpected: {e}")))
}

/// A registered job, as `/api/jobs` lists it.
#[derive(Deserialize)]
struct Job {
    kind: String,
    name: String,
}

/// Runs `cli.command` against the service's admin API; answers what to print.
fn remote(cli: &Cli) -> Result<String, Failure> {
    let token = std::env::var(TOKEN_VAR).ok();
    let api = Api::new(&cli.url, token)?;
    let json = cli.json;
    match &cli.command {
        Command::Jobs => {
            let body = api.get("/api/jobs", &[])?;
            if json {
                return Ok(raw(body));
            }
            let jobs: Vec<Job> = parse(&body)?;
            if jobs.is_empty() {
                return Ok("no jobs\n".into());
            }
            Ok(render::jobs(
                jobs.iter().map(|j| (j.kind.as_str(), j.name.as_str())),
            ))
        }
        Command::Instances {
            kind,
            name,
            status,
            dead_letters,
            failed_batches,
            prefix,
            after,
            limit,
        } => {
            let mut params = Vec::new();
            if let Some(status) = status {
                params.push(("status", status.clone()));
            }
            if *dead_letters {
                params.push(("deadLetters", "true".to_string()));
            }
            if *failed_batches {
                params.push(("failedBatches", "true".to_string()));
            }
            if let Some(prefix) = prefix {
                params.push(("prefix", prefix.clone()));
            }
            if let Some(after) = after {
                params.push(("after", after.clone()));
            }
            if let Some(limit) = limit {
                params.push(("limit", limit.to_string()));
            }
            let path = format!("/api/jobs/{}/{}/instances", encode(kind), encode(name));
            let body = api.get(&path, &params)?;
            if json {
                return Ok(raw(body));
            }
            Ok(render::instances(&parse::<InstancePage>(&body)?))
        }
        Command::Counts { kind, name } => {
            let path = format!("/api/jobs/{}/{}/counts", encode(kind), encode(name));
            let body = api.get(&path, &[])?;
            if json {
                return Ok(raw(body));
            }
            Ok(render::counts(&parse::<StatusCounts>(&body)?))
        }
        Command::Show { id } => {
            let body = api.get(&format!("/api/instances/{}", encode(id)), &[])?;
            if json {
                return Ok(raw(body));
            }
            show(&parse::<Value>(&body)?)
        }
        Command::DeadLetters { id, after, limit } => {
            let mut params = vec![("limit", limit.to_string())];
            if let Some(after) = after {
                params.push(("after", after.to_string()));
            }
            let path = format!("/api/instances/{}/dead-letters", encode(id));
            let body = api.get(&path, &params)?;
            if json {
                return Ok(raw(body));
            }
            match parse::<Response>(&body)? {
                Response::DeadLetters { items } => Ok(render::dead_letters(&items, *limit)),
                other => Err(unexpected(&other)),
            }
        }
        Command::Replay { id, event_ids } => {
            let op = Operation::WorkerPoolReplay {
                event_ids: ids(event_ids),
            };
            act(&api, id, &op, json)
        }
        Command::Discard { id, event_ids, yes } => {
            if !yes {
                confirm_discard(id, event_ids)?;
            }
            let op = Operation::WorkerPoolDiscard {
                event_ids: ids(event_ids),
            };
            act(&api, id, &op, json)
        }
        Command::Trigger { id } => act(&api, id, &trigger_of(id)?, json),
        Command::Terminate { id, yes } => {
            if !id.starts_with("task:") {
                return Err(Failure(format!(
                    "{id}: only task instances can be terminated"
                )));
            }
            if !yes {
                confirm(
                    &format!("Terminate {id}? Its timer is cancelled and its state deleted."),
                    "terminate deletes the task's state for good",
                    "nothing terminated",
                )?;
            }
            act(&api, id, &Operation::TaskTerminate, json)
        }
        Command::Pause { id } => act(&api, id, &Operation::WorkerPoolPause, json),
        Command::Resume { id } => act(&api, id, &Operation::WorkerPoolResume, json),
    }
}

/// The trigger of the instance `id`'s kind: only Continuous instances and Tasks have one.
fn trigger_of(id: &str) -> Result<Operation, Failure> {
    match id.split(':').next() {
        Some("continuous") => Ok(Operation::ContinuousTrigger),
        Some("task") => Ok(Operation::TaskTrigger),
        _ => Err(Failure(format!(
            "{id}: only continuous and task instances can be triggered"
        ))),
    }
}

/// Event ids as an action takes them: none given means all.
fn ids(event_ids: &[String]) -> Option<Vec<String>> {
    (!event_ids.is_empty()).then(|| event_ids.to_vec())
}

fn unexpected(response: &Response) -> Failure {
    Failure(format!(
        "the admin API answered something unexpected: {}",
        json!(response)
    ))
}

/// Sends an operator's action to one instance; answers what was done.
fn act(api: &Api, id: &str, op: &Operation, json: bool) -> Result<String, Failure> {
    let body =
        serde_json::to_value(op).map_err(|e| Failure(format!("cannot encode the action: {e}")))?;
    let answer = api.post(&format!("/api/instances/{}/actions", encode(id)), &body)?;
    if json {
        return Ok(raw(answer));
    }
    let done = match parse::<Response>(&answer)? {
        Response::DeadLettersChanged { count } => {
            let verb = match op {
                Operation::WorkerPoolDiscard { .. } => "discarded",
                _ => "replayed",
            };
            let plural = if count == 1 { "" } else { "s" };
            format!("{verb} {count} dead letter{plural} of {id}")
        }
        Response::Triggered => format!("triggered {id}: a run is due now"),
        Response::Terminated { terminated: true } => format!("terminated {id}"),
        Response::Terminated { terminated: false } => format!("{id} did not exist"),
        Response::Paused => format!("paused {id}"),
        Response::Resumed => format!("resumed {id}"),
        other => return Err(unexpected(&other)),
    };
    Ok(format!("{done}\n"))
}

/// Asks before discarding on a terminal; refuses when nobody can be asked.
fn confirm_discard(id: &str, event_ids: &[String]) -> Result<(), Failure> {
    let what = match event_ids.len() {
        0 => "all dead letters".to_string(),
        1 => "1 dead letter".to_string(),
        n => format!("{n} dead letters"),
    };
    confirm(
        &format!("Discard {what} of {id} for good?"),
        "discard deletes dead letters for good",
        "nothing discarded",
    )
}

/// Asks `question` on a terminal and goes on only on a yes; without a terminal, refuses,
/// saying that the action (`why`) needs `--yes`.
fn confirm(question: &str, why: &str, declined: &str) -> Result<(), Failure> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Failure(format!(
            "{why}: pass --yes to confirm when standard input is not a terminal"
        )));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Failure(format!("cannot read the answer: {e}")))?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(Failure(declined.into())),
    }
}

/// One instance as the API shows it: its status's fields, then its state.
fn show(view: &Value) -> Result<String, Failure> {
    let id = &view["id"];
    let id = format!(
        "{}:{}:{}",
        id["kind"].as_str().unwrap_or("?"),
        id["name"].as_str().unwrap_or("?"),
        id["key"].as_str().unwrap_or("?")
    );
    let mut table = render::Table::plain();
    table.row(vec!["id".into(), id.clone()]);
    // The status answer's own status: null when the instance does not exist.
    let status = &view["status"]["status"];
    if status.is_null() {
        return Err(Failure(format!("no instance {id}")));
    }
    render::fields(&mut table, status, &[]);
    Ok(format!(
        "{}{}",
        table.render(),
        render::state(&view["state"])
    ))
}
