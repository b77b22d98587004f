//! `rltrace loadgen --fill` against the real collector on loopback: what the fill says it sent is
//! what the REST API then shows (counts, every reward source, the pending rewards joined), and the
//! same seed gives the same data, also when the collector answers 503 and requests are retried.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Server, get_json};
use serde_json::{Value, json};

const ROLES: [&str; 7] = ["Planning", "Design", "Design Review", "Code", "Code Review", "Test", "Postmortem"];

/// Run the fill against `server` and return its JSON summary.
fn fill(server: &Server, args: &[&str]) -> Value {
    let mut all = vec!["loadgen", "--fill", "--target", &server.http, "--json", "--max-seconds", "300"];
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = common::run_cli(&server.dir, &all);
    assert!(ok, "fill failed: {stdout} {stderr}");
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("summary is not JSON ({e}): {stdout}"))
}

fn get(server: &Server, path: &str) -> Value {
    let (status, body) = get_json(&server.url(path));
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

fn count(v: &Value, path: &str) -> u64 {
    v.pointer(path).and_then(Value::as_u64).unwrap_or_else(|| panic!("no count at {path} in {v}"))
}

/// Every sequence id, through the paged list.
fn sequence_ids(server: &Server) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = get(server, &format!("/api/v1/sequences?limit=1000{}", cursor.map(|c| format!("&cursor={c}")).unwrap_or_default()));
        ids.extend(page["items"].as_array().expect("items").iter().map(|s| s["sequence_id"].as_str().expect("id").to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return ids,
        }
    }
}

/// Every triplet by id (reward times, which are the times of the appends, left out).
fn triplets(server: &Server) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = get(server, &format!("/api/v1/triplets?limit=1000{}", cursor.map(|c| format!("&cursor={c}")).unwrap_or_default()));
        for t in page["items"].as_array().expect("items") {
            let mut t = t.clone();
            t.as_object_mut().expect("object").remove("reward_assigned_at");
            out.insert(t["triplet_id"].as_str().expect("id").to_string(), t);
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

/// Each sequence's detail (triplets and ledger), by sequence id.
fn details(server: &Server, ids: &[String]) -> BTreeMap<String, Value> {
    ids.iter()
        .map(|id| {
            let d = get(server, &format!("/api/v1/sequences/{id}"));
            assert!(d["next_cursor"].is_null(), "{id} fits in one page");
            (id.clone(), d)
        })
        .collect()
}

/// The ledger as a sorted list of what does not depend on when it was appended.
fn ledger_contents(details: &BTreeMap<String, Value>) -> Vec<String> {
    let mut out: Vec<String> = details
        .values()
        .flat_map(|d| d["ledger"].as_array().expect("ledger").iter())
        .map(|e| json!([e["source"], e["target"], e["value"], e["reason"], e["metadata"], e["idempotency_key"]]).to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn a_fill_is_what_the_api_then_shows_and_the_same_seed_gives_the_same_data() {
    let a = Server::start(&[]);
    let summary = fill(&a, &["--triplets", "3000", "--sequences", "300", "--seed", "7"]);
    assert_eq!((count(&summary, "/triplets"), count(&summary, "/sequences"), count(&summary, "/errors")), (3000, 300, 0), "{summary}");

    // Counts.
    let stats = get(&a, "/api/v1/stats");
    assert_eq!((count(&stats, "/triplets"), count(&stats, "/sequences")), (3000, 300), "{stats}");
    assert_eq!(count(&stats, "/spans"), count(&summary, "/spans"));
    assert_eq!(count(&stats, "/reward_events"), count(&summary, "/ledger_events"), "every reward event sent is in the ledger once");
    let ids = sequence_ids(&a);
    let want: BTreeSet<String> = (0..300).map(|n| format!("task-{n}")).collect();
    assert_eq!(ids.iter().cloned().collect::<BTreeSet<_>>(), want);
    let details = details(&a, &ids);
    let lengths: Vec<u64> = details.values().map(|d| count(d, "/triplet_count")).collect();
    assert_eq!(lengths.iter().sum::<u64>(), 3000);
    assert!(lengths.iter().collect::<BTreeSet<_>>().len() > 3, "sequence lengths vary");

    // The triplets: seven agent roles with their task, LLM calls in the same sequences, immediate
    // rewards on most agent steps.
    let mut roles = BTreeSet::new();
    let (mut llm, mut local) = (0, 0);
    for (id, d) in &details {
        let ts = d["triplets"].as_array().expect("triplets");
        for (i, t) in ts.iter().enumerate() {
            assert_eq!(t["sequence_index"], json!(i), "{id} is in order");
            if t["state"].get("llm_model").is_some() {
                llm += 1;
                assert!(t["state"]["prompt"].is_array() && t["action"]["llm_response"].is_array(), "{t}");
                assert!(t["action"]["llm_tokens_in"].is_u64(), "{t}");
            } else {
                roles.insert(t["state"]["agent_role"].as_str().expect("role").to_string());
                assert_eq!(t["state"]["task_id"].as_str(), Some(id.as_str()));
                let state_len = t["state"].to_string().len();
                assert!((150..=500).contains(&state_len), "a small state: {state_len} bytes");
            }
            if t["reward_sources"].get("local").is_some() {
                local += 1;
            }
        }
    }
    assert_eq!(roles, ROLES.iter().map(|r| r.to_string()).collect::<BTreeSet<_>>());
    assert!(llm > 100, "{llm} LLM-call triplets");
    assert_eq!(local, count(&summary, "/rewards/immediate"));

    // The ledger: every source, as many events of each as the fill sent.
    let events: Vec<(&String, &Value)> = details.iter().flat_map(|(id, d)| d["ledger"].as_array().expect("ledger").iter().map(move |e| (id, e))).collect();
    let mut by_source: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, e) in &events {
        *by_source.entry(e["source"].as_str().expect("source")).or_default() += 1;
    }
    let r = |k: &str| count(&summary, &format!("/rewards/{k}"));
    let expected: BTreeMap<&str, u64> = [
        ("terminal", r("terminal") + r("pending_sequence")),
        ("judge", r("judge")),
        ("hitl", r("hitl")),
        ("tests", r("tests")),
        ("defect", r("defect")),
        ("feedback", r("triplet") + r("pending_triplet")),
    ]
    .into_iter()
    .collect();
    assert_eq!(by_source, expected);
    assert!(expected.values().all(|n| *n > 0), "every kind was sent: {summary}");
    let decisions: BTreeSet<&str> = events.iter().filter(|(_, e)| e["source"] == "hitl").map(|(_, e)| e["metadata"]["decision"].as_str().expect("decision")).collect();
    assert_eq!(decisions, ["approved", "approved_with_changes", "deferred", "rejected"].into_iter().collect());
    for (_, e) in events.iter().filter(|(_, e)| e["source"] == "hitl") {
        assert_eq!(e["value"].is_null(), e["metadata"]["decision"] == "deferred", "{e}");
        assert!(!e["metadata"]["justification"].as_str().unwrap_or_default().is_empty());
    }
    for (id, e) in events.iter().filter(|(_, e)| e["source"] == "defect") {
        assert_eq!(e["target"]["task_id"].as_str(), Some(id.as_str()), "a defect by task id");
        assert_ne!(e["metadata"]["phase_injected"], e["metadata"]["phase_removed"]);
        assert!(e["metadata"]["defect_type"].as_str().is_some_and(|t| rltrace_core::reward::PSP_DEFECT_TYPES.contains(&t)), "{e}");
    }
    let carried: BTreeSet<&str> = events
        .iter()
        .filter(|(_, e)| e["metadata"].is_null() && e["target"].get("sequence_id").is_some() && (e["source"] == "terminal" || e["source"] == "judge"))
        .map(|(_, e)| e["target"]["strategy"].as_str().expect("strategy"))
        .collect();
    assert_eq!(carried, ["discounted", "last", "role", "uniform"].into_iter().collect(), "sequence rewards carried by spans, every strategy");
    let mut triplet_targeted = 0;
    for (id, e) in events.iter().filter(|(_, e)| e["metadata"]["fill"] == "triplet") {
        let tid = e["target"]["triplet_id"].as_str().expect("a triplet target");
        assert!(details[*id]["triplets"].as_array().expect("triplets").iter().any(|t| t["triplet_id"] == tid));
        triplet_targeted += 1;
    }
    assert_eq!(triplet_targeted, r("triplet"));

    // Pending rewards, sent before their triplets and sequences existed, are joined.
    let pending: Vec<&(&String, &Value)> = events.iter().filter(|(_, e)| e["metadata"]["fill"] == "pending").collect();
    assert_eq!(pending.len() as u64, r("pending_triplet") + r("pending_sequence"));
    let (mut joined_triplets, mut joined_sequences, mut before_spans) = (0, 0, 0);
    let latest_pending = pending.iter().map(|(_, e)| e["created_at"].as_str().expect("time")).max().expect("some pending");
    let earliest_callback = events
        .iter()
        .filter(|(_, e)| e["idempotency_key"].is_string() && e["metadata"]["fill"] != "pending")
        .map(|(_, e)| e["created_at"].as_str().expect("time"))
        .min()
        .expect("callbacks");
    assert!(latest_pending < earliest_callback, "pending rewards go first: {latest_pending} < {earliest_callback}");
    for (id, e) in pending {
        // Ledger order: the pending event was appended before the rewards its sequence's spans carry.
        let ledger = details[*id]["ledger"].as_array().expect("ledger");
        let at = ledger.iter().position(|l| l["reward_id"] == e["reward_id"]).expect("in the ledger");
        let carried: Vec<usize> = ledger.iter().enumerate().filter(|(_, l)| l["idempotency_key"].is_null()).map(|(i, _)| i).collect();
        assert!(carried.iter().all(|i| *i > at), "{id}: {ledger:?}");
        if !carried.is_empty() {
            before_spans += 1;
        }
        assert_eq!(e["pending"], false, "joined: {e}");
        let tid = match e["target"]["triplet_id"].as_str() {
            Some(t) => {
                joined_triplets += 1;
                t.to_string()
            }
            None => {
                assert_eq!(e["target"]["strategy"], "last");
                joined_sequences += 1;
                let ts = details[*id]["triplets"].as_array().expect("triplets");
                ts.last().expect("a triplet")["triplet_id"].as_str().expect("id").to_string()
            }
        };
        let t = get(&a, &format!("/api/v1/triplets/{tid}"));
        let ledger = t["ledger"].as_array().expect("ledger");
        assert!(ledger.iter().any(|l| l["reward_id"] == e["reward_id"]), "the pending reward reaches {tid}: {t}");
        assert!(t["reward_sources"].get(e["source"].as_str().expect("source")).is_some(), "{t}");
    }
    assert!(joined_triplets > 0 && joined_sequences > 0 && before_spans > 0, "{joined_triplets} {joined_sequences} {before_spans}");

    // The same seed on a fresh collector that refuses most requests at first (one request
    // decoded at a time, a writer queue of two): the same data, retries included.
    let b = Server::start(&["--max-concurrent-exports", "1", "--queue-ops", "2"]);
    let again = fill(&b, &["--triplets", "3000", "--sequences", "300", "--seed", "7", "--concurrency", "8", "--batch", "100"]);
    assert!(count(&again, "/retried_requests") > 0, "the collector answered 503 and the fill waited: {again}");
    for k in ["/triplets", "/spans", "/sequences", "/ledger_events", "/rewards"] {
        assert_eq!(again.pointer(k), summary.pointer(k), "{k}");
    }
    assert_eq!(get(&b, "/api/v1/stats")["triplets"], stats["triplets"]);
    assert_eq!(triplets(&b), triplets(&a), "the same triplets, states, actions and effective rewards");
    let ids_b = sequence_ids(&b);
    assert_eq!(ledger_contents(&self::details(&b, &ids_b)), ledger_contents(&details), "the same ledger");
}

#[test]
fn a_long_sequence_has_exactly_its_length_and_a_fill_sent_again_adds_nothing() {
    let s = Server::start(&[]);
    let args = ["--triplets", "1500", "--sequences", "5", "--long-sequence", "1200", "--seed", "11", "--batch", "256"];
    let summary = fill(&s, &args);
    assert_eq!(summary["long_sequence"], json!({"sequence_id": "task-0", "triplets": 1200}));
    let long = get(&s, "/api/v1/sequences/task-0");
    assert_eq!(count(&long, "/triplet_count"), 1200);
    let first = &long["triplets"].as_array().expect("triplets")[0];
    assert_eq!((first["sequence_index"].as_u64(), first["state"]["agent_role"].as_str()), (Some(0), Some("Planning")));
    let rest: u64 = (1..5).map(|n| count(&get(&s, &format!("/api/v1/sequences/task-{n}")), "/triplet_count")).sum();
    assert_eq!(rest, 300);
    let stats = get(&s, "/api/v1/stats");
    // Ids and idempotency keys derive from the seed: the same fill again stores nothing new.
    fill(&s, &args);
    assert_eq!(get(&s, "/api/v1/stats")["reward_events"], stats["reward_events"]);
    assert_eq!(get(&s, "/api/v1/stats")["spans"], stats["spans"]);
    // Impossible shapes are refused before anything is sent.
    let (ok, _, stderr) = common::run_cli(&s.dir, &["loadgen", "--fill", "--target", &s.http, "--triplets", "10", "--sequences", "5", "--long-sequence", "8"]);
    assert!(!ok && stderr.contains("--long-sequence"), "{stderr}");
    let (ok, _, stderr) = common::run_cli(&s.dir, &["loadgen", "--fill", "--target", &s.http, "--triplets", "10"]);
    assert!(!ok && stderr.contains("--sequences"), "{stderr}");
}
