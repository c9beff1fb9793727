//! `Scheduler` over the object's single alarm.
//!
//! Times are absolute: workers-rs reads an `i64` or a `Duration` as an offset from now, so
//! every time goes through a JavaScript `Date` made from milliseconds since the epoch.
//! The engine changes the alarm through its commits (see `storage.rs`); these calls serve
//! inspection and direct use.

use durable_jobs::adapters::Scheduler;
use durable_jobs::SchedulerError;
use wasm_bindgen::JsValue;
use worker::ScheduledTime;

use crate::errors::scheduler_error;
use crate::storage::DurableObjectBackend;

/// The `Date` for `at` milliseconds since the epoch.
pub(crate) fn absolute_time(at: i64) -> ScheduledTime {
    ScheduledTime::new(js_sys::Date::new(&JsValue::from_f64(at as f64)))
}

impl Scheduler for DurableObjectBackend {
    async fn schedule(&self, at: i64) -> Result<(), SchedulerError> {
        self.count(|s| s.alarm_calls += 1);
        self.storage
            .set_alarm(absolute_time(at))
            .await
            .map_err(|e| scheduler_error("set", e))
    }

    async fn cancel(&self) -> Result<(), SchedulerError> {
        self.count(|s| s.alarm_calls += 1);
        self.storage
            .delete_alarm()
            .await
            .map_err(|e| scheduler_error("delete", e))
    }

    async fn scheduled(&self) -> Result<Option<i64>, SchedulerError> {
        self.count(|s| s.alarm_calls += 1);
        self.storage
            .get_alarm()
            .await
            .map_err(|e| scheduler_error("get", e))
    }
}
