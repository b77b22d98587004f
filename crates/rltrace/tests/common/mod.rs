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

    /// The log written by a server started with [`Server::start_logged`].
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    /// Start on the database at `db` (kept after the server stops).
    pub fn start_at(db: &Path, extra: &[&str]) -> Server {
        Server::start_at_with(db, extra, None)
    }

    fn start_at_with(db: &Path, extra: &[&str], log: Option<&Path>) -> Server {
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .arg("--db")
            .arg(db)
            .args(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
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
