//! End-to-end tests of the `rltrace` command line (DESIGN section 6): `export` gives the same
//! triplets and manifest as `GET /api/v1/export`, `import` loads OTLP JSON-lines files as the
//! OpenTelemetry Collector's file exporter writes them (idempotently, skipping bad lines with a
//! message), and `loadgen` drives a running collector over each OTLP protocol.

mod common;
mod api_support;

use std::path::{Path, PathBuf};

use api_support::{BASE_NS, SEC, assert_close, get_ok, get_text, reward_created, send, span, span_id, stats, trace_id, triplet};
use serde_json::{Value, json};

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("line is not JSON ({e}): {l}"))).collect()
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Split an API export with a manifest into its triplet lines and its manifest.
fn split_manifest(text: &str) -> (Vec<Value>, Value) {
    let mut lines = parse_lines(text);
    let last = lines.pop().expect("a manifest line");
    assert!(last["manifest"].is_object(), "last line is not a manifest: {last}");
    (lines, last["manifest"].clone())
}

/// Everything of a manifest but the time of export and the file's SHA-256 (only the CLI knows it).
fn manifest_sans_time(m: &Value) -> Value {
    let mut m = m.clone();
    if let Some(o) = m.as_object_mut() {
        assert!(o.remove("exported_at").is_some_and(|t| t.is_string()), "manifest without exported_at");
        o.remove("sha256");
    }
    m
}

/// Run `rltrace export` on `db` with extra arguments writing to `out`; returns stderr.
fn cli_export(dir: &Path, db: &Path, out: &Path, extra: &[&str]) -> String {
    let (db, out) = (path_str(db), path_str(out));
    let mut args = vec!["export", "--db", &db, "--format", "jsonl", "-o", &out];
    args.extend_from_slice(extra);
    let (ok, _, stderr) = common::run_cli(dir, &args);
    assert!(ok, "rltrace {args:?} failed: {stderr}");
    stderr
}

#[test]
fn export_command_matches_the_api_export() {
    let mut s = common::Server::start(&[]);
    let db = s.db.clone();
    let _guard = s.take_dir();
    let dir = db.parent().map(Path::to_path_buf).expect("db dir");
    let upper = (trace_id().to_ascii_uppercase(), span_id().to_ascii_uppercase());
    send(&s, &[
        triplet("X1", 0, "Code", 0).attr("rl.triplet_id", json!("X1-0")).attr("rl.propensity", json!(0.5)),
        triplet("X1", 1, "Test", 1).attr("rl.triplet_id", json!("X1-1")).attr("rl.reward.success", json!(1.0)).attr("rl.reward.latency", json!(0.5)),
        triplet("X1", 2, "Code", 2).attr("rl.triplet_id", json!("X1-2")).attr("rl.sequence_end", json!(true)),
        triplet("X2", 0, "Review", 10).attr("rl.triplet_id", json!("X2-0")),
        span(&upper.0, &upper.1, "plain-triplet", BASE_NS + 20 * SEC).attr("rl.state.agent_role", json!("Code")),
        span(&trace_id(), &span_id(), "not-a-triplet", BASE_NS),
    ]);
    reward_created(&s, &json!({"target": {"sequence_id": "X1", "strategy": "discounted", "gamma": 0.9}, "value": 1.0, "source": "tests"}));
    reward_created(&s, &json!({"target": {"triplet_id": "X2-0"}, "value": 0.3, "source": "review"}));
    reward_created(&s, &json!({"target": {"triplet_id": "X1-0"}, "value": 0.0, "source": "hitl"}));

    let (status, _, api_all) = get_text(&s.url("/api/v1/export?format=jsonl&manifest=true"));
    assert_eq!(status, 200);
    let (api_lines, api_manifest) = split_manifest(&api_all);
    assert_eq!(api_lines.len(), 5, "{api_all}");
    let (_, _, api_filtered) = get_text(&s.url("/api/v1/export?format=jsonl&manifest=true&sequence_id=X1&role=Code&rewarded=true"));
    let (api_f_lines, api_f_manifest) = split_manifest(&api_filtered);
    assert_eq!(api_f_lines.len(), 2, "{api_filtered}");
    let (_, _, api_since) = get_text(&s.url(&format!("/api/v1/export?format=jsonl&since={}&complete=false", api_support::pct(&api_support::rfc3339(5)))));
    let api_since_lines = parse_lines(&api_since);
    assert_eq!(api_since_lines.len(), 2, "{api_since}");
    s.stop();

    // The whole store, to a file with its manifest.
    let out = dir.join("triplets.jsonl");
    let stderr = cli_export(&dir, &db, &out, &[]);
    let cli_lines = parse_lines(&std::fs::read_to_string(&out).expect("export file"));
    assert_eq!(cli_lines, api_lines, "CLI and API export the same triplets in the same order");
    let mpath = dir.join("triplets.jsonl.manifest.json");
    let cli_manifest: Value = serde_json::from_str(&std::fs::read_to_string(&mpath).expect("FILE.manifest.json written")).expect("manifest is JSON");
    assert_eq!(manifest_sans_time(&cli_manifest), manifest_sans_time(&api_manifest), "same filters, policy, hash and counts");
    assert!(stderr.contains("exported 5 triplets"), "summary line on stderr: {stderr}");

    // Filters, as flags.
    let out_f = dir.join("filtered.jsonl");
    cli_export(&dir, &db, &out_f, &["--sequence-id", "X1", "--role", "Code", "--rewarded", "true"]);
    assert_eq!(parse_lines(&std::fs::read_to_string(&out_f).expect("export file")), api_f_lines);
    let fm: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("filtered.jsonl.manifest.json")).expect("manifest")).expect("json");
    assert_eq!(manifest_sans_time(&fm), manifest_sans_time(&api_f_manifest));
    let out_s = dir.join("since.jsonl");
    cli_export(&dir, &db, &out_s, &["--since", &api_support::rfc3339(5), "--complete", "false"]);
    assert_eq!(parse_lines(&std::fs::read_to_string(&out_s).expect("export file")), api_since_lines);

    // Standard output when there is no -o, and then no manifest file.
    let dbs = path_str(&db);
    let (ok, stdout, stderr) = common::run_cli(&dir, &["export", "--db", &dbs, "--format", "jsonl"]);
    assert!(ok, "{stderr}");
    assert_eq!(parse_lines(&stdout), api_lines);

    // A policy changes the rewards read and is recorded in the manifest.
    let policy = dir.join("weights.toml");
    std::fs::write(&policy, "[sources.hitl]\nweight = 3.0\n").expect("write policy");
    let out_p = dir.join("weighted.jsonl");
    cli_export(&dir, &db, &out_p, &["--policy", &path_str(&policy), "--sequence-id", "X1"]);
    let weighted = parse_lines(&std::fs::read_to_string(&out_p).expect("export file"));
    // X1-0: hitl 0.0 (weight 3) and tests 1.0 * 0.9^2 = 0.81 (weight 1).
    assert_close(&weighted[0]["reward"], 0.81 / 4.0, "weighted X1-0");
    let unweighted = api_lines.iter().find(|l| l["triplet_id"] == "X1-0").expect("X1-0");
    assert_close(&unweighted["reward"], 0.81 / 2.0, "default X1-0");
    let pm: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("weighted.jsonl.manifest.json")).expect("manifest")).expect("json");
    assert_eq!(pm["reward_policy"]["sources"]["hitl"]["weight"], 3.0, "{pm}");
    assert_ne!(pm["reward_policy_hash"], api_manifest["reward_policy_hash"]);

    // Refusals.
    let (ok, _, stderr) = common::run_cli(&dir, &["export", "--db", &dbs, "--format", "csv"]);
    assert!(!ok && stderr.contains("--format") && stderr.contains("csv"), "{stderr}");
    let missing = path_str(&dir.join("missing.db"));
    let (ok, _, stderr) = common::run_cli(&dir, &["export", "--db", &missing, "--format", "jsonl"]);
    assert!(!ok && stderr.contains("missing.db"), "{stderr}");
    assert!(!dir.join("missing.db").exists(), "export must not create a store");
    let (ok, _, stderr) = common::run_cli(&dir, &["export", "--db", &dbs, "--since", "yesterday"]);
    assert!(!ok && stderr.contains("since"), "{stderr}");
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures").join(name)
}

fn import(dir: &Path, db: &Path, files: &[&Path]) -> (bool, String) {
    let db = path_str(db);
    let files: Vec<String> = files.iter().map(|f| path_str(f)).collect();
    let mut args = vec!["import", "--db", db.as_str()];
    args.extend(files.iter().map(String::as_str));
    let (ok, _, stderr) = common::run_cli(dir, &args);
    (ok, stderr)
}

#[test]
fn import_loads_collector_file_exporter_output_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let db = dir.join("imported.db");
    let file = fixture("cli_collector_traces.jsonl");

    let (ok, stderr) = import(dir, &db, &[&file]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("imported 1 files (2 requests)"), "summary line: {stderr}");
    assert!(stderr.contains("4 spans stored, 0 already stored, 0 rejected, 0 lines skipped"), "{stderr}");
    // The same file again stores nothing new.
    let (ok, stderr) = import(dir, &db, &[&file]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("0 spans stored, 4 already stored"), "second import: {stderr}");

    let s = common::Server::start_at(&db, &[]);
    let st = stats(&s);
    assert_eq!(st["spans"], 4, "{st}");
    assert_eq!(st["triplets"], 3, "{st}");
    assert_eq!(st["sequences"], 2, "{st}");
    assert_eq!(st["reward_events"], 1, "the span's rl.reward event, once: {st}");

    let seq = get_ok(&s.url("/api/v1/sequences/imp-task-1"));
    let ts = seq["triplets"].as_array().cloned().unwrap_or_default();
    assert_eq!(ts.iter().map(|t| t["triplet_id"].clone()).collect::<Vec<_>>(), vec![json!("imp-plan"), json!("imp-code")]);
    assert_eq!(ts[0]["state"], json!({"task_id": "imp-task-1", "agent_role": "Planning"}));
    assert_close(&ts[0]["reward"], 0.8, "immediate rl.reward");
    assert_eq!(ts[0]["timestamp_utc"], "2023-11-14T22:13:21.000000Z");
    assert_eq!(ts[1]["action"], json!({"success": true, "files_changed": 3}));
    assert_close(&ts[1]["reward"], 1.0, "rl.reward span event");
    assert_eq!(ts[1]["reward_source"], "tests");
    assert_eq!(seq["ledger"][0]["reason"], "12 passed");
    let trace = get_ok(&s.url("/api/v1/traces/4bf92f3577b34da6a3ce929d0e0e4736"));
    let names: Vec<&str> = trace["spans"].as_array().map(|a| a.iter().filter_map(|x| x["name"].as_str()).collect()).unwrap_or_default();
    assert_eq!(names, vec!["pipeline.run", "agent.Planning", "agent.Code"]);
    assert_eq!(trace["spans"][0]["resource"]["service.name"], "agent-platform");
    let review = get_ok(&s.url("/api/v1/sequences/imp-task-2"));
    assert_eq!(review["complete"], true, "rl.sequence_end");
    assert_eq!(review["triplets"][0]["triplet_id"], "0af7651916cd43dd8448eb211c80319cb7ad6b7169203331");
    assert_close(&review["triplets"][0]["propensity"], 0.5, "propensity");
}

#[test]
fn import_reads_a_pretty_printed_request_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let db = dir.join("pretty.db");
    let good = std::fs::read_to_string(fixture("cli_collector_traces.jsonl")).expect("fixture");
    let first: serde_json::Value = serde_json::from_str(good.lines().next().expect("a line")).expect("json");
    let file = dir.join("pretty.json");
    std::fs::write(&file, serde_json::to_string_pretty(&first).expect("pretty")).expect("write");
    let (ok, stderr) = import(dir, &db, &[&file]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("imported 1 files (1 requests)") && stderr.contains("0 lines skipped"), "one request read from a multi-line document: {stderr}");
    let s = common::Server::start_at(&db, &[]);
    assert!(stats(&s)["spans"].as_u64().is_some_and(|n| n > 0), "spans stored");
}

#[test]
fn import_skips_malformed_lines_with_a_message() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let db = dir.join("mixed.db");
    let good = std::fs::read_to_string(fixture("cli_collector_traces.jsonl")).expect("fixture");
    let good: Vec<&str> = good.lines().collect();
    let bad_span = json!({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "11111111111111111111111111111111", "spanId": "2222222222222222", "name": "bad", "startTimeUnixNano": "1", "endTimeUnixNano": "2",
         "attributes": [{"key": "rl.sequence_index", "value": {"stringValue": "first"}}, {"key": "rl.sequence_id", "value": {"stringValue": "bad-seq"}}]},
        {"traceId": "11111111111111111111111111111111", "spanId": "3333333333333333", "name": "fine", "startTimeUnixNano": "1", "endTimeUnixNano": "2"}
    ]}]}]});
    let text = format!("{}\n{{not json\n{{\"resourceSpans\": \"nope\"}}\n\n{}\n{}\n", good[0], bad_span, good[1]);
    let file = dir.join("mixed.jsonl");
    std::fs::write(&file, text).expect("write");

    let (ok, stderr) = import(dir, &db, &[&file]);
    assert!(ok, "good lines are imported even with bad ones around: {stderr}");
    assert!(stderr.contains("mixed.jsonl:2: skipped"), "line 2 named: {stderr}");
    assert!(stderr.contains("mixed.jsonl:3: skipped"), "line 3 named: {stderr}");
    assert!(stderr.contains("mixed.jsonl:5: rejected") && stderr.contains("rl.sequence_index"), "the malformed span is named with its attribute: {stderr}");
    assert!(stderr.contains("5 spans stored") && stderr.contains("1 rejected") && stderr.contains("2 lines skipped"), "{stderr}");

    let s = common::Server::start_at(&db, &[]);
    let st = stats(&s);
    assert_eq!(st["spans"], 5, "{st}");
    assert_eq!(st["triplets"], 3, "{st}");
    assert_eq!(common::get_json(&s.url("/api/v1/sequences/bad-seq")).0, 404);
    drop(s);

    // A file with nothing readable fails.
    let junk = dir.join("junk.jsonl");
    std::fs::write(&junk, "not json\n[1,2]\n").expect("write");
    let (ok, stderr) = import(dir, &dir.join("junk.db"), &[&junk]);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("junk.jsonl:1: skipped") && stderr.contains("junk.jsonl:2: skipped"), "{stderr}");
    let (ok, stderr) = import(dir, &dir.join("junk.db"), &[&dir.join("absent.jsonl")]);
    assert!(!ok && stderr.contains("absent.jsonl"), "{stderr}");
}

/// A load generator pointed where nothing listens stops with a clear error soon, instead of
/// retrying each of its batches until its time bound.
#[test]
fn loadgen_with_no_collector_at_its_target_stops_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let target = format!("http://127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let (ok, stdout, stderr) = common::run_cli(dir.path(), &["loadgen", "--target", &target, "--spans", "200000", "--max-seconds", "300"]);
    let took = started.elapsed();
    assert!(!ok, "{stdout} {stderr}");
    assert!(stderr.contains(&format!("nothing answers at {target}")), "{stderr}");
    assert!(stdout.contains("0 spans acknowledged"), "the summary is printed first: {stdout}");
    assert!(took < std::time::Duration::from_secs(60), "stopped after {took:?}");
}

#[test]
fn loadgen_drives_each_protocol_and_every_span_is_stored() {
    let s = common::Server::start(&[]);
    let dir = s.dir.clone();
    for (protocol, target) in [("http-protobuf", s.http.clone()), ("http-json", s.http.clone()), ("grpc", s.grpc.clone())] {
        let before = stats(&s);
        let (ok, stdout, stderr) = common::run_cli(&dir, &["loadgen", "--target", &target, "--spans", "2000", "--protocol", protocol, "--max-seconds", "120"]);
        assert!(ok, "loadgen {protocol} failed: {stdout} {stderr}");
        assert!(stdout.contains("2000 spans acknowledged"), "{protocol}: {stdout}");
        assert!(stdout.contains("spans/s"), "{protocol}: {stdout}");
        for p in ["p50", "p90", "p99"] {
            assert!(stdout.contains(p), "{protocol}: no {p} in {stdout}");
        }
        assert!(stdout.contains("0 rejected") && stdout.contains("0 errors"), "{protocol}: {stdout}");
        let rate: f64 = stdout
            .split(" = ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("{protocol}: no rate in {stdout}"));
        assert!(rate > 0.0, "{protocol}: {stdout}");
        let after = stats(&s);
        let grew = |k: &str| after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0);
        assert_eq!(grew("spans"), 2000, "{protocol}: {before} -> {after}");
        assert_eq!(grew("triplets"), 2000, "{protocol}: {before} -> {after}");
        assert_eq!(grew("sequences"), 125, "{protocol}: sequences of 16: {before} -> {after}");
    }
    // The JSON summary carries the same figures.
    let (ok, stdout, stderr) = common::run_cli(&dir, &["loadgen", "--target", &s.http, "--spans", "100", "--batch", "10", "--json", "--max-seconds", "60"]);
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).expect("--json prints one JSON object");
    assert_eq!(v["spans_acknowledged"], 100, "{v}");
    assert_eq!(v["requests"], 10, "{v}");
    for p in ["p50", "p90", "p99", "max"] {
        assert!(v["latency_ms"][p].as_f64().is_some_and(|x| x >= 0.0), "{v}");
    }
    assert!(v["spans_per_s"].as_f64().is_some_and(|x| x > 0.0), "{v}");
    assert_eq!(stats(&s)["spans"], 6100);
}
