//! Configuration from the environment: every bad `RLTRACE_*` or `OTEL_EXPORTER_OTLP_PROTOCOL`
//! value is a clear startup error. Each case runs this test binary again as a child process
//! with the variable set (the environment of a running test process is not changed).

use std::process::Command;

const CHILD: &str = "RLTRACE_SDK_CONFIG_CHILD";

fn run_child(vars: &[(&str, &str)]) -> String {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "child_install", "--nocapture", "--test-threads=1"]).env(CHILD, "1");
    for v in [
        "RLTRACE_CAPTURE",
        "RLTRACE_REWARD_WEIGHTS",
        "RLTRACE_LATENCY_BUDGET_MS",
        "RLTRACE_SAMPLING_RATIO",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "AGL_ROLLOUT_ID",
        "AGL_ATTEMPT_ID",
        "AGL_EVENT_URL",
    ] {
        cmd.env_remove(v);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.split_once("RESULT:").and_then(|(_, r)| r.lines().next()).map(str::to_string).unwrap_or_else(|| format!("no result in {stdout:?}"))
}

#[test]
fn bad_values_are_clear_startup_errors() {
    let cases: [(&str, &str, &str); 8] = [
        ("RLTRACE_SAMPLING_RATIO", "1.5", "invalid RLTRACE_SAMPLING_RATIO: expected a number in [0, 1], got \"1.5\""),
        ("RLTRACE_CAPTURE", "everything", "invalid RLTRACE_CAPTURE: expected full, truncate:N, hash or none, got \"everything\""),
        ("RLTRACE_CAPTURE", "truncate:0", "invalid RLTRACE_CAPTURE: truncate length must be a positive integer, got \"0\""),
        ("RLTRACE_REWARD_WEIGHTS", r#"{"success":"high"}"#, "invalid RLTRACE_REWARD_WEIGHTS: weight of \"success\" must be a number, got \"high\""),
        ("RLTRACE_LATENCY_BUDGET_MS", "fast", "invalid RLTRACE_LATENCY_BUDGET_MS: expected a positive integer of milliseconds, got \"fast\""),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "pigeon", "invalid OTEL_EXPORTER_OTLP_PROTOCOL: expected grpc, http/protobuf or http/json, got \"pigeon\""),
        ("AGL_EVENT_URL", "http://127.0.0.1:9/api/rollouts/r1", "invalid AGL_EVENT_URL: expected .../rollouts/{rollout_id}/attempt/{attempt_id}/events, got \"http://127.0.0.1:9/api/rollouts/r1\""),
        ("AGL_ROLLOUT_ID", "r1", "invalid AGL_ATTEMPT_ID: AGL_ROLLOUT_ID and AGL_ATTEMPT_ID must be set together"),
    ];
    for (var, value, expected) in cases {
        assert_eq!(run_child(&[(var, value)]), expected, "{var}={value}");
    }
}

#[test]
fn good_values_are_read() {
    let r = run_child(&[
        ("RLTRACE_CAPTURE", "hash"),
        ("RLTRACE_REWARD_WEIGHTS", r#"{"success":0.4,"latency":0.2,"cost":0.2,"validation":0.2}"#),
        ("RLTRACE_LATENCY_BUDGET_MS", "1500"),
        ("RLTRACE_SAMPLING_RATIO", "0.25"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
    ]);
    assert_eq!(r, "ok capture=hash budget_ms=1500 ratio=0.25 success_weight=Some(0.4) protocol=HttpJson");
}

/// Runs only as the child of the tests above.
#[test]
fn child_install() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let b = rltrace_sdk::builder();
    let settings = b.settings();
    let protocol = b.resolved_protocol();
    let result = match (settings, protocol, b.install()) {
        (Ok(s), Ok(p), Ok(guard)) => {
            drop(guard);
            format!(
                "ok capture={} budget_ms={} ratio={} success_weight={:?} protocol={p:?}",
                s.capture,
                s.latency_budget.as_millis(),
                s.sampling_ratio,
                s.reward_weights.as_ref().and_then(|w| w.get("success"))
            )
        }
        (_, _, Err(e)) => e.to_string(),
        (Err(e), _, _) | (_, Err(e), _) => e.to_string(),
    };
    println!("\nRESULT:{result}");
}
