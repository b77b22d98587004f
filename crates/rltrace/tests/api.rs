//! End-to-end tests of the REST API (DESIGN sections 4, 5 and 7) against the real `rltrace serve`
//! on loopback: the reward ledger (validation, strategies, idempotency, pending rewards, the
//! policy), the read API (filters, cursors, percent-encoded ids, traces in tree order, stats,
//! metrics, the OpenAPI document) and the JSONL export. Spans arrive as OTLP/JSON on
//! `POST /v1/traces`, as any OTLP/HTTP JSON client sends them.

mod common;
mod api_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use api_support::{
    BASE_NS, SEC, assert_close, assert_error, get_ok, get_text, is_rfc3339_micros_z, pct, reward, reward_created, rfc3339, send, span,
    span_id, stats, trace_id, triplet,
};
use serde_json::{Value, json};

/// GET a triplet by id.
fn triplet_of(s: &common::Server, id: &str) -> Value {
    get_ok(&s.url(&format!("/api/v1/triplets/{}", pct(id))))
}

/// GET a sequence by id.
fn sequence_of(s: &common::Server, id: &str) -> Value {
    get_ok(&s.url(&format!("/api/v1/sequences/{}", pct(id))))
}

// ---------------------------------------------------------------------------------------------
// 1. Validation of POST /api/v1/rewards
// ---------------------------------------------------------------------------------------------

#[test]
fn reward_validation_rejects_bad_input_and_changes_nothing() {
    let s = common::Server::start(&[]);
    send(&s, &[triplet("val-seq", 0, "Code", 0).attr("rl.triplet_id", json!("val-t"))]);
    let before = stats(&s);
    assert_eq!(before["reward_events"], 0, "{before}");

    let t = json!({"triplet_id": "val-t"});
    let q = json!({"sequence_id": "val-seq"});
    let cases: Vec<(&str, Value)> = vec![
        ("value as a string", json!({"target": t, "value": "0.5", "source": "hitl"})),
        ("missing value", json!({"target": t, "source": "hitl"})),
        ("null value", json!({"target": t, "value": null, "source": "hitl"})),
        ("value above 1", json!({"target": t, "value": 1.5, "source": "hitl"})),
        ("value below 0", json!({"target": t, "value": -0.1, "source": "hitl"})),
        ("value as a boolean", json!({"target": t, "value": true, "source": "hitl"})),
        ("unknown strategy", json!({"target": {"sequence_id": "val-seq", "strategy": "best"}, "value": 0.5, "source": "hitl"})),
        ("gamma 0", json!({"target": {"sequence_id": "val-seq", "strategy": "discounted", "gamma": 0}, "value": 0.5, "source": "tests"})),
        ("gamma 1.5", json!({"target": {"sequence_id": "val-seq", "strategy": "discounted", "gamma": 1.5}, "value": 0.5, "source": "tests"})),
        ("gamma missing", json!({"target": {"sequence_id": "val-seq", "strategy": "discounted"}, "value": 0.5, "source": "tests"})),
        ("role strategy without role", json!({"target": {"sequence_id": "val-seq", "strategy": "role"}, "value": 0.5, "source": "hitl"})),
        ("source HITL", json!({"target": t, "value": 0.5, "source": "HITL"})),
        ("missing source", json!({"target": t, "value": 0.5})),
        ("empty source", json!({"target": q, "value": 0.5, "source": ""})),
        ("missing target", json!({"value": 0.5, "source": "hitl"})),
        ("target with both ids", json!({"target": {"triplet_id": "val-t", "sequence_id": "val-seq"}, "value": 0.5, "source": "hitl"})),
        ("body not an object", json!([1, 2, 3])),
    ];
    for (what, body) in &cases {
        let (status, resp) = reward(&s, body);
        assert_eq!(status, 422, "{what}: {body} answered {status}: {resp}");
        assert_error(&resp, "validation_failed", what);
    }

    // JSON cannot carry NaN or 1e999 as numbers: sent raw, they are a bad value (422), not a crash.
    for (what, raw) in [
        ("NaN", r#"{"target":{"triplet_id":"val-t"},"value":NaN,"source":"hitl"}"#),
        ("Infinity", r#"{"target":{"triplet_id":"val-t"},"value":Infinity,"source":"hitl"}"#),
        ("1e999", r#"{"target":{"triplet_id":"val-t"},"value":1e999,"source":"hitl"}"#),
        ("-1e999", r#"{"target":{"triplet_id":"val-t"},"value":-1e999,"source":"hitl"}"#),
    ] {
        let (status, _, body) = common::post_raw(&s.url("/api/v1/rewards"), "application/json", &[], raw.as_bytes().to_vec());
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert_eq!(status, 422, "{what}: answered {status}: {}", String::from_utf8_lossy(&body));
        assert_error(&v, "validation_failed", what);
    }

    // A body that is not JSON at all is 400, in the same error shape (also with non-ASCII text).
    for (what, raw) in [
        ("not JSON", "{not json"),
        ("empty body", ""),
        ("truncated", r#"{"target":{"triplet_id":"val-t"},"value":0.5"#),
        ("non-ASCII text", "héllo wörld"),
        ("non-ASCII outside strings", r#"{"target":{"triplet_id":"val-t"},"value":é,"source":"hitl"}"#),
    ] {
        let (status, _, body) = common::post_raw(&s.url("/api/v1/rewards"), "application/json", &[], raw.as_bytes().to_vec());
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert_eq!(status, 400, "{what}: answered {status}: {}", String::from_utf8_lossy(&body));
        assert_error(&v, "bad_request", what);
    }

    // A body over the bound of JSON requests is 413, in the same error shape.
    let big = format!(r#"{{"target":{{"triplet_id":"val-t"}},"value":0.5,"source":"hitl","reason":"{}"}}"#, "a".repeat(2 * 1024 * 1024));
    let (status, _, body) = common::post_raw(&s.url("/api/v1/rewards"), "application/json", &[], big.into_bytes());
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body[..body.len().min(300)]));
    assert_error(&serde_json::from_slice(&body).unwrap_or(Value::Null), "payload_too_large", "2 MiB reward body");

    // Unknown targets are 404 (without "pending": true).
    let (status, resp) = reward(&s, &json!({"target": {"triplet_id": "no-such-triplet"}, "value": 0.5, "source": "hitl"}));
    assert_eq!(status, 404, "{resp}");
    assert_error(&resp, "not_found", "unknown triplet");
    let (status, resp) = reward(&s, &json!({"target": {"sequence_id": "no-such-sequence"}, "value": 0.5, "source": "hitl"}));
    assert_eq!(status, 404, "{resp}");
    assert_error(&resp, "not_found", "unknown sequence");
    let (status, resp) = reward(&s, &json!({"target": {"triplet_id": "no-such-triplet"}, "value": 0.5, "source": "hitl", "pending": false}));
    assert_eq!(status, 404, "pending false is the default: {resp}");

    // Nothing of the above reached the ledger.
    let after = stats(&s);
    assert_eq!(after["reward_events"], before["reward_events"], "bad input changed the ledger: {after}");
    assert_eq!(after["rewarded_triplets"], 0, "{after}");
    let t = triplet_of(&s, "val-t");
    assert!(t["reward"].is_null(), "{t}");
    assert_eq!(t["ledger"], json!([]), "{t}");
    assert_eq!(sequence_of(&s, "val-seq")["ledger"], json!([]));

    // The boundaries 0 and 1 are valid, and a valid reward is counted: the counter above was live.
    reward_created(&s, &json!({"target": {"triplet_id": "val-t"}, "value": 0, "source": "hitl"}));
    reward_created(&s, &json!({"target": {"triplet_id": "val-t"}, "value": 1.0, "source": "tests"}));
    let last = stats(&s);
    assert_eq!(last["reward_events"].as_u64(), before["reward_events"].as_u64().map(|n| n + 2), "{last}");
    assert_close(&triplet_of(&s, "val-t")["reward"], 0.5, "mean of hitl 0 and tests 1");
}

// ---------------------------------------------------------------------------------------------
// 2. Sequence strategies and the effective reward
// ---------------------------------------------------------------------------------------------

/// What one triplet must show: effective reward, the value used per source, and which event is newest.
struct Want<'a> {
    reward: Option<f64>,
    sources: &'a [(&'a str, f64)],
    newest: Option<&'a Value>,
}

#[track_caller]
fn check_sequence(s: &common::Server, sequence_id: &str, step: &str, want: &[Want<'_>]) {
    let seq = sequence_of(s, sequence_id);
    let ts = seq["triplets"].as_array().unwrap_or_else(|| panic!("{step}: no triplets in {seq}"));
    assert_eq!(ts.len(), want.len(), "{step}: {seq}");
    for (i, (t, w)) in ts.iter().zip(want).enumerate() {
        let what = format!("{step}: triplet {i} ({})", t["triplet_id"]);
        assert_eq!(t["sequence_index"], i as i64, "{what}: order");
        match w.reward {
            Some(r) => assert_close(&t["reward"], r, &format!("{what}: reward")),
            None => assert!(t["reward"].is_null(), "{what}: reward must be null: {t}"),
        }
        let got = t["reward_sources"].as_object().unwrap_or_else(|| panic!("{what}: reward_sources must be an object: {t}"));
        let names: BTreeSet<&str> = got.keys().map(String::as_str).collect();
        let want_names: BTreeSet<&str> = w.sources.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, want_names, "{what}: sources {t}");
        for (name, v) in w.sources {
            assert_close(&got[*name], *v, &format!("{what}: source {name}"));
        }
        match w.newest {
            Some(ev) => {
                assert_eq!(t["reward_source"], ev["source"], "{what}: reward_source {t}");
                assert_eq!(t["reward_assigned_at"], ev["created_at"], "{what}: reward_assigned_at {t}");
            }
            None => {
                assert!(t["reward_source"].is_null(), "{what}: {t}");
                assert!(t["reward_assigned_at"].is_null(), "{what}: {t}");
            }
        }
    }
}

#[test]
fn sequence_strategies_give_the_hand_computed_rewards() {
    let s = common::Server::start(&[]);
    let roles = ["Code", "Test", "Code", "Test"];
    // Sent out of order: the sequence is ordered by rl.sequence_index.
    let spans: Vec<_> = [2usize, 0, 3, 1]
        .iter()
        .map(|&i| triplet("strat", i as i64, roles[i], i as u64).attr("rl.triplet_id", json!(format!("strat-{i}"))))
        .collect();
    send(&s, &spans);
    check_sequence(&s, "strat", "no reward yet", &[
        Want { reward: None, sources: &[], newest: None },
        Want { reward: None, sources: &[], newest: None },
        Want { reward: None, sources: &[], newest: None },
        Want { reward: None, sources: &[], newest: None },
    ]);

    // uniform: every triplet gets the value.
    let e1 = reward_created(&s, &json!({"target": {"sequence_id": "strat", "strategy": "uniform"}, "value": 0.8, "source": "hitl", "reason": "approved"}));
    assert_eq!(e1["target"], json!({"sequence_id": "strat", "strategy": "uniform"}));
    assert_close(&e1["value"], 0.8, "event value");
    assert_eq!(e1["source"], "hitl");
    assert_eq!(e1["reason"], "approved");
    assert_eq!(e1["pending"], false);
    assert!(e1["reward_id"].as_str().is_some_and(|r| !r.is_empty()), "{e1}");
    assert!(e1["created_at"].as_str().is_some_and(is_rfc3339_micros_z), "{e1}");
    check_sequence(&s, "strat", "uniform 0.8", &[
        Want { reward: Some(0.8), sources: &[("hitl", 0.8)], newest: Some(&e1) },
        Want { reward: Some(0.8), sources: &[("hitl", 0.8)], newest: Some(&e1) },
        Want { reward: Some(0.8), sources: &[("hitl", 0.8)], newest: Some(&e1) },
        Want { reward: Some(0.8), sources: &[("hitl", 0.8)], newest: Some(&e1) },
    ]);

    // discounted, gamma 0.5: triplet i of 4 gets 1.0 * 0.5^(3 - i) = 0.125, 0.25, 0.5, 1.0.
    let e2 = reward_created(&s, &json!({"target": {"sequence_id": "strat", "strategy": "discounted", "gamma": 0.5}, "value": 1.0, "source": "tests"}));
    assert_eq!(e2["target"], json!({"sequence_id": "strat", "strategy": "discounted", "gamma": 0.5}));
    check_sequence(&s, "strat", "discounted", &[
        Want { reward: Some((0.8 + 0.125) / 2.0), sources: &[("hitl", 0.8), ("tests", 0.125)], newest: Some(&e2) },
        Want { reward: Some((0.8 + 0.25) / 2.0), sources: &[("hitl", 0.8), ("tests", 0.25)], newest: Some(&e2) },
        Want { reward: Some((0.8 + 0.5) / 2.0), sources: &[("hitl", 0.8), ("tests", 0.5)], newest: Some(&e2) },
        Want { reward: Some((0.8 + 1.0) / 2.0), sources: &[("hitl", 0.8), ("tests", 1.0)], newest: Some(&e2) },
    ]);

    // last: only triplet 3.
    let e3 = reward_created(&s, &json!({"target": {"sequence_id": "strat", "strategy": "last"}, "value": 0.2, "source": "terminal"}));
    check_sequence(&s, "strat", "last", &[
        Want { reward: Some(0.4625), sources: &[("hitl", 0.8), ("tests", 0.125)], newest: Some(&e2) },
        Want { reward: Some(0.525), sources: &[("hitl", 0.8), ("tests", 0.25)], newest: Some(&e2) },
        Want { reward: Some(0.65), sources: &[("hitl", 0.8), ("tests", 0.5)], newest: Some(&e2) },
        Want { reward: Some((0.8 + 1.0 + 0.2) / 3.0), sources: &[("hitl", 0.8), ("tests", 1.0), ("terminal", 0.2)], newest: Some(&e3) },
    ]);

    // role Code: triplets 0 and 2.
    let e4 = reward_created(&s, &json!({"target": {"sequence_id": "strat", "strategy": "role", "role": "Code"}, "value": 0.6, "source": "judge"}));
    assert_eq!(e4["target"], json!({"sequence_id": "strat", "strategy": "role", "role": "Code"}));
    check_sequence(&s, "strat", "role Code", &[
        Want { reward: Some((0.8 + 0.125 + 0.6) / 3.0), sources: &[("hitl", 0.8), ("tests", 0.125), ("judge", 0.6)], newest: Some(&e4) },
        Want { reward: Some(0.525), sources: &[("hitl", 0.8), ("tests", 0.25)], newest: Some(&e2) },
        Want { reward: Some((0.8 + 0.5 + 0.6) / 3.0), sources: &[("hitl", 0.8), ("tests", 0.5), ("judge", 0.6)], newest: Some(&e4) },
        Want { reward: Some((0.8 + 1.0 + 0.2) / 3.0), sources: &[("hitl", 0.8), ("tests", 1.0), ("terminal", 0.2)], newest: Some(&e3) },
    ]);

    // A newer event of a source replaces that source's value (latest per source), nothing else.
    let e5 = reward_created(&s, &json!({"target": {"sequence_id": "strat"}, "value": 0.2, "source": "hitl"}));
    assert_eq!(e5["target"]["strategy"], "uniform", "uniform is the default strategy: {e5}");
    check_sequence(&s, "strat", "second hitl", &[
        Want { reward: Some((0.2 + 0.125 + 0.6) / 3.0), sources: &[("hitl", 0.2), ("tests", 0.125), ("judge", 0.6)], newest: Some(&e5) },
        Want { reward: Some((0.2 + 0.25) / 2.0), sources: &[("hitl", 0.2), ("tests", 0.25)], newest: Some(&e5) },
        Want { reward: Some((0.2 + 0.5 + 0.6) / 3.0), sources: &[("hitl", 0.2), ("tests", 0.5), ("judge", 0.6)], newest: Some(&e5) },
        Want { reward: Some((0.2 + 1.0 + 0.2) / 3.0), sources: &[("hitl", 0.2), ("tests", 1.0), ("terminal", 0.2)], newest: Some(&e5) },
    ]);
    // A triplet-targeted event reaches its triplet only.
    let e6 = reward_created(&s, &json!({"target": {"triplet_id": "strat-1"}, "value": 1.0, "source": "judge"}));
    assert_eq!(e6["target"], json!({"triplet_id": "strat-1"}));
    check_sequence(&s, "strat", "judge on triplet 1", &[
        Want { reward: Some((0.2 + 0.125 + 0.6) / 3.0), sources: &[("hitl", 0.2), ("tests", 0.125), ("judge", 0.6)], newest: Some(&e5) },
        Want { reward: Some((0.2 + 0.25 + 1.0) / 3.0), sources: &[("hitl", 0.2), ("tests", 0.25), ("judge", 1.0)], newest: Some(&e6) },
        Want { reward: Some((0.2 + 0.5 + 0.6) / 3.0), sources: &[("hitl", 0.2), ("tests", 0.5), ("judge", 0.6)], newest: Some(&e5) },
        Want { reward: Some((0.2 + 1.0 + 0.2) / 3.0), sources: &[("hitl", 0.2), ("tests", 1.0), ("terminal", 0.2)], newest: Some(&e5) },
    ]);

    // The sequence's ledger holds every event, unchanged (append-only).
    let seq = sequence_of(&s, "strat");
    let ids: Vec<&Value> = seq["ledger"].as_array().map(|l| l.iter().map(|e| &e["reward_id"]).collect()).unwrap_or_default();
    assert_eq!(ids, vec![&e1["reward_id"], &e2["reward_id"], &e3["reward_id"], &e4["reward_id"], &e5["reward_id"], &e6["reward_id"]], "{seq}");
    assert_eq!(seq["ledger"][0], e1, "a stored event reads back as it was returned");
    assert_eq!(seq["rewarded"], true);
    assert_eq!(stats(&s)["reward_events"], 6);
}

#[test]
fn strategies_follow_the_sequence_as_it_is_at_read_time() {
    let s = common::Server::start(&[]);
    send(&s, &[
        triplet("late", 0, "Code", 0).attr("rl.triplet_id", json!("late-0")),
        triplet("late", 1, "Test", 1).attr("rl.triplet_id", json!("late-1")),
    ]);
    let e1 = reward_created(&s, &json!({"target": {"sequence_id": "late", "strategy": "uniform"}, "value": 0.7, "source": "hitl"}));
    reward_created(&s, &json!({"target": {"sequence_id": "late", "strategy": "last"}, "value": 1.0, "source": "terminal"}));
    let e3 = reward_created(&s, &json!({"target": {"sequence_id": "late", "strategy": "discounted", "gamma": 0.5}, "value": 1.0, "source": "tests"}));
    // Two triplets: discounted gives 0.5, 1.0; last reaches triplet 1.
    check_sequence(&s, "late", "two triplets", &[
        Want { reward: Some((0.7 + 0.5) / 2.0), sources: &[("hitl", 0.7), ("tests", 0.5)], newest: Some(&e3) },
        Want { reward: Some((0.7 + 1.0 + 1.0) / 3.0), sources: &[("hitl", 0.7), ("terminal", 1.0), ("tests", 1.0)], newest: Some(&e3) },
    ]);

    // A third triplet arrives after the rewards: uniform covers it, last and discounted follow the new end.
    send(&s, &[triplet("late", 2, "Code", 2).attr("rl.triplet_id", json!("late-2"))]);
    check_sequence(&s, "late", "three triplets", &[
        Want { reward: Some((0.7 + 0.25) / 2.0), sources: &[("hitl", 0.7), ("tests", 0.25)], newest: Some(&e3) },
        Want { reward: Some((0.7 + 0.5) / 2.0), sources: &[("hitl", 0.7), ("tests", 0.5)], newest: Some(&e3) },
        Want { reward: Some((0.7 + 1.0 + 1.0) / 3.0), sources: &[("hitl", 0.7), ("terminal", 1.0), ("tests", 1.0)], newest: Some(&e3) },
    ]);
    // The single-triplet view agrees, and its ledger lists exactly the events reaching it now.
    let t1 = triplet_of(&s, "late-1");
    assert_close(&t1["reward"], 0.6, "late-1 after the new end");
    let ledger: BTreeSet<&str> = t1["ledger"].as_array().map(|l| l.iter().filter_map(|e| e["reward_id"].as_str()).collect()).unwrap_or_default();
    let want: BTreeSet<&str> = [&e1, &e3].iter().filter_map(|e| e["reward_id"].as_str()).collect();
    assert_eq!(ledger, want, "last no longer reaches late-1: {t1}");
    let t2 = triplet_of(&s, "late-2");
    assert_eq!(t2["ledger"].as_array().map(Vec::len), Some(3), "{t2}");
}

// ---------------------------------------------------------------------------------------------
// 3. Idempotency
// ---------------------------------------------------------------------------------------------

#[test]
fn idempotency_key_replays_and_conflicts() {
    let s = common::Server::start(&[]);
    send(&s, &[triplet("idem", 0, "Code", 0).attr("rl.triplet_id", json!("idem-t"))]);
    let body = json!({"target": {"triplet_id": "idem-t"}, "value": 0.4, "source": "hitl", "reason": "ok", "idempotency_key": "k1"});
    let (status, first) = reward(&s, &body);
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["idempotency_key"], "k1");
    let (status, again) = reward(&s, &body);
    assert_eq!(status, 200, "same key, same body: the stored event: {again}");
    assert_eq!(again, first, "the replay returns the stored event unchanged");

    let mut other = body.clone();
    other["value"] = json!(0.9);
    let (status, resp) = reward(&s, &other);
    assert_eq!(status, 409, "{resp}");
    assert_error(&resp, "conflict", "same key, other body");
    let mut other_reason = body.clone();
    other_reason["reason"] = json!("changed my mind");
    assert_eq!(reward(&s, &other_reason).0, 409, "any other body conflicts");

    // The Idempotency-Key header works as the body field does.
    let url = s.url("/api/v1/rewards");
    let hbody = json!({"target": {"triplet_id": "idem-t"}, "value": 0.6, "source": "tests"});
    let raw = serde_json::to_vec(&hbody).expect("json");
    let post = |key: &str, raw: Vec<u8>| {
        let (status, _, b) = common::post_raw(&url, "application/json", &[("Idempotency-Key", key)], raw);
        (status, serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null))
    };
    let (status, h1) = post("k2", raw.clone());
    assert_eq!(status, 201, "{h1}");
    assert_eq!(h1["idempotency_key"], "k2", "{h1}");
    let (status, h2) = post("k2", raw.clone());
    assert_eq!(status, 200, "{h2}");
    assert_eq!(h2["reward_id"], h1["reward_id"]);
    let (status, h3) = post("k2", serde_json::to_vec(&json!({"target": {"triplet_id": "idem-t"}, "value": 0.1, "source": "tests"})).expect("json"));
    assert_eq!(status, 409, "{h3}");
    assert_error(&h3, "conflict", "header key, other body");
    // The key in the header and the same key in the body name the same request.
    let (status, h4) = post("k2", serde_json::to_vec(&json!({"target": {"triplet_id": "idem-t"}, "value": 0.6, "source": "tests", "idempotency_key": "k2"})).expect("json"));
    assert_eq!(status, 200, "{h4}");
    assert_eq!(h4["reward_id"], h1["reward_id"]);
    // Header and body naming different keys is a malformed request.
    let (status, h5) = post("k3", serde_json::to_vec(&json!({"target": {"triplet_id": "idem-t"}, "value": 0.6, "source": "tests", "idempotency_key": "k4"})).expect("json"));
    assert_eq!(status, 422, "{h5}");

    // Only the two created events exist; the conflicting values changed nothing.
    assert_eq!(stats(&s)["reward_events"], 2);
    let t = triplet_of(&s, "idem-t");
    assert_close(&t["reward"], (0.4 + 0.6) / 2.0, "hitl 0.4 and tests 0.6");
    assert_eq!(t["ledger"].as_array().map(Vec::len), Some(2), "{t}");
}

// ---------------------------------------------------------------------------------------------
// 4. Pending rewards
// ---------------------------------------------------------------------------------------------

#[test]
fn pending_rewards_join_their_target_when_it_arrives() {
    let s = common::Server::start(&[]);

    // A triplet that does not exist yet, by explicit id.
    let ev = reward_created(&s, &json!({"target": {"triplet_id": "future-t"}, "value": 0.3, "source": "tests", "pending": true}));
    assert_eq!(ev["pending"], true, "{ev}");
    assert_eq!(stats(&s)["reward_events"], 1);
    assert_eq!(common::get_json(&s.url("/api/v1/triplets/future-t")).0, 404);
    send(&s, &[triplet("pend-a", 0, "Code", 0).attr("rl.triplet_id", json!("future-t"))]);
    let t = triplet_of(&s, "future-t");
    assert_close(&t["reward"], 0.3, "pending triplet reward joined");
    assert_eq!(t["reward_source"], "tests");
    assert_eq!(t["reward_assigned_at"], ev["created_at"]);
    let ledger = t["ledger"].as_array().cloned().unwrap_or_default();
    assert_eq!(ledger.len(), 1, "{t}");
    assert_eq!(ledger[0]["reward_id"], ev["reward_id"]);
    assert_eq!(ledger[0]["pending"], false, "joined: {t}");
    assert_eq!(sequence_of(&s, "pend-a")["ledger"][0]["pending"], false);

    // A triplet with a default id ({trace_id}{span_id}) that does not exist yet.
    let later = triplet("pend-b", 0, "Test", 5);
    let default_id = later.default_triplet_id();
    let ev2 = reward_created(&s, &json!({"target": {"triplet_id": default_id}, "value": 0.9, "source": "judge", "pending": true}));
    assert_eq!(ev2["pending"], true);
    send(&s, &[later]);
    let t = triplet_of(&s, &default_id);
    assert_eq!(t["triplet_id"], default_id.as_str());
    assert_close(&t["reward"], 0.9, "pending reward on a default triplet id");
    assert_eq!(t["ledger"][0]["pending"], false, "{t}");

    // A sequence that does not exist yet.
    let ev3 = reward_created(&s, &json!({"target": {"sequence_id": "future-seq", "strategy": "uniform"}, "value": 0.8, "source": "hitl", "pending": true}));
    assert_eq!(ev3["pending"], true, "{ev3}");
    assert_eq!(common::get_json(&s.url("/api/v1/sequences/future-seq")).0, 404);
    send(&s, &[triplet("future-seq", 0, "Code", 10), triplet("future-seq", 1, "Test", 11)]);
    let seq = sequence_of(&s, "future-seq");
    for t in seq["triplets"].as_array().cloned().unwrap_or_default() {
        assert_close(&t["reward"], 0.8, "pending sequence reward reaches every triplet");
        assert_eq!(t["reward_sources"], json!({"hitl": 0.8}));
    }
    assert_eq!(seq["triplets"].as_array().map(Vec::len), Some(2));
    assert_eq!(seq["ledger"].as_array().map(Vec::len), Some(1), "{seq}");
    assert_eq!(seq["ledger"][0]["reward_id"], ev3["reward_id"]);
    assert_eq!(seq["ledger"][0]["pending"], false, "{seq}");
    assert_eq!(seq["rewarded"], true);

    let st = stats(&s);
    assert_eq!(st["reward_events"], 3, "{st}");
    assert_eq!(st["rewarded_triplets"], 4, "{st}");
}

// ---------------------------------------------------------------------------------------------
// 5. The reward policy
// ---------------------------------------------------------------------------------------------

#[test]
fn policy_file_weights_sources_and_components_at_read_time() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = tmp.path().join("policy.db");
    let policy = tmp.path().join("policy.toml");
    std::fs::write(&policy, "[sources.hitl]\nweight = 3.0\n\n[components]\nsuccess = 3.0\n").expect("write policy");
    let policy_arg = policy.to_string_lossy().into_owned();

    let mut s = common::Server::start_at(&db, &["--policy", &policy_arg]);
    send(&s, &[
        triplet("pol", 0, "Code", 0).attr("rl.triplet_id", json!("pol-t")),
        triplet("pol-c", 0, "Code", 1)
            .attr("rl.triplet_id", json!("pol-c"))
            .attr("rl.reward.success", json!(1))
            .attr("rl.reward.latency", json!(0)),
    ]);
    reward_created(&s, &json!({"target": {"triplet_id": "pol-t"}, "value": 1.0, "source": "hitl"}));
    reward_created(&s, &json!({"target": {"triplet_id": "pol-t"}, "value": 0.0, "source": "tests"}));
    let t = triplet_of(&s, "pol-t");
    assert_close(&t["reward"], 0.75, "hitl weight 3: (3 * 1.0 + 1 * 0.0) / 4");
    assert_eq!(t["reward_sources"], json!({"hitl": 1.0, "tests": 0.0}), "sources keep their own values");
    let c = triplet_of(&s, "pol-c");
    assert_close(&c["reward"], 0.75, "component success weight 3: (3 * 1 + 1 * 0) / 4");
    assert_close(&c["reward_sources"]["local"], 0.75, "the components make one local reward");
    assert_eq!(c["reward_source"], "local");
    // The manifest records the policy in force.
    let (_, _, text) = get_text(&s.url("/api/v1/export?format=jsonl&manifest=true"));
    let weighted = manifest_of(&text);
    assert_eq!(weighted["reward_policy"]["sources"]["hitl"]["weight"], 3.0, "{weighted}");
    assert_eq!(weighted["reward_policy"]["components"]["success"], 3.0, "{weighted}");
    s.stop();

    // Same database, no policy: the stored ledger is read under default weights.
    let mut s = common::Server::start_at(&db, &[]);
    assert_close(&triplet_of(&s, "pol-t")["reward"], 0.5, "default weights: (1.0 + 0.0) / 2");
    assert_close(&triplet_of(&s, "pol-c")["reward"], 0.5, "default component weights: (1 + 0) / 2");
    let (_, _, text) = get_text(&s.url("/api/v1/export?format=jsonl&manifest=true"));
    let plain = manifest_of(&text);
    assert_ne!(plain["reward_policy_hash"], weighted["reward_policy_hash"], "the hash names the policy");
    assert_eq!(stats(&s)["reward_events"], 2, "nothing was rewritten");
    s.stop();

    // And back: the policy applies again, still without rewriting anything.
    let s = common::Server::start_at(&db, &["--policy", &policy_arg]);
    assert_close(&triplet_of(&s, "pol-t")["reward"], 0.75, "policy again");
}

fn manifest_of(export: &str) -> Value {
    let last = export.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(last).unwrap_or(Value::Null);
    assert!(v["manifest"].is_object(), "last line is not a manifest: {last}");
    v["manifest"].clone()
}

/// Run `rltrace serve` and wait (bounded) for it to exit; kills it and fails if it keeps running.
fn serve_must_fail(args: &[&str]) -> String {
    let mut child = std::process::Command::new(common::bin())
        .arg("serve")
        .args(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .args(args)
        .env("RLTRACE_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn rltrace serve");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let out = child.wait_with_output().expect("output");
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(!status.success(), "serve {args:?} must fail; stderr: {stderr}");
            return stderr;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve {args:?} kept running; it must refuse to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn invalid_policy_file_stops_serve_with_a_clear_message() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = tmp.path().join("p.db").to_string_lossy().into_owned();
    let cases = [
        ("not_toml.toml", "[sources.hitl\nweight = ", "not valid"),
        ("negative.toml", "[sources.hitl]\nweight = -1.0\n", "weight"),
        ("typo.toml", "[sources.hitl]\nwieght = 2.0\n", "wieght"),
        ("upper.toml", "[sources.HITL]\nweight = 2.0\n", "HITL"),
        ("component.toml", "[components]\nsuccess = -3.0\n", "success"),
    ];
    for (name, text, needle) in cases {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).expect("write policy");
        let p = path.to_string_lossy().into_owned();
        let stderr = serve_must_fail(&["--db", &db, "--policy", &p]);
        assert!(stderr.contains(name), "{name}: the message names the file: {stderr}");
        assert!(stderr.contains(needle), "{name}: the message says what is wrong ({needle}): {stderr}");
    }
    let missing = tmp.path().join("missing.toml").to_string_lossy().into_owned();
    let stderr = serve_must_fail(&["--db", &db, "--policy", &missing]);
    assert!(stderr.contains("missing.toml"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// 6. The read API
// ---------------------------------------------------------------------------------------------

/// Four sequences for the filters:
/// - `A`: Code at +0 s, Test at +10 s ending the sequence (complete), no reward;
/// - `B`: Review at +100 s with an immediate reward (rewarded);
/// - `C`: Code at +200 s and +210 s, nothing else;
/// - `D`: Test at +300 s, rewarded through the API by a non-terminal source.
fn four_sequences(s: &common::Server) {
    send(s, &[
        triplet("A", 0, "Code", 0).attr("rl.triplet_id", json!("A0")),
        triplet("A", 1, "Test", 10).attr("rl.triplet_id", json!("A1")).attr("rl.sequence_end", json!(true)),
    ]);
    send(s, &[triplet("B", 0, "Review", 100).attr("rl.triplet_id", json!("B0")).attr("rl.reward", json!(0.5))]);
    send(s, &[
        triplet("C", 0, "Code", 200).attr("rl.triplet_id", json!("C0")),
        triplet("C", 1, "Code", 210).attr("rl.triplet_id", json!("C1")),
    ]);
    send(s, &[triplet("D", 0, "Test", 300).attr("rl.triplet_id", json!("D0"))]);
    reward_created(s, &json!({"target": {"sequence_id": "D"}, "value": 0.25, "source": "review"}));
}

fn ids_of(page: &Value, key: &str) -> Vec<String> {
    page["items"].as_array().map(|a| a.iter().filter_map(|i| i[key].as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// Walk every page of `path` (with or without a query string) with `limit=1`; returns the ids in order.
fn walk(s: &common::Server, path: &str, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    let sep = if path.contains('?') { '&' } else { '?' };
    for _ in 0..50 {
        let url = match &cursor {
            None => s.url(&format!("{path}{sep}limit=1")),
            Some(c) => s.url(&format!("{path}{sep}limit=1&cursor={}", pct(c))),
        };
        let page = get_ok(&url);
        let items = ids_of(&page, key);
        assert!(items.len() <= 1, "limit=1 gave {page}");
        out.extend(items);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => {
                assert!(page["next_cursor"].is_null(), "{page}");
                let unique: BTreeSet<&String> = out.iter().collect();
                assert_eq!(unique.len(), out.len(), "duplicates across pages of {path}: {out:?}");
                return out;
            }
        }
    }
    panic!("{path}: more than 50 pages for a handful of items: {out:?}");
}

#[test]
fn sequence_list_filters_and_cursor() {
    let s = common::Server::start(&[]);
    four_sequences(&s);
    let list = |q: &str| -> Vec<String> { ids_of(&get_ok(&s.url(&format!("/api/v1/sequences{q}"))), "sequence_id") };
    let set = |q: &str| -> BTreeSet<String> { list(q).into_iter().collect() };
    let names = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|x| x.to_string()).collect() };

    let all = get_ok(&s.url("/api/v1/sequences"));
    assert_eq!(set(""), names(&["A", "B", "C", "D"]), "{all}");
    assert!(all["next_cursor"].is_null(), "{all}");
    let a = all["items"].as_array().and_then(|i| i.iter().find(|x| x["sequence_id"] == "A")).cloned().expect("A listed");
    assert_eq!(a, json!({"sequence_id": "A", "triplet_count": 2, "first_at": rfc3339(0), "last_at": rfc3339(10), "rewarded": false, "complete": true, "reward_mean": null, "roles": ["Code", "Test"], "rollout": null}));

    assert_eq!(set("?role=Code"), names(&["A", "C"]));
    assert_eq!(set("?role=Test"), names(&["A", "D"]));
    assert_eq!(set("?role=Nobody"), names(&[]));
    assert_eq!(set("?rewarded=true"), names(&["B", "D"]));
    assert_eq!(set("?rewarded=false"), names(&["A", "C"]));
    assert_eq!(set("?complete=true"), names(&["A"]));
    assert_eq!(set("?complete=false"), names(&["B", "C", "D"]));
    assert_eq!(set(&format!("?since={}", pct(&rfc3339(150)))), names(&["C", "D"]), "since: last triplet at or after");
    assert_eq!(set(&format!("?until={}", pct(&rfc3339(150)))), names(&["A", "B"]), "until: first triplet at or before");
    assert_eq!(set(&format!("?since={}&until={}", pct(&rfc3339(5)), pct(&rfc3339(205)))), names(&["A", "B", "C"]));
    assert_eq!(set(&format!("?since={}", pct(&rfc3339(210)))), names(&["C", "D"]), "since is inclusive");
    assert_eq!(set(&format!("?until={}", pct(&rfc3339(300)))), names(&["A", "B", "C", "D"]), "until is inclusive");
    assert_eq!(set("?role=Code&complete=false"), names(&["C"]));
    assert_eq!(set("?role=Test&rewarded=true"), names(&["D"]));
    // A timestamp with an offset names the same instant.
    assert_eq!(set("?since=2023-11-14T23%3A15%3A50%2B01%3A00"), names(&["C", "D"]));

    let walked = walk(&s, "/api/v1/sequences", "sequence_id");
    assert_eq!(walked.iter().cloned().collect::<BTreeSet<_>>(), names(&["A", "B", "C", "D"]));
    assert_eq!(walked, list(""), "pages follow the order of the whole list");
    let walked = walk(&s, "/api/v1/sequences?role=Code", "sequence_id");
    assert_eq!(walked, vec!["A".to_string(), "C".to_string()]);
    let walked = walk(&s, "/api/v1/sequences?rewarded=true", "sequence_id");
    assert_eq!(walked, vec!["B".to_string(), "D".to_string()]);
}

#[test]
fn triplet_list_filters_and_cursor() {
    let s = common::Server::start(&[]);
    four_sequences(&s);
    let set = |q: &str| -> BTreeSet<String> { ids_of(&get_ok(&s.url(&format!("/api/v1/triplets{q}"))), "triplet_id").into_iter().collect() };
    let names = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|x| x.to_string()).collect() };

    assert_eq!(set(""), names(&["A0", "A1", "B0", "C0", "C1", "D0"]));
    let in_a = ids_of(&get_ok(&s.url("/api/v1/triplets?sequence_id=A")), "triplet_id");
    assert_eq!(in_a, vec!["A0".to_string(), "A1".to_string()], "a sequence's triplets in order");
    assert_eq!(set("?sequence_id=nope"), names(&[]));
    assert_eq!(set("?role=Code"), names(&["A0", "C0", "C1"]));
    assert_eq!(set("?rewarded=true"), names(&["B0", "D0"]));
    assert_eq!(set("?rewarded=false"), names(&["A0", "A1", "C0", "C1"]));
    assert_eq!(set(&format!("?since={}", pct(&rfc3339(200)))), names(&["C0", "C1", "D0"]));
    assert_eq!(set(&format!("?until={}", pct(&rfc3339(10)))), names(&["A0", "A1"]));
    assert_eq!(set(&format!("?since={}&until={}", pct(&rfc3339(10)), pct(&rfc3339(200)))), names(&["A1", "B0", "C0"]));
    assert_eq!(set("?sequence_id=C&role=Code"), names(&["C0", "C1"]));
    assert_eq!(set("?sequence_id=A&role=Test"), names(&["A1"]));

    // Items are full triplets (section 7).
    let b0 = get_ok(&s.url("/api/v1/triplets?sequence_id=B"))["items"][0].clone();
    assert_eq!(b0["triplet_id"], "B0");
    assert_eq!(b0["sequence_id"], "B");
    assert_eq!(b0["sequence_index"], 0);
    assert_eq!(b0["timestamp_utc"], rfc3339(100));
    assert_eq!(b0["state"], json!({"agent_role": "Review"}));
    assert_eq!(b0["action"], json!({"success": true}));
    assert_close(&b0["reward"], 0.5, "immediate reward");
    assert_eq!(b0["reward_sources"], json!({"local": 0.5}));
    assert_eq!(b0["reward_source"], "local");
    assert_eq!(b0["reward_assigned_at"], rfc3339(100), "an immediate reward is assigned at the triplet's time");

    let walked = walk(&s, "/api/v1/triplets", "triplet_id");
    assert_eq!(walked.iter().cloned().collect::<BTreeSet<_>>(), names(&["A0", "A1", "B0", "C0", "C1", "D0"]));
    assert_eq!(walk(&s, "/api/v1/triplets?role=Code", "triplet_id").iter().cloned().collect::<BTreeSet<_>>(), names(&["A0", "C0", "C1"]));
    assert_eq!(walk(&s, "/api/v1/triplets?sequence_id=C", "triplet_id"), vec!["C0".to_string(), "C1".to_string()]);
    assert_eq!(walk(&s, "/api/v1/triplets?rewarded=false", "triplet_id").len(), 4);
}

#[test]
fn list_parameters_are_checked() {
    let s = common::Server::start(&[]);
    four_sequences(&s);
    let seq_cursor = get_ok(&s.url("/api/v1/sequences?limit=1"))["next_cursor"].as_str().map(str::to_string).expect("a next cursor");
    let trip_cursor = get_ok(&s.url("/api/v1/triplets?limit=1"))["next_cursor"].as_str().map(str::to_string).expect("a next cursor");
    for list in ["/api/v1/sequences", "/api/v1/triplets"] {
        let foreign = if list.ends_with("sequences") { &trip_cursor } else { &seq_cursor };
        for q in [
            "limit=0".to_string(),
            "limit=1001".to_string(),
            "limit=-1".to_string(),
            "limit=ten".to_string(),
            "cursor=zz".to_string(),
            "cursor=not-a-cursor".to_string(),
            format!("cursor={foreign}"),
            "foo=1".to_string(),
            "rewarded=maybe".to_string(),
            "since=yesterday".to_string(),
            "until=2023-13-45".to_string(),
            "limit=1&limit=2".to_string(),
        ] {
            let (status, body) = common::get_json(&s.url(&format!("{list}?{q}")));
            assert_eq!(status, 400, "{list}?{q}: {body}");
            assert_error(&body, "bad_request", &format!("{list}?{q}"));
        }
        assert_eq!(common::get_json(&s.url(&format!("{list}?limit=1000"))).0, 200);
        assert_eq!(common::get_json(&s.url(&format!("{list}?limit=1"))).0, 200);
    }
    let (status, body) = common::get_json(&s.url("/api/v1/export?format=jsonl&bogus=1"));
    assert_eq!(status, 400, "{body}");
    assert_error(&body, "bad_request", "export with an unknown parameter");
}

#[test]
fn ids_needing_percent_encoding_work_in_paths() {
    let s = common::Server::start(&[]);
    let seq = "task 1/a";
    let tid = "step #1/2?x=%41 é";
    send(&s, &[
        triplet(seq, 0, "Code", 0).attr("rl.triplet_id", json!(tid)),
        triplet(seq, 1, "Test", 1).attr("rl.triplet_id", json!("plain")),
    ]);
    let got = sequence_of(&s, seq);
    assert_eq!(got["sequence_id"], seq);
    assert_eq!(got["triplet_count"], 2);
    assert_eq!(got["triplets"][0]["triplet_id"], tid);
    let t = triplet_of(&s, tid);
    assert_eq!(t["triplet_id"], tid);
    assert_eq!(t["sequence_id"], seq);
    // Rewards name the ids as they are; reads find them through the encoded path.
    reward_created(&s, &json!({"target": {"sequence_id": seq}, "value": 0.5, "source": "hitl"}));
    reward_created(&s, &json!({"target": {"triplet_id": tid}, "value": 1.0, "source": "judge"}));
    assert_close(&triplet_of(&s, tid)["reward"], 0.75, "hitl 0.5 and judge 1.0");
    let filtered = get_ok(&s.url(&format!("/api/v1/triplets?sequence_id={}", pct(seq))));
    assert_eq!(ids_of(&filtered, "triplet_id"), vec![tid.to_string(), "plain".to_string()]);
    // The unencoded slash is another path: not this sequence.
    assert_eq!(common::get_json(&s.url("/api/v1/sequences/task%201/a")).0, 404);
    // An encoding that is not UTF-8 is a bad request, in the REST error shape.
    for path in ["/api/v1/sequences/%FF", "/api/v1/triplets/a%C3", "/api/v1/traces/%FE%FF"] {
        let (status, body) = common::get_json(&s.url(path));
        assert_eq!(status, 400, "{path}: {body}");
        assert_error(&body, "bad_request", path);
    }
}

#[test]
fn triplet_detail_lists_the_ledger_events_reaching_it() {
    let s = common::Server::start(&[]);
    send(&s, &[
        triplet("L", 0, "Code", 0).attr("rl.triplet_id", json!("L0")),
        triplet("L", 1, "Test", 1).attr("rl.triplet_id", json!("L1")),
        triplet("L", 2, "Code", 2).attr("rl.triplet_id", json!("L2")),
    ]);
    let on_l0 = reward_created(&s, &json!({"target": {"triplet_id": "L0"}, "value": 0.1, "source": "judge", "metadata": {"model": "m1"}}));
    let on_l1 = reward_created(&s, &json!({"target": {"triplet_id": "L1"}, "value": 0.2, "source": "judge"}));
    let uniform = reward_created(&s, &json!({"target": {"sequence_id": "L"}, "value": 0.3, "source": "hitl"}));
    let role_test = reward_created(&s, &json!({"target": {"sequence_id": "L", "strategy": "role", "role": "Test"}, "value": 0.4, "source": "tests"}));
    let role_code = reward_created(&s, &json!({"target": {"sequence_id": "L", "strategy": "role", "role": "Code"}, "value": 0.5, "source": "tests"}));
    let last = reward_created(&s, &json!({"target": {"sequence_id": "L", "strategy": "last"}, "value": 0.6, "source": "terminal"}));
    let disc = reward_created(&s, &json!({"target": {"sequence_id": "L", "strategy": "discounted", "gamma": 1.0}, "value": 0.7, "source": "defect"}));
    assert_eq!(on_l0["metadata"], json!({"model": "m1"}));

    let ids = |t: &Value| -> Vec<String> { t["ledger"].as_array().map(|l| l.iter().filter_map(|e| e["reward_id"].as_str().map(str::to_string)).collect()).unwrap_or_default() };
    let want = |evs: &[&Value]| -> Vec<String> { evs.iter().filter_map(|e| e["reward_id"].as_str().map(str::to_string)).collect() };
    let l0 = triplet_of(&s, "L0");
    assert_eq!(ids(&l0), want(&[&on_l0, &uniform, &role_code, &disc]), "{l0}");
    assert_eq!(l0["ledger"][0], on_l0, "ledger events as stored");
    assert_eq!(ids(&triplet_of(&s, "L1")), want(&[&on_l1, &uniform, &role_test, &disc]));
    assert_eq!(ids(&triplet_of(&s, "L2")), want(&[&uniform, &role_code, &last, &disc]));
    // The triplet carries the section 7 fields besides its ledger.
    for k in ["triplet_id", "sequence_id", "sequence_index", "timestamp_utc", "state", "action", "reward", "reward_sources", "reward_source", "reward_assigned_at", "trace_id", "span_id", "propensity"] {
        assert!(l0.get(k).is_some(), "triplet detail lacks {k}: {l0}");
    }
    assert_close(&l0["reward"], (0.1 + 0.3 + 0.5 + 0.7) / 4.0, "L0: judge, hitl, tests, defect");
    let (status, body) = common::get_json(&s.url("/api/v1/triplets/nope"));
    assert_eq!(status, 404);
    assert_error(&body, "not_found", "unknown triplet");
    let (status, body) = common::get_json(&s.url("/api/v1/sequences/nope"));
    assert_eq!(status, 404);
    assert_error(&body, "not_found", "unknown sequence");
}

#[test]
fn trace_spans_come_in_tree_order() {
    let s = common::Server::start(&[]);
    let trace = trace_id().to_ascii_uppercase();
    let [root, c1, c2, g1, g2, g3] = [span_id(), span_id(), span_id(), span_id(), span_id(), span_id()].map(|x| x.to_ascii_uppercase());
    let t0 = BASE_NS;
    // root; children c2 (starts at +20 ms) and c1 (+10 ms); c1 has g1; c2 has g2 (+25 ms) and g3 (+22 ms).
    let spans = [
        span(&trace, &g2, "g2", t0 + 25_000_000).parent(&c2).attr("rl.state.agent_role", json!("Test")),
        span(&trace, &c2, "c2", t0 + 20_000_000).parent(&root).kind(3).status(2, "boom"),
        span(&trace, &g3, "g3", t0 + 22_000_000).parent(&c2),
        span(&trace, &c1, "c1", t0 + 10_000_000)
            .parent(&root)
            .attr("rl.triplet_id", json!("tree-c1"))
            .attr("rl.state", json!("{\"agent_role\":\"Code\"}"))
            .event("log", t0 + 11_000_000, &[("msg", json!("hello"))]),
        span(&trace, &g1, "g1", t0 + 15_000_000).parent(&c1).attr("http.status_code", json!(200)),
    ];
    // The root arrives in a second request, after its descendants.
    send(&s, &spans[..3]);
    send(&s, &spans[3..]);
    send(&s, &[span(&trace, &root, "root", t0).kind(2).end(t0 + 50_000_000)]);

    let lower = trace.to_ascii_lowercase();
    for id in [lower.clone(), trace.clone()] {
        let v = get_ok(&s.url(&format!("/api/v1/traces/{id}")));
        assert_eq!(v["trace_id"], lower.as_str(), "ids are reported lowercase");
        let got: Vec<(String, i64)> = v["spans"]
            .as_array()
            .map(|a| a.iter().map(|x| (x["name"].as_str().unwrap_or("?").to_string(), x["depth"].as_i64().unwrap_or(-1))).collect())
            .unwrap_or_default();
        let want: Vec<(String, i64)> = [("root", 0), ("c1", 1), ("g1", 2), ("c2", 1), ("g3", 2), ("g2", 2)].iter().map(|(n, d)| (n.to_string(), *d)).collect();
        assert_eq!(got, want, "parents before children, siblings by start time: {v}");
    }
    let v = get_ok(&s.url(&format!("/api/v1/traces/{lower}")));
    let by_name = |n: &str| -> Value { v["spans"].as_array().and_then(|a| a.iter().find(|x| x["name"] == n)).cloned().unwrap_or(Value::Null) };
    let r = by_name("root");
    assert_eq!(r["span_id"], root.to_ascii_lowercase().as_str());
    assert!(r["parent_span_id"].is_null(), "{r}");
    assert_eq!(r["kind"], "SPAN_KIND_SERVER");
    assert_eq!(r["start_time"], rfc3339(0));
    assert_eq!(r["end_time"], "2023-11-14T22:13:20.050000Z");
    assert_eq!(r["resource"]["service.name"], "rltrace-tests", "{r}");
    assert!(r["triplet_id"].is_null(), "a plain span has no triplet: {r}");
    let c1v = by_name("c1");
    assert_eq!(c1v["triplet_id"], "tree-c1");
    assert_eq!(c1v["parent_span_id"], root.to_ascii_lowercase().as_str());
    assert_eq!(c1v["events"][0]["name"], "log", "{c1v}");
    let c2v = by_name("c2");
    assert_eq!(c2v["status"], json!({"code": "STATUS_CODE_ERROR", "message": "boom"}));
    assert_eq!(c2v["kind"], "SPAN_KIND_CLIENT");
    let g2v = by_name("g2");
    let default_id = format!("{lower}{}", g2.to_ascii_lowercase());
    assert_eq!(g2v["triplet_id"], default_id.as_str(), "an rl.state.* span is a triplet with the default id");
    assert_eq!(triplet_of(&s, &default_id)["span_id"], g2.to_ascii_lowercase().as_str());
    let g1v = by_name("g1");
    assert!(g1v["triplet_id"].is_null());
    assert_eq!(g1v["attributes"]["http.status_code"], 200, "{g1v}");
    for sp in v["spans"].as_array().cloned().unwrap_or_default() {
        for k in ["trace_id", "span_id", "parent_span_id", "name", "kind", "start_time", "end_time", "status", "attributes", "events", "resource", "depth", "triplet_id"] {
            assert!(sp.get(k).is_some(), "span lacks {k}: {sp}");
        }
    }

    let too_long = format!("{lower}00");
    for bad in ["xyz", "0123", &lower[..31], too_long.as_str(), "zz000000000000000000000000000000"] {
        let (status, body) = common::get_json(&s.url(&format!("/api/v1/traces/{bad}")));
        assert_eq!(status, 400, "{bad}: {body}");
        assert_error(&body, "bad_request", bad);
    }
    let (status, body) = common::get_json(&s.url(&format!("/api/v1/traces/{}", trace_id())));
    assert_eq!(status, 404, "{body}");
    assert_error(&body, "not_found", "unknown trace");
}

#[test]
fn stats_and_metrics() {
    let s = common::Server::start(&[]);
    let zero = stats(&s);
    assert_eq!(zero, json!({"spans": 0, "triplets": 0, "sequences": 0, "rewarded_triplets": 0, "reward_events": 0, "ingest_spans_per_s": zero["ingest_spans_per_s"]}));
    let trace = trace_id();
    send(&s, &[
        span(&trace, &span_id(), "plain", BASE_NS),
        span(&trace, &span_id(), "t1", BASE_NS + SEC)
            .attr("rl.sequence_id", json!("st"))
            .attr("rl.triplet_id", json!("st-1"))
            .attr("rl.state.agent_role", json!("Code"))
            .event("rl.reward", BASE_NS + 2 * SEC, &[("rl.reward.value", json!(0.9)), ("rl.reward.source", json!("judge"))]),
        span(&trace, &span_id(), "t2", BASE_NS + 3 * SEC).attr("rl.sequence_id", json!("st")).attr("rl.triplet_id", json!("st-2")),
        span(&trace, &span_id(), "t3", BASE_NS + 4 * SEC).attr("rl.sequence_id", json!("st2")).attr("rl.triplet_id", json!("st-3")),
    ]);
    reward_created(&s, &json!({"target": {"triplet_id": "st-2"}, "value": 0.5, "source": "hitl"}));
    let st = stats(&s);
    assert_eq!(st["spans"], 4, "{st}");
    assert_eq!(st["triplets"], 3, "{st}");
    assert_eq!(st["sequences"], 2, "{st}");
    assert_eq!(st["rewarded_triplets"], 2, "{st}");
    assert_eq!(st["reward_events"], 2, "the span's rl.reward event and the API reward: {st}");
    assert!(st["ingest_spans_per_s"].as_f64().is_some_and(|r| r >= 0.0), "{st}");
    // The span's reward event is in the ledger like any other.
    let t1 = triplet_of(&s, "st-1");
    assert_close(&t1["reward"], 0.9, "reward carried by a span event");
    assert_eq!(t1["reward_source"], "judge");
    assert_eq!(t1["reward_assigned_at"], rfc3339(2));

    let (status, ct, text) = get_text(&s.url("/metrics"));
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/plain"), "{ct}");
    for name in ["rltrace_spans_received_total", "rltrace_http_request_duration_seconds_bucket", "rltrace_queue_depth"] {
        assert!(text.lines().any(|l| l.starts_with(name)), "/metrics lacks {name}:\n{text}");
    }
    let received: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("rltrace_spans_received_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("rltrace_spans_received_total has a value");
    assert!(received >= 4.0, "{received}");
    // Sample lines are `name{labels} value` or `name value`, comments start with #.
    for l in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let value = l.rsplit(' ').next().unwrap_or_default();
        assert!(value.parse::<f64>().is_ok() || value == "+Inf", "not a sample line: {l}");
    }
    let (status, _) = common::get_json(&s.url("/healthz"));
    assert_eq!(status, 200);
    let (status, _) = common::get_json(&s.url("/readyz"));
    assert_eq!(status, 200);
}

#[test]
fn openapi_documents_every_served_route() {
    let s = common::Server::start(&[]);
    let (status, ct, text) = get_text(&s.url("/openapi.json"));
    assert_eq!(status, 200);
    assert!(ct.starts_with("application/json"), "{ct}");
    let doc: Value = serde_json::from_str(&text).expect("/openapi.json is valid JSON");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
    assert!(doc["info"]["title"].is_string());
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();

    // Every REST route of DESIGN section 4, with a concrete path to probe it.
    let routes: [(&str, &str, &str); 11] = [
        ("get", "/api/v1/sequences", "/api/v1/sequences"),
        ("get", "/api/v1/sequences/{sequence_id}", "/api/v1/sequences/x"),
        ("get", "/api/v1/triplets", "/api/v1/triplets"),
        ("get", "/api/v1/triplets/{triplet_id}", "/api/v1/triplets/x"),
        ("get", "/api/v1/traces/{trace_id}", "/api/v1/traces/x"),
        ("post", "/api/v1/rewards", "/api/v1/rewards"),
        ("post", "/api/v1/callbacks/hitl", "/api/v1/callbacks/hitl"),
        ("post", "/api/v1/callbacks/tests", "/api/v1/callbacks/tests"),
        ("post", "/api/v1/callbacks/defects", "/api/v1/callbacks/defects"),
        ("get", "/api/v1/export", "/api/v1/export"),
        ("get", "/api/v1/stats", "/api/v1/stats"),
    ];
    let http = common::client();
    let mut served = 0;
    for (method, template, probe) in routes {
        // A routed path answers another method with 405; an unknown path falls through to 404.
        let resp = http.delete(s.url(probe)).send().expect("DELETE");
        let routed = resp.status().as_u16() == 405;
        if routed {
            served += 1;
            assert!(paths.get(template).and_then(|p| p.get(method)).is_some(), "{method} {template} is served but not in /openapi.json");
        }
    }
    assert!(served >= 8, "the REST routes must be served");
    // And the document names nothing the server does not serve.
    for (path, ops) in &paths {
        let probe = path.replace("{sequence_id}", "x").replace("{triplet_id}", "x").replace("{trace_id}", "x");
        let resp = http.delete(s.url(&probe)).send().expect("DELETE");
        assert_eq!(resp.status().as_u16(), 405, "{path} is documented but not served");
        for (method, op) in ops.as_object().cloned().unwrap_or_default() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                assert!(op["responses"].is_object(), "{method} {path} documents no responses");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 7. The export API
// ---------------------------------------------------------------------------------------------

const TRIPLET_FIELDS: [&str; 14] = [
    "triplet_id",
    "sequence_id",
    "sequence_index",
    "timestamp_utc",
    "state",
    "action",
    "reward",
    "reward_sources",
    "reward_source",
    "reward_assigned_at",
    "trace_id",
    "span_id",
    "propensity",
    "sampling_probability",
];

fn export_data(s: &common::Server) -> Value {
    let upper_trace = trace_id().to_ascii_uppercase();
    let upper_span = span_id().to_ascii_uppercase();
    send(s, &[
        triplet("E1", 0, "Code", 0).attr("rl.triplet_id", json!("E1-0")).attr("rl.propensity", json!(0.25)).attr("rl.state", json!("{\"task_id\":\"T-1\",\"files\":[\"a.rs\"]}")),
        triplet("E1", 1, "Test", 1).attr("rl.triplet_id", json!("E1-1")).attr("rl.action", json!("{\"output\":\"ok\",\"tokens\":12}")),
        triplet("E1", 2, "Code", 2).attr("rl.triplet_id", json!("E1-2")).attr("rl.sequence_end", json!(true)),
        span(&upper_trace, &upper_span, "e2", BASE_NS + 10 * SEC).attr("rl.sequence_id", json!("E2")).attr("rl.state.agent_role", json!("Review")),
    ]);
    reward_created(s, &json!({"target": {"sequence_id": "E1"}, "value": 0.5, "source": "hitl"}))
}

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("line is not JSON ({e}): {l}"))).collect()
}

#[test]
fn export_streams_section_7_triplets_and_a_manifest() {
    let s = common::Server::start(&[]);
    let ev = export_data(&s);
    let (status, ct, text) = get_text(&s.url("/api/v1/export?format=jsonl"));
    assert_eq!(status, 200, "{text}");
    assert!(ct.starts_with("application/x-ndjson") || ct.starts_with("application/jsonl"), "{ct}");
    assert!(text.ends_with('\n'), "every line ends with a newline");
    let lines = parse_lines(&text);
    assert_eq!(lines.len(), 4, "{text}");
    let want_fields: BTreeSet<&str> = TRIPLET_FIELDS.into_iter().collect();
    for l in &lines {
        let keys: BTreeSet<&str> = l.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
        assert_eq!(keys, want_fields, "exactly the fields of section 7: {l}");
        assert!(l["timestamp_utc"].as_str().is_some_and(is_rfc3339_micros_z), "{l}");
        assert!(l["trace_id"].as_str().is_some_and(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))), "{l}");
        assert!(l["span_id"].as_str().is_some_and(|t| t.len() == 16 && t.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))), "{l}");
        assert!(l["state"].is_object() && l["action"].is_object(), "{l}");
        // Each line is the triplet the API serves.
        let mut t = triplet_of(&s, l["triplet_id"].as_str().unwrap_or_default());
        let explain = t.as_object_mut().and_then(|o| {
            o.remove("ledger");
            o.remove("explain")
        });
        assert_eq!(&t, l, "export line and GET /api/v1/triplets/{{id}} agree");
        // The explanation's sources are the line's reward sources, with the same values.
        let explained: BTreeSet<String> = explain.as_ref().and_then(Value::as_array).map(|a| a.iter().map(|x| x["source"].as_str().unwrap_or_default().to_string()).collect()).unwrap_or_default();
        let sources: BTreeSet<String> = l["reward_sources"].as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
        assert_eq!(explained, sources, "{explain:?}");
        for x in explain.as_ref().and_then(Value::as_array).into_iter().flatten() {
            assert_eq!(x["value"], l["reward_sources"][x["source"].as_str().unwrap_or_default()], "{x}");
        }
    }
    let by_id = |id: &str| lines.iter().find(|l| l["triplet_id"] == id).cloned().unwrap_or(Value::Null);
    // Sequence order within a sequence.
    let e1: Vec<&Value> = lines.iter().filter(|l| l["sequence_id"] == "E1").map(|l| &l["sequence_index"]).collect();
    assert_eq!(e1, vec![&json!(0), &json!(1), &json!(2)]);
    let e10 = by_id("E1-0");
    assert_eq!(e10["state"], json!({"task_id": "T-1", "files": ["a.rs"], "agent_role": "Code"}));
    assert_close(&e10["propensity"], 0.25, "propensity");
    assert_close(&e10["reward"], 0.5, "uniform hitl");
    assert_eq!(e10["reward_sources"], json!({"hitl": 0.5}));
    assert_eq!(e10["reward_source"], "hitl");
    assert_eq!(e10["reward_assigned_at"], ev["created_at"]);
    assert_eq!(by_id("E1-1")["action"], json!({"output": "ok", "tokens": 12, "success": true}));
    assert!(by_id("E1-1")["propensity"].is_null());
    let e2 = lines.iter().find(|l| l["sequence_id"] == "E2").cloned().expect("E2 exported");
    assert!(e2["reward"].is_null() && e2["reward_source"].is_null() && e2["reward_assigned_at"].is_null(), "{e2}");
    assert_eq!(e2["reward_sources"], json!({}));
    assert_eq!(e2["triplet_id"], format!("{}{}", e2["trace_id"].as_str().unwrap_or_default(), e2["span_id"].as_str().unwrap_or_default()).as_str(), "default triplet id, lowercase");

    // manifest=true: the same lines, then one manifest line.
    let (status, _, with_m) = get_text(&s.url("/api/v1/export?format=jsonl&manifest=true"));
    assert_eq!(status, 200);
    let mlines = parse_lines(&with_m);
    assert_eq!(mlines.len(), 5);
    assert_eq!(&mlines[..4], &lines[..], "the triplet lines do not change with the manifest");
    let last = &mlines[4];
    assert_eq!(last.as_object().map(|o| o.len()), Some(1), "{last}");
    let m = &last["manifest"];
    assert!(m["filters"].is_object(), "{m}");
    assert!(m["reward_policy"].is_object(), "{m}");
    assert!(m["reward_policy_hash"].as_str().is_some_and(|h| h.starts_with("sha256:") && h.len() == 7 + 64), "{m}");
    assert_eq!(m["counts"]["triplets"], 4, "{m}");
    assert_eq!(m["counts"]["sequences"], 2, "{m}");
    assert_eq!(m["counts"]["rewarded_triplets"], 3, "{m}");
    assert!(m["exported_at"].as_str().is_some_and(is_rfc3339_micros_z), "{m}");

    // Filters apply, and the manifest records them.
    let (_, _, f) = get_text(&s.url("/api/v1/export?format=jsonl&sequence_id=E1&role=Code&manifest=true"));
    let fl = parse_lines(&f);
    let ids: Vec<&Value> = fl[..fl.len() - 1].iter().map(|l| &l["triplet_id"]).collect();
    assert_eq!(ids, vec![&json!("E1-0"), &json!("E1-2")]);
    let fm = &fl[fl.len() - 1]["manifest"];
    assert_eq!(fm["filters"]["sequence_id"], "E1", "{fm}");
    assert_eq!(fm["filters"]["role"], "Code", "{fm}");
    assert_eq!(fm["counts"]["triplets"], 2, "{fm}");
    assert_eq!(fm["counts"]["sequences"], 1, "{fm}");
    let (_, _, f) = get_text(&s.url("/api/v1/export?format=jsonl&rewarded=false"));
    assert_eq!(parse_lines(&f).iter().map(|l| l["sequence_id"].clone()).collect::<Vec<_>>(), vec![json!("E2")]);
    let (_, _, f) = get_text(&s.url("/api/v1/export?format=jsonl&complete=true"));
    assert_eq!(parse_lines(&f).len(), 3, "E1 ends with rl.sequence_end (and has a hitl reward)");
    let (_, _, f) = get_text(&s.url(&format!("/api/v1/export?format=jsonl&since={}", pct(&rfc3339(2)))));
    let ids: BTreeSet<String> = parse_lines(&f).iter().filter_map(|l| l["triplet_id"].as_str().map(str::to_string)).collect();
    assert_eq!(ids.len(), 2, "E1-2 and the E2 triplet: {ids:?}");
    assert!(ids.contains("E1-2"));
    let (_, _, f) = get_text(&s.url("/api/v1/export?format=jsonl&sequence_id=nope&manifest=true"));
    let fl = parse_lines(&f);
    assert_eq!(fl.len(), 1, "only the manifest: {f}");
    assert_eq!(fl[0]["manifest"]["counts"]["triplets"], 0);

    for bad in ["format=csv", "format=jsonl&manifest=yes", "format=jsonl&since=later", "format=jsonl&rewarded=1"] {
        let (status, body) = common::get_json(&s.url(&format!("/api/v1/export?{bad}")));
        assert_eq!(status, 400, "{bad}: {body}");
        assert_error(&body, "bad_request", bad);
    }
}

/// A triplet with an immediate reward (a numeric string), a sequence reward and a triplet reward
/// from a custom source: `reward_sources` has one value per source, the effective reward is their
/// mean (default weights), and defect events multiply.
#[test]
fn effective_reward_is_the_mean_of_reward_sources() {
    let s = common::Server::start(&[]);
    send(&s, &[triplet("M", 0, "Code", 0).attr("rl.triplet_id", json!("M0")).attr("rl.reward", json!("0.2"))]);
    reward_created(&s, &json!({"target": {"sequence_id": "M"}, "value": 0.4, "source": "hitl"}));
    reward_created(&s, &json!({"target": {"triplet_id": "M0"}, "value": 0.9, "source": "custom.source-1"}));
    let t = triplet_of(&s, "M0");
    let sources: BTreeMap<String, f64> = t["reward_sources"].as_object().map(|o| o.iter().filter_map(|(k, v)| v.as_f64().map(|f| (k.clone(), f))).collect()).unwrap_or_default();
    assert_eq!(sources.keys().cloned().collect::<Vec<_>>(), vec!["custom.source-1".to_string(), "hitl".to_string(), "local".to_string()]);
    assert_close(&t["reward"], (0.2 + 0.4 + 0.9) / 3.0, "mean over three sources");
    assert_close(&t["reward_sources"]["local"], 0.2, "a numeric string rl.reward is a number");
    assert_eq!(t["reward_source"], "custom.source-1");

    // Several defect events multiply instead of the latest replacing the others.
    reward_created(&s, &json!({"target": {"triplet_id": "M0"}, "value": 0.9, "source": "defect"}));
    let last = reward_created(&s, &json!({"target": {"sequence_id": "M"}, "value": 0.5, "source": "defect"}));
    let t = triplet_of(&s, "M0");
    assert_close(&t["reward_sources"]["defect"], 0.45, "0.9 * 0.5");
    assert_close(&t["reward"], (0.2 + 0.4 + 0.9 + 0.45) / 4.0, "mean over four sources");
    assert_eq!(t["reward_source"], "defect");
    assert_eq!(t["reward_assigned_at"], last["created_at"]);
}

/// `GET /api/v1/sequences/{id}` pages its triplets in sequence order; the list carries each
/// sequence's mean reward and roles; `review=pending` is the queue of complete sequences without
/// a human decision, and a HITL callback takes a sequence out of it.
#[test]
fn sequence_detail_pages_and_the_review_queue() {
    let s = common::Server::start(&[]);
    four_sequences(&s);
    send(&s, &(0..5).rev().map(|i| triplet("E", i, if i % 2 == 0 { "Code" } else { "Test" }, 400 + i as u64)).collect::<Vec<_>>());
    let mut cursor: Option<String> = None;
    let mut indexes = Vec::new();
    for _ in 0..10 {
        let url = match &cursor {
            None => s.url("/api/v1/sequences/E?limit=2"),
            Some(c) => s.url(&format!("/api/v1/sequences/E?limit=2&cursor={}", pct(c))),
        };
        let page = get_ok(&url);
        assert_eq!(page["triplet_count"], 5, "{page}");
        assert_eq!(page["roles"], json!(["Code", "Test"]), "{page}");
        let items = page["triplets"].as_array().cloned().unwrap_or_default();
        assert!(items.len() <= 2, "{page}");
        indexes.extend(items.iter().filter_map(|t| t["sequence_index"].as_i64()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(indexes, vec![0, 1, 2, 3, 4]);
    assert_eq!(common::get_json(&s.url("/api/v1/sequences/E?limit=0")).0, 400);
    assert_eq!(common::get_json(&s.url("/api/v1/sequences/E?limit=10001")).0, 400);
    // B: one triplet with an immediate reward of 0.5.
    let b = get_ok(&s.url("/api/v1/sequences/B"));
    assert_eq!(b["reward_mean"], 0.5, "{b}");
    // Only A is complete (rl.sequence_end): it waits for a review until a HITL decision.
    assert_eq!(ids_of(&get_ok(&s.url("/api/v1/sequences?review=pending")), "sequence_id"), vec!["A"]);
    let (status, body) = common::post_json(
        &s.url("/api/v1/callbacks/hitl"),
        &json!({"sequence_id": "A", "decision": "deferred", "reviewer": "ann", "justification": "later"}),
    );
    assert_eq!(status, 201, "{body}");
    assert!(ids_of(&get_ok(&s.url("/api/v1/sequences?review=pending")), "sequence_id").is_empty());
    assert_eq!(common::get_json(&s.url("/api/v1/sequences?review=done")).0, 400);
}

/// A sequence is linked to the Agent Lightning rollout attempt one of its spans names, shown on
/// the sequence, in the list and on its web page; unlinked sequences say `null`.
#[test]
fn sequences_show_their_agent_lightning_rollout_link() {
    let s = common::Server::start(&[]);
    send(
        &s,
        &[
            api_support::triplet("linked", 0, "Code", 1).attr("rl.triplet_id", json!("linked-0")),
            api_support::triplet("linked", 1, "Test", 2)
                .attr("agentlightning.rollout_id", json!("ro-77"))
                .attr("agentlightning.attempt_id", json!("at-1")),
            api_support::triplet("plain", 0, "Code", 3),
        ],
    );
    let unrewarded = json!({"last": null, "mean": null, "min": null});
    let seq = sequence_of(&s, "linked");
    assert_eq!(seq["rollout"], json!({"rollout_id": "ro-77", "attempt_id": "at-1", "episode_reward": unrewarded}), "{seq}");
    // The episode reward follows the ledger: the last triplet's, the mean and the least.
    for (target, value) in [(json!({"triplet_id": "linked-0"}), 0.2), (json!({"sequence_id": "linked", "strategy": "last"}), 0.8)] {
        let (status, body) = common::post_json(&s.url("/api/v1/rewards"), &json!({"target": target, "value": value, "source": "tests"}));
        assert_eq!(status, 201, "{body}");
    }
    let seq = sequence_of(&s, "linked");
    let episode = &seq["rollout"]["episode_reward"];
    assert_eq!((&episode["last"], &episode["min"]), (&json!(0.8), &json!(0.2)), "{seq}");
    assert!((episode["mean"].as_f64().unwrap_or(0.0) - 0.5).abs() < 1e-9, "{seq}");
    assert_eq!(sequence_of(&s, "plain")["rollout"], Value::Null);
    let list = get_ok(&s.url("/api/v1/sequences"));
    let linked: Vec<&Value> = list["items"].as_array().expect("items").iter().filter(|i| !i["rollout"].is_null()).collect();
    assert_eq!(linked.len(), 1, "{list}");
    let (status, _, page) = get_text(&s.url("/ui/sequences/linked"));
    assert_eq!(status, 200);
    assert!(page.contains("ro-77") && page.contains("at-1"), "the sequence page shows the link");
    assert!(page.contains("<span id=\"seq-episode\">0.800</span>"), "and the episode reward: {page}");
    // A malformed link is refused by name, like any bad attribute.
    let body = serde_json::to_vec(&api_support::request(&[api_support::triplet("bad", 0, "Code", 4).attr("agentlightning.rollout_id", json!(""))
        .attr("agentlightning.attempt_id", json!("a"))]))
    .expect("json");
    let (status, _, resp) = common::post_raw(&s.url("/v1/traces"), "application/json", &[], body);
    let text = String::from_utf8_lossy(&resp);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("agentlightning.rollout_id"), "{text}");
}

/// A NUL character in any string of a reward or callback body is refused by its path, on every
/// backend alike (PostgreSQL's text cannot hold it), and nothing is stored.
#[test]
fn a_nul_in_a_reward_body_is_refused_by_its_path() {
    let s = common::Server::start(&[]);
    send(&s, &[api_support::triplet("nul-seq", 0, "Code", 1)]);
    let (status, body) = reward(&s, &json!({"target": {"sequence_id": "nul-seq"}, "value": 0.5, "source": "hitl", "reason": "a\0b"}));
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("reason") && body.to_string().contains("NUL"), "{body}");
    let (status, body) = common::post_json(&s.url("/api/v1/callbacks/hitl"), &json!({"sequence_id": "nul\0", "decision": "approved"}));
    assert_eq!(status, 422, "{body}");
    assert_eq!(sequence_of(&s, "nul-seq")["ledger"].as_array().map(Vec::len), Some(0));
}
