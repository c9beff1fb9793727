//! Running many seeds, on several threads, and shrinking a failing one.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RunOptions;
use crate::known::Avoid;
use crate::ops::Op;
use crate::runtime::panic_message;
use crate::sim::{Failure, Sim, Summary};
use crate::violation::{class, Violation};

/// What a run of many seeds found.
#[derive(Debug, Default)]
pub struct Report {
    /// Seeds run.
    pub seeds: u64,
    /// Steps applied in all.
    pub steps: u64,
    /// Executions of user code in all.
    pub executions: u64,
    /// Seeds that broke an invariant.
    pub failures: Vec<Failure>,
    /// How long the run took.
    pub elapsed: Duration,
}

impl Report {
    /// Seeds per second.
    pub fn seeds_per_second(&self) -> f64 {
        self.seeds as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Steps per second.
    pub fn steps_per_second(&self) -> f64 {
        self.steps as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs one seed; a panic becomes a failure too.
pub fn run_seed(seed: u64, steps: usize, avoid: Avoid) -> Result<Summary, Box<Failure>> {
    catch(seed, avoid, || Sim::run(seed, steps, avoid))
}

/// Replays operations for one seed; a panic becomes a failure too.
pub fn replay(seed: u64, ops: &[Op], avoid: Avoid) -> Result<Summary, Box<Failure>> {
    catch(seed, avoid, || Sim::replay(seed, ops, avoid))
}

fn catch(
    seed: u64,
    avoid: Avoid,
    run: impl FnOnce() -> Result<Summary, Box<Failure>>,
) -> Result<Summary, Box<Failure>> {
    crate::world::quiet_simulated_panics();
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic_message(panic.as_ref());
            Err(Box::new(Failure {
                seed,
                step: 0,
                violation: Violation::new(class::PANIC, format!("panicked: {message}")),
                trace: Vec::new(),
                ops: Vec::new(),
                reproduce: format!(
                    "{}SIM_SEED={seed} cargo test -p durable-jobs-sim",
                    avoid.env()
                ),
            }))
        }
    }
}

/// Runs the seeds `options` asks for, on its threads.
pub fn run_seeds(options: &RunOptions) -> Report {
    let start = Instant::now();
    let next = AtomicU64::new(options.first_seed);
    let end = options.first_seed.saturating_add(options.seeds);
    let report = Mutex::new(Report::default());
    std::thread::scope(|scope| {
        for _ in 0..options.threads {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    break;
                }
                let result = run_seed(seed, options.steps, options.avoid);
                let mut report = report.lock().unwrap_or_else(|p| p.into_inner());
                report.seeds += 1;
                match result {
                    Ok(summary) => {
                        report.steps += summary.steps as u64;
                        report.executions += summary.executions;
                    }
                    Err(failure) => report.failures.push(*failure),
                }
            });
        }
    });
    let mut report = report.into_inner().unwrap_or_else(|p| p.into_inner());
    report.failures.sort_by_key(|f| f.seed);
    report.elapsed = start.elapsed();
    report
}

/// Looks for a shorter list of operations that still fails the way `failure` did (same
/// invariant class), by removing ever smaller runs of operations while it keeps failing.
pub fn shrink(failure: &Failure, avoid: Avoid) -> Vec<Op> {
    let same = |ops: &[Op]| match replay(failure.seed, ops, avoid) {
        Err(f) => f.violation.class == failure.violation.class,
        Ok(_) => false,
    };
    let mut ops = failure.ops.clone();
    let mut chunk = ops.len().div_ceil(2).max(1);
    while chunk >= 1 {
        let mut start = 0;
        let mut removed_any = false;
        while start < ops.len() {
            let end = (start + chunk).min(ops.len());
            let mut candidate = ops[..start].to_vec();
            candidate.extend_from_slice(&ops[end..]);
            if same(&candidate) {
                ops = candidate;
                removed_any = true;
            } else {
                start = end;
            }
        }
        if chunk == 1 && !removed_any {
            break;
        }
        if !removed_any || chunk > 1 {
            chunk /= 2;
        }
        if chunk == 0 {
            break;
        }
    }
    ops
}
