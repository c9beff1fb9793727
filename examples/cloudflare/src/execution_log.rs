//! A Durable Object that records, in order, what the jobs executed, so that a client (the
//! test suite) can observe executions over HTTP.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use worker::{
    durable_object, DurableObject, Env, Headers, Method, ObjectNamespace, Request, RequestInit,
    Response, Result, State,
};

/// The one log object every job writes to.
const LOG_NAME: &str = "log";

/// An append-only log of JSON entries in SQLite storage.
#[durable_object(fetch)]
pub struct ExecutionLog {
    state: State,
}

#[derive(Deserialize)]
struct Row {
    seq: i64,
    at: i64,
    entry: String,
}

/// One entry as the log answers it.
#[derive(Serialize)]
struct Entry {
    seq: i64,
    at: i64,
    #[serde(flatten)]
    entry: Value,
}

impl DurableObject for ExecutionLog {
    fn new(state: State, _env: Env) -> Self {
        ExecutionLog { state }
    }

    async fn fetch(&self, mut request: Request) -> Result<Response> {
        let sql = self.state.storage().sql();
        sql.exec(
            "CREATE TABLE IF NOT EXISTS entries \
             (seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, entry TEXT NOT NULL)",
            None,
        )?;
        match request.method() {
            Method::Post => {
                let entry = request.text().await?;
                let now = js_sys_now();
                sql.exec(
                    "INSERT INTO entries (at, entry) VALUES (?, ?)",
                    vec![now.into(), entry.into()],
                )?;
                Response::empty()
            }
            _ => {
                let rows: Vec<Row> = sql
                    .exec("SELECT seq, at, entry FROM entries ORDER BY seq", None)?
                    .to_array()?;
                let entries: Vec<Entry> = rows
                    .into_iter()
                    .map(|row| Entry {
                        seq: row.seq,
                        at: row.at,
                        entry: serde_json::from_str(&row.entry).unwrap_or(Value::String(row.entry)),
                    })
                    .collect();
                Response::from_json(&entries)
            }
        }
    }
}

fn js_sys_now() -> i64 {
    worker::js_sys::Date::now() as i64
}

/// Writes to and reads the execution log, from jobs and from the HTTP front.
#[derive(Debug, Clone)]
pub struct LogClient {
    namespace: ObjectNamespace,
}

impl LogClient {
    /// A client of the log objects bound as `namespace`.
    pub fn new(namespace: ObjectNamespace) -> Self {
        LogClient { namespace }
    }

    /// Appends one entry; a job fails (and is retried) when this fails.
    pub async fn append(&self, entry: Value) -> std::result::Result<(), String> {
        self.try_append(entry).await.map_err(|e| e.to_string())
    }

    async fn try_append(&self, entry: Value) -> Result<()> {
        let headers = Headers::new();
        headers.set("content-type", "application/json")?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_headers(headers)
            .with_body(Some(entry.to_string().into()));
        let request = Request::new_with_init("https://log/entries", &init)?;
        let response = self
            .namespace
            .get_by_name(LOG_NAME)?
            .fetch_with_request(request)
            .await?;
        match response.status_code() {
            200..=299 => Ok(()),
            status => Err(worker::Error::RustError(format!("log answered {status}"))),
        }
    }

    /// Every entry, oldest first, as the log object answers them.
    pub async fn entries(&self) -> Result<Response> {
        self.namespace
            .get_by_name(LOG_NAME)?
            .fetch_with_str("https://log/entries")
            .await
    }
}
