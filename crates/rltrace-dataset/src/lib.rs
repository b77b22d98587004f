//! Datasets (DESIGN section 7): the export's rows in a shape trainers read (`triplets`,
//! `agentlightning`, the TRL shapes), written as JSONL or Parquet, with the manifest that
//! rebuilds the same file. One driver serves `GET /api/v1/export` and `rltrace export`.
//!
//! The rules (how a prompt is formed, which triplets a shape keeps, DPO pairing) are in
//! [`rltrace_core::dataset`]; this crate streams the store's export through them into a writer,
//! one sequence (or one Parquet row group) at a time.

use std::collections::BTreeMap;
use std::io::Write;

use rltrace_core::Policy;
use rltrace_core::dataset::{
    BoundError, DATASET_FORMAT_VERSION, DpoPairer, DpoPlanner, Format, OptionError, Options, Shape, Skip, Stepwise, TrlRow, agentlightning_row,
    prompt_completion, prompt_key, triplet_row,
};
use rltrace_core::export::{EXPORT_FORMAT_VERSION, TripletView};
use rltrace_core::time::{format_micros, parse_rfc3339_micros};
use rltrace_store::{AsOf, Store, StoreError, TripletFilter, Watermarks};
use serde_json::{Value, json};

mod jsonl;
#[cfg(feature = "parquet")]
mod parquet_out;

/// Version of rltrace recorded in manifests.
pub const RLTRACE_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Rows per Parquet row group at most (section 7).
pub const ROW_GROUP_ROWS: usize = 65_536;

/// What to export.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The rows.
    pub shape: Shape,
    /// The file format.
    pub format: Format,
    /// Options of the shape.
    pub options: Options,
    /// The filters of `GET /api/v1/triplets`.
    pub filter: TripletFilter,
    /// The hash of the redaction rules the collector applies (`Redactor::hash`), recorded in the
    /// manifest; `None` without rules.
    pub redaction_rules_hash: Option<String>,
}

/// Bounds of what an export holds in memory besides one sequence and one row group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Distinct prompts DPO pairing may keep (about 100 bytes each).
    pub dpo_max_prompts: usize,
    /// Bytes of DPO pair members waiting for their second member.
    pub dpo_max_pending_bytes: usize,
    /// Steps of one `trl-stepwise` row.
    pub stepwise_max_steps: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { dpo_max_prompts: 1_000_000, dpo_max_pending_bytes: 256 * 1024 * 1024, stepwise_max_steps: 100_000 }
    }
}

/// Counts of an export, recorded in its manifest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// Triplets read (that passed the filters).
    pub triplets: u64,
    /// Sequences with a triplet read.
    pub sequences: u64,
    /// Triplets read with an effective reward.
    pub rewarded: u64,
    /// Rows written.
    pub rows: u64,
    /// Triplets that gave no row, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A bad shape, format or option (a 400 naming the parameter).
    #[error(transparent)]
    Option(#[from] OptionError),
    /// A memory bound was reached.
    #[error(transparent)]
    Bound(#[from] BoundError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing failed (or the reader went away).
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
    /// The Parquet writer failed.
    #[error("parquet: {0}")]
    Parquet(String),
    /// A stored value could not be turned into a row.
    #[error("{0}")]
    Invalid(String),
}

/// A row on its way to a writer.
pub(crate) enum Row<'a> {
    Triplet(&'a TripletView),
    AgentLightning(Value),
    Trl(TrlRow),
}

/// A file being written, row by row.
pub(crate) trait RowWriter {
    fn row(&mut self, row: Row<'_>) -> Result<(), DatasetError>;
    /// Finish the file; `manifest` is embedded when given (a last JSONL line, or Parquet
    /// key-value metadata).
    fn finish(self: Box<Self>, manifest: Option<&Value>) -> Result<(), DatasetError>;
}

fn writer<'w, W: Write + Send + 'w>(req: &Request, out: W) -> Result<Box<dyn RowWriter + 'w>, DatasetError> {
    match req.format {
        Format::Jsonl => Ok(Box::new(jsonl::JsonlWriter::new(out))),
        #[cfg(feature = "parquet")]
        Format::Parquet => Ok(Box::new(parquet_out::ParquetWriter::new(out, req.shape, req.options.text)?)),
        #[cfg(not(feature = "parquet"))]
        Format::Parquet => Err(OptionError { param: "format", message: "this build has no Parquet writer (feature \"parquet\")".into() }.into()),
    }
}

/// Check a request before anything is written (`format=parquet` in a build without it).
pub fn check(req: &Request) -> Result<(), OptionError> {
    if req.format == Format::Parquet && !cfg!(feature = "parquet") {
        return Err(OptionError { param: "format", message: "this build has no Parquet writer (feature \"parquet\")".into() });
    }
    Ok(())
}

/// The time now, microseconds since the epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// The point an export reads up to: `as_of`, or the store's watermarks and the time now.
pub fn resolve_as_of(store: &Store, as_of: Option<AsOf>) -> Result<AsOf, StoreError> {
    match as_of {
        Some(a) => Ok(a),
        None => Ok(AsOf { watermarks: store.read(|tx| tx.watermarks())?, now: now_micros() }),
    }
}

/// What one export reads and how: the store, the policy, the request, the snapshot (resolve it
/// first with [`resolve_as_of`]), the memory bounds, and whether the file embeds its manifest.
pub struct Run<'a> {
    /// The store read.
    pub store: &'a Store,
    /// The reward policy of the effective rewards.
    pub policy: &'a Policy,
    /// Shape, format, filters and options.
    pub req: &'a Request,
    /// Rows read at most, and "now".
    pub as_of: AsOf,
    /// Memory bounds.
    pub limits: &'a Limits,
    /// Whether the manifest goes into the file (a last JSONL line, Parquet key-value metadata).
    pub embed_manifest: bool,
}

/// Run an export to `out`. Returns the manifest (without the file's SHA-256, which only the
/// caller can know). `progress` is called once per triplet read.
pub fn export<W: Write + Send>(run: &Run<'_>, out: W, progress: &mut dyn FnMut()) -> Result<Value, DatasetError> {
    let Run { store, policy, req, as_of, limits, embed_manifest } = *run;
    check(req)?;
    let mut w = writer(req, out)?;
    let mut counts = Counts::default();
    let mut failure: Option<DatasetError> = None;
    let skip = |counts: &mut Counts, s: Skip| *counts.skipped.entry(s.name()).or_insert(0) += 1;
    let o = &req.options;
    let watermarks = match req.shape {
        Shape::TrlDpo => {
            // Pass 1: per prompt, where its highest and lowest rewards are; the skip reasons.
            let mut planner = DpoPlanner::new(limits.dpo_max_prompts);
            let mut pos = 0u64;
            let mut observed = 0u64;
            let first = store.export(&req.filter, policy, Some(as_of), &mut |t| {
                let p = pos;
                pos += 1;
                let Some(r) = t.effective.reward else {
                    skip(&mut counts, Skip::NoReward);
                    return Ok(true);
                };
                match prompt_completion(t, o) {
                    Ok(pc) => {
                        if let Err(e) = planner.observe(prompt_key(&pc.prompt), r, p) {
                            failure = Some(e.into());
                            return Ok(false);
                        }
                        observed += 1;
                    }
                    Err(s) => skip(&mut counts, s),
                }
                Ok(true)
            })?;
            if let Some(e) = failure.take() {
                return Err(e);
            }
            let plan = planner.plan(o.margin);
            let unpaired = observed.saturating_sub(plan.pairs * 2);
            if unpaired > 0 {
                counts.skipped.insert(Skip::Unpaired.name(), unpaired);
            }
            // Pass 2, over the same rows: write each pair when its second member comes.
            let mut pairer = DpoPairer::new(limits.dpo_max_pending_bytes);
            let mut pos = 0u64;
            let c = store.export(&req.filter, policy, Some(AsOf { watermarks: first.watermarks, now: as_of.now }), &mut |t| {
                progress();
                let p = pos;
                pos += 1;
                let Some(&(pair, chosen)) = plan.members.get(&p) else { return Ok(true) };
                let result = (|| -> Result<(), DatasetError> {
                    let pc = prompt_completion(t, o).map_err(|s| DatasetError::Invalid(format!("triplet {} changed between the passes ({})", t.triplet_id, s.name())))?;
                    if let Some(row) = pairer.member(pair, chosen, pc)? {
                        w.row(Row::Trl(row))?;
                        counts.rows += 1;
                    }
                    Ok(())
                })();
                match result {
                    Ok(()) => Ok(true),
                    Err(e) => {
                        failure = Some(e);
                        Ok(false)
                    }
                }
            })?;
            take_counts(&mut counts, &c);
            c.watermarks
        }
        shape => {
            let mut steps = Stepwise::default();
            let c = store.export(&req.filter, policy, Some(as_of), &mut |t| {
                progress();
                let result = (|| -> Result<(), DatasetError> {
                    match shape {
                        Shape::Triplets => {
                            w.row(Row::Triplet(t))?;
                            counts.rows += 1;
                        }
                        Shape::AgentLightning => match agentlightning_row(t, o) {
                            Ok(v) => {
                                w.row(Row::AgentLightning(v))?;
                                counts.rows += 1;
                            }
                            Err(s) => skip(&mut counts, s),
                        },
                        Shape::TrlStepwise => {
                            let (done, skipped) = steps.push(t, o, limits.stepwise_max_steps)?;
                            if let Some(row) = done {
                                w.row(Row::Trl(row))?;
                                counts.rows += 1;
                            }
                            if let Some(s) = skipped {
                                skip(&mut counts, s);
                            }
                        }
                        _ => match triplet_row(shape, t, o) {
                            Ok(row) => {
                                w.row(Row::Trl(row))?;
                                counts.rows += 1;
                            }
                            Err(s) => skip(&mut counts, s),
                        },
                    }
                    Ok(())
                })();
                match result {
                    Ok(()) => Ok(true),
                    Err(e) => {
                        failure = Some(e);
                        Ok(false)
                    }
                }
            })?;
            if failure.is_none()
                && let Some(row) = steps.finish()
            {
                w.row(Row::Trl(row))?;
                counts.rows += 1;
            }
            take_counts(&mut counts, &c);
            c.watermarks
        }
    };
    if let Some(e) = failure {
        return Err(e);
    }
    let m = manifest(req, policy, &counts, watermarks, as_of.now);
    w.finish(embed_manifest.then_some(&m))?;
    Ok(m)
}

fn take_counts(counts: &mut Counts, c: &rltrace_store::ExportCounts) {
    counts.triplets = c.triplets;
    counts.sequences = c.sequences;
    counts.rewarded = c.rewarded;
}

/// The filters of an export as recorded in its manifest.
pub fn filter_json(f: &TripletFilter) -> Value {
    json!({
        "sequence_id": f.sequence_id,
        "role": f.role,
        "rewarded": f.rewarded,
        "since": f.since.map(format_micros),
        "until": f.until.map(format_micros),
        "complete": f.complete,
    })
}

fn bad(param: &'static str, message: impl Into<String>) -> OptionError {
    OptionError { param, message: message.into() }
}

/// The filters recorded in a manifest (the inverse of [`filter_json`]).
pub fn filter_from_json(v: &Value) -> Result<TripletFilter, OptionError> {
    let Value::Object(m) = v else { return Err(bad("filters", "must be an object")) };
    let mut f = TripletFilter::default();
    let string = |k: &'static str, v: &Value| match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(bad("filters", format!("{k} must be a string or null"))),
    };
    let boolean = |k: &'static str, v: &Value| match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        _ => Err(bad("filters", format!("{k} must be true, false or null"))),
    };
    let time = |k: &'static str, v: &Value| match string(k, v)? {
        None => Ok(None),
        Some(s) => parse_rfc3339_micros(&s).map(Some).ok_or_else(|| bad("filters", format!("{k} must be an RFC 3339 time"))),
    };
    for (k, val) in m {
        match k.as_str() {
            "sequence_id" => f.sequence_id = string("sequence_id", val)?,
            "role" => f.role = string("role", val)?,
            "rewarded" => f.rewarded = boolean("rewarded", val)?,
            "complete" => f.complete = boolean("complete", val)?,
            "since" => f.since = time("since", val)?,
            "until" => f.until = time("until", val)?,
            _ => return Err(bad("filters", format!("unknown filter {k:?}"))),
        }
    }
    Ok(f)
}

/// The manifest of an export (section 7): shape, format, options, filters, the reward policy and
/// its hash, the redaction rules' hash (null without rules), versions, counts,
/// the export time and the watermarks read up to.
pub fn manifest(req: &Request, policy: &Policy, counts: &Counts, watermarks: Watermarks, exported_at: i64) -> Value {
    json!({
        "shape": req.shape.name(),
        "format": req.format.name(),
        "options": req.options.to_json(),
        "filters": filter_json(&req.filter),
        "reward_policy": policy.to_json(),
        "reward_policy_hash": policy.hash(),
        "redaction_rules_hash": req.redaction_rules_hash,
        "rltrace_version": RLTRACE_VERSION,
        "format_version": EXPORT_FORMAT_VERSION,
        "dataset_format_version": DATASET_FORMAT_VERSION,
        "counts": {
            "triplets": counts.triplets,
            "sequences": counts.sequences,
            "rewarded_triplets": counts.rewarded,
            "rows": counts.rows,
            "skipped": counts.skipped,
        },
        "exported_at": format_micros(exported_at),
        "watermarks": {"span": watermarks.span, "event": watermarks.event},
    })
}

/// What a manifest says to rebuild its file: the request, the policy and the point read up to.
#[derive(Debug)]
pub struct Rebuild {
    /// Shape, format, options and filters.
    pub request: Request,
    /// The reward policy recorded.
    pub policy: Policy,
    /// Watermarks and export time.
    pub as_of: AsOf,
    /// The file's SHA-256 recorded, when the CLI wrote it.
    pub sha256: Option<String>,
}

/// Read a manifest (as `rltrace export -o` writes it) back into what rebuilds its file.
pub fn rebuild_from_manifest(m: &Value) -> Result<Rebuild, OptionError> {
    let s = |k: &'static str| m.get(k).and_then(Value::as_str).ok_or_else(|| bad("manifest", format!("{k} is missing or not a string")));
    let shape = Shape::parse(s("shape")?)?;
    let format = Format::parse(s("format")?)?;
    let options = Options::from_json(m.get("options").unwrap_or(&Value::Null))?;
    let filter = filter_from_json(m.get("filters").unwrap_or(&Value::Null))?;
    let policy: Policy = serde_json::from_value(m.get("reward_policy").cloned().unwrap_or(Value::Null))
        .map_err(|e| bad("manifest", format!("reward_policy cannot be read: {e}")))?;
    if policy.hash() != s("reward_policy_hash")? {
        return Err(bad("manifest", "reward_policy does not match reward_policy_hash"));
    }
    let wm = m.get("watermarks").ok_or_else(|| bad("manifest", "watermarks are missing"))?;
    let int = |k: &'static str| wm.get(k).and_then(Value::as_i64).ok_or_else(|| bad("manifest", format!("watermarks.{k} is missing or not an integer")));
    let now = parse_rfc3339_micros(s("exported_at")?).ok_or_else(|| bad("manifest", "exported_at is not an RFC 3339 time"))?;
    Ok(Rebuild {
        request: Request { shape, format, options, filter, redaction_rules_hash: m.get("redaction_rules_hash").and_then(Value::as_str).map(str::to_string) },
        policy,
        as_of: AsOf { watermarks: Watermarks { span: int("span")?, event: int("event")? }, now },
        sha256: m.get("sha256").and_then(Value::as_str).map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_manifests_round_trip() {
        let f = TripletFilter { sequence_id: Some("s".into()), role: None, rewarded: Some(true), since: Some(1_700_000_000_000_001), until: None, complete: Some(false) };
        let back = filter_from_json(&filter_json(&f)).expect("round trip");
        assert_eq!(filter_json(&back), filter_json(&f));
        let req = Request { shape: Shape::TrlDpo, format: Format::Parquet, options: Options { margin: 0.25, ..Options::default() }, filter: f, redaction_rules_hash: Some("sha256:ab".into()) };
        let policy = Policy::default();
        let m = manifest(&req, &policy, &Counts::default(), Watermarks { span: 7, event: 3 }, 1_700_000_000_123_456);
        let r = rebuild_from_manifest(&m).expect("readable");
        assert_eq!(r.request.shape, Shape::TrlDpo);
        assert_eq!(r.request.format, Format::Parquet);
        assert_eq!(r.request.options.margin, 0.25);
        assert_eq!(r.request.redaction_rules_hash.as_deref(), Some("sha256:ab"));
        assert_eq!(r.as_of, AsOf { watermarks: Watermarks { span: 7, event: 3 }, now: 1_700_000_000_123_456 });
        let mut tampered = m.clone();
        tampered["reward_policy_hash"] = json!("sha256:00");
        assert!(rebuild_from_manifest(&tampered).is_err());
        assert!(filter_from_json(&json!({"colour": "red"})).is_err());
    }
}
