//! Restart safety: an acknowledged OTLP batch survives the collector being killed.
//!
//! DESIGN section 4 says an export succeeds "only after the spans are durable (committed to the
//! store)". These tests drive concurrent OTLP/HTTP protobuf load (3 threads, each batch of 100
//! triplet spans in its own trace), record which batches were answered 200, then end the server:
//! - with SIGKILL while requests are still in flight: after a restart on the same database every
//!   span of every acknowledged batch is there, each batch is all-or-nothing, the counters
//!   (`/api/v1/stats`) agree with what is stored, exporter retries of the same batches are stored
//!   once, and SQLite's integrity check passes;
//! - with SIGTERM during load: the server drains and exits with code 0, and again nothing
//!   acknowledged is lost.
//!
//! - with SIGKILL under load on PostgreSQL: the same checks on a database of the tests' server.
//!
//! Every loop is bounded in count and time; everything runs on loopback.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use prost::Message;
use rltrace_otlp::ExportTraceServiceResponse;
use rltrace_otlp::proto::collector::ExportTraceServiceRequest;
use rltrace_otlp::proto::common::{AnyValue, InstrumentationScope, KeyValue, any_value};
use rltrace_otlp::proto::resource::Resource;
use rltrace_otlp::proto::trace::{ResourceSpans, ScopeSpans, Span, Status};
use serde_json::Value;

/// Load threads.
const THREADS: u32 = 3;
/// Most requests per thread.
const MAX_REQUESTS: u32 = 200;
/// Spans per request (one trace and one sequence per request).
const SPANS: u64 = 100;
/// No load thread runs longer than this.
const LOAD_DEADLINE: Duration = Duration::from_secs(60);
/// The server is ended after this long under load...
const END_AFTER: Duration = Duration::from_secs(1);
/// ...or once this many batches are acknowledged, whichever comes first (well below
/// THREADS * MAX_REQUESTS, so requests are still being sent when it ends).
const END_AFTER_ACKED: usize = 150;
/// Longest wait for a clean exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

fn s(v: impl Into<String>) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A unique trace id per (run, phase, thread, request).
fn trace_id(run: u64, phase: u8, thread: u32, n: u32) -> [u8; 16] {
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&run.to_be_bytes());
    t[8] = phase;
    t[9..12].copy_from_slice(&thread.to_be_bytes()[1..]);
    t[12..].copy_from_slice(&n.to_be_bytes());
    t
}

fn run_id() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
    (nanos ^ (u64::from(std::process::id()) << 32)) | 1
}

/// Span ids of a batch: 1..=SPANS, as hex.
fn span_ids() -> BTreeSet<String> {
    (1..=SPANS).map(|i| hex(&i.to_be_bytes())).collect()
}

/// One batch: SPANS triplet spans of one trace, sequence id = the trace id in hex.
fn batch(trace: &[u8; 16]) -> Vec<u8> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let seq = hex(trace);
    let spans = (1..=SPANS)
        .map(|i| Span {
            trace_id: trace.to_vec(),
            span_id: i.to_be_bytes().to_vec(),
            parent_span_id: if i == 1 { Vec::new() } else { 1u64.to_be_bytes().to_vec() },
            name: format!("agent.step.{i}"),
            kind: 1,
            start_time_unix_nano: now + i * 1000,
            end_time_unix_nano: now + i * 1000 + 500,
            attributes: vec![
                kv("rl.sequence_id", s(seq.clone())),
                kv("rl.sequence_index", any_value::Value::IntValue(i as i64 - 1)),
                kv("rl.state", s(format!(r#"{{"task_id":"{seq}","agent_role":"Code","step":{i},"notes":"{}"}}"#, "n".repeat(200)))),
                kv("rl.action", s(format!(r#"{{"success":true,"output":"out-{i}"}}"#))),
                kv("rl.reward.success", any_value::Value::DoubleValue(1.0)),
                kv("rl.sequence_end", any_value::Value::BoolValue(i == SPANS)),
            ],
            status: Some(Status { code: 1, ..Default::default() }),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", s("rltrace-restart-test"))], ..Default::default() }),
            scope_spans: vec![ScopeSpans { scope: Some(InstrumentationScope { name: "restart".into(), ..Default::default() }), spans, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// An error with its causes.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// POST one batch; `Ok(true)` when answered 200 with nothing rejected.
fn post(client: &reqwest::blocking::Client, url: &str, body: Vec<u8>) -> Result<bool, String> {
    let resp = client.post(url).header("content-type", "application/x-protobuf").body(body).send().map_err(|e| format!("request failed: {}", chain(&e)))?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().map_err(|e| format!("reading the answer failed: {}", chain(&e)))?;
    match status {
        200 => {
            let r = ExportTraceServiceResponse::decode(bytes.as_ref()).map_err(|e| format!("undecodable 200 answer: {e}"))?;
            match r.partial_success {
                Some(p) if p.rejected_spans != 0 => Err(format!("{} spans rejected: {}", p.rejected_spans, p.error_message)),
                _ => Ok(true),
            }
        }
        503 => Ok(false),
        other => Err(format!("HTTP {other}: {}", String::from_utf8_lossy(&bytes))),
    }
}

/// What one load thread did.
#[derive(Default)]
struct Log {
    /// Batches sent (whatever the answer).
    sent: Vec<[u8; 16]>,
    /// Batches answered 200 with nothing rejected.
    acked: Vec<[u8; 16]>,
    /// Batches answered 503 (overload; not stored, may be retried).
    overloaded: usize,
    /// Failures before the server was told to end: each one is a bug.
    unexpected: Vec<String>,
    /// The failures that ended each thread once the server was being ended (for the log).
    ended_with: Vec<String>,
}

struct Shared {
    acked: AtomicUsize,
    in_flight: AtomicUsize,
    ending: AtomicBool,
}

/// Start THREADS load threads of up to `max_requests` batches each.
fn start_load(url: &str, run: u64, phase: u8, max_requests: u32, shared: &Arc<Shared>) -> Vec<std::thread::JoinHandle<Log>> {
    (0..THREADS)
        .map(|t| {
            let url = url.to_string();
            let shared = Arc::clone(shared);
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
                let started = Instant::now();
                let mut log = Log::default();
                for n in 0..max_requests {
                    if started.elapsed() > LOAD_DEADLINE {
                        break;
                    }
                    let tid = trace_id(run, phase, t, n);
                    let body = batch(&tid);
                    log.sent.push(tid);
                    shared.in_flight.fetch_add(1, Ordering::SeqCst);
                    let result = post(&client, &url, body);
                    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                    match result {
                        Ok(true) => {
                            log.acked.push(tid);
                            shared.acked.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(false) => {
                            log.overloaded += 1;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        // Once the server is being ended, a failure is expected: stop sending.
                        Err(e) if shared.ending.load(Ordering::SeqCst) => {
                            log.ended_with.push(e);
                            break;
                        }
                        Err(e) => {
                            log.unexpected.push(format!("batch {}: {e}", hex(&tid)));
                            break;
                        }
                    }
                }
                log
            })
        })
        .collect()
}

fn join(handles: Vec<std::thread::JoinHandle<Log>>) -> Log {
    let mut all = Log::default();
    for h in handles {
        let log = h.join().expect("load thread panicked");
        all.sent.extend(log.sent);
        all.acked.extend(log.acked);
        all.overloaded += log.overloaded;
        all.unexpected.extend(log.unexpected);
        all.ended_with.extend(log.ended_with);
    }
    all
}

/// Wait until END_AFTER passed or END_AFTER_ACKED batches are acknowledged (at least one in any
/// case); bounded by LOAD_DEADLINE.
fn wait_for_load(shared: &Shared) {
    let started = Instant::now();
    let ok = common::wait_until(LOAD_DEADLINE.as_secs(), || {
        let acked = shared.acked.load(Ordering::SeqCst);
        acked >= 1 && (acked >= END_AFTER_ACKED || started.elapsed() >= END_AFTER)
    });
    assert!(ok, "no batch was acknowledged within {LOAD_DEADLINE:?}");
}

/// The pid of the `rltrace serve` process on `db` (the only one: the path is a fresh temp dir).
fn server_pid(db: &Path) -> Option<u32> {
    let db = db.as_os_str().to_string_lossy().into_owned();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        (args.iter().any(|a| a == "serve") && args.contains(&db)).then_some(pid)
    })
}

/// SIGTERM and wait for exit code 0 (asserted by `Server::stop`), at most STOP_TIMEOUT; a server
/// that does not exit in time is killed and the test fails.
fn stop_within(server: common::Server) {
    let db = server.db.clone();
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let mut server = server;
        server.stop();
        let _ = tx.send(());
    });
    match rx.recv_timeout(STOP_TIMEOUT) {
        Ok(()) => h.join().expect("stop"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            if let Some(pid) = server_pid(&db) {
                let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
            panic!("the server did not exit within {STOP_TIMEOUT:?} of SIGTERM");
        }
    }
}

/// Every acknowledged batch is stored whole; every other batch sent is stored whole or not at
/// all; the counters agree with what is stored. Returns the number of batches found stored.
fn verify(server: &common::Server, log: &Log) -> usize {
    let (status, _) = common::get_json(&server.url("/readyz"));
    assert_eq!(status, 200, "the store opens and answers after the restart");
    let want_ids = span_ids();
    let acked: BTreeSet<[u8; 16]> = log.acked.iter().copied().collect();
    let client = common::client();
    let mut stored = 0usize;
    for tid in &log.sent {
        let h = hex(tid);
        let resp = client.get(server.url(&format!("/api/v1/traces/{h}"))).send().expect("GET trace");
        let status = resp.status().as_u16();
        let body: Value = resp.json().unwrap_or(Value::Null);
        let is_acked = acked.contains(tid);
        if status == 404 {
            assert!(!is_acked, "batch {h} was answered 200 but is lost after the restart");
            continue;
        }
        assert_eq!(status, 200, "trace {h}: {body}");
        let spans = body["spans"].as_array().expect("spans");
        let ids: BTreeSet<String> = spans.iter().map(|s| s["span_id"].as_str().unwrap_or("").to_string()).collect();
        if is_acked {
            assert_eq!(ids, want_ids, "acknowledged batch {h} is incomplete after the restart ({} of {SPANS} spans)", spans.len());
        } else {
            assert_eq!(ids, want_ids, "unacknowledged batch {h} is partly stored ({} of {SPANS} spans): a batch is all or nothing", spans.len());
        }
        assert_eq!(spans.len() as u64, SPANS, "batch {h} stored once");
        for sp in spans {
            assert_eq!(sp["triplet_id"], format!("{h}{}", sp["span_id"].as_str().unwrap_or("")), "span of {h} is a triplet");
        }
        if is_acked {
            let (status, seq) = common::get_json(&server.url(&format!("/api/v1/sequences/{h}")));
            assert_eq!(status, 200, "sequence {h}: {seq}");
            assert_eq!(seq["triplet_count"], SPANS, "sequence {h} counts all its triplets");
            assert_eq!(seq["complete"], true, "sequence {h} has its rl.sequence_end triplet");
        }
        stored += 1;
    }
    let (status, stats) = common::get_json(&server.url("/api/v1/stats"));
    assert_eq!(status, 200, "{stats}");
    let total = stored as u64 * SPANS;
    assert_eq!(stats["spans"], total, "stats.spans agrees with the stored batches: {stats}");
    assert_eq!(stats["triplets"], total, "{stats}");
    assert_eq!(stats["sequences"], stored, "{stats}");
    stored
}

fn integrity_ok(db: &Path) {
    let conn = rusqlite::Connection::open(db).expect("open the database");
    let result: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check");
    assert_eq!(result, "ok", "SQLite integrity check of {}", db.display());
}

fn describe(what: &str, log: &Log, in_flight: usize) {
    eprintln!(
        "{what}: {} batches sent, {} acknowledged, {} overloaded, {in_flight} requests in flight when the server was ended; threads ended on: {:?}",
        log.sent.len(),
        log.acked.len(),
        log.overloaded,
        log.ended_with
    );
}

/// SIGKILL under load, a restart on the same store (`start` starts a collector on it), the
/// checks of [`verify`], then the exporters' retries of every batch sent: each stored once.
/// Returns the restarted collector.
fn sigkill_under_load(what: &str, start: impl Fn() -> common::Server) -> common::Server {
    let run = run_id();
    let mut server = start();
    let shared = Arc::new(Shared { acked: AtomicUsize::new(0), in_flight: AtomicUsize::new(0), ending: AtomicBool::new(false) });
    let handles = start_load(&server.url("/v1/traces"), run, 1, MAX_REQUESTS, &shared);
    wait_for_load(&shared);
    shared.ending.store(true, Ordering::SeqCst);
    let in_flight = shared.in_flight.load(Ordering::SeqCst);
    server.kill();
    let log = join(handles);
    describe(what, &log, in_flight);
    assert!(log.unexpected.is_empty(), "failures before the kill: {:?}", log.unexpected);
    assert!(!log.acked.is_empty());
    assert!(
        log.sent.len() < (THREADS * MAX_REQUESTS) as usize,
        "the kill came after the load was over; it must interrupt it ({} batches sent)",
        log.sent.len()
    );
    drop(server);

    // Restart on the same store.
    let server = start();
    let stored = verify(&server, &log);
    assert!(stored >= log.acked.len());

    // Exporter retries after the crash: every batch sent again is stored, once.
    let url = server.url("/v1/traces");
    let client = common::client();
    for tid in &log.sent {
        let mut ok = false;
        for _ in 0..50 {
            match post(&client, &url, batch(tid)) {
                Ok(true) => {
                    ok = true;
                    break;
                }
                Ok(false) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!("resending batch {} after the restart: {e}", hex(tid)),
            }
        }
        assert!(ok, "batch {} still overloaded after 50 tries", hex(tid));
    }
    let all_acked = Log { sent: log.sent.clone(), acked: log.sent.clone(), ..Log::default() };
    assert_eq!(verify(&server, &all_acked), log.sent.len(), "every batch stored exactly once after the retries");
    server
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db: PathBuf = dir.path().join("rltrace.db");
    let server = sigkill_under_load("SIGKILL", || common::Server::start_at(&db, &[]));
    stop_within(server);
    integrity_ok(&db);
}

#[test]
fn sigkill_under_load_on_postgres_loses_no_acknowledged_batch() {
    let db = common::PgDatabase::new();
    let server = sigkill_under_load("SIGKILL on PostgreSQL", || common::Server::start_store(&db.url, &[], None));
    stop_within(server);
}

#[test]
fn sigterm_under_load_exits_cleanly_and_loses_no_acknowledged_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db: PathBuf = dir.path().join("rltrace.db");
    let run = run_id();
    let server = common::Server::start_at(&db, &[]);
    let url = server.url("/v1/traces");

    // A load that runs to its end: every batch is acknowledged.
    let shared = Arc::new(Shared { acked: AtomicUsize::new(0), in_flight: AtomicUsize::new(0), ending: AtomicBool::new(false) });
    let full = join(start_load(&url, run, 1, 10, &shared));
    assert!(full.unexpected.is_empty(), "{:?}", full.unexpected);
    assert_eq!(full.overloaded, 0, "3 clients cannot overload the default bounds");
    assert_eq!(full.acked.len(), (THREADS * 10) as usize);

    // Then SIGTERM while a second load is running.
    let shared = Arc::new(Shared { acked: AtomicUsize::new(0), in_flight: AtomicUsize::new(0), ending: AtomicBool::new(false) });
    let handles = start_load(&url, run, 2, MAX_REQUESTS, &shared);
    wait_for_load(&shared);
    shared.ending.store(true, Ordering::SeqCst);
    let in_flight = shared.in_flight.load(Ordering::SeqCst);
    stop_within(server);
    let during = join(handles);
    describe("SIGTERM", &during, in_flight);
    assert!(during.unexpected.is_empty(), "failures before SIGTERM: {:?}", during.unexpected);

    let mut log = full;
    log.sent.extend(during.sent);
    log.acked.extend(during.acked);
    let server = common::Server::start_at(&db, &[]);
    let stored = verify(&server, &log);
    assert!(stored >= log.acked.len());
    stop_within(server);
    integrity_ok(&db);
}
