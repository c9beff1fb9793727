//! The client side: requests to job instances through Durable Object stubs.

use durable_jobs::wire::{Reply, Request as JobRequest, Response as JobResponse};
use durable_jobs::{InstanceId, JobError, JobsClient, Registry, Transport};
use worker::{Headers, Method, ObjectNamespace, Request, RequestInit};

use crate::engine_object::{REQUEST_PATH, STORAGE_STATS_PATH};
use crate::errors::client_error;
use crate::round_robin::isolate_round_robin;
use crate::storage::StorageReport;

/// A [`Transport`] that sends each request to the Durable Object named after its instance
/// id (`{kind}:{name}:{key}`), as JSON, and decodes the JSON reply.
///
/// With it, `DoTransport::new(env.durable_object("JOBS")?).into_client(registry)` is the
/// same typed client as on every runtime; WorkerPool routing and aggregated status come
/// from the core client.
#[derive(Debug, Clone)]
pub struct DoTransport {
    namespace: ObjectNamespace,
}

impl DoTransport {
    /// A transport over the engine objects bound as `namespace`.
    pub fn new(namespace: ObjectNamespace) -> Self {
        DoTransport { namespace }
    }

    /// The typed client for the jobs of `registry` over this transport.
    ///
    /// WorkerPool events with neither a partition key nor an event id take turns through
    /// the instances per isolate, from a random start, rather than per client: a Worker
    /// builds a client for each request, and each would otherwise begin at instance 0.
    /// (`JobsClient::new` gives the client a rotation of its own.)
    pub fn into_client(self, registry: Registry) -> JobsClient<DoTransport> {
        JobsClient::new(registry, self).with_round_robin(isolate_round_robin())
    }

    /// The storage operation counts of one instance's object: since it was loaded, and for
    /// its last request.
    pub async fn storage_stats(&self, instance: &InstanceId) -> Result<StorageReport, JobError> {
        let (status, body) = self
            .call(instance, Method::Get, STORAGE_STATS_PATH, None)
            .await?;
        if status != 200 {
            return Err(client_error(status, String::from_utf8_lossy(&body)));
        }
        serde_json::from_slice(&body)
            .map_err(|e| client_error(status, format!("malformed storage stats: {e}")))
    }

    async fn call(
        &self,
        instance: &InstanceId,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>), JobError> {
        self.call_inner(instance, method, path, body)
            .await
            .map_err(|e| client_error(0, format!("durable object `{instance}`: {e}")))
    }

    async fn call_inner(
        &self,
        instance: &InstanceId,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> worker::Result<(u16, Vec<u8>)> {
        let stub = self
            .namespace
            .id_from_name(&instance.to_string())?
            .get_stub()?;
        let mut init = RequestInit::new();
        init.with_method(method);
        if let Some(body) = body {
            let headers = Headers::new();
            headers.set("content-type", "application/json")?;
            init.with_headers(headers)
                .with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));
        }
        // The host is never resolved: a stub's fetch goes to the object whatever the URL.
        let request = Request::new_with_init(&format!("https://durable-jobs{path}"), &init)?;
        let mut response = stub.fetch_with_request(request).await?;
        let status = response.status_code();
        Ok((status, response.bytes().await?))
    }
}

impl Transport for DoTransport {
    async fn send(&self, request: JobRequest) -> Result<JobResponse, JobError> {
        let instance = request.instance.clone();
        let (status, body) = self
            .call(
                &instance,
                Method::Post,
                REQUEST_PATH,
                Some(request.to_json()),
            )
            .await?;
        match serde_json::from_slice::<Reply>(&body) {
            Ok(reply) => reply.into(),
            Err(e) => Err(client_error(
                status,
                format!(
                    "durable object `{instance}` answered {status} without a reply ({e}): {}",
                    String::from_utf8_lossy(&body)
                ),
            )),
        }
    }
}
