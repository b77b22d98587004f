//! A simulated agent platform, instrumented with the rltrace SDK exactly as a user would: seven
//! agents (Planning, Design, Design Review, Code, Code Review, Test, Postmortem) driven by an
//! orchestrator over a small data layer, with a deterministic, seeded simulated LLM. Design review
//! and code review can send work back (feedback loops with an iteration counter in the state).
//! After each task the platform reports what people and tools decided later: a reviewer's decision,
//! a test run, and sometimes a defect found after release, through the SDK's reward client.
//!
//! Every agent call, orchestrator loop and data-layer call is a `#[rl_triplet]`; the sequence of a
//! task is its task id (scope `pipeline`). Nothing leaves the machine but OTLP and the reward API
//! on the collector's URL.

mod llm;
mod platform;

pub use llm::{LlmCall, SimulatedLlm};
pub use platform::{AGENTS, AgentError, Platform};

use std::collections::BTreeMap;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rltrace_sdk::client::{Decision, Defect, DefectTarget, HitlDecision, RewardClient, Severity, TestResults};

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Tasks to run.
    pub tasks: usize,
    /// Seed of every random choice (same seed, same pipeline).
    pub seed: u64,
    /// Collector base URL (OTLP/HTTP and the reward API), e.g. `http://127.0.0.1:4318`.
    pub collector: String,
    /// Tasks run at once.
    pub concurrency: usize,
}

/// What happened to one task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskReport {
    /// Task id (also its sequence id).
    pub task_id: String,
    /// Agent calls made (including send-backs).
    pub agent_calls: u64,
    /// Design review send-backs.
    pub design_iterations: u32,
    /// Code review send-backs.
    pub code_iterations: u32,
    /// The reviewer's decision.
    pub decision: &'static str,
    /// Tests passed and failed.
    pub tests: (u64, u64),
    /// A defect found later.
    pub defect: Option<LaterDefect>,
}

/// A defect found later: (PSP type, severity, phase injected, phase removed).
pub type LaterDefect = (&'static str, &'static str, &'static str, &'static str);

/// Totals of a demo run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Tasks run.
    pub tasks: usize,
    /// Triplets recorded (agent calls, orchestrator loops, data-layer calls, LLM calls).
    pub triplets: u64,
    /// Reward events sent (HITL decisions, test runs, defects).
    pub rewards: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Reviewer decisions by name.
    pub decisions: BTreeMap<&'static str, usize>,
    /// Reports per task, in task order.
    pub reports: Vec<TaskReport>,
}

/// Errors of a demo run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The SDK could not be set up or flushed.
    #[error("rltrace sdk: {0}")]
    Sdk(#[from] rltrace_sdk::Error),
}

/// Run the demo: install the SDK exporting to `config.collector`, run every task, flush the spans,
/// then send the delayed rewards. `progress` is called after each task.
pub async fn run(config: &DemoConfig, progress: impl Fn(&TaskReport) + Send + Sync) -> Result<Summary, DemoError> {
    let started = Instant::now();
    let guard = rltrace_sdk::builder()
        .service_name("agent-platform")
        .service_version(env!("CARGO_PKG_VERSION"))
        .environment("demo")
        .endpoint(config.collector.clone())
        .protocol(rltrace_sdk::Protocol::HttpProtobuf)
        .ignore_env()
        .install()?;
    let platform = std::sync::Arc::new(Platform::new(config.seed, config.tasks));
    let mut reports: Vec<TaskReport> = Vec::with_capacity(config.tasks);
    let ids: Vec<usize> = (0..config.tasks).collect();
    for chunk in ids.chunks(config.concurrency.max(1)) {
        let mut handles = Vec::new();
        for &i in chunk {
            let platform = std::sync::Arc::clone(&platform);
            let seed = config.seed;
            handles.push(tokio::spawn(async move { platform.run_task(i, seed).await }));
        }
        for h in handles {
            if let Ok(r) = h.await {
                progress(&r);
                reports.push(r);
            }
        }
    }
    guard.flush()?;
    let triplets = platform.triplets();
    drop(guard);
    // What happened later: review, tests, defects found after release.
    let client = RewardClient::new(config.collector.clone())?.from_env_key()?;
    let mut rewards = 0u64;
    let mut decisions: BTreeMap<&'static str, usize> = BTreeMap::new();
    for r in &reports {
        *decisions.entry(r.decision).or_default() += 1;
        let decision = match r.decision {
            "approved" => Decision::Approved,
            "approved_with_changes" => Decision::ApprovedWithChanges,
            "rejected" => Decision::Rejected,
            _ => Decision::Deferred,
        };
        let ok = client
            .hitl(&HitlDecision {
                sequence_id: r.task_id.clone(),
                decision,
                reviewer: format!("reviewer-{}", r.task_id.len() % 3),
                justification: justification(r.decision).into(),
            })
            .await;
        rewards += u64::from(ok.is_ok());
        let ok = client
            .tests(&TestResults { sequence_id: r.task_id.clone(), passed: r.tests.0, failed: r.tests.1, skipped: Some(0) })
            .await;
        rewards += u64::from(ok.is_ok());
        if let Some((defect_type, severity, injected, removed)) = r.defect {
            let severity = match severity {
                "Low" => Severity::Low,
                "Medium" => Severity::Medium,
                "High" => Severity::High,
                _ => Severity::Critical,
            };
            let ok = client
                .defect(&Defect {
                    target: DefectTarget::TaskId(r.task_id.clone()),
                    defect_type: defect_type.into(),
                    severity,
                    phase_injected: injected.into(),
                    phase_removed: removed.into(),
                    description: format!("{defect_type} found in {removed}, injected in {injected}"),
                })
                .await;
            rewards += u64::from(ok.is_ok());
        }
    }
    Ok(Summary { tasks: reports.len(), triplets, rewards, seconds: started.elapsed().as_secs_f64(), decisions, reports })
}

fn justification(decision: &str) -> &'static str {
    match decision {
        "approved" => "meets the acceptance criteria",
        "approved_with_changes" => "good, with naming and test changes",
        "rejected" => "does not solve the task",
        _ => "needs the product owner's input",
    }
}

/// The seeded generator of one task: the same seed and task give the same run whatever the
/// concurrency.
pub fn task_rng(seed: u64, task: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ (task as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Pick what people and tools decide about a task, from its generator.
pub(crate) fn later_outcomes(rng: &mut StdRng, code_iterations: u32) -> (&'static str, (u64, u64), Option<LaterDefect>) {
    let decision = match rng.random_range(0..10) {
        0..=4 => "approved",
        5..=6 => "approved_with_changes",
        7..=8 => "rejected",
        _ => "deferred",
    };
    let total = rng.random_range(10..40u64);
    let failed = if rng.random_bool(0.6) { 0 } else { rng.random_range(1..=total / 3) + u64::from(code_iterations) };
    let passed = total.saturating_sub(failed.min(total));
    let defect = rng.random_bool(0.3).then(|| {
        const TYPES: [&str; 10] = [
            "10_Documentation",
            "20_Syntax",
            "30_Build_Package",
            "40_Assignment",
            "50_Interface",
            "60_Checking",
            "70_Data",
            "80_Function",
            "90_System",
            "100_Environment",
        ];
        const SEVERITIES: [&str; 4] = ["Low", "Medium", "High", "Critical"];
        let injected = if rng.random_bool(0.6) { "Code" } else { "Design" };
        let removed = if rng.random_bool(0.5) { "Test" } else { "Postmortem" };
        (TYPES[rng.random_range(0..TYPES.len())], SEVERITIES[rng.random_range(0..SEVERITIES.len())], injected, removed)
    });
    (decision, (passed, failed), defect)
}
