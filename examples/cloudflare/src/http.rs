//! The JSON HTTP front: every operation of the four jobs, the execution log, and the
//! storage counts of any instance.
//!
//! ```text
//! POST /tokens/{id}/start   {"access"?}         GET /tokens/{id}/status | /state
//! POST /tokens/{id}/stop    {"reason"?}         POST /tokens/{id}/trigger
//! POST /webhooks/{id}/add   {"field", "eventId"?}
//! POST /webhooks/many       {"adds": [{"id", "field", "eventId"?}]}
//! POST /webhooks/{id}/flush | /clear            GET /webhooks/{id}/status | /state | /failed-batches
//! POST /emails              {"to", "partition"?, "seq"?, "eventId"?, "priority"?, "delayMs"? | "runAt"?}
//! POST /emails/many         {"emails": [{"to", "partition"?, "seq"?, "eventId"?, "priority"?, "delayMs"? | "runAt"?}]}
//! POST /emails/pause | /resume  {"index"?}      POST /emails/cancel {"eventId"}
//! GET  /emails/status | /emails/instances/{i}/status | /emails/dead-letters
//! POST /emails/replay | /emails/discard  {"eventIds"?}
//! POST /orders/{id}/send    {"event": "created" | "paid", "eventId"?}
//! POST /orders/{id}/trigger | /terminate        GET /orders/{id}/status | /state
//! GET  /log                                     GET /stats/{kind}:{name}:{key}
//! ```
//!
//! Every route needs `Authorization: Bearer <token>`, the token being the Worker secret
//! `ADMIN_TOKEN` (`wrangler secret put ADMIN_TOKEN`; at least 24 characters), compared in
//! constant time. Without the secret the front refuses to serve, unless the variable
//! `DURABLE_JOBS_LOCAL_DEV` is `"true"` (for `wrangler dev` on a laptop): instance states
//! hold the example's access tokens, and every route can stop, clear or replay work.

use std::time::Duration;

use durable_jobs::{EnqueueRequest, InstanceId, JobError, JobsClient};
use durable_jobs_cloudflare::DoTransport;
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use worker::{Env, Method, Request, Response, Result};

use crate::execution_log::LogClient;
use crate::jobs::{
    Email, EmailSender, Hook, OrderEvent, OrderReminder, TokenRefresher, Tokens, WebhookBatcher,
};
use crate::Jobs;

type Client = JobsClient<DoTransport>;

/// The shortest admin token accepted.
const MIN_TOKEN_LEN: usize = 24;

/// Lets the request through (`None`), or answers why not.
fn refusal(request: &Request, env: &Env) -> Result<Option<Response>> {
    let token = env.secret("ADMIN_TOKEN").map(|s| s.to_string()).ok();
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        let local_dev = env
            .var("DURABLE_JOBS_LOCAL_DEV")
            .is_ok_and(|v| v.to_string() == "true");
        if local_dev {
            return Ok(None);
        }
        let why = "this worker has no ADMIN_TOKEN secret: set one with `wrangler secret put \
                   ADMIN_TOKEN`, or set DURABLE_JOBS_LOCAL_DEV = \"true\" for local development";
        return error_response(503, json!({ "error": why })).map(Some);
    };
    if token.len() < MIN_TOKEN_LEN {
        let why = format!("the ADMIN_TOKEN secret needs at least {MIN_TOKEN_LEN} characters");
        return error_response(503, json!({ "error": why })).map(Some);
    }
    let presented = request.headers().get("authorization")?;
    let matches = presented
        .as_deref()
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|p| bool::from(p.as_bytes().ct_eq(token.as_bytes())));
    if matches {
        return Ok(None);
    }
    let why = match presented {
        Some(_) => "wrong bearer token",
        None => "send the admin token as `Authorization: Bearer <token>`",
    };
    error_response(401, json!({ "error": why })).map(Some)
}

/// Answers one request of the front.
pub async fn route(mut request: Request, env: Env) -> Result<Response> {
    if let Some(refused) = refusal(&request, &env)? {
        return Ok(refused);
    }
    let path = request.path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = request.method();
    let body: Value = if method == Method::Post {
        let text = request.text().await?;
        if text.trim().is_empty() {
            json!({})
        } else {
            match serde_json::from_str(&text) {
                Ok(value) => value,
                Err(e) => {
                    return error_response(400, json!({ "error": format!("invalid JSON: {e}") }))
                }
            }
        }
    } else {
        Value::Null
    };

    match segments.as_slice() {
        ["log"] => LogClient::new(env.durable_object("LOG")?).entries().await,
        ["stats", instance] => {
            let instance: InstanceId = match instance.parse() {
                Ok(id) => id,
                Err(e) => return job_error(e),
            };
            let client = Jobs::client(&env, "JOBS")?;
            answer(
                client
                    .transport()
                    .storage_stats(&instance)
                    .await
                    .map(|s| json!(s)),
            )
        }
        ["tokens", id, op] => {
            let client = Jobs::client(&env, "JOBS")?;
            answer(tokens(&client, id, op, &method, body).await)
        }
        ["webhooks", "many"] if method == Method::Post => {
            let client = Jobs::client(&env, "JOBS")?;
            answer(add_many(&client, body).await)
        }
        ["webhooks", id, op] => {
            let client = Jobs::client(&env, "JOBS")?;
            answer(webhooks(&client, id, op, &method, body).await)
        }
        ["emails", rest @ ..] => {
            let client = Jobs::client(&env, "JOBS")?;
            answer(emails(&client, rest, &method, body).await)
        }
        ["orders", id, op] => {
            let client = Jobs::client(&env, "JOBS")?;
            answer(orders(&client, id, op, &method, body).await)
        }
        _ => error_response(
            404,
            json!({ "error": format!("no route for {method:?} {path}") }),
        ),
    }
}

async fn tokens(
    client: &Client,
    id: &str,
    op: &str,
    method: &Method,
    body: Value,
) -> Result<Value, JobError> {
    let job = client.continuous::<TokenRefresher>();
    match (method, op) {
        (Method::Post, "start") => {
            let tokens = Tokens {
                access: body["access"].as_str().unwrap_or("token-0").to_string(),
                refreshes: 0,
            };
            Ok(json!({ "created": job.start(id, &tokens).await? }))
        }
        (Method::Post, "stop") => {
            let stopped = match body["reason"].as_str() {
                Some(reason) => job.stop_with_reason(id, reason).await?,
                None => job.stop(id).await?,
            };
            Ok(json!({ "stopped": stopped }))
        }
        (Method::Post, "trigger") => {
            job.trigger(id).await?;
            Ok(json!({ "triggered": true }))
        }
        (Method::Get, "status") => Ok(json!({ "status": job.status(id).await? })),
        (Method::Get, "state") => Ok(json!({ "state": job.state(id).await? })),
        _ => Err(no_operation(op)),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendBody {
    event: OrderEvent,
    event_id: Option<String>,
}

async fn orders(
    client: &Client,
    id: &str,
    op: &str,
    method: &Method,
    body: Value,
) -> Result<Value, JobError> {
    let job = client.task::<OrderReminder>();
    match (method, op) {
        (Method::Post, "send") => {
            let send: SendBody = parse(body)?;
            let sent = match &send.event_id {
                Some(event_id) => job.send_with_id(id, &send.event, event_id).await?,
                None => job.send(id, &send.event).await?,
            };
            Ok(json!(sent))
        }
        (Method::Post, "trigger") => {
            job.trigger(id).await?;
            Ok(json!({ "triggered": true }))
        }
        (Method::Post, "terminate") => Ok(json!({ "terminated": job.terminate(id).await? })),
        (Method::Get, "status") => Ok(json!({ "status": job.status(id).await? })),
        (Method::Get, "state") => Ok(json!({ "state": job.state(id).await? })),
        _ => Err(no_operation(op)),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddBody {
    field: String,
    event_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManyAddBody {
    id: String,
    #[serde(flatten)]
    hook: Hook,
    event_id: Option<String>,
}

#[derive(Deserialize)]
struct ManyAddsBody {
    adds: Vec<ManyAddBody>,
}

/// Adds events to several contacts' batches in one call: one request per contact.
async fn add_many(client: &Client, body: Value) -> Result<Value, JobError> {
    let many: ManyAddsBody = parse(body)?;
    let events = many
        .adds
        .iter()
        .map(|add| (add.id.as_str(), &add.hook, add.event_id.as_deref()));
    let results = client.debounce::<WebhookBatcher>().add_many(events).await?;
    let results: Vec<Value> = results
        .into_iter()
        .map(|r| match r {
            Ok(added) => json!({
                "eventCount": added.event_count,
                "duplicate": added.duplicate,
                "flushAt": added.flush_at,
            }),
            Err(error) => json!({ "error": error.to_string() }),
        })
        .collect();
    Ok(json!({ "results": results }))
}

async fn webhooks(
    client: &Client,
    id: &str,
    op: &str,
    method: &Method,
    body: Value,
) -> Result<Value, JobError> {
    let job = client.debounce::<WebhookBatcher>();
    match (method, op) {
        (Method::Post, "add") => {
            let add: AddBody = parse(body)?;
            let hook = Hook { field: add.field };
            let added = match &add.event_id {
                Some(event_id) => job.add_with_id(id, &hook, event_id).await?,
                None => job.add(id, &hook).await?,
            };
            Ok(json!({
                "eventCount": added.event_count,
                "duplicate": added.duplicate,
                "flushAt": added.flush_at,
            }))
        }
        (Method::Post, "flush") => Ok(json!({ "eventCount": job.flush(id).await? })),
        (Method::Post, "clear") => Ok(json!({ "discarded": job.clear(id).await? })),
        (Method::Get, "status") => Ok(json!({ "status": job.status(id).await? })),
        (Method::Get, "state") => Ok(json!({ "state": job.state(id).await? })),
        (Method::Get, "failed-batches") => Ok(json!({ "batches": job.failed_batches(id).await? })),
        _ => Err(no_operation(op)),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnqueueBody {
    #[serde(flatten)]
    email: Email,
    event_id: Option<String>,
    #[serde(default)]
    priority: i32,
    /// Send no sooner than this many milliseconds from now.
    delay_ms: Option<u64>,
    /// Send no sooner than this time (ms since the epoch).
    run_at: Option<i64>,
}

#[derive(Deserialize)]
struct ManyBody {
    emails: Vec<EnqueueBody>,
}

/// An enqueue's email and its options.
fn with_options(enqueue: EnqueueBody) -> Result<(Email, EnqueueRequest), JobError> {
    let mut options = EnqueueRequest::new().priority(enqueue.priority);
    if let Some(partition) = &enqueue.email.partition {
        options = options.partition_key(partition.clone());
    }
    if let Some(event_id) = enqueue.event_id {
        options = options.event_id(event_id);
    }
    options = match (enqueue.delay_ms, enqueue.run_at) {
        (Some(_), Some(_)) => return Err(bad_request("give delayMs or runAt, not both")),
        (Some(delay), None) => options.delay(Duration::from_millis(delay)),
        (None, Some(at)) => options.run_at(at),
        (None, None) => options,
    };
    Ok((enqueue.email, options))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventIdsBody {
    event_ids: Option<Vec<String>>,
}

async fn emails(
    client: &Client,
    rest: &[&str],
    method: &Method,
    body: Value,
) -> Result<Value, JobError> {
    let pool = client.worker_pool::<EmailSender>();
    match (method, rest) {
        (Method::Post, []) => {
            let (email, options) = with_options(parse(body)?)?;
            let enqueued = pool.enqueue_with(&email, options).await?;
            Ok(json!({
                "eventId": enqueued.event_id,
                "instanceIndex": enqueued.instance_index,
                "position": enqueued.position,
                "duplicate": enqueued.duplicate,
            }))
        }
        (Method::Post, ["many"]) => {
            let many: ManyBody = parse(body)?;
            let events: Vec<(Email, EnqueueRequest)> = many
                .emails
                .into_iter()
                .map(with_options)
                .collect::<Result<_, _>>()?;
            let results = pool.enqueue_many(&events).await?;
            let results: Vec<Value> = results
                .into_iter()
                .map(|r| match r {
                    Ok(e) => json!({
                        "eventId": e.event_id,
                        "instanceIndex": e.instance_index,
                        "position": e.position,
                        "duplicate": e.duplicate,
                    }),
                    Err(error) => json!({ "error": error.to_string() }),
                })
                .collect();
            Ok(json!({ "results": results }))
        }
        (Method::Post, [op @ ("pause" | "resume")]) => {
            let pause = *op == "pause";
            match body["index"].as_u64() {
                Some(index) => {
                    let index =
                        u32::try_from(index).map_err(|_| bad_request("index out of range"))?;
                    if pause {
                        pool.pause(index).await?
                    } else {
                        pool.resume(index).await?
                    }
                }
                None if pause => pool.pause_all().await?,
                None => pool.resume_all().await?,
            }
            Ok(json!({ "paused": pause }))
        }
        (Method::Post, ["cancel"]) => {
            let event_id = body["eventId"]
                .as_str()
                .ok_or_else(|| bad_request("eventId is required"))?;
            Ok(json!({ "cancelled": pool.cancel(event_id).await? }))
        }
        (Method::Get, ["status"]) => Ok(json!(pool.status().await?)),
        (Method::Get, ["instances", index, "status"]) => {
            let index: u32 = index
                .parse()
                .map_err(|_| bad_request("index must be a number"))?;
            Ok(json!(pool.instance_status(index).await?))
        }
        (Method::Get, ["dead-letters"]) => {
            let items: Vec<Value> = pool
                .all_dead_letters()
                .await?
                .into_iter()
                .map(|(index, letter)| json!({ "instanceIndex": index, "deadLetter": letter }))
                .collect();
            Ok(json!({ "items": items }))
        }
        (Method::Post, [op @ ("replay" | "discard")]) => {
            let ids: EventIdsBody = parse(body)?;
            let ids: Option<Vec<&str>> = ids
                .event_ids
                .as_ref()
                .map(|v| v.iter().map(String::as_str).collect());
            let count = if *op == "replay" {
                pool.replay(ids.as_deref()).await?
            } else {
                pool.discard_dead_letters(ids.as_deref()).await?
            };
            Ok(json!({ "count": count }))
        }
        _ => Err(no_operation(&rest.join("/"))),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: Value) -> Result<T, JobError> {
    serde_json::from_value(body).map_err(|e| bad_request(&format!("invalid body: {e}")))
}

fn bad_request(message: &str) -> JobError {
    JobError::BadRequest {
        message: message.to_string(),
    }
}

fn no_operation(op: &str) -> JobError {
    bad_request(&format!("no operation `{op}` here"))
}

fn answer(result: Result<Value, JobError>) -> Result<Response> {
    match result {
        Ok(value) => Response::from_json(&value),
        Err(error) => job_error(error),
    }
}

/// A job error as JSON, with the HTTP status that fits it.
fn job_error(error: JobError) -> Result<Response> {
    let status = match &error {
        JobError::BadRequest { .. } | JobError::Validation { .. } | JobError::TooLarge { .. } => {
            400
        }
        JobError::JobNotFound { .. } | JobError::InstanceNotFound { .. } => 404,
        JobError::InvalidState { .. } => 409,
        JobError::Client { .. } => 502,
        _ => 500,
    };
    error_response(
        status,
        json!({ "error": error, "message": error.to_string() }),
    )
}

fn error_response(status: u16, body: Value) -> Result<Response> {
    Ok(Response::from_json(&body)?.with_status(status))
}
