//! When a Continuous job runs: every fixed period, or on a cron expression in a time zone.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use crate::retry::millis;

/// The prefix that names a cron schedule's time zone in text, as cron and most cron
/// libraries write it: `CRON_TZ=Europe/Berlin 30 2 * * *`. `TZ=` is read too.
const ZONE_PREFIXES: [&str; 2] = ["CRON_TZ=", "TZ="];

/// A Continuous job's schedule.
///
/// Runs follow the previous *scheduled* time, not the end of the last run, so they do not
/// drift; after downtime the missed runs collapse into one.
///
/// A cron schedule reads its expression on the wall clock of a time zone: UTC with
/// [`cron`](Self::cron), an IANA zone with [`cron_in`](Self::cron_in). Where the zone
/// changes its clock for daylight saving time, the rule is the one of classic cron:
///
/// - **Fixed-time expressions** (a single second, minute and hour, like `30 2 * * *`)
///   run once per day they match. A time the clock skips (02:30 when it jumps from 02:00
///   to 03:00) runs at the first instant after the jump, 03:00; a time that happens twice
///   (02:30 when the clock falls back from 03:00 to 02:00) runs at its first occurrence
///   only.
/// - **Every other expression** (a wildcard, step, range or list in the second, minute or
///   hour, like `0 * * * *` or `*/15 * * * *`) follows real time: it runs at each instant
///   whose wall clock time matches, so an hourly job runs every real hour, once in the
///   repeated hour's first pass and once in its second, and not at all in the skipped
///   hour, where no wall clock time exists.
///
/// The schedule's text form ([`parse`](Self::parse) and `Display`) names the zone the
/// way cron does: `CRON_TZ=Europe/Berlin 30 2 * * *`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(Repr);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Repr {
    Every(Duration),
    Cron {
        expression: String,
        /// An IANA zone name; `None` is UTC.
        zone: Option<String>,
    },
}

impl Schedule {
    /// Every `period`, starting from the first run.
    pub fn every(period: Duration) -> Self {
        Schedule(Repr::Every(period))
    }

    /// On a cron expression (5 fields, or 6 with seconds first), in UTC. The expression is
    /// checked when the registry is built.
    pub fn cron(expression: impl Into<String>) -> Self {
        Schedule(Repr::Cron {
            expression: expression.into(),
            zone: None,
        })
    }

    /// On a cron expression read on the wall clock of the IANA time zone `zone` (such as
    /// `Europe/Berlin` or `America/New_York`; the name is case-sensitive). The expression
    /// and the zone are checked when the registry is built. See the type's documentation
    /// for what happens when the zone changes its clock.
    ///
    /// ```
    /// use durable_jobs::Schedule;
    ///
    /// // 02:30 Berlin time, every day, summer and winter.
    /// let nightly = Schedule::cron_in("30 2 * * *", "Europe/Berlin");
    /// assert_eq!(nightly.to_string(), "CRON_TZ=Europe/Berlin 30 2 * * *");
    /// ```
    pub fn cron_in(expression: impl Into<String>, zone: impl Into<String>) -> Self {
        Schedule(Repr::Cron {
            expression: expression.into(),
            zone: Some(zone.into()),
        })
    }

    /// The IANA time zone of a cron schedule made with [`cron_in`](Self::cron_in) (or
    /// parsed with a `CRON_TZ=` prefix); `None` for UTC and for `every`.
    pub fn time_zone(&self) -> Option<&str> {
        match &self.0 {
            Repr::Cron { zone, .. } => zone.as_deref(),
            Repr::Every(_) => None,
        }
    }

    /// Parses text, and checks it: `every 30 minutes` (a humantime duration), a cron
    /// expression (in UTC), or a cron expression after `CRON_TZ=<zone>` (or `TZ=<zone>`)
    /// and a space, in that IANA time zone: `CRON_TZ=Europe/Berlin 30 2 * * *`. The
    /// schedule's `Display` writes the same forms back.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let schedule = if let Some(period) = text.strip_prefix("every ") {
            let d = humantime::parse_duration(period.trim())
                .map_err(|e| format!("`{period}` is not a duration: {e}"))?;
            Schedule::every(d)
        } else if let Some(rest) = ZONE_PREFIXES.iter().find_map(|p| text.strip_prefix(p)) {
            let (zone, expression) = rest.split_once(char::is_whitespace).ok_or_else(|| {
                format!("`{text}` names a time zone but holds no cron expression after it")
            })?;
            Schedule::cron_in(expression.trim(), zone)
        } else {
            Schedule::cron(text)
        };
        schedule.compile()?;
        Ok(schedule)
    }

    pub(crate) fn compile(&self) -> Result<CompiledSchedule, String> {
        match &self.0 {
            Repr::Every(d) if d.is_zero() => Err("the period of `every` must be above zero".into()),
            Repr::Every(d) if millis(*d) == 0 => {
                Err("the period of `every` must be at least 1 ms".into())
            }
            Repr::Every(d) => Ok(CompiledSchedule::Every(millis(*d))),
            Repr::Cron { expression, zone } => {
                let cron = croner::Cron::from_str(expression)
                    .map_err(|e| format!("`{expression}` is not a cron expression: {e}"))?;
                let zone = match zone {
                    None => Tz::UTC,
                    Some(name) => Tz::from_str(name).map_err(|_| {
                        format!(
                            "`{name}` is not an IANA time zone name \
                             (such as `Europe/Berlin`, `America/New_York` or `UTC`)"
                        )
                    })?,
                };
                Ok(CompiledSchedule::Cron(Box::new(ZonedCron::new(cron, zone))))
            }
        }
    }
}

impl fmt::Display for Schedule {
    /// The text [`parse`](Schedule::parse) reads: `every 30m`, `0 * * * *`, or
    /// `CRON_TZ=Europe/Berlin 30 2 * * *`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Every(d) => write!(f, "every {}", humantime::format_duration(*d)),
            Repr::Cron {
                expression,
                zone: None,
            } => f.write_str(expression),
            Repr::Cron {
                expression,
                zone: Some(zone),
            } => write!(f, "{}{zone} {expression}", ZONE_PREFIXES[0]),
        }
    }
}

/// A schedule ready to compute run times.
#[derive(Debug, Clone)]
pub(crate) enum CompiledSchedule {
    Every(i64),
    Cron(Box<ZonedCron>),
}

/// A cron expression read on the wall clock of a zone.
#[derive(Debug, Clone)]
pub(crate) struct ZonedCron {
    cron: croner::Cron,
    zone: Tz,
    /// No wildcard and no step in the second, minute and hour: the expression names wall
    /// clock times, which run once each whatever the clock does (see [`Schedule`]).
    fixed_time: bool,
}

impl CompiledSchedule {
    /// The first run after `now` when the job does not start immediately.
    pub fn first_after(&self, now: i64) -> Option<i64> {
        match self {
            CompiledSchedule::Every(p) => Some(now.saturating_add(*p)),
            CompiledSchedule::Cron(c) => c.after(now),
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
            CompiledSchedule::Cron(c) => c.after(prev.max(now)),
        }
    }
}

/// Matches a fixed-time expression may pass over while looking for the next run: those in
/// the second pass of a repeated hour, which already ran in the first. An expression
/// listing every second of the hour has 3,600 there.
const MAX_SKIPPED_MATCHES: usize = 100_000;

impl ZonedCron {
    fn new(cron: croner::Cron, zone: Tz) -> Self {
        let fixed = |c: &croner::CronComponent| !c.from_wildcard && c.step <= 1;
        let p = &cron.pattern;
        let fixed_time = fixed(&p.seconds) && fixed(&p.minutes) && fixed(&p.hours);
        ZonedCron {
            cron,
            zone,
            fixed_time,
        }
    }

    /// The first run strictly after the instant `t` (ms).
    fn after(&self, t: i64) -> Option<i64> {
        let start = DateTime::from_timestamp_millis(t)?.with_timezone(&self.zone);
        if self.fixed_time {
            if let Some(next) = self.wall_clock_after(t, start.naive_local()) {
                return Some(next);
            }
        }
        // croner walks the zone's wall clock and runs an expression with a wildcard or a
        // step at every instant that matches, both passes of a repeated hour included, as
        // the rule on `Schedule` says; it needs the exact instant of the previous run to
        // know which pass it is in, which `t` is.
        self.cron
            .find_next_occurrence(&start, false)
            .ok()
            .map(|d| d.timestamp_millis())
    }

    /// For a fixed-time expression: walks its matches on the wall clock from `local` (the
    /// wall clock time of `t`), each at its first instant, until one lies after `t`.
    ///
    /// croner applies the same rule only to expressions of a single time a day: with a
    /// list (`30 2,14 * * *`) it would skip 02:30 on the day the clock jumps over it and
    /// run it twice on the day the clock repeats it.
    fn wall_clock_after(&self, t: i64, local: NaiveDateTime) -> Option<i64> {
        let mut cursor = local;
        for _ in 0..MAX_SKIPPED_MATCHES {
            let wall = self.cron.find_next_occurrence(&cursor, false).ok()?;
            if let Some(at) = self.first_instant(wall) {
                if at > t {
                    return Some(at);
                }
            }
            cursor = wall;
        }
        None
    }

    /// When the wall clock first shows `wall`, or, for a time the clock jumps over, the
    /// first instant after the jump.
    fn first_instant(&self, wall: NaiveDateTime) -> Option<i64> {
        match self.zone.from_local_datetime(&wall) {
            LocalResult::Single(d) => Some(d.timestamp_millis()),
            LocalResult::Ambiguous(first, _) => Some(first.timestamp_millis()),
            LocalResult::None => self.end_of_gap(wall),
        }
    }

    /// The instant the clock jumps over the missing wall clock time `wall`: the first one
    /// whose wall clock time is past it. Wall clock time only moves forward around a jump,
    /// so a binary search between the instants `wall` has at the offsets of the day
    /// before and the day after finds it.
    fn end_of_gap(&self, wall: NaiveDateTime) -> Option<i64> {
        let as_utc = wall.and_utc();
        let offset_ms = |at: DateTime<Utc>| {
            let offset = self.zone.offset_from_utc_datetime(&at.naive_utc());
            i64::from(offset.fix().local_minus_utc()) * 1000
        };
        let day = TimeDelta::days(1);
        let before = offset_ms(as_utc.checked_sub_signed(day)?);
        let after = offset_ms(as_utc.checked_add_signed(day)?);
        let wall_ms = as_utc.timestamp_millis();
        let reached = |at: i64| -> Option<bool> {
            let local = DateTime::from_timestamp_millis(at)?.with_timezone(&self.zone);
            Some(local.naive_local() >= wall)
        };
        let (mut lo, mut hi) = (wall_ms - after, wall_ms - before);
        if reached(lo)? || !reached(hi)? {
            return None;
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if reached(mid)? {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(hi)
    }
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

    #[test]
    fn text_names_the_time_zone() {
        let berlin = Schedule::cron_in("30 2 * * *", "Europe/Berlin");
        assert_eq!(berlin.time_zone(), Some("Europe/Berlin"));
        assert_eq!(berlin.to_string(), "CRON_TZ=Europe/Berlin 30 2 * * *");
        assert_eq!(
            Schedule::parse("CRON_TZ=Europe/Berlin 30 2 * * *").unwrap(),
            berlin
        );
        assert_eq!(
            Schedule::parse("  TZ=Europe/Berlin   30 2 * * *").unwrap(),
            berlin
        );
        for s in [
            berlin,
            Schedule::cron("*/5 * * * *"),
            Schedule::every(Duration::from_secs(90)),
        ] {
            assert_eq!(Schedule::parse(&s.to_string()).unwrap(), s, "{s}");
        }
        assert_eq!(Schedule::cron("0 * * * *").time_zone(), None);
    }

    #[test]
    fn a_bad_time_zone_is_a_clear_error() {
        let err = Schedule::cron_in("30 2 * * *", "Europe/Berln")
            .compile()
            .unwrap_err();
        assert!(
            err.contains("`Europe/Berln` is not an IANA time zone"),
            "{err}"
        );
        // Zone names are case-sensitive, as in the IANA database.
        assert!(Schedule::cron_in("0 * * * *", "europe/berlin")
            .compile()
            .is_err());
        let err = Schedule::parse("CRON_TZ=Mars/Olympus 0 * * * *").unwrap_err();
        assert!(err.contains("Mars/Olympus"), "{err}");
        let err = Schedule::parse("CRON_TZ=Europe/Berlin").unwrap_err();
        assert!(err.contains("no cron expression"), "{err}");
        assert!(Schedule::parse("CRON_TZ=Europe/Berlin not cron").is_err());
    }

    /// Milliseconds of an RFC 3339 time.
    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis()
    }

    /// A run time on the zone's wall clock, with its offset: `2024-03-31T03:00:00+02:00`.
    fn local(zone: &str, at: i64) -> String {
        let zone: Tz = zone.parse().unwrap();
        DateTime::from_timestamp_millis(at)
            .unwrap()
            .with_timezone(&zone)
            .to_rfc3339()
    }

    /// The runs of `expression` in `zone` after `from` and before `until`, each computed
    /// from the one before, as the engine does after every run.
    fn runs(expression: &str, zone: &str, from: &str, until: &str) -> Vec<i64> {
        let s = Schedule::cron_in(expression, zone).compile().unwrap();
        let until = ms(until);
        let mut out = Vec::new();
        let mut t = ms(from);
        while let Some(next) = s.next_after(t, t).filter(|n| *n < until) {
            assert!(next > t, "{expression} in {zone}: {next} after {t}");
            out.push(next);
            t = next;
        }
        out
    }

    /// A daily job over a whole year runs once every day, at its wall clock time, except
    /// on the day the clock jumps over that time, when it runs at the end of the jump.
    fn once_a_day_for_a_year(expression: &str, zone: &str, time: &str, jump_day: &str) {
        let all = runs(
            expression,
            zone,
            "2024-01-01T00:00:00Z",
            "2025-01-01T00:00:00Z",
        );
        let shown: Vec<String> = all.iter().map(|t| local(zone, *t)).collect();
        // Every local day of 2024 but the first hours of 1 January, which lie in 2023 in
        // UTC for zones west of it.
        let days: std::collections::BTreeSet<&str> = shown.iter().map(|s| &s[..10]).collect();
        assert_eq!(days.len(), shown.len(), "one run a day: {shown:?}");
        assert!(shown.len() >= 365, "{} runs", shown.len());
        for s in &shown {
            if s.starts_with(jump_day) {
                assert_eq!(&s[11..19], "03:00:00", "{s}");
            } else {
                assert_eq!(&s[11..19], time, "{s}");
            }
        }
    }

    #[test]
    fn a_daily_job_runs_once_a_day_across_the_clock_changes() {
        // Berlin jumps from 02:00 to 03:00 on 31 March 2024 and back from 03:00 to 02:00
        // on 27 October: 02:30 is missing on the first day and happens twice on the second.
        once_a_day_for_a_year("30 2 * * *", "Europe/Berlin", "02:30:00", "2024-03-31");
        // New York jumps from 02:00 to 03:00 on 10 March 2024 and back from 02:00 to 01:00
        // on 3 November: 02:30 is missing on the first day, 01:30 happens twice on the second.
        once_a_day_for_a_year("30 2 * * *", "America/New_York", "02:30:00", "2024-03-10");
        once_a_day_for_a_year("30 1 * * *", "America/New_York", "01:30:00", "none");
    }

    #[test]
    fn a_missing_time_runs_at_the_end_of_the_jump() {
        let all = runs(
            "30 2 * * *",
            "Europe/Berlin",
            "2024-03-29T12:00:00Z",
            "2024-04-02T00:00:00Z",
        );
        let expected = [
            "2024-03-30T01:30:00Z", // 02:30 +01:00
            "2024-03-31T01:00:00Z", // 03:00 +02:00: 02:30 does not exist
            "2024-04-01T00:30:00Z", // 02:30 +02:00
        ];
        assert_eq!(all, expected.map(ms));
        let all = runs(
            "30 2 * * *",
            "America/New_York",
            "2024-03-09T00:00:00Z",
            "2024-03-12T00:00:00Z",
        );
        let expected = [
            "2024-03-09T07:30:00Z", // 02:30 -05:00
            "2024-03-10T07:00:00Z", // 03:00 -04:00: 02:30 does not exist
            "2024-03-11T06:30:00Z", // 02:30 -04:00
        ];
        assert_eq!(all, expected.map(ms));
    }

    #[test]
    fn a_repeated_time_runs_at_its_first_occurrence_only() {
        let all = runs(
            "30 2 * * *",
            "Europe/Berlin",
            "2024-10-26T12:00:00Z",
            "2024-10-29T00:00:00Z",
        );
        let expected = [
            "2024-10-27T00:30:00Z", // 02:30 +02:00; not again at 02:30 +01:00 (01:30Z)
            "2024-10-28T01:30:00Z", // 02:30 +01:00
        ];
        assert_eq!(all, expected.map(ms));
        let all = runs(
            "30 1 * * *",
            "America/New_York",
            "2024-11-02T12:00:00Z",
            "2024-11-05T00:00:00Z",
        );
        let expected = [
            "2024-11-03T05:30:00Z", // 01:30 -04:00; not again at 01:30 -05:00 (06:30Z)
            "2024-11-04T06:30:00Z", // 01:30 -05:00
        ];
        assert_eq!(all, expected.map(ms));
        // An instance started in the second pass of the repeated hour, after its first
        // 02:30, does not run at the second: that wall clock time has been.
        let s = Schedule::cron_in("30 2 * * *", "Europe/Berlin")
            .compile()
            .unwrap();
        let second_pass = ms("2024-10-27T01:10:00Z"); // 02:10 +01:00
        assert_eq!(s.first_after(second_pass), Some(ms("2024-10-28T01:30:00Z")));
    }

    #[test]
    fn times_in_a_list_follow_the_same_rule() {
        let all = runs(
            "30 2,14 * * *",
            "Europe/Berlin",
            "2024-03-31T00:00:00Z",
            "2024-04-01T00:00:00Z",
        );
        assert_eq!(
            all,
            ["2024-03-31T01:00:00Z", "2024-03-31T12:30:00Z"].map(ms)
        );
        let all = runs(
            "30 2,14 * * *",
            "Europe/Berlin",
            "2024-10-26T22:00:00Z",
            "2024-10-27T23:00:00Z",
        );
        assert_eq!(
            all,
            ["2024-10-27T00:30:00Z", "2024-10-27T13:30:00Z"].map(ms)
        );
        // Two missing times make one run at the end of the jump.
        let all = runs(
            "0,30 2 * * *",
            "Europe/Berlin",
            "2024-03-30T23:00:00Z",
            "2024-03-31T23:00:00Z",
        );
        assert_eq!(all, ["2024-03-31T01:00:00Z"].map(ms));
    }

    /// An hourly job over both clock changes of a year runs every real hour: the gaps
    /// between runs are all one hour, 23 runs on the short day and 25 on the long one.
    fn every_real_hour(zone: &str, short_day: &str, long_day: &str) {
        let all = runs(
            "0 * * * *",
            zone,
            "2024-01-01T00:00:00Z",
            "2025-01-01T00:00:00Z",
        );
        assert!(all.windows(2).all(|w| w[1] - w[0] == 3_600_000));
        for t in &all {
            assert_eq!(t % 3_600_000, 0, "{}", local(zone, *t));
        }
        let on = |day: &str| {
            all.iter()
                .filter(|t| local(zone, **t).starts_with(day))
                .count()
        };
        assert_eq!(on(short_day), 23);
        assert_eq!(on(long_day), 25);
    }

    #[test]
    fn an_hourly_job_runs_every_real_hour_across_the_clock_changes() {
        every_real_hour("Europe/Berlin", "2024-03-31", "2024-10-27");
        every_real_hour("America/New_York", "2024-03-10", "2024-11-03");
        let all = runs(
            "0 * * * *",
            "Europe/Berlin",
            "2024-10-26T23:30:00Z",
            "2024-10-27T02:30:00Z",
        );
        let shown: Vec<String> = all.iter().map(|t| local("Europe/Berlin", *t)).collect();
        assert_eq!(
            shown,
            [
                "2024-10-27T02:00:00+02:00",
                "2024-10-27T02:00:00+01:00",
                "2024-10-27T03:00:00+01:00",
            ]
        );
    }

    #[test]
    fn utc_is_a_zone_without_clock_changes() {
        let plain = Schedule::cron("30 2 * * *").compile().unwrap();
        let utc = Schedule::cron_in("30 2 * * *", "UTC").compile().unwrap();
        let t = ms("2024-03-30T12:00:00Z");
        assert_eq!(plain.first_after(t), Some(ms("2024-03-31T02:30:00Z")));
        assert_eq!(utc.first_after(t), plain.first_after(t));
    }
}
