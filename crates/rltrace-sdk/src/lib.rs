//! The instrumentation side of rltrace: turn the work of a Rust agent platform (its agents, its
//! orchestrator, its data layer, its HTTP API) into reinforcement-learning triplets sent as
//! OpenTelemetry spans that follow the rltrace wire conventions (`rl.*` attributes).
//!
//! - [`init`] / [`builder`]: an OpenTelemetry tracer provider with OTLP export (gRPC or HTTP
//!   by the standard `OTEL_EXPORTER_OTLP_*` variables), resource attributes, batch export, the
//!   SDK settings from `RLTRACE_*` variables, and a [`Guard`] that flushes on shutdown.
//! - [`macro@rl_triplet`]: one triplet per call of a sync or async function or method.
//! - [`TripletLayer`]: one triplet per HTTP request of an axum or tower service, with W3C trace
//!   context extracted and injected.
//! - [`state`], [`action`], [`reward_component`], [`reward`], [`end_sequence`]: enrich the
//!   current triplet from inside it.
//! - [`client::RewardClient`]: the collector's reward API and callbacks, for rewards that come
//!   later.
//!
//! The SDK depends on nothing server-side: it speaks OTLP and the collector's HTTP API only.
//!
//! # Example
//!
//! ```
//! use opentelemetry_sdk::trace::{InMemorySpanExporter, SimpleSpanProcessor};
//! use rltrace_sdk::rl_triplet;
//!
//! #[derive(serde::Serialize)]
//! struct Spec { title: String }
//!
//! #[rl_triplet(role = "Plan", task_id = task_id)]
//! fn plan(task_id: &str, spec: &Spec) -> Result<Vec<String>, std::io::Error> {
//!     rltrace_sdk::state("phase", "design");
//!     Ok(vec![format!("design {}", spec.title)])
//! }
//!
//! #[rl_triplet(role = "Code", scope = agent, task_id = task_id, skip(notes))]
//! async fn code(task_id: &str, steps: Vec<String>, notes: String) -> usize {
//!     steps.len()
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // In production: `let guard = rltrace_sdk::init()?;` exports over OTLP.
//! let exporter = InMemorySpanExporter::default();
//! let guard = rltrace_sdk::builder()
//!     .service_name("agents")
//!     .with_span_processor(SimpleSpanProcessor::new(exporter.clone()))
//!     .install()?;
//!
//! let steps = plan("task-1", &Spec { title: "login page".into() })?;
//! let n = futures_lite_block_on(code("task-1", steps, "private".into()));
//! assert_eq!(n, 1);
//!
//! let spans = exporter.get_finished_spans()?;
//! let attr = |name: &str, k: &str| {
//!     let span = spans.iter().find(|s| s.name == name)?;
//!     span.attributes.iter().find(|kv| kv.key.as_str() == k).map(|kv| kv.value.to_string())
//! };
//! assert_eq!(attr("plan", "rl.sequence_id").as_deref(), Some("task-1"));
//! assert_eq!(attr("code", "rl.sequence_id").as_deref(), Some("task-1:Code"));
//! let state: serde_json::Value = serde_json::from_str(&attr("plan", "rl.state").unwrap_or_default())?;
//! assert_eq!(state["agent_role"], "Plan");
//! assert_eq!(state["args"]["spec"]["title"], "login page");
//! assert_eq!(state["phase"], "design");
//! guard.shutdown()?;
//! # Ok(()) }
//! # fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().map(|rt| rt.block_on(f)).unwrap_or_else(|e| panic!("{e}"))
//! # }
//! ```
//!
//! # `#[rl_triplet]`
//!
//! Each call becomes one span (named after the function, or `name = "..."`) carrying:
//! - `rl.triplet_id` (a UUID v4), `rl.sequence_id`, `rl.sequence_scope`, `rl.sequence_index`
//!   (counted per sequence in this process, in start order, correct under concurrency),
//!   `rl.timestamp_utc`, `rl.sampling.probability`;
//! - `rl.state`, a JSON object: `agent_role`, `function`, `call_depth` (0 for a triplet with no
//!   enclosing triplet), `task_id` / `session_id` when known, `args` (the arguments that are not
//!   skipped, through `serde::Serialize`, or the value of the `state = path` capturer), and the
//!   fields added with [`state`];
//! - `rl.action`, a JSON object: `success`, `duration_ms`, and for an `Err` or a panic
//!   `error_type` and `error_message` (a panic also sets `panic: true`; it is recorded and
//!   resumed), for a `Serialize` output `output_size` and `output_sha256` (over its JSON) and
//!   `output` (or the value of the `action = path` capturer), and the fields added with
//!   [`action`];
//! - `rl.reward.success` (1 or 0), `rl.reward.latency` (1 within the latency budget,
//!   `budget / duration` beyond it), the components set with [`reward_component`], and
//!   `rl.reward` (their weighted mean) when reward weights are configured;
//! - `rl.sequence_end` after [`end_sequence`], and `rl.reward` span events from [`reward`].
//!
//! Sequence id by scope: `pipeline` (default) `{task_id}`, `agent` `{task_id}:{role}`,
//! `session` `{session_id}`, `custom` `sequence_id = ...`. A triplet without its scope's key
//! continues the sequence of the enclosing triplet (the task id and session id are inherited
//! too), and a triplet with no enclosing one uses its trace id, as the collector does. Captured
//! arguments must implement `Serialize` (the compiler says so, at the argument): `skip` the
//! others. An output that is not `Serialize` is simply not recorded.
//!
//! The current triplet travels in the OpenTelemetry [`Context`](opentelemetry::Context), so it
//! follows `.await`; work handed to another task joins it when spawned with
//! `opentelemetry::context::FutureExt::with_context(fut, Context::current())`.
//!
//! Strings in captured values follow the capture mode ([`CaptureMode`]): `truncate:500` by
//! default. Sampling ([`Builder::sampling_ratio`]) keeps or drops whole sequences by a hash of
//! the sequence id, the same decision in every process. Without an installed SDK, instrumented
//! functions run unchanged and record nothing.

mod capture;
pub mod client;
mod config;
mod error;
mod helpers;
mod layer;
mod runtime;
mod sequence;
mod setup;

#[doc(hidden)]
pub mod __private {
    //! Support code for `#[rl_triplet]`; not a public API.
    pub use crate::private::*;
}
mod private;

pub use config::{
    CaptureMode, DEFAULT_LATENCY_BUDGET, DEFAULT_TRUNCATE_CHARS, ENV_CAPTURE, ENV_ENVIRONMENT, ENV_LATENCY_BUDGET_MS, ENV_REWARD_WEIGHTS,
    ENV_SAMPLING_RATIO, RewardWeights, SHORT_STRING_BYTES, Settings, ENV_AGL_ATTEMPT_ID, ENV_AGL_EVENT_URL, ENV_AGL_ROLLOUT_ID, agl_link_from,
};
pub use error::Error;
pub use helpers::{
    Reward, Strategy, action, current_sequence_id, current_triplet_id, end_sequence, extract_context, inject_traceparent, reward,
    reward_component, state,
};
pub use layer::{ResponseFuture, RouteTemplate, TripletLayer, TripletService};
pub use rltrace_sdk_macros::rl_triplet;
pub use runtime::Scope;
pub use sequence::{MAX_SEQUENCES_PER_SHARD, sequence_hash};
pub use setup::{Builder, ENV_OTLP_PROTOCOL, ENV_OTLP_TRACES_PROTOCOL, Guard, Protocol, builder, init};
