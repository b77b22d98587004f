//! Cost of redaction per span: a realistic span of about 1 KB (10 attributes, a 500-byte JSON
//! `rl.state` holding an e-mail address and an API key, a JSON `gen_ai.input.messages`) under
//! masking and hashing rules that match four of its keys; the same span under rules that match
//! none of its keys (fresh clones, and one span again and again); and the masking detectors on
//! a 500-byte string with nothing to find and on 8 KB of prose with two findings.
//!
//! `cargo bench -p rltrace-core --bench redact -- --quick`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use rltrace_core::redact::{RedactionConfig, Redactor};
use rltrace_core::span::{AttrValue, Origin, SpanRecord};

fn state() -> String {
    let state = serde_json::json!({
        "task_id": "task-7f3a",
        "agent_role": "Code",
        "iteration": 3,
        "budget_remaining": 997,
        "pending_approvals": 2,
        "requester": "ann.lee@example.com",
        "env": {"OPENAI_API_KEY": "sk-proj-abcdefghijklmnopqrstuvwxyz0123", "region": "eu-west-1"},
        "history": ["opened the repository", "ran the tests: 41 passed, 2 failed", "asked for review"],
        "prompt_summary": "Fix the failing date parser in src/time.rs; keep the public API; add a regression test for 2026-12-02 and for the leap day. The reviewer wants small commits and a short description of each change.",
    })
    .to_string();
    assert!((450..=560).contains(&state.len()), "state is {} bytes", state.len());
    state
}

fn span() -> SpanRecord {
    let s = |v: &str| AttrValue::Str(v.to_string());
    let messages = r#"[{"role":"system","content":"You are a careful coding agent."},{"role":"user","content":"The tests fail since yesterday, can you look? Call me on +44 20 7946 0958 if needed."}]"#;
    let span = SpanRecord {
        trace_id: [1; 16],
        span_id: [2; 8],
        parent_span_id: None,
        name: "agent.Code.execute".into(),
        kind: 1,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_500_000_000,
        status_code: 1,
        status_message: String::new(),
        attributes: vec![
            ("rl.sequence_id".into(), s("task-7f3a")),
            ("rl.sequence_index".into(), AttrValue::Int(3)),
            ("rl.state".into(), AttrValue::Str(state())),
            ("rl.action".into(), s(r#"{"tool":"run_tests","args":{"path":"src/time.rs"},"success":true,"duration_ms":13}"#)),
            ("gen_ai.input.messages".into(), s(messages)),
            ("gen_ai.request.model".into(), s("gpt-4.1")),
            ("user.email".into(), s("ann.lee@example.com")),
            ("rl.reward.success".into(), AttrValue::Double(1.0)),
            ("code.function".into(), s("execute")),
            ("rl.sequence_end".into(), AttrValue::Bool(false)),
        ],
        events: Vec::new(),
        origin: Arc::new(Origin::default()),
        extras: Default::default(),
    };
    let bytes: usize = span.attributes.iter().map(|(k, v)| k.len() + v.largest_payload()).sum();
    assert!((950..=1200).contains(&bytes), "the span's attributes are {bytes} bytes");
    span
}

fn redactor(toml_text: &str) -> Redactor {
    Redactor::new(&toml::from_str::<RedactionConfig>(toml_text).expect("config")).expect("redactor")
}

fn bench(c: &mut Criterion) {
    let masking = redactor("[[rules]]\nkeys = [\"rl.state\", \"rl.action\", \"gen_ai.*.messages\"]\naction = \"mask\"\n[[rules]]\nkeys = [\"user.email\"]\naction = \"hash\"");
    let unmatched = redactor("[[rules]]\nkeys = [\"secret.*\", \"llm.input_messages.*\", \"http.request.header.authorization\"]\naction = \"mask\"\n[[rules]]\nkeys = [\"enduser.id\"]\naction = \"hash\"");
    let base = span();

    let mut check = base.clone();
    masking.apply(&mut check);
    let state = check.attr("rl.state").and_then(AttrValue::as_str).unwrap_or_default().to_string();
    assert!(state.contains("[REDACTED:email]") && state.contains("[REDACTED:api_key]"), "{state}");
    assert!(serde_json::from_str::<serde_json::Value>(&state).is_ok(), "rl.state stays JSON");
    let mut same = base.clone();
    unmatched.apply(&mut same);
    assert_eq!(same, base);

    c.bench_function("redact: 1 KB span, 4 keys masked or hashed", |b| {
        b.iter_batched_ref(|| base.clone(), |s| masking.apply(black_box(s)), BatchSize::SmallInput)
    });
    c.bench_function("redact: 1 KB span, no rule matches", |b| {
        b.iter_batched_ref(|| base.clone(), |s| unmatched.apply(black_box(s)), BatchSize::SmallInput)
    });
    // Nothing changes, so one span can be reused: the cost without cache misses on fresh clones.
    let mut hot = base.clone();
    c.bench_function("redact: 1 KB span, no rule matches, same span (hot cache)", |b| b.iter(|| unmatched.apply(black_box(&mut hot))));
    let clean = "The tests fail since yesterday, can you look at the date parser? It rejects leap days and the reviewer wants a regression test. ".repeat(4);
    c.bench_function("redact: mask_text on 500 bytes with nothing to find", |b| b.iter(|| masking.mask_text(black_box(&clean)).len()));
    // An LLM answer of 8 KB: prose with numbers, a date, a version, a time, two findings.
    let mut long = String::new();
    while long.len() < 8000 {
        long.push_str("Step 12 of 40: the parser in src/time.rs (v1.2.3) rejected 2026-12-02 at 10:30; 3 of 41 tests failed, so I changed the leap-day branch and ran them again. ");
    }
    long.push_str("Contact ann.lee@example.com or +44 20 7946 0958.");
    let masked = masking.mask_text(&long);
    assert!(masked.contains("[REDACTED:email]") && masked.contains("[REDACTED:phone]") && !masked.contains("[REDACTED:ip]"), "{masked}");
    c.bench_function("redact: mask_text on 8 KB of prose with two findings", |b| b.iter(|| masking.mask_text(black_box(&long)).len()));
}

criterion_group!(benches, bench);
criterion_main!(benches);
