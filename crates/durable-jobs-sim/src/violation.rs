//! What a check reports when an invariant does not hold.

use std::fmt;

/// A broken invariant: its class (stable, used to recognise known bugs) and what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant, one of the constants of [`class`].
    pub class: &'static str,
    /// What was seen, with the instance concerned.
    pub detail: String,
}

impl Violation {
    /// A violation of `class`.
    pub fn new(class: &'static str, detail: impl Into<String>) -> Self {
        Violation {
            class,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.class, self.detail)
    }
}

/// The invariant classes.
pub mod class {
    /// Stored records disagree with each other (counters and rows, ids and rows, orphans).
    pub const LAYOUT: &str = "layout";
    /// An instance has due work but no alarm.
    pub const MISSING_ALARM: &str = "missing-alarm";
    /// An instance's alarm is later than its earliest due work.
    pub const LATE_ALARM: &str = "late-alarm";
    /// An acknowledged add, enqueue or start was lost.
    pub const LOST_ACK: &str = "lost-ack";
    /// User code ran on work whose completion or removal was already durable.
    pub const RAN_AFTER_DONE: &str = "ran-after-done";
    /// Two executions of one instance ran at once.
    pub const DOUBLE_EXECUTION: &str = "double-execution";
    /// User code ran inside a request.
    pub const USER_CODE_IN_REQUEST: &str = "user-code-in-request";
    /// A WorkerPool event ran before one that was ahead of it in its queue.
    pub const ORDER: &str = "order";
    /// A delayed WorkerPool event ran before its run time.
    pub const EARLY: &str = "early";
    /// A Debounce batch held more than `max_events` events.
    pub const BATCH_TOO_LARGE: &str = "batch-too-large";
    /// An event id was reported duplicate, or accepted, against its retention period.
    pub const IDEMPOTENCY: &str = "idempotency";
    /// Id records outlived their retention period with nothing left to keep them.
    pub const UNBOUNDED_IDS: &str = "unbounded-ids";
    /// A step listed rows without a limit: its read would grow with a backlog.
    pub const UNBOUNDED_READ: &str = "unbounded-read";
    /// An answer disagrees with what the model knows was acknowledged.
    pub const RESPONSE: &str = "response";
    /// Work was still pending, or did not run, after the final drain.
    pub const LIVENESS: &str = "liveness";
    /// The simulation panicked (in the engine, or in the simulator itself).
    pub const PANIC: &str = "panic";
}
