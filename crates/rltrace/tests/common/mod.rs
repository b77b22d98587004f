//! Test harness: runs the real `rltrace` binary on loopback port 0 in a fresh temporary directory
//! and talks to it over real sockets.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// Path of the binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rltrace"))
}

/// A running collector.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT` of the HTTP listener.
    pub http: String,
    /// `http://127.0.0.1:PORT` of the gRPC listener.
    pub grpc: String,
    /// The database file.
    pub db: PathBuf,
    /// The temporary directory holding it (removed on drop).
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Start on a new database in a new temporary directory.
    pub fn start(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s = Server::start_at(&dir.join("rltrace.db"), extra);
        s._tmp = Some(tmp);
        s
    }

    /// Start on a new database in a new temporary directory, its log (at `RLTRACE_LOG=info`)
    /// written to `serve.log` there.
    pub fn start_logged(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s = Server::start_at_with(&dir.join("rltrace.db"), extra, Some(&dir.join("serve.log")));
        s._tmp = Some(tmp);
        s
    }

    /// As [`Server::start_logged`], with these environment variables set for the server.
    pub fn start_logged_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let db = dir.join("rltrace.db");
        let mut s = Server::launch_env(&["--db".as_ref(), db.as_os_str()], &db, extra, Some(&dir.join("serve.log")), env);
        s._tmp = Some(tmp);
        s
    }

    /// The log written by a server started with [`Server::start_logged`].
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    /// Start on the database at `db` (kept after the server stops).
    pub fn start_at(db: &Path, extra: &[&str]) -> Server {
        Server::start_at_with(db, extra, None)
    }

    /// Start on the database at `db`, its log at `RLTRACE_LOG=info` written to `log`.
    pub fn start_at_logged(db: &Path, extra: &[&str], log: &Path) -> Server {
        Server::start_at_with(db, extra, Some(log))
    }

    /// As [`Server::start_at_logged`], with these environment variables set for the server.
    pub fn start_at_logged_env(db: &Path, extra: &[&str], log: &Path, env: &[(&str, &str)]) -> Server {
        Server::launch_env(&["--db".as_ref(), db.as_os_str()], db, extra, Some(log), env)
    }

    fn start_at_with(db: &Path, extra: &[&str], log: Option<&Path>) -> Server {
        Server::launch(&["--db".as_ref(), db.as_os_str()], db, extra, log)
    }

    /// Start on the store at `url` (`postgres://...`), its log at `RLTRACE_LOG=info` written to
    /// `log` when given.
    pub fn start_store(url: &str, extra: &[&str], log: Option<&Path>) -> Server {
        Server::launch(&["--store".as_ref(), url.as_ref()], Path::new(url), extra, log)
    }

    fn launch(store: &[&std::ffi::OsStr], db: &Path, extra: &[&str], log: Option<&Path>) -> Server {
        Server::launch_env(store, db, extra, log, &[])
    }

    /// Start on a new database with the HTTP listener at `http` (`127.0.0.1:PORT`).
    pub fn start_on(http: &str, extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = tmp.path().join("rltrace.db");
        let mut s = Server::launch_full(&["--db".as_ref(), db.as_os_str()], &db, http, extra, None, &[]);
        s._tmp = Some(tmp);
        s
    }

    fn launch_env(store: &[&std::ffi::OsStr], db: &Path, extra: &[&str], log: Option<&Path>, env: &[(&str, &str)]) -> Server {
        Server::launch_full(store, db, "127.0.0.1:0", extra, log, env)
    }

    fn launch_full(store: &[&std::ffi::OsStr], db: &Path, http: &str, extra: &[&str], log: Option<&Path>, env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(bin());
        cmd.envs(env.iter().copied());
        cmd.arg("serve")
            .args(store)
            .args(["--http", http, "--grpc", "127.0.0.1:0"])
            .args(extra)
            .env("RLTRACE_LOG", if log.is_some() { "info" } else { "warn" })
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(match log {
                Some(p) => Stdio::from(std::fs::File::create(p).expect("log file")),
                None => Stdio::inherit(),
            });
        let mut child = cmd.spawn().expect("spawn rltrace serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the child never blocks on a full pipe.
            let mut sink = String::new();
            while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("server printed its listening line");
        let field = |name: &str| -> String {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
                .to_string()
        };
        let http = field("http");
        let grpc = format!("http://{}", field("grpc"));
        Server { child: Some(child), http, grpc, db: db.to_path_buf(), dir: db.parent().map(Path::to_path_buf).unwrap_or_default(), _tmp: None }
    }

    /// Full URL of `path` on the HTTP listener.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.http, path)
    }

    /// `host:port` of the HTTP listener.
    pub fn http_addr(&self) -> String {
        self.http.trim_start_matches("http://").to_string()
    }

    /// Kill with SIGKILL (no chance to clean up) and wait.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop with SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let status = c.wait().expect("wait");
            assert!(status.success(), "server exited with {status}");
        }
    }

    /// Keep the temporary directory (to restart on the same database); returns its guard.
    pub fn take_dir(&mut self) -> Option<tempfile::TempDir> {
        self._tmp.take()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A database of its own on the tests' PostgreSQL server (`RLTRACE_TEST_POSTGRES`, started by
/// scripts/test.sh), dropped at the end.
pub struct PgDatabase {
    admin: String,
    name: String,
    /// Its URL.
    pub url: String,
}

impl PgDatabase {
    /// A new empty database on the server at `admin` (its URL, naming an existing database).
    pub fn on(admin: &str) -> PgDatabase {
        let name = format!("e2e_{}", uuid_like());
        let mut c = postgres_client(admin);
        c.batch_execute(&format!("CREATE DATABASE {name}")).expect("create database");
        let url = match admin.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("the PostgreSQL URL has no database name: {admin}"),
        };
        PgDatabase { admin: admin.to_string(), name, url }
    }

    /// A new empty database on the tests' server.
    pub fn new() -> PgDatabase {
        PgDatabase::on(&postgres_url())
    }

    /// A client on this database.
    pub fn client(&self) -> postgres::Client {
        postgres_client(&self.url)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

fn postgres_client(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap_or_else(|e| panic!("connect to the tests' PostgreSQL server: {e}"))
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}_{}_{}", std::process::id(), nanos % 1_000_000_000_000, N.fetch_add(1, Ordering::Relaxed))
}

/// The tests' PostgreSQL server (`RLTRACE_TEST_POSTGRES`); missing, the test fails instead of
/// passing unseen.
pub fn postgres_url() -> String {
    match std::env::var("RLTRACE_TEST_POSTGRES") {
        Ok(u) if !u.is_empty() => u,
        _ => panic!("RLTRACE_TEST_POSTGRES is not set: run the tests with scripts/test.sh, which starts a PostgreSQL server on loopback (scripts/postgres.sh)"),
    }
}

/// A PostgreSQL server of the test's own (scripts/postgres.sh), for tests that stop and start it;
/// stopped and removed at the end.
pub struct OwnPostgres {
    dir: PathBuf,
    /// Its URL.
    pub url: String,
}

impl OwnPostgres {
    /// Start one.
    pub fn start() -> OwnPostgres {
        OwnPostgres::start_with(false, "")
    }

    /// Start one durable (`fsync` and `synchronous_commit` on) or not, with more server settings
    /// (`-c name=value ...`).
    pub fn start_with(durable: bool, settings: &str) -> OwnPostgres {
        let dir = std::env::temp_dir().join(format!("rltrace-own-pg-{}", uuid_like()));
        let mut args = vec!["start".to_string(), dir.to_string_lossy().into_owned()];
        if durable {
            args.push("--durable".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = OwnPostgres::script_env(&args, settings);
        OwnPostgres { dir, url: out.trim().to_string() }
    }

    /// Start one with TLS on, serving the certificate `cert` with its key `key` (PEM files).
    pub fn start_tls(cert: &Path, key: &Path) -> OwnPostgres {
        let dir = std::env::temp_dir().join(format!("rltrace-own-pg-{}", uuid_like()));
        let (d, c, k) = (dir.to_string_lossy().into_owned(), cert.to_string_lossy().into_owned(), key.to_string_lossy().into_owned());
        let out = OwnPostgres::script_env(&["start", &d, "--tls", &c, &k], "");
        OwnPostgres { dir, url: out.trim().to_string() }
    }

    /// Stop the server as a crash would: an immediate shutdown, which loses what the
    /// write-ahead log had not flushed; [`OwnPostgres::resume`] recovers it.
    pub fn crash(&self) {
        OwnPostgres::script(&["crash", &self.dir.to_string_lossy()]);
    }

    /// Stop the server (fast shutdown), keeping its data.
    pub fn pause(&self) {
        OwnPostgres::script(&["pause", &self.dir.to_string_lossy()]);
    }

    /// Start it again on the same data and port.
    pub fn resume(&self) {
        OwnPostgres::script(&["resume", &self.dir.to_string_lossy()]);
    }

    fn script(args: &[&str]) -> String {
        OwnPostgres::script_env(args, "")
    }

    fn script_env(args: &[&str], settings: &str) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres.sh");
        let out = Command::new("bash")
            .arg(script)
            .args(args)
            .env("PG_EXTRA_OPTS", settings)
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/postgres.sh");
        assert!(out.status.success(), "scripts/postgres.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres.sh");
        let _ = Command::new("bash").arg(script).args(["stop", &self.dir.to_string_lossy()]).stdin(Stdio::null()).output();
    }
}

/// A blocking HTTP client.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().expect("client")
}

/// GET a URL; returns status and JSON body (Null when not JSON).
pub fn get_json(url: &str) -> (u16, Value) {
    let resp = client().get(url).send().expect("GET");
    let status = resp.status().as_u16();
    let text = resp.text().expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// POST JSON; returns status and JSON body.
pub fn post_json(url: &str, body: &Value) -> (u16, Value) {
    let resp = client().post(url).json(body).send().expect("POST");
    let status = resp.status().as_u16();
    let text = resp.text().expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// POST a raw body with a content type; returns status, headers and bytes.
pub fn post_raw(url: &str, content_type: &str, extra: &[(&str, &str)], body: Vec<u8>) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut rb = client().post(url).header("content-type", content_type);
    for (k, v) in extra {
        rb = rb.header(*k, *v);
    }
    let resp = rb.body(body).send().expect("POST");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().expect("body").to_vec())
}

/// Run the binary with arguments in `dir`; returns (success, stdout, stderr).
pub fn run_cli(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin()).args(args).current_dir(dir).env("RLTRACE_LOG", "warn").stdin(Stdio::null()).output().expect("run rltrace");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Poll `f` until it returns true or `secs` pass.
pub fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The python with `agentlightning` (`RLTRACE_AGL_PYTHON`, made by
/// `.ci/agentlightning-setup.sh`): required in CI; elsewhere `None` with a notice naming `what`
/// was skipped.
pub fn agl_python(what: &str) -> Option<PathBuf> {
    match std::env::var_os("RLTRACE_AGL_PYTHON").filter(|v| !v.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            if std::env::var_os("CI").is_some() {
                panic!("RLTRACE_AGL_PYTHON must be set in CI (export RLTRACE_AGL_PYTHON=\"$(.ci/agentlightning-setup.sh)\")");
            }
            eprintln!("NOTICE: {what} skipped: RLTRACE_AGL_PYTHON is not set (it is required in CI).");
            None
        }
    }
}

/// A test CA, and a server certificate it signed for `names` (host names or addresses), as PEM:
/// (CA certificate, server certificate, server key). `tag` names the CA.
pub fn test_certificates(tag: &str, names: &[&str]) -> (String, String, String) {
    let (ca, mut certs) = test_ca(tag, &[names]);
    let (cert, key) = certs.remove(0);
    (ca, cert, key)
}

/// A test CA and, for each set of names, a server certificate it signed with its key (PEM).
pub fn test_ca(tag: &str, name_sets: &[&[&str]]) -> (String, Vec<(String, String)>) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, format!("rltrace test CA {tag}"));
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
    let certs = name_sets
        .iter()
        .map(|names| {
            let key = rcgen::KeyPair::generate().expect("server key");
            let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("server params");
            let cert = params.signed_by(&key, &issuer).expect("server certificate");
            (cert.pem(), key.serialize_pem())
        })
        .collect();
    (ca_cert.pem(), certs)
}
