//! `rltrace export`: the same export as `GET /api/v1/export`, read from the store directly
//! (read-only), to a file with its manifest (`FILE.manifest.json`, with the file's SHA-256) or
//! to standard output. `--from-manifest` rebuilds a file from its manifest. A failed export
//! leaves no file behind: it is written under a temporary name and renamed when complete.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use rltrace_core::dataset::{Format, OptionError, Options, Pointer, Shape, parse_unit_option};
use rltrace_dataset::{Limits, Request};
use rltrace_store::{AsOf, TripletFilter};
use sha2::{Digest, Sha256};

use crate::StoreArgs;

#[derive(clap::Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The collector's config file: the manifest records its [redaction] rules' hash.
    #[command(flatten)]
    config: crate::ConfigArgs,
    /// Rows: triplets, agentlightning, trl-sft, trl-prompt-completion, trl-kto, trl-dpo, trl-stepwise.
    #[arg(long, default_value = "triplets")]
    shape: String,
    /// Output format: jsonl or parquet.
    #[arg(long, default_value = "jsonl")]
    format: String,
    /// Reward at or above which a triplet is good (trl-sft, trl-kto, trl-stepwise), in [0, 1].
    #[arg(long)]
    threshold: Option<String>,
    /// Least reward difference of a trl-dpo pair, in [0, 1].
    #[arg(long)]
    margin: Option<String>,
    /// JSON pointer into the Triplet choosing the prompt (e.g. /state/task_description).
    #[arg(long)]
    prompt_field: Option<String>,
    /// JSON pointer into the Triplet choosing the completion.
    #[arg(long)]
    completion_field: Option<String>,
    /// Plain strings (TRL's standard form) instead of message lists.
    #[arg(long)]
    text: bool,
    /// Output file (the manifest goes to FILE.manifest.json); standard output when absent.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Rebuild the file a manifest describes (needs -o): same shape, format, options, filters
    /// and policy, read up to the manifest's watermarks with its export time as "now".
    #[arg(long, conflicts_with_all = ["shape", "format", "threshold", "margin", "prompt_field", "completion_field", "text", "sequence_id", "role", "rewarded", "complete", "since", "until"])]
    from_manifest: Option<PathBuf>,
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
    /// Distinct prompts trl-dpo pairing may keep in memory (about 100 bytes each).
    #[arg(long, default_value_t = Limits::default().dpo_max_prompts)]
    max_dpo_prompts: usize,
    /// Bytes of trl-dpo pair members waiting for their second member.
    #[arg(long, default_value_t = Limits::default().dpo_max_pending_bytes)]
    max_dpo_pending_bytes: usize,
    /// Steps of one trl-stepwise row (rewarded triplets of one sequence).
    #[arg(long, default_value_t = Limits::default().stepwise_max_steps)]
    max_steps: usize,
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

fn flag(e: OptionError) -> anyhow::Error {
    anyhow!("--{}: {}", e.param.replace('_', "-"), e.message)
}

impl ExportArgs {
    fn request(&self) -> Result<Request> {
        let d = Options::default();
        let options = Options {
            threshold: self.threshold.as_deref().map(|t| parse_unit_option("threshold", t)).transpose().map_err(flag)?.unwrap_or(d.threshold),
            margin: self.margin.as_deref().map(|t| parse_unit_option("margin", t)).transpose().map_err(flag)?.unwrap_or(d.margin),
            prompt_field: self.prompt_field.as_deref().map(|p| Pointer::parse("prompt_field", p)).transpose().map_err(flag)?,
            completion_field: self.completion_field.as_deref().map(|p| Pointer::parse("completion_field", p)).transpose().map_err(flag)?,
            text: self.text,
        };
        let req = Request {
            shape: Shape::parse(&self.shape).map_err(flag)?,
            format: Format::parse(&self.format).map_err(flag)?,
            options,
            redaction_rules_hash: None,
            filter: TripletFilter {
                sequence_id: self.sequence_id.clone(),
                role: self.role.clone(),
                rewarded: self.rewarded,
                complete: self.complete,
                since: time_arg("since", &self.since)?,
                until: time_arg("until", &self.until)?,
            },
        };
        rltrace_dataset::check(&req).map_err(flag)?;
        Ok(req)
    }
}

/// The output: bytes counted into a SHA-256 on their way to the file or standard output.
struct Hashing<W: Write> {
    inner: W,
    sha: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A file written under a temporary name beside its final path, removed unless committed.
struct Pending {
    tmp: PathBuf,
    done: bool,
}

impl Pending {
    fn new(path: &Path) -> Pending {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "export".into());
        Pending { tmp: path.with_file_name(format!(".{name}.partial-{}", std::process::id())), done: false }
    }

    fn commit(&mut self, path: &Path) -> Result<()> {
        std::fs::rename(&self.tmp, path).with_context(|| format!("cannot move {} to {}", self.tmp.display(), path.display()))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

pub(crate) fn run(args: ExportArgs) -> Result<()> {
    let (req, policy, as_of, recorded_sha) = match &args.from_manifest {
        Some(mpath) => {
            if args.output.is_none() {
                bail!("--from-manifest needs -o FILE (the file to rebuild)");
            }
            let text = std::fs::read_to_string(mpath).with_context(|| format!("cannot read {}", mpath.display()))?;
            let m: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", mpath.display()))?;
            let r = rltrace_dataset::rebuild_from_manifest(&m).map_err(|e| anyhow!("{}: {e}", mpath.display()))?;
            if args.store.has_policy() {
                bail!("--from-manifest uses the manifest's reward policy; drop --policy");
            }
            (r.request, r.policy, Some(r.as_of), r.sha256)
        }
        None => {
            let mut req = args.request()?;
            let redactor = args.config.load()?.redactor()?;
            req.redaction_rules_hash = (!redactor.is_empty()).then(|| redactor.hash().to_string());
            (req, args.store.policy()?, None, None)
        }
    };
    let limits = Limits { dpo_max_prompts: args.max_dpo_prompts, dpo_max_pending_bytes: args.max_dpo_pending_bytes, stepwise_max_steps: args.max_steps };
    // Read-only: an export may run beside a live collector and never writes.
    let store = args.store.open_read_only()?;
    let as_of: AsOf = rltrace_dataset::resolve_as_of(&store, as_of)?;
    let started = Instant::now();
    let total = store.read(|tx| Ok(tx.counts()?.triplets)).unwrap_or(0);
    let pb = crate::progress(total, "export");
    let mut progress = || pb.inc(1);
    let (manifest, sha) = match &args.output {
        Some(p) => {
            let mut pending = Pending::new(p);
            let file = std::fs::File::create(&pending.tmp).with_context(|| format!("cannot create {}", pending.tmp.display()))?;
            let mut out = Hashing { inner: std::io::BufWriter::with_capacity(1 << 20, file), sha: Sha256::new() };
            let embed = req.format == Format::Parquet;
            let m = rltrace_dataset::export(&rltrace_dataset::Run { store: &store, policy: &policy, req: &req, as_of, limits: &limits, embed_manifest: embed }, &mut out, &mut progress)
                .with_context(|| format!("export to {} failed (nothing written)", p.display()))?;
            out.flush().context("cannot write export")?;
            let sha = format!("sha256:{}", rltrace_core::ids::to_hex(&out.sha.finalize()));
            let mut m = m;
            if let Some(o) = m.as_object_mut() {
                o.insert("sha256".into(), serde_json::Value::String(sha.clone()));
            }
            let mpath = PathBuf::from(format!("{}.manifest.json", p.display()));
            let mut mpending = Pending::new(&mpath);
            std::fs::write(&mpending.tmp, serde_json::to_vec_pretty(&m)?).with_context(|| format!("cannot write {}", mpath.display()))?;
            pending.commit(p)?;
            mpending.commit(&mpath)?;
            (m, Some(sha))
        }
        None => {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
            let m = rltrace_dataset::export(&rltrace_dataset::Run { store: &store, policy: &policy, req: &req, as_of, limits: &limits, embed_manifest: false }, &mut out, &mut progress)
                .context("export failed")?;
            out.flush().context("cannot write export")?;
            (m, None)
        }
    };
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let count = |k: &str| manifest["counts"][k].as_u64().unwrap_or(0);
    eprintln!(
        "exported {} triplets from {} sequences ({} rewarded) as {} {} rows: {} in {:.2} s ({:.0} triplets/s){}",
        count("triplets"),
        count("sequences"),
        count("rewarded_triplets"),
        req.shape.name(),
        req.format.name(),
        count("rows"),
        secs,
        count("triplets") as f64 / secs.max(1e-9),
        args.output.as_ref().map(|p| format!(" to {}", p.display())).unwrap_or_default()
    );
    if let (Some(want), Some(got)) = (recorded_sha, sha) {
        if want != got {
            bail!("the rebuilt file's {got} differs from the manifest's {want}");
        }
        eprintln!("rebuilt byte for byte: {got} as the manifest records");
    }
    Ok(())
}
