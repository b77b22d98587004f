//! End-to-end tests of the delayed-reward callbacks and the reward policy (DESIGN section 5):
//! single tasks followed from their agent calls to the exported JSONL, every effective reward
//! compared with a value computed by hand from the policy: after HITL only, after tests only,
//! after defects on the Code phase, after the fallback, and under a changed policy file (same
//! ledger, new values). Also sequence completion, per-source aggregation and `rltrace reward`.

mod api_support;
mod common;

use std::path::Path;
use std::time::Duration;

use api_support::{BASE_NS, SEC, assert_close, assert_error, get_ok, pct, send, span, span_id, stats, trace_id};
use serde_json::{Value, json};

const ROLES: [&str; 7] = ["Planning", "Design", "Design Review", "Code", "Code Review", "Test", "Postmortem"];

/// The immediate reward of agent call `i` of every task in these tests.
fn local(i: usize) -> f64 {
    (i as f64 + 1.0) / 10.0
}

/// A seven-agent task: one triplet per agent, sequence id = task id (pipeline scope), state with the
/// task id and the agent role, an immediate reward `local(i)`; starting `start_ns`.
fn task(id: &str, start_ns: u64) -> Vec<api_support::SpanB> {
    let trace = trace_id();
    ROLES
        .iter()
        .enumerate()
        .map(|(i, role)| {
            span(&trace, &span_id(), &format!("agent.{role}.execute"), start_ns + i as u64 * SEC)
                .attr("rl.sequence_id", json!(id))
                .attr("rl.sequence_scope", json!("pipeline"))
                .attr("rl.sequence_index", json!(i as i64))
                .attr("rl.state", json!(json!({"task_id": id, "agent_role": role, "iteration": 1}).to_string()))
                .attr("rl.action", json!(json!({"success": true}).to_string()))
                .attr("rl.reward", json!(local(i)))
        })
        .collect()
}

fn write_policy(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write policy");
    p.to_string_lossy().into_owned()
}

fn post(s: &common::Server, path: &str, body: &Value) -> (u16, Value) {
    common::post_json(&s.url(path), body)
}

fn created(s: &common::Server, path: &str, body: &Value) -> Value {
    let (status, v) = post(s, path, body);
    assert_eq!(status, 201, "{path} {body} answered {status}: {v}");
    v
}

fn sequence(s: &common::Server, id: &str) -> Value {
    get_ok(&s.url(&format!("/api/v1/sequences/{}", pct(id))))
}

/// Effective rewards of a sequence's triplets, in order.
fn rewards(s: &common::Server, id: &str) -> Vec<Value> {
    sequence(s, id)["triplets"].as_array().expect("triplets").iter().map(|t| t["reward"].clone()).collect()
}

#[track_caller]
fn assert_rewards(s: &common::Server, id: &str, want: &[f64], what: &str) {
    let got = rewards(s, id);
    assert_eq!(got.len(), want.len(), "{what}: triplet count of {id}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_close(g, *w, &format!("{what}: {id} triplet {i} ({})", ROLES[i]));
    }
}

/// The export as parsed lines (the manifest last when asked).
fn export(s: &common::Server, query: &str) -> Vec<Value> {
    let (status, _, text) = api_support::get_text(&s.url(&format!("/api/v1/export?format=jsonl{query}")));
    assert_eq!(status, 200, "export answered {status}: {text}");
    text.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect()
}

fn by_sequence(lines: &[Value], id: &str) -> Vec<Value> {
    let mut v: Vec<Value> = lines.iter().filter(|l| l["sequence_id"] == id).cloned().collect();
    v.sort_by_key(|l| l["sequence_index"].as_i64());
    v
}

#[test]
fn callbacks_validate_their_input_and_change_nothing_when_refused() {
    let s = common::Server::start(&[]);
    send(&s, &task("T-valid", BASE_NS));
    let before = stats(&s)["reward_events"].clone();
    let hitl = |body: Value| post(&s, "/api/v1/callbacks/hitl", &body);
    let ok_hitl = json!({"sequence_id": "T-valid", "decision": "approved", "reviewer": "ann", "justification": "meets the spec"});
    for (field, bad) in [
        ("justification", json!("")),
        ("justification", json!("   ")),
        ("justification", Value::Null),
        ("decision", json!("maybe")),
        ("decision", json!(1)),
        ("reviewer", json!("")),
        ("sequence_id", json!(7)),
    ] {
        let mut body = ok_hitl.clone();
        body[field] = bad.clone();
        let (status, v) = hitl(body);
        assert_eq!(status, 422, "hitl with {field} = {bad}: {v}");
        assert_error(&v, "validation_failed", field);
    }
    let mut extra = ok_hitl.clone();
    extra["score"] = json!(1);
    assert_eq!(hitl(extra).0, 422, "unknown field");
    let mut unknown = ok_hitl.clone();
    unknown["sequence_id"] = json!("T-nowhere");
    let (status, v) = hitl(unknown);
    assert_eq!(status, 404, "{v}");
    assert_error(&v, "not_found", "unknown sequence");

    let tests = |body: Value| post(&s, "/api/v1/callbacks/tests", &body);
    for bad in [
        json!({"sequence_id": "T-valid", "passed": 0, "failed": 0}),
        json!({"sequence_id": "T-valid", "passed": -1, "failed": 2}),
        json!({"sequence_id": "T-valid", "passed": 1.5, "failed": 2}),
        json!({"sequence_id": "T-valid", "passed": "3", "failed": 2}),
        json!({"sequence_id": "T-valid", "failed": 2}),
        json!({"sequence_id": "T-valid", "passed": 1, "failed": 2, "skipped": -3}),
    ] {
        let (status, v) = tests(bad.clone());
        assert_eq!(status, 422, "tests {bad}: {v}");
        assert_error(&v, "validation_failed", "tests");
    }

    let defects = |body: Value| post(&s, "/api/v1/callbacks/defects", &body);
    let ok_defect = json!({"task_id": "T-valid", "defect_type": "80_Function", "severity": "High",
        "phase_injected": "Code", "phase_removed": "Test", "description": "wrong rounding"});
    for (field, bad) in [
        ("defect_type", json!("85_Whatever")),
        ("severity", json!("Huge")),
        ("severity", json!("high")),
        ("phase_removed", json!("Code")),
        ("description", json!("")),
        ("phase_injected", Value::Null),
    ] {
        let mut body = ok_defect.clone();
        body[field] = bad.clone();
        let (status, v) = defects(body);
        assert_eq!(status, 422, "defect with {field} = {bad}: {v}");
        assert_error(&v, "validation_failed", field);
    }
    let mut both = ok_defect.clone();
    both["sequence_id"] = json!("T-valid");
    assert_eq!(defects(both).0, 422, "task_id and sequence_id together");
    let mut neither = ok_defect.clone();
    neither.as_object_mut().expect("object").remove("task_id");
    assert_eq!(defects(neither).0, 422, "no target");
    let mut unknown = ok_defect.clone();
    unknown["task_id"] = json!("T-unknown");
    assert_eq!(defects(unknown).0, 404, "unknown task");
    let (status, v) = common::post_raw(&s.url("/api/v1/callbacks/tests"), "application/json", &[], b"{nope".to_vec()).0.to_string().parse::<u16>().map(|c| (c, Value::Null)).expect("status");
    assert_eq!(status, 400, "{v}");
    assert_eq!(stats(&s)["reward_events"], before, "refused callbacks append nothing");

    // The same callbacks, valid, are appended and keep their inputs in metadata.
    let ev = created(&s, "/api/v1/callbacks/hitl", &ok_hitl);
    assert_eq!(ev["source"], "hitl");
    assert_eq!(ev["target"], json!({"sequence_id": "T-valid", "strategy": "uniform"}));
    assert_eq!(ev["metadata"]["reviewer"], "ann");
    assert_eq!(ev["metadata"]["justification"], "meets the spec");
    assert_eq!(ev["metadata"]["decision"], "approved");
    let ev = created(&s, "/api/v1/callbacks/tests", &json!({"sequence_id": "T-valid", "passed": 0, "failed": 4, "skipped": 1}));
    assert_close(&ev["value"], 0.0, "no test passed");
    assert_eq!(ev["metadata"]["skipped"], 1);
    let ev = created(&s, "/api/v1/callbacks/defects", &ok_defect);
    assert_eq!(ev["target"], json!({"task_id": "T-valid", "phase": "Code"}));
    assert_close(&ev["value"], 0.5, "High defect under the default policy");
    assert_eq!(ev["metadata"]["defect_type"], "80_Function");
    // Idempotent replays.
    let mut keyed = ok_hitl.clone();
    keyed["idempotency_key"] = json!("review-1");
    let first = created(&s, "/api/v1/callbacks/hitl", &keyed);
    let (status, again) = post(&s, "/api/v1/callbacks/hitl", &keyed);
    assert_eq!((status, again["reward_id"].clone()), (200, first["reward_id"].clone()));
    keyed["decision"] = json!("rejected");
    assert_eq!(post(&s, "/api/v1/callbacks/hitl", &keyed).0, 409);
    // A deferred decision is recorded with no value and changes nothing.
    let before = rewards(&s, "T-valid");
    let ev = created(&s, "/api/v1/callbacks/hitl", &json!({"sequence_id": "T-valid", "decision": "deferred", "reviewer": "bob", "justification": "needs the product owner"}));
    assert!(ev["value"].is_null(), "{ev}");
    assert_eq!(rewards(&s, "T-valid"), before, "a deferred decision changes no effective reward");
}

#[test]
fn tasks_followed_to_the_export_match_the_policy_by_hand() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("rltrace.db");
    let p1 = write_policy(dir.path(), "p1.toml", "[sources.hitl]\nweight = 2.0\n");
    let mut s = common::Server::start_at(&db, &["--policy", &p1]);
    for (i, id) in ["T-hitl", "T-tests", "T-defect", "T-none"].iter().enumerate() {
        send(&s, &task(id, BASE_NS + i as u64 * 100 * SEC));
    }
    // Before any delayed reward: the immediate rewards only.
    let locals: Vec<f64> = (0..7).map(local).collect();
    assert_rewards(&s, "T-hitl", &locals, "immediate rewards only");

    created(&s, "/api/v1/callbacks/hitl", &json!({"sequence_id": "T-hitl", "decision": "approved_with_changes", "reviewer": "ann", "justification": "rename the helper"}));
    created(&s, "/api/v1/callbacks/tests", &json!({"sequence_id": "T-tests", "passed": 3, "failed": 1}));
    created(&s, "/api/v1/callbacks/hitl", &json!({"sequence_id": "T-defect", "decision": "approved", "reviewer": "ann", "justification": "good"}));
    created(&s, "/api/v1/callbacks/defects", &json!({"task_id": "T-defect", "defect_type": "70_Data", "severity": "High",
        "phase_injected": "Code", "phase_removed": "Postmortem", "description": "lost the last row"}));
    created(&s, "/api/v1/callbacks/defects", &json!({"task_id": "T-defect", "defect_type": "20_Syntax", "severity": "Low",
        "phase_injected": "Code", "phase_removed": "Code Review", "description": "typo"}));

    // Policy p1: hitl weighs 2, every other source 1; HITL approved_with_changes 0.7; tests 3/4.
    let hitl_only: Vec<f64> = locals.iter().map(|l| (l + 2.0 * 0.7) / 3.0).collect();
    let tests_only: Vec<f64> = locals.iter().map(|l| (l + 0.75) / 2.0).collect();
    let defect_p1: Vec<f64> = locals
        .iter()
        .enumerate()
        .map(|(i, l)| if ROLES[i] == "Code" { (l + 2.0 * 1.0 + 0.5 * 0.9) / 4.0 } else { (l + 2.0) / 3.0 })
        .collect();
    assert_rewards(&s, "T-hitl", &hitl_only, "after HITL only");
    assert_rewards(&s, "T-tests", &tests_only, "after tests only");
    assert_rewards(&s, "T-defect", &defect_p1, "after two defects injected by Code");
    assert_rewards(&s, "T-none", &locals, "no delayed reward");
    assert_eq!(sequence(&s, "T-hitl")["complete"], true, "a HITL reward completes the sequence");
    assert_eq!(sequence(&s, "T-none")["complete"], false);

    // The export carries the same values, and its manifest the policy.
    let lines = export(&s, "&manifest=true");
    let manifest = &lines.last().expect("manifest line")["manifest"];
    assert_eq!(manifest["reward_policy"]["sources"]["hitl"]["weight"], 2.0);
    let hash_p1 = manifest["reward_policy_hash"].as_str().expect("hash").to_string();
    for (id, want) in [("T-hitl", &hitl_only), ("T-tests", &tests_only), ("T-defect", &defect_p1), ("T-none", &locals)] {
        let rows = by_sequence(&lines, id);
        assert_eq!(rows.len(), 7, "{id} exported");
        for (i, row) in rows.iter().enumerate() {
            assert_close(&row["reward"], want[i], &format!("exported {id} #{i}"));
        }
    }
    let code = &by_sequence(&lines, "T-defect")[3];
    assert_eq!(code["state"]["agent_role"], "Code");
    assert_close(&code["reward_sources"]["defect"], 0.45, "two defects multiply");
    assert_close(&code["reward_sources"]["hitl"], 1.0, "hitl");
    assert_close(&code["reward_sources"]["local"], local(3), "local");
    assert_eq!(code["reward_source"], "defect", "the newest event reaching it");
    assert!(by_sequence(&lines, "T-defect")[2]["reward_sources"].get("defect").is_none(), "Design Review is not the injecting phase");
    // complete=true filters the export.
    let complete = export(&s, "&complete=true");
    assert!(complete.iter().all(|l| l["sequence_id"] != "T-none"));
    assert_eq!(complete.len(), 21);

    // GET /api/v1/triplets/{id} explains it: each source, every event considered, the one used.
    let detail = get_ok(&s.url(&format!("/api/v1/triplets/{}", code["triplet_id"].as_str().expect("id"))));
    let explain = detail["explain"].as_array().expect("explain");
    let sources: Vec<&str> = explain.iter().map(|x| x["source"].as_str().expect("source")).collect();
    assert_eq!(sources, ["defect", "hitl", "local"], "{explain:?}");
    let defect = &explain[0];
    assert_eq!(defect["aggregation"], "product");
    assert_eq!(defect["events"].as_array().expect("events").len(), 2, "both defects injected by Code");
    assert!(defect["events"].as_array().expect("events").iter().all(|e| e["used"] == true && e["reward_id"].is_string()), "{defect}");
    assert_close(&defect["value"], 0.45, "explained product");
    assert_eq!(explain[1]["aggregation"], "latest");
    assert_eq!(explain[1]["weight"], 2.0, "p1 weighs hitl 2");
    assert_eq!(explain[1]["events"][0]["used"], true);
    assert!(explain[2]["events"][0]["reward_id"].is_null(), "the immediate reward has no ledger id: {}", explain[2]);
    assert_close(&explain[2]["value"], local(3), "explained local");
    let ledger_ids: Vec<&str> = detail["ledger"].as_array().expect("ledger").iter().map(|e| e["reward_id"].as_str().expect("id")).collect();
    for x in explain {
        for e in x["events"].as_array().expect("events") {
            if let Some(id) = e["reward_id"].as_str() {
                assert!(ledger_ids.contains(&id), "an explained event {id} is in the triplet's ledger");
            }
        }
    }

    // `rltrace reward explain` shows the computation source by source.
    s.stop();
    let id = code["triplet_id"].as_str().expect("id");
    let (ok, out, err) = common::run_cli(dir.path(), &["reward", "explain", "--db", db.to_str().expect("utf8"), "--policy", &p1, id]);
    assert!(ok, "explain failed: {err}");
    for needle in ["defect", "product", "hitl", "local", "70_Data", "effective reward = ", "(the span's immediate reward)"] {
        assert!(out.contains(needle), "explain output lacks {needle:?}:\n{out}");
    }
    assert!(out.contains(&format!("{:.6}", defect_p1[3])), "explain shows the effective reward:\n{out}");

    // The same ledger under a changed policy: new values, nothing recomputed in the store.
    let p2 = write_policy(
        dir.path(),
        "p2.toml",
        "[sources.hitl]\nweight = 1.0\naggregation = \"mean\"\n[sources.local]\nweight = 0.5\n[hitl]\napproved_with_changes = 0.9\n[defects]\nHigh = 0.2\nLow = 0.0\n",
    );
    let events_before = {
        let s = common::Server::start_at(&db, &[]);
        stats(&s)["reward_events"].clone()
    };
    let s = common::Server::start_at(&db, &["--policy", &p2]);
    assert_eq!(stats(&s)["reward_events"], events_before, "a new policy appends nothing");
    let hitl_p2: Vec<f64> = locals.iter().map(|l| (0.5 * l + 0.9) / 1.5).collect();
    let tests_p2: Vec<f64> = locals.iter().map(|l| (0.5 * l + 0.75) / 1.5).collect();
    let defect_p2: Vec<f64> = locals
        .iter()
        .enumerate()
        .map(|(i, l)| if ROLES[i] == "Code" { (0.5 * l + 1.0 + 0.8 * 1.0) / 2.5 } else { (0.5 * l + 1.0) / 1.5 })
        .collect();
    assert_rewards(&s, "T-hitl", &hitl_p2, "p2 after HITL");
    assert_rewards(&s, "T-tests", &tests_p2, "p2 after tests");
    assert_rewards(&s, "T-defect", &defect_p2, "p2 after defects");
    let lines = export(&s, "&manifest=true");
    let manifest = &lines.last().expect("manifest")["manifest"];
    assert_ne!(manifest["reward_policy_hash"].as_str(), Some(hash_p1.as_str()), "the manifest records the new policy");
    assert_eq!(manifest["reward_policy"]["hitl"]["approved_with_changes"], 0.9);
    for (id, want) in [("T-hitl", &hitl_p2), ("T-defect", &defect_p2)] {
        for (i, row) in by_sequence(&lines, id).iter().enumerate() {
            assert_close(&row["reward"], want[i], &format!("p2 exported {id} #{i}"));
        }
    }
}

#[test]
fn fallback_reward_from_the_server_and_from_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("rltrace.db");
    let fb = write_policy(dir.path(), "fallback.toml", "default_reward = 0.3\nreward_wait = \"1s\"\n");
    let locals: Vec<f64> = (0..7).map(local).collect();
    {
        let s = common::Server::start_at(&db, &["--policy", &fb]);
        send(&s, &task("T-fallback", BASE_NS));
        let want: Vec<f64> = locals.iter().map(|l| (l + 0.3) / 2.0).collect();
        assert!(
            common::wait_until(15, || rewards(&s, "T-fallback").first().and_then(Value::as_f64).is_some_and(|r| (r - want[0]).abs() < 1e-9)),
            "the server applies the fallback after reward_wait: {:?}",
            rewards(&s, "T-fallback")
        );
        assert_rewards(&s, "T-fallback", &want, "after the fallback");
        let seq = sequence(&s, "T-fallback");
        assert_eq!(seq["complete"], false, "a fallback is not a terminal-type reward");
        assert_eq!(seq["ledger"].as_array().map(|l| l.iter().filter(|e| e["source"] == "fallback").count()), Some(1), "one fallback event");
        // A terminal-type reward arriving later replaces the fallback.
        created(&s, "/api/v1/callbacks/hitl", &json!({"sequence_id": "T-fallback", "decision": "approved", "reviewer": "ann", "justification": "late but good"}));
        let after: Vec<f64> = locals.iter().map(|l| (l + 1.0) / 2.0).collect();
        assert_rewards(&s, "T-fallback", &after, "HITL after the fallback");
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(sequence(&s, "T-fallback")["ledger"].as_array().map(|l| l.iter().filter(|e| e["source"] == "fallback").count()), Some(1), "settled once");
    }
    // Without a fallback in the server's policy, `rltrace reward settle` applies it.
    let mut s = common::Server::start_at(&db, &[]);
    send(&s, &task("T-cli", BASE_NS + 1000 * SEC));
    assert_rewards(&s, "T-cli", &locals, "no fallback without the policy");
    s.stop();
    let dbs = db.to_str().expect("utf8");
    let (ok, _, err) = common::run_cli(dir.path(), &["reward", "settle", "--db", dbs]);
    assert!(!ok && err.contains("default_reward"), "settle without a fallback policy is an error: {err}");
    let (ok, _, err) = common::run_cli(dir.path(), &["reward", "settle", "--db", dbs, "--policy", &fb]);
    assert!(ok, "settle failed: {err}");
    assert!(err.contains("applied to 1 sequences"), "{err}");
    let (ok, _, err) = common::run_cli(dir.path(), &["reward", "settle", "--db", dbs, "--policy", &fb]);
    assert!(ok && err.contains("applied to 0 sequences"), "a second settle does nothing: {err}");
    let s = common::Server::start_at(&db, &[]);
    let want: Vec<f64> = locals.iter().map(|l| (l + 0.3) / 2.0).collect();
    assert_rewards(&s, "T-cli", &want, "after rltrace reward settle");
}

#[test]
fn sequences_complete_by_end_marker_terminal_reward_or_idle_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let idle = write_policy(dir.path(), "idle.toml", "sequence_idle = \"2s\"\n");
    let s = common::Server::start(&["--policy", &idle]);
    let now_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64;
    send(&s, &task("T-old", BASE_NS));
    send(&s, &task("T-fresh", now_ns));
    let mut ended = task("T-ended", now_ns);
    let last = ended.pop().expect("last").attr("rl.sequence_end", json!(true));
    ended.push(last);
    send(&s, &ended);
    send(&s, &task("T-judged", now_ns));
    created(&s, "/api/v1/rewards", &json!({"target": {"sequence_id": "T-judged", "strategy": "last"}, "value": 0.8, "source": "judge"}));
    assert_eq!(sequence(&s, "T-old")["complete"], true, "idle longer than sequence_idle");
    assert_eq!(sequence(&s, "T-ended")["complete"], true, "rl.sequence_end");
    assert_eq!(sequence(&s, "T-judged")["complete"], true, "terminal-type reward");
    assert_eq!(sequence(&s, "T-fresh")["complete"], false, "still active");
    let listed = get_ok(&s.url("/api/v1/sequences?complete=false"));
    let ids: Vec<&str> = listed["items"].as_array().expect("items").iter().filter_map(|i| i["sequence_id"].as_str()).collect();
    assert_eq!(ids, vec!["T-fresh"]);
    // The last agent call started 6 s after now_ns; idle 2 s after that it completes.
    assert!(common::wait_until(20, || sequence(&s, "T-fresh")["complete"] == true), "idle time completes the sequence");
}

#[test]
fn aggregation_per_source_follows_the_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write_policy(dir.path(), "agg.toml", "[sources.hitl]\naggregation = \"mean\"\n[sources.tests]\naggregation = \"min\"\n[sources.local]\nweight = 0\n");
    let s = common::Server::start(&["--policy", &p]);
    send(&s, &task("T-agg", BASE_NS));
    for (d, j) in [("approved", "fine"), ("rejected", "broken build")] {
        created(&s, "/api/v1/callbacks/hitl", &json!({"sequence_id": "T-agg", "decision": d, "reviewer": "ann", "justification": j}));
    }
    for (p, f) in [(4, 0), (1, 3)] {
        created(&s, "/api/v1/callbacks/tests", &json!({"sequence_id": "T-agg", "passed": p, "failed": f}));
    }
    // local weighs 0; hitl = mean(1.0, 0.0) = 0.5; tests = min(1.0, 0.25) = 0.25.
    assert_rewards(&s, "T-agg", &[0.375; 7], "mean of hitl, min of tests, local left out");
    let t = &sequence(&s, "T-agg")["triplets"][0];
    assert_close(&t["reward_sources"]["hitl"], 0.5, "hitl mean");
    assert_close(&t["reward_sources"]["tests"], 0.25, "tests min");
}

#[test]
fn reward_commands_append_through_the_api() {
    let s = common::Server::start(&[]);
    send(&s, &task("T-cli-cmd", BASE_NS));
    let dir = tempfile::tempdir().expect("tempdir");
    let url = s.http.clone();
    let run = |args: &[&str]| {
        let mut all = vec!["reward"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--url", &url]);
        common::run_cli(dir.path(), &all)
    };
    let (ok, out, err) = run(&["hitl", "--sequence", "T-cli-cmd", "--decision", "approved", "--reviewer", "ann", "--justification", "ship it"]);
    assert!(ok, "{err}");
    let ev: Value = serde_json::from_str(&out).expect("the event as JSON");
    assert_eq!(ev["source"], "hitl");
    let (ok, _, err) = run(&["tests", "--sequence", "T-cli-cmd", "--passed", "9", "--failed", "1", "--skipped", "2"]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["defect", "--task", "T-cli-cmd", "--type", "50_Interface", "--severity", "Medium", "--injected", "Design", "--removed", "Test", "--description", "wrong signature"]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["add", "--sequence", "T-cli-cmd", "--strategy", "last", "--value", "1", "--source", "terminal", "--idempotency-key", "k1"]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["add", "--sequence", "T-cli-cmd", "--strategy", "last", "--value", "1", "--source", "terminal", "--idempotency-key", "k1"]);
    assert!(ok, "a replay is fine: {err}");
    let (ok, _, err) = run(&["hitl", "--sequence", "T-cli-cmd", "--decision", "approved", "--reviewer", "ann", "--justification", ""]);
    assert!(!ok && err.contains("422") && err.contains("justification"), "{err}");
    let (ok, _, err) = run(&["add", "--triplet", "nope", "--value", "0.5", "--source", "judge"]);
    assert!(!ok && err.contains("404"), "{err}");
    let seq = sequence(&s, "T-cli-cmd");
    let sources: Vec<&str> = seq["ledger"].as_array().expect("ledger").iter().filter_map(|e| e["source"].as_str()).collect();
    assert_eq!(sources, vec!["hitl", "tests", "defect", "terminal"], "every event reaching the sequence, the defect by its task");
    // Design triplet: local 0.2, hitl 1.0, tests 0.9, defect 0.75 (Medium); last: terminal 1.0 too.
    let t = &seq["triplets"];
    assert_close(&t[1]["reward"], (0.2 + 1.0 + 0.9 + 0.75) / 4.0, "Design triplet");
    assert_close(&t[6]["reward"], (0.7 + 1.0 + 0.9 + 1.0) / 4.0, "last triplet");
}

#[test]
fn agent_lightning_reward_spans_reward_the_latest_earlier_llm_call() {
    let s = common::Server::start(&[]);
    let trace = trace_id();
    let llm = |start: u64, end: u64| {
        span(&trace, &span_id(), "chat sim-large", BASE_NS + start * SEC)
            .end(BASE_NS + end * SEC)
            .attr("gen_ai.operation.name", json!("chat"))
            .attr("gen_ai.request.model", json!("sim-large"))
            .attr("gen_ai.conversation.id", json!("conv-al"))
    };
    let first = llm(0, 2);
    let second = llm(3, 5);
    let annotation = |start: u64, value: f64| {
        span(&trace, &span_id(), "agentlightning.annotation", BASE_NS + start * SEC)
            .attr("agentlightning.reward.0.value", json!(value))
            .attr("agentlightning.reward.0.name", json!("task_success"))
    };
    // Same request: a reward span after both calls rewards the second one.
    send(&s, &[first.clone(), second.clone(), annotation(6, 0.9)]);
    // A later request: a reward span between the calls rewards the first one.
    send(&s, &[annotation(2, 0.4)]);
    let seq = sequence(&s, "conv-al");
    let t = seq["triplets"].as_array().expect("triplets");
    assert_eq!(t.len(), 2, "the two LLM calls are triplets; the reward spans are not: {seq}");
    assert_eq!(t[0]["triplet_id"], first.default_triplet_id());
    assert_close(&t[0]["reward_sources"]["agentlightning"], 0.4, "the call that ended before the second reward span");
    assert_close(&t[1]["reward_sources"]["agentlightning"], 0.9, "the latest call before the first reward span");
    assert!(seq["ledger"].as_array().is_some_and(|l| l.iter().all(|e| e["source"] == "agentlightning" && e["reason"] == "task_success")));
    // A reward span with no earlier LLM call in its trace is stored as a span and rewards nothing.
    let lonely = span(&trace_id(), &span_id(), "agentlightning.annotation", BASE_NS).attr("agentlightning.reward.0.value", json!(1.0));
    let before = stats(&s);
    send(&s, std::slice::from_ref(&lonely));
    let after = stats(&s);
    assert_eq!(after["spans"].as_u64(), before["spans"].as_u64().map(|n| n + 1));
    assert_eq!(after["reward_events"], before["reward_events"]);
    assert_eq!(get_ok(&s.url(&format!("/api/v1/traces/{}", lonely.trace_id())))["spans"].as_array().map(Vec::len), Some(1));
}

#[test]
fn rewards_do_not_use_up_the_ingest_queue() {
    // A tiny byte bound: rewards must not count against it, or ingest would refuse after a few.
    let s = common::Server::start(&["--queue-bytes", "4096"]);
    send(&s, &task("T-queue", BASE_NS));
    for i in 0..40 {
        created(&s, "/api/v1/rewards", &json!({"target": {"sequence_id": "T-queue"}, "value": 0.5, "source": "judge", "reason": format!("r{i}")}));
    }
    send(&s, &task("T-queue-2", BASE_NS + 100 * SEC));
    assert_eq!(sequence(&s, "T-queue-2")["triplet_count"], 7, "ingest still works after many rewards");
}

#[test]
fn reward_targets_are_matched_as_triplets_and_tasks_report_them() {
    let s = common::Server::start(&[]);
    // A default triplet id given in upper case reaches the triplet (ids are reported lowercase).
    let t = api_support::triplet("T-case", 0, "Code", 1);
    send(&s, std::slice::from_ref(&t));
    let upper = t.default_triplet_id().to_ascii_uppercase();
    created(&s, "/api/v1/rewards", &json!({"target": {"triplet_id": upper}, "value": 0.9, "source": "judge"}));
    let got = get_ok(&s.url(&format!("/api/v1/triplets/{}", t.default_triplet_id())));
    assert_close(&got["reward"], 0.9, "reward by an upper-case default id");
    assert_eq!(got["ledger"][0]["target"]["triplet_id"], t.default_triplet_id(), "kept in the reported form");
    // The same for a pending reward sent before its triplet.
    let later = api_support::triplet("T-case", 1, "Test", 2);
    created(&s, "/api/v1/rewards", &json!({"target": {"triplet_id": later.default_triplet_id().to_ascii_uppercase()}, "value": 0.3, "source": "judge", "pending": true}));
    send(&s, std::slice::from_ref(&later));
    assert_close(&get_ok(&s.url(&format!("/api/v1/triplets/{}", later.default_triplet_id())))["reward"], 0.3, "pending upper-case id joined");

    // A task id holding a colon: its defects reach the sequences named `{task}:...`.
    let spans: Vec<api_support::SpanB> = ["Design", "Code"]
        .iter()
        .enumerate()
        .map(|(i, role)| api_support::triplet("proj:42:Code", i as i64, role, 10 + i as u64))
        .collect();
    send(&s, &spans);
    created(&s, "/api/v1/callbacks/defects", &json!({"task_id": "proj:42", "defect_type": "80_Function", "severity": "High",
        "phase_injected": "Code", "phase_removed": "Test", "description": "wrong total"}));
    let seq = sequence(&s, "proj:42:Code");
    assert!(seq["triplets"][0]["reward_sources"].get("defect").is_none(), "Design is not the injecting phase");
    assert_close(&seq["triplets"][1]["reward_sources"]["defect"], 0.5, "Code triplet of task proj:42");
    // A task known only by its triplets' state.task_id is found without scanning spans.
    let keyed = api_support::triplet("some-sequence", 0, "Code", 20).attr("rl.state.task_id", json!("TK-1"));
    send(&s, &[keyed]);
    created(&s, "/api/v1/callbacks/defects", &json!({"task_id": "TK-1", "defect_type": "20_Syntax", "severity": "Low",
        "phase_injected": "Code", "phase_removed": "Code Review", "description": "typo"}));
    assert_close(&sequence(&s, "some-sequence")["triplets"][0]["reward_sources"]["defect"], 0.9, "defect by state.task_id");
}

#[test]
fn a_span_refused_for_a_taken_triplet_id_leaves_no_sequence_behind() {
    let s = common::Server::start(&[]);
    let first = api_support::triplet("S-owner", 0, "Code", 1).attr("rl.triplet_id", json!("dup-id"));
    send(&s, &[first]);
    let before = stats(&s);
    let clash = api_support::triplet("S-phantom", 0, "Code", 2).attr("rl.triplet_id", json!("dup-id"));
    let body = serde_json::to_vec(&api_support::request(&[clash])).expect("json");
    let (status, _, resp) = common::post_raw(&s.url("/v1/traces"), "application/json", &[], body);
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&resp).expect("json");
    assert_eq!(v["partialSuccess"]["rejectedSpans"].as_i64().or_else(|| v["partialSuccess"]["rejectedSpans"].as_str().and_then(|s| s.parse().ok())), Some(1), "{v}");
    assert_eq!(stats(&s)["sequences"], before["sequences"], "no phantom sequence counted");
    let (status, _) = post(&s, "/api/v1/callbacks/hitl", &json!({"sequence_id": "S-phantom", "decision": "approved", "reviewer": "a", "justification": "b"}));
    assert_eq!(status, 404, "the refused span's sequence does not exist");
}

#[test]
fn paging_a_live_sequence_repeats_no_triplet() {
    let s = common::Server::start(&[]);
    // No explicit indexes: the order is by start time, so a late parent sorts first.
    let trace = trace_id();
    let child = |i: u64| span(&trace, &span_id(), &format!("step{i}"), BASE_NS + (10 + i) * SEC).attr("rl.sequence_id", json!("S-live")).attr("rl.state.agent_role", json!("Code"));
    send(&s, &[child(0), child(1), child(2), child(3)]);
    let page = |cursor: Option<&str>| {
        let mut url = s.url("/api/v1/triplets?sequence_id=S-live&limit=2");
        if let Some(c) = cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        get_ok(&url)
    };
    let first = page(None);
    let names = |p: &Value| -> Vec<String> { p["items"].as_array().expect("items").iter().map(|t| t["triplet_id"].as_str().unwrap_or_default().to_string()).collect() };
    let seen_first = names(&first);
    // The parent span arrives between the pages and sorts before everything.
    send(&s, &[span(&trace, &span_id(), "parent", BASE_NS).attr("rl.sequence_id", json!("S-live"))]);
    let second = page(first["next_cursor"].as_str());
    let seen_second = names(&second);
    assert_eq!(seen_second.len(), 2);
    assert!(seen_second.iter().all(|id| !seen_first.contains(id)), "no triplet twice: {seen_first:?} then {seen_second:?}");
}
