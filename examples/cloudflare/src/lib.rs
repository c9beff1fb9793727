//! The three job kinds on Cloudflare Durable Objects, behind a JSON HTTP front.
//!
//! - `Jobs`: the engine class, one object per job instance (see `jobs.rs` for the jobs);
//! - `ExecutionLog`: one object recording what the jobs executed, in order;
//! - the worker's `fetch`: the HTTP front (see `http.rs` for the routes).
//!
//! Build with `worker-build --release` and run with `wrangler dev` or `wrangler deploy`;
//! `test/` runs it in workerd through Miniflare. A worker exists only as wasm, so on other
//! targets this crate is empty.
#![cfg(target_arch = "wasm32")]

mod execution_log;
mod http;
mod jobs;

use worker::{event, Context, Env, Request, Response, Result};

pub use execution_log::ExecutionLog;

durable_jobs_cloudflare::engine_object!(
    /// Every job instance of this worker: one object per `{kind}:{name}:{key}`.
    pub struct Jobs,
    registry = jobs::build_registry
);

#[event(fetch, respond_with_errors)]
async fn fetch(request: Request, env: Env, _ctx: Context) -> Result<Response> {
    http::route(request, env).await
}
