//! `rltrace import`: load OTLP JSON files as the OpenTelemetry Collector's file exporter writes them
//! (one `ExportTraceServiceRequest` per line), or one JSON request per file.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rltrace_core::triplet::analyze;
use rltrace_otlp::{decode_json, request_to_spans};
use rltrace_store::{Store, StoreConfig, prepare_spans};

use crate::StoreArgs;

/// Longest accepted line of an import file.
const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

#[derive(clap::Args)]
pub(crate) struct ImportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// OTLP JSON files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Largest attribute value, in bytes (the span is rejected beyond).
    #[arg(long, default_value_t = rltrace_core::triplet::DEFAULT_MAX_ATTRIBUTE_VALUE_BYTES)]
    max_attribute_bytes: usize,
}

#[derive(Default)]
struct Totals {
    requests: u64,
    stored: u64,
    duplicates: u64,
    rejected: u64,
    bad_lines: u64,
}

pub(crate) fn run(args: ImportArgs) -> Result<()> {
    let path = args.store.db_path()?;
    let store = Store::open(StoreConfig::new(&path)).with_context(|| format!("cannot open store {}", path.display()))?;
    let limits = rltrace_core::Limits { max_attribute_value_bytes: args.max_attribute_bytes };
    let started = Instant::now();
    let mut totals = Totals::default();
    let total_bytes: u64 = args.files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    let pb = crate::progress(total_bytes, "import");
    for file in &args.files {
        let text = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let whole: Option<serde_json::Value> = serde_json::from_slice(&text).ok();
        let mut chunks: Vec<(usize, Vec<u8>)> = Vec::new();
        if whole.as_ref().is_some_and(serde_json::Value::is_object) {
            chunks.push((1, text.clone()));
        } else {
            for (i, line) in BufReader::new(text.as_slice()).split(b'\n').enumerate() {
                let line = line?;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if line.len() > MAX_LINE_BYTES {
                    bail!("{}:{}: line longer than {MAX_LINE_BYTES} bytes", file.display(), i + 1);
                }
                chunks.push((i + 1, line));
            }
        }
        for (lineno, chunk) in chunks {
            pb.inc(chunk.len() as u64 + 1);
            let req = match decode_json(&chunk) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{}:{lineno}: skipped: {e}", file.display());
                    totals.bad_lines += 1;
                    continue;
                }
            };
            totals.requests += 1;
            let converted = request_to_spans(req);
            let mut rejected = converted.rejected;
            let mut ok = Vec::with_capacity(converted.spans.len());
            for s in converted.spans {
                match analyze(s, &limits) {
                    Ok(a) => ok.push(a),
                    Err(m) => rejected.push(m),
                }
            }
            if !ok.is_empty() {
                let outcome = store.ingest_blocking(prepare_spans(ok))?;
                totals.stored += outcome.stored as u64;
                totals.duplicates += outcome.duplicates as u64;
                rejected.extend(outcome.rejected);
            }
            for m in &rejected {
                eprintln!("{}:{lineno}: rejected {m}", file.display());
            }
            totals.rejected += rejected.len() as u64;
        }
    }
    pb.finish_and_clear();
    eprintln!(
        "imported {} files ({} requests) in {:.2} s: {} spans stored, {} already stored, {} rejected, {} lines skipped",
        args.files.len(),
        totals.requests,
        started.elapsed().as_secs_f64(),
        totals.stored,
        totals.duplicates,
        totals.rejected,
        totals.bad_lines
    );
    if totals.bad_lines > 0 && totals.requests == 0 {
        bail!("no OTLP JSON request could be read");
    }
    Ok(())
}
