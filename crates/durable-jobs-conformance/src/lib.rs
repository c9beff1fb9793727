//! The behaviour suite that every durable-jobs runtime must pass.
//!
//! Each test is an async function generic over [`TestRuntime`]; a runtime implements the
//! trait once and instantiates every test with [`conformance_tests!`], so the in-memory
//! harness and the embedded runtime run the very same suite.
//!
//! ```text
//! durable_jobs_conformance::conformance_tests!(MyRuntime, |fut| my_block_on(fut));
//! ```

#![warn(missing_docs)]

pub mod continuous;
pub mod debounce;
pub mod input;
pub mod inspect;
pub mod jobs;
pub mod task;
pub mod tracking;
pub mod worker_pool;

use std::future::Future;
use std::time::Duration;

use durable_jobs::testing::{TestJobs, TestTransport};
use durable_jobs::{JobsClient, Registry, Transport};

/// A runtime under test: started from a registry, driven on a virtual clock.
pub trait TestRuntime: Sized {
    /// How its client reaches instances.
    type Transport: Transport;

    /// Starts the runtime with `registry`, its clock at a fixed time.
    fn start(registry: Registry) -> impl Future<Output = Self>;

    /// A typed client.
    fn client(&self) -> JobsClient<Self::Transport>;

    /// Moves the virtual clock forward by `by`, running every alarm due on the way in time
    /// order, and returns when no due work remains.
    fn advance(&self, by: Duration) -> impl Future<Output = ()>;

    /// The virtual time (ms since the epoch).
    fn now(&self) -> i64;

    /// The lifecycle event `type` names of one instance, in order.
    fn events_of(&self, instance_id: &str) -> Vec<&'static str>;
}

impl TestRuntime for TestJobs {
    type Transport = TestTransport;

    async fn start(registry: Registry) -> Self {
        TestJobs::new(registry)
    }

    fn client(&self) -> JobsClient<TestTransport> {
        TestJobs::client(self)
    }

    async fn advance(&self, by: Duration) {
        TestJobs::advance(self, by).await;
    }

    fn now(&self) -> i64 {
        TestJobs::now(self)
    }

    fn events_of(&self, instance_id: &str) -> Vec<&'static str> {
        TestJobs::events_of(self, instance_id)
    }
}

/// A runtime that can stop and start again on the same storage.
pub trait Restart: TestRuntime {
    /// Stops the runtime as a shutdown would, then starts it again on the same storage,
    /// with the same registry and tracker, its clock where it was.
    fn restart(self) -> impl Future<Output = Self>;
}

impl Restart for TestJobs {
    async fn restart(self) -> Self {
        TestJobs::restart(&self);
        self
    }
}

/// Instantiates the tests that restart a runtime, as [`conformance_tests!`] does.
#[macro_export]
macro_rules! restart_tests {
    ($rt:ty, $run:expr) => {
        $crate::conformance_tests!(@each $rt, $run;
            worker_pool::delayed_events_survive_a_restart,
        );
    };
}

/// Seconds, shorter to read in tests.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Generates one `#[test]` per behaviour for runtime `$rt`, each run by `$run`
/// (a closure taking the test's future).
#[macro_export]
macro_rules! conformance_tests {
    ($rt:ty, $run:expr) => {
        $crate::conformance_tests!(@each $rt, $run;
            continuous::runs_immediately_then_every_period,
            continuous::waits_for_the_schedule_when_not_immediate,
            continuous::follows_a_cron_schedule,
            continuous::start_twice_creates_once,
            continuous::trigger_runs_now_and_keeps_the_schedule,
            continuous::stop_cancels_and_purges_after_retention,
            continuous::retries_then_on_error_then_next_run,
            continuous::max_duration_ends_a_runs_retries,
            continuous::terminate_from_execute_stops,
            continuous::stop_during_a_run_discards_its_state,
            continuous::restart_after_stop_creates_again,
            continuous::a_panicking_run_is_a_failed_attempt,
            debounce::flushes_after_delay_from_first_event,
            debounce::discard_failed_keeps_the_open_batch,
            debounce::flushes_at_max_events,
            debounce::manual_flush,
            debounce::clear_discards,
            debounce::duplicate_event_ids_are_ignored_also_after_flush,
            debounce::event_during_flush_joins_the_next_batch,
            debounce::failed_flush_keeps_the_batch,
            debounce::max_duration_ends_a_flushs_retries,
            debounce::default_reducer_keeps_the_latest_event,
            debounce::an_expired_event_id_counts_as_new,
            debounce::no_batch_exceeds_max_events,
            debounce::a_panicking_flush_keeps_the_batch,
            debounce::a_panicking_reducer_fails_only_its_add,
            debounce::add_many_answers_each_event,
            debounce::add_many_sends_each_share_in_order,
            worker_pool::same_partition_same_instance_in_order,
            worker_pool::higher_priority_first,
            worker_pool::lists_pending_events_in_queue_order,
            worker_pool::enqueue_many_answers_each_event,
            worker_pool::enqueue_many_stops_a_share_at_a_failed_request,
            worker_pool::retries_then_dead_letter_then_replay,
            worker_pool::max_duration_ends_an_events_retries,
            worker_pool::pause_and_resume,
            worker_pool::cancel_a_pending_event,
            worker_pool::on_empty_runs_when_drained,
            worker_pool::status_aggregates_instances,
            worker_pool::enqueue_answers_during_a_long_execute,
            worker_pool::duplicate_event_ids_are_ignored,
            worker_pool::a_processed_event_id_expires,
            worker_pool::a_panicking_event_is_dead_lettered,
            worker_pool::replays_once_per_dead_letter_and_refuses_reserved_ids,
            task::send_creates_and_on_event_schedules,
            task::the_timer_runs_until_the_task_ends_itself,
            task::trigger_runs_now,
            task::terminate_deletes_and_a_new_event_creates_again,
            task::a_repeated_event_id_counts_once,
            task::retries_then_on_error_sets_the_timer,
            task::an_idle_task_wakes_by_on_idle_or_is_purged,
            task::an_execution_without_a_new_timer_leaves_the_task_idle,
            task::a_refused_or_panicking_event_changes_nothing,
            task::terminate_during_an_execution_discards_its_result,
            task::max_duration_ends_an_executions_retries,
            task::a_retry_keeps_a_task_whose_timer_was_cancelled_meanwhile,
            task::a_task_created_again_forgets_the_ids_of_its_earlier_life,
            worker_pool::delayed_events_run_at_their_time,
            worker_pool::a_delayed_event_does_not_hold_up_its_partition,
            worker_pool::due_delayed_events_take_their_place_in_the_queue,
            worker_pool::cancel_a_delayed_event,
            worker_pool::status_and_pending_show_delayed_events,
            worker_pool::enqueue_many_with_delays,
            worker_pool::run_times_out_of_bounds_are_refused,
            tracking::continuous_lifecycle_events,
            tracking::debounce_lifecycle_events,
            tracking::worker_pool_lifecycle_events,
            tracking::task_lifecycle_events,
            input::unknown_job_names_are_errors,
            input::schema_invalid_values_store_nothing,
            input::ids_with_colons_are_distinct_instances,
            input::oversized_values_are_rejected,
            input::wrong_kind_requests_are_rejected,
        );
    };
    (@each $rt:ty, $run:expr; $($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let run = $run;
                run($crate::$module::$name::<$rt>());
            }
        )*
    };
}
