//! API keys and scopes end to end (`[auth]` of `--config`): the official OpenTelemetry exporters
//! (Rust over OTLP/HTTP and gRPC, Python over OTLP/HTTP) carrying the key, the REST API by route,
//! the metrics, the web UI's sign-in and session cookie, the SDKs' reward clients, and the
//! refusal to listen beyond loopback without keys.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, bin, client, wait_until};
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const INGEST_KEY: &str = "ingest-key-0123456789abcdef";
const RW_KEY: &str = "reviewer-key-0123456789abcdef";
const ADMIN_KEY: &str = "admin-key-0123456789abcdef";
const RW_ENV: &str = "RLTRACE_TEST_RW_KEY";

fn sha(k: &str) -> String {
    Sha256::digest(k.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The config file: an ingest key by digest, a read+write key from the environment, an admin key.
fn config(dir: &Path) -> PathBuf {
    let path = dir.join("rltrace.toml");
    let text = format!(
        "[auth]\nsession_hours = 1\n\n[[auth.keys]]\nname = \"otel\"\nscopes = [\"ingest\"]\nsha256 = \"{}\"\n\n[[auth.keys]]\nname = \"reviewer\"\nscopes = [\"read\", \"write\"]\nenv = \"{RW_ENV}\"\n\n[[auth.keys]]\nname = \"ops\"\nscopes = [\"admin\", \"read\"]\nsha256 = \"{}\"\n",
        sha(INGEST_KEY),
        sha(ADMIN_KEY)
    );
    std::fs::write(&path, text).expect("config");
    path
}

/// A collector with keys, its log kept.
fn start(dir: &tempfile::TempDir) -> Server {
    let cfg = config(dir.path());
    Server::start_logged_env(&["--config", cfg.to_str().expect("utf-8")], &[(RW_ENV, RW_KEY)])
}

fn get(url: &str, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = client().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().expect("request");
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    (status, h, resp.text().unwrap_or_default())
}

fn post(url: &str, headers: &[(&str, &str)], body: &Value) -> (u16, Value) {
    let mut req = client().post(url).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().expect("request");
    let status = resp.status().as_u16();
    (status, serde_json::from_str(&resp.text().unwrap_or_default()).unwrap_or(Value::Null))
}

fn bearer(k: &str) -> String {
    format!("Bearer {k}")
}

#[derive(Debug, Default)]
struct ExportLog {
    ok: usize,
    errors: Vec<String>,
}

#[derive(Debug)]
struct Recorded<E> {
    inner: E,
    log: Arc<Mutex<ExportLog>>,
}

impl<E: SpanExporter> SpanExporter for Recorded<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let r = self.inner.export(batch).await;
        let mut log = self.log.lock().expect("log");
        match &r {
            Ok(()) => log.ok += n,
            Err(e) => log.errors.push(e.to_string()),
        }
        r
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
}

/// Three triplet spans of `sequence` through `exporter`; what the exporter reported.
fn emit<E: SpanExporter + 'static>(exporter: E, sequence: &str) -> ExportLog {
    let log = Arc::new(Mutex::new(ExportLog::default()));
    let provider = SdkTracerProvider::builder().with_simple_exporter(Recorded { inner: exporter, log: Arc::clone(&log) }).build();
    let tracer = provider.tracer("auth-test");
    for i in 0..3i64 {
        let mut span = tracer.start(format!("step-{i}"));
        span.set_attribute(KeyValue::new("rl.sequence_id", sequence.to_string()));
        span.set_attribute(KeyValue::new("rl.sequence_index", i));
        span.set_attribute(KeyValue::new("rl.state", "{\"agent_role\":\"Code\"}"));
        span.set_attribute(KeyValue::new("rl.action", "{\"ok\":true}"));
        span.end();
    }
    let _ = provider.shutdown();
    let mut log = log.lock().expect("log");
    std::mem::take(&mut *log)
}

fn http_exporter(s: &Server, key: Option<&str>) -> opentelemetry_otlp::SpanExporter {
    let mut b = opentelemetry_otlp::SpanExporter::builder().with_http().with_endpoint(s.url("/v1/traces")).with_timeout(Duration::from_secs(10));
    if let Some(k) = key {
        b = b.with_headers(HashMap::from([("authorization".to_string(), bearer(k))]));
    }
    b.build().expect("exporter")
}

fn triplets_of(s: &Server, sequence: &str) -> i64 {
    let (status, _, body) = get(&s.url(&format!("/api/v1/sequences/{sequence}")), &[("authorization", &bearer(RW_KEY))]);
    if status != 200 {
        return 0;
    }
    serde_json::from_str::<Value>(&body).map(|v| v["triplet_count"].as_i64().unwrap_or(0)).unwrap_or(0)
}

#[test]
fn official_exporters_carry_the_key_and_a_wrong_or_missing_key_is_final() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(&dir);

    // Rust, OTLP/HTTP protobuf: with the key every span is stored.
    let log = emit(http_exporter(&s, Some(INGEST_KEY)), "auth-http");
    assert_eq!((log.ok, log.errors.len()), (3, 0), "{log:?}");
    assert_eq!(triplets_of(&s, "auth-http"), 3);

    // Without a key, or with a key of another scope: refused, nothing stored, no retry loop.
    let started = Instant::now();
    let log = emit(http_exporter(&s, None), "auth-none");
    assert_eq!(log.ok, 0);
    assert_eq!(log.errors.len(), 3, "{log:?}");
    assert!(log.errors.iter().all(|e| e.contains("401")), "{log:?}");
    let log = emit(http_exporter(&s, Some(RW_KEY)), "auth-scope");
    assert!(log.errors.iter().all(|e| e.contains("403")), "{log:?}");
    assert!(started.elapsed() < Duration::from_secs(8), "refusals are final: {:?}", started.elapsed());
    assert_eq!(triplets_of(&s, "auth-none") + triplets_of(&s, "auth-scope"), 0);

    // The raw answer is an OTLP Status in the request's encoding.
    let resp = client().post(s.url("/v1/traces")).header("content-type", "application/json").body("{}").send().expect("post");
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().expect("json status");
    assert_eq!(body["code"], 16, "{body}");

    // Rust, OTLP/gRPC: the key in metadata (x-api-key this time).
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let grpc = |key: Option<&str>, sequence: &str| {
        let endpoint = s.grpc.clone();
        let key = key.map(str::to_string);
        let sequence = sequence.to_string();
        rt.block_on(async move {
            let mut b = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).with_timeout(Duration::from_secs(10));
            if let Some(k) = key {
                let mut md = opentelemetry_otlp::tonic_types::metadata::MetadataMap::new();
                md.insert("x-api-key", k.parse().expect("metadata"));
                b = b.with_metadata(md);
            }
            let exporter = b.build().expect("grpc exporter");
            tokio::task::spawn_blocking(move || emit(exporter, &sequence)).await.expect("emit")
        })
    };
    let log = grpc(Some(INGEST_KEY), "auth-grpc");
    assert_eq!((log.ok, log.errors.len()), (3, 0), "{log:?}");
    assert_eq!(triplets_of(&s, "auth-grpc"), 3);
    let log = grpc(Some("not-a-key-0123456789"), "auth-grpc-bad");
    assert!(log.errors.len() == 3 && log.errors.iter().all(|e| e.to_lowercase().contains("unauthenticated")), "{log:?}");
    let log = grpc(Some(ADMIN_KEY), "auth-grpc-scope");
    assert!(log.errors.len() == 3 && log.errors.iter().all(|e| e.to_lowercase().contains("permission")), "{log:?}");
    assert_eq!(triplets_of(&s, "auth-grpc-bad") + triplets_of(&s, "auth-grpc-scope"), 0);

    // The Rust SDK's own setup sends its api_key with the spans.
    let guard = rltrace_sdk::builder().ignore_env().service_name("auth-sdk").endpoint(s.http.clone()).api_key(INGEST_KEY).set_global(false).install().expect("install");
    {
        let tracer = guard.provider().expect("provider").tracer("sdk");
        let mut span = tracer.start("sdk-step");
        span.set_attribute(KeyValue::new("rl.sequence_id", "auth-sdk"));
        span.set_attribute(KeyValue::new("rl.state", "{}"));
        span.end();
    }
    guard.shutdown().expect("flush");
    assert!(wait_until(10, || triplets_of(&s, "auth-sdk") == 1));

    // Refusals are counted; no key, digest or header value is ever logged.
    let (status, _, metrics) = get(&s.url("/metrics"), &[("x-api-key", ADMIN_KEY)]);
    assert_eq!(status, 200);
    let count = |name: &str| metrics.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(0.0);
    assert!(count("rltrace_requests_unauthenticated_total") >= 7.0, "{metrics}");
    assert!(count("rltrace_requests_forbidden_total") >= 6.0, "{metrics}");
    let log = s.log();
    for secret in [INGEST_KEY, RW_KEY, ADMIN_KEY, "not-a-key-0123456789", &sha(INGEST_KEY), &sha(ADMIN_KEY)] {
        assert!(!log.contains(secret), "the log shows {secret}:\n{log}");
    }
}

#[test]
fn python_exporter_sends_the_key_from_otel_exporter_otlp_headers() {
    let python = match std::env::var_os("RLTRACE_PYTHON").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => {
            assert!(std::env::var_os("CI").is_none(), "RLTRACE_PYTHON must be set in CI");
            eprintln!("NOTICE: skipped: RLTRACE_PYTHON is not set (export RLTRACE_PYTHON=\"$(.ci/python-setup.sh)\")");
            return;
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(&dir);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/send_spans.py");
    let run = |headers: &str, sequence: &str| {
        let mut cmd = Command::new(&python);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .arg(&script)
            .args(["--endpoint", &s.http, "--protocol", "http", "--sequence-id", sequence])
            .env("OTEL_EXPORTER_OTLP_HEADERS", headers)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .output()
            .expect("python");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // The header as OpenTelemetry's variable carries it (percent-encoded value).
    let (ok, err) = run(&format!("authorization=Bearer%20{INGEST_KEY}"), "py-auth");
    assert!(ok, "{err}");
    assert!(wait_until(10, || triplets_of(&s, "py-auth") == 3), "python's triplets stored");
    let started = Instant::now();
    let (ok, err) = run("x-api-key=wrong-key-0123456789", "py-auth-bad");
    assert!(!ok, "a wrong key must fail the export");
    assert!(err.contains("401"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "401 is final for the exporter: {:?}", started.elapsed());
    assert_eq!(triplets_of(&s, "py-auth-bad"), 0);
}

#[test]
fn rest_routes_need_their_scope_and_health_needs_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(&dir);
    let rw = bearer(RW_KEY);
    let admin = bearer(ADMIN_KEY);
    let ingest = bearer(INGEST_KEY);

    for path in ["/healthz", "/readyz"] {
        assert_eq!(get(&s.url(path), &[]).0, 200, "{path}");
    }
    let (status, headers, body) = get(&s.url("/api/v1/stats"), &[]);
    assert_eq!(status, 401);
    assert_eq!(headers.get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer realm=\"rltrace\""));
    let body: Value = serde_json::from_str(&body).expect("error body");
    assert_eq!(body["error"]["code"], "unauthenticated", "{body}");
    let (status, _, body) = get(&s.url("/api/v1/stats"), &[("authorization", &ingest)]);
    assert_eq!(status, 403);
    assert!(body.contains("permission_denied") && body.contains("lacks the read scope"), "{body}");
    assert_eq!(get(&s.url("/api/v1/stats"), &[("authorization", &rw)]).0, 200);
    assert_eq!(get(&s.url("/api/v1/stats"), &[("authorization", "Basic abc")]).0, 401);
    assert_eq!(get(&s.url("/metrics"), &[]).0, 401);
    assert_eq!(get(&s.url("/metrics"), &[("authorization", &rw)]).0, 200);
    assert_eq!(get(&s.url("/openapi.json"), &[("x-api-key", RW_KEY)]).0, 200);

    // Writes: read+write may, admin (without write) may not; a refused write appends nothing.
    let reward = json!({"target": {"sequence_id": "no-such", "strategy": "uniform"}, "value": 0.5, "source": "judge", "pending": true});
    let (status, body) = post(&s.url("/api/v1/rewards"), &[("authorization", &admin)], &reward);
    assert_eq!((status, body["error"]["code"].clone()), (403, json!("permission_denied")));
    let events = |s: &Server| serde_json::from_str::<Value>(&get(&s.url("/api/v1/stats"), &[("authorization", &rw)]).2).expect("stats")["reward_events"].clone();
    assert_eq!(events(&s), 0);
    let (status, body) = post(&s.url("/api/v1/rewards"), &[("x-api-key", RW_KEY)], &reward);
    assert_eq!(status, 201, "{body}");
    assert_eq!(events(&s), 1);

    // Admin: settle.
    assert_eq!(post(&s.url("/api/v1/settle"), &[("authorization", &rw)], &json!({})).0, 403);
    let (status, body) = post(&s.url("/api/v1/settle"), &[("authorization", &admin)], &json!({}));
    assert_eq!((status, body["settled"].clone()), (200, json!(0)), "{body}");

    // The document names the schemes and each operation's scope.
    let (_, _, doc) = get(&s.url("/openapi.json"), &[("authorization", &rw)]);
    let doc: Value = serde_json::from_str(&doc).expect("doc");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert_eq!(doc["paths"]["/api/v1/settle"]["post"]["security"][0]["bearer"][0], "admin");
    assert!(doc["paths"]["/healthz"]["get"].get("security").is_none());

    // The SDK's reward client with and without its key.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        use rltrace_sdk::client::{NewReward, RewardClient};
        let r = NewReward::sequence("client-seq", rltrace_sdk::Strategy::Uniform, 0.7, "judge").pending(true);
        let err = RewardClient::new(s.http.clone()).expect("client").post_reward(&r).await.expect_err("no key");
        assert!(matches!(&err, rltrace_sdk::Error::Api { status: 401, .. }), "{err:?}");
        let c = RewardClient::new(s.http.clone()).expect("client").with_api_key(RW_KEY).expect("key");
        assert!(!format!("{c:?}").contains(RW_KEY), "the key is not in Debug output");
        let ev = c.post_reward(&r).await.expect("stored with the key");
        assert_eq!(ev.value, Some(0.7));
    });
    assert_eq!(events(&s), 2);

    // `rltrace reward` from the shell takes --api-key / RLTRACE_API_KEY.
    let out = Command::new(bin())
        .args(["reward", "add", "--url", &s.http, "--sequence", "cli-seq", "--value", "0.2", "--source", "judge", "--pending"])
        .env("RLTRACE_API_KEY", RW_KEY)
        .output()
        .expect("reward add");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(events(&s), 3);
}

fn cookie_of(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers.get("set-cookie").and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn hidden(page: &str, name: &str) -> String {
    let at = page.find(&format!("name=\"{name}\" value=\"")).unwrap_or_else(|| panic!("no {name} field in {page}"));
    let rest = &page[at + name.len() + 15..];
    rest[..rest.find('"').expect("end of value")].to_string()
}

#[test]
fn the_ui_signs_in_with_a_key_into_a_strict_http_only_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(&dir);
    let no_redirect = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).no_proxy().build().expect("client");

    // A page without a session goes to the sign-in page and back.
    let resp = no_redirect.get(s.url("/ui/sequences?role=Code")).send().expect("get");
    assert_eq!(resp.status().as_u16(), 303);
    assert_eq!(resp.headers()["location"], "/ui/signin?next=%2Fui%2Fsequences%3Frole%3DCode");
    let page = no_redirect.get(s.url("/ui/signin?next=/ui/review")).send().expect("signin").text().expect("text");
    let csrf = hidden(&page, "csrf");
    let sign_in = |key: &str, csrf: &str| no_redirect.post(s.url("/ui/signin")).form(&[("key", key), ("csrf", csrf), ("next", "/ui/review")]).send().expect("post");

    assert_eq!(sign_in(RW_KEY, "forged").status().as_u16(), 403, "the sign-in form needs its CSRF token");
    let wrong = sign_in("wrong-key-0123456789", &csrf);
    assert_eq!(wrong.status().as_u16(), 401);
    assert!(cookie_of(wrong.headers()).is_none());
    assert!(wrong.text().expect("text").contains("That key is not valid."));
    assert_eq!(sign_in(INGEST_KEY, &csrf).status().as_u16(), 403, "an ingest key cannot read the pages");

    let ok = sign_in(RW_KEY, &csrf);
    assert_eq!(ok.status().as_u16(), 303);
    assert_eq!(ok.headers()["location"], "/ui/review");
    let set = cookie_of(ok.headers()).expect("session cookie");
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Max-Age=3600"), "{set}");
    assert!(!set.contains(RW_KEY), "the cookie is a session token, not the key");
    let cookie = set.split(';').next().expect("pair").to_string();

    // With the cookie: the pages, their CSRF token is the session's, and a sign-out button.
    let page = no_redirect.get(s.url("/ui/review")).header("cookie", &cookie).send().expect("review");
    assert_eq!(page.status().as_u16(), 200);
    let page = page.text().expect("text");
    assert!(page.contains("id=\"signout\""), "signed-in pages offer a sign-out");
    let session_csrf = hidden(&page, "csrf");
    assert_ne!(session_csrf, csrf, "a session has its own CSRF token");
    // Reads of the API open with the cookie; state changes outside the UI's forms do not.
    assert_eq!(no_redirect.get(s.url("/api/v1/stats")).header("cookie", &cookie).send().expect("stats").status().as_u16(), 200);
    let r = no_redirect
        .post(s.url("/api/v1/rewards"))
        .header("cookie", &cookie)
        .json(&json!({"target": {"sequence_id": "x", "strategy": "uniform"}, "value": 0.5, "source": "judge", "pending": true}))
        .send()
        .expect("reward");
    assert_eq!(r.status().as_u16(), 401);
    // A UI form with the process-wide token is refused: only the session's counts.
    let r = no_redirect
        .post(s.url("/ui/review"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("sequence_id", "x"), ("decision", "approved"), ("reviewer", "a"), ("justification", "b")])
        .send()
        .expect("decide");
    assert_eq!(r.status().as_u16(), 403);

    // Sign out ends the session.
    let out = no_redirect.post(s.url("/ui/signout")).header("cookie", &cookie).form(&[("csrf", session_csrf.as_str())]).send().expect("signout");
    assert_eq!(out.status().as_u16(), 303);
    assert!(cookie_of(out.headers()).is_some_and(|c| c.contains("Max-Age=0")));
    assert_eq!(no_redirect.get(s.url("/ui/review")).header("cookie", &cookie).send().expect("after").status().as_u16(), 303);
}

#[test]
fn without_keys_only_loopback_is_served_and_bad_configs_stop_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("rltrace.db");
    let run = |args: &[&str]| {
        let out = Command::new(bin()).arg("serve").arg("--db").arg(&db).args(args).env_remove(RW_ENV).stdin(Stdio::null()).output().expect("serve");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = run(&["--http", "0.0.0.0:0", "--grpc", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(err.contains("refusing to listen on 0.0.0.0:0 with no API keys") && err.contains("--insecure-no-auth"), "{err}");
    let cfg = config(dir.path());
    let (ok, err) = run(&["--config", cfg.to_str().expect("utf-8"), "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(err.contains(&format!("environment variable {RW_ENV} is not set")), "{err}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[auth]\nkey = []\n").expect("write");
    let (ok, err) = run(&["--config", bad.to_str().expect("utf-8")]);
    assert!(!ok);
    assert!(err.contains("unknown field `key`"), "{err}");
    assert!(!db.exists(), "a refused start creates no database");
}
