//! `rltrace export`: the same export as `GET /api/v1/export`, read from the store directly.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rltrace_core::export::{ManifestCounts, manifest, write_triplet_json};
use rltrace_store::{Store, TripletFilter};

use crate::StoreArgs;

#[derive(clap::Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Output format.
    #[arg(long, default_value = "jsonl")]
    format: String,
    /// Output file (the manifest goes to FILE.manifest.json); standard output when absent.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Only this sequence.
    #[arg(long)]
    sequence_id: Option<String>,
    /// Only triplets whose state.agent_role equals this.
    #[arg(long)]
    role: Option<String>,
    /// Only triplets with (true) or without (false) an effective reward.
    #[arg(long)]
    rewarded: Option<bool>,
    /// Only triplets of complete (true) or incomplete (false) sequences.
    #[arg(long)]
    complete: Option<bool>,
    /// Only triplets at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Only triplets at or before this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
}

fn time_arg(name: &str, v: &Option<String>) -> Result<Option<i64>> {
    match v {
        None => Ok(None),
        Some(s) => match rltrace_core::time::parse_rfc3339_micros(s) {
            Some(t) => Ok(Some(t)),
            None => bail!("--{name} must be an RFC 3339 timestamp, got {s:?}"),
        },
    }
}

pub(crate) fn run(args: ExportArgs) -> Result<()> {
    if args.format != "jsonl" {
        bail!("format {:?} is not supported; use jsonl", args.format);
    }
    let policy = args.store.policy()?;
    let path = args.store.db_path()?;
    if !path.exists() {
        bail!("store {} does not exist", path.display());
    }
    // Read-only: an export may run beside a live collector and never writes.
    let store = Store::open_read_only(&path).with_context(|| format!("cannot open store {}", path.display()))?;
    let filter = TripletFilter {
        sequence_id: args.sequence_id.clone(),
        role: args.role.clone(),
        rewarded: args.rewarded,
        complete: args.complete,
        since: time_arg("since", &args.since)?,
        until: time_arg("until", &args.until)?,
    };
    let started = Instant::now();
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock())),
    };
    let total = store.read(|tx| Ok(tx.counts()?.triplets)).unwrap_or(0);
    let pb = crate::progress(total, "export");
    let mut line = Vec::with_capacity(4096);
    let mut io_err: Option<std::io::Error> = None;
    let counts = store.export(&filter, &policy, None, &mut |t| {
        line.clear();
        write_triplet_json(&mut line, t).map_err(|e| rltrace_store::StoreError::Corrupt(format!("triplet {}: {e}", t.triplet_id)))?;
        line.push(b'\n');
        pb.inc(1);
        if let Err(e) = out.write_all(&line) {
            io_err = Some(e);
            return Ok(false);
        }
        Ok(true)
    })?;
    if let Some(e) = io_err {
        return Err(e).context("cannot write export");
    }
    out.flush().context("cannot write export")?;
    drop(out);
    pb.finish_and_clear();
    let mcounts = ManifestCounts { triplets: counts.triplets, sequences: counts.sequences, rewarded_triplets: counts.rewarded };
    if let Some(p) = &args.output {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0);
        let m = manifest(rltrace_server::api::filter_json(&filter), &policy, mcounts, now);
        let mpath = PathBuf::from(format!("{}.manifest.json", p.display()));
        std::fs::write(&mpath, serde_json::to_vec_pretty(&m)?).with_context(|| format!("cannot write {}", mpath.display()))?;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "exported {} triplets from {} sequences ({} rewarded) in {:.2} s ({:.0} triplets/s){}",
        counts.triplets,
        counts.sequences,
        counts.rewarded,
        secs,
        counts.triplets as f64 / secs.max(1e-9),
        args.output.as_ref().map(|p| format!(" to {}", p.display())).unwrap_or_default()
    );
    Ok(())
}
