//! The Agent Lightning 0.3 bridge (DESIGN section 10) against the real thing: `agl store` of the
//! `agentlightning` package on loopback, rollouts started through its REST API, an agent's spans
//! exported by the OpenTelemetry SDK's own OTLP/HTTP exporter to rltrace, rewards sent to
//! rltrace, and the result read back through Agent Lightning's own client and its
//! `TracerTraceToTriplet` adapter (tests/python/agl_bridge.py):
//! - the linked spans arrive with the rollout on their resource, and the adapter gives the triplets
//!   with their token ids and rltrace's episode reward on the final LLM call only;
//! - a rollout the store does not know: its spans and its reward are skipped and counted;
//! - the store unreachable when a reward is known, the collector killed with SIGKILL, the store
//!   back, the collector started again: the reward is delivered, exactly once as the store sees it.
//!
//! The Agent Lightning 1.0 gateway bridge against a stand-in for `agl-server` (its package is not
//! on PyPI; tests/python/fake_agl_gateway.py has its routes and semantics): each change of a linked
//! sequence's episode reward becomes one `reward` event of the rollout attempt, shown by the
//! gateway's `format=triplet` view, with the key; a change while the gateway is unreachable is
//! delivered after a kill -9 and a restart; a rollout the gateway no longer has ends the link.
//!
//! Needs `RLTRACE_AGL_PYTHON` (a python with `agentlightning`, made by
//! `.ci/agentlightning-setup.sh`; required in CI). Everything runs on loopback; every loop is
//! bounded in count and time.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Server, client, get_json, post_json, wait_until};
use serde_json::{Value, json};

fn agl_python() -> Option<PathBuf> {
    common::agl_python("Agent Lightning bridge test")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/agl_bridge.py")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

/// `agl store` on loopback, stopped on drop.
struct AglStore {
    child: Child,
    url: String,
}

impl AglStore {
    fn start(py: &Path, log: &Path) -> AglStore {
        let port = free_port();
        let agl = py.parent().expect("venv bin").join("agl");
        let out = std::fs::File::create(log).expect("log");
        let child = Command::new(agl)
            .args(["store", "--host", "127.0.0.1", "--port", &port.to_string(), "--log-level", "WARNING"])
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start agl store");
        let url = format!("http://127.0.0.1:{port}");
        let health = format!("{url}/v1/agl/health");
        let up = wait_until(120, || client().get(&health).send().is_ok_and(|r| r.status().is_success()));
        let mut s = AglStore { child, url };
        if !up {
            s.stop();
            panic!("agl store did not start: {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        s
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A rollout started through the store's REST API: (rollout id, attempt id).
    fn start_rollout(&self) -> (String, String) {
        let (status, body) = post_json(&format!("{}/v1/agl/rollouts", self.url), &json!({"input": {"task": "add two numbers"}}));
        assert_eq!(status, 201, "{body}");
        let r = body["rollout_id"].as_str().expect("rollout id").to_string();
        let a = body["attempt"]["attempt_id"].as_str().expect("attempt id").to_string();
        (r, a)
    }
}

impl Drop for AglStore {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP relay to `to` that can be cut: while cut, connections are accepted and dropped at once.
struct Relay {
    port: u16,
    open: Arc<AtomicBool>,
}

impl Relay {
    fn start(to: String) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let open = Arc::new(AtomicBool::new(true));
        let o = open.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(inbound) = conn else { continue };
                if !o.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(&to) else { continue };
                let pipe = |mut a: TcpStream, mut b: TcpStream, open: Arc<AtomicBool>| {
                    std::thread::spawn(move || {
                        let _ = a.set_read_timeout(Some(Duration::from_millis(200)));
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            match a.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if !open.load(Ordering::SeqCst) || b.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                                    if !open.load(Ordering::SeqCst) {
                                        break;
                                    }
                                }
                                Err(_) => break,
                            }
                        }
                        let _ = a.shutdown(std::net::Shutdown::Both);
                        let _ = b.shutdown(std::net::Shutdown::Both);
                    });
                };
                let (i2, o2) = (inbound.try_clone().expect("clone"), outbound.try_clone().expect("clone"));
                pipe(inbound, outbound, o.clone());
                pipe(o2, i2, o.clone());
            }
        });
        Relay { port, open }
    }

    fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
    }
}

fn python(py: &Path, args: &[&str]) -> String {
    let out = Command::new(py)
        .arg(script())
        .args(args)
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("OTEL_SDK_DISABLED", "false")
        .stdin(Stdio::null())
        .output()
        .expect("run python");
    assert!(out.status.success(), "agl_bridge.py {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An agent run of rollout `r` attempt `a` into rltrace at `server`, as sequence `seq`.
fn agent_run(py: &Path, server: &Server, r: &str, a: &str, seq: &str) {
    python(py, &["emit", &server.url("/v1/traces"), r, a, seq]);
}

/// A reward on the last triplet of `seq`.
fn reward(server: &Server, seq: &str, value: f64) {
    let (status, body) =
        post_json(&server.url("/api/v1/rewards"), &json!({"target": {"sequence_id": seq, "strategy": "last"}, "value": value, "source": "tests"}));
    assert_eq!(status, 201, "{body}");
}

fn forwarder<'a>(all: &'a Value, name: &str) -> &'a Value {
    all["forwarders"].as_array().and_then(|a| a.iter().find(|f| f["name"] == name)).unwrap_or(&Value::Null)
}

fn forwarders(server: &Server) -> Value {
    get_json(&server.url("/api/v1/forwarders")).1
}

#[test]
fn rewards_reach_agent_lightning_on_the_final_llm_call_exactly_once_across_a_kill() {
    let Some(py) = agl_python() else { return };
    let work = tempfile::tempdir().expect("tempdir");
    let store = AglStore::start(&py, &work.path().join("agl.log"));
    let relay = Relay::start(store.url.trim_start_matches("http://").to_string());
    let config = work.path().join("rltrace.toml");
    std::fs::write(&config, format!("[agentlightning]\nstore = \"http://127.0.0.1:{}\"\nepisode_reward = \"last\"\n", relay.port)).expect("config");
    let db = work.path().join("rltrace.db");
    let log = work.path().join("serve.log");
    let extra = ["--config", config.to_str().expect("path")];
    let mut server = Server::start_at_logged(&db, &extra, &log);

    // 1. A known rollout: spans, then the reward; an unknown rollout: skipped and counted.
    let (ra, aa) = store.start_rollout();
    agent_run(&py, &server, &ra, &aa, "seq-a");
    reward(&server, "seq-a", 0.8);
    agent_run(&py, &server, "ro-unknown", "at-unknown", "seq-u");
    reward(&server, "seq-u", 0.5);
    let settled = wait_until(60, || {
        let f = forwarders(&server);
        let (spans, rewards) = (forwarder(&f, "agentlightning-spans"), forwarder(&f, "agentlightning-rewards"));
        spans["lag_spans"] == 0 && spans["unknown_rollout_spans"] == 3 && rewards["outbox"]["delivered"] == 1 && rewards["outbox"]["skipped"] == 1
    });
    assert!(settled, "{:#}", forwarders(&server));
    let f = forwarders(&server);
    assert_eq!(forwarder(&f, "agentlightning-spans")["sent_spans"], 3, "{f:#}");
    assert_eq!(forwarder(&f, "agentlightning-spans")["what"], "linked");
    assert_eq!(forwarder(&f, "agentlightning-rewards")["kind"], "agentlightning-rewards");
    assert!(forwarder(&f, "agentlightning-rewards")["last_error"].as_str().unwrap_or("").contains("ro-unknown"), "{f:#}");
    let (_, seqs) = get_json(&server.url("/api/v1/sequences"));
    let linked = seqs["items"].as_array().expect("items").iter().find(|s| s["sequence_id"] == "seq-a").cloned().unwrap_or(Value::Null);
    assert_eq!(linked["rollout"]["rollout_id"], ra.as_str(), "{seqs:#}");

    // 2. The store unreachable: the next rollout's reward waits in the outbox; kill -9.
    let (rb, ab) = store.start_rollout();
    relay.set_open(false);
    agent_run(&py, &server, &rb, &ab, "seq-b");
    reward(&server, "seq-b", 0.3);
    let waiting = wait_until(60, || {
        let f = forwarders(&server);
        let (spans, rewards) = (forwarder(&f, "agentlightning-spans"), forwarder(&f, "agentlightning-rewards"));
        spans["retried"].as_u64().unwrap_or(0) > 0 && rewards["outbox"]["pending"] == 1 && rewards["retried"].as_u64().unwrap_or(0) > 0
    });
    assert!(waiting, "{:#}", forwarders(&server));
    let metrics = client().get(server.url("/metrics")).send().and_then(|r| r.text()).expect("metrics");
    assert!(metrics.contains("rltrace_forward_pending_rewards{target=\"agentlightning-rewards\"} 1"), "{metrics}");
    server.kill();

    // 3. The store back, the collector again on its database: delivered once.
    relay.set_open(true);
    let mut server = Server::start_at_logged(&db, &extra, &log);
    let delivered = wait_until(60, || {
        let f = forwarders(&server);
        forwarder(&f, "agentlightning-spans")["lag_spans"] == 0 && forwarder(&f, "agentlightning-rewards")["outbox"]["pending"] == 0
    });
    assert!(delivered, "{:#}", forwarders(&server));
    let f = forwarders(&server);
    assert_eq!(forwarder(&f, "agentlightning-rewards")["outbox"]["delivered"], 2, "{f:#}");

    // 4. Read back through Agent Lightning's own client and adapter.
    let read: Value = serde_json::from_str(&python(&py, &["read", &store.url, &ra, &rb, "ro-unknown"])).expect("json");
    for (rollout, value) in [(&ra, 0.8), (&rb, 0.3)] {
        let r = &read[rollout.as_str()];
        assert_eq!(r["spans"], 4, "the agent span, two LLM calls and one reward span: {r:#}");
        assert_eq!(r["names"], json!(["agent.run", "agentlightning.annotation", "openai.chat.completion", "openai.chat.completion"]));
        assert_eq!(r["resource_rollouts"], json!([rollout]));
        assert_eq!(r["annotations"], json!([{"agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": value}]), "{r:#}");
        let t = r["triplets"].as_array().expect("triplets");
        assert_eq!(t.len(), 2, "{r:#}");
        assert_eq!((&t[0]["prompt_ids"], &t[0]["response_ids"]), (&json!([101, 102, 103]), &json!([201, 202])));
        assert_eq!((&t[1]["prompt_ids"], &t[1]["response_ids"]), (&json!([104, 105]), &json!([203])));
        assert_eq!((&t[0]["reward"], &t[1]["reward"]), (&Value::Null, &json!(value)), "the reward is the final call's: {r:#}");
    }
    assert_eq!(read["ro-unknown"]["spans"], 0);
    server.stop();
}

#[test]
fn a_bad_agentlightning_table_stops_the_collector_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, expected) in [
        ("[agentlightning]\ngateway = \"http://127.0.0.1:9\"\nkey_env = \"RLTRACE_TEST_UNSET_KEY\"\n", "$RLTRACE_TEST_UNSET_KEY, which is not set"),
        ("[agentlightning]\nkey = \"k\"\n", "needs store"),
        ("[agentlightning]\nstore = \"http://127.0.0.1:9\"\nepisode_reward = \"median\"\n", "unknown variant `median`"),
        ("[agentlightning]\nstor = \"http://127.0.0.1:9\"\n", "unknown field `stor`"),
        (
            "[agentlightning]\nstore = \"http://127.0.0.1:9\"\n[[forward]]\nname = \"agentlightning-spans\"\nendpoint = \"http://127.0.0.1:9/v1/traces\"\n",
            "rename one",
        ),
    ] {
        let config = dir.path().join("c.toml");
        std::fs::write(&config, text).expect("write");
        let out = Command::new(common::bin())
            .args(["serve", "--db", dir.path().join("x.db").to_str().expect("path"), "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
            .args(["--config", config.to_str().expect("path")])
            .stdin(Stdio::null())
            .output()
            .expect("run");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{text}: {err}");
    }
}

/// The stand-in gateway on loopback, stopped on drop.
struct FakeGateway {
    child: Child,
    url: String,
    key: String,
}

impl FakeGateway {
    fn start(key: &str) -> FakeGateway {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/fake_agl_gateway.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["0", key])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the gateway stand-in");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufReader::new(stdout).read_line(&mut line).expect("read");
        let port = line.trim().strip_prefix("listening ").expect("listening line").to_string();
        FakeGateway { child, url: format!("http://127.0.0.1:{port}"), key: key.to_string() }
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = client().request(method, format!("{}{path}", self.url)).bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().expect("gateway");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// The reward values of the gateway's `format=triplet` view of a rollout, in order.
    fn rewards(&self, rollout: &str) -> Vec<Value> {
        let (status, events) = self.call(reqwest::Method::GET, &format!("/api/rollouts/{rollout}/events?format=triplet&event_type=reward"), None);
        assert_eq!(status, 200, "{events}");
        events.as_array().map(|a| a.iter().map(|e| e["data"]["value"].clone()).collect()).unwrap_or_default()
    }
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The episode reward (`last`) rltrace shows for `seq`.
fn episode(server: &Server, seq: &str) -> Value {
    get_json(&server.url(&format!("/api/v1/sequences/{seq}"))).1["rollout"]["episode_reward"]["last"].clone()
}

#[test]
fn each_change_of_the_episode_reward_reaches_the_gateway_once_until_its_rollout_is_gone() {
    let Some(py) = agl_python() else { return };
    let work = tempfile::tempdir().expect("tempdir");
    let gateway = FakeGateway::start("gw-key-0123");
    let relay = Relay::start(gateway.url.trim_start_matches("http://").to_string());
    let config = work.path().join("rltrace.toml");
    std::fs::write(&config, format!("[agentlightning]\ngateway = \"http://127.0.0.1:{}\"\nkey_env = \"AGL_TEST_KEY\"\n", relay.port)).expect("config");
    let (db, log) = (work.path().join("rltrace.db"), work.path().join("serve.log"));
    let extra = ["--config", config.to_str().expect("path")];
    let env = [("AGL_TEST_KEY", "gw-key-0123")];
    let mut server = Server::start_at_logged_env(&db, &extra, &log, &env);
    let (status, made) = gateway.call(reqwest::Method::POST, "/api/rollouts", Some(json!([{"input": {"task": "add"}}, {"input": {"task": "sub"}}])));
    assert_eq!(status, 201, "{made}");
    let (r1, r2) = (made[0]["rollout_id"].as_str().expect("id").to_string(), made[1]["rollout_id"].as_str().expect("id").to_string());
    let gw = |server: &Server| forwarder(&forwarders(server), "agentlightning-gateway").clone();

    // 1. A reward, then a change: one event each, the view's last one is rltrace's episode reward.
    agent_run(&py, &server, &r1, "0", "seq-1");
    reward(&server, "seq-1", 0.8);
    assert!(wait_until(30, || gateway.rewards(&r1) == [json!(0.8)]), "{:?} {:#}", gateway.rewards(&r1), gw(&server));
    reward(&server, "seq-1", 0.2);
    let changed = episode(&server, "seq-1");
    assert_ne!(changed, json!(0.8), "a second reward changes the episode reward");
    assert!(wait_until(30, || gateway.rewards(&r1) == [json!(0.8), changed.clone()]), "{:?} {:#}", gateway.rewards(&r1), gw(&server));
    let (_, detail) = gateway.call(reqwest::Method::GET, &format!("/api/rollouts/{r1}/events?event_type=reward"), None);
    assert_eq!(detail[0]["data"]["source"], "rltrace");
    assert!(detail[0]["data"]["reason"].as_str().unwrap_or("").contains("seq-1"), "{detail}");
    assert_eq!(gw(&server)["kind"], "agentlightning-gateway");

    // 2. The gateway unreachable: a change waits in the outbox across a kill -9.
    relay.set_open(false);
    reward(&server, "seq-1", 0.0);
    let third = episode(&server, "seq-1");
    assert!(wait_until(30, || gw(&server)["outbox"]["pending"] == 1 && gw(&server)["retried"].as_u64().unwrap_or(0) > 0), "{:#}", gw(&server));
    server.kill();
    relay.set_open(true);
    let mut server = Server::start_at_logged_env(&db, &extra, &log, &env);
    assert!(wait_until(60, || gateway.rewards(&r1).len() == 3), "{:?} {:#}", gateway.rewards(&r1), gw(&server));
    assert_eq!(gateway.rewards(&r1), [json!(0.8), changed, third], "each change once, in order");
    assert!(wait_until(10, || gw(&server)["outbox"]["pending"] == 0), "{:#}", gw(&server));

    // 3. A rollout the gateway no longer has: its link ends, later changes are not sent.
    agent_run(&py, &server, &r2, "0", "seq-2");
    reward(&server, "seq-2", 0.6);
    assert!(wait_until(30, || gateway.rewards(&r2) == [json!(0.6)]), "{:?}", gateway.rewards(&r2));
    let (status, _) = gateway.call(reqwest::Method::DELETE, &format!("/api/rollouts/{r2}"), None);
    assert_eq!(status, 204);
    reward(&server, "seq-2", 0.1);
    assert!(wait_until(30, || gw(&server)["outbox"]["skipped"] == 1), "{:#}", gw(&server));
    assert!(gw(&server)["last_error"].as_str().unwrap_or("").contains("link ended"), "{:#}", gw(&server));
    reward(&server, "seq-2", 0.9);
    std::thread::sleep(Duration::from_millis(1_500));
    let g = gw(&server);
    assert_eq!((&g["outbox"]["pending"], &g["outbox"]["skipped"], &g["outbox"]["delivered"]), (&json!(0), &json!(1), &json!(4)), "{g:#}");
    server.stop();
}
