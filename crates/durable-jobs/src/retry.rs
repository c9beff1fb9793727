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
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Delay growth.
    pub backoff: Backoff,
    /// Fraction of each delay that may be taken off at random, from 0.0 to 1.0.
    pub jitter: f64,
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
        }
    }

    /// `max_attempts` attempts with the same delay between them.
    pub fn fixed(max_attempts: u32, delay: Duration) -> Self {
        RetryPolicy {
            max_attempts,
            backoff: Backoff::Fixed(delay),
            jitter: 0.0,
        }
    }

    /// `max_attempts` attempts with a delay growing by `step`.
    pub fn linear(max_attempts: u32, initial: Duration, step: Duration, max: Duration) -> Self {
        RetryPolicy {
            max_attempts,
            backoff: Backoff::Linear { initial, step, max },
            jitter: 0.0,
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

    /// Whether another attempt follows attempt `attempt` (1-based) when it fails.
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

    /// When failed attempt `attempt` (after a failure at `now`) is tried again; `None`
    /// once the attempts are used up. `seed` spreads the jitter of instances apart.
    pub(crate) fn retry_at(&self, attempt: u32, seed: &str, now: i64) -> Option<i64> {
        self.retries_after(attempt)
            .then(|| now.saturating_add(millis(self.delay(attempt, hash_str(seed)))))
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("retry max_attempts must be at least 1".into());
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
