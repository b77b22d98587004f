//! The example application: an axum API whose handler runs a three-agent pipeline (plan, code,
//! review), every agent call a `#[rl_triplet]` function and every request a triplet of the
//! tower layer. Shared by the example binary and the collector's end-to-end test
//! (`crates/rltrace/tests/sdk_e2e.rs`), which includes this file.
#![allow(dead_code)]

use std::net::SocketAddr;

use axum::extract::Path;
use axum::routing::post;
use axum::{Json, Router};
use http::HeaderName;
use rltrace_sdk::{TripletLayer, rl_triplet};
use serde::{Deserialize, Serialize};

/// Header carrying the UI session.
pub const SESSION_HEADER: &str = "x-session-id";
/// Header carrying the user.
pub const USER_HEADER: &str = "x-user-id";

/// A task the pipeline works on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Task {
    /// Its id: the pipeline's sequence id.
    pub id: String,
    /// What to build.
    pub goal: String,
}

/// An agent's failure.
#[derive(Debug)]
pub struct AgentError(pub String);

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AgentError {}

/// The planning agent.
#[rl_triplet(role = "Plan", task_id = task.id)]
pub async fn plan(task: &Task) -> Result<Vec<String>, AgentError> {
    tokio::task::yield_now().await;
    if task.goal.is_empty() {
        return Err(AgentError("empty goal".into()));
    }
    Ok(vec![format!("design {}", task.goal), format!("implement {}", task.goal)])
}

/// The coding agent.
#[rl_triplet(role = "Code", task_id = task.id)]
pub async fn code(task: &Task, steps: &[String]) -> Result<String, AgentError> {
    rltrace_sdk::state("phase", "implementation");
    let diff = steps.iter().map(|s| format!("+ {s}")).collect::<Vec<_>>().join("\n");
    rltrace_sdk::action("lines_changed", &steps.len());
    // A cost component in [0, 1]: cheaper is better.
    rltrace_sdk::reward_component("cost", 0.8).map_err(|e| AgentError(e.to_string()))?;
    Ok(diff)
}

/// The review agent: judges the diff, rewards itself through a span event and closes the
/// sequence.
#[rl_triplet(role = "Review", task_id = task.id, skip(diff))]
pub async fn review(task: &Task, diff: &str) -> Result<bool, AgentError> {
    let approved = !diff.is_empty();
    rltrace_sdk::reward(if approved { 0.9 } else { 0.1 }).source("judge").reason("diff reviewed").emit().map_err(|e| AgentError(e.to_string()))?;
    rltrace_sdk::end_sequence();
    Ok(approved)
}

/// What the API answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// The task.
    pub task_id: String,
    /// Whether the review approved.
    pub approved: bool,
    /// The trace of the request.
    pub trace_id: Option<String>,
}

async fn run_task(Path(task_id): Path<String>, Json(goal): Json<String>) -> Result<Json<RunResult>, (http::StatusCode, String)> {
    let task = Task { id: task_id, goal };
    let pipeline = async {
        let steps = plan(&task).await?;
        let diff = code(&task, &steps).await?;
        review(&task, &diff).await
    };
    match pipeline.await {
        Ok(approved) => {
            let mut h = http::HeaderMap::new();
            rltrace_sdk::inject_traceparent(&mut h);
            let trace_id = h.get("traceparent").and_then(|v| v.to_str().ok()).and_then(|t| t.split('-').nth(1)).map(str::to_string);
            Ok(Json(RunResult { task_id: task.id, approved, trace_id }))
        }
        Err(e) => Err((http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// The API: `POST /api/tasks/{task_id}/run` with the goal as a JSON string.
pub fn router() -> Router {
    Router::new().route("/api/tasks/{task_id}/run", post(run_task)).layer(
        TripletLayer::new()
            .role("api")
            .session_header(HeaderName::from_static(SESSION_HEADER))
            .capture_header(HeaderName::from_static(USER_HEADER), "user_id"),
    )
}

/// What one run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The trace id the "UI" started (sent in `traceparent`).
    pub trace_id: String,
    /// The session id sent.
    pub session_id: String,
    /// The task id run.
    pub task_id: String,
    /// The API's answer.
    pub result: RunResult,
}

/// Serve the API on 127.0.0.1:0, make one request to it as a UI would (with a `traceparent`
/// header of its own trace), stop the server, and report.
pub async fn run_once(task_id: &str, session_id: &str) -> Result<Report, Box<dyn std::error::Error + Send + Sync>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router())
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });

    // The UI click: a trace of its own, propagated to the API.
    let trace_id = format!("{:032x}", rand_u128());
    let traceparent = format!("00-{trace_id}-{:016x}-01", rand_u128() as u64 | 1);
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?;
    let resp = client
        .post(format!("http://{addr}/api/tasks/{task_id}/run"))
        .header("traceparent", traceparent)
        .header(SESSION_HEADER, session_id)
        .header(USER_HEADER, "user-7")
        .json(&"login page")
        .send()
        .await?;
    let status = resp.status();
    let body = resp.text().await?;
    let _ = stop_tx.send(());
    let _ = server.await;
    if !status.is_success() {
        return Err(format!("api answered {status}: {body}").into());
    }
    let result: RunResult = serde_json::from_str(&body)?;
    Ok(Report { trace_id, session_id: session_id.to_string(), task_id: task_id.to_string(), result })
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, RandomState};
    let a = RandomState::new().hash_one(std::time::SystemTime::now()) as u128;
    let b = RandomState::new().hash_one(std::process::id()) as u128;
    (a << 64) | b | 1
}
