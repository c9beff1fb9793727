//! Several processes on one schema, killed with SIGKILL at random moments and started
//! again, while each makes WorkerPool enqueues, Debounce adds and Continuous starts and
//! triggers; then the survivors drain, and what happened is checked:
//!
//! - every acknowledged call ran: each enqueue to a successful end, each add in a flush
//!   that ended successfully, each start in a run, each trigger in a run that ended after
//!   it was sent;
//! - nothing ran again after its completion committed (see `reruns_after_commit`);
//! - no two executions of one instance overlapped in time; an execution cut by a kill is
//!   taken to last until the kill;
//! - every event and batch completed exactly once, and a Continuous run's state and run
//!   count were never committed apart.
//!
//! Each child records its executions through a connection of its own (see `children`),
//! and its acknowledged calls in a file, so what a killed child did before it died is
//! known. The parent keeps the kill times.
//!
//! `DJ_PG_KILL_SECONDS` sets how long processes are killed (20 s by default);
//! `DJ_PG_KILL_SEED` replays a kill schedule (the seed is printed).

mod children;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use children::{
    ack_lines, commands, completions, create_log_tables, done_event_ids, executions, hash, now_us,
    reply, Acks, Child, ChildConfig, ChildEnv, Completion, Execution, Recorder, Rng,
};
use durable_jobs::{
    Continuous, ContinuousContext, Debounce, DebounceContext, EnqueueRequest, JobsClient, Registry,
    Rejected, RetryPolicy, Schedule, WorkerPool, WorkerPoolContext,
};
use durable_jobs_postgres::testing::{unique_name, TestServer};
use durable_jobs_postgres::{PostgresRuntime, PostgresTransport};
use tokio::sync::mpsc::error::TryRecvError;

/// Processes running at any time.
const PROCESSES: usize = 3;
/// Short, so that the work of a killed process is taken over soon.
const LEASE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(200);
const DEBOUNCE_KEYS: u64 = 5;
/// The test's entry point for the children.
const CHILD_TEST: &str = "kill_child";
const ROLE: &str = "kill";

// --- The jobs -------------------------------------------------------------------------

/// Each event says how long it runs, and whether its first attempt fails.
struct Pool(Recorder);

impl WorkerPool for Pool {
    type Event = (u32, bool);
    type Error = String;

    fn concurrency(&self) -> u32 {
        8
    }

    fn retry(&self) -> RetryPolicy {
        // Attempts cut by kills count too: enough that none ends as a dead letter.
        RetryPolicy::fixed(30, Duration::from_millis(50))
    }

    async fn execute(&self, ctx: &WorkerPoolContext<(u32, bool)>) -> Result<(), String> {
        let (ms, fail_first) = *ctx.event();
        let recording = self
            .0
            .start(
                "pool",
                ctx.execution().instance_id().to_string(),
                vec![ctx.event_id().to_owned()],
                ctx.attempt(),
                false,
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(ms.into())).await;
        let ok = !(fail_first && ctx.attempt() == 1);
        self.0.end(recording, ok).await?;
        if ok {
            Ok(())
        } else {
            Err("the first attempt fails".into())
        }
    }
}

/// Batches of event ids.
struct Batches(Recorder);

impl Debounce for Batches {
    type Event = String;
    type State = Vec<String>;
    type Error = String;

    fn flush_after(&self) -> Duration {
        Duration::from_millis(150)
    }

    fn max_events(&self) -> Option<u32> {
        Some(8)
    }

    fn retry(&self) -> RetryPolicy {
        RetryPolicy::fixed(30, Duration::from_millis(50))
    }

    fn on_event(&self, state: Option<Vec<String>>, id: String) -> Result<Vec<String>, Rejected> {
        let mut ids = state.unwrap_or_default();
        ids.push(id);
        Ok(ids)
    }

    async fn execute(&self, ctx: &DebounceContext<Vec<String>>) -> Result<(), String> {
        let ids = ctx.state().clone();
        let ms = 10 + hash(ids.first().map_or("", String::as_str)) % 30;
        let recording = self
            .0
            .start(
                "debounce",
                ctx.instance_id().to_string(),
                ids,
                ctx.attempt(),
                false,
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.0.end(recording, true).await
    }
}

/// Counts its runs in its state; runs only when started or triggered (the schedule is an
/// hour). Each run checks that its state and the run count were committed together.
struct Runs(Recorder);

impl Continuous for Runs {
    type State = u64;
    type Error = String;

    fn schedule(&self) -> Schedule {
        Schedule::every(Duration::from_secs(3600))
    }

    fn retry(&self) -> RetryPolicy {
        RetryPolicy::fixed(30, Duration::from_millis(50))
    }

    async fn execute(&self, ctx: &mut ContinuousContext<u64>) -> Result<(), String> {
        let torn = *ctx.state() != ctx.run_count();
        let recording = self
            .0
            .start(
                "continuous",
                ctx.instance_id().to_string(),
                Vec::new(),
                ctx.attempt(),
                torn,
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(10 + ctx.run_count() % 20)).await;
        *ctx.state_mut() += 1;
        self.0.end(recording, true).await
    }
}

// --- The child ------------------------------------------------------------------------

/// A child process: works until told to drain, then answers status requests until its
/// stdin closes, then shuts down.
#[test]
#[ignore = "a child process of killed_at_random_moments_loses_nothing_and_runs_nothing_twice"]
fn kill_child() {
    let Some(env) = ChildEnv::for_role(ROLE) else {
        return;
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(child(env));
}

async fn child(env: ChildEnv) {
    let recorder = Recorder::connect(&env).await;
    let registry = Registry::builder()
        .worker_pool("pool", Pool(recorder.clone()))
        .debounce("batches", Batches(recorder.clone()))
        .continuous("runs", Runs(recorder.clone()))
        .build()
        .expect("a registry");
    let runtime = PostgresRuntime::builder(&env.url, registry)
        .schema(&env.schema)
        .lease(LEASE)
        .poll_interval(POLL)
        .shards(2)
        .max_connections(8)
        .shutdown_grace(Duration::from_secs(2))
        .tracker(recorder.tracker())
        .connect()
        .await
        .expect("start the runtime");
    let client = runtime.client();
    let acks = Acks::open(&env.acks);
    let mut commands = commands();
    let mut rng = Rng::from_time(&env.label);
    let label = &env.label;
    let mut started: Vec<String> = Vec::new();
    let mut told_to_drain = false;
    for i in 0u64.. {
        match commands.try_recv() {
            Ok(command) if command == "drain" => {
                told_to_drain = true;
                break;
            }
            Ok(_) | Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => break,
        }
        let id = format!("{label}-e{i}");
        let event = (rng.between(5, 30) as u32, hash(&id).is_multiple_of(8));
        let sent = now_us();
        let enqueued = client
            .worker_pool::<Pool>()
            .enqueue_with(&event, EnqueueRequest::new().event_id(&id))
            .await;
        if enqueued.is_ok() {
            acks.line(format!("enq {id} {sent}"));
        }
        let key = format!("d{}", rng.between(0, DEBOUNCE_KEYS));
        let add = format!("{label}-a{i}");
        let added = client
            .debounce::<Batches>()
            .add_with_id(&key, &add, &add)
            .await;
        if added.is_ok() {
            acks.line(format!("add {key} {add}"));
        }
        if i % 25 == 0 {
            let key = format!("c-{label}-{}", i / 25);
            let sent = now_us();
            if let Ok(created) = client.continuous::<Runs>().start(&key, &0).await {
                acks.line(format!("start {key} {sent} {created}"));
                started.push(key);
            }
        } else if i % 5 == 0 && !started.is_empty() {
            let key = &started[rng.between(0, started.len() as u64) as usize];
            let sent = now_us();
            if client.continuous::<Runs>().trigger(key).await.is_ok() {
                acks.line(format!("trigger {key} {sent}"));
            }
        }
        // A pace the processes keep up with, even in a debug build on a busy machine: the
        // backlog stays small and the drain short, however long the run.
        tokio::time::sleep(Duration::from_millis(rng.between(15, 35))).await;
    }
    if told_to_drain {
        reply("STOPPED");
        while let Some(command) = commands.recv().await {
            if command == "status" {
                reply(&status(&client).await);
            }
        }
    }
    runtime.shutdown().await;
    recorder.settle().await;
}

/// `STATUS pending=.. processed=.. dead=.. busy=..`: the pool's counters, and how many
/// Debounce instances still hold events or a batch being flushed or failed.
async fn status(client: &JobsClient<PostgresTransport>) -> String {
    let pool = match client.worker_pool::<Pool>().status().await {
        Ok(pool) => pool,
        Err(error) => return format!("STATUS error {error}"),
    };
    let mut busy = 0;
    for key in 0..DEBOUNCE_KEYS {
        match client
            .debounce::<Batches>()
            .status(&format!("d{key}"))
            .await
        {
            Ok(Some(s)) => {
                if s.event_count > 0 || s.full_batches > 0 || s.flushing || s.failed_batches > 0 {
                    busy += 1;
                }
            }
            Ok(None) => {}
            Err(error) => return format!("STATUS error {error}"),
        }
    }
    format!(
        "STATUS pending={} processed={} dead={} busy={busy}",
        pool.pending, pool.processed, pool.dead_letters
    )
}

// --- The parent -----------------------------------------------------------------------

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// A field `name=value` of a status line.
fn field(status: &str, name: &str) -> Option<u64> {
    status
        .split(' ')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
}

fn spawn(slot: usize, incarnation: usize, ctx: &Setup<'_>) -> Child {
    Child::spawn(ChildConfig {
        test: CHILD_TEST,
        role: ROLE,
        url: ctx.url,
        schema: ctx.schema,
        log_schema: ctx.log_schema,
        label: format!("p{slot}.{incarnation}"),
        dir: ctx.dir,
    })
}

struct Setup<'a> {
    url: &'a str,
    schema: &'a str,
    log_schema: &'a str,
    dir: &'a Path,
}

#[tokio::test]
async fn killed_at_random_moments_loses_nothing_and_runs_nothing_twice() {
    let run_for = Duration::from_secs(env_number("DJ_PG_KILL_SECONDS").unwrap_or(20));
    let seed = env_number("DJ_PG_KILL_SEED").unwrap_or_else(|| now_us() as u64);
    println!("kill schedule seed {seed} (DJ_PG_KILL_SEED replays it)");
    let mut rng = Rng::new(seed);
    let server = TestServer::new().expect("a PostgreSQL server for the test");
    let schema = unique_name("kill");
    let log_schema = unique_name("kill_log");
    let sql = server.connect().await.expect("connect to the test server");
    create_log_tables(&sql, &log_schema).await;
    let dir = std::env::temp_dir().join(unique_name("durable-jobs-kill"));
    std::fs::create_dir_all(&dir).expect("a directory for the children's files");
    // Kept if the test fails: each child's acknowledged calls and stderr.
    println!("children's files in {}", dir.display());
    let setup = Setup {
        url: server.url(),
        schema: &schema,
        log_schema: &log_schema,
        dir: &dir,
    };

    let began = Instant::now();
    let mut incarnations = 0;
    let mut children: Vec<Child> = (0..PROCESSES)
        .map(|slot| {
            incarnations += 1;
            spawn(slot, incarnations, &setup)
        })
        .collect();
    // When each killed process died.
    let mut killed: HashMap<String, i64> = HashMap::new();
    loop {
        let pause = Duration::from_millis(rng.between(1000, 3500));
        if began.elapsed() + pause >= run_for {
            break;
        }
        tokio::time::sleep(pause).await;
        for child in &mut children {
            child.assert_running();
        }
        let slot = rng.between(0, PROCESSES as u64) as usize;
        let at = children[slot].kill();
        killed.insert(children[slot].label.clone(), at);
        incarnations += 1;
        children[slot] = spawn(slot, incarnations, &setup);
    }
    tokio::time::sleep(run_for.saturating_sub(began.elapsed())).await;

    // Drain: no more calls; wait until nothing is pending, due, or held.
    for child in &mut children {
        child.send("drain");
    }
    for child in &mut children {
        child.reply("STOPPED", Duration::from_secs(20)).await;
    }
    let drain_began = Instant::now();
    let mut backlog = None;
    let status = loop {
        let due = due_soon(&sql, &schema).await;
        children[0].send("status");
        let status = children[0].reply("STATUS", Duration::from_secs(10)).await;
        backlog = backlog.or(field(&status, "pending"));
        let idle = [("pending", 0), ("busy", 0)]
            .iter()
            .all(|(name, want)| field(&status, name) == Some(*want));
        if due.is_empty() && idle {
            break status;
        }
        assert!(
            drain_began.elapsed() < Duration::from_secs(30) + run_for / 10,
            "the survivors did not drain: {status}; alarms due: {due:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let drained_in = drain_began.elapsed();
    for child in &mut children {
        child.close(Duration::from_secs(15)).await;
    }

    let acks = Acked::parse(&ack_lines(&dir));
    let executions = executions(&sql, &log_schema).await;
    let completions = completions(&sql, &log_schema).await;
    let done: BTreeSet<String> = done_event_ids(&sql, &schema, "pool")
        .await
        .into_iter()
        .collect();
    let history = History::new(&executions, &killed);
    let processed = field(&status, "processed").expect("a processed count");
    assert_eq!(field(&status, "dead"), Some(0), "no dead letters: {status}");

    history.acknowledged_calls_ran(&acks);
    history.no_overlaps();
    history.reruns_after_commit(&completions);
    history.counted_once(&completions, &done, processed, &acks);

    let summary = history.summary(&completions);
    println!(
        "{:.1} s, {} kills, {} processes in all; acknowledged: {} enqueues, {} adds, {} starts, \
         {} triggers; {summary}; drained {} pending events in {:.1} s",
        began.elapsed().as_secs_f64(),
        killed.len(),
        incarnations,
        acks.enqueues.len(),
        acks.adds.len(),
        acks.starts.len(),
        acks.triggers.len(),
        backlog.unwrap_or(0),
        drained_in.as_secs_f64(),
    );
    assert!(
        !acks.enqueues.is_empty() && !acks.adds.is_empty() && !acks.starts.is_empty(),
        "the children did no work"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The alarms due within a minute, or held by a live lease: work still to do. Idle
/// instances' alarms lie further ahead (a purge or sweep after a day, the next run in an
/// hour).
async fn due_soon(
    sql: &durable_jobs_postgres::tokio_postgres::Client,
    schema: &str,
) -> Vec<String> {
    let now_ms = now_us() / 1000;
    sql.query(
        &format!(
            "SELECT id FROM \"{schema}\".instances \
             WHERE alarm_at < $1 OR (alarm_owner IS NOT NULL AND alarm_lease_until > $2)"
        ),
        &[&(now_ms + 60_000), &now_ms],
    )
    .await
    .expect("read the alarms")
    .iter()
    .map(|row| row.get(0))
    .collect()
}

/// The calls the children saw acknowledged.
#[derive(Default)]
struct Acked {
    /// Event ids, and when each enqueue was sent.
    enqueues: BTreeMap<String, i64>,
    /// `(key, event id)`.
    adds: Vec<(String, String)>,
    /// Keys of instances that a start created, and when it was sent.
    starts: Vec<(String, i64)>,
    /// Keys, and when the trigger was sent.
    triggers: Vec<(String, i64)>,
}

impl Acked {
    fn parse(lines: &[String]) -> Acked {
        let mut acks = Acked::default();
        for line in lines {
            let parts: Vec<&str> = line.split(' ').collect();
            let time = |i: usize| -> i64 {
                parts
                    .get(i)
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_else(|| panic!("a time in {line:?}"))
            };
            match parts[0] {
                "enq" => {
                    acks.enqueues.insert(parts[1].to_owned(), time(2));
                }
                "add" => acks.adds.push((parts[1].to_owned(), parts[2].to_owned())),
                "start" if parts.get(3) == Some(&"true") => {
                    acks.starts.push((parts[1].to_owned(), time(2)));
                }
                "start" => panic!("a start of a new key found it active: {line}"),
                "trigger" => acks.triggers.push((parts[1].to_owned(), time(2))),
                _ => panic!("an unknown ack line: {line:?}"),
            }
        }
        acks
    }
}

/// The executions, grouped.
struct History<'a> {
    all: &'a [Execution],
    /// When each killed process died.
    killed: &'a HashMap<String, i64>,
    /// By instance, in the order they started.
    by_instance: BTreeMap<&'a str, Vec<&'a Execution>>,
    /// WorkerPool executions by event id, in the order they started.
    by_event: BTreeMap<&'a str, Vec<&'a Execution>>,
}

impl<'a> History<'a> {
    fn new(all: &'a [Execution], killed: &'a HashMap<String, i64>) -> Self {
        let mut by_instance: BTreeMap<&str, Vec<&Execution>> = BTreeMap::new();
        let mut by_event: BTreeMap<&str, Vec<&Execution>> = BTreeMap::new();
        for execution in all {
            by_instance
                .entry(&execution.instance)
                .or_default()
                .push(execution);
            if execution.kind == "pool" {
                by_event
                    .entry(&execution.ids[0])
                    .or_default()
                    .push(execution);
            }
        }
        History {
            all,
            killed,
            by_instance,
            by_event,
        }
    }

    /// When `execution` stopped: its end, or the death of its process. An execution with
    /// neither belongs to a process that is still there, which the drain rules out.
    fn stopped(&self, execution: &Execution) -> i64 {
        match (execution.end, self.killed.get(&execution.process)) {
            (Some((at, _)), _) => at,
            (None, Some(at)) => *at,
            (None, None) => {
                panic!("an execution never ended, in a process that was not killed: {execution:?}")
            }
        }
    }

    fn acknowledged_calls_ran(&self, acks: &Acked) {
        let completed: HashSet<&str> = self
            .all
            .iter()
            .filter(|e| e.kind == "pool" && e.ended_ok().is_some())
            .map(|e| e.ids[0].as_str())
            .collect();
        for id in acks.enqueues.keys() {
            assert!(
                completed.contains(id.as_str()),
                "acknowledged enqueue {id} never ran to completion: {:?}",
                self.by_event.get(id.as_str())
            );
        }
        let flushed: HashSet<(&str, &str)> = self
            .all
            .iter()
            .filter(|e| e.kind == "debounce" && e.ended_ok().is_some())
            .flat_map(|e| e.ids.iter().map(|id| (e.instance.as_str(), id.as_str())))
            .collect();
        for (key, id) in &acks.adds {
            let instance = format!("debounce:batches:{key}");
            assert!(
                flushed.contains(&(instance.as_str(), id.as_str())),
                "acknowledged add {id} to {key} is in no completed flush"
            );
        }
        let runs_ending = |key: &str| -> Vec<(i64, i64)> {
            let instance = format!("continuous:runs:{key}");
            self.by_instance
                .get(instance.as_str())
                .into_iter()
                .flatten()
                .filter_map(|e| e.ended_ok().map(|end| (e.start, end)))
                .collect()
        };
        for (key, sent) in &acks.starts {
            assert!(
                runs_ending(key).iter().any(|(start, _)| start > sent),
                "acknowledged start of {key} was followed by no completed run"
            );
        }
        for (key, sent) in &acks.triggers {
            assert!(
                runs_ending(key).iter().any(|(_, end)| end > sent),
                "acknowledged trigger of {key} (sent at {sent}) was followed by no completed run"
            );
        }
    }

    /// No two executions of one instance overlap: neither two that ended, nor one that
    /// ended and one cut by a kill (taken to last until the kill: a dead process keeps its
    /// leases until they run out, so nothing of its instances starts before it died).
    fn no_overlaps(&self) {
        for (instance, executions) in &self.by_instance {
            let mut latest: Option<(&Execution, i64)> = None;
            for execution in executions {
                if let Some((before, until)) = latest {
                    assert!(
                        execution.start >= until,
                        "two executions of {instance} overlap:\n  {before:?} (until {until})\n  {execution:?}"
                    );
                }
                let stopped = self.stopped(execution);
                if latest.is_none_or(|(_, until)| stopped > until) {
                    latest = Some((execution, stopped));
                }
            }
        }
    }

    /// Nothing ran again after its completion committed.
    ///
    /// What is observable: a `workerPool.completed` event is reported (and recorded with
    /// its time) only after its completion committed, so for an event id with one, the
    /// committed execution is the last successful one to end before it, and no execution
    /// of that id may start after that end. After the drain every event and batch is done,
    /// so the last execution of each must be one that ended successfully: a last one cut
    /// by a kill, or failed, would mean that an earlier one had committed and it ran
    /// after. Debounce batches (identified by their event ids) of one instance never
    /// interleave: a batch is claimed only once the one before it committed, so no
    /// execution of a batch starts after an execution of a later batch started.
    fn reruns_after_commit(&self, completions: &[Completion]) {
        let mut completed: HashMap<&str, Vec<&Completion>> = HashMap::new();
        for c in completions {
            if let Some(id) = &c.event_id {
                completed.entry(id).or_default().push(c);
            }
        }
        for (id, reports) in &completed {
            assert_eq!(
                reports.len(),
                1,
                "{id} completed more than once: {reports:?}"
            );
            let executions = self
                .by_event
                .get(id)
                .unwrap_or_else(|| panic!("{id} completed without running"));
            let committed = executions
                .iter()
                .filter_map(|e| e.ended_ok())
                .filter(|end| *end <= reports[0].at)
                .max()
                .unwrap_or_else(|| panic!("{id} completed before any execution ended"));
            for execution in executions {
                assert!(
                    execution.start <= committed,
                    "{id} ran again after its completion committed (its successful \
                     execution ended at {committed}, reported at {}): {executions:#?}",
                    reports[0].at
                );
            }
        }
        for (id, executions) in &self.by_event {
            let last = executions.last().expect("at least one");
            assert!(
                last.ended_ok().is_some(),
                "the last execution of {id} did not succeed, yet {id} is done: {executions:#?}"
            );
        }
        for (instance, executions) in &self.by_instance {
            if !instance.starts_with("debounce:") {
                continue;
            }
            // Batches in the order they first started, each with its executions.
            let mut batches: Vec<(&[String], Vec<&Execution>)> = Vec::new();
            for execution in executions {
                match batches.iter_mut().find(|(ids, _)| *ids == execution.ids) {
                    Some((_, runs)) => runs.push(execution),
                    None => batches.push((&execution.ids, vec![execution])),
                }
            }
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for (n, (ids, runs)) in batches.iter().enumerate() {
                for id in *ids {
                    if let Some(other) = seen.insert(id, n) {
                        panic!(
                            "{id} was flushed in two different batches of {instance}: \
                             {:?} and {ids:?}",
                            batches[other].0
                        );
                    }
                }
                let last = runs.last().expect("at least one");
                assert!(
                    last.ended_ok().is_some(),
                    "the last flush of a batch of {instance} did not succeed: {runs:#?}"
                );
                if let Some((_, next)) = batches.get(n + 1) {
                    assert!(
                        last.start < next[0].start,
                        "a batch of {instance} ran again after the next batch started: \
                         {runs:#?}\nnext: {next:#?}"
                    );
                }
            }
        }
    }

    /// Every event and batch completed once, and Continuous runs never saw a state and
    /// run count committed apart.
    fn counted_once(
        &self,
        completions: &[Completion],
        done: &BTreeSet<String>,
        processed: u64,
        acks: &Acked,
    ) {
        let ran: BTreeSet<String> = self.by_event.keys().map(|id| id.to_string()).collect();
        for id in acks.enqueues.keys() {
            assert!(
                done.contains(id),
                "acknowledged {id} is not recorded as done"
            );
        }
        assert_eq!(
            &ran, done,
            "the events that ran are exactly those recorded as done"
        );
        assert_eq!(
            processed,
            ran.len() as u64,
            "each event that ran was counted as processed once"
        );
        let mut flushes: HashMap<&str, usize> = HashMap::new();
        let mut runs: HashMap<&str, Vec<i64>> = HashMap::new();
        for c in completions {
            if c.instance.starts_with("debounce:") {
                *flushes.entry(&c.instance).or_default() += 1;
            } else if c.instance.starts_with("continuous:") {
                runs.entry(&c.instance)
                    .or_default()
                    .push(c.count.unwrap_or(0));
            }
        }
        for (instance, reported) in flushes {
            let batches: HashSet<&Vec<String>> =
                self.by_instance[instance].iter().map(|e| &e.ids).collect();
            assert!(
                reported <= batches.len(),
                "{instance} reported {reported} flushes of {} batches",
                batches.len()
            );
        }
        for (instance, mut counts) in runs {
            let all = counts.len();
            counts.sort_unstable();
            counts.dedup();
            assert_eq!(counts.len(), all, "{instance} committed a run count twice");
        }
        for execution in self.all {
            assert!(
                !execution.torn,
                "a run found its state and run count committed apart: {execution:?}"
            );
        }
    }

    fn summary(&self, completions: &[Completion]) -> String {
        let count = |kind: &str| self.all.iter().filter(|e| e.kind == kind).count();
        let cut = self.all.iter().filter(|e| e.end.is_none()).count();
        let failed = self
            .all
            .iter()
            .filter(|e| matches!(e.end, Some((_, false))))
            .count();
        let again = self.by_event.values().filter(|runs| runs.len() > 1).count();
        let moved = self
            .by_instance
            .values()
            .flat_map(|runs| runs.windows(2))
            .filter(|pair| pair[0].end.is_none() && pair[0].process != pair[1].process)
            .count();
        format!(
            "{} executions ({} pool, {} debounce, {} continuous), {cut} cut by a kill \
             ({moved} taken over by another process), {failed} failed on purpose, \
             {again} events ran more than once, {} completions reported",
            self.all.len(),
            count("pool"),
            count("debounce"),
            count("continuous"),
            completions.len()
        )
    }
}
