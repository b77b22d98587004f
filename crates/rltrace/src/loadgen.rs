//! `rltrace loadgen`: a bounded synthetic OTLP load (DESIGN section 6 and 8). Spans of about 1 KB
//! (10 attributes including a 500-byte JSON state), batches of 512 by default, sequences of 16
//! triplets. Bounded in spans and in time; prints spans/s acknowledged and latency percentiles.
//! With `--fill`, fills a collector with a realistic mix of triplets and rewards instead
//! ([`crate::fill`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use prost::Message;
use rltrace_otlp::proto::collector::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use rltrace_otlp::proto::common::{AnyValue, InstrumentationScope, KeyValue, any_value};
use rltrace_otlp::proto::resource::Resource;
use rltrace_otlp::proto::trace::{ResourceSpans, ScopeSpans, Span, Status};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Protocol {
    /// OTLP/HTTP with protobuf bodies.
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies.
    HttpJson,
    /// OTLP/gRPC.
    Grpc,
}

#[derive(clap::Args)]
pub(crate) struct LoadgenArgs {
    /// Collector URL (http://HOST:PORT; for grpc the gRPC listener).
    #[arg(long, default_value = "http://127.0.0.1:4318")]
    target: String,
    /// Spans to send in all.
    #[arg(long, default_value_t = 100_000)]
    spans: u64,
    /// Wire protocol.
    #[arg(long, value_enum, default_value = "http-protobuf")]
    protocol: Protocol,
    /// Requests in flight at once (with --fill: OTLP requests, and as many REST calls).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Spans per request.
    #[arg(long, default_value_t = 512)]
    batch: usize,
    /// Triplets per sequence (and trace).
    #[arg(long, default_value_t = 16)]
    sequence_len: u64,
    /// Target rate in spans/s (0: as fast as acknowledged).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Stop after this many seconds whatever was sent (with --fill: fail if not done by then).
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
    /// Gzip request bodies.
    #[arg(long)]
    gzip: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// Before the load, insert the same rows into a scratch SQLite file with plain batched inserts
    /// (no index) and report the collector's rate as a ratio of that baseline.
    #[arg(long)]
    baseline: bool,
    /// With --baseline: the PostgreSQL database (`postgres://...`, the collector's) the raw
    /// baseline writes the same rows to, with binary COPY into a table with no index, instead of
    /// the scratch SQLite file.
    #[arg(long, requires = "baseline")]
    baseline_store: Option<String>,
    /// Fill the collector with a realistic mix instead (sequences `task-{n}` of the seven agent
    /// roles, LLM calls, immediate and sequence rewards in spans, HITL, tests, defects, triplet
    /// and pending rewards over the REST API), deterministic for --seed. Needs --triplets and
    /// --sequences.
    #[arg(long, requires_all = ["triplets", "sequences"], conflicts_with_all = ["spans", "protocol", "sequence_len", "rate", "gzip", "baseline"])]
    fill: bool,
    /// With --fill: triplets in all (agent steps and LLM calls).
    #[arg(long, requires = "fill")]
    triplets: Option<u64>,
    /// With --fill: sequences in all (`task-0` ... `task-{M-1}`).
    #[arg(long, requires = "fill")]
    sequences: Option<u64>,
    /// With --fill: seed of everything generated (ids, times, contents, which rewards go where).
    #[arg(long, default_value_t = 1, requires = "fill")]
    seed: u64,
    /// With --fill: make `task-0` one long sequence of this many triplets (counted in --triplets).
    #[arg(long, default_value_t = 0, requires = "fill")]
    long_sequence: u64,
}

/// Hand the baseline the load's rows batch by batch (other ids than the load's, so the two never
/// meet), generated and prepared untimed.
fn baseline_batches(args: &LoadgenArgs, run_id: u64, mut insert: impl FnMut(&[rltrace_store::PreparedSpan]) -> Result<()>) -> Result<()> {
    let limits = rltrace_core::Limits::default();
    let mut first = 0u64;
    while first < args.spans {
        let count = (args.spans - first).min(args.batch as u64) as usize;
        let req = build_batch(run_id ^ 0x5a5a, first, count, args.sequence_len);
        let spans = rltrace_otlp::request_to_spans(req).spans;
        let analyzed: Vec<_> = spans.into_iter().filter_map(|s| rltrace_core::triplet::analyze(s, &limits).ok()).collect();
        insert(&rltrace_store::prepare_spans(analyzed))?;
        first += count as u64;
    }
    Ok(())
}

/// The raw baseline (batched SQLite inserts into a scratch file, or binary COPY into PostgreSQL) of
/// the same rows, timed (generation and preparation are not).
fn run_baseline(args: &LoadgenArgs, run_id: u64) -> Result<f64> {
    if let Some(url) = &args.baseline_store {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!("--baseline-store takes a postgres:// URL");
        }
        // The blocking client runs on a thread of its own, off any async runtime.
        let copy = || -> Result<f64> {
            let mut raw = rltrace_store::bench::PgBaseline::create(&rltrace_store::PgConfig::new(url.clone()), run_id)?;
            baseline_batches(args, run_id, |rows| Ok(raw.insert_batch(rows)?))?;
            Ok(raw.rows_per_second())
        };
        return std::thread::scope(|sc| sc.spawn(copy).join().unwrap_or_else(|_| Err(anyhow::anyhow!("the baseline thread panicked"))));
    }
    let dir = std::env::temp_dir().join(format!("rltrace-baseline-{}-{run_id:x}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| -> Result<f64> {
        let mut raw = rltrace_store::bench::RawBaseline::create(&dir.join("raw.db"))?;
        baseline_batches(args, run_id, |rows| Ok(raw.insert_batch(rows)?))?;
        Ok(raw.rows_per_second())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

struct Shared {
    next_batch: AtomicU64,
    acked: AtomicU64,
    rejected: AtomicU64,
    overloaded: AtomicU64,
    errors: AtomicU64,
    /// A request was refused a connection on every one of its attempts: the target is not there,
    /// and every worker stops.
    unreachable: std::sync::atomic::AtomicBool,
    batches: u64,
    run_id: u64,
}

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

fn s(v: impl Into<String>) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

const ROLES: [&str; 7] = ["Planning", "Design", "Design Review", "Code", "Code Review", "Test", "Postmortem"];

/// One batch of spans; ids derive from the run id and the span number, so they are unique per run.
fn build_batch(run_id: u64, first_span: u64, count: usize, sequence_len: u64) -> ExportTraceServiceRequest {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let filler = FILLER;
    let spans = (0..count as u64)
        .map(|i| {
            let n = first_span + i;
            let seq = n / sequence_len;
            let idx = n % sequence_len;
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&run_id.to_be_bytes());
            trace_id[8..].copy_from_slice(&seq.to_be_bytes());
            let span_id = (n + 1) ^ (run_id << 40);
            let role = ROLES[(idx % 7) as usize];
            let state = format!(
                r#"{{"task_id":"task-{run_id:x}-{seq}","agent_role":"{role}","iteration":{idx},"budget_remaining":{},"pending_approvals":2,"prompt_summary":"{filler}"}}"#,
                1000 - idx
            );
            let action = format!(r#"{{"success":true,"duration_ms":{},"output_size":{},"output_hash":"sha256:{:064x}"}}"#, 10 + idx, 100 * idx, n);
            Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_be_bytes().to_vec(),
                name: format!("agent.{role}.execute"),
                kind: 1,
                start_time_unix_nano: now + idx * 1000,
                end_time_unix_nano: now + idx * 1000 + 500,
                attributes: vec![
                    kv("rl.sequence_id", s(format!("task-{run_id:x}-{seq}"))),
                    kv("rl.sequence_index", any_value::Value::IntValue(idx as i64)),
                    kv("rl.sequence_scope", s("pipeline")),
                    kv("rl.state", s(state)),
                    kv("rl.action", s(action)),
                    kv("rl.state.agent_role", s(role)),
                    kv("rl.reward.success", any_value::Value::DoubleValue(1.0)),
                    kv("rl.reward.latency", any_value::Value::DoubleValue(0.8)),
                    kv("code.function", s("execute")),
                    kv("rl.sequence_end", any_value::Value::BoolValue(idx + 1 == sequence_len)),
                ],
                status: Some(Status { code: 1, ..Default::default() }),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", s("rltrace-loadgen"))], ..Default::default() }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: "rltrace.loadgen".into(), ..Default::default() }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Rewrite a batch made by [`build_batch`] in place for spans `first..first + count`, reusing its
/// strings and vectors (the load generator shares the CPU it measures, so it allocates little).
fn refill_batch(req: &mut ExportTraceServiceRequest, run_id: u64, first_span: u64, count: usize, sequence_len: u64) {
    use std::fmt::Write;
    let Some(spans) = req.resource_spans.first_mut().and_then(|r| r.scope_spans.first_mut()).map(|s| &mut s.spans) else { return };
    spans.truncate(count);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    for (i, span) in spans.iter_mut().enumerate() {
        let n = first_span + i as u64;
        let seq = n / sequence_len;
        let idx = n % sequence_len;
        let role = ROLES[(idx % 7) as usize];
        span.trace_id[..8].copy_from_slice(&run_id.to_be_bytes());
        span.trace_id[8..].copy_from_slice(&seq.to_be_bytes());
        span.span_id.copy_from_slice(&((n + 1) ^ (run_id << 40)).to_be_bytes());
        span.name.clear();
        let _ = write!(span.name, "agent.{role}.execute");
        span.start_time_unix_nano = now + idx * 1000;
        span.end_time_unix_nano = now + idx * 1000 + 500;
        for kv in &mut span.attributes {
            let Some(v) = kv.value.as_mut().and_then(|v| v.value.as_mut()) else { continue };
            match (kv.key.as_str(), v) {
                ("rl.sequence_id", any_value::Value::StringValue(s)) => {
                    s.clear();
                    let _ = write!(s, "task-{run_id:x}-{seq}");
                }
                ("rl.sequence_index", any_value::Value::IntValue(x)) => *x = idx as i64,
                ("rl.state", any_value::Value::StringValue(s)) => {
                    s.clear();
                    let _ = write!(
                        s,
                        r#"{{"task_id":"task-{run_id:x}-{seq}","agent_role":"{role}","iteration":{idx},"budget_remaining":{},"pending_approvals":2,"prompt_summary":"{}"}}"#,
                        1000 - idx,
                        FILLER
                    );
                }
                ("rl.action", any_value::Value::StringValue(s)) => {
                    s.clear();
                    let _ = write!(s, r#"{{"success":true,"duration_ms":{},"output_size":{},"output_hash":"sha256:{:064x}"}}"#, 10 + idx, 100 * idx, n);
                }
                ("rl.state.agent_role", any_value::Value::StringValue(s)) => {
                    s.clear();
                    s.push_str(role);
                }
                ("rl.sequence_end", any_value::Value::BoolValue(b)) => *b = idx + 1 == sequence_len,
                _ => {}
            }
        }
    }
}

/// The 300-byte filler of the state (with the other fields, a state of about 500 bytes).
const FILLER: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

fn gzip(body: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(body)?;
    Ok(e.finish()?)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64 / 1000.0
}

pub(crate) fn run(args: LoadgenArgs) -> Result<()> {
    if args.fill {
        return crate::fill::run(crate::fill::FillConfig {
            target: args.target,
            triplets: args.triplets.context("--fill needs --triplets")?,
            sequences: args.sequences.context("--fill needs --sequences")?,
            seed: args.seed,
            long_sequence: args.long_sequence,
            concurrency: args.concurrency,
            batch: args.batch,
            max_seconds: args.max_seconds,
            json: args.json,
        });
    }
    if args.batch == 0 || args.concurrency == 0 || args.sequence_len == 0 {
        bail!("--batch, --concurrency and --sequence-len must be at least 1");
    }
    if !args.target.starts_with("http://") {
        bail!("--target must be an http:// URL (loopback); got {:?}", args.target);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: LoadgenArgs) -> Result<()> {
    let run_id = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64 & 0x00ff_ffff_ffff;
    let batches = args.spans.div_ceil(args.batch as u64);
    let baseline = if args.baseline { Some(run_baseline(&args, run_id)?) } else { None };
    let shared = Arc::new(Shared {
        next_batch: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        overloaded: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        unreachable: std::sync::atomic::AtomicBool::new(false),
        batches,
        run_id,
    });
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let pb = crate::progress(args.spans, "loadgen");
    let started = Instant::now();
    let mut workers = Vec::new();
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    for _ in 0..args.concurrency {
        let shared = Arc::clone(&shared);
        let http = http.clone();
        let target = args.target.trim_end_matches('/').to_string();
        let (protocol, batch, total, seq_len, gz, rate, conc) =
            (args.protocol, args.batch, args.spans, args.sequence_len, args.gzip, args.rate, args.concurrency as u64);
        let pb = pb.clone();
        workers.push(tokio::spawn(async move {
            let mut grpc = None;
            if protocol == Protocol::Grpc {
                let mut c = rltrace_otlp::proto::collector::trace_service_client::TraceServiceClient::connect(target.clone())
                    .await
                    .context("cannot connect to the gRPC endpoint")?
                    .max_encoding_message_size(64 * 1024 * 1024);
                if gz {
                    c = c.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                grpc = Some(c);
            }
            let mut latencies = Vec::new();
            let mut req = build_batch(shared.run_id, 0, batch, seq_len);
            let mut body_buf: Vec<u8> = Vec::new();
            loop {
                let b = shared.next_batch.fetch_add(1, Ordering::Relaxed);
                if b >= shared.batches || Instant::now() >= deadline || shared.unreachable.load(Ordering::Relaxed) {
                    break;
                }
                if rate > 0 {
                    // Pace: batch b is due at b * batch / rate seconds from the start.
                    let due = started + Duration::from_secs_f64(b as f64 * batch as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let _ = conc;
                let first = b * batch as u64;
                let count = (total - first).min(batch as u64) as usize;
                refill_batch(&mut req, shared.run_id, first, count, seq_len);
                // The body is encoded (and compressed) once; a retry sends the same bytes again.
                let http_body = if protocol == Protocol::Grpc {
                    None
                } else {
                    let (body, ct) = if protocol == Protocol::HttpJson {
                        (serde_json::to_vec(&req)?, "application/json")
                    } else {
                        body_buf.clear();
                        req.encode(&mut body_buf)?;
                        (body_buf.clone(), "application/x-protobuf")
                    };
                    Some((bytes::Bytes::from(if gz { gzip(&body)? } else { body }), ct))
                };
                let mut attempts = 0;
                // Attempts refused a connection (nothing listens at the target).
                let mut refused = 0;
                loop {
                    attempts += 1;
                    let t0 = Instant::now();
                    let result: Result<Option<i64>, Overload> = match protocol {
                        Protocol::Grpc => {
                            let Some(c) = grpc.as_mut() else { break };
                            match c.export(req.clone()).await {
                                Ok(resp) => Ok(Some(resp.into_inner().partial_success.map_or(0, |p| p.rejected_spans))),
                                Err(st) if st.code() == tonic::Code::Unavailable || st.code() == tonic::Code::ResourceExhausted => Err(Overload),
                                Err(st) => {
                                    eprintln!("loadgen: grpc error: {st}");
                                    Ok(None)
                                }
                            }
                        }
                        _ => {
                            let Some((body, ct)) = http_body.as_ref() else { break };
                            let mut rb = http.post(format!("{target}/v1/traces")).header("content-type", *ct);
                            if gz {
                                rb = rb.header("content-encoding", "gzip");
                            }
                            match rb.body(body.clone()).send().await {
                                Ok(resp) if resp.status().is_success() => {
                                    let bytes = resp.bytes().await.unwrap_or_default();
                                    let rejected = if protocol == Protocol::HttpJson {
                                        serde_json::from_slice::<serde_json::Value>(&bytes).ok().and_then(|v| v["partialSuccess"]["rejectedSpans"].as_i64()).unwrap_or(0)
                                    } else {
                                        ExportTraceServiceResponse::decode(bytes.as_ref()).ok().and_then(|r| r.partial_success).map_or(0, |p| p.rejected_spans)
                                    };
                                    Ok(Some(rejected))
                                }
                                Ok(resp) if resp.status().as_u16() == 503 || resp.status().as_u16() == 429 => Err(Overload),
                                Ok(resp) => {
                                    eprintln!("loadgen: HTTP {}", resp.status());
                                    Ok(None)
                                }
                                // A connection reset under overload: retry like a 503.
                                Err(e) if e.is_connect() || e.is_request() => {
                                    if e.is_connect() {
                                        refused += 1;
                                    }
                                    Err(Overload)
                                }
                                Err(e) => {
                                    eprintln!("loadgen: request failed: {e}");
                                    Ok(None)
                                }
                            }
                        }
                    };
                    match result {
                        Ok(Some(rejected)) => {
                            latencies.push(t0.elapsed().as_micros() as u64);
                            shared.acked.fetch_add(count as u64 - rejected.max(0) as u64, Ordering::Relaxed);
                            shared.rejected.fetch_add(rejected.max(0) as u64, Ordering::Relaxed);
                            pb.inc(count as u64);
                            break;
                        }
                        Ok(None) => {
                            shared.errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(Overload) => {
                            shared.overloaded.fetch_add(1, Ordering::Relaxed);
                            if attempts >= 50 && refused == attempts {
                                shared.unreachable.store(true, Ordering::Relaxed);
                            }
                            if attempts >= 50 || Instant::now() >= deadline || shared.unreachable.load(Ordering::Relaxed) {
                                shared.errors.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(20 * attempts.min(10))).await;
                        }
                    }
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await??);
    }
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let acked = shared.acked.load(Ordering::Relaxed);
    let summary = serde_json::json!({
        "protocol": match args.protocol { Protocol::HttpProtobuf => "http-protobuf", Protocol::HttpJson => "http-json", Protocol::Grpc => "grpc" },
        "spans_acknowledged": acked,
        "spans_rejected": shared.rejected.load(Ordering::Relaxed),
        "requests": latencies.len(),
        "overloaded_responses": shared.overloaded.load(Ordering::Relaxed),
        "errors": shared.errors.load(Ordering::Relaxed),
        "seconds": secs,
        "spans_per_s": acked as f64 / secs.max(1e-9),
        "baseline": baseline.map(|_| if args.baseline_store.is_some() { "postgres-copy" } else { "sqlite-insert" }),
        "baseline_rows_per_s": baseline,
        "ratio_to_baseline": baseline.map(|b| acked as f64 / secs.max(1e-9) / b),
        "latency_ms": {"p50": percentile(&latencies, 0.50), "p90": percentile(&latencies, 0.90), "p99": percentile(&latencies, 0.99), "max": percentile(&latencies, 1.0)},
    });
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "loadgen: {acked} spans acknowledged in {} requests over {secs:.2} s = {:.0} spans/s; latency ms p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}; {} rejected, {} overloaded answers, {} errors",
            latencies.len(),
            acked as f64 / secs.max(1e-9),
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.90),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
            shared.rejected.load(Ordering::Relaxed),
            shared.overloaded.load(Ordering::Relaxed),
            shared.errors.load(Ordering::Relaxed)
        );
        if let Some(b) = baseline {
            let what = if args.baseline_store.is_some() { "raw binary PostgreSQL COPY" } else { "raw batched SQLite inserts" };
            println!("baseline: {what} of the same rows {b:.0} rows/s; collector/baseline = {:.2}", acked as f64 / secs.max(1e-9) / b);
        }
    }
    if shared.unreachable.load(Ordering::Relaxed) {
        bail!("nothing answers at {}: every connection was refused (is `rltrace serve` running there?)", args.target);
    }
    if shared.errors.load(Ordering::Relaxed) > 0 {
        bail!("{} requests failed", shared.errors.load(Ordering::Relaxed));
    }
    Ok(())
}

struct Overload;
