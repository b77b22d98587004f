//! The Agent Lightning bridge (`[agentlightning]` of the config file; DESIGN section 10).
//!
//! With `store = URL` (Agent Lightning 0.3's LightningStore) it runs two tasks beside the
//! `[[forward]]` targets, listed with them by `GET /api/v1/forwarders`:
//! - `{name}-spans`: a forwarding target (the same cursor, batches and retries) that takes only
//!   the spans linked to a rollout attempt, with the rollout and attempt put on their resource,
//!   and posts them to `{store}/v1/traces`; a rollout the store does not know is looked up once
//!   per batch and its spans skipped and counted.
//! - `{name}-rewards`: walks the linked sequences without a delivery, and when one is complete
//!   with an episode reward writes a delivery into the store's outbox (one per sequence); then
//!   delivers the outbox in order, one `agentlightning.annotation` span each, starting when the
//!   sequence's last LLM call ended, so that Agent Lightning's trace-to-triplet adapter gives the
//!   reward to that call. The span id is the outbox row's, so a delivery repeated after a crash
//!   is the same span to the store (it keeps the first): exactly once as Agent Lightning sees it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rltrace_core::AttrValue;
use rltrace_core::sequence::EpisodeReward;
use rltrace_core::span::{Origin, SpanRecord};
use rltrace_core::triplet::{RolloutLink, rollout_link};
use rltrace_store::{CursorOp, Deliveries, ForwardSpan, Outcome, OutboxOp, OutboxRow, Store, StoreError};
use serde::Deserialize;

use crate::forward::{Compression, FIRST_BACKOFF, Forwarder, Kind, Phase, Start, Target, What};

/// Linked sequences looked at per round of the rewards task.
const SCAN: usize = 64;
/// Deliveries made per round.
const DELIVER: usize = 64;
/// How often the rewards task looks for new rewards.
const POLL: Duration = Duration::from_millis(250);
/// Rollouts remembered as known, per bridge.
const KNOWN_ROLLOUTS: usize = 10_000;

/// `[agentlightning]`, as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AglConfig {
    /// The bridge's name: its targets are `{name}-spans` and `{name}-rewards` (default
    /// `agentlightning`).
    #[serde(default)]
    pub name: Option<String>,
    /// Agent Lightning 0.3's LightningStore (`http://host:4747`).
    #[serde(default)]
    pub store: Option<String>,
    /// Agent Lightning 1.0's API gateway (`agl-server`, `http://host:port`).
    #[serde(default)]
    pub gateway: Option<String>,
    /// The gateway's key (sent as `Authorization: Bearer KEY`).
    #[serde(default)]
    pub key: Option<String>,
    /// The gateway's key, read from this environment variable at start.
    #[serde(default)]
    pub key_env: Option<String>,
    /// `last` (default), `mean` or `min` of the sequence's effective rewards.
    #[serde(default)]
    pub episode_reward: EpisodeReward,
    /// Spans per request to the store (1 to 8,192; default 512).
    #[serde(default)]
    pub batch: Option<usize>,
    /// Request timeout (seconds, or `10s`, `1m`; default 10 s).
    #[serde(default, deserialize_with = "rltrace_core::policy::duration_secs")]
    pub timeout: Option<u64>,
}

impl AglConfig {
    /// Check the table: the bridge's targets (`env` looks `key_env` up).
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<Vec<Target>, String> {
        if self.store.is_none() && self.gateway.is_none() {
            return Err("[agentlightning] needs store = \"http://HOST:PORT\" (Agent Lightning 0.3's LightningStore, `agl store`) or gateway = \"http://HOST:PORT\" (Agent Lightning 1.0's `agl-server`)".into());
        }
        if self.gateway.is_none() && (self.key.is_some() || self.key_env.is_some()) {
            return Err("[agentlightning] key and key_env are the gateway's: set gateway too".into());
        }
        let name = self.name.clone().unwrap_or_else(|| "agentlightning".into());
        let root_of = |what: &str, url: &str| -> Result<Target, String> {
            let t = crate::forward::ForwardConfig {
                name: Some(format!("{name}-{what}")),
                endpoint: format!("{}/v1/traces", url.trim_end_matches('/')),
                headers: Default::default(),
                headers_env: Default::default(),
                compression: Compression::None,
                what: What::All,
                batch: self.batch,
                timeout: self.timeout,
                start: Start::Beginning,
                ca_file: None,
            }
            .resolve(|_| None)
            .map_err(|e| format!("[agentlightning] {what} {}", e.trim_start_matches("forward ")))?;
            if t.https.is_some() {
                return Err(format!("[agentlightning] {what} {url:?}: the bridge speaks plain HTTP; reach an https store or gateway through a local proxy"));
            }
            if t.endpoint.path() != "/v1/traces" {
                return Err(format!("[agentlightning] {what} {url:?}: give the root URL (http://HOST:PORT), without a path"));
            }
            Ok(t)
        };
        let root = |t: &Target| {
            let mut r = t.endpoint.clone();
            r.set_path("/");
            r
        };
        let mut out = Vec::new();
        if let Some(store) = &self.store {
            let spans = root_of("spans", store)?;
            let url = root(&spans);
            let rewards = Target {
                name: format!("{name}-rewards"),
                endpoint: spans.endpoint.clone(),
                shown: spans.shown.clone(),
                headers: Default::default(),
                kind: Kind::AglRewards { store: url.clone(), episode_reward: self.episode_reward },
                compression: Compression::None,
                what: What::Linked,
                batch: DELIVER,
                timeout: spans.timeout,
                start: Start::Beginning,
                https: None,
            };
            out.push(Target { kind: Kind::AglSpans { store: url }, what: What::Linked, ..spans });
            out.push(rewards);
        }
        if let Some(gateway) = &self.gateway {
            let t = root_of("gateway", gateway)?;
            let url = root(&t);
            let key = match (&self.key, &self.key_env) {
                (Some(_), Some(_)) => return Err("[agentlightning] give key or key_env, not both".into()),
                (Some(k), None) => Some(k.trim().to_string()),
                (None, Some(var)) => Some(env(var).ok_or_else(|| format!("[agentlightning] key is read from ${var}, which is not set"))?.trim().to_string()),
                (None, None) => None,
            };
            let mut headers = reqwest::header::HeaderMap::new();
            if let Some(k) = key.filter(|k| !k.is_empty()) {
                let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {k}")).map_err(|_| "[agentlightning] key: not a valid header value".to_string())?;
                v.set_sensitive(true);
                headers.insert(reqwest::header::AUTHORIZATION, v);
            }
            let mut shown = crate::forward::shown(&url);
            shown.push_str("api/rollouts");
            out.push(Target {
                name: format!("{name}-gateway"),
                shown,
                headers,
                kind: Kind::AglGateway { gateway: url, episode_reward: self.episode_reward },
                what: What::Linked,
                batch: DELIVER,
                ..t
            });
        }
        Ok(out)
    }
}

/// The linked spans of a batch, each with the rollout and attempt on its resource (spans that
/// carry the link only in their attributes get a resource that does too).
pub(crate) fn linked(spans: Vec<ForwardSpan>) -> Vec<(ForwardSpan, RolloutLink)> {
    let mut origins: HashMap<(*const Origin, String, String), Arc<Origin>> = HashMap::new();
    let mut out = Vec::new();
    for mut s in spans {
        // A malformed id on a stored span was refused at ingest; none here is treated as unlinked.
        let Ok(Some(link)) = rollout_link(&s.span) else { continue };
        let has = |k: &str, v: &str| s.span.origin.resource.iter().any(|(rk, rv)| rk == k && matches!(rv, AttrValue::Str(x) if x == v));
        if !(has("agentlightning.rollout_id", &link.rollout_id) && has("agentlightning.attempt_id", &link.attempt_id)) {
            let key = (Arc::as_ptr(&s.span.origin), link.rollout_id.clone(), link.attempt_id.clone());
            let origin = origins
                .entry(key)
                .or_insert_with(|| {
                    let mut o = (*s.span.origin).clone();
                    o.resource.retain(|(k, _)| k != "agentlightning.rollout_id" && k != "agentlightning.attempt_id");
                    o.resource.push(("agentlightning.rollout_id".into(), AttrValue::Str(link.rollout_id.clone())));
                    o.resource.push(("agentlightning.attempt_id".into(), AttrValue::Str(link.attempt_id.clone())));
                    Arc::new(o)
                })
                .clone();
            s.span.origin = origin;
        }
        out.push((s, link));
    }
    out
}

/// The rollouts a LightningStore knows, remembered per bridge (known ones only: an unknown one
/// is asked again next time).
#[derive(Default)]
pub(crate) struct Rollouts {
    known: Mutex<HashSet<String>>,
}

/// What a lookup found.
pub(crate) enum Lookup {
    /// The rollouts among those asked that the store knows.
    Known(HashSet<String>),
    /// The store could not be asked; retry later.
    Retry(String),
}

impl Rollouts {
    /// Which of `ids` the store at `root` knows: one `POST /v1/agl/rollouts/search` for those not
    /// remembered (its `GET /v1/agl/rollouts/{id}` answers 500 for an unknown one).
    pub(crate) async fn lookup(&self, client: &reqwest::Client, root: &reqwest::Url, timeout: Duration, ids: &[String]) -> Lookup {
        let mut found = HashSet::new();
        let mut ask = Vec::new();
        {
            let known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for id in ids {
                if known.contains(id) {
                    found.insert(id.clone());
                } else {
                    ask.push(id.clone());
                }
            }
        }
        if ask.is_empty() {
            return Lookup::Known(found);
        }
        let Ok(url) = root.join("v1/agl/rollouts/search") else { return Lookup::Retry(format!("{root}: not a base URL")) };
        let body = serde_json::json!({ "rollout_id_in": ask, "limit": ask.len() });
        let resp = match client.post(url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await {
            Ok(r) => r,
            Err(e) => return Lookup::Retry(format!("looking rollouts up at {}: {e}", crate::forward::shown(root))),
        };
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap_or_default();
        if !status.is_success() {
            return Lookup::Retry(format!("looking rollouts up at {}: the store answered {}", crate::forward::shown(root), status.as_u16()));
        }
        #[derive(Deserialize)]
        struct Page {
            items: Vec<Item>,
        }
        #[derive(Deserialize)]
        struct Item {
            rollout_id: String,
        }
        let page: Page = match serde_json::from_slice(&bytes) {
            Ok(p) => p,
            Err(e) => return Lookup::Retry(format!("looking rollouts up at {}: unexpected answer: {e}", crate::forward::shown(root))),
        };
        let mut known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for item in page.items {
            if ask.contains(&item.rollout_id) {
                if known.len() >= KNOWN_ROLLOUTS {
                    known.clear();
                }
                known.insert(item.rollout_id.clone());
                found.insert(item.rollout_id);
            }
        }
        Lookup::Known(found)
    }
}

/// The reward span of a delivery: `agentlightning.annotation` with the primary reward, in the
/// trace of the sequence's last LLM call, starting (and ending) when that call ended; its span
/// id is the outbox row's.
pub fn annotation_span(row: &OutboxRow) -> SpanRecord {
    let id = u64::try_from(row.id).unwrap_or(0) | 0x8000_0000_0000_0000;
    let at = u64::try_from(row.start_ns).unwrap_or(0);
    SpanRecord {
        trace_id: row.trace_id,
        span_id: id.to_be_bytes(),
        parent_span_id: None,
        name: "agentlightning.annotation".into(),
        kind: 1,
        start_time_unix_nano: at,
        end_time_unix_nano: at,
        status_code: 0,
        status_message: String::new(),
        attributes: vec![
            ("agentlightning.reward.0.name".into(), AttrValue::Str("primary".into())),
            ("agentlightning.reward.0.value".into(), AttrValue::Double(row.value)),
        ],
        events: Vec::new(),
        origin: Arc::new(Origin {
            resource: vec![
                ("service.name".into(), AttrValue::Str("rltrace".into())),
                ("agentlightning.rollout_id".into(), AttrValue::Str(row.rollout.rollout_id.clone())),
                ("agentlightning.attempt_id".into(), AttrValue::Str(row.rollout.attempt_id.clone())),
            ],
            scope_name: "rltrace".into(),
            scope_version: env!("CARGO_PKG_VERSION").into(),
        }),
        extras: Default::default(),
    }
}

/// Where a bridge's rewards go.
#[derive(Clone)]
enum Sink {
    /// A 0.3 LightningStore: one reward span per sequence.
    Store(reqwest::Url),
    /// A 1.0 gateway: a reward event per change.
    Gateway(reqwest::Url),
}

/// The rewards task of a bridge (to a LightningStore or to a gateway).
pub(crate) async fn run_rewards(runner: Arc<crate::forward::Runner>, f: Arc<Forwarder>, policy: Arc<rltrace_core::Policy>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let t = &f.target;
    let (sink, episode_reward, deliveries) = match t.kind.clone() {
        Kind::AglRewards { store, episode_reward } => (Sink::Store(store), episode_reward, Deliveries::Once),
        Kind::AglGateway { gateway, episode_reward } => (Sink::Gateway(gateway), episode_reward, Deliveries::OnChange),
        Kind::Otlp | Kind::AglSpans { .. } => return,
    };
    tracing::info!(target_name = %t.name, endpoint = %t.shown, "agent lightning rewards");
    let mut backoff = FIRST_BACKOFF;
    'claim: loop {
        if *stop.borrow() {
            break;
        }
        // The lease (one collector at a time), and where the walk over linked sequences is.
        let mut walk = match runner.cursor_op(t, CursorOp::Claim { from_now: false }).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                f.update(|s| s.phase = Phase::Standby);
                if crate::forward::sleep_or_stop(&mut stop, t.lease() / 2).await {
                    break;
                }
                continue;
            }
            Err(e) => {
                f.update(|s| s.failed(format!("store: {e}")));
                if crate::forward::sleep_or_stop(&mut stop, backoff).await {
                    break;
                }
                backoff = (backoff * 2).min(t.lease() / 3);
                continue;
            }
        };
        let mut renewed = std::time::Instant::now();
        loop {
            if *stop.borrow() {
                break 'claim;
            }
            // 1. Linked sequences that became complete with an episode reward get a delivery.
            let store = runner.store().clone();
            let (name, pol) = (t.name.clone(), policy.clone());
            let scan = tokio::task::spawn_blocking(move || store.read(|tx| tx.linked_sequences(&name, deliveries, walk, SCAN, &pol))).await;
            let scan = match scan {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    f.update(|s| s.failed(format!("store: {e}")));
                    if crate::forward::sleep_or_stop(&mut stop, backoff).await {
                        break 'claim;
                    }
                    backoff = (backoff * 2).min(t.lease() / 3);
                    continue 'claim;
                }
                Err(e) => {
                    f.update(|s| s.failed(format!("store: {e}")));
                    continue 'claim;
                }
            };
            for seq in &scan.sequences {
                let Some(value) = seq.eval.episode_reward(episode_reward) else { continue };
                let (trace_id, start_ns) = match (&sink, seq.anchor) {
                    // The store's reward span goes after the final call of a complete sequence.
                    (Sink::Store(_), Some(anchor)) if seq.eval.complete => anchor,
                    (Sink::Store(_), _) => continue,
                    // The gateway hears of every change.
                    (Sink::Gateway(_), _) if seq.last_value == Some(value) => continue,
                    (Sink::Gateway(_), anchor) => anchor.unwrap_or(([0; 16], 0)),
                };
                let op = OutboxOp::Enqueue {
                    deliveries,
                    reason: format!("episode reward ({}) of rltrace sequence {}", episode_reward.as_str(), seq.sequence_id),
                    bridge: t.name.clone(),
                    seq_ref: seq.seq_ref,
                    rollout: seq.rollout.clone(),
                    value,
                    trace_id,
                    start_ns,
                };
                if let Err(e) = outbox_op(runner.store(), op).await {
                    f.update(|s| s.failed(format!("store: {e}")));
                    continue 'claim;
                }
            }
            let next = if scan.scanned_to >= scan.last_id { 0 } else { scan.scanned_to };
            if next != walk || renewed.elapsed() > t.lease() / 3 {
                match runner.cursor_op(t, CursorOp::Advance { from: walk, to: next }).await {
                    Ok(Some(c)) => walk = c,
                    Ok(None) => continue 'claim,
                    Err(e) => {
                        f.update(|s| s.failed(format!("store: {e}")));
                        continue 'claim;
                    }
                }
                renewed = std::time::Instant::now();
            }
            // 2. Deliver what is pending, oldest first; a failure waits for the next round.
            let store = runner.store().clone();
            let name = t.name.clone();
            let pending = match tokio::task::spawn_blocking(move || store.read(|tx| Ok((tx.outbox_pending(&name, DELIVER)?, tx.outbox_counts(&name)?)))).await {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    f.update(|s| s.failed(format!("store: {e}")));
                    continue 'claim;
                }
                Err(_) => continue 'claim,
            };
            let (rows, counts) = pending;
            f.update(|s| s.outbox = Some(counts));
            runner.metrics().forward_pending(&t.name, counts.pending);
            let mut failed = false;
            if !rows.is_empty() {
                f.update(|s| s.phase = Phase::Sending);
            }
            for row in rows {
                // A run of slow posts keeps the lease (another collector would take the rows over).
                if renewed.elapsed() > t.lease() / 3 {
                    match runner.cursor_op(t, CursorOp::Advance { from: walk, to: walk }).await {
                        Ok(Some(_)) => renewed = std::time::Instant::now(),
                        Ok(None) => continue 'claim,
                        Err(e) => {
                            f.update(|s| s.failed(format!("store: {e}")));
                            continue 'claim;
                        }
                    }
                }
                let outcome = match &sink {
                    Sink::Store(root) => deliver(&runner, t, root, &row).await,
                    Sink::Gateway(root) => deliver_event(&runner, t, root, &row).await,
                };
                let retry = matches!(outcome, Outcome::Failed(_));
                match &outcome {
                    Outcome::Delivered => {
                        f.update(|s| {
                            s.sent_requests += 1;
                            s.sent_spans += 1;
                            s.last_sent_us = Some(rltrace_store::now_micros());
                        });
                        runner.metrics().forward_sent(&t.name, 1, 0);
                    }
                    Outcome::Skipped(why) => {
                        tracing::warn!(target_name = %t.name, rollout = %row.rollout.rollout_id, error = %why, "agent lightning reward skipped");
                        f.update(|s| {
                            s.failed_requests += 1;
                            s.skipped_spans += 1;
                            s.failed(why.clone());
                        });
                        runner.metrics().forward_failed(&t.name, 1);
                    }
                    Outcome::Failed(why) => {
                        f.update(|s| {
                            s.retried += 1;
                            s.failed(why.clone());
                        });
                        runner.metrics().forward_retried(&t.name);
                    }
                }
                if let Err(e) = outbox_op(runner.store(), OutboxOp::Attempted { id: row.id, outcome }).await {
                    f.update(|s| s.failed(format!("store: {e}")));
                    continue 'claim;
                }
                if retry {
                    failed = true;
                    break;
                }
            }
            if failed {
                f.update(|s| s.phase = Phase::Backoff);
                if crate::forward::sleep_or_stop(&mut stop, backoff).await {
                    break 'claim;
                }
                backoff = (backoff * 2).min(t.lease() / 3);
                continue;
            }
            backoff = FIRST_BACKOFF;
            f.update(|s| s.phase = Phase::Idle);
            if crate::forward::sleep_or_stop(&mut stop, POLL).await {
                break 'claim;
            }
        }
    }
    f.update(|s| s.phase = Phase::Stopped);
    let _ = runner.cursor_op(t, CursorOp::Release).await;
}

/// One delivery attempt: the rollout looked up, then the reward span posted.
async fn deliver(runner: &crate::forward::Runner, t: &Target, root: &reqwest::Url, row: &OutboxRow) -> Outcome {
    match runner.rollouts().lookup(runner.client(), root, t.timeout, std::slice::from_ref(&row.rollout.rollout_id)).await {
        Lookup::Retry(why) => return Outcome::Failed(why),
        Lookup::Known(k) if k.is_empty() => {
            return Outcome::Skipped(format!("rollout {} is unknown to the store", row.rollout.rollout_id));
        }
        Lookup::Known(_) => {}
    }
    let req = rltrace_otlp::export_request([&annotation_span(row)], &[]);
    match runner.post(t, &rltrace_otlp::encode_request(&req)).await {
        crate::forward::Sent::Acknowledged(_) => Outcome::Delivered,
        crate::forward::Sent::Refused(why) => Outcome::Skipped(why),
        crate::forward::Sent::Retry(why, _) => Outcome::Failed(why),
    }
}

/// One reward event to the gateway's rollout attempt. 404 (the gateway no longer has the
/// rollout) ends the link; a refused key (401, 403), 408, 429, 5xx and connection errors are
/// retried; another 4xx is given up.
async fn deliver_event(runner: &crate::forward::Runner, t: &Target, root: &reqwest::Url, row: &OutboxRow) -> Outcome {
    let mut url = root.clone();
    match url.path_segments_mut() {
        Ok(mut p) => {
            p.clear().extend(["api", "rollouts", row.rollout.rollout_id.as_str(), "attempt", row.rollout.attempt_id.as_str(), "events"]);
        }
        Err(()) => return Outcome::Skipped(format!("{root}: not a base URL")),
    }
    let body = serde_json::json!({
        "event_type": "reward",
        "data": {"value": row.value, "source": "rltrace", "reason": row.reason},
    });
    let resp = runner
        .client()
        .post(url)
        .timeout(t.timeout)
        .headers(t.headers.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("{}: {e}", t.shown)),
    };
    let status = resp.status().as_u16();
    let text = resp.bytes().await.unwrap_or_default();
    let why = || format!("{} answered {status}{}", t.shown, crate::forward::excerpt(&text));
    match status {
        200..=299 => Outcome::Delivered,
        404 => Outcome::Skipped(format!("rollout {} is not at the gateway (404): its link ended", row.rollout.rollout_id)),
        401 | 403 | 408 | 429 | 500..=599 => Outcome::Failed(why()),
        _ => Outcome::Skipped(why()),
    }
}

/// An outbox change, committed; waits while the writer queue is full.
async fn outbox_op(store: &Store, op: OutboxOp) -> Result<Option<i64>, StoreError> {
    crate::forward::committed(|tx| {
        store.submit_outbox(op.clone(), move |r| {
            let _ = tx.send(r);
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Target>, String> {
        let c: AglConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.resolve(|var| (var == "AGL_KEY").then(|| "sekrit".to_string()))
    }

    #[test]
    fn the_bridge_table_is_checked() {
        let t = parse("store = \"http://127.0.0.1:4747/\"\nepisode_reward = \"min\"").expect("ok");
        assert_eq!((t[0].name.as_str(), t[1].name.as_str()), ("agentlightning-spans", "agentlightning-rewards"));
        assert_eq!(t[0].endpoint.as_str(), "http://127.0.0.1:4747/v1/traces");
        assert!(matches!(&t[1].kind, Kind::AglRewards { episode_reward: EpisodeReward::Min, store } if store.as_str() == "http://127.0.0.1:4747/"));
        let g = parse("gateway = \"http://127.0.0.1:9/\"\nkey_env = \"AGL_KEY\"\nname = \"agl\"").expect("ok");
        assert_eq!(g.len(), 1);
        assert_eq!((g[0].name.as_str(), g[0].kind.as_str(), g[0].shown.as_str()), ("agl-gateway", "agentlightning-gateway", "http://127.0.0.1:9/api/rollouts"));
        assert_eq!(g[0].headers.get(reqwest::header::AUTHORIZATION).map(|v| v.to_str().unwrap_or("").to_string()).as_deref(), Some("Bearer sekrit"));
        let both = parse("store = \"http://127.0.0.1:8\"\ngateway = \"http://127.0.0.1:9\"\nkey = \"k\"").expect("ok");
        assert_eq!(both.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["agentlightning-spans", "agentlightning-rewards", "agentlightning-gateway"]);
        assert!(parse("gateway = \"http://127.0.0.1:9\"\nkey_env = \"NOPE\"").expect_err("an error").contains("$NOPE, which is not set"));
        assert!(parse("gateway = \"http://127.0.0.1:9\"\nkey = \"a\"\nkey_env = \"AGL_KEY\"").expect_err("an error").contains("not both"));
        assert!(parse("store = \"http://127.0.0.1:9\"\nkey = \"a\"").expect_err("an error").contains("set gateway too"));
        assert!(parse("gateway = \"http://127.0.0.1:9/api\"").expect_err("an error").contains("without a path"));
        assert!(parse("").expect_err("an error").contains("needs store"));
        assert!(parse("store = \"http://127.0.0.1:4747/x\"").expect_err("an error").contains("without a path"));
        assert!(parse("store = \"https://agl.example\"").expect_err("an error").contains("plain HTTP"));
        assert!(parse("store = \"http://127.0.0.1:1\"\nepisode_reward = \"max\"").expect_err("an error").contains("unknown variant `max`"));
        assert!(parse("store = \"http://127.0.0.1:1\"\nbatch = 0").expect_err("an error").contains("out of range"));
    }

    #[test]
    fn only_linked_spans_go_and_carry_the_link_on_their_resource() {
        let mk = |n: u8, attrs: Vec<(String, AttrValue)>, resource: Vec<(String, AttrValue)>| ForwardSpan {
            id: i64::from(n),
            span: SpanRecord {
                trace_id: [n; 16],
                span_id: [n; 8],
                parent_span_id: None,
                name: format!("s{n}"),
                kind: 1,
                start_time_unix_nano: 1,
                end_time_unix_nano: 2,
                status_code: 0,
                status_message: String::new(),
                attributes: attrs,
                events: Vec::new(),
                origin: Arc::new(Origin { resource, ..Origin::default() }),
                extras: Default::default(),
            },
        };
        let kv = |k: &str, v: &str| (k.to_string(), AttrValue::Str(v.into()));
        let spans = vec![
            mk(1, vec![kv("agentlightning.rollout_id", "r1"), kv("agentlightning.attempt_id", "a1")], vec![kv("service.name", "x")]),
            mk(2, Vec::new(), vec![kv("agentlightning.rollout_id", "r2"), kv("agentlightning.attempt_id", "a2")]),
            mk(3, Vec::new(), vec![kv("service.name", "x")]),
            mk(4, vec![kv("agentlightning.rollout_id", "r4")], Vec::new()),
        ];
        let out = linked(spans);
        assert_eq!(out.iter().map(|(s, l)| (s.id, l.rollout_id.as_str())).collect::<Vec<_>>(), [(1, "r1"), (2, "r2")]);
        let res = &out[0].0.span.origin.resource;
        assert!(res.contains(&kv("service.name", "x")) && res.contains(&kv("agentlightning.rollout_id", "r1")) && res.contains(&kv("agentlightning.attempt_id", "a1")));
        assert_eq!(out[1].0.span.origin.resource.len(), 2, "already on the resource: unchanged");
    }

    #[test]
    fn the_reward_span_is_the_outbox_rows() {
        let row = OutboxRow {
            id: 7,
            seq_ref: 1,
            rollout: RolloutLink { rollout_id: "ro".into(), attempt_id: "at".into() },
            value: 0.75,
            trace_id: [3; 16],
            start_ns: 1_000,
            attempts: 0,
            created_us: 0,
            reason: String::new(),
        };
        let s = annotation_span(&row);
        assert_eq!(s.span_id, (0x8000_0000_0000_0007u64).to_be_bytes());
        assert_eq!((s.start_time_unix_nano, s.end_time_unix_nano, s.trace_id), (1_000, 1_000, [3; 16]));
        assert_eq!(s.attr("agentlightning.reward.0.value"), Some(&AttrValue::Double(0.75)));
        assert_eq!(annotation_span(&row), s, "the same row is the same span");
    }
}
