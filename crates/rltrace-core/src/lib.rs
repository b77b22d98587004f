//! Domain types and pure logic of rltrace.
//!
//! This crate knows what a span, a triplet, a sequence and a reward event are, how a span becomes a
//! triplet (the `rl.*` wire conventions, GenAI, OpenLLMetry and OpenInference LLM and tool spans), how reward events reach
//! triplets and how the effective reward is computed under a reward policy.
//!
//! Invariants: no IO, no async, no wire types (no protobuf, no SQL, no HTTP). Values come in as
//! [`span::SpanRecord`] and leave as plain Rust or `serde_json` values.

pub mod dataset;
pub mod export;
pub mod genai;
pub mod ids;
pub mod policy;
pub mod retention;
pub mod redact;
pub mod reward;
pub mod sequence;
pub mod span;
pub mod time;
pub mod triplet;
pub mod whatif;

pub use policy::Policy;
pub use reward::{RewardEvent, RewardTarget, Strategy};
pub use span::{AttrValue, SpanEvent, SpanRecord};
pub use triplet::{AnalyzedSpan, Limits, SpanAnalysis, TripletData};
