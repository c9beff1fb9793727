//! The typed client: `client.continuous::<T>()`, `.debounce::<T>()`,
//! `.worker_pool::<T>()`, over any [`Transport`].

pub(crate) mod many;

use std::future::Future;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use crate::errors::JobError;
use crate::ids::{InstanceId, JobKind};
use crate::jobs::continuous::{Continuous, ContinuousClient};
use crate::jobs::debounce::{Debounce, DebounceClient};
use crate::jobs::task::{Task, TaskClient};
use crate::jobs::worker_pool::{WorkerPool, WorkerPoolClient};
use crate::registry::Registry;
use crate::wire::{Operation, Request, Response};

/// Delivers a request to the instance it addresses and brings back the answer. Each
/// runtime provides one (in-process, Durable Object stub, HTTP).
///
/// The future has no `Send` bound in the trait; a transport whose future is `Send` makes
/// the client's futures `Send` too, so they can be spawned on a multi-threaded executor.
pub trait Transport {
    /// Sends one request.
    fn send(&self, request: Request) -> impl Future<Output = Result<Response, JobError>>;
}

impl<T: Transport + ?Sized> Transport for &T {
    fn send(&self, request: Request) -> impl Future<Output = Result<Response, JobError>> {
        (**self).send(request)
    }
}

impl<T: Transport + ?Sized> Transport for Arc<T> {
    fn send(&self, request: Request) -> impl Future<Output = Result<Response, JobError>> {
        (**self).send(request)
    }
}

/// The typed client. Cheap to clone when the transport is.
#[derive(Debug, Clone)]
pub struct JobsClient<T> {
    pub(crate) registry: Registry,
    pub(crate) transport: T,
    /// The next round-robin turn of WorkerPool events that have neither a partition key
    /// nor an event id; shared by the client's clones.
    pub(crate) round_robin: Arc<AtomicU32>,
}

impl<T: Transport> JobsClient<T> {
    /// A client for the jobs of `registry`, sending through `transport`.
    pub fn new(registry: Registry, transport: T) -> Self {
        JobsClient {
            registry,
            transport,
            round_robin: Arc::default(),
        }
    }

    /// Takes the WorkerPool round robin (events with neither a partition key nor an event
    /// id) from `counter`, which holds the next turn (the instance is `turn % concurrency`).
    ///
    /// By default each client starts its own rotation at instance 0, which is right for a
    /// client that lives as long as the process. Where clients are short-lived, one per
    /// request say, pass every one the same counter, so the rotation carries on across
    /// them; a counter starting at a random value spreads separate processes too.
    pub fn with_round_robin(mut self, counter: Arc<AtomicU32>) -> Self {
        self.round_robin = counter;
        self
    }

    /// The Continuous job of type `J` (registered once).
    pub fn continuous<J: Continuous>(&self) -> ContinuousClient<'_, J, T> {
        ContinuousClient::new(self, self.name_of::<J>(JobKind::Continuous))
    }

    /// The Continuous job of type `J` registered as `name`.
    pub fn continuous_named<J: Continuous>(&self, name: &str) -> ContinuousClient<'_, J, T> {
        ContinuousClient::new(self, Ok(name.to_string()))
    }

    /// The Debounce job of type `J` (registered once).
    pub fn debounce<J: Debounce>(&self) -> DebounceClient<'_, J, T> {
        DebounceClient::new(self, self.name_of::<J>(JobKind::Debounce))
    }

    /// The Debounce job of type `J` registered as `name`.
    pub fn debounce_named<J: Debounce>(&self, name: &str) -> DebounceClient<'_, J, T> {
        DebounceClient::new(self, Ok(name.to_string()))
    }

    /// The WorkerPool of type `J` (registered once).
    pub fn worker_pool<J: WorkerPool>(&self) -> WorkerPoolClient<'_, J, T> {
        WorkerPoolClient::new(self, self.name_of::<J>(JobKind::WorkerPool))
    }

    /// The WorkerPool of type `J` registered as `name`.
    pub fn worker_pool_named<J: WorkerPool>(&self, name: &str) -> WorkerPoolClient<'_, J, T> {
        WorkerPoolClient::new(self, Ok(name.to_string()))
    }

    /// The Task job of type `J` (registered under one name).
    pub fn task<J: Task>(&self) -> TaskClient<'_, J, T> {
        TaskClient::new(self, self.name_of::<J>(JobKind::Task))
    }

    /// The Task job registered as `name`.
    pub fn task_named<J: Task>(&self, name: &str) -> TaskClient<'_, J, T> {
        TaskClient::new(self, Ok(name.to_string()))
    }

    /// Sends a raw request (what the typed accessors build).
    pub async fn send(&self, request: Request) -> Result<Response, JobError> {
        self.transport.send(request).await
    }

    /// The registry the client routes by.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Sends `op` to instance `key` of the job `name` of `kind`: what every typed client
    /// method does. `name` is the client's registry lookup, so a job that is not
    /// registered fails here, before anything is sent.
    pub(crate) async fn call(
        &self,
        kind: JobKind,
        name: &Result<String, JobError>,
        key: impl Into<String>,
        op: Operation,
    ) -> Result<Response, JobError> {
        let name = name.as_deref().map_err(Clone::clone)?;
        let instance = InstanceId::new(kind, name, key);
        self.transport.send(Request { instance, op }).await
    }

    fn name_of<J: 'static>(&self, kind: JobKind) -> Result<String, JobError> {
        self.registry.name_of::<J>(kind).map(str::to_string)
    }
}

/// Matches a response against the one shape a client method expects and returns the
/// arm's value in `Ok`; any other response becomes the [`unexpected`] error.
///
/// A macro rather than a function taking a closure: the expected shape is a pattern, and
/// only a macro can take one, so each call site is a single arm. A closure would have to
/// repeat the fallback arm (handing the response back for the error message) every time.
macro_rules! expect_response {
    ($response:expr, $pattern:pat => $value:expr $(,)?) => {
        match $response {
            $pattern => Ok($value),
            other => Err($crate::client::unexpected(other)),
        }
    };
}
pub(crate) use expect_response;

/// The error for an answer of the wrong kind (a transport or version mismatch).
pub(crate) fn unexpected(response: Response) -> JobError {
    JobError::Client {
        status: 0,
        message: format!("unexpected response {response:?}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::executor::block_on;

    use super::*;
    use crate::jobs::continuous::{ContinuousContext, Schedule};
    use crate::jobs::worker_pool::{EnqueueRequest, WorkerPoolContext};

    /// Answers every request with `Triggered`, whatever it asked for.
    struct AlwaysTriggered;

    impl Transport for AlwaysTriggered {
        async fn send(&self, _: Request) -> Result<Response, JobError> {
            Ok(Response::Triggered)
        }
    }

    struct Tick;

    impl Continuous for Tick {
        type State = ();
        type Error = String;
        fn schedule(&self) -> Schedule {
            Schedule::every(Duration::from_secs(1))
        }
        async fn execute(&self, _: &mut ContinuousContext<()>) -> Result<(), String> {
            Ok(())
        }
    }

    struct Pool;

    impl WorkerPool for Pool {
        type Event = ();
        type Error = String;
        fn concurrency(&self) -> u32 {
            3
        }
        async fn execute(&self, _: &WorkerPoolContext<()>) -> Result<(), String> {
            Ok(())
        }
    }

    /// Where `client` sends its next `count` events without a key or an id.
    fn next_turns(client: &JobsClient<AlwaysTriggered>, count: usize) -> Vec<u32> {
        let pool = client.worker_pool::<Pool>();
        (0..count)
            .map(|_| pool.route(&EnqueueRequest::new()).unwrap())
            .collect()
    }

    #[test]
    fn clients_sharing_a_round_robin_carry_on_its_rotation() {
        let registry = Registry::builder()
            .worker_pool("pool", Pool)
            .build()
            .unwrap();
        let fresh = || JobsClient::new(registry.clone(), AlwaysTriggered);
        assert_eq!(next_turns(&fresh(), 2), [0, 1]);
        assert_eq!(
            next_turns(&fresh(), 2),
            [0, 1],
            "each client starts its own"
        );

        let shared = Arc::new(AtomicU32::new(0));
        let sharing = || fresh().with_round_robin(shared.clone());
        assert_eq!(next_turns(&sharing(), 2), [0, 1]);
        assert_eq!(next_turns(&sharing(), 2), [2, 0]);
        assert_eq!(next_turns(&sharing(), 1), [1]);

        let offset = fresh().with_round_robin(Arc::new(AtomicU32::new(7)));
        assert_eq!(
            next_turns(&offset, 3),
            [1, 2, 0],
            "starts at the counter's value"
        );
        let wrapping = fresh().with_round_robin(Arc::new(AtomicU32::new(u32::MAX)));
        assert_eq!(next_turns(&wrapping, 2), [0, 0], "wraps without a panic");
    }

    #[test]
    fn an_answer_of_the_wrong_kind_is_a_client_error() {
        let registry = Registry::builder().build().unwrap();
        let client = JobsClient::new(registry, AlwaysTriggered);
        let ticks = client.continuous_named::<Tick>("tick");
        block_on(async {
            ticks.trigger("a").await.unwrap();
            match ticks.status("a").await {
                Err(JobError::Client { status, message }) => {
                    assert_eq!(status, 0);
                    assert_eq!(message, "unexpected response Triggered");
                }
                other => panic!("expected a client error, got {other:?}"),
            }
        });
    }
}
