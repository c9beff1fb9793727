//! `Runtime`: the platform clock and the object's id.

use durable_jobs::adapters::Runtime;

use crate::storage::DurableObjectBackend;

impl Runtime for DurableObjectBackend {
    /// The object's hex id. The engine never needs the instance's name from the platform:
    /// it stores the instance id in its metadata on the first request, which is what an
    /// alarm reads (an object may not know its name when woken by an alarm).
    fn instance_key(&self) -> &str {
        &self.instance_key
    }

    /// `Date.now()`. Inside a Worker the clock advances only across I/O, which is all the
    /// engine needs: it compares times between steps, never within one.
    fn now(&self) -> i64 {
        js_sys::Date::now() as i64
    }
}
