//! When a Continuous job runs: every fixed period, or on a cron expression.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::retry::millis;

/// A Continuous job's schedule.
///
/// Runs follow the previous *scheduled* time, not the end of the last run, so they do not
/// drift; after downtime the missed runs collapse into one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(Repr);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Repr {
    Every(Duration),
    Cron(String),
}

impl Schedule {
    /// Every `period`, starting from the first run.
    pub fn every(period: Duration) -> Self {
        Schedule(Repr::Every(period))
    }

    /// On a cron expression (5 fields, or 6 with seconds first), in UTC. The expression is
    /// checked when the registry is built.
    pub fn cron(expression: impl Into<String>) -> Self {
        Schedule(Repr::Cron(expression.into()))
    }

    /// Parses text: `every 30 minutes` (a humantime duration) or a cron expression.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(period) = text.strip_prefix("every ") {
            let d = humantime::parse_duration(period.trim())
                .map_err(|e| format!("`{period}` is not a duration: {e}"))?;
            let s = Schedule::every(d);
            s.compile()?;
            Ok(s)
        } else {
            let s = Schedule::cron(text);
            s.compile()?;
            Ok(s)
        }
    }

    pub(crate) fn compile(&self) -> Result<CompiledSchedule, String> {
        match &self.0 {
            Repr::Every(d) if d.is_zero() => Err("the period of `every` must be above zero".into()),
            Repr::Every(d) if millis(*d) == 0 => {
                Err("the period of `every` must be at least 1 ms".into())
            }
            Repr::Every(d) => Ok(CompiledSchedule::Every(millis(*d))),
            Repr::Cron(expr) => {
                let cron = croner::Cron::from_str(expr)
                    .map_err(|e| format!("`{expr}` is not a cron expression: {e}"))?;
                Ok(CompiledSchedule::Cron(Box::new(cron)))
            }
        }
    }
}

/// A schedule ready to compute run times.
#[derive(Debug, Clone)]
pub(crate) enum CompiledSchedule {
    Every(i64),
    Cron(Box<croner::Cron>),
}

impl CompiledSchedule {
    /// The first run after `now` when the job does not start immediately.
    pub fn first_after(&self, now: i64) -> Option<i64> {
        match self {
            CompiledSchedule::Every(p) => Some(now.saturating_add(*p)),
            CompiledSchedule::Cron(c) => cron_after(c, now),
        }
    }

    /// The next run after the one scheduled at `prev`, skipping every time not after `now`:
    /// missed runs collapse into the one that just happened.
    pub fn next_after(&self, prev: i64, now: i64) -> Option<i64> {
        match self {
            CompiledSchedule::Every(p) => {
                let p = (*p).max(1);
                if prev > now {
                    return Some(prev);
                }
                let periods = now.saturating_sub(prev) / p + 1;
                Some(prev.saturating_add(periods.saturating_mul(p)))
            }
            CompiledSchedule::Cron(c) => cron_after(c, prev.max(now)),
        }
    }
}

fn cron_after(cron: &croner::Cron, t: i64) -> Option<i64> {
    let start: DateTime<Utc> = DateTime::from_timestamp_millis(t)?;
    cron.find_next_occurrence(&start, false)
        .ok()
        .map(|d| d.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_does_not_drift_and_skips_missed_runs() {
        let s = Schedule::every(Duration::from_secs(10)).compile().unwrap();
        assert_eq!(s.next_after(0, 3_000), Some(10_000));
        assert_eq!(s.next_after(10_000, 10_000), Some(20_000));
        // Down for 35 s: one run now, the next on the original grid.
        assert_eq!(s.next_after(10_000, 45_000), Some(50_000));
    }

    #[test]
    fn cron_follows_the_expression() {
        let s = Schedule::cron("*/5 * * * *").compile().unwrap();
        // 00:01:00 UTC → 00:05:00
        assert_eq!(s.first_after(60_000), Some(300_000));
        assert_eq!(s.next_after(300_000, 300_000), Some(600_000));
        assert!(Schedule::cron("not cron").compile().is_err());
        assert!(Schedule::every(Duration::ZERO).compile().is_err());
    }

    #[test]
    fn text_schedules_parse() {
        assert_eq!(
            Schedule::parse("every 30 minutes").unwrap(),
            Schedule::every(Duration::from_secs(1800))
        );
        assert!(Schedule::parse("0 0 * * *").is_ok());
        assert!(Schedule::parse("every soon").is_err());
    }
}
