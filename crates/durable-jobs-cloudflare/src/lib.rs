//! Cloudflare Durable Objects runtime for durable-jobs.
//!
//! Every job instance (`{kind}:{name}:{key}`) is one Durable Object of a single class that
//! serves all job kinds. The object keeps one [`durable_jobs::Engine`] over its own storage,
//! so requests and alarms of the instance share the engine's lock:
//!
//! - [`DurableObjectBackend`] implements the core adapters: `Storage` over the object's
//!   SQLite database (one ordered `jobs_kv` table, one atomic commit per step, alarm
//!   included, at absolute times), and `Clock` (`Date.now()`);
//! - [`engine_object!`] declares the Durable Object class in your worker, bound to your
//!   registry;
//! - [`DoTransport`] is the client side: [`durable_jobs::JobsClient`] over Durable Object
//!   stubs, so a Worker gets the same typed client as every other runtime;
//! - [`FetchSink`] delivers lifecycle events to an HTTP collector, after each response.
//!
//! ```ignore
//! use durable_jobs::{Registry, RegistryError};
//! use durable_jobs_cloudflare::engine_object;
//! use worker::{event, Context, Env, Request, Response};
//!
//! fn registry(env: &Env) -> Result<Registry, RegistryError> {
//!     Registry::builder()
//!         .continuous("tokenRefresher", TokenRefresher)
//!         .debounce("webhookBatcher", WebhookBatcher)
//!         .worker_pool("emailSender", EmailSender)
//!         .build()
//! }
//!
//! engine_object!(
//!     /// The Durable Object class of every job instance (`class_name = "Jobs"`).
//!     pub struct Jobs,
//!     registry = registry
//! );
//!
//! #[event(fetch)]
//! async fn fetch(_req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
//!     let client = Jobs::client(&env, "JOBS")?;
//!     client
//!         .debounce::<WebhookBatcher>()
//!         .add("contact-456", &Hook { field: "email".into() })
//!         .await
//!         .map_err(|e| worker::Error::RustError(e.to_string()))?;
//!     Response::ok("queued")
//! }
//! ```
//!
//! `wrangler.toml` binds the class and declares it SQLite-backed:
//!
//! ```toml
//! [[durable_objects.bindings]]
//! name = "JOBS"
//! class_name = "Jobs"
//!
//! [[migrations]]
//! tag = "v1"
//! new_sqlite_classes = ["Jobs"]
//! ```
//!
//! The runtime builds for `wasm32-unknown-unknown` only; on other targets the crate holds
//! nothing but its platform-free SQL builders, so that host builds of a workspace stay light.
#![warn(missing_docs)]

// Platform-free, so that its tests run on the host too.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod key_range;

#[cfg(target_arch = "wasm32")]
mod clock;
#[cfg(target_arch = "wasm32")]
mod engine_object;
#[cfg(target_arch = "wasm32")]
mod errors;
#[cfg(target_arch = "wasm32")]
mod registry_cache;
#[cfg(target_arch = "wasm32")]
mod round_robin;
#[cfg(target_arch = "wasm32")]
#[cfg(target_arch = "wasm32")]
mod storage;
#[cfg(target_arch = "wasm32")]
mod tracker;
#[cfg(target_arch = "wasm32")]
mod transport;

#[cfg(target_arch = "wasm32")]
pub use durable_jobs;
#[cfg(target_arch = "wasm32")]
pub use engine_object::{EngineObject, STORAGE_STATS_PATH};
#[cfg(target_arch = "wasm32")]
pub use registry_cache::RegistryCache;
#[cfg(target_arch = "wasm32")]
pub use storage::{DurableObjectBackend, StorageReport, StorageStats};
#[cfg(target_arch = "wasm32")]
pub use tracker::{FetchSink, TrackerSettings, ENDPOINT_VAR, ENV_VAR, SERVICE_KEY_VAR};
#[cfg(target_arch = "wasm32")]
pub use transport::DoTransport;
