//! Lifecycle event delivery to an HTTP collector, over the Workers `fetch` API.
//!
//! The core's `HttpBatchTracker` buffers events as the engine emits them; the engine object
//! flushes it through `wait_until` after each response, so delivery never delays or fails a
//! request.

use durable_jobs::services::tracker::{HttpSink, HttpTrackerConfig};
use worker::{Env, Fetch, Headers, Method, Request, RequestInit};

/// The variable holding the collector's URL; tracking is off when it is absent or empty.
pub const ENDPOINT_VAR: &str = "DURABLE_JOBS_TRACKER_ENDPOINT";
/// The variable naming the deployment environment (`production`, `staging`...).
pub const ENV_VAR: &str = "DURABLE_JOBS_TRACKER_ENV";
/// The variable or secret holding the service key sent with every event.
pub const SERVICE_KEY_VAR: &str = "DURABLE_JOBS_TRACKER_SERVICE_KEY";

/// Where and how lifecycle events are delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerSettings {
    /// The collector's URL; every batch is POSTed there as a JSON array.
    pub endpoint: String,
    /// Environment, service key and batch sizes.
    pub config: HttpTrackerConfig,
}

impl TrackerSettings {
    /// Settings delivering to `endpoint` with the default configuration.
    pub fn new(endpoint: impl Into<String>) -> Self {
        TrackerSettings {
            endpoint: endpoint.into(),
            config: HttpTrackerConfig::default(),
        }
    }

    /// Reads the settings from the worker's variables and secrets: tracking is on when
    /// `DURABLE_JOBS_TRACKER_ENDPOINT` is set, with `DURABLE_JOBS_TRACKER_ENV` and
    /// `DURABLE_JOBS_TRACKER_SERVICE_KEY` added to every event.
    pub fn from_env(env: &Env) -> Option<Self> {
        let endpoint = text_binding(env, ENDPOINT_VAR).filter(|e| !e.is_empty())?;
        let mut settings = TrackerSettings::new(endpoint);
        if let Some(name) = text_binding(env, ENV_VAR) {
            settings.config.env = name;
        }
        if let Some(key) = text_binding(env, SERVICE_KEY_VAR) {
            settings.config.service_key = key;
        }
        Some(settings)
    }
}

/// A plain-text variable or a secret, whichever is bound under `name`.
fn text_binding(env: &Env, name: &str) -> Option<String> {
    env.var(name)
        .map(|v| v.to_string())
        .or_else(|_| env.secret(name).map(|s| s.to_string()))
        .ok()
}

/// POSTs event batches to a URL with the Workers `fetch` API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSink {
    endpoint: String,
}

impl FetchSink {
    /// A sink posting to `endpoint`.
    pub fn new(endpoint: impl Into<String>) -> Self {
        FetchSink {
            endpoint: endpoint.into(),
        }
    }

    async fn send(&self, body: Vec<u8>) -> worker::Result<u16> {
        let headers = Headers::new();
        headers.set("content-type", "application/json")?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_headers(headers)
            .with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));
        let request = Request::new_with_init(&self.endpoint, &init)?;
        let response = Fetch::Request(request).send().await?;
        Ok(response.status_code())
    }
}

impl HttpSink for FetchSink {
    async fn post(&self, body: Vec<u8>) -> Result<(), String> {
        match self.send(body).await {
            Ok(status) if (200..300).contains(&status) => Ok(()),
            Ok(status) => Err(format!("collector answered {status}")),
            Err(error) => Err(error.to_string()),
        }
    }
}
