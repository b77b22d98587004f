//! `rltrace import`: load OTLP JSON files as the OpenTelemetry Collector's file exporter writes them
//! (one `ExportTraceServiceRequest` per line), or one JSON request per file.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rltrace_core::triplet::analyze;
use rltrace_otlp::{decode_json, request_to_spans};
use rltrace_store::{Store, prepare_spans};

use crate::StoreArgs;

/// Longest accepted line of an import file (and largest single-document file); files are read
/// a line at a time, so memory stays bounded by this whatever the file's size.
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
    /// The collector's config file: its [redaction] rules apply to what is imported.
    #[command(flatten)]
    config: crate::ConfigArgs,
}

#[derive(Default)]
struct Totals {
    requests: u64,
    stored: u64,
    duplicates: u64,
    rejected: u64,
    bad_lines: u64,
}

fn import_chunk(
    store: &Store,
    redactor: &rltrace_core::redact::Redactor,
    limits: &rltrace_core::Limits,
    file: &std::path::Path,
    lineno: usize,
    chunk: &[u8],
    totals: &mut Totals,
) -> Result<()> {
    let req = match decode_json(chunk) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}:{lineno}: skipped: {e}", file.display());
            totals.bad_lines += 1;
            return Ok(());
        }
    };
    totals.requests += 1;
    let mut converted = request_to_spans(req);
    redactor.apply_all(&mut converted.spans);
    let mut rejected = converted.rejected;
    let mut ok = Vec::with_capacity(converted.spans.len());
    for s in converted.spans {
        match analyze(s, limits) {
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
    Ok(())
}

pub(crate) fn run(args: ImportArgs) -> Result<()> {
    let redactor = args.config.load()?.redactor()?;
    let store = args.store.open()?;
    let limits = rltrace_core::Limits { max_attribute_value_bytes: args.max_attribute_bytes };
    let started = Instant::now();
    let mut totals = Totals::default();
    let total_bytes: u64 = args.files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    let pb = crate::progress(total_bytes, "import");
    for file in &args.files {
        let size = std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?.len();
        let mut reader = BufReader::new(std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?);
        let mut lineno = 0usize;
        let mut first = true;
        loop {
            let mut line = Vec::new();
            let n = (&mut reader).take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            lineno += 1;
            if line.len() > MAX_LINE_BYTES {
                bail!("{}:{lineno}: line longer than {MAX_LINE_BYTES} bytes", file.display());
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            pb.inc(line.len() as u64);
            // A file holding one pretty-printed request, rather than one request per line.
            if std::mem::replace(&mut first, false)
                && serde_json::from_slice::<serde_json::Value>(&line).is_err_and(|e| e.is_eof())
            {
                if size > MAX_LINE_BYTES as u64 {
                    bail!("{}: a single JSON document larger than {MAX_LINE_BYTES} bytes", file.display());
                }
                let mut rest = Vec::new();
                reader.read_to_end(&mut rest)?;
                pb.inc(rest.len() as u64);
                line.extend_from_slice(&rest);
                import_chunk(&store, &redactor, &limits, file, lineno, &line, &mut totals)?;
                break;
            }
            import_chunk(&store, &redactor, &limits, file, lineno, &line, &mut totals)?;
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
