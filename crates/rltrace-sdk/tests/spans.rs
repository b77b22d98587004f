//! The spans `#[rl_triplet]` and the helpers emit, asserted through the OpenTelemetry SDK's
//! in-memory exporter: wire attributes, state and action objects, errors and panics, sequence
//! scopes and indexes under concurrency, nesting across `.await`, capture mode, reward events.

mod common;

use std::collections::BTreeSet;

use common::*;
use opentelemetry::trace::{SpanKind, Status};
use rltrace_sdk::{Strategy, rl_triplet};
use serde::Serialize;
use serde_json::json;
use sha2::Digest;

fn setup() {
    install(|b| b);
}

#[derive(Serialize, Clone)]
struct Spec {
    title: String,
    pages: u32,
}

#[rl_triplet(role = "Plan", task_id = task)]
fn plan(task: &str, spec: &Spec, budget: u32) -> Vec<String> {
    (0..spec.pages.min(budget)).map(|i| format!("{}-{i}", spec.title)).collect()
}

#[test]
fn a_sync_call_is_one_triplet_with_the_wire_attributes() {
    setup();
    let spec = Spec { title: "login".into(), pages: 2 };
    let out = plan("t-sync", &spec, 5);
    assert_eq!(out, vec!["login-0", "login-1"]);
    let s = only("t-sync");
    assert_eq!(s.name, "plan");
    assert_eq!(s.span_kind, SpanKind::Internal);
    let id = attr_str(&s, "rl.triplet_id").unwrap_or_default();
    let uuid = uuid_parse(&id);
    assert!(uuid, "uuid v4: {id}");
    assert_eq!(attr_str(&s, "rl.sequence_scope").as_deref(), Some("pipeline"));
    assert_eq!(attr_i64(&s, "rl.sequence_index"), Some(0));
    let ts = attr_str(&s, "rl.timestamp_utc").unwrap_or_default();
    assert!(ts.len() == 27 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
    assert_eq!(attr_f64(&s, "rl.sampling.probability"), Some(1.0));
    let state = attr_json(&s, "rl.state");
    assert_eq!(state, json!({"agent_role": "Plan", "function": "plan", "call_depth": 0, "task_id": "t-sync", "args": {"task": "t-sync", "spec": {"title": "login", "pages": 2}, "budget": 5}}));
    let action = attr_json(&s, "rl.action");
    assert_eq!(action["success"], true);
    assert!(action["duration_ms"].as_f64().is_some_and(|d| d >= 0.0));
    let out_json = serde_json::to_string(&out).unwrap_or_default();
    assert_eq!(action["output_size"], out_json.len());
    assert_eq!(action["output_sha256"], hex(&sha2::Sha256::digest(out_json.as_bytes())));
    assert_eq!(action["output"], json!(["login-0", "login-1"]));
    assert_eq!(attr_f64(&s, "rl.reward.success"), Some(1.0));
    assert_eq!(attr_f64(&s, "rl.reward.latency"), Some(1.0));
    assert!(attr(&s, "rl.reward").is_none(), "no weights configured: the collector combines the components");
    assert_eq!(s.status, Status::Unset);
}

fn uuid_parse(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 36 && b[14] == b'4' && [8, 13, 18, 23].iter().all(|i| b[*i] == b'-') && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug)]
struct Broken(&'static str);

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "broken: {}", self.0)
    }
}

#[rl_triplet(role = "Code", task_id = "t-err")]
fn failing(fail: bool) -> Result<u32, Broken> {
    if fail {
        return Err(Broken("no compiler"));
    }
    let n: u32 = "7".parse().map_err(|_| Broken("parse"))?;
    Ok(n)
}

#[test]
fn err_results_record_type_message_status_and_reward() {
    setup();
    assert_eq!(failing(false).ok(), Some(7));
    assert!(failing(true).is_err());
    let v = sequence("t-err");
    assert_eq!(v.len(), 2);
    assert_eq!(attr_json(&v[0], "rl.action")["output"], 7);
    let a = attr_json(&v[1], "rl.action");
    assert_eq!(a["success"], false);
    assert_eq!(a["error_type"], "spans::Broken");
    assert_eq!(a["error_message"], "broken: no compiler");
    assert!(a.get("output").is_none());
    assert_eq!(attr_f64(&v[1], "rl.reward.success"), Some(0.0));
    assert_eq!(v[1].status, Status::error("broken: no compiler"));
}

#[rl_triplet(role = "Test", task_id = "t-panic")]
fn panicking(n: u32) -> u32 {
    if n > 1 {
        panic!("too many: {n}");
    }
    n
}

#[test]
fn panics_are_recorded_and_resumed() {
    setup();
    let r = std::panic::catch_unwind(|| panicking(3));
    let msg = r.err().and_then(|p| p.downcast_ref::<String>().cloned());
    assert_eq!(msg.as_deref(), Some("too many: 3"), "the panic reaches the caller unchanged");
    let s = only("t-panic");
    let a = attr_json(&s, "rl.action");
    assert_eq!(a["success"], false);
    assert_eq!(a["panic"], true);
    assert_eq!(a["error_type"], "panic");
    assert_eq!(a["error_message"], "too many: 3");
}

#[rl_triplet(role = "Orchestrator", task_id = task)]
async fn orchestrate(task: String, workers: usize) -> usize {
    let mut handles = Vec::new();
    for i in 0..workers {
        // Spawned tasks keep the triplet's context: it travels in the OpenTelemetry Context.
        let cx = opentelemetry::Context::current();
        handles.push(tokio::spawn(opentelemetry::context::FutureExt::with_context(work(i), cx)));
    }
    let mut done = 0;
    for h in handles {
        done += h.await.unwrap_or(0);
    }
    review().await;
    done
}

#[rl_triplet(role = "Worker")]
async fn work(i: usize) -> usize {
    tokio::time::sleep(std::time::Duration::from_millis((i % 3) as u64)).await;
    1
}

#[rl_triplet(role = "Review", scope = agent)]
async fn review() {
    tokio::task::yield_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nested_async_calls_share_the_sequence_with_distinct_indexes() {
    setup();
    assert_eq!(orchestrate("t-async".into(), 20).await, 20);
    let v = sequence("t-async");
    assert_eq!(v.len(), 21, "orchestrator and 20 workers");
    let idx: Vec<i64> = v.iter().filter_map(|s| attr_i64(s, "rl.sequence_index")).collect();
    assert_eq!(idx, (0..21).collect::<Vec<_>>(), "gap-free indexes in start order");
    let root = &v[0];
    assert_eq!(root.name, "orchestrate");
    for w in &v[1..] {
        assert_eq!(w.name, "work");
        assert_eq!(w.parent_span_id, root.span_context.span_id());
        assert_eq!(w.span_context.trace_id(), root.span_context.trace_id());
        let st = attr_json(w, "rl.state");
        assert_eq!(st["call_depth"], 1);
        assert_eq!(st["task_id"], "t-async", "the task id is inherited");
    }
    // The agent-scoped child forms its own sequence from the inherited task id and its role.
    let r = only("t-async:Review");
    assert_eq!(attr_str(&r, "rl.sequence_scope").as_deref(), Some("agent"));
    assert_eq!(r.parent_span_id, root.span_context.span_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_of_one_sequence_get_unique_indexes() {
    setup();
    let mut hs = Vec::new();
    for _ in 0..8 {
        hs.push(tokio::spawn(async {
            for _ in 0..25 {
                keyed_worker().await;
            }
        }));
    }
    for h in hs {
        let _ = h.await;
    }
    let idx: BTreeSet<i64> = sequence("t-concurrent").iter().filter_map(|s| attr_i64(s, "rl.sequence_index")).collect();
    assert_eq!(idx, (0..200).collect::<BTreeSet<_>>());
}

#[rl_triplet(task_id = "t-concurrent")]
async fn keyed_worker() {
    tokio::task::yield_now().await;
}

#[rl_triplet(scope = session, session_id = user.session.clone())]
fn chat(user: &User, message: &str) -> usize {
    message.len()
}

#[derive(Serialize)]
struct User {
    name: String,
    session: String,
}

#[rl_triplet(sequence_id = format!("episode-{id}"), name = "custom.step", skip(secret))]
fn custom_step(id: u32, secret: &str) -> bool {
    !secret.is_empty()
}

#[test]
fn scopes_form_the_sequence_id() {
    setup();
    let u = User { name: "ana".into(), session: "sess-9".into() };
    chat(&u, "hello");
    let s = only("sess-9");
    assert_eq!(attr_str(&s, "rl.sequence_scope").as_deref(), Some("session"));
    assert_eq!(attr_json(&s, "rl.state")["session_id"], "sess-9");
    assert!(attr_json(&s, "rl.state").get("agent_role").is_none());

    custom_step(3, "hunter2");
    let s = only("episode-3");
    assert_eq!(s.name, "custom.step");
    assert_eq!(attr_str(&s, "rl.sequence_scope").as_deref(), Some("custom"));
    assert_eq!(attr_json(&s, "rl.state")["args"], json!({"id": 3}), "skipped arguments are not captured");
}

#[test]
fn a_root_triplet_without_key_uses_its_trace_id() {
    setup();
    #[rl_triplet(name = "keyless")]
    fn keyless(marker: &str) -> usize {
        marker.len()
    }
    keyless("root-trace-marker");
    let s = spans()
        .into_iter()
        .find(|s| attr_json(s, "rl.state")["args"]["marker"] == "root-trace-marker")
        .expect("span");
    assert_eq!(attr_str(&s, "rl.sequence_id"), Some(s.span_context.trace_id().to_string()));
}

fn summarize_state(repo: &Repo, path: &&str) -> serde_json::Value {
    json!({"repo": repo.name, "path_len": path.len()})
}

fn summarize_action(out: &Result<String, std::io::Error>) -> serde_json::Value {
    json!({"chars": out.as_ref().map(|s| s.len()).unwrap_or(0)})
}

struct Repo {
    name: String,
    files: Vec<String>,
}

impl Repo {
    #[rl_triplet(role = "Data", task_id = "t-method", state = summarize_state, action = summarize_action)]
    fn read(&self, path: &str) -> Result<String, std::io::Error> {
        Ok(format!("{}/{path}", self.name))
    }

    #[rl_triplet(role = "Data", task_id = "t-method")]
    fn last_mut(&mut self) -> Option<&mut String> {
        self.files.last_mut()
    }

    #[rl_triplet(role = "Data", task_id = "t-method-async")]
    async fn count(&self) -> usize {
        self.files.len()
    }
}

#[tokio::test]
async fn methods_and_custom_capturers() {
    setup();
    let mut repo = Repo { name: "app".into(), files: vec!["a.rs".into()] };
    assert_eq!(repo.read("src/main.rs").ok().as_deref(), Some("app/src/main.rs"));
    if let Some(f) = repo.last_mut() {
        f.push('!');
    }
    assert_eq!(repo.files[0], "a.rs!");
    assert_eq!(repo.count().await, 1);
    let v = sequence("t-method");
    assert_eq!(v.len(), 2);
    assert_eq!(attr_json(&v[0], "rl.state")["args"], json!({"repo": "app", "path_len": 11}));
    assert_eq!(attr_json(&v[0], "rl.action")["output"], json!({"chars": 15}));
    assert_eq!(attr_json(&v[1], "rl.state")["function"], "last_mut");
    assert_eq!(only("t-method-async").name, "count");
}

#[rl_triplet(role = "Code", task_id = "t-helpers")]
fn with_helpers(fail_validation: bool) -> u8 {
    rltrace_sdk::state("phase", "implementation");
    rltrace_sdk::action("files_changed", &3);
    rltrace_sdk::reward_component("validation", if fail_validation { 0.0 } else { 1.0 }).expect("component");
    rltrace_sdk::reward_component("cost", 0.25).expect("component");
    rltrace_sdk::reward(0.9).source("judge").reason("clean diff").emit().expect("reward");
    rltrace_sdk::reward(1.0).source("terminal").for_sequence(Strategy::Discounted { gamma: 0.5 }).emit().expect("reward");
    assert!(rltrace_sdk::reward(1.5).emit().is_err());
    assert!(rltrace_sdk::reward(0.5).source("Bad Source").emit().is_err());
    assert!(rltrace_sdk::reward_component("cost", f64::NAN).is_err());
    assert_eq!(rltrace_sdk::current_sequence_id().as_deref(), Some("t-helpers"));
    assert!(rltrace_sdk::current_triplet_id().is_some());
    rltrace_sdk::end_sequence();
    1
}

#[test]
fn helpers_add_fields_components_events_and_end_the_sequence() {
    setup();
    with_helpers(false);
    let s = only("t-helpers");
    assert_eq!(attr_json(&s, "rl.state")["phase"], "implementation");
    assert_eq!(attr_json(&s, "rl.action")["files_changed"], 3);
    assert_eq!(attr_f64(&s, "rl.reward.validation"), Some(1.0));
    assert_eq!(attr_f64(&s, "rl.reward.cost"), Some(0.25));
    assert_eq!(attr(&s, "rl.sequence_end").map(|v| v.to_string()).as_deref(), Some("true"));
    let events: Vec<_> = s.events.iter().filter(|e| e.name == "rl.reward").collect();
    assert_eq!(events.len(), 2);
    let ev = |i: usize, k: &str| events[i].attributes.iter().find(|kv| kv.key.as_str() == k).map(|kv| kv.value.to_string());
    assert_eq!(ev(0, "rl.reward.value").as_deref(), Some("0.9"));
    assert_eq!(ev(0, "rl.reward.source").as_deref(), Some("judge"));
    assert_eq!(ev(0, "rl.reward.target").as_deref(), Some("triplet"));
    assert_eq!(ev(0, "rl.reward.reason").as_deref(), Some("clean diff"));
    assert_eq!(ev(1, "rl.reward.target").as_deref(), Some("sequence"));
    assert_eq!(ev(1, "rl.reward.strategy").as_deref(), Some("discounted"));
    assert_eq!(ev(1, "rl.reward.gamma").as_deref(), Some("0.5"));
    // The sequence ended, so its counter restarts.
    with_helpers(true);
    let idx: Vec<i64> = sequence("t-helpers").iter().filter_map(|s| attr_i64(s, "rl.sequence_index")).collect();
    assert_eq!(idx, vec![0, 0]);
}

#[rl_triplet(task_id = "t-capture")]
fn echo(text: String) -> String {
    text
}

#[test]
fn long_strings_follow_the_default_capture_mode() {
    setup();
    let long = "é".repeat(800);
    echo(long.clone());
    let s = only("t-capture");
    let arg = attr_json(&s, "rl.state")["args"]["text"].as_str().map(str::to_string).unwrap_or_default();
    assert_eq!(arg.chars().count(), 501, "truncate:500 keeps 500 characters and an ellipsis");
    let a = attr_json(&s, "rl.action");
    assert_eq!(a["output"].as_str().map(|s| s.chars().count()), Some(501));
    let full = serde_json::to_string(&long).unwrap_or_default();
    assert_eq!(a["output_size"], full.len(), "size and hash are of the full output");
    assert_eq!(a["output_sha256"], hex(&sha2::Sha256::digest(full.as_bytes())));
}

#[test]
fn helpers_outside_a_triplet_do_nothing() {
    setup();
    rltrace_sdk::state("k", "v");
    rltrace_sdk::end_sequence();
    assert!(rltrace_sdk::current_triplet_id().is_none());
    assert!(matches!(rltrace_sdk::reward(0.5).emit(), Err(rltrace_sdk::Error::NoCurrentTriplet)));
}

#[rl_triplet(role = "Num\"ber", task_id = n)]
fn numbered(n: u64) {}

#[rl_triplet(role = "Lit", task_id = "t-\"quoted\"\n")]
fn quoted() {}

#[test]
fn keys_from_numbers_and_escaped_literals_and_repeated_states() {
    setup();
    numbered(4242);
    numbered(4242);
    let spans = sequence("4242");
    assert_eq!(spans.len(), 2);
    for s in &spans {
        assert_eq!(attr_json(s, "rl.state"), json!({"agent_role": "Num\"ber", "function": "numbered", "call_depth": 0, "task_id": "4242", "args": {"n": 4242}}));
        assert_eq!(attr_json(s, "rl.action")["success"], true);
        assert!(attr_json(s, "rl.action").get("output").is_none());
    }
    let idx: BTreeSet<i64> = spans.iter().filter_map(|s| attr_i64(s, "rl.sequence_index")).collect();
    assert_eq!(idx, BTreeSet::from([0, 1]));
    quoted();
    let s = only("t-\"quoted\"\n");
    assert_eq!(attr_json(&s, "rl.state"), json!({"agent_role": "Lit", "function": "quoted", "call_depth": 0, "task_id": "t-\"quoted\"\n"}));
}
