//! Retry policies shared by the three job kinds.

use std::time::Duration;

/// How the delay between attempts grows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backoff {
    /// The same delay every time.
    Fixed(Duration),
    /// `initial + step × (n − 1)` before attempt `n + 1`, capped at `max`.
    Linear {
        /// Delay after the first failure.
        initial: Duration,
        /// Added for each further failure.
        step: Duration,
        /// Upper bound.
        max: Duration,
    },
    /// `initial × factor^(n − 1)` before attempt `n + 1`, capped at `max`.
    Exponential {
        /// Delay after the first failure.
        initial: Duration,
        /// Growth factor (≥ 1).
        factor: f64,
        /// Upper bound.
        max: Duration,
    },
}

/// How often a failing execution is attempted, and how long to wait in between.
///
/// `max_attempts` counts the first attempt: `1` means no retry. Jitter takes up to that
/// fraction off each delay, deterministically from the instance and attempt, so that many
/// instances failing together do not retry together, while tests stay reproducible.
///
/// `max_duration` also bounds the attempts by time: no retry is scheduled whose time
/// (the failure plus its delay) would come after the start of the first attempt plus
/// `max_duration`; the failure that would need one is final, as if it were the last
/// attempt. Whichever limit is reached first ends the retries.
///
/// ```
/// use std::time::Duration;
/// use durable_jobs::RetryPolicy;
///
/// // Up to 10 attempts a minute apart, but none later than 5 minutes after the first.
/// let policy = RetryPolicy::fixed(10, Duration::from_secs(60))
///     .with_max_duration(Duration::from_secs(5 * 60));
/// assert_eq!(policy.max_duration, Some(Duration::from_secs(300)));
/// ```
///
/// The attempt that a job's `on_error` or `on_dead_letter` hook learns is the last is
/// decided when it starts: with `max_duration`, an attempt that starts early enough to be
/// retried in time but runs so long that its retry would come too late ends the work
/// without the hook, like an attempt that timed out or panicked on the last try.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Delay growth.
    pub backoff: Backoff,
    /// Fraction of each delay that may be taken off at random, from 0.0 to 1.0.
    pub jitter: f64,
    /// How long after the start of the first attempt retries may still come; `None` for
    /// no limit but `max_attempts` (the default).
    pub max_duration: Option<Duration>,
}

impl Default for RetryPolicy {
    /// Three attempts, exponential backoff from 1 s (×2, at most 5 min), 20 % jitter.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::Exponential {
                initial: Duration::from_secs(1),
                factor: 2.0,
                max: Duration::from_secs(300),
            },
            jitter: 0.2,
            max_duration: None,
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retry.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            backoff: Backoff::Fixed(Duration::ZERO),
            jitter: 0.0,
            max_duration: None,
        }
    }

    /// `max_attempts` attempts with the same delay between them.
    pub fn fixed(max_attempts: u32, delay: Duration) -> Self {
        RetryPolicy {
            max_attempts,
            backoff: Backoff::Fixed(delay),
            jitter: 0.0,
            max_duration: None,
        }
    }

    /// `max_attempts` attempts with a delay growing by `step`.
    pub fn linear(max_attempts: u32, initial: Duration, step: Duration, max: Duration) -> Self {
        RetryPolicy {
            max_attempts,
            backoff: Backoff::Linear { initial, step, max },
            jitter: 0.0,
            max_duration: None,
        }
    }

    /// `max_attempts` attempts with a doubling delay.
    pub fn exponential(max_attempts: u32, initial: Duration, max: Duration) -> Self {
        RetryPolicy {
            max_attempts,
            backoff: Backoff::Exponential {
                initial,
                factor: 2.0,
                max,
            },
            jitter: 0.0,
            max_duration: None,
        }
    }

    /// The same policy with jitter (clamped to 0.0..=1.0).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// The same policy, retrying only while the retry's time is at most `max_duration` after
    /// the start of the first attempt.
    pub fn with_max_duration(mut self, max_duration: Duration) -> Self {
        self.max_duration = Some(max_duration);
        self
    }

    /// Whether another attempt follows attempt `attempt` (1-based) when it fails, as far as
    /// `max_attempts` goes (`max_duration` may end the retries sooner).
    pub fn retries_after(&self, attempt: u32) -> bool {
        attempt < self.max_attempts.max(1)
    }

    /// The delay after failed attempt `attempt` (1-based); `seed` varies the jitter.
    pub fn delay(&self, attempt: u32, seed: u64) -> Duration {
        let n = attempt.max(1);
        let nominal = match self.backoff {
            Backoff::Fixed(d) => d,
            Backoff::Linear { initial, step, max } => {
                initial.saturating_add(step.saturating_mul(n - 1)).min(max)
            }
            Backoff::Exponential {
                initial,
                factor,
                max,
            } => {
                let factor = if factor.is_finite() {
                    factor.max(1.0)
                } else {
                    1.0
                };
                let secs = initial.as_secs_f64() * factor.powi((n - 1).min(1000) as i32);
                if secs.is_finite() && secs < max.as_secs_f64() {
                    Duration::from_secs_f64(secs)
                } else {
                    max
                }
            }
        };
        if self.jitter <= 0.0 {
            return nominal;
        }
        let r = unit_random(seed ^ u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        nominal.mul_f64(1.0 - self.jitter.min(1.0) * r)
    }

    /// When failed attempt `attempt` (after a failure at `failed_at`) is tried again;
    /// `None` once the attempts are used up, or when that time would come after
    /// `max_duration` from `first_attempt_at`, the start of the first attempt. `seed`
    /// spreads the jitter of instances apart.
    pub(crate) fn retry_at(
        &self,
        attempt: u32,
        seed: &str,
        failed_at: i64,
        first_attempt_at: i64,
    ) -> Option<i64> {
        if !self.retries_after(attempt) {
            return None;
        }
        let at = failed_at.saturating_add(millis(self.delay(attempt, hash_str(seed))));
        let deadline = self
            .max_duration
            .map(|d| first_attempt_at.saturating_add(millis(d)));
        deadline.is_none_or(|d| at <= d).then_some(at)
    }

    /// Whether attempt `attempt`, starting at `started`, is known to be the last: even a
    /// failure at once would leave no retry. What the hooks for a final failure go by.
    pub(crate) fn is_last(
        &self,
        attempt: u32,
        seed: &str,
        started: i64,
        first_attempt_at: i64,
    ) -> bool {
        self.retry_at(attempt, seed, started, first_attempt_at)
            .is_none()
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("retry max_attempts must be at least 1".into());
        }
        if self.max_duration.is_some_and(|d| d.is_zero()) {
            return Err("retry max_duration must be longer than zero".into());
        }
        Ok(())
    }
}

/// A number in [0, 1) from a seed (splitmix64).
fn unit_random(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// A stable 64-bit hash of a string (FNV-1a), for seeds and routing.
pub(crate) fn hash_str(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Milliseconds in a duration, saturating.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoffs_grow_and_cap() {
        let s = Duration::from_secs;
        let e = RetryPolicy::exponential(5, s(1), s(5));
        assert_eq!(
            [1, 2, 3, 4].map(|n| e.delay(n, 0)),
            [s(1), s(2), s(4), s(5)]
        );
        let l = RetryPolicy::linear(5, s(1), s(2), s(4));
        assert_eq!([1, 2, 3].map(|n| l.delay(n, 0)), [s(1), s(3), s(4)]);
        let f = RetryPolicy::fixed(2, s(7));
        assert_eq!(f.delay(9, 0), s(7));
        assert!(f.retries_after(1));
        assert!(!f.retries_after(2));
        assert!(!RetryPolicy::none().retries_after(1));
    }

    #[test]
    fn max_duration_stops_retries_that_would_come_too_late() {
        let s = Duration::from_secs;
        let p = RetryPolicy::fixed(10, s(10)).with_max_duration(s(25));
        // First attempt at 0 s, failing at once each time: retries at 10 s and 20 s; the
        // one at 30 s would be past 25 s.
        assert_eq!(p.retry_at(1, "i", 0, 0), Some(10_000));
        assert_eq!(p.retry_at(2, "i", 10_000, 0), Some(20_000));
        assert_eq!(p.retry_at(3, "i", 20_000, 0), None);
        // A retry exactly at the limit is still made.
        assert_eq!(p.retry_at(2, "i", 15_000, 0), Some(25_000));
        assert_eq!(p.retry_at(2, "i", 15_001, 0), None);
        // The limit counts from the first attempt, not from the failure.
        assert_eq!(p.retry_at(1, "i", 100_000, 100_000), Some(110_000));
        assert!(p.is_last(3, "i", 20_000, 0));
        assert!(!p.is_last(2, "i", 10_000, 0));
        // max_attempts still ends the retries first when it comes first.
        let few = RetryPolicy::fixed(2, s(1)).with_max_duration(s(3600));
        assert_eq!(few.retry_at(2, "i", 1_000, 0), None);
        // Without a limit nothing changes.
        assert_eq!(
            RetryPolicy::fixed(10, s(10)).retry_at(9, "i", i64::MAX / 2, 0),
            Some(i64::MAX / 2 + 10_000)
        );
        assert_eq!(RetryPolicy::default().max_duration, None);
        assert!(RetryPolicy::default()
            .with_max_duration(Duration::ZERO)
            .validate()
            .is_err());
        assert!(p.validate().is_ok());
    }

    #[test]
    fn jitter_only_shortens_and_is_deterministic() {
        let p = RetryPolicy::fixed(3, Duration::from_secs(10)).with_jitter(0.5);
        for seed in 0..100 {
            let d = p.delay(1, seed);
            assert!(d <= Duration::from_secs(10) && d >= Duration::from_secs(5));
            assert_eq!(d, p.delay(1, seed));
        }
        assert_ne!(p.delay(1, 1), p.delay(1, 2));
    }
}
