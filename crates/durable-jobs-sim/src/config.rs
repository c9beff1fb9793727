//! What a seed decides before the first operation: the jobs' settings, and how a run is
//! shaped (steps, seeds), read from the environment.

use std::time::Duration;

use durable_jobs::{Limits, RetryPolicy};

use crate::known::Avoid;
use crate::rng::SimRng;

/// The settings of the simulated jobs, drawn from the seed so that seeds cover short and
/// long schedules, batches of one event or many, and every retry shape.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// The Continuous job's period.
    pub tick_every_ms: i64,
    /// Whether `start` runs the Continuous job at once.
    pub tick_start_immediately: bool,
    /// The Continuous job's retries.
    pub tick_retry: RetryPolicy,
    /// How long a stopped Continuous instance is kept.
    pub tick_retention_ms: i64,
    /// The Debounce job's delay after a batch's first event.
    pub batch_flush_after_ms: i64,
    /// The Debounce job's batch size limit.
    pub batch_max_events: Option<u32>,
    /// The Debounce job's retries.
    pub batch_retry: RetryPolicy,
    /// How long Debounce event ids and idle instances are kept.
    pub batch_retention_ms: i64,
    /// The WorkerPool's instance count.
    pub pool_concurrency: u32,
    /// The WorkerPool's retries.
    pub pool_retry: RetryPolicy,
    /// How long WorkerPool event ids are kept after their event finished.
    pub pool_retention_ms: i64,
    /// The Task job's retries.
    pub task_retry: RetryPolicy,
    /// How long Task event ids are remembered and an idle task is kept.
    pub task_retention_ms: i64,
    /// How much more often than by default user code fails (0 = never).
    pub failure_scale: u32,
    /// Request size limits, small so that oversized requests are cheap to build.
    pub limits: Limits,
}

/// The limits every seed uses: payloads of 512 bytes and ids of 48 bytes at most.
pub const LIMITS: Limits = Limits {
    max_payload_bytes: 512,
    max_id_bytes: 48,
};

impl JobsConfig {
    /// The settings for `seed`.
    pub fn for_seed(seed: u64) -> Self {
        let mut rng = SimRng::new(seed ^ 0xC0FF_EE00_D15E_A5E5);
        // Time limits on retries come from a stream of their own, so that every other
        // setting of a seed stays what it was before they existed.
        let mut limits = SimRng::new(seed ^ 0x7157_0DD5_EC0D_5EED);
        let mut retry = |rng: &mut SimRng| with_time_limit(retry(rng), &mut limits);
        // The Task job came later: its settings too have a stream of their own.
        let mut task = SimRng::new(seed ^ 0x7A5C_0B5E_7713_E500);
        let task_retry = with_time_limit(self::retry(&mut task), &mut task);
        let task_retention_ms = retention(&mut task);
        JobsConfig {
            tick_every_ms: *rng.pick(&[5_000, 30_000, 120_000]),
            tick_start_immediately: rng.chance(700),
            tick_retry: retry(&mut rng),
            tick_retention_ms: retention(&mut rng),
            batch_flush_after_ms: *rng.pick(&[0, 1_000, 10_000]),
            batch_max_events: *rng.pick(&[None, Some(1), Some(2), Some(3), Some(5)]),
            batch_retry: retry(&mut rng),
            batch_retention_ms: retention(&mut rng),
            pool_concurrency: rng.between(1, 3) as u32,
            pool_retry: retry(&mut rng),
            pool_retention_ms: retention(&mut rng),
            task_retry,
            task_retention_ms,
            failure_scale: *rng.pick(&[0, 1, 1, 3]),
            limits: LIMITS,
        }
    }

    /// The longest a failing execution keeps being retried, for any kind: after that its
    /// work is done, dead or failed.
    pub fn longest_retry_chain_ms(&self) -> i64 {
        [
            self.tick_retry,
            self.batch_retry,
            self.pool_retry,
            self.task_retry,
        ]
        .iter()
        .map(chain_ms)
        .max()
        .unwrap_or(0)
    }

    /// The longest retention of any kind.
    pub fn longest_retention_ms(&self) -> i64 {
        self.tick_retention_ms
            .max(self.batch_retention_ms)
            .max(self.pool_retention_ms)
            .max(self.task_retention_ms)
    }
}

fn retry(rng: &mut SimRng) -> RetryPolicy {
    let attempts = rng.between(1, 4) as u32;
    match rng.below(4) {
        0 => RetryPolicy::fixed(attempts, Duration::ZERO),
        1 => RetryPolicy::fixed(attempts, Duration::from_millis(500)),
        2 => RetryPolicy::exponential(attempts, Duration::from_secs(1), Duration::from_secs(30))
            .with_jitter(0.2),
        _ => RetryPolicy::linear(
            attempts,
            Duration::from_secs(2),
            Duration::from_secs(3),
            Duration::from_secs(20),
        ),
    }
}

/// A third of the policies also stop retrying some seconds after the first attempt: less
/// than their chain of delays, so that the limit, not the attempts, ends some retries.
fn with_time_limit(policy: RetryPolicy, rng: &mut SimRng) -> RetryPolicy {
    if !rng.chance(333) {
        return policy;
    }
    let ms = *rng.pick(&[1, 1_500, 4_000, 12_000]);
    policy.with_max_duration(Duration::from_millis(ms))
}

/// Whether work whose attempt `attempts` failed at `failed_at`, and whose first attempt
/// started at `earliest_start` or later, may end there as a final failure under `policy`:
/// its attempts are used up, or its `max_duration` leaves no time for the next retry.
/// Jitter only shortens delays, so the nominal delay bounds the retry's time.
pub fn may_end_after(
    policy: &RetryPolicy,
    attempts: u32,
    failed_at: i64,
    earliest_start: i64,
) -> bool {
    if attempts == policy.max_attempts {
        return true;
    }
    let Some(max) = policy.max_duration else {
        return false;
    };
    let nominal = policy.with_jitter(0.0).delay(attempts, 0).as_millis() as i64;
    attempts >= 1
        && attempts < policy.max_attempts
        && failed_at + nominal > earliest_start + max.as_millis() as i64
}

fn retention(rng: &mut SimRng) -> i64 {
    *rng.pick(&[20_000, 60_000, 300_000])
}

/// The sum of every delay between attempts.
fn chain_ms(policy: &RetryPolicy) -> i64 {
    (1..policy.max_attempts)
        .map(|n| policy.delay(n, 0).as_millis() as i64)
        .sum()
}

/// How many seeds and steps a run covers, from the environment:
///
/// - `SIM_SEED=<n>`: run that one seed (and print its trace when it fails);
/// - `SIM_SEEDS=<n>`: how many seeds (default [`DEFAULT_SEEDS`]), from `SIM_FIRST_SEED`
///   (default 0);
/// - `SIM_STEPS=<n>`: operations per seed before the final drain (default
///   [`DEFAULT_STEPS`]);
/// - `SIM_THREADS=<n>`: threads running seeds (default: the machine's parallelism);
/// - `SIM_SHRINK=1`: when a seed fails, also search for a shorter operation list that
///   fails the same way, and print it;
/// - `SIM_STRICT=1`: steer around no known engine bug (see [`Avoid`]).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The first seed.
    pub first_seed: u64,
    /// How many seeds.
    pub seeds: u64,
    /// Operations per seed.
    pub steps: usize,
    /// Threads running seeds.
    pub threads: usize,
    /// Whether to shrink a failing seed's operations.
    pub shrink: bool,
    /// Which known engine bugs to steer around.
    pub avoid: Avoid,
}

/// Seeds a default run covers.
pub const DEFAULT_SEEDS: u64 = 3_000;
/// Operations per seed in a default run.
pub const DEFAULT_STEPS: usize = 200;

impl RunOptions {
    /// The options the environment asks for.
    pub fn from_env() -> Self {
        let number = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse().ok());
        let single: Option<u64> = number("SIM_SEED");
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        RunOptions {
            first_seed: single.or_else(|| number("SIM_FIRST_SEED")).unwrap_or(0),
            seeds: if single.is_some() {
                1
            } else {
                number("SIM_SEEDS").unwrap_or(DEFAULT_SEEDS)
            },
            steps: number("SIM_STEPS")
                .map(|n: u64| n as usize)
                .unwrap_or(DEFAULT_STEPS),
            threads: number("SIM_THREADS")
                .map(|n: u64| n as usize)
                .unwrap_or(threads)
                .max(1),
            shrink: std::env::var("SIM_SHRINK").is_ok_and(|v| v != "0"),
            avoid: Avoid::from_env(),
        }
    }

    /// Whether one seed was asked for by `SIM_SEED`.
    pub fn single_seed() -> Option<u64> {
        std::env::var("SIM_SEED")
            .ok()
            .and_then(|v| v.trim().parse().ok())
    }
}
