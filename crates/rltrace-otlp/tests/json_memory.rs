//! OTLP/JSON decoding costs memory near the size of what it keeps, not a whole JSON value tree
//! (DESIGN section 4: memory stays bounded for JSON bodies too). A value tree of a load-generator
//! body costs about fifteen times the body; the typed decoder about one and a half times.
//!
//! Decoded in parts (`decode_in_parts`), a large body costs less than its own size.
//!
//! Alone in its test binary so that the process's peak RSS (`VmHWM`) measures these decodes only.

#[cfg(target_os = "linux")]
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM line");
    let kb: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmHWM in kB");
    kb * 1024
}

/// An OTLP/JSON body of `spans` load-generator-like spans (about 1.4 KB each), written as text so
/// that building it costs no more than the body.
#[cfg(target_os = "linux")]
fn body(spans: u64) -> Vec<u8> {
    use std::fmt::Write;
    let filler = "x".repeat(300);
    let mut out = String::with_capacity(spans as usize * 1500 + 200);
    out.push_str(r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"mem"}}]},"scopeSpans":[{"scope":{"name":"mem"},"spans":["#);
    for n in 0..spans {
        if n > 0 {
            out.push(',');
        }
        let state = format!(r#"{{\"task_id\":\"task-{n}\",\"agent_role\":\"Code\",\"iteration\":3,\"budget_remaining\":900,\"pending_approvals\":2,\"prompt_summary\":\"{filler}\"}}"#);
        let action = format!(r#"{{\"success\":true,\"duration_ms\":12,\"output_size\":300,\"output_hash\":\"sha256:{n:064x}\"}}"#);
        let _ = write!(
            out,
            r#"{{"traceId":"5B8EFFF798038103D269B633{:08X}","spanId":"{:016X}","name":"agent.Code.execute","kind":"SPAN_KIND_INTERNAL","startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000000500000","status":{{"code":1}},"attributes":[{{"key":"rl.sequence_id","value":{{"stringValue":"task-{n}"}}}},{{"key":"rl.sequence_index","value":{{"intValue":"{n}"}}}},{{"key":"rl.sequence_scope","value":{{"stringValue":"pipeline"}}}},{{"key":"rl.state","value":{{"stringValue":"{state}"}}}},{{"key":"rl.action","value":{{"stringValue":"{action}"}}}},{{"key":"rl.state.agent_role","value":{{"stringValue":"Code"}}}},{{"key":"rl.reward.success","value":{{"doubleValue":1.0}}}},{{"key":"rl.reward.latency","value":{{"doubleValue":0.8}}}},{{"key":"code.function","value":{{"stringValue":"execute"}}}},{{"key":"rl.sequence_end","value":{{"boolValue":false}}}}]}}"#,
            n / 16,
            n + 1
        );
    }
    out.push_str("]}]}]}");
    out.into_bytes()
}

#[cfg(target_os = "linux")]
#[test]
fn decoding_a_json_body_costs_a_small_multiple_of_its_size_and_in_parts_less_than_it() {
    const SPANS: u64 = 10_000;
    let body = body(SPANS);
    assert!(body.len() > 12 << 20, "a body of {} bytes", body.len());
    assert!(body.len() > rltrace_otlp::DECODE_WHOLE_MAX);

    // In parts first (the peak only grows): a part of 2,048 spans at a time exists decoded.
    let before = peak_rss_bytes();
    let mut seen = 0;
    rltrace_otlp::decode_in_parts(rltrace_otlp::Encoding::Json, &body, 2048, |part| {
        assert!(part.spans.len() <= 2048);
        seen += part.spans.len() as u64;
        Ok::<(), String>(())
    })
    .expect("valid OTLP/JSON");
    let grown_in_parts = peak_rss_bytes().saturating_sub(before);
    assert_eq!(seen, SPANS);
    assert!(
        grown_in_parts < body.len() as u64 / 2,
        "decoding {} MB of OTLP/JSON in parts raised the peak RSS by {} MB",
        body.len() >> 20,
        grown_in_parts >> 20
    );

    let before = peak_rss_bytes();
    let req = rltrace_otlp::decode_json(&body).expect("valid OTLP/JSON");
    let grown = peak_rss_bytes().saturating_sub(before);
    let spans = rltrace_otlp::request_to_spans(req);
    assert_eq!((spans.spans.len() as u64, spans.rejected.len()), (SPANS, 0));
    assert_eq!(spans.spans[SPANS as usize - 1].attributes.len(), 10);
    // The decoded request itself is about 1.5x the body; a JSON value tree is about 15x.
    assert!(
        grown < 3 * body.len() as u64,
        "decoding {} MB of OTLP/JSON raised the peak RSS by {} MB",
        body.len() >> 20,
        grown >> 20
    );
}
