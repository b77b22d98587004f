//! A small W3C WebDriver client over blocking HTTP, for driving Debian's headless Chromium
//! through `chromedriver` on loopback: a session, navigation, elements, clicks, typing, text,
//! script and screenshots. Only the commands the UI tests use.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// Where Debian's packages put the browser and its driver.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// See [`CHROMIUM`].
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Whether the browser tests may be skipped: only when `RLTRACE_SKIP_BROWSER=1` says so (CI
/// never sets it). Without it a missing browser fails the test.
pub fn browser_or_skip() -> bool {
    let present = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if present {
        return true;
    }
    if std::env::var("RLTRACE_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("RLTRACE_SKIP_BROWSER=1: the browser tests are skipped ({CHROMIUM} or {CHROMEDRIVER} is missing)");
        return false;
    }
    panic!("{CHROMIUM} and {CHROMEDRIVER} are needed: apt-get install -y chromium chromium-driver (or set RLTRACE_SKIP_BROWSER=1 to skip on purpose)");
}

/// A running chromedriver with one headless Chromium session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Browser {
    /// Start chromedriver on a free loopback port and open a headless session of `width` x `height`.
    pub fn start(width: u32, height: u32) -> Browser {
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().expect("client");
        let ready = Instant::now() + Duration::from_secs(30);
        loop {
            if http.get(format!("{base}/status")).send().ok().and_then(|r| r.json::<Value>().ok()).is_some_and(|v| v["value"]["ready"] == true) {
                break;
            }
            assert!(Instant::now() < ready, "chromedriver did not get ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--hide-scrollbars".into(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--window-size={width},{height}"),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let mut b = Browser { driver, base, session: String::new(), http, _profile: profile };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().expect("session id").to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body).unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    /// A WebDriver command; `Err` with the driver's error value.
    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Value> {
        let url = format!("{}{}", self.base, path);
        let rb = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let resp = rb.send().map_err(|e| json!(e.to_string()))?;
        let ok = resp.status().is_success();
        let v: Value = resp.json().map_err(|e| json!(e.to_string()))?;
        if ok { Ok(v.get("value").cloned().unwrap_or(Value::Null)) } else { Err(v["value"].clone()) }
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{}", self.session, rest)
    }

    /// Open a URL and wait for the page to load.
    pub fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({"url": url})));
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.call("GET", &self.s("/url"), None).as_str().unwrap_or_default().to_string()
    }

    /// The page title.
    pub fn title(&self) -> String {
        self.call("GET", &self.s("/title"), None).as_str().unwrap_or_default().to_string()
    }

    /// The first element matching a CSS selector, or `None`.
    pub fn find(&self, css: &str) -> Option<Element<'_>> {
        self.try_call("POST", &self.s("/element"), Some(json!({"using": "css selector", "value": css})))
            .ok()
            .and_then(|v| v[ELEMENT].as_str().map(|id| Element { b: self, id: id.to_string() }))
    }

    /// The first element matching a CSS selector; panics when there is none.
    pub fn get(&self, css: &str) -> Element<'_> {
        self.find(css).unwrap_or_else(|| panic!("no element {css:?} on {}", self.url()))
    }

    /// Every element matching a CSS selector.
    pub fn all(&self, css: &str) -> Vec<Element<'_>> {
        let v = self.call("POST", &self.s("/elements"), Some(json!({"using": "css selector", "value": css})));
        v.as_array().map(|a| a.iter().filter_map(|e| e[ELEMENT].as_str().map(|id| Element { b: self, id: id.to_string() })).collect()).unwrap_or_default()
    }

    /// Run a script in the page and return its value.
    pub fn script(&self, js: &str) -> Value {
        self.call("POST", &self.s("/execute/sync"), Some(json!({"script": js, "args": []})))
    }

    /// The text of an open alert, confirm or prompt dialog, if one is open.
    pub fn alert_text(&self) -> Option<String> {
        self.try_call("GET", &self.s("/alert/text"), None).ok().map(|v| v.as_str().unwrap_or_default().to_string())
    }

    /// Press a key on the focused element or the page (`"\u{E004}"` is Tab).
    pub fn keys(&self, text: &str) {
        let mut actions = Vec::new();
        for c in text.chars() {
            actions.push(json!({"type": "keyDown", "value": c.to_string()}));
            actions.push(json!({"type": "keyUp", "value": c.to_string()}));
        }
        self.call("POST", &self.s("/actions"), Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})));
    }

    /// A PNG screenshot of the viewport, written to `path`.
    pub fn screenshot(&self, path: &Path) -> PathBuf {
        let v = self.call("GET", &self.s("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().expect("base64")).expect("PNG");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
        path.to_path_buf()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.try_call("DELETE", &self.s(""), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// An element of the page.
pub struct Element<'a> {
    b: &'a Browser,
    id: String,
}

impl Element<'_> {
    fn e(&self, rest: &str) -> String {
        self.b.s(&format!("/element/{}{}", self.id, rest))
    }

    /// Click it (and wait for a navigation it starts).
    pub fn click(&self) {
        self.b.call("POST", &self.e("/click"), None);
    }

    /// Click something that loads a new page (a link, a form's button) and wait, up to 10 s, until
    /// the new document has loaded: WebDriver's click does not always wait for a form's POST and
    /// its redirect.
    pub fn click_to_load(&self) {
        self.b.script("window.__rltraceBeforeClick = true; return true");
        self.click();
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.b.script("return window.__rltraceBeforeClick === undefined && document.readyState === 'complete'") != serde_json::Value::Bool(true) {
            assert!(std::time::Instant::now() < end, "no new page within 10 s of a click on {}", self.b.url());
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
    }

    /// Clear it and type `text`.
    pub fn fill(&self, text: &str) {
        self.b.call("POST", &self.e("/clear"), None);
        self.b.call("POST", &self.e("/value"), Some(json!({"text": text})));
    }

    /// Its rendered text.
    pub fn text(&self) -> String {
        self.b.call("GET", &self.e("/text"), None).as_str().unwrap_or_default().to_string()
    }

    /// An attribute or property.
    pub fn attr(&self, name: &str) -> Option<String> {
        self.b.call("GET", &self.e(&format!("/attribute/{name}")), None).as_str().map(str::to_string)
    }

    /// The first descendant matching a CSS selector.
    pub fn find(&self, css: &str) -> Option<Element<'_>> {
        self.b
            .try_call("POST", &self.e("/element"), Some(json!({"using": "css selector", "value": css})))
            .ok()
            .and_then(|v| v[ELEMENT].as_str().map(|id| Element { b: self.b, id: id.to_string() }))
    }
}
