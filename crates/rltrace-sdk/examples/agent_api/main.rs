//! An instrumented agent platform in miniature: an axum API in front of a three-agent pipeline.
//! It serves on 127.0.0.1:0, sends itself one request as a UI would (with a `traceparent`),
//! rewards the task's sequence through the collector's reward API, flushes and exits.
//!
//! ```sh
//! cargo run --release -- serve &                       # the collector on 127.0.0.1:4318
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 \
//!   cargo run -p rltrace-sdk --example agent_api
//! curl -s http://127.0.0.1:4318/api/v1/sequences/task-1
//! ```
//!
//! Over gRPC: `OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 OTEL_EXPORTER_OTLP_PROTOCOL=grpc
//! RLTRACE_API_URL=http://127.0.0.1:4318`.

mod app;

use rltrace_sdk::Strategy;
use rltrace_sdk::client::{NewReward, RewardClient};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let guard = rltrace_sdk::builder().service_name("agent-api-example").install()?;
    let report = app::run_once("task-1", "session-1").await?;
    println!("task {} approved={} trace {}", report.task_id, report.result.approved, report.trace_id);
    // Export the spans before rewarding the sequence they form.
    guard.flush()?;
    // The REST API is on the collector's HTTP listener (not its gRPC one).
    let collector = std::env::var("RLTRACE_API_URL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .unwrap_or_else(|_| "http://127.0.0.1:4318".into());
    let reward = NewReward::sequence(&report.task_id, Strategy::Uniform, 1.0, "hitl").reason("merged").pending(true);
    match RewardClient::new(collector)?.post_reward(&reward).await {
        Ok(e) => println!("sequence reward stored as {}", e.reward_id),
        Err(e) => eprintln!("reward not sent: {e}"),
    }
    guard.shutdown()?;
    Ok(())
}
