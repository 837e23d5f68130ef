//! The client side of the command line: `stepwise report`, `approve`, `reject`, `pause`,
//! `resume` and `cancel` send one request to a running server's HTTP API (`STEPWISE_URL`,
//! as the token `STEPWISE_TOKEN`), so a shell script or a CI job drives an `external` step
//! or a task in one line. The server checks everything, as for any client; a refusal comes
//! back as [`RemoteError::Refused`] with the API's code and message.

use std::time::Duration;

use hyper::client::HttpConnector;
use hyper::{Body, Client, Method, Request};
use hyper_tls::HttpsConnector;
use serde_json::Value;

/// How long a command waits for the server's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a client command did not go through.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The server answered with an error.
    #[error("{status} {code}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The API's error code (`conflict`, `invalid_report` …).
        code: String,
        /// Its message.
        message: String,
    },
    /// The server's URL is not an `http://` or `https://` URL.
    #[error("STEPWISE_URL must start with http:// or https://, got {0:?}")]
    BadUrl(String),
    /// No answer: the server is not there, or the URL is wrong.
    #[error("cannot reach {url}: {why}")]
    Unreachable {
        /// The server's URL.
        url: String,
        /// What went wrong.
        why: String,
    },
}

/// A request to a task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRequest {
    /// The path under the server's URL, e.g. `/api/tasks/ID/steps/1/report`.
    pub path: String,
    /// The JSON body, if the route takes one.
    pub body: Option<Value>,
}

impl TaskRequest {
    /// A worker's report on step `step` of `task_id`.
    pub fn report(task_id: &str, step: u32, body: Value) -> TaskRequest {
        TaskRequest { path: format!("/api/tasks/{}/steps/{step}/report", encode(task_id)), body: Some(body) }
    }

    /// A control (`pause`, `resume`, `cancel`, `approve`, `reject`) of `task_id`.
    pub fn control(task_id: &str, action: &str, body: Option<Value>) -> TaskRequest {
        TaskRequest { path: format!("/api/tasks/{}/{action}", encode(task_id)), body }
    }
}

/// Keeps a task id from reshaping the path (ids are hex; anything else is sent encoded and
/// answered 404 by the server).
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// POSTs `request` to the server at `url` as `token` and answers the task's progress
/// document the server sent back.
pub async fn send(url: &str, token: &str, request: &TaskRequest) -> Result<Value, RemoteError> {
    let url = url.trim_end_matches('/');
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(RemoteError::BadUrl(url.to_owned()));
    }
    let unreachable = |why: String| RemoteError::Unreachable { url: url.to_owned(), why };
    let body = request.body.as_ref().map_or_else(Body::empty, |body| Body::from(body.to_string()));
    let http = Request::builder()
        .method(Method::POST)
        .uri(format!("{url}{}", request.path))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(body)
        .map_err(|error| unreachable(error.to_string()))?;
    let client: Client<HttpsConnector<HttpConnector>, Body> = Client::builder().build(HttpsConnector::new());
    let exchange = async {
        let (head, body) = client.request(http).await?.into_parts();
        Ok::<_, hyper::Error>((head.status.as_u16(), hyper::body::to_bytes(body).await?))
    };
    let (status, body) = tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", ANSWER_TIMEOUT.as_secs())))?
        .map_err(|error| unreachable(error.to_string()))?;
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        return Ok(answer);
    }
    let error = &answer["error"];
    Err(RemoteError::Refused {
        status,
        code: error["code"].as_str().unwrap_or("unknown").to_owned(),
        message: error["message"].as_str().map_or_else(|| String::from_utf8_lossy(&body).into_owned(), str::to_owned),
    })
}

/// One line on where a task stands, from its progress document: "task ID running 40%, step 2
/// of 4 running at 60% (Generate UI)".
pub fn summary(document: &Value) -> String {
    let steps = document["steps"].as_array().map_or(&[][..], Vec::as_slice);
    let current = document["current_step"].as_u64();
    let step = steps.iter().find(|s| s["order"].as_u64() == current);
    let mut line = format!(
        "task {} {} {}%",
        document["task_id"].as_str().unwrap_or("?"),
        document["status"].as_str().unwrap_or("?"),
        document["progress"].as_u64().unwrap_or(0)
    );
    if let Some(step) = step {
        line.push_str(&format!(
            ", step {} of {} {} at {}% ({})",
            step["order"].as_u64().unwrap_or(0),
            steps.len(),
            step["status"].as_str().unwrap_or("?"),
            step["progress"].as_u64().unwrap_or(0),
            step["name"].as_str().unwrap_or("?")
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_keep_task_ids_in_their_segment() {
        assert_eq!(TaskRequest::report("ab12", 3, json!({})).path, "/api/tasks/ab12/steps/3/report");
        assert_eq!(TaskRequest::control("a/../b", "pause", None).path, "/api/tasks/a%2F%2E%2E%2Fb/pause");
    }

    #[test]
    fn the_summary_names_the_current_step() {
        let document = json!({"task_id": "t1", "status": "running", "progress": 40, "current_step": 2,
            "steps": [{"order": 1, "name": "Load", "status": "completed", "progress": 100},
                      {"order": 2, "name": "Publish", "status": "running", "progress": 20}]});
        assert_eq!(summary(&document), "task t1 running 40%, step 2 of 2 running at 20% (Publish)");
    }
}
