//! The collector's config file (`--config`, TOML: `[auth]`, `[redaction]`, `[retention]`,
//! `[[forward]]`, `[agentlightning]`) and
//! redaction itself: any text is a config or an error; a config's keys and redaction rules build
//! or fail with a message; redacting a span whose values come from the input never panics, and
//! a masked JSON object stays a JSON object.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use rltrace_core::redact::{RedactionConfig, Redactor, RuleConfig};
use rltrace_core::span::{AttrValue, Origin, SpanEvent, SpanRecord};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = rltrace_server::config::Config::from_toml(text) {
        let _ = rltrace_server::auth::Auth::from_config(&config.auth, |_| Some("fuzzing-key-0123456789".into()));
        let redactor = config.redactor().expect("a config that parsed has rules that compile");
        let _ = redactor.hash();
        let _ = config.retention.cutoffs(1_700_000_000_000_000);
        let _ = config.targets(|_| Some("fuzzing".into()));
    }
    // Every action on values made of the input, plain and inside JSON.
    let masker = |action: &str| {
        Redactor::new(&RedactionConfig { rules: vec![RuleConfig { keys: vec!["*".into()], action: action.into() }], ..RedactionConfig::default() })
            .expect("built-in rules compile")
    };
    let json = serde_json::json!({"text": text, "list": [text, 1, {"k": text}]}).to_string();
    for action in ["mask", "hash", "truncate:7", "drop"] {
        let r = masker(action);
        let mut span = SpanRecord {
            trace_id: [1; 16],
            span_id: [1; 8],
            parent_span_id: None,
            name: "fuzz".into(),
            kind: 1,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            status_code: 0,
            status_message: String::new(),
            attributes: vec![("plain".into(), AttrValue::Str(text.into())), ("rl.state".into(), AttrValue::Str(json.clone()))],
            events: vec![SpanEvent { name: "e".into(), time_unix_nano: 1, attributes: vec![("e".into(), AttrValue::Str(text.into()))] }],
            origin: Arc::new(Origin::default()),
            extras: Default::default(),
        };
        r.apply(&mut span);
        if action != "drop" {
            let state = span.attributes.iter().find(|(k, _)| k == "rl.state").and_then(|(_, v)| v.as_str()).expect("kept");
            let v: serde_json::Value = serde_json::from_str(state).expect("JSON stays JSON");
            assert!(v.is_object(), "an object stays an object");
        } else {
            assert!(span.attributes.is_empty());
        }
    }
});
