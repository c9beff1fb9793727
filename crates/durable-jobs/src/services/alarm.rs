//! The one alarm, multiplexed.
//!
//! An instance has a single alarm; each job kind lists the times at which it has work
//! (next run, retry, flush, purge) and the alarm is the earliest of them. On waking, the
//! engine reads its records to decide what is due, so the alarm itself carries no meaning.
//! A step writes the alarm only when that earliest time changed (see `engine::Step`).

/// The earliest of the given times.
pub fn earliest<I: IntoIterator<Item = Option<i64>>>(times: I) -> Option<i64> {
    times.into_iter().flatten().min()
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
