//! Engine bugs the simulator found that are not fixed yet.
//!
//! While a bug is open, the simulator steers around it: it does not send the input that
//! triggers it, or does not check what it breaks, so that every seed keeps testing all the
//! rest. Each bug keeps a seed that fails with nothing avoided, as an ignored test in
//! `tests/regressions.rs`; `SIM_STRICT=1` turns every avoidance off, `SIM_ALLOW=<field>`
//! one of them. Once a bug is fixed, its field goes, and its test loses its `#[ignore]`.

/// Which known engine bugs to steer around.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Avoid {
    /// `workerPoolReplay` and `workerPoolDiscard` act once per id listed, so a repeated id
    /// replays (or discards) the same dead letter several times: the event is queued
    /// twice and the dead counter drifts. Avoided by never repeating an id in one request.
    pub repeated_dead_letter_ids: bool,
    /// A `workerPoolCancel` that runs between an event's claim and the start of its user
    /// code (while the alarm waits for in-flight requests to be durable) removes the event
    /// and answers `cancelled: true`, yet the event then runs; its completion counts it off
    /// `pending` a second time and writes its id record again, leaving the cancel's expiry
    /// entry behind (whose sweep later deletes the newer record). Avoided by never having a
    /// cancel and an alarm call of the same pool instance in flight together.
    pub cancel_racing_a_claim: bool,
    /// A WorkerPool completion step sweeps expired ids after writing its own event's id
    /// record, and the sweep, which reads storage without that write, clears the
    /// instance's `sweep_at`: the id records of the last events an instance completes are
    /// never swept. Avoided by not checking WorkerPool id records at the end.
    pub lost_sweep_after_completion: bool,
    /// The ids the engine generates for WorkerPool events sent without one
    /// (`auto-{index}-{seq}`) share the namespace of the users' ids, and neither side checks
    /// the other: a user's id of that shape is reported as a duplicate of an unrelated
    /// event (which is then dropped), or takes over its id record, so that a cancel hits
    /// the wrong event, the other event's record is overwritten, and an expiry entry is
    /// left pointing at a record that is queued again. Avoided by never sending such an id.
    pub ids_like_generated_ones: bool,
}

impl Avoid {
    /// Steer around every known bug (the default). The four bugs listed above are fixed,
    /// so this steers around nothing; their regression seeds run by default.
    pub const KNOWN_BUGS: Avoid = Avoid {
        repeated_dead_letter_ids: false,
        cancel_racing_a_claim: false,
        lost_sweep_after_completion: false,
        ids_like_generated_ones: false,
    };

    /// Steer around nothing.
    pub const NOTHING: Avoid = Avoid {
        repeated_dead_letter_ids: false,
        cancel_racing_a_claim: false,
        lost_sweep_after_completion: false,
        ids_like_generated_ones: false,
    };

    /// [`NOTHING`](Self::NOTHING) when `SIM_STRICT=1`; else [`KNOWN_BUGS`](Self::KNOWN_BUGS)
    /// but for the bugs `SIM_ALLOW` names (field names, comma-separated).
    pub fn from_env() -> Avoid {
        if std::env::var("SIM_STRICT").is_ok_and(|v| v != "0") {
            return Avoid::NOTHING;
        }
        let allowed = std::env::var("SIM_ALLOW").unwrap_or_default();
        let mut avoid = Avoid::KNOWN_BUGS;
        for name in allowed.split(',').map(str::trim) {
            match name {
                "repeated_dead_letter_ids" => avoid.repeated_dead_letter_ids = false,
                "cancel_racing_a_claim" => avoid.cancel_racing_a_claim = false,
                "lost_sweep_after_completion" => avoid.lost_sweep_after_completion = false,
                "ids_like_generated_ones" => avoid.ids_like_generated_ones = false,
                _ => {}
            }
        }
        avoid
    }

    /// The environment that asks for this: nothing for the default, else `SIM_STRICT=1 `
    /// or `SIM_ALLOW=<fields> `.
    pub fn env(&self) -> String {
        if *self == Avoid::KNOWN_BUGS {
            return String::new();
        }
        if *self == Avoid::NOTHING {
            return "SIM_STRICT=1 ".to_string();
        }
        let allowed: Vec<&str> = [
            (self.repeated_dead_letter_ids, "repeated_dead_letter_ids"),
            (self.cancel_racing_a_claim, "cancel_racing_a_claim"),
            (
                self.lost_sweep_after_completion,
                "lost_sweep_after_completion",
            ),
            (self.ids_like_generated_ones, "ids_like_generated_ones"),
        ]
        .into_iter()
        .filter(|(avoided, _)| !avoided)
        .map(|(_, name)| name)
        .collect();
        format!("SIM_ALLOW={} ", allowed.join(","))
    }
}
