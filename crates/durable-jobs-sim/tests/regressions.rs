//! Every engine bug the simulation found, kept as the seed that found it and as the
//! shortest operation list that still fails the same way (found with `SIM_SHRINK=1`).
//!
//! Each test runs with its bug no longer steered around (see `durable_jobs_sim::known`),
//! and the other known bugs still avoided, so it fails for its own bug only. A test is
//! ignored while its bug is open; all of these are fixed, so they run by default. The two
//! traces about generated ids now expect the user's `auto-` id to be refused.
//!
//! A seed's operations come from the generator: a change to it gives every seed other
//! operations, and a seed here may stop reaching its bug (search for another with the bug
//! reintroduced). A shortest trace replays the same operations whatever the generator does.

use durable_jobs_sim::ops::parse_ops;
use durable_jobs_sim::run;
use durable_jobs_sim::Avoid;

/// Operations per seed when these seeds failed.
const STEPS: usize = 200;

fn seed_passes(seed: u64, avoid: Avoid) {
    if let Err(failure) = run::run_seed(seed, STEPS, avoid) {
        panic!("{failure}");
    }
}

fn trace_passes(seed: u64, trace: &str, avoid: Avoid) {
    let ops = parse_ops(trace).unwrap();
    if let Err(failure) = run::replay(seed, &ops, avoid) {
        panic!("{failure}");
    }
}

const CANCEL_RACE: Avoid = Avoid::NOTHING;

/// The alarm claims the event, then waits for the cancel (a request in flight) to be
/// durable before running user code; the cancel's step runs meanwhile, finds the event not
/// marked as running, removes it and answers `cancelled: true`. The event then runs, and
/// its completion takes it off `pending` a second time and writes its id record again
/// (leaving the cancel's expiry entry behind).
#[test]
fn seed_670_cancel_racing_a_claim() {
    seed_passes(670, CANCEL_RACE);
}

#[test]
fn shortest_cancel_racing_a_claim() {
    let trace = r#"
        #4 send workerPool:work:0 {"event":{"serial":2},"eventId":"e2","op":"workerPoolEnqueue","priority":5}
        poll #4
        #13 fire alarm of workerPool:work:0
        poll #13
        #18 send workerPool:work:0 {"eventId":"e2","op":"workerPoolCancel"}
        poll #18
    "#;
    trace_passes(1338, trace, CANCEL_RACE);
}

const REPEATED_IDS: Avoid = Avoid::NOTHING;

/// A replay naming the same dead letter three times queues its event three times and
/// counts three dead letters off.
#[test]
fn seed_760_replay_with_a_repeated_id() {
    seed_passes(760, REPEATED_IDS);
}

#[test]
fn shortest_replay_with_a_repeated_id() {
    let trace = r#"
        #8 send workerPool:work:0 {"event":{"serial":4},"eventId":"e3","op":"workerPoolEnqueue","priority":0}
        poll #8
        poll #8
        poll #8
        #14 fire alarm of workerPool:work:0
        poll #14
        #21 send workerPool:work:0 {"eventIds":["e3","e3","e3"],"op":"workerPoolReplay"}
    "#;
    trace_passes(240, trace, REPEATED_IDS);
}

const LOST_SWEEP: Avoid = Avoid::NOTHING;

/// One event, processed: its completion writes the id record with its expiry, then sweeps,
/// and the sweep (which reads storage without the new expiry entry) clears `sweep_at`.
/// Nothing wakes the instance to forget the id: it is still stored long after it expired.
#[test]
fn seed_2_lost_sweep_after_completion() {
    seed_passes(2, LOST_SWEEP);
}

#[test]
fn shortest_lost_sweep_after_completion() {
    let trace = r#"
        #15 send workerPool:work:1 {"event":{"serial":5},"eventId":"e5","op":"workerPoolEnqueue","priority":5}
    "#;
    trace_passes(2, trace, LOST_SWEEP);
}

const GENERATED_IDS: Avoid = Avoid::NOTHING;

/// An event sent without an id gets `auto-0-0`; a user's own id `auto-0-0`, never used
/// before, is then answered as a duplicate and its event dropped.
#[test]
fn seed_111_user_id_taken_by_a_generated_one() {
    seed_passes(111, GENERATED_IDS);
}

#[test]
fn shortest_user_id_taken_by_a_generated_one() {
    let trace = r#"
        #2 send workerPool:work:0 {"event":{"serial":1},"eventId":"auto-0-0","op":"workerPoolEnqueue","priority":0} (expect BadRequest)
        #4 send workerPool:work:0 {"event":{"serial":2},"eventId":null,"op":"workerPoolEnqueue","priority":-1}
        poll #4
    "#;
    trace_passes(111, trace, GENERATED_IDS);
}

/// A user's event with id `auto-0-1` is queued; an event sent without an id is then given
/// the same id: both are queued, and the id record points at the second only.
#[test]
fn shortest_generated_id_taking_a_users_id() {
    let trace = r#"
        #11 send workerPool:work:0 {"event":{"serial":4},"eventId":"auto-0-1","op":"workerPoolEnqueue","priority":0} (expect BadRequest)
        #12 send workerPool:work:0 {"event":{"serial":5},"eventId":null,"op":"workerPoolEnqueue","priority":5}
    "#;
    trace_passes(97, trace, GENERATED_IDS);
}

const TASK_BUGS: Avoid = Avoid::NOTHING;

/// A task terminated and created again by an event before its purge ran still held the
/// id records of its earlier life: a send with one of those ids answered `duplicate`.
#[test]
fn seed_2126_ids_of_a_task_created_again() {
    seed_passes(2126, TASK_BUGS);
}

#[test]
fn shortest_ids_of_a_task_created_again() {
    let trace = r#"
        #0 send task:task:t1 {"event":{"serial":1,"then":"cancel"},"eventId":"e1","op":"taskSend"}
        poll #0
        poll #0
        poll #0
        poll #0
        #1 send task:task:t1 {"op":"taskTerminate"}
        poll #1
        poll #1
        poll #1
        poll #1
        #2 send task:task:t1 {"event":{"serial":2,"then":"cancel"},"eventId":null,"op":"taskSend"}
        poll #2
        poll #2
        poll #2
        poll #2
        #3 send task:task:t1 {"event":{"serial":3,"then":"cancel"},"eventId":"e1","op":"taskSend"}
        poll #3
        poll #3
        poll #3
        poll #3
    "#;
    trace_passes(2126, trace, TASK_BUGS);
}

/// An event cancelled a task's timer while an attempt ran, so the task was idle and its
/// purge scheduled; the attempt failed and its retry was set, but the purge time stayed.
#[test]
fn seed_280_a_retry_after_the_timer_was_cancelled() {
    seed_passes(280, TASK_BUGS);
}
