//! Forwarding (DESIGN section 10): a collector with `[[forward]]` sends what it stores to other
//! OTLP/HTTP receivers.
//! - To a second `rltrace serve`: every span arrives, and a sender killed with SIGKILL in the middle
//!   of a stream and started again on its database delivers every span it acknowledged; the
//!   forwarders API and the metrics show the target caught up.
//! - To a receiver that refuses the key (401): the batch is counted, logged and skipped. To one that
//!   is down: retried until it comes up, then everything arrives.
//! - To a plain socket server that answers 429 with `Retry-After`: the retry waits, and the request
//!   it finally takes is OTLP/HTTP protobuf, gzip, with the configured headers, holding the span as
//!   it was sent (links, trace state, flags, events, resource, scope), triplets only.
//! - To an `https://` receiver (rustls on loopback, a test CA trusted by `ca_file`): the spans
//!   arrive over TLS with their headers; one whose CA is not trusted gets nothing, and its error
//!   names the certificate.
//! - Two collectors on one PostgreSQL database (`RLTRACE_TEST_POSTGRES`): one holds the target and
//!   sends what both store, the other stands by and takes over when the first is killed.
//!
//! Everything runs on loopback; every loop is bounded in count and time.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, client, get_json, post_raw, wait_until};
use prost::Message;
use rltrace_otlp::proto::collector::ExportTraceServiceRequest;
use rltrace_otlp::proto::common::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value};
use rltrace_otlp::proto::resource::Resource;
use rltrace_otlp::proto::trace::{ResourceSpans, ScopeSpans, Span, Status, span};
use serde_json::Value;

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.to_string())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn run_id() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
    (nanos ^ (u64::from(std::process::id()) << 32)) | 1
}

fn trace_id(run: u64, n: u32) -> [u8; 16] {
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&run.to_be_bytes());
    t[12..].copy_from_slice(&n.to_be_bytes());
    t
}

/// `spans` triplet spans in one trace (one sequence), ids 1..=spans.
fn batch(trace: [u8; 16], spans: u64) -> ExportTraceServiceRequest {
    let start = 1_700_000_000_000_000_000u64;
    let spans = (1..=spans)
        .map(|i| Span {
            trace_id: trace.to_vec(),
            span_id: i.to_be_bytes().to_vec(),
            name: format!("step-{i}"),
            kind: 1,
            start_time_unix_nano: start + i * 1_000,
            end_time_unix_nano: start + i * 1_000 + 500,
            attributes: vec![
                kv("rl.sequence_id", s(&format!("seq-{}", hex(&trace)))),
                kv("rl.sequence_index", any_value::Value::IntValue(i as i64)),
                kv("rl.state", s("{\"step\":1}")),
                kv("rl.action", s("{\"tool\":\"search\"}")),
            ],
            ..Default::default()
        })
        .collect();
    one_group(spans, "forward-test", "")
}

fn one_group(spans: Vec<Span>, service: &str, scope_version: &str) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", s(service))], ..Default::default() }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: "forward-test".into(), version: scope_version.into(), ..Default::default() }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn send(server: &Server, req: &ExportTraceServiceRequest) -> u16 {
    post_raw(&server.url("/v1/traces"), "application/x-protobuf", &[], req.encode_to_vec()).0
}

fn stats_spans(server: &Server) -> u64 {
    get_json(&server.url("/api/v1/stats")).1["spans"].as_u64().unwrap_or(0)
}

fn forwarder(server: &Server, name: &str) -> Value {
    let (status, body) = get_json(&server.url("/api/v1/forwarders"));
    assert_eq!(status, 200, "{body}");
    body["forwarders"].as_array().and_then(|a| a.iter().find(|f| f["name"] == name).cloned()).unwrap_or(Value::Null)
}

fn write_config(dir: &Path, text: &str) -> String {
    let p = dir.join("rltrace.toml");
    std::fs::write(&p, text).expect("config");
    p.to_string_lossy().into_owned()
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[test]
fn every_acknowledged_span_reaches_the_receiver_across_a_kill() {
    let receiver = Server::start(&[]);
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        cfg_dir.path(),
        &format!("[[forward]]\nname = \"receiver\"\nendpoint = \"{}/v1/traces\"\nbatch = 100\ncompression = \"gzip\"\n", receiver.http),
    );
    let data = tempfile::tempdir().expect("tempdir");
    let db = data.path().join("rltrace.db");
    let mut sender = Server::start_at_logged(&db, &["--config", &config], &data.path().join("first.log"));
    let run = run_id();

    // One batch first: it arrives and reads back the same from both collectors.
    assert_eq!(send(&sender, &batch(trace_id(run, 0), 20)), 200);
    assert!(wait_until(30, || stats_spans(&receiver) == 20), "the first batch was forwarded");
    let path = format!("/api/v1/traces/{}", hex(&trace_id(run, 0)));
    let (a, b) = (get_json(&sender.url(&path)).1, get_json(&receiver.url(&path)).1);
    assert_eq!(a["spans"].as_array().map(Vec::len), Some(20));
    assert_eq!(a, b, "the receiver stored the spans as the sender did");

    // A stream of batches from three threads; the sender is killed in the middle of it.
    let acked: Arc<Mutex<Vec<u32>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(1));
    let url = sender.url("/v1/traces");
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (acked, stop, next, url) = (acked.clone(), stop.clone(), next.clone(), url.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let n = next.fetch_add(1, Ordering::SeqCst) as u32;
                    if n > 600 {
                        break;
                    }
                    let body = batch(trace_id(run, n), 50).encode_to_vec();
                    match http.post(&url).header("content-type", "application/x-protobuf").body(body).send() {
                        Ok(r) if r.status().as_u16() == 200 => acked.lock().expect("lock").push(n),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    assert!(wait_until(30, || acked.lock().expect("lock").len() >= 60), "load was acknowledged");
    // Some of it is forwarded, some not yet: the kill lands mid-stream.
    assert!(wait_until(30, || stats_spans(&receiver) > 20), "forwarding under way");
    sender.kill();
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("load thread");
    }
    let acked: BTreeSet<u32> = acked.lock().expect("lock").iter().copied().collect();
    let at_kill = stats_spans(&receiver);

    let sender = Server::start_at_logged(&db, &["--config", &config], &data.path().join("second.log"));
    let stored = stats_spans(&sender);
    assert!(stored >= 20 + acked.len() as u64 * 50, "the sender kept what it acknowledged");
    assert!(wait_until(60, || stats_spans(&receiver) == stored), "the receiver caught up: {} of {stored} (it had {at_kill} at the kill)", stats_spans(&receiver));
    for n in &acked {
        let (status, t) = get_json(&receiver.url(&format!("/api/v1/traces/{}", hex(&trace_id(run, *n)))));
        assert_eq!(status, 200, "acknowledged batch {n} reached the receiver");
        assert_eq!(t["spans"].as_array().map(Vec::len), Some(50), "batch {n} whole");
    }
    assert!(
        wait_until(10, || {
            let f = forwarder(&sender, "receiver");
            f["lag_spans"] == 0 && f["state"] == "idle"
        }),
        "{}",
        forwarder(&sender, "receiver")
    );
    let f = forwarder(&sender, "receiver");
    assert_eq!(f["cursor"], f["last_span_id"]);
    assert_eq!(f["kind"], "otlp");
    assert_eq!(f["endpoint"], format!("{}/v1/traces", receiver.http));
    assert!(f["sent_spans"].as_u64().unwrap_or(0) > 0, "{f}");
    assert_eq!(f["lag_seconds"], 0.0);
    assert!(f["cursor_updated_at"].is_string());
    let metrics = client().get(sender.url("/metrics")).send().expect("metrics").text().expect("text");
    assert!(metrics.contains("rltrace_forward_sent_spans_total{target=\"receiver\"}"), "{metrics}");
    assert!(metrics.contains("rltrace_forward_lag_spans{target=\"receiver\"} 0"), "{metrics}");
}

#[test]
fn a_refusing_receiver_is_skipped_and_a_down_one_is_retried_until_it_returns() {
    // The refusing receiver wants a key the sender does not send.
    let keyed_dir = tempfile::tempdir().expect("tempdir");
    let keyed_config = write_config(
        keyed_dir.path(),
        "[auth]\n[[auth.keys]]\nname = \"in\"\nscopes = [\"ingest\", \"read\"]\nenv = \"FORWARD_TEST_KEY\"\n",
    );
    let key = "forward-test-key-0123456789";
    let keyed = Server::start_logged_env(&["--config", &keyed_config], &[("FORWARD_TEST_KEY", key)]);
    let port = free_port();
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        cfg_dir.path(),
        &format!(
            "[[forward]]\nname = \"refusing\"\nendpoint = \"{}/v1/traces\"\n\n[[forward]]\nname = \"down\"\nendpoint = \"http://127.0.0.1:{port}/v1/traces\"\nwhat = \"triplets\"\n",
            keyed.http
        ),
    );
    let sender = Server::start_logged(&["--config", &config]);
    let run = run_id();
    for n in 0..3 {
        assert_eq!(send(&sender, &batch(trace_id(run, n), 10)), 200);
    }
    assert!(
        wait_until(30, || forwarder(&sender, "refusing")["skipped_spans"] == 30),
        "{}",
        forwarder(&sender, "refusing")
    );
    let f = forwarder(&sender, "refusing");
    assert!(f["failed_requests"].as_u64().unwrap_or(0) >= 1, "{f}");
    assert!(f["last_error"].as_str().unwrap_or("").contains("401"), "{f}");
    assert_eq!((f["sent_spans"].as_u64(), f["lag_spans"].as_u64()), (Some(0), Some(0)), "skipped, not retried forever: {f}");
    let auth = format!("Bearer {key}");
    let keyed_stats = client().get(keyed.url("/api/v1/stats")).header("authorization", &auth).send().expect("stats").json::<Value>().expect("json");
    assert_eq!(keyed_stats["spans"], 0);

    assert!(wait_until(30, || forwarder(&sender, "down")["retried"].as_u64().unwrap_or(0) >= 2), "{}", forwarder(&sender, "down"));
    let f = forwarder(&sender, "down");
    assert_eq!(f["lag_spans"], 30, "{f}");
    assert!(f["lag_seconds"].as_f64().unwrap_or(0.0) > 0.0, "{f}");
    assert!(f["last_error"].as_str().unwrap_or("").contains(&format!("127.0.0.1:{port}")), "{f}");
    let metrics = client().get(sender.url("/metrics")).send().expect("metrics").text().expect("text");
    assert!(metrics.contains("rltrace_forward_retries_total{target=\"down\"}"), "{metrics}");
    assert!(metrics.contains("rltrace_forward_skipped_spans_total{target=\"refusing\"} 30"), "{metrics}");

    // The target comes up: everything waiting arrives (backoff is at most 30 s).
    let late = Server::start_on(&format!("127.0.0.1:{port}"), &[]);
    assert!(wait_until(60, || stats_spans(&late) == 30), "the late receiver caught up: {}", forwarder(&sender, "down"));
    assert!(wait_until(10, || forwarder(&sender, "down")["lag_spans"] == 0));
    assert_eq!(forwarder(&sender, "down")["sent_spans"], 30);
}

/// What the socket server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A plain HTTP/1.1 server on loopback: the first `refuse` requests get 429 with
/// `Retry-After: 1`, the rest 200 with an empty OTLP response. Every request is recorded.
fn socket_receiver(refuse: usize) -> (String, Arc<Mutex<Vec<Seen>>>) {
    receiver(refuse, None)
}

/// [`socket_receiver`], over TLS when `tls` is given (rustls, the server's side).
fn receiver(refuse: usize, tls: Option<Arc<rustls::ServerConfig>>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let recorded = seen.clone();
    let scheme = if tls.is_some() { "https" } else { "http" };
    std::thread::spawn(move || {
        for conn in listener.incoming().take(64) {
            let Ok(conn) = conn else { continue };
            let (recorded, tls) = (recorded.clone(), tls.clone());
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                match tls {
                    None => answer_requests(conn, refuse, &recorded),
                    Some(config) => {
                        let Ok(server) = rustls::ServerConnection::new(config) else { return };
                        answer_requests(rustls::StreamOwned::new(server, conn), refuse, &recorded);
                    }
                }
            });
        }
    });
    (format!("{scheme}://{addr}/v1/traces"), seen)
}

/// Read HTTP/1.1 requests off `stream`, record each, answer 429 to the first `refuse` in all.
fn answer_requests<S: Read + Write>(stream: S, refuse: usize, recorded: &Mutex<Vec<Seen>>) {
    let mut reader = BufReader::new(stream);
    for _ in 0..100 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end().to_string();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0u8; len.min(64 << 20)];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let n = {
            let mut r = recorded.lock().expect("lock");
            r.push(Seen { at: Instant::now(), headers, body });
            r.len()
        };
        let answer: &[u8] = if n <= refuse {
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
        };
        let out = reader.get_mut();
        if out.write_all(answer).and_then(|()| out.flush()).is_err() {
            return;
        }
    }
}

#[test]
fn retry_after_is_honoured_and_the_span_goes_out_as_it_came_in() {
    let (endpoint, seen) = socket_receiver(1);
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        cfg_dir.path(),
        &format!(
            "[[forward]]\nname = \"socket\"\nendpoint = \"{endpoint}\"\nwhat = \"triplets\"\ncompression = \"gzip\"\nheaders = {{ \"x-tenant\" = \"t1\" }}\nheaders_env = {{ Authorization = \"FORWARD_SOCKET_AUTH\" }}\n"
        ),
    );
    let sender = Server::start_logged_env(&["--config", &config], &[("FORWARD_SOCKET_AUTH", "Basic cGs6c2s=")]);
    let run = run_id();
    let triplet = Span {
        trace_id: trace_id(run, 1).to_vec(),
        span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
        trace_state: "vendor=abc".into(),
        parent_span_id: vec![9; 8],
        flags: 257,
        name: "llm.call".into(),
        kind: 3,
        start_time_unix_nano: 1_700_000_000_000_000_001,
        end_time_unix_nano: 1_700_000_000_900_000_002,
        attributes: vec![
            kv("rl.sequence_id", s("seq-socket")),
            kv("rl.state", s("{\"q\":\"hi\"}")),
            kv("rl.action", s("{\"a\":\"yo\"}")),
            kv("count", any_value::Value::IntValue(3)),
            kv("ratio", any_value::Value::DoubleValue(0.5)),
            kv("ok", any_value::Value::BoolValue(true)),
            kv("list", any_value::Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(s("a")) }] })),
            kv("digest", any_value::Value::BytesValue(vec![0xde, 0xad, 0x00, 0x01])),
        ],
        dropped_attributes_count: 2,
        events: vec![span::Event { time_unix_nano: 1_700_000_000_100_000_007, name: "token".into(), attributes: vec![kv("n", any_value::Value::IntValue(1))], ..Default::default() }],
        dropped_events_count: 1,
        dropped_links_count: 3,
        links: vec![span::Link { trace_id: vec![7; 16], span_id: vec![8; 8], trace_state: "x=y".into(), attributes: vec![kv("why", s("retry"))], flags: 1, ..Default::default() }],
        status: Some(Status { message: "slow".into(), code: 2 }),
    };
    let plain = Span { span_id: vec![2; 8], name: "plain".into(), attributes: Vec::new(), links: Vec::new(), events: Vec::new(), ..triplet.clone() };
    let sent = one_group(vec![plain, triplet.clone()], "socket-test", "4.5.6");
    assert_eq!(send(&sender, &sent), 200);
    assert!(wait_until(30, || forwarder(&sender, "socket")["sent_requests"] == 1), "{}", forwarder(&sender, "socket"));
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "one refused, one taken");
    assert!(seen[1].at.duration_since(seen[0].at) >= Duration::from_millis(950), "Retry-After: 1 was honoured");
    let header = |r: &Seen, k: &str| r.headers.iter().find(|(h, _)| h == k).map(|(_, v)| v.clone());
    let taken = &seen[1];
    assert_eq!(header(taken, "content-type").as_deref(), Some("application/x-protobuf"));
    assert_eq!(header(taken, "content-encoding").as_deref(), Some("gzip"));
    assert_eq!(header(taken, "x-tenant").as_deref(), Some("t1"));
    assert_eq!(header(taken, "authorization").as_deref(), Some("Basic cGs6c2s="));
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(taken.body.as_slice()).read_to_end(&mut raw).expect("gzip");
    let got = ExportTraceServiceRequest::decode(raw.as_slice()).expect("OTLP protobuf");
    let expected = one_group(vec![triplet], "socket-test", "4.5.6");
    assert_eq!(got, expected, "the triplet span as it was sent, the plain span left out");
    let f = forwarder(&sender, "socket");
    assert_eq!((f["retried"].as_u64(), f["sent_spans"].as_u64(), f["what"].as_str()), (Some(1), Some(1), Some("triplets")), "{f}");
    assert!(!sender.log().contains("cGs6c2s="), "the header's secret is not logged");
}

#[test]
fn a_bad_forward_table_stops_the_collector_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, expect) in [
        ("[[forward]]\nendpoint = \"http://127.0.0.1:1/v1/traces\"\nbatch = 0\n", "batch 0 is out of range"),
        ("[[forward]]\nendpoint = \"http://127.0.0.1:1/v1/traces\"\nheaders_env = { Authorization = \"RLTRACE_FORWARD_UNSET_VAR\" }\n", "RLTRACE_FORWARD_UNSET_VAR"),
        ("[[forward]]\nendpoint = \"127.0.0.1:1\"\n", "forward endpoint"),
        ("[[forward]]\nendpoint = \"http://127.0.0.1:1/v1/traces\"\nretries = 3\n", "unknown field `retries`"),
    ] {
        let config = write_config(dir.path(), text);
        let out = std::process::Command::new(common::bin())
            .args(["serve", "--db", &dir.path().join("x.db").to_string_lossy(), "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--config", &config])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run");
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{text}: {err}");
    }
}

/// Two collectors on one PostgreSQL database with the same target: one holds the target's lease
/// and sends what both store, the other stands by; killed with SIGKILL, the holder's lease runs
/// out and the other takes the target over where the cursor was, and every span arrives.
#[test]
fn of_two_collectors_on_postgres_one_forwards_and_the_other_takes_over_when_it_dies() {
    let receiver = Server::start(&[]);
    let db = common::PgDatabase::new();
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(cfg_dir.path(), &format!("[[forward]]\nname = \"receiver\"\nendpoint = \"{}/v1/traces\"\nbatch = 100\n", receiver.http));
    let extra = ["--config", config.as_str()];
    let mut a = Server::start_store(&db.url, &extra, None);
    assert!(wait_until(30, || forwarder(&a, "receiver")["state"] == "idle"), "{}", forwarder(&a, "receiver"));
    let mut b = Server::start_store(&db.url, &extra, None);
    assert!(wait_until(30, || forwarder(&b, "receiver")["state"] == "standby"), "{}", forwarder(&b, "receiver"));
    let run = run_id();
    for n in 0..10 {
        let to = if n % 2 == 0 { &a } else { &b };
        assert_eq!(send(to, &batch(trace_id(run, n), 50)), 200);
    }
    assert!(wait_until(60, || stats_spans(&receiver) == 500), "all of both collectors' spans: {}", stats_spans(&receiver));
    assert!(wait_until(10, || forwarder(&a, "receiver")["lag_spans"] == 0), "{}", forwarder(&a, "receiver"));
    assert_eq!(forwarder(&a, "receiver")["sent_spans"], 500, "the holder sent them all");
    let standby = forwarder(&b, "receiver");
    assert_eq!((&standby["state"], &standby["sent_spans"]), (&serde_json::json!("standby"), &serde_json::json!(0)), "{standby}");

    a.kill();
    for n in 10..15 {
        assert_eq!(send(&b, &batch(trace_id(run, n), 50)), 200);
    }
    assert!(wait_until(90, || stats_spans(&receiver) == 750), "taken over: {} {}", stats_spans(&receiver), forwarder(&b, "receiver"));
    let took = forwarder(&b, "receiver");
    assert!(took["sent_spans"].as_u64().unwrap_or(0) >= 250, "{took}");
    assert_ne!(took["state"], "standby", "{took}");
    b.stop();
}

/// A rustls server configuration serving `cert` with `key` (PEM).
fn tls_server(cert: &str, key: &str) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let certs = vec![rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).expect("certificate")];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    Arc::new(config)
}

/// An `https://` target: the request goes over TLS to a receiver whose certificate a test CA
/// signed, trusted through `ca_file`, with its headers (the endpoint's credentials as
/// `Authorization: Basic`) and the spans as sent. Nothing is sent to a receiver whose
/// certificate the built-in roots do not know, nor to one whose certificate (from the trusted CA)
/// names another host; both errors name the certificate. `ca_file` on an `http://` endpoint, a
/// missing file or one without a certificate stops the collector at start.
#[test]
fn an_https_target_is_reached_over_tls_when_its_certificate_is_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, certs) = common::test_ca("forward", &[&["127.0.0.1"], &["localhost"]]);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).expect("write");
    let right = tls_server(&certs[0].0, &certs[0].1);
    let (trusted, seen) = receiver(0, Some(Arc::clone(&right)));
    let (untrusted, unseen) = receiver(0, Some(right));
    let (misnamed, misseen) = receiver(0, Some(tls_server(&certs[1].0, &certs[1].1)));
    assert!(trusted.starts_with("https://127.0.0.1:"), "{trusted}");
    let with_credentials = trusted.replacen("https://", "https://agent:p%40ss@", 1);
    let config = write_config(
        dir.path(),
        &format!(
            "[[forward]]\nname = \"tls\"\nendpoint = \"{with_credentials}\"\nca_file = \"{ca}\"\nheaders = {{ \"x-tenant\" = \"t2\" }}\n\n\
             [[forward]]\nname = \"untrusted\"\nendpoint = \"{untrusted}\"\n\n\
             [[forward]]\nname = \"misnamed\"\nendpoint = \"{misnamed}\"\nca_file = \"{ca}\"\n",
            ca = ca_file.display()
        ),
    );
    let sender = Server::start_logged_env(&["--config", &config], &[]);
    let run = run_id();
    let req = batch(trace_id(run, 1), 5);
    assert_eq!(send(&sender, &req), 200);
    assert!(wait_until(30, || forwarder(&sender, "tls")["sent_spans"] == 5), "{}", forwarder(&sender, "tls"));
    let got = seen.lock().expect("lock").clone();
    assert_eq!(got.len(), 1, "one request");
    let header = |k: &str| got[0].headers.iter().find(|(h, _)| h == k).map(|(_, v)| v.clone());
    assert_eq!(header("x-tenant").as_deref(), Some("t2"));
    assert_eq!(header("content-type").as_deref(), Some("application/x-protobuf"));
    // base64("agent:p@ss")
    assert_eq!(header("authorization").as_deref(), Some("Basic YWdlbnQ6cEBzcw=="));
    let body = ExportTraceServiceRequest::decode(got[0].body.as_slice()).expect("OTLP protobuf");
    let ids: BTreeSet<Vec<u8>> = body.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).map(|s| s.span_id.clone()).collect();
    let sent: BTreeSet<Vec<u8>> = req.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).map(|s| s.span_id.clone()).collect();
    assert_eq!(ids, sent, "the spans as sent");
    // The other receivers are never given a request: each handshake fails on the certificate.
    for name in ["untrusted", "misnamed"] {
        assert!(
            wait_until(30, || forwarder(&sender, name)["last_error"].as_str().is_some_and(|e| e.contains("certificate"))),
            "{name}: {}",
            forwarder(&sender, name)
        );
        assert_eq!(forwarder(&sender, name)["sent_spans"], 0);
    }
    assert!(unseen.lock().expect("lock").is_empty() && misseen.lock().expect("lock").is_empty());
    assert!(!sender.log().contains("p%40ss") && !sender.log().contains("YWdlbnQ6cEBzcw"), "the credentials are not logged");
    drop(sender);

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificate here\n").expect("write");
    for (text, expect) in [
        (format!("[[forward]]\nendpoint = \"http://127.0.0.1:1/v1/traces\"\nca_file = \"{}\"\n", ca_file.display()), "ca_file is for https endpoints".to_string()),
        ("[[forward]]\nendpoint = \"https://127.0.0.1:1/v1/traces\"\nca_file = \"/nonexistent/ca.pem\"\n".to_string(), "ca_file /nonexistent/ca.pem".to_string()),
        (format!("[[forward]]\nendpoint = \"https://127.0.0.1:1/v1/traces\"\nca_file = \"{}\"\n", empty.display()), "no certificate in the file".to_string()),
    ] {
        let config = write_config(dir.path(), &text);
        let (ok, _, err) = common::run_cli(dir.path(), &["serve", "--db", &dir.path().join("x.db").to_string_lossy(), "--config", &config, "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"]);
        assert!(!ok && err.contains(&expect), "{text}: {err}");
    }
}
