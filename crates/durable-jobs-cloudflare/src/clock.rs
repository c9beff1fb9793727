//! `Clock`: the platform clock.

use durable_jobs::adapters::Clock;

use crate::storage::DurableObjectBackend;

impl Clock for DurableObjectBackend {
    /// `Date.now()`. Inside a Worker the clock advances only across I/O, which is all the
    /// engine needs: it compares times between steps, never within one.
    fn now(&self) -> i64 {
        js_sys::Date::now() as i64
    }
}
