//! The engine Durable Object: one class for every job kind, one object per job instance.

use std::cell::Cell;
use std::sync::Arc;

use durable_jobs::services::tracker::{EventTracker, HttpBatchTracker};
use durable_jobs::wire::{Reply, Request as JobRequest, Response as JobResponse};
use durable_jobs::{Engine, JobError, Registry, RegistryError};
use worker::{console_error, Env, Method, Request, Response, State};

use crate::storage::{DurableObjectBackend, StorageReport, StorageStats};
use crate::tracker::{FetchSink, TrackerSettings};

/// The path of job requests: a POST of a `durable_jobs::wire::Request` as JSON, answered
/// with a `durable_jobs::wire::Reply` as JSON.
pub(crate) const REQUEST_PATH: &str = "/request";

/// The path answering a GET with the object's [`StorageReport`] as JSON.
pub const STORAGE_STATS_PATH: &str = "/storage-stats";

/// What the Durable Object class declared by [`engine_object!`](crate::engine_object)
/// delegates to: the object's engine, and its event tracker.
///
/// The engine lives as long as the object, so every request and alarm of the instance goes
/// through its one lock: on Durable Objects, events interleave at every `await`, and the
/// engine's lock is what keeps storage transitions serial.
pub struct EngineObject {
    state: State,
    engine: Result<Engine<DurableObjectBackend>, RegistryError>,
    tracker: Option<Arc<HttpBatchTracker<FetchSink>>>,
    last_request: Cell<StorageStats>,
}

impl EngineObject {
    /// The engine of the object `state`, for the jobs of `registry`, tracking events as the
    /// worker's variables say (see [`TrackerSettings::from_env`]).
    ///
    /// A registry that failed to build is kept as the answer to every request, since a
    /// Durable Object's constructor cannot fail.
    pub fn new(state: State, env: &Env, registry: Result<Registry, RegistryError>) -> Self {
        Self::with_tracking(state, registry, TrackerSettings::from_env(env))
    }

    /// As [`new`](Self::new), with explicit tracking settings (`None`: no tracking).
    pub fn with_tracking(
        state: State,
        registry: Result<Registry, RegistryError>,
        tracking: Option<TrackerSettings>,
    ) -> Self {
        let tracker = tracking.map(|settings| {
            Arc::new(HttpBatchTracker::new(
                settings.config,
                FetchSink::new(settings.endpoint),
            ))
        });
        let engine = registry.map(|registry| {
            // A panic aborts the wasm instance here, so an attempt must be on record
            // before its user code runs, or a panicking job would run again forever.
            let engine = Engine::new(registry, DurableObjectBackend::new(&state))
                .with_attempts_recorded_at_start();
            match &tracker {
                Some(tracker) => engine.with_tracker(tracker.clone()),
                None => engine,
            }
        });
        EngineObject {
            state,
            engine,
            tracker,
            last_request: Cell::new(StorageStats::default()),
        }
    }

    /// Serves the object's `fetch`: a job request, or its storage counts.
    pub async fn fetch(&self, mut request: Request) -> worker::Result<Response> {
        if request.method() == Method::Get && request.path() == STORAGE_STATS_PATH {
            return Response::from_json(&self.storage_report());
        }
        let reply = Reply::from(self.handle(&mut request).await);
        self.flush_events();
        Response::from_json(&reply)
    }

    /// Serves the object's `alarm`. An engine-level failure is returned as an error, so that
    /// the platform retries the alarm with backoff; the engine counts attempts itself where
    /// they matter.
    pub async fn alarm(&self) -> worker::Result<Response> {
        let engine = self
            .engine()
            .map_err(|e| worker::Error::RustError(e.to_string()))?;
        let result = engine.alarm().await;
        self.flush_events();
        match result {
            Ok(()) => Response::empty(),
            Err(error) => {
                console_error!("durable-jobs alarm failed and will be retried: {error}");
                Err(worker::Error::RustError(error.to_string()))
            }
        }
    }

    /// The storage counts of this object since it was loaded, and of its last request.
    pub fn storage_report(&self) -> StorageReport {
        StorageReport {
            total: self
                .engine
                .as_ref()
                .map(|engine| engine.backend().stats())
                .unwrap_or_default(),
            last_request: self.last_request.get(),
        }
    }

    fn engine(&self) -> Result<&Engine<DurableObjectBackend>, JobError> {
        self.engine.as_ref().map_err(|error| JobError::Client {
            status: 500,
            message: format!("the worker's job registry does not build: {error}"),
        })
    }

    async fn handle(&self, request: &mut Request) -> Result<JobResponse, JobError> {
        let engine = self.engine()?;
        if request.method() != Method::Post {
            return Err(JobError::BadRequest {
                message: format!("POST a job request to {REQUEST_PATH}"),
            });
        }
        let body = request.bytes().await.map_err(|e| JobError::BadRequest {
            message: format!("unreadable request body: {e}"),
        })?;
        let request = JobRequest::from_json(&body)?;
        let before = engine.backend().stats();
        let result = engine.handle(request).await;
        self.last_request
            .set(engine.backend().stats().since(&before));
        result
    }

    /// Delivers buffered lifecycle events after the response, without delaying it.
    fn flush_events(&self) {
        if let Some(tracker) = self.tracker.as_ref().filter(|t| t.pending() > 0) {
            let tracker = tracker.clone();
            self.state.wait_until(async move { tracker.flush().await });
        }
    }
}

/// Declares the engine Durable Object class in your worker, bound to your registry.
///
/// `registry` is a function `fn(&worker::Env) -> Result<Registry, RegistryError>`; it runs
/// once per isolate and its registry is cached. For the worker's own handlers, the class
/// gets two associated functions: `registry(&env)` and `client(&env, binding)`, the typed
/// [`JobsClient`](durable_jobs::JobsClient) over [`DoTransport`](crate::DoTransport) (see
/// [`DoTransport::into_client`](crate::DoTransport::into_client) for its round robin).
///
/// The class name is the struct's name; bind it in `wrangler.toml` and list it in
/// `new_sqlite_classes` (the storage adapter needs SQLite-backed objects). The worker crate
/// must depend on `worker` itself, which the class attribute refers to.
///
/// ```ignore
/// durable_jobs_cloudflare::engine_object!(
///     /// Every job instance of this worker.
///     pub struct Jobs, registry = build_registry
/// );
/// ```
#[macro_export]
macro_rules! engine_object {
    ($(#[$attr:meta])* $vis:vis struct $name:ident, registry = $registry:expr $(,)?) => {
        $(#[$attr])*
        #[::worker::durable_object(alarm)]
        $vis struct $name {
            engine: $crate::EngineObject,
        }

        impl $name {
            /// The registry of this worker's jobs, built once per isolate.
            #[allow(dead_code)]
            $vis fn registry(
                env: &::worker::Env,
            ) -> ::core::result::Result<
                $crate::durable_jobs::Registry,
                $crate::durable_jobs::RegistryError,
            > {
                ::std::thread_local! {
                    static CACHE: $crate::RegistryCache = const { $crate::RegistryCache::new() };
                }
                CACHE.with(|cache| cache.get_or_build(env, $registry))
            }

            /// The typed job client over the engine objects bound as `binding`.
            #[allow(dead_code)]
            $vis fn client(
                env: &::worker::Env,
                binding: &str,
            ) -> ::worker::Result<$crate::durable_jobs::JobsClient<$crate::DoTransport>> {
                let registry = Self::registry(env)
                    .map_err(|e| ::worker::Error::RustError(e.to_string()))?;
                let namespace = env.durable_object(binding)?;
                Ok($crate::DoTransport::new(namespace).into_client(registry))
            }
        }

        impl ::worker::DurableObject for $name {
            fn new(state: ::worker::State, env: ::worker::Env) -> Self {
                let registry = Self::registry(&env);
                $name {
                    engine: $crate::EngineObject::new(state, &env, registry),
                }
            }

            async fn fetch(
                &self,
                request: ::worker::Request,
            ) -> ::worker::Result<::worker::Response> {
                self.engine.fetch(request).await
            }

            async fn alarm(&self) -> ::worker::Result<::worker::Response> {
                self.engine.alarm().await
            }
        }
    };
}
