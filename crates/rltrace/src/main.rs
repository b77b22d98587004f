//! The `rltrace` command: the collector (`serve`), `export`, `import` and `loadgen`.

mod demo;
mod export_cmd;
mod fill;
mod import;
mod loadgen;
mod reward_cmd;

/// jemalloc, with a background thread returning freed pages (`.cargo/config.toml`): glibc's
/// per-thread arenas kept what large requests freed (docs/BENCHMARKS.md, "OTLP/JSON overload").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use rltrace_core::Policy;
use rltrace_server::{AppState, Bound, IngestLimits};
use rltrace_store::{Store, StoreConfig};

#[derive(Parser)]
#[command(name = "rltrace", version, about = "Turns OpenTelemetry traces of agent platforms into reinforcement-learning data")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct StoreArgs {
    /// SQLite database file.
    #[arg(long, default_value = "rltrace.db", env = "RLTRACE_DB")]
    db: PathBuf,
    /// Store URL: `sqlite://PATH`, or `postgres://USER:PASSWORD@HOST:PORT/DB` (`postgresql://`
    /// too; the password may come from PGPASSWORD); overrides --db.
    #[arg(long, env = "RLTRACE_STORE", hide_env_values = true)]
    store: Option<String>,
    /// PostgreSQL: reader connections at most (each collector also keeps a writer connection and one that flushes the writer's log).
    #[arg(long, default_value_t = 8, env = "RLTRACE_PG_POOL_SIZE", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pg_pool_size: u32,
    /// PostgreSQL: seconds to wait for a connection (connecting, or a free one of the pool).
    #[arg(long, default_value_t = 5, env = "RLTRACE_PG_CONNECT_TIMEOUT", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pg_connect_timeout: u64,
    /// PostgreSQL: seconds one statement may run (statement_timeout).
    #[arg(long, default_value_t = 30, env = "RLTRACE_PG_STATEMENT_TIMEOUT", value_parser = clap::value_parser!(u64).range(1..=86400))]
    pg_statement_timeout: u64,
    /// Reward policy file (TOML).
    #[arg(long, env = "RLTRACE_POLICY")]
    policy: Option<PathBuf>,
}

/// Where the store is.
enum Location {
    Sqlite(PathBuf),
    Postgres(rltrace_store::PgConfig),
}

impl StoreArgs {
    fn location(&self) -> Result<Location> {
        match &self.store {
            None => Ok(Location::Sqlite(self.db.clone())),
            Some(url) => {
                if let Some(p) = url.strip_prefix("sqlite://") {
                    if p.is_empty() {
                        bail!("store URL {url:?} has no path: sqlite://PATH");
                    }
                    return Ok(Location::Sqlite(PathBuf::from(p)));
                }
                if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                    let mut pg = rltrace_store::PgConfig::new(url.clone());
                    pg.pool_size = self.pg_pool_size;
                    pg.connect_timeout = std::time::Duration::from_secs(self.pg_connect_timeout);
                    pg.statement_timeout = std::time::Duration::from_secs(self.pg_statement_timeout);
                    return Ok(Location::Postgres(pg));
                }
                bail!("unsupported store URL {:?}: use sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DB", redact_url(url))
            }
        }
    }

    /// The store for messages (a PostgreSQL URL without its password).
    fn describe(&self) -> String {
        match self.location() {
            Ok(Location::Sqlite(p)) => p.display().to_string(),
            Ok(Location::Postgres(pg)) => pg.display_url(),
            Err(_) => self.store.as_deref().map(redact_url).unwrap_or_default(),
        }
    }

    /// Open the store for writing, with `tweak` applied to its configuration. A SQLite file is
    /// created unless `must_exist`.
    fn open_with(&self, must_exist: bool, tweak: impl FnOnce(StoreConfig) -> StoreConfig) -> Result<Store> {
        let config = match self.location()? {
            Location::Sqlite(path) => {
                if must_exist && !path.exists() {
                    bail!("store {} does not exist", path.display());
                }
                StoreConfig::new(path)
            }
            Location::Postgres(pg) => StoreConfig::postgres(pg),
        };
        Store::open(tweak(config)).with_context(|| format!("cannot open store {}", self.describe()))
    }

    /// Open the store for writing.
    fn open(&self) -> Result<Store> {
        self.open_with(false, |c| c)
    }

    /// Open an existing store for reading only (beside a live collector if need be).
    fn open_read_only(&self) -> Result<Store> {
        let store = match self.location()? {
            Location::Sqlite(path) => {
                if !path.exists() {
                    bail!("store {} does not exist", path.display());
                }
                Store::open_read_only(&path)
            }
            Location::Postgres(pg) => Store::open_read_only_postgres(&pg),
        };
        store.with_context(|| format!("cannot open store {}", self.describe()))
    }

    fn has_policy(&self) -> bool {
        self.policy.is_some()
    }

    fn policy(&self) -> Result<Policy> {
        match &self.policy {
            None => Ok(Policy::default()),
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("cannot read policy file {}", p.display()))?;
                Policy::from_toml(&text).with_context(|| format!("policy file {}", p.display()))
            }
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector: OTLP/HTTP, REST API and export on --http, OTLP/gRPC on --grpc.
    Serve(ServeArgs),
    /// Export a dataset (triplets, Agent Lightning or TRL rows) from the store as JSONL or Parquet.
    Export(export_cmd::ExportArgs),
    /// Load OTLP JSON files (as the OpenTelemetry Collector's file exporter writes them).
    Import(import::ImportArgs),
    /// Send a bounded synthetic load to a collector and print spans/s and latency percentiles.
    Loadgen(loadgen::LoadgenArgs),
    /// Append rewards and callbacks, apply the fallback, explain effective rewards.
    Reward(reward_cmd::RewardArgs),
    /// Apply the retention policy ([retention] of --config) now: counts first, then deletes. Give
    /// the collector's --policy: without it, sequences not yet settled are all kept.
    Gc(GcArgs),
    /// Run the reference seven-agent pipeline against a collector and send its delayed rewards.
    Demo(demo::DemoArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address of the HTTP listener (OTLP/HTTP, REST API).
    #[arg(long, default_value = "127.0.0.1:4318", env = "RLTRACE_HTTP")]
    http: SocketAddr,
    /// Address of the OTLP/gRPC listener.
    #[arg(long, default_value = "127.0.0.1:4317", env = "RLTRACE_GRPC")]
    grpc: SocketAddr,
    /// Largest OTLP request body as sent, in bytes (413 beyond).
    #[arg(long, default_value_t = rltrace_server::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Largest OTLP request body after gzip inflation, in bytes (413 beyond).
    #[arg(long, default_value_t = rltrace_server::DEFAULT_MAX_INFLATED_BYTES)]
    max_inflated_bytes: usize,
    /// Largest attribute value, in bytes (the span is rejected beyond).
    #[arg(long, default_value_t = rltrace_core::triplet::DEFAULT_MAX_ATTRIBUTE_VALUE_BYTES)]
    max_attribute_bytes: usize,
    /// OTLP requests decoded at once (503 / UNAVAILABLE beyond).
    #[arg(long, default_value_t = rltrace_server::DEFAULT_MAX_CONCURRENT_EXPORTS)]
    max_concurrent_exports: usize,
    /// Bytes of OTLP/HTTP bodies (after gzip inflation) decoded at once; a request waits up to
    /// 2 s for its share, then gets 503 / UNAVAILABLE. One larger than this takes all of it.
    #[arg(long, default_value_t = rltrace_server::DEFAULT_MAX_INFLIGHT_BYTES)]
    max_inflight_bytes: usize,
    /// Distinct prompts a trl-dpo export (GET /api/v1/export) may keep in memory (422 beyond).
    #[arg(long, default_value_t = rltrace_dataset::Limits::default().dpo_max_prompts)]
    max_dpo_prompts: usize,
    /// Batches waiting for the store writer (503 / UNAVAILABLE beyond).
    #[arg(long, default_value_t = rltrace_store::DEFAULT_QUEUE_OPS)]
    queue_ops: usize,
    /// Bytes waiting for the store writer (503 / UNAVAILABLE beyond).
    #[arg(long, default_value_t = rltrace_store::DEFAULT_QUEUE_BYTES)]
    queue_bytes: usize,
    /// How commits reach the disk before an acknowledgement: `full` (synced, durable against
    /// power loss; group commit keeps it cheap) or `normal` (durable against a crash of the
    /// process, not of the machine).
    #[arg(long, value_enum, default_value = "full")]
    sync: SyncMode,
    /// Triplet ids that pending rewards may wait for at once (a pending reward beyond is 409).
    #[arg(long, default_value_t = rltrace_store::DEFAULT_MAX_PENDING)]
    max_pending: usize,
    /// Largest size of the database file in bytes; writes beyond fail as on a full disk (500,
    /// /readyz 503) instead of filling the disk.
    #[arg(long)]
    max_db_bytes: Option<u64>,
    #[command(flatten)]
    config: ConfigArgs,
    /// Listen on a non-loopback address with no keys configured (anyone who can reach it may
    /// read and write everything).
    #[arg(long)]
    insecure_no_auth: bool,
}

#[derive(clap::Args, Clone)]
pub(crate) struct ConfigArgs {
    /// Config file (TOML): [auth], [redaction], [retention], [[forward]], [agentlightning]; unknown keys are errors.
    #[arg(long, env = "RLTRACE_CONFIG")]
    config: Option<PathBuf>,
}

impl ConfigArgs {
    /// The config file's settings (all defaults without a file).
    pub(crate) fn load(&self) -> Result<rltrace_server::config::Config> {
        match &self.config {
            None => Ok(rltrace_server::config::Config::default()),
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("cannot read config file {}", p.display()))?;
                rltrace_server::config::Config::from_toml(&text).with_context(|| format!("config file {}", p.display()))
            }
        }
    }
}

#[derive(clap::Args)]
struct GcArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    config: ConfigArgs,
    /// Count what is due and delete nothing.
    #[arg(long)]
    dry_run: bool,
}

/// `rltrace gc`: what is due, then (without --dry-run) delete it in small transactions.
fn gc(args: GcArgs) -> Result<()> {
    let config = args.config.load()?;
    let retention = config.retention;
    if !retention.is_active() {
        bail!("no retention is configured: give --config FILE with [retention] spans and/or sequences");
    }
    // Sequences the fallback has not settled are kept unless the collector's policy, given with
    // --policy, has no fallback: without it, gc cannot know, so it keeps them.
    let keep_unsettled = !args.store.has_policy() || args.store.policy()?.default_reward.is_some();
    let store = if args.dry_run { args.store.open_read_only()? } else { args.store.open_with(true, |c| c)? };
    let due = store.read(|tx| tx.gc_due(&retention, keep_unsettled))?;
    println!(
        "due under {}: {} spans that are not triplets, {} sequences ({} triplets, {} reward events)",
        retention.describe(),
        due.spans,
        due.sequences,
        due.triplets,
        due.reward_events
    );
    if args.dry_run {
        println!("dry run: nothing deleted");
        return Ok(());
    }
    let pb = progress(due.spans + due.sequences, "deleting");
    let (started, mut passes, mut longest) = (std::time::Instant::now(), 0u64, std::time::Duration::ZERO);
    let mut last = std::time::Instant::now();
    let total = store.gc_blocking(&retention, keep_unsettled, |n| {
        longest = longest.max(last.elapsed());
        last = std::time::Instant::now();
        passes += 1;
        pb.inc(n.spans + n.sequences);
    })?;
    pb.finish_and_clear();
    store.close();
    println!("deleted {} spans that are not triplets, {} sequences ({} triplets, {} reward events)", total.spans, total.sequences, total.triplets, total.reward_events);
    println!(
        "in {passes} passes of at most {} rows each, {:.1} s; the longest pass (one transaction) took {:.1} ms",
        retention.cutoffs(0).batch,
        started.elapsed().as_secs_f64(),
        longest.as_secs_f64() * 1000.0
    );
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SyncMode {
    /// `synchronous = FULL`.
    Full,
    /// `synchronous = NORMAL`.
    Normal,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("RLTRACE_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Export(args) => export_cmd::run(args),
        Command::Import(args) => import::run(args),
        Command::Loadgen(args) => loadgen::run(args),
        Command::Reward(args) => reward_cmd::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Gc(args) => gc(args),
    }
}

/// A URL with its password replaced by `***`.
fn redact_url(url: &str) -> String {
    // A query may carry the password too (`?password=`): it is left out.
    let url = url.split('?').next().unwrap_or_default();
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((user, host)) => format!("{scheme}://{}{}@{host}", user.split(':').next().unwrap_or_default(), if user.contains(':') { ":***" } else { "" }),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    let policy = args.store.policy()?;
    let config = args.config.load()?;
    let auth = rltrace_server::auth::Auth::from_config(&config.auth, |var| std::env::var(var).ok())
        .with_context(|| format!("config file {}", args.config.config.as_deref().map(|p| p.display().to_string()).unwrap_or_default()))?;
    let exposed: Vec<String> = [args.http, args.grpc].iter().filter(|a| !a.ip().is_loopback()).map(ToString::to_string).collect();
    if !auth.enabled() && !exposed.is_empty() {
        if !args.insecure_no_auth {
            bail!(
                "refusing to listen on {} with no API keys: anyone who can reach it could read and write everything. \
                 Configure keys ([auth] in --config FILE), listen on 127.0.0.1, or pass --insecure-no-auth",
                exposed.join(" and ")
            );
        }
        tracing::warn!(addresses = %exposed.join(", "), "listening on a non-loopback address with no API keys (--insecure-no-auth): anyone who can reach it may read and write everything");
    }
    let where_ = args.store.describe();
    let store = args.store.open_with(false, |c| StoreConfig {
        queue_ops: args.queue_ops,
        queue_bytes: args.queue_bytes,
        synchronous_full: args.sync == SyncMode::Full,
        max_pending: args.max_pending,
        max_db_bytes: args.max_db_bytes,
        ..c
    })?;
    let limits = IngestLimits {
        max_body_bytes: args.max_body_bytes,
        max_inflated_bytes: args.max_inflated_bytes,
        span_limits: rltrace_core::Limits { max_attribute_value_bytes: args.max_attribute_bytes },
        max_concurrent_exports: args.max_concurrent_exports,
        max_inflight_bytes: args.max_inflight_bytes,
    };
    let dataset_limits = rltrace_dataset::Limits { dpo_max_prompts: args.max_dpo_prompts, ..rltrace_dataset::Limits::default() };
    let keys = auth.enabled();
    if config.retention.is_active() {
        tracing::info!(retention = %config.retention.describe(), every_s = config.retention.every_s(), "retention is on");
    }
    let redactor = config.redactor()?;
    if !redactor.is_empty() {
        tracing::info!(rules_hash = %redactor.hash(), "redaction is on");
    }
    let targets = config.targets(|var| std::env::var(var).ok())
        .map_err(|e| anyhow::anyhow!("config file {}: {e}", args.config.config.as_deref().map(|p| p.display().to_string()).unwrap_or_default()))?;
    for t in &targets {
        tracing::info!(target_name = %t.name, endpoint = %t.shown, batch = t.batch, "forwarding target");
    }
    let state = AppState::new(store, policy, limits)
        .with_dataset_limits(dataset_limits)
        .with_auth(auth)
        .with_redactor(redactor)
        .with_retention(config.retention)
        .with_forwarders(targets);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(32).build()?;
    rt.block_on(async move {
        let bound = Bound::bind(args.http, args.grpc).await.context("cannot bind listeners")?;
        let http = bound.http.local_addr()?;
        let grpc = bound.grpc.local_addr()?;
        println!("rltrace listening http=http://{http} grpc={grpc} db={where_}");
        tracing::info!(%http, %grpc, db = %where_, policy_hash = %state.policy.hash(), api_keys = keys, "collector started");
        rltrace_server::serve(state, bound, shutdown_signal()).await?;
        tracing::info!("collector stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// A progress bar on a terminal, hidden otherwise.
pub(crate) fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(&format!("{{spinner}} {what} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} ({{per_sec}}, eta {{eta}})"))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    pb.set_style(style);
    pb
}
