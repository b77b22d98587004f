//! The official Python OpenTelemetry SDK talks to the real collector, over OTLP/HTTP and OTLP/gRPC.
//!
//! `tests/python/send_spans.py` (SDK versions pinned in `tests/python/requirements.txt`) sets up a
//! `TracerProvider` with a `BatchSpanProcessor` and the official `OTLPSpanExporter` of one protocol,
//! and sends one trace: a root `orchestrator` span, three agent spans that are triplets by the
//! `rl.*` conventions (JSON `rl.state` / `rl.action`, `rl.state.agent_role`, `rl.sequence_index`,
//! `rl.reward.success` / `rl.reward.latency`, and `rl.timestamp_utc` from
//! `datetime.utcnow().isoformat()`, which carries no offset), and under the second agent an
//! LLM-call span with only GenAI attributes and a `gen_ai.evaluation.result` event (score 0.9).
//! The tests then read the REST API and check that what the Python user meant arrived: state,
//! action, order, UTC timestamps, the immediate reward from its components, the LLM-call triplet
//! with its judge reward, and the trace in tree order.
//!
//! Python: set `RLTRACE_PYTHON` to a python with the requirements installed; `.ci/python-setup.sh`
//! creates such a virtualenv and prints the path of its python:
//!
//! ```sh
//! export RLTRACE_PYTHON="$(.ci/python-setup.sh)"
//! ```
//!
//! When `RLTRACE_PYTHON` is not set, the tests FAIL if the environment variable `CI` is set
//! ("RLTRACE_PYTHON must be set in CI"); elsewhere they print a notice on stderr and return
//! without checking anything, so a developer without Python can still run `cargo test`.
//! A set `RLTRACE_PYTHON` that does not work is always a failure.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Longest time the Python client may take (it normally needs well under a second).
const PYTHON_TIMEOUT: Duration = Duration::from_secs(90);

/// The python to run, `None` (after a notice) when it is absent outside CI.
fn python() -> Option<PathBuf> {
    match std::env::var_os("RLTRACE_PYTHON").filter(|v| !v.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            if std::env::var_os("CI").is_some() {
                panic!("RLTRACE_PYTHON must be set in CI (export RLTRACE_PYTHON=\"$(.ci/python-setup.sh)\")");
            }
            eprintln!(
                "NOTICE: python_sdk tests skipped: RLTRACE_PYTHON is not set. Run \
                 `export RLTRACE_PYTHON=\"$(.ci/python-setup.sh)\"` to run them (they are required in CI)."
            );
            None
        }
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/send_spans.py")
}

/// Run `send_spans.py`; returns the trace id it printed and the report it wrote.
fn send(python: &PathBuf, endpoint: &str, protocol: &str, sequence_id: &str) -> (String, Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let report_path = dir.path().join("report.json");
    let mut cmd = Command::new(python);
    cmd.arg(script())
        .args(["--endpoint", endpoint, "--protocol", protocol, "--sequence-id", sequence_id])
        .arg("--report")
        .arg(&report_path)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The SDK reads OTEL_* variables (sampler, disabled SDK, headers...): none from the caller.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run RLTRACE_PYTHON={}: {e}", python.display()));
    let deadline = Instant::now() + PYTHON_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for python") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("send_spans.py ({protocol}) did not finish within {PYTHON_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("python output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(status.success(), "send_spans.py ({protocol}) failed with {status}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let trace_id = stdout.lines().next().unwrap_or("").trim().to_string();
    assert!(
        trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "send_spans.py printed no trace id: {stdout:?}\nstderr:\n{stderr}"
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report_path).expect("report")).expect("report JSON");
    assert_eq!(report["trace_id"], trace_id, "report and stdout disagree");
    assert_eq!(report["exported_spans"], 5, "the SDK exported every span: {report}");
    (trace_id, report)
}

/// `datetime.utcnow().isoformat()` (no offset, microseconds omitted when zero) as rltrace reports
/// it: UTC with six fractional digits and `Z`.
fn as_reported_utc(naive: &str) -> String {
    assert!(!naive.ends_with('Z') && !naive.contains('+'), "the client must send a naive timestamp, got {naive}");
    if naive.contains('.') { format!("{naive}Z") } else { format!("{naive}.000000Z") }
}

fn approx(v: &Value, want: f64, what: &str) {
    let got = v.as_f64().unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!((got - want).abs() < 1e-9, "{what}: got {got}, want {want}");
}

/// Every check on what one run of the Python client left in the store.
fn check_run(server: &common::Server, protocol: &str, sequence_id: &str, trace_id: &str, report: &Value) {
    // The three agent triplets, by the rl.* conventions.
    let (status, body) = common::get_json(&server.url(&format!("/api/v1/triplets?sequence_id={sequence_id}")));
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 3, "three agent triplets in {sequence_id}: {body:#}");
    let sent = report["triplets"].as_array().expect("sent triplets");
    for s in sent {
        let span_id = s["span_id"].as_str().expect("span id");
        let t = items
            .iter()
            .find(|t| t["span_id"] == span_id)
            .unwrap_or_else(|| panic!("no triplet for span {span_id} in {body:#}"));
        assert_eq!(t["triplet_id"], format!("{trace_id}{span_id}"), "default triplet id");
        assert_eq!(t["trace_id"], trace_id);
        assert_eq!(t["sequence_id"], sequence_id);
        assert_eq!(t["sequence_index"], s["sequence_index"]);
        // rl.state (JSON) merged with rl.state.agent_role; rl.action (JSON) as sent.
        assert_eq!(t["state"], s["state"], "state of span {span_id}");
        assert_eq!(t["action"], s["action"], "action of span {span_id}");
        // A naive rl.timestamp_utc is UTC: the same wall-clock digits, reported with Z.
        let naive = s["timestamp_utc"].as_str().expect("sent timestamp");
        assert_eq!(t["timestamp_utc"], as_reported_utc(naive), "timestamp of span {span_id}");
        // Immediate reward: equal-weight mean of rl.reward.success and rl.reward.latency.
        let c = &s["reward_components"];
        let want = (c["success"].as_f64().expect("success") + c["latency"].as_f64().expect("latency")) / 2.0;
        approx(&t["reward"], want, "immediate reward");
        let sources = t["reward_sources"].as_object().expect("reward_sources");
        assert_eq!(sources.keys().collect::<Vec<_>>(), vec!["local"], "only the local source: {t}");
        approx(&sources["local"], want, "reward_sources.local");
        assert_eq!(t["reward_source"], "local");
    }

    // The sequence lists them in rl.sequence_index order.
    let (status, seq) = common::get_json(&server.url(&format!("/api/v1/sequences/{sequence_id}")));
    assert_eq!(status, 200, "{seq}");
    assert_eq!(seq["triplet_count"], 3);
    let order: Vec<&Value> = seq["triplets"].as_array().expect("triplets").iter().map(|t| &t["state"]["agent_role"]).collect();
    assert_eq!(order, vec!["Planning", "Code", "Code Review"], "sequence order");

    // The LLM call: no rl.* at all, so its sequence is the trace; state and action from gen_ai.*.
    let llm = &report["llm"];
    let llm_span = llm["span_id"].as_str().expect("llm span id");
    let (status, body) = common::get_json(&server.url(&format!("/api/v1/triplets?sequence_id={trace_id}")));
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "one LLM-call triplet in the trace's own sequence: {body:#}");
    let t = &items[0];
    assert_eq!(t["triplet_id"], format!("{trace_id}{llm_span}"));
    assert_eq!(t["span_id"], llm_span);
    assert_eq!(t["state"]["llm_model"], llm["model"]);
    assert_eq!(t["state"]["llm_provider"], "openai");
    approx(&t["state"]["temperature"], 0.2, "state.temperature");
    assert_eq!(
        t["state"]["prompt"],
        json!([
            {"role": "system", "content": "You write Rust."},
            {"role": "user", "content": "Write a function that adds two numbers."},
        ]),
        "state.prompt from gen_ai.input.messages"
    );
    assert_eq!(
        t["action"]["llm_response"],
        json!([{"role": "assistant", "content": "fn add(a: i64, b: i64) -> i64 { a + b }"}]),
        "action.llm_response from gen_ai.output.messages"
    );
    assert_eq!(t["action"]["llm_tokens_in"], llm["input_tokens"]);
    assert_eq!(t["action"]["llm_tokens_out"], llm["output_tokens"]);
    assert_eq!(t["action"]["llm_stop_reason"], "stop");
    assert_eq!(t["action"]["success"], true);
    // The gen_ai.evaluation.result event is a judge reward for this triplet.
    approx(&t["reward_sources"]["judge"], 0.9, "reward_sources.judge");
    assert_eq!(t["reward_sources"].as_object().map(|m| m.len()), Some(1), "only the judge: {t}");
    approx(&t["reward"], 0.9, "LLM-call reward");
    assert_eq!(t["reward_source"], "judge");
    let (status, detail) = common::get_json(&server.url(&format!("/api/v1/triplets/{trace_id}{llm_span}")));
    assert_eq!(status, 200, "{detail}");
    let ledger = detail["ledger"].as_array().expect("ledger");
    assert_eq!(ledger.len(), 1, "one judge event: {detail:#}");
    assert_eq!(ledger[0]["source"], "judge");
    assert_eq!(ledger[0]["reason"], "relevance");
    approx(&ledger[0]["value"], 0.9, "judge event value");

    // The trace: five spans in tree order, parents before children, siblings by start time.
    let (status, trace) = common::get_json(&server.url(&format!("/api/v1/traces/{trace_id}")));
    assert_eq!(status, 200, "{trace}");
    assert_eq!(trace["trace_id"], trace_id);
    let spans = trace["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 5, "{trace:#}");
    let names: Vec<&str> = spans.iter().map(|s| s["name"].as_str().unwrap_or("")).collect();
    assert_eq!(
        names,
        vec!["orchestrator", "agent.Planning.execute", "agent.Code.execute", "chat gpt-4o-mini", "agent.Code Review.execute"],
        "tree order"
    );
    let root = &spans[0];
    assert_eq!(root["span_id"], report["root_span_id"]);
    assert_eq!(root["parent_span_id"], Value::Null);
    assert_eq!(root["depth"], 0);
    assert_eq!(root["triplet_id"], Value::Null, "the orchestrator span is not a triplet");
    assert!(root["resource"].to_string().contains(&format!("rltrace-python-{protocol}")), "resource kept: {}", root["resource"]);
    let mut seen: Vec<(&str, u64)> = Vec::new();
    for s in spans {
        let id = s["span_id"].as_str().expect("span id");
        let depth = s["depth"].as_u64().expect("depth");
        if let Some(parent) = s["parent_span_id"].as_str() {
            let (_, pdepth) = seen
                .iter()
                .find(|(p, _)| *p == parent)
                .unwrap_or_else(|| panic!("span {id} comes before its parent {parent}: {names:?}"));
            assert_eq!(depth, pdepth + 1, "depth of {id}");
        }
        seen.push((id, depth));
    }
    assert_eq!(spans[3]["parent_span_id"], spans[2]["span_id"], "the LLM call is under the Code agent");
    let triplet_spans: BTreeSet<&str> = spans.iter().filter(|s| !s["triplet_id"].is_null()).map(|s| s["span_id"].as_str().unwrap_or("")).collect();
    let mut want: BTreeSet<&str> = sent.iter().map(|s| s["span_id"].as_str().unwrap_or("")).collect();
    want.insert(llm_span);
    assert_eq!(triplet_spans, want, "triplet spans of the trace");
}

fn run_protocol(protocol: &str) {
    let Some(python) = python() else { return };
    let mut server = common::Server::start(&[]);
    let endpoint = if protocol == "grpc" { server.grpc.clone() } else { server.http.clone() };
    let sequence_id = format!("py-{protocol}-task-1");
    let (trace_id, report) = send(&python, &endpoint, protocol, &sequence_id);
    check_run(&server, protocol, &sequence_id, &trace_id, &report);

    // A second run of the client is a second trace and a second episode; the first is untouched.
    let sequence_id2 = format!("py-{protocol}-task-2");
    let (trace_id2, report2) = send(&python, &endpoint, protocol, &sequence_id2);
    assert_ne!(trace_id, trace_id2);
    check_run(&server, protocol, &sequence_id2, &trace_id2, &report2);
    let (status, stats) = common::get_json(&server.url("/api/v1/stats"));
    assert_eq!(status, 200);
    assert_eq!(stats["spans"], 10, "{stats}");
    assert_eq!(stats["triplets"], 8, "{stats}");
    assert_eq!(stats["sequences"], 4, "{stats}");
    server.stop();
}

#[test]
fn python_sdk_over_otlp_http() {
    run_protocol("http");
}

#[test]
fn python_sdk_over_otlp_grpc() {
    run_protocol("grpc");
}
