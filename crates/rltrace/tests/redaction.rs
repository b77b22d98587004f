//! Redaction before storage end to end: secrets sent through OTLP/HTTP and OTLP/gRPC (the
//! official Rust exporters) and `rltrace import` never reach the database file, its WAL or
//! anything else in its directory; what is stored shows the rules' replacements, and the export
//! manifest records the rules' hash.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Server, bin, get_json, wait_until};
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::Value;

const EMAIL: &str = "alice.secret@example.com";
const CARD: &str = "4111 1111 1111 1111";
const API_KEY: &str = "sk-proj-SECRETSECRETSECRET1234";
const TOKEN: &str = "tokSECRETabcdefgh";
const IP: &str = "10.20.30.40";
const TICKET: &str = "TICKET-424242";
const HASHED: &str = "bob.hashed@example.org";
const DROPPED: &str = "hunter2-SECRET-XYZ";
const LONG: &str = "keep-this-then-LONGSECRETTAIL";

const CONFIG: &str = r#"
[[redaction.rules]]
keys = ["rl.state", "rl.action", "gen_ai.*.messages", "note", "host.*", "span.status_message", "event.name"]
action = "mask"

[[redaction.rules]]
keys = ["user.email"]
action = "hash"

[[redaction.rules]]
keys = ["debug.*"]
action = "drop"

[[redaction.rules]]
keys = ["big"]
action = "truncate:9"

[[redaction.patterns]]
name = "ticket"
regex = "TICKET-[0-9]+"
"#;

fn secrets() -> Vec<&'static str> {
    vec![EMAIL, CARD, API_KEY, TOKEN, IP, TICKET, HASHED, DROPPED, "LONGSECRETTAIL"]
}

fn state_json() -> String {
    serde_json::json!({"agent_role": "Code", "user": EMAIL, "card": CARD, "nested": {"key": API_KEY, "list": [format!("Bearer {TOKEN}"), TICKET]}}).to_string()
}

/// Three triplets in `sequence` with every kind of secret, through `provider`.
fn emit(provider: &SdkTracerProvider, sequence: &str) {
    let tracer = provider.tracer("redaction-test");
    for i in 0..3i64 {
        let mut span = tracer.start(format!("step-{i}"));
        span.set_attribute(KeyValue::new("rl.sequence_id", sequence.to_string()));
        span.set_attribute(KeyValue::new("rl.sequence_index", i));
        span.set_attribute(KeyValue::new("rl.state", state_json()));
        span.set_attribute(KeyValue::new("rl.action", format!("{{\"reply\":\"mail {EMAIL} from {IP}\"}}")));
        span.set_attribute(KeyValue::new("gen_ai.input.messages", format!("[{{\"role\":\"user\",\"content\":\"my card is {CARD}\"}}]")));
        span.set_attribute(KeyValue::new("user.email", HASHED));
        span.set_attribute(KeyValue::new("debug.password", DROPPED));
        span.set_attribute(KeyValue::new("big", LONG));
        span.add_event(format!("note for {EMAIL}"), vec![KeyValue::new("note", format!("see {TICKET}"))]);
        span.set_status(opentelemetry::trace::Status::error(format!("failed for {EMAIL} with {API_KEY}")));
        span.end();
    }
}

fn resource() -> Resource {
    Resource::builder_empty().with_attributes([KeyValue::new("service.name", "agents"), KeyValue::new("host.ip", IP)]).build()
}

/// Every byte of every file under `dir` (the database, its WAL and shared memory, ...).
fn raw_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        if p.is_file() {
            out.push((p.display().to_string(), std::fs::read(&p).expect("read")));
        } else if p.is_dir() {
            out.extend(raw_bytes(&p));
        }
    }
    out
}

fn assert_no_secret(dir: &Path) {
    let files = raw_bytes(dir);
    assert!(files.iter().any(|(n, _)| n.ends_with("rltrace.db")), "{:?}", files.iter().map(|f| &f.0).collect::<Vec<_>>());
    for (name, bytes) in &files {
        for secret in secrets() {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret:?} is in {name}");
        }
    }
}

#[test]
fn secrets_never_reach_the_database_on_any_ingest_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db_dir = dir.path().join("data");
    std::fs::create_dir(&db_dir).expect("mkdir");
    let cfg = dir.path().join("rltrace.toml");
    std::fs::write(&cfg, CONFIG).expect("config");
    let cfg_arg = cfg.to_str().expect("utf-8");
    let db = db_dir.join("rltrace.db");
    let mut s = Server::start_at(&db, &["--config", cfg_arg]);

    // OTLP/HTTP protobuf, the official exporter.
    let http = opentelemetry_otlp::SpanExporter::builder().with_http().with_endpoint(s.url("/v1/traces")).with_timeout(Duration::from_secs(10)).build().expect("exporter");
    let provider = SdkTracerProvider::builder().with_resource(resource()).with_simple_exporter(http).build();
    emit(&provider, "redact-http");
    provider.shutdown().expect("shutdown");

    // OTLP/gRPC, the official exporter.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let grpc_endpoint = s.grpc.clone();
    rt.block_on(async move {
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(grpc_endpoint).build().expect("grpc exporter");
        let provider = SdkTracerProvider::builder().with_resource(resource()).with_batch_exporter(exporter).build();
        tokio::task::spawn_blocking(move || {
            emit(&provider, "redact-grpc");
            provider.shutdown().expect("shutdown");
        })
        .await
        .expect("emit");
    });

    let count = |seq: &str| get_json(&s.url(&format!("/api/v1/sequences/{seq}"))).1["triplet_count"].as_i64().unwrap_or(0);
    assert!(wait_until(20, || count("redact-http") == 3 && count("redact-grpc") == 3));

    // What is stored shows the replacements; the JSON stayed JSON.
    let (_, seq) = get_json(&s.url("/api/v1/sequences/redact-grpc"));
    let t = &seq["triplets"][0];
    assert_eq!(t["state"]["user"], "[REDACTED:email]", "{t:#}");
    assert_eq!(t["state"]["card"], "[REDACTED:card]");
    assert_eq!(t["state"]["nested"]["key"], "[REDACTED:api_key]");
    assert_eq!(t["state"]["nested"]["list"], serde_json::json!(["Bearer [REDACTED:bearer]", "[REDACTED:ticket]"]));
    assert_eq!(t["state"]["agent_role"], "Code");
    assert_eq!(t["action"]["reply"], "mail [REDACTED:email] from [REDACTED:ip]");
    let trace_id = t["trace_id"].as_str().expect("trace id").to_string();
    let (_, trace) = get_json(&s.url(&format!("/api/v1/traces/{trace_id}")));
    let span = &trace["spans"][0];
    let attrs = &span["attributes"];
    assert!(attrs["user.email"].as_str().is_some_and(|h| h.starts_with("sha256:") && h.len() == 71), "{attrs:#}");
    assert!(attrs.get("debug.password").is_none(), "dropped: {attrs:#}");
    assert_eq!(attrs["big"], "keep-this");
    assert_eq!(span["resource"]["host.ip"], "[REDACTED:ip]", "{span:#}");
    assert_eq!(span["events"][0]["attributes"]["note"], "see [REDACTED:ticket]");
    assert_eq!(span["events"][0]["name"], "note for [REDACTED:email]");
    assert_eq!(span["status"]["message"], "failed for [REDACTED:email] with [REDACTED:api_key]", "{span:#}");

    // The export manifest records the rules' hash, the CLI's the same.
    let text = common::client().get(s.url("/api/v1/export?manifest=true")).send().expect("export").text().expect("text");
    let manifest: Value = serde_json::from_str(text.lines().last().expect("manifest line")).expect("manifest");
    let hash = manifest["manifest"]["redaction_rules_hash"].as_str().or_else(|| manifest["redaction_rules_hash"].as_str()).unwrap_or_else(|| panic!("{manifest}")).to_string();
    assert!(hash.starts_with("sha256:") && hash.len() == 71, "{hash}");

    // Searched while the collector runs (its WAL has the newest pages), and after it stopped.
    assert_no_secret(&db_dir);
    s.stop();
    assert_no_secret(&db_dir);

    // rltrace import goes through the same redaction.
    let file = dir.path().join("spans.json");
    let line = serde_json::json!({"resourceSpans": [{"resource": {"attributes": [{"key": "host.ip", "value": {"stringValue": IP}}]}, "scopeSpans": [{"scope": {"name": "file"}, "spans": [{
        "traceId": "0000000000000000000000000000ab01", "spanId": "00000000000000a1", "name": "imported", "kind": 1,
        "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000000001000",
        "attributes": [
            {"key": "rl.sequence_id", "value": {"stringValue": "redact-import"}},
            {"key": "rl.state", "value": {"stringValue": state_json()}},
            {"key": "debug.token", "value": {"stringValue": DROPPED}},
            {"key": "user.email", "value": {"stringValue": HASHED}}
        ]}]}]}]});
    std::fs::write(&file, format!("{line}\n")).expect("write");
    let out = std::process::Command::new(bin()).args(["import", "--db"]).arg(&db).arg("--config").arg(&cfg).arg(&file).output().expect("import");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_no_secret(&db_dir);
    let out_file = dir.path().join("import.jsonl");
    let (ok, _, stderr) = common::run_cli(dir.path(), &["export", "--db", db.to_str().expect("utf-8"), "--config", cfg_arg, "--sequence-id", "redact-import", "-o", out_file.to_str().expect("utf-8")]);
    assert!(ok, "{stderr}");
    let rows = std::fs::read_to_string(&out_file).expect("rows");
    assert!(rows.contains("[REDACTED:email]") && !rows.contains(EMAIL), "{rows}");
    let m: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("import.jsonl.manifest.json")).expect("manifest")).expect("json");
    assert_eq!(m["redaction_rules_hash"], hash.as_str(), "the CLI's manifest has the same rules' hash: {m}");
}

#[test]
fn a_bad_redaction_section_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[[redaction.rules]]\nkeys = [\"a\"]\naction = \"truncate:x\"\n").expect("config");
    let out = std::process::Command::new(bin()).arg("serve").arg("--db").arg(dir.path().join("r.db")).arg("--config").arg(&cfg).output().expect("serve");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncate:N"), "{}", String::from_utf8_lossy(&out.stderr));
}
