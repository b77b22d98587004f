//! `rltrace demo`: the reference seven-agent pipeline (`examples/agent-pipeline`), instrumented with
//! the SDK, run against a collector at a URL or an embedded one, then the delayed rewards a
//! platform would send: a reviewer decision and a test run per task, defects found later.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use rltrace_agent_pipeline::{DemoConfig, TaskReport};
use rltrace_server::{AppState, Bound, IngestLimits};
use rltrace_store::{Store, StoreConfig};

#[derive(clap::Args)]
pub(crate) struct DemoArgs {
    /// Tasks to run through the pipeline.
    #[arg(long, default_value_t = 20)]
    tasks: usize,
    /// Seed of the simulated LLM and of every decision (same seed, same run).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Collector URL to send to.
    #[arg(long, default_value = "http://127.0.0.1:4318", conflicts_with = "embedded")]
    target: String,
    /// Start a collector in this process instead (database --db, HTTP on --http).
    #[arg(long)]
    embedded: bool,
    /// Database of the embedded collector.
    #[arg(long, default_value = "rltrace-demo.db")]
    db: PathBuf,
    /// HTTP address of the embedded collector.
    #[arg(long, default_value = "127.0.0.1:4318")]
    http: SocketAddr,
    /// gRPC address of the embedded collector.
    #[arg(long, default_value = "127.0.0.1:4317")]
    grpc: SocketAddr,
    /// Reward policy of the embedded collector.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// With --embedded: stop when the demo ends instead of serving until Ctrl-C.
    #[arg(long)]
    exit: bool,
    /// Tasks run at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

pub(crate) fn run(args: DemoArgs) -> Result<()> {
    if args.tasks == 0 {
        bail!("--tasks must be at least 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: DemoArgs) -> Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = None;
    let target = if args.embedded {
        let policy = match &args.policy {
            None => rltrace_core::Policy::default(),
            Some(p) => rltrace_core::Policy::from_toml(&std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?)
                .with_context(|| format!("policy file {}", p.display()))?,
        };
        let store = Store::open(StoreConfig::new(&args.db)).with_context(|| format!("cannot open store {}", args.db.display()))?;
        let state = AppState::new(store, policy, IngestLimits::default());
        let bound = Bound::bind(args.http, args.grpc).await.context("cannot bind the embedded collector")?;
        let http = bound.http.local_addr()?;
        let grpc = bound.grpc.local_addr()?;
        println!("rltrace demo: embedded collector http=http://{http} grpc={grpc} db={}", args.db.display());
        server = Some(tokio::spawn(rltrace_server::serve(state, bound, async move {
            let _ = stop_rx.await;
        })));
        format!("http://{http}")
    } else {
        args.target.trim_end_matches('/').to_string()
    };
    let config = DemoConfig { tasks: args.tasks, seed: args.seed, collector: target.clone(), concurrency: args.concurrency };
    let pb = crate::progress(args.tasks as u64, "demo");
    let pb2 = pb.clone();
    let summary = rltrace_agent_pipeline::run(&config, move |r: &TaskReport| {
        pb2.inc(1);
        pb2.set_message(r.task_id.clone());
    })
    .await?;
    pb.finish_and_clear();
    let decisions: Vec<String> = summary.decisions.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let defects = summary.reports.iter().filter(|r| r.defect.is_some()).count();
    println!(
        "rltrace demo: {} tasks, {} triplets, {} rewards ({}; {} test runs; {} defects) in {:.2} s",
        summary.tasks,
        summary.triplets,
        summary.rewards,
        decisions.join(", "),
        summary.tasks,
        defects,
        summary.seconds
    );
    println!("  sequences: {target}/api/v1/sequences   export: {target}/api/v1/export?format=jsonl&manifest=true");
    if let Some(server) = server {
        if !args.exit {
            println!("  the embedded collector keeps serving; Ctrl-C to stop");
            let _ = tokio::signal::ctrl_c().await;
        }
        let _ = stop_tx.send(());
        server.await??;
    }
    Ok(())
}
