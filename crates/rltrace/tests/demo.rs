//! `rltrace demo` end to end: the reference seven-agent pipeline, instrumented with the SDK, runs
//! against an embedded collector (and one at a URL); each task is followed from its first agent call to the exported
//! JSONL, and every effective reward is compared with the value computed by hand from the ledger's
//! callback inputs and the policy, then again under a changed policy file.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

const AGENTS: [&str; 7] = ["Planning", "Design", "Design Review", "Code", "Code Review", "Test", "Postmortem"];

fn run_demo(dir: &Path, db: &Path, tasks: usize, seed: u64) -> String {
    let (ok, out, err) = common::run_cli(
        dir,
        &[
            "demo",
            "--embedded",
            "--exit",
            "--tasks",
            &tasks.to_string(),
            "--seed",
            &seed.to_string(),
            "--db",
            db.to_str().expect("utf8"),
            "--http",
            "127.0.0.1:0",
            "--grpc",
            "127.0.0.1:0",
        ],
    );
    assert!(ok, "demo failed: {out}\n{err}");
    out
}

fn export(dir: &Path, db: &Path, policy: Option<&str>) -> Vec<Value> {
    let out = dir.join("export.jsonl");
    let mut args = vec!["export", "--db", db.to_str().expect("utf8"), "-o", out.to_str().expect("utf8")];
    if let Some(p) = policy {
        args.extend_from_slice(&["--policy", p]);
    }
    let (ok, _, err) = common::run_cli(dir, &args);
    assert!(ok, "export failed: {err}");
    std::fs::read_to_string(&out).expect("export file").lines().map(|l| serde_json::from_str(l).expect("json line")).collect()
}

/// Values of one task's callbacks, read from the ledger's metadata.
#[derive(Debug, Default)]
struct Outcomes {
    decisions: Vec<String>,
    tests: Vec<(f64, f64)>,
    defects: Vec<(String, String)>,
}

fn outcomes(s: &common::Server, task: &str) -> Outcomes {
    let (status, seq) = common::get_json(&s.url(&format!("/api/v1/sequences/{task}")));
    assert_eq!(status, 200, "{seq}");
    let mut o = Outcomes::default();
    for e in seq["ledger"].as_array().expect("ledger") {
        let m = &e["metadata"];
        match m["callback"].as_str() {
            Some("hitl") => o.decisions.push(m["decision"].as_str().expect("decision").to_string()),
            Some("tests") => o.tests.push((m["passed"].as_f64().expect("passed"), m["failed"].as_f64().expect("failed"))),
            Some("defects") => o.defects.push((m["severity"].as_str().expect("sev").to_string(), m["phase_injected"].as_str().expect("phase").to_string())),
            other => panic!("unexpected ledger event {other:?}: {e}"),
        }
    }
    o
}

struct Values {
    hitl: BTreeMap<&'static str, Option<f64>>,
    penalty: BTreeMap<&'static str, f64>,
    hitl_weight: f64,
}

/// The effective reward of a triplet, by hand: the weighted mean of its local reward, the HITL
/// value, the test ratio and the product of `1 - penalty` of the defects of its phase.
fn by_hand(t: &Value, o: &Outcomes, v: &Values) -> f64 {
    let mut terms: Vec<(f64, f64)> = vec![(1.0, t["reward_sources"]["local"].as_f64().expect("every demo triplet has a local reward"))];
    if let Some(d) = o.decisions.last()
        && let Some(Some(x)) = v.hitl.get(d.as_str())
    {
        terms.push((v.hitl_weight, *x));
    }
    if let Some((p, f)) = o.tests.last() {
        terms.push((1.0, p / (p + f)));
    }
    let role = t["state"]["agent_role"].as_str().unwrap_or_default();
    let hits: Vec<f64> = o.defects.iter().filter(|(_, phase)| phase == role).map(|(sev, _)| 1.0 - v.penalty[sev.as_str()]).collect();
    if !hits.is_empty() {
        terms.push((1.0, hits.iter().product()));
    }
    let den: f64 = terms.iter().map(|(w, _)| w).sum();
    terms.iter().map(|(w, x)| w * x).sum::<f64>() / den
}

#[test]
fn demo_tasks_followed_from_first_agent_call_to_the_export() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("demo.db");
    let tasks = 16;
    let out = run_demo(dir.path(), &db, tasks, 7);
    assert!(out.contains(&format!("{tasks} tasks")), "summary line: {out}");
    let lines = export(dir.path(), &db, None);
    let mut by_task: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for l in &lines {
        by_task.entry(l["sequence_id"].as_str().expect("sequence").to_string()).or_default().push(l.clone());
    }
    assert_eq!(by_task.len(), tasks, "one sequence per task");

    let s = common::Server::start_at(&db, &[]);
    let default_values = Values {
        hitl: [("approved", Some(1.0)), ("approved_with_changes", Some(0.7)), ("rejected", Some(0.0)), ("deferred", None)].into(),
        penalty: [("Low", 0.1), ("Medium", 0.25), ("High", 0.5), ("Critical", 1.0)].into(),
        hitl_weight: 1.0,
    };
    let mut seen_defect_on_code = false;
    let mut seen_send_back = false;
    let mut seen_error = false;
    for (task, rows) in &mut by_task {
        rows.sort_by_key(|r| r["sequence_index"].as_i64());
        // The sequence is the task: indexes 0..n in order, one trace, the orchestrator first.
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r["sequence_index"].as_i64(), Some(i as i64), "{task}: contiguous indexes");
            assert_eq!(r["trace_id"], rows[0]["trace_id"], "{task}: one trace per task");
            assert_eq!(r["state"]["task_id"], task.as_str());
        }
        assert_eq!(rows[0]["state"]["agent_role"], "Orchestrator");
        assert_eq!(rows[0]["state"]["call_depth"], 0);
        let roles: Vec<&str> = rows.iter().filter_map(|r| r["state"]["agent_role"].as_str()).collect();
        for a in AGENTS {
            assert!(roles.contains(&a), "{task}: agent {a} ran");
        }
        assert!(roles.contains(&"DataLayer"), "{task}: data-layer calls are triplets");
        for r in rows.iter().filter(|r| AGENTS.contains(&r["state"]["agent_role"].as_str().unwrap_or_default())) {
            assert_eq!(r["state"]["call_depth"], 1, "{task}: agents run inside the orchestrator");
            assert!(r["state"]["llm"]["prompt"].as_str().is_some_and(|p| p.contains(task.as_str())), "{task}: prompt in state");
            assert!(r["state"]["system"]["budget_remaining_cents"].is_number(), "{task}: system context");
            assert!(r["state"]["pipeline"]["iteration"].is_number(), "{task}: pipeline context");
            if r["action"]["success"] == true {
                assert!(r["action"]["llm"]["tokens_in"].as_u64().is_some_and(|n| n > 0), "{task}: token counts");
            } else {
                seen_error = true;
                assert!(r["action"]["error_message"].as_str().is_some_and(|m| m.contains("timed out")), "{r}");
            }
            if r["state"]["pipeline"]["iteration"].as_u64().is_some_and(|i| i > 0) {
                seen_send_back = true;
            }
        }
        let o = outcomes(&s, task);
        assert_eq!((o.decisions.len(), o.tests.len()), (1, 1), "{task}: one review and one test run");
        seen_defect_on_code |= o.defects.iter().any(|(_, p)| p == "Code");
        for r in rows.iter() {
            let want = by_hand(r, &o, &default_values);
            let got = r["reward"].as_f64().expect("every demo triplet is rewarded");
            assert!((got - want).abs() < 1e-9, "{task} #{}: {got} != {want} by hand ({:?})", r["sequence_index"], r["reward_sources"]);
        }
    }
    assert!(seen_defect_on_code, "seed 7 reports a defect injected by Code");
    assert!(seen_send_back, "reviews sent work back at least once");
    let _ = seen_error;

    // The same ledger under a changed policy file: new values everywhere.
    let policy = dir.path().join("changed.toml");
    std::fs::write(&policy, "[sources.hitl]\nweight = 3.0\n[hitl]\napproved = 0.9\napproved_with_changes = 0.5\nrejected = 0.1\n[defects]\nLow = 0.3\nMedium = 0.4\nHigh = 0.6\nCritical = 0.9\n").expect("policy");
    let changed = Values {
        hitl: [("approved", Some(0.9)), ("approved_with_changes", Some(0.5)), ("rejected", Some(0.1)), ("deferred", None)].into(),
        penalty: [("Low", 0.3), ("Medium", 0.4), ("High", 0.6), ("Critical", 0.9)].into(),
        hitl_weight: 3.0,
    };
    let relines = export(dir.path(), &db, Some(policy.to_str().expect("utf8")));
    assert_eq!(relines.len(), lines.len());
    let mut differs = 0;
    for r in &relines {
        let task = r["sequence_id"].as_str().expect("sequence");
        let o = outcomes(&s, task);
        let want = by_hand(r, &o, &changed);
        let got = r["reward"].as_f64().expect("reward");
        assert!((got - want).abs() < 1e-9, "changed policy {task} #{}: {got} != {want}", r["sequence_index"]);
        let before = lines.iter().find(|l| l["triplet_id"] == r["triplet_id"]).expect("same triplet");
        differs += usize::from((before["reward"].as_f64().unwrap_or(0.0) - got).abs() > 1e-12);
    }
    assert!(differs > 0, "the changed policy changes effective rewards");
}

#[test]
fn demo_is_deterministic_for_a_seed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shape = |db: &Path| -> Vec<(String, i64, String)> {
        let mut v: Vec<(String, i64, String)> = export(dir.path(), db, None)
            .iter()
            .map(|l| (l["sequence_id"].as_str().unwrap_or_default().to_string(), l["sequence_index"].as_i64().unwrap_or(-1), l["state"]["agent_role"].as_str().unwrap_or_default().to_string()))
            .collect();
        v.sort();
        v
    };
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    run_demo(dir.path(), &a, 5, 11);
    // The same seed against a collector at a URL (the default mode).
    let mut server = common::Server::start_at(&b, &[]);
    let (ok, out, err) = common::run_cli(dir.path(), &["demo", "--tasks", "5", "--seed", "11", "--target", &server.http]);
    assert!(ok && out.contains("5 tasks"), "demo --target failed: {out}\n{err}");
    server.stop();
    assert_eq!(shape(&a), shape(&b), "same seed, same pipeline");
}
