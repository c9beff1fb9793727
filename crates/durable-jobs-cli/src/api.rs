//! The admin API's client: joins paths to the URL the API is mounted at, sends the token,
//! and turns every failure into a message that says what to do.

use std::time::Duration;

use serde_json::Value;

use crate::Failure;

/// How long connecting may take: an address that does not answer is reported soon.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a whole call may take. Generous: a replay of many dead letters is one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The environment variable holding the admin token. Not a flag: a flag's value shows
/// in the process list.
pub const TOKEN_VAR: &str = "DURABLE_JOBS_TOKEN";

/// A client of one service's admin API.
pub struct Api {
    agent: ureq::Agent,
    /// The URL the API is mounted at, without a trailing `/`.
    base: String,
    token: Option<String>,
}

impl Api {
    /// A client of the API mounted at `url`, sending `token` if there is one.
    pub fn new(url: &str, token: Option<String>) -> Result<Api, Failure> {
        let base = base_url(url)?;
        let config = ureq::Agent::config_builder()
            // Error answers carry the API's message in their body: read it.
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(CALL_TIMEOUT))
            .build();
        Ok(Api {
            agent: ureq::Agent::new_with_config(config),
            base,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// GETs `path` (relative to the mount point, its segments already encoded) with the
    /// query `params`; answers the JSON body as it came.
    pub fn get(&self, path: &str, params: &[(&str, String)]) -> Result<String, Failure> {
        let mut url = format!("{}{path}", self.base);
        let mut separator = '?';
        for (name, value) in params {
            url.push(separator);
            url.push_str(name);
            url.push('=');
            url.push_str(&encode(value));
            separator = '&';
        }
        let mut request = self.agent.get(&url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        self.answer(&url, request.call())
    }

    /// POSTs `body` as JSON to `path`; answers the JSON body as it came.
    pub fn post(&self, path: &str, body: &Value) -> Result<String, Failure> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json");
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        self.answer(&url, request.send(body.to_string()))
    }

    fn answer(
        &self,
        url: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<String, Failure> {
        let mut response = result.map_err(|e| unreachable(&self.base, e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| Failure(format!("cannot read the answer from {url}: {e}")))?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        Err(self.refusal(url, status, &body))
    }

    /// The message for an error answer: the API's own message, with what to do when the
    /// token or the URL is wrong.
    fn refusal(&self, url: &str, status: u16, body: &str) -> Failure {
        let message = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(String::from));
        match (status, message) {
            (401, message) => {
                let said = message.map_or(String::new(), |m| format!(" ({m})"));
                let what = match self.token {
                    None => format!("no admin token was sent: set {TOKEN_VAR} to the token"),
                    Some(_) => {
                        format!("the admin token was refused: set {TOKEN_VAR} to the right token")
                    }
                };
                Failure(format!("{what}{said}"))
            }
            (404, Some(m)) if m == "no such route" => Failure(format!(
                "{url}: no such route: is --url where the admin API is mounted?"
            )),
            (_, Some(m)) => Failure(m),
            (_, None) => {
                let hint = if status == 404 {
                    ": is --url where the admin API is mounted?"
                } else {
                    ""
                };
                Failure(format!("{url} answered HTTP {status}{hint}"))
            }
        }
    }
}

/// The message for a call that got no answer.
fn unreachable(base: &str, e: ureq::Error) -> Failure {
    Failure(format!(
        "cannot reach the admin API at {base}: {e}. Is the service running, and is --url (or \
         DURABLE_JOBS_URL) right?"
    ))
}

/// `url` checked and without its trailing `/`, so that paths join under it: the API may
/// be mounted under a prefix (`http://host/admin/`).
pub fn base_url(url: &str) -> Result<String, Failure> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {}
        _ => {
            return Err(Failure(format!(
                "--url must be an http:// or https:// URL with a host, not `{url}`"
            )))
        }
    }
    if url.contains(['?', '#']) {
        return Err(Failure(format!(
            "--url is where the admin API is mounted: no query or fragment, not `{url}`"
        )));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Percent-encodes `text` for a path segment or a query value: everything but the
/// unreserved characters, so an instance key with `/`, `?`, `%` or spaces stays one
/// segment.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_under_the_mount_point() {
        assert_eq!(
            base_url("http://127.0.0.1:8321/").unwrap(),
            "http://127.0.0.1:8321"
        );
        assert_eq!(
            base_url("https://ops.example/admin/").unwrap(),
            "https://ops.example/admin"
        );
        assert_eq!(base_url("http://h/admin").unwrap(), "http://h/admin");
        for bad in [
            "127.0.0.1:8321",
            "ftp://h/",
            "http://",
            "http:///x",
            "http://h/?a=1",
        ] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_stay_one_segment() {
        assert_eq!(encode("workerPool:tasks:0"), "workerPool%3Atasks%3A0");
        assert_eq!(encode("a/b?c d%é"), "a%2Fb%3Fc%20d%25%C3%A9");
        assert_eq!(encode("plain-1.x_~"), "plain-1.x_~");
    }
}
