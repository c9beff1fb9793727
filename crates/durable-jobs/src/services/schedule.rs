//! The one alarm, multiplexed (guarantee 5).
//!
//! An instance has a single alarm; each job kind lists the times at which it has work
//! (next run, retry, flush, purge) and the alarm is the earliest of them. On waking, the
//! engine reads its records to decide what is due, so the alarm itself carries no meaning.

/// The earliest of the given times.
pub fn earliest<I: IntoIterator<Item = Option<i64>>>(times: I) -> Option<i64> {
    times.into_iter().flatten().min()
}

/// Sets the alarm in `batch` when the desired time differs from what the committed state
/// already implies (saving a write on platforms that bill alarm changes), or always when
/// `force` is set (after an alarm fired, the platform's alarm was consumed).
pub fn reconcile(
    batch: &mut crate::adapters::WriteBatch,
    before: Option<i64>,
    after: Option<i64>,
    force: bool,
) {
    if force || before != after {
        batch.set_alarm(after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_ignores_missing() {
        assert_eq!(earliest([None, Some(5), Some(3), None]), Some(3));
        assert_eq!(earliest([None, None]), None);
    }
}
