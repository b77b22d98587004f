//! Forwarding stored spans to other OTLP/HTTP receivers (`[[forward]]` of the config file).
//!
//! Each target has a task that reads the spans stored after its cursor (row ids: arrival order),
//! sends them as one OTLP/HTTP protobuf request per batch, and moves the cursor in the store only
//! after the receiver acknowledged the batch: a restart resends at most the batch that was in
//! flight. 429, 5xx and connection errors are retried with exponential backoff (honouring
//! `Retry-After`); any other 4xx is counted, logged and skipped. Ingest never waits for a
//! forwarder: the task only reads the store, and its cursor moves are small writer operations.
//! Of several collectors on one database, one at a time holds a target's lease and sends.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rltrace_store::{CursorOp, ForwardBatch, Store, StoreError};
use serde::Deserialize;

use crate::metrics::Metrics;

/// Spans per request unless `batch` says otherwise.
pub const DEFAULT_BATCH: usize = 512;
/// Largest `batch`.
pub const MAX_BATCH: usize = 8_192;
/// Request timeout unless `timeout` says otherwise, in seconds.
pub const DEFAULT_TIMEOUT_S: u64 = 10;
/// How long a collector's hold on a target lasts without being renewed.
pub const LEASE: Duration = Duration::from_secs(15);
/// How often a caught-up forwarder looks for new spans.
pub const POLL: Duration = Duration::from_millis(100);
/// First retry delay; doubled each time up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest retry delay (and longest `Retry-After` honoured).
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Samples kept for the lag in seconds.
const LAG_SAMPLES: usize = 1024;

/// Which spans a target gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum What {
    /// Every span.
    #[default]
    All,
    /// Only the spans that are triplets.
    Triplets,
    /// Only the spans linked to an Agent Lightning rollout attempt (by their attributes or their
    /// resource): the bridge's own targets, not a `[[forward]]` value.
    #[serde(skip)]
    Linked,
}

impl What {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            What::All => "all",
            What::Triplets => "triplets",
            What::Linked => "linked",
        }
    }
}

/// What a target's task does.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Forward spans over OTLP/HTTP (`[[forward]]`).
    Otlp,
    /// The Agent Lightning 0.3 bridge's spans: linked spans to the LightningStore's
    /// `/v1/traces`, each rollout looked up first (unknown ones are skipped).
    AglSpans {
        /// The LightningStore's root URL.
        store: reqwest::Url,
    },
    /// The Agent Lightning 0.3 bridge's rewards: one `agentlightning.annotation` span per
    /// complete linked sequence with an episode reward, from the durable outbox.
    AglRewards {
        /// The LightningStore's root URL.
        store: reqwest::Url,
        /// How the episode reward is formed.
        episode_reward: rltrace_core::sequence::EpisodeReward,
    },
    /// The Agent Lightning 1.0 bridge: a `reward` event posted to the gateway's rollout attempt
    /// each time a linked sequence's episode reward changes, from the durable outbox.
    AglGateway {
        /// The gateway's root URL.
        gateway: reqwest::Url,
        /// How the episode reward is formed.
        episode_reward: rltrace_core::sequence::EpisodeReward,
    },
}

impl Kind {
    /// Its name in the API.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Otlp => "otlp",
            Kind::AglSpans { .. } => "agentlightning-spans",
            Kind::AglRewards { .. } => "agentlightning-rewards",
            Kind::AglGateway { .. } => "agentlightning-gateway",
        }
    }
}

/// The request body's compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Plain protobuf.
    #[default]
    None,
    /// `Content-Encoding: gzip`.
    Gzip,
}

/// Where a new target starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// With the oldest span stored.
    #[default]
    Beginning,
    /// With the spans stored from now on.
    Now,
}

/// One `[[forward]]` table, as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// The target's name: the key of its cursor (default: the endpoint without credentials or query).
    #[serde(default)]
    pub name: Option<String>,
    /// The OTLP/HTTP traces URL requests are posted to (`http://host:4318/v1/traces`).
    pub endpoint: String,
    /// Headers sent with every request (e.g. `Authorization`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers whose values are read from environment variables at start (secrets kept out of
    /// the file): header name to variable name.
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// `gzip` or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// `all` spans or only `triplets`.
    #[serde(default)]
    pub what: What,
    /// Spans per request (1 to 8,192; default 512).
    #[serde(default)]
    pub batch: Option<usize>,
    /// Request timeout (seconds, or `10s`, `1m`; default 10 s).
    #[serde(default, deserialize_with = "rltrace_core::policy::duration_secs")]
    pub timeout: Option<u64>,
    /// A new target starts at the `beginning` of the store or `now`.
    #[serde(default)]
    pub start: Start,
    /// For an `https://` endpoint: a PEM file of the root certificates to trust in place of the
    /// built-in ones (Mozilla's), for a receiver with a private CA.
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// The HTTPS client of one target: hyper's, with rustls (ring) and the target's roots.
pub type HttpsClient = hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, http_body_util::Full<bytes::Bytes>>;

/// An HTTPS client that trusts the certificates of `ca_file` (PEM), or the built-in roots.
fn https_client(ca_file: Option<&str>) -> Result<HttpsClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let bad = |e: String| format!("ca_file {path}: {e}");
            for cert in rustls::pki_types::CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
                roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("no certificate in the file".into()));
            }
        }
    }
    // ring, not aws-lc-rs (a long C build on two cores); rustls marks ring's provider deprecated
    // for its lack of post-quantum key exchange.
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_only().enable_http1().wrap_connector(tcp);
    Ok(hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).pool_max_idle_per_host(2).build(connector))
}

/// A target ready to run: checked, its headers resolved.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its name.
    pub name: String,
    /// The URL posted to.
    pub endpoint: reqwest::Url,
    /// The endpoint as shown (no credentials, no query).
    pub shown: String,
    pub(crate) headers: reqwest::header::HeaderMap,
    /// What its task does.
    pub kind: Kind,
    /// Compression.
    pub compression: Compression,
    /// Which spans.
    pub what: What,
    /// Spans per request.
    pub batch: usize,
    /// Request timeout.
    pub timeout: Duration,
    /// Where a new target starts.
    pub start: Start,
    /// The client of an `https://` endpoint (others go through the runner's plain HTTP client).
    pub https: Option<HttpsClient>,
}

impl Target {
    /// How long this collector's hold on the target lasts without being renewed: [`LEASE`], or
    /// longer than one request may take.
    pub fn lease(&self) -> Duration {
        LEASE.max(self.timeout + LEASE / 3)
    }
}

/// Where a task stands with its lease: the cursor it holds and when it last renewed it.
pub(crate) struct Holder {
    pub(crate) cursor: i64,
    pub(crate) renewed: Instant,
}

/// A URL as shown: scheme, host, port and path; never credentials or a query.
pub(crate) fn shown(url: &reqwest::Url) -> String {
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{}{}{}", url.scheme(), url.host_str().unwrap_or(""), port, url.path())
}

impl ForwardConfig {
    /// Check the table and resolve its headers (`env` looks a variable up).
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<Target, String> {
        let mut endpoint = reqwest::Url::parse(&self.endpoint).map_err(|e| format!("forward endpoint {:?}: {e}", self.endpoint))?;
        // Credentials in the URL become `Authorization: Basic` (as reqwest does for plain HTTP),
        // and leave the URL, so neither client holds them in its connection pool's keys.
        let userinfo = (!endpoint.username().is_empty() || endpoint.password().is_some()).then(|| {
            let decode = |v: &str| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned();
            format!("{}:{}", decode(endpoint.username()), decode(endpoint.password().unwrap_or("")))
        });
        let _ = endpoint.set_username("");
        let _ = endpoint.set_password(None);
        let https = match endpoint.scheme() {
            "http" if self.ca_file.is_some() => return Err(format!("forward endpoint {}: ca_file is for https endpoints", shown(&endpoint))),
            "http" => None,
            "https" => {
                endpoint.as_str().parse::<hyper::Uri>().map_err(|e| format!("forward endpoint {}: {e}", shown(&endpoint)))?;
                Some(https_client(self.ca_file.as_deref()).map_err(|e| format!("forward endpoint {}: {e}", shown(&endpoint)))?)
            }
            other => return Err(format!("forward endpoint {}: scheme {other:?} is not http or https", shown(&endpoint))),
        };
        if endpoint.host_str().is_none_or(str::is_empty) {
            return Err(format!("forward endpoint {:?} has no host", self.endpoint));
        }
        let shown_url = shown(&endpoint);
        let name = self.name.clone().unwrap_or_else(|| shown_url.clone());
        if name.trim().is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            return Err(format!("forward name {name:?}: 1 to 200 characters, no control characters"));
        }
        let batch = self.batch.unwrap_or(DEFAULT_BATCH);
        if !(1..=MAX_BATCH).contains(&batch) {
            return Err(format!("forward {name}: batch {batch} is out of range (1 to {MAX_BATCH})"));
        }
        let timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT_S);
        if !(1..=600).contains(&timeout) {
            return Err(format!("forward {name}: timeout {timeout} s is out of range (1 to 600 s)"));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        let mut put = |k: &str, v: &str, what: &str| -> Result<(), String> {
            let key = reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("forward {name}: {k:?} is not a header name"))?;
            if matches!(key.as_str(), "content-type" | "content-encoding" | "content-length" | "host") {
                return Err(format!("forward {name}: header {k} is set by rltrace"));
            }
            let mut value = reqwest::header::HeaderValue::from_str(v).map_err(|_| format!("forward {name}: the value of header {k} ({what}) is not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(key, value);
            Ok(())
        };
        for (k, v) in &self.headers {
            put(k, v, "in the file")?;
        }
        for (k, var) in &self.headers_env {
            let v = env(var).ok_or_else(|| format!("forward {name}: header {k} is read from ${var}, which is not set"))?;
            put(k, v.trim(), &format!("${var}"))?;
        }
        let has_auth = self.headers.keys().chain(self.headers_env.keys()).any(|k| k.eq_ignore_ascii_case("authorization"));
        if let Some(u) = userinfo.filter(|_| !has_auth) {
            use base64::Engine;
            put("authorization", &format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(u)), "the endpoint's credentials")?;
        }
        Ok(Target {
            name,
            endpoint,
            shown: shown_url,
            headers,
            kind: Kind::Otlp,
            compression: self.compression,
            what: self.what,
            batch,
            timeout: Duration::from_secs(timeout),
            start: self.start,
            https,
        })
    }
}

/// Check a config's targets together: each resolves, names are unique.
pub fn resolve_all(forward: &[ForwardConfig], env: impl Fn(&str) -> Option<String>) -> Result<Vec<Target>, String> {
    let mut out: Vec<Target> = Vec::with_capacity(forward.len());
    for f in forward {
        let t = f.resolve(&env)?;
        if out.iter().any(|o| o.name == t.name) {
            return Err(format!("two [[forward]] targets are named {:?}: give each its own name", t.name));
        }
        out.push(t);
    }
    Ok(out)
}

/// What a target's task is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not started yet.
    Starting,
    /// Sending a backlog.
    Sending,
    /// Caught up, waiting for new spans.
    Idle,
    /// Waiting to retry after a failure.
    Backoff,
    /// Another collector on the same database holds the target.
    Standby,
    /// Stopped with the collector.
    Stopped,
}

impl Phase {
    /// The name shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Sending => "sending",
            Phase::Idle => "idle",
            Phase::Backoff => "backoff",
            Phase::Standby => "standby",
            Phase::Stopped => "stopped",
        }
    }
}

/// A target's counters and state in this collector.
#[derive(Debug, Clone)]
pub struct Status {
    /// Phase.
    pub phase: Phase,
    /// Spans up to this row id were delivered or skipped.
    pub cursor: i64,
    /// The newest span row id seen.
    pub last_id: i64,
    /// Spans the receiver acknowledged.
    pub sent_spans: u64,
    /// Requests the receiver acknowledged.
    pub sent_requests: u64,
    /// Attempts that failed and were retried (429, 5xx, connection errors, timeouts).
    pub retried: u64,
    /// Requests refused for good (other 4xx) and skipped.
    pub failed_requests: u64,
    /// Spans of the skipped requests.
    pub skipped_spans: u64,
    /// Spans the receiver acknowledged but reported as rejected (OTLP partial success).
    pub rejected_spans: u64,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it happened (microseconds since the epoch).
    pub last_error_us: Option<i64>,
    /// The last acknowledged request (microseconds since the epoch).
    pub last_sent_us: Option<i64>,
    /// A bridge's rewards: its outbox as last read.
    pub outbox: Option<rltrace_store::OutboxCounts>,
    /// Spans skipped because their rollout is unknown to the LightningStore.
    pub unknown_rollout_spans: u64,
    samples: VecDeque<(i64, Instant)>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            phase: Phase::Starting,
            cursor: 0,
            last_id: 0,
            sent_spans: 0,
            sent_requests: 0,
            retried: 0,
            failed_requests: 0,
            skipped_spans: 0,
            rejected_spans: 0,
            last_error: None,
            last_error_us: None,
            last_sent_us: None,
            outbox: None,
            unknown_rollout_spans: 0,
            samples: VecDeque::new(),
        }
    }
}

impl Status {
    /// Rows stored after the cursor.
    pub fn lag_spans(&self) -> i64 {
        (self.last_id - self.cursor).max(0)
    }

    /// How long the oldest span not yet delivered has been waiting (at least), in seconds.
    pub fn lag_seconds(&self) -> f64 {
        self.samples.iter().find(|(id, _)| *id > self.cursor).map_or(0.0, |(_, t)| t.elapsed().as_secs_f64())
    }

    fn saw(&mut self, last_id: i64) {
        if last_id > self.last_id {
            self.last_id = last_id;
            if self.samples.len() < LAG_SAMPLES {
                self.samples.push_back((last_id, Instant::now()));
            } else if let Some(back) = self.samples.back_mut() {
                // Full: the newest sample stands for the later ones (the oldest matter most).
                back.0 = last_id;
            }
        }
    }

    fn moved(&mut self, cursor: i64) {
        self.cursor = cursor;
        while self.samples.front().is_some_and(|(id, _)| *id <= cursor) {
            self.samples.pop_front();
        }
    }

    pub(crate) fn failed(&mut self, why: String) {
        self.last_error = Some(why);
        self.last_error_us = Some(rltrace_store::now_micros());
    }
}

/// One target and its shared status.
pub struct Forwarder {
    /// The target.
    pub target: Target,
    status: Mutex<Status>,
}

impl Forwarder {
    /// A target not started yet.
    pub fn new(target: Target) -> Forwarder {
        Forwarder { target, status: Mutex::new(Status::default()) }
    }

    /// A copy of the status.
    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut Status) -> T) -> Option<T> {
        self.status.lock().ok().map(|mut s| f(&mut s))
    }
}

/// What became of one request.
pub(crate) enum Sent {
    /// Acknowledged; spans the receiver said it rejected.
    Acknowledged(u64),
    /// Refused for good: skip the batch.
    Refused(String),
    /// Failed for now: retry after the delay (`Retry-After` when the receiver gave one).
    Retry(String, Option<Duration>),
}

/// A read of the store on a blocking thread.
type BatchRead = std::pin::Pin<Box<dyn std::future::Future<Output = Result<ForwardBatch, StoreError>> + Send>>;

/// Why the task stopped sending for now.
pub(crate) enum Interrupt {
    /// The collector is stopping.
    Stop,
    /// Another collector holds the target now.
    Lost,
    /// The store failed; try again later.
    Store(StoreError),
}

impl From<StoreError> for Interrupt {
    fn from(e: StoreError) -> Self {
        Interrupt::Store(e)
    }
}

/// Runs every target's task until `stop` turns true; each gives its lease up when it ends.
pub struct Runner {
    store: Store,
    metrics: Arc<Metrics>,
    owner: String,
    client: reqwest::Client,
    rollouts: crate::agl::Rollouts,
}

impl Runner {
    /// A runner for this collector (`owner` names it in the store's leases).
    pub fn new(store: Store, metrics: Arc<Metrics>) -> Runner {
        let owner = format!("{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let client = reqwest::Client::builder().pool_max_idle_per_host(2).build().unwrap_or_default();
        Runner { store, metrics, owner, client, rollouts: crate::agl::Rollouts::default() }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub(crate) fn rollouts(&self) -> &crate::agl::Rollouts {
        &self.rollouts
    }

    /// This collector's name in the leases.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The task of one target.
    pub async fn run(self: Arc<Self>, f: Arc<Forwarder>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let t = &f.target;
        tracing::info!(target_name = %t.name, endpoint = %t.shown, "forwarding");
        let mut store_backoff = FIRST_BACKOFF;
        loop {
            if *stop.borrow() {
                break;
            }
            let cursor = match self.cursor_op(t, CursorOp::Claim { from_now: t.start == Start::Now }).await {
                Ok(Some(c)) => c,
                Ok(None) => {
                    f.update(|s| s.phase = Phase::Standby);
                    if sleep_or_stop(&mut stop, t.lease() / 2).await {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    f.update(|s| {
                        s.phase = Phase::Backoff;
                        s.failed(format!("store: {e}"));
                    });
                    if sleep_or_stop(&mut stop, store_backoff).await {
                        break;
                    }
                    store_backoff = (store_backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            store_backoff = FIRST_BACKOFF;
            f.update(|s| s.moved(cursor));
            match self.send_from(&f, cursor, &mut stop).await {
                Interrupt::Stop => break,
                Interrupt::Lost => {
                    tracing::info!(target_name = %t.name, "another collector took over forwarding");
                }
                Interrupt::Store(e) => {
                    f.update(|s| {
                        s.phase = Phase::Backoff;
                        s.failed(format!("store: {e}"));
                    });
                    if sleep_or_stop(&mut stop, FIRST_BACKOFF * 10).await {
                        break;
                    }
                }
            }
        }
        f.update(|s| s.phase = Phase::Stopped);
        let _ = self.cursor_op(t, CursorOp::Release).await;
    }

    /// Send everything after `cursor` and keep up, until interrupted.
    async fn send_from(&self, f: &Forwarder, mut cursor: i64, stop: &mut tokio::sync::watch::Receiver<bool>) -> Interrupt {
        let t = &f.target;
        let mut h = Holder { cursor, renewed: Instant::now() };
        // The next batch is read while the current one is on its way.
        let mut next: Option<BatchRead> = Some(self.read(t, cursor));
        loop {
            if *stop.borrow() {
                return Interrupt::Stop;
            }
            let mut batch = match next.take() {
                Some(read) => match read.await {
                    Ok(b) => b,
                    Err(e) => return e.into(),
                },
                None => match self.read(t, cursor).await {
                    Ok(b) => b,
                    Err(e) => return e.into(),
                },
            };
            f.update(|s| s.saw(batch.last_id));
            self.publish(f);
            if let Kind::AglSpans { store } = &t.kind {
                h.cursor = cursor;
                if let Err(i) = self.keep_known_rollouts(f, store, &mut batch, stop, &mut h).await {
                    return i;
                }
            }
            if batch.spans.is_empty() {
                if batch.scanned_to > cursor {
                    // Rows this target does not take: step over them.
                    match self.advance(t, cursor, batch.scanned_to).await {
                        Ok(c) => cursor = c,
                        Err(i) => return i,
                    }
                    h.renewed = Instant::now();
                    f.update(|s| s.moved(cursor));
                    continue;
                }
                f.update(|s| s.phase = Phase::Idle);
                h.cursor = cursor;
                if let Err(i) = self.hold(t, &mut h).await {
                    return i;
                }
                if sleep_or_stop(stop, POLL).await {
                    return Interrupt::Stop;
                }
                continue;
            }
            f.update(|s| s.phase = Phase::Sending);
            let n = batch.spans.len() as u64;
            let body = encode(t, &batch);
            // Read ahead from where this batch ends.
            let ahead = batch.scanned_to;
            let store = self.store.clone();
            let (limit, triplets) = (t.batch, t.what == What::Triplets);
            let prefetch = tokio::task::spawn_blocking(move || store.read(|tx| tx.forward_batch(ahead, limit, triplets)));
            h.cursor = cursor;
            let delivered = match self.deliver(f, &body, n, stop, &mut h).await {
                Ok(d) => d,
                Err(i) => return i,
            };
            match self.advance(t, cursor, batch.scanned_to).await {
                Ok(c) => cursor = c,
                Err(i) => return i,
            }
            h.renewed = Instant::now();
            f.update(|s| {
                s.moved(cursor);
                match delivered {
                    Ok(rejected) => {
                        s.sent_spans += n;
                        s.sent_requests += 1;
                        s.rejected_spans += rejected;
                        s.last_sent_us = Some(rltrace_store::now_micros());
                    }
                    Err(_) => {
                        s.failed_requests += 1;
                        s.skipped_spans += n;
                    }
                }
            });
            match delivered {
                Ok(rejected) => self.metrics.forward_sent(&t.name, n, rejected),
                Err(()) => self.metrics.forward_failed(&t.name, n),
            }
            let read: BatchRead = Box::pin(async move { prefetch.await.map_err(|e| StoreError::Failed(format!("forward read: {e}")))? });
            next = Some(read);
        }
    }

    /// Renew the lease when a third of it has passed; `Lost` when another collector holds it.
    pub(crate) async fn hold(&self, t: &Target, h: &mut Holder) -> Result<(), Interrupt> {
        if h.renewed.elapsed() <= t.lease() / 3 {
            return Ok(());
        }
        match self.cursor_op(t, CursorOp::Claim { from_now: false }).await {
            Ok(Some(c)) if c == h.cursor => {
                h.renewed = Instant::now();
                Ok(())
            }
            Ok(_) => Err(Interrupt::Lost),
            Err(e) => Err(e.into()),
        }
    }

    /// Wait `d` (a retry's delay) holding the lease; `Stop` when the collector stops first.
    async fn wait_holding(&self, t: &Target, stop: &mut tokio::sync::watch::Receiver<bool>, d: Duration, h: &mut Holder) -> Result<(), Interrupt> {
        let end = Instant::now() + d;
        loop {
            self.hold(t, h).await?;
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            if sleep_or_stop(stop, left.min(t.lease() / 3)).await {
                return Err(Interrupt::Stop);
            }
        }
    }

    /// The bridge's spans: keep the linked spans of rollouts the store knows (looked up until it
    /// answers); count the others.
    async fn keep_known_rollouts(
        &self,
        f: &Forwarder,
        root: &reqwest::Url,
        batch: &mut ForwardBatch,
        stop: &mut tokio::sync::watch::Receiver<bool>,
        h: &mut Holder,
    ) -> Result<(), Interrupt> {
        let t = &f.target;
        let linked = crate::agl::linked(std::mem::take(&mut batch.spans));
        let mut ids: Vec<String> = linked.iter().map(|(_, l)| l.rollout_id.clone()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut backoff = FIRST_BACKOFF;
        let known = loop {
            match self.rollouts.lookup(&self.client, root, t.timeout, &ids).await {
                crate::agl::Lookup::Known(k) => break k,
                crate::agl::Lookup::Retry(why) => {
                    f.update(|s| {
                        s.retried += 1;
                        s.phase = Phase::Backoff;
                        s.failed(why);
                    });
                    self.metrics.forward_retried(&t.name);
                    self.wait_holding(t, stop, backoff, h).await?;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        let before = linked.len();
        batch.spans = linked.into_iter().filter(|(_, l)| known.contains(&l.rollout_id)).map(|(s, _)| s).collect();
        let unknown = (before - batch.spans.len()) as u64;
        if unknown > 0 {
            tracing::warn!(target_name = %t.name, spans = unknown, "spans of rollouts unknown to the LightningStore skipped");
            f.update(|s| {
                s.unknown_rollout_spans += unknown;
                s.skipped_spans += unknown;
                s.failed(format!("{unknown} spans of rollouts unknown to the store skipped"));
            });
            self.metrics.forward_skipped(&t.name, unknown);
        }
        Ok(())
    }

    /// Send one body until it is acknowledged (`Ok(rejected spans)`) or refused for good
    /// (`Err(())`), holding the lease meanwhile; an interruption when the collector stops or
    /// another one took the target over.
    async fn deliver(&self, f: &Forwarder, body: &[u8], n: u64, stop: &mut tokio::sync::watch::Receiver<bool>, h: &mut Holder) -> Result<Result<u64, ()>, Interrupt> {
        let t = &f.target;
        let mut backoff = FIRST_BACKOFF;
        loop {
            self.hold(t, h).await?;
            match self.post(t, body).await {
                Sent::Acknowledged(rejected) => return Ok(Ok(rejected)),
                Sent::Refused(why) => {
                    tracing::warn!(target_name = %t.name, spans = n, error = %why, "forwarding target refused a batch; skipped");
                    f.update(|s| s.failed(why));
                    return Ok(Err(()));
                }
                Sent::Retry(why, after) => {
                    tracing::debug!(target_name = %t.name, error = %why, "forwarding failed; retrying");
                    f.update(|s| {
                        s.retried += 1;
                        s.phase = Phase::Backoff;
                        s.failed(why);
                    });
                    self.metrics.forward_retried(&t.name);
                    // `Retry-After: 0` is no reason to spin.
                    let wait = after.map_or(backoff, |a| a.clamp(FIRST_BACKOFF, MAX_BACKOFF));
                    self.wait_holding(t, stop, wait, h).await?;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    f.update(|s| s.phase = Phase::Sending);
                }
            }
        }
    }

    pub(crate) async fn post(&self, t: &Target, body: &[u8]) -> Sent {
        let answer = match &t.https {
            Some(client) => post_https(client, t, body).await,
            None => self.post_http(t, body).await,
        };
        let (status, retry_after, bytes) = match answer {
            Ok(a) => a,
            Err(why) => return Sent::Retry(format!("{}: {why}", t.shown), None),
        };
        if status.is_success() {
            let rejected = <rltrace_otlp::ExportTraceServiceResponse as prost::Message>::decode(bytes.as_ref())
                .ok()
                .and_then(|r| r.partial_success)
                .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0));
            return Sent::Acknowledged(rejected);
        }
        let why = format!("{} answered {}{}", t.shown, status.as_u16(), excerpt(&bytes));
        if status.is_redirection() {
            // Not followed on HTTPS (reqwest follows them on plain HTTP): kept and retried, so
            // nothing is skipped while the endpoint is wrong.
            return Sent::Retry(format!("{why} (a redirect: give the endpoint it points to)"), retry_after);
        }
        if status.as_u16() == 429 || status.is_server_error() || status.as_u16() == 408 {
            Sent::Retry(why, retry_after)
        } else {
            Sent::Refused(why)
        }
    }

    /// POST to a plain HTTP endpoint: the status, `Retry-After` and the body.
    async fn post_http(&self, t: &Target, body: &[u8]) -> Result<(reqwest::StatusCode, Option<Duration>, bytes::Bytes), String> {
        let mut req = self
            .client
            .post(t.endpoint.clone())
            .timeout(t.timeout)
            .headers(t.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf");
        if t.compression == Compression::Gzip {
            req = req.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        // Without the URL: reqwest's message ends with it, query included.
        let resp = req.body(body.to_vec()).send().await.map_err(|e| chain(&e.without_url()))?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        Ok((status, retry_after, resp.bytes().await.unwrap_or_default()))
    }

    fn read(&self, t: &Target, after: i64) -> BatchRead {
        let store = self.store.clone();
        let (limit, triplets) = (t.batch, t.what == What::Triplets);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || store.read(|tx| tx.forward_batch(after, limit, triplets)))
                .await
                .map_err(|e| StoreError::Failed(format!("forward read: {e}")))?
        })
    }

    async fn advance(&self, t: &Target, from: i64, to: i64) -> Result<i64, Interrupt> {
        match self.cursor_op(t, CursorOp::Advance { from, to }).await {
            Ok(Some(c)) => Ok(c),
            Ok(None) => Err(Interrupt::Lost),
            Err(e) => Err(Interrupt::Store(e)),
        }
    }

    /// A cursor change, committed; waits while the writer queue is full.
    pub(crate) async fn cursor_op(&self, t: &Target, op: CursorOp) -> Result<Option<i64>, StoreError> {
        let lease = i64::try_from(t.lease().as_micros()).unwrap_or(i64::MAX);
        committed(|tx| {
            self.store.submit_cursor(&t.name, &self.owner, lease, op.clone(), move |r| {
                let _ = tx.send(r);
            })
        })
        .await
    }

    fn publish(&self, f: &Forwarder) {
        let s = f.status();
        self.metrics.forward_lag(&f.target.name, s.cursor, s.lag_spans(), s.lag_seconds());
    }
}

fn encode(t: &Target, batch: &ForwardBatch) -> Vec<u8> {
    let req = rltrace_otlp::export_request(batch.spans.iter().map(|s| &s.span), &[]);
    let raw = rltrace_otlp::encode_request(&req);
    match t.compression {
        Compression::None => raw,
        Compression::Gzip => {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(raw.len() / 4), flate2::Compression::fast());
            // Writing into a Vec cannot fail.
            let _ = gz.write_all(&raw);
            gz.finish().unwrap_or(raw)
        }
    }
}

/// `Retry-After` in seconds.
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    h.get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs)
}

/// POST to an `https://` endpoint with the target's own client, within its timeout.
async fn post_https(client: &HttpsClient, t: &Target, body: &[u8]) -> Result<(reqwest::StatusCode, Option<Duration>, bytes::Bytes), String> {
    let mut req = hyper::Request::post(t.endpoint.as_str()).header(hyper::header::CONTENT_TYPE, "application/x-protobuf");
    if t.compression == Compression::Gzip {
        req = req.header(hyper::header::CONTENT_ENCODING, "gzip");
    }
    let mut req = req.body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(body))).map_err(|e| e.to_string())?;
    for (k, v) in &t.headers {
        req.headers_mut().insert(k.clone(), v.clone());
    }
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| chain(&e))?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.map_err(|e| chain(&e))?.to_bytes();
        Ok((status, retry_after, bytes))
    };
    tokio::time::timeout(t.timeout, exchange).await.map_err(|_| format!("no answer within {} s", t.timeout.as_secs()))?
}

/// An error and its causes in one line (reqwest's and hyper's own messages name only the outermost).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}


/// A writer operation `submit` queues (again, a moment later, while the queue is full), once
/// committed: what its reply says.
pub(crate) async fn committed<T>(mut submit: impl FnMut(tokio::sync::oneshot::Sender<Result<T, StoreError>>) -> Result<(), StoreError>) -> Result<T, StoreError> {
    loop {
        let (tx, rx) = tokio::sync::oneshot::channel();
        match submit(tx) {
            Ok(()) => return rx.await.map_err(|_| StoreError::Closed)?,
            Err(StoreError::Overloaded) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => return Err(e),
        }
    }
}

/// The start of a response body, for an error message.
pub(crate) fn excerpt(body: &[u8]) -> String {
    if body.is_empty() {
        return String::new();
    }
    let text: String = String::from_utf8_lossy(&body[..body.len().min(200)]).chars().filter(|c| !c.is_control()).collect();
    format!(": {text}")
}

/// Sleep `d`; true when the collector is stopping (at once, or during the sleep).
pub(crate) async fn sleep_or_stop(stop: &mut tokio::sync::watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    let woken = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    woken || *stop.borrow()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Target>, String> {
        let c = crate::config::Config::from_toml(text).map_err(|e| e.to_string())?;
        resolve_all(&c.forward, |v| (v == "SET").then(|| "Basic c2VjcmV0".to_string()))
    }

    #[test]
    fn targets_are_checked() {
        let t = parse("[[forward]]\nendpoint = \"http://user:pw@127.0.0.1:4318/v1/traces?x=1\"\nheaders_env = { Authorization = \"SET\" }").expect("valid");
        assert_eq!(t[0].name, "http://127.0.0.1:4318/v1/traces", "credentials and query never show");
        assert_eq!((t[0].batch, t[0].what, t[0].compression, t[0].start), (512, What::All, Compression::None, Start::Beginning));
        assert!(t[0].headers.get("authorization").is_some_and(|v| v.is_sensitive()));
        let err = |text: &str| parse(text).expect_err(text);
        assert!(err("[[forward]]\nendpoint = \"ftp://h/x\"").contains("not http"));
        let t = parse("[[forward]]\nendpoint = \"https://cloud.example/v1/traces\"").expect("https");
        assert!(t[0].https.is_some(), "an https endpoint has a TLS client of its own");
        assert!(parse("[[forward]]\nendpoint = \"http://cloud.example/v1/traces\"").expect("http")[0].https.is_none());
        assert!(err("[[forward]]\nendpoint = \"http://h:1/v1/traces\"\nca_file = \"/x.pem\"").contains("ca_file is for https endpoints"));
        assert!(err("[[forward]]\nendpoint = \"https://h:1/v1/traces\"\nca_file = \"/nonexistent.pem\"").contains("ca_file /nonexistent.pem"));
        assert!(err("[[forward]]\nendpoint = \"http://h:1/v1/traces\"\nbatch = 0").contains("out of range"));
        assert!(err("[[forward]]\nendpoint = \"http://h:1/v1/traces\"\nbatch = 8193").contains("out of range"));
        assert!(parse("[[forward]]\nendpoint = \"http://h:1/v1/traces\"\nbatch = 8192").is_ok());
        assert!(err("[[forward]]\nendpoint = \"http://h:1/v1/traces\"\nheaders_env = { Authorization = \"UNSET\" }").contains("$UNSET"));
        assert!(err("[[forward]]\nendpoint = \"http://h:1/v1/traces\"\nheaders = { \"Content-Type\" = \"x\" }").contains("set by rltrace"));
        assert!(err("[[forward]]\nendpoint = \"http://h:1/v1/traces\"\nheaders = { \"a b\" = \"x\" }").contains("header name"));
        assert!(err("[[forward]]\nendpoint = \"http://h:1/a\"\n[[forward]]\nendpoint = \"http://h:1/a\"").contains("two [[forward]]"));
        assert!(err("[[forward]]\nendpoint = \"http://h:1/a\"\nwhat = \"some\"").contains("unknown variant"));
        assert!(err("[[forward]]\nendpoint = \"http://h:1/a\"\nendpont = \"x\"").contains("unknown field"));
        let t = parse("[[forward]]\nname = \"langfuse\"\nendpoint = \"http://h:1/a\"\nwhat = \"triplets\"\ncompression = \"gzip\"\ntimeout = \"1m\"\nstart = \"now\"").expect("valid");
        assert_eq!((t[0].name.as_str(), t[0].what, t[0].compression, t[0].timeout, t[0].start), ("langfuse", What::Triplets, Compression::Gzip, Duration::from_secs(60), Start::Now));
    }

    #[test]
    fn the_lag_follows_the_cursor() {
        let mut s = Status::default();
        s.saw(10);
        std::thread::sleep(Duration::from_millis(20));
        s.saw(20);
        assert_eq!(s.lag_spans(), 20);
        assert!(s.lag_seconds() >= 0.02);
        s.moved(15);
        assert!(s.lag_seconds() < 0.02, "the oldest waiting span arrived with the second sample");
        s.moved(20);
        assert_eq!((s.lag_spans(), s.lag_seconds()), (0, 0.0));
        for i in 0..(LAG_SAMPLES as i64 + 10) {
            s.saw(100 + i);
        }
        assert_eq!(s.samples.len(), LAG_SAMPLES, "the samples are bounded");
        assert_eq!(s.last_id, 100 + LAG_SAMPLES as i64 + 9);
    }
}
