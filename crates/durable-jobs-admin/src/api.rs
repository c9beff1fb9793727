//! The JSON routes: the jobs, their instances, one instance's views, and the operator's
//! actions on it.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use durable_jobs::inspect::{InstancePage, InstanceQuery, StatusCounts, DEFAULT_PAGE};
use durable_jobs::wire::{Operation, Request, Response};
use durable_jobs::{InstanceId, JobKind, StatusName};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::backend::Backend;
use crate::error::ApiError;
use crate::recent::RecentEvents;
use futures::future::BoxFuture;

/// Dead letters one page holds at most.
const MAX_DEAD_LETTERS: u32 = 500;

/// Queued events one page holds at most.
const MAX_PENDING: u32 = 500;

pub(crate) type Shared = Arc<dyn Backend>;

/// The API's routes, relative to where they are mounted.
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/jobs", get(jobs))
        .route("/api/jobs/{kind}/{name}/instances", get(instances))
        .route("/api/jobs/{kind}/{name}/counts", get(counts))
        .route("/api/jobs/workerPool/{name}/pause", post(pause_pool))
        .route("/api/jobs/workerPool/{name}/resume", post(resume_pool))
        .route("/api/instances/{id}", get(instance))
        .route("/api/instances/{id}/dead-letters", get(dead_letters))
        .route("/api/instances/{id}/failed-batches", get(failed_batches))
        .route("/api/instances/{id}/pending", get(pending))
        .route("/api/instances/{id}/actions", post(action))
}

/// Any path the API does not have.
pub(crate) async fn no_route() -> ApiError {
    ApiError::not_found("no such route")
}

/// A registered job.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct JobInfo {
    kind: JobKind,
    name: String,
}

async fn jobs(State(backend): State<Shared>) -> Json<Vec<JobInfo>> {
    let mut jobs: Vec<JobInfo> = backend
        .registry()
        .jobs()
        .map(|(kind, name)| JobInfo {
            kind,
            name: name.to_string(),
        })
        .collect();
    jobs.sort_by(|a, b| (a.kind.to_string(), &a.name).cmp(&(b.kind.to_string(), &b.name)));
    Json(jobs)
}

/// The query string of an instance list.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListParams {
    status: Option<StatusName>,
    #[serde(default)]
    dead_letters: bool,
    #[serde(default)]
    failed_batches: bool,
    #[serde(default)]
    prefix: String,
    after: Option<String>,
    limit: Option<usize>,
}

fn job_kind(kind: &str) -> Result<JobKind, ApiError> {
    kind.parse()
        .map_err(|_| ApiError::bad_request(format!("`{kind}` is not a job kind")))
}

fn query_error(rejection: QueryRejection) -> ApiError {
    ApiError::bad_request(format!("bad query string: {}", rejection.body_text()))
}

async fn instances(
    State(backend): State<Shared>,
    Path((kind, name)): Path<(String, String)>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<InstancePage>, ApiError> {
    let Query(params) = params.map_err(query_error)?;
    let query = InstanceQuery {
        kind: job_kind(&kind)?,
        job: name,
        status: params.status,
        has_dead_letters: params.dead_letters,
        has_failed_batches: params.failed_batches,
        key_prefix: params.prefix,
        after: params.after,
        limit: params.limit.unwrap_or(DEFAULT_PAGE),
    };
    Ok(Json(backend.instances(&query).await?))
}

async fn counts(
    State(backend): State<Shared>,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Json<StatusCounts>, ApiError> {
    let kind = job_kind(&kind)?;
    Ok(Json(backend.counts(kind, &name).await?))
}

/// Pauses every instance of a pool.
async fn pause_pool(
    State(backend): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    on_every_pool_instance(&backend, &name, Operation::WorkerPoolPause).await
}

/// Resumes every instance of a pool.
async fn resume_pool(
    State(backend): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    on_every_pool_instance(&backend, &name, Operation::WorkerPoolResume).await
}

/// Sends `op` to each instance of the pool `name`, in index order; answers how many.
/// Stops at the first failure, which says how many were done before it.
async fn on_every_pool_instance(
    backend: &Shared,
    name: &str,
    op: Operation,
) -> Result<Json<Value>, ApiError> {
    backend.registry().check_job(JobKind::WorkerPool, name)?;
    let concurrency = backend.registry().concurrency(name)?;
    for index in 0..concurrency {
        let instance = InstanceId::new(JobKind::WorkerPool, name, index.to_string());
        if let Err(error) = send(backend, &instance, op.clone()).await {
            return Err(ApiError::new(
                error.status(),
                format!(
                    "instance {index} failed after {index} were done: {}",
                    error.message()
                ),
            ));
        }
    }
    Ok(Json(json!({ "instances": concurrency })))
}

/// Parses an instance id of a registered job.
fn instance_id(backend: &Shared, id: &str) -> Result<InstanceId, ApiError> {
    let id: InstanceId = id.parse()?;
    backend.registry().check_job(id.kind, &id.name)?;
    Ok(id)
}

async fn send(
    backend: &Shared,
    instance: &InstanceId,
    op: Operation,
) -> Result<Response, ApiError> {
    let request = Request {
        instance: instance.clone(),
        op,
    };
    Ok(backend.send(request).await?)
}

/// One instance: its status and, where it has one, its state.
async fn instance(
    State(backend): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = instance_id(&backend, &id)?;
    let (status_op, state_op) = match id.kind {
        JobKind::Continuous => (
            Operation::ContinuousStatus,
            Some(Operation::ContinuousGetState),
        ),
        JobKind::Debounce => (Operation::DebounceStatus, Some(Operation::DebounceGetState)),
        JobKind::WorkerPool => (Operation::WorkerPoolStatus, None),
        JobKind::Task => (Operation::TaskStatus, Some(Operation::TaskGetState)),
    };
    let status = send(&backend, &id, status_op).await?;
    let state = match state_op {
        Some(op) => match send(&backend, &id, op).await? {
            Response::State { state } => state,
            _ => None,
        },
        None => None,
    };
    Ok(Json(json!({ "id": id, "status": status, "state": state })))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PageParams {
    after: Option<u64>,
    limit: Option<u32>,
}

async fn dead_letters(
    State(backend): State<Shared>,
    Path(id): Path<String>,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<Response>, ApiError> {
    let Query(params) = params.map_err(query_error)?;
    let id = instance_id(&backend, &id)?;
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_DEAD_LETTERS {
        return Err(ApiError::bad_request(format!(
            "a page holds 1 to {MAX_DEAD_LETTERS} dead letters, not {limit}"
        )));
    }
    let op = Operation::WorkerPoolDeadLetters {
        after: params.after,
        limit,
    };
    Ok(Json(send(&backend, &id, op).await?))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CursorParams {
    after: Option<String>,
    limit: Option<u32>,
}

/// The handler of an instance's recent events: those `recent` kept, or a 404 saying they
/// are not kept.
pub(crate) fn recent_events(
    recent: Option<Arc<RecentEvents>>,
) -> impl Fn(State<Shared>, Path<String>) -> BoxFuture<'static, Result<Json<Value>, ApiError>>
       + Clone
       + Send
       + Sync
       + 'static {
    move |State(backend): State<Shared>, Path(id): Path<String>| {
        let recent = recent.clone();
        Box::pin(async move {
            let id = instance_id(&backend, &id)?;
            let Some(recent) = recent else {
                return Err(ApiError::not_found(
                    "recent events are not kept: see Admin::with_recent_events",
                ));
            };
            Ok(Json(json!({ "events": recent.of(&id.to_string()) })))
        })
    }
}

/// A pool instance's queued events, in queue order, a page at a time.
async fn pending(
    State(backend): State<Shared>,
    Path(id): Path<String>,
    params: Result<Query<CursorParams>, QueryRejection>,
) -> Result<Json<Response>, ApiError> {
    let Query(params) = params.map_err(query_error)?;
    let id = instance_id(&backend, &id)?;
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PENDING {
        return Err(ApiError::bad_request(format!(
            "a page holds 1 to {MAX_PENDING} queued events, not {limit}"
        )));
    }
    let op = Operation::WorkerPoolPending {
        after: params.after,
        limit,
    };
    Ok(Json(send(&backend, &id, op).await?))
}

async fn failed_batches(
    State(backend): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Response>, ApiError> {
    let id = instance_id(&backend, &id)?;
    Ok(Json(
        send(&backend, &id, Operation::DebounceFailedBatches).await?,
    ))
}

/// Whether an operator may send `op` through the admin API: actions on existing work and
/// reads. Creating work (start, add, enqueue) is the application's.
fn is_operator_action(op: &Operation) -> bool {
    matches!(
        op,
        Operation::ContinuousStop { .. }
            | Operation::ContinuousTrigger
            | Operation::DebounceFlush
            | Operation::DebounceClear
            | Operation::DebounceDiscardFailed
            | Operation::WorkerPoolPause
            | Operation::WorkerPoolResume
            | Operation::WorkerPoolCancel { .. }
            | Operation::WorkerPoolReplay { .. }
            | Operation::WorkerPoolDiscard { .. }
            | Operation::TaskTrigger
            | Operation::TaskTerminate
    )
}

/// An operator's action on one instance: the body is the operation, as on the wire
/// (`{"op": "workerPoolReplay", "eventIds": ["a"]}`); the answer is the wire response.
async fn action(
    State(backend): State<Shared>,
    Path(id): Path<String>,
    body: Result<Json<Operation>, JsonRejection>,
) -> Result<Json<Response>, ApiError> {
    let id = instance_id(&backend, &id)?;
    let Json(op) = body.map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            format!("bad action: {}", rejection.body_text()),
        )
    })?;
    if !is_operator_action(&op) {
        return Err(ApiError::bad_request(
            "not an operator action: stop, trigger, flush, clear, discard failed batches, \
             pause, resume, cancel, replay or discard",
        ));
    }
    Ok(Json(send(&backend, &id, op).await?))
}
