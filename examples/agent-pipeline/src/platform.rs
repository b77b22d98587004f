//! The simulated platform: an orchestrator driving seven agents over a data layer (artifacts,
//! budget, settings), every call instrumented with `#[rl_triplet]`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use rltrace_sdk::rl_triplet;
use serde::Serialize;
use serde_json::json;

use crate::llm::SimulatedLlm;
use crate::{TaskReport, later_outcomes, task_rng};

/// The seven agents, in pipeline order.
pub const AGENTS: [&str; 7] = ["Planning", "Design", "Design Review", "Code", "Code Review", "Test", "Postmortem"];

/// Most send-backs of one review loop.
const MAX_ITERATIONS: u32 = 3;
/// Most artifacts kept in memory (oldest dropped first).
const MAX_ARTIFACTS: usize = 10_000;

/// An agent's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum AgentError {
    /// The model did not answer in time.
    #[error("llm call timed out after {0} ms")]
    LlmTimeout(u64),
    /// The task ran out of budget.
    #[error("budget exhausted")]
    BudgetExhausted,
}

/// Settings read from the data layer.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Most review send-backs.
    pub max_iterations: u32,
    /// Budget of one task in cents.
    pub task_budget_cents: i64,
    /// Model of the coding agents.
    pub model: &'static str,
}

/// What an agent produced.
#[derive(Debug, Clone, Serialize)]
pub struct AgentOutput {
    /// A summary of the work.
    pub summary: String,
    /// For reviews: the work goes back to the previous agent.
    pub send_back: bool,
    /// Tokens used.
    pub tokens: u64,
}

/// The platform's shared state.
#[derive(Debug)]
pub struct Platform {
    budget_cents: AtomicI64,
    pending_approvals: AtomicI64,
    active_agents: AtomicI64,
    triplets: AtomicU64,
    artifacts: Mutex<(HashMap<String, usize>, std::collections::VecDeque<String>)>,
    llm: SimulatedLlm,
}

impl Platform {
    /// A platform for `tasks` tasks.
    pub fn new(_seed: u64, tasks: usize) -> Platform {
        Platform {
            budget_cents: AtomicI64::new(5_000 * tasks.max(1) as i64),
            pending_approvals: AtomicI64::new(0),
            active_agents: AtomicI64::new(0),
            triplets: AtomicU64::new(0),
            artifacts: Mutex::new((HashMap::new(), std::collections::VecDeque::new())),
            llm: SimulatedLlm,
        }
    }

    /// Triplets recorded so far.
    pub fn triplets(&self) -> u64 {
        self.triplets.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.triplets.fetch_add(1, Ordering::Relaxed);
    }

    fn system(&self) -> serde_json::Value {
        json!({
            "budget_remaining_cents": self.budget_cents.load(Ordering::Relaxed),
            "pending_approvals": self.pending_approvals.load(Ordering::Relaxed),
            "active_agents": self.active_agents.load(Ordering::Relaxed),
        })
    }

    /// Run task number `i`: the pipeline, then the outcomes decided later (returned, sent by the caller).
    pub async fn run_task(&self, i: usize, seed: u64) -> TaskReport {
        let task_id = format!("task-{seed}-{i:04}");
        let mut rng = task_rng(seed, i);
        let title = format!("feature {}", rng.random_range(100..999));
        let run = orchestrate(self, &task_id, &title, &mut rng).await;
        let (agent_calls, design_iterations, code_iterations) = run.unwrap_or_default();
        let (decision, tests, defect) = later_outcomes(&mut rng, code_iterations);
        TaskReport { task_id, agent_calls, design_iterations, code_iterations, decision, tests, defect }
    }
}

/// The orchestrator's loop for one task: plan, design with review, code with review, test,
/// postmortem. Returns (agent calls, design send-backs, code send-backs).
#[rl_triplet(role = "Orchestrator", task_id = task_id, skip(platform, rng))]
async fn orchestrate(platform: &Platform, task_id: &str, title: &str, rng: &mut StdRng) -> Result<(u64, u32, u32), AgentError> {
    platform.count();
    platform.pending_approvals.fetch_add(1, Ordering::Relaxed);
    rltrace_sdk::state("system", &platform.system());
    let settings = read_settings(platform, task_id);
    let mut calls = 0u64;
    let plan = agent_execute(platform, task_id, "Planning", 0, title, rng).await?;
    calls += 1;
    let mut design_iterations = 0;
    let design = loop {
        let design = agent_execute(platform, task_id, "Design", design_iterations, &plan.summary, rng).await?;
        let review = agent_execute(platform, task_id, "Design Review", design_iterations, &design.summary, rng).await?;
        calls += 2;
        if !review.send_back || design_iterations + 1 >= settings.max_iterations {
            break design;
        }
        design_iterations += 1;
    };
    let mut code_iterations = 0;
    loop {
        let code = match agent_execute(platform, task_id, "Code", code_iterations, &design.summary, rng).await {
            Ok(c) => c,
            // A timed-out model call is retried as the next iteration.
            Err(AgentError::LlmTimeout(_)) if code_iterations + 1 < settings.max_iterations => {
                calls += 1;
                code_iterations += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        let review = agent_execute(platform, task_id, "Code Review", code_iterations, &code.summary, rng).await?;
        calls += 2;
        if !review.send_back || code_iterations + 1 >= settings.max_iterations {
            break;
        }
        code_iterations += 1;
    }
    agent_execute(platform, task_id, "Test", 0, &design.summary, rng).await?;
    agent_execute(platform, task_id, "Postmortem", 0, title, rng).await?;
    calls += 2;
    platform.pending_approvals.fetch_sub(1, Ordering::Relaxed);
    rltrace_sdk::action("agent_calls", &calls);
    rltrace_sdk::end_sequence();
    Ok((calls, design_iterations, code_iterations))
}

/// One agent's work: read the budget, call the model, write the artifact.
#[rl_triplet(role = role, task_id = task_id, skip(platform, input, rng))]
async fn agent_execute(
    platform: &Platform,
    task_id: &str,
    role: &'static str,
    iteration: u32,
    input: &str,
    rng: &mut StdRng,
) -> Result<AgentOutput, AgentError> {
    platform.count();
    platform.active_agents.fetch_add(1, Ordering::Relaxed);
    let budget = read_budget(platform, task_id);
    rltrace_sdk::state("pipeline", &json!({"phase": role, "iteration": iteration, "max_iterations": MAX_ITERATIONS}));
    rltrace_sdk::state("system", &platform.system());
    let prompt = format!("You are the {role} agent. Task {task_id}, iteration {iteration}. Input: {input}");
    let call = platform.llm.complete(rng, role, &prompt);
    rltrace_sdk::state("llm", &json!({"model": call.model, "prompt": call.prompt, "temperature": 0.2}));
    // Model latency, scaled down 2000 times so the demo stays fast.
    tokio::time::sleep(Duration::from_micros(call.latency_ms / 2)).await;
    let timed_out = role == "Code" && rng.random_bool(0.05);
    platform.active_agents.fetch_sub(1, Ordering::Relaxed);
    if budget <= 0 {
        return Err(AgentError::BudgetExhausted);
    }
    if timed_out {
        rltrace_sdk::action("llm_latency_ms", &call.latency_ms);
        return Err(AgentError::LlmTimeout(call.latency_ms));
    }
    platform.budget_cents.fetch_sub(call.cost_cents.ceil() as i64, Ordering::Relaxed);
    rltrace_sdk::action("llm", &json!({"response": call.response, "tokens_in": call.tokens_in, "tokens_out": call.tokens_out,
        "cost_cents": call.cost_cents, "latency_ms": call.latency_ms}));
    let _ = rltrace_sdk::reward_component("cost", (1.0 - call.cost_cents / 10.0).clamp(0.0, 1.0));
    let send_back = role.ends_with("Review") && rng.random_bool(0.35);
    if role.ends_with("Review") {
        let _ = rltrace_sdk::reward_component("validation", if send_back { 0.0 } else { 1.0 });
    }
    write_artifact(platform, task_id, role, &call.response)?;
    Ok(AgentOutput { summary: call.response, send_back, tokens: call.tokens_in + call.tokens_out })
}

/// Data layer: the settings of the platform.
#[rl_triplet(role = "DataLayer", task_id = task_id, skip(platform))]
fn read_settings(platform: &Platform, task_id: &str) -> Settings {
    platform.count();
    Settings { max_iterations: MAX_ITERATIONS, task_budget_cents: 5_000, model: "sim-large-2" }
}

/// Data layer: the budget left.
#[rl_triplet(role = "DataLayer", task_id = task_id, skip(platform))]
fn read_budget(platform: &Platform, task_id: &str) -> i64 {
    platform.count();
    platform.budget_cents.load(Ordering::Relaxed)
}

/// Data layer: store an artifact; returns its size.
#[rl_triplet(role = "DataLayer", task_id = task_id, skip(platform, content))]
fn write_artifact(platform: &Platform, task_id: &str, kind: &str, content: &str) -> Result<usize, AgentError> {
    platform.count();
    let key = format!("{task_id}/{kind}");
    if let Ok(mut guard) = platform.artifacts.lock() {
        let (map, order) = &mut *guard;
        if map.insert(key.clone(), content.len()).is_none() {
            order.push_back(key);
            if order.len() > MAX_ARTIFACTS
                && let Some(old) = order.pop_front()
            {
                map.remove(&old);
            }
        }
    }
    Ok(content.len())
}
