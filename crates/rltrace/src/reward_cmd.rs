//! `rltrace reward`: append a reward event or a callback to a running collector, apply the
//! fallback reward (`settle`), and explain how a triplet's effective reward was computed.

use anyhow::{Context, Result, bail};
use rltrace_core::export::TripletView;
use rltrace_core::reward::{RewardEvent, RewardTarget};
use rltrace_core::time::format_micros;
use rltrace_store::Store;
use serde_json::{Value, json};

use crate::StoreArgs;

#[derive(clap::Args)]
pub(crate) struct RewardArgs {
    #[command(subcommand)]
    command: RewardCommand,
}

#[derive(clap::Args, Clone)]
struct Server {
    /// Collector URL.
    #[arg(long, default_value = "http://127.0.0.1:4318", env = "RLTRACE_URL")]
    url: String,
    /// API key with the write scope (sent as `Authorization: Bearer KEY`).
    #[arg(long, env = "RLTRACE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Idempotency key (a retry with the same key and body is answered with the stored event).
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Accept an unknown target and join the reward when it arrives.
    #[arg(long)]
    pending: bool,
}

#[derive(clap::Subcommand)]
enum RewardCommand {
    /// Append a reward event for a triplet or a sequence.
    Add {
        #[command(flatten)]
        server: Server,
        /// Target triplet id.
        #[arg(long, conflicts_with = "sequence", required_unless_present = "sequence")]
        triplet: Option<String>,
        /// Target sequence id.
        #[arg(long)]
        sequence: Option<String>,
        /// Sequence strategy: uniform, discounted, last, role.
        #[arg(long, default_value = "uniform", requires = "sequence")]
        strategy: String,
        /// Discount factor of the discounted strategy, in (0, 1].
        #[arg(long)]
        gamma: Option<f64>,
        /// Role of the role strategy.
        #[arg(long)]
        role: Option<String>,
        /// Value in [0, 1].
        #[arg(long)]
        value: f64,
        /// Source name.
        #[arg(long)]
        source: String,
        /// Reason.
        #[arg(long)]
        reason: Option<String>,
    },
    /// A human decision on a sequence.
    Hitl {
        #[command(flatten)]
        server: Server,
        /// Sequence id.
        #[arg(long)]
        sequence: String,
        /// approved, approved_with_changes, rejected or deferred.
        #[arg(long)]
        decision: String,
        /// Who decided.
        #[arg(long)]
        reviewer: String,
        /// Why.
        #[arg(long)]
        justification: String,
    },
    /// Test results for a sequence.
    Tests {
        #[command(flatten)]
        server: Server,
        /// Sequence id.
        #[arg(long)]
        sequence: String,
        /// Tests passed.
        #[arg(long)]
        passed: u64,
        /// Tests failed.
        #[arg(long)]
        failed: u64,
        /// Tests skipped.
        #[arg(long)]
        skipped: Option<u64>,
    },
    /// A defect found later, penalising the triplets of the phase that injected it.
    Defect {
        #[command(flatten)]
        server: Server,
        /// Task id (reaches the triplets of the task).
        #[arg(long, conflicts_with = "sequence", required_unless_present = "sequence")]
        task: Option<String>,
        /// Sequence id.
        #[arg(long)]
        sequence: Option<String>,
        /// PSP defect type (10_Documentation ... 100_Environment).
        #[arg(long = "type")]
        defect_type: String,
        /// Low, Medium, High or Critical.
        #[arg(long)]
        severity: String,
        /// Phase that injected the defect (an agent role or phase).
        #[arg(long)]
        injected: String,
        /// Phase that removed it.
        #[arg(long)]
        removed: String,
        /// What was wrong.
        #[arg(long)]
        description: String,
    },
    /// Apply the policy's fallback reward to sequences with no terminal-type reward after reward_wait.
    Settle {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Explain, source by source, how a triplet's effective reward is computed.
    Explain {
        #[command(flatten)]
        store: StoreArgs,
        /// Triplet id.
        triplet_id: String,
    },
}

fn post(server: &Server, path: &str, mut body: Value) -> Result<()> {
    if let Some(k) = &server.idempotency_key {
        body["idempotency_key"] = json!(k);
    }
    if server.pending {
        body["pending"] = json!(true);
    }
    let url = format!("{}{path}", server.url.trim_end_matches('/'));
    let mut req = reqwest::blocking::Client::new().post(&url).json(&body);
    if let Some(k) = server.api_key.as_deref().filter(|k| !k.is_empty()) {
        req = req.bearer_auth(k);
    }
    let resp = req.send().with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    let text = resp.text().unwrap_or_default();
    let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !status.is_success() {
        let msg = parsed["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| parsed.to_string());
        bail!("{status}: {msg}");
    }
    println!("{}", serde_json::to_string_pretty(&parsed)?);
    Ok(())
}

pub(crate) fn run(args: RewardArgs) -> Result<()> {
    match args.command {
        RewardCommand::Add { server, triplet, sequence, strategy, gamma, role, value, source, reason } => {
            let target = match (triplet, sequence) {
                (Some(t), _) => json!({"triplet_id": t}),
                (None, Some(s)) => {
                    let mut t = json!({"sequence_id": s, "strategy": strategy});
                    if let Some(g) = gamma {
                        t["gamma"] = json!(g);
                    }
                    if let Some(r) = role {
                        t["role"] = json!(r);
                    }
                    t
                }
                (None, None) => bail!("give --triplet or --sequence"),
            };
            let mut body = json!({"target": target, "value": value, "source": source});
            if let Some(r) = reason {
                body["reason"] = json!(r);
            }
            post(&server, "/api/v1/rewards", body)
        }
        RewardCommand::Hitl { server, sequence, decision, reviewer, justification } => post(
            &server,
            "/api/v1/callbacks/hitl",
            json!({"sequence_id": sequence, "decision": decision, "reviewer": reviewer, "justification": justification}),
        ),
        RewardCommand::Tests { server, sequence, passed, failed, skipped } => {
            let mut body = json!({"sequence_id": sequence, "passed": passed, "failed": failed});
            if let Some(s) = skipped {
                body["skipped"] = json!(s);
            }
            post(&server, "/api/v1/callbacks/tests", body)
        }
        RewardCommand::Defect { server, task, sequence, defect_type, severity, injected, removed, description } => {
            let mut body = json!({"defect_type": defect_type, "severity": severity, "phase_injected": injected,
                "phase_removed": removed, "description": description});
            match (task, sequence) {
                (Some(t), _) => body["task_id"] = json!(t),
                (None, Some(s)) => body["sequence_id"] = json!(s),
                (None, None) => bail!("give --task or --sequence"),
            }
            post(&server, "/api/v1/callbacks/defects", body)
        }
        RewardCommand::Settle { store } => settle(&store),
        RewardCommand::Explain { store, triplet_id } => explain(&store, &triplet_id),
    }
}

fn open(store: &StoreArgs) -> Result<Store> {
    store.open_with(true, |c| c)
}

fn settle(args: &StoreArgs) -> Result<()> {
    let policy = args.policy()?;
    let (Some(value), Some(wait)) = (policy.default_reward, policy.reward_wait) else {
        bail!("the policy sets no fallback: give default_reward and reward_wait in the policy file (--policy)");
    };
    let store = open(args)?;
    let n = store.settle_blocking(&policy)?;
    eprintln!("fallback reward {value} applied to {n} sequences with no terminal-type reward after {wait} s");
    Ok(())
}

fn target_text(e: &RewardEvent) -> String {
    match &e.target {
        RewardTarget::Triplet { triplet_id } => format!("triplet {triplet_id}"),
        RewardTarget::Sequence { sequence_id, strategy } => {
            let mut s = format!("sequence {sequence_id} ({}", strategy.name());
            if let Some(g) = strategy.gamma() {
                s.push_str(&format!(", gamma {g}"));
            }
            if let Some(r) = strategy.role() {
                s.push_str(&format!(", {r}"));
            }
            s.push(')');
            s
        }
        RewardTarget::Task { task_id, phase } => format!("task {task_id} (phase {phase})"),
    }
}

fn explain(args: &StoreArgs, triplet_id: &str) -> Result<()> {
    let policy = args.policy()?;
    // Read-only: explaining never writes, and may run beside a live collector.
    let store = args.open_read_only()?;
    let Some(detail) = store.read(|tx| tx.triplet(triplet_id, &policy))? else {
        bail!("triplet {triplet_id:?} not found");
    };
    let t: &TripletView = &detail.triplet;
    println!("triplet {} (sequence {}, index {}, role {})", t.triplet_id, t.sequence_id, t.sequence_index, t.role.as_deref().unwrap_or("-"));
    println!("policy {}", policy.hash());
    if detail.ledger.is_empty() {
        println!("ledger: no event reaches it");
    } else {
        println!("ledger events reaching it:");
        for e in &detail.ledger {
            let value = match e.value_under(&policy) {
                Some(v) => format!("{v}"),
                None => "no value".into(),
            };
            println!(
                "  {}  {:<14} {:<10} {}  [{}]{}",
                format_micros(e.created_at),
                e.source,
                value,
                target_text(e),
                e.reward_id,
                e.reason.as_deref().map(|r| format!("  {r}")).unwrap_or_default()
            );
        }
    }
    let eff = &t.effective;
    if eff.sources.is_empty() {
        println!("effective reward: null (no reward reaches it)");
        return Ok(());
    }
    println!("{:<16} {:>7} {:<10} {:>6} {:>10}", "source", "weight", "aggregate", "events", "value");
    let (mut num, mut den) = (0.0, 0.0);
    let mut terms = Vec::new();
    for (name, sv) in &eff.sources {
        println!("{:<16} {:>7} {:<10} {:>6} {:>10.6}", name, sv.weight, sv.aggregation.name(), sv.events, sv.value);
        num += sv.weight * sv.value;
        den += sv.weight;
        terms.push(format!("{} x {:.6}", sv.weight, sv.value));
        // Every event of the source considered; `*` marks the one (or those) its value comes from.
        for x in detail.explain.iter().filter(|x| &x.source == name) {
            for c in &x.events {
                println!(
                    "    {} {}  {:>10.6}  {}",
                    if c.used { "*" } else { " " },
                    format_micros(c.at),
                    c.value,
                    c.reward_id.as_deref().unwrap_or("(the span's immediate reward)")
                );
            }
        }
    }
    match eff.reward {
        Some(r) => println!("effective reward = ({}) / {} = {:.6}", terms.join(" + "), den, r),
        None => println!("effective reward: null (every source weighs 0; sum {num})"),
    }
    Ok(())
}
