//! A deterministic, seeded stand-in for an LLM: prompts, responses, token counts, cost and latency
//! drawn from the task's generator. No network.

use rand::Rng;
use rand::rngs::StdRng;
use serde::Serialize;

/// One simulated completion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LlmCall {
    /// Model name.
    pub model: &'static str,
    /// The prompt sent.
    pub prompt: String,
    /// The response.
    pub response: String,
    /// Prompt tokens.
    pub tokens_in: u64,
    /// Completion tokens.
    pub tokens_out: u64,
    /// Cost in US cents.
    pub cost_cents: f64,
    /// Simulated latency in milliseconds.
    pub latency_ms: u64,
}

/// The simulated model.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimulatedLlm;

const MODELS: [&str; 2] = ["sim-large-2", "sim-small-1"];
const WORDS: [&str; 16] = [
    "parse", "schema", "retry", "cache", "endpoint", "migration", "token", "budget", "review", "handler", "index", "queue",
    "timeout", "fixture", "rollback", "metric",
];

impl SimulatedLlm {
    /// Complete `prompt` for an agent.
    pub fn complete(self, rng: &mut StdRng, role: &str, prompt: &str) -> LlmCall {
        let model = if role.contains("Review") { MODELS[1] } else { MODELS[0] };
        let n = rng.random_range(12..40);
        let words: Vec<&str> = (0..n).map(|_| WORDS[rng.random_range(0..WORDS.len())]).collect();
        let response = format!("[{role}] {}", words.join(" "));
        let tokens_in = (prompt.len() / 4) as u64 + rng.random_range(50..400);
        let tokens_out = (response.len() / 4) as u64 + rng.random_range(20..200);
        let per_token = if model == MODELS[0] { 0.003 } else { 0.0006 };
        LlmCall {
            model,
            prompt: prompt.to_string(),
            response,
            tokens_in,
            tokens_out,
            cost_cents: (tokens_in + 3 * tokens_out) as f64 * per_token,
            latency_ms: rng.random_range(200..4000),
        }
    }
}
