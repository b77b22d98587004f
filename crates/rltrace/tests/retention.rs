//! Retention end to end: the collector's background passes (`[retention]` of `--config`) delete
//! old plain spans and old sequences and count them in `/metrics`; `rltrace gc --dry-run` counts
//! and deletes nothing; `rltrace gc` deletes beside nothing else running.

mod common;

use common::{Server, bin, get_json, post_raw, wait_until};
use serde_json::{Value, json};

/// An OTLP/JSON request: in trace `trace`, `plain` spans that are not triplets and one triplet of
/// `sequence`, all ending at `end_ns`.
fn request(trace: u8, sequence: &str, plain: usize, end_ns: u64) -> Vec<u8> {
    let mut spans = Vec::new();
    let span = |n: usize, attrs: Value| {
        json!({
            "traceId": format!("{:032x}", u128::from(trace) + 1),
            "spanId": format!("{:016x}", (u64::from(trace) << 16) + n as u64 + 1),
            "name": format!("s{n}"),
            "kind": 1,
            "startTimeUnixNano": (end_ns - 1000).to_string(),
            "endTimeUnixNano": end_ns.to_string(),
            "attributes": attrs,
        })
    };
    for n in 0..plain {
        spans.push(span(n, json!([{"key": "http.method", "value": {"stringValue": "GET"}}])));
    }
    spans.push(span(
        plain,
        json!([
            {"key": "rl.sequence_id", "value": {"stringValue": sequence}},
            {"key": "rl.state", "value": {"stringValue": "{\"agent_role\":\"Code\"}"}},
            {"key": "rl.action", "value": {"stringValue": "{}"}},
        ]),
    ));
    serde_json::to_vec(&json!({"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}]}]})).expect("json")
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64
}

const OLD_NS: u64 = 1_700_000_000_000_000_000;

fn send(s: &Server, body: Vec<u8>) {
    let (status, _, resp) = post_raw(&s.url("/v1/traces"), "application/json", &[], body);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
}

fn deleted(s: &Server, kind: &str) -> f64 {
    let text = common::client().get(s.url("/metrics")).send().expect("metrics").text().expect("text");
    text.lines().find_map(|l| l.strip_prefix(&format!("rltrace_retention_deleted_total{{kind=\"{kind}\"}} "))).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

#[test]
fn the_collector_deletes_what_is_due_in_the_background_and_counts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("rltrace.toml");
    std::fs::write(&cfg, "[retention]\nspans = \"30d\"\nsequences = \"30d\"\nevery = 1\nbatch = 3\n").expect("config");
    let s = Server::start(&["--config", cfg.to_str().expect("utf-8")]);
    send(&s, request(1, "old-seq", 10, OLD_NS));
    send(&s, request(2, "young-seq", 2, now_ns()));
    assert!(wait_until(20, || deleted(&s, "sequences") == 1.0 && deleted(&s, "spans") == 10.0), "spans {} sequences {}", deleted(&s, "spans"), deleted(&s, "sequences"));
    assert_eq!(deleted(&s, "triplets"), 1.0);
    let (status, _) = get_json(&s.url("/api/v1/sequences/old-seq"));
    assert_eq!(status, 404);
    let (_, young) = get_json(&s.url("/api/v1/sequences/young-seq"));
    assert_eq!(young["triplet_count"], 1);
    let (_, stats) = get_json(&s.url("/api/v1/stats"));
    assert_eq!((stats["spans"].clone(), stats["sequences"].clone()), (json!(3), json!(1)), "{stats}");
    let (_, trace) = get_json(&s.url(&format!("/api/v1/traces/{:032x}", 3u128)));
    assert_eq!(trace["spans"].as_array().map(Vec::len), Some(3), "the young trace is whole: {trace}");
}

#[test]
fn gc_counts_first_and_deletes_on_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("rltrace.db");
    {
        let mut s = Server::start_at(&db, &[]);
        send(&s, request(1, "old-seq", 4, OLD_NS));
        send(&s, request(2, "young-seq", 1, now_ns()));
        s.stop();
    }
    let cfg = dir.path().join("rltrace.toml");
    std::fs::write(&cfg, "[retention]\nspans = \"7d\"\nsequences = \"90d\"\n").expect("config");
    // Without the collector's policy, gc cannot know whether sequences wait for a fallback: it
    // keeps every one not settled.
    let out = std::process::Command::new(bin()).arg("gc").arg("--db").arg(&db).arg("--config").arg(&cfg).arg("--dry-run").output().expect("gc");
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 spans that are not triplets, 0 sequences"), "{}", String::from_utf8_lossy(&out.stdout));
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "# no fallback reward\n").expect("policy");
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(bin()).arg("gc").arg("--db").arg(&db).arg("--config").arg(&cfg).arg("--policy").arg(&policy).args(extra).output().expect("gc");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dry = run(&["--dry-run"]);
    assert!(dry.contains("4 spans that are not triplets, 1 sequences (1 triplets, 0 reward events)"), "{dry}");
    assert!(dry.contains("nothing deleted"), "{dry}");
    assert_eq!(run(&["--dry-run"]), dry, "a dry run changes nothing");
    let done = run(&[]);
    assert!(done.contains("deleted 4 spans that are not triplets, 1 sequences"), "{done}");
    assert!(run(&["--dry-run"]).contains("0 spans that are not triplets, 0 sequences"));
    // Without [retention] there is nothing to apply: a clear error.
    std::fs::write(&cfg, "").expect("config");
    let out = std::process::Command::new(bin()).arg("gc").arg("--db").arg(&db).arg("--config").arg(&cfg).output().expect("gc");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no retention is configured"));
}

#[test]
fn gc_beside_a_live_collector_leaves_its_ingest_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("rltrace.db");
    let s = Server::start_at(&db, &[]);
    for t in 0..20u8 {
        send(&s, request(t, &format!("old-{t}"), 50, OLD_NS));
    }
    let cfg = dir.path().join("rltrace.toml");
    std::fs::write(&cfg, "[retention]\nspans = \"7d\"\nsequences = \"7d\"\nbatch = 20\n").expect("config");
    // Spans keep arriving while gc runs in another process on the same file.
    let url = s.url("/v1/traces");
    let sender = std::thread::spawn(move || {
        let mut statuses = Vec::new();
        for t in 100..160u8 {
            let (status, _, _) = post_raw(&url, "application/json", &[], request(t, &format!("new-{t}"), 5, now_ns()));
            statuses.push(status);
        }
        statuses
    });
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "# no fallback reward\n").expect("policy");
    let out = std::process::Command::new(bin()).arg("gc").arg("--db").arg(&db).arg("--config").arg(&cfg).arg("--policy").arg(&policy).output().expect("gc");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("deleted 1000 spans that are not triplets, 20 sequences"), "{stdout}");
    let statuses = sender.join().expect("sender");
    assert!(statuses.iter().all(|s| *s == 200), "ingest kept working beside gc: {statuses:?}");
    let (_, stats) = get_json(&s.url("/api/v1/stats"));
    assert_eq!((stats["sequences"].clone(), stats["spans"].clone()), (json!(60), json!(360)), "{stats}");
    // The collector's cached sequence rows were dropped: an old id starts a new sequence.
    send(&s, request(200, "old-3", 0, now_ns()));
    let (_, seq) = get_json(&s.url("/api/v1/sequences/old-3"));
    assert_eq!(seq["triplet_count"], 1, "{seq}");
}
